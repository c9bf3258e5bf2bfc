//! The evaluator against the real `nix-instantiate`: staged rounds, placeholders, errors.

use ferry_eval::*;
use serde_json::json;
use std::collections::BTreeMap;

fn schemas() -> BTreeMap<String, KindOutputs> {
    let mut m = BTreeMap::new();
    m.insert(
        "local.file".into(),
        KindOutputs { outputs: vec!["path".into(), "sha256".into()], output_names_input: None, heavy: false },
    );
    m.insert(
        "local.exec".into(),
        KindOutputs { outputs: vec![], output_names_input: Some("outputNames".into()), heavy: false },
    );
    m
}

fn setup(files: &[(&str, &str)]) -> (tempfile::TempDir, RoundRequest) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let req = RoundRequest {
        file: dir.path().join("deployment.nix"),
        schemas: schemas(),
        want_declarations: true,
        want_previews: true,
        want_edges: true,
        ..Default::default()
    };
    (dir, req)
}

const CHAIN: &str = r#"{ resources, ... }: {
  imports = [ ./more.nix ];
  resources.a = { type = "local.file"; inputs = { path = "/tmp/a"; content = "hi"; }; };
  resources.b = { type = "local.exec"; inputs = { create = [ "echo" resources.a.sha256 ]; outputNames = [ "x" ]; }; tags = [ "web" ]; };
  resources.c = { type = "local.file"; inputs = { path = "/tmp/c"; content = "${resources.b.x}!"; }; };
}"#;
const MORE: &str = r#"{ resources, ... }: { resources.d = { type = "local.file"; inputs = { path = "/tmp/d"; content = resources.c.sha256; }; }; }"#;

/// With the `processes` library (the processes provider's; ferry-eval knows no provider), as
/// the CLI configures it.
fn nix() -> NixCli {
    let files = [
        ("processes.nix", include_str!("../../ferry-provider-processes/nix/processes.nix")),
        ("processes-image.nix", include_str!("../../ferry-provider-processes/nix/processes-image.nix")),
    ];
    let processes = ferry_eval::NixLibrary {
        name: "processes".into(),
        entry: "processes.nix".into(),
        files: files.iter().map(|(f, s)| (f.to_string(), s.to_string())).collect(),
    };
    NixCli::new(NixSettings { libraries: vec![processes], ..Default::default() }).unwrap()
}

#[test]
fn rounds_follow_the_dependency_chain() {
    let (_d, mut req) = setup(&[("deployment.nix", CHAIN), ("more.nix", MORE)]);
    let ev = nix();
    let r = ev.round(&req).unwrap();
    let decls = r.declarations.unwrap();
    assert_eq!(decls.len(), 4);
    assert_eq!(decls["b"].tags, vec!["web".to_string()]);
    assert!(decls["d"].file.ends_with("more.nix"));
    assert!(r.results["a"].inputs.is_some());
    for n in ["b", "c", "d"] {
        assert!(r.results[n].inputs.is_none(), "{n} must wait");
    }
    // Placeholder preview and visible edges.
    let prev = r.results["c"].preview.as_ref().unwrap();
    assert_eq!(prev["content"], Some(json!("<ferry:unknown:b:x>!")));
    assert_eq!(r.results["c"].unknown_inputs, vec!["content".to_string()]);
    let edges = find_placeholders(r.results["b"].edges.as_ref().unwrap());
    assert_eq!(edges, vec![Placeholder { resource: "a".into(), output: "sha256".into() }]);

    // Round 2: a's outputs are known, so b becomes ready with the real value.
    req.want_declarations = false;
    req.known.insert("a".into(), json!({"path": "/tmp/a", "sha256": "H"}).as_object().unwrap().clone());
    req.pending = Some(vec!["b".into(), "c".into(), "d".into()]);
    let r = ev.round(&req).unwrap();
    assert_eq!(r.results["b"].inputs.as_ref().unwrap()["create"], json!(["echo", "H"]));
    assert!(r.results["c"].inputs.is_none());
    assert_eq!(ev.stats().evaluations, 2);
}

