use super::*;

fn value_of(out: &Object) -> &Value {
    out.get("value").expect("value output")
}

#[test]
fn string_has_requested_length_and_alphabet() {
    let a = create("random", json!({})).expect("create succeeds");
    let s = value_of(&a).as_str().expect("a string");
    assert_eq!(s.len(), 16);
    assert!(s.chars().all(|c| c.is_ascii_alphanumeric()), "{s}");
    let b = create("random", json!({})).expect("create succeeds");
    assert_ne!(value_of(&a), value_of(&b), "two creates pick different values");

    let long = create("random", json!({"length": 40})).expect("create succeeds");
    assert_eq!(value_of(&long).as_str().map(str::len), Some(40));
}

#[test]
fn port_is_a_free_local_port_number() {
    let out = create("random", json!({"port": true})).expect("create succeeds");
    let port = value_of(&out).as_u64().expect("a number");
    let port = u16::try_from(port).expect("fits a u16");
    assert!(port > 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port was released and is bindable");
}

#[test]
fn value_is_stable_until_inputs_change() {
    let prior = json!({"keepers": {"host": "a"}});
    let out = Value::Object(create("random", prior.clone()).expect("create succeeds"));

    let p = plan("random", prior.clone(), Some((prior.clone(), out.clone()))).expect("plan");
    assert_eq!(p.action, PlanAction::Noop);
    let p = plan(
        "random",
        json!({"keepers": {"host": "a"}, "length": 16, "port": false}),
        Some((prior.clone(), out.clone())),
    )
    .expect("plan");
    assert_eq!(p.action, PlanAction::Noop, "spelling out defaults changes nothing");

    let p =
        plan("random", json!({"keepers": {"host": "b"}}), Some((prior.clone(), out.clone()))).expect("plan");
    assert_eq!(p.action, PlanAction::Replace);
    assert_eq!(p.changes.len(), 1);
    assert_eq!(p.changes[0].path, "keepers");
    assert!(p.changes[0].forces_replace);

    let p =
        plan("random", json!({"keepers": {"host": "a"}, "length": 8}), Some((prior.clone(), out.clone())))
            .expect("plan");
    assert_eq!(p.action, PlanAction::Replace);

    let r = read("random", prior.clone(), Some(out.clone())).expect("read succeeds");
    assert!(r.exists);
    assert_eq!(r.outputs.map(Value::Object), Some(out));
    assert!(!read("random", prior, None).expect("read succeeds").exists);
}

#[test]
fn invalid_random_inputs_are_rejected() {
    for (inputs, expected) in [
        (json!({"length": 0}), "input `length` must be an integer from 1 to 4096, got number 0"),
        (json!({"length": "8"}), "input `length` must be an integer from 1 to 4096, got \"8\""),
        (json!({"port": "yes"}), "input `port` must be a boolean"),
        (json!({"keepers": [1]}), "input `keepers` must be an attribute set, got a list"),
        (json!({"charset": "abc"}), "unknown input `charset`"),
    ] {
        let err = plan("random", inputs.clone(), None).expect_err("plan rejects");
        assert_eq!(err.code.as_deref(), Some("invalidInput"));
        assert!(err.message.starts_with(expected), "{inputs}: {}", err.message);
    }
}
