//! The files systemd reads for a container (pure: inputs + resolved addresses → file contents).
//!
//! - `/etc/systemd/nspawn/NAME.nspawn` — read by `systemd-nspawn --settings=trusted -M NAME` in
//!   both runtimes (the direct runtime sets the network up itself and passes
//!   `--network-namespace-path`, which takes precedence over `[Network]`);
//! - host-side networkd files in `/etc/systemd/network/` (`50-ferry-ct-NAME.network` for the
//!   `ve-…`/`vb-…` interface; `50-ferry-zone-ZONE.{netdev,network}` for a zone's bridge);
//! - the container side's `10-ferry-host0.network`, in `/var/lib/ferry/nspawn/NAME/network/`,
//!   bind-mounted read-only at `/run/systemd/network` inside the container;
//! - `net.env`: the same network as shell variables, for the direct runtime.

use std::fmt::Write as _;

use crate::net::{ifname, Cidr};
use crate::schema::{Container, Mode};

/// Where ferry keeps a container's host-side files.
pub fn state_dir(name: &str) -> String {
    format!("/var/lib/ferry/nspawn/{name}")
}

pub fn nspawn_path(name: &str) -> String {
    format!("/etc/systemd/nspawn/{name}.nspawn")
}

/// One address family, resolved: the host side's address (if any) and the container's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub host: Option<Cidr>,
    pub container: Cidr,
}

/// A container's network with addresses assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub mode: Mode,
    /// Host-side interface: `ve-NAME` (veth) or `vb-NAME` (zone), shortened to 15 bytes.
    pub ifname: String,
    /// `vz-ZONE` in zone mode.
    pub bridge: Option<String>,
    pub v4: Option<Addr>,
    pub v6: Option<Addr>,
}

impl Resolved {
    pub fn new(c: &Container, v4: Option<Addr>, v6: Option<Addr>) -> Resolved {
        let (ifname, bridge) = match c.network.mode {
            Mode::Zone => (ifname("vb-", &c.name), c.network.zone.as_ref().map(|z| format!("vz-{z}"))),
            _ => (ifname("ve-", &c.name), None),
        };
        Resolved { mode: c.network.mode, ifname, bridge, v4, v6 }
    }
}

/// A file for the host: absolute path, mode, content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub mode: &'static str,
    pub content: String,
}

const HEADER: &str = "# Written by ferry (nspawn.container); changes are overwritten on the next apply.\n";

fn nspawn_file(c: &Container, r: &Resolved) -> String {
    let mut s = String::from(HEADER);
    let extra = |sec: &str, s: &mut String| {
        for (k, vs) in c.extra_settings.get(sec).into_iter().flatten() {
            for v in vs {
                let _ = writeln!(s, "{k}={v}");
            }
        }
    };
    s.push_str("[Exec]\nBoot=no\nParameters=/nix/var/nix/profiles/system/init\nKillSignal=SIGRTMIN+3\n");
    let _ = writeln!(s, "PrivateUsers={}", c.private_users);
    let _ = writeln!(s, "Ephemeral={}", if c.ephemeral { "yes" } else { "no" });
    for id in c.credentials.keys() {
        let _ = writeln!(s, "LoadCredential={id}:{}/credentials/{id}", state_dir(&c.name));
    }
    extra("Exec", &mut s);
    s.push_str("\n[Files]\nBindReadOnly=/nix/store\n");
    let _ = writeln!(s, "Bind=/nix/var/nix/profiles/per-container/{0}:/nix/var/nix/profiles", c.name);
    let _ = writeln!(s, "Bind=/nix/var/nix/gcroots/per-container/{0}:/nix/var/nix/gcroots", c.name);
    if r.mode != Mode::Host {
        let _ = writeln!(s, "BindReadOnly={}/network:/run/systemd/network", state_dir(&c.name));
    }
    for (path, b) in &c.bind_mounts {
        let _ = writeln!(s, "{}={}:{}", if b.read_only { "BindReadOnly" } else { "Bind" }, b.host_path, path);
    }
    extra("Files", &mut s);
    s.push_str("\n[Network]\n");
    match r.mode {
        Mode::Host => s.push_str("Private=no\nVirtualEthernet=no\n"),
        Mode::Veth | Mode::Zone => {
            // An explicitly named pair, so that the host-side networkd file matches it exactly
            // whatever systemd's own name shortening would do.
            let _ = writeln!(s, "Private=yes\nVirtualEthernet=no\nVirtualEthernetExtra={}:host0", r.ifname);
            for f in &c.forward_ports {
                let _ = writeln!(s, "Port={}:{}:{}", f.protocol, f.host_port, f.container_port);
            }
        }
    }
    extra("Network", &mut s);
    s
}

