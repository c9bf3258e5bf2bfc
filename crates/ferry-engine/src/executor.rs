//! The executor of one apply or destroy: dispatches jobs to worker threads (at most `jobs` at
//! once; deletes first, each after everything that depended on it is gone), starts a new
//! evaluation round when settled outputs can make waiting resources ready, and records every
//! intent and result in state — all state writes happen here, on the scheduler thread.

use crate::events::EngineEvent;
use crate::plan::Action;
use crate::scheduler::{absorb, job_for, Job, Msg, Work};
use crate::session::Session;
use crate::worker::run_job;
use crate::*;
use ferry_eval::{RoundRequest, RoundResult};
use ferry_protocol::Object;
use ferry_state::{Intent, StateStore, Success};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::Scope;
use std::time::{Duration, Instant};

pub(crate) struct Executor<'a, 'e> {
    s: &'a mut Session<'e>,
    cfg: EngineConfig,
    run: i64,
    /// Taken from the session for the executor's lifetime (given back by `finish`).
    state: Option<StateStore>,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    report: RunReport,
    failed: BTreeMap<String, String>,
    queue: VecDeque<Job>,
    deletes: Vec<Job>,
    waiting: BTreeSet<String>,
    in_flight: BTreeMap<String, Instant>,
    /// Running deletes and what they depended on (dispatched only after them).
    delete_deps: BTreeMap<String, Vec<String>>,
    eval_running: bool,
    settled_since_eval: usize,
    last_eval: Duration,
    /// `Some(why)`: no new work starts; what is still queued is skipped with this reason.
    stop: Option<&'static str>,
    /// `--batch N`: changes dispatched in the current batch; the next waits for this one.
    batch_started: usize,
}

impl<'a, 'e> Executor<'a, 'e> {
    pub fn new(s: &'a mut Session<'e>, work: Work, run: i64) -> Executor<'a, 'e> {
        let (tx, rx) = channel();
        Executor {
            cfg: s.engine.cfg.clone(),
            state: s.state.take(),
            s,
            run,
            tx,
            rx,
            report: RunReport::default(),
            failed: work.failed.into_iter().map(|(n, e)| (n, e.to_string())).collect(),
            queue: work.ready.into(),
            deletes: work.deletes,
            waiting: work.waiting,
            in_flight: BTreeMap::new(),
            delete_deps: BTreeMap::new(),
            eval_running: false,
            settled_since_eval: 0,
            last_eval: Duration::from_millis(200),
            stop: None,
            batch_started: 0,
        }
    }

    /// Run until nothing is left to do (or everything stopped), then report.
    pub fn run(mut self) -> RunReport {
        std::thread::scope(|scope| loop {
            if self.cfg.interrupted.load(Ordering::SeqCst) && self.stop.is_none() {
                self.report.interrupted = true;
                self.stop_with(
                    "interrupted before it could start",
                    "interrupted: no new work is started; waiting for running calls",
                );
            }
            self.dispatch(scope);
            self.maybe_round(scope);
            if self.done() {
                break;
            }
            match self.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(m) => self.handle(m),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        });
        self.finish()
    }

    fn stop_with(&mut self, skipped: &'static str, warning: &str) {
        self.stop = Some(skipped);
        self.s.engine.sink.event(EngineEvent::Warning { message: warning.into() });
    }

    fn done(&self) -> bool {
        self.in_flight.is_empty()
            && !self.eval_running
            && (self.stop.is_some()
                || (self.queue.is_empty()
                    && self.deletes.is_empty()
                    && (self.waiting.is_empty() || self.settled_since_eval == 0)))
    }

    /// The next job to start, if one may start now. Deletes first, each only after everything
    /// that depended on it is gone; creates and updates after all deletes (a renamed resource
    /// may reuse a path), in batches with `--batch`.
    fn next_job(&mut self) -> Option<Job> {
        if !self.deletes.is_empty() {
            let free = |j: &Job| {
                !self.deletes.iter().any(|o| o.name != j.name && o.deps.contains(&j.name))
                    && !self.delete_deps.values().any(|d| d.contains(&j.name))
            };
            let p = self.deletes.iter().position(free)?;
            return Some(self.deletes.remove(p));
        }
        if !self.delete_deps.is_empty() {
            return None;
        }
        if let Some(n) = self.cfg.batch {
            if self.batch_started >= n {
                if !self.in_flight.is_empty() {
                    return None;
                }
                self.batch_started = 0;
                if !self.failed.is_empty() {
                    self.stop_with(
                        "not started: an earlier batch failed (--batch)",
                        "a batch failed (--batch): no further batch is started",
                    );
                    return None;
                }
            }
        }
        let j = self.queue.pop_front()?;
        if self.cfg.batch.is_some() && !j.planned_noop() {
            self.batch_started += 1;
        }
        Some(j)
    }

