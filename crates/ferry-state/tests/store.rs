//! The state store through its public API: file modes, schema versions, the intent/result
//! lifecycle, the journal, export/import.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ferry_state::{Intent, Op, StateError, StateStore, Status, Success, SCHEMA_VERSION};
use serde_json::{json, Map, Value};

const SECRET: &str = "hunter2-very-secret-token";

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join(".ferry").join("state.db")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn intent(name: &str, op: Op, inputs: Value) -> Intent {
    Intent {
        resource: name.into(),
        op,
        kind: "local.file".into(),
        provider: json!({"builtin": "local"}),
        inputs: obj(inputs),
        dependencies: vec!["dep".into()],
        tags: vec!["web".into()],
        sensitive_outputs: vec!["token".into()],
        protect: false,
        deposed: false,
    }
}

fn success(outputs: Value) -> Success {
    Success { outputs: Some(obj(outputs)) }
}

#[test]
fn open_creates_private_dir_and_files_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = StateStore::open(&path).unwrap();
    assert_eq!(store.path(), path);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&path), 0o600);
    let run = store.begin_run("apply").unwrap();
    let id = store.record_intent(run, &intent("a", Op::Create, json!({"x": 1}))).unwrap();
    store.record_success(run, id, &success(json!({"y": 2}))).unwrap();
    // WAL side files exist while the connection is open, and are private too.
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", path.display()));
        assert_eq!(mode(&side), 0o600, "{}", side.display());
    }
    drop(store);

    let store = StateStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let rec = store.resource("a").unwrap().unwrap();
    assert_eq!(rec.inputs, obj(json!({"x": 1})));
    assert_eq!(rec.outputs, obj(json!({"y": 2})));
    drop(store);
    // Reopening again (migrations already applied) changes nothing.
    let store = StateStore::open_existing(&path).unwrap();
    assert_eq!(store.resources().unwrap().len(), 1);
    assert_eq!(store.integrity_check().unwrap(), "ok");
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn open_existing_fails_when_missing_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let err = StateStore::open_existing(&path).unwrap_err();
    assert!(matches!(err, StateError::Missing { .. }), "{err:?}");
    assert!(err.to_string().contains("state.db"));
    assert!(!path.parent().unwrap().exists());
}

#[test]
fn newer_schema_is_refused_and_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    drop(StateStore::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 5).unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = StateStore::open(&path).unwrap_err();
    match &err {
        StateError::NewerSchema { found, supported, path: p } => {
            assert_eq!(*found, SCHEMA_VERSION + 5);
            assert_eq!(*supported, SCHEMA_VERSION);
            assert_eq!(p, &path);
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(&format!("schema version {}", SCHEMA_VERSION + 5)), "{msg}");
    assert!(msg.contains("upgrade ferry"), "{msg}");
    assert!(StateStore::open_existing(&path).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn create_lifecycle_and_crash_between_intent_and_result() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = StateStore::open(&path).unwrap();
    let run = store.begin_run("apply").unwrap();
    let id = store.record_intent(run, &intent("a", Op::Create, json!({"x": 1}))).unwrap();
    drop(store); // the "crash": no result recorded

    let store = StateStore::open(&path).unwrap();
    let recs = store.resources().unwrap();
    assert_eq!(recs.len(), 1);
    let rec = &recs[0];
    assert_eq!(rec.status, Status::Pending(Op::Create));
    let pending = rec.pending.as_ref().unwrap();
    assert_eq!(pending.op, Op::Create);
    assert_eq!(pending.inputs, obj(json!({"x": 1})));
    assert!(rec.inputs.is_empty() && rec.outputs.is_empty());
    assert_eq!(rec.last_applied_at, None);
    assert_eq!(rec.kind, "local.file");
    assert_eq!(rec.provider, json!({"builtin": "local"}));

    store.record_success(run, id, &success(json!({"path": "/x"}))).unwrap();
    let rec = store.resource("a").unwrap().unwrap();
    assert_eq!(rec.status, Status::Ready);
    assert_eq!(rec.pending, None);
    assert_eq!(rec.inputs, obj(json!({"x": 1})));
    assert_eq!(rec.outputs, obj(json!({"path": "/x"})));
    assert_eq!(rec.dependencies, vec!["dep".to_string()]);
    assert_eq!(rec.sensitive_outputs, vec!["token".to_string()]);
    assert!(rec.last_applied_at.is_some());
    // The same intent cannot be completed twice.
    let again = store.record_success(run, id, &success(json!({})));
    assert!(matches!(again, Err(StateError::Invalid(_))), "{again:?}");
}

#[test]
fn update_keeps_previous_values_while_pending_and_after_failure() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(&db_path(&dir)).unwrap();
    let run = store.begin_run("apply").unwrap();
    let id = store.record_intent(run, &intent("a", Op::Create, json!({"v": 1}))).unwrap();
    store.record_success(run, id, &success(json!({"o": 1}))).unwrap();

    let id = store.record_intent(run, &intent("a", Op::Update, json!({"v": 2}))).unwrap();
    let rec = store.resource("a").unwrap().unwrap();
    assert_eq!(rec.status, Status::Pending(Op::Update));
    assert_eq!(rec.inputs, obj(json!({"v": 1})));
    assert_eq!(rec.outputs, obj(json!({"o": 1})));
    assert_eq!(rec.pending.as_ref().unwrap().inputs, obj(json!({"v": 2})));

    store.record_failure(run, id, "permission denied\nmore detail").unwrap();
    let rec = store.resource("a").unwrap().unwrap();
    assert_eq!(rec.status, Status::Failed);
    assert_eq!(rec.last_error.as_deref(), Some("permission denied\nmore detail"));
    assert_eq!(rec.inputs, obj(json!({"v": 1})));
    assert_eq!(rec.outputs, obj(json!({"o": 1})));
    assert_eq!(rec.pending.as_ref().unwrap().op, Op::Update);
    assert!(store.record_success(run, id, &success(json!({}))).is_err());

    let id = store.record_intent(run, &intent("a", Op::Update, json!({"v": 3}))).unwrap();
    store.record_success(run, id, &success(json!({"o": 3}))).unwrap();
    let rec = store.resource("a").unwrap().unwrap();
    assert_eq!(rec.status, Status::Ready);
    assert_eq!(rec.last_error, None);
    assert_eq!(rec.inputs, obj(json!({"v": 3})));
    assert_eq!(rec.outputs, obj(json!({"o": 3})));

    let last = store.events(Some("a"), Some(1)).unwrap();
    assert_eq!(last[0].phase, "ok");
    let errors: Vec<_> =
        store.events(Some("a"), None).unwrap().into_iter().filter(|e| e.phase == "error").collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].message, "update failed: permission denied");
}

