//! Bad deployments, bad providers and a state file from the future: each is reported with a
//! clear message and exit status, and leaves the state exactly as it was. A valid deployment is
//! applied first so there is state to protect.

use ferry_testkit::{fake_provider, sqlite, Sandbox};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// The resource every case keeps, so the state has something in it.
const OK: &str =
    r#"resources.ok = { type = "local.file"; inputs = { path = "@DIR@/ok.txt"; content = "ok"; }; };"#;

/// A sandbox with `ok` applied.
fn applied() -> Sandbox {
    let sb = Sandbox::new(FERRY);
    sb.deployment(&format!("{{ resources, ... }}: {{ {OK} }}"));
    sb.ferry(&["apply", "--yes"]).ok();
    assert_eq!(sb.read("ok.txt").as_deref(), Some("ok"));
    sb
}

/// Deploy `body` (beside `ok`) with `apply --yes` and `plan`: both must exit `code` saying
/// every one of `needles`, without panicking, and the state must be unchanged.
fn rejects(sb: &Sandbox, body: &str, code: i32, needles: &[&str]) {
    sb.deployment(&format!("{{ resources, ... }}: {{\n  {OK}\n  {body}\n}}\n"));
    let before = sb.state_snapshot();
    for verb in [&["plan"][..], &["apply", "--yes"]] {
        let r = sb.ferry(verb).expect(code);
        for n in needles {
            assert!(r.all().contains(n), "{verb:?}: output lacks {n:?}\n{}", r.all());
        }
        assert_eq!(sb.state_snapshot(), before, "{verb:?} changed the state");
    }
    assert_eq!(sb.read("ok.txt").as_deref(), Some("ok"));
}

fn file(name: &str, content: &str) -> String {
    format!(
        r#"resources.{name} = {{ type = "local.file"; inputs = {{ path = "@DIR@/{name}.txt"; content = {content}; }}; }};"#
    )
}

#[test]
fn nix_syntax_error_names_file_and_line() {
    let sb = applied();
    let dep = sb.path().join("deployment.nix").display().to_string();
    // Line 3 of the file written by `rejects`.
    rejects(
        &sb,
        r#"resources.x = { type = "local.file" inputs = { }; };"#,
        1,
        &["syntax error", &format!("{dep}:3:")],
    );
}

