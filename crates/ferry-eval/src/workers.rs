//! Evaluator workers (`--eval-jobs N`): a round's costly resources (kinds with
//! `heavyInputs`, i.e. NixOS systems) evaluated in chunks by several `nix-instantiate`
//! processes, everything else in one.

use crate::nix_cli::NixCli;
use crate::{EvalError, RoundRequest, RoundResult};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Most resources one worker process evaluates: a worker's memory is bounded by its chunk (a
/// few NixOS systems), not by the fleet.
pub(crate) const CHUNK_MAX: usize = 4;

/// Memory one worker may take: a chunk of `CHUNK_MAX` NixOS systems peaked at 1.1–1.4 GiB
/// (bench/realnix.sh).
const WORKER_BYTES: u64 = 3 << 29;

/// The default of `--eval-jobs` (and `auto`): one worker per core, but no more than free
/// memory (`MemAvailable`) holds at [`WORKER_BYTES`] each; at least 1.
pub fn auto_eval_jobs() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    jobs_for(cores, mem_available(&meminfo))
}

fn jobs_for(cores: usize, available: Option<u64>) -> usize {
    let by_memory = available.map_or(cores, |b| usize::try_from(b / WORKER_BYTES).unwrap_or(usize::MAX));
    cores.min(by_memory).max(1)
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// How `heavy` resources are cut: into chunks of at most [`CHUNK_MAX`], as many as keep every
/// worker busy to the end (a multiple of `jobs`, but no more than there are resources), their
/// sizes differing by one at most.
pub(crate) fn chunks(heavy: &[String], jobs: usize) -> Vec<Vec<String>> {
    let jobs = jobs.max(1);
    let k = (heavy.len().div_ceil(CHUNK_MAX).div_ceil(jobs) * jobs).min(heavy.len()).max(1);
    let (size, extra) = (heavy.len() / k, heavy.len() % k);
    let mut rest = heavy;
    (0..k)
        .map(|i| {
            let (chunk, tail) = rest.split_at(size + usize::from(i < extra));
            rest = tail;
            chunk.to_vec()
        })
        .filter(|c| !c.is_empty())
        .collect()
}

impl NixCli {
    /// A round with workers. The first process evaluates the round as asked, except that two
    /// or more pending resources of heavy kinds are only named (`deferred`); those are then
    /// evaluated in [`chunks`], each by its own `nix-instantiate`, `jobs` at a time, and the
    /// results merged. Each chunk is a complete round for its resources (readiness, previews,
    /// edges are per resource), so the merge is a union. A round with fewer than two heavy
    /// resources — every deployment without NixOS systems, every no-op apply of one — is the
    /// one process it was.
    pub(crate) fn round_workers(&self, req: &RoundRequest, jobs: usize) -> Result<RoundResult, EvalError> {
        let (mut merged, heavy) = self.round_once(req, true)?;
        if heavy.is_empty() {
            return Ok(merged);
        }
        let chunks = chunks(&heavy, jobs);
        let next = AtomicUsize::new(0);
        let outs: Mutex<Vec<(usize, Result<RoundResult, EvalError>)>> = Mutex::new(Vec::new());
        std::thread::scope(|sc| {
            for _ in 0..jobs.min(chunks.len()) {
                sc.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(chunk) = chunks.get(i) else { break };
                    let sub = RoundRequest {
                        pending: Some(chunk.clone()),
                        want_declarations: false,
                        ..req.clone()
                    };
                    let r = self.round_one(&sub);
                    outs.lock().unwrap_or_else(|e| e.into_inner()).push((i, r));
                });
            }
        });
        let mut outs = outs.into_inner().unwrap_or_else(|e| e.into_inner());
        outs.sort_by_key(|(i, _)| *i);
        for (_, r) in outs {
            let r = r?;
            merged.results.extend(r.results);
            merged.failures.extend(r.failures);
        }
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_workers_follow_cores_and_free_memory() {
        let gib = 1u64 << 30;
        assert_eq!(jobs_for(2, Some(23 * gib)), 2);
        assert_eq!(jobs_for(16, Some(4 * gib)), 2, "4 GiB holds two 1.5 GiB workers");
        assert_eq!(jobs_for(8, Some(gib)), 1, "always at least one");
        assert_eq!(jobs_for(4, None), 4);
        assert_eq!(mem_available("MemTotal: 100 kB\nMemAvailable:   2048 kB\n"), Some(2 << 20));
        assert_eq!(mem_available("MemTotal: 100 kB\n"), None);
    }

    #[test]
    fn heavy_resources_are_cut_evenly_and_bounded() {
        let names = |n: usize| (0..n).map(|i| format!("m{i}")).collect::<Vec<_>>();
        let sizes = |n, jobs| chunks(&names(n), jobs).iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(2, 2), [1, 1]);
        assert_eq!(sizes(6, 2), [3, 3]);
        assert_eq!(sizes(4, 3), [2, 1, 1], "every worker gets a chunk");
        assert_eq!(sizes(20, 2), [4, 4, 3, 3, 3, 3], "at most CHUNK_MAX, both workers busy to the end");
        assert_eq!(sizes(8, 2), [4, 4]);
        assert_eq!(sizes(3, 8), [1, 1, 1]);
        assert_eq!(sizes(0, 2), Vec::<usize>::new());
        for (n, jobs) in [(5, 2), (13, 3), (40, 2)] {
            assert_eq!(chunks(&names(n), jobs).concat(), names(n), "every name once, in order");
        }
    }
}
