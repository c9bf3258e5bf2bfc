//! Deploying, reading and acting on one machine. See the crate docs for the order of steps.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_protocol::sdk::CallContext;
use ferry_protocol::{Object, Prior, ProviderError, ReadResult};
use ferry_ssh::{command_line, quote, Connection, Identity, SshError, Target};
use serde_json::{json, Value};
use sha2::Digest;

use crate::schema::{BuildOn, Goal, Machine, UploadAt};
use crate::{checks, keys, NixosProvider};

const SCRIPT: &str = include_str!("remote.sh");

pub(crate) fn err(msg: impl Into<String>) -> ProviderError {
    ProviderError::new(msg)
}

pub(crate) fn ssh_err(e: SshError) -> ProviderError {
    crate::transfer::ssh_error(e)
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

fn target(m: &Machine, host_key: Option<String>) -> Target {
    Target {
        host: m.host.clone(),
        port: m.port,
        user: m.user.clone(),
        identity: m.ssh_key.as_deref().map(Identity::from_input),
        host_key,
        options: m.ssh_options.clone(),
        connect_timeout: 10,
    }
}

/// The helper script on the host, reached through one connection.
pub(crate) struct Remote {
    pub(crate) conn: Connection,
    sudo: bool,
    path: String,
}

impl Remote {
    pub(crate) fn open(m: &Machine, host_key: Option<String>) -> Result<Remote, ProviderError> {
        Remote::connect(m, host_key).map_err(ssh_err)
    }

    fn connect(m: &Machine, host_key: Option<String>) -> Result<Remote, SshError> {
        let conn = Connection::open(&target(m, host_key))?;
        let hash = hex::encode(&sha2::Sha256::digest(SCRIPT.as_bytes())[..6]);
        Ok(Remote { conn, sudo: m.user != "root", path: format!("/run/ferry/ferry-{hash}.sh") })
    }

    /// `sh SCRIPT MODE ARGS…` as root, uploading the script first if the host lacks it.
    fn line(&self, mode: &str, args: &[&str]) -> String {
        let p = quote(&self.path);
        let mut words = vec![mode];
        words.extend_from_slice(args);
        let inner = format!("sh {p} {}", command_line(&words));
        self.privileged(&inner)
    }

    pub(crate) fn privileged(&self, inner: &str) -> String {
        if self.sudo {
            format!("sudo -n sh -c {}", quote(inner))
        } else {
            inner.to_string()
        }
    }

    pub(crate) fn run(
        &self,
        what: &str,
        mode: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<String, SshError> {
        self.conn.run(what, &self.line(mode, args), stdin, timeout)
    }

    /// Upload the script (when missing) and probe, in one round trip. `/run/ferry` must be
    /// root's alone (not a symlink, owned by root, writable by no one else) before anything in
    /// it is written or run; the upload goes through an exclusively created temporary file.
    pub(crate) fn probe(&self, profile: &str, keys: &[String]) -> Result<Probe, ProviderError> {
        let p = quote(&self.path);
        let mut words: Vec<&str> = vec!["probe", profile];
        words.extend(keys.iter().map(String::as_str));
        let inner = format!(
            "d=/run/ferry; umask 077; mkdir -p $d || exit 3; s=$(stat -c '%u %a' $d) || exit 3; \
             if [ -L $d ] || [ \"${{s%% *}}\" != 0 ] || [ $(( 0${{s#* }} & 022 )) != 0 ]; then \
             echo \"ferry: $d is a symlink, not owned by root or writable by others\" >&2; exit 3; fi; \
             if [ ! -f {p} ]; then t=$(mktemp $d/.upload.XXXXXXXXXX) || exit 3; \
             cat > \"$t\" && mv -f \"$t\" {p} || {{ rm -f \"$t\"; exit 3; }}; \
             else cat >/dev/null; fi; sh {p} {}",
            command_line(&words)
        );
        let out = self
            .conn
            .run(
                "probing the host",
                &self.privileged(&inner),
                Some(SCRIPT.as_bytes()),
                Duration::from_secs(60),
            )
            .map_err(ssh_err)?;
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
    keys: BTreeMap<String, String>,
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

fn machine_outputs(m: &Machine, r: &Remote, system: &str, link: &str, boot: &str) -> Object {
    let mut o = Object::new();
    o.insert("host".into(), json!(m.host));
    o.insert("port".into(), json!(m.port));
    o.insert("user".into(), json!(m.user));
    o.insert("generation".into(), generation(link).map_or(Value::Null, |g| json!(g)));
    o.insert("systemPath".into(), json!(system));
    o.insert("hostKey".into(), json!(r.conn.host_key()));
    o.insert("bootId".into(), json!(boot));
    o
}

/// Copy the closure of `paths` to the host: only the missing ones, through the shared
/// connection, in a copy slot. Returns (paths copied, bytes).
fn copy(
    p: &NixosProvider,
    r: &Remote,
    m: &Machine,
    paths: &[String],
    cx: &CallContext,
) -> Result<(usize, u64), ProviderError> {
    crate::transfer::copy_closure(
        &r.conn,
        r.sudo,
        &p.options().nix_args(),
        paths,
        m.substitute_on_destination,
        || p.copy_slots().acquire(),
        cx,
    )
}

fn random_token() -> String {
    use rand::Rng;
    let b: [u8; 8] = rand::thread_rng().gen();
    hex::encode(b)
}

/// create/update: bring the host to the declared system.
pub fn deploy(
    p: &NixosProvider,
    _name: &str,
    inputs: &Object,
    prior: Option<&Prior>,
    context: &BTreeMap<String, Vec<String>>,
    cx: &CallContext,
) -> Result<Object, ProviderError> {
    let m = Machine::parse(inputs)?;
    let opts = p.options().clone();
    cx.progress("connect", format!("ssh {}@{}", m.user, m.host));
    let r = Remote::open(&m, known_host_key(&m, prior))?;
    if r.conn.learned_host_key() {
        cx.log(format!("trusting {}'s host key on first use: {}", m.host, r.conn.host_key()));
    }
    let probe = r.probe(&m.profile, &[])?;

    // Never silently replace a system someone else deployed.
    let recorded = prior.and_then(|p| p.outputs.get("systemPath")).and_then(Value::as_str).unwrap_or("");
    if m.goal.sets_profile()
        && !probe.profile.is_empty()
        && probe.profile != m.system
        && probe.profile != recorded
        && !Path::new(&probe.profile).exists()
        && !m.replace_unknown_profiles
        && !opts.force
    {
        return Err(err(format!(
            "{} on {} points to {}, which ferry did not deploy (it is neither recorded in state nor in the local \
             store): someone else changed this machine. Re-run with --force (or set replaceUnknownProfiles = true) \
             to replace it",
            m.profile, m.host, probe.profile
        ))
        .code("unknownProfile"));
    }

    let up_to_date = match m.goal {
        Goal::Switch => probe.profile == m.system && probe.current == m.system,
        Goal::Boot => probe.profile == m.system,
        Goal::Test => probe.current == m.system,
        Goal::DryActivate => false,
    };
    let activate = !up_to_date || m.always_activate || opts.always_activate;
    let mut link = probe.link.clone();

    if activate {
        build_and_copy(p, &r, &m, context, cx)?;
    }

    // Keys: removed ones go, pre-activation ones before activation.
    keys::remove_gone(&r, &m, prior)?;
    keys::upload(&r, &m, Some(UploadAt::PreActivation), cx)?;

    let mut rollback_info: Option<(String, String, String)> = None;
    if activate {
        let info = switch(p, &r, &m, cx)?;
        link = info.2.clone();
        rollback_info = Some(info);
    }

    keys::upload(&r, &m, Some(UploadAt::PostActivation), cx)?;

    if !m.health_checks.is_empty() && matches!(m.goal, Goal::Switch | Goal::Test) {
        if let Err(e) = checks::run_all(&r.conn, &m.health_checks, &|msg| cx.progress("check", msg)) {
            if let (true, Some((cur, prev, new))) = (m.rollback.on_failure, &rollback_info) {
                cx.progress("rollback", "health check failed: rolling back");
                let rb = r.run(
                    "rollback",
                    "rollback",
                    &[&m.profile, m.goal.as_str(), cur, prev, new],
                    None,
                    Duration::from_secs(m.activation_timeout),
                );
                return Err(match rb {
                    Ok(_) => err(format!("{e}; rolled back to the previous system")),
                    Err(re) => err(format!("{e}; the rollback failed too: {re}")),
                }
                .code("healthCheckFailed"));
            }
            return Err(err(e).code("healthCheckFailed"));
        }
    }

    let system = if m.goal == Goal::DryActivate { probe.current.clone() } else { m.system.clone() };
    Ok(machine_outputs(&m, &r, &system, &link, &probe.boot))
}

/// Build the system (locally, coalesced, or on the target) and copy what the host lacks.
fn build_and_copy(
    p: &NixosProvider,
    r: &Remote,
    m: &Machine,
    context: &BTreeMap<String, Vec<String>>,
    cx: &CallContext,
) -> Result<(), ProviderError> {
    let opts = p.options();
    let targets = crate::build::targets(context);
    match m.build_on {
        BuildOn::Local => {
            if !Path::new(&m.system).exists() {
                if targets.is_empty() {
                    return Err(err(format!(
                        "{} does not exist in the local store and ferry has no derivation to build it",
                        m.system
                    )));
                }
                cx.progress("build", format!("building {}", short(&m.system)));
                p.builder.build(targets, vec![m.system.clone()], &opts.nix_args()).map_err(err)?;
            }
            let (n, bytes) = copy(p, r, m, std::slice::from_ref(&m.system), cx)?;
            if n > 0 {
                cx.log(format!("copied {n} paths ({:.1} MiB)", bytes as f64 / 1048576.0));
            }
        }
        BuildOn::Target => {
            let drvs: Vec<String> = context.keys().filter(|k| k.ends_with(".drv")).cloned().collect();
            if !drvs.is_empty() {
                copy(p, r, m, &drvs, cx)?;
            }
            cx.progress("build", format!("building {} on {}", short(&m.system), m.host));
            let mut words = vec!["nix-store".to_string(), "--realise".into()];
            words.extend(if drvs.is_empty() {
                vec![m.system.clone()]
            } else {
                crate::build::targets(context)
            });
            words.extend(opts.nix_args());
            if m.substitute_on_destination {
                words.extend(["--option".into(), "substitute".into(), "true".into()]);
            }
            r.conn
                .run(
                    "building on the target",
                    &r.privileged(&command_line(&words)),
                    None,
                    Duration::from_secs(6 * 3600),
                )
                .map_err(ssh_err)?;
        }
    }
    Ok(())
}

/// Set the profile and switch (the helper rolls back a failed switch), then confirm over a
/// fresh connection. Returns (previous running system, previous profile link, new link).
fn switch(
    p: &NixosProvider,
    r: &Remote,
    m: &Machine,
    cx: &CallContext,
) -> Result<(String, String, String), ProviderError> {
    let _slot = p.activate_slots().acquire();
    cx.progress("activate", format!("switch-to-configuration {}", m.goal.as_str()));
    let token = random_token();
    let magic = m.magic_timeout();
    let onfail = if m.rollback.on_failure { "1" } else { "0" };
    let line =
        r.line("activate", &[&m.system, &m.profile, m.goal.as_str(), &magic.to_string(), onfail, &token]);
    let out = r
        .conn
        .output(r.conn.command(&line), "activation", None, Duration::from_secs(m.activation_timeout))
        .map_err(ssh_err)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let tail = ferry_ssh::tail_lines(&stderr, 15);
    match out.status.code() {
        Some(0) => {}
        Some(10) => return Err(err(format!("cannot set the profile {} on {}:\n{tail}", m.profile, m.host))),
        Some(20) => {
            return Err(err(format!(
                "activation ({}) failed on {}; rolled back to the previous system. Last lines:\n{tail}",
                m.goal.as_str(),
                m.host
            ))
            .code("activationFailed"))
        }
        Some(21) => {
            return Err(err(format!(
                "activation ({}) failed on {} and so did the rollback: the host needs attention. Last lines:\n{tail}",
                m.goal.as_str(),
                m.host
            ))
            .code("activationFailed"))
        }
        Some(22) => {
            return Err(err(format!(
                "activation ({}) failed on {} (not rolled back: rollback.onFailure is off). Last lines:\n{tail}",
                m.goal.as_str(),
                m.host
            ))
            .code("activationFailed"))
        }
        Some(255) => return Err(ssh_err(r.conn.classify(&stderr, "activation"))),
        other => {
            return Err(err(format!("activation on {} ended with {other:?}:\n{tail}", m.host)));
        }
    }
    if !tail.is_empty() {
        cx.log(tail);
    }
    let link = kv(&stdout, "new_link");
    if magic > 0 {
        confirm(r, m, &token, magic, cx)?;
    }
    Ok((kv(&stdout, "prev_current"), kv(&stdout, "prev_link"), link))
}

fn short(path: &str) -> &str {
    path.strip_prefix("/nix/store/").map(|s| s.get(33..).unwrap_or(s)).unwrap_or(path)
}

/// Magic rollback: prove a fresh SSH login works by removing the canary. If that fails, the
/// host's watchdog rolls back; wait for it and report.
fn confirm(r: &Remote, m: &Machine, token: &str, magic: u64, cx: &CallContext) -> Result<(), ProviderError> {
    cx.progress("confirm", "confirming over a fresh SSH connection");
    let started = Instant::now();
    let canary = format!("/run/ferry/canary-{token}");
    let rm = r.privileged(&format!("rm {}", quote(&canary)));
    let connect = magic.clamp(1, 10);
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(magic) {
        let remaining = Duration::from_secs(magic).saturating_sub(started.elapsed());
        match r.conn.output(
            r.conn.fresh_command(&rm, connect),
            "confirmation",
            None,
            remaining.max(Duration::from_secs(1)),
        ) {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) if o.status.code() == Some(255) => {
                last = r.conn.classify(&String::from_utf8_lossy(&o.stderr), "confirmation").to_string();
            }
            Ok(o) => {
                // The canary is gone: the watchdog already fired.
                last = format!("the canary was already gone ({})", String::from_utf8_lossy(&o.stderr).trim());
                break;
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    cx.progress("rollback", "no confirmation: waiting for the host to roll itself back");
    // Give the watchdog its time, then look (over the old connection if it still works,
    // else a new one).
    std::thread::sleep(Duration::from_secs(magic).saturating_sub(started.elapsed()) + Duration::from_secs(2));
    let check = r.privileged(&format!("cat /run/ferry/rolled-back-{token} 2>/dev/null || echo unknown"));
    let mut verdict = String::from("unknown");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match r.conn.run("checking the rollback", &check, None, Duration::from_secs(15)) {
            Ok(v) => {
                verdict = v.trim().to_string();
                if verdict != "unknown" {
                    break;
                }
            }
            Err(_) => {
                if let Ok(fresh) = Remote::open(m, Some(r.conn.host_key().to_string())) {
                    if let Ok(v) =
                        fresh.conn.run("checking the rollback", &check, None, Duration::from_secs(15))
                    {
                        verdict = v.trim().to_string();
                        if verdict != "unknown" {
                            break;
                        }
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let what = match verdict.as_str() {
        "ok" => "the host rolled itself back to its previous system (magic rollback)",
        "failed" => "the host tried to roll back (magic rollback) and that failed: it needs attention",
        _ => "whether the host rolled back is unknown: check it",
    };
    Err(err(format!(
        "could not confirm the new system over a fresh SSH connection within {magic} s ({last}); {what}"
    ))
    .code("notConfirmed"))
}

/// read: the host's profile, running system and keys; drift against what ferry deployed.
pub fn read(
    p: &NixosProvider,
    _name: &str,
    inputs: &Object,
    outputs: Option<&Object>,
    _cx: &CallContext,
) -> Result<ReadResult, ProviderError> {
    let m = Machine::parse(inputs)?;
    let prior = outputs.map(|o| Prior { inputs: inputs.clone(), outputs: o.clone() });
    let r = match Remote::connect(&m, known_host_key(&m, prior.as_ref())) {
        Ok(r) => r,
        // Nothing is read from a host that is not verified. The mismatch is drift, so that a
        // deployment that pins the new key (`hostKey`, which wins over the recorded one) plans
        // the update that verifies it; without a new pin that update fails on the mismatch.
        Err(e @ SshError::HostKeyMismatch { .. }) => {
            return Ok(ReadResult {
                exists: true,
                outputs: outputs.cloned(),
                inputs: None,
                drift: vec![e.to_string()],
            })
        }
        Err(e) => return Err(ssh_err(e)),
    };
    let probe = r.probe(&m.profile, &keys::paths(&m))?;
    let Some(recorded) = outputs else {
        // Adoption after an interrupted create: only a finished deploy counts.
        let done = match m.goal {
            Goal::Switch => probe.profile == m.system && probe.current == m.system,
            Goal::Boot => probe.profile == m.system,
            Goal::Test => probe.current == m.system,
            Goal::DryActivate => true,
        };
        if !done {
            return Ok(ReadResult { exists: false, outputs: None, inputs: None, drift: vec![] });
        }
        let system = if m.goal == Goal::DryActivate { probe.current.clone() } else { m.system.clone() };
        return Ok(ReadResult {
            exists: true,
            outputs: Some(machine_outputs(&m, &r, &system, &probe.link, &probe.boot)),
            inputs: None,
            drift: vec![],
        });
    };
    let deployed = recorded.get("systemPath").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut drift = vec![];
    // Inputs as found on the host, so that drift plans an update that puts things back.
    let mut actual = Object::new();
    if m.goal.sets_profile() && probe.profile != deployed {
        drift.push(if probe.profile.is_empty() {
            format!("{} no longer exists on the host", m.profile)
        } else {
            format!(
                "{} points to {} (generation {}), ferry deployed {}",
                m.profile,
                probe.profile,
                generation(&probe.link).map_or("?".into(), |g| g.to_string()),
                deployed
            )
        });
        actual.insert("system".into(), json!(probe.profile));
    }
    if matches!(m.goal, Goal::Switch | Goal::Test) && probe.current != deployed {
        drift.push(format!(
            "the running system (/run/current-system) is {}, ferry deployed {}",
            if probe.current.is_empty() { "(none)" } else { &probe.current },
            deployed
        ));
        actual.insert("system".into(), json!(probe.current));
    }
    if let Some(keys) = keys::drift(&m, inputs, &probe.keys, &mut drift) {
        actual.insert("keys".into(), keys);
    }
    // alwaysActivate (input or --always-activate): every apply activates, so plan an update.
    if drift.is_empty() && (m.always_activate || p.options().always_activate) && m.goal != Goal::DryActivate {
        drift.push("re-activation requested (alwaysActivate)".into());
        actual.insert("alwaysActivate".into(), json!(!m.always_activate));
    }
    let mut out = recorded.clone();
    out.insert("hostKey".into(), json!(r.conn.host_key()));
    out.insert("bootId".into(), json!(probe.boot));
    let inputs = (!actual.is_empty()).then_some(actual);
    Ok(ReadResult { exists: true, outputs: Some(out), inputs, drift })
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
        assert_eq!(crate::build::targets(&c), vec!["/nix/store/x.drv!out", "/nix/store/y"]);
    }
}
