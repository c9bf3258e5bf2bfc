//! Local builds, coalesced: machines asking to build at about the same time share one
//! `nix-store --realise` (Nix builds shared dependencies once and schedules all derivations
//! under one `--max-jobs`). Each caller then learns whether *its* outputs exist.

use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;
use std::time::Duration;

type Reply = Sender<Result<(), String>>;

#[derive(Default)]
pub struct Builder {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    pending: Vec<(Vec<String>, Vec<String>, Reply)>,
    running: bool,
}

impl Builder {
    /// Realise `targets` (`drv!out` or store paths) so that every path in `wanted` is valid.
    /// `nix_args` are passed to `nix-store`.
    pub fn build(
        &self,
        targets: Vec<String>,
        wanted: Vec<String>,
        nix_args: &[String],
    ) -> Result<(), String> {
        let (tx, rx) = channel();
        let lead = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.pending.push((targets, wanted, tx));
            !std::mem::replace(&mut s.running, true)
        };
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
                run_batch(batch, nix_args);
            }
        }
        rx.recv().unwrap_or_else(|_| Err("internal: build coordinator vanished".into()))
    }
}

fn run_batch(batch: Vec<(Vec<String>, Vec<String>, Reply)>, nix_args: &[String]) {
    let mut all: Vec<String> = batch.iter().flat_map(|(t, _, _)| t.iter().cloned()).collect();
    all.sort();
    all.dedup();
    let out = Command::new("nix-store")
        .arg("--realise")
        .arg("--keep-going")
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
    for (_, wanted, reply) in batch {
        let missing: Vec<&String> = wanted.iter().filter(|p| !std::path::Path::new(p).exists()).collect();
        let r = if missing.is_empty() {
            Ok(())
        } else if ok {
            Err(format!("the build succeeded but {} is missing", missing[0]))
        } else {
            Err(format!("building the system failed:\n{}", ferry_ssh::tail_lines(&log, 20)))
        };
        let _ = reply.send(r);
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
