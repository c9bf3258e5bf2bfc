//! The kinds' JSON Schemas and the typed views of their inputs.

use std::collections::BTreeMap;

use ferry_protocol::{ActionSchema, KindSchema, Object, Operation, ProviderError};
use serde::Deserialize;
use serde_json::{json, Value};

pub const MANAGERS: [&str; 4] = ["supervisord", "s6", "sysvinit", "systemd"];

pub fn set() -> KindSchema {
    KindSchema {
        name: "set".into(),
        description:
            "A set of long-running processes under a process manager (supervisord, s6, sysvinit, systemd); \
                      make the inputs with ferry.lib.processes.set"
                .into(),
        inputs: json!({
            "type": "object",
            "required": ["manager", "processes", "profile", "stateDir"],
            "properties": {
                "host": ferry_hosts::spec::host_schema(true),
                "sshKey": ferry_hosts::spec::ssh_key_schema(),
                "manager": {"enum": MANAGERS},
                "processes": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["config"],
                        "properties": {
                            "config": {"type": "string"},
                            "dependsOn": {"type": "array", "items": {"type": "string"}},
                            "user": {"type": ["string", "null"]},
                            "group": {"type": ["string", "null"]}
                        }
                    }
                },
                "profile": {"type": "string", "description": "the set's profile (store path) built by ferry.lib.processes.set"},
                "profilePath": {"type": "string", "description": "the Nix profile [default: /nix/var/nix/profiles/ferry/processes-NAME]"},
                "stateDir": {"type": "string", "minLength": 1},
                "runtimeDir": {"type": "string"},
                "logDir": {"type": "string"},
                "forceDisableUserChange": {"type": "boolean", "default": false},
                "systemdDir": {"type": "string", "default": "/etc/systemd/system"},
                "startTimeout": {"type": "integer", "minimum": 1, "default": 30}
            }
        }),
        outputs: json!({
            "type": "object",
            "properties": {
                "host": {"type": "string", "description": "where the set runs: local, HOST[:PORT] or podman:CONTAINER"},
                "hostKey": {"type": ["string", "null"], "description": "the SSH host key, as verified or learned"},
                "profile": {"type": "string"},
                "profilePath": {"type": "string"},
                "generation": {"type": ["integer", "null"]},
                "processes": {"type": "object"}
            }
        }),
        sensitive_inputs: vec!["sshKey".into()],
        sensitive_outputs: vec![],
        output_names_input: None,
        operations: vec![
            Operation::Plan,
            Operation::Create,
            Operation::Read,
            Operation::Update,
            Operation::Delete,
        ],
        actions: vec![
            ActionSchema {
                name: "generations".into(),
                description: "list the set's profile generations".into(),
            },
            ActionSchema {
                name: "rollback".into(),
                description: "switch the processes to the previous generation (args: {to: N})".into(),
            },
            ActionSchema { name: "status".into(), description: "each process's live status".into() },
        ],
        builds_inputs: false,
        heavy_inputs: false,
    }
}

/// `processes.image`: a docker-archive made with `ferry.lib.processes.image`, loaded into
/// podman (see `image.rs`).
pub fn image() -> KindSchema {
    KindSchema {
        name: "image".into(),
        description:
            "A multi-process OCI image (docker-archive built by ferry.lib.processes.image) loaded into \
                      podman's image store under a name:tag"
                .into(),
        inputs: json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["archive", "ref"],
            "properties": {
                "archive": {"type": "string", "minLength": 1, "description": "the docker-archive tar (a store path: ferry builds it before loading)"},
                "ref": {"type": "string", "minLength": 1, "description": "NAME:TAG the image is tagged with (e.g. the image's `ref` attribute)"}
            }
        }),
        outputs: json!({
            "type": "object",
            "properties": {
                "ref": {"type": "string"},
                "imageId": {"type": "string", "description": "podman's image ID (the archive's config digest, 64 hex digits)"},
                "archive": {"type": "string"}
            }
        }),
        sensitive_inputs: vec![],
        sensitive_outputs: vec![],
        output_names_input: None,
        operations: vec![
            Operation::Plan,
            Operation::Create,
            Operation::Read,
            Operation::Update,
            Operation::Delete,
        ],
        actions: vec![],
        builds_inputs: false,
        heavy_inputs: false,
    }
}

pub fn pool() -> KindSchema {
    KindSchema {
        name: "pool".into(),
        description: "Sticky unique IDs (ports, uids, gids…): outputs POOL.CLAIMANT".into(),
        inputs: json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["pools"],
            "properties": {
                "pools": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["min", "max"],
                        "properties": {
                            "min": {"type": "integer", "minimum": 0},
                            "max": {"type": "integer", "minimum": 0},
                            "step": {"type": "integer", "minimum": 1, "default": 1}
                        }
                    }
                },
                "claimants": {
                    "type": "object",
                    "default": {},
                    "description": "{ CLAIMANT = [ POOL ... ]; } (e.g. ferry.lib.processes.claimants processes)",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}}
                }
            }
        }),
        outputs: json!({"type": "object", "properties": {}}),
        sensitive_inputs: vec![],
        sensitive_outputs: vec![],
        output_names_input: Some("claimants".into()),
        operations: vec![Operation::Create, Operation::Update, Operation::Delete],
        actions: vec![],
        builds_inputs: false,
        heavy_inputs: false,
    }
}

