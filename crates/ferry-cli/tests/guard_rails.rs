//! The engine's guard rails, through the binary: a state belongs to one deployment; an apply
//! that would destroy everything, or a protected resource, is refused; a resource that cannot
//! be planned stops the whole apply; a replace runs in the order its plan announces. Every
//! refusal is checked to change nothing: files on disk, state and exit status.

use ferry_testkit::{sqlite, Sandbox};
use serde_json::Value;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

fn file(name: &str, content: &str) -> String {
    format!(
        r#"resources.{name} = {{ type = "local.file"; inputs = {{ path = "@DIR@/{name}.txt"; content = "{content}"; }}; }};"#
    )
}

/// `{ resources, ... }: { BODY }` with `@DIR@` replaced, written to `rel`.
fn write(sb: &Sandbox, rel: &str, body: &str) {
    let text =
        format!("{{ resources, ... }}: {{\n{body}\n}}\n").replace("@DIR@", &sb.path().display().to_string());
    sb.write(rel, &text);
}

/// The state snapshot of another state file than the default one.
fn snapshot_of(sb: &Sandbox, state: &str) -> String {
    let r = sb.ferry(&["state", "export", "--state", state]).ok();
    r.stdout
}

/// Operations of the intents the last run recorded for `name`, in order.
fn last_run_ops(sb: &Sandbox, name: &str) -> Vec<String> {
    let r = sb.ferry(&["state", "log", name, "--json"]).ok();
    let events: Vec<Value> = serde_json::from_str(&r.stdout).expect("state log --json");
    let last = events.iter().filter_map(|e| e["run"].as_i64()).max().unwrap_or_default();
    events
        .iter()
        .filter(|e| e["run"].as_i64() == Some(last) && e["phase"] == "intent")
        .map(|e| e["op"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_state_belongs_to_one_deployment() {
    let sb = Sandbox::new(FERRY);
    write(&sb, "deployment.nix", &format!("name = \"prod\";\n{}", file("a", "a")));
    write(&sb, "other.nix", &file("b", "b"));
    sb.ferry(&["apply", "--yes"]).ok();
    let prod = sb.state_snapshot();

    // Another file in the same directory gets its own state by default: `a` is not an orphan.
    sb.ferry(&["apply", "-f", "other.nix", "--yes"]).ok().says("Apply complete: 1 created");
    assert!(sb.exists(".ferry/other.state.db"));
    assert_eq!(sb.read("a.txt").as_deref(), Some("a"));
    assert_eq!(sb.state_snapshot(), prod);

    // Pointed at prod's state, it is refused — plan and apply — naming both deployments.
    let dep = sb.p("deployment.nix");
    let other = sb.p("other.nix");
    for verb in [&["plan"][..], &["apply", "--yes"]] {
        let args = [verb, &["-f", "other.nix", "--state", ".ferry/state.db"]].concat();
        let r = sb.ferry(&args).expect(1);
        let names = format!("belongs to deployment `prod` ({dep}), not to {other}");
        for needle in [names.as_str(), "--rebind", "nothing was changed"] {
            assert!(r.all().contains(needle), "{args:?} lacks {needle:?}:\n{}", r.all());
        }
        assert_eq!(sb.state_snapshot(), prod, "{args:?} changed the state");
        assert_eq!(sb.read("a.txt").as_deref(), Some("a"));
    }

    // A file that names itself `prod` is the same deployment (e.g. the file was renamed).
    write(&sb, "prod.nix", &format!("name = \"prod\";\n{}", file("a", "a")));
    sb.ferry(&["plan", "-f", "prod.nix", "--state", ".ferry/state.db"]).ok().says("No changes.");

    // Rebinding on purpose: other.nix takes the state over (and destroys `a`, as planned).
    sb.ferry(&["plan", "-f", "other.nix", "--state", ".ferry/state.db", "--rebind"])
        .ok()
        .says("- a (local.file)");
    sb.ferry(&["apply", "-f", "other.nix", "--state", ".ferry/state.db", "--rebind", "--yes"])
        .ok()
        .says("1 created, 1 destroyed");
    assert!(!sb.exists("a.txt"));
    // Now deployment.nix is the stranger.
    sb.ferry(&["plan"]).expect(1).says(&format!("belongs to deployment {other}, not to `prod` ({dep})"));
    // `ferry state rebind` gives it back without applying anything.
    let before = sb.state_snapshot();
    sb.ferry(&["state", "rebind"]).ok().says(&format!("now belongs to {dep} (it belonged to {other})"));
    assert_eq!(sb.state_snapshot(), before);
    sb.ferry(&["plan"]).ok().says("+ a (local.file)");
}

#[test]
fn moving_the_whole_directory_keeps_the_binding() {
    let sb = Sandbox::new(FERRY);
    // The resource lives outside the moved directory, so only the state moves.
    let body =
        r#"resources.a = { type = "local.file"; inputs = { path = "@DIR@/a.txt"; content = "a"; }; };"#;
    write(&sb, "site/deployment.nix", body);
    sb.ferry(&["apply", "-f", "site/deployment.nix", "--yes"]).ok();
    std::fs::rename(sb.path().join("site"), sb.path().join("moved")).unwrap();
    sb.ferry(&["plan", "-f", "moved/deployment.nix"]).ok().says("No changes.");
}

#[test]
fn an_old_state_is_bound_by_the_first_apply() {
    let sb = Sandbox::new(FERRY);
    write(&sb, "deployment.nix", &file("a", "a"));
    sb.ferry(&["apply", "--yes"]).ok();
    // Make it a schema v1 database, as an older ferry left it.
    let db = sb.state_path();
    sqlite(
        &db,
        "DROP TABLE deployment; ALTER TABLE resources DROP COLUMN protect; \
         ALTER TABLE resources DROP COLUMN deposed; PRAGMA user_version = 1;",
    );
    // Unbound: any deployment may use it, until one writes.
    write(&sb, "other.nix", &file("b", "b"));
    sb.ferry(&["plan", "-f", "other.nix", "--state", ".ferry/state.db"]).ok().says("- a (local.file)");
    sb.ferry(&["apply", "--yes"]).ok().says("No changes.");
    sb.ferry(&["state", "list"]).ok().says("a     local.file  ready");
    sb.ferry(&["plan", "-f", "other.nix", "--state", ".ferry/state.db"])
        .expect(1)
        .says("belongs to deployment");
    assert_eq!(sqlite(&db, "PRAGMA user_version"), "2");
}

#[test]
fn the_deployment_name_must_be_a_plain_string() {
    let sb = Sandbox::new(FERRY);
    write(&sb, "deployment.nix", &file("a", "a"));
    sb.ferry(&["apply", "--yes"]).ok();
    let before = sb.state_snapshot();
    let dep = sb.p("deployment.nix");
    for (name, says) in [
        ("5", format!("{dep}: `name` must be a string, got int")),
        ("resources.a.path", format!("{dep}: `name` must not depend on resource outputs")),
    ] {
        write(&sb, "deployment.nix", &format!("name = {name};\n{}\n{}", file("a", "a"), file("b", "b")));
        sb.ferry(&["apply", "--yes"]).expect(1).says(&says);
        assert_eq!(sb.state_snapshot(), before);
        assert!(!sb.exists("b.txt"));
    }
}

#[test]
fn destroying_everything_needs_destroy_or_a_flag() {
    let sb = Sandbox::new(FERRY);
    write(&sb, "deployment.nix", &format!("{}\n{}", file("a", "a"), file("b", "b")));
    sb.ferry(&["apply", "--yes"]).ok();
    let before = sb.state_snapshot();
    // A typo that would declare nothing is caught before any plan (the shape check).
    write(
        &sb,
        "deployment.nix",
        r#"resource.a = { type = "local.file"; inputs = { path = "@DIR@/a.txt"; content = "a"; }; };"#,
    );
    for verb in ["plan", "apply"] {
        sb.ferry(&[verb, "--yes"][..if verb == "plan" { 1 } else { 2 }])
            .expect(1)
            .says("unknown attribute `resource` (did you mean `resources`?)");
        assert_eq!(sb.state_snapshot(), before);
    }
    // An empty deployment (or the wrong file) would destroy everything: refused.
    write(&sb, "deployment.nix", "");
    sb.ferry(&["plan"]).ok().says("would destroy all 2 recorded resources (a, b)");
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    for needle in [
        "would destroy all 2 recorded resources (a, b) and create nothing",
        "ferry destroy",
        "--allow-destroy-all",
    ] {
        assert!(r.all().contains(needle), "lacks {needle:?}:\n{}", r.all());
    }
    assert_eq!(sb.state_snapshot(), before);
    assert!(sb.exists("a.txt") && sb.exists("b.txt"));
    sb.ferry(&["apply", "--yes", "--allow-destroy-all"]).ok().says("Apply complete: 2 destroyed");
    assert!(!sb.exists("a.txt") && !sb.exists("b.txt"));
}

#[test]
fn a_protected_resource_is_never_replaced_or_destroyed() {
    let sb = Sandbox::new(FERRY);
    let db = |path: &str, protect: &str| {
        format!(
            r#"resources.db = {{ type = "local.file"; protect = {protect}; inputs = {{ path = "@DIR@/{path}"; content = "data"; }}; }};"#
        )
    };
    write(&sb, "deployment.nix", &format!("{}\n{}", db("db.txt", "true"), file("keep", "k")));
    sb.ferry(&["apply", "--yes"]).ok();
    let before = sb.state_snapshot();
    let untouched = |sb: &Sandbox| {
        assert_eq!(sb.state_snapshot(), before);
        assert_eq!(sb.read("db.txt").as_deref(), Some("data"));
        assert!(!sb.exists("db2.txt") && !sb.exists("new.txt"));
    };

    // Replace (a new path), alongside another change that must not happen either.
    write(
        &sb,
        "deployment.nix",
        &format!("{}\n{}\n{}", db("db2.txt", "true"), file("keep", "k"), file("new", "n")),
    );
    sb.ferry(&["plan"])
        .expect(1)
        .says("✗ db: resource `db` is protected (protect = true): this change replaces it");
    sb.ferry(&["apply", "--yes"])
        .expect(1)
        .says("set `protect = false;` on `db`")
        .says("nothing was changed");
    untouched(&sb);

    // Removed from the deployment: an error naming it, not a destroy.
    write(&sb, "deployment.nix", &file("keep", "k"));
    sb.ferry(&["apply", "--yes"]).expect(1).says("resource `db` is protected (protect = true in state)");
    untouched(&sb);

    // `ferry destroy`, whole or with --on.
    for args in [&["destroy", "--yes"][..], &["destroy", "--yes", "--on", "db"]] {
        sb.ferry(args).expect(1).says("refusing to destroy protected resources: db").says("protect = false;");
        untouched(&sb);
    }
    sb.ferry(&["destroy", "--yes", "--on", "keep"]).ok().says("Destroy complete: 1 destroyed");

    // Clearing the flag is recorded by an apply that changes nothing else; then it can go.
    write(&sb, "deployment.nix", &db("db.txt", "false"));
    sb.ferry(&["apply", "--yes"]).ok();
    write(&sb, "deployment.nix", &file("keep", "k"));
    sb.ferry(&["apply", "--yes"]).ok().says("1 created, 1 destroyed");
    assert!(!sb.exists("db.txt"));

    // Setting it on an unchanged resource is recorded too.
    write(&sb, "deployment.nix", &format!("{}\n{}", db("db.txt", "false"), file("keep", "k")));
    sb.ferry(&["apply", "--yes"]).ok();
    write(&sb, "deployment.nix", &format!("{}\n{}", db("db.txt", "true"), file("keep", "k")));
    sb.ferry(&["apply", "--yes"]).ok().says("No changes.");
    write(&sb, "deployment.nix", &db("db.txt", "true"));
    sb.ferry(&["apply", "--yes"]).ok().says("1 destroyed");
    write(&sb, "deployment.nix", &file("keep", "k"));
    sb.ferry(&["apply", "--yes"]).expect(1).says("resource `db` is protected");
    assert!(sb.exists("db.txt"));

    // A flag that is not a boolean.
    write(&sb, "deployment.nix", &db("db.txt", "\"yes\""));
    sb.ferry(&["plan"]).expect(1).says("`protect` must be true or false, got string");
}

#[test]
fn a_resource_that_cannot_be_planned_stops_the_whole_apply() {
    let sb = Sandbox::new(FERRY);
    write(
        &sb,
        "deployment.nix",
        &format!("{}\n{}\n{}", file("keep", "k"), file("upd", "v1"), file("old", "o")),
    );
    sb.ferry(&["apply", "--yes"]).ok();
    let before = sb.state_snapshot();
    let bad = [
        r#"resources.schema = { type = "local.file"; inputs = { path = "@DIR@/s.txt"; content = 5; }; };"#,
        r#"resources.kind = { type = "local.nope"; inputs = { }; };"#,
        r#"resources.prov = { type = "zzz.thing"; inputs = { }; };"#,
    ];
    // An update, a create and an orphan destroy are planned beside three broken resources.
    let good = format!("{}\n{}\n{}", file("keep", "k"), file("upd", "v2"), file("fresh", "f"));
    write(&sb, "deployment.nix", &format!("{good}\n{}", bad.join("\n")));
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    for needle in [
        "✗ schema: resource `schema`",
        "✗ kind: ",
        "unknown kind `local.nope`",
        "✗ prov: ",
        "no built-in provider `zzz`",
        "3 resources could not be planned; nothing was changed",
    ] {
        assert!(r.all().contains(needle), "lacks {needle:?}:\n{}", r.all());
    }
    assert_eq!(sb.state_snapshot(), before);
    assert_eq!(sb.read("upd.txt").as_deref(), Some("v1"));
    assert!(sb.exists("old.txt") && !sb.exists("fresh.txt"));

    // An undeclared output stops evaluation itself: nothing changes either.
    write(
        &sb,
        "deployment.nix",
        &format!(
            "{good}\n{}",
            r#"resources.x = { type = "local.file"; inputs = { path = "@DIR@/x.txt"; content = resources.fresh.nope; }; };"#
        ),
    );
    sb.ferry(&["apply", "--yes"]).expect(1).says("resource `fresh` has no output `nope`");
    assert_eq!(sb.state_snapshot(), before);
    assert!(sb.exists("old.txt") && !sb.exists("fresh.txt"));
}

#[test]
fn a_moved_file_is_written_before_the_old_one_is_removed() {
    let sb = Sandbox::new(FERRY);
    write(
        &sb,
        "deployment.nix",
        r#"resources.f = { type = "local.file"; inputs = { path = "@DIR@/one.txt"; content = "x"; }; };"#,
    );
    sb.ferry(&["apply", "--yes"]).ok();
    write(
        &sb,
        "deployment.nix",
        r#"resources.f = { type = "local.file"; inputs = { path = "@DIR@/two.txt"; content = "x"; }; };"#,
    );
    sb.ferry(&["plan"]).ok().says("  +/- f (local.file)").says("write the new file, then remove the old one");
    sb.ferry(&["plan", "--json"]).ok().says("\"createBeforeDestroy\": true");
    sb.ferry(&["apply", "--yes"]).ok().says("Apply complete: 1 replaced");
    assert_eq!(last_run_ops(&sb, "f"), ["create", "delete"]);
    assert!(sb.exists("two.txt") && !sb.exists("one.txt"));
    let r = sb.ferry(&["state", "show", "f", "--json"]).ok();
    let rec: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rec["inputs"]["path"], sb.p("two.txt"));
    assert!(rec.get("deposed").is_none(), "{rec}");
}

#[test]
fn a_destroy_first_kind_is_deleted_before_it_is_created_again() {
    let sb = Sandbox::new(FERRY);
    let exec = |v: &str| {
        format!(
            r#"resources.e = {{ type = "local.exec"; inputs = {{
                 create = [ "sh" "-c" "echo create {v} >> @DIR@/log; echo {{}}" ];
                 delete = [ "sh" "-c" "echo delete >> @DIR@/log" ]; }}; }};"#
        )
    };
    write(&sb, "deployment.nix", &exec("1"));
    sb.ferry(&["apply", "--yes"]).ok();
    write(&sb, "deployment.nix", &exec("2"));
    sb.ferry(&["plan"]).ok().says("  -/+ e (local.exec)").says("deleted and created again");
    sb.ferry(&["apply", "--yes"]).ok().says("Apply complete: 1 replaced");
    assert_eq!(last_run_ops(&sb, "e"), ["delete", "create"]);
    assert_eq!(sb.read("log").as_deref(), Some("create 1\ndelete\ncreate 2\n"));
}

