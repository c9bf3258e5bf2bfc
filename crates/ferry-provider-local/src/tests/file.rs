use super::*;
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::PermissionsExt;

fn mode_of(path: &str) -> u32 {
    fs::metadata(path).expect("file exists").permissions().mode() & 0o7777
}

fn sha(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

#[test]
fn create_writes_content_mode_and_parents_atomically() {
    let dir = TempDir::new();
    let path = dir.join("a/b/secret.txt");
    let out =
        create("file", json!({"path": path, "content": "hush\n", "mode": "0600"})).expect("create succeeds");
    assert_eq!(fs::read_to_string(&path).expect("file written"), "hush\n");
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(Value::Object(out), json!({"path": path, "sha256": sha("hush\n")}));
    // The temporary file was renamed, not left behind.
    let entries: Vec<_> = fs::read_dir(dir.path().join("a/b"))
        .expect("dir exists")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(entries, ["secret.txt"]);
}

#[test]
fn default_mode_is_0644_regardless_of_umask() {
    let dir = TempDir::new();
    let path = dir.join("f");
    create("file", json!({"path": path, "content": "x"})).expect("create succeeds");
    assert_eq!(mode_of(&path), 0o644);
    let wide = dir.join("g");
    create("file", json!({"path": wide, "content": "x", "mode": "0666"})).expect("create succeeds");
    assert_eq!(mode_of(&wide), 0o666);
}

#[test]
fn read_reports_drift_and_disappearance() {
    let dir = TempDir::new();
    let path = dir.join("motd");
    let inputs = json!({"path": path, "content": "hello\n", "mode": "0640"});
    let out = Value::Object(create("file", inputs.clone()).expect("create succeeds"));

    let r = read("file", inputs.clone(), Some(out.clone())).expect("read succeeds");
    assert!(r.exists);
    assert!(r.drift.is_empty(), "{:?}", r.drift);
    assert_eq!(r.inputs, None);
    assert_eq!(r.outputs.map(Value::Object), Some(out.clone()));

    fs::write(&path, "tampered\n").expect("modify file");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).expect("chmod");
    let r = read("file", inputs.clone(), Some(out.clone())).expect("read succeeds");
    assert!(r.exists);
    assert_eq!(r.drift.len(), 2, "{:?}", r.drift);
    assert!(r.drift[0].contains("content changed on disk"), "{:?}", r.drift);
    assert!(r.drift[0].contains(&sha("tampered\n")), "{:?}", r.drift);
    assert_eq!(r.drift[1], "mode is 0666, declared 0640");
    assert_eq!(r.inputs.map(Value::Object), Some(json!({"content": "tampered\n", "mode": "0666"})));
    assert_eq!(r.outputs.and_then(|o| o.get("sha256").cloned()), Some(json!(sha("tampered\n"))));

    fs::remove_file(&path).expect("remove file");
    let r = read("file", inputs, Some(out)).expect("read succeeds");
    assert!(!r.exists);
    assert!(r.outputs.is_none());
}

#[test]
fn drift_is_judged_against_recorded_inputs_not_outputs() {
    let dir = TempDir::new();
    let path = dir.join("f");
    let inputs = json!({"path": path, "content": "v1"});
    let out = Value::Object(create("file", inputs.clone()).expect("create"));
    // ferry reads with the inputs recorded at the last apply; an untouched file is in sync.
    let r = read("file", inputs.clone(), Some(out)).expect("read succeeds");
    assert!(r.exists);
    assert!(r.drift.is_empty(), "{:?}", r.drift);
    assert_eq!(r.inputs, None);
    // Tampered, then refreshed (outputs now carry the tampered file's hash): still drift.
    fs::write(&path, "tampered").expect("tamper");
    let refreshed = read("file", inputs.clone(), Some(json!({"path": path, "sha256": "x"}))).expect("read");
    let refreshed_outputs = refreshed.outputs.clone().expect("outputs");
    let r = read("file", inputs, Some(Value::Object(refreshed_outputs))).expect("read succeeds");
    assert!(!r.drift.is_empty(), "a refresh must not hide drift");
    assert_eq!(r.inputs.as_ref().and_then(|i| i.get("content")), Some(&json!("tampered")));
}

#[test]
fn read_without_outputs_adopts_only_an_identical_file() {
    let dir = TempDir::new();
    let path = dir.join("f");
    let inputs = json!({"path": path, "content": "same", "mode": "0600"});
    assert!(!read("file", inputs.clone(), None).expect("read succeeds").exists);

    create("file", inputs.clone()).expect("create succeeds");
    let r = read("file", inputs.clone(), None).expect("read succeeds");
    assert!(r.exists);
    assert_eq!(r.outputs.map(Value::Object), Some(json!({"path": path, "sha256": sha("same")})));

    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(!read("file", inputs.clone(), None).expect("read succeeds").exists);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::write(&path, "other").expect("modify file");
    assert!(!read("file", inputs, None).expect("read succeeds").exists);
}

