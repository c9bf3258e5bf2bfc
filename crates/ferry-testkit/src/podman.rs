//! podman for tests, with this machine's two workarounds (ferry itself just runs `podman`):
//!
//! * crun refuses "cgroups in hybrid mode" while the cgroup2 hierarchy is mounted at
//!   `/sys/fs/cgroup/unified` next to the v1 hierarchies: the wrapper runs podman in a private
//!   mount namespace without that mount (`/sys/fs/cgroup` made private first, so the unmount
//!   stays inside while `/run`, where podman keeps network namespaces, stays shared), and
//!   containers.conf says `cgroups = "disabled"`;
//! * crun cannot raise rlimits here: containers.conf sets `default_ulimits` at what it has.
//!
//! [`Podman::new`] writes the wrapper (`bin/podman`) and `containers.conf` into a temporary
//! directory; [`Podman::env`] puts both into a command's environment (the wrapper first on
//! `PATH`), so a `ferry` run with it drives podman through the wrapper.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Run, Sandbox};

pub struct Podman {
    dir: tempfile::TempDir,
}

/// The real podman, if installed.
pub fn real_podman() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("podman"))
        .find(|p| p.is_file() && !p.starts_with(std::env::temp_dir().join("ferry-podman-")))
}

impl Podman {
    /// Panics when podman is not installed (scripts/setup.sh installs it).
    pub fn new() -> Podman {
        let real = real_podman()
            .expect("podman is not installed (scripts/setup.sh installs it: apt-get install podman)");
        let dir = tempfile::Builder::new().prefix("ferry-podman-").tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        let wrapper = format!(
            r#"#!/bin/sh
# podman in a private mount namespace without the cgroup2 mount crun chokes on (see podman.rs).
exec unshare -m --propagation unchanged sh -c '
  mount --make-rprivate /sys/fs/cgroup 2>/dev/null
  umount /sys/fs/cgroup/unified 2>/dev/null
  exec "$0" "$@"' {real} "$@"
"#,
            real = real.display()
        );
        let w = bin.join("podman");
        std::fs::write(&w, wrapper).expect("write podman wrapper");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ncgroups = \"disabled\"\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1000:1000\"]\n",
        )
        .expect("write containers.conf");
        Podman { dir }
    }

    /// The directory holding the `podman` wrapper.
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    pub fn containers_conf(&self) -> PathBuf {
        self.dir.path().join("containers.conf")
    }

    /// `PATH` with the wrapper first.
    pub fn path_var(&self) -> OsString {
        let mut dirs = vec![self.bin_dir()];
        dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
        std::env::join_paths(dirs).expect("PATH")
    }

    /// Make `cmd` use the wrapper (first on `PATH`) and the containers.conf.
    pub fn env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env("PATH", self.path_var()).env("CONTAINERS_CONF", self.containers_conf())
    }

    /// `podman ARGS` through the wrapper.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.bin_dir().join("podman"));
        self.env(&mut c).args(args).stdin(Stdio::null());
        c
    }

    /// Run `podman ARGS` through the wrapper: exit code, stdout, stderr.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run podman"))
    }

    /// `podman ARGS`, panicking unless it succeeds; its stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code,
            0,
            "podman {} failed (exit {}):\n{}\n{}",
            args.join(" "),
            r.code,
            r.stdout,
            r.stderr
        );
        r.stdout.trim().to_string()
    }

    /// `ferry ARGS` in `sb` with this podman.
    pub fn ferry(&self, sb: &Sandbox, args: &[&str]) -> Run {
        let mut c = sb.command(args);
        self.env(&mut c);
        Run::from(c.output().expect("run ferry"))
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for Podman {
    fn default() -> Self {
        Podman::new()
    }
}
