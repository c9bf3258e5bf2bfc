//! `become` on an SSH host whose user is not root: ferry's privileged host scripts go through
//! the chosen tool, never prompting. A `processes.set` exercises it end to end — the closure
//! copied as the SSH user, then supervisord started and a user created as root on a test host
//! (private mount namespace with its own `/nix` and `/etc` overlay, real sshd on 127.0.0.N).
//!
//! Debian bookworm installs `sudo` and `doas` (`opendoas`); `run0` needs systemd ≥ 256 and
//! bookworm has 252, so it is not tested here (`./scripts/setup.sh` installs the other two).

use ferry_testkit::host::TestHost;
use ferry_testkit::Sandbox;

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

fn sh(h: &TestHost, script: &str) -> (bool, String) {
    let o = h.exec(script);
    (
        o.status.success(),
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
            .trim()
            .to_string(),
    )
}

/// The effective UID of `pid` (same PID namespace as the test host).
fn uid_of(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("Uid:"))?.split_whitespace().nth(2)?.parse().ok()
}

/// The rule letting `deploy` run anything as root without a password, per tool (in the test
/// host's `/etc` only), and the command that removes it.
fn rule(tool: &str) -> (&'static str, &'static str) {
    match tool {
        "sudo" => (
            "mkdir -p /etc/sudoers.d && echo 'deploy ALL=(root) NOPASSWD: ALL' > /etc/sudoers.d/deploy && chmod 0440 /etc/sudoers.d/deploy",
            "rm /etc/sudoers.d/deploy",
        ),
        "doas" => ("echo 'permit nopass deploy as root' > /etc/doas.conf && chmod 0400 /etc/doas.conf", "rm /etc/doas.conf"),
        _ => ("true", "true"),
    }
}

/// A test host with the user `deploy` (no password, owning the host's single-user Nix so the
/// closure can be copied as it), and a set deployed there as `deploy` with `become = BECOME`.
fn host_with_deploy_user(sb: &Sandbox, name: &str, become_: &str, port: u16) -> TestHost {
    let base = sb.path().join("hosts");
    std::fs::create_dir_all(&base).expect("hosts dir");
    let h = TestHost::start(&base, name).expect("start test host");
    let (ok, out) = sh(&h, "useradd -m -s /bin/sh -p '*' deploy && chown -R deploy /nix");
    assert!(ok, "{out}");
    sb.deployment(&format!(
        r#"{{ resources, ferry, ... }}:
let t = import {tk} {{ }}; p = ferry.lib.processes; in {{
  resources.web = {{
    type = "processes.set";
    inputs = p.set {{
      pkgs = t.pkgs; manager = "supervisord"; name = "web";
      host = {{ host = "{addr}"; port = {sshport}; user = "deploy"; hostKey = "{key}"; become = "{become_}"; }};
      sshKey = "{ckey}";
      stateDir = "{state}"; startTimeout = 20;
      processes.web = p.mkProcess {{
        command = [ "httpd" "-f" "-p" "127.0.0.1:{port}" "-h" (t.writeTree "page" {{ "index.html" = "as root via {become_}"; }}) ];
        readiness.tcpPort = {port};
        user = "ferry-web"; uid = {uid};
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
        // Each test's own: test hosts share the machine's /var, and the tests run in parallel.
        state = sb.p("web-state"),
        // Each test's own too: userdel refuses a UID that a process runs as, and the test
        // hosts share the machine's processes.
        uid = uid_for(become_),
    ));
    h
}

/// The UID of the set's user in the test of `become_`.
fn uid_for(become_: &str) -> u32 {
    match become_ {
        "sudo" => 23457,
        "doas" => 23458,
        _ => 23459,
    }
}

fn web_pid(sb: &Sandbox) -> Option<u32> {
    let r = sb.ferry(&["processes", "status", "web"]).ok();
    r.stdout.lines().find_map(|l| l.split_once("web: running (pid ")?.1.trim_end_matches(')').parse().ok())
}

/// With the tool allowed, the set deploys as root; without the rule, the tool refuses at once
/// (non-interactive: no prompt, no hang) and ferry reports it for the resource.
fn escalates_with(tool: &str) {
    assert!(
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success()),
        "{tool} is not installed: run ./scripts/setup.sh"
    );
    let sb = Sandbox::new(BIN);
    let port = ferry_testkit::free_port();
    let h = host_with_deploy_user(&sb, &format!("become-{tool}"), tool, port);
    let (allow, revoke) = rule(tool);
    assert!(sh(&h, allow).0);

    let r = sb.ferry(&["apply", "--yes", "-v"]).ok();
    assert!(r.stdout.contains("1 created"), "{}", r.all());
    assert!(r.all().contains("created user ferry-web"), "root created the user: {}", r.all());
    let body = ferry_testkit::http_get("127.0.0.1", port, "/");
    assert_eq!(body.as_deref().map(|b| b.contains(&format!("as root via {tool}"))), Some(true));
    let pid = web_pid(&sb).expect("web runs");
    assert_eq!(uid_of(pid), Some(uid_for(tool)), "supervisord (root) dropped to the created user");
    let (_, owner) = sh(&h, &format!("stat -c %U {}/conf.d", sb.p("web-state")));
    assert_eq!(owner, "root", "the set's files were written as root");

    // The rule gone: every privileged script fails fast, named for the resource.
    assert!(sh(&h, revoke).0);
    let r = sb.ferry(&["plan"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.all().contains("processes.set `web`:") && r.all().contains("failed on"), "{}", r.all());

    assert!(sh(&h, allow).0);
    sb.ferry(&["destroy", "--yes"]).ok();
    assert!(!ferry_testkit::running(pid), "web stopped");
    assert!(!sh(&h, "id -u ferry-web").0, "the user ferry created is gone");
}

#[test]
fn become_sudo_runs_host_scripts_as_root() {
    escalates_with("sudo");
}

#[test]
fn become_doas_runs_host_scripts_as_root() {
    escalates_with("doas");
}

/// `become = "none"`: the scripts run as the SSH user itself, even where sudo would let it
/// become root, so creating the set's user is refused.
#[test]
fn become_none_runs_host_scripts_as_the_user() {
    let sb = Sandbox::new(BIN);
    let h = host_with_deploy_user(&sb, "become-none", "none", ferry_testkit::free_port());
    assert!(sh(&h, rule("sudo").0).0, "sudo would be allowed");
    let r = sb.ferry(&["apply", "--yes"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.all().contains("processes.set `web`: creating users and groups failed on"), "{}", r.all());
    assert!(!sh(&h, "id -u ferry-web").0, "no user created");
    assert!(
        !sh(&h, &format!("test -e {}", sb.p("web-state"))).0,
        "nothing written where only root may write"
    );
}
