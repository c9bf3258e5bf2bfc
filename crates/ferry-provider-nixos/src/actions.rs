//! The named actions of `nixos.machine`: generations, rollback, gc, reboot, upload-keys.

use std::time::{Duration, Instant};

use ferry_protocol::sdk::CallContext;
use ferry_protocol::{ActionParams, ActionResult, Prior, ProviderError};
use serde_json::{json, Value};

use ferry_hosts::{HostExec, Script};

use crate::remote::{err, generation, host_err, known_host_key, kv, Probe, Remote};
use crate::schema::Machine;
use crate::{keys, NixosProvider};

/// Named actions: generations, rollback, gc, reboot, upload-keys.
pub fn action(_p: &NixosProvider, a: &ActionParams, cx: &CallContext) -> Result<ActionResult, ProviderError> {
    let m = Machine::parse(&a.inputs)?;
    let prior = Prior { inputs: a.inputs.clone(), outputs: a.outputs.clone() };
    let r = Remote::open(&m, known_host_key(&m, Some(&prior)))?;
    let probe = r.probe(&m.profile, &[])?;
    let long = Duration::from_secs(m.activation_timeout);
    match a.action.as_str() {
        "generations" => {
            let out =
                r.run("listing generations", "generations", &[&m.profile], None, long).map_err(host_err)?;
            Ok(ActionResult { outputs: None, message: Some(out.trim_end().to_string()) })
        }
        "rollback" => {
            let to = match a.args.get("to") {
                None | Some(Value::Null) => String::new(),
                Some(v) => v
                    .as_u64()
                    .map(|g| g.to_string())
                    .ok_or_else(|| err("rollback: `to` must be a generation number").code("invalidInput"))?,
            };
            cx.progress("activate", "switching generation");
            let out = r
                .run("rolling back", "switch-generation", &[&m.profile, &to], None, long)
                .map_err(host_err)?;
            let link = kv(&out, "link");
            let after = r.probe(&m.profile, &[])?;
            // Outputs keep what ferry deployed: the next plan shows the rollback as drift.
            let from = generation(&probe.link).map_or("?".into(), |g| g.to_string());
            let to = generation(&link).map_or("?".into(), |g| g.to_string());
            Ok(ActionResult {
                outputs: None,
                message: Some(format!("{}: generation {from} → {to} ({})", m.host, after.profile)),
            })
        }
        "gc" => {
            let keep = a.args.get("keep").and_then(Value::as_u64).unwrap_or(5).max(1);
            let out = r
                .run("collecting garbage", "gc", &[&m.profile, &keep.to_string()], None, long)
                .map_err(host_err)?;
            Ok(ActionResult {
                outputs: None,
                message: Some(format!("kept the newest {keep} generation(s)\n{}", out.trim_end())),
            })
        }
        "upload-keys" => {
            keys::upload(&r, &m, None, cx)?;
            Ok(ActionResult { outputs: None, message: Some(format!("{} key(s) uploaded", m.keys.len())) })
        }
        "reboot" => reboot(&r, &m, &probe, a, cx),
        other => Err(err(format!(
            "nixos.machine has no action `{other}` (actions: generations, rollback, gc, reboot, upload-keys)"
        ))
        .code("badRequest")),
    }
}

fn reboot(
    r: &Remote,
    m: &Machine,
    before: &Probe,
    a: &ActionParams,
    cx: &CallContext,
) -> Result<ActionResult, ProviderError> {
    let wait = a.args.get("timeout").and_then(Value::as_u64).unwrap_or(300);
    cx.progress("reboot", "rebooting");
    // The system's own reboot (NixOS: /run/current-system/sw/bin/reboot), detached so the
    // SSH session can end cleanly.
    let cmd = "p=/run/current-system/sw/bin/reboot; [ -x $p ] || p=reboot; \
               (sleep 1; exec $p) </dev/null >/dev/null 2>&1 &";
    r.host.run(&Script::new("reboot", cmd).timeout(Duration::from_secs(30))).map_err(host_err)?;
    r.host.close();
    cx.progress("reboot", "waiting for the new boot");
    let deadline = Instant::now() + Duration::from_secs(wait);
    std::thread::sleep(Duration::from_secs(1));
    while Instant::now() < deadline {
        if let Ok(fresh) = Remote::open(m, Some(r.host_key())) {
            if let Ok(p) = fresh.probe(&m.profile, &[]) {
                if !p.boot.is_empty() && p.boot != before.boot {
                    let mut o = a.outputs.clone();
                    o.insert("bootId".into(), json!(p.boot));
                    if m.goal.sets_profile() && p.current != p.profile {
                        return Err(err(format!(
                            "{} came back with {} running, but the profile is {}",
                            m.host, p.current, p.profile
                        )));
                    }
                    return Ok(ActionResult {
                        outputs: Some(o),
                        message: Some(format!("{} is back (boot id {})", m.host, p.boot)),
                    });
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(err(format!("{} did not come back with a new boot id within {wait} s", m.host)).code("timeout"))
}
