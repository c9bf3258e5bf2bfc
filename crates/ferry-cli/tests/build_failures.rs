//! A failed build shows its cause (issue 12): the failing derivation and its builder's last
//! log lines, not a tail of "dependencies … failed" lines; it is reported at once, not after
//! everything else that could still be built (`--keep-going` asks for that); and a machine
//! whose own closure built fine is deployed although it shared the build with the failure.

use std::time::{Duration, Instant};

use ferry_testkit::host::{test_systems_nix, TestHost};
use ferry_testkit::Sandbox;

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

fn machine(name: &str, h: &TestHost, system: &str) -> String {
    format!(
        r#"  resources.{name} = {{ type = "nixos.machine"; inputs = {{
    host = "{addr}"; port = {port}; sshKey = "{key}"; system = {system};
  }}; }};
"#,
        addr = h.addr(),
        port = h.port(),
        key = h.client_key().display(),
    )
}

#[test]
fn a_failed_build_names_the_derivation_shows_its_log_and_does_not_wait() {
    let sb = Sandbox::new(BIN);
    let base = sb.path().join("hosts");
    std::fs::create_dir_all(&base).unwrap();
    let good = TestHost::start(&base, "good").expect("host");
    let bad = TestHost::start(&base, "bad").expect("host");
    let nonce = format!("{}-{}", std::process::id(), sb.path().display().to_string().len());
    // The broken system needs a derivation that fails at once and one that takes 60 s: with
    // `--keep-going` (as on main) the failure was reported only after the slow one finished.
    let broken = format!(
        r#"(let
      sh = args: name: derivation {{ inherit name; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" args ]; }};
      slow = sh "sleep 60; echo > $out" "slow-{nonce}";
      fail = sh "echo compiling the frobnicator; echo 'fatal: frobnicator.h not found' >&2; exit 3" "broken-{nonce}";
    in derivation {{ name = "system-{nonce}"; system = builtins.currentSystem; builder = "/bin/sh";
      args = [ "-c" "echo ${{slow}} ${{fail}} > $out" ]; }})"#
    );
    sb.deployment(&format!(
        "{{ resources, ... }}:\nlet t = import {} {{ }}; in {{\n{}{}}}\n",
        test_systems_nix().display(),
        machine("good", &good, &format!(r#"t.mkSystem {{ name = "good"; address = "{}"; }}"#, good.addr())),
        machine("bad", &bad, &broken),
    ));
    let start = Instant::now();
    let r = sb.ferry(&["apply", "--yes", "--max-jobs", "4"]).expect(1);
    let took = start.elapsed();
    let out = r.all();
    assert!(
        out.contains("derivation /nix/store/")
            && out.contains(&format!("-broken-{nonce}.drv: builder failed with exit code 3")),
        "{out}"
    );
    assert!(out.contains("fatal: frobnicator.h not found"), "the builder's log is not shown:\n{out}");
    assert!(out.contains("nix-store --read-log"), "{out}");
    assert!(!out.contains("dependencies of derivation"), "consequences shown instead of the cause:\n{out}");
    assert!(took < Duration::from_secs(45), "the failure waited for the slow build: {took:?}\n{out}");
    // The good machine shared the build but not the failure: it is deployed.
    assert!(out.contains("[good] create: done"), "{out}");
    let profile = good.exec("readlink -f /nix/var/nix/profiles/system");
    assert!(String::from_utf8_lossy(&profile.stdout).contains("-good"), "{profile:?}");
}

/// `--timings` counts the builds providers run (a machine's system), not only ferry's own.
#[test]
fn timings_count_the_machines_builds() {
    let sb = Sandbox::new(BIN);
    let base = sb.path().join("hosts");
    std::fs::create_dir_all(&base).unwrap();
    let h = TestHost::start(&base, "web").expect("host");
    // A system no earlier run built: its name is new.
    let nonce = format!("{}-{}", std::process::id(), sb.path().file_name().unwrap().to_string_lossy());
    sb.deployment(&format!(
        "{{ resources, ... }}:\nlet t = import {} {{ }}; in {{\n{}}}\n",
        test_systems_nix().display(),
        machine("web", &h, &format!(r#"t.mkSystem {{ name = "timed-{nonce}"; address = "{}"; }}"#, h.addr())),
    ));
    let r = sb.ferry(&["apply", "--yes", "--timings"]).ok();
    let line = r.stderr.lines().find(|l| l.starts_with("timings: ")).expect("a timings line").to_string();
    let builds: u32 = line
        .split(", ")
        .find_map(|part| {
            part.strip_suffix(')').and_then(|p| p.split_once(" build")).map(|(n, _)| n.to_string())
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no build count in {line:?}"));
    assert!(builds >= 1, "the machine's build is not counted: {line}");
    // Nothing to build the second time.
    let again = sb.ferry(&["apply", "--yes", "--timings"]).ok();
    assert!(again.stderr.contains(", 0 builds (0s),"), "{}", again.stderr);
}
