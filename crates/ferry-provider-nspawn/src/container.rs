//! Deploying, reading, deleting and acting on one container. Used by the provider (declared
//! containers) and by `ferry container …` (imperative ones) alike.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use ferry_protocol::sdk::{diff_inputs, CallContext};
use ferry_protocol::{Change, Object, PlanAction, PlanResult, Prior, ProviderError, ReadResult};
use serde_json::{json, Value};
use sha2::Digest;

use crate::addresses::resolve;
use crate::host::Host;
use crate::net::Cidr;
use crate::schema::{AddrSpec, Container, HostSpec, Mode, Strategy};
use crate::unit::{self, Addr, Resolved};

/// Who owns a container on its host (recorded there, in `/var/lib/ferry/nspawn/NAME/owner`).
pub const OWNER_DEPLOYMENT: &str = "deployment";
pub const OWNER_IMPERATIVE: &str = "imperative";

fn err(msg: impl Into<String>) -> ProviderError {
    ProviderError::new(msg)
}

/// What the helper's `probe` reports.
#[derive(Debug, Default, Clone)]
pub struct Probe {
    pub runtime: String,
    pub exists: bool,
    pub owner: String,
    pub leader: Option<u64>,
    pub current: String,
    pub profile: String,
    pub link: String,
    pub unit: String,
    pub started: String,
    pub address: String,
    pub address6: String,
    pub nspawn_sha256: String,
    pub has_nspawn: bool,
    pub has_nft: bool,
    pub has_ip: bool,
    /// A create of this container started and did not complete (the `incomplete` marker).
    pub incomplete: bool,
    /// `/var/lib/machines/NAME` exists (a new container's, or data kept by `keepState`).
    pub has_root: bool,
    /// `/var/lib/ferry/nspawn/NAME` exists.
    pub has_files: bool,
}

impl Probe {
    pub fn parse(out: &str) -> Probe {
        let mut p = Probe::default();
        for line in out.lines() {
            let Some((k, v)) = line.split_once('=') else { continue };
            let v = v.trim().to_string();
            match k {
                "runtime" => p.runtime = v,
                "exists" => p.exists = v == "1",
                "owner" => p.owner = v,
                "leader" => p.leader = v.parse().ok(),
                "current" => p.current = v,
                "profile" => p.profile = v,
                "link" => p.link = v,
                "unit" => p.unit = v,
                "started" => p.started = v,
                "address" => p.address = v,
                "address6" => p.address6 = v,
                "nspawnSha256" => p.nspawn_sha256 = v,
                "nspawn" => p.has_nspawn = v == "1",
                "nft" => p.has_nft = v == "1",
                "ip" => p.has_ip = v == "1",
                "incomplete" => p.incomplete = v == "1",
                "root" => p.has_root = v == "1",
                "files" => p.has_files = v == "1",
                _ => {}
            }
        }
        p
    }

    pub fn running(&self) -> bool {
        self.leader.is_some()
    }
}

pub fn probe(h: &Host, name: &str) -> Result<Probe, ProviderError> {
    Ok(Probe::parse(&h.run("probing the container", "probe", &[name], None, 60)?))
}

/// `system-12-link` → 12.
pub fn generation(link: &str) -> Option<u64> {
    let l = link.rsplit('/').next()?.strip_suffix("-link")?;
    l.rsplit('-').next()?.parse().ok()
}

/// The host key recorded for the same SSH host in earlier outputs.
pub fn recorded_host_key(c: &Container, prior: Option<&Prior>) -> Option<String> {
    let HostSpec::Ssh(_) = &c.host else { return None };
    let p = prior?;
    let same = Container::parse("x", &p.inputs).ok().is_some_and(|old| old.host.label() == c.host.label());
    if !same {
        return None;
    }
    p.outputs.get("hostKey").and_then(Value::as_str).filter(|k| !k.is_empty()).map(str::to_string)
}

/// The sha256 of the `.nspawn` file as ferry writes it (its drift check).
pub fn nspawn_sha256(files: &[unit::File]) -> String {
    hex::encode(sha2::Sha256::digest(files[0].content.as_bytes()))
}

/// Everything create/update needs besides the container: builds, copies, options.
pub struct Deps<'a> {
    pub builder: &'a ferry_hosts::build::Builder,
    pub nix_args: Vec<String>,
    pub context: &'a BTreeMap<String, Vec<String>>,
    pub owner: &'a str,
    /// The run's copy-jobs limit.
    pub copy_slots: &'a ferry_hosts::Slots,
}