fn host_network(c: &Container, r: &Resolved) -> Vec<File> {
    let mut files = vec![];
    let path = |n: &str| format!("/etc/systemd/network/50-ferry-{n}");
    match r.mode {
        Mode::Host => {}
        Mode::Veth => {
            let mut s = format!(
                "{HEADER}[Match]\nName={}\n\n[Network]\nConfigureWithoutCarrier=yes\nIPv6AcceptRA=no\n",
                r.ifname
            );
            for a in [&r.v4, &r.v6].into_iter().flatten() {
                if let Some(h) = &a.host {
                    let _ = writeln!(s, "Address={}/{}", h.addr, h.max_prefix());
                }
            }
            for a in [&r.v4, &r.v6].into_iter().flatten() {
                let _ =
                    write!(s, "\n[Route]\nDestination={}/{}\n", a.container.addr, a.container.max_prefix());
            }
            files.push(File { path: path(&format!("ct-{}.network", c.name)), mode: "0644", content: s });
        }
        Mode::Zone => {
            let bridge = r.bridge.clone().unwrap_or_default();
            files.push(File {
                path: path(&format!("ct-{}.network", c.name)),
                mode: "0644",
                content: format!("{HEADER}[Match]\nName={}\n\n[Network]\nBridge={bridge}\n", r.ifname),
            });
            let zone = c.network.zone.clone().unwrap_or_default();
            files.push(File {
                path: path(&format!("zone-{zone}.netdev")),
                mode: "0644",
                content: format!("{HEADER}[NetDev]\nName={bridge}\nKind=bridge\n"),
            });
            let mut s = format!(
                "{HEADER}[Match]\nName={bridge}\n\n[Network]\nConfigureWithoutCarrier=yes\nIPv6AcceptRA=no\n"
            );
            for a in [&r.v4, &r.v6].into_iter().flatten() {
                if let Some(h) = &a.host {
                    let _ = writeln!(s, "Address={h}");
                }
            }
            files.push(File { path: path(&format!("zone-{zone}.network")), mode: "0644", content: s });
        }
    }
    files
}

fn container_network(c: &Container, r: &Resolved) -> Option<File> {
    if r.mode == Mode::Host {
        return None;
    }
    let mut s = format!("{HEADER}[Match]\nName=host0\n\n[Network]\nIPv6AcceptRA=no\n");
    for a in [&r.v4, &r.v6].into_iter().flatten() {
        let prefix = if r.mode == Mode::Veth { a.container.max_prefix() } else { a.container.prefix };
        let _ = writeln!(s, "Address={}/{prefix}", a.container.addr);
    }
    for a in [&r.v4, &r.v6].into_iter().flatten() {
        if let Some(h) = &a.host {
            let _ = write!(s, "\n[Route]\nGateway={}\nGatewayOnLink=yes\n", h.addr);
        }
    }
    Some(File {
        path: format!("{}/network/10-ferry-host0.network", state_dir(&c.name)),
        mode: "0644",
        content: s,
    })
}

/// The network as shell variables for the direct runtime (`nspawn.sh`'s `net_up`).
fn net_env(c: &Container, r: &Resolved) -> String {
    let mut s = String::new();
    let mode = match r.mode {
        Mode::Host => "host",
        Mode::Veth => "veth",
        Mode::Zone => "zone",
    };
    let _ = writeln!(s, "MODE={mode}\nIFHOST={}\nBRIDGE={}", r.ifname, r.bridge.clone().unwrap_or_default());
    for (a, p) in [(&r.v4, "V4"), (&r.v6, "V6")] {
        let (host, hp, addr, ap) = match a {
            Some(a) => (
                a.host.map(|h| h.addr.to_string()).unwrap_or_default(),
                a.host.map(|h| h.prefix).unwrap_or(0),
                a.container.addr.to_string(),
                if r.mode == Mode::Veth { a.container.max_prefix() } else { a.container.prefix },
            ),
            None => (String::new(), 0, String::new(), 0),
        };
        let _ = writeln!(s, "{p}_HOST={host}\n{p}_HOST_PREFIX={hp}\n{p}_ADDR={addr}\n{p}_PREFIX={ap}");
    }
    let ports: Vec<String> = c
        .forward_ports
        .iter()
        .map(|f| format!("{}:{}:{}", f.protocol, f.host_port, f.container_port))
        .collect();
    let _ = writeln!(s, "PORTS='{}'", ports.join(" "));
    s
}

/// Every file ferry writes for the container (credentials excluded: they are sensitive and
/// written separately, mode 0600).
pub fn files(c: &Container, r: &Resolved) -> Vec<File> {
    let mut v = vec![File { path: nspawn_path(&c.name), mode: "0644", content: nspawn_file(c, r) }];
    v.extend(host_network(c, r));
    v.extend(container_network(c, r));
    v.push(File { path: format!("{}/net.env", state_dir(&c.name)), mode: "0644", content: net_env(c, r) });
    v
}

