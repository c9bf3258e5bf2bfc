//! The users and groups a set's processes run as: created before the processes that need them
//! start (with `useradd`/`groupadd`, or busybox's `adduser`/`addgroup` where those are
//! missing), and removed once no process of the set needs them — but only those ferry created,
//! as recorded in `STATE/.ferry/created`; users that existed before are never touched.
//! A user without a group gets a group of its own name. With `forceDisableUserChange` the
//! manifest carries no users, so nothing happens here.

use std::collections::BTreeMap;

use ferry_protocol::ProviderError;
use serde_json::Value;

use crate::host::Host;
use crate::manager::Manifest;
use crate::scripts::{Sh, USERS};

/// (users: name -> (group, uid), groups: name -> gid) the manifest's processes need.
type Needs = (BTreeMap<String, (String, Option<String>)>, BTreeMap<String, Option<String>>);

fn id_of(v: &Option<Value>) -> Option<String> {
    match v {
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) => Some(s.clone()),
        _ => None,
    }
}

fn needs(m: &Manifest) -> Needs {
    let (mut users, mut groups) = (BTreeMap::new(), BTreeMap::new());
    for p in m.processes.values() {
        let group = p.group.clone().or_else(|| p.user.clone());
        if let Some(g) = &group {
            let gid = id_of(&p.gid);
            let e = groups.entry(g.clone()).or_insert(None);
            if e.is_none() {
                *e = gid;
            }
        }
        if let (Some(u), Some(g)) = (&p.user, group) {
            users.entry(u.clone()).or_insert((g, id_of(&p.uid)));
        }
    }
    (users, groups)
}

pub fn any(m: &Manifest) -> bool {
    m.processes.values().any(|p| p.user.is_some() || p.group.is_some())
}

fn record(m: &Manifest) -> String {
    format!("{}/.ferry/created", m.state_dir)
}

/// Create the users and groups `m` needs that do not exist. Returns what was created.
pub fn ensure(host: &Host, m: &Manifest) -> Result<Vec<String>, ProviderError> {
    if !any(m) {
        return Ok(vec![]);
    }
    let (users, groups) = needs(m);
    let mut s = Sh::new(&[USERS]);
    s.call("users_record", &[record(m)]);
    for (g, gid) in &groups {
        s.call("mkgroup", &[g.as_str(), gid.as_deref().unwrap_or("")]);
    }
    for (u, (g, uid)) in &users {
        s.call("mkuser", &[u.as_str(), g.as_str(), uid.as_deref().unwrap_or("")]);
    }
    let out = host.sh("creating users and groups", s.text())?;
    Ok(out.lines().filter_map(|l| l.strip_prefix("created ")).map(str::to_string).collect())
}

/// Remove the users and groups ferry created for this set that `m` no longer needs.
/// Returns what was removed.
pub fn prune(host: &Host, m: &Manifest) -> Result<Vec<String>, ProviderError> {
    let (users, groups) = needs(m);
    let keep: Vec<String> = users
        .keys()
        .map(|u| format!("user {u}"))
        .chain(groups.keys().map(|g| format!("group {g}")))
        .collect();
    let mut s = Sh::new(&[USERS]);
    s.call("users_prune", &[record(m), keep.join("\n")]);
    let out = host.sh("removing users and groups", s.text())?;
    Ok(out.lines().filter_map(|l| l.strip_prefix("removed ")).map(str::to_string).collect())
}
