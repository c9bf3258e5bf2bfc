//! The executor: runs provider calls on worker threads (at most `jobs` at once), starts a new
//! evaluation round when settled outputs can make waiting resources ready, and records every
//! intent and result in state — all state writes happen here, on the scheduler thread.

use crate::events::EngineEvent;
use crate::plan::Action;
use crate::planner::{Decision, Kind};
use crate::session::Session;
use crate::worker::run_job;
use crate::*;
use ferry_eval::{ResourceEval, RoundRequest};
use ferry_protocol::Object;
use ferry_state::{Intent, ResourceRecord, Status, Success};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// One unit of work for a worker.
pub(crate) struct Job {
    pub name: String,
    pub kind: Kind,
    /// Desired inputs (absent for deletes).
    pub inputs: Option<Object>,
    pub context: BTreeMap<String, Vec<String>>,
    pub record: Option<ResourceRecord>,
    /// Decided during planning; `None`: decide in the worker (resource became ready later).
    pub decision: Option<Decision>,
    pub stable: bool,
    pub delete: bool,
    pub deps: Vec<String>,
    pub tags: Vec<String>,
    /// `protect = true` (declared, or recorded for deletes): never replaced.
    pub protect: bool,
}

/// A record the executor must visit even when its resource is unchanged: an interrupted or
/// failed operation, or an old object a replacement left to delete.
pub(crate) fn needs_repair(r: &ResourceRecord) -> bool {
    r.status != Status::Ready || r.deposed.is_some()
}

