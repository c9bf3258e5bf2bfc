//! The counter provider against the conformance harness, and the harness against a provider
//! that is broken on purpose.

use ferry_protocol::conformance::{check, names, CheckOptions, ProviderProcess, Reply, StderrMode};
use ferry_protocol::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn counter() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferry-provider-counter"))
}

fn obj(v: serde_json::Value) -> Object {
    v.as_object().cloned().expect("an object")
}

#[test]
fn counter_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sub/counter");
    let opts = CheckOptions {
        samples: vec![("value".into(), obj(json!({"file": file.to_str().unwrap(), "start": 3})))],
        ..CheckOptions::default()
    };
    let report = check(&counter(), &[], &opts);
    eprintln!("{report}");
    assert!(report.passed(), "{report}");
    let lifecycle = report.get("lifecycle value").expect("the lifecycle ran");
    assert!(lifecycle.detail.contains("delete"), "{report}");
    assert!(lifecycle.detail.contains("adoption read → exists"), "{report}");
    for name in [
        names::HANDSHAKE,
        names::PROVIDER_NAME,
        names::KINDS,
        names::UNSUPPORTED_VERSION,
        names::MALFORMED_LINE,
        names::UNKNOWN_METHOD,
        names::UNKNOWN_KIND,
        names::CONCURRENT_IDS,
        names::EVENTS,
        names::STDOUT,
        names::EXIT_ON_EOF,
    ] {
        assert!(report.get(name).is_some_and(|c| c.passed), "check {name:?} missing or failed:\n{report}");
    }
    assert!(report.get(names::MALFORMED_LINE).unwrap().detail.contains("badRequest"), "{report}");
    assert!(!file.exists(), "the lifecycle check deletes what it created");
}

