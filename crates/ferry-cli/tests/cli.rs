//! End-to-end tests of the `ferry` binary that need no Nix: flag handling, exit statuses, the
//! built-in provider entry point, completions and the state commands.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn ferry() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.env_remove("FERRY_LOG").env("NO_COLOR", "1");
    c
}

fn run(args: &[&str], dir: &Path) -> Output {
    ferry().args(args).current_dir(dir).stdin(Stdio::null()).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh directory under the target dir (no tempfile dependency needed).
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn usage_errors_exit_2() {
    let dir = scratch("usage");
    assert_eq!(run(&[], &dir).status.code(), Some(2));
    assert_eq!(run(&["frobnicate"], &dir).status.code(), Some(2));
    let out = run(&["plan", "--on", "a,,b"], &dir);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.starts_with("error: --on \"a,,b\": empty item"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn completions() {
    let dir = scratch("completions");
    let out = run(&["completions", "bash"], &dir);
    assert!(out.status.success());
    let script = text(&out.stdout);
    assert!(script.contains("ferry") && script.contains("destroy"), "{script}");
}

#[test]
fn builtin_provider_answers_the_handshake() {
    let mut child = ferry()
        .args(["__provider", "local"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(
        stdin,
        r#"{{"id":1,"method":"handshake","params":{{"protocolVersions":[1],"ferryVersion":"0"}}}}"#
    )
    .unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["id"], 1, "{v}");
    let result = &v["result"];
    assert_eq!(result["provider"], "local", "{v}");
    let kinds: Vec<&str> =
        result["kinds"].as_array().unwrap().iter().filter_map(|k| k["name"].as_str()).collect();
    assert!(kinds.contains(&"file"), "{kinds:?}");
    assert!(status.success(), "provider exits 0 when stdin closes");
}

#[test]
fn state_commands_on_missing_state() {
    let dir = scratch("nostate");
    for args in [&["state", "list"][..], &["state", "show", "x"], &["state", "log"], &["state", "export"]] {
        let out = run(args, &dir);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("error: no state at ") && err.contains("nothing has been applied yet"), "{err}");
    }
}

const SECRET: &str = "-----BEGIN OPENSSH PRIVATE KEY----- t0ps3cr3t";

fn seed(dir: &Path) {
    let doc = serde_json::json!({
        "version": 1,
        "resources": [
            {
                "name": "key", "kind": "local.ssh-keypair", "provider": {"builtin": "local"},
                "inputs": {"comment": "deploy"},
                "outputs": {"publicKey": "ssh-ed25519 AAAApub", "privateKey": SECRET},
                "status": "ready", "sensitive_outputs": ["privateKey"],
                "last_applied_at": "2024-01-01T00:00:00Z"
            },
            {
                "name": "copy", "kind": "local.file", "provider": {"builtin": "local"},
                "inputs": {"path": "/tmp/k", "content": SECRET, "mode": "0600"},
                "outputs": {"path": "/tmp/k"},
                "status": "ready", "dependencies": ["key"],
                "last_applied_at": "2024-01-01T00:00:00Z"
            }
        ]
    });
    std::fs::write(dir.join("export.json"), doc.to_string()).unwrap();
    let out = run(&["state", "import", "export.json"], dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("imported 2 resources into "), "{}", text(&out.stdout));
    assert!(dir.join(".ferry/state.db").exists());
}

#[test]
fn state_commands_never_show_secrets() {
    let dir = scratch("state");
    seed(&dir);

    let out = run(&["state", "list"], &dir);
    assert!(out.status.success());
    let list = text(&out.stdout);
    assert!(list.starts_with("NAME"), "{list}");
    assert!(list.contains("key") && list.contains("local.ssh-keypair") && list.contains("ready"), "{list}");

    for args in [
        &["state", "show", "key"][..],
        &["state", "show", "key", "--json"],
        &["state", "show", "copy"],
        &["state", "show", "copy", "--json"],
        &["state", "list", "--json"],
        &["state", "log"],
        &["state", "log", "--json"],
    ] {
        let out = run(args, &dir);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(!all.contains("t0ps3cr3t"), "{args:?} leaked: {all}");
    }
    let show = text(&run(&["state", "show", "key"], &dir).stdout);
    assert!(show.contains("privateKey = (sensitive)"), "{show}");
    assert!(show.contains("publicKey = \"ssh-ed25519 AAAApub\""), "{show}");
    let show = text(&run(&["state", "show", "copy"], &dir).stdout);
    assert!(show.contains("content = (sensitive)"), "{show}");
    assert!(show.contains("path = \"/tmp/k\""), "{show}");

    // The export is the backup format: full values, a warning, a private file.
    let out = run(&["state", "export", "-o", "backup.json"], &dir);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("warning: the export contains secrets"), "{}", text(&out.stderr));
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(dir.join("backup.json")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(dir.join("backup.json")).unwrap().contains("t0ps3cr3t"));

    // rm forgets; a second rm fails.
    let out = run(&["state", "rm", "copy"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "removed copy (local.file) from state; the real resource was not touched\n"
    );
    let out = run(&["state", "rm", "copy"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: resource `copy` is not in state "),
        "{}",
        text(&out.stderr)
    );
    let log = text(&run(&["state", "log", "copy"], &dir).stdout);
    assert!(log.contains("rm"), "{log}");

    // Restore from the backup through stdin.
    let mut child = ferry()
        .args(["state", "import", "-"])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&std::fs::read(dir.join("backup.json")).unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&run(&["state", "list"], &dir).stdout).contains("copy"));
}

#[test]
fn state_flag_and_file_flag_locate_the_database() {
    let dir = scratch("locate");
    std::fs::create_dir_all(dir.join("site")).unwrap();
    seed(&dir);
    // -f elsewhere: state is beside that file, so there is none.
    let out = run(&["state", "list", "-f", "site/deployment.nix"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("site/.ferry/state.db"), "{}", text(&out.stderr));
    // --state points back at it.
    let out = run(&["state", "list", "-f", "site/deployment.nix", "--state", ".ferry/state.db"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn missing_deployment_file_is_a_usage_error() {
    let dir = scratch("nofile");
    let out = run(&["plan", "-f", "nope.nix"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("error: no deployment file at "), "{}", text(&out.stderr));
}

fn have_nix() -> bool {
    Command::new("nix-instantiate").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Real Nix, the built-in provider started as `ferry __provider local`, real files.
#[test]
fn apply_plan_destroy_with_real_nix() {
    if !have_nix() {
        eprintln!("skipped: nix-instantiate not installed");
        return;
    }
    let dir = scratch("e2e");
    let target = dir.join("out.txt");
    std::fs::write(
        dir.join("deployment.nix"),
        format!(
            r#"{{ resources, ... }}: {{
  resources.key = {{ type = "local.ssh-keypair"; inputs.comment = "t"; }};
  resources.out = {{
    type = "local.file";
    inputs = {{ path = "{}"; content = resources.key.publicKey; mode = "0644"; }};
  }};
}}"#,
            target.display()
        ),
    )
    .unwrap();
    let nix = ["--nix-option", "substituters", ""];
    let with = |args: &[&str]| run(&[args, &nix[..]].concat(), &dir);

    // No --yes and no terminal: refuse, change nothing.
    let out = with(&["apply"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("error: refusing to apply without confirmation: stdin is not a terminal; pass --yes"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("  + out (local.file)\n"), "{}", text(&out.stdout));
    assert!(!target.exists());

    let out = with(&["apply", "--yes", "--timings"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Apply complete: 2 created\n"), "{stdout}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("[out] create: done ("), "{stderr}");
    assert!(stderr.contains("timings: "), "{stderr}");
    assert!(std::fs::read_to_string(&target).unwrap().starts_with("ssh-ed25519 "));

    let out = with(&["plan"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "No changes.\n");

    let out = with(&["plan", "--json", "--log-format", "json"]);
    assert!(out.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["summary"]["unchanged"], 2, "{plan}");
    for line in text(&out.stderr).lines() {
        let ev: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(ev["event"].is_string(), "{line}");
    }

    let out = with(&["graph"]);
    assert!(text(&out.stdout).starts_with("digraph ferry {"), "{}", text(&out.stdout));

    let out = with(&["destroy", "--yes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Destroy complete: 2 destroyed\n"), "{}", text(&out.stdout));
    assert!(!target.exists());
}

/// `ferry state show` learns a kind's sensitive inputs from its provider's schema (through the
/// engine, `ferry_engine::shown`): local.file declares none; local.exec declares env and stdin.
#[test]
fn builtin_schema_gives_the_sensitive_inputs() {
    let builtins = vec![(
        "local".to_string(),
        ferry_engine::ProviderCommand {
            label: "local".into(),
            program: env!("CARGO_BIN_EXE_ferry").into(),
            args: vec!["__provider".into(), "local".into()],
        },
    )];
    let quiet: std::sync::Arc<dyn ferry_engine::EventSink> =
        std::sync::Arc::new(|_: ferry_engine::EngineEvent| {});
    let registry = ferry_engine::registry::Registry::new(
        &builtins,
        std::time::Duration::from_secs(30),
        Default::default(),
        quiet,
        Default::default(),
    );
    let rec = |kind: &str| -> ferry_state::ResourceRecord {
        serde_json::from_value(serde_json::json!({
            "name": "x", "kind": kind, "provider": {"builtin": "local"}, "inputs": {}, "outputs": {},
            "status": "ready", "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
        }))
        .unwrap()
    };
    let inputs =
        ferry_engine::shown::sensitive_inputs(&registry, &rec("local.file")).expect("local.file schema");
    assert!(inputs.is_empty(), "{inputs:?}");
    let inputs =
        ferry_engine::shown::sensitive_inputs(&registry, &rec("local.exec")).expect("local.exec schema");
    assert!(inputs.contains(&"env".to_string()) && inputs.contains(&"stdin".to_string()), "{inputs:?}");
}