/// A digest of everything that takes effect only when the container (re)starts: the files
/// above and the credentials (their digest, never their content). `dynamic` activation
/// restarts when it changed and reloads otherwise.
pub fn digest(files: &[File], c: &Container) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for f in files {
        h.update(f.path.as_bytes());
        h.update([0]);
        h.update(f.content.as_bytes());
        h.update([0]);
    }
    for (id, v) in &c.credentials {
        h.update(id.as_bytes());
        h.update([0]);
        h.update(sha2::Sha256::digest(v.as_bytes()));
    }
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Family;
    use serde_json::json;

    fn container(v: serde_json::Value) -> Container {
        Container::parse("web", v.as_object().unwrap_or(&Default::default()))
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s, if s.contains(':') { Family::V6 } else { Family::V4 })
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn veth_container_files() {
        let c = container(json!({
            "system": "/nix/store/x-sys",
            "forwardPorts": [{"hostPort": 8080, "containerPort": 80}],
            "bindMounts": {"/data": {"hostPath": "/srv/data", "readOnly": false}},
            "credentials": {"token": "s3cret"},
        }));
        let r = Resolved::new(
            &c,
            Some(Addr { host: Some(cidr("10.233.0.1/16")), container: cidr("10.233.0.2/16") }),
            None,
        );
        let fs = files(&c, &r);
        let nspawn = &fs[0].content;
        assert!(nspawn.contains("Parameters=/nix/var/nix/profiles/system/init"), "{nspawn}");
        assert!(nspawn.contains("Bind=/srv/data:/data"), "{nspawn}");
        assert!(nspawn.contains("VirtualEthernetExtra=ve-web:host0"), "{nspawn}");
        assert!(nspawn.contains("Port=tcp:8080:80"), "{nspawn}");
        assert!(
            nspawn.contains("LoadCredential=token:/var/lib/ferry/nspawn/web/credentials/token"),
            "{nspawn}"
        );
        assert!(!fs.iter().any(|f| f.content.contains("s3cret")), "credentials never in the unit files");
        let host = fs
            .iter()
            .find(|f| f.path.ends_with("50-ferry-ct-web.network"))
            .map(|f| f.content.clone())
            .unwrap_or_default();
        assert!(
            host.contains("Name=ve-web")
                && host.contains("Address=10.233.0.1/32")
                && host.contains("Destination=10.233.0.2/32"),
            "{host}"
        );
        let inner = fs
            .iter()
            .find(|f| f.path.ends_with("10-ferry-host0.network"))
            .map(|f| f.content.clone())
            .unwrap_or_default();
        assert!(inner.contains("Address=10.233.0.2/32") && inner.contains("Gateway=10.233.0.1"), "{inner}");
        let env =
            fs.iter().find(|f| f.path.ends_with("net.env")).map(|f| f.content.clone()).unwrap_or_default();
        assert!(
            env.contains("V4_ADDR=10.233.0.2\nV4_PREFIX=32") && env.contains("PORTS='tcp:8080:80'"),
            "{env}"
        );
        // The digest changes with a credential's value, not with unrelated inputs.
        let d1 = digest(&fs, &c);
        let mut c2 = c.clone();
        c2.credentials.insert("token".into(), "other".into());
        assert_ne!(d1, digest(&fs, &c2));
        let mut c3 = c.clone();
        c3.system = "/nix/store/y-sys".into();
        assert_eq!(d1, digest(&files(&c3, &r), &c3), "the system is not part of the unit");
    }

    #[test]
    fn zone_container_files() {
        let c = container(
            json!({"system": "/nix/store/x", "network": {"mode": "zone", "zone": "lab", "v4": {"pool": "10.250.0.0/24"}}}),
        );
        let r = Resolved::new(
            &c,
            Some(Addr { host: Some(cidr("10.250.0.1/24")), container: cidr("10.250.0.7/24") }),
            None,
        );
        let fs = files(&c, &r);
        assert!(fs[0].content.contains("VirtualEthernetExtra=vb-web:host0"));
        let paths: Vec<&str> = fs.iter().map(|f| f.path.as_str()).collect();
        assert!(paths.contains(&"/etc/systemd/network/50-ferry-zone-lab.netdev"), "{paths:?}");
        let br = fs
            .iter()
            .find(|f| f.path.ends_with("zone-lab.network"))
            .map(|f| f.content.clone())
            .unwrap_or_default();
        assert!(br.contains("Name=vz-lab") && br.contains("Address=10.250.0.1/24"), "{br}");
        let inner = fs
            .iter()
            .find(|f| f.path.ends_with("10-ferry-host0.network"))
            .map(|f| f.content.clone())
            .unwrap_or_default();
        assert!(inner.contains("Address=10.250.0.7/24"), "{inner}");
    }

    #[test]
    fn host_mode_has_no_network_files() {
        let c = container(json!({"system": "/nix/store/x", "network": {"mode": "host"}}));
        let r = Resolved::new(&c, None, None);
        let fs = files(&c, &r);
        assert!(fs[0].content.contains("Private=no"));
        assert!(!fs.iter().any(|f| f.path.contains("systemd/network")));
    }
}
