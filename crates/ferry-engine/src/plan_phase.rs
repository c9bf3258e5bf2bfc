//! The plan phase: evaluate (optimistically), decide every ready resource in parallel, and
//! turn the decisions into a [`Plan`] and the executor's work (`Planned`), deletes included.

use crate::planner::{self, Decision, Kind};
use crate::scheduler::needs_repair;
use crate::session::Session;
use crate::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The outcome of planning: decisions for ready resources, the rest waiting.
pub(crate) struct Planned {
    pub decided: BTreeMap<String, Result<Decision, ResourceError>>,
    pub waiting: BTreeSet<String>,
    pub orphans: Vec<String>,
    /// Waiting resources whose preview the provider plans as a replacement.
    pub replacing: BTreeSet<String>,
}

/// Evaluate (optimistically), decide every ready resource in parallel, and re-evaluate when a
/// resource whose recorded outputs were lent to others turns out to change.
pub(crate) fn plan_phase(s: &mut Session) -> Result<Planned, EngineError> {
    let prefetch = planner::prefetch_reads(
        Arc::clone(&s.registry),
        s.records.values().cloned().collect(),
        s.engine.cfg.call_timeout,
    );
    let first = s.first_round(true);
    // The prefetched reads describe reality before any change; they are used once, for the
    // first decisions (a later re-round reads again).
    let mut prefetched = prefetch.join().unwrap_or_default();
    match first {
        Err(EngineError::Nix { kind: ferry_eval::NixErrorKind::InfiniteRecursion, .. }) => {
            // Lending recorded outputs can recurse through a new cycle; evaluate without it.
            s.decls.clear();
            s.first_round(false)?;
        }
        r => r?,
    }
    guards::check_identity(s)?;
    let selected = s.selected();
    let in_scope = |n: &String| selected.as_ref().is_none_or(|sel| sel.contains(n));
    let mut decided: BTreeMap<String, Result<Decision, ResourceError>> = BTreeMap::new();
    loop {
        let todo: Vec<(String, Result<Kind, ResourceError>, ferry_protocol::Object, bool)> = s
            .decls
            .keys()
            .filter(|n| in_scope(n) && !decided.contains_key(*n))
            .filter_map(|n| {
                let e = s.evals.get(n)?;
                let inputs = e.inputs.clone()?;
                Some((
                    n.clone(),
                    s.kinds.get(n).cloned().unwrap_or_else(|| Err(ResourceError::Internal("no kind".into()))),
                    inputs,
                    e.stable,
                ))
            })
            .collect();
        let results = decide_all(s, todo, std::mem::take(&mut prefetched));
        let mut relend = false;
        for (name, d) in results {
            let stable = s.evals.get(&name).is_some_and(|e| e.stable);
            match &d {
                Ok(dec) if dec.action() == Action::Noop => {
                    let outs = dec.outputs().cloned().unwrap_or_default();
                    if let Some(Ok(k)) = s.kinds.get(&name) {
                        s.redactor.learn(&outs, &k.schema.sensitive_outputs);
                    }
                    s.settled.insert(name.clone(), outs);
                    if stable && dec.outputs_changed {
                        s.unstable.insert(name.clone());
                        relend = true;
                    }
                }
                _ if stable => {
                    s.unstable.insert(name.clone());
                    relend = true;
                }
                _ => {}
            }
            decided.insert(name, d);
        }
        if !relend {
            break;
        }
        // Resources computed with outputs that are about to change must be evaluated again.
        let pending: Vec<String> =
            s.decls.keys().filter(|n| in_scope(n) && !s.settled.contains_key(*n)).cloned().collect();
        decided.retain(|n, _| s.settled.contains_key(n));
        s.round(Some(pending), true)?;
    }
    let waiting: BTreeSet<String> =
        s.decls.keys().filter(|n| in_scope(n) && !decided.contains_key(*n)).cloned().collect();
    check_cycles(s, &waiting)?;
    let orphans = s.records.keys().filter(|n| !s.decls.contains_key(*n) && in_scope(n)).cloned().collect();
    let replacing = waiting.iter().filter(|n| preview_replaces(s, n)).cloned().collect();
    Ok(Planned { decided, waiting, orphans, replacing })
}

