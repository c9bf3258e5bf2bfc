//! ferry's engine: evaluate → plan → apply → record.
//!
//! The engine drives an [`ferry_eval::Evaluator`] round by round, talks to providers through
//! protocol v1 ([`provider_client`]), and records every step in a [`ferry_state::StateStore`].
//! It reports progress as [`EngineEvent`]s to an [`EventSink`]; it never prints.
//!
//! Architecture invariants: the engine knows nothing about any one target (files, machines,
//! containers are providers' business); all state writes happen on the scheduler thread, an
//! intent before each provider call and the result right after; sensitive values never leave
//! the engine unredacted in a [`Plan`] or an event.

pub mod events;
mod executor;
pub mod graph;
mod guards;
pub mod plan;
mod plan_phase;
mod planner;
pub mod provider_client;
pub mod redact;
pub mod registry;
pub(crate) mod run;
mod scheduler;
pub mod select;
mod session;
pub mod shown;
mod verbs;
mod worker;

pub use events::{EngineEvent, EventSink};
pub use plan::{Action, Plan, PlanEntry, Summary};
pub use provider_client::ProviderCommand;
pub use run::{Engine, RefreshEntry, RefreshReport};
pub use select::Selection;
pub use verbs::ProviderDescription;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Everything a run needs to know; the CLI builds it from flags.
#[derive(Clone)]
pub struct EngineConfig {
    /// Absolute path of the deployment file.
    pub file: PathBuf,
    pub state_path: PathBuf,
    /// `state_path` was chosen by the user (`--state`), not the default beside the file.
    pub state_given: bool,
    /// Parallel provider calls.
    pub jobs: usize,
    /// `--on`: only these resources (and their dependencies).
    pub selection: Option<Selection>,
    /// Providers built into the ferry binary, by provider name (`local`).
    pub builtin_providers: Vec<(String, ProviderCommand)>,
    /// Default per-call provider timeout (a resource's `timeout` overrides it).
    pub call_timeout: Duration,
    pub lock_timeout: Option<Duration>,
    /// Set by the Ctrl-C handler: stop starting new work.
    pub interrupted: Arc<AtomicBool>,
    /// The command line, recorded as the lock holder and in the journal.
    pub command: String,
    /// Run-wide options for providers (handshake `options`: `force`, `nixOptions`, …).
    pub provider_options: ferry_protocol::Object,
    /// `--batch N`: change N resources at a time; a batch with a failure stops the run.
    pub batch: Option<usize>,
    /// `--fail-fast`: start no new work after the first failure.
    pub fail_fast: bool,
    /// `--rebind`: use a state that belongs to another deployment, and bind it to this one.
    pub rebind: bool,
    /// `--allow-destroy-all`: allow an apply that destroys every recorded resource and
    /// creates nothing.
    pub allow_destroy_all: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The deployment is wrong (evaluation error, schema violation, cycle...).
    #[error("{0}")]
    Deployment(String),
    /// Nix failed to evaluate the deployment: `message` is Nix's (with the file and a hint).
    #[error("{message}")]
    Nix { message: String, kind: ferry_eval::NixErrorKind },
    #[error(transparent)]
    Eval(#[from] ferry_eval::EvalError),
    #[error(transparent)]
    State(#[from] ferry_state::StateError),
    #[error("{0}")]
    Provider(String),
    #[error("{0}")]
    Usage(String),
    /// A guard rail refused the run before anything changed: the state belongs to another
    /// deployment, the plan would destroy everything, or protected resources would go.
    #[error("{0}")]
    Refused(String),
}

/// Why one resource could not be planned or changed. Its text is the message shown (redacted
/// before it leaves the engine); the variant says what failed, for whoever needs to know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// The inputs break the kind's JSON Schema.
    #[error("{0}")]
    InvalidInputs(String),
    /// The kind cannot be resolved: no provider serves it, or its schema is unusable.
    #[error("{0}")]
    Kind(String),
    /// A provider call failed: its structured error, or the provider broke (crash, garbage,
    /// timeout, a malformed result).
    #[error("{0}")]
    Provider(String),
    /// Realising the store paths the inputs reference failed.
    #[error("building inputs: {0}")]
    Build(String),
    /// A guard refused the change (`protect = true`).
    #[error("{0}")]
    Refused(String),
    /// Recording the operation in state failed, so it was not started.
    #[error("{0}")]
    State(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl ResourceError {
    /// The same error with its message passed through `f` (redaction, context).
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> ResourceError {
        use ResourceError::*;
        match self {
            InvalidInputs(m) => InvalidInputs(f(m)),
            Kind(m) => Kind(f(m)),
            Provider(m) => Provider(f(m)),
            Build(m) => Build(f(m)),
            Refused(m) => Refused(f(m)),
            State(m) => State(f(m)),
            Internal(m) => Internal(f(m)),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub summary: Summary,
    /// Resource name -> error message, for resources that failed.
    pub failed: Vec<(String, String)>,
    /// Resource name -> why it was not attempted.
    pub skipped: Vec<(String, String)>,
    pub interrupted: bool,
    pub timings: Timings,
}

impl RunReport {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && !self.interrupted
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    pub nix_evaluations: u32,
    pub eval_seconds: f64,
    pub nix_builds: u32,
    pub build_seconds: f64,
    pub plan_seconds: f64,
    pub apply_seconds: f64,
    pub total_seconds: f64,
    pub provider_calls: u64,
}

#[cfg(test)]
mod tests;