#[test]
fn update_rewrites_content_and_mode() {
    let dir = TempDir::new();
    let path = dir.join("f");
    let old = json!({"path": path, "content": "one", "mode": "0644"});
    let out = Value::Object(create("file", old.clone()).expect("create succeeds"));
    let new = json!({"path": path, "content": "two", "mode": "0600"});
    let out2 = update("file", new, (old, out)).expect("update succeeds");
    assert_eq!(fs::read_to_string(&path).expect("file exists"), "two");
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(out2.get("sha256"), Some(&json!(sha("two"))));
}

#[test]
fn update_across_paths_removes_the_old_file() {
    let dir = TempDir::new();
    let (a, b) = (dir.join("a"), dir.join("b"));
    let old = json!({"path": a, "content": "x"});
    let out = Value::Object(create("file", old.clone()).expect("create succeeds"));
    update("file", json!({"path": b, "content": "x"}), (old, out)).expect("update succeeds");
    assert!(!Path::new(&a).exists());
    assert_eq!(fs::read_to_string(&b).expect("new file"), "x");
}

#[test]
fn delete_removes_the_file_and_tolerates_absence() {
    let dir = TempDir::new();
    let path = dir.join("f");
    let inputs = json!({"path": path, "content": "x"});
    let out = Value::Object(create("file", inputs.clone()).expect("create succeeds"));
    delete("file", inputs.clone(), out.clone()).expect("delete succeeds");
    assert!(!Path::new(&path).exists());
    delete("file", inputs, out).expect("deleting a missing file succeeds");
}

#[test]
fn plan_updates_content_and_replaces_on_path_change() {
    let prior = json!({"path": "/srv/a", "content": "one"});
    let outputs = json!({"path": "/srv/a", "sha256": sha("one")});
    let p = plan("file", prior.clone(), None).expect("plan succeeds");
    assert_eq!(p.action, PlanAction::Create);

    let p = plan(
        "file",
        json!({"path": "/srv/a", "content": "one", "mode": "0644"}),
        Some((prior.clone(), outputs.clone())),
    )
    .expect("plan succeeds");
    assert_eq!(p.action, PlanAction::Noop, "{p:?}");

    let p = plan(
        "file",
        json!({"path": "/srv/a", "content": "two", "mode": "0600"}),
        Some((prior.clone(), outputs.clone())),
    )
    .expect("plan succeeds");
    assert_eq!(p.action, PlanAction::Update);
    let paths: Vec<&str> = p.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["content", "mode"]);
    assert!(p.changes.iter().all(|c| !c.forces_replace));
    // Content is not sensitive: the plan shows the diff (ferry redacts flowing secrets).
    assert_ne!(p.changes[0].after, Some(json!("(sensitive)")));
    assert_eq!(p.changes[1].after, Some(json!("0600")));

    let p = plan("file", json!({"path": "/srv/b", "content": "one"}), Some((prior, outputs)))
        .expect("plan succeeds");
    assert_eq!(p.action, PlanAction::Replace);
    assert_eq!(p.changes.len(), 1);
    assert_eq!(p.changes[0].path, "path");
    assert!(p.changes[0].forces_replace);
}

#[test]
fn invalid_inputs_are_rejected_naming_the_input() {
    let cases = [
        (
            json!({"path": "foo.txt", "content": "x"}),
            "input `path` must be an absolute path, got \"foo.txt\"",
        ),
        (json!({"path": "/tmp/", "content": "x"}), "input `path` must name a file"),
        (json!({"content": "x"}), "input `path` is required"),
        (json!({"path": "/tmp/f"}), "input `content` is required"),
        (json!({"path": "/tmp/f", "content": 5}), "input `content` must be a string, got number 5"),
        (
            json!({"path": "/tmp/f", "content": "x", "mode": "rw-r--r--"}),
            "input `mode` must be an octal permission string like \"0644\", got \"rw-r--r--\"",
        ),
        (
            json!({"path": "/tmp/f", "content": "x", "mode": 644}),
            "input `mode` must be a string, got number 644",
        ),
        (json!({"path": "/tmp/f", "content": "x", "owner": "root"}), "unknown input `owner`"),
    ];
    for (inputs, expected) in cases {
        for err in [
            create("file", inputs.clone()).expect_err("create rejects"),
            plan("file", inputs.clone(), None).expect_err("plan rejects"),
        ] {
            assert_eq!(err.code.as_deref(), Some("invalidInput"), "{inputs}");
            assert!(err.message.starts_with(expected), "{inputs}: {}", err.message);
        }
    }
    assert!(!Path::new("foo.txt").exists());
}
