//! One multiplexed OpenSSH connection: the master, commands over it, host-key checking.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::tail_lines;
use crate::wait::{wait_output, WaitError};
use crate::{normalise_host_key, HostKeyPolicy, Identity, SshError, Target};

/// The alias under which the host key is stored in the connection's private `known_hosts`.
const ALIAS: &str = "ferry-target";

/// One multiplexed connection to a host. Closing (drop) ends the master connection and removes
/// the private directory with any key material.
pub struct Connection {
    target: Target,
    dir: tempfile::TempDir,
    master: Mutex<Option<Child>>,
    host_key: String,
    learned: bool,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").field("target", &self.target).finish()
    }
}

impl Connection {
    /// Connect (start the master connection) and verify the host key.
    pub fn open(target: &Target) -> Result<Connection, SshError> {
        let dir = tempfile::Builder::new()
            .prefix("ferry-ssh-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .map_err(|e| SshError::Local(format!("cannot create a private directory for ssh: {e}")))?;
        let known = dir.path().join("known_hosts");
        let mut known_text = String::new();
        if let Some(k) = &target.host_key {
            let k = normalise_host_key(k).ok_or_else(|| {
                SshError::Local(format!(
                    "the host key for {} is not a public key line like `ssh-ed25519 AAAA…`: {k:?}",
                    target.display()
                ))
            })?;
            known_text = format!("{ALIAS} {k}\n");
        }
        write_private(&known, known_text.as_bytes())?;
        if let Some(Identity::Key(material)) = &target.identity {
            let mut m = material.trim_end().to_string();
            m.push('\n');
            write_private(&dir.path().join("id"), m.as_bytes())?;
        }
        let mut conn = Connection {
            target: target.clone(),
            dir,
            master: Mutex::new(None),
            host_key: String::new(),
            learned: target.host_key.is_none(),
        };
        conn.start_master()?;
        let recorded = std::fs::read_to_string(&known).unwrap_or_default();
        conn.host_key = recorded
            .lines()
            .filter_map(|l| l.strip_prefix(ALIAS).and_then(normalise_host_key))
            .next()
            .or_else(|| target.host_key.clone())
            .unwrap_or_default();
        Ok(conn)
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The verified host key (`"type base64"`): the pinned one, or the one learned now.
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    /// True when the host key was learned on this connection (trust on first use).
    pub fn learned_host_key(&self) -> bool {
        self.learned
    }

    pub fn policy(&self) -> HostKeyPolicy {
        if self.target.host_key.is_some() {
            HostKeyPolicy::Verify
        } else {
            HostKeyPolicy::TrustOnFirstUse
        }
    }

    fn control_path(&self) -> PathBuf {
        self.dir.path().join("cm")
    }

    /// The options every ssh invocation for this host gets (no destination, no command).
    fn base_args(&self, control: Option<&Path>) -> Vec<String> {
        let t = &self.target;
        let mut a: Vec<String> = vec![];
        let mut o = |s: String| {
            a.push("-o".into());
            a.push(s);
        };
        o("BatchMode=yes".into());
        o(format!("HostKeyAlias={ALIAS}"));
        o(format!("UserKnownHostsFile={}", self.dir.path().join("known_hosts").display()));
        o("GlobalKnownHostsFile=/dev/null".into());
        o(format!("StrictHostKeyChecking={}", if t.host_key.is_some() { "yes" } else { "accept-new" }));
        o("HashKnownHosts=no".into());
        o("UpdateHostKeys=no".into());
        o("CheckHostIP=no".into());
        o(format!("ConnectTimeout={}", t.connect_timeout.max(1)));
        o("ServerAliveInterval=15".into());
        o("ServerAliveCountMax=4".into());
        match control {
            Some(p) => o(format!("ControlPath={}", p.display())),
            None => o("ControlPath=none".into()),
        }
        match &t.identity {
            Some(Identity::File(p)) => {
                a.push("-i".into());
                a.push(p.display().to_string());
                a.push("-o".into());
                a.push("IdentitiesOnly=yes".into());
            }
            Some(Identity::Key(_)) => {
                a.push("-i".into());
                a.push(self.dir.path().join("id").display().to_string());
                a.push("-o".into());
                a.push("IdentitiesOnly=yes".into());
            }
            None => {}
        }
        a.push("-p".into());
        a.push(t.port.to_string());
        // The user's options come after ferry's security options (ssh keeps the first value it
        // sees, so those cannot be overridden) and before ferry's speed defaults (which can).
        a.extend(t.options.iter().cloned());
        // AES-GCM first (hardware AES makes it 20–30% cheaper than chacha20 per copied byte,
        // see bench/copy-transports.sh), the default list after it; never compress (a
        // `Compression yes` in ~/.ssh/config makes closure copies ~4× slower).
        a.push("-o".into());
        a.push("Ciphers=^aes128-gcm@openssh.com,aes256-gcm@openssh.com".into());
        a.push("-o".into());
        a.push("Compression=no".into());
        a
    }

    fn start_master(&mut self) -> Result<(), SshError> {
        let log = self.dir.path().join("master.log");
        let logf = std::fs::File::create(&log).map_err(|e| SshError::Local(format!("{e}")))?;
        let cp = self.control_path();
        let mut cmd = Command::new("ssh");
        cmd.args(self.base_args(Some(&cp)))
            .args(["-M", "-N", "-o", "ControlMaster=yes", "-o", "ControlPersist=no"])
            .arg(self.target.destination())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf);
        {
            use std::os::unix::process::CommandExt;
            // Not in the caller's process group: Ctrl-C must not cut connections mid-activation.
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().map_err(|e| {
            SshError::Local(format!(
                "cannot run ssh: {e} (install the OpenSSH client: apt-get install openssh-client)"
            ))
        })?;
        let deadline = Instant::now() + Duration::from_secs(self.target.connect_timeout.max(1) + 20);
        loop {
            if cp.exists() {
                *self.master.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
                return Ok(());
            }
            if let Ok(Some(_)) = child.try_wait() {
                let stderr = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(self.classify(&stderr, "ssh connection"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SshError::Unreachable {
                    host: self.target.display(),
                    detail: "the SSH handshake did not complete in time".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Turn ssh's stderr (exit 255) into an error.
    pub fn classify(&self, stderr: &str, what: &str) -> SshError {
        let host = self.target.display();
        if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || stderr.contains("Host key verification failed")
        {
            let offered = stderr
                .lines()
                .skip_while(|l| !l.contains("key sent by the remote host is"))
                .nth(1)
                .map(|l| l.trim().to_string())
                .filter(|l| l.starts_with("SHA256:"));
            return SshError::HostKeyMismatch {
                host,
                expected: self.target.host_key.clone().unwrap_or_default(),
                offered,
            };
        }
        let detail = tail_lines(
            &stderr
                .lines()
                .filter(|l| !l.starts_with("Warning: Permanently added"))
                .collect::<Vec<_>>()
                .join("\n"),
            3,
        );
        if stderr.contains("Permission denied") || stderr.contains("Too many authentication failures") {
            return SshError::Auth { host, user: self.target.user.clone(), detail };
        }
        let unreachable = [
            "Connection refused",
            "Connection timed out",
            "No route to host",
            "Could not resolve hostname",
            "Connection closed",
            "Connection reset",
            "kex_exchange_identification",
            "Network is unreachable",
            "port 22: ",
        ];
        if unreachable.iter().any(|p| stderr.contains(p)) || detail.is_empty() {
            return SshError::Unreachable {
                host,
                detail: if detail.is_empty() { format!("{what} ended without a message") } else { detail },
            };
        }
        SshError::Unreachable { host, detail }
    }

    /// `ssh … user@host -- REMOTE` over the shared connection. `remote` is a shell command line
    /// (quote words with [`quote`] / [`command_line`]).
    pub fn command(&self, remote: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.base_args(Some(&self.control_path())))
            .args(["-o", "ControlMaster=no", "-T"])
            .arg(self.target.destination())
            .arg("--")
            .arg(remote);
        c
    }

    /// Like [`command`](Self::command) but with a terminal (`ssh -t`), for interactive use.
    pub fn interactive_command(&self, remote: Option<&str>) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.base_args(Some(&self.control_path()))).args(["-o", "ControlMaster=no"]);
        if remote.is_some() {
            c.arg("-t");
        }
        c.arg(self.target.destination());
        if let Some(r) = remote {
            c.arg("--").arg(r);
        }
        c
    }

    /// A command over a brand-new connection (no multiplexing): proves that a fresh login
    /// works (magic rollback's confirmation).
    pub fn fresh_command(&self, remote: &str, connect_timeout: u64) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.base_args(None))
            .args(["-o", &format!("ConnectTimeout={}", connect_timeout.max(1)), "-T"])
            .arg(self.target.destination())
            .arg("--")
            .arg(remote);
        c
    }

    /// Options for Nix's `NIX_SSHOPTS` (space-separated, as Nix splits it), so that
    /// `nix-copy-closure`/`nix copy` reuse the shared connection and the same host-key policy.
    pub fn nix_sshopts(&self) -> String {
        self.base_args(Some(&self.control_path())).join(" ")
    }

    /// Run `remote`, feeding `stdin`, and wait up to `timeout`. Exit 255 is a connection error;
    /// other non-zero exits are [`SshError::Failed`].
    pub fn run(
        &self,
        what: &str,
        remote: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<String, SshError> {
        let out = self.output(self.command(remote), what, stdin, timeout)?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.code() == Some(255) {
            return Err(self.classify(&stderr, what));
        }
        Err(SshError::Failed {
            host: self.target.display(),
            what: what.into(),
            status: out.status.code(),
            stderr: format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr),
        })
    }

    /// Run a prepared command with a timeout, returning its output whatever the exit status.
    pub fn output(
        &self,
        mut cmd: Command,
        what: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, SshError> {
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| SshError::Local(format!("cannot run ssh: {e}")))?;
        if let Some(data) = stdin {
            if let Some(mut w) = child.stdin.take() {
                let data = data.to_vec();
                std::thread::spawn(move || {
                    let _ = w.write_all(&data);
                });
            }
        }
        wait_output(child, timeout).map_err(|e| match e {
            WaitError::Timeout => SshError::Timeout {
                host: self.target.display(),
                what: what.into(),
                seconds: timeout.as_secs(),
            },
            WaitError::Io(e) => SshError::Local(format!("{what}: {e}")),
        })
    }

    /// Is the master connection still up?
    pub fn alive(&self) -> bool {
        let mut m = self.master.lock().unwrap_or_else(|e| e.into_inner());
        match m.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)) && self.control_path().exists(),
            None => false,
        }
    }

    /// End the master connection.
    pub fn close(&self) {
        if let Some(mut c) = self.master.lock().unwrap_or_else(|e| e.into_inner()).take() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), SshError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| SshError::Local(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(data).map_err(|e| SshError::Local(format!("cannot write {}: {e}", path.display())))
}
