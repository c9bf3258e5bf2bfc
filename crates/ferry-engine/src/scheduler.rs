//! What the executor (`executor.rs`) works on: jobs, the messages of its worker threads, the
//! work planning hands it; and turning a round's results into jobs.

use crate::plan::Action;
use crate::planner::{Decision, Kind};
use crate::session::Session;
use crate::*;
use ferry_eval::ResourceEval;
use ferry_protocol::Object;
use ferry_state::{Intent, ResourceRecord, Status};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::Sender;

/// One unit of work for a worker.
pub(crate) struct Job {
    pub name: String,
    pub kind: Kind,
    pub deps: Vec<String>,
    pub tags: Vec<String>,
    /// `protect = true` (declared, or recorded for deletes): never replaced.
    pub protect: bool,
    pub task: Task,
}

/// What a job does.
pub(crate) enum Task {
    /// Delete what the record describes (an orphan, or everything for destroy).
    Delete { record: Box<ResourceRecord> },
    /// Bring the resource to its desired inputs.
    Apply(Box<Apply>),
}

pub(crate) struct Apply {
    pub inputs: Object,
    /// Store paths the inputs reference: derivation -> outputs.
    pub context: BTreeMap<String, Vec<String>>,
    pub record: Option<ResourceRecord>,
    /// Decided during planning; `None`: decided in the worker (it became ready later).
    pub decision: Option<Decision>,
    /// The desired inputs equal the recorded ones.
    pub stable: bool,
}

impl Job {
    pub fn record(&self) -> Option<&ResourceRecord> {
        match &self.task {
            Task::Delete { record } => Some(record),
            Task::Apply(a) => a.record.as_ref(),
        }
    }

    pub fn is_delete(&self) -> bool {
        matches!(self.task, Task::Delete { .. })
    }

    /// Planned as a no-op (it does not count against `--batch`).
    pub fn planned_noop(&self) -> bool {
        matches!(&self.task, Task::Apply(a) if a.decision.as_ref().is_some_and(|d| d.action() == Action::Noop))
    }
}

/// A record the executor must visit even when its resource is unchanged: an interrupted or
/// failed operation, or an old object a replacement left to delete.
pub(crate) fn needs_repair(r: &ResourceRecord) -> bool {
    r.status != Status::Ready || r.deposed.is_some()
}

pub(crate) enum Msg {
    Intent(Intent, Sender<Result<i64, ResourceError>>),
    Outcome(i64, Result<Option<Object>, ResourceError>),
    /// `unplanned`: it failed before any change, while being planned (a later round's plan
    /// error, which stops new work).
    Finished {
        name: String,
        action: Action,
        result: Result<Option<Object>, ResourceError>,
        seconds: f64,
        unplanned: bool,
    },
    Eval(Result<ferry_eval::RoundResult, ferry_eval::EvalError>, f64),
}

/// What the executor starts with.
pub(crate) struct Work {
    /// Jobs ready now (decided during planning).
    pub ready: Vec<Job>,
    /// Deletes (orphans, or everything for destroy), run first, dependents before dependencies.
    pub deletes: Vec<Job>,
    /// Declared resources still waiting for outputs.
    pub waiting: BTreeSet<String>,
    /// Resources that already failed during planning (name -> error).
    pub failed: Vec<(String, ResourceError)>,
}

/// Run the work: see [`crate::executor::Executor`].
pub(crate) fn execute(s: &mut Session, work: Work, run: i64) -> RunReport {
    crate::executor::Executor::new(s, work, run).run()
}

/// Take a round's results into the session (edges, evals).
pub(crate) fn absorb(s: &mut Session, results: &BTreeMap<String, ResourceEval>) {
    for (name, r) in results {
        if let Some(edges) = graph::edges_of(name, r) {
            s.deps.insert(name.clone(), edges.iter().map(|e| e.from.clone()).collect());
            s.edges.extend(edges);
        }
        s.evals.insert(name.clone(), r.clone());
    }
}

pub(crate) fn job_for(
    s: &Session,
    name: &str,
    kind: Kind,
    inputs: Object,
    r: &ResourceEval,
    decision: Option<Decision>,
) -> Job {
    Job {
        name: name.to_string(),
        kind,
        deps: s.deps.get(name).map(|d| d.iter().cloned().collect()).unwrap_or_default(),
        tags: s.decls.get(name).map(|d| d.tags.clone()).unwrap_or_default(),
        protect: s.decls.get(name).is_some_and(|d| d.protect),
        task: Task::Apply(Box::new(Apply {
            inputs,
            context: r.context.clone(),
            record: s.records.get(name).cloned(),
            decision,
            stable: r.stable,
        })),
    }
}
