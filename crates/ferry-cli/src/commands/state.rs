//! `ferry state list|show|rm|export|import|log`: inspect and edit the state database directly
//! (no evaluation, no provider calls but one handshake to learn sensitive inputs).
//!
//! Sensitive values never leave here, text or `--json`: outputs named in the record's
//! `sensitive_outputs`, inputs the kind's schema declares sensitive, and any string containing
//! a sensitive output's value are all shown as `(sensitive)` — by the engine's redaction
//! (`ferry_engine::shown`). `state export` is the one
//! exception — it is the backup format — and says so on stderr.
//!
//! `rm` and `import` change state, so they take the run lock like apply does.

use std::io::Read;
use std::path::Path;

use anyhow::Context as _;
use ferry_state::{DeploymentIdentity, ResourceRecord, StateStore};
use serde_json::{json, Value};

use crate::commands::{emit, emit_json, require_state, Context};
use crate::error::Outcome;
use crate::render::{table, value};

fn open(ctx: &Context) -> anyhow::Result<StateStore> {
    require_state(&ctx.opts.state)?;
    Ok(StateStore::open_existing(&ctx.opts.state)?)
}

pub fn list(ctx: &Context, json: bool) -> anyhow::Result<Outcome> {
    let store = open(ctx)?;
    let records = store.resources()?;
    if json {
        // Only fields without values: nothing here can be sensitive.
        let rows: Vec<Value> = records
            .iter()
            .map(|r| {
                json!({
                    "name": r.name, "kind": r.kind, "status": r.status.to_string(),
                    "updatedAt": r.updated_at, "lastAppliedAt": r.last_applied_at,
                    "tags": r.tags, "dependencies": r.dependencies,
                })
            })
            .collect();
        emit_json(&rows)?;
    } else if records.is_empty() {
        eprintln!("no resources recorded in {}", ctx.opts.state.display());
    } else {
        emit(&list_text(&records))?;
    }
    Ok(Outcome::Success)
}

pub fn list_text(records: &[ResourceRecord]) -> String {
    let mut rows = vec![vec!["NAME".into(), "KIND".into(), "STATUS".into(), "UPDATED".into()]];
    for r in records {
        rows.push(vec![r.name.clone(), r.kind.clone(), r.status.to_string(), r.updated_at.clone()]);
    }
    table(&rows)
}

pub fn show(ctx: &Context, name: &str, json: bool) -> anyhow::Result<Outcome> {
    let store = open(ctx)?;
    let Some(rec) = store.resource(name)? else {
        anyhow::bail!(not_recorded(ctx, name, &store)?);
    };
    let all = store.resources()?;
    let timeout = ctx.opts.timeout.min(std::time::Duration::from_secs(30));
    let view = ferry_engine::shown::show(&ctx.builtin_providers()?, timeout, &all, &rec);
    let shown = view.json;
    if json {
        emit_json(&shown)?;
    } else {
        emit(&show_text(&rec, &shown))?;
    }
    if !view.inputs_known && !rec.inputs.is_empty() {
        eprintln!(
            "note: could not ask provider {} which inputs of `{}` are sensitive; all inputs are hidden",
            provider_text(&rec.provider),
            rec.kind
        );
    }
    Ok(Outcome::Success)
}

fn not_recorded(ctx: &Context, name: &str, store: &StateStore) -> anyhow::Result<String> {
    let names: Vec<String> = store.resources()?.into_iter().map(|r| r.name).collect();
    let known = if names.is_empty() {
        "nothing is recorded".to_string()
    } else {
        format!("recorded: {}", names.join(", "))
    };
    Ok(format!("resource `{name}` is not in state {} ({known})", ctx.opts.state.display()))
}

/// `local (built in)` or `/path/to/provider ARGS`.
fn provider_text(p: &Value) -> String {
    if let Some(b) = p.get("builtin").and_then(Value::as_str) {
        return format!("{b} (built in)");
    }
    if let Some(exe) = p.get("executable").and_then(Value::as_str) {
        let mut s = exe.to_string();
        for a in p.get("args").and_then(Value::as_array).into_iter().flatten() {
            s.push(' ');
            s.push_str(a.as_str().unwrap_or_default());
        }
        return s;
    }
    p.to_string()
}

/// The text of `state show`, from the record (for plain fields) and its redacted JSON (for
/// every value).
pub fn show_text(rec: &ResourceRecord, shown: &Value) -> String {
    let mut out = String::new();
    let mut field = |k: &str, v: &str| out.push_str(&format!("{k:<14}{v}\n"));
    field("name:", &rec.name);
    field("kind:", &rec.kind);
    field("provider:", &provider_text(&rec.provider));
    field("status:", &rec.status.to_string());
    if !rec.tags.is_empty() {
        field("tags:", &rec.tags.join(", "));
    }
    if !rec.dependencies.is_empty() {
        field("depends on:", &rec.dependencies.join(", "));
    }
    field("created:", &rec.created_at);
    field("updated:", &rec.updated_at);
    if let Some(t) = &rec.last_applied_at {
        field("last applied:", t);
    }
    if let Some(p) = &rec.pending {
        field("pending:", &format!("{} since {}", p.op, p.since));
    }
    if rec.protect {
        field("protect:", "true (never destroyed or replaced)");
    }
    if rec.deposed.is_some() {
        field("deposed:", "an old object a replacement superseded; the next apply deletes it");
    }
    if let Some(e) = shown.get("last_error").and_then(Value::as_str) {
        field("last error:", e);
    }
    for section in ["inputs", "outputs"] {
        out.push_str(&format!("{section}:\n"));
        match shown.get(section).and_then(Value::as_object) {
            Some(m) if !m.is_empty() => {
                for (k, v) in m {
                    out.push_str(&format!("  {k} = {}\n", value(v)));
                }
            }
            _ => out.push_str("  (none)\n"),
        }
    }
    out
}

