//! The worker side of a job: the provider calls that change one resource, each between an
//! intent and a result that the scheduler thread records (workers never write state).
//!
//! A replace runs in the order the provider's plan asked for: delete then create (the
//! default), or, with `createBeforeDestroy`, create the new resource first (state keeps the
//! old one as *deposed*) and delete the old one after. A deposed object left by an interrupted
//! run is deleted before anything else happens to its resource.

use crate::events::{EngineEvent, EventSink};
use crate::plan::Action;
use crate::planner::{decide, describe, Step};
use crate::registry::Registry;
use crate::scheduler::{Apply, Job, Msg, Task};
use crate::ResourceError;
use ferry_protocol::{Call, CreateParams, DeleteParams, Object, OutputsResult, UpdateParams};
use ferry_state::{Intent, Op, ResourceRecord, Status};
use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Sender};

type Outcome = Result<Option<Object>, ResourceError>;

struct Worker<'a> {
    job: &'a Job,
    reg: &'a Registry,
    tx: &'a Sender<Msg>,
}

impl Worker<'_> {
    /// Run `call` between a recorded intent and its recorded result.
    fn recorded(&self, op: Op, inputs: &Object, deposed: bool, call: impl FnOnce() -> Outcome) -> Outcome {
        let job = self.job;
        let (rtx, rrx) = channel();
        let intent = Intent {
            resource: job.name.clone(),
            op,
            kind: job.kind.kind.clone(),
            provider: self.reg.record_of(&job.kind.command),
            inputs: inputs.clone(),
            dependencies: job.deps.clone(),
            tags: job.tags.clone(),
            sensitive_outputs: job.kind.schema.sensitive_outputs.clone(),
            protect: job.protect,
            deposed,
        };
        self.tx.send(Msg::Intent(intent, rtx)).map_err(|_| stopped())?;
        let id = rrx.recv().map_err(|_| stopped())??;
        let r = call();
        let _ = self.tx.send(Msg::Outcome(id, r.clone()));
        r
    }

    fn call_outputs(&self, c: Call) -> Outcome {
        let k = &self.job.kind;
        let v = self.reg.call(&k.command, c, k.timeout).map_err(|e| describe(&e, k))?;
        let r: OutputsResult = serde_json::from_value(v).map_err(|e| {
            ResourceError::Provider(format!("provider {} sent a malformed result: {e}", k.command.label))
        })?;
        Ok(Some(r.outputs))
    }

    /// Delete the object with these inputs and outputs; `deposed`: the one a create-before-
    /// destroy replacement superseded (its record stays).
    fn delete(&self, inputs: &Object, outputs: &Object, deposed: bool) -> Outcome {
        let k = &self.job.kind;
        self.recorded(Op::Delete, inputs, deposed, || {
            let params = DeleteParams {
                kind: k.short(),
                resource: self.job.name.clone(),
                inputs: inputs.clone(),
                outputs: outputs.clone(),
            };
            self.reg
                .call(&k.command, Call::Delete(params), k.timeout)
                .map(|_| None)
                .map_err(|e| describe(&e, k))
        })
    }

    /// `deposed`: this create replaces the recorded object, which is kept to delete after.
    fn create(&self, inputs: &Object, context: &BTreeMap<String, Vec<String>>, deposed: bool) -> Outcome {
        self.recorded(Op::Create, inputs, deposed, || {
            self.call_outputs(Call::Create(CreateParams {
                kind: self.job.kind.short(),
                resource: self.job.name.clone(),
                inputs: inputs.clone(),
                context: context.clone(),
            }))
        })
    }

    /// Delete the object an interrupted create-before-destroy replacement left behind.
    fn delete_deposed(&self, sink: &dyn EventSink) -> Result<(), ResourceError> {
        let Some(d) = self.job.record().and_then(|r| r.deposed.as_ref()) else { return Ok(()) };
        sink.event(EngineEvent::Phase {
            resource: self.job.name.clone(),
            phase: "delete".into(),
            message: "removing the old object a replacement superseded".into(),
        });
        self.delete(&d.inputs, &d.outputs, true)
            .map(|_| ())
            .map_err(|e| e.map_message(|m| format!("removing the old object a replacement superseded: {m}")))
    }
}

