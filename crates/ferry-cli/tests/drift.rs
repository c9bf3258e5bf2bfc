//! Drift is never accepted: whatever `read` (and so `ferry refresh`) reports as drift, `plan`
//! plans as a change, and a failed or interrupted operation is never taken as done later.
//! Through the real binary: machines on test hosts (real sshd, Nix, switch-to-configuration),
//! a container under the real systemd-nspawn on a test host, and an external provider.

use std::time::Duration;

use ferry_testkit::host::{test_systems_nix, TestHost};
use ferry_testkit::{fake_provider, http_get, kill9, wait_until, Run, Sandbox};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

fn sh(h: &TestHost, script: &str) -> String {
    let o = h.exec(script);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn outputs(sb: &Sandbox, name: &str) -> Value {
    let r = sb.ferry(&["state", "show", name, "--json"]).ok();
    let v: Value = serde_json::from_str(&r.stdout).expect("state show --json");
    v["outputs"].clone()
}

fn refresh(sb: &Sandbox) -> Value {
    let r = sb.ferry(&["refresh", "--json"]).ok();
    serde_json::from_str(&r.stdout).expect("refresh --json")
}

/// Every resource `refresh --json` reports, as `name -> status`.
fn refresh_statuses(sb: &Sandbox) -> Vec<(String, String)> {
    refresh(sb)["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| {
            (r["name"].as_str().unwrap_or("").to_string(), r["status"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

fn plan_summary(sb: &Sandbox) -> Value {
    let r = sb.ferry(&["plan", "--json"]).ok();
    let v: Value = serde_json::from_str(&r.stdout).expect("plan --json");
    v["summary"].clone()
}

/// Whether a process whose command line mentions both `a` and `b` runs on this machine.
fn process_running(a: &str, b: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else { return false };
    dir.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
            let c = String::from_utf8_lossy(&c);
            c.contains(a) && c.contains(b)
        })
    })
}

fn machines(hs: &[TestHost], version: &str) -> String {
    let mut s =
        format!("{{ resources, ... }}:\nlet t = import {} {{ }}; in {{\n", test_systems_nix().display());
    for (i, h) in hs.iter().enumerate() {
        // v2's activation announces itself and waits until the test lets it go.
        let hook = if version == "v1" {
            String::new()
        } else {
            r#"activationHook = "touch /run/drift-activating; while [ ! -e /run/drift-go ]; do sleep 0.1; done; rm -f /run/drift-activating";"#.into()
        };
        s += &format!(
            r#"  resources.m{i} = {{
    type = "nixos.machine";
    inputs = {{
      host = "{addr}"; port = {port}; sshKey = "{key}";
      system = t.mkSystem {{ name = "drift-m{i}"; address = "{addr}"; pages."index.html" = "{version}"; {hook} }};
      rollback.magic.enable = false;
    }};
  }};
"#,
            addr = h.addr(),
            port = h.port(),
            key = h.client_key().display(),
        );
    }
    s + "}\n"
}

#[test]
fn machines_activated_by_a_killed_apply_are_converged_not_accepted() {
    let sb = Sandbox::new(BIN);
    let base = sb.path().join("hosts");
    std::fs::create_dir_all(&base).expect("hosts dir");
    let hs: Vec<TestHost> =
        ["da", "db"].iter().map(|n| TestHost::start(&base, n).expect("start test host")).collect();
    sb.deployment(&machines(&hs, "v1"));
    sb.ferry(&["apply", "--yes"]).ok().says("2 created");

    // v2: kill ferry while both hosts are in the middle of activating it.
    sb.deployment(&machines(&hs, "v2"));
    let mut child = sb.spawn(&["apply", "--yes", "--jobs", "2"]);
    wait_until(Duration::from_secs(120), "both activations to start", || {
        hs.iter().all(|h| sh(h, "test -e /run/drift-activating && echo yes") == "yes")
    });
    kill9(&mut child);
    // The activations ferry started finish on the hosts without it.
    for h in &hs {
        sh(h, "touch /run/drift-go");
    }
    wait_until(Duration::from_secs(60), "the orphaned activations to end", || {
        !process_running("nixos-system-drift-m", "switch-to-configuration")
    });
    let v2: Vec<String> = hs.iter().map(|h| sh(h, "readlink -f /run/current-system")).collect();
    for (h, cur) in hs.iter().zip(&v2) {
        assert_eq!(
            sh(h, "readlink -f /nix/var/nix/profiles/system"),
            *cur,
            "profile and running system agree"
        );
        assert!(http_get(h.addr(), 8080, "/").is_some_and(|b| b.contains("v2")), "the host runs v2");
    }

    // State still records v1 (with the interrupted update pending): refresh reports drift, and
    // plan agrees that both machines change.
    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.stdout.contains("Plan: 0 to create, 2 to update"), "{}", plan.stdout);
    assert!(refresh_statuses(&sb).iter().all(|(_, s)| s == "drifted"), "{}", refresh(&sb));
    assert!(sb.ferry(&["plan"]).ok().stdout.contains("2 to update"), "refresh accepted nothing");

    // The next apply converges: it records what is really deployed, or deploys it again.
    let r = sb.ferry(&["apply", "--yes"]).ok();
    assert!(!r.stdout.contains("No changes"), "{}", r.all());
    for (i, (h, cur)) in hs.iter().zip(&v2).enumerate() {
        let o = outputs(&sb, &format!("m{i}"));
        assert_eq!(o["systemPath"].as_str(), Some(cur.as_str()), "m{i}: state records what runs: {o}");
        let link = sh(h, "readlink /nix/var/nix/profiles/system");
        assert!(link.ends_with(&format!("system-{}-link", o["generation"])), "m{i}: {link} vs {o}");
        assert_eq!(sh(h, "readlink -f /run/current-system"), *cur);
    }
    assert!(refresh_statuses(&sb).iter().all(|(_, s)| s == "inSync"), "{}", refresh(&sb));
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");
    // alwaysActivate re-activates (an update), and afterwards nothing is pending either.
    let again = sb.ferry(&["apply", "--yes", "--always-activate"]).ok();
    assert!(again.stdout.contains("2 updated"), "{}", again.all());
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");
}

