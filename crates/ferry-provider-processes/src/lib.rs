//! ferry's built-in `processes` and `ids` providers.
//!
//! * `processes.set` — a set of long-running processes (made with `ferry.lib.processes.set`,
//!   see `nix/processes.nix` here) deployed under supervisord, s6, sysvinit
//!   scripts or systemd on the local host: a switch that touches only the processes whose
//!   config store path changed, a profile with generations, rollback, live status as drift.
//!   `set.rs` (switch, read, delete, actions), `manager.rs` (each manager through its own
//!   tools), `host.rs` (every host operation is a shell script).
//! * `processes.image` — a multi-process image (`ferry.lib.processes.image`) loaded into
//!   podman (`image.rs`).
//! * `ids.pool` — sticky unique IDs (`ids.rs`), outputs nested per pool: `resources.ids.ports.webapp`.
//!
//! Architecture invariant: depends on `ferry-protocol` and `ferry-hosts` only, no other
//! provider; managers are driven with their own command-line tools, never reimplemented.

mod actions;
mod host;
mod ids;
mod image;
mod manager;
pub mod schema;
mod scripts;
mod set;
mod supervisor;
mod users;

use std::sync::OnceLock;

/// The processes model and its generators, offered to deployments as `ferry.lib.processes`
/// (file name, Nix source; `processes.nix` is the entry, imported with `{ }`).
pub const NIX_LIBRARY: [(&str, &str); 2] = [
    ("processes.nix", include_str!("../nix/processes.nix")),
    ("processes-image.nix", include_str!("../nix/processes-image.nix")),
];

use ferry_protocol::sdk::{CallContext, Provider, ProviderInfo};
use ferry_protocol::*;

/// Run-wide options from the handshake (only `nixOptions` matters here).
pub use ferry_protocol::RunOptions as Options;

/// The `processes` provider (kinds `set` and `image`).
#[derive(Default)]
pub struct Builtin {
    options: OnceLock<Options>,
}

impl Builtin {
    fn options(&self) -> &Options {
        self.options.get_or_init(Options::default)
    }
}

fn unknown_kind(provider: &str, kind: &str, kinds: &str) -> ProviderError {
    ProviderError::new(format!("the {provider} provider has no kind `{kind}` (kinds: {kinds})"))
        .code("badRequest")
}

impl Provider for Builtin {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: "processes".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kinds: vec![schema::set(), schema::image()],
        }
    }

    fn configure(&self, options: &Object) {
        let _ = self.options.set(Options::from_object(options));
    }

    /// Inputs are checked while planning, so bad input stops the run before anything changes.
    fn plan(&self, p: PlanParams, _cx: &CallContext) -> Result<PlanResult, ProviderError> {
        if p.kind == "image" {
            return image::plan(&self.info(), &p);
        }
        if p.kind != "set" {
            return Err(unknown_kind("processes", &p.kind, "set, image"));
        }
        schema::SetInputs::parse(&p.resource, &p.inputs)?;
        Ok(set::plan(&self.info(), &p))
    }

    fn create(&self, p: CreateParams, cx: &CallContext) -> Result<OutputsResult, ProviderError> {
        if p.kind == "image" {
            return image::load(&p.resource, &p.inputs, None, cx).map(|outputs| OutputsResult { outputs });
        }
        if p.kind != "set" {
            return Err(unknown_kind("processes", &p.kind, "set, image"));
        }
        set::deploy(self.options(), &p.resource, &p.inputs, None, cx).map(|outputs| OutputsResult { outputs })
    }

    fn update(&self, p: UpdateParams, cx: &CallContext) -> Result<OutputsResult, ProviderError> {
        if p.kind == "image" {
            return image::load(&p.resource, &p.inputs, Some(&p.prior.outputs), cx)
                .map(|outputs| OutputsResult { outputs });
        }
        if p.kind != "set" {
            return Err(unknown_kind("processes", &p.kind, "set, image"));
        }
        set::deploy(self.options(), &p.resource, &p.inputs, Some(&p.prior.outputs), cx)
            .map(|outputs| OutputsResult { outputs })
    }

    fn read(&self, p: ReadParams, _cx: &CallContext) -> Result<ReadResult, ProviderError> {
        if p.kind == "image" {
            return image::read(&p.resource, &p.inputs, p.outputs.as_ref());
        }
        if p.kind != "set" {
            return Err(unknown_kind("processes", &p.kind, "set, image"));
        }
        set::read(&p.resource, &p.inputs, p.outputs.as_ref())
    }

    fn delete(&self, p: DeleteParams, cx: &CallContext) -> Result<(), ProviderError> {
        if p.kind == "image" {
            return image::delete(&p.resource, &p.inputs, &p.outputs, cx);
        }
        if p.kind != "set" {
            return Err(unknown_kind("processes", &p.kind, "set, image"));
        }
        set::delete(&p.resource, &p.inputs, &p.outputs, cx)
    }

    fn action(&self, p: ActionParams, cx: &CallContext) -> Result<ActionResult, ProviderError> {
        if p.kind != "set" {
            return Err(unknown_kind("processes", &p.kind, "set, image"));
        }
        actions::action(self.options(), &p, cx)
    }
}

/// The `ids` provider (kind `pool`).
#[derive(Default)]
pub struct Ids;

impl Provider for Ids {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: "ids".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kinds: vec![schema::pool()],
        }
    }

    fn create(&self, p: CreateParams, _cx: &CallContext) -> Result<OutputsResult, ProviderError> {
        if p.kind != "pool" {
            return Err(unknown_kind("ids", &p.kind, "pool"));
        }
        ids::assign(&p.resource, &p.inputs, None).map(|outputs| OutputsResult { outputs })
    }

    fn update(&self, p: UpdateParams, _cx: &CallContext) -> Result<OutputsResult, ProviderError> {
        if p.kind != "pool" {
            return Err(unknown_kind("ids", &p.kind, "pool"));
        }
        ids::assign(&p.resource, &p.inputs, Some(&p.prior.outputs)).map(|outputs| OutputsResult { outputs })
    }
}

/// Serve the `processes` provider on stdin/stdout until stdin closes.
pub fn run() -> std::io::Result<()> {
    ferry_protocol::sdk::serve(Builtin::default())
}

/// Serve the `ids` provider on stdin/stdout until stdin closes.
pub fn run_ids() -> std::io::Result<()> {
    ferry_protocol::sdk::serve(Ids)
}

#[cfg(test)]
mod tests;
