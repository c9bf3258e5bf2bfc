//! Providers as separate programs: protocol conformance (`ferry provider check`) of the
//! built-in provider, the example external provider and a broken one; and the external
//! provider used in a real deployment.

use ferry_testkit::{counter_provider, fake_provider, Sandbox};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

#[test]
fn builtin_local_provider_passes_conformance() {
    let sb = Sandbox::new(FERRY);
    let sample = format!(r#"file={{"path":"{}","content":"sample"}}"#, sb.p("sample.txt"));
    let r = sb.ferry(&["provider", "check", "--sample", &sample, FERRY, "__provider", "local"]).ok();
    assert!(r.stdout.contains("all ") && r.stdout.contains("checks passed"), "{}", r.stdout);
    assert!(!r.stdout.contains("FAIL"), "{}", r.stdout);
    assert!(!sb.exists("sample.txt"), "the sample round trip deletes what it created");
    let json = sb.ferry(&["provider", "check", "--json", FERRY, "__provider", "local"]).ok();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["passed"], true, "{v}");
}

#[test]
fn counter_example_provider_passes_conformance() {
    let sb = Sandbox::new(FERRY);
    let counter = counter_provider(FERRY);
    let sample = format!(r#"value={{"file":"{}","start":3}}"#, sb.p("n"));
    let r = sb.ferry(&["provider", "check", counter.to_str().unwrap(), "--sample", &sample]).ok();
    assert!(r.stdout.contains("checks passed"), "{}", r.stdout);
    assert!(!r.stdout.contains("FAIL"), "{}", r.stdout);
}

#[test]
fn garbage_printing_provider_fails_conformance() {
    let sb = Sandbox::new(FERRY);
    let exe = sb.executable(
        "garbage.sh",
        &fake_provider("bad", &["create"], "while read -r x; do echo 'not json'; done"),
    );
    let r = sb.ferry(&["provider", "check", &exe]).expect(1);
    assert!(r.stdout.contains("FAIL"), "{}", r.stdout);
    assert!(r.stdout.contains("not a protocol message"), "{}", r.stdout);
    assert!(r.stdout.contains("checks failed"), "{}", r.stdout);

    // One that does not even answer the handshake.
    let mute = sb.executable("mute.sh", "#!/bin/sh\nexit 0\n");
    let r = sb.ferry(&["provider", "check", &mute]).expect(1);
    assert!(r.stdout.contains("FAIL"), "{}", r.stdout);

    // A program that does not exist.
    let r = sb.ferry(&["provider", "check", &sb.p("nope")]).no_panic();
    assert_ne!(r.code, 0, "{}", r.all());
}

#[test]
fn external_provider_in_a_deployment() {
    let sb = Sandbox::new(FERRY);
    let counter = counter_provider(FERRY);
    let deploy = |start: i64| {
        sb.deployment(
            &r#"{ resources, ... }: {
  resources.hits = {
    type = "counter.value";
    provider = { executable = "@EXE@"; args = [ ]; };
    inputs = { file = "@DIR@/hits"; start = @START@; step = 5; };
  };
  resources.motd = {
    type = "local.file";
    inputs = { path = "@DIR@/motd"; content = "hits: ${toString resources.hits.value}"; };
  };
}"#
            .replace("@EXE@", counter.to_str().unwrap())
            .replace("@START@", &start.to_string()),
        )
    };
    deploy(10);
    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.stdout.contains("(known after apply: hits.value)"), "{}", plan.stdout);
    sb.ferry(&["apply", "--yes"]).ok().says("Apply complete: 2 created");
    assert_eq!(sb.read("hits").map(|s| s.trim().to_string()).as_deref(), Some("10"));
    assert_eq!(sb.read("motd").as_deref(), Some("hits: 10"));

    let providers = sb.ferry(&["providers", "--json"]).ok();
    assert!(providers.stdout.contains("\"counter\""), "{}", providers.stdout);

    // Drift seen through the provider's read.
    std::fs::write(sb.path().join("hits"), "99\n").unwrap();
    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.stdout.contains("drift"), "{}", plan.stdout);

    // An update flows on to the file.
    deploy(20);
    sb.ferry(&["apply", "--yes"]).ok();
    assert_eq!(sb.read("hits").map(|s| s.trim().to_string()).as_deref(), Some("20"));
    assert_eq!(sb.read("motd").as_deref(), Some("hits: 20"));
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");

    sb.ferry(&["destroy", "--yes"]).ok().says("Destroy complete: 2 destroyed");
    assert!(!sb.exists("hits") && !sb.exists("motd"));
}