#[test]
fn missing_type() {
    let sb = applied();
    rejects(&sb, r#"resources.x = { inputs = { }; };"#, 1, &["resource `x`", "has no `type`"]);
}

#[test]
fn unknown_kind() {
    let sb = applied();
    rejects(
        &sb,
        r#"resources.x = { type = "local.nope"; inputs = { }; };"#,
        1,
        &["unknown kind `local.nope`", "local.file", "could not be planned"],
    );
}

#[test]
fn unknown_provider_without_executable() {
    let sb = applied();
    rejects(
        &sb,
        r#"resources.x = { type = "zzz.thing"; inputs = { }; };"#,
        1,
        &["no built-in provider `zzz`", "provider = { executable"],
    );
}

#[test]
fn input_failing_the_schema() {
    let sb = applied();
    rejects(&sb, &file("x", "5"), 1, &["resource `x`", "input `content`", "is not of type \"string\""]);
}

#[test]
fn relative_path_to_local_file() {
    let sb = applied();
    rejects(
        &sb,
        r#"resources.x = { type = "local.file"; inputs = { path = "rel/x.txt"; content = "x"; }; };"#,
        1,
        &["resource `x`", "input `path`", "\"rel/x.txt\""],
    );
    assert!(!sb.exists("rel/x.txt"));
}

#[test]
fn reference_to_undeclared_resource() {
    let sb = applied();
    rejects(
        &sb,
        &file("x", "resources.nothere.path"),
        1,
        &["attribute 'nothere' missing", "no resource named `nothere` is declared"],
    );
}

#[test]
fn reference_to_undeclared_output() {
    let sb = applied();
    rejects(
        &sb,
        &file("x", "resources.ok.nope"),
        1,
        &["attribute 'nope' missing", "resource `ok` has no output `nope`"],
    );
}

#[test]
fn dependency_cycle_names_the_chain() {
    let sb = applied();
    let body = format!("{}\n{}", file("x", "resources.y.sha256"), file("y", "resources.x.sha256"));
    rejects(&sb, &body, 1, &["dependency cycle: x -> y -> x"]);
    assert!(!sb.exists("x.txt") && !sb.exists("y.txt"));
}

#[test]
fn longer_cycle_through_a_bystander() {
    let sb = applied();
    let body = [
        file("p", "resources.r.sha256"),
        file("q", "resources.p.sha256"),
        file("r", "resources.q.sha256"),
        file("free", "\"free\""),
    ]
    .join("\n");
    rejects(&sb, &body, 1, &["dependency cycle: ", "p -> q -> r -> p"]);
    assert!(!sb.exists("free.txt"), "nothing is applied when the deployment has a cycle");
}

#[test]
fn function_where_json_is_needed() {
    let sb = applied();
    rejects(&sb, &file("x", "(x: x)"), 1, &["cannot convert a function to JSON", "deployment.nix:3:"]);
}

#[test]
fn duplicate_names_across_imports_name_both_files() {
    let sb = applied();
    sb.write("more.nix", r#"{ resources.ok = { type = "local.file"; inputs = { path = "/tmp/elsewhere"; content = "x"; }; }; }"#);
    let main = sb.path().join("deployment.nix").display().to_string();
    let more = sb.path().join("more.nix").display().to_string();
    rejects(&sb, "imports = [ ./more.nix ];", 1, &["resource `ok` is declared more than once", &main, &more]);
}

#[test]
fn provider_executable_missing() {
    let sb = applied();
    rejects(
        &sb,
        r#"resources.x = { type = "bad.thing"; provider.executable = "@DIR@/no-such-provider"; inputs = { }; };"#,
        1,
        &["cannot start provider", "no-such-provider", "check `provider.executable`"],
    );
}

/// A resource of the fake provider `bad` whose plan request meets `after`.
fn bad_provider(sb: &Sandbox, after: &str, timeout: &str) -> String {
    let exe = sb.executable("bad-provider.sh", &fake_provider("bad", &["plan", "create"], after));
    format!(
        r#"resources.x = {{ type = "bad.thing"; provider.executable = "{exe}"; inputs = {{ }}; {timeout} }};"#
    )
}

#[test]
fn provider_crashing_after_the_handshake() {
    let sb = applied();
    let body = bad_provider(&sb, "read -r req; exit 1", "");
    rejects(&sb, &body, 1, &["✗ x: provider", "bad-provider.sh exited unexpectedly"]);
}

#[test]
fn provider_printing_garbage() {
    let sb = applied();
    let body = bad_provider(&sb, "read -r req; echo 'this is not json'; sleep 5", "");
    let start = std::time::Instant::now();
    rejects(
        &sb,
        &body,
        1,
        &["bad-provider.sh wrote something that is not a protocol message", "this is not json"],
    );
    // A provider that broke the protocol is stopped, not waited for (two runs above).
    assert!(start.elapsed() < std::time::Duration::from_secs(8), "ferry waited for a broken provider");
}

#[test]
fn provider_answering_an_id_it_was_never_sent_is_stopped() {
    let sb = applied();
    // On main the stray answer was dropped and ferry waited for the real one (here: 30 s).
    let body = bad_provider(&sb, r#"read -r req; echo '{"id":999,"result":{}}'; sleep 30"#, "");
    let start = std::time::Instant::now();
    rejects(&sb, &body, 1, &["bad-provider.sh answered request id 999, which ferry never sent"]);
    assert!(start.elapsed() < std::time::Duration::from_secs(20), "ferry waited for a lost provider");
}

#[test]
fn provider_exiting_while_its_child_holds_stdout_is_noticed_and_its_group_killed() {
    let sb = applied();
    // The child keeps the provider's stdout open: on main ferry saw no end of file and waited
    // out the call timeout (600 s by default), and the child kept running.
    let pids = sb.p("child.pids");
    let body = bad_provider(&sb, &format!("read -r req; sleep 300 & echo $! >> {pids}; exit 0"), "");
    let start = std::time::Instant::now();
    rejects(&sb, &body, 1, &["provider", "bad-provider.sh exited"]);
    assert!(start.elapsed() < std::time::Duration::from_secs(30), "ferry waited for the provider's child");
    let started = sb.read("child.pids").unwrap_or_default();
    assert_eq!(started.lines().count(), 2, "{started}");
    for pid in started.lines() {
        let gone = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |st| st.split(' ').nth(2) == Some("Z"))
        };
        ferry_testkit::wait_until(
            std::time::Duration::from_secs(10),
            "the provider's child to be killed",
            gone,
        );
    }
}

#[test]
fn provider_timeout() {
    let sb = applied();
    let body = bad_provider(&sb, "read -r req; sleep 1000", "timeout = 1;");
    let start = std::time::Instant::now();
    rejects(&sb, &body, 1, &["did not answer `plan` for resource `x` within 1s"]);
    assert!(start.elapsed() < std::time::Duration::from_secs(30), "the 1s timeout was not applied");
}

#[test]
fn broken_provider_at_apply_time_lets_other_resources_go_on() {
    let sb = applied();
    // This provider cannot plan, so the crash comes with the create call, during apply.
    let exe = sb.executable("crash.sh", &fake_provider("bad", &["create"], "read -r req; exit 1"));
    sb.deployment(&format!(
        r#"{{ resources, ... }}: {{
  {OK}
  resources.x = {{ type = "bad.thing"; provider.executable = "{exe}"; inputs = {{ }}; }};
  {}
}}"#,
        file("independent", "\"still made\"")
    ));
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    assert!(r.stderr.contains("Apply failed: 1 failed"), "{}", r.stderr);
    assert!(r.stderr.contains("✗ x: provider"), "{}", r.stderr);
    assert!(r.stderr.contains("exited unexpectedly"), "{}", r.stderr);
    assert_eq!(sb.read("independent.txt").as_deref(), Some("still made"));
    assert_eq!(sb.read("ok.txt").as_deref(), Some("ok"));
    let show = sb.ferry(&["state", "show", "independent", "--json"]).ok();
    assert!(show.stdout.contains("ready"), "{}", show.stdout);
}

