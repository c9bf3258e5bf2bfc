//! Rollout flags of `ferry apply`: `--batch N` (change N resources at a time; a batch with a
//! failure stops the run) and `--fail-fast` (no new work after the first failure).

use ferry_testkit::Sandbox;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// Six independent resources `r1`..`r6`; each appends its name to `log` when created; `r2`
/// fails. Names sort in dispatch order.
fn six(sb: &Sandbox) {
    let mut s = String::from("{ ... }: {\n");
    for i in 1..=6 {
        let fail = if i == 2 { "; exit 1" } else { "; echo '{}'" };
        s += &format!(
            "  resources.r{i} = {{ type = \"local.exec\"; inputs.create = [ \"sh\" \"-c\" \"echo r{i} >> @DIR@/log{fail}\" ]; }};\n"
        );
    }
    sb.deployment(&(s + "}\n"));
}

fn created(sb: &Sandbox) -> Vec<String> {
    sb.read("log").unwrap_or_default().lines().map(str::to_string).collect()
}

#[test]
fn batches_stop_after_the_first_failing_batch() {
    let sb = Sandbox::new(FERRY);
    six(&sb);
    let r = sb.ferry(&["apply", "--yes", "--batch", "2"]).expect(1);
    assert!(r.stderr.contains("a batch failed (--batch)"), "{}", r.stderr);
    // Batch 1 = r1, r2 (r2 fails): nothing else starts.
    let mut c = created(&sb);
    c.sort();
    assert_eq!(c, ["r1", "r2"], "{}", r.stderr);
    // Without --batch, the failure stops only itself.
    sb.ferry(&["apply", "--yes"]).expect(1);
    assert!(created(&sb).contains(&"r6".to_string()));
}

#[test]
fn a_good_rollout_in_batches_runs_every_batch() {
    let sb = Sandbox::new(FERRY);
    let mut s = String::from("{ ... }: {\n");
    for i in 1..=5 {
        s += &format!(
            "  resources.r{i} = {{ type = \"local.exec\"; inputs.create = [ \"sh\" \"-c\" \"echo r{i} >> @DIR@/log; echo '{{}}'\" ]; }};\n"
        );
    }
    sb.deployment(&(s + "}\n"));
    sb.ferry(&["apply", "--yes", "--batch", "2"]).ok().says("5 created");
    assert_eq!(created(&sb).len(), 5);
}

#[test]
fn fail_fast_starts_nothing_after_a_failure() {
    let sb = Sandbox::new(FERRY);
    six(&sb);
    let r = sb.ferry(&["apply", "--yes", "--jobs", "1", "--fail-fast"]).expect(1);
    assert!(r.stderr.contains("--fail-fast"), "{}", r.stderr);
    let c = created(&sb);
    assert_eq!(c, ["r1", "r2"], "{}", r.stderr);
    // Without --fail-fast the others go on.
    let r = sb.ferry(&["apply", "--yes", "--jobs", "1"]).expect(1);
    let c = created(&sb);
    for n in ["r3", "r4", "r5", "r6"] {
        assert!(c.contains(&n.to_string()), "{c:?}\n{}", r.stderr);
    }
}
