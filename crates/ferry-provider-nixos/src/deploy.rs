//! Deploying one machine (create/update). See the crate docs for the order of steps.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_hosts::{Copy, HostExec, Script};
use ferry_protocol::sdk::CallContext;
use ferry_protocol::{Object, Prior, ProviderError};
use ferry_ssh::{command_line, quote};
use serde_json::{json, Value};

use crate::remote::{err, generation, host_err, known_host_key, kv, Remote};
use crate::schema::{BuildOn, Goal, Machine, UploadAt};
use crate::{checks, keys, NixosProvider};

pub(crate) fn machine_outputs(m: &Machine, r: &Remote, system: &str, link: &str, boot: &str) -> Object {
    let mut o = Object::new();
    o.insert("host".into(), json!(m.host));
    o.insert("port".into(), json!(m.port));
    o.insert("user".into(), json!(m.user));
    o.insert("generation".into(), generation(link).map_or(Value::Null, |g| json!(g)));
    o.insert("systemPath".into(), json!(system));
    o.insert("hostKey".into(), json!(r.host_key()));
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
    let nix_args = p.options().nix_args();
    let c = r
        .host
        .copy_closure(&Copy {
            nix_args: &nix_args,
            paths,
            use_substitutes: m.substitute_on_destination,
            slots: Some(p.copy_slots()),
            progress: &|msg| cx.progress("copy", msg),
        })
        .map_err(host_err)?;
    Ok((c.paths, c.bytes))
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
    if r.ssh()?.learned_host_key() {
        cx.log(format!("trusting {}'s host key on first use: {}", m.host, r.host_key()));
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
        if let Err(e) = checks::run_all(&r.host, &m.health_checks, &|msg| cx.progress("check", msg)) {
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
    let targets = ferry_hosts::build::targets(context);
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
                let b = p.builder.build(targets, vec![m.system.clone()], &opts.nix_args()).map_err(err)?;
                report_builds(cx, b);
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
                ferry_hosts::build::targets(context)
            });
            words.extend(opts.nix_args());
            if m.substitute_on_destination {
                words.extend(["--option".into(), "substitute".into(), "true".into()]);
            }
            let script = command_line(&words);
            let start = std::time::Instant::now();
            r.host
                .run(&Script::new("building on the target", &script).timeout(Duration::from_secs(6 * 3600)))
                .map_err(host_err)?;
            report_builds(cx, ferry_hosts::build::Built { runs: 1, seconds: start.elapsed().as_secs_f64() });
        }
    }
    Ok(())
}

/// Builds this call ran, for the run's `--timings`.
pub(crate) fn report_builds(cx: &CallContext, b: ferry_hosts::build::Built) {
    if b.runs > 0 {
        cx.built(b.runs, b.seconds, format!("built in {:.1}s", b.seconds));
    }
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
    let args = [m.system.as_str(), &m.profile, m.goal.as_str(), &magic.to_string(), onfail, &token];
    let out = r
        .output("activation", "activate", &args, Duration::from_secs(m.activation_timeout))
        .map_err(host_err)?;
    let tail = ferry_ssh::tail_lines(&out.stderr, 15);
    match out.exit.code() {
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
        _ => {
            return Err(err(format!("activation on {} ended with {}:\n{tail}", m.host, out.exit)));
        }
    }
    if !tail.is_empty() {
        cx.log(tail);
    }
    let link = kv(&out.stdout, "new_link");
    if magic > 0 {
        confirm(r, m, &token, magic, cx)?;
    }
    Ok((kv(&out.stdout, "prev_current"), kv(&out.stdout, "prev_link"), link))
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
    let rm = r.host.remote_line(&format!("rm {}", quote(&canary)), true);
    let conn = r.ssh()?;
    let connect = magic.clamp(1, 10);
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(magic) {
        let remaining = Duration::from_secs(magic).saturating_sub(started.elapsed());
        match conn.output(
            conn.fresh_command(&rm, connect),
            "confirmation",
            None,
            remaining.max(Duration::from_secs(1)),
        ) {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) if o.status.code() == Some(255) => {
                last = conn.classify(&String::from_utf8_lossy(&o.stderr), "confirmation").to_string();
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
    let check = format!("cat /run/ferry/rolled-back-{token} 2>/dev/null || echo unknown");
    let check = Script::new("checking the rollback", &check).timeout(Duration::from_secs(15));
    let mut verdict = String::from("unknown");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match r.host.run(&check) {
            Ok(v) => {
                verdict = v.trim().to_string();
                if verdict != "unknown" {
                    break;
                }
            }
            Err(_) => {
                if let Ok(fresh) = Remote::open(m, Some(r.host_key())) {
                    if let Ok(v) = fresh.host.run(&check) {
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