/// A provider of kind `drifty.thing` without `plan` (the engine compares inputs): every call's
/// method is appended to `calls`; `read` reports drift while the file `drifted` exists, and
/// `update` puts the thing back (removes it).
fn drifty_provider(sb: &Sandbox) -> String {
    let dir = sb.path().display().to_string();
    let after = r#"while read -r line; do
  id=$(printf '%s' "$line" | sed -n 's/.*"id" *: *\([0-9][0-9]*\).*/\1/p')
  method=$(printf '%s' "$line" | sed -n 's/.*"method" *: *"\([a-z]*\)".*/\1/p')
  echo "$method" >> @DIR@/calls
  case "$method" in
    read) if [ -e @DIR@/drifted ]; then r='{"exists":true,"outputs":{"n":1},"drift":["changed behind ferry'"'"'s back"]}'
          else r='{"exists":true,"outputs":{"n":1}}'; fi ;;
    update) rm -f @DIR@/drifted; r='{"outputs":{"n":1}}' ;;
    create) r='{"outputs":{"n":1}}' ;;
    *) r='{}' ;;
  esac
  printf '%s\n' '{"id":'"$id"',"result":'"$r"'}'
done"#
        .replace("@DIR@", &dir);
    sb.executable("drifty.sh", &fake_provider("drifty", &["create", "read", "update", "delete"], &after))
}

fn calls(sb: &Sandbox, method: &str) -> usize {
    sb.read("calls").unwrap_or_default().lines().filter(|l| *l == method).count()
}

#[test]
fn drift_a_provider_reads_is_planned_as_a_change_although_inputs_are_unchanged() {
    let sb = Sandbox::new(BIN);
    let exe = drifty_provider(&sb);
    sb.deployment(&format!(
        r#"{{ resources, ... }}: {{
  resources.x = {{ type = "drifty.thing"; provider.executable = "{exe}"; inputs = {{ size = 1; }}; }};
}}
"#
    ));
    sb.ferry(&["apply", "--yes"]).ok().says("1 created");
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");
    assert_eq!(refresh_statuses(&sb), vec![("x".to_string(), "inSync".to_string())]);

    // Drift while the inputs stay the same: refresh reports it, and plan agrees it is a change.
    sb.write("drifted", "");
    assert_eq!(refresh_statuses(&sb), vec![("x".to_string(), "drifted".to_string())]);
    let plan: Run = sb.ferry(&["plan"]).ok();
    assert!(plan.stdout.contains("  ~ x (drifty.thing)"), "{}", plan.stdout);
    assert!(plan.stdout.contains("! drift: changed behind ferry's back"), "{}", plan.stdout);
    assert!(plan.stdout.contains("Plan: 0 to create, 1 to update"), "{}", plan.stdout);
    assert_eq!(plan_summary(&sb)["update"], 1);
    // Planning twice (and refreshing) did not accept it.
    assert_eq!(plan_summary(&sb)["update"], 1);

    // apply calls the provider's update, which puts it back; then all agree: nothing to do.
    let updates = calls(&sb, "update");
    sb.ferry(&["apply", "--yes"]).ok().says("1 updated");
    assert_eq!(calls(&sb, "update"), updates + 1, "apply called update");
    assert!(!sb.exists("drifted"));
    assert_eq!(refresh_statuses(&sb), vec![("x".to_string(), "inSync".to_string())]);
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");
    sb.ferry(&["apply", "--yes"]).ok().says("No changes");
    assert_eq!(calls(&sb, "update"), updates + 1, "no drift, no update");
}

/// Stops and purges a container on a test host when dropped (before the host goes).
struct Purge<'a> {
    host: &'a TestHost,
    name: &'static str,
    script: tempfile::NamedTempFile,
}

impl<'a> Purge<'a> {
    fn new(host: &'a TestHost, name: &'static str) -> Purge<'a> {
        let script = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(script.path(), ferry_provider_nspawn::host::SCRIPT).expect("write nspawn.sh");
        Purge { host, name, script }
    }
}

