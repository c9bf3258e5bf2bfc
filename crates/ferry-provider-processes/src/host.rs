//! Where a set's commands run: the local machine, an SSH target (one multiplexed connection,
//! host key verified or learned) or a running podman container (`podman exec`). Every
//! operation on the host is a shell script (`sh -c`), so the switch is the same code for all
//! three; only the transfer of store paths and the readiness probes differ.
//!
//! A container needs `sh` and the usual tools (`readlink`, `ln`, `grep`, …) on its `PATH`:
//! an image made with `ferry.lib.processes.image` has them. Store paths go into it with
//! `podman cp` (a tar stream), so it needs no Nix; profile generations are then kept as the
//! same symlinks `nix-env` makes.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_protocol::sdk::CallContext;
use ferry_protocol::{Object, ProviderError};
use ferry_provider_nixos::target::{HostSpec, SshHost};
use ferry_ssh::{wait_output, Connection, SshError};
use serde_json::Value;

/// The `host` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostTarget {
    Local,
    Ssh(SshHost),
    /// A running podman container on the local machine.
    Podman(String),
}

impl HostTarget {
    pub fn parse(inputs: &Object) -> Result<HostTarget, String> {
        if let Some(Value::Object(o)) = inputs.get("host") {
            if let Some(c) = o.get("podman") {
                return match c.as_str() {
                    Some(c) if !c.is_empty() && o.len() == 1 => Ok(HostTarget::Podman(c.to_string())),
                    _ => Err("host: { podman = \"CONTAINER\"; } takes one non-empty container name".into()),
                };
            }
        }
        Ok(match HostSpec::parse(inputs)? {
            HostSpec::Local => HostTarget::Local,
            HostSpec::Ssh(s) => HostTarget::Ssh(s),
        })
    }

    pub fn label(&self) -> String {
        match self {
            HostTarget::Local => "local".into(),
            HostTarget::Ssh(s) => HostSpec::Ssh(s.clone()).label(),
            HostTarget::Podman(c) => format!("podman:{c}"),
        }
    }
}

enum Exec {
    Local,
    Ssh { conn: Box<Connection>, sudo: bool },
    Podman { container: String },
}

pub struct Host {
    /// Resource name, for error messages.
    pub resource: String,
    pub label: String,
    exec: Exec,
}

/// How long one host script may take (the switch waits in Rust, between scripts).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);

impl Host {
    /// Reach `target`. `recorded_key` is the host key learned on an earlier run; `privileged`
    /// says whether a non-root SSH user should run the scripts through `sudo`.
    pub fn open(
        resource: &str,
        target: &HostTarget,
        recorded_key: Option<String>,
        privileged: bool,
    ) -> Result<Host, ProviderError> {
        let exec = match target {
            HostTarget::Local => Exec::Local,
            HostTarget::Ssh(s) => {
                let conn = ferry_provider_nixos::target::connect(s, recorded_key).map_err(|e| {
                    let mut n = ProviderError::new(format!("processes.set `{resource}`: {}", e.message));
                    n.code = e.code;
                    n.retryable = e.retryable;
                    n
                })?;
                Exec::Ssh { conn: Box::new(conn), sudo: privileged && s.user != "root" }
            }
            HostTarget::Podman(c) => Exec::Podman { container: c.clone() },
        };
        Ok(Host { resource: resource.into(), label: target.label(), exec })
    }

    /// The host's SSH key, as verified or learned (SSH hosts only).
    pub fn host_key(&self) -> Option<String> {
        match &self.exec {
            Exec::Ssh { conn, .. } => Some(conn.host_key().to_string()),
            _ => None,
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self.exec, Exec::Local)
    }

    fn err(&self, msg: impl std::fmt::Display) -> ProviderError {
        ProviderError::new(format!("processes.set `{}`: {msg}", self.resource))
    }

    /// Run `script` with `sh -c`; stdout on success, an error naming `what` (with the end of
    /// stderr) otherwise.
    pub fn sh(&self, what: &str, script: &str) -> Result<String, ProviderError> {
        self.sh_input(what, script, None)
    }

