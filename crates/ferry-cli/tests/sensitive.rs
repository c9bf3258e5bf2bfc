//! Sensitive values are never printed: a private key that flows from `local.ssh-keypair` into a
//! `local.file` appears in no output, and the state is private to its owner.

use ferry_testkit::Sandbox;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

fn keypair(sb: &Sandbox, comment: &str) {
    sb.deployment(
        &r#"{ resources, ... }: {
  resources.key = { type = "local.ssh-keypair"; inputs = { type = "ed25519"; comment = "@COMMENT@"; }; };
  resources.private = { type = "local.file"; inputs = { path = "@DIR@/id_ed25519"; content = resources.key.privateKey; mode = "0600"; }; };
  resources.public = { type = "local.file"; inputs = { path = "@DIR@/id_ed25519.pub"; content = resources.key.publicKey; }; };
}"#
        .replace("@COMMENT@", comment),
    );
}

/// Panics if `text` holds the private key or any long line of it.
fn assert_hidden(what: &str, text: &str, key: &str) {
    assert!(!text.contains(key.trim()), "{what} prints the private key:\n{text}");
    for line in key.lines().filter(|l| l.len() >= 20 && !l.contains("OPENSSH PRIVATE KEY")) {
        assert!(!text.contains(line), "{what} prints part of the private key ({line}):\n{text}");
    }
}

#[test]
fn private_key_is_never_printed_and_state_is_private() {
    let sb = Sandbox::new(FERRY);
    keypair(&sb, "first");
    let plan1 = sb.ferry(&["plan", "-v"]).ok();
    let apply = sb.ferry(&["apply", "--yes", "-v"]).ok();
    let key = sb.read("id_ed25519").expect("private key file");
    assert!(key.contains("BEGIN OPENSSH PRIVATE KEY"), "{key}");
    let public = sb.read("id_ed25519.pub").expect("public key file");
    assert!(public.starts_with("ssh-ed25519 ") && public.contains("first"), "{public}");
    assert_eq!(sb.mode("id_ed25519"), 0o600);

    // Outputs of every kind: plans, apply (verbose, JSON logs), state views, refresh.
    let mut seen = vec![("plan -v", plan1.all()), ("apply -v", apply.all())];
    assert!(apply.stdout.contains("Apply complete: 3 created"), "{}", apply.stdout);

    // Change the comment: the key is replaced, the private file updated — with the old and
    // new key both in play.
    keypair(&sb, "second");
    seen.push(("plan (replacing)", sb.ferry(&["plan", "-v"]).ok().all()));
    seen.push(("plan --json (replacing)", sb.ferry(&["plan", "--json"]).ok().all()));
    let json_apply = sb.ferry(&["apply", "--yes", "-vv", "--log-format", "json"]).ok();
    assert!(json_apply.stderr.lines().any(|l| l.trim_start().starts_with('{')), "{}", json_apply.stderr);
    seen.push(("apply --log-format json", json_apply.all()));
    let key2 = sb.read("id_ed25519").expect("private key file");
    assert_ne!(key, key2, "the key was replaced");

    for args in [
        &["plan", "-v"][..],
        &["plan", "--json"],
        &["apply", "--yes", "-v"],
        &["state", "show", "key"],
        &["state", "show", "key", "--json"],
        &["state", "show", "private", "--json"],
        &["state", "list", "--json"],
        &["state", "list"],
        &["state", "log"],
        &["state", "log", "--json"],
        &["state", "log", "key", "--json"],
        &["refresh", "--json"],
        &["graph", "--json"],
    ] {
        let r = sb.ferry(args).ok();
        seen.push((args.join(" ").leak(), r.all()));
    }
    for (what, text) in &seen {
        assert_hidden(what, text, &key);
        assert_hidden(what, text, &key2);
    }
    let show = sb.ferry(&["state", "show", "key"]).ok();
    assert!(show.stdout.contains("(sensitive)"), "{}", show.stdout);
    assert!(show.stdout.contains("ssh-ed25519"), "public key is shown: {}", show.stdout);

    // The export is the one place with secrets (documented); it is a file of mode 0600.
    sb.ferry(&["state", "export", "-o", "export.json"]).ok();
    assert_eq!(sb.mode("export.json"), 0o600);

    assert_eq!(sb.mode(".ferry"), 0o700);
    assert_eq!(sb.mode(".ferry/state.db"), 0o600);
    for extra in [".ferry/state.db-wal", ".ferry/state.db-shm", ".ferry/state.db.lock"] {
        if sb.exists(extra) {
            assert_eq!(sb.mode(extra), 0o600, "{extra}");
        }
    }
}

#[test]
fn failure_messages_do_not_leak_secrets() {
    let sb = Sandbox::new(FERRY);
    // The private key is passed to a command that fails and echoes its input on stderr.
    sb.deployment(
        r#"{ resources, ... }: {
  resources.key = { type = "local.ssh-keypair"; inputs = { type = "ed25519"; }; };
  resources.leak = { type = "local.exec"; inputs = {
    create = [ "sh" "-c" "echo \"$1\" >&2; echo \"$1\"; exit 1" "leak" resources.key.privateKey ];
  }; };
}"#,
    );
    let r = sb.ferry(&["apply", "--yes", "-v"]).expect(1);
    assert!(r.stderr.contains("✗ leak"), "{}", r.stderr);
    let export = sb.ferry(&["state", "export"]).ok();
    let v: serde_json::Value = serde_json::from_str(&export.stdout).unwrap();
    let key = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "key")
        .and_then(|r| r["outputs"]["privateKey"].as_str())
        .expect("private key in export")
        .to_string();
    assert_hidden("failed apply", &r.all(), &key);
    assert_hidden("state log", &sb.ferry(&["state", "log", "--json"]).ok().all(), &key);
    assert_hidden("state show", &sb.ferry(&["state", "show", "leak", "--json"]).ok().all(), &key);
}
