//! `nixos.machine` end to end: the ferry binary deploying busybox test systems to test hosts
//! (private mount namespaces running a real sshd on 127.0.0.N, see `ferry_testkit::host`).
//! Everything is real: Nix builds and copies, OpenSSH, switch-to-configuration on the host.

use std::path::Path;
use std::time::Duration;

use ferry_testkit::host::{test_systems_nix, TestHost};
use ferry_testkit::{http_get, wait_until, Run, Sandbox};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

/// One machine of a test deployment.
struct M<'a> {
    name: &'a str,
    host: &'a TestHost,
    /// Extra `mkSystem` arguments (Nix attrset body).
    system: String,
    /// Extra inputs (Nix attrset body).
    inputs: String,
}

impl<'a> M<'a> {
    fn new(name: &'a str, host: &'a TestHost) -> Self {
        M { name, host, system: String::new(), inputs: String::new() }
    }
    fn system(mut self, s: &str) -> Self {
        self.system = s.into();
        self
    }
    fn inputs(mut self, s: &str) -> Self {
        self.inputs = s.into();
        self
    }
}

fn deployment(ms: &[M]) -> String {
    let mut s =
        format!("{{ resources, ... }}:\nlet t = import {} {{ }}; in {{\n", test_systems_nix().display());
    for m in ms {
        s += &format!(
            r#"  resources.{name} = {{
    type = "nixos.machine";
    tags = [ "web" ];
    inputs = {{
      host = "{addr}"; port = {port}; sshKey = "{key}";
      system = t.mkSystem {{ name = "{name}"; address = "{addr}"; {system} }};
      rollback.magic.confirmTimeout = 5;
      {inputs}
    }};
  }};
"#,
            name = m.name,
            addr = m.host.addr(),
            port = m.host.port(),
            key = m.host.client_key().display(),
            system = m.system,
            inputs = m.inputs,
        );
    }
    s + "}\n"
}

fn hosts(sb: &Sandbox, names: &[&str]) -> Vec<TestHost> {
    let base = sb.path().join("hosts");
    std::fs::create_dir_all(&base).unwrap();
    names.iter().map(|n| TestHost::start(&base, n).expect("start test host")).collect()
}

fn apply(sb: &Sandbox, extra: &[&str]) -> Run {
    let mut args = vec!["apply", "--yes", "--log-format", "json"];
    args.extend_from_slice(extra);
    sb.ferry(&args)
}