/// create/update: bring the container on its host to the declared state.
pub fn deploy(
    d: &Deps,
    c: &Container,
    prior: Option<&Prior>,
    cx: &CallContext,
) -> Result<Object, ProviderError> {
    cx.progress("connect", format!("container {} on {}", c.name, c.host.label()));
    let h = Host::open(&c.host, recorded_host_key(c, prior))?;
    let result = deploy_on(&h, d, c, prior, cx);
    h.close();
    result
}

fn deploy_on(
    h: &Host,
    d: &Deps,
    c: &Container,
    prior: Option<&Prior>,
    cx: &CallContext,
) -> Result<Object, ProviderError> {
    let pr = probe(h, &c.name)?;
    if !pr.has_nspawn {
        return Err(err(format!(
            "systemd-nspawn is not installed on {} (Debian: apt-get install systemd-container; NixOS has it)",
            h.label
        )));
    }
    if pr.exists && !pr.owner.is_empty() && pr.owner != d.owner {
        return Err(err(format!(
            "a container named `{}` already exists on {} ({}): pick another name, or remove it first{}",
            c.name,
            h.label,
            if pr.owner == OWNER_IMPERATIVE {
                "created with `ferry container create`"
            } else {
                "owned by a deployment"
            },
            if pr.owner == OWNER_IMPERATIVE {
                format!(" with `ferry container destroy {}`", c.name)
            } else {
                String::new()
            }
        ))
        .code("conflict"));
    }
    if c.network.mode != Mode::Host && !pr.has_ip {
        return Err(err(format!("{} lacks `ip` (iproute2), needed for the container's network", h.label)));
    }
    if !c.forward_ports.is_empty() && pr.runtime == "direct" && !pr.has_nft {
        return Err(err(format!(
            "forwardPorts needs nftables (`nft`) on {} (Debian: apt-get install nftables)",
            h.label
        )));
    }

    // A container that did not exist before this call is removed again when its create
    // fails: no address claim or file of it stays behind for state to know nothing of.
    let fresh = prior.is_none() && !pr.exists && pr.owner.is_empty();
    build(d, c, cx).and_then(|_| place(h, d, c, prior, &pr, cx)).map_err(|e| {
        if fresh {
            crate::leftovers::undo_create(h, c, &pr, e, cx)
        } else {
            e
        }
    })
}

/// Build the system locally if the store lacks it (coalesced with the run's other builds).
fn build(d: &Deps, c: &Container, cx: &CallContext) -> Result<(), ProviderError> {
    if !Path::new(&c.system).exists() {
        let targets = ferry_hosts::build::targets(d.context);
        if targets.is_empty() {
            return Err(err(format!(
                "{} does not exist in the local store and ferry has no derivation to build it",
                c.system
            )));
        }
        cx.progress("build", format!("building {}", c.system));
        let b = d.builder.build(targets, vec![c.system.clone()], &d.nix_args).map_err(err)?;
        if b.runs > 0 {
            cx.built(b.runs, b.seconds, format!("built in {:.1}s", b.seconds));
        }
    }
    Ok(())
}