/// Whether a recorded resource still waiting on outputs will be replaced rather than updated:
/// ask the provider to plan its preview (unknown outputs as placeholder strings) against the
/// recorded state. Without this every waiting resource showed as `~`, even a `local.exec`
/// without an `update` command, which apply then replaces. Only a complete preview is asked
/// about; any error leaves the default (`~`). `plan` has no side effects by protocol.
fn preview_replaces(s: &Session, name: &str) -> bool {
    let (Some(rec), Some(Ok(kind)), Some(ev)) = (s.records.get(name), s.kinds.get(name), s.evals.get(name))
    else {
        return false;
    };
    if rec.last_applied_at.is_none() {
        return false;
    }
    let Some(preview) = &ev.preview else { return false };
    let mut inputs = ferry_protocol::Object::new();
    for (k, v) in preview {
        match v {
            Some(v) => {
                inputs.insert(k.clone(), v.clone());
            }
            None => return false,
        }
    }
    let prior = ferry_protocol::Prior { inputs: rec.inputs.clone(), outputs: rec.outputs.clone() };
    matches!(
        planner::provider_plan(&s.registry, kind, name, &inputs, Some(prior)),
        Ok(p) if p.action == ferry_protocol::PlanAction::Replace
    )
}

fn decide_all(
    s: &Session,
    todo: Vec<(String, Result<Kind, ResourceError>, ferry_protocol::Object, bool)>,
    prefetched: BTreeMap<String, Result<ferry_protocol::ReadResult, ResourceError>>,
) -> Vec<(String, Result<Decision, ResourceError>)> {
    let jobs = s.engine.cfg.jobs.max(1).min(todo.len().max(1));
    let (registry, records, redactor) = (&*s.registry, &s.records, &s.redactor);
    let queue = std::sync::Mutex::new(todo.into_iter());
    let out = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                let Some((name, kind, inputs, stable)) = next else { break };
                let pre = prefetched.get(&name);
                let d = kind.and_then(|k| {
                    planner::decide(registry, &k, &name, &inputs, records.get(&name), stable, pre)
                });
                out.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((name, d.map_err(|e| e.map_message(|m| redactor.text(&m)))));
            });
        }
    });
    out.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Waiting resources whose visible dependencies form a cycle: report the chain.
