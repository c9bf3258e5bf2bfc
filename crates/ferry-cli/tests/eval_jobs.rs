//! `--eval-jobs N`: a round's NixOS machines (kinds with heavy inputs) evaluated in chunks by
//! several `nix-instantiate` workers give the same plan as one process, with the invocation
//! count the chunking implies; a deployment without machines stays one process (issue 12).

use ferry_testkit::Sandbox;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// A key, four machines with stand-in systems that use it, and two files.
fn fleet(sb: &Sandbox) {
    let mut body = String::from(
        r#"{ resources, ... }:
let sys = n: derivation { name = "sys-${n}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${n} > $out" ]; };
in {
  resources.key = { type = "local.ssh-keypair"; inputs.comment = "k"; };
  resources.notes = { type = "local.file"; inputs = { path = "@DIR@/notes"; content = resources.key.publicKey; }; };
  resources.plain = { type = "local.file"; inputs = { path = "@DIR@/plain"; content = "plain"; }; };
"#,
    );
    for i in 1..=4 {
        body += &format!(
            "  resources.m{i} = {{ type = \"nixos.machine\"; inputs = {{ host = \"127.0.0.1\"; port = 1; system = sys \"m{i}\"; sshKey = resources.key.privateKey; }}; }};\n"
        );
    }
    sb.deployment(&(body + "}\n"));
}

#[test]
fn workers_plan_machines_like_one_process() {
    let one = Sandbox::new(FERRY);
    let two = Sandbox::new(FERRY);
    fleet(&one);
    fleet(&two);
    let strip = |s: &str, sb: &Sandbox| s.replace(&sb.path().display().to_string(), "DIR");
    let p1 = one.ferry(&["plan", "--eval-jobs", "1", "--timings"]).ok();
    let p2 = two.ferry(&["plan", "--eval-jobs", "2", "--timings"]).ok();
    assert_eq!(strip(&p1.stdout, &one), strip(&p2.stdout, &two));
    for i in 1..=4 {
        assert!(p2.stdout.contains(&format!("+ m{i} (nixos.machine)")), "{}", p2.stdout);
        assert!(p2.stdout.contains(&format!("-sys-m{i}")), "m{i}'s system shows: {}", p2.stdout);
    }
    // The machines and `notes` wait on the key.
    assert_eq!(p2.stdout.matches("# inputs depend on outputs not known yet").count(), 5, "{}", p2.stdout);
    assert!(p1.stderr.contains("timings: 1 Nix evaluation "), "{}", p1.stderr);
    // The first pass (the key, the files, the declarations), then the 4 machines in 2 chunks.
    assert!(p2.stderr.contains("timings: 3 Nix evaluations"), "{}", p2.stderr);
    let p3 = two.ferry(&["plan", "--eval-jobs", "3", "--timings"]).ok();
    assert_eq!(p3.stdout, p2.stdout);
    assert!(p3.stderr.contains("timings: 4 Nix evaluations"), "chunks of 2, 1 and 1: {}", p3.stderr);
    // The edges found in the workers are the same as in one process.
    let g1 = one.ferry(&["graph", "--json", "--eval-jobs", "1"]).ok().stdout;
    let g2 = two.ferry(&["graph", "--json", "--eval-jobs", "2"]).ok().stdout;
    assert_eq!(strip(&g1, &one), strip(&g2, &two));
    let edges: serde_json::Value = serde_json::from_str(&g2).unwrap();
    let edges = edges["edges"].to_string();
    for i in 1..=4 {
        assert!(edges.contains(&format!("\"m{i}\"")), "m{i} depends on the key: {edges}");
    }
}

/// Without machines, workers change nothing: one process per round, and the same apply.
#[test]
fn a_deployment_without_machines_is_one_process_with_any_workers() {
    let sb = Sandbox::new(FERRY);
    let mut body = String::from(
        "{ resources, ... }: {\n  resources.key = { type = \"local.ssh-keypair\"; inputs.comment = \"k\"; };\n",
    );
    for i in 1..=5 {
        body += &format!(
            "  resources.f{i} = {{ type = \"local.file\"; inputs = {{ path = \"@DIR@/f{i}\"; content = \"{i} \" + resources.key.publicKey; }}; }};\n"
        );
    }
    sb.deployment(&(body + "}\n"));
    let plan = sb.ferry(&["plan", "--eval-jobs", "4", "--timings"]).ok();
    assert!(plan.stderr.contains("timings: 1 Nix evaluation "), "{}", plan.stderr);
    let a = sb.ferry(&["apply", "--yes", "--eval-jobs", "4", "--timings"]).ok();
    assert!(a.stdout.contains("Apply complete: 6 created"), "{}", a.all());
    let key = sb.ferry(&["state", "show", "key", "--json"]).ok().stdout;
    let pubkey = serde_json::from_str::<serde_json::Value>(&key).unwrap()["outputs"]["publicKey"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 1..=5 {
        assert_eq!(sb.read(&format!("f{i}")).unwrap(), format!("{i} {pubkey}"));
    }
    let again = sb.ferry(&["plan", "--timings"]).ok();
    assert_eq!(again.stdout.trim(), "No changes.");
    assert!(again.stderr.contains("timings: 1 Nix evaluation "), "{}", again.stderr);
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