#[test]
fn state_from_a_newer_schema_is_refused_and_left_untouched() {
    let sb = applied();
    let db = sb.state_path();
    let version: i64 = sqlite(&db, "PRAGMA user_version;").parse().expect("user_version");
    assert!(version >= 1);
    sqlite(&db, &format!("PRAGMA user_version = {};", version + 1));
    // Checkpointed, so the main file is the whole database.
    let bytes = std::fs::read(&db).unwrap();
    let wal = sb.path().join(".ferry/state.db-wal");
    let wal_bytes = std::fs::read(&wal).ok();
    for args in
        [&["apply", "--yes"][..], &["plan"], &["state", "list"], &["destroy", "--yes"], &["state", "export"]]
    {
        let r = sb.ferry(args).expect(1);
        assert!(
            r.stderr.contains(&format!("has schema version {}, newer than this ferry supports", version + 1)),
            "{args:?}: {}",
            r.stderr
        );
        assert!(r.stderr.contains("upgrade ferry"), "{}", r.stderr);
        assert_eq!(std::fs::read(&db).unwrap(), bytes, "{args:?} modified the state file");
        // Opening a WAL database may leave an empty log behind; it must hold no writes.
        let wal_now = std::fs::read(&wal).ok().filter(|b| !b.is_empty());
        assert_eq!(wal_now, wal_bytes.clone().filter(|b| !b.is_empty()), "{args:?} wrote to the WAL");
    }
    assert_eq!(sb.read("ok.txt").as_deref(), Some("ok"), "destroy must not run");
}

#[test]
fn deployment_that_is_not_a_function_or_attrset_of_resources() {
    let sb = applied();
    sb.deployment("{ resources = 5; }");
    let before = sb.state_snapshot();
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    assert!(r.stderr.contains("`resources` must be an attribute set"), "{}", r.stderr);
    assert_eq!(sb.state_snapshot(), before);
}

#[test]
fn missing_deployment_file_is_a_usage_error() {
    let sb = applied();
    let before = sb.state_snapshot();
    let r = sb.ferry(&["apply", "--yes", "-f", "nope.nix"]).expect(2);
    assert!(r.stderr.contains("no deployment file at"), "{}", r.stderr);
    assert_eq!(sb.state_snapshot(), before);
}

#[test]
fn unknown_resource_attribute() {
    let sb = applied();
    rejects(
        &sb,
        r#"resources.x = { type = "local.file"; input = { }; };"#,
        1,
        &["resource `x`", "unknown attribute `input`"],
    );
}
