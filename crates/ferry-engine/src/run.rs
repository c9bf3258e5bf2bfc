//! The entry points that plan or change: plan, apply, destroy, refresh (see `verbs.rs` for
//! actions, graph and providers).

use crate::plan_phase::{delete_entry, delete_job, plan_phase};
use crate::scheduler::needs_repair;
use crate::session::{Access, Session};
use crate::*;
use ferry_eval::Evaluator;
use std::collections::BTreeSet;
use std::time::Instant;

/// A configured engine. Each method is one run.
pub struct Engine {
    pub(crate) cfg: EngineConfig,
    pub(crate) eval: Arc<dyn Evaluator>,
    pub(crate) sink: Arc<dyn EventSink>,
}

/// Result of `ferry refresh`.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshReport {
    /// name -> drift descriptions (empty: in sync)
    pub resources: Vec<RefreshEntry>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshEntry {
    pub name: String,
    pub kind: String,
    /// `inSync`, `drifted`, `missing`, `unreadable` (kind has no read), `error`
    pub status: String,
    pub drift: Vec<String>,
    pub error: Option<String>,
}

impl Engine {
    pub fn new(cfg: EngineConfig, eval: Arc<dyn Evaluator>, sink: Arc<dyn EventSink>) -> Self {
        Engine { cfg, eval, sink }
    }

    /// Evaluate and compare desired, recorded and actual state; changes nothing.
    pub fn plan(&self) -> Result<(Plan, Timings), EngineError> {
        guards::check_shared_state(&self.cfg)?;
        let mut s = Session::open(self, Access::Read)?;
        let t = Instant::now();
        let planned = plan_phase(&mut s)?;
        let mut plan = planned.to_plan(&s);
        guards::mark_plan_errors(&s, &planned, &mut plan);
        if let Err(EngineError::Refused(m)) = guards::check_destroy_all(&s, &planned, &plan) {
            self.sink.event(EngineEvent::Warning { message: m });
        }
        let timings = s.timings(t.elapsed().as_secs_f64(), 0.0);
        Ok((plan, timings))
    }

    /// Plan, ask `confirm` (skipped when the plan has no changes), then apply.
    pub fn apply(&self, confirm: &mut dyn FnMut(&Plan) -> bool) -> Result<(Plan, RunReport), EngineError> {
        guards::check_shared_state(&self.cfg)?;
        let mut s = Session::open(self, Access::Write)?;
        let t = Instant::now();
        let planned = plan_phase(&mut s)?;
        let mut plan = planned.to_plan(&s);
        guards::mark_plan_errors(&s, &planned, &mut plan);
        let plan_seconds = t.elapsed().as_secs_f64();
        // A resource that cannot be planned stops everything: nothing is created, updated or
        // destroyed, and the plan lists every error.
        if plan.has_errors() {
            let report = RunReport { timings: s.timings(plan_seconds, 0.0), ..Default::default() };
            return Ok((plan, report));
        }
        guards::check_destroy_all(&s, &planned, &plan)?;
        let has_work = plan.summary.changes() > 0
            || !planned.waiting.is_empty()
            || planned.decided.iter().any(|(n, d)| d.is_ok() && s.records.get(n).is_some_and(needs_repair));
        if !has_work {
            guards::record_binding(&s)?;
            let mut report = RunReport { summary: plan.summary.clone(), ..Default::default() };
            report.timings = s.timings(plan_seconds, 0.0);
            return Ok((plan, report));
        }
        let asks = plan.summary.changes() > 0 || !planned.waiting.is_empty() || guards::has_deposed(&plan);
        if asks && !confirm(&plan) {
            return Err(EngineError::Usage("apply cancelled; nothing was changed".into()));
        }
        guards::record_binding(&s)?;
        let t2 = Instant::now();
        let run = s.state().map(|st| st.begin_run(&self.cfg.command)).transpose()?.unwrap_or(0);
        // Unchanged resources that never reach the executor; those it runs (waiting ones that
        // turn out unchanged, repairs) are counted by it. Overwriting the executor's count
        // with the plan's lost the former and counted the latter twice.
        let settled_noops = planned
            .decided
            .iter()
            .filter(|(n, d)| {
                matches!(d, Ok(d) if d.action() == Action::Noop)
                    && !s.records.get(*n).is_some_and(needs_repair)
            })
            .count();
        let work = planned.into_work(&s);
        let mut report = scheduler::execute(&mut s, work, run);
        if let Some(st) = s.state() {
            let outcome = if report.interrupted {
                "interrupted"
            } else if report.ok() {
                "ok"
            } else {
                "failed"
            };
            st.end_run(run, outcome)?;
        }
        report.summary.unchanged += settled_noops;
        report.timings = s.timings(plan_seconds, t2.elapsed().as_secs_f64());
        Ok((plan, report))
    }

