//! Keeps the three descriptions of protocol v1 in agreement: the Rust wire types, the JSON Schema
//! in `docs/provider-protocol.schema.json`, and the examples in `docs/provider-protocol.md`.

use ferry_protocol::*;
use jsonschema::{Draft, JSONSchema};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;

fn docs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

fn schema_document() -> Value {
    let path = docs_dir().join("provider-protocol.schema.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Validators for the whole document (any line on the wire) and for each of its `$defs`.
struct Schemas {
    root: JSONSchema,
    doc: Value,
}

impl Schemas {
    fn load() -> Self {
        let doc = schema_document();
        Schemas { root: compile(&doc), doc }
    }

    /// A validator for one definition: the document with its root replaced by a `$ref`.
    fn def(&self, name: &str) -> JSONSchema {
        assert!(self.doc["$defs"].get(name).is_some(), "schema has no $defs/{name}");
        let mut doc = self.doc.clone();
        let root = doc.as_object_mut().unwrap();
        root.remove("oneOf");
        root.insert("$ref".into(), json!(format!("#/$defs/{name}")));
        compile(&doc)
    }
}

fn compile(doc: &Value) -> JSONSchema {
    JSONSchema::options()
        .with_draft(Draft::Draft202012)
        .compile(doc)
        .unwrap_or_else(|e| panic!("schema does not compile: {e}"))
}

fn assert_valid(schema: &JSONSchema, what: &str, instance: &Value) {
    if let Err(errors) = schema.validate(instance) {
        let errors: Vec<String> = errors.map(|e| format!("{e} at {}", e.instance_path)).collect();
        panic!("{what} should be valid: {instance}\n{}", errors.join("\n"));
    }
}

fn obj(v: Value) -> Object {
    v.as_object().cloned().expect("an object")
}

fn sample_kind() -> KindSchema {
    KindSchema {
        name: "value".into(),
        description: "A counter kept in a file".into(),
        inputs: json!({"type": "object", "properties": {"start": {"type": "integer"}, "token": {"type": "string"}}}),
        outputs: json!({"type": "object", "properties": {"value": {"type": "integer"}}}),
        sensitive_inputs: vec!["token".into()],
        sensitive_outputs: vec![],
        output_names_input: Some("outputNames".into()),
        operations: vec![
            Operation::Plan,
            Operation::Create,
            Operation::Read,
            Operation::Update,
            Operation::Delete,
        ],
        actions: vec![ActionSchema { name: "increment".into(), description: "add step".into() }],
        builds_inputs: true,
        heavy_inputs: true,
    }
}

fn prior() -> Prior {
    Prior { inputs: obj(json!({"start": 1})), outputs: obj(json!({"value": 1})) }
}

/// One request of every method, with optional fields both present and absent.
fn sample_requests() -> Vec<Request> {
    let calls = vec![
        Call::Handshake(HandshakeParams {
            protocol_versions: vec![1],
            ferry_version: "0.1.0".into(),
            options: Object::new(),
        }),
        Call::Handshake(HandshakeParams {
            protocol_versions: vec![1],
            ferry_version: "0.1.0".into(),
            options: obj(json!({"force": true, "nixOptions": [["substituters", ""]]})),
        }),
        Call::Plan(PlanParams {
            kind: "value".into(),
            resource: "c".into(),
            inputs: obj(json!({"start": 2})),
            prior: None,
        }),
        Call::Plan(PlanParams {
            kind: "value".into(),
            resource: "c".into(),
            inputs: obj(json!({"start": 2})),
            prior: Some(prior()),
        }),
        Call::Create(CreateParams {
            kind: "value".into(),
            resource: "c".into(),
            inputs: obj(json!({"start": 2})),
            context: Default::default(),
        }),
        Call::Create(CreateParams {
            kind: "value".into(),
            resource: "c".into(),
            inputs: obj(json!({"start": 2})),
            context: [(
                "/nix/store/00000000000000000000000000000000-x.drv".to_string(),
                vec!["out".to_string()],
            )]
            .into(),
        }),
        Call::Read(ReadParams {
            kind: "value".into(),
            resource: "c".into(),
            inputs: Object::new(),
            outputs: None,
        }),
        Call::Read(ReadParams {
            kind: "value".into(),
            resource: "c".into(),
            inputs: Object::new(),
            outputs: Some(obj(json!({"value": 3}))),
        }),
        Call::Update(UpdateParams {
            kind: "value".into(),
            resource: "c".into(),
            inputs: obj(json!({"start": 5})),
            prior: prior(),
            context: Default::default(),
        }),
        Call::Delete(DeleteParams {
            kind: "value".into(),
            resource: "c".into(),
            inputs: Object::new(),
            outputs: Object::new(),
        }),
        Call::Action(ActionParams {
            kind: "value".into(),
            resource: "c".into(),
            action: "increment".into(),
            args: obj(json!({"by": 2})),
            inputs: Object::new(),
            outputs: Object::new(),
        }),
    ];
    calls.into_iter().enumerate().map(|(i, call)| Request { id: i as u64 + 1, call }).collect()
}

/// A result of every type, each paired with the `$defs` name that describes it.
fn sample_results() -> Vec<(&'static str, Value)> {
    let to = |v: Value| v;
    vec![
        (
            "HandshakeResult",
            serde_json::to_value(HandshakeResult {
                protocol_version: 1,
                provider: "counter".into(),
                version: "0.1.0".into(),
                kinds: vec![sample_kind()],
            })
            .unwrap(),
        ),
        (
            "PlanResult",
            serde_json::to_value(PlanResult {
                action: PlanAction::Update,
                changes: vec![
                    Change {
                        path: "start".into(),
                        before: Some(json!(1)),
                        after: Some(json!(5)),
                        forces_replace: false,
                    },
                    Change {
                        path: "file".into(),
                        before: None,
                        after: Some(json!("/x")),
                        forces_replace: true,
                    },
                ],
                reason: Some("start changed".into()),
                create_before_destroy: true,
            })
            .unwrap(),
        ),
        (
            "PlanResult",
            serde_json::to_value(PlanResult {
                action: PlanAction::Noop,
                changes: vec![],
                reason: None,
                create_before_destroy: false,
            })
            .unwrap(),
        ),
        ("OutputsResult", serde_json::to_value(OutputsResult { outputs: obj(json!({"value": 1})) }).unwrap()),
        (
            "ReadResult",
            serde_json::to_value(ReadResult {
                exists: true,
                outputs: Some(obj(json!({"value": 4}))),
                inputs: Some(obj(json!({"start": 4}))),
                drift: vec!["value is 4, recorded 1".into()],
            })
            .unwrap(),
        ),
        (
            "ReadResult",
            serde_json::to_value(ReadResult { exists: false, outputs: None, inputs: None, drift: vec![] })
                .unwrap(),
        ),
        ("DeleteResult", to(json!({}))),
        (
            "ActionResult",
            serde_json::to_value(ActionResult {
                outputs: Some(obj(json!({"value": 2}))),
                message: Some("2".into()),
            })
            .unwrap(),
        ),
        ("ActionResult", serde_json::to_value(ActionResult { outputs: None, message: None }).unwrap()),
    ]
}

fn sample_errors() -> Vec<ProviderError> {
    let mut full = ProviderError::new("host unreachable").code("internal").retryable();
    full.resource = Some("web".into());
    vec![
        ProviderError::new("boom"),
        full,
        ProviderError::invalid_input("start must be an integer"),
        ProviderError::unsupported("kind value has no action frobnicate"),
    ]
}

#[test]
fn every_rust_message_validates() {
    let schemas = Schemas::load();
    let request_schema = schemas.def("Request");
    let message_schema = schemas.def("Message");

    for req in sample_requests() {
        let v = serde_json::to_value(&req).unwrap();
        assert_valid(&schemas.root, "request", &v);
        assert_valid(&request_schema, "request", &v);
        let params_def = match req.call {
            Call::Handshake(_) => "HandshakeParams",
            Call::Plan(_) => "PlanParams",
            Call::Create(_) => "CreateParams",
            Call::Read(_) => "ReadParams",
            Call::Update(_) => "UpdateParams",
            Call::Delete(_) => "DeleteParams",
            Call::Action(_) => "ActionParams",
        };
        assert_valid(&schemas.def(params_def), params_def, &v["params"]);
        assert!(!message_schema.is_valid(&v), "a request must not pass as a provider message: {v}");
    }

    for (i, (def, result)) in sample_results().into_iter().enumerate() {
        assert_valid(&schemas.def(def), def, &result);
        let msg = Message::Response(Response { id: i as u64 + 1, outcome: Outcome::Result(result) });
        let v = serde_json::to_value(&msg).unwrap();
        assert_valid(&schemas.root, "response", &v);
        assert_valid(&message_schema, "response", &v);
        assert!(!request_schema.is_valid(&v));
    }

    for (i, err) in sample_errors().into_iter().enumerate() {
        let v = serde_json::to_value(&err).unwrap();
        assert_valid(&schemas.def("ProviderError"), "error", &v);
        let msg = Message::Response(Response { id: i as u64, outcome: Outcome::Error(err) });
        assert_valid(&message_schema, "error response", &serde_json::to_value(&msg).unwrap());
    }

    for (event, phase, builds) in [
        (EventKind::Progress, Some("copy"), None),
        (EventKind::Log, None, None),
        (EventKind::Warning, None, None),
        (EventKind::Progress, Some("build"), Some(ferry_protocol::Builds { count: 2, seconds: 1.5 })),
    ] {
        let msg = Message::Event(Event {
            id: 9,
            event,
            message: "copying".into(),
            phase: phase.map(str::to_string),
            builds,
        });
        let v = serde_json::to_value(&msg).unwrap();
        assert_valid(&schemas.root, "event", &v);
        assert_valid(&schemas.def("Event"), "event", &v);
        assert!(!schemas.def("Response").is_valid(&v), "an event must not pass as a response: {v}");
    }
}

#[test]
fn invalid_messages_are_rejected() {
    let schemas = Schemas::load();
    let bad = [
        json!("not an object"),
        json!({"method": "plan", "params": {"kind": "value", "resource": "c", "inputs": {}}}),
        json!({"id": -1, "method": "plan", "params": {"kind": "value", "resource": "c", "inputs": {}}}),
        json!({"id": 1.5, "method": "plan", "params": {"kind": "value", "resource": "c", "inputs": {}}}),
        json!({"id": 1, "method": "destroy", "params": {}}),
        json!({"id": 1, "method": "plan"}),
        json!({"id": 1, "method": "plan", "params": {"kind": "value", "inputs": {}}}),
        json!({"id": 1, "method": "create", "params": {"kind": "value", "resource": "c", "inputs": []}}),
        json!({"id": 1, "method": "update", "params": {"kind": "value", "resource": "c", "inputs": {}}}),
        json!({"id": 1, "method": "update", "params": {"kind": "value", "resource": "c", "inputs": {}, "prior": {"inputs": {}}}}),
        json!({"id": 1, "method": "handshake", "params": {"protocolVersions": 1, "ferryVersion": "0.1"}}),
        json!({"id": 1, "method": "action", "params": {"kind": "value", "resource": "c", "inputs": {}, "outputs": {}}}),
        json!({"id": 1}),
        json!({"id": 1, "result": {}, "error": {"message": "both"}}),
        json!({"id": 1, "result": 5}),
        json!({"id": 1, "error": {"retryable": true}}),
        json!({"id": 1, "error": {"message": "x", "retryable": "yes"}}),
        json!({"id": 1, "event": "debug", "message": "x"}),
        json!({"id": 1, "event": "log"}),
        json!({"id": 1, "event": "log", "message": "x", "result": {}}),
        json!({"result": {}}),
    ];
    for v in bad {
        assert!(!schemas.root.is_valid(&v), "should be rejected by the schema: {v}");
    }

    let bad_results = [
        ("HandshakeResult", json!({"protocolVersion": 1, "provider": "", "kinds": []})),
        ("HandshakeResult", json!({"protocolVersion": 1, "provider": "counter"})),
        ("KindSchema", json!({"name": "value", "inputs": {}, "outputs": {}, "operations": ["read"]})),
        ("KindSchema", json!({"name": "value", "inputs": true, "outputs": {}, "operations": ["create"]})),
        (
            "KindSchema",
            json!({"name": "value", "inputs": {}, "outputs": {}, "operations": ["create", "destroy"]}),
        ),
        ("PlanResult", json!({"action": "destroy"})),
        ("PlanResult", json!({"changes": []})),
        ("ReadResult", json!({"outputs": {}})),
        ("OutputsResult", json!({})),
        ("ActionResult", json!({"outputs": 3})),
    ];
    for (def, v) in bad_results {
        assert!(!schemas.def(def).is_valid(&v), "{def} should reject {v}");
    }
}

/// Receivers ignore fields they do not know (the additive-change rule); the Rust types must too.
#[test]
fn unknown_fields_are_ignored() {
    let req: Request = serde_json::from_value(json!({
        "id": 4, "method": "create", "trace": "abc",
        "params": {"kind": "value", "resource": "c", "inputs": {}, "future": true}
    }))
    .unwrap();
    assert_eq!(req.call.method(), "create");
    let msg: Message =
        serde_json::from_value(json!({"id": 4, "result": {"outputs": {}}, "elapsedMs": 3})).unwrap();
    assert!(matches!(msg, Message::Response(Response { id: 4, outcome: Outcome::Result(_) })));
    let msg: Message =
        serde_json::from_value(json!({"id": 4, "error": {"message": "x", "hint": "y"}, "elapsedMs": 3}))
            .unwrap();
    assert!(matches!(msg, Message::Response(Response { id: 4, outcome: Outcome::Error(_) })));
    let msg: Message =
        serde_json::from_value(json!({"id": 4, "event": "log", "message": "x", "level": 2})).unwrap();
    assert!(matches!(msg, Message::Event(_)));
    let hs: HandshakeResult = serde_json::from_value(json!({
        "protocolVersion": 1, "provider": "p", "kinds": [], "capabilities": ["x"]
    }))
    .unwrap();
    assert_eq!(hs.provider, "p");
}

// ------------------------------------------------------------ the examples in the spec

/// The ` ```json ` blocks of the specification: each is a transcript of protocol lines (shown
/// pretty-printed), requests and provider messages in any order. In a ` ```json malformed `
/// block the requests are deliberately invalid (and only have to be JSON); its provider
/// messages are checked like any other.
fn doc_json_blocks() -> Vec<(usize, bool, String)> {
    let path = docs_dir().join("provider-protocol.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut blocks = Vec::new();
    let mut current: Option<(usize, bool, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let fence = line.trim_start();
        match &mut current {
            None => match fence.strip_prefix("```json").map(str::trim) {
                Some("") => current = Some((n + 1, false, String::new())),
                Some("malformed") => current = Some((n + 1, true, String::new())),
                _ => {}
            },
            Some(_) if fence.starts_with("```") => blocks.push(current.take().unwrap()),
            Some((_, _, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    assert!(current.is_none(), "unterminated ```json block in the spec");
    blocks
}

fn result_def(method: &str) -> &'static str {
    match method {
        "handshake" => "HandshakeResult",
        "plan" => "PlanResult",
        "create" | "update" => "OutputsResult",
        "read" => "ReadResult",
        "delete" => "DeleteResult",
        "action" => "ActionResult",
        other => panic!("unknown method {other}"),
    }
}

fn result_parses(method: &str, v: &Value) -> Result<(), serde_json::Error> {
    let v = v.clone();
    match method {
        "handshake" => serde_json::from_value::<HandshakeResult>(v).map(drop),
        "plan" => serde_json::from_value::<PlanResult>(v).map(drop),
        "create" | "update" => serde_json::from_value::<OutputsResult>(v).map(drop),
        "read" => serde_json::from_value::<ReadResult>(v).map(drop),
        "delete" => serde_json::from_value::<Object>(v).map(drop),
        "action" => serde_json::from_value::<ActionResult>(v).map(drop),
        other => panic!("unknown method {other}"),
    }
}

#[test]
fn spec_examples_are_valid_messages() {
    let schemas = Schemas::load();
    let blocks = doc_json_blocks();
    assert!(
        blocks.len() >= 8,
        "expected the spec to show examples of every method, found {} blocks",
        blocks.len()
    );
    let mut methods_seen = std::collections::BTreeSet::new();
    let mut events_seen = 0;
    let mut malformed_seen = 0;
    for (line, malformed, body) in blocks {
        let mut methods: HashMap<u64, String> = HashMap::new();
        for value in serde_json::Deserializer::from_str(&body).into_iter::<Value>() {
            let v = value.unwrap_or_else(|e| panic!("spec line {line}: not JSON: {e}"));
            let from_provider = ["result", "error", "event"].iter().any(|k| v.get(k).is_some());
            if malformed && !from_provider {
                malformed_seen += 1;
                continue;
            }
            if let Err(errors) = schemas.root.validate(&v) {
                let errors: Vec<String> = errors.map(|e| format!("{e} at {}", e.instance_path)).collect();
                panic!("spec block at line {line}: {v}\ndoes not match the schema:\n{}", errors.join("\n"));
            }
            if v.get("method").is_some() {
                let req: Request = serde_json::from_value(v.clone())
                    .unwrap_or_else(|e| panic!("spec line {line}: {v}: {e}"));
                methods_seen.insert(req.call.method());
                methods.insert(req.id, req.call.method().to_string());
                continue;
            }
            let msg: Message =
                serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("spec line {line}: {v}: {e}"));
            match msg {
                Message::Event(_) => events_seen += 1,
                Message::Response(Response { outcome: Outcome::Error(_), .. }) => {}
                Message::Response(Response { id, outcome: Outcome::Result(result) }) => {
                    let method = methods.get(&id).unwrap_or_else(|| {
                        panic!("spec block at line {line}: result for id {id} without its request in the same block")
                    });
                    result_parses(method, &result)
                        .unwrap_or_else(|e| panic!("spec line {line}: {method} result {result}: {e}"));
                    assert_valid(&schemas.def(result_def(method)), result_def(method), &result);
                }
            }
        }
    }
    for m in ["handshake", "plan", "create", "read", "update", "delete", "action"] {
        assert!(methods_seen.contains(m), "the spec shows no example of `{m}`");
    }
    assert!(events_seen > 0, "the spec shows no event");
    assert!(malformed_seen > 0, "the spec shows no malformed request");
}
