use super::*;
use std::fs;

fn sh(script: &str) -> Value {
    json!(["sh", "-c", script])
}

#[test]
fn create_outputs_come_from_stdout_json() {
    let inputs = json!({
        "create": sh(r#"read line; printf '{"resource":"%s","greeting":"%s","fromEnv":"%s","outputsSet":"%s"}' \
                        "$FERRY_RESOURCE" "$line" "$GREETING" "${FERRY_OUTPUTS+yes}""#),
        "env": {"GREETING": "hi"},
        "stdin": "piped\n",
        "outputNames": ["resource", "greeting"],
    });
    let out = create("exec", inputs).expect("create succeeds");
    assert_eq!(
        Value::Object(out),
        json!({"resource": "r", "greeting": "piped", "fromEnv": "hi", "outputsSet": ""})
    );
}

#[test]
fn inputs_are_passed_as_json() {
    let inputs = json!({"create": sh(r#"printf '{"inputs":%s}' "$FERRY_INPUTS""#), "cwd": "/"});
    let out = create("exec", inputs.clone()).expect("create succeeds");
    assert_eq!(out.get("inputs"), Some(&inputs));
}

#[test]
fn cwd_is_applied() {
    let dir = TempDir::new();
    let inputs = json!({"create": sh(r#"printf '{"pwd":"%s"}' "$(pwd -P)""#), "cwd": dir.join("")});
    let out = create("exec", inputs).expect("create succeeds");
    let expected = fs::canonicalize(dir.path()).expect("canonical").display().to_string();
    assert_eq!(out.get("pwd"), Some(&json!(expected)));
}

#[test]
fn empty_stdout_means_no_outputs() {
    assert_eq!(create("exec", json!({"create": sh("true")})).expect("create succeeds"), Object::new());
    assert_eq!(
        create("exec", json!({"create": sh("echo; echo '  '")})).expect("create succeeds"),
        Object::new()
    );
}

#[test]
fn stderr_lines_become_log_events() {
    let (outcome, events) = roundtrip(Call::Create(CreateParams {
        kind: "exec".into(),
        resource: "r".into(),
        inputs: obj(json!({"create": sh("echo working >&2; echo '{}'")})),
        context: Default::default(),
    }));
    assert!(matches!(outcome, Outcome::Result(_)), "{outcome:?}");
    assert!(events.iter().any(|e| e.event == EventKind::Log && e.message == "create: working"), "{events:?}");
}

#[test]
fn nonzero_exit_reports_code_and_stderr_tail() {
    let script = "for i in $(seq 1 30); do echo line$i >&2; done; exit 7";
    let err = create("exec", json!({"create": sh(script)})).expect_err("create fails");
    assert!(err.message.contains("the create command `sh` failed with exit code 7"), "{}", err.message);
    assert!(err.message.contains("line30"), "{}", err.message);
    assert!(err.message.contains("line11"), "{}", err.message);
    assert!(!err.message.contains("line10\n"), "only the last 20 lines: {}", err.message);
}

#[test]
fn garbage_stdout_is_an_error_quoting_it() {
    let err = create("exec", json!({"create": sh("echo not json")})).expect_err("create fails");
    assert!(err.message.contains("invalid JSON"), "{}", err.message);
    assert!(err.message.contains("stdout was: not json"), "{}", err.message);

    let err = create("exec", json!({"create": sh("echo '[1, 2]'")})).expect_err("create fails");
    assert!(err.message.contains("not an object"), "{}", err.message);
    assert!(err.message.contains("[1, 2]"), "{}", err.message);

    let long = "x".repeat(1000);
    let err = create("exec", json!({"create": sh(&format!("echo {long}"))})).expect_err("create fails");
    assert!(err.message.contains(&format!("{}…", "x".repeat(200))), "{}", err.message);
    assert!(!err.message.contains(&"x".repeat(201)), "quote is cut at 200 chars");
}

#[test]
fn missing_declared_output_is_named() {
    let inputs = json!({"create": sh(r#"echo '{"a": 1}'"#), "outputNames": ["a", "b"]});
    let err = create("exec", inputs).expect_err("create fails");
    assert!(err.message.contains("output `b` declared in `outputNames`"), "{}", err.message);
    assert!(err.message.contains("(printed: a)"), "{}", err.message);
}

#[test]
fn missing_program_is_an_error_naming_it() {
    let err = create("exec", json!({"create": ["/nonexistent/ferry-test-prog"]})).expect_err("fails");
    assert!(
        err.message.contains("cannot run the create command `/nonexistent/ferry-test-prog`"),
        "{}",
        err.message
    );
}

#[test]
fn update_and_delete_receive_recorded_outputs() {
    let dir = TempDir::new();
    let log = dir.join("log");
    let old = json!({
        "create": sh(r#"echo '{"id": "abc", "size": 1}'"#),
        "update": sh(&format!(r#"printf 'update %s\n' "$FERRY_OUTPUTS" >> {log}; echo '{{"size": 2}}'"#)),
        "delete": sh(&format!(r#"printf 'delete %s %s\n' "$FERRY_RESOURCE" "$FERRY_OUTPUTS" >> {log}"#)),
    });
    let out = create("exec", old.clone()).expect("create succeeds");
    assert_eq!(Value::Object(out.clone()), json!({"id": "abc", "size": 1}));

    let mut new = old.clone();
    new["create"] = sh(r#"echo '{"id": "abc", "size": 2}'"#);
    let p = plan("exec", new.clone(), Some((old.clone(), Value::Object(out.clone())))).expect("plan");
    assert_eq!(p.action, PlanAction::Update);

    let out2 = update("exec", new.clone(), (old, Value::Object(out))).expect("update succeeds");
    // Printed outputs are merged over the recorded ones.
    assert_eq!(Value::Object(out2.clone()), json!({"id": "abc", "size": 2}));

    delete("exec", new, Value::Object(out2)).expect("delete succeeds");
    let logged = fs::read_to_string(&log).expect("commands wrote the log");
    let lines: Vec<&str> = logged.lines().collect();
    assert_eq!(lines, [r#"update {"id":"abc","size":1}"#, r#"delete r {"id":"abc","size":2}"#]);
}

#[test]
fn failing_delete_is_an_error() {
    let inputs = json!({"create": sh("true"), "delete": sh("echo busy >&2; exit 1")});
    let err = delete("exec", inputs, json!({})).expect_err("delete fails");
    assert!(err.message.contains("the delete command `sh` failed with exit code 1"), "{}", err.message);
    assert!(err.message.contains("busy"), "{}", err.message);
    delete("exec", json!({"create": sh("true")}), json!({})).expect("no delete command: nothing to do");
}

#[test]
fn plan_replaces_without_update_command() {
    let old = json!({"create": sh("echo '{}'"), "env": {"A": "1"}});
    let out = json!({});
    assert_eq!(plan("exec", old.clone(), None).expect("plan").action, PlanAction::Create);
    assert_eq!(
        plan("exec", old.clone(), Some((old.clone(), out.clone()))).expect("plan").action,
        PlanAction::Noop
    );

    let new = json!({"create": sh("echo '{}'"), "env": {"A": "2"}});
    let p = plan("exec", new, Some((old.clone(), out.clone()))).expect("plan");
    assert_eq!(p.action, PlanAction::Replace);
    assert_eq!(p.changes.len(), 1);
    assert!(p.changes[0].forces_replace);
    // env is sensitive.
    assert_eq!(p.changes[0].after, Some(json!("(sensitive)")));

    // Changing only the commands that manage the resource needs no replacement.
    let new = json!({"create": sh("echo '{}'"), "env": {"A": "1"}, "delete": sh("true")});
    let p = plan("exec", new.clone(), Some((old.clone(), out.clone()))).expect("plan");
    assert_eq!(p.action, PlanAction::Update);
    let kept = update("exec", new, (old, json!({"id": 1}))).expect("update runs nothing");
    assert_eq!(Value::Object(kept), json!({"id": 1}));
}

#[test]
fn update_without_update_command_refuses_redefinition() {
    let old = json!({"create": sh("echo '{}'")});
    let new = json!({"create": sh("echo '{\"x\": 1}'")});
    let err = update("exec", new, (old, json!({}))).expect_err("update refuses");
    assert_eq!(err.code.as_deref(), Some("unsupported"));
}

#[test]
fn read_without_read_command_trusts_the_record() {
    let inputs = json!({"create": sh("exit 1")});
    let r = read("exec", inputs.clone(), Some(json!({"id": 1}))).expect("read succeeds");
    assert!(r.exists);
    assert_eq!(r.outputs.map(Value::Object), Some(json!({"id": 1})));
    // At-least-once: with no record, report absence so create runs again.
    let r = read("exec", inputs, None).expect("read succeeds");
    assert!(!r.exists);
}

#[test]
fn read_command_reports_outputs_or_absence() {
    let dir = TempDir::new();
    let marker = dir.join("exists");
    let script =
        format!(r#"test -e {marker} || exit 3; printf '{{"seen":%s,"size":5}}' "${{FERRY_OUTPUTS:-null}}""#);
    let inputs = json!({"create": sh("true"), "read": sh(&script), "outputNames": ["size"]});
    let r = read("exec", inputs.clone(), Some(json!({"id": 1}))).expect("read succeeds");
    assert!(!r.exists, "exit code 3 means gone");

    fs::write(&marker, "").expect("create marker");
    let r = read("exec", inputs.clone(), Some(json!({"id": 1}))).expect("read succeeds");
    assert!(r.exists);
    assert_eq!(r.outputs.map(Value::Object), Some(json!({"id": 1, "seen": {"id": 1}, "size": 5})));

    // Adoption: no recorded outputs, FERRY_OUTPUTS is unset.
    let r = read("exec", inputs, None).expect("read succeeds");
    assert!(r.exists);
    assert_eq!(r.outputs.map(Value::Object), Some(json!({"seen": null, "size": 5})));

    let failing = json!({"create": sh("true"), "read": sh("exit 4")});
    let err = read("exec", failing, Some(json!({}))).expect_err("read fails");
    assert!(err.message.contains("exit code 4"), "{}", err.message);
}

#[test]
fn invalid_exec_inputs_are_rejected() {
    let cases = [
        (json!({}), "input `create` is required"),
        (json!({"create": []}), "input `create` must be a non-empty list of strings"),
        (json!({"create": "echo hi"}), "input `create` must be a list of strings, got \"echo hi\""),
        (json!({"create": ["echo", 1]}), "input `create[1]` must be a string, got number 1"),
        (json!({"create": ["true"], "env": {"A": 1}}), "input `env.A` must be a string, got a number"),
        (json!({"create": ["true"], "stdin": 5}), "input `stdin` must be a string, got a number"),
        (json!({"create": ["true"], "shell": true}), "unknown input `shell`"),
    ];
    for (inputs, expected) in cases {
        let err = plan("exec", inputs.clone(), None).expect_err("plan rejects");
        assert_eq!(err.code.as_deref(), Some("invalidInput"), "{inputs}");
        assert!(err.message.starts_with(expected), "{inputs}: {}", err.message);
    }
}