fn script(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("provider.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_provider_printing_garbage_fails() {
    let dir = tempfile::tempdir().unwrap();
    let exe = script(
        dir.path(),
        "echo 'Starting my provider v1.0...'\nread line\necho '{\"id\": 1, \"result\": 42'",
    );
    let opts = CheckOptions { timeout: Duration::from_secs(2), ..CheckOptions::default() };
    let report = check(&exe, &[], &opts);
    eprintln!("{report}");
    assert!(!report.passed(), "{report}");
    let hs = report.get(names::HANDSHAKE).unwrap();
    assert!(!hs.passed, "{report}");
    assert!(
        hs.detail.contains("not a protocol message") && hs.detail.contains("Starting my provider"),
        "{report}"
    );
    let stdout = report.get(names::STDOUT).unwrap();
    assert!(!stdout.passed && stdout.detail.contains("Starting my provider"), "{report}");
    // The rendered report says what failed.
    let text = report.to_string();
    assert!(text.contains("FAIL handshake"), "{text}");
}

#[test]
fn a_provider_that_ignores_eof_fails() {
    let dir = tempfile::tempdir().unwrap();
    // Answers nothing and never exits on its own.
    let exe = script(dir.path(), "trap '' HUP\nexec sleep 30");
    let opts = CheckOptions {
        timeout: Duration::from_millis(300),
        exit_timeout: Duration::from_millis(500),
        ..CheckOptions::default()
    };
    let report = check(&exe, &[], &opts);
    assert!(!report.passed());
    let hs = report.get(names::HANDSHAKE).unwrap();
    assert!(hs.detail.contains("no response to handshake"), "{report}");
    let exit = report.get(names::EXIT_ON_EOF).unwrap();
    assert!(!exit.passed && exit.detail.contains("still running"), "{report}");
}

// ------------------------------------------------ the counter's own behaviour, over the protocol

struct Session {
    p: ProviderProcess,
    file: String,
}

impl Session {
    fn start(file: &Path) -> Session {
        let mut p = ProviderProcess::spawn(&counter(), &[], StderrMode::Inherit).unwrap();
        let hs = p
            .call(
                Call::Handshake(HandshakeParams {
                    protocol_versions: vec![1],
                    ferry_version: "test".into(),
                    options: Default::default(),
                }),
                Duration::from_secs(10),
            )
            .unwrap();
        assert!(matches!(hs.outcome, Outcome::Result(_)));
        Session { p, file: file.to_str().unwrap().to_string() }
    }

    fn call(&mut self, call: Call) -> Reply {
        self.p.call(call, Duration::from_secs(10)).unwrap()
    }

    fn ok<T: serde::de::DeserializeOwned>(&mut self, call: Call) -> T {
        match self.call(call).outcome {
            Outcome::Result(v) => serde_json::from_value(v).unwrap(),
            Outcome::Error(e) => panic!("unexpected error: {e:?}"),
        }
    }

    fn err(&mut self, call: Call) -> ProviderError {
        match self.call(call).outcome {
            Outcome::Error(e) => e,
            Outcome::Result(v) => panic!("expected an error, got {v}"),
        }
    }

    fn inputs(&self, start: i64, step: i64) -> Object {
        obj(json!({"file": self.file, "start": start, "step": step}))
    }
}

#[test]
fn counter_lifecycle_with_drift_adoption_update_and_increment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n");
    let mut s = Session::start(&path);
    let r = "hits".to_string();
    let inputs = s.inputs(5, 2);

    let created: OutputsResult = s.ok(Call::Create(CreateParams {
        kind: "value".into(),
        resource: r.clone(),
        inputs: inputs.clone(),
        context: Default::default(),
    }));
    assert_eq!(created.outputs, obj(json!({"value": 5, "file": s.file})));
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), "5");

    // Adoption: no recorded outputs, the file exists.
    let read: ReadResult = s.ok(Call::Read(ReadParams {
        kind: "value".into(),
        resource: r.clone(),
        inputs: inputs.clone(),
        outputs: None,
    }));
    assert!(read.exists);
    assert_eq!(read.outputs.as_ref(), Some(&created.outputs));

    // Increment adds step, with events before the response.
    let reply = s.call(Call::Action(ActionParams {
        kind: "value".into(),
        resource: r.clone(),
        action: "increment".into(),
        args: Object::new(),
        inputs: inputs.clone(),
        outputs: created.outputs.clone(),
    }));
    assert!(!reply.events.is_empty());
    let Outcome::Result(v) = reply.outcome else { panic!("{reply:?}") };
    let action: ActionResult = serde_json::from_value(v).unwrap();
    assert_eq!(action.outputs.unwrap()["value"], json!(7));

    // Drift: the file now says 7, ferry recorded 5.
    let read: ReadResult = s.ok(Call::Read(ReadParams {
        kind: "value".into(),
        resource: r.clone(),
        inputs: inputs.clone(),
        outputs: Some(created.outputs.clone()),
    }));
    assert_eq!(read.drift, vec!["value is 7, recorded 5".to_string()]);

    // Plans: new start → update; new file → replace; same → noop.
    let prior = Prior { inputs: inputs.clone(), outputs: created.outputs.clone() };
    let plan = |s: &mut Session, inputs: Object| -> PlanResult {
        s.ok(Call::Plan(PlanParams {
            kind: "value".into(),
            resource: r.clone(),
            inputs,
            prior: Some(prior.clone()),
        }))
    };
    assert_eq!(plan(&mut s, inputs.clone()).action, PlanAction::Noop);
    let restarted = s.inputs(9, 2);
    assert_eq!(plan(&mut s, restarted).action, PlanAction::Update);
    let moved = obj(json!({"file": "/elsewhere/n", "start": 5, "step": 2}));
    let p = plan(&mut s, moved);
    assert_eq!(p.action, PlanAction::Replace);
    assert!(p.changes.iter().any(|c| c.path == "file" && c.forces_replace));

    // Update with a new step keeps the value; a new start resets it.
    let updated: OutputsResult = s.ok(Call::Update(UpdateParams {
        kind: "value".into(),
        resource: r.clone(),
        inputs: s.inputs(5, 10),
        prior: prior.clone(),
        context: Default::default(),
    }));
    assert_eq!(updated.outputs["value"], json!(7));
    let updated: OutputsResult = s.ok(Call::Update(UpdateParams {
        kind: "value".into(),
        resource: r.clone(),
        inputs: s.inputs(100, 10),
        prior: prior.clone(),
        context: Default::default(),
    }));
    assert_eq!(updated.outputs["value"], json!(100));

    // Delete twice: the second finds nothing and still succeeds.
    for _ in 0..2 {
        let _: serde_json::Value = s.ok(Call::Delete(DeleteParams {
            kind: "value".into(),
            resource: r.clone(),
            inputs: inputs.clone(),
            outputs: updated.outputs.clone(),
        }));
    }
    assert!(!path.exists());
    let read: ReadResult = s.ok(Call::Read(ReadParams {
        kind: "value".into(),
        resource: r.clone(),
        inputs: inputs.clone(),
        outputs: None,
    }));
    assert!(!read.exists);

    // Increment on a missing counter: notFound.
    let e = s.err(Call::Action(ActionParams {
        kind: "value".into(),
        resource: r.clone(),
        action: "increment".into(),
        args: Object::new(),
        inputs: inputs.clone(),
        outputs: updated.outputs.clone(),
    }));
    assert_eq!(e.code.as_deref(), Some(codes::NOT_FOUND));
    assert_eq!(e.resource.as_deref(), Some("hits"));
}

#[test]
fn counter_rejects_bad_inputs_unknown_actions_and_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::start(&dir.path().join("n"));
    let create = |inputs: serde_json::Value| {
        Call::Create(CreateParams {
            kind: "value".into(),
            resource: "c".into(),
            inputs: obj(inputs),
            context: Default::default(),
        })
    };
    for bad in [
        json!({"file": "relative"}),
        json!({}),
        json!({"file": "/x", "start": "one"}),
        json!({"file": "/x", "colour": 1}),
    ] {
        let e = s.err(create(bad.clone()));
        assert_eq!(e.code.as_deref(), Some(codes::INVALID_INPUT), "{bad}: {e:?}");
    }
    let e = s.err(Call::Create(CreateParams {
        kind: "gauge".into(),
        resource: "c".into(),
        inputs: obj(json!({"file": "/x"})),
        context: Default::default(),
    }));
    assert_eq!(e.code.as_deref(), Some(codes::BAD_REQUEST));
    assert!(e.message.contains("gauge"));
    let e = s.err(Call::Action(ActionParams {
        kind: "value".into(),
        resource: "c".into(),
        action: "reset".into(),
        args: Object::new(),
        inputs: obj(json!({"file": "/x"})),
        outputs: Object::new(),
    }));
    assert_eq!(e.code.as_deref(), Some(codes::UNSUPPORTED));
}
