//! Reaching a container host: the local machine, or an SSH target through one multiplexed
//! connection. Everything on the host goes through the helper script `nspawn.sh`, installed
//! once (hash-named, so an upgraded ferry installs its own) in `/run/ferry`.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_protocol::ProviderError;
use ferry_ssh::{command_line, quote, wait_output, Connection, SshError, WaitError};
use sha2::Digest;

use crate::schema::HostSpec;

pub const SCRIPT: &str = include_str!("nspawn.sh");

fn script_path() -> String {
    let hash = hex::encode(&sha2::Sha256::digest(SCRIPT.as_bytes())[..6]);
    format!("/run/ferry/ferry-nspawn-{hash}.sh")
}

pub enum Exec {
    Local,
    Ssh { conn: Box<Connection>, sudo: bool },
}

/// A host with the helper script in place.
pub struct Host {
    pub exec: Exec,
    pub label: String,
    path: String,
}

fn err(msg: impl Into<String>) -> ProviderError {
    ProviderError::new(msg)
}

impl Host {
    /// Connect (SSH: host key pinned in the spec, else `host_key` recorded earlier, else
    /// trust on first use) and install the helper script if the host lacks it.
    pub fn open(spec: &HostSpec, host_key: Option<String>) -> Result<Host, ProviderError> {
        let path = script_path();
        let h = match spec {
            HostSpec::Local => {
                if !nix::is_root() {
                    return Err(err("containers on the local machine need root (run ferry as root)"));
                }
                if !std::path::Path::new(&path).exists() {
                    std::fs::create_dir_all("/run/ferry")
                        .and_then(|_| {
                            let tmp = format!("{path}.{}", std::process::id());
                            std::fs::write(&tmp, SCRIPT)?;
                            std::fs::rename(&tmp, &path)
                        })
                        .map_err(|e| err(format!("cannot install {path}: {e}")))?;
                }
                Host { exec: Exec::Local, label: "local".into(), path }
            }
            HostSpec::Ssh(s) => {
                let conn = ferry_provider_nixos::target::connect(s, host_key)?;
                let sudo = s.user != "root";
                let h = Host { exec: Exec::Ssh { conn: Box::new(conn), sudo }, label: spec.label(), path };
                let p = quote(&h.path);
                let install = format!(
                    "if [ ! -f {p} ]; then umask 077; mkdir -p /run/ferry && cat > {p}.tmp && mv -f {p}.tmp {p}; \
                     else cat >/dev/null; fi"
                );
                h.raw(
                    "installing ferry's container helper",
                    &h.privileged(&install),
                    Some(SCRIPT.as_bytes()),
                    60,
                )?;
                h
            }
        };
        Ok(h)
    }

    pub fn conn(&self) -> Option<&Connection> {
        match &self.exec {
            Exec::Ssh { conn, .. } => Some(conn),
            Exec::Local => None,
        }
    }

    fn privileged(&self, inner: &str) -> String {
        match &self.exec {
            Exec::Ssh { sudo: true, .. } => format!("sudo -n sh -c {}", quote(inner)),
            _ => inner.to_string(),
        }
    }

    /// The shell command line running the helper in `mode`.
    pub fn line(&self, mode: &str, args: &[&str]) -> String {
        let mut words = vec![mode];
        words.extend_from_slice(args);
        self.privileged(&format!("sh {} {}", quote(&self.path), command_line(&words)))
    }

