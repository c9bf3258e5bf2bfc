//! Test hosts for the `nixos.machine` provider: one machine's worth of NixOS target, many times
//! over, on one real machine.
//!
//! A [`TestHost`] is a private mount namespace with its own `/nix` (store, database, profiles),
//! `/run`, `/boot`, `/root` and a private writable `/etc` (an overlay on the real one), running
//! the real OpenSSH `sshd` as root on a loopback address `127.0.0.N`. Everything else (network,
//! PIDs, users, `/usr`) is the real machine's. Test systems built from the package set in
//! `crates/ferry-testkit/nix` ([`test_systems_nix`]) are deployed to it exactly like NixOS
//! systems: `nix-copy-closure`, `nix-env -p /nix/var/nix/profiles/system --set`,
//! `switch-to-configuration`.
//!
//! How it holds together:
//! - an *anchor* process (`unshare --mount … sleep infinity`) owns the namespace; sshd and
//!   [`TestHost::exec`] enter it with `nsenter -t ANCHOR -m`;
//! - the host's directory (`dir()`) holds `nix/`, `run/`, `boot/`, `root/`, `var/` (its
//!   `/var/lib/machines` and `/var/lib/ferry`, for containers), `etc-upper/`,
//!   `etc-work/` (bind/overlay sources), `ssh/` (host key, client key, `authorized_keys`,
//!   `known_hosts`) and `boot_id`, bind-mounted over `/proc/sys/kernel/random/boot_id` so that
//!   the test systems' simulated `reboot` can change it;
//! - inside, `/run/ferry-testhost/` holds `sshd_config` (test systems restart sshd from it),
//!   `sshd.log`, `anchor.pid` and `bin/`: `reboot`, `poweroff`, `shutdown`, `halt`, `systemctl`
//!   shims that refuse (a test must never reach the real machine's init);
//! - addresses are claimed with `flock` on `/tmp/ferry-testhosts/127.0.0.N.lock`, safe across
//!   test threads and concurrent test binaries; a host leaked by a killed test binary is
//!   reaped when its address is claimed again;
//! - a *detached* host ([`TestHost::start_detached`], used by the `ferry-testhosts` CLI) outlives
//!   the process that started it: its anchor runs in its own session and inherits the address
//!   lock, so the claim lasts as long as the anchor. `run/ferry-testhost/host.json` in its
//!   directory records it (address, anchor, namespace, identity token), so that another process
//!   can find it again ([`TestHost::attach`], [`running_hosts`]) and stop it ([`stop_hosts`]).
//!   Stopping only ever signals processes that are in the recorded namespace *and* see the
//!   host's identity token in their own `/run/ferry-testhost/id`.
//!
//! Architecture invariant: no knowledge of ferry; hosts are driven with `ssh`, `nix` and
//! `nsenter` like any machine. Needs root.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `PATH` of SSH sessions and of [`TestHost::exec`] on a test host: the current system's
/// `sw/bin` first (as on NixOS), then the refusing shims, then the real machine's tools (`nix-*`
/// and `sshd` come from there).
pub const HOST_PATH: &str =
    "/run/current-system/sw/bin:/run/ferry-testhost/bin:/usr/bin:/bin:/usr/sbin:/sbin";

/// The kit's files inside a host (under its private `/run`).
const KIT_DIR: &str = "/run/ferry-testhost";
const SSHD_CONFIG: &str = "/run/ferry-testhost/sshd_config";
const SSHD_LOG: &str = "/run/ferry-testhost/sshd.log";
/// The host's record, relative to its directory (inside its `/run`, so it goes with a "boot").
const STATE_FILE: &str = "run/ferry-testhost/host.json";
/// Address claims, shared by every test binary on the machine.
const CLAIMS_DIR: &str = "/tmp/ferry-testhosts";
/// Port used when 22 is taken on the loopback address (e.g. by the machine's own sshd on 0.0.0.0).
const FALLBACK_PORT: u16 = 2222;
const SHIMS: [&str; 5] = ["reboot", "poweroff", "shutdown", "halt", "systemctl"];
/// Directories the host shadows: its own directory must not be under one of them.
const SHADOWED: [&str; 7] = ["/nix", "/run", "/boot", "/etc", "/root", "/proc", "/var/lib"];

