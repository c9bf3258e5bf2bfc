//! `processes.set`: switch, read (drift), delete, actions.
//!
//! The switch compares each process's config store path between what the manager has
//! installed (`STATE/.ferry/active`) and the new generation's manifest: removed processes are
//! stopped (reverse dependency order), changed ones restarted and new ones started (dependency
//! order, level by level, each level running and ready before the next starts), installed
//! processes that are not running are started again; the rest is not touched. The profile is
//! set only after the whole switch succeeded; a failure switches back to the previous
//! generation (or to nothing, on a first deploy).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ferry_protocol::sdk::CallContext;
use ferry_protocol::{Object, ProviderError, ReadResult};
use serde_json::{json, Value};

use crate::host::{parse_target, Host, HostTarget};
use crate::manager::{units_of, Manifest, Mgr, Status};
use crate::schema::SetInputs;
use crate::scripts::common;
use crate::users;
use crate::Options;

pub(crate) fn err(name: &str, msg: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(format!("processes.set `{name}`: {msg}"))
}

/// The set's profile: `profilePath`, or under the system profiles — in unprivileged mode over
/// SSH, under the SSH user's own profiles.
pub(crate) fn profile_path(name: &str, s: &SetInputs) -> String {
    if let Some(p) = &s.profile_path {
        return p.clone();
    }
    let user = s.host.get("user").and_then(Value::as_str).filter(|u| *u != "root");
    match user {
        Some(u) if s.force_disable_user_change => {
            format!("/nix/var/nix/profiles/per-user/{u}/ferry/processes-{name}")
        }
        _ => format!("/nix/var/nix/profiles/ferry/processes-{name}"),
    }
}

/// Reach the set's host; `recorded` outputs carry the SSH host key learned before.
pub(crate) fn open_host(name: &str, s: &SetInputs, recorded: Option<&Object>) -> Result<Host, ProviderError> {
    let target = parse_target(&Object::from_iter([("host".to_string(), s.host.clone())]))
        .map_err(|e| ProviderError::invalid_input(format!("processes.set `{name}`: {e}")))?;
    let target = match target {
        HostTarget::Ssh(mut h) => {
            h.ssh_key = s.ssh_key.clone();
            HostTarget::Ssh(h)
        }
        t => t,
    };
    let key = recorded.and_then(|o| o.get("hostKey")).and_then(Value::as_str).map(str::to_string);
    Host::open(name, &target, key, !s.force_disable_user_change)
}

pub(crate) fn read_manifest(host: &Host, profile: &str) -> Result<Manifest, ProviderError> {
    let text = host.read_file(&format!("{profile}/manifest.json"))?;
    serde_json::from_str(&text)
        .map_err(|e| err(&host.resource, format!("{profile}/manifest.json is not a processes manifest: {e}")))
}

/// The store path the profile points to, and its generation number.
pub(crate) fn current_profile(
    host: &Host,
    path: &str,
) -> Result<Option<(String, Option<u64>)>, ProviderError> {
    let out = host.sh("reading the profile", &common("profile_read", &[path]))?;
    let mut lines = out.lines();
    let (Some(link), Some(target)) = (lines.next(), lines.next()) else { return Ok(None) };
    Ok(Some((target.to_string(), generation(link))))
}

/// `processes-web-12-link` -> 12.
pub(crate) fn generation(link: &str) -> Option<u64> {
    let l = link.rsplit('/').next()?.strip_suffix("-link")?;
    l.rsplit('-').next()?.parse().ok()
}

#[derive(Debug, Default)]
pub struct Summary {
    pub started: Vec<String>,
    pub restarted: Vec<String>,
    pub stopped: Vec<String>,
    pub repaired: Vec<String>,
    pub unchanged: usize,
    /// "created user x", "removed group y"
    pub users: Vec<String>,
}

impl Summary {
    pub fn describe(&self) -> String {
        let mut parts = vec![];
        for (what, v) in [
            ("started", &self.started),
            ("restarted", &self.restarted),
            ("stopped", &self.stopped),
            ("restarted (were not running)", &self.repaired),
        ] {
            if !v.is_empty() {
                parts.push(format!("{what} {}", v.join(", ")));
            }
        }
        parts.push(format!("{} unchanged", self.unchanged));
        parts.extend(self.users.iter().cloned());
        parts.join("; ")
    }
}

