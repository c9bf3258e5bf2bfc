//! Dependencies that reach an input only through a derivation (a derivation built from
//! `resources.key.publicKey`) are found and recorded like visible ones: state, `ferry graph`,
//! `--on`, `destroy --on` and destroy order — without extra Nix evaluations.

use ferry_testkit::Sandbox;
use serde_json::Value;

/// `use` holds the derivation as a value (`env.PUB`), `use2` only interpolates it into a string
/// (its value is gone, only string context remains); `other` is unrelated.
fn deployment(sb: &Sandbox) {
    let tag = sb.path().file_name().unwrap().to_string_lossy().to_string();
    sb.deployment(
        &r#"{ resources, ... }:
let
  pub = derivation {
    name = "ferry-hidden-dep-@TAG@";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo ${resources.key.publicKey} > $out" ];
  };
in {
  resources.key = { type = "local.ssh-keypair"; inputs.comment = "t"; };
  resources.other = { type = "local.file"; inputs = { path = "@DIR@/other"; content = "x"; }; };
  resources.use = { type = "local.exec"; inputs = {
    create = [ "sh" "-c" "cat \"$PUB\" > @DIR@/used" ];
    delete = [ "rm" "@DIR@/used" ];
    env.PUB = pub;
  }; };
  resources.use2 = { type = "local.exec"; inputs = {
    create = [ "sh" "-c" "cat ${pub} > @DIR@/used2" ];
    delete = [ "rm" "@DIR@/used2" ];
  }; };
}"#
        .replace("@TAG@", &tag),
    );
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Recorded dependencies per resource.
fn dependencies(sb: &Sandbox) -> Vec<(String, Vec<String>)> {
    let list = json(&sb.ferry(&["state", "list", "--json"]).ok().stdout);
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let deps = r["dependencies"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string());
            (r["name"].as_str().unwrap().to_string(), deps.collect())
        })
        .collect()
}

fn deps_of(sb: &Sandbox, name: &str) -> Option<Vec<String>> {
    dependencies(sb).into_iter().find(|(n, _)| n == name).map(|(_, d)| d)
}

/// Journal entries of the last run: (resource, op, phase).
fn last_run(sb: &Sandbox) -> Vec<(String, String, String)> {
    let log = json(&sb.ferry(&["state", "log", "--json"]).ok().stdout);
    let events = log.as_array().unwrap();
    let run = events.last().unwrap()["run"].clone();
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    events
        .iter()
        .filter(|e| e["run"] == run)
        .map(|e| (s(&e["resource"]), s(&e["op"]), s(&e["phase"])))
        .collect()
}

fn position(events: &[(String, String, String)], resource: &str, phase: &str) -> usize {
    events
        .iter()
        .position(|(r, op, p)| r == resource && op == "delete" && p == phase)
        .unwrap_or_else(|| panic!("no delete {phase} of {resource}: {events:?}"))
}

fn graph_has(sb: &Sandbox, edge: &str) -> bool {
    sb.ferry(&["graph"]).ok().stdout.contains(edge)
}

