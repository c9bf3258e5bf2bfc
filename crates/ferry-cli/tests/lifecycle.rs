//! The core lifecycle against real Nix: a chain `a (local.file) -> b (local.exec) -> c
//! (local.file)` whose values flow through outputs, taken through create, no-op, update,
//! replace, orphan destroy and destroy; plus `(known after apply)`, `--on` and `ferry graph`.

use ferry_testkit::Sandbox;
use serde_json::Value;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// `a` is a file; `b` prints a's content as output `v` (a's `sha256` is in its argv so a
/// change of a's content changes b's definition); `c` writes b's output to a file; `d` is
/// unrelated and tagged. `a_name` is a's file name, `a_content` its content.
fn chain(sb: &Sandbox, a_name: &str, a_content: &str, with_d: bool) {
    chain_mode(sb, a_name, a_content, "0644", with_d)
}

fn chain_mode(sb: &Sandbox, a_name: &str, a_content: &str, a_mode: &str, with_d: bool) {
    let d = if with_d {
        r#"resources.d = { type = "local.file"; inputs = { path = "@DIR@/d.txt"; content = "unrelated"; }; tags = [ "extra" ]; };"#
    } else {
        ""
    };
    sb.deployment(
        &r#"{ resources, ... }: {
  resources.a = { type = "local.file"; inputs = { path = "@DIR@/@A@"; content = "@CONTENT@"; mode = "@MODE@"; }; };
  resources.b = {
    type = "local.exec";
    inputs = {
      create = [ "sh" "-c" "printf '{\"v\": \"%s\"}' \"$(cat ${resources.a.path})\"" "b" resources.a.sha256 ];
      outputNames = [ "v" ];
    };
  };
  resources.c = {
    type = "local.file";
    inputs = { path = "@DIR@/c.txt"; content = "from b: ${resources.b.v}"; };
    tags = [ "sink" ];
  };
  @D@
}"#
        .replace("@A@", a_name)
        .replace("@CONTENT@", a_content)
        .replace("@MODE@", a_mode)
        .replace("@D@", d),
    );
}

fn plan_json(sb: &Sandbox) -> Value {
    let r = sb.ferry(&["plan", "--json"]).ok();
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("plan --json: {e}\n{}", r.stdout))
}

fn entry<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no plan entry {name}: {plan}"))
}