    fn raw(
        &self,
        what: &str,
        line: &str,
        stdin: Option<&[u8]>,
        timeout: u64,
    ) -> Result<String, ProviderError> {
        let timeout = Duration::from_secs(timeout);
        match &self.exec {
            Exec::Ssh { conn, .. } => conn.run(what, line, stdin, timeout).map_err(|e| match e {
                SshError::Failed { stderr, status, .. } => {
                    failed(what, &self.label, &exit_text(status, None), &stderr, line)
                }
                e => ferry_provider_nixos::transfer::ssh_error(e),
            }),
            Exec::Local => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(line);
                c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                let mut child = c.spawn().map_err(|e| err(format!("{what}: cannot run sh: {e}")))?;
                if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
                    let data = data.to_vec();
                    std::thread::spawn(move || {
                        let _ = w.write_all(&data);
                    });
                }
                let out = wait_output(child, timeout).map_err(|e| match e {
                    WaitError::Timeout => {
                        err(format!("{what} did not finish within {} s", timeout.as_secs()))
                    }
                    WaitError::Io(e) => err(format!("{what}: {e}")),
                })?;
                let so = String::from_utf8_lossy(&out.stdout).into_owned();
                if out.status.success() {
                    Ok(so)
                } else {
                    use std::os::unix::process::ExitStatusExt as _;
                    Err(failed(
                        what,
                        "local",
                        &exit_text(out.status.code(), out.status.signal()),
                        &format!("{so}{}", String::from_utf8_lossy(&out.stderr)),
                        line,
                    ))
                }
            }
        }
    }

    /// Run the helper: its stdout, or an error carrying its last lines of output.
    pub fn run(
        &self,
        what: &str,
        mode: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: u64,
    ) -> Result<String, ProviderError> {
        self.raw(what, &self.line(mode, args), stdin, timeout)
    }

    /// A command running the helper attached to the caller's terminal (`shell`, `run`).
    pub fn interactive(&self, mode: &str, args: &[&str], tty: bool) -> Command {
        match &self.exec {
            Exec::Ssh { conn, .. } => {
                let line = self.line(mode, args);
                if tty {
                    conn.interactive_command(Some(&line))
                } else {
                    conn.command(&line)
                }
            }
            Exec::Local => {
                let mut c = Command::new("sh");
                c.arg(&self.path).arg(mode).args(args);
                c
            }
        }
    }

    pub fn close(&self) {
        if let Exec::Ssh { conn, .. } = &self.exec {
            conn.close();
        }
    }
}

/// How a command ended, for an error message.
fn exit_text(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "killed by a signal".to_string(),
    }
}

/// A helper failure, never an empty message: what failed, where, how it ended (exit status),
/// then its `error:` lines first (they say what to do), else the output's tail; when it printed
/// nothing, the command to run on the host to see why.
fn failed(what: &str, host: &str, status: &str, output: &str, line: &str) -> ProviderError {
    let errors: Vec<&str> = output.lines().filter(|l| l.starts_with("error: ")).collect();
    let detail = if errors.is_empty() {
        ferry_ssh::tail_lines(output, 15)
    } else {
        let rest: Vec<&str> = output.lines().filter(|l| !l.starts_with("error: ")).collect();
        let mut d = errors.iter().map(|l| &l[7..]).collect::<Vec<_>>().join("\n");
        let tail = ferry_ssh::tail_lines(&rest.join("\n"), 15);
        if !tail.is_empty() {
            d = format!("{d}\n{tail}");
        }
        d
    };
    let detail = if detail.trim().is_empty() {
        format!(
            "ferry's container helper printed nothing on stdout or stderr; to see why, run it on \
             {host} as root with tracing: {}",
            line.replacen("sh /run/ferry/", "sh -x /run/ferry/", 1)
        )
    } else {
        detail
    };
    err(format!("{what} failed on {host} ({status}): {detail}"))
}

mod nix {
    pub fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_without_output_still_says_what_happened_and_what_to_do() {
        let line = "sh /run/ferry/ferry-nspawn-0123456789ab.sh claims ";
        let e = failed("listing address claims", "local", &exit_text(Some(1), None), "", line);
        assert_eq!(
            e.message,
            "listing address claims failed on local (exit 1): ferry's container helper printed nothing \
             on stdout or stderr; to see why, run it on local as root with tracing: \
             sh -x /run/ferry/ferry-nspawn-0123456789ab.sh claims "
        );
        let e = failed("starting", "h", &exit_text(None, Some(9)), " \n\n", line);
        assert!(
            e.message.starts_with(
                "starting failed on h (killed by signal 9): ferry's container helper printed nothing"
            ),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_failure_shows_error_lines_first_then_the_output() {
        let e = failed("x", "h", "exit 4", "owner=a\nerror: it broke: do this\n", "sh s x");
        assert_eq!(e.message, "x failed on h (exit 4): it broke: do this\nowner=a");
        // `claim` recognises a taken address by its exit status.
        assert!(e.message.contains("(exit 4)"));
    }
}
