//! Evaluator workers against the real `nix-instantiate`: resources of heavy kinds spread over
//! worker processes give the same round as one process; everything else stays in one.

use ferry_eval::*;
use serde_json::json;
use std::collections::BTreeMap;

const FLEET: &str = r#"{ resources, ... }: {
  resources.key = { type = "local.file"; inputs = { path = "/tmp/k"; content = "k"; }; };
  resources.m1 = { type = "test.machine"; inputs = { system = "s1"; key = resources.key.sha256; }; tags = [ "web" ]; };
  resources.m2 = { type = "test.machine"; inputs.system = "s2"; };
  resources.m3 = { type = "test.machine"; inputs = { system = "s3"; peer = resources.m2.host; }; };
  resources.notes = { type = "local.file"; inputs = { path = "/tmp/n"; content = resources.m1.host; }; };
}"#;

fn request(dir: &tempfile::TempDir, text: &str) -> RoundRequest {
    std::fs::write(dir.path().join("deployment.nix"), text).unwrap();
    let mut schemas = BTreeMap::new();
    let kind = |outputs: &[&str], heavy| KindOutputs {
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
        output_names_input: None,
        heavy,
    };
    schemas.insert("local.file".to_string(), kind(&["path", "sha256"], false));
    schemas.insert("test.machine".to_string(), kind(&["host"], true));
    RoundRequest {
        file: dir.path().join("deployment.nix"),
        schemas,
        want_declarations: true,
        want_previews: true,
        want_edges: true,
        ..Default::default()
    }
}

fn nix(jobs: usize) -> NixCli {
    NixCli::new(NixSettings { eval_jobs: jobs, ..Default::default() }).unwrap()
}

#[test]
fn heavy_resources_spread_over_workers_give_the_same_round() {
    let dir = tempfile::tempdir().unwrap();
    let mut req = request(&dir, FLEET);
    let (one, two) = (nix(1), nix(2));
    let a = one.round(&req).unwrap();
    let b = two.round(&req).unwrap();
    assert_eq!(a.declarations, b.declarations);
    assert_eq!(a.names, b.names);
    assert_eq!(a.results, b.results);
    assert_eq!(b.results.len(), 5, "every resource evaluated: {:?}", b.results.keys());
    assert!(b.results["m2"].inputs.is_some() && b.results["m1"].inputs.is_none());
    let edges = find_placeholders(b.results["m3"].edges.as_ref().unwrap());
    assert_eq!(edges, vec![Placeholder { resource: "m2".into(), output: "host".into() }]);
    // One process, against the first pass plus the three machines in chunks of 2 and 1.
    assert_eq!((one.stats().evaluations, two.stats().evaluations), (1, 3));

    // A later round with known outputs: the same again; with one machine pending, one process.
    req.want_declarations = false;
    req.known.insert("key".into(), json!({"path": "/tmp/k", "sha256": "K"}).as_object().unwrap().clone());
    req.known.insert("m2".into(), json!({"host": "h2"}).as_object().unwrap().clone());
    req.pending = Some(vec!["m1".into(), "m3".into(), "notes".into()]);
    let (a, b) = (one.round(&req).unwrap(), two.round(&req).unwrap());
    assert_eq!(a.results, b.results);
    assert_eq!(b.results["m3"].inputs.as_ref().unwrap()["peer"], json!("h2"));
    assert_eq!(two.stats().evaluations, 3 + 3, "the first pass and two chunks of one");
    req.pending = Some(vec!["m1".into(), "notes".into()]);
    let b = two.round(&req).unwrap();
    assert_eq!(b.results["m1"].inputs.as_ref().unwrap()["key"], json!("K"));
    assert_eq!(two.stats().evaluations, 6 + 1, "one heavy resource is not worth a worker");
}

#[test]
fn a_round_without_heavy_resources_is_one_process_whatever_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    let mut body = String::from("{ resources, ... }: {\n");
    for i in 0..12 {
        body += &format!("  resources.f{i} = {{ type = \"local.file\"; inputs = {{ path = \"/tmp/f{i}\"; content = \"{i}\"; }}; }};\n");
    }
    body += "}\n";
    let req = request(&dir, &body);
    let ev = nix(4);
    let r = ev.round(&req).unwrap();
    assert_eq!(r.results.len(), 12);
    assert_eq!(r.declarations.map(|d| d.len()), Some(12));
    assert_eq!(ev.stats().evaluations, 1);
}

#[test]
fn a_mistake_in_a_heavy_resource_is_reported_as_with_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let text = FLEET.replace(r#"inputs.system = "s2";"#, r#"inputs.system = throw "m2 is broken";"#);
    let req = request(&dir, &text);
    let (a, b) = (nix(1).round(&req).unwrap(), nix(2).round(&req).unwrap());
    assert_eq!(a.results, b.results);
    assert!(b.results["m2"].undetermined, "the throw is left to the probe: {:?}", b.results["m2"]);
    // A type that is not a string is not deferred: the first pass reports it, as one process does.
    let text = FLEET
        .replace(r#"type = "test.machine"; inputs.system = "s2";"#, r#"type = 5; inputs.system = "s2";"#);
    let req = request(&dir, &text);
    let e1 = nix(1).round(&req).unwrap_err().to_string();
    let e2 = nix(2).round(&req).unwrap_err().to_string();
    assert_eq!(e1, e2);
    assert!(e2.contains("resource `m2`") && e2.contains("`type` must be a string"), "{e2}");
}