pub(crate) enum Msg {
    Intent(Intent, Sender<Result<i64, String>>),
    Outcome(i64, Result<Option<Object>, String>),
    /// `unplanned`: it failed before any change, while being planned (a later round's plan
    /// error, which stops new work).
    Finished {
        name: String,
        action: Action,
        result: Result<Option<Object>, String>,
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
    pub failed: Vec<(String, String)>,
}

pub(crate) fn execute(s: &mut Session, work: Work, run: i64) -> RunReport {
    let cfg = s.engine.cfg.clone();
    let jobs_limit = cfg.jobs.max(1);
    let (tx, rx): (Sender<Msg>, Receiver<Msg>) = channel();
    let mut report = RunReport::default();
    let mut failed: BTreeMap<String, String> = work.failed.into_iter().collect();
    let mut skipped: BTreeMap<String, String> = BTreeMap::new();
    let mut queue: VecDeque<Job> = work.ready.into();
    let mut deletes: Vec<Job> = work.deletes;
    let mut waiting = work.waiting;
    let mut in_flight: BTreeMap<String, Instant> = BTreeMap::new();
    let mut eval_running = false;
    let mut settled_since_eval = 0usize;
    let mut last_eval = Duration::from_millis(200);
    let mut stopping = false;
    let mut stop_reason = "interrupted before it could start";
    let mut delete_deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // `--batch N`: changes dispatched in the current batch; the next waits for this one.
    let mut batch_started = 0usize;
    let state_store = s.state.take();
    let state = state_store.as_ref();

    std::thread::scope(|scope| {
        loop {
            if cfg.interrupted.load(Ordering::SeqCst) && !stopping {
                stopping = true;
                report.interrupted = true;
                s.engine.sink.event(EngineEvent::Warning {
                    message: "interrupted: no new work is started; waiting for running calls".into(),
                });
            }
            // Dispatch. Deletes first, each only after everything that depended on it is gone;
            // creates and updates after all deletes (a renamed resource may reuse a path).
            while !stopping && in_flight.len() < jobs_limit {
                let job = if !deletes.is_empty() {
                    let free = |j: &Job| {
                        !deletes.iter().any(|o| o.name != j.name && o.deps.contains(&j.name))
                            && !delete_deps.values().any(|d: &Vec<String>| d.contains(&j.name))
                    };
                    match deletes.iter().position(free) {
                        Some(p) => deletes.remove(p),
                        None => break,
                    }
                } else if !delete_deps.is_empty() {
                    break;
                } else {
                    if let Some(n) = cfg.batch {
                        if batch_started >= n {
                            if !in_flight.is_empty() {
                                break;
                            }
                            batch_started = 0;
                            if !failed.is_empty() {
                                stopping = true;
                                stop_reason = "not started: an earlier batch failed (--batch)";
                                s.engine.sink.event(EngineEvent::Warning {
                                    message: "a batch failed (--batch): no further batch is started".into(),
                                });
                                break;
                            }
                        }
                    }
                    match queue.pop_front() {
                        Some(j) => {
                            let noop = j.decision.as_ref().is_some_and(|d| d.action == Action::Noop);
                            if cfg.batch.is_some() && !noop {
                                batch_started += 1;
                            }
                            j
                        }
                        None => break,
                    }
                };
                if job.delete {
                    delete_deps.insert(job.name.clone(), job.deps.clone());
                }
                in_flight.insert(job.name.clone(), Instant::now());
                let tx = tx.clone();
                let reg = std::sync::Arc::clone(&s.registry);
                let eval = std::sync::Arc::clone(&s.engine.eval);
                let sink = std::sync::Arc::clone(&s.engine.sink);
                scope.spawn(move || {
                    let start = Instant::now();
                    let name = job.name.clone();
                    let (action, result, unplanned) = run_job(job, &reg, &*eval, &*sink, &tx);
                    let _ = tx.send(Msg::Finished {
                        name,
                        action,
                        result,
                        seconds: start.elapsed().as_secs_f64(),
                        unplanned,
                    });
                });
            }
            // A new round when outputs arrived that waiting resources may need.
            if !stopping && !eval_running && !waiting.is_empty() && settled_since_eval > 0 {
                let idle = in_flight.is_empty() && queue.is_empty();
                let visibly_ready = waiting.iter().any(|w| {
                    s.deps
                        .get(w)
                        .is_some_and(|d| !d.is_empty() && d.iter().all(|x| s.settled.contains_key(x)))
                });
                let slow = in_flight.values().all(|t| t.elapsed() > last_eval);
                if idle || (visibly_ready && queue.is_empty() && slow) {
                    eval_running = true;
                    settled_since_eval = 0;
                    s.rounds += 1;
                    let req = RoundRequest {
                        file: cfg.file.clone(),
                        known: s.settled.clone(),
                        recorded: BTreeMap::new(),
                        unstable: vec![],
                        sensitive: s.sensitive_outputs(),
                        pending: Some(waiting.iter().cloned().collect()),
                        schemas: s.schemas.clone(),
                        want_declarations: false,
                        want_previews: false,
                        want_edges: true,
                        write_drvs: true,
                    };
                    s.engine
                        .sink
                        .event(EngineEvent::EvalStarted { round: s.rounds, pending: Some(waiting.len()) });
                    let eval = std::sync::Arc::clone(&s.engine.eval);
                    let tx = tx.clone();
                    scope.spawn(move || {
                        let start = Instant::now();
                        let r = crate::session::round_with_fallback(&*eval, req);
                        let _ = tx.send(Msg::Eval(r, start.elapsed().as_secs_f64()));
                    });
                }
            }
            if in_flight.is_empty()
                && !eval_running
                && (stopping
                    || (queue.is_empty()
                        && deletes.is_empty()
                        && (waiting.is_empty() || settled_since_eval == 0)))
            {
                break;
            }
            let msg = match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            match msg {
                Msg::Intent(intent, reply) => {
                    let r = match state {
                        Some(st) => {
                            st.record_intent(run, &intent).map_err(|e| format!("recording intent: {e}"))
                        }
                        None => Err("no state".into()),
                    };
                    let _ = reply.send(r);
                }
                Msg::Outcome(id, result) => {
                    if let Some(st) = state {
                        let r = match &result {
                            Ok(outputs) => st.record_success(run, id, &Success { outputs: outputs.clone() }),
                            Err(e) => st.record_failure(run, id, &s.redactor.text(e)),
                        };
                        if let Err(e) = r {
                            s.engine
                                .sink
                                .event(EngineEvent::Warning { message: format!("recording result: {e}") });
                        }
                    }
                }
                Msg::Finished { name, action, result, seconds, unplanned } => {
                    in_flight.remove(&name);
                    delete_deps.remove(&name);
                    match result {
                        Ok(outputs) => {
                            report.summary.add(action);
                            if action != Action::Delete {
                                let outputs = outputs.unwrap_or_default();
                                if let Some(Ok(k)) = s.kinds.get(&name) {
                                    s.redactor.learn(&outputs, &k.schema.sensitive_outputs);
                                }
                                s.settled.insert(name.clone(), outputs);
                                settled_since_eval += 1;
                            }
                            if action != Action::Noop {
                                s.engine.sink.event(EngineEvent::Finished {
                                    resource: name,
                                    action,
                                    seconds,
                                });
                            }
                        }
                        Err(e) => {
                            let e = s.redactor.text(&e);
                            s.engine
                                .sink
                                .event(EngineEvent::Failed { resource: name.clone(), error: e.clone() });
                            failed.insert(name, e);
                            if unplanned && !stopping {
                                stop_after_plan_error(s, &mut stopping, &mut stop_reason);
                            }
                            if cfg.fail_fast && !stopping {
                                stopping = true;
                                stop_reason = "not started: another resource failed (--fail-fast)";
                                s.engine.sink.event(EngineEvent::Warning {
                                    message: "a resource failed (--fail-fast): no new work is started".into(),
                                });
                            }
                        }
                    }
                }
                Msg::Eval(result, secs) => {
                    eval_running = false;
                    last_eval = Duration::from_secs_f64(secs);
                    match result {
                        Ok(res) => {
                            let ready = res.results.values().filter(|r| r.inputs.is_some()).count();
                            s.engine.sink.event(EngineEvent::EvalFinished {
                                round: s.rounds,
                                ready,
                                seconds: secs,
                            });
                            absorb(s, &res.results);
                            // The user's code failed: that resource fails, and nothing new
                            // starts (changes were already made in this run).
                            for (name, msg) in res.failures {
                                waiting.remove(&name);
                                failed.insert(name, s.redactor.text(&msg));
                                stopping = true;
                            }
                            for (name, r) in res.results {
                                let Some(inputs) = r.inputs.clone() else { continue };
                                waiting.remove(&name);
                                match s.kinds.get(&name).cloned() {
                                    Some(Ok(kind)) => {
                                        queue.push_back(job_for(s, &name, kind, inputs, &r, None))
                                    }
                                    Some(Err(e)) => {
                                        failed.insert(name, e);
                                        if !stopping {
                                            stop_after_plan_error(s, &mut stopping, &mut stop_reason);
                                        }
                                    }
                                    None => {}
                                }
                            }
                        }
                        Err(e) => {
                            let msg = match e {
                                // ferry's own checks name the resource and file already.
                                ferry_eval::EvalError::Nix { message, user: true } => message,
                                ferry_eval::EvalError::Nix { message, .. } => {
                                    format!("evaluating {}: {message}", cfg.file.display())
                                }
                                other => format!("evaluating {}: {other}", cfg.file.display()),
                            };
                            let msg = s.redactor.text(&msg);
                            for w in std::mem::take(&mut waiting) {
                                failed.insert(w, msg.clone());
                            }
                            stopping = true;
                        }
                    }
                }
            }
        }
    });

    // Whatever still waits: a failed dependency, an interruption, or a cycle.
    let blocked: BTreeSet<String> = failed.keys().cloned().collect();
    for w in &waiting {
        let dep_failed = s
            .deps
            .get(w)
            .and_then(|d| d.iter().find(|x| blocked.contains(*x) || waiting.contains(*x) && *x != w))
            .cloned();
        let reason = if report.interrupted {
            "interrupted before it could start".to_string()
        } else if let Some(d) = s.deps.get(w).and_then(|d| d.iter().find(|x| blocked.contains(*x)).cloned()) {
            format!("dependency `{d}` failed")
        } else if let Some(d) = dep_failed {
            format!("waits on `{d}`, which never became ready")
        } else {
            "its inputs never became known (a dependency failed, or its inputs `throw`)".to_string()
        };
        s.engine.sink.event(EngineEvent::Skipped { resource: w.clone(), reason: reason.clone() });
        skipped.insert(w.clone(), reason);
    }
    for (j, why) in queue
        .iter()
        .map(|j| (j.name.clone(), stop_reason))
        .chain(deletes.iter().map(|j| (j.name.clone(), stop_reason)))
    {
        skipped.insert(j, why.to_string());
    }
    s.state = state_store;
    report.failed = failed.into_iter().collect();
    report.skipped = skipped.into_iter().collect();
    report
}

/// A resource planned in a later round could not be planned: start nothing new (what runs
/// finishes; the changes already made stay).
fn stop_after_plan_error(s: &Session, stopping: &mut bool, reason: &mut &'static str) {
    *stopping = true;
    *reason = "not started: a resource planned in a later round could not be planned";
    s.engine.sink.event(EngineEvent::Warning {
        message: "a resource could not be planned: no new work is started".into(),
    });
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
        inputs: Some(inputs),
        context: r.context.clone(),
        record: s.records.get(name).cloned(),
        decision,
        stable: r.stable,
        delete: false,
        deps: s.deps.get(name).map(|d| d.iter().cloned().collect()).unwrap_or_default(),
        tags: s.decls.get(name).map(|d| d.tags.clone()).unwrap_or_default(),
        protect: s.decls.get(name).is_some_and(|d| d.protect),
    }
}
