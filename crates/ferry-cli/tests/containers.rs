//! `nspawn.container` end to end: the ferry binary running busybox test container systems under
//! the real systemd-nspawn, as root, on this machine (direct runtime: systemd is not PID 1
//! here) and on a test host over SSH. Networking is real (network namespaces, veth pairs,
//! bridges, nftables); traffic goes only to loopback and to the containers' own namespaces.
//!
//! Each test uses its own container names, subnets and ports, so the tests run in parallel;
//! a guard stops and purges its containers whatever happens.

#[path = "support/containers.rs"]
mod support;

use std::time::Duration;

use ferry_testkit::host::{test_systems_nix, TestHost};
use ferry_testkit::{http_get, wait_until, Sandbox};
use support::*;

#[test]
fn static_address_http_port_forward_and_dynamic_activation() {
    let _c = Cleanup::new(&["ct-static"]);
    let sb = Sandbox::new(BIN);
    let net = r#"name = "ct-static";
      network.v4.static = { hostAddress = "10.233.11.1"; address = "10.233.11.2"; };"#;
    let deploy = |page: &str, port: u16| {
        sb.deployment(&format!(
            "{}{}}}\n",
            nix_header(),
            container(
                "web",
                page,
                &format!("{net}\n      forwardPorts = [ {{ hostPort = {port}; containerPort = 80; }} ];")
            )
        ));
    };
    deploy("v1", 28081);
    let r = sb.ferry(&["apply", "--yes"]).ok();
    assert!(r.stdout.contains("Apply complete: 1 created"), "{}", r.stdout);
    serves("10.233.11.2", 80, "v1");
    serves("127.0.0.1", 28081, "v1");
    // The real files systemd reads.
    let unit = std::fs::read_to_string("/etc/systemd/nspawn/ct-static.nspawn").expect(".nspawn file");
    assert!(
        unit.contains("VirtualEthernetExtra=ve-ct-static:host0") && unit.contains("Port=tcp:28081:80"),
        "{unit}"
    );
    let host_net =
        std::fs::read_to_string("/etc/systemd/network/50-ferry-ct-ct-static.network").expect("host side");
    assert!(host_net.contains("Address=10.233.11.1/32"), "{host_net}");
    let o = outputs(&sb, "web");
    assert_eq!(o["address"], "10.233.11.2");
    assert_eq!(o["generation"], 1);
    let pid1 = leader(&sb, "web");
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");

    // Only the system changes: dynamic reloads (switch-to-configuration test inside), PID 1 stays.
    deploy("v2", 28081);
    sb.ferry(&["apply", "--yes"]).ok();
    serves("10.233.11.2", 80, "v2");
    assert_eq!(leader(&sb, "web"), pid1, "a reload keeps the container's init");
    assert_eq!(outputs(&sb, "web")["generation"], 2);

    // The unit changes (another forwarded port): dynamic restarts.
    deploy("v2", 28082);
    sb.ferry(&["apply", "--yes"]).ok();
    serves("127.0.0.1", 28082, "v2");
    assert_ne!(leader(&sb, "web"), pid1, "a unit change restarts the container");
    assert!(http_get("127.0.0.1", 28081, "/").is_none(), "the old forward is gone");

    // Drift: the container dies behind ferry's back; plan shows it, apply restarts it.
    let pid = leader(&sb, "web");
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_until(Duration::from_secs(10), "the container to stop", || !link_exists("ve-ct-static"));
    wait_until(Duration::from_secs(10), "the plan to show drift", || {
        sb.ferry(&["plan"]).stdout.contains("drift: the container is not running")
    });
    sb.ferry(&["apply", "--yes"]).ok();
    serves("10.233.11.2", 80, "v2");

    // Destroy removes everything (keepState = false).
    sb.ferry(&["destroy", "--yes"]).ok();
    assert!(!std::path::Path::new("/etc/systemd/nspawn/ct-static.nspawn").exists());
    assert!(!std::path::Path::new("/var/lib/machines/ct-static").exists());
    assert!(!link_exists("ve-ct-static"), "stopped: its veth is gone");
}

