//! Reaching a container host through `ferry-hosts`: the local machine, or an SSH target through
//! one multiplexed connection. Everything on the host goes through the helper script
//! `nspawn.sh`, installed once (hash-named, so an upgraded ferry installs its own) in
//! `/run/ferry`.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use ferry_hosts::{Copied, Copy, Helper, HostConnection, HostError, HostExec, Slots};
use ferry_protocol::ProviderError;

use crate::schema::HostSpec;

pub const SCRIPT: &str = include_str!("nspawn.sh");

fn helper() -> &'static Helper {
    static HELPER: OnceLock<Helper> = OnceLock::new();
    HELPER.get_or_init(|| Helper::new("ferry-nspawn", SCRIPT, "ferry's container helper"))
}

/// A host with the helper script in place.
pub struct Host {
    exec: Box<dyn HostExec>,
    pub label: String,
}

fn err(msg: impl Into<String>) -> ProviderError {
    ProviderError::new(msg)
}

impl Host {
    /// Connect (SSH: host key pinned in the spec, else `host_key` recorded earlier, else
    /// trust on first use) and install the helper script if the host lacks it.
    pub fn open(spec: &HostSpec, host_key: Option<String>) -> Result<Host, ProviderError> {
        if spec.is_local() && !is_root() {
            return Err(err("containers on the local machine need root (run ferry as root)"));
        }
        Host::on(Box::new(HostConnection::open(spec, host_key)?))
    }

    /// The helper on `exec` (a real connection, or a fake one in tests), installed.
    pub fn on(exec: Box<dyn HostExec>) -> Result<Host, ProviderError> {
        helper().install(exec.as_ref(), "installing ferry's container helper")?;
        Ok(Host { label: exec.label().to_string(), exec })
    }

    /// The host's SSH key, as verified or learned (SSH hosts only).
    pub fn host_key(&self) -> Option<String> {
        self.exec.host_key()
    }

    /// Run the helper: its stdout, or its failure (typed: callers that tell failures apart
    /// look at the exit status; `?` makes it a provider error).
    pub fn run(
        &self,
        what: &str,
        mode: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: u64,
    ) -> Result<String, HostError> {
        helper().run(self.exec.as_ref(), what, mode, args, stdin, Duration::from_secs(timeout))
    }

    /// A command running the helper attached to the caller's terminal (`shell`, `run`).
    pub fn interactive(&self, mode: &str, args: &[&str], tty: bool) -> Result<Command, ProviderError> {
        Ok(helper().interactive(self.exec.as_ref(), mode, args, tty)?)
    }

    /// Copy the closure of `paths` to the host (nothing to do locally).
    pub fn copy_closure(
        &self,
        nix_args: &[String],
        paths: &[String],
        slots: &Slots,
        progress: &dyn Fn(String),
    ) -> Result<Copied, ProviderError> {
        let c = Copy { nix_args, paths, use_substitutes: false, slots: Some(slots), progress };
        Ok(self.exec.copy_closure(&c)?)
    }

    pub fn close(&self) {
        self.exec.close();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