/// On a host that passed the probe's checks, with the system built: copy it, prepare the
/// container, assign addresses, write its files, set the profile and activate.
pub(crate) fn place(
    h: &Host,
    d: &Deps,
    c: &Container,
    prior: Option<&Prior>,
    pr: &Probe,
    cx: &CallContext,
) -> Result<Object, ProviderError> {
    let copied = h.copy_closure(&d.nix_args, std::slice::from_ref(&c.system), d.copy_slots, &|m| {
        cx.progress("copy", m)
    })?;
    if copied.paths > 0 {
        cx.log(format!(
            "copied {} paths ({:.1} MiB) to {}",
            copied.paths,
            copied.bytes as f64 / 1048576.0,
            h.label
        ));
    }

    h.run("preparing the container", "prepare", &[&c.name, &c.system, d.owner], None, 60)?;
    let net = resolve(h, c, prior.map(|p| &p.outputs), pr)?;
    let files = unit::files(c, &net);
    let digest = unit::digest(&files, c);
    cx.progress("unit", format!("writing {}", unit::nspawn_path(&c.name)));
    for f in &files {
        h.run("writing a file", "write", &[&f.path, f.mode], Some(f.content.as_bytes()), 30)?;
    }
    let sd = unit::state_dir(&c.name);
    // Credentials: 0600 files, never in the unit, never logged; removed ones deleted.
    if let Some(p) = prior {
        let old: Vec<String> = p
            .inputs
            .get("credentials")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(id, _)| !c.credentials.contains_key(*id))
            .map(|(id, _)| format!("{sd}/credentials/{id}"))
            .collect();
        if !old.is_empty() {
            let args: Vec<&str> = old.iter().map(String::as_str).collect();
            h.run("removing credentials", "remove-files", &args, None, 30)?;
        }
    }
    for (id, v) in &c.credentials {
        h.run(
            "writing a credential",
            "write",
            &[&format!("{sd}/credentials/{id}"), "0600"],
            Some(v.as_bytes()),
            30,
        )?;
    }
    let a4 = net.v4.as_ref().map(|a| a.container.addr.to_string()).unwrap_or_default();
    let a6 = net.v6.as_ref().map(|a| a.container.addr.to_string()).unwrap_or_default();
    for (f, v) in [("address", &a4), ("address6", &a6), ("unit.digest", &digest)] {
        h.run("writing a file", "write", &[&format!("{sd}/{f}"), "0644"], Some(v.as_bytes()), 30)?;
    }
    h.run("enabling the container", "enable", &[&c.name, if c.auto_start { "yes" } else { "no" }], None, 30)?;

    // Profile and activation.
    let out = h.run("setting the profile", "set-profile", &[&c.name, &c.system], None, 120)?;
    let link = kv(&out, "link");
    activate(h, c, pr, &digest, cx)?;
    // The deploy completed: a create's `incomplete` mark goes (in the same call as the probe).
    let out = h.run("probing the container", "probe", &[&c.name, "complete"], None, 60)?;
    let after = Probe::parse(&out);
    Ok(outputs(c, h, &after, &link, &a4, &a6, &nspawn_sha256(&files)))
}

/// Start, reload, restart or leave the container, by `activation.strategy` and what changed.
fn activate(
    h: &Host,
    c: &Container,
    pr: &Probe,
    digest: &str,
    cx: &CallContext,
) -> Result<(), ProviderError> {
    let system_changed = pr.current != c.system;
    let unit_changed = pr.started != digest;
    let timeout = c.stop_timeout.to_string();
    let wait = "60";
    if pr.running() {
        let what = match c.strategy {
            Strategy::None => None,
            Strategy::Reload => system_changed.then_some("reload"),
            Strategy::Restart => (system_changed || unit_changed).then_some("restart"),
            Strategy::Dynamic if unit_changed => Some("restart"),
            Strategy::Dynamic => system_changed.then_some("reload"),
        };
        match what {
            Some("reload") => {
                cx.progress("activate", "reloading (switch-to-configuration test inside)");
                crate::reload::reload(h, &c.name, &pr.link)?;
            }
            Some(_) => {
                cx.progress("activate", "restarting");
                h.run("stopping the container", "stop", &[&c.name, &timeout], None, c.stop_timeout + 30)?;
                h.run("starting the container", "start", &[&c.name, digest, wait], None, 120)?;
            }
            None => {}
        }
    } else if c.auto_start {
        cx.progress("activate", "starting");
        h.run("starting the container", "start", &[&c.name, digest, wait], None, 120)?;
    }
    Ok(())
}

fn kv(out: &str, key: &str) -> String {
    out.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_default()
        .to_string()
}

fn outputs(c: &Container, h: &Host, pr: &Probe, link: &str, a4: &str, a6: &str, unit_sha: &str) -> Object {
    let opt = |s: &str| if s.is_empty() { Value::Null } else { json!(s) };
    let mut o = Object::new();
    o.insert("name".into(), json!(c.name));
    o.insert("host".into(), json!(h.label));
    o.insert("address".into(), opt(a4));
    o.insert("address6".into(), opt(a6));
    o.insert("leaderPid".into(), pr.leader.map_or(Value::Null, |l| json!(l)));
    o.insert("generation".into(), generation(link).map_or(Value::Null, |g| json!(g)));
    o.insert("systemPath".into(), json!(c.system));
    o.insert("hostKey".into(), h.host_key().map_or(Value::Null, |k| json!(k)));
    o.insert("unitSha256".into(), json!(unit_sha));
    o
}

