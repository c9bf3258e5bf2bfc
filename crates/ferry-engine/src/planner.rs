//! Deciding what to do with one resource whose inputs are known: validate the inputs against
//! the kind's schema, read the real resource (drift, adoption), and let the provider choose
//! between update and replace. Pure with respect to state: it only calls the provider.

use crate::plan::Action;
use crate::provider_client::{CallError, ProviderCommand};
use crate::registry::Registry;
use crate::ResourceError;
use ferry_protocol::{
    Call, Change, KindSchema, Object, Operation, PlanParams, PlanResult, Prior, ReadParams, ReadResult,
};
use ferry_state::{Op, ResourceRecord, Status};
use std::sync::Arc;
use std::time::Duration;

/// A resolved kind: schema, provider and call timeout.
#[derive(Clone)]
pub struct Kind {
    pub kind: String,
    /// Shared by every resource of the kind (cloning a `Kind` must stay cheap).
    pub schema: Arc<KindSchema>,
    pub command: ProviderCommand,
    pub timeout: Duration,
    pub validator: Arc<jsonschema::JSONSchema>,
}

impl Kind {
    pub fn short(&self) -> String {
        self.schema.name.clone()
    }

    /// Check inputs against the kind's declared JSON Schema.
    pub fn validate(&self, resource: &str, inputs: &Object) -> Result<(), ResourceError> {
        let v = serde_json::Value::Object(inputs.clone());
        let result = self.validator.validate(&v);
        if let Err(errors) = result {
            let msgs: Vec<String> = errors
                .map(|e| {
                    let path = e.instance_path.to_string();
                    let at = if path.is_empty() {
                        "inputs".to_string()
                    } else {
                        format!("input `{}`", path.trim_start_matches('/').replace('/', "."))
                    };
                    // Never echo values of sensitive inputs.
                    let sensitive = self
                        .schema
                        .sensitive_inputs
                        .iter()
                        .any(|s| path.trim_start_matches('/').starts_with(s.as_str()));
                    if sensitive {
                        format!("{at}: invalid value (sensitive)")
                    } else {
                        format!("{at}: {e}")
                    }
                })
                .collect();
            return Err(ResourceError::InvalidInputs(format!(
                "resource `{resource}` ({}): inputs do not match the kind's schema: {}",
                self.kind,
                msgs.join("; ")
            )));
        }
        Ok(())
    }
}

pub fn compile_schema(kind: &str, schema: &KindSchema) -> Result<Arc<jsonschema::JSONSchema>, String> {
    // Compiling checks the schema against the meta-schema and builds its regexes (~0.2 ms), and
    // every resource of a kind has the same schema: compile each distinct schema once per
    // process (a no-op apply of 1,000 resources spent ~180 ms here; see bench/README.md).
    type Cache = std::sync::Mutex<std::collections::HashMap<String, Arc<jsonschema::JSONSchema>>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = schema.inputs.to_string();
    if let Some(v) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(Arc::clone(v));
    }
    let compiled = jsonschema::JSONSchema::compile(&schema.inputs)
        .map(Arc::new)
        .map_err(|e| format!("provider's input schema for `{kind}` is not a valid JSON Schema: {e}"))?;
    cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, Arc::clone(&compiled));
    Ok(compiled)
}

/// What to do with one resource, and why.
#[derive(Debug, Clone)]
pub struct Decision {
    pub step: Step,
    pub changes: Vec<Change>,
    pub drift: Vec<String>,
    pub reason: Option<String>,
    /// Read returned outputs different from the recorded ones.
    pub outputs_changed: bool,
}

/// The provider calls a decision leads to; `prior` is what the provider gets as `prior` (for
/// noop and adopt: the outputs to settle with — read, recorded, or found).
#[derive(Debug, Clone)]
pub enum Step {
    Create,
    Update {
        prior: Prior,
    },
    /// `create_before_destroy`: the provider allows creating the new one first.
    Replace {
        prior: Prior,
        create_before_destroy: bool,
    },
    Noop {
        prior: Prior,
    },
    /// Record what an interrupted create made (found by `read`) as it is.
    Adopt {
        prior: Prior,
    },
}

impl Decision {
    pub fn action(&self) -> Action {
        match self.step {
            Step::Create => Action::Create,
            Step::Update { .. } => Action::Update,
            Step::Replace { .. } => Action::Replace,
            Step::Noop { .. } => Action::Noop,
            Step::Adopt { .. } => Action::Adopt,
        }
    }

    /// For noop and adopt: the outputs to settle with.
    pub fn outputs(&self) -> Option<&Object> {
        match &self.step {
            Step::Noop { prior } | Step::Adopt { prior } => Some(&prior.outputs),
            _ => None,
        }
    }

    pub fn create_before_destroy(&self) -> bool {
        matches!(self.step, Step::Replace { create_before_destroy: true, .. })
    }

