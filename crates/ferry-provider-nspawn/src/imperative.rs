//! Containers outside any deployment (`ferry container create|update|rollback|destroy`), in the
//! manner of `nixos-container`. Their inputs are kept on the host (`config.json`, 0600, in
//! ferry's directory for the container) so that `update` and `rollback` need no file; their
//! owner is recorded as `imperative`, and every verb that changes a container refuses one a
//! deployment owns.

use std::collections::BTreeMap;

use ferry_protocol::sdk::CallContext;
use ferry_protocol::{Object, Prior, ProviderError};
use serde_json::Value;

use crate::container::{self, probe, Deps, OWNER_DEPLOYMENT, OWNER_IMPERATIVE};
use crate::host::Host;
use crate::schema::{Container, HostSpec};
use crate::unit;

fn err(msg: impl Into<String>) -> ProviderError {
    ProviderError::new(msg)
}

/// Nix options and the run's limits for imperative verbs.
pub struct Env {
    pub nix_args: Vec<String>,
}

fn refuse_owned(name: &str, owner: &str, host: &str) -> Result<(), ProviderError> {
    if owner == OWNER_DEPLOYMENT {
        return Err(err(format!(
            "container `{name}` on {host} is owned by a deployment: change it in its deployment and run \
             `ferry apply` there (imperative verbs only manage containers made with `ferry container create`)"
        ))
        .code("conflict"));
    }
    Ok(())
}

fn config_path(name: &str) -> String {
    format!("{}/config.json", unit::state_dir(name))
}

fn with_host<T>(
    spec: &HostSpec,
    host_key: Option<String>,
    f: impl FnOnce(&Host) -> Result<T, ProviderError>,
) -> Result<T, ProviderError> {
    let h = Host::open(spec, host_key)?;
    let r = f(&h);
    h.close();
    r
}

fn deps_run(
    env: &Env,
    c: &Container,
    prior: Option<&Prior>,
    cx: &CallContext,
) -> Result<Object, ProviderError> {
    let builder = ferry_hosts::build::Builder::default();
    let slots = ferry_hosts::Slots::new(1);
    let context = BTreeMap::new();
    let deps = Deps {
        builder: &builder,
        nix_args: env.nix_args.clone(),
        context: &context,
        owner: OWNER_IMPERATIVE,
        copy_slots: &slots,
    };
    container::deploy(&deps, c, prior, cx)
}

/// `create NAME`: a new container from `inputs` (the system already built).
pub fn create(env: &Env, c: &Container, inputs: &Object, cx: &CallContext) -> Result<Object, ProviderError> {
    let h = Host::open(&c.host, None)?;
    let pr = probe(&h, &c.name);
    let host_key = h.host_key();
    h.close();
    let pr = pr?;
    if pr.exists || !pr.owner.is_empty() {
        refuse_owned(&c.name, &pr.owner, &c.host.label())?;
        return Err(err(format!(
            "container `{}` already exists on {}: use `ferry container update {}`, or destroy it first",
            c.name,
            c.host.label(),
            c.name
        ))
        .code("conflict"));
    }
    let outputs = deps_run(env, c, None, cx)?;
    save_config(c, inputs, host_key)?;
    Ok(outputs)
}

fn save_config(c: &Container, inputs: &Object, host_key: Option<String>) -> Result<(), ProviderError> {
    with_host(&c.host, host_key, |h| {
        let body = serde_json::to_vec(inputs).map_err(|e| err(e.to_string()))?;
        h.run("saving the container's settings", "write", &[&config_path(&c.name), "0600"], Some(&body), 30)?;
        Ok(())
    })
}

/// The inputs an imperative container was created or last updated with.
pub fn load_config(spec: &HostSpec, name: &str) -> Result<Object, ProviderError> {
    with_host(spec, None, |h| {
        let pr = probe(h, name)?;
        if pr.owner.is_empty() {
            return Err(err(format!(
                "no container `{name}` on {} (see `ferry container list`)",
                spec.label()
            )));
        }
        refuse_owned(name, &pr.owner, &spec.label())?;
        let out = h.run("reading the container's settings", "read-file", &[&config_path(name)], None, 30)?;
        serde_json::from_str::<Value>(&out)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .ok_or_else(|| err(format!("{} on {} is not valid JSON", config_path(name), spec.label())))
    })
}

/// `update NAME`: new inputs (or the saved ones), then activate per the strategy, or force a
/// reload or restart.
pub fn update(
    env: &Env,
    c: &Container,
    inputs: &Object,
    force: Option<&str>,
    cx: &CallContext,
) -> Result<Object, ProviderError> {
    let prior_inputs = load_config(&c.host, &c.name)?;
    let prior = Prior { inputs: prior_inputs, outputs: Object::new() };
    let mut c = c.clone();
    if let Some(f) = force {
        c.strategy =
            if f == "reload" { crate::schema::Strategy::Reload } else { crate::schema::Strategy::Restart };
    }
    let outputs = deps_run(env, &c, Some(&prior), cx)?;
    if force == Some("restart") {
        container::action(&c, None, "restart")?;
    }
    save_config(&c, inputs, None)?;
    Ok(outputs)
}

/// `rollback NAME [--to GEN]`: switch the profile back and reload the running container.
pub fn rollback(c: &Container, to: Option<u64>) -> Result<String, ProviderError> {
    with_host(&c.host, None, |h| {
        let pr = probe(h, &c.name)?;
        if pr.owner.is_empty() {
            return Err(err(format!(
                "no container `{}` on {} (see `ferry container list`)",
                c.name, h.label
            )));
        }
        refuse_owned(&c.name, &pr.owner, &h.label)?;
        let gen = to.map_or("previous".to_string(), |g| g.to_string());
        let out = h.run("switching the generation", "switch-generation", &[&c.name, &gen], None, 60)?;
        let link = out.lines().find_map(|l| l.strip_prefix("link=")).unwrap_or_default().to_string();
        if pr.running() {
            // A failed reload puts the profile back to where it was before this rollback.
            crate::reload::reload(h, &c.name, &pr.link)?;
        }
        Ok(format!(
            "{} is at generation {}{}",
            c.name,
            container::generation(&link).map_or("?".into(), |g| g.to_string()),
            if pr.running() { " (reloaded)" } else { " (stopped: it runs on next start)" }
        ))
    })
}

/// `destroy NAME [--purge]`.
pub fn destroy(c: &Container, purge: bool, cx: &CallContext) -> Result<(), ProviderError> {
    let (pr, claimed) = with_host(&c.host, None, |h| {
        let pr = probe(h, &c.name)?;
        let claimed = crate::addresses::claims(h)?.values().any(|holder| *holder == c.name);
        Ok((pr, claimed))
    })?;
    if pr.owner.is_empty() && !pr.exists && !pr.has_files && !claimed {
        return Err(err(format!("no container `{}` on {}", c.name, c.host.label())));
    }
    // What a create that never completed left may be removed here, whoever started it: no
    // deployment records it as a container (it may record the create as failed or pending).
    if !pr.incomplete {
        refuse_owned(&c.name, &pr.owner, &c.host.label())?;
    }
    container::destroy(c, None, purge, cx)
}

/// A container known only by name (for verbs that need no system).
pub fn by_name(host: HostSpec, name: &str) -> Result<Container, ProviderError> {
    crate::schema::validate_name(name)?;
    let mut c = Container::parse(
        name,
        &serde_json::json!({"system": "/nix/store/unknown", "network": {"mode": "host"}})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    )?;
    c.host = host;
    Ok(c)
}