/// The declared `.nspawn` file's sha256 for recorded inputs and outputs (no host access).
fn expected_unit_sha(c: &Container, outputs: &Object) -> Option<String> {
    let addr = |k: &str, spec: &Option<AddrSpec>| -> Option<Addr> {
        let a: IpAddr = outputs.get(k)?.as_str()?.parse().ok()?;
        Some(match spec.as_ref()? {
            AddrSpec::Static { host, address } => Addr { host: *host, container: *address },
            AddrSpec::Pool { pool, .. } => Addr {
                host: Some(Cidr { addr: pool.first_host(), prefix: pool.prefix }),
                container: Cidr { addr: a, prefix: pool.prefix },
            },
        })
    };
    let r = Resolved::new(c, addr("address", &c.network.v4), addr("address6", &c.network.v6));
    Some(nspawn_sha256(&unit::files(c, &r)))
}

pub fn read(
    c: &Container,
    inputs: &Object,
    outputs: Option<&Object>,
    owner: &str,
) -> Result<ReadResult, ProviderError> {
    let prior = outputs.map(|o| Prior { inputs: inputs.clone(), outputs: o.clone() });
    let h = Host::open(&c.host, recorded_host_key(c, prior.as_ref()))?;
    let pr = probe(&h, &c.name);
    h.close();
    let pr = pr?;
    let mine = pr.exists && pr.owner == owner;
    let Some(recorded) = outputs else {
        return Ok(crate::leftovers::read_unrecorded(c, &h, &pr, mine));
    };
    if !mine {
        return Ok(ReadResult { exists: false, outputs: None, inputs: None, drift: vec![] });
    }
    let mut drift = vec![];
    let mut actual = Object::new();
    let deployed = recorded.get("systemPath").and_then(Value::as_str).unwrap_or_default();
    if pr.profile != deployed {
        drift.push(format!(
            "the container's profile points to {}, ferry deployed {deployed}",
            or_none(&pr.profile)
        ));
        actual.insert("system".into(), json!(pr.profile));
    }
    if c.auto_start && !pr.running() {
        drift.push("the container is not running".into());
        actual.insert("autoStart".into(), json!(false));
    } else if pr.running() && pr.current != deployed && c.strategy != Strategy::None {
        drift.push(format!("the container runs {}, ferry deployed {deployed}", or_none(&pr.current)));
        actual.insert("system".into(), json!(pr.current));
    }
    let mut o = recorded.clone();
    o.insert("leaderPid".into(), pr.leader.map_or(Value::Null, |l| json!(l)));
    o.insert("generation".into(), generation(&pr.link).map_or(Value::Null, |g| json!(g)));
    if let Some(want) = expected_unit_sha(c, recorded) {
        if !pr.nspawn_sha256.is_empty() && pr.nspawn_sha256 != want {
            drift.push(format!("{} was changed on the host", unit::nspawn_path(&c.name)));
            o.insert("unitSha256".into(), json!("changed on the host"));
        }
    }
    Ok(ReadResult { exists: true, outputs: Some(o), inputs: (!actual.is_empty()).then_some(actual), drift })
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "(nothing)"
    } else {
        s
    }
}

pub(crate) fn outputs_from_probe(c: &Container, h: &Host, pr: &Probe) -> Object {
    let files_sha = expected_unit_sha(
        c,
        &json!({"address": pr.address, "address6": pr.address6}).as_object().cloned().unwrap_or_default(),
    )
    .unwrap_or_default();
    outputs(c, h, pr, &pr.link, &pr.address, &pr.address6, &files_sha)
}

/// plan: validate (bad input fails the plan, so nothing changes), diff, and force replacement
/// when the name or host changes; a unit changed on the host plans an update.
pub fn plan(resource: &str, inputs: &Object, prior: Option<&Prior>) -> Result<PlanResult, ProviderError> {
    let c = Container::parse(resource, inputs)?;
    let Some(prior) = prior else {
        return Ok(PlanResult {
            action: PlanAction::Create,
            changes: vec![],
            reason: None,
            create_before_destroy: false,
        });
    };
    let sensitive = vec!["credentials".to_string(), "sshKey".to_string()];
    let mut changes = diff_inputs(&prior.inputs, inputs, &sensitive);
    let old = Container::parse(resource, &prior.inputs).ok();
    let mut action = if changes.is_empty() { PlanAction::Noop } else { PlanAction::Update };
    let mut reason = None;
    if let Some(old) = &old {
        let moved = old.host.label() != c.host.label();
        let renamed = old.name != c.name;
        if moved || renamed {
            action = PlanAction::Replace;
            for ch in &mut changes {
                if ch.path == "name" || ch.path.starts_with("host") {
                    ch.forces_replace = true;
                }
            }
            reason = Some(if moved {
                "the container moves to another host: create it there, then remove the old one".into()
            } else {
                "the container is renamed: remove the old one, then create the new one".into()
            });
        }
    }
    if action == PlanAction::Noop
        && prior.outputs.get("unitSha256").and_then(Value::as_str) == Some("changed on the host")
    {
        action = PlanAction::Update;
        changes.push(Change {
            path: "unit".into(),
            before: Some(json!("changed on the host")),
            after: Some(json!("as declared")),
            forces_replace: false,
        });
    }
    // On another host the new container cannot collide with the old one (a renamed one on the
    // same host could: its addresses and ports are still claimed), so it is created first.
    let create_before_destroy =
        action == PlanAction::Replace && old.as_ref().is_some_and(|o| o.host.label() != c.host.label());
    Ok(PlanResult { action, changes, reason, create_before_destroy })
}

