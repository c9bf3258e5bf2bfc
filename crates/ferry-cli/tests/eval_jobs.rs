//! `--eval-jobs N`: a round's resources evaluated in chunks by several `nix-instantiate`
//! workers give the same plan and the same apply as one process, with the invocation count
//! the chunking implies (issue 12).

use ferry_testkit::Sandbox;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

fn deployment(sb: &Sandbox) {
    let mut body = String::from(
        "{ resources, ... }: {\n  resources.key = { type = \"local.ssh-keypair\"; inputs.comment = \"k\"; };\n",
    );
    for i in 1..=5 {
        body += &format!(
            "  resources.f{i} = {{ type = \"local.file\"; inputs = {{ path = \"@DIR@/f{i}\"; content = \"{i} \" + resources.key.publicKey; }}; }};\n"
        );
    }
    body += "  resources.plain = { type = \"local.file\"; inputs = { path = \"@DIR@/plain\"; content = \"plain\"; }; };\n}\n";
    sb.deployment(&body);
}

#[test]
fn workers_plan_and_apply_like_one_process() {
    let one = Sandbox::new(FERRY);
    let two = Sandbox::new(FERRY);
    deployment(&one);
    deployment(&two);
    let strip = |s: &str, sb: &Sandbox| s.replace(&sb.path().display().to_string(), "DIR");
    let p1 = one.ferry(&["plan"]).ok();
    let p2 = two.ferry(&["plan", "--eval-jobs", "2", "--timings"]).ok();
    assert_eq!(strip(&p1.stdout, &one), strip(&p2.stdout, &two));
    assert!(p2.stdout.contains("key.publicKey"), "the dependency shows: {}", p2.stdout);
    // 7 resources over 2 workers: the declarations pass, then chunks of 4 and 3.
    assert!(p2.stderr.contains("timings: 3 Nix evaluations"), "{}", p2.stderr);

    let a = two.ferry(&["apply", "--yes", "--eval-jobs", "3"]).ok();
    assert!(a.stdout.contains("Apply complete: 7 created"), "{}", a.all());
    let key = two.ferry(&["state", "show", "key", "--json"]).ok().stdout;
    let pubkey = serde_json::from_str::<serde_json::Value>(&key).unwrap()["outputs"]["publicKey"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 1..=5 {
        assert_eq!(two.read(&format!("f{i}")).unwrap(), format!("{i} {pubkey}"));
    }
    let again = two.ferry(&["plan", "--eval-jobs", "2"]).ok();
    assert_eq!(again.stdout.trim(), "No changes.");
    // Dependencies recorded across chunks are the same as with one process.
    let deps = two.ferry(&["state", "show", "f3", "--json"]).ok().stdout;
    assert!(deps.contains("\"key\""), "{deps}");
}

/// Values Nix allocated in `ferry plan`'s (one) evaluation: deterministic, unlike time.
fn plan_values(sb: &Sandbox, with: &str) -> u64 {
    let stats = sb.path().join("stats.json");
    let out = sb
        .command(&["plan", "--timings"])
        .env("NIX_SHOW_STATS", "1")
        .env("NIX_SHOW_STATS_PATH", &stats)
        .output()
        .expect("ferry plan");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("timings: 1 Nix evaluation "), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(with), "{}", String::from_utf8_lossy(&out.stdout));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    v["values"]["number"].as_u64().unwrap()
}

/// A changed resource that used no output when last applied (a NixOS system, usually) is
/// evaluated once, not a second time for its edges, even while other resources lend outputs.
#[test]
fn a_changed_resource_without_dependencies_is_evaluated_once() {
    let sb = Sandbox::new(FERRY);
    let deployment = |salt: &str| {
        format!(
            r#"{{ resources, ... }}:
let big = builtins.foldl' (acc: i: acc + i) 0 (builtins.genList (i: i * {salt}) 300000); in {{
  resources.key = {{ type = "local.ssh-keypair"; inputs.comment = "k"; }};
  resources.uses = {{ type = "local.file"; inputs = {{ path = "@DIR@/uses"; content = resources.key.publicKey; }}; }};
  resources.big = {{ type = "local.file"; inputs = {{ path = "@DIR@/big"; content = toString big; }}; }};
}}"#
        )
    };
    sb.deployment(&deployment("2"));
    let fresh = plan_values(&sb, "+ big (local.file)");
    sb.ferry(&["apply", "--yes"]).ok();
    sb.deployment(&deployment("3"));
    let changed = plan_values(&sb, "~ big (local.file)");
    // Both plans evaluate `big` once; the edges view would add another 300,000-element list.
    assert!(
        changed < fresh + fresh / 4,
        "a changed plan allocated {changed} values, a fresh one {fresh}: `big` was evaluated twice"
    );
    // It still has no dependencies, and a resource that uses an output still has its edge.
    sb.ferry(&["apply", "--yes"]).ok();
    let graph = sb.ferry(&["graph", "--json"]).ok().stdout;
    assert!(graph.contains("\"uses\"") && graph.contains("\"key\""), "{graph}");
    let edges: serde_json::Value = serde_json::from_str(&graph).unwrap();
    let edges = edges["edges"].to_string();
    assert!(edges.contains("key") && !edges.contains("big"), "{edges}");
}