fn state_names(sb: &Sandbox) -> Vec<String> {
    let r = sb.ferry(&["state", "list", "--json"]).ok();
    let v: Value = serde_json::from_str(&r.stdout).expect("state list --json");
    v.as_array().expect("array").iter().map(|e| e["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn chain_lifecycle_create_noop_update_replace_orphan_destroy() {
    let sb = Sandbox::new(FERRY);
    chain(&sb, "a.txt", "hello", true);

    // Create: values flow a -> b -> c.
    let r = sb.ferry(&["apply", "--yes"]).ok();
    assert!(r.stdout.contains("Apply complete: 4 created"), "{}", r.stdout);
    assert_eq!(sb.read("a.txt").as_deref(), Some("hello"));
    assert_eq!(sb.read("c.txt").as_deref(), Some("from b: hello"));
    assert_eq!(sb.read("d.txt").as_deref(), Some("unrelated"));
    assert_eq!(state_names(&sb), ["a", "b", "c", "d"]);

    // No-op: nothing is rewritten, the plan is all unchanged.
    let ids: Vec<_> = ["a.txt", "c.txt", "d.txt"].iter().map(|f| sb.identity(f)).collect();
    let r = sb.ferry(&["apply", "--yes"]).ok();
    assert!(r.stdout.contains("No changes."), "{}", r.stdout);
    assert!(!r.stderr.contains("create:") && !r.stderr.contains("update:"), "{}", r.stderr);
    let again: Vec<_> = ["a.txt", "c.txt", "d.txt"].iter().map(|f| sb.identity(f)).collect();
    assert_eq!(ids, again, "a no-op apply rewrote files");
    let p = plan_json(&sb);
    assert_eq!(p["summary"]["unchanged"], 4, "{p}");
    for k in ["create", "update", "replace", "delete", "adopt"] {
        assert_eq!(p["summary"][k], 0, "{k}: {p}");
    }
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");

    // An update of a that changes none of its outputs: b and c are evaluated again, found
    // unchanged and left alone (and counted as unchanged).
    chain_mode(&sb, "a.txt", "hello", "0600", true);
    let c_id = sb.identity("c.txt");
    let r = sb.ferry(&["apply", "--yes"]).ok();
    assert!(r.stdout.contains("Apply complete: 1 updated, 3 unchanged"), "{}", r.stdout);
    assert_eq!(sb.mode("a.txt"), 0o600);
    assert_eq!(sb.identity("c.txt"), c_id);
    chain(&sb, "a.txt", "hello", true);
    sb.ferry(&["apply", "--yes"]).ok();

    // Update: a's content changes; a is updated in place, b (no `update` command) is replaced,
    // c is updated with the new value.
    chain(&sb, "a.txt", "world", true);
    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.stdout.contains("  ~ a (local.file)"), "{}", plan.stdout);
    assert!(plan.stdout.contains(r#"content: "hello" -> "world""#), "{}", plan.stdout);
    assert!(plan.stdout.contains("  -/+ b (local.exec)"), "b has no update command: {}", plan.stdout);
    assert!(plan.stdout.contains("  ~ c (local.file)"), "{}", plan.stdout);
    let r = sb.ferry(&["apply", "--yes"]).ok();
    assert!(r.stderr.contains("[a] update: done"), "{}", r.stderr);
    assert!(r.stderr.contains("[b] replace: done"), "{}", r.stderr);
    assert!(r.stderr.contains("[c] update: done"), "{}", r.stderr);
    assert!(r.stdout.contains("Apply complete: 2 updated, 1 replaced, 1 unchanged"), "{}", r.stdout);
    assert_eq!(sb.read("a.txt").as_deref(), Some("world"));
    assert_eq!(sb.read("c.txt").as_deref(), Some("from b: world"));
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");

    // Replace: a's path changes; the new file is written first (`+/-`), then the old one removed.
    chain(&sb, "a2.txt", "world", true);
    // Hold the old file open so its inode cannot be reused by the new file.
    let a_inode = sb.identity("a.txt").0;
    let _old_a = std::fs::File::open(sb.path().join("a.txt")).expect("open a.txt");
    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.stdout.contains("  +/- a (local.file)"), "{}", plan.stdout);
    assert!(plan.stdout.contains("(forces replacement)"), "{}", plan.stdout);
    let r = sb.ferry(&["apply", "--yes"]).ok();
    assert!(r.stderr.contains("[a] replace: done"), "{}", r.stderr);
    assert!(!sb.exists("a.txt"), "the old file of a replaced resource is removed");
    assert_eq!(sb.read("a2.txt").as_deref(), Some("world"));
    assert_ne!(sb.identity("a2.txt").0, a_inode);
    assert_eq!(sb.read("c.txt").as_deref(), Some("from b: world"));
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");

    // Orphan: d is removed from the expression, so apply destroys it.
    chain(&sb, "a2.txt", "world", false);
    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.stdout.contains("  - d (local.file)"), "{}", plan.stdout);
    let r = sb.ferry(&["apply", "--yes"]).ok();
    assert!(r.stdout.contains("1 destroyed"), "{}", r.stdout);
    assert!(!sb.exists("d.txt"), "orphan d's file is deleted");
    assert!(sb.exists("c.txt"));
    assert_eq!(state_names(&sb), ["a", "b", "c"]);

    // Destroy: everything goes, state is empty.
    let r = sb.ferry(&["destroy", "--yes"]).ok();
    assert!(r.stdout.contains("Destroy complete: 3 destroyed"), "{}", r.stdout);
    for f in ["a.txt", "a2.txt", "c.txt", "d.txt"] {
        assert!(!sb.exists(f), "{f} survived destroy");
    }
    assert!(state_names(&sb).is_empty());
    assert!(sb.ferry(&["state", "list"]).ok().all().contains("no resources recorded"));
}

#[test]
fn first_plan_shows_known_after_apply() {
    let sb = Sandbox::new(FERRY);
    chain(&sb, "a.txt", "hello", false);
    let r = sb.ferry(&["plan"]).ok();
    assert!(r.stdout.contains("Plan: 3 to create"), "{}", r.stdout);
    // c's content is b's output, unknown until b is created.
    assert!(r.stdout.contains(r#"content = "from b: (known after apply: b.v)""#), "{}", r.stdout);
    assert!(r.stdout.contains("(known after apply: a.path)"), "{}", r.stdout);
    let p = plan_json(&sb);
    assert_eq!(entry(&p, "c")["knownAfterApply"], serde_json::json!(["content"]), "{p}");
    assert_eq!(entry(&p, "b")["knownAfterApply"], serde_json::json!(["create"]), "{p}");
    assert_eq!(entry(&p, "a")["knownAfterApply"], serde_json::json!([]), "{p}");
    assert_eq!(entry(&p, "c")["dependsOn"], serde_json::json!(["b"]), "{p}");
    assert_eq!(entry(&p, "c")["action"], "create");
    // plan changes nothing.
    assert!(!sb.exists("a.txt") && !sb.exists("c.txt"));
    assert!(!sb.state_path().exists(), "plan does not create state");
}

#[test]
fn on_selection_includes_dependencies_only() {
    let sb = Sandbox::new(FERRY);
    chain(&sb, "a.txt", "x", true);
    // c needs b needs a; d is unrelated.
    let r = sb.ferry(&["apply", "--yes", "--on", "c"]).ok();
    assert!(r.stdout.contains("Apply complete: 3 created"), "{}", r.stdout);
    assert_eq!(sb.read("c.txt").as_deref(), Some("from b: x"));
    assert!(sb.exists("a.txt"));
    assert!(!sb.exists("d.txt"), "--on c must not touch unrelated d");
    assert_eq!(state_names(&sb), ["a", "b", "c"]);

    // A tag selects d only.
    let r = sb.ferry(&["plan", "--on", "@extra"]).ok();
    assert!(r.stdout.contains("+ d (local.file)") && !r.stdout.contains(" a (local.file)"), "{}", r.stdout);
    let r = sb.ferry(&["apply", "--yes", "--on", "@extra"]).ok();
    assert!(r.stdout.contains("Apply complete: 1 created"), "{}", r.stdout);
    assert_eq!(sb.read("d.txt").as_deref(), Some("unrelated"));

    // A tag on c pulls in its dependencies, which are unchanged by now.
    chain(&sb, "a.txt", "y", true);
    let r = sb.ferry(&["plan", "--on", "@sink"]).ok();
    assert!(r.stdout.contains("~ a (local.file)"), "{}", r.stdout);
    assert!(!r.stdout.contains("d (local.file)"), "{}", r.stdout);
}

#[test]
fn graph_shows_output_to_input_edges() {
    let sb = Sandbox::new(FERRY);
    chain(&sb, "a.txt", "hello", true);
    let r = sb.ferry(&["graph"]).ok();
    let dot = &r.stdout;
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(dot.contains(r#""a" -> "b" [label="path -> create"]"#), "{dot}");
    assert!(dot.contains(r#""a" -> "b" [label="sha256 -> create"]"#), "{dot}");
    assert!(dot.contains(r#""b" -> "c" [label="v -> content"]"#), "{dot}");
    assert!(dot.contains(r#""d" [label="d\nlocal.file"]"#), "{dot}");
    assert!(!dot.contains(r#""d" ->"#) && !dot.contains(r#"-> "d""#), "d has no edges: {dot}");
    let r = sb.ferry(&["graph", "--json"]).ok();
    let g: Value = serde_json::from_str(&r.stdout).expect("graph --json");
    assert_eq!(g["nodes"].as_array().map(Vec::len), Some(4), "{g}");
    assert!(!sb.exists("a.txt"), "graph changes nothing");
}

#[test]
fn non_tty_apply_without_yes_exits_2_and_changes_nothing() {
    let sb = Sandbox::new(FERRY);
    chain(&sb, "a.txt", "one", false);
    sb.ferry(&["apply", "--yes"]).ok();
    let before = sb.state_snapshot();
    let id = sb.identity("a.txt");
    chain(&sb, "a.txt", "two", true);
    let r = sb.ferry(&["apply"]).expect(2);
    assert!(r.stderr.contains("stdin is not a terminal; pass --yes"), "{}", r.stderr);
    assert_eq!(sb.read("a.txt").as_deref(), Some("one"));
    assert_eq!(sb.identity("a.txt"), id);
    assert!(!sb.exists("d.txt"));
    assert_eq!(sb.state_snapshot(), before);
    // Same for destroy.
    let r = sb.ferry(&["destroy"]).expect(2);
    assert!(r.stderr.contains("pass --yes"), "{}", r.stderr);
    assert!(sb.exists("a.txt"));
    assert_eq!(sb.state_snapshot(), before);
}
