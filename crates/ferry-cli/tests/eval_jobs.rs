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
