//! One run at a time: a second changing run fails fast naming the lock holder, or waits with
//! `--lock-timeout`; read-only commands need no lock.

use ferry_testkit::{sqlite_integrity, wait_until, Sandbox};
use std::time::{Duration, Instant};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// A create that signals it started, then takes `secs` seconds; a file waits on its output.
fn slow(sb: &Sandbox, secs: u32) {
    sb.deployment(
        &r#"{ resources, ... }: {
  resources.slow = { type = "local.exec"; inputs = {
    create = [ "sh" "-c" "touch @DIR@/STARTED; sleep @SECS@; echo '{\"v\": \"slow-done\"}'" ];
    outputNames = [ "v" ];
  }; };
  resources.after = { type = "local.file"; inputs = { path = "@DIR@/after.txt"; content = resources.slow.v; }; };
}"#
        .replace("@SECS@", &secs.to_string()),
    );
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname").trim().to_string()
}

#[test]
fn second_apply_fails_fast_naming_the_holder() {
    let sb = Sandbox::new(FERRY);
    slow(&sb, 3);
    let first = sb.spawn(&["apply", "--yes"]);
    wait_until(Duration::from_secs(60), "the first apply to be running", || sb.exists("STARTED"));

    let start = Instant::now();
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "no waiting without --lock-timeout: {:?}",
        start.elapsed()
    );
    let holder = format!("is locked by pid {} on host {}", first.id(), hostname());
    assert!(r.stderr.contains(&holder), "expected {holder:?} in:\n{}", r.stderr);
    assert!(r.stderr.contains("running `"), "{}", r.stderr);
    assert!(r.stderr.contains("--lock-timeout"), "{}", r.stderr);
    // destroy and refresh change state too: refused the same way.
    for verb in [&["destroy", "--yes"][..], &["refresh"]] {
        let r = sb.ferry(verb).expect(1);
        assert!(r.stderr.contains(&holder), "{verb:?}: {}", r.stderr);
    }
    // Reading needs no lock.
    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.stdout.contains("after (local.file)"), "{}", plan.stdout);

    let out = first.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "first apply: {stdout}\n{stderr}");
    assert!(stdout.contains("Apply complete: 2 created"), "{stdout}");
    assert!(!stderr.contains("panicked"));
    assert_eq!(sb.read("after.txt").as_deref(), Some("slow-done"));
    assert_eq!(sqlite_integrity(&sb.state_path()), "ok");
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");
    let log = sb.ferry(&["state", "log", "--json"]).ok();
    assert!(log.stdout.contains("slow-done") || log.stdout.contains("slow"), "{}", log.stdout);
}

#[test]
fn lock_timeout_waits_for_the_holder() {
    let sb = Sandbox::new(FERRY);
    slow(&sb, 2);
    let first = sb.spawn(&["apply", "--yes"]);
    wait_until(Duration::from_secs(60), "the first apply to be running", || sb.exists("STARTED"));

    let start = Instant::now();
    let r = sb.ferry(&["apply", "--yes", "--lock-timeout", "60"]).ok();
    assert!(start.elapsed() >= Duration::from_millis(500), "it did not wait: {:?}", start.elapsed());
    // It ran after the first one finished, so everything was already there.
    assert!(r.stdout.contains("No changes."), "{}", r.stdout);

    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sb.read("after.txt").as_deref(), Some("slow-done"));
    assert_eq!(sqlite_integrity(&sb.state_path()), "ok");
}

#[test]
fn lock_timeout_gives_up() {
    let sb = Sandbox::new(FERRY);
    slow(&sb, 4);
    let first = sb.spawn(&["apply", "--yes"]);
    wait_until(Duration::from_secs(60), "the first apply to be running", || sb.exists("STARTED"));
    let start = Instant::now();
    let r = sb.ferry(&["apply", "--yes", "--lock-timeout", "1"]).expect(1);
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(3), "{waited:?}");
    assert!(r.stderr.contains(&format!("pid {}", first.id())), "{}", r.stderr);
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(sb.read("after.txt").as_deref(), Some("slow-done"));
}