fn events(run: &Run) -> Vec<Value> {
    run.stderr.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn phases(run: &Run, resource: &str) -> Vec<String> {
    events(run)
        .iter()
        .filter(|e| e["event"] == "phase" && e["resource"] == resource)
        .map(|e| e["phase"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn sh(h: &TestHost, script: &str) -> String {
    let o = h.exec(script);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn current(h: &TestHost) -> String {
    sh(h, "readlink -f /run/current-system")
}

fn profile(h: &TestHost) -> String {
    sh(h, "readlink -f /nix/var/nix/profiles/system")
}

fn generation(h: &TestHost) -> String {
    sh(h, "readlink /nix/var/nix/profiles/system")
}

fn httpd_pid(h: &TestHost) -> String {
    sh(h, "cat /run/ferry-test/httpd.pid")
}

fn state_json(sb: &Sandbox, name: &str) -> Value {
    let r = sb.ferry(&["state", "show", name, "--json"]).ok();
    serde_json::from_str(&r.stdout).expect("state show --json")
}

#[test]
fn three_hosts_in_parallel_then_noop_then_only_the_changed_one() {
    let sb = Sandbox::new(BIN);
    let hs = hosts(&sb, &["a", "b", "c"]);
    let names = ["web1", "web2", "web3"];
    let ms = |page2: &str| -> Vec<M> {
        names
            .iter()
            .zip(&hs)
            .map(|(n, h)| {
                let page = if *n == "web2" { page2.to_string() } else { format!("hello from {n}") };
                M::new(n, h).system(&format!(r#"pages."index.html" = "{page}";"#))
            })
            .collect()
    };
    sb.deployment(&deployment(&ms("hello from web2")));
    let first = apply(&sb, &["--jobs", "8"]).ok();
    // All three started before any finished: deployed in parallel.
    let ev = events(&first);
    let first_finish = ev.iter().position(|e| e["event"] == "finished").expect("a finished event");
    let started: Vec<&Value> = ev[..first_finish].iter().filter(|e| e["event"] == "started").collect();
    assert_eq!(started.len(), 3, "all machines start before the first finishes: {}", first.stderr);
    for (n, h) in names.iter().zip(&hs) {
        let page = http_get(h.addr(), 8080, "/").expect("httpd answers");
        assert!(page.contains(&format!("hello from {n}")), "{page}");
        assert_eq!(current(h), profile(h));
        assert!(generation(h).ends_with("system-1-link"), "{}", generation(h));
        // Trust on first use: the host key is recorded.
        let rec = state_json(&sb, n);
        assert_eq!(rec["outputs"]["hostKey"].as_str(), Some(h.host_key()), "{rec}");
        assert_eq!(rec["outputs"]["generation"], 1);
        assert!(phases(&first, n).contains(&"copy".to_string()), "{:?}", phases(&first, n));
    }
    let pids: Vec<String> = hs.iter().map(httpd_pid).collect();

    // No-op: nothing copied, nothing activated, services untouched.
    let noop = apply(&sb, &[]).ok().says("No changes");
    for (n, h) in names.iter().zip(&hs) {
        let ph = phases(&noop, n);
        assert!(!ph.iter().any(|p| p == "copy" || p == "activate"), "{n}: {ph:?}");
        assert!(generation(h).ends_with("system-1-link"));
    }
    assert_eq!(hs.iter().map(httpd_pid).collect::<Vec<_>>(), pids);

    // Change web2 only.
    sb.deployment(&deployment(&ms("web2, second edition")));
    let second = apply(&sb, &[]).ok().says("1 updated").says("2 unchanged");
    assert!(phases(&second, "web2").contains(&"activate".to_string()));
    assert!(phases(&second, "web1").is_empty() && phases(&second, "web3").is_empty());
    assert!(http_get(hs[1].addr(), 8080, "/").unwrap().contains("second edition"));
    assert!(generation(&hs[1]).ends_with("system-2-link"));
    assert!(generation(&hs[0]).ends_with("system-1-link"));
    assert_eq!(httpd_pid(&hs[0]), pids[0]);
    assert_ne!(httpd_pid(&hs[1]), pids[1]);
}

#[test]
fn goals_boot_test_and_dry_activate_behave_as_on_nixos() {
    let sb = Sandbox::new(BIN);
    let hs = hosts(&sb, &["g"]);
    let h = &hs[0];
    let with = |page: &str, goal: &str| {
        deployment(&[M::new("m", h)
            .system(&format!(r#"pages."index.html" = "{page}";"#))
            .inputs(&format!(r#"goal = "{goal}";"#))])
    };
    sb.deployment(&with("A", "switch"));
    apply(&sb, &[]).ok();
    let a = current(h);
    assert!(http_get(h.addr(), 8080, "/").unwrap().contains('A'));

    // boot: the next boot's system changes; the running one does not.
    sb.deployment(&with("B", "boot"));
    apply(&sb, &[]).ok();
    let b = profile(h);
    assert_ne!(b, a);
    assert_eq!(current(h), a, "boot must not activate");
    assert_eq!(sh(h, "readlink -f /boot/default-system"), b);
    assert!(http_get(h.addr(), 8080, "/").unwrap().contains('A'));

    // test: runs the new system now, but the profile and boot default stay.
    sb.deployment(&with("C", "test"));
    apply(&sb, &[]).ok();
    let c = current(h);
    assert!(c != a && c != b);
    assert_eq!(profile(h), b, "test must not set the profile");
    assert_eq!(sh(h, "readlink -f /boot/default-system"), b);
    assert!(http_get(h.addr(), 8080, "/").unwrap().contains('C'));

    // dry-activate: says what would happen, changes nothing.
    sb.deployment(&with("D", "dry-activate"));
    let r = sb.ferry(&["apply", "--yes", "-v"]).ok();
    assert!(r.all().contains("would"), "{}", r.all());
    assert_eq!(current(h), c);
    assert_eq!(profile(h), b);
    assert!(http_get(h.addr(), 8080, "/").unwrap().contains('C'));
}

#[test]
fn keys_have_owner_and_mode_never_enter_a_store_and_removed_keys_go() {
    let sb = Sandbox::new(BIN);
    let hs = hosts(&sb, &["k"]);
    let h = &hs[0];
    let secret_file = sb.write("secret.txt", "file-secret-4c1d9e\n");
    let keys = format!(
        r#"keys.api = {{ text = "text-secret-7f3a2b"; user = "nobody"; group = "nogroup"; permissions = "0440"; }};
           keys.db = {{ file = "{}"; destDir = "/run/keys/db"; uploadAt = "post-activation"; }};
           keys.cmd = {{ command = [ "sh" "-c" "printf cmd-secret-0e5d1f" ]; permissions = "0400"; }};"#,
        secret_file.display()
    );
    sb.deployment(&deployment(&[M::new("m", h).inputs(&keys)]));
    let r = sb.ferry(&["apply", "--yes", "-vv"]).ok();
    assert_eq!(sh(h, "stat -c '%a %U %G' /run/keys/api"), "440 nobody nogroup");
    assert_eq!(sh(h, "cat /run/keys/api"), "text-secret-7f3a2b");
    assert_eq!(sh(h, "stat -c '%a %U %G' /run/keys/db/db"), "600 root root");
    assert_eq!(sh(h, "cat /run/keys/db/db"), "file-secret-4c1d9e");
    assert_eq!(sh(h, "stat -c '%a' /run/keys/cmd"), "400");
    assert_eq!(sh(h, "cat /run/keys/cmd"), "cmd-secret-0e5d1f");
    for secret in ["text-secret-7f3a2b", "file-secret-4c1d9e", "cmd-secret-0e5d1f"] {
        assert!(!r.all().contains(secret), "secret in output");
        let plan = sb.ferry(&["plan", "-v"]);
        assert!(!plan.all().contains(secret));
        let show = sb.ferry(&["state", "show", "m"]);
        assert!(!show.all().contains(secret), "{}", show.all());
        // Neither the deployer's store nor the host's.
        for store in [Path::new("/nix/store").to_path_buf(), h.dir().join("nix/store")] {
            let g = std::process::Command::new("grep").args(["-rlF", secret]).arg(&store).output().unwrap();
            assert!(
                g.stdout.is_empty(),
                "{secret} found in {}: {}",
                store.display(),
                String::from_utf8_lossy(&g.stdout)
            );
        }
    }
    // A key deleted on the host (a reboot empties /run/keys) is drift, and apply restores it.
    h.exec("rm /run/keys/api");
    sb.ferry(&["plan"]).ok().says("key api is missing");
    let r = apply(&sb, &[]).ok();
    assert_eq!(sh(h, "cat /run/keys/api"), "text-secret-7f3a2b", "{}", r.all());

    // Removing a key from the deployment removes it from the host.
    let fewer = keys.lines().filter(|l| !l.contains("keys.cmd")).collect::<Vec<_>>().join("\n");
    sb.deployment(&deployment(&[M::new("m", h).inputs(&fewer)]));
    apply(&sb, &[]).ok();
    assert_eq!(sh(h, "test -e /run/keys/cmd && echo present || echo gone"), "gone");
    assert_eq!(sh(h, "cat /run/keys/api"), "text-secret-7f3a2b");
}

#[test]
fn a_key_file_given_as_a_nix_path_is_refused_before_it_is_copied_anywhere() {
    let sb = Sandbox::new(BIN);
    let hs = hosts(&sb, &["p"]);
    sb.write("secret", "x");
    let d = deployment(&[M::new("m", &hs[0]).inputs(r#"keys.s.file = "${./secret}";"#)]);
    sb.deployment(&d);
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    assert!(r.all().contains("world-readable"), "{}", r.all());
}

#[test]
fn failed_activation_rolls_back() {
    let sb = Sandbox::new(BIN);
    let hs = hosts(&sb, &["f"]);
    let h = &hs[0];
    sb.deployment(&deployment(&[M::new("m", h).system(r#"pages."index.html" = "good";"#)]));
    apply(&sb, &[]).ok();
    let good = current(h);
    sb.deployment(&deployment(&[
        M::new("m", h).system(r#"pages."index.html" = "bad"; failActivation = true;"#)
    ]));
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    assert!(r.all().contains("activation (switch) failed") && r.all().contains("rolled back"), "{}", r.all());
    assert_eq!(current(h), good);
    assert_eq!(profile(h), good);
    assert!(generation(h).ends_with("system-1-link"), "{}", generation(h));
    assert!(http_get(h.addr(), 8080, "/").unwrap().contains("good"));
    // The failure is recorded; fixing the system converges.
    sb.deployment(&deployment(&[M::new("m", h).system(r#"pages."index.html" = "fixed";"#)]));
    apply(&sb, &[]).ok();
    assert!(http_get(h.addr(), 8080, "/").unwrap().contains("fixed"));
}

#[test]
fn failed_health_checks_roll_back() {
    let sb = Sandbox::new(BIN);
    let hs = hosts(&sb, &["h"]);
    let h = &hs[0];
    let checks = format!(
        r#"healthChecks = [ {{ http = "http://{}:8080/health"; retries = 1; interval = 0; }}
                           {{ command = [ "test" "-e" "/run/ferry-test/healthy" ]; retries = 0; }} ];"#,
        h.addr()
    );
    sb.deployment(&deployment(&[M::new("m", h).system(r#"pages."index.html" = "v1";"#).inputs(&checks)]));
    let r = apply(&sb, &[]).ok();
    assert!(phases(&r, "m").contains(&"check".to_string()));
    let good = current(h);
    sb.deployment(&deployment(&[M::new("m", h)
        .system(r#"pages."index.html" = "v2"; unhealthy = true;"#)
        .inputs(&checks)]));
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    assert!(r.all().contains("health check") && r.all().contains("rolled back"), "{}", r.all());
    assert_eq!(current(h), good);
    assert_eq!(profile(h), good);
    assert!(http_get(h.addr(), 8080, "/").unwrap().contains("v1"));
}

#[test]
fn activation_that_kills_sshd_is_undone_by_magic_rollback() {
    let sb = Sandbox::new(BIN);
    let hs = hosts(&sb, &["s"]);
    let h = &hs[0];
    sb.deployment(&deployment(&[M::new("m", h).system(r#"pages."index.html" = "reachable";"#)]));
    apply(&sb, &[]).ok();
    let good = current(h);
    sb.deployment(&deployment(&[
        M::new("m", h).system(r#"pages."index.html" = "locked out"; killSshd = true;"#)
    ]));
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    assert!(r.all().contains("could not confirm"), "{}", r.all());
    assert!(r.all().contains("rolled itself back"), "{}", r.all());
    assert_eq!(current(h), good);
    assert_eq!(profile(h), good);
    // sshd is back: a fresh login works.
    let o = h.ssh_command().arg("true").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_changed_host_key_stops_that_host() {
    let sb = Sandbox::new(BIN);
    let mut hs = hosts(&sb, &["x"]);
    sb.deployment(&deployment(&[M::new("m", &hs[0]).system(r#"pages."index.html" = "one";"#)]));
    apply(&sb, &[]).ok();
    let before = sb.state_snapshot();
    hs[0].regenerate_host_key().unwrap();
    let h = &hs[0];
    sb.deployment(&deployment(&[M::new("m", h).system(r#"pages."index.html" = "two";"#)]));
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    assert!(r.all().contains("host key of") && r.all().contains("does not match"), "{}", r.all());
    assert!(http_get(h.addr(), 8080, "/").unwrap().contains("one"));
    // The recorded key is unchanged (not replaced by the new one).
    assert_ne!(state_json(&sb, "m")["outputs"]["hostKey"].as_str(), Some(h.host_key()));
    let _ = before;

    // A wrong pinned key refuses the very first connection too.
    let sb2 = Sandbox::new(BIN);
    sb2.deployment(&deployment(&[M::new("m", h).inputs(
        r#"hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD2pDHmIsdLyUXmMC4KzZZ8pdn2mWAoAmB6OfzRiPn";"#,
    )]));
    let r = sb2.ferry(&["apply", "--yes"]).expect(1);
    assert!(r.all().contains("does not match"), "{}", r.all());
}

#[test]
fn an_unreachable_host_fails_alone() {
    let sb = Sandbox::new(BIN);
    let hs = hosts(&sb, &["up", "down"]);
    sb.deployment(&deployment(&[M::new("ok", &hs[0]), M::new("gone", &hs[1])]));
    hs[1].stop_sshd();
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    assert!(r.all().contains(&format!("cannot connect to {}", hs[1].addr())), "{}", r.all());
    assert!(http_get(hs[0].addr(), 8080, "/").is_some(), "the reachable host was deployed");
    let list = sb.ferry(&["state", "list"]).ok();
    assert!(list.stdout.lines().any(|l| l.starts_with("ok ") && l.contains("ready")), "{}", list.stdout);
    // Once reachable, a re-apply finishes the job.
    hs[1].start_sshd().unwrap();
    sb.ferry(&["apply", "--yes"]).ok();
    assert!(http_get(hs[1].addr(), 8080, "/").is_some());
}

#[test]
fn generations_rollback_gc_exec_and_ssh() {
    let sb = Sandbox::new(BIN);
    let hs = hosts(&sb, &["r"]);
    let h = &hs[0];
    for v in ["v1", "v2", "v3"] {
        sb.deployment(&deployment(&[M::new("m", h).system(&format!(r#"pages."index.html" = "{v}";"#))]));
        apply(&sb, &[]).ok();
    }
    let v3 = current(h);
    let gens = sb.ferry(&["machine", "generations", "m"]).ok();
    assert_eq!(gens.stdout.lines().filter(|l| !l.trim().is_empty()).count(), 3, "{}", gens.stdout);
    assert!(gens.stdout.contains("(current)"), "{}", gens.stdout);

    sb.ferry(&["machine", "rollback", "m"]).ok().says("generation 3 → 2");
    assert!(http_get(h.addr(), 8080, "/").unwrap().contains("v2"));
    // The deployment still says v3: plan shows the drift (and apply would deploy v3 again).
    sb.ferry(&["plan"]).ok().says("ferry deployed").says("update");
    sb.ferry(&["machine", "rollback", "m", "--to", "1"]).ok();
    assert!(http_get(h.addr(), 8080, "/").unwrap().contains("v1"));
    sb.ferry(&["machine", "rollback", "m", "--to", "3"]).ok();
    assert_eq!(current(h), v3);

    sb.ferry(&["machine", "gc", "m", "--keep", "1"]).ok();
    let gens = sb.ferry(&["machine", "generations", "m"]).ok();
    assert_eq!(gens.stdout.lines().filter(|l| !l.trim().is_empty()).count(), 1, "{}", gens.stdout);
    let v1_gone = sh(h, &format!("ls {}/nix/store | grep -c nixos-system-m || true", ""));
    let _ = v1_gone;

    let e = sb.ferry(&["exec", "--on", "@web", "--", "cat", "/run/current-system/nixos-version"]).ok();
    assert!(e.stdout.contains("m | ferry-test-m"), "{}", e.stdout);
    let e = sb.ferry(&["exec", "--", "false"]).expect(1);
    assert!(e.stderr.contains("m: exit 1"), "{}", e.stderr);
    let s = sb.ferry(&["ssh", "m", "--", "echo", "hello-from", "$(hostname)"]).ok();
    assert!(s.stdout.contains("hello-from"), "{}", s.stdout);
    sb.ferry(&["ssh", "nope"]).expect(1).says("no machine `nope`");
    sb.ferry(&["machine", "rollback", "nope"]).expect(1);

    if h.boot_id_simulated() {
        let before = h.boot_id();
        sb.ferry(&["machine", "reboot", "m", "--wait", "60"]).ok().says("is back");
        assert_ne!(h.boot_id(), before);
        assert_eq!(state_json(&sb, "m")["outputs"]["bootId"].as_str(), Some(h.boot_id().as_str()));
        assert!(http_get(h.addr(), 8080, "/").is_some(), "services came back after the reboot");
    }
}

#[test]
fn a_profile_someone_else_set_is_not_overwritten_without_force() {
    let sb = Sandbox::new(BIN);
    let hs = hosts(&sb, &["u"]);
    let h = &hs[0];
    sb.deployment(&deployment(&[M::new("m", h).system(r#"pages."index.html" = "ours";"#)]));
    apply(&sb, &[]).ok();
    // Someone deploys a system built elsewhere (a path that exists only on the host).
    let o = h.exec(
        "set -e; d=$(mktemp -d); mkdir -p $d/bin; printf '#!/bin/sh\\nexit 0\\n' > $d/bin/switch-to-configuration; \
         chmod +x $d/bin/switch-to-configuration; p=$(nix-store --add $d); \
         nix-env -p /nix/var/nix/profiles/system --set $p",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    sb.ferry(&["plan"]).ok().says("ferry deployed");
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    assert!(r.all().contains("which ferry did not deploy") && r.all().contains("--force"), "{}", r.all());
    sb.ferry(&["apply", "--yes", "--force"]).ok();
    assert!(http_get(h.addr(), 8080, "/").unwrap().contains("ours"));
}

#[test]
fn kill_9_during_copy_then_reapply_converges() {
    let sb = Sandbox::new(BIN);
    let hs = hosts(&sb, &["c"]);
    let h = &hs[0];
    let blobs =
        "extraPaths = builtins.genList (i: t.mkBlob { name = \"blob-${toString i}\"; sizeKiB = 8192; }) 12;";
    sb.deployment(&deployment(&[M::new("m", h).system(blobs)]));
    // Build first so the kill lands in the copy, not in the build.
    sb.ferry(&["plan"]).ok();
    let mut child = sb.spawn(&["apply", "--yes", "--log-format", "json"]);
    let store = h.dir().join("nix/store");
    wait_until(Duration::from_secs(120), "the copy to start", || {
        std::fs::read_dir(&store)
            .map(|d| d.filter_map(Result::ok).any(|e| e.file_name().to_string_lossy().contains("blob-")))
            .unwrap_or(false)
    });
    ferry_testkit::kill9(&mut child);
    let r = sb.ferry(&["apply", "--yes"]).ok();
    assert!(!r.all().contains("panicked"));
    assert!(http_get(h.addr(), 8080, "/").is_some());
    assert_eq!(current(h), profile(h));
    assert_eq!(ferry_testkit::sqlite_integrity(&sb.state_path()), "ok");
    sb.ferry(&["apply", "--yes"]).ok().says("No changes");
}

#[test]
fn build_on_target_builds_there_and_not_on_the_deployer() {
    let sb = Sandbox::new(BIN);
    let hs = hosts(&sb, &["t"]);
    let h = &hs[0];
    // A system no other test builds (the page names this sandbox).
    let nonce = sb.path().file_name().unwrap().to_string_lossy().to_string();
    sb.deployment(&deployment(&[M::new("m", h)
        .system(&format!(r#"pages."index.html" = "built on the target {nonce}";"#))
        .inputs(r#"buildOn = "target";"#)]));
    let r = apply(&sb, &[]).ok();
    assert!(phases(&r, "m").contains(&"build".to_string()));
    let system = current(h);
    assert!(system.starts_with("/nix/store/"), "{system}");
    assert!(!Path::new(&system).exists(), "the deployer must not have built {system}");
    assert!(h.dir().join(system.trim_start_matches('/')).exists());
    assert!(http_get(h.addr(), 8080, "/").unwrap().contains(&nonce));
}

#[test]
fn always_activate_reactivates_an_unchanged_machine() {
    let sb = Sandbox::new(BIN);
    let hs = hosts(&sb, &["aa"]);
    let h = &hs[0];
    sb.deployment(&deployment(&[M::new("m", h)]));
    apply(&sb, &[]).ok();
    let pid = httpd_pid(h);
    apply(&sb, &[]).ok().says("No changes");
    let r = apply(&sb, &["--always-activate"]).ok().says("1 updated");
    assert!(phases(&r, "m").contains(&"activate".to_string()));
    assert!(!phases(&r, "m").contains(&"copy".to_string()), "nothing to copy");
    // Activating the same system restarts nothing.
    assert_eq!(httpd_pid(h), pid);
    assert!(generation(h).ends_with("system-1-link"), "{}", generation(h));
}
