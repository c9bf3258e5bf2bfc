//! `ferry machine …` (provider actions on a recorded `nixos.machine`), `ferry ssh NAME` and
//! `ferry exec --on SEL -- CMD`.
//!
//! The machine verbs go through the engine ([`ferry_engine::Engine::action`]), which holds the
//! state lock and records new outputs an action returns (`reboot` records the new `bootId`; a
//! rollback keeps the deployed system as the outputs, so the next plan shows it as drift). `ssh` and `exec` only
//! read state: they connect with the recorded (or pinned) host key through `ferry-ssh`, never
//! trusting a key on first use.

use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use ferry_engine::Selection;
use ferry_ssh::{Connection, Identity, Target};
use ferry_state::{ResourceRecord, StateStore};
use serde_json::{json, Value};

use crate::cli::MachineCommand;
use crate::commands::{emit, Context};
use crate::error::{usage, Outcome};

const KIND: &str = "nixos.machine";

pub fn run(ctx: &Context, cmd: MachineCommand) -> anyhow::Result<Outcome> {
    let (name, action, args) = match cmd {
        MachineCommand::Generations { name } => (name, "generations", json!({})),
        MachineCommand::Rollback { name, to } => (name, "rollback", json!({ "to": to })),
        MachineCommand::Gc { name, keep } => (name, "gc", json!({ "keep": keep })),
        MachineCommand::Reboot { name, wait } => (name, "reboot", json!({ "timeout": wait })),
        MachineCommand::UploadKeys { name } => (name, "upload-keys", json!({})),
    };
    let progress = ctx.progress();
    let engine = ctx.engine(&progress)?;
    let args = args.as_object().cloned().unwrap_or_default();
    let result = engine.action(&name, action, args)?;
    if let Some(m) = result.message {
        emit(&format!("{m}\n"))?;
    }
    Ok(Outcome::Success)
}

fn machines(ctx: &Context) -> anyhow::Result<Vec<ResourceRecord>> {
    if !ctx.opts.state.exists() {
        anyhow::bail!(
            "no state at {}: apply a deployment with machines first (or pass --state)",
            ctx.opts.state.display()
        );
    }
    let store = StateStore::open_existing(&ctx.opts.state)?;
    Ok(store.resources()?.into_iter().filter(|r| r.kind == KIND).collect())
}

/// The SSH target of a recorded machine; its host key must be pinned or recorded.
fn target_of(rec: &ResourceRecord) -> anyhow::Result<Target> {
    let s = |o: &ferry_protocol::Object, k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
    let host =
        s(&rec.inputs, "host").with_context(|| format!("machine `{}` has no recorded host", rec.name))?;
    let host_key = s(&rec.inputs, "hostKey").or_else(|| s(&rec.outputs, "hostKey")).filter(|k| !k.is_empty());
    let Some(host_key) = host_key else {
        anyhow::bail!(
            "machine `{}` has no recorded host key (it was never deployed): run `ferry apply` first",
            rec.name
        );
    };
    Ok(Target {
        host,
        port: rec.inputs.get("port").and_then(Value::as_u64).unwrap_or(22) as u16,
        user: s(&rec.inputs, "user").unwrap_or_else(|| "root".into()),
        identity: s(&rec.inputs, "sshKey").map(|k| Identity::from_input(&k)),
        host_key: Some(host_key),
        options: rec
            .inputs
            .get("sshOptions")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
        connect_timeout: 10,
    })
}

pub fn ssh(ctx: &Context, name: &str, command: &[String]) -> anyhow::Result<Outcome> {
    let all = machines(ctx)?;
    let Some(rec) = all.iter().find(|r| r.name == name) else {
        let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
        anyhow::bail!(
            "no machine `{name}` in state (machines: {})",
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        );
    };
    let conn = Connection::open(&target_of(rec)?)?;
    let remote = (!command.is_empty()).then(|| command.join(" "));
    let status = conn.interactive_command(remote.as_deref()).status().context("cannot run ssh")?;
    Ok(if status.success() { Outcome::Success } else { Outcome::Failed })
}

pub fn exec(ctx: &Context, on: Option<&str>, parallel: usize, command: &[String]) -> anyhow::Result<Outcome> {
    let sel = on.map(Selection::parse).transpose().map_err(usage)?;
    let chosen: Vec<ResourceRecord> = machines(ctx)?
        .into_iter()
        .filter(|r| sel.as_ref().is_none_or(|s| s.matches(&r.name, &r.tags)))
        .collect();
    if chosen.is_empty() {
        anyhow::bail!(
            "no recorded machine matches {}",
            on.map_or("(all)".to_string(), |s| format!("--on {s}"))
        );
    }
    let remote = command.join(" ");
    let width = chosen.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let queue = Arc::new(Mutex::new(chosen));
    let failures: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let out = Arc::new(Mutex::new(()));
    std::thread::scope(|scope| {
        for _ in 0..parallel.max(1) {
            let queue = Arc::clone(&queue);
            let failures = Arc::clone(&failures);
            let out = Arc::clone(&out);
            let remote = remote.clone();
            scope.spawn(move || loop {
                let Some(rec) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop() else { return };
                let prefix = format!("{:width$} | ", rec.name);
                if let Err(e) = exec_one(&rec, &remote, &prefix, &out) {
                    failures.lock().unwrap_or_else(|e| e.into_inner()).push((rec.name.clone(), e));
                }
            });
        }
    });
    let failures = failures.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if failures.is_empty() {
        return Ok(Outcome::Success);
    }
    for (name, e) in &failures {
        eprintln!("✗ {name}: {e}");
    }
    Ok(Outcome::Failed)
}

fn exec_one(rec: &ResourceRecord, remote: &str, prefix: &str, out: &Arc<Mutex<()>>) -> Result<(), String> {
    let target = target_of(rec).map_err(|e| e.to_string())?;
    let conn = Connection::open(&target).map_err(|e| e.to_string())?;
    let mut child = conn
        .command(remote)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run ssh: {e}"))?;
    let so = child.stdout.take();
    let se = child.stderr.take();
    std::thread::scope(|s| {
        if let Some(so) = so {
            s.spawn(|| {
                for line in BufReader::new(so).lines().map_while(Result::ok) {
                    let _g = out.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = writeln!(std::io::stdout(), "{prefix}{line}");
                }
            });
        }
        if let Some(se) = se {
            s.spawn(|| {
                for line in BufReader::new(se).lines().map_while(Result::ok) {
                    let _g = out.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = writeln!(std::io::stderr(), "{prefix}{line}");
                }
            });
        }
    });
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(match status.code() {
            Some(255) => "the SSH connection failed".into(),
            Some(c) => format!("exit {c}"),
            None => "killed by a signal".into(),
        })
    }
}
