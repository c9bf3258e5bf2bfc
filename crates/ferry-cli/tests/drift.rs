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