#[test]
fn delete_removes_row_adopt_inserts_action_and_refresh_update_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(&db_path(&dir)).unwrap();
    let run = store.begin_run("apply").unwrap();

    let missing = store.record_intent(run, &intent("ghost", Op::Delete, json!({})));
    assert!(matches!(missing, Err(StateError::UnknownResource { .. })), "{missing:?}");

    let id = store.record_intent(run, &intent("a", Op::Adopt, json!({"v": 1}))).unwrap();
    assert_eq!(store.resource("a").unwrap().unwrap().status, Status::Pending(Op::Adopt));
    store.record_success(run, id, &success(json!({"o": 1}))).unwrap();
    assert_eq!(store.resource("a").unwrap().unwrap().outputs, obj(json!({"o": 1})));

    store.record_outputs(run, "a", &obj(json!({"o": 2}))).unwrap();
    let rec = store.resource("a").unwrap().unwrap();
    assert_eq!((rec.inputs, rec.outputs), (obj(json!({"v": 1})), obj(json!({"o": 2}))));
    assert!(store.record_outputs(run, "nope", &Map::new()).is_err());

    let rotate = Op::Action("rotate".into());
    let id = store.record_intent(run, &intent("a", rotate.clone(), json!({}))).unwrap();
    assert_eq!(store.resource("a").unwrap().unwrap().status, Status::Pending(rotate));
    store.record_success(run, id, &Success { outputs: None }).unwrap();
    let rec = store.resource("a").unwrap().unwrap();
    assert_eq!(rec.outputs, obj(json!({"o": 2})), "action without outputs keeps them");
    assert_eq!(rec.inputs, obj(json!({"v": 1})));

    let id = store.record_intent(run, &intent("a", Op::Delete, json!({}))).unwrap();
    assert_eq!(store.resource("a").unwrap().unwrap().status, Status::Pending(Op::Delete));
    store.record_success(run, id, &Success { outputs: None }).unwrap();
    assert_eq!(store.resource("a").unwrap(), None);
    assert!(store.resources().unwrap().is_empty());

    let phases: Vec<_> =
        store.events(Some("a"), None).unwrap().into_iter().map(|e| (e.op, e.phase)).collect();
    let expected = [
        ("adopt", "intent"),
        ("adopt", "ok"),
        ("read", "refresh"),
        ("action:rotate", "intent"),
        ("action:rotate", "ok"),
        ("delete", "intent"),
        ("delete", "ok"),
    ];
    let expected: Vec<_> = expected.iter().map(|(o, p)| (o.to_string(), p.to_string())).collect();
    assert_eq!(phases, expected);
}

