//! The seam between providers and hosts: [`HostExec`], implemented by the real
//! [`HostConnection`](crate::HostConnection) (local, SSH, podman) and by
//! [`FakeHost`](crate::fake::FakeHost) for tests without root or sshd.
//!
//! Everything a provider does on a host is a shell script run by `sh -c` — as root when the
//! script is `privileged` and the transport needs escalation (an SSH user other than root, by
//! its `become`) — or a closure transfer.

use std::process::Command;
use std::time::Duration;

use crate::error::{Exit, HostError};
use crate::slots::Slots;

/// How the host is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Local,
    Ssh,
    Podman,
}

/// One script to run on a host.
#[derive(Debug, Clone)]
pub struct Script<'a> {
    /// What it does, for messages ("listing address claims").
    pub what: &'a str,
    /// A POSIX shell script (`sh -c`).
    pub script: &'a str,
    pub stdin: Option<&'a [u8]>,
    pub timeout: Duration,
    /// Run as root (SSH: through the host's `become`).
    pub privileged: bool,
}

impl<'a> Script<'a> {
    /// A privileged script with no input and a 10-minute timeout.
    pub fn new(what: &'a str, script: &'a str) -> Script<'a> {
        Script { what, script, stdin: None, timeout: Duration::from_secs(600), privileged: true }
    }
    pub fn stdin(mut self, data: Option<&'a [u8]>) -> Self {
        self.stdin = data;
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    pub fn privileged(mut self, p: bool) -> Self {
        self.privileged = p;
        self
    }
}

/// What a script printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub exit: Exit,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(stdout: impl Into<String>) -> Output {
        Output { exit: Exit::Code(0), stdout: stdout.into(), stderr: String::new() }
    }
    pub fn success(&self) -> bool {
        self.exit == Exit::Code(0)
    }
    /// `-1` for a signal.
    pub fn code(&self) -> i32 {
        self.exit.code().unwrap_or(-1)
    }
}

/// A closure transfer to a host.
pub struct Copy<'a> {
    /// `--option NAME VALUE` for the local Nix commands.
    pub nix_args: &'a [String],
    pub paths: &'a [String],
    /// SSH: `nix-copy-closure --use-substitutes`.
    pub use_substitutes: bool,
    /// The run's copy slots: one is held for the transfer itself.
    pub slots: Option<&'a Slots>,
    /// Progress ("N paths, M MiB").
    pub progress: &'a dyn Fn(String),
}

/// What a transfer moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    pub paths: usize,
    pub bytes: u64,
}

/// A host ferry can run scripts on and copy closures to.
pub trait HostExec: Send + Sync {
    /// How the host is named in outputs and messages (`local`, `10.0.0.5:2222`, `podman:web`).
    fn label(&self) -> &str;

    fn transport(&self) -> Transport;

    /// The SSH host key as verified or learned (SSH hosts only).
    fn host_key(&self) -> Option<String> {
        None
    }

    /// Run a script: its output whatever its exit status. An error means it could not run (or
    /// the transport failed: SSH's exit 255, podman's 125, a timeout).
    fn exec(&self, s: &Script) -> Result<Output, HostError>;

    /// Make the closure of `paths` present on the host: only the missing paths.
    fn copy_closure(&self, c: &Copy) -> Result<Copied, HostError>;

    /// A command attached to the caller's terminal running `script` (privileged).
    fn interactive(&self, script: &str, tty: bool) -> Result<Command, HostError>;

    /// End the connection (SSH). Also done on drop.
    fn close(&self) {}

    /// [`exec`](Self::exec), a non-zero exit being [`HostError::Failed`].
    fn run(&self, s: &Script) -> Result<String, HostError> {
        let out = self.exec(s)?;
        if out.success() {
            return Ok(out.stdout);
        }
        Err(HostError::Failed {
            what: s.what.to_string(),
            host: self.label().to_string(),
            exit: out.exit,
            output: format!("{}{}", out.stdout, out.stderr),
            command: s.script.to_string(),
            helper: None,
        })
    }

    fn is_local(&self) -> bool {
        self.transport() == Transport::Local
    }
}
