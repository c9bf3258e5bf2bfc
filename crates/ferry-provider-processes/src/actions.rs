//! `processes.set`'s named actions: `generations`, `rollback` (switch the processes to an
//! older generation, then the profile), `status`.

use std::time::Duration;

use ferry_protocol::sdk::CallContext;
use ferry_protocol::{ActionParams, ActionResult, ProviderError};
use serde_json::Value;

use crate::host::{command_line, Host};
use crate::manager::{units_of, Mgr};
use crate::schema::SetInputs;
use crate::scripts::common;
use crate::set::{current_profile, err, generation, open_host, profile_path, read_manifest, switch};
use crate::Options;

fn generations(host: &Host, path: &str) -> Result<Vec<(u64, String)>, ProviderError> {
    let out = host.sh("listing generations", &common("profile_generations", &[path]))?;
    let mut g: Vec<(u64, String)> = out
        .lines()
        .filter_map(|l| {
            let (link, target) = l.split_once(' ')?;
            Some((generation(link)?, target.to_string()))
        })
        .collect();
    g.sort();
    Ok(g)
}

pub fn action(opts: &Options, p: &ActionParams, cx: &CallContext) -> Result<ActionResult, ProviderError> {
    let name = &p.resource;
    let s = SetInputs::parse_unchecked(name, &p.inputs)?;
    let host = open_host(name, &s, Some(&p.outputs))?;
    let path = profile_path(name, &s);
    let cur = current_profile(&host, &path)?;
    match p.action.as_str() {
        "generations" => {
            let gens = generations(&host, &path)?;
            let current = cur.and_then(|c| c.1);
            let text: Vec<String> = gens
                .iter()
                .map(|(g, t)| format!("{g:>4}  {t}{}", if Some(*g) == current { "  (current)" } else { "" }))
                .collect();
            Ok(ActionResult { outputs: None, message: Some(text.join("\n")) })
        }
        "status" => {
            let store = cur.map(|c| c.0).unwrap_or_else(|| s.profile.clone());
            let m = read_manifest(&host, &store)?;
            let mgr = Mgr::new(&host, &m, &s.systemd_dir);
            let names: Vec<String> = m.order.clone();
            let st = mgr.status(&names)?;
            let text: Vec<String> = names.iter().map(|n| format!("{n}: {}", st[n].describe())).collect();
            Ok(ActionResult { outputs: None, message: Some(text.join("\n")) })
        }
        "rollback" => {
            let Some((cur_store, Some(cur_gen))) = cur else {
                return Err(err(name, format!("{path} has no generations to roll back from")));
            };
            let gens = generations(&host, &path)?;
            let want = p.args.get("to").and_then(Value::as_u64);
            let target = match want {
                Some(n) => gens.iter().find(|g| g.0 == n).cloned().ok_or_else(|| {
                    err(
                        name,
                        format!(
                            "no generation {n} (generations: {})",
                            gens.iter().map(|g| g.0.to_string()).collect::<Vec<_>>().join(", ")
                        ),
                    )
                })?,
                None => gens.iter().rev().find(|g| g.0 < cur_gen).cloned().ok_or_else(|| {
                    err(name, format!("generation {cur_gen} is the oldest: nothing to roll back to"))
                })?,
            };
            let link = format!("{path}-{}-link", target.0);
            let target_store =
                host.sh("resolving the generation", &command_line(&["readlink", "-f", &link]))?;
            let target_store = target_store.trim().to_string();
            let tm = read_manifest(&host, &target_store)?;
            let om = read_manifest(&host, &cur_store).ok();
            let mut mgr = Mgr::new(&host, &tm, &s.systemd_dir);
            if let Some(o) = &om {
                mgr.units.extend(units_of(o));
            }
            let timeout = Duration::from_secs(s.start_timeout);
            let sum = match switch(&mgr, &tm, Some(&target_store), om.as_ref(), timeout, cx) {
                Ok(sum) => sum,
                Err(e) => {
                    if let Some(o) = &om {
                        let _ = switch(&mgr, o, Some(&cur_store), Some(&tm), timeout, cx);
                    }
                    return Err(ProviderError::new(format!("{}; stayed on generation {cur_gen}", e.message)));
                }
            };
            let mut args = vec![path.clone(), target.0.to_string()];
            args.extend(opts.nix_args());
            host.sh("switching the profile generation", &common("profile_switch", &args))?;
            Ok(ActionResult {
                outputs: None,
                message: Some(format!("rolled back to generation {}: {}", target.0, sum.describe())),
            })
        }
        other => Err(err(name, format!("no action `{other}` (actions: generations, rollback, status)"))
            .code("badRequest")),
    }
}
