//! The run-wide options of the handshake (`docs/provider-protocol.md` §2.2.1), typed.
//!
//! On the wire they stay an open JSON object ([`crate::HandshakeParams::options`]): a provider
//! MUST ignore options it does not know, and an absent option means the provider's default.
//! [`RunOptions`] is the view of the options this version of the protocol defines.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Object;

/// The options ferry sends every provider in its handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOptions {
    /// `ferry apply --force`: overwrite what ferry did not deploy.
    #[serde(default)]
    pub force: bool,
    /// `ferry apply --always-activate`: re-apply even what already matches.
    #[serde(default)]
    pub always_activate: bool,
    /// `--nix-option NAME VALUE`, `--max-jobs`, `FERRY_NIX_OPTIONS`: for every Nix command, in
    /// order (later pairs win).
    #[serde(default)]
    pub nix_options: Vec<(String, String)>,
    /// `--copy-jobs`: copies to hosts at once, across the provider's resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_jobs: Option<usize>,
    /// `--activate-jobs`: activations at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activate_jobs: Option<usize>,
}

impl RunOptions {
    /// The options in a handshake's `options` object. Unknown options are ignored, and so is a
    /// known one with a value of the wrong type (it means the default), so that a newer ferry
    /// never breaks an older provider.
    pub fn from_object(o: &Object) -> RunOptions {
        let flag = |k: &str| o.get(k).and_then(Value::as_bool).unwrap_or(false);
        let jobs = |k: &str| o.get(k).and_then(Value::as_u64).map(|v| v.max(1) as usize);
        RunOptions {
            force: flag("force"),
            always_activate: flag("alwaysActivate"),
            nix_options: o
                .get("nixOptions")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|p| {
                            let p = p.as_array()?;
                            Some((p.first()?.as_str()?.to_string(), p.get(1)?.as_str()?.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            copy_jobs: jobs("copyJobs"),
            activate_jobs: jobs("activateJobs"),
        }
    }

    /// The handshake's `options` object (`copyJobs`/`activateJobs` only when given).
    pub fn to_object(&self) -> Object {
        match serde_json::to_value(self) {
            Ok(Value::Object(o)) => o,
            _ => Object::new(),
        }
    }

    /// `--option NAME VALUE` for Nix commands.
    pub fn nix_args(&self) -> Vec<String> {
        self.nix_options.iter().flat_map(|(k, v)| ["--option".to_string(), k.clone(), v.clone()]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_round_trip_and_unknown_ones_are_ignored() {
        let o = json!({"force": true, "alwaysActivate": false, "nixOptions": [["substituters", ""], ["max-jobs", "4"]],
                       "copyJobs": 2, "somethingNew": {"x": 1}});
        let r = RunOptions::from_object(o.as_object().unwrap());
        assert!(r.force && !r.always_activate);
        assert_eq!(r.nix_options, vec![("substituters".into(), "".into()), ("max-jobs".into(), "4".into())]);
        assert_eq!((r.copy_jobs, r.activate_jobs), (Some(2), None));
        assert_eq!(r.nix_args(), ["--option", "substituters", "", "--option", "max-jobs", "4"]);
        assert_eq!(
            Value::Object(r.to_object()),
            json!({"force": true, "alwaysActivate": false, "nixOptions": [["substituters", ""], ["max-jobs", "4"]], "copyJobs": 2})
        );
    }

    #[test]
    fn wrong_types_mean_the_default() {
        let o = json!({"force": "yes", "copyJobs": 0, "nixOptions": [["a"], "b", ["c", "d"]]});
        let r = RunOptions::from_object(o.as_object().unwrap());
        assert!(!r.force);
        assert_eq!(r.copy_jobs, Some(1), "at least one");
        assert_eq!(r.nix_options, vec![("c".into(), "d".into())]);
        assert_eq!(RunOptions::from_object(&Object::new()), RunOptions::default());
    }
}
