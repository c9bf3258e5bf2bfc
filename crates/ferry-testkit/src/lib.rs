//! Test kit for ferry's end-to-end tests.
//!
//! A [`Sandbox`] is a private temporary directory holding a deployment, its state and
//! whatever files the resources write; [`Sandbox::ferry`] runs the real `ferry` binary in it
//! with Nix options suitable for this machine (no substituters: the default binary cache is
//! unreachable and every lookup would wait on it).
//!
//! [`host::TestHost`] is a test machine for the `nixos.machine` provider: a private mount
//! namespace with its own `/nix`, running a real sshd on `127.0.0.N`; `nix/` beside this crate
//! holds the test systems deployed to it.
//!
//! Architecture invariant: no knowledge of ferry's internals — tests drive the binary and look
//! at files, exit codes and output, the way a user would.

pub mod host;
pub mod nixpkgs;
pub mod podman;
pub mod systemd_host;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Sandbox {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

/// The outcome of one ferry invocation.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics with both streams unless the exit code is `code`. Also panics if ferry
    /// panicked: whatever the outcome, a panic is never an acceptable way to report it.
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}, got {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self.no_panic()
    }

    /// Panics if stderr shows a Rust panic.
    pub fn no_panic(self) -> Run {
        assert!(
            !self.stderr.contains("panicked"),
            "ferry panicked\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless stdout or stderr contains `needle`.
    pub fn says(self, needle: &str) -> Run {
        assert!(
            self.all().contains(needle),
            "output lacks {needle:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn ok(self) -> Run {
        self.expect(0)
    }

    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl Sandbox {
    /// `bin`: the ferry binary (`env!("CARGO_BIN_EXE_ferry")` in the CLI crate's tests).
    pub fn new(bin: &str) -> Sandbox {
        let dir = tempfile::Builder::new().prefix("ferry-test-").tempdir().expect("temp dir");
        Sandbox { dir, bin: PathBuf::from(bin) }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Absolute path of `rel` inside the sandbox, as a string for Nix files.
    pub fn p(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }

    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, content).expect("write");
        p
    }

    /// Write `deployment.nix`, replacing `@DIR@` with the sandbox path (no trailing slash:
    /// write `"@DIR@/name"`).
    pub fn deployment(&self, nix: &str) -> PathBuf {
        self.write("deployment.nix", &nix.replace("@DIR@", &self.path().display().to_string()))
    }

    pub fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join(rel)).ok()
    }

    /// Write an executable (mode 0755) file, e.g. a shell-script provider; returns its path.
    pub fn executable(&self, rel: &str, content: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let p = self.write(rel, content);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p.display().to_string()
    }

    /// Identity of a file as the filesystem sees it (inode, modification time): unchanged
    /// identity proves nothing rewrote the file.
    pub fn identity(&self, rel: &str) -> (u64, std::time::SystemTime) {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(self.dir.path().join(rel)).unwrap_or_else(|e| panic!("stat {rel}: {e}"));
        (m.ino(), m.modified().expect("mtime"))
    }

    /// Permission bits (e.g. `0o600`) of a path in the sandbox.
    pub fn mode(&self, rel: &str) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(self.dir.path().join(rel))
            .unwrap_or_else(|e| panic!("stat {rel}: {e}"))
            .permissions()
            .mode()
            & 0o7777
    }

    /// Number of lines of a file (0 if it does not exist).
    pub fn lines(&self, rel: &str) -> usize {
        self.read(rel).map_or(0, |s| s.lines().count())
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.dir.path().join(rel).exists()
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join(".ferry/state.db")
    }

    /// A `ferry` command in the sandbox with test-friendly Nix options.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.current_dir(self.dir.path())
            .args(args)
            .env("NO_COLOR", "1")
            .env("FERRY_NIX_OPTIONS", "substituters=")
            .stdin(Stdio::null());
        c
    }

    pub fn ferry(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run ferry"))
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn ferry")
    }

    /// A hash of the state database's logical content (`ferry state export`), to prove a
    /// failed command changed nothing.
    pub fn state_snapshot(&self) -> String {
        if !self.state_path().exists() {
            return "<no state>".into();
        }
        let r = self.ferry(&["state", "export"]);
        assert_eq!(r.code, 0, "state export failed: {}", r.stderr);
        let mut v: serde_json::Value = serde_json::from_str(&r.stdout).expect("export is JSON");
        // Timestamps of the lock/run journal are not part of the resources' state.
        if let Some(o) = v.as_object_mut() {
            o.remove("exportedAt");
        }
        v.to_string()
    }
}