#[test]
fn a_dependency_through_a_derivation_value_is_found_before_and_after_apply() {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_ferry"));
    deployment(&sb);
    // Read-only (nothing written yet): the derivation value is walked in Nix.
    assert!(graph_has(&sb, r#""key" -> "use" [label="publicKey -> env"];"#));
    let plan = json(&sb.ferry(&["plan", "--json", "--on", "use"]).ok().stdout);
    let names: Vec<&str> =
        plan["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["key", "use"], "--on includes what `use` needs: {plan}");
    assert_eq!(plan["entries"][1]["dependsOn"], serde_json::json!(["key"]), "{plan}");

    // `--on use` applies the key it needs, not the unrelated file.
    let apply = sb.ferry(&["apply", "--yes", "--on", "use"]).ok();
    assert!(apply.stdout.contains("Apply complete: 2 created"), "{}", apply.all());
    assert!(sb.read("used").unwrap().starts_with("ssh-ed25519 "));
    assert!(!sb.exists("other"));
    assert_eq!(deps_of(&sb, "use"), Some(vec!["key".to_string()]));

    // Destroying the key takes its dependent with it, dependent first.
    let destroy = sb.ferry(&["destroy", "--yes", "--on", "key"]).ok();
    assert!(destroy.stdout.contains("Destroy complete: 2 destroyed"), "{}", destroy.all());
    let events = last_run(&sb);
    assert!(position(&events, "use", "ok") < position(&events, "key", "intent"), "{events:?}");
    assert!(!sb.exists("used"));
    assert!(dependencies(&sb).is_empty());
}

#[test]
fn a_dependency_through_an_interpolated_derivation_is_recorded_by_apply() {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_ferry"));
    deployment(&sb);
    // Apply writes the derivations it evaluates, so their closures are read: `--on use2` sees
    // that use2 needs the key, even though only a string context entry leads to it.
    let apply = sb.ferry(&["apply", "--yes", "--on", "use2", "--timings"]).ok();
    assert!(apply.stdout.contains("Apply complete: 2 created"), "{}", apply.all());
    assert!(sb.read("used2").unwrap().starts_with("ssh-ed25519 "));
    assert!(!sb.exists("used") && !sb.exists("other"));
    // `--on` evaluates only what the selection needs: the declarations pass, use2, then the
    // key its edges reach; after the key is created, use2's read-write round, checked
    // read-only first as the key's private half is sensitive (ADR 008): five runs.
    assert!(apply.stderr.contains("timings: 5 Nix evaluations"), "{}", apply.stderr);
    assert_eq!(deps_of(&sb, "use2"), Some(vec!["key".to_string()]));
    // Now that the .drv files exist, even the read-only graph has the edge.
    assert!(graph_has(&sb, r#""key" -> "use2" [label="publicKey -> create"];"#));

    // The rest; an up-to-date deployment is a single round (checked read-only first, as the
    // key's private half is sensitive: two evaluations).
    sb.ferry(&["apply", "--yes"]).ok();
    let noop = sb.ferry(&["apply", "--yes", "--timings"]).ok();
    assert!(noop.stderr.contains("timings: 2 Nix evaluations "), "{}", noop.stderr);
    assert_eq!(
        dependencies(&sb),
        vec![
            ("key".to_string(), vec![]),
            ("other".to_string(), vec![]),
            ("use".to_string(), vec!["key".to_string()]),
            ("use2".to_string(), vec!["key".to_string()]),
        ]
    );

    // `destroy --on use2` takes only use2 (dependencies stay); a full destroy deletes the
    // dependents before the key.
    let d = sb.ferry(&["destroy", "--yes", "--on", "use2"]).ok();
    assert!(d.stdout.contains("Destroy complete: 1 destroyed"), "{}", d.all());
    assert!(!sb.exists("used2") && sb.exists("used"));
    sb.ferry(&["apply", "--yes"]).ok();
    sb.ferry(&["destroy", "--yes"]).ok();
    let events = last_run(&sb);
    let key = position(&events, "key", "intent");
    assert!(position(&events, "use", "ok") < key && position(&events, "use2", "ok") < key, "{events:?}");
}

/// The motivating case: a system (the test kit's stand-in for a NixOS toplevel) whose config holds
/// a key's public key. Like NixOS, the system only interpolates its /etc tree into its build
/// script, so nothing but the `.drv` files leads from the system to the key.
#[test]
fn a_system_whose_config_holds_a_public_key_depends_on_the_key() {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_ferry"));
    let tag = sb.path().file_name().unwrap().to_string_lossy().to_string();
    sb.deployment(&format!(
        r#"{{ resources, ... }}: let t = import {tk} {{ }}; in {{
  resources.key = {{ type = "local.ssh-keypair"; inputs.comment = "t"; }};
  resources.sys = {{ type = "local.exec"; inputs = {{
    create = [ "sh" "-c" "cat \"$SYSTEM/etc/authorized_keys\" > @DIR@/authorized" ];
    env.SYSTEM = t.mkSystem {{
      name = "web-{tag}"; address = "127.0.0.10";
      etc.authorized_keys = resources.key.publicKey;
    }};
  }}; }};
}}"#,
        tk = ferry_testkit::testkit_nix(),
    ));
    let apply = sb.ferry(&["apply", "--yes", "--on", "sys", "--timings"]).ok();
    assert!(apply.stdout.contains("Apply complete: 2 created"), "{}", apply.all());
    // As above: declarations, sys, the key its edges reach, then sys's round checked first.
    assert!(apply.stderr.contains("timings: 5 Nix evaluations"), "{}", apply.stderr);
    assert!(sb.read("authorized").unwrap().starts_with("ssh-ed25519 "));
    assert_eq!(deps_of(&sb, "sys"), Some(vec!["key".to_string()]));
    assert!(graph_has(&sb, r#""key" -> "sys" [label="publicKey -> env"];"#));
    let destroy = sb.ferry(&["destroy", "--yes", "--on", "key"]).ok();
    assert!(destroy.stdout.contains("Destroy complete: 2 destroyed"), "{}", destroy.all());
    let events = last_run(&sb);
    assert!(position(&events, "sys", "ok") < position(&events, "key", "intent"), "{events:?}");
}

/// A cycle through derivations is reported as a cycle (it used to be two resources skipped for
/// inputs that "never became known").
#[test]
fn a_cycle_through_derivations_is_named() {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_ferry"));
    sb.deployment(
        r#"{ resources, ... }:
let d = n: x: derivation { name = "ferry-cycle-${n}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${x} > $out" ]; };
in {
  resources.a = { type = "local.exec"; inputs = { create = [ "echo" "${d "a" resources.b.v}" ]; outputNames = [ "v" ]; }; };
  resources.b = { type = "local.exec"; inputs = { create = [ "echo" "${d "b" resources.a.v}" ]; outputNames = [ "v" ]; }; };
}"#,
    );
    sb.ferry(&["apply", "--yes"]).expect(1).no_panic().says("dependency cycle: a -> b -> a");
    assert!(dependencies(&sb).is_empty(), "nothing applied");
}
