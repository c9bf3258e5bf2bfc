//! Reading one machine: the host's profile, running system and keys, as drift against what
//! ferry deployed.

use ferry_hosts::HostError;
use ferry_protocol::sdk::CallContext;
use ferry_protocol::{Object, Prior, ProviderError, ReadResult};
use ferry_ssh::SshError;
use serde_json::{json, Value};

use crate::deploy::machine_outputs;
use crate::remote::{generation, host_err, known_host_key, Remote};
use crate::schema::{Goal, Machine};
use crate::{keys, NixosProvider};

/// read: the host's profile, running system and keys; drift against what ferry deployed.
pub fn read(
    p: &NixosProvider,
    _name: &str,
    inputs: &Object,
    outputs: Option<&Object>,
    _cx: &CallContext,
) -> Result<ReadResult, ProviderError> {
    let m = Machine::parse(inputs)?;
    let prior = outputs.map(|o| Prior { inputs: inputs.clone(), outputs: o.clone() });
    let r = match Remote::connect(&m, known_host_key(&m, prior.as_ref())) {
        Ok(r) => r,
        // Nothing is read from a host that is not verified. The mismatch is drift, so that a
        // deployment that pins the new key (`hostKey`, which wins over the recorded one) plans
        // the update that verifies it; without a new pin that update fails on the mismatch.
        Err(HostError::Ssh(e @ SshError::HostKeyMismatch { .. })) => {
            return Ok(ReadResult {
                exists: true,
                outputs: outputs.cloned(),
                inputs: None,
                drift: vec![e.to_string()],
            })
        }
        Err(e) => return Err(host_err(e)),
    };
    let probe = r.probe(&m.profile, &keys::paths(&m))?;
    let Some(recorded) = outputs else {
        // Adoption after an interrupted create: only a finished deploy counts.
        let done = match m.goal {
            Goal::Switch => probe.profile == m.system && probe.current == m.system,
            Goal::Boot => probe.profile == m.system,
            Goal::Test => probe.current == m.system,
            Goal::DryActivate => true,
        };
        if !done {
            return Ok(ReadResult { exists: false, outputs: None, inputs: None, drift: vec![] });
        }
        let system = if m.goal == Goal::DryActivate { probe.current.clone() } else { m.system.clone() };
        return Ok(ReadResult {
            exists: true,
            outputs: Some(machine_outputs(&m, &r, &system, &probe.link, &probe.boot)),
            inputs: None,
            drift: vec![],
        });
    };
    let deployed = recorded.get("systemPath").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut drift = vec![];
    // Inputs as found on the host, so that drift plans an update that puts things back.
    let mut actual = Object::new();
    if m.goal.sets_profile() && probe.profile != deployed {
        drift.push(if probe.profile.is_empty() {
            format!("{} no longer exists on the host", m.profile)
        } else {
            format!(
                "{} points to {} (generation {}), ferry deployed {}",
                m.profile,
                probe.profile,
                generation(&probe.link).map_or("?".into(), |g| g.to_string()),
                deployed
            )
        });
        actual.insert("system".into(), json!(probe.profile));
    }
    if matches!(m.goal, Goal::Switch | Goal::Test) && probe.current != deployed {
        drift.push(format!(
            "the running system (/run/current-system) is {}, ferry deployed {}",
            if probe.current.is_empty() { "(none)" } else { &probe.current },
            deployed
        ));
        actual.insert("system".into(), json!(probe.current));
    }
    if let Some(keys) = keys::drift(&m, inputs, &probe.keys, &mut drift) {
        actual.insert("keys".into(), keys);
    }
    // alwaysActivate (input or --always-activate): every apply activates, so plan an update.
    if drift.is_empty() && (m.always_activate || p.options().always_activate) && m.goal != Goal::DryActivate {
        drift.push("re-activation requested (alwaysActivate)".into());
        actual.insert("alwaysActivate".into(), json!(!m.always_activate));
    }
    let mut out = recorded.clone();
    out.insert("hostKey".into(), json!(r.host_key()));
    out.insert("bootId".into(), json!(probe.boot));
    let inputs = (!actual.is_empty()).then_some(actual);
    Ok(ReadResult { exists: true, outputs: Some(out), inputs, drift })
}
