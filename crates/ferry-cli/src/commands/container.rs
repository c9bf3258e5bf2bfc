//! `ferry container …`: operate containers, declared or not, and manage containers outside any
//! deployment (the `nixos-container` / `nixos-nspawn` verbs).
//!
//! A NAME that a deployment in this directory declares (an `nspawn.container` resource, by
//! resource or machine name) is *declared*: start/stop/restart/generations go through the
//! engine (state lock, outputs recorded), run/shell/show-ip reach it with its recorded host key,
//! and create/update/rollback/destroy are refused — change the deployment instead. Any other
//! NAME is looked up on `--host`; there, a container a deployment owns is refused as well (the
//! owner is recorded on the host).

use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use ferry_protocol::sdk::CallContext;
use ferry_protocol::{Object, Prior};
use ferry_provider_nspawn::container::{self, probe};
use ferry_provider_nspawn::host::Host;
use ferry_provider_nspawn::imperative::{self, Env};
use ferry_provider_nspawn::schema::{Container, HostSpec, SshHost};
use ferry_state::{ResourceRecord, StateStore};
use serde_json::{json, Value};

use crate::cli::{ContainerCommand, ContainerHost};
use crate::commands::{emit, Context};
use crate::error::Outcome;

const KIND: &str = "nspawn.container";

fn records(ctx: &Context) -> anyhow::Result<Vec<ResourceRecord>> {
    if !ctx.opts.state.exists() {
        return Ok(vec![]);
    }
    Ok(StateStore::open_existing(&ctx.opts.state)?.resources()?)
}

fn declared(ctx: &Context, name: &str) -> anyhow::Result<Option<ResourceRecord>> {
    Ok(records(ctx)?.into_iter().find(|r| {
        r.kind == KIND && (r.name == name || r.outputs.get("name").and_then(Value::as_str) == Some(name))
    }))
}

fn refuse_declared(rec: &ResourceRecord, verb: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "container `{}` is declared in this directory's deployment (resource `{}`): `ferry container {verb}` \
         only manages containers made with `ferry container create`; change the deployment and run `ferry apply`",
        rec.outputs.get("name").and_then(Value::as_str).unwrap_or(&rec.name),
        rec.name
    )
}

/// `--host`: local, a recorded machine, or `[user@]host[:port]` with a pinned key.
fn host_spec(ctx: &Context, h: &ContainerHost) -> anyhow::Result<HostSpec> {
    if h.host == "local" {
        return Ok(HostSpec::Local);
    }
    let s = |o: &Object, k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
    if let Some(m) = records(ctx)?.into_iter().find(|r| r.kind == "nixos.machine" && r.name == h.host) {
        let host =
            s(&m.inputs, "host").with_context(|| format!("machine `{}` has no recorded host", m.name))?;
        let host_key = h
            .host_key
            .clone()
            .or_else(|| s(&m.inputs, "hostKey"))
            .or_else(|| s(&m.outputs, "hostKey"))
            .filter(|k| !k.is_empty())
            .with_context(|| {
                format!("machine `{}` has no recorded host key: run `ferry apply` first", m.name)
            })?;
        return Ok(HostSpec::Ssh(SshHost {
            host,
            port: m.inputs.get("port").and_then(Value::as_u64).unwrap_or(22) as u16,
            user: s(&m.inputs, "user").unwrap_or_else(|| "root".into()),
            ssh_key: h.ssh_key.clone().or_else(|| s(&m.inputs, "sshKey")),
            host_key: Some(host_key),
            ssh_options: vec![],
            become_: m
                .inputs
                .get("become")
                .and_then(|b| serde_json::from_value(b.clone()).ok())
                .unwrap_or_default(),
        }));
    }
    let (user, rest) = match h.host.split_once('@') {
        Some((u, r)) => (u.to_string(), r.to_string()),
        None => ("root".to_string(), h.host.clone()),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((a, p)) if !a.contains(':') => {
            (a.to_string(), p.parse::<u16>().with_context(|| format!("--host {}: bad port `{p}`", h.host))?)
        }
        _ => (rest, 22),
    };
    let Some(host_key) = h.host_key.clone() else {
        anyhow::bail!(
            "--host {}: pass its public key with --host-key 'ssh-ed25519 AAAA…' (ferry does not trust an \
             unknown host key), or name a machine recorded in this directory's state",
            h.host
        );
    };
    Ok(HostSpec::Ssh(SshHost {
        host,
        port,
        user,
        ssh_key: h.ssh_key.clone(),
        host_key: Some(host_key),
        ssh_options: vec![],
        become_: Default::default(),
    }))
}

