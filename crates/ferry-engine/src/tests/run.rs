//! Whole runs without Nix: the engine with a scripted evaluator (the deployment's rounds as a
//! function of the outputs known so far) and a provider that is a small shell script, on a real
//! state database — the scheduler's rounds, order, recording and deletes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::fake::{object, resource};
use crate::events::EngineEvent;
use crate::plan::Action;
use crate::{Engine, EngineConfig, ProviderCommand};
use ferry_eval::{
    Declaration, EvalError, EvalStats, Evaluator, Probe, ResourceEval, RoundRequest, RoundResult,
};
use serde_json::json;

/// The provider `fake`, kind `thing` (create and delete only): a create answers the outputs
/// `{"v": "made-N"}` and logs `create NAME INPUTS` to `log`; a delete logs `delete NAME`.
const PROVIDER: &str = r#"
log=$1
n=0
while read -r line; do
  id=$(printf '%s' "$line" | sed -n 's/.*"id" *: *\([0-9][0-9]*\).*/\1/p')
  method=$(printf '%s' "$line" | sed -n 's/.*"method" *: *"\([a-z]*\)".*/\1/p')
  name=$(printf '%s' "$line" | sed -n 's/.*"resource" *: *"\([a-z]*\)".*/\1/p')
  case $method in
    handshake) printf '%s\n' '{"id":'"$id"',"result":{"protocolVersion":1,"provider":"fake","version":"0","kinds":[{"name":"thing","inputs":{"type":"object"},"outputs":{"type":"object","properties":{"v":{"type":"string"}}},"operations":["create","delete"]}]}}' ;;
    create)
      n=$((n + 1))
      inputs=$(printf '%s' "$line" | sed -n 's/.*"inputs" *: *\({[^}]*}\).*/\1/p')
      echo "create $name $inputs" >> "$log"
      printf '%s\n' '{"id":'"$id"',"result":{"outputs":{"v":"made-'"$n"'"}}}' ;;
    delete) echo "delete $name" >> "$log"; printf '%s\n' '{"id":'"$id"',"result":{}}' ;;
    *) printf '%s\n' '{"id":'"$id"',"error":{"message":"unsupported","code":"unsupported","retryable":false}}' ;;
  esac
done
"#;

type Deployment = dyn Fn(&RoundRequest) -> BTreeMap<String, Option<serde_json::Value>> + Send + Sync;

/// An evaluator answering every round from `deployment` (resource -> inputs, `None` while they
/// wait on unknown outputs), every resource of kind `fake.thing`.
struct Scripted {
    deployment: Box<Deployment>,
    rounds: Mutex<Vec<RoundRequest>>,
}

impl Evaluator for Scripted {
    fn round(&self, req: &RoundRequest) -> Result<RoundResult, EvalError> {
        self.rounds.lock().unwrap().push(req.clone());
        let all = (self.deployment)(req);
        let decl = |_: &String| Declaration {
            file: "/d/deployment.nix".into(),
            files: vec!["/d/deployment.nix".into()],
            kind: "fake.thing".into(),
            provider: None,
            tags: vec![],
            timeout: None,
            protect: false,
            unknown_attrs: vec![],
        };
        let wanted = |n: &String| req.pending.as_ref().is_none_or(|p| p.contains(n));
        // Stable: the inputs equal the recorded ones (as eval.nix computes them).
        let eval_of = |n: &String, i: &Option<serde_json::Value>| {
            let mut r = resource(i.clone());
            r.stable = r.inputs.is_some() && req.recorded.get(n).map(|rec| &rec.inputs) == r.inputs.as_ref();
            r
        };
        let results: BTreeMap<String, ResourceEval> =
            all.iter().filter(|(n, _)| wanted(n)).map(|(n, i)| (n.clone(), eval_of(n, i))).collect();
        Ok(RoundResult {
            declarations: req.want_declarations.then(|| all.keys().map(|n| (n.clone(), decl(n))).collect()),
            names: all.keys().cloned().collect(),
            results,
            ..Default::default()
        })
    }
    fn probe(&self, _: &RoundRequest, _: &str, _: Option<&str>) -> Result<Probe, EvalError> {
        Ok(Probe::Pending)
    }
    fn input_names(&self, _: &RoundRequest, _: &str) -> Result<Vec<String>, EvalError> {
        Ok(vec![])
    }
    fn realise(&self, _: &BTreeMap<String, Vec<String>>) -> Result<Vec<String>, EvalError> {
        Ok(vec![])
    }
    fn stats(&self) -> EvalStats {
        EvalStats::default()
    }
}

