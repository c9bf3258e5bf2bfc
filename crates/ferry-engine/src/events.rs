//! Progress events, consumed by the CLI's renderers (live TTY lines, plain lines, JSON).

use crate::plan::Action;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum EngineEvent {
    /// A Nix evaluation round began over `pending` resources (`None`: all of them).
    EvalStarted {
        round: u32,
        pending: Option<usize>,
    },
    EvalFinished {
        round: u32,
        ready: usize,
        seconds: f64,
    },
    /// Work on a resource began (`action` is what will be done).
    Started {
        resource: String,
        action: Action,
    },
    /// A provider's progress or log line, or an engine phase (`build`, `read`, ...).
    Phase {
        resource: String,
        phase: String,
        message: String,
    },
    Log {
        resource: String,
        level: String,
        message: String,
    },
    Finished {
        resource: String,
        action: Action,
        seconds: f64,
    },
    Failed {
        resource: String,
        error: String,
    },
    Skipped {
        resource: String,
        reason: String,
    },
    Warning {
        message: String,
    },
}

/// Where events go. Must be cheap; it is called from worker threads.
pub trait EventSink: Send + Sync {
    fn event(&self, event: EngineEvent);
}

impl<F: Fn(EngineEvent) + Send + Sync> EventSink for F {
    fn event(&self, event: EngineEvent) {
        self(event)
    }
}