fn nix_args(ctx: &Context) -> Vec<String> {
    ctx.opts.nix_options.iter().flat_map(|(k, v)| ["--option".to_string(), k.clone(), v.clone()]).collect()
}

/// Evaluate a container settings file (an attribute set, or a function taking `{ }`), building
/// its `system`: the inputs of `nspawn.container`.
fn eval_config(ctx: &Context, file: &Path) -> anyhow::Result<Object> {
    let file = std::fs::canonicalize(file).with_context(|| format!("cannot read {}", file.display()))?;
    let f = file.to_string_lossy();
    let value = format!("(let c = import {f}; in if builtins.isFunction c then c {{ }} else c)");
    let run = |args: Vec<String>, what: &str| -> anyhow::Result<String> {
        let out = Command::new(&args[0])
            .args(&args[1..])
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", args[0]))?;
        if !out.status.success() {
            anyhow::bail!(
                "{what} {f} failed:\n{}",
                ferry_ssh::tail_lines(&String::from_utf8_lossy(&out.stderr), 20)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let mut eval = vec!["nix-instantiate".to_string(), "--eval".into(), "--strict".into(), "--json".into()];
    eval.extend(nix_args(ctx));
    let mut e = eval.clone();
    e.extend([
        "-E".into(),
        format!(
            "let v = {value}; in if !(builtins.isAttrs v) then throw \"{f}: expected an attribute set of container settings\" \
             else if !(v ? system) then throw \"{f}: `system` is missing\" \
             else builtins.removeAttrs v [ \"system\" ]"
        ),
    ]);
    let rest = run(e, "evaluating")?;
    let mut inputs: Object = serde_json::from_str::<Value>(&rest)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .with_context(|| format!("{f}: expected an attribute set"))?;
    let mut e = eval;
    let sys = format!("({value}).system");
    e.extend([
        "-E".into(),
        format!("let s = {sys}; in if builtins.isAttrs s && s ? drvPath then \"\" else toString s"),
    ]);
    let path: String = serde_json::from_str(&run(e, "evaluating the system of")?)?;
    let system = if path.is_empty() {
        // A derivation: instantiate (writes the .drv), then build.
        let mut i = vec!["nix-instantiate".to_string(), "-E".into(), sys];
        i.extend(nix_args(ctx));
        let drv = run(i, "instantiating the system of")?.lines().last().unwrap_or_default().to_string();
        let mut b = vec!["nix-store".to_string(), "--realise".into(), "--no-gc-warning".into(), drv];
        b.extend(nix_args(ctx));
        run(b, "building the system of")?.lines().last().unwrap_or_default().to_string()
    } else {
        path
    };
    inputs.insert("system".into(), json!(system));
    Ok(inputs)
}

fn parse(name: &str, inputs: &Object, host: HostSpec) -> anyhow::Result<Container> {
    let mut c = Container::parse(name, inputs).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    c.host = host;
    c.name = name.to_string();
    Ok(c)
}

fn pe(e: ferry_protocol::ProviderError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message)
}

/// The host of a declared container, its recorded host key, and the container.
fn declared_container(rec: &ResourceRecord) -> anyhow::Result<(Container, Prior)> {
    let c = Container::parse(&rec.name, &rec.inputs).map_err(pe)?;
    Ok((c, Prior { inputs: rec.inputs.clone(), outputs: rec.outputs.clone() }))
}

fn open(c: &Container, prior: Option<&Prior>) -> anyhow::Result<Host> {
    Host::open(&c.host, container::recorded_host_key(c, prior)).map_err(pe)
}

pub fn run(ctx: &Context, cmd: ContainerCommand) -> anyhow::Result<Outcome> {
    let cx = CallContext::detached();
    let env = Env { nix_args: nix_args(ctx) };
    match cmd {
        ContainerCommand::Create { name, config, host } => {
            if let Some(rec) = declared(ctx, &name)? {
                return Err(refuse_declared(&rec, "create"));
            }
            let spec = host_spec(ctx, &host)?;
            let mut inputs = eval_config(ctx, &config)?;
            inputs.insert("name".into(), json!(name));
            let c = parse(&name, &inputs, spec)?;
            let o = imperative::create(&env, &c, &inputs, &cx).map_err(pe)?;
            emit(&format!("created {name} on {}{}\n", c.host.label(), address_text(&o)))?;
        }
        ContainerCommand::Update { name, config, reload, restart, host } => {
            if let Some(rec) = declared(ctx, &name)? {
                return Err(refuse_declared(&rec, "update"));
            }
            let spec = host_spec(ctx, &host)?;
            let mut inputs = match &config {
                Some(f) => eval_config(ctx, f)?,
                None => imperative::load_config(&spec, &name).map_err(pe)?,
            };
            inputs.insert("name".into(), json!(name));
            let c = parse(&name, &inputs, spec)?;
            let force = if reload {
                Some("reload")
            } else if restart {
                Some("restart")
            } else {
                None
            };
            let o = imperative::update(&env, &c, &inputs, force, &cx).map_err(pe)?;
            emit(&format!(
                "updated {name}: generation {}\n",
                o.get("generation").map_or("?".to_string(), |g| g.to_string())
            ))?;
        }
        ContainerCommand::Rollback { name, to, host } => {
            if let Some(rec) = declared(ctx, &name)? {
                return Err(refuse_declared(&rec, "rollback"));
            }
            let c = imperative::by_name(host_spec(ctx, &host)?, &name).map_err(pe)?;
            emit(&format!("{}\n", imperative::rollback(&c, to).map_err(pe)?))?;
        }
        ContainerCommand::Destroy { name, purge, host } => {
            if let Some(rec) = declared(ctx, &name)? {
                return Err(refuse_declared(&rec, "destroy"));
            }
            let c = imperative::by_name(host_spec(ctx, &host)?, &name).map_err(pe)?;
            imperative::destroy(&c, purge, &cx).map_err(pe)?;
            emit(&format!(
                "destroyed {name}{}\n",
                if purge {
                    " and its data"
                } else {
                    " (its data stays in /var/lib/machines: --purge removes it)"
                }
            ))?;
        }
        ContainerCommand::List { host } => list(ctx, &host)?,
        ContainerCommand::Start { name, host } => return operate(ctx, &name, &host, "start", &cx),
        ContainerCommand::Stop { name, host } => return operate(ctx, &name, &host, "stop", &cx),
        ContainerCommand::Restart { name, host } => return operate(ctx, &name, &host, "restart", &cx),
        ContainerCommand::Generations { name, host } => {
            return operate(ctx, &name, &host, "generations", &cx)
        }
        ContainerCommand::ShowIp { name, host } => show_ip(ctx, &name, &host)?,
        ContainerCommand::Run { name, host, command } => {
            let (c, prior) = locate(ctx, &name, &host)?;
            let h = open(&c, prior.as_ref())?;
            let mut args: Vec<&str> = vec![&c.name];
            args.extend(command.iter().map(String::as_str));
            let status = h.interactive("exec", &args, false).map_err(pe);
            let status = status.and_then(|mut c| c.status().context("cannot run the command"));
            h.close();
            let status = status?;
            return Ok(if status.success() { Outcome::Success } else { Outcome::Failed });
        }
        ContainerCommand::Shell { name, host } => {
            let (c, prior) = locate(ctx, &name, &host)?;
            let h = open(&c, prior.as_ref())?;
            let status = h.interactive("exec", &[&c.name, "sh", "-l"], true).map_err(pe);
            let status = status.and_then(|mut c| c.status().context("cannot open a shell"));
            h.close();
            let status = status?;
            return Ok(if status.success() { Outcome::Success } else { Outcome::Failed });
        }
    }
    Ok(Outcome::Success)
}

/// `ferry container list`: the host's containers, with their owner and state.
fn list(ctx: &Context, host: &ContainerHost) -> anyhow::Result<()> {
    let spec = host_spec(ctx, host)?;
    let c = imperative::by_name(spec, "list").map_err(pe)?;
    let h = open(&c, None)?;
    let out = h.run("listing containers", "list", &[], None, 60).map_err(|e| pe(e.into()));
    h.close();
    let out = out?;
    let mut text = format!("{:<24} {:<11} {:<8} ADDRESSES\n", "NAME", "OWNER", "STATE");
    for l in out.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 3 {
            text.push_str(&format!("{:<24} {:<11} {:<8} {}\n", f[0], f[1], f[2], f[3..].join(" ")));
        }
    }
    emit(&text)?;
    Ok(())
}

/// `ferry container show-ip NAME`.
fn show_ip(ctx: &Context, name: &str, host: &ContainerHost) -> anyhow::Result<()> {
    let (c, prior) = locate(ctx, name, host)?;
    let h = open(&c, prior.as_ref())?;
    let pr = probe(&h, &c.name).map_err(pe);
    h.close();
    let pr = pr?;
    if pr.owner.is_empty() {
        anyhow::bail!("no container `{}` on {}", c.name, c.host.label());
    }
    for a in [&pr.address, &pr.address6] {
        if !a.is_empty() {
            emit(&format!("{a}\n"))?;
        }
    }
    if pr.address.is_empty() && pr.address6.is_empty() {
        emit("(host network)\n")?;
    }
    Ok(())
}

fn address_text(o: &Object) -> String {
    let a: Vec<&str> =
        ["address", "address6"].iter().filter_map(|k| o.get(*k).and_then(Value::as_str)).collect();
    if a.is_empty() {
        String::new()
    } else {
        format!(", address {}", a.join(", "))
    }
}

/// A declared container (with its record) or one on `--host`.
fn locate(ctx: &Context, name: &str, host: &ContainerHost) -> anyhow::Result<(Container, Option<Prior>)> {
    if let Some(rec) = declared(ctx, name)? {
        let (c, prior) = declared_container(&rec)?;
        return Ok((c, Some(prior)));
    }
    Ok((imperative::by_name(host_spec(ctx, host)?, name).map_err(pe)?, None))
}

/// start/stop/restart/generations: through the engine for a declared container (outputs
/// recorded), directly for an imperative one.
fn operate(
    ctx: &Context,
    name: &str,
    host: &ContainerHost,
    verb: &str,
    _cx: &CallContext,
) -> anyhow::Result<Outcome> {
    if let Some(rec) = declared(ctx, name)? {
        let progress = ctx.progress();
        let engine = ctx.engine(&progress)?;
        let result = engine.action(&rec.name, verb, Object::new())?;
        if let Some(m) = result.message {
            emit(&format!("{}\n", m.trim_end()))?;
        }
        return Ok(Outcome::Success);
    }
    let c = imperative::by_name(host_spec(ctx, host)?, name).map_err(pe)?;
    {
        let h = open(&c, None)?;
        let pr = probe(&h, name).map_err(pe);
        h.close();
        if pr?.owner.is_empty() {
            anyhow::bail!("no container `{name}` on {} (see `ferry container list`)", c.host.label());
        }
    }
    let (_, msg) = container::action(&c, None, verb).map_err(pe)?;
    emit(&format!("{}\n", msg.trim_end()))?;
    Ok(Outcome::Success)
}
