use super::*;
use ssh_key::PrivateKey;

#[test]
fn generates_a_matching_ed25519_pair() {
    let (outcome, events) = roundtrip(Call::Create(CreateParams {
        kind: "ssh-keypair".into(),
        resource: "deploy-key".into(),
        inputs: obj(json!({"comment": "ferry@test"})),
        context: Default::default(),
    }));
    let Outcome::Result(result) = outcome else { panic!("create failed: {outcome:?}") };
    let public = result["outputs"]["publicKey"].as_str().expect("publicKey string");
    let private = result["outputs"]["privateKey"].as_str().expect("privateKey string");
    assert!(public.starts_with("ssh-ed25519 AAAA"), "{public}");
    assert!(public.ends_with(" ferry@test"), "{public}");
    assert!(private.contains("-----BEGIN OPENSSH PRIVATE KEY-----"));

    let parsed = PrivateKey::from_openssh(private).expect("private key parses");
    assert_eq!(parsed.public_key().to_openssh().expect("encodes"), public);
    assert!(events.iter().all(|e| !e.message.contains("PRIVATE")), "{events:?}");

    let again = create("ssh-keypair", json!({})).expect("create succeeds");
    assert_ne!(again.get("publicKey").and_then(Value::as_str), Some(public));
}

#[test]
fn only_ed25519_is_supported() {
    let err = create("ssh-keypair", json!({"type": "rsa"})).expect_err("rsa rejected");
    assert_eq!(err.code.as_deref(), Some("invalidInput"));
    assert_eq!(err.message, "input `type` must be one of: ed25519; got \"rsa\"");
    create("ssh-keypair", json!({"type": "ed25519"})).expect("explicit ed25519 works");
}

#[test]
fn any_input_change_replaces_the_key() {
    let prior = json!({"comment": "a"});
    let out = json!({"publicKey": "ssh-ed25519 AAAA a", "privateKey": "secret"});
    let p =
        plan("ssh-keypair", json!({"comment": "a", "type": "ed25519"}), Some((prior.clone(), out.clone())))
            .expect("plan");
    assert_eq!(p.action, PlanAction::Noop);
    let p = plan("ssh-keypair", json!({"comment": "b"}), Some((prior.clone(), out.clone()))).expect("plan");
    assert_eq!(p.action, PlanAction::Replace);
    assert!(p.changes.iter().all(|c| c.forces_replace));

    let r = read("ssh-keypair", prior.clone(), Some(out.clone())).expect("read");
    assert!(r.exists);
    assert_eq!(r.outputs.map(Value::Object), Some(out));
    assert!(!read("ssh-keypair", prior, None).expect("read").exists);
}
