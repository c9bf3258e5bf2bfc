//! Helpers of the `nspawn.container` end-to-end tests (`containers.rs`, `container_faults.rs`):
//! cleaning a test's containers off this machine, and writing container deployments.
#![allow(dead_code)]

use std::time::Duration;

use ferry_testkit::host::test_systems_nix;
use ferry_testkit::{http_get, wait_until, Sandbox};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_ferry");

/// What a local container may leave on this machine (nspawn.sh's layout, direct runtime).
pub const RUN: &str = "/run/ferry/nspawn";
pub const CLAIMS: &str = "/var/lib/ferry/nspawn/.addresses";

/// Makes the test's own names clean on this machine: at the start it removes whatever an
/// earlier (killed) run left of them and checks that nothing is left, so the test runs as on a
/// fresh machine; on drop (also when the test fails) it stops and purges them again — processes,
/// unit, networkd files, root directory, profile, GC roots, state, address claims, network
/// namespace, veth, nftables table, zone bridge and files — and, unless the test already
/// failed, checks that nothing is left for the next run.
pub struct Cleanup {
    names: Vec<String>,
    zones: Vec<String>,
    script: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Cleanup {
    pub fn new(names: &[&str]) -> Cleanup {
        Cleanup::with_zones(names, &[])
    }

    /// Also the zones (`vz-ZONE` bridge, `50-ferry-zone-ZONE.*` files) only this test uses.
    pub fn with_zones(names: &[&str], zones: &[&str]) -> Cleanup {
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

    pub fn helper(&self, args: &[&str]) {
        let _ = std::process::Command::new("sh").arg(&self.script).args(args).output();
    }

    pub fn purge(&self) {
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
    pub fn traces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.names.iter().flat_map(|n| traces_of(n)).collect();
        let exists = |p: &str| std::fs::symlink_metadata(p).is_ok();
        for z in &self.zones {
            if link_exists(&format!("vz-{z}")) {
                v.push(format!("interface vz-{z}"));
            }
            v.extend(zone_files(z).into_iter().filter(|p| exists(p)));
        }
        v
    }
}

/// What exists of container `n` on this machine.
pub fn traces_of(n: &str) -> Vec<String> {
    let mut v = vec![];
    let exists = |p: &str| std::fs::symlink_metadata(p).is_ok();
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
    v
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
pub fn run_files(n: &str) -> Vec<String> {
    ["pid", "supervisor", "unit", "exit"].iter().map(|e| format!("{RUN}/{n}.{e}")).collect()
}

pub fn zone_files(z: &str) -> Vec<String> {
    vec![
        format!("/etc/systemd/network/50-ferry-zone-{z}.netdev"),
        format!("/etc/systemd/network/50-ferry-zone-{z}.network"),
        format!("{RUN}/zone-vz-{z}.lock"),
    ]
}

/// The host-side interfaces container `n` may have (veth or zone mode).
pub fn links(n: &str) -> Vec<String> {
    vec![ferry_provider_nspawn::net::ifname("ve-", n), ferry_provider_nspawn::net::ifname("vb-", n)]
}

/// Every process on this machine: (PID, parent PID, command line).
pub fn processes() -> Vec<(u32, u32, Vec<String>)> {
    let mut v = vec![];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<String> =
            cmd.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let ppid = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next()?.split_whitespace().nth(1)?.parse::<u32>().ok())
            .unwrap_or(0);
        v.push((pid, ppid, args));
    }
    v
}

/// Processes of container `n` on this machine: its `systemd-nspawn -M n`, the container's init
/// and ferry's supervisor (`sh …nspawn….sh supervise n`).
pub fn container_processes(n: &str) -> Vec<u32> {
    let mut v = vec![];
    for (pid, _, args) in processes() {
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
pub fn blackhole() {
    let out = std::process::Command::new("ip")
        .args(["route", "replace", "blackhole", "10.233.0.0/16"])
        .output()
        .expect("run ip");
    assert!(out.status.success(), "ip route: {}", String::from_utf8_lossy(&out.stderr));
}

/// Whether a host-side interface exists (a running container with a private network has one).
pub fn link_exists(name: &str) -> bool {
    std::path::Path::new(&format!("/sys/class/net/{name}")).exists()
}

pub fn nix_header() -> String {
    format!("{{ resources, ... }}:\nlet t = import {} {{ }}; in {{\n", test_systems_nix().display())
}

/// One container resource: `page` is its index.html; `inputs` extra inputs (Nix attrset body).
/// (Unless `inputs` sets `system` itself.)
pub fn container(res: &str, page: &str, inputs: &str) -> String {
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
pub fn serves(addr: &str, port: u16, want: &str) {
    wait_until(Duration::from_secs(20), &format!("http://{addr}:{port}/ serving {want:?}"), || {
        http_get(addr, port, "/").is_some_and(|b| b.contains(want))
    });
}

pub fn outputs(sb: &Sandbox, name: &str) -> Value {
    let r = sb.ferry(&["state", "show", name, "--json"]).ok();
    let v: Value = serde_json::from_str(&r.stdout).expect("state show --json");
    v["outputs"].clone()
}

pub fn leader(sb: &Sandbox, name: &str) -> u64 {
    outputs(sb, name)["leaderPid"].as_u64().unwrap_or_else(|| panic!("{name} has no leader PID"))
}
