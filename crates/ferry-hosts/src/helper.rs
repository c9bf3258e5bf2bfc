//! ferry's helper scripts on hosts (`remote.sh` of `nixos.machine`, `nspawn.sh` of
//! `nspawn.container`): installed hash-named in `/run/ferry` (so an upgraded ferry installs its
//! own next to an older one's), then called as `sh PATH MODE ARGS…`, as root.
//!
//! Installing is part of the first call's round trip: the script text goes on stdin, and is
//! written only if the host lacks it, through an exclusively created temporary file renamed
//! into place, and only when `/run/ferry` is root's alone (a directory, not a symlink, owned by
//! root, writable by no one else).

use std::time::Duration;

use ferry_ssh::{command_line, quote};
use sha2::Digest;

use crate::error::HostError;
use crate::exec::{HostExec, Output, Script};

/// The exit status of the install step when `/run/ferry` is not safe or cannot be written.
pub const INSTALL_REFUSED: i32 = 3;

/// One helper script.
pub struct Helper {
    text: &'static str,
    path: String,
    /// How messages name it ("ferry's container helper").
    describe: &'static str,
}

impl Helper {
    /// `name` is the file's prefix in `/run/ferry` (`ferry`, `ferry-nspawn`).
    pub fn new(name: &str, text: &'static str, describe: &'static str) -> Helper {
        let hash = hex::encode(&sha2::Sha256::digest(text.as_bytes())[..6]);
        Helper { text, path: format!("/run/ferry/{name}-{hash}.sh"), describe }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn text(&self) -> &'static str {
        self.text
    }

    /// The script calling the helper: `sh PATH MODE ARGS…`.
    pub fn call(&self, mode: &str, args: &[&str]) -> String {
        let mut words = vec![mode];
        words.extend_from_slice(args);
        format!("sh {} {}", quote(&self.path), command_line(&words))
    }

    /// A script that installs the helper from stdin when the host lacks it, then runs `then`
    /// (stdin is consumed by the install step).
    pub fn install_then(&self, then: &str) -> String {
        let p = quote(&self.path);
        format!(
            "d=/run/ferry; umask 077; mkdir -p $d || exit 3; s=$(stat -c '%u %a' $d) || exit 3; \
             if [ -L $d ] || [ \"${{s%% *}}\" != 0 ] || [ $(( 0${{s#* }} & 022 )) != 0 ]; then \
             echo \"error: $d is a symlink, not owned by root or writable by others\" >&2; exit 3; fi; \
             if [ ! -f {p} ]; then t=$(mktemp $d/.upload.XXXXXXXXXX) || exit 3; \
             cat > \"$t\" && mv -f \"$t\" {p} || {{ rm -f \"$t\"; exit 3; }}; \
             else cat >/dev/null; fi; {then}"
        )
    }

