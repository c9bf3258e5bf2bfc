//! `nspawn.container` end to end: the ferry binary running busybox test container systems under
//! the real systemd-nspawn, as root, on this machine (direct runtime: systemd is not PID 1
//! here) and on a test host over SSH. Networking is real (network namespaces, veth pairs,
//! bridges, nftables); traffic goes only to loopback and to the containers' own namespaces.
//!
//! Each test uses its own container names, subnets and ports, so the tests run in parallel;
//! a guard stops and purges its containers whatever happens.

use std::time::Duration;

use ferry_testkit::host::{test_systems_nix, TestHost};
use ferry_testkit::{http_get, wait_until, Sandbox};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

/// What a local container may leave on this machine (nspawn.sh's layout, direct runtime).
const RUN: &str = "/run/ferry/nspawn";
const CLAIMS: &str = "/var/lib/ferry/nspawn/.addresses";

/// Makes the test's own names clean on this machine: at the start it removes whatever an
/// earlier (killed) run left of them and checks that nothing is left, so the test runs as on a
/// fresh machine; on drop (also when the test fails) it stops and purges them again — processes,
/// unit, networkd files, root directory, profile, GC roots, state, address claims, network
/// namespace, veth, nftables table, zone bridge and files — and, unless the test already
/// failed, checks that nothing is left for the next run.
struct Cleanup {
    names: Vec<String>,
    zones: Vec<String>,
    script: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Cleanup {
    fn new(names: &[&str]) -> Cleanup {
        Cleanup::with_zones(names, &[])
    }

    /// Also the zones (`vz-ZONE` bridge, `50-ferry-zone-ZONE.*` files) only this test uses.
    fn with_zones(names: &[&str], zones: &[&str]) -> Cleanup {
        blackhole();
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("nspawn.sh");
        std::fs::write(&script, ferry_provider_nspawn::host::SCRIPT).expect("write script");
        let c = Cleanup {
            names: names.iter().map(|s| s.to_string()).collect(),
            zones: zones.iter().map(|s| s.to_string()).collect(),
            script,
            _dir: dir,
        };
        c.purge();
        let left = c.traces();
        assert!(left.is_empty(), "leftovers of an earlier run that cannot be removed: {left:?}");
        c
    }

    fn helper(&self, args: &[&str]) {
        let _ = std::process::Command::new("sh").arg(&self.script).args(args).output();
    }

    fn purge(&self) {
        for n in &self.names {
            self.helper(&["stop", n, "3"]);
            for pid in container_processes(n) {
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            self.helper(&["destroy", n, "yes"]);
            let _ = std::process::Command::new("ip").args(["netns", "del", &format!("ferry-{n}")]).output();
            for l in links(n) {
                let _ = std::process::Command::new("ip").args(["link", "del", &l]).output();
            }
            let _ = std::process::Command::new("nft")
                .args(["delete", "table", "ip", &format!("ferry-ct-{n}")])
                .output();
            for f in run_files(n) {
                let _ = std::fs::remove_file(f);
            }
        }
        for z in &self.zones {
            let _ = std::process::Command::new("ip").args(["link", "del", &format!("vz-{z}")]).output();
            for f in zone_files(z) {
                let _ = std::fs::remove_file(f);
            }
        }
        // Killed processes go away a moment later.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.names.iter().any(|n| !container_processes(n).is_empty())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What exists of the test's names on this machine.
    fn traces(&self) -> Vec<String> {
        let mut v = vec![];
        let exists = |p: &str| std::fs::symlink_metadata(p).is_ok();
        for n in &self.names {
            let paths = [
                format!("/etc/systemd/nspawn/{n}.nspawn"),
                format!("/etc/systemd/network/50-ferry-ct-{n}.network"),
                format!("/var/lib/machines/{n}"),
                format!("/var/lib/ferry/nspawn/{n}"),
                format!("/nix/var/nix/profiles/per-container/{n}"),
                format!("/nix/var/nix/gcroots/per-container/{n}"),
                format!("/run/netns/ferry-{n}"),
            ];
            v.extend(paths.into_iter().chain(run_files(n)).filter(|p| exists(p)));
            for e in std::fs::read_dir(CLAIMS).into_iter().flatten().flatten() {
                if std::fs::read_to_string(e.path()).is_ok_and(|o| o.trim() == n) {
                    v.push(format!("address claim {}", e.path().display()));
                }
            }
            v.extend(links(n).into_iter().filter(|l| link_exists(l)).map(|l| format!("interface {l}")));
            let table = format!("ferry-ct-{n}");
            let nft = std::process::Command::new("nft").args(["list", "table", "ip", &table]).output();
            if nft.is_ok_and(|o| o.status.success()) {
                v.push(format!("nftables table ip {table}"));
            }
            v.extend(container_processes(n).into_iter().map(|p| format!("process {p} of {n}")));
        }
        for z in &self.zones {
            if link_exists(&format!("vz-{z}")) {
                v.push(format!("interface vz-{z}"));
            }
            v.extend(zone_files(z).into_iter().filter(|p| exists(p)));
        }
        v
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.purge();
        if !std::thread::panicking() {
            let left = self.traces();
            assert!(left.is_empty(), "the test left this behind: {left:?}");
        }
    }
}

/// The direct runtime's files of container `n` in /run.
fn run_files(n: &str) -> Vec<String> {
    ["pid", "supervisor", "unit", "exit"].iter().map(|e| format!("{RUN}/{n}.{e}")).collect()
}

fn zone_files(z: &str) -> Vec<String> {
    vec![
        format!("/etc/systemd/network/50-ferry-zone-{z}.netdev"),
        format!("/etc/systemd/network/50-ferry-zone-{z}.network"),
        format!("{RUN}/zone-vz-{z}.lock"),
    ]
}

/// The host-side interfaces container `n` may have (veth or zone mode).
fn links(n: &str) -> Vec<String> {
    vec![ferry_provider_nspawn::net::ifname("ve-", n), ferry_provider_nspawn::net::ifname("vb-", n)]
}

/// Processes of container `n` on this machine: its `systemd-nspawn -M n`, the container's init
/// and ferry's supervisor (`sh …nspawn….sh supervise n`).
fn container_processes(n: &str) -> Vec<u32> {
    let mut v = vec![];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<String> =
            cmd.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let nspawn = args.first().is_some_and(|a| a.ends_with("systemd-nspawn"))
            && args.windows(2).any(|w| w[0] == "-M" && w[1] == n);
        let supervisor = args.len() >= 4
            && args[1].contains("nspawn")
            && args[1].ends_with(".sh")
            && args[2] == "supervise"
            && args[3] == n;
        if supervisor {
            v.push(pid);
        }
        if nspawn {
            v.push(pid);
            // The container's init: with it goes everything inside.
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
            v.extend(children.unwrap_or_default().split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
    }
    v
}

/// Network hygiene: the tests' container addresses are in 10.233.0.0/16. A container's own
/// route (/32 or its zone's subnet) is more specific; anything else in the range (say, a
/// container that just stopped) is dropped here instead of following the default route off
/// the machine.
fn blackhole() {
    let out = std::process::Command::new("ip")
        .args(["route", "replace", "blackhole", "10.233.0.0/16"])
        .output()
        .expect("run ip");
    assert!(out.status.success(), "ip route: {}", String::from_utf8_lossy(&out.stderr));
}

/// Whether a host-side interface exists (a running container with a private network has one).
fn link_exists(name: &str) -> bool {
    std::path::Path::new(&format!("/sys/class/net/{name}")).exists()
}

fn nix_header() -> String {
    format!("{{ resources, ... }}:\nlet t = import {} {{ }}; in {{\n", test_systems_nix().display())
}

/// One container resource: `page` is its index.html; `inputs` extra inputs (Nix attrset body).
/// (Unless `inputs` sets `system` itself.)
fn container(res: &str, page: &str, inputs: &str) -> String {
    let system = if inputs.contains("system =") {
        String::new()
    } else {
        format!(r#"system = t.mkContainer {{ name = "{res}"; pages."index.html" = "{page}\n"; }};"#)
    };
    let keep = if inputs.contains("keepState") { "" } else { "keepState = false;" };
    format!(
        r#"  resources.{res} = {{
    type = "nspawn.container";
    inputs = {{
      {system}
      {keep}
      {inputs}
    }};
  }};
"#
    )
}

/// The body served at http://ADDR:PORT/ once it contains `want` (services start right after the
/// container's init activates; a generous wait).
fn serves(addr: &str, port: u16, want: &str) {
    wait_until(Duration::from_secs(20), &format!("http://{addr}:{port}/ serving {want:?}"), || {
        http_get(addr, port, "/").is_some_and(|b| b.contains(want))
    });
}

fn outputs(sb: &Sandbox, name: &str) -> Value {
    let r = sb.ferry(&["state", "show", name, "--json"]).ok();
    let v: Value = serde_json::from_str(&r.stdout).expect("state show --json");
    v["outputs"].clone()
}

fn leader(sb: &Sandbox, name: &str) -> u64 {
    outputs(sb, name)["leaderPid"].as_u64().unwrap_or_else(|| panic!("{name} has no leader PID"))
}

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
