//! Keys on the host: upload, removal and drift. The content is read on the deployer and
//! streamed over the SSH connection's stdin to the helper (`remote.sh key`), which writes it
//! only into a directory no one but root can change, through an exclusively created temporary
//! file that gets its owner and mode before the content, and never follows a symlink. Key
//! contents never appear in a command line, an event or an error.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_hosts::{Exit, HostError};
use ferry_protocol::sdk::CallContext;
use ferry_protocol::{Object, Prior, ProviderError};
use serde_json::Value;

use crate::remote::{err, host_err, Remote};
use crate::schema::{Key, Machine, UploadAt};

/// Where the keys go on the host, in the order the probe reports them.
pub(crate) fn paths(m: &Machine) -> Vec<String> {
    m.keys.iter().map(|(n, k)| k.dest(n)).collect()
}

/// Key contents, read on the deployer. Never logged.
fn content(name: &str, k: &Key) -> Result<Vec<u8>, ProviderError> {
    if let Some(t) = &k.text {
        return Ok(t.clone().into_bytes());
    }
    if let Some(f) = &k.file {
        return std::fs::read(f).map_err(|e| err(format!("key `{name}`: cannot read {f}: {e}")));
    }
    let cmd = k.command.as_deref().unwrap_or_default();
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("key `{name}`: cannot run `{}`: {e}", cmd[0])))?;
    if !out.status.success() {
        return Err(err(format!("key `{name}`: `{}` failed ({})", cmd[0], out.status)));
    }
    Ok(out.stdout)
}

pub(crate) fn upload(
    r: &Remote,
    m: &Machine,
    which: Option<UploadAt>,
    cx: &CallContext,
) -> Result<(), ProviderError> {
    for (name, k) in &m.keys {
        if which.is_some_and(|w| w != k.upload_at) {
            continue;
        }
        let content = content(name, k)?;
        cx.progress("keys", format!("uploading key {name}"));
        let dest = k.dest(name);
        r.run("uploading a key", "key", &[&dest, &k.user, &k.group, &k.permissions], Some(&content), Duration::from_secs(60))
            .map_err(|e| match e {
                HostError::Failed { exit: Exit::Code(UNSAFE_DIR), output, .. } => {
                    unsafe_dir(&format!("key `{name}`"), &output)
                }
                HostError::Failed { exit, .. } => err(format!(
                    "uploading key `{name}` to {dest} failed ({exit}): check that user `{}` and group `{}` exist on the host",
                    k.user, k.group
                )),
                e => host_err(e),
            })?;
    }
    Ok(())
}

/// The helper's exit code for a directory it will not write in or remove from (remote.sh).
const UNSAFE_DIR: i32 = 4;

/// The helper refused a directory: say which and why (its stderr names paths, never content).
fn unsafe_dir(what: &str, stderr: &str) -> ProviderError {
    let why: Vec<&str> = stderr.lines().filter_map(|l| l.strip_prefix("ferry: ")).collect();
    err(format!(
        "{what}: refused on the host: {}. ferry writes keys only into directories that no one but root can \
         change (every directory on the way owned by root and not writable by group or others, unless \
         sticky like /tmp), and `destDir` itself must not be a symlink",
        if why.is_empty() { "unsafe directory".to_string() } else { why.join("; ") }
    ))
    .code("unsafeKeyDir")
}

/// Keys the prior deployment had that are gone now (by destination path).
fn removed_keys(m: &Machine, prior: Option<&Prior>) -> Vec<String> {
    let Some(p) = prior else { return vec![] };
    let Some(old) = p.inputs.get("keys").and_then(Value::as_object) else { return vec![] };
    let now = paths(m);
    old.iter()
        .filter_map(|(name, v)| {
            let dir = v.get("destDir").and_then(Value::as_str).unwrap_or("/run/keys");
            let path = format!("{}/{}", dir.trim_end_matches('/'), name);
            (!now.contains(&path)).then_some(path)
        })
        .collect()
}

/// Delete the keys the prior deployment had that are gone now.
pub(crate) fn remove_gone(r: &Remote, m: &Machine, prior: Option<&Prior>) -> Result<(), ProviderError> {
    let gone = removed_keys(m, prior);
    if gone.is_empty() {
        return Ok(());
    }
    let refs: Vec<&str> = gone.iter().map(String::as_str).collect();
    r.run("removing keys", "rmkey", &refs, None, Duration::from_secs(60)).map_err(|e| match e {
        HostError::Failed { exit: Exit::Code(UNSAFE_DIR), output, .. } => {
            unsafe_dir("removing keys", &output)
        }
        e => host_err(e),
    })?;
    Ok(())
}

/// Drift of the declared keys, from the probe's `found` (path -> "MODE USER GROUP", "missing" or
/// "symlink"). Returns the `keys` input as found (drifted keys left out, so the plan uploads them
/// again) when anything drifted.
pub(crate) fn drift(
    m: &Machine,
    inputs: &Object,
    found: &BTreeMap<String, String>,
    drift: &mut Vec<String>,
) -> Option<Value> {
    let mut keys = inputs.get("keys").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut drifted = false;
    for (name, k) in &m.keys {
        let dest = k.dest(name);
        let what = match found.get(&dest).map(String::as_str) {
            None | Some("missing") => format!("key {name} is missing on the host ({dest})"),
            Some("symlink") => {
                format!("key {name} is a symlink on the host ({dest}): it will be replaced by the key")
            }
            Some(st) => {
                let want = format!("{} {} {}", k.mode(), k.user, k.group);
                if st == want {
                    continue;
                }
                format!("key {name} has mode/owner {st}, declared {want}")
            }
        };
        drift.push(what);
        keys.remove(name);
        drifted = true;
    }
    drifted.then_some(Value::Object(keys))
}
