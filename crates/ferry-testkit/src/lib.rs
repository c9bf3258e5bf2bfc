//! Test kit for ferry's end-to-end tests.
//!
//! A [`Sandbox`] is a private temporary directory holding a deployment, its state and
//! whatever files the resources write; [`Sandbox::ferry`] runs the real `ferry` binary in it
//! with Nix options suitable for this machine (no substituters: the default binary cache is
//! unreachable and every lookup would wait on it).
//!
//! Architecture invariant: no knowledge of ferry's internals — tests drive the binary and look
//! at files, exit codes and output, the way a user would.

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

    /// Panics with both streams unless the exit code is `code`.
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, code, "expected exit {code}, got {}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr);
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

    /// Write `deployment.nix`, replacing `@DIR@` with the sandbox path.
    pub fn deployment(&self, nix: &str) -> PathBuf {
        self.write("deployment.nix", &nix.replace("@DIR@", &self.p("")))
    }

    pub fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join(rel)).ok()
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
    let o = Command::new("sqlite3").arg(db).arg("PRAGMA integrity_check;").output().expect("sqlite3 (apt-get install sqlite3)");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}