impl Drop for Purge<'_> {
    fn drop(&mut self) {
        let s = self.script.path().display();
        self.host.exec(&format!("sh {s} stop {n} 3; sh {s} destroy {n} yes", n = self.name));
    }
}

#[test]
fn a_failed_container_reload_is_rolled_back_and_retried_not_accepted() {
    ferry_testkit::blackhole_container_addresses();
    let sb = Sandbox::new(BIN);
    let base = sb.path().join("hosts");
    std::fs::create_dir_all(&base).expect("hosts dir");
    let h = TestHost::start(&base, "dct").expect("start test host");
    let _purge = Purge::new(&h, "ct-drift");
    let root = "/var/lib/machines/ct-drift";
    // v2's activation counts its attempts and fails while /fail-reload exists in the container.
    let deploy = |version: &str| {
        let hook = match version {
            "v1" => "",
            "v2" => r#"activationHook = "echo attempt >> /reload-attempts; ! test -e /fail-reload";"#,
            // Fails after it activated (like a unit failing at the end of a switch).
            _ => "failActivation = true;",
        };
        sb.deployment(&format!(
            r#"{{ resources, ... }}:
let t = import {nix} {{ }}; in {{
  resources.ct = {{
    type = "nspawn.container";
    inputs = {{
      name = "ct-drift"; keepState = false; activation.strategy = "reload";
      system = t.mkContainer {{ name = "ct-drift"; pages."index.html" = "{version}\n"; {hook} }};
      host = {{ host = "{addr}"; port = {port}; hostKey = "{key}"; }};
      sshKey = "{ckey}";
      network.v4.static = {{ hostAddress = "10.233.29.1"; address = "10.233.29.2"; }};
    }};
  }};
}}
"#,
            nix = test_systems_nix().display(),
            addr = h.addr(),
            port = h.port(),
            key = h.host_key(),
            ckey = h.client_key().display(),
        ));
    };
    let serves = |want: &str| {
        wait_until(Duration::from_secs(20), &format!("the container serving {want:?}"), || {
            http_get("10.233.29.2", 80, "/").is_some_and(|b| b.contains(want))
        })
    };
    let profile_link = || sh(&h, "readlink /nix/var/nix/profiles/per-container/ct-drift/system");
    let attempts = || sh(&h, &format!("cat {root}/reload-attempts 2>/dev/null | wc -l"));
    deploy("v1");
    sb.ferry(&["apply", "--yes"]).ok().says("1 created");
    serves("v1");

    // The reload of v2 fails: the container keeps serving v1, and its profile says so too.
    sh(&h, &format!("touch {root}/fail-reload"));
    deploy("v2");
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    assert!(r.all().contains("reload"), "{}", r.all());
    assert_eq!(attempts(), "1");
    serves("v1");
    assert!(profile_link().ends_with("system-1-link"), "the profile claims {}", profile_link());

    // Not accepted: plan shows the change, refresh and plan agree, apply tries again.
    for _ in 0..2 {
        let plan = sb.ferry(&["plan"]).ok();
        assert!(plan.stdout.contains("  ~ ct (nspawn.container)"), "{}", plan.stdout);
        assert!(plan.stdout.contains("1 to update"), "{}", plan.stdout);
        assert_eq!(refresh_statuses(&sb), vec![("ct".to_string(), "inSync".to_string())], "{}", refresh(&sb));
    }
    sb.ferry(&["apply", "--yes"]).expect(1);
    assert_eq!(attempts(), "2", "the failed reload was retried");
    serves("v1");

    // Once the reload can succeed, apply converges.
    sh(&h, &format!("rm {root}/fail-reload"));
    sb.ferry(&["apply", "--yes"]).ok().says("1 updated");
    serves("v2");
    assert_eq!(attempts(), "3");
    let o = outputs(&sb, "ct");
    assert!(
        profile_link().ends_with(&format!("system-{}-link", o["generation"])),
        "{} vs {o}",
        profile_link()
    );
    assert_eq!(
        sh(&h, "readlink -f /nix/var/nix/profiles/per-container/ct-drift/system"),
        o["systemPath"].as_str().unwrap_or("")
    );
    assert_eq!(refresh_statuses(&sb), vec![("ct".to_string(), "inSync".to_string())]);
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");

    // A reload that fails after activating: the system that ran before runs again.
    let v2 = sh(&h, "readlink -f /nix/var/nix/profiles/per-container/ct-drift/system");
    deploy("v3");
    sb.ferry(&["apply", "--yes"]).expect(1).says("rolled back");
    serves("v2");
    let leader = o["leaderPid"].as_u64().expect("leaderPid");
    let running =
        std::fs::read_link(format!("/proc/{leader}/root/run/current-system")).expect("current-system");
    assert_eq!(running.display().to_string(), v2, "the container runs v2 again");
    assert!(profile_link().ends_with(&format!("system-{}-link", o["generation"])), "{}", profile_link());
    assert!(sb.ferry(&["plan"]).ok().stdout.contains("1 to update"));
    deploy("v2");
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");
    sb.ferry(&["destroy", "--yes"]).ok();
}