pub fn rm(ctx: &Context, name: &str) -> anyhow::Result<Outcome> {
    let store = open(ctx)?;
    let _lock = store.lock(&ctx.command_line, ctx.opts.lock_timeout)?;
    let Some(rec) = store.resource(name)? else {
        anyhow::bail!(not_recorded(ctx, name, &store)?);
    };
    if !store.remove(name)? {
        anyhow::bail!(not_recorded(ctx, name, &store)?);
    }
    emit(&format!("removed {} ({}) from state; the real resource was not touched\n", rec.name, rec.kind))?;
    Ok(Outcome::Success)
}

/// `ferry state rebind`: the state now belongs to the `-f` file. Its `name` is recorded by
/// the next apply (the file is not evaluated here).
pub fn rebind(ctx: &Context) -> anyhow::Result<Outcome> {
    let store = open(ctx)?;
    let _lock = store.lock(&ctx.command_line, ctx.opts.lock_timeout)?;
    let path = &ctx.opts.state;
    let before = store.deployment()?;
    let id = DeploymentIdentity::new(path, &ctx.opts.file, None);
    store.bind_deployment(&id)?;
    let was = match before {
        Some(b) if b.same_deployment(&id) => String::new(),
        Some(b) => format!(" (it belonged to {})", b.describe(path)),
        None => String::new(),
    };
    emit(&format!("state {} now belongs to {}{was}\n", path.display(), ctx.opts.file.display()))?;
    Ok(Outcome::Success)
}

pub fn export(ctx: &Context, output: Option<&Path>) -> anyhow::Result<Outcome> {
    let store = open(ctx)?;
    let doc = store.export()?;
    let count = doc.get("resources").and_then(Value::as_array).map_or(0, Vec::len);
    let mut text = serde_json::to_string_pretty(&doc).context("cannot encode the export")?;
    text.push('\n');
    eprintln!("warning: the export contains secrets (sensitive values in plain text); keep it private");
    match output {
        None => emit(&text)?,
        Some(path) => {
            write_private(path, text.as_bytes())?;
            eprintln!("exported {count} resources to {}", path.display());
        }
    }
    Ok(Outcome::Success)
}

/// Write `bytes` to `path` readable only by the invoking user (`ferry_state::write_private_file`:
/// created exclusively, no symlink followed, never another user's file).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    ferry_state::write_private_file(path, bytes)
        .with_context(|| format!("cannot write the export to {}", path.display()))
}

/// The external provider programs an export records (`{"executable": ..}`), each with the
/// resources using it: ferry runs them to plan, refresh and destroy those resources.
fn recorded_providers(doc: &Value) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut found = std::collections::BTreeMap::<String, Vec<String>>::new();
    for r in doc.get("resources").and_then(Value::as_array).into_iter().flatten() {
        let provider = r.get("provider");
        let Some(exe) = provider.and_then(|p| p.get("executable")).and_then(Value::as_str) else { continue };
        let args: Vec<&str> = provider
            .and_then(|p| p.get("args"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let cmd = std::iter::once(exe).chain(args).collect::<Vec<_>>().join(" ");
        let name = r.get("name").and_then(Value::as_str).unwrap_or("?").to_string();
        found.entry(cmd).or_default().push(name);
    }
    found
}

pub fn import(ctx: &Context, file: &str, trust_providers: bool) -> anyhow::Result<Outcome> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("cannot read the export from stdin")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
    };
    let doc: Value = serde_json::from_str(&text).with_context(|| {
        format!("{}: not a ferry state export (invalid JSON)", if file == "-" { "stdin" } else { file })
    })?;
    let providers = recorded_providers(&doc);
    if !providers.is_empty() && !trust_providers {
        let list: Vec<String> =
            providers.iter().map(|(cmd, names)| format!("  {cmd}   (for {})", names.join(", "))).collect();
        anyhow::bail!(
            "the export records provider programs that ferry would run, with your privileges, to \
             plan, refresh or destroy its resources:\n{}\ncheck them (an export from someone else \
             can name any program), then import with --trust-providers; nothing was imported",
            list.join("\n")
        );
    }
    let store = StateStore::open(&ctx.opts.state)?;
    let _lock = store.lock(&ctx.command_line, ctx.opts.lock_timeout)?;
    let n = store.import(&doc)?;
    emit(&format!(
        "imported {n} resources into {} (replacing what was recorded)\n",
        ctx.opts.state.display()
    ))?;
    Ok(Outcome::Success)
}

