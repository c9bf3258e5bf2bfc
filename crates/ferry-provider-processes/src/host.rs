//! Where a set's commands run, through `ferry-hosts`: the local machine, an SSH target (one
//! multiplexed connection, host key verified or learned, escalation by the host's `become`) or
//! a running podman container (`podman exec`). Every operation on the host is a shell script
//! (`sh -c`), so the switch is the same code for all three; only the transfer of store paths
//! and the readiness probes differ.
//!
//! A container needs `sh` and the usual tools (`readlink`, `ln`, `grep`, …) on its `PATH`:
//! an image made with `ferry.lib.processes.image` has them. Store paths go into it with
//! `podman cp` (a tar stream), so it needs no Nix; profile generations are then kept as the
//! same symlinks `nix-env` makes.

use std::time::Duration;

use ferry_hosts::{Copy, HostConnection, HostError, HostExec, Script};
use ferry_protocol::sdk::CallContext;
use ferry_protocol::{Object, ProviderError};

/// The `host` input (`"local"`, an SSH target or `{ podman = "CONTAINER"; }`).
pub use ferry_hosts::HostSpec as HostTarget;

/// The `host` input of `inputs`, podman containers allowed.
pub fn parse_target(inputs: &Object) -> Result<HostTarget, String> {
    HostTarget::parse(inputs, true)
}

pub struct Host {
    /// Resource name, for error messages.
    pub resource: String,
    pub label: String,
    exec: Box<dyn HostExec>,
    /// Whether scripts run as root (a non-root SSH user through its `become`).
    privileged: bool,
}

/// How long one host script may take (the switch waits in Rust, between scripts).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);

impl Host {
    /// Reach `target`. `recorded_key` is the host key learned on an earlier run; `privileged`
    /// says whether a non-root SSH user should run the scripts as root (by its `become`).
    pub fn open(
        resource: &str,
        target: &HostTarget,
        recorded_key: Option<String>,
        privileged: bool,
    ) -> Result<Host, ProviderError> {
        let exec = HostConnection::open(target, recorded_key)
            .map_err(|e| e.provider_error_in(&format!("processes.set `{resource}`")))?;
        Ok(Host::on(resource, Box::new(exec), privileged))
    }

    /// `resource`'s host on `exec` (a real connection, or a fake one in tests).
    pub fn on(resource: &str, exec: Box<dyn HostExec>, privileged: bool) -> Host {
        Host { resource: resource.into(), label: exec.label().to_string(), exec, privileged }
    }

    /// The host's SSH key, as verified or learned (SSH hosts only).
    pub fn host_key(&self) -> Option<String> {
        self.exec.host_key()
    }

    pub fn is_local(&self) -> bool {
        self.exec.is_local()
    }

    fn err(&self, msg: impl std::fmt::Display) -> ProviderError {
        ProviderError::new(format!("processes.set `{}`: {msg}", self.resource))
    }

    fn host_err(&self, e: HostError) -> ProviderError {
        e.provider_error_in(&format!("processes.set `{}`", self.resource))
    }

    fn script<'a>(&self, what: &'a str, script: &'a str, stdin: Option<&'a [u8]>) -> Script<'a> {
        Script::new(what, script).stdin(stdin).timeout(SCRIPT_TIMEOUT).privileged(self.privileged)
    }

    /// Run `script` with `sh -c`; stdout on success, an error naming `what` (with the end of
    /// its output) otherwise.
    pub fn sh(&self, what: &str, script: &str) -> Result<String, ProviderError> {
        self.sh_input(what, script, None)
    }

    /// [`sh`](Self::sh) with `stdin` fed to the script.
    pub fn sh_input(&self, what: &str, script: &str, stdin: Option<&[u8]>) -> Result<String, ProviderError> {
        self.exec.run(&self.script(what, script, stdin)).map_err(|e| self.host_err(e))
    }

    /// Run `script`; (exit code, stdout, stderr) whatever the exit code.
    pub fn sh_status(&self, script: &str) -> Result<(i32, String, String), ProviderError> {
        let o = self.exec.exec(&self.script("a host script", script, None)).map_err(|e| self.host_err(e))?;
        Ok((o.code(), o.stdout, o.stderr))
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
        let script = crate::scripts::common("tcp_listening", &[format!("{port:04X}")]);
        matches!(self.sh_status(&script), Ok((0, _, _)))
    }

    pub fn file_exists(&self, path: &str) -> bool {
        if self.is_local() {
            return std::path::Path::new(path).exists();
        }
        matches!(self.sh_status(&command_line(&["test", "-e", path])), Ok((0, _, _)))
    }

    pub fn read_file(&self, path: &str) -> Result<String, ProviderError> {
        if self.is_local() {
            return std::fs::read_to_string(path).map_err(|e| self.err(format!("cannot read {path}: {e}")));
        }
        self.sh(&format!("reading {path}"), &command_line(&["cat", path]))
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
        let c = Copy {
            nix_args,
            paths,
            use_substitutes: false,
            slots: None,
            progress: &|m| cx.progress("copy", m),
        };
        self.exec.copy_closure(&c).map(|c| c.paths).map_err(|e| self.host_err(e))
    }
}

/// A command from words, each quoted.
pub fn command_line(words: &[&str]) -> String {
    words.iter().map(|w| q(w)).collect::<Vec<_>>().join(" ")
}

/// Shell single-quoting (always quoted: no word is ever taken as shell code).
pub fn q(s: &str) -> String {
    format!("'{}'", s.replace('\0', "").replace('\'', "'\\''"))
}
