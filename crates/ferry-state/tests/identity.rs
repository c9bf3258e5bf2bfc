//! Schema v2: the deployment binding, the protect flag and deposed objects; and the migration
//! of a v1 database, which keeps its resources and has no binding until a run writes.

use std::path::Path;

use ferry_state::{DeploymentIdentity, Intent, Op, StateStore, Success, SCHEMA_VERSION};
use serde_json::{json, Map, Value};

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
        dependencies: vec![],
        tags: vec![],
        sensitive_outputs: vec![],
        protect: false,
        deposed: false,
    }
}

/// Schema v1 exactly as it shipped (the first migration).
const V1: &str = r#"
    CREATE TABLE resources (
        name TEXT PRIMARY KEY NOT NULL, kind TEXT NOT NULL, provider TEXT NOT NULL,
        inputs TEXT NOT NULL DEFAULT '{}', outputs TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL CHECK (status IN ('ready', 'pending', 'failed')),
        pending TEXT, pending_since TEXT, pending_intent INTEGER, last_error TEXT,
        dependencies TEXT NOT NULL DEFAULT '[]', tags TEXT NOT NULL DEFAULT '[]',
        sensitive_outputs TEXT NOT NULL DEFAULT '[]', created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL, last_applied_at TEXT,
        CHECK ((status = 'ready') = (pending IS NULL))
    );
    CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, command TEXT NOT NULL,
        pid INTEGER NOT NULL, host TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT, outcome TEXT);
    CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, run INTEGER,
        resource TEXT, op TEXT NOT NULL, phase TEXT NOT NULL, message TEXT NOT NULL);
    INSERT INTO resources (name, kind, provider, inputs, outputs, status, created_at, updated_at, last_applied_at)
        VALUES ('old', 'local.file', '{"builtin":"local"}', '{"path":"/x"}', '{}', 'ready', 't', 't', 't');
    PRAGMA user_version = 1;
"#;

#[test]
fn v1_database_migrates_keeping_resources_and_unbound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    rusqlite::Connection::open(&path).unwrap().execute_batch(V1).unwrap();
    let store = StateStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let recs = store.resources().unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].name, "old");
    assert!(!recs[0].protect);
    assert_eq!(store.deployment().unwrap(), None);
    let id = DeploymentIdentity::new(&path, &dir.path().join("deployment.nix"), Some("prod".into()));
    store.bind_deployment(&id).unwrap();
    drop(store);
    let store = StateStore::open(&path).unwrap();
    let bound = store.deployment().unwrap().unwrap();
    assert_eq!(bound, id);
    assert_eq!(bound.file, Path::new("deployment.nix"));
    assert!(store.events(None, None).unwrap().iter().any(|e| e.op == "bind"));
}

#[test]
fn protect_is_recorded_on_success_and_by_set_protect() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(&dir.path().join("state.db")).unwrap();
    let run = store.begin_run("apply").unwrap();
    let mut i = intent("db", Op::Create, json!({"path": "/a"}));
    i.protect = true;
    let id = store.record_intent(run, &i).unwrap();
    store.record_success(run, id, &Success { outputs: Some(obj(json!({}))) }).unwrap();
    assert!(store.resource("db").unwrap().unwrap().protect);
    assert!(store.set_protect("db", false).unwrap());
    assert!(!store.set_protect("db", false).unwrap(), "unchanged: no event");
    assert!(!store.resource("db").unwrap().unwrap().protect);
}

#[test]
fn create_before_destroy_keeps_the_old_object_until_its_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(&dir.path().join("state.db")).unwrap();
    let run = store.begin_run("apply").unwrap();
    let id = store.record_intent(run, &intent("f", Op::Create, json!({"path": "/old"}))).unwrap();
    store.record_success(run, id, &Success { outputs: Some(obj(json!({"path": "/old"}))) }).unwrap();
    // The replacement is created first: the old object becomes deposed.
    let mut create = intent("f", Op::Create, json!({"path": "/new"}));
    create.deposed = true;
    let id = store.record_intent(run, &create).unwrap();
    store.record_success(run, id, &Success { outputs: Some(obj(json!({"path": "/new"}))) }).unwrap();
    let rec = store.resource("f").unwrap().unwrap();
    assert_eq!(rec.inputs["path"], "/new");
    let deposed = rec.deposed.expect("the old object is kept");
    assert_eq!(deposed.inputs["path"], "/old");
    assert_eq!(deposed.outputs["path"], "/old");
    // Export/import carries it.
    let doc = store.export().unwrap();
    store.import(&doc).unwrap();
    assert!(store.resource("f").unwrap().unwrap().deposed.is_some());
    // Deleting the deposed object keeps the record.
    let mut delete = intent("f", Op::Delete, json!({"path": "/old"}));
    delete.deposed = true;
    let id = store.record_intent(run, &delete).unwrap();
    store.record_success(run, id, &Success { outputs: None }).unwrap();
    let rec = store.resource("f").unwrap().unwrap();
    assert_eq!(rec.deposed, None);
    assert_eq!(rec.inputs["path"], "/new");
    assert_eq!(rec.status, ferry_state::Status::Ready);
}