    /// [`sh`](Self::sh) with `stdin` fed to the script.
    pub fn sh_input(&self, what: &str, script: &str, stdin: Option<&[u8]>) -> Result<String, ProviderError> {
        let (code, out, err) = self.run(script, stdin)?;
        if code == 0 {
            Ok(out)
        } else {
            let on = if self.is_local() { String::new() } else { format!(" on {}", self.label) };
            Err(self.err(format!("{what} failed{on} (exit {code}){}", tail(&err, &out))))
        }
    }

    /// Run `script`; (exit code, stdout, stderr) whatever the exit code.
    pub fn sh_status(&self, script: &str) -> Result<(i32, String, String), ProviderError> {
        self.run(script, None)
    }

    fn run(&self, script: &str, stdin: Option<&[u8]>) -> Result<(i32, String, String), ProviderError> {
        let (cmd, what) = match &self.exec {
            Exec::Local => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(script);
                (c, "sh")
            }
            Exec::Ssh { conn, sudo } => {
                let line = if *sudo {
                    format!("sudo -n sh -c {}", q(script))
                } else {
                    format!("sh -c {}", q(script))
                };
                let o = conn.output(conn.command(&line), "a host script", stdin, SCRIPT_TIMEOUT).map_err(
                    |e| {
                        let mut pe = ferry_provider_nixos::transfer::ssh_error(e);
                        pe.message = format!("processes.set `{}`: {}", self.resource, pe.message);
                        pe
                    },
                )?;
                let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
                if o.status.code() == Some(255) {
                    let e = conn.classify(&stderr, "a host script");
                    if !matches!(e, SshError::Failed { .. }) {
                        let mut pe = ferry_provider_nixos::transfer::ssh_error(e);
                        pe.message = format!("processes.set `{}`: {}", self.resource, pe.message);
                        return Err(pe);
                    }
                }
                return Ok((
                    o.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&o.stdout).into_owned(),
                    stderr,
                ));
            }
            Exec::Podman { container } => {
                let mut c = Command::new("podman");
                c.args(["exec", "-i", container, "sh", "-c", script]);
                (c, "podman")
            }
        };
        let (code, out, err) = output(cmd, stdin).map_err(|e| self.err(format!("cannot run {what}: {e}")))?;
        if let Exec::Podman { container } = &self.exec {
            // podman's own failures (no such container, not running) exit 125.
            if code == 125 {
                return Err(self.err(format!(
                    "cannot run commands in container `{container}` (is it running? `podman ps`): {}",
                    tail(&err, "").trim_start_matches(": ")
                )));
            }
        }
        Ok((code, out, err))
    }

    /// Is something listening on `port` (at `host`)? Locally a TCP connect; elsewhere the
    /// host's (or container's) listening sockets in /proc/net/tcp{,6}.
    pub fn tcp_ready(&self, host: &str, port: u16) -> bool {
        if self.is_local() {
            use std::net::ToSocketAddrs;
            let Ok(addrs) = (host, port).to_socket_addrs() else { return false };
            return addrs
                .into_iter()
                .any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok());
        }
        let script = format!(
            "grep -qE '^ *[0-9]+: [0-9A-F]+:{port:04X} [0-9A-F]+:0000 0A ' /proc/net/tcp /proc/net/tcp6 2>/dev/null"
        );
        matches!(self.sh_status(&script), Ok((0, _, _)))
    }

    pub fn file_exists(&self, path: &str) -> bool {
        if self.is_local() {
            return std::path::Path::new(path).exists();
        }
        matches!(self.sh_status(&format!("test -e {}", q(path))), Ok((0, _, _)))
    }

    pub fn read_file(&self, path: &str) -> Result<String, ProviderError> {
        if self.is_local() {
            return std::fs::read_to_string(path).map_err(|e| self.err(format!("cannot read {path}: {e}")));
        }
        self.sh(&format!("reading {path}"), &format!("cat {}", q(path)))
    }

    /// Make the closure of `paths` present on the host: nothing to do locally; over SSH the
    /// missing paths with `nix-copy-closure`; into a container, the missing paths as a tar
    /// stream through `podman cp`. Returns how many paths were copied.
    pub fn copy_closure(
        &self,
        nix_args: &[String],
        paths: &[String],
        cx: &CallContext,
    ) -> Result<usize, ProviderError> {
        match &self.exec {
            Exec::Local => Ok(0),
            Exec::Ssh { conn, sudo } => {
                ferry_provider_nixos::transfer::copy_closure(conn, *sudo, nix_args, paths, false, || (), cx)
                    .map(|(n, _)| n)
                    .map_err(|e| self.err(e.message))
            }
            Exec::Podman { container } => {
                let mut c = Command::new("nix-store");
                c.args(nix_args).arg("--query").arg("--requisites").args(paths);
                let closure = ferry_provider_nixos::transfer::run_local(c, "listing the closure")
                    .map_err(|e| self.err(e.message))?;
                let missing = self.sh_input(
                    "checking which store paths the container has",
                    "while read -r p; do [ -e \"$p\" ] || echo \"$p\"; done",
                    Some(closure.as_bytes()),
                )?;
                let missing: Vec<&str> = missing.lines().filter(|l| l.starts_with("/nix/store/")).collect();
                if missing.is_empty() {
                    return Ok(0);
                }
                cx.progress("copy", format!("{} paths into container {container}", missing.len()));
                let rel: Vec<&str> = missing.iter().map(|p| p.trim_start_matches('/')).collect();
                let script = format!(
                    "tar -C / -cf - {} | podman cp - {}:/",
                    ferry_ssh::command_line(&rel),
                    q(container)
                );
                let (code, out, err) = output(
                    {
                        let mut c = Command::new("sh");
                        c.arg("-c").arg(&script);
                        c
                    },
                    None,
                )
                .map_err(|e| self.err(format!("cannot run sh: {e}")))?;
                if code != 0 {
                    return Err(self.err(format!(
                        "copying {} store paths into container `{container}` failed (exit {code}){}",
                        missing.len(),
                        tail(&err, &out)
                    )));
                }
                Ok(missing.len())
            }
        }
    }
}