    fn dispatch<'scope>(&mut self, scope: &'scope Scope<'scope, '_>) {
        while self.stop.is_none() && self.in_flight.len() < self.cfg.jobs.max(1) {
            let Some(job) = self.next_job() else { break };
            if job.is_delete() {
                self.delete_deps.insert(job.name.clone(), job.deps.clone());
            }
            self.in_flight.insert(job.name.clone(), Instant::now());
            let tx = self.tx.clone();
            let reg = Arc::clone(&self.s.registry);
            let eval = Arc::clone(&self.s.engine.eval);
            let sink = Arc::clone(&self.s.engine.sink);
            scope.spawn(move || {
                let start = Instant::now();
                let name = job.name.clone();
                let (action, result, unplanned) = run_job(job, &reg, &*eval, &*sink, &tx);
                let seconds = start.elapsed().as_secs_f64();
                let _ = tx.send(Msg::Finished { name, action, result, seconds, unplanned });
            });
        }
    }

    /// A new round when outputs arrived that waiting resources may need: when the workers are
    /// idle, or earlier when a waiting resource's visible dependencies have all settled and
    /// the running work is slower than an evaluation.
    fn maybe_round<'scope>(&mut self, scope: &'scope Scope<'scope, '_>) {
        if self.stop.is_some() || self.eval_running || self.waiting.is_empty() || self.settled_since_eval == 0
        {
            return;
        }
        let s = &*self.s;
        let idle = self.in_flight.is_empty() && self.queue.is_empty();
        let visibly_ready = self.waiting.iter().any(|w| {
            s.deps.get(w).is_some_and(|d| !d.is_empty() && d.iter().all(|x| s.settled.contains_key(x)))
        });
        let slow = self.in_flight.values().all(|t| t.elapsed() > self.last_eval);
        if !(idle || (visibly_ready && self.queue.is_empty() && slow)) {
            return;
        }
        self.eval_running = true;
        self.settled_since_eval = 0;
        self.s.rounds += 1;
        let req = RoundRequest {
            file: self.cfg.file.clone(),
            known: self.s.settled.clone(),
            recorded: BTreeMap::new(),
            unstable: vec![],
            sensitive: self.s.sensitive_outputs(),
            pending: Some(self.waiting.iter().cloned().collect()),
            schemas: self.s.schemas.clone(),
            want_declarations: false,
            want_previews: false,
            want_edges: true,
            write_drvs: true,
        };
        let pending = Some(self.waiting.len());
        self.s.engine.sink.event(EngineEvent::EvalStarted { round: self.s.rounds, pending });
        let eval = Arc::clone(&self.s.engine.eval);
        let tx = self.tx.clone();
        scope.spawn(move || {
            let start = Instant::now();
            let r = crate::session::round_with_fallback(&*eval, req);
            let _ = tx.send(Msg::Eval(r, start.elapsed().as_secs_f64()));
        });
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Intent(intent, reply) => {
                let _ = reply.send(self.record_intent(&intent));
            }
            Msg::Outcome(id, result) => self.record_outcome(id, &result),
            Msg::Finished { name, action, result, seconds, unplanned } => {
                self.in_flight.remove(&name);
                self.delete_deps.remove(&name);
                match result {
                    Ok(outputs) => self.settle(name, action, outputs, seconds),
                    Err(e) => self.fail(name, &e, unplanned),
                }
            }
            Msg::Eval(result, secs) => {
                self.eval_running = false;
                self.last_eval = Duration::from_secs_f64(secs);
                match result {
                    Ok(res) => self.absorb_round(res, secs),
                    Err(e) => self.fail_round(e),
                }
            }
        }
    }

    fn record_intent(&self, intent: &Intent) -> Result<i64, ResourceError> {
        match &self.state {
            Some(st) => st
                .record_intent(self.run, intent)
                .map_err(|e| ResourceError::State(format!("recording intent: {e}"))),
            None => Err(ResourceError::Internal("no state".into())),
        }
    }

    fn record_outcome(&self, id: i64, result: &Result<Option<Object>, ResourceError>) {
        let Some(st) = &self.state else { return };
        let r = match result {
            Ok(outputs) => st.record_success(self.run, id, &Success { outputs: outputs.clone() }),
            Err(e) => st.record_failure(self.run, id, &self.s.redactor.text(&e.to_string())),
        };
        if let Err(e) = r {
            self.s.engine.sink.event(EngineEvent::Warning { message: format!("recording result: {e}") });
        }
    }

    fn settle(&mut self, name: String, action: Action, outputs: Option<Object>, seconds: f64) {
        self.report.summary.add(action);
        if action != Action::Delete {
            let outputs = outputs.unwrap_or_default();
            if let Some(Ok(k)) = self.s.kinds.get(&name) {
                self.s.redactor.learn(&outputs, &k.schema.sensitive_outputs);
            }
            self.s.settled.insert(name.clone(), outputs);
            self.settled_since_eval += 1;
        }
        if action != Action::Noop {
            self.s.engine.sink.event(EngineEvent::Finished { resource: name, action, seconds });
        }
    }

    fn fail(&mut self, name: String, error: &ResourceError, unplanned: bool) {
        let e = self.s.redactor.text(&error.to_string());
        self.s.engine.sink.event(EngineEvent::Failed { resource: name.clone(), error: e.clone() });
        self.failed.insert(name, e);
        if unplanned {
            self.stop_after_plan_error();
        }
        if self.cfg.fail_fast && self.stop.is_none() {
            self.stop_with(
                "not started: another resource failed (--fail-fast)",
                "a resource failed (--fail-fast): no new work is started",
            );
        }
    }

    /// A resource planned in a later round could not be planned: start nothing new (what runs
    /// finishes; the changes already made stay).
    fn stop_after_plan_error(&mut self) {
        if self.stop.is_none() {
            self.stop_with(
                "not started: a resource planned in a later round could not be planned",
                "a resource could not be planned: no new work is started",
            );
        }
    }

    fn absorb_round(&mut self, res: RoundResult, secs: f64) {
        let ready = res.results.values().filter(|r| r.inputs.is_some()).count();
        self.s.engine.sink.event(EngineEvent::EvalFinished { round: self.s.rounds, ready, seconds: secs });
        absorb(self.s, &res.results);
        // The user's code failed: that resource fails, and nothing new starts (changes were
        // already made in this run).
        for (name, msg) in res.failures {
            self.waiting.remove(&name);
            self.failed.insert(name, self.s.redactor.text(&msg));
            self.stop.get_or_insert("interrupted before it could start");
        }
        for (name, r) in res.results {
            let Some(inputs) = r.inputs.clone() else { continue };
            self.waiting.remove(&name);
            match self.s.kinds.get(&name).cloned() {
                Some(Ok(kind)) => self.queue.push_back(job_for(self.s, &name, kind, inputs, &r, None)),
                Some(Err(e)) => {
                    self.failed.insert(name, e.to_string());
                    self.stop_after_plan_error();
                }
                None => {}
            }
        }
    }

    fn fail_round(&mut self, e: ferry_eval::EvalError) {
        let file = self.cfg.file.display();
        let msg = match e {
            // ferry's own checks name the resource and file already.
            ferry_eval::EvalError::Nix { message, user: true } => message,
            ferry_eval::EvalError::Nix { message, .. } => format!("evaluating {file}: {message}"),
            other => format!("evaluating {file}: {other}"),
        };
        let msg = self.s.redactor.text(&msg);
        for w in std::mem::take(&mut self.waiting) {
            self.failed.insert(w, msg.clone());
        }
        self.stop.get_or_insert("interrupted before it could start");
    }

    /// Whatever still waits was skipped: a failed dependency, an interruption, or a cycle;
    /// what was queued, for the reason work stopped.
    fn finish(mut self) -> RunReport {
        let s = &*self.s;
        let blocked: BTreeSet<String> = self.failed.keys().cloned().collect();
        let mut skipped: BTreeMap<String, String> = BTreeMap::new();
        for w in &self.waiting {
            let deps = s.deps.get(w);
            let failed_dep = deps.and_then(|d| d.iter().find(|x| blocked.contains(*x)).cloned());
            let stuck_dep = deps
                .and_then(|d| d.iter().find(|x| blocked.contains(*x) || self.waiting.contains(*x) && *x != w))
                .cloned();
            let reason = if self.report.interrupted {
                "interrupted before it could start".to_string()
            } else if let Some(d) = failed_dep {
                format!("dependency `{d}` failed")
            } else if let Some(d) = stuck_dep {
                format!("waits on `{d}`, which never became ready")
            } else {
                "its inputs never became known (a dependency failed, or its inputs `throw`)".to_string()
            };
            s.engine.sink.event(EngineEvent::Skipped { resource: w.clone(), reason: reason.clone() });
            skipped.insert(w.clone(), reason);
        }
        let why = self.stop.unwrap_or("interrupted before it could start");
        for j in self.queue.iter().chain(self.deletes.iter()) {
            skipped.insert(j.name.clone(), why.to_string());
        }
        self.s.state = self.state.take();
        self.report.failed = std::mem::take(&mut self.failed).into_iter().collect();
        self.report.skipped = skipped.into_iter().collect();
        self.report
    }
}
