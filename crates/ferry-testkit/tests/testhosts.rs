//! The `ferry-testhosts` CLI: detached test hosts that outlive the command. Run as root.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ferry-testhosts");

fn testhosts(args: &[&str]) -> Output {
    Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("run ferry-testhosts")
}

#[track_caller]
fn ok(o: Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "failed ({}):\n{text}", o.status);
    text
}

fn hosts_json(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("hosts.json")).expect("hosts.json");
    serde_json::from_str::<Value>(&text).expect("JSON").as_array().expect("array").clone()
}

/// `ssh root@ADDR script` with nothing but the host's entry of hosts.json.
fn ssh(dir: &Path, host: &Value, script: &str) -> Output {
    let (addr, port) = (host["addr"].as_str().unwrap(), host["port"].as_u64().unwrap());
    let known_hosts = dir.join(format!("known_hosts-{}", host["name"].as_str().unwrap()));
    let pattern = if port == 22 { addr.to_string() } else { format!("[{addr}]:{port}") };
    std::fs::write(&known_hosts, format!("{pattern} {}\n", host["hostKey"].as_str().unwrap())).unwrap();
    Command::new("ssh")
        .args(["-F", "/dev/null", "-i", host["clientKey"].as_str().unwrap(), "-p", &port.to_string()])
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg(format!("root@{addr}"))
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh")
}

/// The mount namespace recorded for host `name`.
fn namespace(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join(name).join("run/ferry-testhost/host.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["mntNs"].as_str().unwrap().to_string()
}

/// The processes of a test host: in its mount namespace `ns` *and* seeing its identity `token`
/// in their `/run/ferry-testhost/id` (namespace ids are reused as soon as a namespace is gone —
/// every `nix-build` makes one — so the id alone may name a stranger's), as "PID COMMAND".
fn processes_of_host(ns: &str, token: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| std::fs::read_link(e.path().join("ns/mnt")).is_ok_and(|l| l.display().to_string() == ns))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("root/run/ferry-testhost/id"))
                .is_ok_and(|t| t.trim() == token)
        })
        .map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            format!(
                "{} {}",
                e.file_name().to_string_lossy(),
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            )
        })
        .collect()
}

#[test]
fn up_ssh_keep_down() {
    let base = tempfile::Builder::new().prefix("ferry-testhosts-").tempdir().unwrap();
    let dir = base.path();
    let out = ok(testhosts(&["up", "--dir", dir.to_str().unwrap(), "a", "b"]));
    assert!(out.contains("started"), "{out}");
    let hosts = hosts_json(dir);
    assert_eq!(hosts.iter().map(|h| h["name"].as_str().unwrap()).collect::<Vec<_>>(), ["a", "b"]);
    assert_ne!(hosts[0]["addr"], hosts[1]["addr"]);
    assert!(hosts[0]["hostKey"].as_str().unwrap().starts_with("ssh-ed25519 AAAA"));

    // The command has exited; the hosts run on, reachable with the JSON's information alone.
    let id = std::fs::read_to_string(dir.join("a/run/ferry-testhost/id")).unwrap();
    let o = ssh(dir, &hosts[0], "cat /run/ferry-testhost/id");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), id);
    // A process of the host that left its session behind.
    let o = ssh(dir, &hosts[1], "setsid sleep 1000 </dev/null >/dev/null 2>&1 &");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // up again: a running host is kept (same address, same boot), a new one joins.
    let out = ok(testhosts(&["up", "--dir", dir.to_str().unwrap(), "a", "c"]));
    assert!(out.contains("kept") && out.contains("started"), "{out}");
    let again = hosts_json(dir);
    assert_eq!(again.len(), 3);
    assert_eq!(again[0]["addr"], hosts[0]["addr"]);
    assert_eq!(std::fs::read_to_string(dir.join("a/run/ferry-testhost/id")).unwrap(), id);

    // A process outside the hosts, for the safety check.
    /// Killed whatever happens (a failed assertion must not leave it running).
    struct Outsider(std::process::Child);
    impl Drop for Outsider {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut outsider = Outsider(Command::new("sleep").arg("1000").spawn().unwrap());
    let namespaces: Vec<(String, String)> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let id = std::fs::read_to_string(dir.join(n).join("run/ferry-testhost/id")).unwrap();
            (namespace(dir, n), id.trim().to_string())
        })
        .collect();
    assert!(
        processes_of_host(&namespaces[1].0, &namespaces[1].1).len() >= 3,
        "anchor, sshd, the detached sleep"
    );

    let out = ok(testhosts(&["down", "--dir", dir.to_str().unwrap()]));
    assert!(out.contains("stopped 3 host(s)"), "{out}");
    for (ns, token) in &namespaces {
        let left = processes_of_host(ns, token);
        assert!(left.is_empty(), "processes left in {ns}: {left:?}");
    }
    for h in &again {
        let addr = h["addr"].as_str().unwrap();
        assert!(!Path::new(&format!("/tmp/ferry-testhosts/{addr}.host")).exists(), "{addr} still recorded");
        assert!(std::net::TcpListener::bind((addr, h["port"].as_u64().unwrap() as u16)).is_ok());
    }
    assert!(!dir.join("hosts.json").exists());
    assert!(outsider.0.try_wait().unwrap().is_none(), "down killed a process outside the hosts");
    drop(outsider);
    assert!(ok(testhosts(&["down", "--dir", dir.to_str().unwrap()])).contains("stopped 0 host(s)"));
    assert_eq!(testhosts(&["up", "--dir", dir.to_str().unwrap()]).status.code(), Some(2));
}