fn output(mut c: Command, stdin: Option<&[u8]>) -> std::io::Result<(i32, String, String)> {
    c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn()?;
    if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
    }
    let o = wait_output(child, SCRIPT_TIMEOUT).map_err(|e| match e {
        ferry_ssh::WaitError::Timeout => {
            std::io::Error::other(format!("did not finish within {} s", SCRIPT_TIMEOUT.as_secs()))
        }
        ferry_ssh::WaitError::Io(e) => e,
    })?;
    Ok((
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    ))
}

fn tail(err: &str, out: &str) -> String {
    let text = if err.trim().is_empty() { out } else { err };
    let lines: Vec<&str> = text.trim().lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let start = lines.len().saturating_sub(8);
    format!(": {}", lines[start..].join("\n"))
}

/// Shell single-quoting.
pub fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inputs(v: Value) -> Object {
        json!({ "host": v, "sshKey": "/k" }).as_object().cloned().unwrap()
    }

    #[test]
    fn host_inputs() {
        assert_eq!(HostTarget::parse(&inputs(json!("local"))).unwrap(), HostTarget::Local);
        assert_eq!(
            HostTarget::parse(&inputs(json!({"podman": "web"}))).unwrap(),
            HostTarget::Podman("web".into())
        );
        let HostTarget::Ssh(s) =
            HostTarget::parse(&inputs(json!({"host": "127.0.0.2", "port": 2222}))).unwrap()
        else {
            panic!("not ssh")
        };
        assert_eq!(
            (s.host.as_str(), s.port, s.user.as_str(), s.ssh_key.as_deref()),
            ("127.0.0.2", 2222, "root", Some("/k"))
        );
        assert!(HostTarget::parse(&inputs(json!({"podman": ""}))).is_err());
        assert!(HostTarget::parse(&inputs(json!({"podman": "a", "host": "b"}))).is_err());
        assert!(HostTarget::parse(&inputs(json!("web1"))).unwrap_err().contains("SSH target"));
    }
}
