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

fn processes_in_namespace(ns: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| std::fs::read_link(e.path().join("ns/mnt")).is_ok_and(|l| l.display().to_string() == ns))
        .count()
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
    let mut outsider = Command::new("sleep").arg("1000").spawn().unwrap();
    let namespaces: Vec<String> = ["a", "b", "c"].iter().map(|n| namespace(dir, n)).collect();
    assert!(processes_in_namespace(&namespaces[1]) >= 3, "anchor, sshd, the detached sleep");

    let out = ok(testhosts(&["down", "--dir", dir.to_str().unwrap()]));
    assert!(out.contains("stopped 3 host(s)"), "{out}");
    for ns in &namespaces {
        assert_eq!(processes_in_namespace(ns), 0, "processes left in {ns}");
    }
    for h in &again {
        let addr = h["addr"].as_str().unwrap();
        assert!(!Path::new(&format!("/tmp/ferry-testhosts/{addr}.host")).exists(), "{addr} still recorded");
        assert!(std::net::TcpListener::bind((addr, h["port"].as_u64().unwrap() as u16)).is_ok());
    }
    assert!(!dir.join("hosts.json").exists());
    assert!(outsider.try_wait().unwrap().is_none(), "down killed a process outside the hosts");
    let _ = outsider.kill();
    let _ = outsider.wait();
    assert!(ok(testhosts(&["down", "--dir", dir.to_str().unwrap()])).contains("stopped 0 host(s)"));
    assert_eq!(testhosts(&["up", "--dir", dir.to_str().unwrap()]).status.code(), Some(2));
}
