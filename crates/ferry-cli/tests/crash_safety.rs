//! Crash safety: `ferry apply` SIGKILLed at arbitrary points never corrupts the state, and the
//! next run converges. Resources whose kind can `read` are adopted, never created twice;
//! `local.exec` without a `read` command is at-least-once (documented in its module docs).

use ferry_testkit::{kill9, sqlite_integrity, wait_until, Sandbox};
use std::time::Duration;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// Ten `local.exec` with `read` (`e0`..`e9`, each appending one line to `log/eN` on create),
/// five without (`n0`..`n4`), and a file fed by each one's output: 30 resources.
/// `generation` is part of every file's content and of the `n*` commands (replaced in each
/// generation), so every run has slow work to be cut short in.
fn thirty(sb: &Sandbox, generation: usize) {
    let mut body = String::new();
    for i in 0..10 {
        body.push_str(&format!(
            r#"  resources.e{i} = {{ type = "local.exec"; inputs = {{
    create = [ "sh" "-c" "mkdir -p @DIR@/log; echo created >> @DIR@/log/e{i}; sleep 0.2; echo '{{\"v\": \"e{i}-out\"}}'" ];
    read = [ "sh" "-c" "test -s @DIR@/log/e{i} && echo '{{\"v\": \"e{i}-out\"}}' || exit 3" ];
    outputNames = [ "v" ];
  }}; }};
  resources.fe{i} = {{ type = "local.file"; inputs = {{ path = "@DIR@/out/fe{i}"; content = "from ${{resources.e{i}.v}} gen {generation}"; }}; }};
"#
        ));
    }
    for i in 0..5 {
        body.push_str(&format!(
            r#"  resources.n{i} = {{ type = "local.exec"; inputs = {{
    create = [ "sh" "-c" "mkdir -p @DIR@/log; echo created >> @DIR@/log/n{i}; sleep 0.3; echo '{{\"v\": \"n{i}-gen{generation}\"}}'" ];
    outputNames = [ "v" ];
  }}; }};
  resources.f{i} = {{ type = "local.file"; inputs = {{ path = "@DIR@/out/f{i}"; content = "plain ${{resources.n{i}.v}}"; mode = "0600"; }}; }};
"#
        ));
    }
    sb.deployment(&format!("{{ resources, ... }}: {{\n{body}}}\n"));
}

#[test]
fn sigkill_at_varied_points_never_corrupts_state_and_apply_converges() {
    let sb = Sandbox::new(FERRY);
    let delays_ms = [50, 900, 120, 300, 700, 200, 450, 75, 650, 350, 800, 250];
    let mut killed_mid_run = 0;
    for (i, ms) in delays_ms.iter().enumerate() {
        // Every run has work: the first ones create, all of them update every file.
        thirty(&sb, i);
        let mut child = sb.spawn(&["apply", "--yes", "-j", "3"]);
        std::thread::sleep(Duration::from_millis(*ms));
        if child.try_wait().expect("try_wait").is_none() {
            killed_mid_run += 1;
        }
        kill9(&mut child);
        // Let orphaned provider commands of the killed run finish their first step.
        std::thread::sleep(Duration::from_millis(100));
        if sb.state_path().exists() {
            assert_eq!(sqlite_integrity(&sb.state_path()), "ok", "after kill {i} ({ms} ms)");
        }
        // State stays readable by ferry itself.
        if sb.state_path().exists() {
            sb.ferry(&["state", "list", "--json"]).ok();
        }
    }
    assert!(killed_mid_run >= 8, "only {killed_mid_run} kills landed while apply ran");

    let last = delays_ms.len() - 1;
    let r = sb.ferry(&["apply", "--yes"]).ok();
    assert!(r.stdout.contains("Apply complete"), "{}", r.stdout);
    for i in 0..10 {
        assert_eq!(sb.read(&format!("out/fe{i}")), Some(format!("from e{i}-out gen {last}")), "fe{i}");
        // Readable resources are adopted after an interrupted create, never created twice.
        assert_eq!(
            sb.lines(&format!("log/e{i}")),
            1,
            "e{i} was created {} times",
            sb.lines(&format!("log/e{i}"))
        );
    }
    for i in 0..5 {
        assert_eq!(sb.read(&format!("out/f{i}")), Some(format!("plain n{i}-gen{last}")), "f{i}");
        assert_eq!(sb.mode(&format!("out/f{i}")), 0o600);
        // Without `read`: at least once.
        assert!(sb.lines(&format!("log/n{i}")) >= 1, "n{i} never created");
    }
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");
    assert_eq!(sqlite_integrity(&sb.state_path()), "ok");
    let list = sb.ferry(&["state", "list", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 30);
    assert!(rows.iter().all(|r| r["status"] == "ready"), "{}", list.stdout);
}

/// One `local.exec` whose create logs a line, signals that it started, then sleeps.
fn slow_create(sb: &Sandbox, with_read: bool) {
    let read = if with_read {
        r#"read = [ "sh" "-c" "if test -e @DIR@/LOG; then echo '{\"made\": \"yes\"}'; else exit 3; fi" ];"#
    } else {
        ""
    };
    sb.deployment(
        &r#"{ resources, ... }: {
  resources.slow = { type = "local.exec"; inputs = {
    create = [ "sh" "-c" "echo created >> @DIR@/LOG; touch @DIR@/STARTED; sleep 5; echo '{\"made\": \"yes\"}'" ];
    outputNames = [ "made" ];
    @READ@
  }; };
  resources.after = { type = "local.file"; inputs = { path = "@DIR@/after.txt"; content = "made: ${resources.slow.made}"; }; };
}"#
        .replace("@READ@", read),
    );
}