    /// A noop that must still change something (drift is never accepted): the provider's
    /// update, or a replace for a kind without one, with the same prior.
    fn forced(mut self, k: &Kind) -> Decision {
        if let Step::Noop { prior } | Step::Adopt { prior } = self.step {
            self.step = if k.schema.supports(Operation::Update) {
                Step::Update { prior }
            } else {
                Step::Replace { prior, create_before_destroy: false }
            };
        }
        self
    }

    fn create(mut self) -> Decision {
        self.step = Step::Create;
        self
    }
}

fn call<T: serde::de::DeserializeOwned>(reg: &Registry, k: &Kind, c: Call) -> Result<T, ResourceError> {
    let v = reg.call(&k.command, c, k.timeout).map_err(|e| describe(&e, k))?;
    serde_json::from_value(v).map_err(|e| {
        ResourceError::Provider(format!("provider {} sent a malformed result: {e}", k.command.label))
    })
}

pub fn describe(e: &CallError, k: &Kind) -> ResourceError {
    ResourceError::Provider(match e {
        CallError::Provider(p) => {
            let code = p.code.as_deref().map(|c| format!(" [{c}]")).unwrap_or_default();
            format!("{}{code}", p.message)
        }
        CallError::Broken(m) => format!("{m} (kind {})", k.kind),
    })
}

fn read(
    reg: &Registry,
    k: &Kind,
    name: &str,
    inputs: &Object,
    outputs: Option<&Object>,
) -> Result<ReadResult, ResourceError> {
    call(
        reg,
        k,
        Call::Read(ReadParams {
            kind: k.short(),
            resource: name.into(),
            inputs: inputs.clone(),
            outputs: outputs.cloned(),
        }),
    )
}

pub(crate) fn provider_plan(
    reg: &Registry,
    k: &Kind,
    name: &str,
    inputs: &Object,
    prior: Option<Prior>,
) -> Result<PlanResult, ResourceError> {
    if !k.schema.supports(Operation::Plan) {
        // The provider does not plan: compare inputs, update if it can, else replace.
        let info = ferry_protocol::sdk::ProviderInfo {
            name: String::new(),
            version: String::new(),
            kinds: vec![(*k.schema).clone()],
        };
        return Ok(ferry_protocol::sdk::default_plan(
            &info,
            &PlanParams { kind: k.short(), resource: name.into(), inputs: inputs.clone(), prior },
        ));
    }
    call(
        reg,
        k,
        Call::Plan(PlanParams { kind: k.short(), resource: name.into(), inputs: inputs.clone(), prior }),
    )
}

/// The provider's plan as a decision; without a prior (nothing exists) it can only create.
fn from_plan(p: PlanResult, drift: Vec<String>, prior: Option<Prior>) -> Decision {
    use ferry_protocol::PlanAction;
    let step = match (p.action, prior) {
        (PlanAction::Noop, Some(prior)) => Step::Noop { prior },
        (PlanAction::Update, Some(prior)) => Step::Update { prior },
        (PlanAction::Replace, Some(prior)) => {
            Step::Replace { prior, create_before_destroy: p.create_before_destroy }
        }
        _ => Step::Create,
    };
    Decision { step, changes: p.changes, drift, reason: p.reason, outputs_changed: false }
}

/// Decide for one resource. `stable`: its desired inputs equal the recorded ones.
pub fn decide(
    reg: &Registry,
    k: &Kind,
    name: &str,
    desired: &Object,
    record: Option<&ResourceRecord>,
    stable: bool,
    prefetched: Option<&Result<ReadResult, ResourceError>>,
) -> Result<Decision, ResourceError> {
    k.validate(name, desired)?;
    let can_read = k.schema.supports(Operation::Read);
    let Some(rec) = record else {
        let p = provider_plan(reg, k, name, desired, None)?;
        return Ok(from_plan(p, vec![], None).create());
    };
    if rec.last_applied_at.is_none() {
        return decide_unconfirmed(reg, k, name, desired, rec);
    }
    let mut prior = Prior { inputs: rec.inputs.clone(), outputs: rec.outputs.clone() };
    let mut drift = vec![];
    let mut outputs_changed = false;
    if can_read {
        let r = match prefetched {
            Some(r) => r.clone()?,
            None => read(reg, k, name, &rec.inputs, Some(&rec.outputs))?,
        };
        if !r.exists {
            let p = provider_plan(reg, k, name, desired, None)?;
            let mut d = from_plan(p, vec!["the resource no longer exists".into()], None).create();
            d.reason = Some("missing: it will be created again".into());
            return Ok(d);
        }
        drift = r.drift;
        if let Some(actual) = r.inputs {
            for (key, v) in actual {
                prior.inputs.insert(key, v);
            }
        }
        if let Some(outs) = r.outputs {
            outputs_changed = outs != rec.outputs;
            prior.outputs = outs;
        }
    }
    let interrupted_update = matches!(rec.status, Status::Pending(_) | Status::Failed);
    if stable && drift.is_empty() && !interrupted_update {
        return Ok(Decision {
            step: Step::Noop { prior },
            changes: vec![],
            drift,
            reason: None,
            outputs_changed,
        });
    }
    let p = provider_plan(reg, k, name, desired, Some(prior.clone()))?;
    let mut d = from_plan(p, drift, Some(prior));
    d.outputs_changed = outputs_changed;
    if d.action() == Action::Noop && !d.drift.is_empty() {
        // Drift is never accepted: reality already matching the desired inputs (say, an
        // interrupted update that finished without ferry) is still not what state records, so
        // the provider's update runs and returns the outputs of what is really there.
        d = d.forced(k);
        d.reason = Some(
            if interrupted_update {
                "the last operation did not complete and the resource differs from what was recorded"
            } else {
                "drift: the resource differs from what was recorded, although its inputs did not change"
            }
            .into(),
        );
    } else if interrupted_update && d.action() == Action::Noop {
        d.reason = Some("the last operation did not complete; its inputs are now in place".into());
    }
    Ok(d)
}

