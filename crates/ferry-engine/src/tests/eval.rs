//! The engine's side of evaluation rounds (`session::round_with_fallback`), with a fake
//! evaluator: the placeholder fallback, probing undetermined resources, locating a secret
//! flowing into the store.

use super::fake::{object, resource, round, FakeEvaluator};
use crate::session::round_with_fallback;
use ferry_eval::{EvalError, Probe, RoundRequest};
use serde_json::json;

fn nix(message: &str) -> EvalError {
    EvalError::Nix { message: message.into(), user: false }
}

fn request() -> RoundRequest {
    RoundRequest {
        file: "/d/deployment.nix".into(),
        want_previews: true,
        want_edges: true,
        ..Default::default()
    }
}

#[test]
fn a_type_error_from_placeholders_is_retried_without_previews_and_edges() {
    let ok = round(vec![("web", resource(Some(json!({"port": 80}))))]);
    let eval = FakeEvaluator::with_rounds(vec![Err(nix("cannot add a string to an integer")), Ok(ok)]);
    let res = round_with_fallback(&eval, request()).expect("the retry succeeds");
    assert_eq!(res.results["web"].inputs, Some(object(json!({"port": 80}))));
    let seen = eval.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].want_previews && seen[0].want_edges);
    assert!(!seen[1].want_previews && !seen[1].want_edges, "the retry has no placeholder views");
}

#[test]
fn a_failing_retry_reports_the_first_error() {
    let eval =
        FakeEvaluator::with_rounds(vec![Err(nix("cannot coerce a set to a string")), Err(nix("other"))]);
    let e = round_with_fallback(&eval, request()).unwrap_err();
    assert_eq!(e.to_string(), "cannot coerce a set to a string");
}

#[test]
fn real_errors_are_not_retried() {
    for e in [
        nix("attribute 'nope' missing\n   3|   x = resources.ok.nope;"),
        nix("undefined variable 'x'"),
        EvalError::Nix { message: "cannot add: ferry's own check".into(), user: true },
    ] {
        let text = e.to_string();
        let eval = FakeEvaluator::with_rounds(vec![Err(e), Ok(round(vec![]))]);
        assert_eq!(round_with_fallback(&eval, request()).unwrap_err().to_string(), text);
        assert_eq!(eval.seen().len(), 1, "{text}: not retried");
    }
    // Without placeholder views there is nothing to retry without.
    let eval =
        FakeEvaluator::with_rounds(vec![Err(nix("cannot add a string to an integer")), Ok(round(vec![]))]);
    let req = RoundRequest { want_previews: false, want_edges: false, ..request() };
    assert!(round_with_fallback(&eval, req).is_err());
    assert_eq!(eval.seen().len(), 1);
}

#[test]
fn undetermined_resources_are_probed_once_each() {
    let mut waiting = resource(None);
    waiting.undetermined = true;
    let mut typo = resource(None);
    typo.undetermined = true;
    let r = round(vec![("waiting", waiting), ("typo", typo), ("ready", resource(Some(json!({}))))]);
    let eval = FakeEvaluator::with_rounds(vec![Ok(r)])
        .probe_answer("waiting", Probe::Pending)
        .probe_answer("typo", Probe::Failed("The option `servics' does not exist.".into()));
    let res = round_with_fallback(&eval, request()).unwrap();
    assert!(!res.results["waiting"].undetermined, "ferry's own throw: it waits");
    assert!(!res.failures.contains_key("waiting"));
    let f = &res.failures["typo"];
    assert!(f.starts_with("resource `typo` (/d/deployment.nix): evaluating its inputs failed:"), "{f}");
    assert!(f.contains("servics"), "{f}");
    let mut probed = eval.probed.lock().unwrap().clone();
    probed.sort();
    assert_eq!(
        probed,
        vec![("typo".to_string(), None), ("waiting".to_string(), None)],
        "ready ones are not probed"
    );
}

#[test]
fn a_secret_flowing_into_the_store_is_traced_to_the_resource_and_input() {
    let mut eval = FakeEvaluator::with_rounds(vec![Err(EvalError::SensitiveInStore {
        resource: "key".into(),
        output: "privateKey".into(),
    })]);
    eval.leaks = vec![("site".into(), None), ("site".into(), Some("content".into()))];
    eval.input_names.insert("site".into(), vec!["path".into(), "content".into()]);
    let req = RoundRequest { pending: Some(vec!["key".into(), "site".into()]), ..request() };
    let e = round_with_fallback(&eval, req).unwrap_err();
    assert!(e.is_user_error(), "reported as the deployment's error: {e}");
    let m = e.to_string();
    assert!(m.starts_with("resource `site` (/d/deployment.nix): input `content` builds a derivation"), "{m}");
    assert!(m.contains("`key.privateKey`"), "{m}");
}