/// Typed `processes.set` inputs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetInputs {
    /// The `host` input (see [`crate::host::HostTarget`]).
    #[serde(default)]
    pub host: Value,
    pub manager: String,
    pub processes: BTreeMap<String, ProcessInput>,
    pub profile: String,
    pub profile_path: Option<String>,
    pub state_dir: String,
    /// Top-level because it is sensitive (the `host` object cannot hold it).
    #[serde(default)]
    pub ssh_key: Option<String>,
    #[serde(default)]
    pub force_disable_user_change: bool,
    #[serde(default = "systemd_dir")]
    pub systemd_dir: String,
    #[serde(default = "thirty")]
    pub start_timeout: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInput {
    pub config: String,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
}

fn systemd_dir() -> String {
    "/etc/systemd/system".into()
}
fn thirty() -> u64 {
    30
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && !n.starts_with('.')
        && !n.starts_with('-')
        && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// POSIX-ish user/group names, as `useradd` accepts them.
pub fn valid_user(n: &str) -> bool {
    let body = n.strip_suffix('$').unwrap_or(n);
    !body.is_empty()
        && n.len() <= 32
        && body.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && body.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

impl SetInputs {
    pub fn parse(name: &str, inputs: &Object) -> Result<SetInputs, ProviderError> {
        let s = Self::parse_unchecked(name, inputs)?;
        s.check(name)?;
        Ok(s)
    }

    /// Without the checks: for reading and undeploying what was recorded.
    pub fn parse_unchecked(name: &str, inputs: &Object) -> Result<SetInputs, ProviderError> {
        serde_json::from_value(Value::Object(inputs.clone()))
            .map_err(|e| ProviderError::invalid_input(format!("processes.set `{name}`: {e}")))
    }

    /// What the schema cannot say: names, dependencies (present, acyclic), users.
    fn check(&self, name: &str) -> Result<(), ProviderError> {
        let bad = |m: String| Err(ProviderError::invalid_input(format!("processes.set `{name}`: {m}")));
        if !MANAGERS.contains(&self.manager.as_str()) {
            return bad(format!("unknown manager `{}` (supported: {})", self.manager, MANAGERS.join(", ")));
        }
        if let Err(e) =
            crate::host::parse_target(&serde_json::Map::from_iter([("host".to_string(), self.host.clone())]))
        {
            return bad(e);
        }
        if !self.state_dir.starts_with('/') {
            return bad(format!("stateDir `{}` must be an absolute path", self.state_dir));
        }
        if !self.profile.starts_with("/nix/store/") {
            return bad(format!(
                "profile `{}` is not a store path: build it with ferry.lib.processes.set",
                self.profile
            ));
        }
        for (p, x) in &self.processes {
            if !valid_name(p) {
                return bad(format!("invalid process name `{p}`"));
            }
            for d in &x.depends_on {
                if !self.processes.contains_key(d) {
                    return bad(format!(
                        "process `{p}` depends on `{d}`, which is not a process of this set"
                    ));
                }
            }
            for (what, u) in [("user", &x.user), ("group", &x.group)] {
                if let Some(u) = u {
                    if !valid_user(u) {
                        return bad(format!("process `{p}`: invalid {what} name `{u}`"));
                    }
                }
            }
        }
        if let Some(cycle) = find_cycle(&self.processes) {
            return bad(format!("dependency cycle: {}", cycle.join(" -> ")));
        }
        Ok(())
    }
}

/// A dependency cycle, as a path that starts and ends with the same process.
fn find_cycle(ps: &BTreeMap<String, ProcessInput>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        ps: &BTreeMap<String, ProcessInput>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let i = stack.iter().position(|s| s == n).unwrap_or(0);
                let mut c = stack[i..].to_vec();
                c.push(n.to_string());
                return Some(c);
            }
            _ => {}
        }
        state.insert(n.into(), 1);
        stack.push(n.into());
        for d in ps.get(n).map(|p| p.depends_on.as_slice()).unwrap_or_default() {
            if let Some(c) = visit(d, ps, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n.into(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in ps.keys() {
        if let Some(c) = visit(n, ps, &mut state, &mut vec![]) {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(deps: &[&str]) -> ProcessInput {
        ProcessInput {
            config: "/nix/store/x".into(),
            depends_on: deps.iter().map(|s| s.to_string()).collect(),
            user: None,
            group: None,
        }
    }

    #[test]
    fn cycles_are_found() {
        let mut m = BTreeMap::new();
        m.insert("a".to_string(), p(&["b"]));
        m.insert("b".to_string(), p(&["c"]));
        m.insert("c".to_string(), p(&[]));
        assert_eq!(find_cycle(&m), None);
        m.insert("c".to_string(), p(&["a"]));
        assert_eq!(find_cycle(&m).unwrap(), ["a", "b", "c", "a"]);
    }

    #[test]
    fn user_names() {
        for ok in ["nobody", "www-data", "_x", "a1", "machine$"] {
            assert!(valid_user(ok), "{ok}");
        }
        for bad in ["", "Root", "1abc", "a b", "a/b", "x;rm", &"a".repeat(33)] {
            assert!(!valid_user(bad), "{bad}");
        }
    }
}
