//! Tests drive [`LocalProvider`] through the real protocol loop ([`serve_on`]) over in-memory
//! pipes, so they exercise the wire format as ferry sees it.

mod exec;
mod file;
mod keypair;
mod random;

use crate::LocalProvider;
use ferry_protocol::sdk::serve_on;
use ferry_protocol::*;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The provider's output stream, shared with the test.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Send one request through a fresh protocol loop; return its outcome and the events about it.
fn roundtrip(call: Call) -> (Outcome, Vec<Event>) {
    let line = serde_json::to_string(&Request { id: 1, call }).expect("request serializes");
    let out = SharedBuf::default();
    serve_on(LocalProvider::new(), Cursor::new(format!("{line}\n")), out.clone()).expect("serve_on runs");
    let bytes = out.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let text = String::from_utf8(bytes).expect("protocol output is UTF-8");
    let mut events = Vec::new();
    let mut outcome = None;
    for l in text.lines() {
        match serde_json::from_str::<Message>(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")) {
            Message::Event(e) => {
                assert_eq!(e.id, 1);
                events.push(e);
            }
            Message::Response(r) => {
                assert_eq!(r.id, 1);
                assert!(outcome.replace(r.outcome).is_none(), "two responses: {text}");
            }
        }
    }
    (outcome.unwrap_or_else(|| panic!("no response in {text:?}")), events)
}

fn request<T: DeserializeOwned>(call: Call) -> Result<T, ProviderError> {
    match roundtrip(call).0 {
        Outcome::Result(v) => Ok(serde_json::from_value(v).expect("result has the method's shape")),
        Outcome::Error(e) => Err(e),
    }
}

fn obj(v: Value) -> Object {
    match v {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

fn handshake() -> HandshakeResult {
    request(Call::Handshake(HandshakeParams {
        protocol_versions: vec![PROTOCOL_VERSION],
        ferry_version: "test".into(),
        options: Default::default(),
    }))
    .expect("handshake succeeds")
}

fn plan(kind: &str, inputs: Value, prior: Option<(Value, Value)>) -> Result<PlanResult, ProviderError> {
    request(Call::Plan(PlanParams {
        kind: kind.into(),
        resource: "r".into(),
        inputs: obj(inputs),
        prior: prior.map(|(i, o)| Prior { inputs: obj(i), outputs: obj(o) }),
    }))
}

fn create(kind: &str, inputs: Value) -> Result<Object, ProviderError> {
    request::<OutputsResult>(Call::Create(CreateParams {
        kind: kind.into(),
        resource: "r".into(),
        inputs: obj(inputs),
        context: Default::default(),
    }))
    .map(|r| r.outputs)
}

fn read(kind: &str, inputs: Value, outputs: Option<Value>) -> Result<ReadResult, ProviderError> {
    request(Call::Read(ReadParams {
        kind: kind.into(),
        resource: "r".into(),
        inputs: obj(inputs),
        outputs: outputs.map(obj),
    }))
}

fn update(kind: &str, inputs: Value, prior: (Value, Value)) -> Result<Object, ProviderError> {
    request::<OutputsResult>(Call::Update(UpdateParams {
        kind: kind.into(),
        resource: "r".into(),
        inputs: obj(inputs),
        prior: Prior { inputs: obj(prior.0), outputs: obj(prior.1) },
        context: Default::default(),
    }))
    .map(|r| r.outputs)
}

fn delete(kind: &str, inputs: Value, outputs: Value) -> Result<(), ProviderError> {
    request::<Value>(Call::Delete(DeleteParams {
        kind: kind.into(),
        resource: "r".into(),
        inputs: obj(inputs),
        outputs: obj(outputs),
    }))
    .map(|_| ())
}

/// A private scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ferry-provider-local-test-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn join(&self, p: &str) -> String {
        self.0.join(p).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn handshake_declares_four_kinds() {
    let h = handshake();
    assert_eq!(h.provider, "local");
    assert_eq!(h.protocol_version, PROTOCOL_VERSION);
    assert_eq!(h.version, env!("CARGO_PKG_VERSION"));
    let names: Vec<&str> = h.kinds.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["file", "exec", "random", "ssh-keypair"]);
    let kind = |n: &str| h.kinds.iter().find(|k| k.name == n).expect("kind declared");

    let keypair = kind("ssh-keypair");
    assert_eq!(keypair.sensitive_outputs, ["privateKey"]);
    assert_eq!(keypair.output_names(), ["publicKey", "privateKey"]);
    assert_eq!(kind("file").output_names(), ["path", "sha256"]);
    assert!(kind("file").sensitive_inputs.is_empty());
    assert_eq!(kind("random").output_names(), ["value"]);
    assert_eq!(kind("exec").output_names_input.as_deref(), Some("outputNames"));
    assert!(kind("exec").supports(Operation::Update));
    assert!(!kind("random").supports(Operation::Update));
    assert!(!kind("ssh-keypair").supports(Operation::Update));

    for k in &h.kinds {
        assert_eq!(k.inputs["type"], "object", "{}", k.name);
        assert_eq!(k.inputs["additionalProperties"], false, "{}", k.name);
        assert!(k.inputs["properties"].is_object(), "{}", k.name);
        for (name, prop) in k.inputs["properties"].as_object().into_iter().flatten() {
            assert!(prop["description"].is_string(), "{}.{name} has no description", k.name);
        }
        assert!(k.supports(Operation::Plan) && k.supports(Operation::Read), "{}", k.name);
    }
    assert_eq!(kind("file").inputs["required"], json!(["path", "content"]));
    assert_eq!(kind("exec").inputs["required"], json!(["create"]));
}

#[test]
fn unknown_kind_is_a_bad_request() {
    let err = create("nope", json!({})).expect_err("no such kind");
    assert_eq!(err.code.as_deref(), Some("badRequest"));
    assert!(err.message.contains("`nope`"), "{}", err.message);
    assert_eq!(err.resource.as_deref(), Some("r"));
}
