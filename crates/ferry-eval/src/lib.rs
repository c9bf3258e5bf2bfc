//! ferry's evaluator: turns a deployment file into per-resource inputs, round by round.
//!
//! The Nix side (`nix/eval.nix`, embedded in the binary) wraps the user's file; this crate runs
//! it through the real Nix CLI (`nix-instantiate --eval --strict --json`) and decodes the result.
//! [`Evaluator`] is the seam where a Nix C API backend can be added later.
//!
//! Architecture invariant: this crate knows nothing about providers, state or any target; it
//! only evaluates and realises. It never writes `.drv` files unless asked (`write_drvs`).

mod drv;
pub mod flake;
mod nix_cli;
mod nix_error;
mod placeholder;
mod workers;

pub use nix_cli::{NixCli, NixLibrary, NixSettings};
pub use nix_error::NixErrorKind;
pub use placeholder::{find_placeholders, render_placeholders, Placeholder, OPAQUE};
pub use workers::auto_eval_jobs;

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
    /// Sensitive output names per resource (of `known` and `recorded`): a derivation built
    /// from one of them is refused before anything reaches the store.
    pub sensitive: BTreeMap<String, Vec<String>>,
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
    /// Recorded with no dependencies: its inputs are tried first with every output pending,
    /// and if they evaluate so they use none, so the edges view (a second evaluation of,
    /// say, a whole NixOS system) is skipped.
    pub no_dependencies: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KindOutputs {
    pub outputs: Vec<String>,
    pub output_names_input: Option<String>,
    /// Costly to evaluate (the kind's `heavyInputs`): with several workers, two or more such
    /// resources in a round are evaluated in worker processes.
    pub heavy: bool,
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
    /// `protect = true`: ferry refuses to destroy or replace the resource.
    #[serde(default)]
    pub protect: bool,
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
    /// Not ready, and its inputs fail with placeholders too: the throw may be the user's
    /// (an option typo, a failed assertion) rather than ferry's "not known yet". Settle it
    /// with [`Evaluator::probe`].
    pub undetermined: bool,
    /// The file declaring the resource.
    pub file: String,
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
    /// The top file's `name = "…";` (with the declarations only), if it sets one.
    pub deployment_name: Option<String>,
    pub names: Vec<String>,
    pub results: BTreeMap<String, ResourceEval>,
    /// Resources whose inputs fail in the user's code (filled by whoever probes the
    /// undetermined ones): name -> the message, naming the resource and its file.
    pub failures: BTreeMap<String, String>,
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
    /// A derivation (or `toFile`) was built from a sensitive output: refused by Nix before
    /// anything was written to the store (the output's context names a derivation that does
    /// not exist).
    #[error("the sensitive output `{resource}.{output}` flows into a derivation: it would be written to the world-readable Nix store")]
    SensitiveInStore { resource: String, output: String },
}

impl EvalError {
    /// Errors raised by ferry's own checks of the deployment (`abort "ferry: ..."`).
    pub fn is_user_error(&self) -> bool {
        matches!(self, EvalError::Nix { user: true, .. })
    }

    /// The kind of a Nix error (not of ferry's own checks, nor of other failures).
    pub fn nix_kind(&self) -> Option<NixErrorKind> {
        match self {
            EvalError::Nix { message, user: false } => Some(NixErrorKind::of(message)),
            _ => None,
        }
    }
}

/// What evaluating one resource's inputs without `tryEval` showed.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// The first throw was ferry's own: an output not known yet.
    Pending,
    /// The inputs evaluate (they did not in the round: nothing to report).
    Ready,
    /// The user's code (or nixpkgs) threw or failed an assertion: Nix's message (and trace,
    /// with `--show-trace`).
    Failed(String),
}

/// An evaluation backend.
pub trait Evaluator: Send + Sync {
    fn round(&self, req: &RoundRequest) -> Result<RoundResult, EvalError>;
    /// Evaluate `name`'s inputs (or only `input`) as in `req`, uncaught, to tell ferry's
    /// pending throws from the user's (`tryEval` hides the message). One Nix invocation.
    fn probe(&self, req: &RoundRequest, name: &str, input: Option<&str>) -> Result<Probe, EvalError>;
    /// The names of `name`'s inputs (their values unevaluated). One Nix invocation.
    fn input_names(&self, req: &RoundRequest, name: &str) -> Result<Vec<String>, EvalError>;
    /// Build/realise store paths (`drv -> outputs`); returns the realised output paths.
    fn realise(&self, context: &BTreeMap<String, Vec<String>>) -> Result<Vec<String>, EvalError>;
    fn stats(&self) -> EvalStats;
}