/// An external provider that plans every change of `v` as a create-before-destroy replace and
/// logs its calls; its delete fails while `fail-delete` exists.
fn cbd_provider(sb: &Sandbox) -> String {
    let dir = sb.path().display().to_string();
    sb.executable(
        "cbd.sh",
        &format!(
            r#"#!/bin/sh
while read -r line; do
  id=$(printf '%s' "$line" | sed -n 's/^{{"id":\([0-9]*\).*/\1/p')
  v=$(printf '%s' "$line" | sed -n 's/.*"inputs":{{"v":\([0-9]*\)}}.*/\1/p')
  case "$line" in
    *'"method":"handshake"'*) echo '{{"id":'$id',"result":{{"protocolVersion":1,"provider":"cbd","kinds":[{{"name":"thing","inputs":{{"type":"object"}},"outputs":{{"type":"object","properties":{{}}}},"operations":["plan","create","delete"]}}]}}}}' ;;
    *'"method":"plan"'*'"prior":null'*) echo '{{"id":'$id',"result":{{"action":"create"}}}}' ;;
    *'"method":"plan"'*)
      if [ "$(printf '%s' "$line" | grep -o '"v":[0-9]*' | sort -u | wc -l)" = 1 ]; then
        echo '{{"id":'$id',"result":{{"action":"noop"}}}}'
      else echo '{{"id":'$id',"result":{{"action":"replace","createBeforeDestroy":true}}}}'; fi ;;
    *'"method":"create"'*) echo "create $v" >> {dir}/calls; echo '{{"id":'$id',"result":{{"outputs":{{}}}}}}' ;;
    *'"method":"delete"'*)
      if [ -e {dir}/fail-delete ]; then echo '{{"id":'$id',"error":{{"message":"delete refused"}}}}'
      else echo "delete $v" >> {dir}/calls; echo '{{"id":'$id',"result":{{}}}}'; fi ;;
  esac
