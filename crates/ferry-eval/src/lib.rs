//! ferry's evaluator: turns a deployment file into per-resource inputs, round by round.
//!
//! The Nix side (`nix/eval.nix`, embedded in the binary) wraps the user's file; this crate runs
//! it through the real Nix CLI (`nix-instantiate --eval --strict --json`) and decodes the result.
//! [`Evaluator`] is the seam where a Nix C API backend can be added later.
//!
//! Architecture invariant: this crate knows nothing about providers, state or any target; it
//! only evaluates and realises. It never writes `.drv` files unless asked (`write_drvs`).

mod drv;
mod nix_cli;
mod placeholder;

pub use nix_cli::{NixCli, NixSettings};
pub use placeholder::{find_placeholders, render_placeholders, Placeholder};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub type Object = Map<String, Value>;

/// What a round needs to know.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoundRequest {
    /// Absolute path of the deployment file.
    pub file: PathBuf,
    /// Outputs settled in this run.
    pub known: BTreeMap<String, Object>,
    /// Recorded inputs and outputs from state, lent optimistically to dependents of resources
    /// whose inputs did not change.
    pub recorded: BTreeMap<String, Recorded>,
    /// Resources whose recorded outputs must not be lent (they are going to change).
    pub unstable: Vec<String>,
    /// Resources to evaluate; `None` means all.
    pub pending: Option<Vec<String>>,
    /// Output names per kind (`"local.file"`), for placeholders.
    pub schemas: BTreeMap<String, KindOutputs>,
    pub want_declarations: bool,
    pub want_previews: bool,
    pub want_edges: bool,
    /// Write `.drv` files (needed before building what the inputs reference). Then the
    /// derivations behind hidden edges are read from the store instead of walked in Nix.
    pub write_drvs: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recorded {
    pub inputs: Object,
    pub outputs: Object,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KindOutputs {
    pub outputs: Vec<String>,
    pub output_names_input: Option<String>,
}

/// One resource's declaration: everything but its inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Declaration {
    pub file: String,
    /// Every file declaring this name (more than one is an error).
    pub files: Vec<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub provider: Option<ProviderSpec>,
    pub tags: Vec<String>,
    /// Per-call timeout in seconds.
    pub timeout: Option<f64>,
    pub unknown_attrs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSpec {
    pub executable: String,
    pub args: Vec<String>,
    /// Store paths to realise before starting it (derivation path -> outputs).
    #[serde(default)]
    pub context: BTreeMap<String, Vec<String>>,
}

/// The evaluation of one resource in a round.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceEval {
    /// Inputs are fully known (`Some`), or wait on outputs not known yet (`None`).
    pub inputs: Option<Object>,
    /// Store paths the inputs reference: derivation -> outputs (empty for plain paths).
    pub context: BTreeMap<String, Vec<String>>,
    /// Inputs equal the recorded ones (computed with recorded outputs of stable resources).
    pub stable: bool,
    /// Top-level inputs that are not known yet.
    pub unknown_inputs: Vec<String>,
    /// Per input: the value with unknown outputs as placeholders (`None`: not previewable).
    pub preview: Option<BTreeMap<String, Option<Value>>>,
    /// Inputs with every output a placeholder (visible edges), when asked for.
    pub edges: Option<Value>,
    /// Per top-level input: placeholders that reach it only through derivations (hidden edges),
    /// when edges were asked for. Exact when the `.drv` files are in the store (always in a
    /// round that writes them); otherwise what derivation values reveal (see ARCHITECTURE.md).
    pub hidden: BTreeMap<String, std::collections::BTreeSet<Placeholder>>,
}

#[derive(Debug, Clone, Default)]
pub struct RoundResult {
    pub declarations: Option<BTreeMap<String, Declaration>>,
    pub names: Vec<String>,
    pub results: BTreeMap<String, ResourceEval>,
}

/// Counters for `--timings`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvalStats {
    pub evaluations: u32,
    pub eval_time: Duration,
    pub builds: u32,
    pub build_time: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Nix reported an error; `message` is Nix's own text (with position).
    #[error("{message}")]
    Nix { message: String, user: bool },
    #[error("could not run {program}: {source}. Is Nix installed? (Debian: apt-get install nix-bin)")]
    Spawn { program: String, source: std::io::Error },
    #[error("{0}")]
    Protocol(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl EvalError {
    /// Errors raised by ferry's own checks of the deployment (`abort "ferry: ..."`).
    pub fn is_user_error(&self) -> bool {
        matches!(self, EvalError::Nix { user: true, .. })
    }
}

/// An evaluation backend.
pub trait Evaluator: Send + Sync {
    fn round(&self, req: &RoundRequest) -> Result<RoundResult, EvalError>;
    /// Build/realise store paths (`drv -> outputs`); returns the realised output paths.
    fn realise(&self, context: &BTreeMap<String, Vec<String>>) -> Result<Vec<String>, EvalError>;
    fn stats(&self) -> EvalStats;
}