/// The text of a shell-script provider that answers the protocol handshake (echoing the
/// request's id) with one kind `thing` supporting `operations` (e.g. `["create"]`: then the
/// first request after the handshake is a create, at apply time; with `"plan"` it comes while
/// planning), then runs `after` — shell code deciding how it misbehaves (e.g.
/// `read -r req; exit 1`, `echo garbage`, `sleep 1000`). For `type = "NAME.thing"`
/// resources with `provider.executable` set to it.
pub fn fake_provider(name: &str, operations: &[&str], after: &str) -> String {
    let ops = operations.iter().map(|o| format!("\"{o}\"")).collect::<Vec<_>>().join(",");
    format!(
        r#"#!/bin/sh
read -r line
id=$(printf '%s' "$line" | sed -n 's/.*"id" *: *\([0-9][0-9]*\).*/\1/p')
printf '%s\n' '{{"id":'"$id"',"result":{{"protocolVersion":1,"provider":"{name}","version":"0","kinds":[{{"name":"thing","inputs":{{"type":"object"}},"outputs":{{"type":"object","properties":{{}}}},"operations":[{ops}]}}]}}}}'
{after}
"#
    )
}

/// The example external provider `ferry-provider-counter`, built on first use with the same
/// cargo that builds the tests, found beside the ferry binary `ferry_bin`.
pub fn counter_provider(ferry_bin: &str) -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let bin = Path::new(ferry_bin).parent().expect("bin dir").join("ferry-provider-counter");
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "ferry-provider-counter"])
            .status()
            .expect("run cargo build -p ferry-provider-counter");
        assert!(status.success(), "cargo build -p ferry-provider-counter failed");
    });
    assert!(bin.exists(), "{} not built", bin.display());
    bin
}

/// Run one SQL statement with the real `sqlite3` CLI; returns stdout.
pub fn sqlite(db: &Path, sql: &str) -> String {
    let o = Command::new("sqlite3").arg(db).arg(sql).output().expect("sqlite3 (apt-get install sqlite3)");
    assert!(o.status.success(), "sqlite3 {sql}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Wait until `f` is true, polling; panics after `timeout` (generous: tests do not time).
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send SIGKILL to a child and reap it.
pub fn kill9(child: &mut Child) {
    // SAFETY: sending a signal to our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Run `sqlite3 DB 'PRAGMA integrity_check'` (the real SQLite CLI, independent of ferry).
pub fn sqlite_integrity(db: &Path) -> String {
    let o = Command::new("sqlite3")
        .arg(db)
        .arg("PRAGMA integrity_check;")
        .output()
        .expect("sqlite3 (apt-get install sqlite3)");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A TCP port free on 127.0.0.1 right now (the kernel's pick).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Whether process `pid` runs: it exists and is not a zombie.
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// The test package set (`crates/ferry-testkit/nix`), as a string for Nix expressions.
pub fn testkit_nix() -> String {
    host::test_systems_nix().display().to_string()
}

/// `GET path` over plain HTTP/1.0 to ADDR:PORT (3 s to connect, 5 s to read): the whole
/// response, or `None` if nothing answered.
pub fn http_get(addr: &str, port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("{addr}:{port}").parse().ok()?,
        std::time::Duration::from_secs(3),
    )
    .ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut b = String::new();
    s.read_to_string(&mut b).ok()?;
    Some(b)
}

/// Network hygiene for container tests, whose addresses are in 10.233.0.0/16: a blackhole
/// route for the range, so that traffic to a container's address that has no more specific
/// route (a container that just stopped) is dropped instead of following the default route off
/// the machine. Idempotent.
pub fn blackhole_container_addresses() {
    let out =
        Command::new("ip").args(["route", "replace", "blackhole", "10.233.0.0/16"]).output().expect("run ip");
    assert!(out.status.success(), "ip route: {}", String::from_utf8_lossy(&out.stderr));
}