#[test]
fn recorded_outputs_are_lent_only_to_unchanged_resources() {
    let (_d, mut req) = setup(&[("deployment.nix", CHAIN), ("more.nix", MORE)]);
    let rec = |i: serde_json::Value, o: serde_json::Value| Recorded {
        inputs: i.as_object().unwrap().clone(),
        outputs: o.as_object().unwrap().clone(),
        no_dependencies: false,
    };
    req.recorded.insert(
        "a".into(),
        rec(json!({"content": "hi", "path": "/tmp/a"}), json!({"path": "/tmp/a", "sha256": "H"})),
    );
    req.recorded
        .insert("b".into(), rec(json!({"create": ["echo", "H"], "outputNames": ["x"]}), json!({"x": "X"})));
    req.recorded.insert(
        "c".into(),
        rec(json!({"content": "OLD!", "path": "/tmp/c"}), json!({"path": "/tmp/c", "sha256": "C"})),
    );
    req.recorded.insert(
        "d".into(),
        rec(json!({"content": "C", "path": "/tmp/d"}), json!({"path": "/tmp/d", "sha256": "D"})),
    );
    let r = nix().round(&req).unwrap();
    assert!(r.results["a"].stable && r.results["b"].stable);
    // c's inputs changed (X! != OLD!), so its recorded outputs are not lent: d waits.
    assert!(r.results["c"].inputs.is_some() && !r.results["c"].stable);
    assert!(r.results["d"].inputs.is_none());
    // With b marked unstable, c waits too.
    req.unstable = vec!["b".into()];
    let r = nix().round(&req).unwrap();
    assert!(r.results["c"].inputs.is_none());
}

