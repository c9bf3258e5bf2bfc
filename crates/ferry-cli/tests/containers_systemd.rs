//! `nspawn.container` with the **systemd runtime**, run for real: the container is deployed over
//! SSH to a booted systemd test host ([`SystemdHost`], started with nesting enabled: its
//! systemd-nspawn@.service, machined and dbus run nspawn containers inside it), where ferry's
//! helper finds systemd as PID 1 and drives `systemd-nspawn@NAME.service` through `systemctl`
//! and `machinectl`.
//!
//! Network hygiene: the systemd host shares this machine's network namespace, so the
//! container's `ve-…` link (and the host's networkd, configured to leave foreign routes alone)
//! act here too; the blackhole route for 10.233.0.0/16 (as in the containers tests) goes in
//! first. The container's address is probed over the veth only while it runs (its /32 route
//! exists); otherwise HTTP is read inside the container (`ferry container run … wget`).

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_testkit::systemd_host::SystemdHost;
use ferry_testkit::{wait_until, Sandbox};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ferry");
const NAME: &str = "ct-sd";
const UNIT: &str = "systemd-nspawn@ct-sd.service";
/// The host-side veth of the container (`VirtualEthernetExtra=ve-ct-sd:host0`).
const VETH: &str = "ve-ct-sd";