#[test]
fn strategies_reload_restart_none() {
    let names = ["ct-s-reload", "ct-s-restart", "ct-s-none"];
    let _c = Cleanup::new(&names);
    let sb = Sandbox::new(BIN);
    let deploy = |page: &str| {
        let mut s = nix_header();
        for (i, (n, strat)) in names.iter().zip(["reload", "restart", "none"]).enumerate() {
            s += &container(
                &n.replace('-', "_"),
                page,
                &format!(
                    r#"name = "{n}"; activation.strategy = "{strat}";
      network.v4.static = {{ hostAddress = "10.233.12.{h}"; address = "10.233.12.{a}"; }};"#,
                    h = 10 * i + 1,
                    a = 10 * i + 2
                ),
            );
        }
        sb.deployment(&(s + "}\n"));
    };
    deploy("one");
    sb.ferry(&["apply", "--yes"]).ok();
    let before: Vec<u64> = names.iter().map(|n| leader(&sb, &n.replace('-', "_"))).collect();
    deploy("two");
    sb.ferry(&["apply", "--yes"]).ok();
    let after: Vec<u64> = names.iter().map(|n| leader(&sb, &n.replace('-', "_"))).collect();
    assert_eq!(before[0], after[0], "reload keeps the init PID");
    serves("10.233.12.2", 80, "two");
    assert_ne!(before[1], after[1], "restart starts a new init");
    serves("10.233.12.12", 80, "two");
    assert_eq!(before[2], after[2], "none leaves the container alone");
    serves("10.233.12.22", 80, "one");
    assert_eq!(outputs(&sb, "ct_s_none")["generation"], 2, "none still sets the profile");
}