/// Switch the manager's processes to `new` (see the module docs). `old` gives the levels for
/// the reverse dependency order of removals. Users and groups `new` needs are created first;
/// those ferry created that are no longer needed are removed after.
pub fn switch(
    mgr: &Mgr,
    new: &Manifest,
    new_profile: Option<&str>,
    old: Option<&Manifest>,
    timeout: Duration,
    cx: &CallContext,
) -> Result<Summary, ProviderError> {
    let created = users::ensure(mgr.host, new)?;
    let mut sum = switch_processes(mgr, new, new_profile, old, timeout, cx)?;
    sum.users.extend(created.into_iter().map(|c| format!("created {c}")));
    if old.is_some_and(users::any) || users::any(new) {
        sum.users.extend(users::prune(mgr.host, new)?.into_iter().map(|c| format!("removed {c}")));
    }
    Ok(sum)
}

fn switch_processes(
    mgr: &Mgr,
    new: &Manifest,
    new_profile: Option<&str>,
    old: Option<&Manifest>,
    timeout: Duration,
    cx: &CallContext,
) -> Result<Summary, ProviderError> {
    let name = &mgr.host.resource;
    if let Some(p) = new_profile {
        mgr.ensure(p)?;
    }
    let active = mgr.active()?;
    let mut sum = Summary::default();
    // Removed: deepest first.
    let level_of = |n: &str| old.and_then(|o| o.processes.get(n)).map_or(0, |p| p.level);
    let mut removed: Vec<&str> =
        active.keys().filter(|n| !new.processes.contains_key(*n)).map(String::as_str).collect();
    removed.sort_by_key(|n| std::cmp::Reverse(level_of(n)));
    let mut by_level: BTreeMap<std::cmp::Reverse<u32>, Vec<&str>> = BTreeMap::new();
    for n in &removed {
        by_level.entry(std::cmp::Reverse(level_of(n))).or_default().push(n);
    }
    for names in by_level.values() {
        cx.progress("stop", format!("stopping {}", names.join(", ")));
        mgr.remove(names)?;
        sum.stopped.extend(names.iter().map(|s| s.to_string()));
    }
    if new.processes.is_empty() {
        return Ok(sum);
    }
    let unchanged: Vec<String> = new
        .processes
        .iter()
        .filter(|(n, p)| active.get(*n) == Some(&p.config))
        .map(|(n, _)| n.clone())
        .collect();
    let status = mgr.status(&unchanged)?;
    let mut levels: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for (n, p) in &new.processes {
        levels.entry(p.level).or_default().push(n);
    }
    for names in levels.values() {
        let mut apply = vec![];
        let mut start = vec![];
        for n in names {
            let p = &new.processes[*n];
            match active.get(*n) {
                Some(c) if *c == p.config => match status.get(*n) {
                    Some(Status::Running { .. }) | Some(Status::Starting(_)) => sum.unchanged += 1,
                    _ => {
                        start.push(*n);
                        sum.repaired.push(n.to_string());
                    }
                },
                Some(_) => {
                    apply.push((*n, p.config.as_str()));
                    sum.restarted.push(n.to_string());
                }
                None => {
                    apply.push((*n, p.config.as_str()));
                    sum.started.push(n.to_string());
                }
            }
        }
        if apply.is_empty() && start.is_empty() {
            continue;
        }
        let touched: Vec<&str> = apply.iter().map(|a| a.0).chain(start.iter().copied()).collect();
        cx.progress("start", format!("starting {}", touched.join(", ")));
        mgr.apply(&apply, &active)?;
        mgr.start(&start)?;
        wait_running(mgr, new, &touched, timeout).map_err(|m| err(name, m))?;
    }
    Ok(sum)
}