/// A resource never confirmed as created (its create was interrupted, or failed): look for
/// what it left before creating again — adopted when complete, updated or replaced (with what
/// was found as the prior) when the read reports drift.
fn decide_unconfirmed(
    reg: &Registry,
    k: &Kind,
    name: &str,
    desired: &Object,
    rec: &ResourceRecord,
) -> Result<Decision, ResourceError> {
    let can_read = k.schema.supports(Operation::Read);
    let pending_create = matches!(&rec.pending, Some(p) if p.op == Op::Create);
    let pend_inputs = rec.pending.as_ref().map(|p| p.inputs.clone()).unwrap_or_default();
    if can_read {
        let r = read(reg, k, name, &pend_inputs, None)?;
        if r.exists {
            let found = r.outputs.unwrap_or_default();
            let prior = Prior { inputs: pend_inputs.clone(), outputs: found.clone() };
            let p = provider_plan(reg, k, name, desired, Some(prior.clone()))?;
            let mut d = from_plan(p, r.drift, Some(prior));
            if d.action() == Action::Noop && !d.drift.is_empty() {
                // What the create left is incomplete, and drift is never accepted: the
                // provider's update finishes it, with what it left as the prior.
                d = d.forced(k);
                d.reason = Some(format!("found what an unfinished create left; {} it", d.action().verb()));
                return Ok(d);
            }
            d.reason = Some(format!(
                "found the resource an interrupted run created; adopting it{}",
                if d.action() == Action::Noop {
                    String::new()
                } else {
                    format!(", then {}", d.action().verb())
                }
            ));
            if let Step::Noop { prior } = d.step {
                d.step = Step::Adopt { prior };
            }
            return Ok(d);
        }
    }
    let p = provider_plan(reg, k, name, desired, None)?;
    let reason = if pending_create && !can_read {
        Some("an interrupted create may have happened; this kind cannot read, so it is created again (at-least-once)".into())
    } else {
        None
    };
    Ok(Decision { reason, ..from_plan(p, vec![], None).create() })
}

/// Read every resource recorded as applied, pipelined per provider, on a thread of its own:
/// these reads depend only on state, so they overlap with the first Nix evaluation instead of
/// following it.
pub fn prefetch_reads(
    reg: Arc<Registry>,
    records: Vec<ResourceRecord>,
    timeout: Duration,
) -> std::thread::JoinHandle<std::collections::BTreeMap<String, Result<ReadResult, ResourceError>>> {
    std::thread::spawn(move || {
        let mut batches: std::collections::BTreeMap<ProviderCommand, Vec<(String, String, Call)>> =
            std::collections::BTreeMap::new();
        for rec in records.into_iter().filter(|r| r.status == Status::Ready && r.last_applied_at.is_some()) {
            let Ok(command) = reg.command_from_record(&rec.kind, &rec.provider) else { continue };
            let Ok(schema) = reg.schema(&rec.kind, &command) else { continue };
            if !schema.supports(Operation::Read) {
                continue;
            }
            let call = Call::Read(ReadParams {
                kind: schema.name.clone(),
                resource: rec.name.clone(),
                inputs: rec.inputs,
                outputs: Some(rec.outputs),
            });
            batches.entry(command).or_default().push((rec.name, rec.kind, call));
        }
        let mut out = std::collections::BTreeMap::new();
        for (command, batch) in batches {
            let (names, calls): (Vec<(String, String)>, Vec<Call>) =
                batch.into_iter().map(|(n, k, c)| ((n, k), c)).unzip();
            for ((name, kind), r) in names.into_iter().zip(reg.call_many(&command, calls, timeout)) {
                let r = r
                    .map_err(|e| match e {
                        CallError::Provider(p) => ResourceError::Provider(p.message),
                        CallError::Broken(m) => ResourceError::Provider(format!("{m} (kind {kind})")),
                    })
                    .and_then(|v| {
                        serde_json::from_value::<ReadResult>(v).map_err(|e| {
                            ResourceError::Provider(format!(
                                "provider {} sent a malformed result: {e}",
                                command.label
                            ))
                        })
                    });
                out.insert(name, r);
            }
        }
        out
    })
}