pub fn log(ctx: &Context, name: Option<&str>, limit: Option<usize>, json: bool) -> anyhow::Result<Outcome> {
    let store = open(ctx)?;
    let events = store.events(name, limit)?;
    if json {
        emit_json(&events)?;
    } else if events.is_empty() {
        eprintln!("no events recorded{}", name.map(|n| format!(" for `{n}`")).unwrap_or_default());
    } else {
        let mut rows = vec![vec![
            "TIME".into(),
            "RUN".into(),
            "RESOURCE".into(),
            "OP".into(),
            "PHASE".into(),
            "MESSAGE".into(),
        ]];
        for e in &events {
            rows.push(vec![
                e.time.clone(),
                e.run.map_or("-".into(), |r| r.to_string()),
                e.resource.clone().unwrap_or_else(|| "-".into()),
                e.op.clone(),
                e.phase.clone(),
                e.message.replace('\n', " "),
            ]);
        }
        emit(&table(&rows))?;
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::SENSITIVE;
    use ferry_engine::redact::Redactor;
    use ferry_engine::shown::redacted_record;
    use ferry_state::Status;
    use std::os::unix::fs::PermissionsExt;

    fn record() -> ResourceRecord {
        serde_json::from_value(json!({
            "name": "key",
            "kind": "local.ssh-keypair",
            "provider": {"builtin": "local"},
            "inputs": {"comment": "deploy"},
            "outputs": {"publicKey": "ssh-ed25519 AAAApublic", "privateKey": "-----BEGIN OPENSSH PRIVATE KEY----- s3cr3t"},
            "status": "ready",
            "sensitive_outputs": ["privateKey"],
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-02T00:00:00Z",
        }))
        .unwrap()
    }

    fn consumer() -> ResourceRecord {
        serde_json::from_value(json!({
            "name": "copy",
            "kind": "local.file",
            "provider": {"builtin": "local"},
            "inputs": {"path": "/tmp/k", "content": "-----BEGIN OPENSSH PRIVATE KEY----- s3cr3t", "note": "s3cr3t inside -----BEGIN OPENSSH PRIVATE KEY----- s3cr3t"},
            "outputs": {"path": "/tmp/k"},
            "status": "ready",
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-02T00:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn show_hides_sensitive_outputs() {
        let rec = record();
        assert_eq!(rec.status, Status::Ready);
        let r = Redactor::for_records(std::slice::from_ref(&rec));
        let shown = redacted_record(&rec, Some(&[]), &r);
        let text = show_text(&rec, &shown);
        assert!(text.contains("  privateKey = (sensitive)\n"), "{text}");
        assert!(text.contains("  publicKey = \"ssh-ed25519 AAAApublic\"\n"), "{text}");
        assert!(text.contains("provider:     local (built in)\n"), "{text}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(!shown.to_string().contains("s3cr3t"));
        assert_eq!(shown["outputs"]["privateKey"], SENSITIVE);
    }

    #[test]
    fn deposed_objects_are_redacted_too() {
        let mut rec = record();
        rec.protect = true;
        rec.deposed = Some(ferry_state::Deposed {
            inputs: json!({"comment": "old-s3cr3t"}).as_object().unwrap().clone(),
            outputs: json!({"privateKey": "old-s3cr3t-key", "publicKey": "ssh-ed25519 AAAAold"})
                .as_object()
                .unwrap()
                .clone(),
        });
        let r = Redactor::for_records(std::slice::from_ref(&rec));
        let shown = redacted_record(&rec, Some(&["comment".to_string()]), &r);
        assert!(!shown.to_string().contains("s3cr3t"), "{shown}");
        assert_eq!(shown["deposed"]["outputs"]["publicKey"], "ssh-ed25519 AAAAold");
        let text = show_text(&rec, &shown);
        assert!(text.contains("protect:      true"), "{text}");
        assert!(text.contains("deposed:      an old object"), "{text}");
    }

    #[test]
    fn secrets_flowing_into_inputs_are_hidden() {
        let (key, copy) = (record(), consumer());
        let r = Redactor::for_records(&[key, copy.clone()]);
        // local.file declares `content` sensitive; `note` is hidden because it holds the key.
        let shown = redacted_record(&copy, Some(&["content".to_string()]), &r);
        assert!(!shown.to_string().contains("s3cr3t"), "{shown}");
        assert_eq!(shown["inputs"]["path"], "/tmp/k");
        // Unknown schema: every input hidden.
        let shown = redacted_record(&copy, None, &r);
        assert_eq!(shown["inputs"]["path"], SENSITIVE);
    }

    #[test]
    fn list_is_a_table() {
        let text = list_text(&[record()]);
        assert_eq!(
            text,
            "NAME  KIND               STATUS  UPDATED\nkey   local.ssh-keypair  ready   2024-01-02T00:00:00Z\n"
        );
    }

    #[test]
    fn private_files() {
        let dir = std::env::temp_dir().join(format!("ferry-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("export.json");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"{}").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