/// Wait until every process of `names` runs (and stays up) and is ready.
fn wait_running(mgr: &Mgr, m: &Manifest, names: &[&str], timeout: Duration) -> Result<(), String> {
    let longest = names
        .iter()
        .filter_map(|n| m.processes.get(*n)?.readiness.as_ref()?.timeout)
        .max()
        .map_or(timeout, |t| timeout.max(Duration::from_secs(t)));
    let deadline = Instant::now() + longest;
    let mut pending: BTreeSet<String> = names.iter().map(|s| s.to_string()).collect();
    let mut pids: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    let log = |n: &str| format!("{}/{n}.log", m.log_dir);
    let mut first = true;
    let mut down_since: BTreeMap<String, Instant> = BTreeMap::new();
    while !pending.is_empty() {
        if !first {
            std::thread::sleep(Duration::from_millis(100));
        }
        first = false;
        let list: Vec<String> = pending.iter().cloned().collect();
        let st = mgr.status(&list).map_err(|e| e.message)?;
        for n in &list {
            match st.get(n) {
                Some(Status::Running { pid }) => {
                    down_since.remove(n);
                    pids.entry(n.clone()).or_default().insert(*pid);
                    if ready(mgr, m, n) {
                        pending.remove(n);
                    }
                }
                Some(Status::Starting(s)) => {
                    down_since.remove(n);
                    if let Some(pid) = s.split("pid ").nth(1).and_then(|p| p.trim().parse::<u32>().ok()) {
                        let seen = pids.entry(n.clone()).or_default();
                        seen.insert(pid);
                        if seen.len() >= 3 {
                            return Err(format!(
                                "process `{n}` keeps exiting after it starts (see {})",
                                log(n)
                            ));
                        }
                    }
                }
                Some(Status::Down(s)) => {
                    // s6 reports a fresh service a moment late (and, for an instant, with exit
                    // code 0): it has failed when it stays down for over a second.
                    let since = *down_since.entry(n.clone()).or_insert_with(Instant::now);
                    let settling = mgr.kind == "s6" && since.elapsed() < Duration::from_millis(1500);
                    if !settling || Instant::now() > deadline {
                        return Err(format!("process `{n}` failed to start: {s} (see {})", log(n)));
                    }
                }
                None => {}
            }
        }
        if !pending.is_empty() && Instant::now() > deadline {
            let list: Vec<String> = pending.iter().cloned().collect();
            return Err(format!(
                "process(es) {} not running and ready after {}s",
                list.join(", "),
                longest.as_secs()
            ));
        }
    }
    Ok(())
}

fn ready(mgr: &Mgr, m: &Manifest, n: &str) -> bool {
    let Some(r) = m.processes.get(n).and_then(|p| p.readiness.as_ref()) else { return true };
    if let Some(port) = r.tcp_port {
        return mgr.host.tcp_ready(r.host.as_deref().unwrap_or("127.0.0.1"), port);
    }
    if let Some(f) = &r.file {
        return mgr.host.file_exists(f);
    }
    true
}

pub(crate) fn set_profile(
    host: &Host,
    opts: &Options,
    path: &str,
    store: &str,
) -> Result<Option<u64>, ProviderError> {
    let mut args = vec![path.to_string(), store.to_string()];
    args.extend(opts.nix_args());
    host.sh("setting the profile", &common("profile_set", &args))?;
    Ok(current_profile(host, path)?.and_then(|c| c.1))
}

