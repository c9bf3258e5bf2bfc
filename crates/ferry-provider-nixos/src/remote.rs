//! The machine as a host: one SSH connection (through `ferry-hosts`, privileged commands by the
//! machine's `become`) and the helper `remote.sh` on it, plus what the helper's probe reports.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use ferry_hosts::{Helper, HostConnection, HostError, HostExec, Output};
use ferry_protocol::{Prior, ProviderError};
use ferry_ssh::Connection;
use serde_json::Value;

use crate::schema::Machine;

pub(crate) fn err(msg: impl Into<String>) -> ProviderError {
    ProviderError::new(msg)
}

pub(crate) fn host_err(e: HostError) -> ProviderError {
    ProviderError::from(e)
}

/// `remote.sh`, installed as `/run/ferry/ferry-HASH.sh`.
pub(crate) fn helper() -> &'static Helper {
    static HELPER: OnceLock<Helper> = OnceLock::new();
    HELPER.get_or_init(|| Helper::new("ferry", include_str!("remote.sh"), "ferry's machine helper"))
}

/// The host key to verify against: pinned in the inputs, else recorded for the same host.
pub(crate) fn known_host_key(m: &Machine, prior: Option<&Prior>) -> Option<String> {
    if m.host_key.is_some() {
        return m.host_key.clone();
    }
    let p = prior?;
    let same_host = p.inputs.get("host").and_then(Value::as_str) == Some(m.host.as_str())
        && p.inputs.get("port").and_then(Value::as_u64).unwrap_or(22) == u64::from(m.port);
    if !same_host {
        return None;
    }
    p.outputs.get("hostKey").and_then(Value::as_str).filter(|k| !k.is_empty()).map(str::to_string)
}

/// The helper script on the host, reached through one connection.
pub(crate) struct Remote {
    pub(crate) host: HostConnection,
}

impl Remote {
    pub(crate) fn open(m: &Machine, host_key: Option<String>) -> Result<Remote, ProviderError> {
        Remote::connect(m, host_key).map_err(host_err)
    }

    pub(crate) fn connect(m: &Machine, host_key: Option<String>) -> Result<Remote, HostError> {
        Ok(Remote { host: HostConnection::open(&m.host_spec(), host_key)? })
    }

    /// The SSH connection (a machine is always an SSH host).
    pub(crate) fn ssh(&self) -> Result<&Connection, ProviderError> {
        self.host.ssh().ok_or_else(|| err("internal: a machine without an SSH connection"))
    }

    pub(crate) fn host_key(&self) -> String {
        self.host.host_key().unwrap_or_default()
    }

    /// `sh SCRIPT MODE ARGS…` as root: its stdout, or the helper's failure.
    pub(crate) fn run(
        &self,
        what: &str,
        mode: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<String, HostError> {
        helper().run(&self.host, what, mode, args, stdin, timeout)
    }

    /// `sh SCRIPT MODE ARGS…` as root, whatever its exit status.
    pub(crate) fn output(
        &self,
        what: &str,
        mode: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Output, HostError> {
        helper().output(&self.host, what, mode, args, None, timeout)
    }

    /// Upload the script (when missing) and probe, in one round trip.
    pub(crate) fn probe(&self, profile: &str, keys: &[String]) -> Result<Probe, ProviderError> {
        let mut words: Vec<&str> = vec![profile];
        words.extend(keys.iter().map(String::as_str));
        let out = helper()
            .install_and_run(&self.host, "probing the host", "probe", &words, Duration::from_secs(60))
            .map_err(host_err)?;
        Ok(Probe::parse(&out, keys))
    }
}

#[derive(Debug, Default)]
pub(crate) struct Probe {
    pub(crate) current: String,
    pub(crate) profile: String,
    pub(crate) link: String,
    pub(crate) boot: String,
    /// key path -> "MODE USER GROUP" or "missing"
    pub(crate) keys: BTreeMap<String, String>,
}

impl Probe {
    /// `keys`: the key paths the probe was given; the helper names them by position, so any
    /// character in a path (a space) is fine.
    fn parse(out: &str, keys: &[String]) -> Probe {
        let mut p = Probe::default();
        for line in out.lines() {
            let Some((k, v)) = line.split_once('=') else { continue };
            match k {
                "current" => p.current = v.into(),
                "profile" => p.profile = v.into(),
                "link" => p.link = v.into(),
                "boot" => p.boot = v.into(),
                "key" => {
                    let Some((i, st)) = v.split_once(' ') else { continue };
                    if let Some(path) = i.parse::<usize>().ok().and_then(|i| keys.get(i)) {
                        p.keys.insert(path.clone(), st.into());
                    }
                }
                _ => {}
            }
        }
        p
    }
}

/// `system-12-link` → 12.
pub(crate) fn generation(link: &str) -> Option<u64> {
    let l = link.rsplit('/').next()?.strip_suffix("-link")?;
    l.rsplit('-').next()?.parse().ok()
}

pub(crate) fn kv(out: &str, key: &str) -> String {
    out.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The helper runs as root on every host: it must parse, and pass shellcheck where that
    /// is installed (`apt-get install shellcheck`).
    #[test]
    fn the_host_helper_is_clean_posix_sh() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/remote.sh");
        let o = std::process::Command::new("sh").args(["-n", path]).output().expect("sh");
        assert!(o.status.success(), "sh -n: {}", String::from_utf8_lossy(&o.stderr));
        match std::process::Command::new("shellcheck").args(["-s", "sh", path]).output() {
            Ok(o) => assert!(o.status.success(), "shellcheck:\n{}", String::from_utf8_lossy(&o.stdout)),
            Err(_) => eprintln!("shellcheck is not installed: skipped"),
        }
    }

    #[test]
    fn generation_numbers_come_from_profile_links() {
        assert_eq!(generation("system-12-link"), Some(12));
        assert_eq!(generation("/nix/var/nix/profiles/system-3-link"), Some(3));
        assert_eq!(generation("processes-web-1-link"), Some(1));
        assert_eq!(generation(""), None);
    }

    #[test]
    fn probe_output_is_parsed() {
        let keys = ["/run/keys/k".to_string(), "/run/my app/my key".to_string(), "/run/keys/l".to_string()];
        let p = Probe::parse(
            "current=/nix/store/a\nprofile=/nix/store/b\nlink=system-2-link\nboot=x\nkey=0 600 root root\nkey=1 missing\nkey=2 symlink\nkey=7 missing\n",
            &keys,
        );
        assert_eq!(p.current, "/nix/store/a");
        assert_eq!(p.profile, "/nix/store/b");
        assert_eq!(p.keys["/run/keys/k"], "600 root root");
        assert_eq!(p.keys["/run/my app/my key"], "missing");
        assert_eq!(p.keys["/run/keys/l"], "symlink");
        assert_eq!(p.keys.len(), 3);
    }

    #[test]
    fn build_targets_name_outputs() {
        let mut c = BTreeMap::new();
        c.insert("/nix/store/x.drv".to_string(), vec!["out".to_string()]);
        c.insert("/nix/store/y".to_string(), vec![]);
        assert_eq!(ferry_hosts::build::targets(&c), vec!["/nix/store/x.drv!out", "/nix/store/y"]);
    }
}
