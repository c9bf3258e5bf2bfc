//! `ferry state list|show|rm|export|import|log`: inspect and edit the state database directly
//! (no evaluation, no provider calls but one handshake to learn sensitive inputs).
//!
//! Sensitive values never leave here, text or `--json`: outputs named in the record's
//! `sensitive_outputs`, inputs the kind's schema declares sensitive, and any string containing
//! a sensitive output's value are all shown as `(sensitive)`. `state export` is the one
//! exception — it is the backup format — and says so on stderr.
//!
//! `rm` and `import` change state, so they take the run lock like apply does.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use ferry_engine::redact::Redactor;
use ferry_engine::registry::Registry;
use ferry_engine::EngineEvent;
use ferry_protocol::sdk::Provider;
use ferry_protocol::KindSchema;
use ferry_state::{DeploymentIdentity, ResourceRecord, StateStore};
use serde_json::{json, Map, Value};

use crate::commands::{emit, emit_json, require_state, Context};
use crate::error::Outcome;
use crate::render::{redact_named, table, value, SENSITIVE};

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
    let mut sens = Sensitivity::new(ctx);
    let inputs = sens.inputs_of(&rec);
    let redactor = redactor_for(&all);
    let shown = redacted_record(&rec, inputs.as_deref(), &redactor);
    if json {
        emit_json(&shown)?;
    } else {
        emit(&show_text(&rec, &shown))?;
    }
    if inputs.is_none() && !rec.inputs.is_empty() {
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

/// Learns every sensitive output value in state, so a secret that flowed into another
/// resource's inputs is hidden there too.
pub fn redactor_for(records: &[ResourceRecord]) -> Redactor {
    let mut r = Redactor::default();
    for rec in records {
        r.learn(&rec.outputs, &rec.sensitive_outputs);
        if let Some(d) = &rec.deposed {
            r.learn(&d.outputs, &rec.sensitive_outputs);
        }
    }
    r
}

/// The record as JSON with every sensitive value replaced. `sensitive_inputs` `None` means
/// unknown: every input is hidden.
pub fn redacted_record(rec: &ResourceRecord, sensitive_inputs: Option<&[String]>, r: &Redactor) -> Value {
    let inputs = |m: &Map<String, Value>| -> Value {
        Value::Object(match sensitive_inputs {
            Some(names) => r.inputs(m, names),
            None => m.keys().map(|k| (k.clone(), Value::String(SENSITIVE.into()))).collect(),
        })
    };
    let outputs = |m: &Map<String, Value>| -> Value {
        let named = redact_named(m, &rec.sensitive_outputs);
        Value::Object(named.into_iter().map(|(k, v)| (k, r.value(&v))).collect())
    };
    let mut v = serde_json::to_value(rec).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("inputs".into(), inputs(&rec.inputs));
        obj.insert("outputs".into(), outputs(&rec.outputs));
        if let Some(d) = &rec.deposed {
            obj.insert(
                "deposed".into(),
                json!({ "inputs": inputs(&d.inputs), "outputs": outputs(&d.outputs) }),
            );
        }
        if let Some(p) = &rec.pending {
            if let Some(Value::Object(po)) = obj.get_mut("pending") {
                po.insert("inputs".into(), inputs(&p.inputs));
            }
        }
        if let Some(e) = &rec.last_error {
            obj.insert("last_error".into(), Value::String(r.text(e)));
        }
    }
    v
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

/// Which inputs of a recorded kind are sensitive, from the provider's schema.
struct Sensitivity {
    registry: Registry,
    cache: HashMap<String, Option<Vec<KindSchema>>>,
}

impl Sensitivity {
    fn new(ctx: &Context) -> Sensitivity {
        let quiet: Arc<dyn ferry_engine::EventSink> = Arc::new(|_: EngineEvent| {});
        let timeout = ctx.opts.timeout.min(std::time::Duration::from_secs(30));
        Sensitivity {
            registry: Registry::new(&[], timeout, Default::default(), quiet, Default::default()),
            cache: HashMap::new(),
        }
    }

    /// `None` when the provider cannot be asked.
    fn inputs_of(&mut self, rec: &ResourceRecord) -> Option<Vec<String>> {
        let key = rec.provider.to_string();
        if !self.cache.contains_key(&key) {
            let kinds = self.kinds(rec);
            self.cache.insert(key.clone(), kinds);
        }
        let kinds = self.cache.get(&key)?.as_ref()?;
        let kind = rec.kind.split_once('.').map_or(rec.kind.as_str(), |(_, k)| k);
        kinds.iter().find(|k| k.name == kind).map(|k| k.sensitive_inputs.clone())
    }

    fn kinds(&self, rec: &ResourceRecord) -> Option<Vec<KindSchema>> {
        match rec.provider.get("builtin").and_then(Value::as_str) {
            // In-process: no need to start ourselves to read a static schema.
            Some("local") => Some(ferry_provider_local::LocalProvider::new().info().kinds),
            Some("nixos") => Some(ferry_provider_nixos::NixosProvider::new().info().kinds),
            Some("nspawn") => Some(ferry_provider_nspawn::NspawnProvider::default().info().kinds),
            Some("processes") => Some(ferry_provider_processes::Builtin::default().info().kinds),
            Some("ids") => Some(ferry_provider_processes::Ids.info().kinds),
            Some(_) => None,
            None => {
                let cmd = self.registry.command_from_record(&rec.kind, &rec.provider).ok()?;
                let client = self.registry.client(&cmd).ok()?;
                Some(client.handshake.kinds.clone())
            }
        }
    }
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
        let r = redactor_for(std::slice::from_ref(&rec));
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
        let r = redactor_for(std::slice::from_ref(&rec));
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
        let r = redactor_for(&[key, copy.clone()]);
        // local.file declares `content` sensitive; `note` is hidden because it holds the key.
        let shown = redacted_record(&copy, Some(&["content".to_string()]), &r);
        assert!(!shown.to_string().contains("s3cr3t"), "{shown}");
        assert_eq!(shown["inputs"]["path"], "/tmp/k");
        // Unknown schema: every input hidden.
        let shown = redacted_record(&copy, None, &r);
        assert_eq!(shown["inputs"]["path"], SENSITIVE);
    }

    #[test]
    fn builtin_schema_is_read_in_process() {
        let ctx = Context {
            opts: <crate::cli::Cli as clap::Parser>::try_parse_from(["ferry", "state", "list"])
                .unwrap()
                .global
                .resolve(Path::new("/")),
            command_line: "ferry state show".into(),
            interrupted: Default::default(),
            rollout: Default::default(),
            guards: Default::default(),
        };
        let mut s = Sensitivity::new(&ctx);
        // local.file declares no sensitive input; local.exec declares env and stdin.
        let inputs = s.inputs_of(&consumer()).expect("local.file schema");
        assert!(inputs.is_empty(), "{inputs:?}");
        let mut exec = consumer();
        exec.kind = "local.exec".into();
        let inputs = s.inputs_of(&exec).expect("local.exec schema");
        assert!(inputs.contains(&"env".to_string()) && inputs.contains(&"stdin".to_string()), "{inputs:?}");
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
