//! A scripted [`Evaluator`]: answers rounds and probes from queues, and records every request.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use ferry_eval::{EvalError, EvalStats, Evaluator, Probe, ResourceEval, RoundRequest, RoundResult};
use serde_json::{Map, Value};

#[derive(Default)]
pub struct FakeEvaluator {
    pub rounds: Mutex<VecDeque<Result<RoundResult, EvalError>>>,
    pub probes: Mutex<BTreeMap<String, Probe>>,
    pub input_names: BTreeMap<String, Vec<String>>,
    /// Every round request, in order.
    pub seen: Mutex<Vec<RoundRequest>>,
    pub probed: Mutex<Vec<(String, Option<String>)>>,
    /// (resource, input) whose probe finds a sensitive output flowing into a derivation.
    pub leaks: Vec<(String, Option<String>)>,
}

impl FakeEvaluator {
    pub fn with_rounds(rounds: Vec<Result<RoundResult, EvalError>>) -> FakeEvaluator {
        FakeEvaluator { rounds: Mutex::new(rounds.into()), ..Default::default() }
    }

    pub fn probe_answer(self, name: &str, p: Probe) -> FakeEvaluator {
        self.probes.lock().unwrap().insert(name.into(), p);
        self
    }

    pub fn seen(&self) -> Vec<RoundRequest> {
        self.seen.lock().unwrap().clone()
    }
}

impl Evaluator for FakeEvaluator {
    fn round(&self, req: &RoundRequest) -> Result<RoundResult, EvalError> {
        self.seen.lock().unwrap().push(req.clone());
        self.rounds
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Err(EvalError::Protocol("no more rounds".into())))
    }

    fn probe(&self, _req: &RoundRequest, name: &str, input: Option<&str>) -> Result<Probe, EvalError> {
        let key = (name.to_string(), input.map(str::to_string));
        self.probed.lock().unwrap().push(key.clone());
        if self.leaks.contains(&key) {
            return Err(EvalError::SensitiveInStore { resource: "key".into(), output: "privateKey".into() });
        }
        Ok(self.probes.lock().unwrap().get(name).cloned().unwrap_or(Probe::Ready))
    }

    fn input_names(&self, _req: &RoundRequest, name: &str) -> Result<Vec<String>, EvalError> {
        Ok(self.input_names.get(name).cloned().unwrap_or_default())
    }

    fn realise(&self, _context: &BTreeMap<String, Vec<String>>) -> Result<Vec<String>, EvalError> {
        Ok(vec![])
    }

    fn stats(&self) -> EvalStats {
        EvalStats::default()
    }
}

/// A resource's evaluation: ready with `inputs`, or waiting (`None`).
pub fn resource(inputs: Option<Value>) -> ResourceEval {
    ResourceEval {
        inputs: inputs.map(|v| v.as_object().cloned().unwrap_or_default()),
        context: BTreeMap::new(),
        stable: false,
        undetermined: false,
        file: "/d/deployment.nix".into(),
        unknown_inputs: vec![],
        preview: None,
        edges: None,
        hidden: BTreeMap::new(),
    }
}

pub fn round(results: Vec<(&str, ResourceEval)>) -> RoundResult {
    RoundResult {
        results: results.into_iter().map(|(n, r)| (n.to_string(), r)).collect(),
        names: vec![],
        ..Default::default()
    }
}

pub fn object(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}