/// delete: stop the container and remove its unit, network files and profile; its root
/// directory (and its addresses) stay unless `keepState = false` / `purge`.
pub fn destroy(
    c: &Container,
    prior: Option<&Prior>,
    purge: bool,
    cx: &CallContext,
) -> Result<(), ProviderError> {
    let h = Host::open(&c.host, recorded_host_key(c, prior))?;
    let r = (|| {
        cx.progress("stop", format!("stopping {}", c.name));
        h.run(
            "stopping the container",
            "stop",
            &[&c.name, &c.stop_timeout.to_string()],
            None,
            c.stop_timeout + 30,
        )?;
        h.run("disabling the container", "enable", &[&c.name, "no"], None, 30)?;
        h.run("removing the container", "destroy", &[&c.name, if purge { "yes" } else { "no" }], None, 120)?;
        Ok(())
    })();
    h.close();
    r
}

/// Operational actions: start, stop, restart, status, generations.
pub fn action(
    c: &Container,
    prior: Option<&Prior>,
    action: &str,
) -> Result<(Option<Object>, String), ProviderError> {
    let h = Host::open(&c.host, recorded_host_key(c, prior))?;
    let r = (|| {
        let timeout = c.stop_timeout.to_string();
        let digest_of = |h: &Host| -> Result<String, ProviderError> { Ok(probe(h, &c.name)?.unit) };
        let msg = match action {
            "start" => {
                let d = digest_of(&h)?;
                h.run("starting the container", "start", &[&c.name, &d, "60"], None, 120)?;
                format!("{} started", c.name)
            }
            "stop" => {
                h.run("stopping the container", "stop", &[&c.name, &timeout], None, c.stop_timeout + 30)?;
                format!("{} stopped", c.name)
            }
            "restart" => {
                let d = digest_of(&h)?;
                h.run("stopping the container", "stop", &[&c.name, &timeout], None, c.stop_timeout + 30)?;
                h.run("starting the container", "start", &[&c.name, &d, "60"], None, 120)?;
                format!("{} restarted", c.name)
            }
            "generations" => h.run("listing generations", "generations", &[&c.name], None, 60)?,
            "status" => String::new(),
            other => {
                return Err(err(format!(
                    "nspawn.container has no action `{other}` (actions: start, stop, restart, status, generations)"
                ))
                .code("badRequest"))
            }
        };
        let pr = probe(&h, &c.name)?;
        let mut o = prior.map(|p| p.outputs.clone()).unwrap_or_default();
        o.insert("leaderPid".into(), pr.leader.map_or(Value::Null, |l| json!(l)));
        o.insert("generation".into(), generation(&pr.link).map_or(Value::Null, |g| json!(g)));
        let msg = if action == "status" { status_line(&c.name, &h.label, &pr) } else { msg };
        Ok((Some(o), msg))
    })();
    h.close();
    r
}

pub fn status_line(name: &str, host: &str, pr: &Probe) -> String {
    format!(
        "{name} on {host}: {}{}, generation {}, address {}{}",
        if pr.running() { "running" } else { "stopped" },
        pr.leader.map(|l| format!(" (leader PID {l})")).unwrap_or_default(),
        generation(&pr.link).map_or("-".into(), |g| g.to_string()),
        if pr.address.is_empty() { "-" } else { &pr.address },
        if pr.address6.is_empty() { String::new() } else { format!(", {}", pr.address6) },
    )
}
