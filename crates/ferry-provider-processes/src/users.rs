//! The users and groups a set's processes run as: created before the processes that need them
//! start (with `useradd`/`groupadd`, or busybox's `adduser`/`addgroup` where those are
//! missing), and removed once no process of the set needs them — but only those ferry created,
//! as recorded in `STATE/.ferry/created`; users that existed before are never touched.
//! A user without a group gets a group of its own name. With `forceDisableUserChange` the
//! manifest carries no users, so nothing happens here.

use std::collections::BTreeMap;

use ferry_protocol::ProviderError;
use serde_json::Value;

use crate::host::{q, Host};
use crate::manager::Manifest;

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

const FUNCTIONS: &str = r#"
has_group() { if command -v getent >/dev/null 2>&1; then getent group "$1" >/dev/null; else grep -q "^$1:" /etc/group; fi; }
mkgroup() {
  has_group "$1" && return 0
  if command -v groupadd >/dev/null 2>&1; then groupadd --system ${2:+--gid "$2"} "$1"
  else addgroup -S ${2:+-g "$2"} "$1"; fi || { echo "error: cannot create group $1" >&2; exit 1; }
  echo "group $1" >> "$rec"; echo "created group $1"
}
mkuser() {
  id -u "$1" >/dev/null 2>&1 && return 0
  if command -v useradd >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir / --shell /usr/sbin/nologin ${3:+--uid "$3"} --gid "$2" "$1"
  else adduser -S -D -H -h / -s /bin/false ${3:+-u "$3"} -G "$2" "$1"; fi \
    || { echo "error: cannot create user $1" >&2; exit 1; }
  echo "user $1" >> "$rec"; echo "created user $1"
}
rmuser() { if command -v userdel >/dev/null 2>&1; then userdel "$1"; else deluser "$1"; fi; }
rmgroup() {
  has_group "$1" || return 0
  if command -v groupdel >/dev/null 2>&1; then groupdel "$1"; else delgroup "$1"; fi
}
"#;

/// Create the users and groups `m` needs that do not exist. Returns what was created.
pub fn ensure(host: &Host, m: &Manifest) -> Result<Vec<String>, ProviderError> {
    if !any(m) {
        return Ok(vec![]);
    }
    let (users, groups) = needs(m);
    let rec = record(m);
    let mut s =
        format!("set -e\nrec={}\nmkdir -p \"$(dirname \"$rec\")\"; touch \"$rec\"\n{FUNCTIONS}", q(&rec));
    for (g, gid) in &groups {
        s += &format!("mkgroup {} {}\n", q(g), q(gid.as_deref().unwrap_or("")));
    }
    for (u, (g, uid)) in &users {
        s += &format!("mkuser {} {} {}\n", q(u), q(g), q(uid.as_deref().unwrap_or("")));
    }
    let out = host.sh("creating users and groups", &s)?;
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
    let s = format!(
        "rec={rec}\n[ -f \"$rec\" ] || exit 0\n{FUNCTIONS}keep={keep}\n\
         new=$(mktemp \"$rec.XXXXXX\")\n\
         for kind in user group; do\n\
           grep \"^$kind \" \"$rec\" | sort -u | while read -r k name; do\n\
             if printf '%s\\n' \"$keep\" | grep -qx \"$k $name\"; then echo \"$k $name\" >> \"$new\"; continue; fi\n\
             if [ \"$k\" = user ]; then rmuser \"$name\" || {{ echo \"$k $name\" >> \"$new\"; continue; }}\n\
             else rmgroup \"$name\" || {{ echo \"$k $name\" >> \"$new\"; continue; }}; fi\n\
             echo \"removed $k $name\"\n\
           done\n\
         done\n\
         mv -f \"$new\" \"$rec\"\n",
        rec = q(&record(m)),
        keep = q(&keep.join("\n")),
    );
    let out = host.sh("removing users and groups", &s)?;
    Ok(out.lines().filter_map(|l| l.strip_prefix("removed ")).map(str::to_string).collect())
}
