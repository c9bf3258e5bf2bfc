//! The test hosts and test systems themselves, with the real parts: unshare/nsenter, OpenSSH,
//! Nix (`nix-build`, `nix-copy-closure`, `nix-env`), busybox httpd. Run as root.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use ferry_testkit::host::{nix_build, TestHost, HOST_PATH};
use ferry_testkit::wait_until;

const PROFILE: &str = "/nix/var/nix/profiles/system";

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ferry-hosts-").tempdir().expect("temp dir")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[track_caller]
fn ok(o: Output) -> Output {
    assert!(o.status.success(), "failed ({}):\n{}", o.status, text(&o));
    o
}

/// `ssh root@host SCRIPT`.
fn ssh(host: &TestHost, script: &str) -> Output {
    host.ssh_command().arg(script).stdin(std::process::Stdio::null()).output().expect("run ssh")
}

/// `exec` that must succeed; its trimmed stdout.
#[track_caller]
fn sh(host: &TestHost, script: &str) -> String {
    stdout(&ok(host.exec(script)))
}

fn system(host: &TestHost, args: &str) -> String {
    let expr = format!("testkit.mkSystem {{ address = \"{}\"; {args} }}", host.addr());
    nix_build(&expr).expect("build test system").display().to_string()
}

/// What a deployment tool does: copy the closure, set the system profile, switch.
fn copy(host: &TestHost, path: &str) {
    ok(std::process::Command::new("nix-copy-closure")
        .args(["--to", &host.destination(), path])
        .env("NIX_SSHOPTS", host.nix_sshopts())
        .output()
        .expect("run nix-copy-closure"));
}

fn deploy(host: &TestHost, system: &str, goal: &str) -> Output {
    copy(host, system);
    ok(ssh(host, &format!("nix-env -p {PROFILE} --set {system}")));
    ssh(host, &format!("{system}/bin/switch-to-configuration {goal}"))
}

/// `GET path` on the host's web server: (status, body); status 0 if nothing answers.
fn get(host: &TestHost, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect((host.addr(), 8080)) else { return (0, String::new()) };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", host.addr()).unwrap();
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn httpd_pid(host: &TestHost) -> String {
    sh(host, "cat /run/ferry-test/httpd.pid")
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
fn hosts_are_separate_machines_reachable_over_ssh() {
    let base = tempdir();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| TestHost::start(base.path(), "a").expect("start host a"));
        let b = s.spawn(|| TestHost::start(base.path(), "b").expect("start host b"));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.addr(), b.addr());
    assert!(a.host_key().starts_with("ssh-ed25519 ") && a.host_key().split(' ').count() == 2);
    assert!(b.client_pubkey().starts_with("ssh-ed25519 "));
    for h in [&a, &b] {
        ok(ssh(h, "true"));
        assert_eq!(stdout(&ok(ssh(h, "echo $PATH"))), HOST_PATH, "session PATH on {}", h.name());
        // Nothing reaches the real machine's init.
        for cmd in ["reboot", "poweroff", "systemctl reboot"] {
            let o = ssh(h, cmd);
            assert_eq!(o.status.code(), Some(1), "{cmd}: {}", text(&o));
            assert!(text(&o).contains("refused on a test host"), "{cmd}: {}", text(&o));
        }
    }

    // Separate stores: a path copied to a is on a only.
    let blob = nix_build("testkit.mkBlob { name = \"separate-stores\"; sizeKiB = 4; }").unwrap();
    let blob = blob.display().to_string();
    copy(&a, &blob);
    ok(ssh(&a, &format!("test -f {blob}")));
    assert!(!ssh(&b, &format!("test -e {blob}")).status.success(), "b has a's path");
    assert!(a.dir().join(&blob[1..]).exists(), "a's store lives in its directory");
    assert!(!b.dir().join(&blob[1..]).exists());

    // Private /nix, /etc, /boot: the real machine's are untouched.
    sh(&a, "touch /nix/ferry-host-marker /etc/ferry-host-marker /boot/ferry-host-marker");
    for p in ["/nix", "/etc", "/boot"] {
        assert!(!Path::new(p).join("ferry-host-marker").exists(), "host a wrote the real {p}");
    }
    assert!(a.dir().join("nix/ferry-host-marker").exists());
    assert!(a.dir().join("etc-upper/ferry-host-marker").exists());
    assert!(!ssh(&b, "test -e /etc/ferry-host-marker").status.success());
}