#[test]
fn derivations_are_caught_by_throw_mode_and_carry_context() {
    let dep = r#"{ resources, ... }: let
      drv = x: derivation { name = "t"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${x} > $out" ]; };
    in {
      resources.k = { type = "local.file"; inputs = { path = "/tmp/k"; content = "k"; }; };
      resources.s = { type = "local.file"; inputs = { path = "/tmp/s"; content = "${drv resources.k.sha256}"; }; };
      resources.t = { type = "local.file"; inputs = { path = "/tmp/t"; content = "${drv "fixed"}"; }; };
    }"#;
    let (_d, req) = setup(&[("deployment.nix", dep)]);
    let r = nix().round(&req).unwrap();
    // The hidden dependency inside a derivation still makes `s` wait.
    assert!(r.results["s"].inputs.is_none());
    let t = &r.results["t"];
    assert!(t.inputs.is_some());
    assert_eq!(t.context.len(), 1);
    assert!(t.context.keys().next().unwrap().ends_with(".drv"));
}

#[test]
fn duplicate_names_and_user_errors() {
    let (_d, req) = setup(&[
        (
            "deployment.nix",
            r#"{ ... }: { imports = [ ./x.nix ]; resources.a = { type = "local.file"; inputs = {}; }; }"#,
        ),
        ("x.nix", r#"{ resources.a = { type = "local.file"; inputs = {}; }; }"#),
    ]);
    let r = nix().round(&req).unwrap();
    let a = &r.declarations.unwrap()["a"];
    assert_eq!(a.files.len(), 2);
    assert!(a.files.iter().any(|f| f.ends_with("x.nix")));

    let (_d, req) = setup(&[("deployment.nix", r#"{ ... }: { resources.a = { inputs = {}; }; }"#)]);
    let e = nix().round(&req).unwrap_err();
    assert!(e.is_user_error());
    assert!(e.to_string().contains("resource `a`") && e.to_string().contains("has no `type`"), "{e}");

    let (_d, req) = setup(&[(
        "deployment.nix",
        "{ ... }: { resources.a = { type = \"local.file\"\n; inputs = { }; ; }; }",
    )]);
    let e = nix().round(&req).unwrap_err();
    assert!(e.to_string().contains("deployment.nix:2"), "syntax error with file:line: {e}");
}

#[test]
fn nested_outputs_from_an_attrset_names_input() {
    // ids.pool-like: `claimants` = { CLAIMANT = [ POOL ... ]; } gives outputs POOL.CLAIMANT.
    let dep = r#"{ resources, ferry, ... }: {
      resources.ids = { type = "ids.pool"; inputs = { pools.ports = { min = 1; max = 9; }; claimants = { web = [ "ports" ]; db = [ "ports" "uids" ]; }; }; };
      resources.f = { type = "local.file"; inputs = { path = "/tmp/f"; content = "${toString resources.ids.ports.web} ${toString resources.ids.uids.db}"; }; };
    }"#;
    let (_d, mut req) = setup(&[("deployment.nix", dep)]);
    req.schemas.insert(
        "ids.pool".into(),
        KindOutputs { outputs: vec![], output_names_input: Some("claimants".into()), heavy: false },
    );
    let r = nix().round(&req).unwrap();
    assert!(r.results["ids"].inputs.is_some());
    let f = &r.results["f"];
    assert!(f.inputs.is_none(), "f waits for the pool");
    assert_eq!(
        f.preview.as_ref().unwrap()["content"],
        Some(json!("<ferry:unknown:ids:ports.web> <ferry:unknown:ids:uids.db>"))
    );
    let edges = find_placeholders(f.edges.as_ref().unwrap());
    assert_eq!(edges.len(), 2);
    assert!(edges.iter().all(|p| p.resource == "ids"));
    // Once known, the real nested outputs flow in.
    req.known.insert(
        "ids".into(),
        json!({"ports": {"web": 5000, "db": 5001}, "uids": {"db": 2000}}).as_object().unwrap().clone(),
    );
    req.pending = Some(vec!["f".into()]);
    let r = nix().round(&req).unwrap();
    assert_eq!(r.results["f"].inputs.as_ref().unwrap()["content"], json!("5000 2000"));
}

#[test]
fn processes_library_validates_the_model() {
    let t = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ferry-testkit/nix");
    let model = |procs: &str, manager: &str| {
        format!(
            r#"{{ ferry, ... }}: let p = ferry.lib.processes; t = import {t} {{ }}; in {{
              resources.s = {{ type = "local.file"; inputs = p.set {{ pkgs = t.pkgs; manager = "{manager}"; name = "s"; stateDir = "/tmp/s"; processes = {{ {procs} }}; }}; }};
            }}"#,
            t = t.display()
        )
    };
    let cases = [
        (model(r#"a = p.mkProcess { command = [ "x" ]; };"#, "runit"), "unknown manager `runit`"),
        (
            model(r#"a = p.mkProcess { command = [ "x" ]; dependsOn = [ "b" ]; };"#, "s6"),
            "depends on `b`, which is not a process of this set",
        ),
        (
            model(
                r#"a = p.mkProcess { command = [ "x" ]; dependsOn = [ "b" ]; }; b = p.mkProcess { command = [ "y" ]; dependsOn = [ "a" ]; };"#,
                "s6",
            ),
            "dependency cycle among processes: a, b",
        ),
        (
            model(r#"a = p.mkProcess { command = [ "x" ]; user = "Bad User"; };"#, "sysvinit"),
            "invalid user name `Bad User`",
        ),
    ];
    for (text, want) in cases {
        let (_d, req) = setup(&[("deployment.nix", &text)]);
        match nix().round(&req) {
            Err(e) => assert!(e.to_string().contains(want), "{want}: {e}"),
            Ok(r) => panic!("{want}: evaluated: {:?}", r.results["s"].inputs),
        }
    }
    let (_d, req) = setup(&[(
        "deployment.nix",
        &model(
            r#"a = p.mkProcess { command = [ "x" ]; }; b = p.mkProcess { command = [ "y" ]; dependsOn = [ "a" ]; };"#,
            "supervisord",
        ),
    )]);
    let r = nix().round(&req).unwrap();
    let inputs = r.results["s"].inputs.as_ref().unwrap();
    assert_eq!(inputs["manager"], json!("supervisord"));
    assert!(inputs["profile"].as_str().unwrap().starts_with("/nix/store/"));
    assert!(inputs["processes"]["b"]["config"].as_str().unwrap().starts_with("/nix/store/"));
    assert_eq!(inputs["processes"]["b"]["dependsOn"], json!(["a"]));
}

#[test]
fn dependencies_hidden_in_derivations_are_found() {
    // `v` holds the derivation as a value (found by the walk through drvAttrs, read-only);
    // `s` only interpolates it (the value is gone: found from the .drv files once written).
    // The unique name keeps this test's .drv files its own.
    let tag = format!("{}-{}", std::process::id(), std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos());
    let dep = format!(
        r#"{{ resources, ... }}: let
      inner = derivation {{ name = "inner-{tag}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${{resources.k.sha256}} > $out" ]; }};
      outer = derivation {{ name = "outer-{tag}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "cat ${{inner}} > $out" ]; deps = [ inner ]; }};
    in {{
      resources.k = {{ type = "local.file"; inputs = {{ path = "/tmp/k"; content = "k"; }}; }};
      resources.v = {{ type = "local.file"; inputs = {{ path = "/tmp/v"; content = outer; }}; }};
      resources.s = {{ type = "local.file"; inputs = {{ path = "/tmp/s"; content = "x${{outer}}"; }}; }};
    }}"#
    );
    let (_d, mut req) = setup(&[("deployment.nix", &dep)]);
    let k =
        || std::collections::BTreeSet::from([Placeholder { resource: "k".into(), output: "sha256".into() }]);
    let r = nix().round(&req).unwrap();
    // Two derivations deep, through a derivation value in drvAttrs.
    assert_eq!(r.results["v"].hidden.get("content"), Some(&k()));
    assert!(find_placeholders(r.results["v"].edges.as_ref().unwrap()).is_empty(), "not visible");
    assert!(r.results["s"].hidden.is_empty(), "read-only: the .drv files are not written");
    assert!(r.results["k"].hidden.is_empty());

    // Writing .drv files (apply): both are read from the store, without walking in Nix.
    req.write_drvs = true;
    let ev = nix();
    let r = ev.round(&req).unwrap();
    assert_eq!(r.results["v"].hidden.get("content"), Some(&k()));
    assert_eq!(r.results["s"].hidden.get("content"), Some(&k()));
    assert_eq!(ev.stats().evaluations, 1);
    // A read-only round now finds `s` too: the files are in the store (and the walk for `v`
    // stops at the stored `outer`, whose closure is read instead).
    req.write_drvs = false;
    let r = nix().round(&req).unwrap();
    assert_eq!(r.results["s"].hidden.get("content"), Some(&k()));
    assert_eq!(r.results["v"].hidden.get("content"), Some(&k()));
    // Without edges asked for (stable resources), no hidden edges either.
    req.want_edges = false;
    let r = nix().round(&req).unwrap();
    assert!(r.results["v"].hidden.is_empty() && r.results["v"].edges.is_none());
}

#[test]
fn the_walk_hands_derivations_already_in_the_store_to_the_drv_reader() {
    // `wrap` (held as a value) holds `outer` as a value; `outer` only interpolates `inner`, which
    // is built from the placeholder. Read-only, the walk cannot see past `outer`'s strings; once
    // `outer`'s .drv is in the store (written here by a plain nix-instantiate), the walk stops
    // there and its closure is read from the store.
    let tag = format!("{}-{}", std::process::id(), std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos());
    let mk = format!(
        r#"{{ x }}: rec {{
      d = name: a: derivation ({{ name = "${{name}}-{tag}"; system = builtins.currentSystem; builder = "/bin/sh"; }} // a);
      inner = d "inner" {{ args = [ "-c" "echo ${{x}} > $out" ]; }};
      outer = d "outer" {{ args = [ "-c" "cat ${{inner}} > $out" ]; }};
      wrap = d "wrap" {{ args = [ "-c" "touch $out" ]; deps = [ outer ]; }};
    }}"#
    );
    let dep = r#"{ resources, ... }: {
      resources.k = { type = "local.file"; inputs = { path = "/tmp/k"; content = "k"; }; };
      resources.w = { type = "local.file"; inputs = { path = "/tmp/w"; content = (import ./mk.nix { x = resources.k.sha256; }).wrap; }; };
    }"#;
    let (d, req) = setup(&[("deployment.nix", dep), ("mk.nix", &mk)]);
    let r = nix().round(&req).unwrap();
    assert!(r.results["w"].hidden.is_empty(), "{:?}", r.results["w"].hidden);

    let out = std::process::Command::new("nix-instantiate")
        .arg(d.path().join("mk.nix"))
        .args(["--argstr", "x", "<ferry:unknown:k:sha256>", "-A", "outer"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = nix().round(&req).unwrap();
    let want =
        std::collections::BTreeSet::from([Placeholder { resource: "k".into(), output: "sha256".into() }]);
    assert_eq!(r.results["w"].hidden.get("content"), Some(&want));
}
