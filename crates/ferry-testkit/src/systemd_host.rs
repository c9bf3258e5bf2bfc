//! A test host with a real systemd as PID 1: `systemd-nspawn -b` on a minimal root that
//! bind-mounts this machine's `/usr`, for testing what ferry does through `systemctl`.
//!
//! A [`SystemdHost`] is a booted container (its own PID and mount namespaces, this machine's
//! network namespace) running:
//! - the real systemd from `/usr/lib/systemd/systemd` (this machine's `/usr`, read-only: Debian
//!   is merged-/usr, so `/bin`, `/sbin`, `/lib`, `/lib64` are symlinks into it),
//! - the real OpenSSH `sshd -D` as the unit `ferry-sshd.service`, on a claimed loopback address
//!   `127.0.0.N` (claims shared with [`crate::host::TestHost`]), with a generated host key and
//!   one authorized client key,
//! - its own `/nix` (the host directory's `nix/`, bind-mounted): `nix-copy-closure --to`,
//!   `nix-store --import` and `nix-env -p … --set` work inside as root (the container's
//!   `/etc/nix/nix.conf` needs no build users).
//!
//! The host directory (`base/NAME`, [`SystemdHost::dir`]) holds `root/` (the container's root:
//! a writable skeleton of `/etc`, `/var`, `/root`…; its `etc/systemd/system` is the host's),
//! `nix/`, `ssh/` (client key, `known_hosts`), `kit/` (bound at `/run/ferry-testhost`: the
//! identity token the address claim records, so a host leaked by a killed test binary is
//! reaped when its address is claimed again) and `console.log` (nspawn's output: the boot).
//!
//! systemd-nspawn runs with `--register=no --keep-unit` (there is no systemd on this machine to
//! register with) in a cgroup of its own (`ferry-systemd-host-ADDR` in each writable hierarchy
//! the test process is in), so that hosts booted side by side never share nspawn's `payload`
//! cgroup; the cgroups are removed when the host stops.
//!
//! Dropping the host powers it off (`SIGRTMIN+4` to its systemd; `SIGKILL` to the container's
//! PID 1 if it is not down within 20 s, which ends every process of its PID namespace) and
//! releases the address. The directory stays (the caller owns `base`: declare it before the
//! host). Needs root.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::host::{append_line, keygen, mnt_ns_of, public_key, signal, sshd_config, uuid, AddressClaim};

