//! What a failed `nix-store --realise` says, reduced to its cause: the derivations whose
//! builders failed (not the "N dependencies of derivation … failed" lines that follow from
//! them), each with its builder's last log lines (`nix-store -l`), or, when no builder failed
//! (a download, a missing path), Nix's own `error:` lines.

use std::process::{Command, Stdio};

/// How many lines of a failed builder's log are shown.
const LOG_LINES: usize = 25;

/// The derivations whose builders failed, in the order Nix reported them.
pub fn failed_builders(stderr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in stderr.lines() {
        let Some(rest) = line.trim_start().strip_prefix("error: builder for '") else { continue };
        if let Some(drv) = rest.split('\'').next().filter(|d| d.ends_with(".drv")) {
            if !out.iter().any(|d: &String| d == drv) {
                out.push(drv.to_string());
            }
        }
    }
    out
}

/// The builder's log of `drv`, its last `LOG_LINES` lines, if Nix kept one.
fn builder_log(drv: &str, nix_args: &[String]) -> Option<String> {
    let out = Command::new("nix-store")
        .arg("--read-log")
        .arg(drv)
        .args(nix_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    (out.status.success() && !text.trim().is_empty()).then(|| ferry_ssh::tail_lines(&text, LOG_LINES))
}

/// The message for a failed build: each failed builder with its reason and log tail; else
/// Nix's error lines (minus the consequences); else the last lines of its output.
pub fn describe(stderr: &str, nix_args: &[String]) -> String {
    let failed = failed_builders(stderr);
    if failed.is_empty() {
        let errors: Vec<&str> =
            stderr.lines().map(str::trim).filter(|l| l.starts_with("error:") && !is_consequence(l)).collect();
        return if errors.is_empty() { ferry_ssh::tail_lines(stderr, 20) } else { errors.join("\n") };
    }
    let mut msg = String::new();
    for drv in &failed {
        let reason = stderr
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("error: builder for '") && l.contains(drv.as_str()))
            .and_then(|l| l.split("' ").nth(1))
            .unwrap_or("failed")
            .trim_end_matches(';');
        msg.push_str(&format!("derivation {drv}: builder {reason}"));
        match builder_log(drv, nix_args) {
            Some(log) => {
                let log = log.trim_end().replace('\n', "\n    ");
                msg.push_str(&format!(
                    "; its last log lines:\n    {log}\n  (full log: nix-store --read-log {drv})\n"
                ));
            }
            None => msg.push_str(" (Nix kept no log)\n"),
        }
    }
    msg.trim_end().to_string()
}

/// Lines that only follow from another failure.
fn is_consequence(line: &str) -> bool {
    (line.contains("dependencies of derivation") && line.contains("failed to build"))
        || line.starts_with("error: build of '")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NIX_2_8: &str = "building '/nix/store/aaa-slow.drv'...\nbuilding '/nix/store/bbb-broken.drv'...\nerror: builder for '/nix/store/bbb-broken.drv' failed with exit code 3;\n       last 1 log lines:\n       > frobnicator missing\nerror: 1 dependencies of derivation '/nix/store/ccc-system.drv' failed to build\nerror: build of '/nix/store/ccc-system.drv!out' failed\n";

    #[test]
    fn the_failed_builder_is_the_cause_not_its_consequences() {
        assert_eq!(failed_builders(NIX_2_8), vec!["/nix/store/bbb-broken.drv"]);
        let msg = describe(NIX_2_8, &[]);
        assert!(
            msg.starts_with("derivation /nix/store/bbb-broken.drv: builder failed with exit code 3"),
            "{msg}"
        );
        assert!(!msg.contains("dependencies of derivation"), "{msg}");
    }

    #[test]
    fn without_a_failed_builder_nix_errors_are_kept() {
        let s = "copying path '/nix/store/x' from 'https://cache'...\nerror: unable to download 'https://x': Couldn't resolve host name (6)\nerror: 1 dependencies of derivation '/nix/store/y.drv' failed to build\n";
        assert_eq!(describe(s, &[]), "error: unable to download 'https://x': Couldn't resolve host name (6)");
    }
}