struct Run {
    dir: tempfile::TempDir,
    events: Arc<Mutex<Vec<EngineEvent>>>,
}

impl Run {
    fn new() -> Run {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("deployment.nix"), "{ ... }: { }\n").unwrap();
        std::fs::write(dir.path().join("provider.sh"), PROVIDER).unwrap();
        Run { dir, events: Default::default() }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn engine(&self, deployment: Box<Deployment>) -> (Engine, Arc<Scripted>) {
        let d = self.dir.path();
        let cmd = ProviderCommand {
            label: "fake".into(),
            program: "sh".into(),
            args: vec![d.join("provider.sh").display().to_string(), d.join("log").display().to_string()],
        };
        let cfg = EngineConfig {
            file: d.join("deployment.nix"),
            state_path: d.join(".ferry/state.db"),
            state_given: false,
            jobs: 2,
            selection: None,
            builtin_providers: vec![("fake".into(), cmd)],
            call_timeout: Duration::from_secs(20),
            lock_timeout: None,
            interrupted: Default::default(),
            command: "test".into(),
            provider_options: Default::default(),
            batch: None,
            fail_fast: false,
            rebind: false,
            allow_destroy_all: false,
        };
        let eval = Arc::new(Scripted { deployment, rounds: Mutex::new(vec![]) });
        let events = Arc::clone(&self.events);
        let sink: Arc<dyn crate::EventSink> = Arc::new(move |e: EngineEvent| events.lock().unwrap().push(e));
        (Engine::new(cfg, Arc::clone(&eval) as Arc<dyn Evaluator>, sink), eval)
    }
}

/// `a` is ready at once; `b` needs `a.v`, known once `a` is created (or lent from state while
/// `a` is stable, as eval.nix's optimistic view does).
fn chain() -> Box<Deployment> {
    Box::new(|req: &RoundRequest| {
        let lent = || req.recorded.get("a").filter(|_| !req.unstable.contains(&"a".to_string()));
        let a_v = req
            .known
            .get("a")
            .and_then(|o| o.get("v"))
            .or_else(|| lent().and_then(|r| r.outputs.get("v")))
            .cloned();
        BTreeMap::from([
            ("a".to_string(), Some(json!({"size": 1}))),
            ("b".to_string(), a_v.map(|v| json!({"from": v}))),
        ])
    })
}

#[test]
fn a_dependent_is_created_in_a_later_round_with_its_dependencys_outputs() {
    let run = Run::new();
    let (engine, eval) = run.engine(chain());
    let (plan, report) = engine.apply(&mut |_| true).expect("apply");
    assert_eq!(plan.entries.iter().find(|e| e.name == "a").map(|e| e.action), Some(Action::Create));
    assert!(report.failed.is_empty() && report.skipped.is_empty(), "{report:?}");
    assert_eq!(report.summary.create, 2, "{report:?}");
    assert_eq!(
        run.log(),
        "create a {\"size\":1}\ncreate b {\"from\":\"made-1\"}\n",
        "a first, b with a's output"
    );
    // The later round asked only for what still waited, with a's outputs known.
    let rounds = eval.rounds.lock().unwrap().clone();
    let last = rounds.last().expect("rounds");
    assert_eq!(last.pending.as_deref(), Some(&["b".to_string()][..]));
    assert_eq!(last.known.get("a"), Some(&object(json!({"v": "made-1"}))));
    assert!(rounds.len() <= 4, "bounded rounds: {}", rounds.len());
}

#[test]
fn a_second_apply_changes_nothing_and_a_removed_resource_is_deleted() {
    let run = Run::new();
    let (engine, _) = run.engine(chain());
    engine.apply(&mut |_| true).expect("first apply");
    let (engine, _) = run.engine(chain());
    let (plan, report) = engine.apply(&mut |_| true).expect("second apply");
    assert_eq!(plan.summary.changes(), 0, "{plan:?}");
    assert_eq!(report.summary.create, 0);
    assert_eq!(run.log().lines().count(), 2, "nothing created again: {}", run.log());
    // `b` leaves the deployment: it is deleted, `a` stays.
    let (engine, _) = run
        .engine(Box::new(|_: &RoundRequest| BTreeMap::from([("a".to_string(), Some(json!({"size": 1})))])));
    let (_, report) = engine.apply(&mut |_| true).expect("third apply");
    assert_eq!(report.summary.delete, 1, "{report:?}");
    assert!(run.log().ends_with("delete b\n"), "{}", run.log());
}
