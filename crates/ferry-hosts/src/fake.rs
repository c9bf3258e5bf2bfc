//! A fake host for tests of provider orchestration without root, sshd or Nix: it records every
//! script and transfer, and answers from scripted replies.
//!
//! A reply is chosen by a substring of the script (the helper's mode, a command's name): the
//! most recently added match wins, so a test sets broad replies first and overrides them.
//! Scripts with no matching reply succeed with no output. Clones share the record.

use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::error::{Exit, HostError};
use crate::exec::{Copied, Copy, HostExec, Output, Script, Transport};

/// What the fake host was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Exec { what: String, script: String, stdin: Option<Vec<u8>>, privileged: bool },
    Copy { paths: Vec<String> },
}

impl Call {
    /// The script of an `Exec` (empty for a copy).
    pub fn script(&self) -> &str {
        match self {
            Call::Exec { script, .. } => script,
            Call::Copy { .. } => "",
        }
    }
}

type Reply = Result<Output, HostError>;

#[derive(Default)]
struct Record {
    calls: Vec<Call>,
    replies: Vec<(String, Reply)>,
    copied: Copied,
}

#[derive(Clone)]
pub struct FakeHost {
    label: String,
    transport: Transport,
    host_key: Option<String>,
    record: Arc<Mutex<Record>>,
}

impl FakeHost {
    /// A fake SSH host named `label`.
    pub fn new(label: &str) -> FakeHost {
        FakeHost {
            label: label.into(),
            transport: Transport::Ssh,
            host_key: Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFAKEFAKEFAKE".into()),
            record: Arc::default(),
        }
    }

    /// A fake of the local machine.
    pub fn local() -> FakeHost {
        FakeHost {
            label: "local".into(),
            transport: Transport::Local,
            host_key: None,
            record: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Scripts containing `needle` exit with `code`, printing `stdout`.
    pub fn reply(&self, needle: &str, code: i32, stdout: &str) -> &Self {
        let out = Output { exit: Exit::Code(code), stdout: stdout.into(), stderr: String::new() };
        self.lock().replies.push((needle.into(), Ok(out)));
        self
    }

    /// Scripts containing `needle` fail to run with `error` (a lost connection, a timeout).
    pub fn fail(&self, needle: &str, error: HostError) -> &Self {
        self.lock().replies.push((needle.into(), Err(error)));
        self
    }

    /// What the next transfer reports as copied.
    pub fn copies(&self, copied: Copied) -> &Self {
        self.lock().copied = copied;
        self
    }

    /// Everything asked so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The scripts run so far, in order.
    pub fn scripts(&self) -> Vec<String> {
        self.calls()
            .iter()
            .filter(|c| matches!(c, Call::Exec { .. }))
            .map(|c| c.script().to_string())
            .collect()
    }
}

impl HostExec for FakeHost {
    fn label(&self) -> &str {
        &self.label
    }

    fn transport(&self) -> Transport {
        self.transport
    }

    fn host_key(&self) -> Option<String> {
        self.host_key.clone()
    }

    fn exec(&self, s: &Script) -> Result<Output, HostError> {
        let mut r = self.lock();
        r.calls.push(Call::Exec {
            what: s.what.into(),
            script: s.script.into(),
            stdin: s.stdin.map(<[u8]>::to_vec),
            privileged: s.privileged,
        });
        let reply = r.replies.iter().rev().find(|(needle, _)| s.script.contains(needle.as_str()));
        reply.map_or_else(|| Ok(Output::ok("")), |(_, reply)| reply.clone())
    }

    fn copy_closure(&self, c: &Copy) -> Result<Copied, HostError> {
        let mut r = self.lock();
        r.calls.push(Call::Copy { paths: c.paths.to_vec() });
        Ok(if self.transport == Transport::Local { Copied::default() } else { r.copied })
    }

    fn interactive(&self, _script: &str, _tty: bool) -> Result<Command, HostError> {
        Err(HostError::Unsupported("a fake host has no terminal".into()))
    }
}
