//! `processes.set` on an SSH host: a test host (private mount namespace with its own `/nix`,
//! `/etc` overlay and `/var/lib/ferry`, real sshd on 127.0.0.N) gets the set's closure copied,
//! its supervisord and processes started inside its namespace, users created in its `/etc`
//! and removed again — nothing of it lands on this machine's `/etc` or profiles.

use ferry_testkit::host::TestHost;
use ferry_testkit::Sandbox;

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

/// `ferry processes status web`: NAME -> PID of the running processes.
fn pids(sb: &Sandbox) -> std::collections::BTreeMap<String, u32> {
    let r = sb.ferry(&["processes", "status", "web"]).ok();
    r.stdout
        .lines()
        .filter_map(|l| {
            let (n, rest) = l.split_once(": running (pid ")?;
            Some((n.trim().to_string(), rest.trim_end_matches(')').parse().ok()?))
        })
        .collect()
}

/// The effective UID of `pid` (same PID namespace as the test host).
fn uid_of(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("Uid:"))?.split_whitespace().nth(2)?.parse().ok()
}

fn sh(h: &TestHost, script: &str) -> (bool, String) {
    let o = h.exec(script);
    (o.status.success(), String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn http_get(port: u16) -> Option<String> {
    ferry_testkit::http_get("127.0.0.1", port, "/")
}

struct Deployment<'a> {
    sb: &'a Sandbox,
    h: &'a TestHost,
    port: u16,
}

impl Deployment<'_> {
    /// `web_user`: the user `web` runs as (Nix, e.g. `user = "ferry-web"; uid = 23456;`).
    fn write(&self, page: &str, worker_version: &str, web_user: &str) {
        self.sb.deployment(&format!(
            r#"{{ resources, ferry, ... }}:
let t = import {tk} {{ }}; p = ferry.lib.processes; in {{
  resources.web = {{
    type = "processes.set";
    inputs = p.set {{
      pkgs = t.pkgs; manager = "supervisord"; name = "web";
      host = {{ host = "{addr}"; port = {sshport}; hostKey = "{key}"; }};
      sshKey = "{ckey}";
      stateDir = "/var/lib/ferry/web"; startTimeout = 20;
      processes = {{
        web = p.mkProcess {{
          command = [ "httpd" "-f" "-p" "127.0.0.1:{port}" "-h" (t.writeTree "page" {{ "index.html" = "{page}"; }}) ];
          readiness.tcpPort = {port};
          {web_user}
        }};
        worker = p.mkProcess {{
          command = [ "sleep" "100000" ];
          environment.VERSION = "{worker_version}";
          dependsOn = [ "web" ];
          user = "nobody";
        }};
      }};
    }};
  }};
}}
"#,
            tk = ferry_testkit::testkit_nix(),
            addr = self.h.addr(),
            sshport = self.h.port(),
            key = self.h.host_key(),
            ckey = self.h.client_key().display(),
            port = self.port,
        ));
    }
}