#[test]
fn pool_addresses_are_stable_and_distinct_and_zones_connect() {
    let names = ["ct-pool-a", "ct-pool-b", "ct-pool-c"];
    let _c = Cleanup::with_zones(&names, &["ftest"]);
    let sb = Sandbox::new(BIN);
    let deploy = |names: &[&str]| {
        let mut s = nix_header();
        for n in names {
            s += &container(
                &n.replace('-', "_"),
                n,
                &format!(
                    r#"name = "{n}"; network = {{ mode = "zone"; zone = "ftest"; v4.pool = "10.233.13.0/24"; }};"#
                ),
            );
        }
        sb.deployment(&(s + "}\n"));
    };
    deploy(&names);
    sb.ferry(&["apply", "--yes"]).ok();
    let addrs = |sb: &Sandbox, ns: &[&str]| -> Vec<String> {
        ns.iter()
            .map(|n| outputs(sb, &n.replace('-', "_"))["address"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let first = addrs(&sb, &names);
    let mut uniq = first.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 3, "distinct addresses: {first:?}");
    assert!(first.iter().all(|a| a.starts_with("10.233.13.") && a != "10.233.13.1"), "{first:?}");
    // Two containers in one zone reach each other over the bridge.
    let r = sb
        .ferry(&["container", "run", "ct-pool-a", "--", "wget", "-qO-", &format!("http://{}/", first[1])])
        .ok();
    assert!(r.stdout.contains("ct-pool-b"), "{}", r.all());
    // Re-apply: nothing changes, the addresses stay.
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");
    // Remove b: a and c keep theirs; b's address is free again and a new container may take it.
    deploy(&["ct-pool-a", "ct-pool-c"]);
    sb.ferry(&["apply", "--yes"]).ok();
    assert_eq!(addrs(&sb, &["ct-pool-a", "ct-pool-c"]), vec![first[0].clone(), first[2].clone()]);
    deploy(&names);
    sb.ferry(&["apply", "--yes"]).ok();
    let again = addrs(&sb, &names);
    assert_eq!((&again[0], &again[2]), (&first[0], &first[2]), "pool addresses never move");
    assert!(!again.contains(&"".to_string()));
    // The zone's bridge goes with its last container.
    assert!(link_exists("vz-ftest"));
    sb.ferry(&["destroy", "--yes"]).ok();
    assert!(!link_exists("vz-ftest"), "the empty zone bridge is removed");
    for f in zone_files("ftest").iter().filter(|f| f.starts_with("/etc/")) {
        assert!(!std::path::Path::new(f).exists(), "{f} goes with the zone's last container");
    }
}

#[test]
fn keep_state_keeps_data_across_delete_and_create_and_long_names_work() {
    let long = "ct-a-rather-long-container-name-for-interfaces";
    let _c = Cleanup::new(&[long]);
    let sb = Sandbox::new(BIN);
    let with = |present: bool| {
        let body = if present {
            container(
                "long",
                "long",
                &format!(
                    r#"name = "{long}"; keepState = true;
      network.v4.static = {{ hostAddress = "10.233.14.1"; address = "10.233.14.2"; }};"#
                ),
            )
        } else {
            String::new()
        };
        sb.deployment(&format!("{}{body}}}\n", nix_header()));
    };
    with(true);
    sb.ferry(&["apply", "--yes"]).ok();
    serves("10.233.14.2", 80, "long");
    let unit = std::fs::read_to_string(format!("/etc/systemd/nspawn/{long}.nspawn")).expect("unit");
    let ifname = unit
        .lines()
        .find_map(|l| l.strip_prefix("VirtualEthernetExtra="))
        .expect("veth")
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(ifname.len() <= 15 && ifname.starts_with("ve-"), "{ifname}");
    // Data written inside the container.
    sb.ferry(&[
        "container",
        "run",
        long,
        "--",
        "sh",
        "-c",
        "mkdir -p /var/lib/app && echo precious > /var/lib/app/data",
    ])
    .ok();
    with(false);
    // The deployment is now empty: removing its only resource is on purpose here.
    let r = sb.ferry(&["apply", "--yes", "--allow-destroy-all"]).ok();
    assert!(r.stdout.contains("destroyed"), "{}", r.stdout);
    assert!(!link_exists(&ifname), "stopped: its veth is gone");
    assert!(!std::path::Path::new(&format!("/etc/systemd/nspawn/{long}.nspawn")).exists());
    assert_eq!(
        std::fs::read_to_string(format!("/var/lib/machines/{long}/var/lib/app/data")).ok().as_deref(),
        Some("precious\n"),
        "keepState keeps the root directory"
    );
    with(true);
    sb.ferry(&["apply", "--yes"]).ok();
    let r = sb.ferry(&["container", "run", long, "--", "cat", "/var/lib/app/data"]).ok();
    assert_eq!(r.stdout, "precious\n");
}

#[test]
fn imperative_verbs_and_refusal_for_declared_containers() {
    let _c = Cleanup::new(&["ct-imp", "ct-decl"]);
    let sb = Sandbox::new(BIN);
    let t = test_systems_nix().display().to_string();
    for v in ["v1", "v2"] {
        sb.write(
            &format!("imp-{v}.nix"),
            &format!(
                "let t = import {t} {{ }}; in {{ system = t.mkContainer {{ name = \"imp\"; pages.\"index.html\" = \"imp {v}\\n\"; }}; network.v4.pool = \"10.233.15.0/24\"; }}\n"
            ),
        );
    }
    let r = sb.ferry(&["container", "create", "ct-imp", "--config", "imp-v1.nix"]).ok();
    assert!(r.stdout.contains("created ct-imp on local, address 10.233.15.2"), "{}", r.stdout);
    serves("10.233.15.2", 80, "imp v1");
    sb.ferry(&["container", "create", "ct-imp", "--config", "imp-v1.nix"]).expect(1).says("already exists");
    let list = sb.ferry(&["container", "list"]).ok().stdout;
    assert!(
        list.lines().any(|l| l.starts_with("ct-imp") && l.contains("imperative") && l.contains("running")),
        "{list}"
    );
    assert_eq!(sb.ferry(&["container", "show-ip", "ct-imp"]).ok().stdout, "10.233.15.2\n");
    let pid = |sb: &Sandbox| {
        sb.ferry(&["container", "run", "ct-imp", "--", "cat", "/run/ferry-test/httpd.pid"]).ok().stdout
    };
    let httpd = pid(&sb);
    sb.ferry(&["container", "update", "ct-imp", "--config", "imp-v2.nix"]).ok();
    serves("10.233.15.2", 80, "imp v2");
    assert_ne!(pid(&sb), httpd, "the changed service restarted");
    assert!(sb.ferry(&["container", "generations", "ct-imp"]).ok().stdout.contains("(current)"));
    let r = sb.ferry(&["container", "rollback", "ct-imp"]).ok();
    assert!(r.stdout.contains("generation 1"), "{}", r.stdout);
    serves("10.233.15.2", 80, "imp v1");
    sb.ferry(&["container", "stop", "ct-imp"]).ok();
    assert!(sb
        .ferry(&["container", "list"])
        .ok()
        .stdout
        .lines()
        .any(|l| l.starts_with("ct-imp") && l.contains("stopped")));
    sb.ferry(&["container", "start", "ct-imp"]).ok();
    serves("10.233.15.2", 80, "imp v1");
    sb.ferry(&["container", "run", "ct-imp", "--", "false"]).expect(1);

    // A declared container: operational verbs work, changing verbs are refused.
    sb.deployment(&format!(
        "{}{}}}\n",
        nix_header(),
        container("decl", "decl", r#"name = "ct-decl"; network.v4.pool = "10.233.15.0/24";"#)
    ));
    sb.ferry(&["apply", "--yes"]).ok();
    assert_eq!(
        outputs(&sb, "decl")["address"],
        "10.233.15.3",
        "the pool skips the imperative container's address"
    );
    for verb in [
        &["container", "destroy", "ct-decl"][..],
        &["container", "update", "ct-decl"],
        &["container", "rollback", "decl"],
    ] {
        sb.ferry(verb).expect(1).says("declared in this directory's deployment");
    }
    // From another directory, the host's record of the owner refuses it too.
    let other = Sandbox::new(BIN);
    other.ferry(&["container", "destroy", "ct-decl"]).expect(1).says("owned by a deployment");
    other
        .ferry(&["container", "create", "ct-decl", "--config", &sb.p("imp-v1.nix")])
        .expect(1)
        .says("owned by a deployment");
    sb.ferry(&["container", "restart", "decl"]).ok();
    serves("10.233.15.3", 80, "decl");
    sb.ferry(&["container", "destroy", "ct-imp", "--purge"]).ok();
    assert!(!std::path::Path::new("/var/lib/machines/ct-imp").exists());
    assert!(!sb.ferry(&["container", "list"]).ok().stdout.contains("ct-imp"));
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let _c = Cleanup::new(&["ct-bad-a", "ct-bad-b"]);
    let sb = Sandbox::new(BIN);
    sb.deployment(&format!(
        "{}{}}}\n",
        nix_header(),
        container("a", "a", r#"name = "ct-bad-a"; network.v4.static = { hostAddress = "10.233.16.1"; address = "10.233.16.2"; };"#)
    ));
    sb.ferry(&["apply", "--yes"]).ok();
    let snapshot = sb.state_snapshot();
    let unit = std::fs::read_to_string("/etc/systemd/nspawn/ct-bad-a.nspawn").expect("unit");
    let cases: [(&str, &str); 5] = [
        (
            r#"name = "ct-bad-b"; network.v4.pool = "10.233.16.0/33";"#,
            "network.v4.pool: `10.233.16.0/33` is not a valid CIDR",
        ),
        (
            r#"name = "ct-bad-b"; network.v4 = { pool = "10.233.17.0/24"; address = "10.233.18.5"; };"#,
            "outside the pool 10.233.17.0/24",
        ),
        (r#"name = "Bad_Name";"#, "invalid container name `Bad_Name`"),
        (
            r#"name = "ct-bad-b"; network.v4.static = { hostAddress = "10.233.16.1"; address = "10.233.16.2"; };"#,
            "already used by container `ct-bad-a`",
        ),
        (r#"name = "ct-bad-b"; system = t.mkBlob { name = "not-a-system"; sizeKiB = 1; };"#, "has no init"),
    ];
    for (inputs, msg) in cases {
        let body = container(
            "a",
            "a",
            r#"name = "ct-bad-a"; network.v4.static = { hostAddress = "10.233.16.1"; address = "10.233.16.2"; };"#,
        ) + &container("b", "b", inputs);
        sb.deployment(&format!("{}{body}}}\n", nix_header()));
        let r = sb.ferry(&["apply", "--yes"]);
        assert_ne!(r.code, 0, "{inputs}: {}", r.all());
        assert!(r.all().contains(msg), "{inputs}: expected {msg:?} in\n{}", r.all());
        assert!(!r.all().contains("panicked"), "{}", r.all());
        assert!(
            !std::path::Path::new("/etc/systemd/nspawn/ct-bad-b.nspawn").exists() || msg.contains("no init"),
            "{inputs}"
        );
        assert_eq!(
            std::fs::read_to_string("/etc/systemd/nspawn/ct-bad-a.nspawn").ok().as_deref(),
            Some(unit.as_str())
        );
        if !msg.contains("no init") && !msg.contains("already used") {
            assert_eq!(sb.state_snapshot(), snapshot, "{inputs}: a refused plan changes nothing");
        }
    }
    serves("10.233.16.2", 80, "a");
}

#[test]
fn container_on_a_remote_test_host() {
    blackhole();
    let sb = Sandbox::new(BIN);
    let base = sb.path().join("hosts");
    std::fs::create_dir_all(&base).expect("hosts dir");
    let h = TestHost::start(&base, "cthost").expect("start test host");
    sb.deployment(&format!(
        "{}{}}}\n",
        nix_header(),
        container(
            "remote",
            "remote v1",
            &format!(
                r#"name = "ct-remote"; host = {{ host = "{addr}"; port = {port}; hostKey = "{key}"; }};
      sshKey = "{ckey}";
      network.v4.static = {{ hostAddress = "10.233.19.1"; address = "10.233.19.2"; }};"#,
                addr = h.addr(),
                port = h.port(),
                key = h.host_key(),
                ckey = h.client_key().display()
            )
        )
    ));
    let r = sb.ferry(&["apply", "--yes"]).ok();
    assert!(r.stdout.contains("1 created"), "{}", r.all());
    serves("10.233.19.2", 80, "remote v1");
    // It lives in the test host's namespace: its unit and profile are the host's, not ours.
    assert!(!std::path::Path::new("/etc/systemd/nspawn/ct-remote.nspawn").exists());
    let out = h.exec("cat /etc/systemd/nspawn/ct-remote.nspawn && readlink /nix/var/nix/profiles/per-container/ct-remote/system");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("VirtualEthernetExtra=ve-ct-remote:host0") && text.contains("system-1-link"),
        "{text}"
    );
    let o = outputs(&sb, "remote");
    assert_eq!(o["host"], format!("{}:{}", h.addr(), h.port()).trim_end_matches(":22"));
    assert!(o["hostKey"].as_str().is_some_and(|k| k.starts_with("ssh-")));
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");
    // Issue 13, fault 3: the test host's PATH finds busybox's nsenter first, which has no `-a`.
    let run = sb.ferry(&["container", "run", "ct-remote", "--", "hostname"]).ok();
    assert!(run.stdout.contains("ct-remote"), "{}", run.all());
    sb.ferry(&["destroy", "--yes"]).ok();
    assert!(!link_exists("ve-ct-remote"), "stopped: its veth is gone");
    let out = h.exec("test -e /etc/systemd/nspawn/ct-remote.nspawn && echo present || echo gone");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "gone");
}

/// The first pool address on a host that never had an address claim (issue 10: the claims
/// listing failed on an empty claims directory, so the very first pool container on a fresh
/// machine failed). A fresh test host has its own, empty `/var/lib/ferry`: no claim of this
/// machine or of another test can hide the case.
#[test]
fn the_first_pool_container_on_a_host_without_claims() {
    blackhole();
    let sb = Sandbox::new(BIN);
    let base = sb.path().join("hosts");
    std::fs::create_dir_all(&base).expect("hosts dir");
    let h = TestHost::start(&base, "freshct").expect("start test host");
    let on_host = |script: &str| String::from_utf8_lossy(&h.exec(script).stdout).trim().to_string();
    assert_eq!(on_host("ls -A /var/lib/ferry"), "", "a fresh host: nothing in /var/lib/ferry");
    assert!(!link_exists("ve-ct-fresh"), "no leftover interface of an earlier run");
    sb.deployment(&format!(
        "{}{}}}\n",
        nix_header(),
        container(
            "fresh",
            "fresh v1",
            &format!(
                r#"name = "ct-fresh"; host = {{ host = "{addr}"; port = {port}; hostKey = "{key}"; }};
      sshKey = "{ckey}";
      network.v4.pool = "10.233.20.0/24";"#,
                addr = h.addr(),
                port = h.port(),
                key = h.host_key(),
                ckey = h.client_key().display()
            )
        )
    ));
    let r = sb.ferry(&["apply", "--yes"]).ok();
    assert!(r.stdout.contains("1 created"), "{}", r.all());
    assert_eq!(outputs(&sb, "fresh")["address"], "10.233.20.2", "the pool's first address");
    serves("10.233.20.2", 80, "fresh v1");
    assert_eq!(
        on_host("cd /var/lib/ferry/nspawn/.addresses && for f in *; do echo \"$f $(cat \"$f\")\"; done"),
        "10.233.20.2 ct-fresh",
        "the only claim on the host"
    );
    sb.ferry(&["destroy", "--yes"]).ok();
    assert_eq!(on_host("ls -A /var/lib/ferry/nspawn/.addresses"), "", "destroy releases the claim");
    assert!(!link_exists("ve-ct-fresh"), "stopped: its veth is gone");
    // Empty again: the next first container works the same (the listing of no claims).
    let r = sb.ferry(&["apply", "--yes"]).ok();
    assert!(r.stdout.contains("1 created"), "{}", r.all());
    assert_eq!(outputs(&sb, "fresh")["address"], "10.233.20.2");
    sb.ferry(&["destroy", "--yes"]).ok();
}

/// Issue 11: the helper wrote `DEST.ferry-tmp` and chmodded/renamed it through symlinks, so a
/// link planted there (or at the unit itself) made root overwrite its target.
#[test]
fn unit_files_are_written_without_following_planted_symlinks() {
    let _c = Cleanup::new(&["ct-link"]);
    let sb = Sandbox::new(BIN);
    let victim = sb.write("victim", "precious\n");
    let victim2 = sb.write("victim2", "precious\n");
    std::fs::create_dir_all("/etc/systemd/nspawn").unwrap();
    let unit = std::path::Path::new("/etc/systemd/nspawn/ct-link.nspawn");
    let tmp = std::path::Path::new("/etc/systemd/nspawn/ct-link.nspawn.ferry-tmp");
    let _ = std::fs::remove_file(tmp);
    std::os::unix::fs::symlink(&victim, tmp).unwrap();
    std::os::unix::fs::symlink(&victim2, unit).unwrap();
    let net =
        r#"name = "ct-link"; network.v4.static = { hostAddress = "10.233.21.1"; address = "10.233.21.2"; };"#;
    sb.deployment(&format!("{}{}}}\n", nix_header(), container("web", "linked", net)));
    sb.ferry(&["apply", "--yes"]).ok();
    let _ = std::fs::remove_file(tmp);
    assert_eq!(sb.read("victim").as_deref(), Some("precious\n"), "written through the planted temp link");
    assert_eq!(sb.read("victim2").as_deref(), Some("precious\n"), "written through a link at the unit");
    let meta = std::fs::symlink_metadata(unit).expect("the unit");
    assert!(meta.file_type().is_file(), "the link at the unit was not replaced by the unit");
    assert!(std::fs::read_to_string(unit).unwrap().contains("[Exec]"));
    serves("10.233.21.2", 80, "linked");
    sb.ferry(&["destroy", "--yes"]).ok();
    assert!(!unit.exists());
}
