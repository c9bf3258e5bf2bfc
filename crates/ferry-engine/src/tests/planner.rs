//! `planner::decide` for kinds that neither plan nor read: every decision is the engine's own
//! (state against desired inputs, the protocol's default plan), no provider is called.

use std::sync::Arc;
use std::time::Duration;

use super::fake::object;
use crate::events::{EngineEvent, EventSink};
use crate::plan::Action;
use crate::planner::{compile_schema, decide, Kind, Step};
use crate::provider_client::ProviderCommand;
use crate::redact::Redactor;
use crate::registry::Registry;
use ferry_protocol::{KindSchema, Operation};
use ferry_state::{Op, PendingOp, ResourceRecord, Status};
use serde_json::{json, Value};

/// A registry with no provider: any call would fail the test's decision.
fn registry() -> Registry {
    let quiet: Arc<dyn EventSink> = Arc::new(|_: EngineEvent| {});
    Registry::new(&[], Duration::from_secs(1), Default::default(), quiet, Redactor::default())
}

fn kind(operations: Vec<Operation>) -> Kind {
    let schema = KindSchema {
        name: "thing".into(),
        description: String::new(),
        inputs: json!({"type": "object", "properties": {"size": {"type": "integer"}}, "required": ["size"]}),
        outputs: json!({"type": "object", "properties": {"id": {"type": "string"}}}),
        sensitive_inputs: vec![],
        sensitive_outputs: vec![],
        output_names_input: None,
        operations,
        actions: vec![],
        builds_inputs: false,
        heavy_inputs: false,
    };
    Kind {
        kind: "fake.thing".into(),
        validator: compile_schema("fake.thing", &schema).expect("schema"),
        schema: Arc::new(schema),
        command: ProviderCommand {
            label: "none".into(),
            program: "/nonexistent/provider".into(),
            args: vec![],
        },
        timeout: Duration::from_secs(1),
    }
}

fn crud() -> Kind {
    kind(vec![Operation::Create, Operation::Update, Operation::Delete])
}

fn record(inputs: Value, status: Status, applied: bool) -> ResourceRecord {
    ResourceRecord {
        name: "t".into(),
        kind: "fake.thing".into(),
        provider: json!({"executable": "/nonexistent/provider"}),
        inputs: object(inputs.clone()),
        outputs: object(json!({"id": "t-1"})),
        status,
        pending: None,
        last_error: None,
        dependencies: vec![],
        tags: vec![],
        sensitive_outputs: vec![],
        created_at: "2024-01-01T00:00:00Z".into(),
        updated_at: "2024-01-01T00:00:00Z".into(),
        last_applied_at: applied.then(|| "2024-01-01T00:00:00Z".into()),
        protect: false,
        deposed: None,
    }
}

#[test]
fn a_new_resource_is_created() {
    let d = decide(&registry(), &crud(), "t", &object(json!({"size": 1})), None, false, None).unwrap();
    assert!(matches!(d.step, Step::Create), "{:?}", d.step);
    assert_eq!(d.action(), Action::Create);
    assert!(d.outputs().is_none());
}

#[test]
fn inputs_that_break_the_schema_fail_the_decision() {
    let e =
        decide(&registry(), &crud(), "t", &object(json!({"size": "big"})), None, false, None).unwrap_err();
    assert!(matches!(e, crate::ResourceError::InvalidInputs(_)), "{e:?}");
    assert!(e.to_string().contains("size"), "names the input: {e}");
}

#[test]
fn a_stable_ready_resource_is_unchanged_with_its_recorded_outputs() {
    let rec = record(json!({"size": 1}), Status::Ready, true);
    let d = decide(&registry(), &crud(), "t", &object(json!({"size": 1})), Some(&rec), true, None).unwrap();
    assert_eq!(d.action(), Action::Noop);
    assert_eq!(d.outputs(), Some(&object(json!({"id": "t-1"}))));
    assert!(d.changes.is_empty());
}

#[test]
fn changed_inputs_update_or_replace_by_what_the_kind_supports() {
    let rec = record(json!({"size": 1}), Status::Ready, true);
    let desired = object(json!({"size": 2}));
    let d = decide(&registry(), &crud(), "t", &desired, Some(&rec), false, None).unwrap();
    let Step::Update { prior } = &d.step else { panic!("{:?}", d.step) };
    assert_eq!(prior.inputs, rec.inputs, "the recorded prior");
    assert!(d.changes.iter().any(|c| c.path == "size"), "{:?}", d.changes);
    let no_update = kind(vec![Operation::Create, Operation::Delete]);
    let d = decide(&registry(), &no_update, "t", &desired, Some(&rec), false, None).unwrap();
    assert!(matches!(d.step, Step::Replace { create_before_destroy: false, .. }), "{:?}", d.step);
}

#[test]
fn an_interrupted_create_of_a_kind_without_read_is_created_again() {
    let mut rec = record(json!({}), Status::Pending(Op::Create), false);
    rec.pending = Some(PendingOp { op: Op::Create, inputs: object(json!({"size": 1})), since: "x".into() });
    let d = decide(&registry(), &crud(), "t", &object(json!({"size": 1})), Some(&rec), false, None).unwrap();
    assert_eq!(d.action(), Action::Create);
    assert!(d.reason.as_deref().is_some_and(|r| r.contains("at-least-once")), "{:?}", d.reason);
}

#[test]
fn a_failed_update_is_never_taken_as_done() {
    let rec = record(json!({"size": 1}), Status::Failed, true);
    // The desired inputs are the recorded ones (the failed update's): the engine still visits
    // it and says why, instead of a silent noop.
    let d = decide(&registry(), &crud(), "t", &object(json!({"size": 1})), Some(&rec), true, None).unwrap();
    assert_eq!(d.action(), Action::Noop);
    assert!(d.reason.as_deref().is_some_and(|r| r.contains("did not complete")), "{:?}", d.reason);
    assert!(crate::scheduler::needs_repair(&rec), "the executor visits it");
}
