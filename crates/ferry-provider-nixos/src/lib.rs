//! ferry's built-in `nixos` provider: `nixos.machine`, a NixOS system deployed over SSH.
//!
//! One deploy (create/update) of a machine goes: connect (one multiplexed SSH connection,
//! host key verified or learned) → probe the host (profile, running system, boot id) → build
//! (locally, several machines' builds coalesced into one `nix-store --realise`, or on the
//! target) → copy only the missing paths → pre-activation keys → set the profile and
//! `switch-to-configuration GOAL` → confirm over a fresh SSH connection (magic rollback) →
//! post-activation keys → health checks. A failed activation or health check rolls back to the
//! previous generation (`rollback.onFailure`); with magic rollback the host rolls itself back
//! when the deployer cannot confirm in time.
//!
//! Run-wide limits (`copyJobs`, `activateJobs`) and flags (`force`, `alwaysActivate`,
//! `nixOptions`) come from the handshake options.
//!
//! Architecture invariant: depends on `ferry-protocol` and `ferry-ssh` only; never writes to
//! stdout itself; key contents and `sshKey` never appear in events or errors.

mod actions;
pub mod build;
mod build_log;
mod checks;
mod deploy;
mod keys;
pub mod schema;
pub mod target;
pub mod transfer;

use std::sync::{Condvar, Mutex, OnceLock};

use ferry_protocol::sdk::{CallContext, Provider, ProviderInfo};
use ferry_protocol::*;

/// Run-wide options from the handshake.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub force: bool,
    pub always_activate: bool,
    pub nix_options: Vec<(String, String)>,
    pub copy_jobs: usize,
    pub activate_jobs: usize,
}

impl Options {
    pub fn from(o: &Object) -> Options {
        let n = |k: &str, d: usize| o.get(k).and_then(|v| v.as_u64()).map_or(d, |v| v.max(1) as usize);
        Options {
            force: o.get("force").and_then(|v| v.as_bool()).unwrap_or(false),
            always_activate: o.get("alwaysActivate").and_then(|v| v.as_bool()).unwrap_or(false),
            nix_options: o
                .get("nixOptions")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|p| {
                            let p = p.as_array()?;
                            Some((p.first()?.as_str()?.to_string(), p.get(1)?.as_str()?.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            copy_jobs: n("copyJobs", 4),
            activate_jobs: n("activateJobs", usize::MAX),
        }
    }

    /// `--option NAME VALUE` for Nix commands.
    pub fn nix_args(&self) -> Vec<String> {
        self.nix_options.iter().flat_map(|(k, v)| ["--option".to_string(), k.clone(), v.clone()]).collect()
    }
}

/// A counting semaphore (copy and activation slots).
pub struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Slots {
    pub fn new(n: usize) -> Slots {
        Slots { free: Mutex::new(n), cv: Condvar::new() }
    }
    pub fn acquire(&self) -> SlotGuard<'_> {
        let mut f = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *f == 0 {
            f = self.cv.wait(f).unwrap_or_else(|e| e.into_inner());
        }
        *f -= 1;
        SlotGuard(self)
    }
}

pub struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.cv.notify_one();
    }
}

/// The `nixos` provider.
#[derive(Default)]
pub struct NixosProvider {
    options: OnceLock<Options>,
    copy_slots: OnceLock<Slots>,
    activate_slots: OnceLock<Slots>,
    builder: build::Builder,
}

impl NixosProvider {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn options(&self) -> &Options {
        self.options.get_or_init(Options::default)
    }
    fn copy_slots(&self) -> &Slots {
        self.copy_slots.get_or_init(|| Slots::new(self.options().copy_jobs.max(1)))
    }
    fn activate_slots(&self) -> &Slots {
        self.activate_slots.get_or_init(|| Slots::new(self.options().activate_jobs.max(1)))
    }
}

/// Serve the `nixos` provider on stdin/stdout until stdin closes.
pub fn run() -> std::io::Result<()> {
    ferry_protocol::sdk::serve(NixosProvider::new())
}

fn unknown_kind(kind: &str) -> ProviderError {
    ProviderError::new(format!("the nixos provider has no kind `{kind}` (kinds: machine)")).code("badRequest")
}

impl Provider for NixosProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: "nixos".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kinds: vec![schema::machine()],
        }
    }

    fn configure(&self, options: &Object) {
        let _ = self.options.set(Options::from(options));
    }

    fn create(&self, p: CreateParams, cx: &CallContext) -> Result<OutputsResult, ProviderError> {
        if p.kind != "machine" {
            return Err(unknown_kind(&p.kind));
        }
        deploy::deploy(self, &p.resource, &p.inputs, None, &p.context, cx)
            .map(|outputs| OutputsResult { outputs })
    }

    fn update(&self, p: UpdateParams, cx: &CallContext) -> Result<OutputsResult, ProviderError> {
        if p.kind != "machine" {
            return Err(unknown_kind(&p.kind));
        }
        deploy::deploy(self, &p.resource, &p.inputs, Some(&p.prior), &p.context, cx)
            .map(|outputs| OutputsResult { outputs })
    }

    fn read(&self, p: ReadParams, cx: &CallContext) -> Result<ReadResult, ProviderError> {
        if p.kind != "machine" {
            return Err(unknown_kind(&p.kind));
        }
        deploy::read(self, &p.resource, &p.inputs, p.outputs.as_ref(), cx)
    }

    fn delete(&self, p: DeleteParams, _cx: &CallContext) -> Result<(), ProviderError> {
        if p.kind != "machine" {
            return Err(unknown_kind(&p.kind));
        }
        // A machine leaving the deployment keeps running its system: ferry only forgets it.
        Ok(())
    }

    fn action(&self, p: ActionParams, cx: &CallContext) -> Result<ActionResult, ProviderError> {
        if p.kind != "machine" {
            return Err(unknown_kind(&p.kind));
        }
        actions::action(self, &p, cx)
    }
}
