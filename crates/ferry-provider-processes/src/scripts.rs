//! The shell scripts the provider runs on a set's host, kept in `sh/*.sh` (checked by
//! `sh -n` and shellcheck: `scripts/lint-shell.sh`): function libraries, included here. An
//! operation is one script: `common.sh`, the manager's library, then calls of its functions
//! with every argument quoted — no shell code is put together from strings.

use crate::host::q;

pub const COMMON: &str = include_str!("sh/common.sh");
pub const SUPERVISORD: &str = include_str!("sh/supervisord.sh");
pub const S6: &str = include_str!("sh/s6.sh");
pub const SYSVINIT: &str = include_str!("sh/sysvinit.sh");
pub const SYSTEMD: &str = include_str!("sh/systemd.sh");
pub const USERS: &str = include_str!("sh/users.sh");

/// One operation's script.
pub struct Sh {
    text: String,
}

impl Sh {
    /// `common.sh` and `libs`, no calls yet.
    pub fn new(libs: &[&str]) -> Sh {
        let mut text = String::from(COMMON);
        for l in libs {
            text.push('\n');
            text.push_str(l);
        }
        text.push('\n');
        Sh { text }
    }

    /// Call `func` with `args`, each one word.
    pub fn call<S: AsRef<str>>(&mut self, func: &str, args: &[S]) -> &mut Sh {
        self.text.push_str(func);
        for a in args {
            self.text.push(' ');
            self.text.push_str(&q(a.as_ref()));
        }
        self.text.push('\n');
        self
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

/// One call of a `common.sh` function: the script.
pub fn common<S: AsRef<str>>(func: &str, args: &[S]) -> String {
    let mut s = Sh::new(&[]);
    s.call(func, args);
    s.text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run a script locally, in a temporary directory.
    fn run(script: &str) -> (bool, String) {
        let o = std::process::Command::new("sh").arg("-c").arg(script).output().expect("sh");
        (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned())
    }

    #[test]
    fn every_script_is_clean_posix_sh() {
        for (name, text) in [
            ("common", COMMON),
            ("supervisord", SUPERVISORD),
            ("s6", S6),
            ("sysvinit", SYSVINIT),
            ("systemd", SYSTEMD),
            ("users", USERS),
        ] {
            let o = std::process::Command::new("sh").args(["-n", "-c", text]).output().expect("sh");
            assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        }
    }

    #[test]
    fn arguments_stay_words_and_generations_work_without_nix() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let active = format!("{d}/act ive");
        let mut s = Sh::new(&[]);
        s.call("set_active", &[active.as_str(), "web", "/nix/store/a b", "it's", "/nix/store/c"]);
        s.call("list_active", &[active.as_str()]);
        let (ok, out) = run(s.text());
        assert!(ok);
        assert_eq!(out, "it's /nix/store/c\nweb /nix/store/a b\n");
        // profile_set without nix-env on PATH: the links nix-env would make.
        let p = format!("{d}/profiles/processes-web");
        let (s1, s2) = (format!("{d}/s1"), format!("{d}/s2"));
        std::fs::create_dir_all(&s1).unwrap();
        std::fs::create_dir_all(&s2).unwrap();
        let no_nix =
            |script: String| run(&format!("PATH=/usr/bin:/bin; command() {{ return 1; }}\n{script}"));
        assert!(no_nix(common("profile_set", &[&p, &s1])).0);
        assert!(no_nix(common("profile_set", &[&p, &s2])).0);
        let (_, out) = run(&common("profile_read", &[&p]));
        assert_eq!(out, format!("processes-web-2-link\n{s2}\n"));
        let (_, gens) = run(&common("profile_generations", &[&p]));
        assert_eq!(gens, format!("{p}-1-link {s1}\n{p}-2-link {s2}\n"));
        assert!(no_nix(common("profile_switch", &[&p, "1"])).0);
        assert_eq!(run(&common("profile_read", &[&p])).1, format!("processes-web-1-link\n{s1}\n"));
        assert!(run(&common("profile_remove", &[&p])).0);
        assert_eq!(std::fs::read_dir(format!("{d}/profiles")).unwrap().count(), 0);
    }

    /// `mv -T`: a leftover directory where the service directory goes is never entered.
    #[test]
    fn s6_service_directories_move_into_place_whole() {
        let dir = tempfile::tempdir().unwrap();
        let scan = dir.path().join("service").display().to_string();
        let config = dir.path().join("cfg");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(config.join("run"), "#!/bin/sh\n").unwrap();
        let config = config.display().to_string();
        let mut s = Sh::new(&[S6]);
        s.call("s6_create", &[&scan, "web", &config]);
        assert!(run(s.text()).0);
        assert_eq!(
            std::fs::read_link(format!("{scan}/web/run")).unwrap().display().to_string(),
            format!("{config}/run")
        );
        // A stale, non-empty directory in the way: the move fails instead of nesting into it.
        std::fs::create_dir_all(format!("{scan}/api/leftover")).unwrap();
        let mut s = Sh::new(&[S6]);
        s.call("s6_create", &[&scan, "api", &config]);
        assert!(!run(s.text()).0);
        assert!(!std::path::Path::new(&format!("{scan}/api/.api.new")).exists(), "not moved inside");
        // s6_drop (no s6-supervise running) removes it.
        let mut s = Sh::new(&[S6]);
        s.call("s6_drop", &[&scan, "web"]);
        assert!(run(s.text()).0);
        assert!(!std::path::Path::new(&format!("{scan}/web")).exists());
    }
}