fn outputs(host: &Host, path: &str, store: &str, generation: Option<u64>, m: &Manifest) -> Object {
    let procs: Object = m.processes.iter().map(|(n, p)| (n.clone(), json!(p.config))).collect();
    json!({
        "host": host.label,
        "hostKey": host.host_key(),
        "profile": store,
        "profilePath": path,
        "generation": generation,
        "processes": procs
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// The default plan, with the `processes` change broken down per process (by config store
/// path): `processes.NAME: /nix/store/…-old -> /nix/store/…-new`.
pub fn plan(
    info: &ferry_protocol::sdk::ProviderInfo,
    p: &ferry_protocol::PlanParams,
) -> ferry_protocol::PlanResult {
    let mut r = ferry_protocol::sdk::default_plan(info, p);
    let Some(prior) = &p.prior else { return r };
    let config =
        |o: &Object, n: &str| -> Option<Value> { o.get("processes")?.get(n)?.get("config").cloned() };
    let mut changes = vec![];
    for c in r.changes.drain(..) {
        if c.path != "processes" {
            changes.push(c);
            continue;
        }
        let names: BTreeSet<String> = [&prior.inputs, &p.inputs]
            .iter()
            .filter_map(|o| o.get("processes").and_then(Value::as_object))
            .flat_map(|m| m.keys().cloned())
            .collect();
        for n in names {
            let (before, after) = (config(&prior.inputs, &n), config(&p.inputs, &n));
            if before != after {
                changes.push(ferry_protocol::Change {
                    path: format!("processes.{n}"),
                    before,
                    after,
                    forces_replace: false,
                });
            }
        }
    }
    r.changes = changes;
    r
}

/// create/update: switch to the inputs' generation, roll back on failure.
pub fn deploy(
    opts: &Options,
    name: &str,
    inputs: &Object,
    recorded: Option<&Object>,
    cx: &CallContext,
) -> Result<Object, ProviderError> {
    let s = SetInputs::parse(name, inputs)?;
    let host = open_host(name, &s, recorded)?;
    let path = profile_path(name, &s);
    let copied = host.copy_closure(&opts.nix_args(), std::slice::from_ref(&s.profile), cx)?;
    if copied > 0 {
        cx.log(format!("copied {copied} store paths to {}", host.label));
    }
    let new = read_manifest(&host, &s.profile)?;
    if new.manager != s.manager {
        return Err(err(
            name,
            format!("the profile is built for {}, the inputs say {}", new.manager, s.manager),
        ));
    }
    let old_store = current_profile(&host, &path)?.map(|c| c.0);
    let old = match &old_store {
        Some(p) => read_manifest(&host, p).ok(),
        None => None,
    };
    let timeout = Duration::from_secs(s.start_timeout);
    // A change of manager: the old one's processes go first.
    if let Some(o) = old.as_ref().filter(|o| o.manager != new.manager) {
        let om = Mgr::new(&host, o, &s.systemd_dir);
        switch(&om, &o.empty_like(), None, Some(o), timeout, cx)?;
        om.shutdown()?;
    }
    let old = old.filter(|o| o.manager == new.manager);
    let mut mgr = Mgr::new(&host, &new, &s.systemd_dir);
    if let Some(o) = &old {
        mgr.units.extend(units_of(o));
    }
    match switch(&mgr, &new, Some(&s.profile), old.as_ref(), timeout, cx) {
        Ok(sum) => {
            let generation = set_profile(&host, opts, &path, &s.profile)?;
            cx.log(format!("processes: {}", sum.describe()));
            Ok(outputs(&host, &path, &s.profile, generation, &new))
        }
        Err(e) => {
            cx.warn(format!("switch failed, rolling back: {}", e.message));
            let (target, profile, what) = match (&old, &old_store) {
                (Some(o), Some(p)) => (o.clone(), Some(p.as_str()), "the previous generation".to_string()),
                _ => (
                    new.empty_like(),
                    None,
                    "nothing (first deploy): every process it started was stopped".to_string(),
                ),
            };
            let back = switch(&mgr, &target, profile, Some(&new), timeout, cx);
            if target.processes.is_empty() {
                let _ = mgr.shutdown();
            }
            match back {
                Ok(_) => Err(ProviderError::new(format!("{}; rolled back to {what}", e.message))),
                Err(b) => {
                    Err(ProviderError::new(format!("{}; the rollback failed too: {}", e.message, b.message)))
                }
            }
        }
    }
}

/// Live status of the deployed processes, for drift (and adoption when `outputs` is `None`).
pub fn read(name: &str, inputs: &Object, recorded: Option<&Object>) -> Result<ReadResult, ProviderError> {
    let s = SetInputs::parse_unchecked(name, inputs)?;
    let host = open_host(name, &s, recorded)?;
    let path = profile_path(name, &s);
    let cur = current_profile(&host, &path)?;
    let deployed = recorded
        .and_then(|o| o.get("profile"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| s.profile.clone());
    let Ok(m) = read_manifest(&host, &deployed) else {
        return Ok(ReadResult { exists: false, outputs: None, inputs: None, drift: vec![] });
    };
    let mut mgr = Mgr::new(&host, &m, &s.systemd_dir);
    mgr.units = units_of(&m);
    let active = mgr.active()?;
    let names: Vec<String> = m.processes.keys().cloned().collect();
    let status = mgr.status(&names)?;
    let Some(rec) = recorded else {
        // Adoption: only a finished deploy of these inputs counts.
        let done = cur.as_ref().is_some_and(|c| c.0 == s.profile)
            && m.processes.iter().all(|(n, p)| active.get(n) == Some(&p.config))
            && status.values().all(|st| matches!(st, Status::Running { .. }));
        if !done {
            return Ok(ReadResult { exists: false, outputs: None, inputs: None, drift: vec![] });
        }
        return Ok(ReadResult {
            exists: true,
            outputs: Some(outputs(&host, &path, &s.profile, cur.and_then(|c| c.1), &m)),
            inputs: None,
            drift: vec![],
        });
    };
    if cur.is_none() && active.is_empty() {
        return Ok(ReadResult { exists: false, outputs: None, inputs: None, drift: vec![] });
    }
    let mut drift = vec![];
    let mut actual = Object::new();
    match &cur {
        Some((p, g)) if *p != deployed => {
            drift.push(format!(
                "{path} points to {p} (generation {}), ferry deployed {deployed}",
                g.map_or("?".into(), |g| g.to_string())
            ));
            actual.insert("profile".into(), json!(p));
        }
        None => {
            drift.push(format!("{path} no longer exists"));
            actual.insert("profile".into(), json!(""));
        }
        _ => {}
    }
    let mut procs = inputs.get("processes").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut procs_drifted = false;
    for (n, p) in &m.processes {
        let st = status.get(n).cloned().unwrap_or(Status::Down("unknown".into()));
        let why = if active.get(n) != Some(&p.config) {
            Some(match active.get(n) {
                Some(c) => format!("process `{n}` runs {c}, ferry deployed {}", p.config),
                None => format!("process `{n}` is not installed"),
            })
        } else if !matches!(st, Status::Running { .. } | Status::Starting(_)) {
            Some(format!("process `{n}` is {}", st.describe()))
        } else {
            None
        };
        if let Some(w) = why {
            drift.push(w);
            let now = match active.get(n) {
                None => "(not installed)".to_string(),
                Some(c) if *c != p.config => c.clone(),
                Some(_) => format!("({})", st.describe()),
            };
            if let Some(Value::Object(o)) = procs.get_mut(n) {
                o.insert("config".into(), json!(now));
            }
            procs_drifted = true;
        }
    }
    for n in active.keys().filter(|n| !m.processes.contains_key(*n)) {
        drift.push(format!("process `{n}` is installed but not part of the deployed generation"));
    }
    if procs_drifted {
        actual.insert("processes".into(), Value::Object(procs));
    }
    let mut outs = rec.clone();
    if let Some((_, g)) = &cur {
        outs.insert("generation".into(), json!(g));
    }
    Ok(ReadResult {
        exists: true,
        outputs: Some(outs),
        inputs: if actual.is_empty() { None } else { Some(actual) },
        drift,
    })
}

/// Undeploy: stop every process (reverse dependency order), stop the manager's daemon, remove
/// the profile and its generations.
pub fn delete(name: &str, inputs: &Object, recorded: &Object, cx: &CallContext) -> Result<(), ProviderError> {
    let s = SetInputs::parse_unchecked(name, inputs)?;
    let host = open_host(name, &s, Some(recorded))?;
    let path = profile_path(name, &s);
    let store = current_profile(&host, &path)?.map(|c| c.0).unwrap_or_else(|| s.profile.clone());
    let m = match read_manifest(&host, &store) {
        Ok(m) => m,
        Err(_) => read_manifest(&host, &s.profile)?,
    };
    let mgr = Mgr::new(&host, &m, &s.systemd_dir);
    switch(&mgr, &m.empty_like(), None, Some(&m), Duration::from_secs(s.start_timeout), cx)?;
    mgr.shutdown()?;
    host.sh("removing the profile", &common("profile_remove", &[&path]))?;
    Ok(())
}
