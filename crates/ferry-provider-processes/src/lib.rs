//! ferry's built-in `processes` provider (work in progress).

use ferry_protocol::sdk::{CallContext, Provider, ProviderInfo};
use ferry_protocol::{CreateParams, OutputsResult, ProviderError};

#[derive(Default)]
pub struct Builtin;

impl Provider for Builtin {
    fn info(&self) -> ProviderInfo {
        ProviderInfo { name: "processes".into(), version: env!("CARGO_PKG_VERSION").into(), kinds: vec![] }
    }

    fn create(&self, p: CreateParams, _cx: &CallContext) -> Result<OutputsResult, ProviderError> {
        Err(ProviderError::new(format!("no kind `{}`", p.kind)).code("badRequest"))
    }
}

/// Serve the provider on stdin/stdout until stdin closes.
pub fn run() -> std::io::Result<()> {
    ferry_protocol::sdk::serve(Builtin)
}
