//! Closure transfer: over SSH, only the paths the host lacks (`nix-store --check-validity`
//! there) with `nix-copy-closure` through the shared connection; into a podman container, the
//! missing paths as a tar stream (`podman cp`), so the container needs no Nix.

use std::process::Command;
use std::time::Duration;

use crate::connection::{run_local, HostConnection};
use crate::error::HostError;
use crate::exec::{Copied, Copy, HostExec, Script};

fn nix(cmd: &str, nix_args: &[String]) -> Command {
    let mut c = Command::new(cmd);
    c.args(nix_args);
    c
}

/// The closure of `paths` on the deployer, one path per line.
fn closure(c: &Copy) -> Result<String, HostError> {
    let mut q = nix("nix-store", c.nix_args);
    q.arg("--query").arg("--requisites").args(c.paths);
    run_local(q, "listing the closure", "nix-store")
}

fn store_lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| l.starts_with("/nix/store/")).collect()
}

pub(crate) fn copy_over_ssh(h: &HostConnection, c: &Copy) -> Result<Copied, HostError> {
    let Some(conn) = h.ssh() else { return Ok(Copied::default()) };
    let closure = closure(c)?;
    let missing = h.run(
        &Script::new(
            "checking which paths the host has",
            "xargs -r nix-store --check-validity --print-invalid",
        )
        .stdin(Some(closure.as_bytes()))
        .timeout(Duration::from_secs(120))
        // As the SSH user, who then copies: what it can write, it can read (root's Nix run on a
        // user's single-user store would leave files that user cannot change).
        .privileged(false),
    )?;
    let missing = store_lines(&missing);
    if missing.is_empty() {
        return Ok(Copied::default());
    }
    let mut sizes = nix("nix-store", c.nix_args);
    sizes.arg("--query").arg("--size").args(&missing);
    let sizes = run_local(sizes, "measuring the closure", "nix-store")?;
    let bytes: u64 = sizes.lines().filter_map(|l| l.trim().parse::<u64>().ok()).sum();
    let _slot = c.slots.map(|s| s.acquire());
    (c.progress)(format!("{} paths, {:.1} MiB", missing.len(), bytes as f64 / 1048576.0));
    let mut copy = nix("nix-copy-closure", c.nix_args);
    copy.env("NIX_SSHOPTS", conn.nix_sshopts()).arg("--to").arg(conn.target().destination());
    if c.use_substitutes {
        copy.arg("--use-substitutes");
    }
    copy.args(c.paths);
    run_local(copy, &format!("copying to {}", conn.target().host), "nix-copy-closure")?;
    Ok(Copied { paths: missing.len(), bytes })
}

pub(crate) fn copy_into_podman(h: &HostConnection, container: &str, c: &Copy) -> Result<Copied, HostError> {
    let closure = closure(c)?;
    let missing = h.run(
        &Script::new(
            "checking which store paths the container has",
            "while read -r p; do [ -e \"$p\" ] || echo \"$p\"; done",
        )
        .stdin(Some(closure.as_bytes())),
    )?;
    let missing = store_lines(&missing);
    if missing.is_empty() {
        return Ok(Copied::default());
    }
    let _slot = c.slots.map(|s| s.acquire());
    (c.progress)(format!("{} paths into container {container}", missing.len()));
    let rel: Vec<&str> = missing.iter().map(|p| p.trim_start_matches('/')).collect();
    let script = format!(
        "tar -C / -cf - {} | podman cp - {}:/",
        ferry_ssh::command_line(&rel),
        ferry_ssh::quote(container)
    );
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(&script);
    run_local(sh, &format!("copying {} store paths into container `{container}`", missing.len()), "sh")?;
    Ok(Copied { paths: missing.len(), bytes: 0 })
}