    /// Install the helper (if missing) and run `MODE ARGS…`, in one round trip.
    pub fn install_and_run(
        &self,
        host: &dyn HostExec,
        what: &str,
        mode: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<String, HostError> {
        let call = self.call(mode, args);
        let script = self.install_then(&call);
        let s = Script::new(what, &script).stdin(Some(self.text.as_bytes())).timeout(timeout);
        self.ok(host, what, &call, host.exec(&s)?)
    }

    /// Install the helper if the host lacks it.
    pub fn install(&self, host: &dyn HostExec, what: &str) -> Result<(), HostError> {
        let script = self.install_then("true");
        let s = Script::new(what, &script).stdin(Some(self.text.as_bytes())).timeout(Duration::from_secs(60));
        self.ok(host, what, &script, host.exec(&s)?).map(|_| ())
    }

    /// Run `MODE ARGS…` as root: its output whatever its exit status.
    pub fn output(
        &self,
        host: &dyn HostExec,
        what: &str,
        mode: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, HostError> {
        host.exec(&Script::new(what, &self.call(mode, args)).stdin(stdin).timeout(timeout))
    }

    /// Run `MODE ARGS…` as root: its stdout, or [`HostError::Failed`] naming the helper.
    pub fn run(
        &self,
        host: &dyn HostExec,
        what: &str,
        mode: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<String, HostError> {
        let call = self.call(mode, args);
        let s = Script::new(what, &call).stdin(stdin).timeout(timeout);
        self.ok(host, what, &call, host.exec(&s)?)
    }

    /// The command attached to the caller's terminal running `MODE ARGS…` (`shell`, `run`).
    pub fn interactive(
        &self,
        host: &dyn HostExec,
        mode: &str,
        args: &[&str],
        tty: bool,
    ) -> Result<std::process::Command, HostError> {
        host.interactive(&self.call(mode, args), tty)
    }

    /// `out`'s stdout, or the failure of `call` (the helper's command line, for the hint).
    fn ok(&self, host: &dyn HostExec, what: &str, call: &str, out: Output) -> Result<String, HostError> {
        if out.success() {
            return Ok(out.stdout);
        }
        Err(HostError::Failed {
            what: what.to_string(),
            host: host.label().to_string(),
            exit: out.exit,
            output: format!("{}{}", out.stdout, out.stderr),
            command: call.to_string(),
            helper: Some(self.describe),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, FakeHost};

    const TEXT: &str = "echo \"mode=$1\"\n";

    #[test]
    fn helpers_are_hash_named_and_called_with_quoted_words() {
        let h = Helper::new("ferry-test", TEXT, "ferry's test helper");
        assert!(h.path().starts_with("/run/ferry/ferry-test-") && h.path().ends_with(".sh"), "{}", h.path());
        assert_eq!(Helper::new("ferry-test", TEXT, "").path(), h.path(), "same text, same name");
        assert_ne!(Helper::new("ferry-test", "other", "").path(), h.path(), "an upgrade installs its own");
        assert_eq!(h.call("write", &["/a b", "0600"]), format!("sh {} write '/a b' 0600", h.path()));
    }

    #[test]
    fn the_install_goes_with_the_first_call_and_carries_the_script() {
        let h = Helper::new("ferry-test", TEXT, "ferry's test helper");
        let fake = FakeHost::new("h");
        fake.reply("probe", 0, "ok=1\n");
        let out = h.install_and_run(&fake, "probing", "probe", &[], Duration::from_secs(5)).unwrap();
        assert_eq!(out, "ok=1\n");
        let calls = fake.calls();
        let [Call::Exec { script, stdin, privileged, .. }] = calls.as_slice() else { panic!("{calls:?}") };
        assert!(*privileged);
        assert_eq!(stdin.as_deref(), Some(TEXT.as_bytes()), "the script text on stdin");
        assert!(script.contains("[ -L $d ]") && script.contains("mktemp"), "{script}");
        assert!(script.ends_with(&h.call("probe", &[])), "{script}");
    }

    #[test]
    fn a_failed_call_is_a_typed_failure_naming_the_helper() {
        let h = Helper::new("ferry-test", TEXT, "ferry's test helper");
        let fake = FakeHost::new("h");
        fake.reply("claims", 1, "");
        let e =
            h.run(&fake, "listing address claims", "claims", &[], None, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.exit_code(), Some(1));
        let msg = e.to_string();
        assert!(msg
            .starts_with("listing address claims failed on h (exit 1): ferry's test helper printed nothing"));
        assert!(msg.ends_with(&format!("sh -x {} claims", h.path())), "{msg}");
    }

    /// The install step itself, run for real by `sh`: a `/run/ferry` stand-in that others can
    /// write to is refused with the install's exit status, and nothing is written there.
    #[test]
    fn an_unsafe_helper_directory_is_refused() {
        let dir = tempfile_dir();
        let d = dir.join("run-ferry");
        std::fs::create_dir(&d).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let h = Helper::new("ferry-test", TEXT, "");
        let script = h.install_then("echo ran").replacen("d=/run/ferry", &format!("d={}", d.display()), 1);
        let host = crate::HostConnection::open(&crate::HostSpec::Local, None).unwrap();
        let out = host.exec(&Script::new("install", &script).stdin(Some(TEXT.as_bytes()))).unwrap();
        assert_eq!(out.code(), INSTALL_REFUSED, "{out:?}");
        assert!(!out.stdout.contains("ran"));
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "nothing written");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ferry-hosts-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