/// Run one job; returns what it did, the resulting outputs (`None` for deletes), and whether
/// it failed while being planned (before any change).
pub(crate) fn run_job(
    job: Job,
    reg: &Registry,
    eval: &dyn ferry_eval::Evaluator,
    sink: &dyn EventSink,
    tx: &Sender<Msg>,
) -> (Action, Outcome, bool) {
    let w = Worker { job: &job, reg, tx };
    match &job.task {
        Task::Delete { record } => (Action::Delete, delete_recorded(&w, record, sink), false),
        Task::Apply(a) => {
            let (action, outcome, planning) = apply(&w, a, eval, sink);
            (action, outcome, a.decision.is_none() && planning)
        }
    }
}

/// Delete a recorded resource (a deposed object first).
fn delete_recorded(w: &Worker, rec: &ResourceRecord, sink: &dyn EventSink) -> Outcome {
    sink.event(EngineEvent::Started { resource: w.job.name.clone(), action: Action::Delete });
    w.delete_deposed(sink)?;
    let inputs = if rec.last_applied_at.is_some() {
        rec.inputs.clone()
    } else {
        rec.pending.clone().map(|p| p.inputs).unwrap_or_default()
    };
    w.delete(&inputs, &rec.outputs, false)
}

/// Bring one resource to its desired inputs: decide (unless planning did), realise what the
/// inputs reference, then the provider calls of the decided action. The flag: it failed
/// while being decided, before any change.
fn apply(
    w: &Worker,
    a: &Apply,
    eval: &dyn ferry_eval::Evaluator,
    sink: &dyn EventSink,
) -> (Action, Outcome, bool) {
    let (job, reg) = (w.job, w.reg);
    let name = job.name.clone();
    let k = &job.kind;
    let inputs = &a.inputs;
    let decision = match a.decision.clone() {
        Some(d) => d,
        None => match decide(reg, k, &name, inputs, a.record.as_ref(), a.stable, None) {
            Ok(d) => d,
            Err(e) => return (Action::Noop, Err(e), true),
        },
    };
    let action = decision.action();
    if action == Action::Replace && job.protect {
        return (action, Err(ResourceError::Refused(crate::guards::protected_replace(&name))), true);
    }
    if let Err(e) = w.delete_deposed(sink) {
        return (action, Err(e), false);
    }
    let needs_repair = a.record.as_ref().is_some_and(|r| r.status != Status::Ready);
    if action == Action::Noop && !needs_repair {
        return (Action::Noop, Ok(decision.outputs().cloned()), false);
    }
    sink.event(EngineEvent::Started { resource: name.clone(), action });
    // Kinds that build their inputs themselves (on a target host, say) get the context instead.
    let context = if k.schema.builds_inputs { a.context.clone() } else { BTreeMap::new() };
    if !a.context.is_empty()
        && !k.schema.builds_inputs
        && matches!(action, Action::Create | Action::Update | Action::Replace)
    {
        sink.event(EngineEvent::Phase {
            resource: name.clone(),
            phase: "build".into(),
            message: format!("realising {} store path(s)", a.context.len()),
        });
        if let Err(e) = eval.realise(&a.context) {
            return (action, Err(ResourceError::Build(e.to_string())), false);
        }
    }
    let result = match decision.step {
        Step::Create => w.create(inputs, &context, false),
        Step::Update { prior } => w.recorded(Op::Update, inputs, false, || {
            w.call_outputs(Call::Update(UpdateParams {
                kind: k.short(),
                resource: name.clone(),
                inputs: inputs.clone(),
                prior,
                context: context.clone(),
            }))
        }),
        Step::Replace { prior: old, create_before_destroy: true } => w.create(inputs, &context, true).and_then(|outputs| {
            w.delete(&old.inputs, &old.outputs, true).map_err(|e| {
                e.map_message(|m| {
                    format!("the replacement was created, but removing the old one failed (the next apply retries): {m}")
                })
            })?;
            Ok(outputs)
        }),
        Step::Replace { prior: old, create_before_destroy: false } => {
            w.delete(&old.inputs, &old.outputs, false).and_then(|_| w.create(inputs, &context, false))
        }
        Step::Adopt { prior } | Step::Noop { prior } => {
            w.recorded(Op::Adopt, inputs, false, || Ok(Some(prior.outputs)))
        }
    };
    (action, result, false)
}

/// The scheduler thread is gone (the run is ending): nothing more can be recorded.
fn stopped() -> ResourceError {
    ResourceError::Internal("scheduler stopped".into())
}