done
"#
        ),
    )
}

#[test]
fn an_old_object_left_by_a_replacement_is_deleted_by_the_next_apply() {
    let sb = Sandbox::new(FERRY);
    let exe = cbd_provider(&sb);
    let thing = |v: u32| {
        format!(r#"resources.t = {{ type = "cbd.thing"; provider.executable = "{exe}"; inputs.v = {v}; }};"#)
    };
    write(&sb, "deployment.nix", &thing(1));
    sb.ferry(&["apply", "--yes"]).ok();
    sb.write("fail-delete", "");
    write(&sb, "deployment.nix", &thing(2));
    sb.ferry(&["apply", "--yes"])
        .expect(1)
        .says("the replacement was created, but removing the old one failed (the next apply retries): delete refused");
    assert_eq!(sb.read("calls").as_deref(), Some("create 1\ncreate 2\n"));
    let r = sb.ferry(&["state", "export"]).ok();
    assert!(r.stdout.contains("\"deposed\""), "{}", r.stdout);
    // The new object is recorded, the old one still to delete: the plan says so, and the next
    // apply deletes it.
    sb.ferry(&["plan"])
        .ok()
        .says("! drift: the old object a replacement superseded is still there: it is deleted first");
    std::fs::remove_file(sb.path().join("fail-delete")).unwrap();
    sb.ferry(&["apply", "--yes"]).ok();
    assert_eq!(sb.read("calls").as_deref(), Some("create 1\ncreate 2\ndelete 1\n"));
    let r = sb.ferry(&["state", "export"]).ok();
    assert!(!r.stdout.contains("\"deposed\""), "{}", r.stdout);
    sb.ferry(&["apply", "--yes"]).ok().says("No changes.");
}

#[test]
fn two_deployments_in_one_directory_keep_their_own_state() {
    let sb = Sandbox::new(FERRY);
    write(&sb, "deployment.nix", &file("a", "a"));
    write(&sb, "other.nix", &file("b", "b"));
    sb.ferry(&["apply", "--yes"]).ok();
    sb.ferry(&["apply", "-f", "other.nix", "--yes"]).ok();
    assert_eq!(snapshot_of(&sb, ".ferry/other.state.db").matches("\"name\"").count(), 1);
    sb.ferry(&["destroy", "-f", "other.nix", "--yes"]).ok().says("Destroy complete: 1 destroyed");
    assert!(sb.exists("a.txt") && !sb.exists("b.txt"));
    sb.ferry(&["plan"]).ok().says("No changes.");
}

#[test]
fn a_state_shared_by_an_older_ferry_is_not_silently_left_behind() {
    let sb = Sandbox::new(FERRY);
    write(&sb, "prod.nix", &file("a", "a"));
    // Older ferry versions kept every file's resources in `.ferry/state.db`.
    sb.ferry(&["apply", "-f", "prod.nix", "--state", ".ferry/state.db", "--yes"]).ok();
    let before = sb.state_snapshot();
    for bound in [true, false] {
        if !bound {
            sqlite(&sb.state_path(), "DELETE FROM deployment");
        }
        let r = sb.ferry(&["apply", "-f", "prod.nix", "--yes"]).expect(1);
        let needle = format!("{} may hold its resources", sb.p(".ferry/state.db"));
        assert!(r.all().contains(&needle), "{}", r.all());
        assert!(r.all().contains("pass --state"), "{}", r.all());
        assert!(!sb.exists(".ferry/prod.state.db"));
    }
    assert_eq!(sb.state_snapshot(), before);
    sb.ferry(&["plan", "-f", "prod.nix", "--state", ".ferry/state.db"]).ok().says("No changes.");
    // Bound to another file, it is no one's concern here: prod.nix starts its own state.
    write(&sb, "deployment.nix", &file("a", "a"));
    sb.ferry(&["apply", "--yes"]).ok();
    sb.ferry(&["plan", "-f", "prod.nix"]).ok().says("+ a (local.file)");
}

#[test]
fn a_plan_error_in_a_later_round_starts_nothing_new() {
    let sb = Sandbox::new(FERRY);
    // `b` and `d` wait on `a`; once `a` is created, `b` turns out to fail its schema. With one
    // job at a time `b` is planned first, and `d` is never started.
    write(
        &sb,
        "deployment.nix",
        r#"resources.a = { type = "local.exec"; inputs = { create = [ "sh" "-c" "echo '{\"out\": \"x\"}'" ]; outputNames = [ "out" ]; }; };
resources.b = { type = "local.file"; inputs = { path = "@DIR@/b.txt"; content = if resources.a.out == "x" then 5 else "s"; }; };
resources.d = { type = "local.file"; inputs = { path = "@DIR@/d.txt"; content = resources.a.out; }; };"#,
    );
    let r = sb.ferry(&["apply", "--yes", "-j", "1"]).expect(1);
    for needle in [
        "✗ b: resource `b` (local.file): inputs do not match the kind's schema",
        "- d: skipped: not started: a resource planned in a later round could not be planned",
    ] {
        assert!(r.all().contains(needle), "lacks {needle:?}:\n{}", r.all());
    }
    assert!(!sb.exists("b.txt") && !sb.exists("d.txt"));
    sb.ferry(&["state", "list"]).ok().says("a     local.exec  ready");
}