/// Sets up the namespace (run by `sh` inside `unshare --mount`; `$1` is the host directory),
/// reports, then becomes the anchor. `/run` first, so that `mount` keeps its bookkeeping there.
///
/// The host's Nix builds as root with the machine's build users (`nixbld*`: users are the
/// machine's, `/etc` is an overlay on its `/etc`), and Nix kills every process of a build user
/// before and after each build. Build users are allocated by locking
/// `/nix/var/nix/userpool/UID`, so the host shares the machine's `userpool` directory (bound
/// into its `/nix`, hence `--rbind`): with a lock directory of its own, a build on the host and
/// one on the machine (or on another host) got the same user at once, and one killed the
/// other's builder ("failed due to signal 9 (Killed)").
const ANCHOR_SCRIPT: &str = r#"set -e
d=$1
mount --bind "$d/run" /run
mkdir -p /nix/var/nix/userpool "$d/nix/var/nix/userpool"
mount --bind /nix/var/nix/userpool "$d/nix/var/nix/userpool"
mount --rbind "$d/nix" /nix
mount --bind "$d/boot" /boot
mount --bind "$d/root" /root
mkdir -p /var/lib/machines /var/lib/ferry
mount --bind "$d/var/machines" /var/lib/machines
mount --bind "$d/var/ferry" /var/lib/ferry
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$d/etc-upper,workdir=$d/etc-work" /etc
if mount --bind "$d/boot_id" /proc/sys/kernel/random/boot_id 2>/dev/null; then echo boot-id; fi
echo ready
exec sleep infinity >/dev/null"#;

/// A test host: a private mount namespace running sshd on `127.0.0.N` (see the module docs).
/// Dropping it kills every process of the host and releases its address; its directory stays
/// (the caller owns `base`, e.g. a temporary directory: declare it before the host so that the
/// host is dropped first).
pub struct TestHost {
    name: String,
    dir: PathBuf,
    addr: String,
    port: u16,
    host_key: String,
    client_pubkey: String,
    client_key: PathBuf,
    anchor: Option<Child>,
    anchor_pid: u32,
    mnt_ns: String,
    boot_id_simulated: bool,
    claim: Option<AddressClaim>,
    /// The identity token of this boot of the host (`/run/ferry-testhost/id` inside).
    token: String,
    /// Outlives this handle: dropping it does not kill the host.
    detached: bool,
}

impl TestHost {
    /// Start host `name` in `base/name` (created; an existing directory is reused, keeping its
    /// store, keys and `/etc` changes; `/run` starts empty as after a boot): claims a free
    /// address `127.0.0.N` (N in 10..=250), sets up the namespace and starts sshd, returning
    /// once sshd accepts TCP connections. Port 22 if free on that address, else 2222.
    pub fn start(base: &Path, name: &str) -> io::Result<TestHost> {
        TestHost::start_with(base, name, false)
    }

    /// Like [`TestHost::start`], but the host outlives this process: its anchor runs in a
    /// session of its own and holds the address claim itself. Dropping the returned handle
    /// leaves the host running; [`TestHost::kill`] (or [`stop_hosts`] from any process) stops
    /// it. Find it again with [`TestHost::attach`].
    pub fn start_detached(base: &Path, name: &str) -> io::Result<TestHost> {
        TestHost::start_with(base, name, true)
    }

    /// A handle on host `name` of `base` started detached by any process, if it is running
    /// (its anchor is alive and is the one recorded). The handle is detached: dropping it leaves
    /// the host running; [`TestHost::kill`] stops it. Does not check sshd
    /// ([`TestHost::start_sshd`] starts it if needed).
    pub fn attach(base: &Path, name: &str) -> io::Result<Option<TestHost>> {
        let dir = base.join(name);
        if !dir.join(STATE_FILE).exists() {
            return Ok(None);
        }
        let host = TestHost::from_state(&dir)?;
        Ok(host.running().then_some(host))
    }