    /// Destroy every recorded resource (or the selection and what depends on it), in reverse
    /// dependency order. Needs no evaluation: state has everything a delete needs.
    pub fn destroy(&self, confirm: &mut dyn FnMut(&Plan) -> bool) -> Result<(Plan, RunReport), EngineError> {
        let mut s = Session::open(self, Access::Write)?;
        let t = Instant::now();
        let mut chosen: BTreeSet<String> = match &self.cfg.selection {
            Some(sel) => {
                s.records.values().filter(|r| sel.matches(&r.name, &r.tags)).map(|r| r.name.clone()).collect()
            }
            None => s.records.keys().cloned().collect(),
        };
        // Whatever depends on a destroyed resource goes too.
        loop {
            let more: Vec<String> = s
                .records
                .values()
                .filter(|r| !chosen.contains(&r.name) && r.dependencies.iter().any(|d| chosen.contains(d)))
                .map(|r| r.name.clone())
                .collect();
            if more.is_empty() {
                break;
            }
            chosen.extend(more);
        }
        guards::check_destroy(&s, &chosen)?;
        let mut plan = Plan::default();
        let mut deletes = vec![];
        let mut failed = vec![];
        for name in &chosen {
            let rec = s.records[name].clone();
            plan.summary.add(Action::Delete);
            plan.entries.push(delete_entry(&s, &rec));
            match s.kind_of_record(&rec) {
                Ok(kind) => deletes.push(delete_job(&s, &rec, kind, &chosen)),
                Err(e) => failed.push((name.clone(), e.map_message(|m| format!("resource `{name}`: {m}")))),
            }
        }
        if plan.entries.is_empty() {
            let report =
                RunReport { timings: s.timings(t.elapsed().as_secs_f64(), 0.0), ..Default::default() };
            return Ok((plan, report));
        }
        if !confirm(&plan) {
            return Err(EngineError::Usage("destroy cancelled; nothing was changed".into()));
        }
        let plan_seconds = t.elapsed().as_secs_f64();
        let t2 = Instant::now();
        let run = s.state().map(|st| st.begin_run(&self.cfg.command)).transpose()?.unwrap_or(0);
        let work = scheduler::Work { ready: vec![], deletes, waiting: BTreeSet::new(), failed };
        let mut report = scheduler::execute(&mut s, work, run);
        if let Some(st) = s.state() {
            st.end_run(run, if report.ok() { "ok" } else { "failed" })?;
        }
        report.timings = s.timings(plan_seconds, t2.elapsed().as_secs_f64());
        Ok((plan, report))
    }

    /// Read every recorded resource, report drift, update recorded outputs.
    pub fn refresh(&self) -> Result<RefreshReport, EngineError> {
        let s = Session::open(self, Access::Write)?;
        let run = s.state().map(|st| st.begin_run(&self.cfg.command)).transpose()?.unwrap_or(0);
        let mut report = RefreshReport::default();
        for rec in s.records.values() {
            let mut entry = RefreshEntry {
                name: rec.name.clone(),
                kind: rec.kind.clone(),
                status: "inSync".into(),
                drift: vec![],
                error: None,
            };
            let kind = match s.kind_of_record(rec) {
                Ok(k) => k,
                Err(e) => {
                    entry.status = "error".into();
                    entry.error = Some(e.to_string());
                    report.resources.push(entry);
                    continue;
                }
            };
            if !kind.schema.supports(ferry_protocol::Operation::Read) {
                entry.status = "unreadable".into();
                report.resources.push(entry);
                continue;
            }
            let call = ferry_protocol::Call::Read(ferry_protocol::ReadParams {
                kind: kind.short(),
                resource: rec.name.clone(),
                inputs: rec.inputs.clone(),
                outputs: Some(rec.outputs.clone()),
            });
            match s.registry.call(&kind.command, call, kind.timeout) {
                Ok(v) => match serde_json::from_value::<ferry_protocol::ReadResult>(v) {
                    Ok(r) if !r.exists => {
                        entry.status = "missing".into();
                        entry.drift.push("the resource no longer exists".into());
                    }
                    Ok(r) => {
                        if !r.drift.is_empty() {
                            entry.status = "drifted".into();
                            entry.drift = r.drift;
                        }
                        if let (Some(outs), Some(st)) = (r.outputs, s.state()) {
                            if outs != rec.outputs {
                                st.record_outputs(run, &rec.name, &outs)?;
                            }
                        }
                    }
                    Err(e) => {
                        entry.status = "error".into();
                        entry.error = Some(format!(
                            "provider {} sent a malformed read result: {e}",
                            kind.command.label
                        ));
                    }
                },
                Err(e) => {
                    entry.status = "error".into();
                    entry.error = Some(planner::describe(&e, &kind).to_string());
                }
            }
            entry.drift = entry.drift.iter().map(|d| s.redactor.text(d)).collect();
            report.resources.push(entry);
        }
        if let Some(st) = s.state() {
            st.end_run(run, "ok")?;
        }
        Ok(report)
    }
}
