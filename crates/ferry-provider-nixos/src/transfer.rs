//! Moving store paths to a host over the shared SSH connection: shared by the `nixos` and
//! `nspawn` providers.

use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_protocol::sdk::CallContext;
use ferry_protocol::ProviderError;
use ferry_ssh::{Connection, SshError};

/// Run a local command; its stdout, or an error with the last lines of its stderr.
pub fn run_local(mut c: Command, what: &str) -> Result<String, ProviderError> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ProviderError::new(format!("{what}: cannot run {:?}: {e}", c.get_program())))?;
    if !out.status.success() {
        return Err(ProviderError::new(format!(
            "{what} failed:\n{}",
            ferry_ssh::tail_lines(&String::from_utf8_lossy(&out.stderr), 20)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A provider error for an SSH failure, with a code telling its class.
pub fn ssh_error(e: SshError) -> ProviderError {
    let retryable = matches!(e, SshError::Unreachable { .. } | SshError::Timeout { .. });
    let code = match &e {
        SshError::HostKeyMismatch { .. } => "hostKeyMismatch",
        SshError::Unreachable { .. } => "unreachable",
        SshError::Auth { .. } => "authFailed",
        _ => "remoteFailed",
    };
    let mut pe = ProviderError::new(e.to_string()).code(code);
    pe.retryable = retryable;
    pe
}

/// Copy the closure of `paths` to the host behind `conn`: only the paths it lacks
/// (`nix-store --check-validity` there), with `nix-copy-closure` through the shared
/// connection. `slot` is taken for the transfer itself (a copy-jobs limit); progress reports
/// "N paths, M MiB". Returns (paths copied, bytes).
#[allow(clippy::too_many_arguments)]
pub fn copy_closure<G>(
    conn: &Connection,
    sudo: bool,
    nix_args: &[String],
    paths: &[String],
    use_substitutes: bool,
    slot: impl FnOnce() -> G,
    cx: &CallContext,
) -> Result<(usize, u64), ProviderError> {
    let nix = |cmd: &str| {
        let mut c = Command::new(cmd);
        c.args(nix_args);
        c
    };
    let closure = run_local(
        {
            let mut c = nix("nix-store");
            c.arg("--query").arg("--requisites").args(paths);
            c
        },
        "listing the closure",
    )?;
    let closure: Vec<&str> = closure.lines().filter(|l| !l.is_empty()).collect();
    let check = "xargs -r nix-store --check-validity --print-invalid";
    let check = if sudo { format!("sudo -n sh -c {}", ferry_ssh::quote(check)) } else { check.to_string() };
    let missing = conn
        .run(
            "checking which paths the host has",
            &check,
            Some(closure.join("\n").as_bytes()),
            Duration::from_secs(120),
        )
        .map_err(ssh_error)?;
    let missing: Vec<&str> = missing.lines().filter(|l| !l.is_empty()).collect();
    if missing.is_empty() {
        return Ok((0, 0));
    }
    let sizes = run_local(
        {
            let mut c = nix("nix-store");
            c.arg("--query").arg("--size").args(&missing);
            c
        },
        "measuring the closure",
    )?;
    let bytes: u64 = sizes.lines().filter_map(|l| l.trim().parse::<u64>().ok()).sum();
    let _slot = slot();
    cx.progress("copy", format!("{} paths, {:.1} MiB", missing.len(), bytes as f64 / 1048576.0));
    let mut c = nix("nix-copy-closure");
    c.env("NIX_SSHOPTS", conn.nix_sshopts()).arg("--to").arg(conn.target().destination());
    if use_substitutes {
        c.arg("--use-substitutes");
    }
    c.args(paths);
    run_local(c, &format!("copying to {}", conn.target().host))?;
    Ok((missing.len(), bytes))
}