#[test]
fn a_set_on_an_ssh_host_with_users() {
    let sb = Sandbox::new(BIN);
    let base = sb.path().join("hosts");
    std::fs::create_dir_all(&base).expect("hosts dir");
    let h = TestHost::start(&base, "prochost").expect("start test host");
    let d = Deployment { sb: &sb, h: &h, port: ferry_testkit::free_port() };

    d.write("v1", "1", r#"user = "ferry-web"; uid = 23456;"#);
    let r = sb.ferry(&["apply", "--yes", "-v"]).ok();
    assert!(r.stdout.contains("1 created"), "{}", r.all());
    assert!(r.all().contains("created user ferry-web"), "{}", r.all());
    assert_eq!(http_get(d.port).as_deref().map(|b| b.contains("v1")), Some(true));
    let first = pids(&sb);
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(uid_of(first["web"]), Some(23456), "web runs as the created user");
    assert_eq!(sh(&h, "id -u ferry-web"), (true, "23456".to_string()));
    assert!(
        !std::fs::read_to_string("/etc/passwd").unwrap().contains("ferry-web:"),
        "the user exists in the host's /etc only"
    );
    let (ok, link) = sh(&h, "readlink /nix/var/nix/profiles/ferry/processes-web");
    assert!(ok && link == "processes-web-1-link", "{link}");
    assert!(!std::path::Path::new("/nix/var/nix/profiles/ferry/processes-web").exists());
    let state = sb.ferry(&["state", "show", "web", "--json"]).ok().stdout;
    let label = if h.port() == 22 { h.addr().to_string() } else { format!("{}:{}", h.addr(), h.port()) };
    assert!(state.contains(&format!("\"host\": \"{label}\"")), "{state}");
    assert!(
        state.contains("\"sshKey\": \"(sensitive)\"") && state.contains("\"manager\": \"supervisord\""),
        "{state}"
    );
    assert!(state.contains("\"hostKey\": \"ssh-"), "{state}");
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");

    // One process changed: only it restarts, on the host.
    d.write("v1", "2", r#"user = "ferry-web"; uid = 23456;"#);
    let r = sb.ferry(&["apply", "--yes", "-v"]).ok();
    assert!(r.stdout.contains("1 updated"), "{}", r.all());
    let second = pids(&sb);
    assert_eq!(second["web"], first["web"], "web untouched");
    assert_ne!(second["worker"], first["worker"], "worker restarted");
    let (_, link) = sh(&h, "readlink /nix/var/nix/profiles/ferry/processes-web");
    assert_eq!(link, "processes-web-2-link");

    // web no longer needs its user: restarted as root, the user ferry created is removed;
    // `nobody` existed before and stays.
    d.write("v2", "2", "");
    let r = sb.ferry(&["apply", "--yes", "-v"]).ok();
    assert!(r.all().contains("removed user ferry-web"), "{}", r.all());
    assert_eq!(http_get(d.port).as_deref().map(|b| b.contains("v2")), Some(true));
    let third = pids(&sb);
    assert_eq!(uid_of(third["web"]), Some(0));
    assert!(!sh(&h, "id -u ferry-web").0, "ferry-web removed");

    // The host unreachable: a clear error naming the resource, nothing recorded changes.
    h.stop_sshd();
    let before = sb.state_snapshot();
    let r = sb.ferry(&["plan"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.all().contains("processes.set `web`: cannot connect to") && r.all().contains(h.addr()),
        "{}",
        r.all()
    );
    assert_eq!(sb.state_snapshot(), before);
    h.start_sshd().expect("restart sshd");

    sb.ferry(&["destroy", "--yes"]).ok();
    for pid in third.values() {
        assert!(!ferry_testkit::running(*pid), "process {pid} stopped");
    }
    assert!(sh(&h, "id -u nobody").0, "a user ferry did not create stays");
    assert!(http_get(d.port).is_none());
}

/// Unprivileged mode: the SSH user `deploy` (no sudo) owns the host's single-user Nix; the set
/// runs as that user under its own state dir and profiles, and the users the model names are
/// neither switched to nor created.
#[test]
fn unprivileged_mode_deploys_as_the_ssh_user() {
    let sb = Sandbox::new(BIN);
    let base = sb.path().join("hosts");
    std::fs::create_dir_all(&base).expect("hosts dir");
    let h = TestHost::start(&base, "unprivhost").expect("start test host");
    let (ok, uid) = sh(&h, "useradd -m -s /bin/sh -p '*' deploy && chown -R deploy /nix && id -u deploy");
    assert!(ok, "{uid}");
    let uid: u32 = uid.parse().expect("uid");
    let port = ferry_testkit::free_port();
    sb.deployment(&format!(
        r#"{{ resources, ferry, ... }}:
let t = import {tk} {{ }}; p = ferry.lib.processes; in {{
  resources.web = {{
    type = "processes.set";
    inputs = p.set {{
      pkgs = t.pkgs; manager = "supervisord"; name = "web";
      host = {{ host = "{addr}"; port = {sshport}; user = "deploy"; hostKey = "{key}"; }};
      sshKey = "{ckey}";
      forceDisableUserChange = true;
      stateDir = "/home/deploy/web"; startTimeout = 20;
      processes.web = p.mkProcess {{
        command = [ "httpd" "-f" "-p" "127.0.0.1:{port}" "-h" (t.writeTree "page" {{ "index.html" = "unprivileged"; }}) ];
        readiness.tcpPort = {port};
        user = "ferry-web";
      }};
    }};
  }};
}}
"#,
        tk = ferry_testkit::testkit_nix(),
        addr = h.addr(),
        sshport = h.port(),
        key = h.host_key(),
        ckey = h.client_key().display(),
    ));
    let r = sb.ferry(&["apply", "--yes", "-v"]).ok();
    assert!(r.stdout.contains("1 created"), "{}", r.all());
    assert_eq!(http_get(port).as_deref().map(|b| b.contains("unprivileged")), Some(true));
    let p = pids(&sb);
    assert_eq!(uid_of(p["web"]), Some(uid), "runs as the SSH user");
    assert!(!sh(&h, "id -u ferry-web").0, "no user created");
    let (ok, link) = sh(&h, "readlink /nix/var/nix/profiles/per-user/deploy/ferry/processes-web");
    assert!(ok && link == "processes-web-1-link", "{link}");
    let (_, owner) = sh(&h, "stat -c %U /home/deploy/web/conf.d");
    assert_eq!(owner, "deploy");
    sb.ferry(&["destroy", "--yes"]).ok();
    assert!(http_get(port).is_none());
}