    fn start_with(base: &Path, name: &str, detached: bool) -> io::Result<TestHost> {
        if name.is_empty() || name.contains(|c: char| c == '/' || c.is_whitespace()) {
            return Err(invalid(format!("test host name {name:?}: no '/' or whitespace")));
        }
        // prepare_dir empties run/: never under a live host.
        if matches!(TestHost::attach(base, name), Ok(Some(_))) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("test host {name} already runs in {}", base.join(name).display()),
            ));
        }
        let dir = prepare_dir(base, name)?;
        let claim = AddressClaim::acquire()?;
        let ssh = dir.join("ssh");
        let host_key_file = ssh.join("ssh_host_ed25519_key");
        let client_key = ssh.join("client_key");
        for key in [&host_key_file, &client_key] {
            if !key.exists() {
                keygen(key)?;
            }
        }
        let client_pubkey = public_key(&client_key)?;
        let authorized = ssh.join("authorized_keys");
        if !fs::read_to_string(&authorized).unwrap_or_default().contains(&client_pubkey) {
            append_line(&authorized, &client_pubkey)?;
        }
        let mut host = TestHost {
            name: name.to_string(),
            addr: claim.addr.clone(),
            port: claim.port,
            host_key: public_key(&host_key_file)?,
            client_pubkey,
            client_key,
            anchor: None,
            anchor_pid: 0,
            mnt_ns: String::new(),
            boot_id_simulated: false,
            claim: Some(claim),
            token: fs::read_to_string(dir.join("run/ferry-testhost/id"))?.trim().to_string(),
            detached,
            dir,
        };
        host.write_known_hosts()?;
        host.write_kit_files()?;
        // From here on, kill cleans up whatever was started.
        let started = host.spawn_anchor().and_then(|()| {
            if let Some(claim) = &host.claim {
                claim.record(&host)?;
            }
            host.write_state()?;
            host.start_sshd()
        });
        if let Err(e) = started {
            host.kill();
            return Err(e);
        }
        Ok(host)
    }

    /// A detached handle from the record in `dir` (whether or not the host still runs).
    fn from_state(dir: &Path) -> io::Result<TestHost> {
        let dir = dir.canonicalize()?;
        let path = dir.join(STATE_FILE);
        let state: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path)?)
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        let field = |k: &str| {
            state[k]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| io::Error::other(format!("{}: no {k}", path.display())))
        };
        let number = |k: &str| {
            state[k].as_u64().ok_or_else(|| io::Error::other(format!("{}: no {k}", path.display())))
        };
        let ssh = dir.join("ssh");
        let client_key = ssh.join("client_key");
        Ok(TestHost {
            name: field("name")?,
            addr: field("addr")?,
            port: u16::try_from(number("port")?).map_err(io::Error::other)?,
            host_key: public_key(&ssh.join("ssh_host_ed25519_key"))?,
            client_pubkey: public_key(&client_key)?,
            client_key,
            anchor: None,
            anchor_pid: u32::try_from(number("anchorPid")?).map_err(io::Error::other)?,
            mnt_ns: field("mntNs")?,
            boot_id_simulated: state["bootIdSimulated"].as_bool().unwrap_or(false),
            claim: None,
            token: field("token")?,
            detached: true,
            dir,
        })
    }

    /// Whether the host's anchor is alive (for a handle from [`TestHost::attach`]: still the
    /// recorded one).
    pub fn running(&self) -> bool {
        !self.mnt_ns.is_empty() && self.in_namespace(self.anchor_pid as i32) && self.owns(self.anchor_pid)
    }

    /// Whether dropping this handle leaves the host running.
    pub fn is_detached(&self) -> bool {
        self.detached
    }

    /// The name given to [`TestHost::start`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's address, `"127.0.0.N"`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// sshd's port: 22, or 2222 if 22 was taken on the address.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The public host key, `"ssh-ed25519 AAAA…"` (no comment): what a client should pin.
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    /// A private key (mode 0600, no passphrase) authorized for `root` on this host.
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// The public half of [`TestHost::client_key`], `"ssh-ed25519 AAAA…"`.
    pub fn client_pubkey(&self) -> &str {
        &self.client_pubkey
    }

    /// `"root@127.0.0.N"`, the destination for `ssh` and `nix-copy-closure --to`.
    pub fn destination(&self) -> String {
        format!("root@{}", self.addr)
    }

    /// The host's directory on the real file system: `nix/` is its `/nix` (`nix/store`,
    /// `nix/var/nix/profiles`…), `run/` its `/run`, `boot/` its `/boot`, `etc-upper/` what it
    /// changed in `/etc`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `/proc/sys/kernel/random/boot_id` is the host's own file (bind mount), so a
    /// simulated reboot changes it. True on the machines tested so far.
    pub fn boot_id_simulated(&self) -> bool {
        self.boot_id_simulated
    }

    /// The boot id as seen on the host (empty while a simulated reboot rewrites it).
    pub fn boot_id(&self) -> String {
        let id = match self.boot_id_simulated {
            // The file itself: no process in the host, which a reboot would kill.
            true => fs::read_to_string(self.dir.join("boot_id")).unwrap_or_default(),
            false => {
                String::from_utf8_lossy(&self.exec("cat /proc/sys/kernel/random/boot_id").stdout).into_owned()
            }
        };
        id.trim().to_string()
    }

    /// Authorize `pubkey` (an OpenSSH public key line) for root.
    pub fn authorize(&self, pubkey: &str) -> io::Result<()> {
        append_line(&self.dir.join("ssh/authorized_keys"), pubkey.trim())
    }

    /// Run `sh -c script` as root inside the host's namespace (through `nsenter`, not SSH: works
    /// while sshd is down), with `PATH` = [`HOST_PATH`], `HOME=/root`, stdin from /dev/null.
    /// For assertions and setup. Panics if `nsenter` cannot be run at all.
    pub fn exec(&self, script: &str) -> Output {
        self.nsenter(&["/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("nsenter into test host {}: {e}", self.name))
    }

    /// Options for the real `ssh` client to reach this host: its client key, `known_hosts`
    /// pinning its host key (nothing else trusted, no user config), port, batch mode.
    /// No whitespace inside an option: usable as `NIX_SSHOPTS` ([`TestHost::nix_sshopts`]).
    pub fn ssh_options(&self) -> Vec<String> {
        let known_hosts = self.dir.join("ssh/known_hosts");
        let mut v: Vec<String> = vec!["-F".into(), "/dev/null".into()];
        v.extend(["-i".into(), self.client_key.display().to_string()]);
        v.extend(["-p".into(), self.port.to_string()]);
        for o in [
            "IdentitiesOnly=yes".to_string(),
            format!("UserKnownHostsFile={}", known_hosts.display()),
            "GlobalKnownHostsFile=/dev/null".into(),
            "StrictHostKeyChecking=yes".into(),
            "BatchMode=yes".into(),
            "ConnectTimeout=5".into(),
            "LogLevel=ERROR".into(),
        ] {
            v.extend(["-o".into(), o]);
        }
        v
    }

    /// [`TestHost::ssh_options`] joined with spaces, for `NIX_SSHOPTS` (`nix-copy-closure`,
    /// `nix copy --to ssh://`).
    pub fn nix_sshopts(&self) -> String {
        self.ssh_options().join(" ")
    }

    /// A plain `ssh` command to `root@127.0.0.N` with [`TestHost::ssh_options`]; append the
    /// remote command with `.arg(…)`.
    pub fn ssh_command(&self) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.ssh_options()).arg(self.destination());
        c
    }

    /// Make the host unreachable: kill sshd's listener (established sessions survive). The
    /// namespace and everything else in it stay.
    pub fn stop_sshd(&self) {
        if let Some(pid) = self.sshd_pid() {
            signal(pid, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.in_namespace(pid) {
                if Instant::now() > deadline {
                    signal(pid, libc::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Start sshd (if it is not running) and wait until it accepts TCP connections.
    pub fn start_sshd(&self) -> io::Result<()> {
        if self.sshd_pid().is_none() {
            let out = self.nsenter(&["/usr/sbin/sshd", "-f", SSHD_CONFIG, "-E", SSHD_LOG]).output()?;
            if !out.status.success() {
                return Err(io::Error::other(format!(
                    "sshd on test host {} failed: {}\n{}",
                    self.name,
                    String::from_utf8_lossy(&out.stderr),
                    self.sshd_log()
                )));
            }
        }
        let addr: SocketAddr = format!("{}:{}", self.addr, self.port).parse().map_err(io::Error::other)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "sshd on test host {} does not accept connections on {addr}\n{}",
                    self.name,
                    self.sshd_log()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // sshd listens before it writes its PID file: until then `stop_sshd` would find
        // nothing to stop (an "unreachable" host that still answers).
        while self.sshd_pid().is_none() {
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "sshd on test host {} wrote no PID file (/run/sshd.pid)\n{}",
                    self.name,
                    self.sshd_log()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Replace the host key with a new one and restart sshd: clients pinning the old key must
    /// now refuse the host. The kit's own `known_hosts` (used by [`TestHost::ssh_command`]) and
    /// [`TestHost::host_key`] follow the new key.
    pub fn regenerate_host_key(&mut self) -> io::Result<()> {
        let key = self.dir.join("ssh/ssh_host_ed25519_key");
        keygen(&key)?;
        self.host_key = public_key(&key)?;
        self.write_known_hosts()?;
        self.stop_sshd();
        self.start_sshd()
    }

    /// Kill every process of the host (whatever runs in its mount namespace: sshd, sessions,
    /// services), then the anchor, and release the address. Idempotent; also done on drop
    /// unless the host is detached.
    pub fn kill(&mut self) {
        if let Some(mut anchor) = self.anchor.take() {
            // Our own child anchors the namespace, but it may have died (then the namespace's id
            // may already be another's: every `nix-build` makes a mount namespace): only
            // processes that also show this boot's token.
            if !self.mnt_ns.is_empty() {
                let token = self.token.clone();
                kill_namespace(&self.mnt_ns, &|pid| pid != self.anchor_pid && owned_by(pid, &token));
            }
            let _ = anchor.kill();
            let _ = anchor.wait();
        } else if !self.mnt_ns.is_empty() && !self.token.is_empty() {
            // Another process's host (attached): the anchor too, and only processes showing
            // this boot's token, in case the namespace is gone and its id reused.
            let token = self.token.clone();
            kill_namespace(&self.mnt_ns, &|pid| owned_by(pid, &token));
        }
        match self.claim.take() {
            Some(claim) => claim.release(),
            // The anchor held the lock: drop the record if the address is still ours.
            None if !self.mnt_ns.is_empty() => release_record(&self.addr, &self.token),
            None => {}
        }
        if self.detached {
            let _ = fs::remove_file(self.dir.join(STATE_FILE));
        }
        self.mnt_ns.clear();
    }

    /// A command run inside the namespace, with the session environment of the host.
    fn nsenter(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t").arg(self.anchor_pid.to_string()).arg("-m").arg("--").args(argv);
        c.env("PATH", HOST_PATH).env("HOME", "/root");
        c
    }

    /// Whether process `pid` sees this boot of the host's identity token.
    fn owns(&self, pid: u32) -> bool {
        !self.token.is_empty() && owned_by(pid, &self.token)
    }

    fn in_namespace(&self, pid: i32) -> bool {
        !self.mnt_ns.is_empty() && mnt_ns_of(pid as u32).as_deref() == Some(self.mnt_ns.as_str())
    }

    /// The pid of sshd's listener, if it runs.
    fn sshd_pid(&self) -> Option<i32> {
        let pid = fs::read_to_string(self.dir.join("run/sshd.pid")).ok()?.trim().parse().ok()?;
        self.in_namespace(pid).then_some(pid)
    }

    fn sshd_log(&self) -> String {
        let log = fs::read_to_string(self.dir.join("run/ferry-testhost/sshd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `run/ferry-testhost/host.json`: what [`TestHost::attach`] and [`stop_hosts`] need.
    fn write_state(&self) -> io::Result<()> {
        let state = serde_json::json!({
            "name": self.name,
            "addr": self.addr,
            "port": self.port,
            "anchorPid": self.anchor_pid,
            "mntNs": self.mnt_ns,
            "token": self.token,
            "bootIdSimulated": self.boot_id_simulated,
            "detached": self.detached,
        });
        fs::write(self.dir.join(STATE_FILE), format!("{state:#}\n"))
    }

    fn write_known_hosts(&self) -> io::Result<()> {
        let pattern =
            if self.port == 22 { self.addr.clone() } else { format!("[{}]:{}", self.addr, self.port) };
        fs::write(self.dir.join("ssh/known_hosts"), format!("{pattern} {}\n", self.host_key))
    }

    /// `/run/ferry-testhost`: sshd's config, the refusing shims, the host's identity.
    fn write_kit_files(&self) -> io::Result<()> {
        let kit = self.dir.join("run/ferry-testhost");
        let ssh = self.dir.join("ssh");
        let config = sshd_config(
            &self.addr,
            self.port,
            &ssh.join("ssh_host_ed25519_key"),
            &ssh.join("authorized_keys"),
            HOST_PATH,
        );
        fs::write(kit.join("sshd_config"), config)?;
        for shim in SHIMS {
            let path = kit.join("bin").join(shim);
            fs::write(&path, format!("#!/bin/sh\necho \"{shim}: refused on a test host\" >&2\nexit 1\n"))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        }
        Ok(())
    }

    fn spawn_anchor(&mut self) -> io::Result<()> {
        let log = File::create(self.dir.join("anchor.log"))?;
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c", ANCHOR_SCRIPT, "sh"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        if self.detached {
            // A session of its own (no signal from our terminal reaches it), and the address
            // lock: the anchor (unshare, then sh, then sleep: one process) inherits the locked
            // descriptor, so the claim lasts exactly as long as the anchor.
            let lock = self.claim.as_ref().map(|c| c.lock.as_raw_fd());
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls (setsid, fcntl) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setsid() == -1 {
                        return Err(io::Error::last_os_error());
                    }
                    if let Some(fd) = lock {
                        let flags = libc::fcntl(fd, libc::F_GETFD);
                        if flags == -1 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) == -1 {
                            return Err(io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn()?;
        self.anchor_pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        self.anchor = Some(child);
        let mut ready = false;
        for line in BufReader::new(stdout).lines() {
            match line?.as_str() {
                "boot-id" => self.boot_id_simulated = true,
                "ready" => {
                    ready = true;
                    break;
                }
                _ => {}
            }
        }
        if !ready {
            let log = fs::read_to_string(self.dir.join("anchor.log")).unwrap_or_default();
            return Err(io::Error::other(format!("test host {}: namespace setup failed: {log}", self.name)));
        }
        self.mnt_ns = mnt_ns_of(self.anchor_pid)
            .ok_or_else(|| io::Error::other(format!("test host {}: anchor vanished", self.name)))?;
        if mnt_ns_of(std::process::id()).as_deref() == Some(self.mnt_ns.as_str()) {
            return Err(io::Error::other("unshare did not create a mount namespace"));
        }
        fs::write(self.dir.join("run/ferry-testhost/anchor.pid"), format!("{}\n", self.anchor_pid))
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if !self.detached {
            self.kill();
        }
    }
}

/// The running hosts of `base` (its subdirectories recording a live host, see
/// [`TestHost::attach`]), sorted by name. Detached handles: dropping them changes nothing.
pub fn running_hosts(base: &Path) -> io::Result<Vec<TestHost>> {
    let mut hosts = vec![];
    for name in host_names(base)? {
        // An unreadable record is no running host.
        if let Ok(Some(h)) = TestHost::attach(base, &name) {
            hosts.push(h);
        }
    }
    Ok(hosts)
}

/// Stop every host recorded in `base` (running or left over): kill each one's processes (only
/// processes in its recorded namespace that see its identity token), release its address and
/// remove its record. Returns the names of the hosts that were running.
pub fn stop_hosts(base: &Path) -> io::Result<Vec<String>> {
    let mut stopped = vec![];
    let mut unreadable = vec![];
    for name in host_names(base)? {
        match TestHost::from_state(&base.join(&name)) {
            Ok(mut host) => {
                if host.running() {
                    stopped.push(name);
                }
                host.kill();
            }
            Err(e) => unreadable.push(format!("{name}: {e}")),
        }
    }
    match unreadable.is_empty() {
        true => Ok(stopped),
        false => Err(io::Error::other(format!("unreadable host records: {}", unreadable.join("; ")))),
    }
}

/// Names of the subdirectories of `base` that hold a host record, sorted.
fn host_names(base: &Path) -> io::Result<Vec<String>> {
    let mut names = vec![];
    let entries = match fs::read_dir(base) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.path().join(STATE_FILE).is_file() {
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// The test package set: `import (test_systems_nix()) { }` gives `busybox`, `mkSystem`,
/// `mkBlob`… (documented in `crates/ferry-testkit/nix/default.nix`).
pub fn test_systems_nix() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("nix")
}

/// Build `expr` (a Nix expression in which `testkit` is the test package set, e.g.
/// `testkit.mkSystem { name = "a"; address = "127.0.0.10"; }`) into the real machine's store
/// with `nix-build --option substituters ''`; returns the output path.
pub fn nix_build(expr: &str) -> io::Result<PathBuf> {
    let full = format!("let testkit = import {} {{ }}; in {expr}", test_systems_nix().display());
    let out = Command::new("nix-build")
        .args(["--no-out-link", "--option", "substituters", "", "-E", &full])
        .stdin(Stdio::null())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), stdout.lines().collect::<Vec<_>>().as_slice()) {
        (true, [path]) => Ok(PathBuf::from(path)),
        _ => Err(io::Error::other(format!(
            "nix-build {expr}: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))),
    }
}

/// Create the host directory's layout. `run/` starts empty, as after a boot.
fn prepare_dir(base: &Path, name: &str) -> io::Result<PathBuf> {
    fs::create_dir_all(base.join(name))?;
    let dir = base.join(name).canonicalize()?;
    let text = dir.display().to_string();
    if SHADOWED.iter().any(|s| dir.starts_with(s))
        || text.contains(|c: char| c == ',' || c == ':' || c.is_whitespace())
    {
        return Err(invalid(format!(
            "test host directory {text}: must not be under {SHADOWED:?} nor contain ',', ':' or whitespace"
        )));
    }
    let run = dir.join("run");
    if run.exists() {
        fs::remove_dir_all(&run)?;
    }
    for sub in [
        "nix",
        "run/sshd",
        "run/ferry-testhost/bin",
        "boot",
        "etc-upper",
        "etc-work",
        "ssh",
        "var/machines",
        "var/ferry",
    ] {
        fs::create_dir_all(dir.join(sub))?;
    }
    // sshd insists on a root-owned privilege separation directory nobody else can write.
    fs::set_permissions(run.join("sshd"), fs::Permissions::from_mode(0o755))?;
    fs::create_dir_all(dir.join("root"))?;
    fs::set_permissions(dir.join("root"), fs::Permissions::from_mode(0o700))?;
    if !dir.join("boot_id").exists() {
        fs::write(dir.join("boot_id"), format!("{}\n", uuid()?))?;
    }
    fs::write(run.join("ferry-testhost/id"), format!("{}\n", uuid()?))?;
    Ok(dir)
}

/// An sshd configuration for a test host: listening on `addr:port` only, root logging in with
/// the keys in `authorized` only (no password, no PAM), sessions with `PATH` = `path`. Shared
/// with [`crate::systemd_host`].
pub(crate) fn sshd_config(addr: &str, port: u16, host_key: &Path, authorized: &Path, path: &str) -> String {
    format!(
        "ListenAddress {addr}:{port}\n\
         HostKey {key}\n\
         PidFile /run/sshd.pid\n\
         AuthorizedKeysFile {authorized}\n\
         PermitRootLogin prohibit-password\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         StrictModes no\n\
         UseDNS no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         MaxStartups 100\n\
         MaxSessions 100\n\
         SetEnv PATH={path}\n\
         Subsystem sftp /usr/lib/openssh/sftp-server\n",
        key = host_key.display(),
        authorized = authorized.display(),
    )
}

/// A claimed address: the `flock` on its lock file is held as long as the claim lives.
pub(crate) struct AddressClaim {
    pub(crate) addr: String,
    pub(crate) port: u16,
    /// Holds the lock (closing it releases the address; a detached host's anchor inherits it).
    lock: File,
    /// Who holds the address (host identity token, mount namespace): lets the next claimer
    /// reap a host whose test binary died without dropping it.
    record: PathBuf,
}

impl AddressClaim {
    pub(crate) fn acquire() -> io::Result<AddressClaim> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        fs::create_dir_all(CLAIMS_DIR)?;
        // Spread the starting point so concurrent binaries do not all race for 127.0.0.10.
        let start = std::process::id() as usize * 7 + NEXT.fetch_add(1, Ordering::Relaxed);
        for i in 0..241 {
            let addr = format!("127.0.0.{}", 10 + (start + i) % 241);
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(Path::new(CLAIMS_DIR).join(format!("{addr}.lock")))?;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                continue;
            }
            let record = Path::new(CLAIMS_DIR).join(format!("{addr}.host"));
            reap_stale(&record);
            let port = if port_free(&addr, 22) {
                22
            } else if port_free(&addr, FALLBACK_PORT) {
                FALLBACK_PORT
            } else {
                continue;
            };
            return Ok(AddressClaim { addr, port, lock, record });
        }
        Err(io::Error::other("no free test host address in 127.0.0.10-250"))
    }

    fn record(&self, host: &TestHost) -> io::Result<()> {
        let token = fs::read_to_string(host.dir.join("run/ferry-testhost/id"))?;
        self.record_owner(token.trim(), &host.mnt_ns)
    }

    /// Record who holds the address: processes of mount namespace `mnt_ns` that see `token` in
    /// their `/run/ferry-testhost/id` (killed by the next claimer if the holder died).
    pub(crate) fn record_owner(&self, token: &str, mnt_ns: &str) -> io::Result<()> {
        fs::write(&self.record, format!("{token}\n{mnt_ns}\n"))
    }

    pub(crate) fn release(self) {
        let _ = fs::remove_file(&self.record);
    }
}

/// Kill what is left of a host recorded in `record` (its test binary died without dropping
/// it): processes of the recorded namespace that also show the recorded identity token in their
/// own `/run/ferry-testhost/id`, so a reused namespace id never hits a stranger.
fn reap_stale(record: &Path) {
    let Ok(text) = fs::read_to_string(record) else { return };
    let mut lines = text.lines();
    if let (Some(token), Some(ns)) = (lines.next(), lines.next()) {
        kill_namespace(ns, &|pid| owned_by(pid, token));
    }
    let _ = fs::remove_file(record);
}

/// Whether process `pid` sees identity token `token` in its own `/run/ferry-testhost/id`.
fn owned_by(pid: u32, token: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/root{KIT_DIR}/id")).is_ok_and(|t| t.trim() == token)
}

/// Remove the claim record of `addr` if it still names the host with `token` and the address is
/// free (its lock can be taken: no new claimer raced in).
fn release_record(addr: &str, token: &str) {
    let Ok(lock) =
        OpenOptions::new().read(true).write(true).open(Path::new(CLAIMS_DIR).join(format!("{addr}.lock")))
    else {
        return;
    };
    // SAFETY: flock on a descriptor we own; closing it (drop) unlocks.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return;
    }
    let record = Path::new(CLAIMS_DIR).join(format!("{addr}.host"));
    if fs::read_to_string(&record).is_ok_and(|t| t.lines().next() == Some(token)) {
        let _ = fs::remove_file(record);
    }
}

/// SIGKILL every process of mount namespace `ns` accepted by `select`, until none is left and
/// every killed one has left the namespace. (A dying process drops its root directory before
/// its namespaces: `select` may no longer recognise it while it is still in `ns`.)
fn kill_namespace(ns: &str, select: &dyn Fn(u32) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut killed: Vec<u32> = vec![];
    loop {
        let pids: Vec<u32> = processes()
            .into_iter()
            .filter(|&pid| mnt_ns_of(pid).as_deref() == Some(ns) && select(pid))
            .collect();
        killed.retain(|&pid| mnt_ns_of(pid).as_deref() == Some(ns));
        if (pids.is_empty() && killed.is_empty()) || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            signal(pid as i32, libc::SIGKILL);
            if !killed.contains(&pid) {
                killed.push(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn processes() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// `mnt:[…]` of a live process (none for zombies and vanished processes).
pub(crate) fn mnt_ns_of(pid: u32) -> Option<String> {
    Some(fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()?.display().to_string())
}

pub(crate) fn signal(pid: i32, sig: i32) {
    // SAFETY: plain kill(2); callers checked the pid belongs to a test host.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn port_free(addr: &str, port: u16) -> bool {
    TcpListener::bind((addr, port)).is_ok()
}

pub(crate) fn keygen(path: &Path) -> io::Result<()> {
    for p in [path.to_path_buf(), path.with_extension("pub")] {
        if p.exists() {
            fs::remove_file(p)?;
        }
    }
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!("ssh-keygen: {}", String::from_utf8_lossy(&out.stderr))));
    }
    Ok(())
}

/// `"TYPE BASE64"` of the public key beside private key `path`.
pub(crate) fn public_key(path: &Path) -> io::Result<String> {
    let text = fs::read_to_string(path.with_extension("pub"))?;
    let fields: Vec<&str> = text.split_whitespace().take(2).collect();
    Ok(fields.join(" "))
}

pub(crate) fn append_line(path: &Path, line: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(f, "{line}")
}

pub(crate) fn uuid() -> io::Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/random/uuid")?.trim().to_string())
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}