fn kill_during_create(sb: &Sandbox) {
    let mut child = sb.spawn(&["apply", "--yes"]);
    wait_until(Duration::from_secs(60), "the create to start", || sb.exists("STARTED"));
    kill9(&mut child);
    assert_eq!(sqlite_integrity(&sb.state_path()), "ok");
    assert_eq!(sb.lines("LOG"), 1);
    assert!(!sb.exists("after.txt"));
}

#[test]
fn interrupted_create_is_adopted_through_read() {
    let sb = Sandbox::new(FERRY);
    slow_create(&sb, true);
    kill_during_create(&sb);

    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.stdout.contains("  <= slow (local.exec)"), "{}", plan.stdout);
    assert!(plan.stdout.contains("adopting it"), "{}", plan.stdout);
    assert!(plan.stdout.contains("1 to adopt"), "{}", plan.stdout);
    let json = sb.ferry(&["plan", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["summary"]["adopt"], 1, "{v}");

    let r = sb.ferry(&["apply", "--yes"]).ok();
    assert!(r.stdout.contains("1 adopted"), "{}", r.stdout);
    assert!(r.stdout.contains("1 created"), "after is created: {}", r.stdout);
    assert_eq!(sb.lines("LOG"), 1, "the create ran again instead of adopting");
    assert_eq!(sb.read("after.txt").as_deref(), Some("made: yes"));
    let show = sb.ferry(&["state", "show", "slow", "--json"]).ok();
    assert!(
        show.stdout.contains("\"made\": \"yes\"") || show.stdout.contains("\"made\":\"yes\""),
        "{}",
        show.stdout
    );
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");
}

#[test]
fn interrupted_create_without_read_is_at_least_once() {
    let sb = Sandbox::new(FERRY);
    slow_create(&sb, false);
    kill_during_create(&sb);

    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.stdout.contains("  + slow (local.exec)"), "{}", plan.stdout);
    // Do not wait for the 5 s sleep: let the second create finish quickly.
    sb.deployment(
        &std::fs::read_to_string(sb.path().join("deployment.nix")).unwrap().replace("sleep 5", "true"),
    );
    let r = sb.ferry(&["apply", "--yes"]).ok();
    assert!(r.stdout.contains("2 created"), "{}", r.stdout);
    assert_eq!(sb.lines("LOG"), 2, "without read, an interrupted create runs again");
    assert_eq!(sb.read("after.txt").as_deref(), Some("made: yes"));
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");
}