fn check_cycles(s: &Session, waiting: &BTreeSet<String>) -> Result<(), EngineError> {
    fn visit(
        n: &str,
        s: &Session,
        waiting: &BTreeSet<String>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut cycle = path[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if !done.insert(n.to_string()) {
            return None;
        }
        path.push(n.to_string());
        for d in s.deps.get(n).into_iter().flatten() {
            if waiting.contains(d) {
                if let Some(c) = visit(d, s, waiting, path, done) {
                    return Some(c);
                }
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for w in waiting {
        if let Some(mut c) = visit(w, s, waiting, &mut vec![], &mut done) {
            // Print in the direction values flow: a -> b means b reads a's outputs.
            c.reverse();
            return Err(EngineError::Deployment(format!("dependency cycle: {}", c.join(" -> "))));
        }
    }
    Ok(())
}

impl Planned {
    pub fn to_plan(&self, s: &Session) -> Plan {
        let mut plan = Plan::default();
        for (name, d) in &self.decided {
            let decl = &s.decls[name];
            let kind = s.kinds.get(name).and_then(|k| k.as_ref().ok());
            let sensitive = kind.map(|k| k.schema.sensitive_inputs.clone()).unwrap_or_default();
            let inputs = s.evals.get(name).and_then(|e| e.inputs.clone()).unwrap_or_default();
            let mut e = PlanEntry {
                name: name.clone(),
                kind: decl.kind.clone(),
                action: Action::Noop,
                inputs: s.redactor.inputs(&inputs, &sensitive),
                known_after_apply: vec![],
                changes: vec![],
                drift: vec![],
                reason: None,
                depends_on: s.deps.get(name).map(|d| d.iter().cloned().collect()).unwrap_or_default(),
                tags: decl.tags.clone(),
                error: None,
                create_before_destroy: false,
            };
            match d {
                Ok(dec) => {
                    e.action = dec.action();
                    e.changes = dec
                        .changes
                        .iter()
                        .map(|c| {
                            let hide = |v: &Option<serde_json::Value>| {
                                v.as_ref().map(|v| {
                                    if sensitive.contains(&c.path) {
                                        serde_json::Value::String(redact::SHOWN.into())
                                    } else {
                                        s.redactor.value(v)
                                    }
                                })
                            };
                            ferry_protocol::Change {
                                before: hide(&c.before),
                                after: hide(&c.after),
                                ..c.clone()
                            }
                        })
                        .collect();
                    e.drift = dec.drift.iter().map(|x| s.redactor.text(x)).collect();
                    e.reason = dec.reason.clone();
                    e.create_before_destroy = dec.create_before_destroy();
                }
                Err(err) => e.error = Some(err.to_string()),
            }
            if e.error.is_none() {
                plan.summary.add(e.action);
            }
            plan.entries.push(e);
        }
        for name in &self.waiting {
            let decl = &s.decls[name];
            let ev = s.evals.get(name);
            let kind = s.kinds.get(name).and_then(|k| k.as_ref().ok());
            let sensitive = kind.map(|k| k.schema.sensitive_inputs.clone()).unwrap_or_default();
            let unknown = ev.map(|e| e.unknown_inputs.clone()).unwrap_or_default();
            let mut inputs = serde_json::Map::new();
            if let Some(p) = ev.and_then(|e| e.preview.as_ref()) {
                for (k, v) in p {
                    let shown = match v {
                        _ if sensitive.contains(k) => serde_json::Value::String(redact::SHOWN.into()),
                        // Only visible placeholders make a trustworthy preview (a derivation
                        // built from a placeholder has a plausible but wrong store path).
                        // The preview is honest (eval.nix): exact where known, visible
                        // placeholders in plain strings, opaque markers elsewhere.
                        Some(v) => render(&s.redactor.value(v)),
                        None => serde_json::Value::String("(known after apply)".into()),
                    };
                    inputs.insert(k.clone(), shown);
                }
            }
            let action = if self.replacing.contains(name) {
                Action::Replace
            } else if s.records.contains_key(name) {
                Action::Update
            } else {
                Action::Create
            };
            plan.summary.add(action);
            plan.entries.push(PlanEntry {
                name: name.clone(),
                kind: decl.kind.clone(),
                action,
                inputs,
                known_after_apply: unknown,
                changes: vec![],
                drift: vec![],
                reason: Some("inputs depend on outputs not known yet".into()),
                depends_on: s.deps.get(name).map(|d| d.iter().cloned().collect()).unwrap_or_default(),
                tags: decl.tags.clone(),
                error: s.kinds.get(name).and_then(|k| k.as_ref().err().map(ToString::to_string)),
                create_before_destroy: false,
            });
        }
        for name in &self.orphans {
            plan.summary.add(Action::Delete);
            plan.entries.push(delete_entry(s, &s.records[name]));
        }
        plan.entries.sort_by(|a, b| a.name.cmp(&b.name));
        plan
    }

    pub fn into_work(self, s: &Session) -> scheduler::Work {
        let mut ready = vec![];
        let mut failed = vec![];
        for (name, d) in self.decided {
            match d {
                Ok(dec) => {
                    let settled_noop =
                        dec.action() == Action::Noop && !s.records.get(&name).is_some_and(needs_repair);
                    if settled_noop {
                        continue;
                    }
                    let (Some(Ok(kind)), Some(ev)) = (s.kinds.get(&name), s.evals.get(&name)) else {
                        continue;
                    };
                    let inputs = ev.inputs.clone().unwrap_or_default();
                    ready.push(scheduler::job_for(s, &name, kind.clone(), inputs, ev, Some(dec)));
                }
                Err(e) => failed.push((name, e)),
            }
        }
        let deleting: BTreeSet<String> = self.orphans.iter().cloned().collect();
        let mut deletes = vec![];
        for name in &self.orphans {
            let rec = &s.records[name];
            match s.kind_of_record(rec) {
                Ok(kind) => deletes.push(delete_job(s, rec, kind, &deleting)),
                Err(e) => failed.push((name.clone(), e.map_message(|m| format!("resource `{name}`: {m}")))),
            }
        }
        scheduler::Work { ready, deletes, waiting: self.waiting, failed }
    }
}

fn render(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::String(x) => serde_json::Value::String(ferry_eval::render_placeholders(x)),
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(render).collect()),
        serde_json::Value::Object(o) => {
            serde_json::Value::Object(o.iter().map(|(k, x)| (k.clone(), render(x))).collect())
        }
        other => other.clone(),
    }
}

pub(crate) fn delete_entry(s: &Session, rec: &ferry_state::ResourceRecord) -> PlanEntry {
    PlanEntry {
        name: rec.name.clone(),
        kind: rec.kind.clone(),
        action: Action::Delete,
        inputs: serde_json::Map::new(),
        known_after_apply: vec![],
        changes: vec![],
        drift: vec![],
        reason: if s.decls.is_empty() { None } else { Some("no longer in the deployment".into()) },
        depends_on: rec.dependencies.clone(),
        tags: rec.tags.clone(),
        error: None,
        create_before_destroy: false,
    }
}

pub(crate) fn delete_job(
    _s: &Session,
    rec: &ferry_state::ResourceRecord,
    kind: Kind,
    deleting: &BTreeSet<String>,
) -> scheduler::Job {
    scheduler::Job {
        name: rec.name.clone(),
        kind,
        // Only edges among the resources being deleted order the deletes.
        deps: rec.dependencies.iter().filter(|d| deleting.contains(*d)).cloned().collect(),
        tags: rec.tags.clone(),
        protect: rec.protect,
        task: scheduler::Task::Delete { record: Box::new(rec.clone()) },
    }
}