#[test]
fn switch_goals_services_etc_and_reboot() {
    let base = tempdir();
    let host = TestHost::start(base.path(), "web").expect("start host");
    let a = system(
        &host,
        r#"name = "a"; pages = { "index.html" = "page A"; }; etc = { "ferry/a.conf" = "a"; "ferry/both" = "A"; };"#,
    );
    let b = system(
        &host,
        r#"name = "b"; pages = { "index.html" = "page B"; }; etc = { "ferry/b.conf" = "b"; "ferry/both" = "B"; };
           services = { worker = "exec sleep 1000"; };"#,
    );
    copy(&host, &b);

    ok(deploy(&host, &a, "switch"));
    assert_eq!(get(&host, "/"), (200, "page A".into()));
    assert_eq!(get(&host, "/health").0, 200);
    assert_eq!(sh(&host, "readlink /run/current-system"), a);
    assert_eq!(sh(&host, "readlink /boot/default-system"), a);
    assert_eq!(sh(&host, "cat /etc/ferry/a.conf /etc/ferry/both"), "aA");
    assert_eq!(sh(&host, "readlink /etc/ferry/both"), "/etc/static/ferry/both");
    assert_eq!(
        sh(&host, "test -f /run/ferry-test/healthy && cat /run/current-system/nixos-version"),
        "ferry-test-a"
    );
    let pid_a = httpd_pid(&host);

    // Unchanged services are left alone.
    ok(ssh(&host, &format!("{a}/bin/switch-to-configuration switch")));
    assert_eq!(httpd_pid(&host), pid_a);

    // dry-activate changes nothing.
    let dry = ok(ssh(&host, &format!("{b}/bin/switch-to-configuration dry-activate")));
    assert!(text(&dry).contains("would restart service httpd"), "{}", text(&dry));
    assert_eq!(sh(&host, "readlink /run/current-system"), a);
    assert_eq!(get(&host, "/").1, "page A");

    // boot: only the boot default.
    ok(ssh(&host, &format!("{b}/bin/switch-to-configuration boot")));
    assert_eq!(sh(&host, "readlink /boot/default-system"), b);
    assert_eq!(sh(&host, "readlink /run/current-system"), a);
    assert_eq!(get(&host, "/").1, "page A");

    // test: activation without the boot default; changed httpd restarted; /etc follows.
    ok(ssh(&host, &format!("{a}/bin/switch-to-configuration boot")));
    let out = ok(ssh(&host, &format!("{b}/bin/switch-to-configuration test")));
    assert!(text(&out).contains("restarting service httpd"), "{}", text(&out));
    assert!(text(&out).contains("starting service worker"), "{}", text(&out));
    assert_eq!(get(&host, "/").1, "page B");
    assert_ne!(httpd_pid(&host), pid_a);
    assert_eq!(sh(&host, "readlink /run/current-system"), b);
    assert_eq!(sh(&host, "readlink /boot/default-system"), a);
    assert_eq!(sh(&host, "cat /etc/ferry/b.conf /etc/ferry/both"), "bB");
    assert_eq!(sh(&host, "test -e /etc/ferry/a.conf || echo gone"), "gone");
    assert_eq!(sh(&host, "cat /etc/hostname"), std::fs::read_to_string("/etc/hostname").unwrap().trim());

    // Simulated reboot: new boot id, the boot default (a) runs, services started afresh.
    let boot_id = host.boot_id();
    assert!(host.boot_id_simulated());
    assert_eq!(sh(&host, "cat /proc/sys/kernel/random/boot_id"), boot_id);
    assert_ne!(std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim(), boot_id);
    let pid_b = httpd_pid(&host);
    let out = ok(ssh(&host, "reboot"));
    assert!(text(&out).contains("simulating a reboot"), "{}", text(&out));
    wait_until(Duration::from_secs(15), "the host to reboot", || {
        let id = host.boot_id();
        !id.is_empty() && id != boot_id
    });
    wait_until(Duration::from_secs(15), "page A after reboot", || get(&host, "/").1 == "page A");
    assert_eq!(sh(&host, "readlink /run/current-system"), a);
    assert_ne!(httpd_pid(&host), pid_b);
    assert_eq!(sh(&host, "test -e /run/ferry-test/worker.pid || echo 'no worker'"), "no worker");
    assert_eq!(sh(&host, "test -e /etc/ferry/b.conf || cat /etc/ferry/a.conf"), "a");
    wait_until(Duration::from_secs(10), "ssh after reboot", || ssh(&host, "true").status.success());
}