/// `PATH` of SSH sessions and of [`SystemdHost::exec`]: the usual Debian one (the container's
/// `/usr` is this machine's).
pub const SYSTEMD_HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Units masked in the container. With this machine's `/usr` and the skeleton's `/etc` (which
/// enables nothing but sshd) no unit fails and the boot takes about 0.4 s, so only the login
/// prompt on nspawn's console goes: its output is the boot log (`console.log`), and nobody logs
/// in there.
pub const MASKED_UNITS: [&str; 2] = ["console-getty.service", "getty.target"];

/// Extra systemd-nspawn options of a host started with [`SystemdHost::start_nesting`]: the
/// nested systemd-nspawn creates its veth pair in the network namespace the host shares with
/// this machine (nspawn drops `CAP_NET_ADMIN` from a container without a private network), and
/// networkd configures it. Nothing else is needed: the container's systemd delegates its
/// cgroup subtree (`name=systemd` hierarchy) to systemd-nspawn@.service, machined and dbus run
/// from this machine's `/usr`.
pub const NESTING_ARGS: &[&str] = &["--capability=CAP_NET_ADMIN"];

/// The sshd unit of the container.
const SSHD_UNIT: &str = "ferry-sshd.service";
/// sshd's configuration inside the container.
const SSHD_CONFIG: &str = "/etc/ssh/ferry_sshd_config";
/// Prefix of the cgroups nspawn runs in.
const CGROUP_PREFIX: &str = "ferry-systemd-host-";

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(20);

/// A booted systemd container reachable over SSH (see the module docs).
pub struct SystemdHost {
    name: String,
    dir: PathBuf,
    addr: String,
    port: u16,
    host_key: String,
    client_key: PathBuf,
    client_pubkey: String,
    nspawn: Option<Child>,
    leader: u32,
    cgroups: Vec<PathBuf>,
    claim: Option<AddressClaim>,
    boot_time: Duration,
    nesting: bool,
}

impl SystemdHost {
    /// Boot host `name` in `base/name` (created; an existing directory is reused with its
    /// `/etc`, `/var`, `/nix` and keys, like a machine booted again): claims a free address
    /// `127.0.0.N`, boots the container and returns once `systemctl is-system-running` says
    /// `running` or `degraded` and sshd accepts an SSH login with [`SystemdHost::client_key`].
    /// sshd listens on port 22 if it is free on that address, else 2222.
    pub fn start(base: &Path, name: &str) -> io::Result<SystemdHost> {
        SystemdHost::start_with(base, name, false)
    }

    /// [`SystemdHost::start`], for a host that runs containers of its own (`nesting`: the
    /// host's systemd-nspawn@.service, machined and networkd start nspawn containers inside it;
    /// see [`NESTING_ARGS`]).
    pub fn start_nesting(base: &Path, name: &str) -> io::Result<SystemdHost> {
        SystemdHost::start_with(base, name, true)
    }

    fn start_with(base: &Path, name: &str, nesting: bool) -> io::Result<SystemdHost> {
        let valid = !name.is_empty()
            && name.len() <= 40
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !name.starts_with('-');
        if !valid {
            return Err(invalid(format!("systemd host name {name:?}: letters, digits and '-' only")));
        }
        let usr_merged = ["bin", "sbin", "lib", "lib64"]
            .iter()
            .all(|d| fs::read_link(format!("/{d}")).is_ok_and(|t| t == Path::new("usr").join(d)));
        if !usr_merged {
            return Err(io::Error::other(
                "a systemd host needs a merged-/usr machine (/bin, /sbin, /lib, /lib64 -> usr/…)",
            ));
        }
        if !Path::new("/usr/lib/systemd/systemd").exists() {
            return Err(io::Error::other("no /usr/lib/systemd/systemd (apt-get install systemd)"));
        }
        fs::create_dir_all(base.join(name))?;
        let dir = base.join(name).canonicalize()?;
        if dir.display().to_string().contains(|c: char| c == ',' || c == ':' || c.is_whitespace()) {
            return Err(invalid(format!(
                "systemd host directory {}: no ',', ':' or whitespace",
                dir.display()
            )));
        }
        let claim = AddressClaim::acquire()?;
        let mut host = SystemdHost {
            name: name.to_string(),
            addr: claim.addr.clone(),
            port: claim.port,
            host_key: String::new(),
            client_key: dir.join("ssh/client_key"),
            client_pubkey: String::new(),
            nspawn: None,
            leader: 0,
            cgroups: vec![],
            claim: Some(claim),
            boot_time: Duration::ZERO,
            nesting,
            dir,
        };
        if let Err(e) = host.prepare().and_then(|()| host.boot()) {
            host.kill();
            return Err(e);
        }
        Ok(host)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address sshd listens on, `"127.0.0.N"`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// sshd's port: 22, or 2222 if 22 was taken on the address.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The public host key, `"ssh-ed25519 AAAA…"`: what a client should pin.
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    /// A private key (mode 0600, no passphrase) authorized for `root`.
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// The public half of [`SystemdHost::client_key`].
    pub fn client_pubkey(&self) -> &str {
        &self.client_pubkey
    }

    /// `"root@127.0.0.N"`.
    pub fn destination(&self) -> String {
        format!("root@{}", self.addr)
    }

    /// The host's directory (see the module docs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The container's root directory as this machine sees it (without the bind mounts:
    /// `usr/` and `nix/` are empty here, see [`SystemdHost::dir`]`/nix`).
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// The container's PID 1 (systemd) as this machine sees it; 0 when not running.
    pub fn leader(&self) -> u32 {
        self.leader
    }

    /// How long the last boot took, from starting systemd-nspawn until systemd reported the
    /// system up and an SSH login worked.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// Whether the container still runs.
    pub fn running(&mut self) -> bool {
        self.nspawn.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Run `sh -c script` as root in the container (all its namespaces, through `nsenter`: works
    /// whatever sshd does), with `PATH` = [`SYSTEMD_HOST_PATH`], `HOME=/root`, no pager, stdin
    /// from /dev/null. Panics if `nsenter` cannot be run at all.
    pub fn exec(&self, script: &str) -> Output {
        Command::new("nsenter")
            .arg("-t")
            .arg(self.leader.to_string())
            .args(["-a", "--", "/bin/sh", "-c", script])
            .env_clear()
            .env("PATH", SYSTEMD_HOST_PATH)
            .env("HOME", "/root")
            .env("SYSTEMD_PAGER", "")
            .env("SYSTEMD_COLORS", "0")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("nsenter into systemd host {}: {e}", self.name))
    }

    /// Options for the real `ssh` client: the client key, `known_hosts` pinning the host key
    /// (nothing else trusted, no user config), port, batch mode. No whitespace inside an option.
    pub fn ssh_options(&self) -> Vec<String> {
        let mut v: Vec<String> = vec!["-F".into(), "/dev/null".into()];
        v.extend(["-i".into(), self.client_key.display().to_string()]);
        v.extend(["-p".into(), self.port.to_string()]);
        for o in [
            "IdentitiesOnly=yes".to_string(),
            format!("UserKnownHostsFile={}", self.dir.join("ssh/known_hosts").display()),
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

    /// A plain `ssh` command to `root@127.0.0.N`; append the remote command with `.arg(…)`.
    pub fn ssh_command(&self) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.ssh_options()).arg(self.destination()).stdin(Stdio::null());
        c
    }

    /// `systemctl --failed` in the container (one unit per line, empty when none failed).
    pub fn failed_units(&self) -> String {
        let o = self.exec("systemctl --failed --plain --no-legend --no-pager");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Power the container off and boot it again on the same directory and address (a reboot:
    /// `/run` and every process start afresh, `/etc`, `/var` and `/nix` stay).
    pub fn reboot(&mut self) -> io::Result<()> {
        self.poweroff();
        self.remove_cgroups();
        self.prepare().and_then(|()| self.boot())
    }

    /// Power off (see the module docs), remove the cgroups, release the address. Idempotent;
    /// also done on drop.
    pub fn kill(&mut self) {
        self.poweroff();
        self.remove_cgroups();
        if let Some(claim) = self.claim.take() {
            claim.release();
        }
    }

    fn poweroff(&mut self) {
        let Some(mut child) = self.nspawn.take() else { return };
        let leader = self.leader as i32;
        self.leader = 0;
        let exited = |child: &mut Child, timeout: Duration| {
            let deadline = Instant::now() + timeout;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => return true,
                    Ok(None) if Instant::now() > deadline => return false,
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        };
        if leader > 0 {
            // systemd's "poweroff" signal: a clean shutdown, then nspawn exits.
            signal(leader, libc::SIGRTMIN() + 4);
            if exited(&mut child, POWEROFF_TIMEOUT) {
                return;
            }
            // PID 1 of the container: killing it ends every process of its PID namespace.
            signal(leader, libc::SIGKILL);
            if exited(&mut child, Duration::from_secs(10)) {
                return;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Write the container's root skeleton, keys and sshd configuration (for the claimed address).
    fn prepare(&mut self) -> io::Result<()> {
        let root = self.root();
        let ssh = self.dir.join("ssh");
        let kit = self.dir.join("kit");
        for d in [
            "etc/ssh",
            "etc/nix",
            "etc/systemd/system/multi-user.target.wants",
            "usr",
            "nix",
            "var/lib",
            "var/log",
            "var/tmp",
            "home",
            "run",
            "proc",
            "sys",
            "dev",
        ] {
            fs::create_dir_all(root.join(d))?;
        }
        for (d, mode) in [("tmp", 0o1777), ("root", 0o700), ("var/tmp", 0o1777)] {
            fs::create_dir_all(root.join(d))?;
            fs::set_permissions(root.join(d), fs::Permissions::from_mode(mode))?;
        }
        for d in ["bin", "sbin", "lib", "lib64"] {
            if fs::symlink_metadata(root.join(d)).is_err() {
                symlink(Path::new("usr").join(d), root.join(d))?;
            }
        }
        fs::create_dir_all(self.dir.join("nix"))?;
        fs::create_dir_all(&ssh)?;
        fs::create_dir_all(&kit)?;
        // Written only once: the host keeps its identity and what ferry changed across reboots.
        let etc = root.join("etc");
        let once = |rel: &str, text: &str, mode: u32| -> io::Result<()> {
            let p = etc.join(rel);
            if !p.exists() {
                fs::write(&p, text)?;
                fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
            }
            Ok(())
        };
        once("os-release", &fs::read_to_string("/usr/lib/os-release")?, 0o644)?;
        once(
            "passwd",
            "root:x:0:0:root:/root:/bin/sh\n\
             sshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
            0o644,
        )?;
        once("group", "root:x:0:\nnogroup:x:65534:\n", 0o644)?;
        // `*`: no password login, but not a locked account (sshd refuses `!` even for keys).
        once(
            "shadow",
            "root:*:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
            0o600,
        )?;
        once("gshadow", "root:*::\nnogroup:*::\n", 0o600)?;
        once("machine-id", &format!("{}\n", uuid()?.replace('-', "")), 0o444)?;
        once("hostname", &format!("{}\n", self.name), 0o644)?;
        once("hosts", &format!("127.0.0.1 localhost\n::1 localhost\n127.0.1.1 {}\n", self.name), 0o644)?;
        once("nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files\n", 0o644)?;
        // Root's Nix: no build users (nothing is built here), no substituters (no network).
        once("nix/nix.conf", "build-users-group =\nsandbox = false\nsubstituters =\n", 0o644)?;
        let units = etc.join("systemd/system");
        for unit in MASKED_UNITS {
            if fs::symlink_metadata(units.join(unit)).is_err() {
                symlink("/dev/null", units.join(unit))?;
            }
        }
        fs::write(
            units.join(SSHD_UNIT),
            format!(
                "[Unit]\n\
                 Description=OpenSSH server of the ferry systemd test host\n\
                 [Service]\n\
                 ExecStart=/usr/sbin/sshd -D -e -f {SSHD_CONFIG}\n\
                 RuntimeDirectory=sshd\n\
                 RuntimeDirectoryMode=0755\n\
                 Restart=always\n\
                 RestartSec=100ms\n\
                 [Install]\n\
                 WantedBy=multi-user.target\n"
            ),
        )?;
        let wants = units.join("multi-user.target.wants").join(SSHD_UNIT);
        if fs::symlink_metadata(&wants).is_err() {
            symlink(format!("/etc/systemd/system/{SSHD_UNIT}"), wants)?;
        }
        if self.nesting {
            // A host for containers: networkd configures the host side of their veths (from
            // the files in /etc/systemd/network) and machines.target starts the enabled
            // systemd-nspawn@ units at boot. networkd runs in *this machine's* network namespace
            // (the container shares it): it must only touch the links its .network files match,
            // never the machine's own routes or rules (its default removes "foreign" ones).
            fs::create_dir_all(etc.join("systemd/networkd.conf.d"))?;
            fs::write(
                etc.join("systemd/networkd.conf.d/ferry-testhost.conf"),
                "[Network]\nManageForeignRoutes=no\nManageForeignRoutingPolicyRules=no\n",
            )?;
            for (target, unit) in [
                ("multi-user.target.wants", "systemd-networkd.service"),
                ("sockets.target.wants", "systemd-networkd.socket"),
                ("multi-user.target.wants", "machines.target"),
            ] {
                fs::create_dir_all(units.join(target))?;
                let link = units.join(target).join(unit);
                if fs::symlink_metadata(&link).is_err() {
                    symlink(format!("/usr/lib/systemd/system/{unit}"), link)?;
                }
            }
        }
        // Keys: the host key inside the container, the client key beside it.
        let host_key = etc.join("ssh/ssh_host_ed25519_key");
        for key in [&host_key, &self.client_key] {
            if !key.exists() {
                keygen(key)?;
            }
        }
        self.host_key = public_key(&host_key)?;
        self.client_pubkey = public_key(&self.client_key)?;
        let authorized = etc.join("ssh/authorized_keys");
        if !fs::read_to_string(&authorized).unwrap_or_default().contains(&self.client_pubkey) {
            append_line(&authorized, &self.client_pubkey)?;
        }
        fs::write(
            root.join(SSHD_CONFIG.trim_start_matches('/')),
            sshd_config(
                &self.addr,
                self.port,
                Path::new("/etc/ssh/ssh_host_ed25519_key"),
                Path::new("/etc/ssh/authorized_keys"),
                SYSTEMD_HOST_PATH,
            ),
        )?;
        let pattern =
            if self.port == 22 { self.addr.clone() } else { format!("[{}]:{}", self.addr, self.port) };
        fs::write(ssh.join("known_hosts"), format!("{pattern} {}\n", self.host_key))?;
        fs::write(kit.join("id"), format!("{}\n", uuid()?))?;
        Ok(())
    }

    /// Start systemd-nspawn and wait until the system is up and sshd lets us in.
    fn boot(&mut self) -> io::Result<()> {
        self.cgroups = cgroup_dirs(&self.addr)?;
        let procs: Vec<std::ffi::CString> = self
            .cgroups
            .iter()
            .map(|d| std::ffi::CString::new(d.join("cgroup.procs").display().to_string()))
            .collect::<Result<_, _>>()
            .map_err(io::Error::other)?;
        let console = File::create(self.dir.join("console.log"))?;
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args(["--quiet", "--boot", "--register=no", "--keep-unit", "--console=read-only"])
            .args(["--link-journal=no", "--resolv-conf=off", "--timezone=off"])
            .arg(format!("--machine={}", self.name))
            .arg("--directory")
            .arg(self.root())
            .arg("--bind-ro=/usr")
            .arg(format!("--bind={}:/nix", self.dir.join("nix").display()))
            .arg(format!("--bind={}:/run/ferry-testhost", self.dir.join("kit").display()))
            .args(if self.nesting { NESTING_ARGS } else { &[] })
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console);
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls (setsid, open, write, close) between fork and
        // exec, on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // No signal from the test's terminal reaches the container.
                libc::setsid();
                for p in &procs {
                    let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // "0": the writing process itself.
                    let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                    if n != 1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let child = cmd.spawn()?;
        let nspawn_pid = child.id();
        self.nspawn = Some(child);
        let deadline = started + BOOT_TIMEOUT;
        // The container's PID 1: nspawn's child once it runs systemd.
        loop {
            if !self.running() {
                return Err(self.boot_error("systemd-nspawn exited"));
            }
            if let Some(pid) = children(nspawn_pid)
                .into_iter()
                .find(|p| fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "systemd"))
            {
                self.leader = pid;
                break;
            }
            if Instant::now() > deadline {
                return Err(self.boot_error("no systemd in the container"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let (Some(claim), Some(ns)) = (&self.claim, mnt_ns_of(self.leader)) {
            let token = fs::read_to_string(self.dir.join("kit/id"))?;
            claim.record_owner(token.trim(), &ns)?;
        }
        // systemd up (running, or degraded: some unit failed — see failed_units()).
        let mut state = String::new();
        while !matches!(state.as_str(), "running" | "degraded") {
            if !self.running() {
                return Err(self.boot_error("the container stopped while booting"));
            }
            if Instant::now() > deadline {
                return Err(self.boot_error(&format!("systemctl is-system-running: {state:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
            state =
                String::from_utf8_lossy(&self.exec("systemctl is-system-running").stdout).trim().to_string();
        }
        // sshd lets us in.
        loop {
            let o = self.ssh_command().arg("true").stderr(Stdio::piped()).output()?;
            if o.status.success() {
                break;
            }
            if Instant::now() > deadline {
                let status = self.exec(&format!("systemctl status --no-pager -l {SSHD_UNIT}"));
                return Err(self.boot_error(&format!(
                    "ssh to {}:{} failed: {}\n{}",
                    self.addr,
                    self.port,
                    String::from_utf8_lossy(&o.stderr),
                    String::from_utf8_lossy(&status.stdout)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.boot_time = started.elapsed();
        Ok(())
    }

    fn boot_error(&self, what: &str) -> io::Error {
        let log = fs::read_to_string(self.dir.join("console.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        io::Error::other(format!(
            "systemd host {}: {what}\n--- console.log (end)\n{}",
            self.name,
            lines[lines.len().saturating_sub(40)..].join("\n")
        ))
    }

    /// Remove the host's cgroups (bottom up; only empty ones can go, and they are once the
    /// container is down).
    fn remove_cgroups(&mut self) {
        for d in std::mem::take(&mut self.cgroups) {
            remove_cgroup_tree(&d);
        }
    }
}

impl Drop for SystemdHost {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The children of process `pid`.
fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// A fresh cgroup `ferry-systemd-host-ADDR` beside ours, in the cgroup v2 hierarchy and in
/// systemd's named v1 hierarchy (where mounted): where systemd-nspawn runs. Leftovers of a host
/// that was not stopped cleanly are removed first (if empty).
fn cgroup_dirs(addr: &str) -> io::Result<Vec<PathBuf>> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    let own = fs::read_to_string("/proc/self/cgroup")?;
    let mut dirs = vec![];
    for line in own.lines() {
        // "ID:CONTROLLERS:PATH"
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else { continue };
        let mount = mounts.lines().find_map(|m| {
            let w: Vec<&str> = m.split_whitespace().collect();
            let (point, fstype, opts) = (*w.get(1)?, *w.get(2)?, *w.get(3)?);
            let hit = match controllers {
                "" => fstype == "cgroup2",
                "name=systemd" => fstype == "cgroup" && opts.split(',').any(|o| o == "name=systemd"),
                _ => false,
            };
            (hit && opts.split(',').any(|o| o == "rw")).then(|| PathBuf::from(point))
        });
        let Some(mount) = mount else { continue };
        let dir = mount.join(path.trim_start_matches('/')).join(format!("{CGROUP_PREFIX}{addr}"));
        if dir.exists() {
            remove_cgroup_tree(&dir);
        }
        fs::create_dir(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("creating cgroup {}: {e}", dir.display())))?;
        dirs.push(dir);
    }
    Ok(dirs)
}

fn remove_cgroup_tree(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut stack = vec![dir.to_path_buf()];
        let mut all = vec![];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
            all.push(d);
        }
        // Deepest first.
        all.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in &all {
            let _ = fs::remove_dir(d);
        }
        // A cgroup empties a moment after its last process is reaped.
        if !dir.exists() || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}
