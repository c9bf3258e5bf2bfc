//! ferry's built-in `local` provider: resources on the machine running ferry.
//!
//! | kind | what it is |
//! |---|---|
//! | `local.file` | a file with given content and mode, written atomically ([`file`](mod@file)) |
//! | `local.exec` | a resource managed by user commands printing JSON outputs ([`exec`]) |
//! | `local.random` | a random string or free TCP port, kept until inputs change ([`random`]) |
//! | `local.ssh-keypair` | an Ed25519 SSH key pair kept in ferry's state ([`keypair`]) |
//!
//! The provider speaks protocol v1 through [`ferry_protocol::sdk`] like any external provider;
//! the ferry binary runs itself as this provider through [`run`].
//!
//! Architecture invariant: depends on no ferry crate but `ferry-protocol`, and never writes to
//! stdout itself (the protocol stream); commands run by `local.exec` have their output captured.
//! Sensitive values (declared in each kind's schema) never appear in events or error messages.

pub mod exec;
pub mod file;
pub mod keypair;
pub mod random;
mod schema;

use ferry_protocol::sdk::{CallContext, Provider, ProviderInfo};
use ferry_protocol::*;

/// The `local` provider. Stateless: every operation works from its parameters alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalProvider;

impl LocalProvider {
    pub fn new() -> Self {
        LocalProvider
    }
}

/// Serve the `local` provider on stdin/stdout until stdin closes.
pub fn run() -> std::io::Result<()> {
    ferry_protocol::sdk::serve(LocalProvider::new())
}

/// A kind the handshake did not declare: a malformed request (protocol §4.6).
fn unknown_kind(kind: &str) -> ProviderError {
    ProviderError::new(format!(
        "the local provider has no kind `{kind}` (kinds: file, exec, random, ssh-keypair)"
    ))
    .code("badRequest")
}

impl Provider for LocalProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: "local".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kinds: vec![file::schema(), exec::schema(), random::schema(), keypair::schema()],
        }
    }

    fn plan(&self, p: PlanParams, _cx: &CallContext) -> Result<PlanResult, ProviderError> {
        match p.kind.as_str() {
            "file" => file::plan(&p),
            "exec" => exec::plan(&p),
            "random" => random::plan(&p),
            "ssh-keypair" => keypair::plan(&p),
            other => Err(unknown_kind(other)),
        }
    }

    fn create(&self, p: CreateParams, cx: &CallContext) -> Result<OutputsResult, ProviderError> {
        match p.kind.as_str() {
            "file" => file::create(&p, cx),
            "exec" => exec::create(&p, cx),
            "random" => random::create(&p, cx),
            "ssh-keypair" => keypair::create(&p, cx),
            other => Err(unknown_kind(other)),
        }
    }

    fn read(&self, p: ReadParams, cx: &CallContext) -> Result<ReadResult, ProviderError> {
        match p.kind.as_str() {
            "file" => file::read(&p),
            "exec" => exec::read(&p, cx),
            "random" => Ok(random::read(&p)),
            "ssh-keypair" => Ok(keypair::read(&p)),
            other => Err(unknown_kind(other)),
        }
    }

    fn update(&self, p: UpdateParams, cx: &CallContext) -> Result<OutputsResult, ProviderError> {
        match p.kind.as_str() {
            "file" => file::update(&p, cx),
            "exec" => exec::update(&p, cx),
            "random" | "ssh-keypair" => Err(ProviderError::unsupported(format!(
                "kind {} cannot be updated in place; any input change replaces it",
                p.kind
            ))),
            other => Err(unknown_kind(other)),
        }
    }

    fn delete(&self, p: DeleteParams, cx: &CallContext) -> Result<(), ProviderError> {
        match p.kind.as_str() {
            "file" => file::delete(&p, cx),
            "exec" => exec::delete(&p, cx),
            // The value exists only in ferry's state; forgetting it is the deletion.
            "random" | "ssh-keypair" => Ok(()),
            other => Err(unknown_kind(other)),
        }
    }
}

#[cfg(test)]
mod tests;
