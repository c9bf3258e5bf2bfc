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
//! Everything on the host goes through `ferry-hosts` (one SSH connection, the helper
//! `remote.sh`, escalation by the machine's `become`, closure copies, coalesced builds).
//!
//! Architecture invariant: depends on `ferry-protocol`, `ferry-hosts` and `ferry-ssh` only (no
//! other provider); never writes to stdout itself; key contents and `sshKey` never appear in
//! events or errors.

mod actions;
mod checks;
mod deploy;
mod keys;
mod read;
mod remote;
pub mod schema;

use std::sync::OnceLock;

use ferry_hosts::build::Builder;
use ferry_hosts::Slots;
use ferry_protocol::sdk::{CallContext, Provider, ProviderInfo};
use ferry_protocol::*;

/// The `nixos` provider.
#[derive(Default)]
pub struct NixosProvider {
    options: OnceLock<RunOptions>,
    copy_slots: OnceLock<Slots>,
    activate_slots: OnceLock<Slots>,
    builder: Builder,
}

impl NixosProvider {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn options(&self) -> &RunOptions {
        self.options.get_or_init(RunOptions::default)
    }
    fn copy_slots(&self) -> &Slots {
        self.copy_slots.get_or_init(|| Slots::new(self.options().copy_jobs.unwrap_or(4)))
    }
    fn activate_slots(&self) -> &Slots {
        self.activate_slots.get_or_init(|| Slots::new(self.options().activate_jobs.unwrap_or(usize::MAX)))
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
        let _ = self.options.set(RunOptions::from_object(options));
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
        read::read(self, &p.resource, &p.inputs, p.outputs.as_ref(), cx)
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
