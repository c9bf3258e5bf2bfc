//! ferry's built-in `nspawn` provider: `nspawn.container`, a systemd-nspawn NixOS container on a
//! host (the local machine or an SSH target), in the model of RFC 108.
//!
//! A deploy goes: connect → probe (runtime, owner, running or not, leader, profile, unit
//! digest) → build the system if needed (coalesced with other builds of the run) → copy its
//! closure to the host (remote hosts; only missing paths) → prepare the root directory, profile
//! and GC-root directories → assign addresses (static ones claimed, pool ones taken once and kept:
//! claims are files on the host, created with O_EXCL, so parallel creates never clash) → write
//! the `.nspawn` unit, networkd files and credentials → set the per-container profile → start,
//! reload (`switch-to-configuration test` inside), restart or leave it, by `activation.strategy`.
//!
//! Two runtimes, chosen by the host: `systemd` (systemd is PID 1: `systemd-nspawn@NAME`) and
//! `direct` (otherwise: ferry's detached supervisor sets the network up in a network namespace,
//! then runs `systemd-nspawn --settings=trusted -M NAME --network-namespace-path=…`). Both read
//! the same `.nspawn` file. Everything on the host is done by `nspawn.sh`.
//!
//! Architecture invariant: depends on `ferry-protocol` and `ferry-hosts` only (no other
//! provider); never writes to stdout itself; credentials never appear in events, errors or files
//! other than their own 0600 files.

mod addresses;
pub mod container;
pub mod host;
pub mod imperative;
mod leftovers;
pub mod net;
pub mod reload;
pub mod schema;
pub mod unit;

use std::sync::OnceLock;

use ferry_hosts::build::Builder;
use ferry_hosts::Slots;
use ferry_protocol::sdk::{CallContext, Provider, ProviderInfo};
use ferry_protocol::*;

/// The `nspawn` provider.
#[derive(Default)]
pub struct NspawnProvider {
    options: OnceLock<RunOptions>,
    copy_slots: OnceLock<Slots>,
    builder: Builder,
}

impl NspawnProvider {
    pub fn options(&self) -> &RunOptions {
        self.options.get_or_init(RunOptions::default)
    }

    fn deploy(
        &self,
        resource: &str,
        inputs: &Object,
        prior: Option<&Prior>,
        context: &std::collections::BTreeMap<String, Vec<String>>,
        cx: &CallContext,
    ) -> Result<Object, ProviderError> {
        let c = schema::Container::parse(resource, inputs)?;
        let slots = self.copy_slots.get_or_init(|| Slots::new(self.options().copy_jobs.unwrap_or(4)));
        let deps = container::Deps {
            builder: &self.builder,
            nix_args: self.options().nix_args(),
            context,
            owner: container::OWNER_DEPLOYMENT,
            copy_slots: slots,
        };
        container::deploy(&deps, &c, prior, cx)
    }
}

/// Serve the `nspawn` provider on stdin/stdout until stdin closes.
pub fn run() -> std::io::Result<()> {
    ferry_protocol::sdk::serve(NspawnProvider::default())
}

fn check_kind(kind: &str) -> Result<(), ProviderError> {
    if kind == "container" {
        Ok(())
    } else {
        Err(ProviderError::new(format!("the nspawn provider has no kind `{kind}` (kinds: container)"))
            .code("badRequest"))
    }
}

impl Provider for NspawnProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: "nspawn".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kinds: vec![schema::container()],
        }
    }

    fn configure(&self, options: &Object) {
        let _ = self.options.set(RunOptions::from_object(options));
    }

    fn plan(&self, p: PlanParams, _cx: &CallContext) -> Result<PlanResult, ProviderError> {
        check_kind(&p.kind)?;
        container::plan(&p.resource, &p.inputs, p.prior.as_ref())
    }

    fn create(&self, p: CreateParams, cx: &CallContext) -> Result<OutputsResult, ProviderError> {
        check_kind(&p.kind)?;
        self.deploy(&p.resource, &p.inputs, None, &p.context, cx).map(|outputs| OutputsResult { outputs })
    }

    fn update(&self, p: UpdateParams, cx: &CallContext) -> Result<OutputsResult, ProviderError> {
        check_kind(&p.kind)?;
        self.deploy(&p.resource, &p.inputs, Some(&p.prior), &p.context, cx)
            .map(|outputs| OutputsResult { outputs })
    }

    fn read(&self, p: ReadParams, _cx: &CallContext) -> Result<ReadResult, ProviderError> {
        check_kind(&p.kind)?;
        let c = schema::Container::parse(&p.resource, &p.inputs)?;
        container::read(&c, &p.inputs, p.outputs.as_ref(), container::OWNER_DEPLOYMENT)
    }

    fn delete(&self, p: DeleteParams, cx: &CallContext) -> Result<(), ProviderError> {
        check_kind(&p.kind)?;
        let c = schema::Container::parse(&p.resource, &p.inputs)?;
        let prior = Prior { inputs: p.inputs.clone(), outputs: p.outputs.clone() };
        container::destroy(&c, Some(&prior), !c.keep_state, cx)
    }

    fn action(&self, p: ActionParams, _cx: &CallContext) -> Result<ActionResult, ProviderError> {
        check_kind(&p.kind)?;
        let c = schema::Container::parse(&p.resource, &p.inputs)?;
        let prior = Prior { inputs: p.inputs.clone(), outputs: p.outputs.clone() };
        let (outputs, message) = container::action(&c, Some(&prior), &p.action)?;
        Ok(ActionResult { outputs, message: Some(message) })
    }
}

#[cfg(test)]
mod tests;