#[test]
fn failure_injection_and_rollback() {
    let base = tempdir();
    let host = TestHost::start(base.path(), "faulty").expect("start host");
    let good = system(&host, r#"name = "good";"#);
    let sick = system(&host, r#"name = "sick"; unhealthy = true;"#);
    let failing = system(&host, r#"name = "failing"; failActivation = true;"#);
    let cut = system(&host, r#"name = "cut"; killSshd = true;"#);

    ok(deploy(&host, &sick, "switch"));
    assert_eq!(get(&host, "/health").0, 404);
    assert_eq!(get(&host, "/").0, 200);
    assert_eq!(sh(&host, "test -e /run/ferry-test/healthy || echo absent"), "absent");

    let out = deploy(&host, &failing, "switch");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("failed"), "{}", text(&out));
    assert_eq!(sh(&host, "readlink /run/current-system"), failing, "activated before failing");

    ok(deploy(&host, &good, "switch"));
    assert_eq!(get(&host, "/health").0, 200);

    // killSshd: the switching session survives, then the host is unreachable...
    ok(deploy(&host, &cut, "switch"));
    let o = ssh(&host, "true");
    assert_eq!(o.status.code(), Some(255), "ssh still works: {}", text(&o));
    // ...until a rollback to the good system (here from the console) restarts sshd.
    sh(&host, &format!("nix-env -p {PROFILE} --rollback && {PROFILE}/bin/switch-to-configuration switch"));
    assert_eq!(sh(&host, "readlink /run/current-system"), good);
    ok(ssh(&host, "true"));
}

#[test]
fn sshd_stop_start_host_key_and_kill() {
    let base = tempdir();
    let mut host = TestHost::start(base.path(), "keys").expect("start host");
    ok(ssh(&host, "true"));

    host.stop_sshd();
    assert_eq!(ssh(&host, "true").status.code(), Some(255));
    host.start_sshd().unwrap();
    ok(ssh(&host, "true"));

    // A client pinning the old key refuses the new one.
    let old_known_hosts = base.path().join("old_known_hosts");
    std::fs::copy(host.dir().join("ssh/known_hosts"), &old_known_hosts).unwrap();
    let old_key = host.host_key().to_string();
    host.regenerate_host_key().unwrap();
    assert_ne!(host.host_key(), old_key);
    let options: Vec<String> = host
        .ssh_options()
        .into_iter()
        .map(|o| match o.starts_with("UserKnownHostsFile=") {
            true => format!("UserKnownHostsFile={}", old_known_hosts.display()),
            false => o,
        })
        .collect();
    let o =
        std::process::Command::new("ssh").args(options).arg(host.destination()).arg("true").output().unwrap();
    assert_eq!(o.status.code(), Some(255), "{}", text(&o));
    assert!(text(&o).contains("HOST IDENTIFICATION HAS CHANGED"), "{}", text(&o));
    ok(ssh(&host, "true"));

    // A second key can be authorized.
    let other = base.path().join("other_key");
    ok(std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .output()
        .unwrap());
    host.authorize(&std::fs::read_to_string(other.with_extension("pub")).unwrap()).unwrap();
    ok(host.ssh_command().arg("-i").arg(&other).arg("true").output().unwrap());

    // kill: every process of the host dies, detached ones included; the address is free again.
    sh(&host, "setsid sleep 1000 </dev/null >/dev/null 2>&1 & sleep 1000 </dev/null >/dev/null 2>&1 &");
    let ns = std::fs::read_link(format!(
        "/proc/{}/ns/mnt",
        std::fs::read_to_string(host.dir().join("run/ferry-testhost/anchor.pid")).unwrap().trim()
    ))
    .unwrap()
    .display()
    .to_string();
    let token = std::fs::read_to_string(host.dir().join("run/ferry-testhost/id")).unwrap().trim().to_string();
    assert!(processes_of_host(&ns, &token).len() >= 4, "anchor, sshd and two sleeps");
    let addr = host.addr().to_string();
    host.kill();
    let left = processes_of_host(&ns, &token);
    assert_eq!(left, Vec::<String>::new(), "processes left in the host's namespace");
    assert!(std::net::TcpListener::bind((addr.as_str(), host.port())).is_ok(), "port still taken");
    assert!(!Path::new(&format!("/tmp/ferry-testhosts/{addr}.host")).exists());
}

/// Whether another process holds the lock Nix takes on build user `uid` (`flock` on
/// `/nix/var/nix/userpool/UID` of this machine's store).
fn build_user_locked(uid: &str) -> bool {
    use std::os::unix::io::AsRawFd;
    let Ok(f) = std::fs::OpenOptions::new().read(true).open(format!("/nix/var/nix/userpool/{uid}")) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own; closing it releases what we took.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 }
}

/// A derivation built by `/bin/busybox` (the machine's, visible on hosts too) writing its uid
/// to `SIG/NAME.uid`, waiting for `SIG/NAME.go` if `wait`.
fn build_expr(name: &str, sig: &Path, wait: bool) -> String {
    let sig = sig.display();
    let wait = if wait {
        format!("while [ ! -e {sig}/{name}.go ]; do /bin/busybox sleep 0.1; done; ")
    } else {
        String::new()
    };
    format!(
        r#"builtins.derivation {{ name = "{name}"; system = builtins.currentSystem; builder = "/bin/busybox"; args = [ "sh" "-c" "/bin/busybox id -u > {sig}/{name}.uid; {wait}echo ok > $out" ]; }}"#
    )
}

/// Nix gives each build a build user and kills every process of that user before and after the
/// build. A host builds with the machine's build users, so it must use the machine's locks on
/// them: a build running on a host holds its user in the machine's `userpool`, and a build on
/// the machine meanwhile gets another user and does not kill the host's builder (issue 10: a
/// test host's `busybox-applets.drv` "failed due to signal 9 (Killed)" while other tests built).
#[test]
fn builds_on_a_host_and_on_the_machine_never_share_a_build_user() {
    let base = tempdir();
    // Where the builders (build users, not root) report: world-writable.
    let sig = tempfile::Builder::new().prefix("ferry-build-users-").tempdir().expect("temp dir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(sig.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let h = TestHost::start(base.path(), "builds").expect("start test host");
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
    );
    let on_host = format!("host-build-{nonce}");
    let on_machine = format!("machine-build-{nonce}");
    let nix = "nix-build --no-out-link --option substituters ''";
    /// Lets the host's builder finish whatever happens (a failed assertion must not hang).
    struct Go(std::path::PathBuf);
    impl Drop for Go {
        fn drop(&mut self) {
            let _ = std::fs::write(&self.0, "");
        }
    }
    std::thread::scope(|s| {
        let go = Go(sig.path().join(format!("{on_host}.go")));
        let host_build =
            s.spawn(|| h.exec(&format!("{nix} -E '{}'", build_expr(&on_host, sig.path(), true))));
        let uid_file = sig.path().join(format!("{on_host}.uid"));
        wait_until(Duration::from_secs(60), "the host's builder to start", || {
            std::fs::read_to_string(&uid_file).is_ok_and(|u| !u.trim().is_empty())
        });
        let uid = std::fs::read_to_string(&uid_file).unwrap().trim().to_string();
        assert_ne!(uid, "0", "the host builds with a build user");
        assert!(
            build_user_locked(&uid),
            "the host's build holds build user {uid} in the machine's /nix/var/nix/userpool"
        );
        // A build on the machine meanwhile: another build user, and the host's builder lives on.
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{nix} -E '{}'", build_expr(&on_machine, sig.path(), false)))
            .output()
            .expect("run nix-build");
        assert!(o.status.success(), "the machine's build: {}", text(&o));
        let machine_uid = std::fs::read_to_string(sig.path().join(format!("{on_machine}.uid"))).unwrap();
        assert_ne!(machine_uid.trim(), uid, "the machine's build got the host's build user");
        drop(go);
        let o = host_build.join().unwrap();
        assert!(o.status.success(), "the host's build was killed or failed: {}", text(&o));
    });
}