#[test]
fn events_are_append_only_and_hold_no_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = StateStore::open(&path).unwrap();
    let run = store.begin_run("apply").unwrap();
    let id = store.record_intent(run, &intent("s", Op::Create, json!({"password": SECRET}))).unwrap();
    store.record_success(run, id, &success(json!({"token": SECRET}))).unwrap();
    let id = store.record_intent(run, &intent("s", Op::Update, json!({"password": SECRET}))).unwrap();
    store.record_failure(run, id, "boom").unwrap();
    store.record_outputs(run, "s", &obj(json!({"token": SECRET}))).unwrap();
    assert!(store.remove("s").unwrap());
    assert!(!store.remove("s").unwrap());
    store.end_run(run, "ok").unwrap();

    let events = store.events(None, None).unwrap();
    let phases: Vec<_> = events.iter().map(|e| e.phase.as_str()).collect();
    assert_eq!(phases, ["run-start", "intent", "ok", "intent", "error", "refresh", "rm", "run-end"]);
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    let dump = serde_json::to_string(&events).unwrap();
    assert!(!dump.contains(SECRET), "secret leaked into events: {dump}");
    assert!(!dump.contains("password"), "{dump}");

    let newest = store.events(None, Some(2)).unwrap();
    assert_eq!(newest, events[events.len() - 2..].to_vec());
    drop(store);

    // The journal refuses edits even through a raw connection.
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert!(conn.execute("DELETE FROM events", []).is_err());
    assert!(conn.execute("UPDATE events SET message = 'x'", []).is_err());
    let n: i64 = conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0)).unwrap();
    assert_eq!(n, events.len() as i64);
}

#[test]
fn export_import_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(&db_path(&dir)).unwrap();
    let run = store.begin_run("apply").unwrap();
    let id = store.record_intent(run, &intent("a", Op::Create, json!({"k": SECRET}))).unwrap();
    store.record_success(run, id, &success(json!({"o": [1, 2]}))).unwrap();
    store.record_intent(run, &intent("b", Op::Create, json!({"k": 2}))).unwrap();
    let id = store.record_intent(run, &intent("c", Op::Create, json!({"k": 3}))).unwrap();
    store.record_failure(run, id, "nope").unwrap();

    let doc = store.export().unwrap();
    assert_eq!(doc["version"], json!(ferry_state::EXPORT_VERSION));
    assert!(doc.to_string().contains(SECRET), "export carries full values");
    let before = store.resources().unwrap();

    let dir2 = tempfile::tempdir().unwrap();
    let other = StateStore::open(&db_path(&dir2)).unwrap();
    let r = other.begin_run("apply").unwrap();
    other.record_intent(r, &intent("stale", Op::Create, json!({}))).unwrap();
    assert_eq!(other.import(&doc).unwrap(), 3);
    assert_eq!(other.resources().unwrap(), before);
    assert_eq!(other.export().unwrap(), doc);
    assert_eq!(other.events(None, Some(1)).unwrap()[0].phase, "import");
}

#[test]
fn malformed_import_is_rejected_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(&db_path(&dir)).unwrap();
    let run = store.begin_run("apply").unwrap();
    let id = store.record_intent(run, &intent("a", Op::Create, json!({"v": 1}))).unwrap();
    store.record_success(run, id, &success(json!({}))).unwrap();
    let before = store.export().unwrap();
    let good = before["resources"][0].clone();
    let mut no_kind = good.clone();
    no_kind.as_object_mut().unwrap().remove("kind");
    let mut bad_status = good.clone();
    bad_status["status"] = json!({"pending": "create"});

    let cases = [
        (json!([]), "object"),
        (json!({"resources": []}), "version"),
        (json!({"version": 99, "resources": []}), "newer"),
        (json!({"version": 1, "resources": {}}), "array"),
        (json!({"version": 1, "resources": [good.clone(), no_kind]}), "resources[1]"),
        (json!({"version": 1, "resources": [good.clone(), good.clone()]}), "duplicate"),
        (json!({"version": 1, "resources": [bad_status]}), "pending"),
        (
            json!({"version": 1, "resources": [{"name": "x", "kind": "k", "provider": {}, "status": "bogus"}]}),
            "resources[0]",
        ),
    ];
    for (doc, needle) in cases {
        match store.import(&doc) {
            Err(StateError::Invalid(msg)) => assert!(msg.contains(needle), "{msg} lacks {needle}"),
            other => panic!("import of {doc} gave {other:?}"),
        }
    }
    assert_eq!(store.export().unwrap(), before);
}
