//! Local builds, coalesced: machines asking to build at about the same time share one
//! `nix-store --realise` (Nix builds shared dependencies once and schedules all derivations
//! under one `--max-jobs`). Each caller then learns whether *its* outputs exist.
//!
//! A build stops at its first failure (no `--keep-going` unless the user sets Nix's
//! `keep-going` option): the failure is reported at once, with the failed builder's log
//! (`build_log`). A caller whose closure does not contain the failed derivation was only
//! stopped by its neighbour's failure, and is built again alone.

use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;
use std::time::Duration;

type Reply = Sender<Result<(), String>>;

/// One caller's request: what to realise, which paths it needs, where to answer, and whether
/// it was already retried after a neighbour's failure.
struct Job {
    targets: Vec<String>,
    wanted: Vec<String>,
    reply: Reply,
    retried: bool,
}

#[derive(Default)]
pub struct Builder {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    pending: Vec<Job>,
    running: bool,
}

/// The `nix-store --realise` runs one caller led (for `--timings`): a coalesced build is
/// counted once, by the caller that ran it; the others led none.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Built {
    pub runs: u32,
    pub seconds: f64,
}

impl Builder {
    /// Realise `targets` (`drv!out` or store paths) so that every path in `wanted` is valid.
    /// `nix_args` are passed to `nix-store`.
    pub fn build(
        &self,
        targets: Vec<String>,
        wanted: Vec<String>,
        nix_args: &[String],
    ) -> Result<Built, String> {
        let (tx, rx) = channel();
        let lead = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.pending.push(Job { targets, wanted, reply: tx, retried: false });
            !std::mem::replace(&mut s.running, true)
        };
        let mut built = Built::default();
        if lead {
            // Let machines that became ready in the same moment join this build.
            std::thread::sleep(Duration::from_millis(50));
            loop {
                let batch = {
                    let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                    if s.pending.is_empty() {
                        s.running = false;
                        break;
                    }
                    std::mem::take(&mut s.pending)
                };
                let start = std::time::Instant::now();
                let retry = run_batch(batch, nix_args);
                built.runs += 1;
                built.seconds += start.elapsed().as_secs_f64();
                self.state.lock().unwrap_or_else(|e| e.into_inner()).pending.extend(retry);
            }
        }
        rx.recv().unwrap_or_else(|_| Err("internal: build coordinator vanished".into())).map(|()| built)
    }
}

/// Runs one coalesced build; answers every job, except those stopped only by another job's
/// failure, which are returned to be built again.
fn run_batch(batch: Vec<Job>, nix_args: &[String]) -> Vec<Job> {
    let mut all: Vec<String> = batch.iter().flat_map(|j| j.targets.iter().cloned()).collect();
    all.sort();
    all.dedup();
    let out = Command::new("nix-store")
        .arg("--realise")
        .arg("--no-gc-warning")
        .args(&all)
        .args(nix_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let (ok, log) = match out {
        Ok(o) => (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned()),
        Err(e) => (false, format!("cannot run nix-store: {e} (is Nix installed?)")),
    };
    let failed = if ok { vec![] } else { crate::build_log::failed_builders(&log) };
    let mut cause: Option<String> = None;
    let mut retry = Vec::new();
    for mut job in batch {
        let missing: Vec<&String> = job.wanted.iter().filter(|p| !std::path::Path::new(p).exists()).collect();
        let r = if missing.is_empty() {
            Ok(())
        } else if ok {
            Err(format!("the build succeeded but {} is missing", missing[0]))
        } else if !job.retried && !failed.is_empty() && !closure_contains(&job.targets, &failed, nix_args) {
            job.retried = true;
            retry.push(job);
            continue;
        } else {
            let c = cause.get_or_insert_with(|| crate::build_log::describe(&log, nix_args));
            Err(format!("building the system failed: {c}"))
        };
        let _ = job.reply.send(r);
    }
    retry
}

/// Whether the build closure of `targets` contains one of the derivations in `drvs`.
/// When the closure cannot be read, it is assumed to (no retry).
fn closure_contains(targets: &[String], drvs: &[String], nix_args: &[String]) -> bool {
    let roots: Vec<&str> = targets.iter().map(|t| t.split('!').next().unwrap_or(t)).collect();
    let out = Command::new("nix-store")
        .args(["--query", "--requisites"])
        .args(&roots)
        .args(nix_args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let closure = String::from_utf8_lossy(&o.stdout);
            closure.lines().any(|p| drvs.iter().any(|d| d == p))
        }
        _ => true,
    }
}

/// The build targets for `nix-store --realise` from the call's context.
pub fn targets(context: &std::collections::BTreeMap<String, Vec<String>>) -> Vec<String> {
    context
        .iter()
        .map(|(p, outs)| {
            if p.ends_with(".drv") && !outs.is_empty() {
                format!("{p}!{}", outs.join(","))
            } else {
                p.clone()
            }
        })
        .collect()
}