/// `sh -c script` in the host: (success, stdout trimmed).
fn sh(h: &Host, script: &str) -> (bool, String) {
    let o = h.exec(script);
    (o.status.success(), String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Network hygiene (see the module docs and `blackhole()` in containers.rs).
fn blackhole() {
    let out = std::process::Command::new("ip")
        .args(["route", "replace", "blackhole", "10.233.0.0/16"])
        .output()
        .expect("run ip");
    assert!(out.status.success(), "ip route: {}", String::from_utf8_lossy(&out.stderr));
}

/// The systemd host; on drop, first stops and purges the container inside it with the helper
/// script itself (whatever the test got to), then the host powers off.
struct Host(SystemdHost);

impl Host {
    fn start() -> (Sandbox, Host) {
        let sb = Sandbox::new(BIN);
        let h = SystemdHost::start_nesting(&sb.path().join("hosts"), "sdct").expect("boot the systemd host");
        eprintln!("systemd host booted in {:?}", h.boot_time());
        std::fs::write(h.root().join("root/ferry-nspawn-cleanup.sh"), ferry_provider_nspawn::host::SCRIPT)
            .expect("write the cleanup script");
        (sb, Host(h))
    }
}

impl std::ops::Deref for Host {
    type Target = SystemdHost;
    fn deref(&self) -> &SystemdHost {
        &self.0
    }
}

impl std::ops::DerefMut for Host {
    fn deref_mut(&mut self) -> &mut SystemdHost {
        &mut self.0
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if self.0.leader() == 0 {
            return;
        }
        let s = "/root/ferry-nspawn-cleanup.sh";
        let _ = self.0.exec(&format!(
            "sh {s} stop {NAME} 5; sh {s} enable {NAME} no; sh {s} destroy {NAME} yes; \
             systemctl reset-failed {UNIT} 2>/dev/null; networkctl reload 2>/dev/null; true"
        ));
    }
}

fn outputs(sb: &Sandbox) -> Value {
    let r = sb.ferry(&["state", "show", "web", "--json"]).ok();
    let v: Value = serde_json::from_str(&r.stdout).expect("state show --json");
    v["outputs"].clone()
}

/// `systemctl show -p ActiveState,MainPID UNIT` and machined's leader, inside the host.
fn unit_state(h: &Host) -> (String, String) {
    let (_, active) = sh(h, &format!("systemctl is-active {UNIT}"));
    let (_, leader) = sh(h, &format!("machinectl show {NAME} -p Leader --value"));
    (active, leader)
}

/// The leader PID ferry reports, which must be machined's (the systemd runtime's source).
fn leader(sb: &Sandbox, h: &Host) -> u64 {
    let pid = outputs(sb)["leaderPid"].as_u64().expect("leaderPid");
    let (active, machined) = unit_state(h);
    assert_eq!(active, "active", "{UNIT}");
    assert_eq!(machined, pid.to_string(), "ferry's leader PID is machined's Leader of {NAME}");
    pid
}

/// What the container's httpd serves on its own loopback (`container run` → the helper's `exec`:
/// nsenter into machined's leader).
fn page(sb: &Sandbox) -> String {
    let r = sb.ferry(&["container", "run", NAME, "--", "wget", "-qO-", "http://127.0.0.1/"]).ok();
    r.stdout.trim().to_string()
}

fn link_exists(name: &str) -> bool {
    Path::new(&format!("/sys/class/net/{name}")).exists()
}

#[test]
fn a_container_on_a_systemd_host_runs_as_systemd_nspawn_at_service() {
    blackhole();
    let started = Instant::now();
    let (sb, mut h) = Host::start();
    let (addr, port, key, ckey) =
        (h.addr().to_string(), h.port(), h.host_key().to_string(), h.client_key().display().to_string());
    let deploy = |page: &str, strategy: &str, auto_start: bool| {
        sb.deployment(&format!(
            r#"{{ resources, ... }}:
let t = import {tk} {{ }}; in {{
  resources.web = {{
    type = "nspawn.container";
    inputs = {{
      name = "{NAME}";
      system = t.mkContainer {{ name = "sd"; pages."index.html" = "{page}\n"; }};
      keepState = false;
      autoStart = {auto_start};
      activation.strategy = "{strategy}";
      host = {{ host = "{addr}"; port = {port}; hostKey = "{key}"; }};
      sshKey = "{ckey}";
      network.v4.static = {{ hostAddress = "10.233.41.1"; address = "10.233.41.2"; }};
    }};
  }};
}}
"#,
            tk = ferry_testkit::host::test_systems_nix().display(),
        ));
    };
    let root = h.root();
    let nspawn_file = root.join(format!("etc/systemd/nspawn/{NAME}.nspawn"));

    // Create: the helper picks the systemd runtime.
    deploy("sd v1", "reload", true);
    let t = Instant::now();
    let r = sb.ferry(&["apply", "--yes"]).ok();
    eprintln!("create: {:?}", t.elapsed());
    assert!(r.stdout.contains("1 created"), "{}", r.all());
    let pid1 = leader(&sb, &h);
    let (_, main) = sh(&h, &format!("systemctl show -p MainPID --value {UNIT}"));
    let (_, comm) = sh(&h, &format!("cat /proc/{main}/comm"));
    assert_eq!(comm, "systemd-nspawn", "the unit's main process is nspawn (pid {main})");
    let (_, cgroup) = sh(&h, &format!("cat /proc/{pid1}/cgroup"));
    assert!(cgroup.contains(&format!("/machine.slice/{UNIT}/")), "leader {pid1} in the unit: {cgroup}");
    assert!(!sh(&h, &format!("test -e /run/ferry/nspawn/{NAME}.pid")).0, "no direct-runtime supervisor");
    let unit = std::fs::read_to_string(&nspawn_file).expect("the .nspawn file on the host");
    assert!(unit.contains(&format!("VirtualEthernetExtra={VETH}:host0")), "{unit}");
    assert!(link_exists(VETH), "nspawn created the veth (the host shares our network namespace)");
    assert_eq!(page(&sb), "sd v1");
    assert_eq!(sh(&h, &format!("systemctl is-enabled {UNIT}")).1, "enabled", "autoStart = true");

    // The host side of the network: ferry's networkd file, applied by the host's networkd
    // (`networkctl reload` in the helper): the host address on the veth, a /32 route to the
    // container (more specific than the blackhole route).
    wait_until(Duration::from_secs(10), "networkd to configure the veth", || {
        sh(&h, &format!("ip -4 -o addr show dev {VETH}")).1.contains("inet 10.233.41.1/32")
            && sh(&h, "ip -4 route show 10.233.41.2/32").1.contains(&format!("dev {VETH}"))
    });
    // The container side is its own networkd's job (a NixOS container runs one, reading the
    // file ferry bind-mounts at /run/systemd/network); the busybox test system has none, so
    // the test applies that file's address and route itself, in the container's namespace.
    let (_, host0) = sh(&h, &format!("cat /proc/{pid1}/root/run/systemd/network/10-ferry-host0.network"));
    assert!(host0.contains("Address=10.233.41.2/32"), "{host0}");
    let (ok, out) = sh(
        &h,
        &format!(
            "nsenter -t {pid1} -n sh -c 'ip link set host0 up && ip addr add 10.233.41.2/32 dev host0 \
             && ip route add 10.233.41.1/32 dev host0 && ip route add default via 10.233.41.1 dev host0' 2>&1"
        ),
    );
    assert!(ok, "configuring host0: {out}");
    // Over the veth, from this machine (the host shares its network namespace; the /32 route
    // exists while the container runs). (This machine's busybox wget segfaults, even on
    // 127.0.0.1, so not from inside the host.)
    let body = ferry_testkit::http_get("10.233.41.2", 80, "/");
    assert!(
        body.as_deref().is_some_and(|b| b.starts_with("HTTP/1.") && b.ends_with("\r\n\r\nsd v1\n")),
        "http://10.233.41.2/ over the veth: {body:?}"
    );
    let o = outputs(&sb);
    assert_eq!(o["generation"], 1);
    assert_eq!(o["address"], "10.233.41.2");

    // No-op re-apply.
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");
    let r = sb.ferry(&["apply", "--yes"]).ok();
    assert!(!r.stdout.contains("changed") && !r.stdout.contains("created"), "{}", r.stdout);
    assert_eq!(leader(&sb, &h), pid1, "a no-op apply leaves the container alone");

    // A system change with strategy reload: switch-to-configuration inside, same init.
    deploy("sd v2", "reload", true);
    let t = Instant::now();
    sb.ferry(&["apply", "--yes"]).ok();
    eprintln!("reload: {:?}", t.elapsed());
    assert_eq!(leader(&sb, &h), pid1, "a reload keeps the container's init");
    assert_eq!(page(&sb), "sd v2");
    assert_eq!(outputs(&sb)["generation"], 2);

    // A system change with strategy restart: a new init, through systemctl stop/start.
    deploy("sd v3", "restart", true);
    let t = Instant::now();
    sb.ferry(&["apply", "--yes"]).ok();
    eprintln!("restart: {:?}", t.elapsed());
    let pid2 = leader(&sb, &h);
    assert_ne!(pid2, pid1, "a restart starts a new init");
    assert_eq!(page(&sb), "sd v3");
    assert_eq!(outputs(&sb)["generation"], 3);
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");

    // autoStart = false: the unit is disabled (the running container is left alone).
    deploy("sd v3", "restart", false);
    sb.ferry(&["apply", "--yes"]).ok();
    assert_eq!(sh(&h, &format!("systemctl is-enabled {UNIT}")).1, "disabled", "autoStart = false");
    assert_eq!(leader(&sb, &h), pid2);
    deploy("sd v3", "restart", true);
    sb.ferry(&["apply", "--yes"]).ok();
    assert_eq!(sh(&h, &format!("systemctl is-enabled {UNIT}")).1, "enabled", "autoStart = true again");

    // Drift: the container's init dies behind ferry's back; the unit stops, plan shows it and
    // apply starts the unit again.
    let pid3 = leader(&sb, &h);
    assert!(sh(&h, &format!("kill -KILL {pid3}")).0);
    wait_until(Duration::from_secs(10), "the unit to stop", || unit_state(&h).0 != "active");
    wait_until(Duration::from_secs(10), "the plan to show drift", || {
        sb.ferry(&["plan"]).stdout.contains("drift: the container is not running")
    });
    sb.ferry(&["apply", "--yes"]).ok();
    assert_ne!(leader(&sb, &h), pid3, "started again");
    assert_eq!(page(&sb), "sd v3");

    // autoStart across a reboot of the host: machines.target starts the enabled unit.
    let generation = outputs(&sb)["generation"].clone();
    let t = Instant::now();
    h.reboot().expect("reboot the systemd host");
    wait_until(Duration::from_secs(30), "the container to come back after the host's reboot", || {
        unit_state(&h).0 == "active" && sb.ferry(&["plan"]).stdout.trim() == "No changes."
    });
    eprintln!("host reboot until the container runs: {:?}", t.elapsed());
    assert_eq!(page(&sb), "sd v3");
    assert_eq!(outputs(&sb)["generation"], generation);

    // Destroy: the unit stops and is disabled; .nspawn, root and profile are gone.
    let t = Instant::now();
    sb.ferry(&["destroy", "--yes"]).ok();
    eprintln!("destroy: {:?}", t.elapsed());
    let (active, machined) = unit_state(&h);
    assert_eq!((active.as_str(), machined.as_str()), ("inactive", ""), "{UNIT} stopped, machine gone");
    assert_ne!(sh(&h, &format!("systemctl is-enabled {UNIT}")).1, "enabled");
    assert!(!nspawn_file.exists(), "the .nspawn file is removed");
    assert!(
        !root.join(format!("var/lib/machines/{NAME}")).exists(),
        "the root is removed (keepState = false)"
    );
    assert!(!h.dir().join(format!("nix/var/nix/profiles/per-container/{NAME}")).exists());
    assert!(!link_exists(VETH), "stopped: its veth is gone");
    assert_eq!(sh(&h, "systemctl --failed --plain --no-legend --no-pager").1, "", "no failed unit");
    eprintln!("total: {:?}", started.elapsed());
}
