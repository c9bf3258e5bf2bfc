//! The `nixos.machine` kind: its JSON Schemas and the typed view of its inputs.

use std::collections::BTreeMap;

use ferry_hosts::{Become, HostSpec, SshHost};
use ferry_protocol::{ActionSchema, KindSchema, Object, Operation, ProviderError};
use serde::Deserialize;
use serde_json::json;

pub fn machine() -> KindSchema {
    KindSchema {
        name: "machine".into(),
        description: "A NixOS machine over SSH: build, copy, activate, keys, health checks, rollback".into(),
        inputs: json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["system", "host"],
            "properties": {
                "system": {"type": "string", "description": "the system toplevel (a derivation or store path with bin/switch-to-configuration)"},
                "goal": {"enum": ["switch", "boot", "test", "dry-activate"], "default": "switch"},
                "profile": {"type": "string", "default": "/nix/var/nix/profiles/system"},
                "host": {"type": "string", "minLength": 1},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 22},
                "user": {"type": "string", "default": "root", "description": "root, or a user that becomes root without a password (see `become`)"},
                "become": ferry_hosts::spec::become_schema(),
                "sshKey": {"type": "string", "description": "private key file path, or the key itself (e.g. resources.key.privateKey)"},
                "hostKey": {"type": "string", "description": "pinned public host key `ssh-ed25519 AAAA…`; otherwise trust on first use, recorded in state"},
                "sshOptions": {"type": "array", "items": {"type": "string"}, "default": []},
                "buildOn": {"enum": ["local", "target"], "default": "local"},
                "substituteOnDestination": {"type": "boolean", "default": false},
                "alwaysActivate": {"type": "boolean", "default": false},
                "replaceUnknownProfiles": {"type": "boolean", "default": false},
                "activationTimeout": {"type": "integer", "minimum": 1, "default": 600},
                "keys": {
                    "type": "object",
                    "default": {},
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "text": {"type": "string"},
                            "file": {"type": "string", "description": "a file on the deployer (a string, not a Nix path: a Nix path copies the secret into the store)"},
                            "command": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                            "user": {"type": "string", "default": "root"},
                            "group": {"type": "string", "default": "root"},
                            "permissions": {"type": "string", "pattern": "^0?[0-7]{3}$", "default": "0600"},
                            "destDir": {"type": "string", "default": "/run/keys"},
                            "uploadAt": {"enum": ["pre-activation", "post-activation"], "default": "pre-activation"}
                        }
                    }
                },
                "healthChecks": {
                    "type": "array",
                    "default": [],
                    "items": {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "command": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                            "http": {"type": "string"},
                            "status": {"type": "integer", "default": 200},
                            "timeout": {"type": "integer", "minimum": 1, "default": 10},
                            "retries": {"type": "integer", "minimum": 0, "default": 3},
                            "interval": {"type": "integer", "minimum": 0, "default": 2}
                        }
                    }
                },
                "rollback": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "onFailure": {"type": "boolean", "default": true},
                        "magic": {
                            "type": "object",
                            "additionalProperties": false,
                            "properties": {
                                "enable": {"type": "boolean", "default": true},
                                "confirmTimeout": {"type": "integer", "minimum": 1, "default": 30}
                            }
                        }
                    }
                }
            }
        }),
        outputs: json!({
            "type": "object",
            "properties": {
                "host": {"type": "string"},
                "port": {"type": "integer"},
                "user": {"type": "string"},
                "generation": {"type": ["integer", "null"]},
                "systemPath": {"type": "string"},
                "hostKey": {"type": "string"},
                "bootId": {"type": "string"}
            }
        }),
        sensitive_inputs: vec!["sshKey".into(), "keys".into()],
        sensitive_outputs: vec![],
        output_names_input: None,
        operations: vec![Operation::Create, Operation::Read, Operation::Update, Operation::Delete],
        actions: vec![
            ActionSchema {
                name: "generations".into(),
                description: "list the system profile's generations".into(),
            },
            ActionSchema {
                name: "rollback".into(),
                description: "switch to the previous generation (args: {to: N})".into(),
            },
            ActionSchema {
                name: "gc".into(),
                description: "delete all but the newest {keep: N} generations, collect garbage".into(),
            },
            ActionSchema { name: "reboot".into(), description: "reboot and wait for the new boot id".into() },
            ActionSchema { name: "upload-keys".into(), description: "upload every key again".into() },
        ],
        builds_inputs: true,
        heavy_inputs: true,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Goal {
    Switch,
    Boot,
    Test,
    DryActivate,
}

impl Goal {
    pub fn as_str(self) -> &'static str {
        match self {
            Goal::Switch => "switch",
            Goal::Boot => "boot",
            Goal::Test => "test",
            Goal::DryActivate => "dry-activate",
        }
    }
    /// Goals that set the profile.
    pub fn sets_profile(self) -> bool {
        matches!(self, Goal::Switch | Goal::Boot)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildOn {
    Local,
    Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UploadAt {
    PreActivation,
    PostActivation,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Key {
    pub text: Option<String>,
    pub file: Option<String>,
    pub command: Option<Vec<String>>,
    #[serde(default = "root")]
    pub user: String,
    #[serde(default = "root")]
    pub group: String,
    #[serde(default = "perms")]
    pub permissions: String,
    #[serde(default = "keys_dir")]
    pub dest_dir: String,
    #[serde(default = "pre")]
    pub upload_at: UploadAt,
}

impl Key {
    pub fn dest(&self, name: &str) -> String {
        format!("{}/{}", self.dest_dir.trim_end_matches('/'), name)
    }
    /// Permissions as `stat -c %a` prints them (no leading zero).
    pub fn mode(&self) -> String {
        let p = self.permissions.trim_start_matches('0');
        if p.is_empty() {
            "0".into()
        } else {
            p.into()
        }
    }
    /// Everything about the key except its content (which is compared by the caller).
    pub fn placement(&self) -> (String, String, String, String) {
        (self.user.clone(), self.group.clone(), self.permissions.clone(), self.dest_dir.clone())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Check {
    pub command: Option<Vec<String>>,
    pub http: Option<String>,
    #[serde(default = "status_ok")]
    pub status: u16,
    #[serde(default = "ten")]
    pub timeout: u64,
    #[serde(default = "three")]
    pub retries: u32,
    #[serde(default = "two")]
    pub interval: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Magic {
    #[serde(default = "yes")]
    pub enable: bool,
    #[serde(default = "thirty")]
    pub confirm_timeout: u64,
}

impl Default for Magic {
    fn default() -> Self {
        Magic { enable: true, confirm_timeout: 30 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rollback {
    #[serde(default = "yes")]
    pub on_failure: bool,
    #[serde(default)]
    pub magic: Magic,
}

impl Default for Rollback {
    fn default() -> Self {
        Rollback { on_failure: true, magic: Magic::default() }
    }
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Machine {
    pub system: String,
    #[serde(default = "switch")]
    pub goal: Goal,
    #[serde(default = "system_profile")]
    pub profile: String,
    pub host: String,
    #[serde(default = "port22")]
    pub port: u16,
    #[serde(default = "root")]
    pub user: String,
    pub ssh_key: Option<String>,
    pub host_key: Option<String>,
    #[serde(default)]
    pub ssh_options: Vec<String>,
    /// How a non-root `user` becomes root.
    #[serde(default, rename = "become")]
    pub become_: Become,
    #[serde(default = "local")]
    pub build_on: BuildOn,
    #[serde(default)]
    pub substitute_on_destination: bool,
    #[serde(default)]
    pub always_activate: bool,
    #[serde(default)]
    pub replace_unknown_profiles: bool,
    #[serde(default = "six_hundred")]
    pub activation_timeout: u64,
    #[serde(default)]
    pub keys: BTreeMap<String, Key>,
    #[serde(default)]
    pub health_checks: Vec<Check>,
    #[serde(default)]
    pub rollback: Rollback,
}

fn root() -> String {
    "root".into()
}
fn perms() -> String {
    "0600".into()
}
fn keys_dir() -> String {
    "/run/keys".into()
}
fn pre() -> UploadAt {
    UploadAt::PreActivation
}
fn status_ok() -> u16 {
    200
}
fn ten() -> u64 {
    10
}
fn three() -> u32 {
    3
}
fn two() -> u64 {
    2
}
fn yes() -> bool {
    true
}
fn thirty() -> u64 {
    30
}
fn switch() -> Goal {
    Goal::Switch
}
fn system_profile() -> String {
    "/nix/var/nix/profiles/system".into()
}
fn port22() -> u16 {
    22
}
fn local() -> BuildOn {
    BuildOn::Local
}
fn six_hundred() -> u64 {
    600
}

impl Machine {
    /// The machine as a host: an SSH target (host key pinned, else `recorded`, else learned).
    pub fn host_spec(&self) -> HostSpec {
        HostSpec::Ssh(SshHost {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            ssh_key: self.ssh_key.clone(),
            host_key: self.host_key.clone(),
            ssh_options: self.ssh_options.clone(),
            become_: self.become_,
        })
    }

    /// Parse and check the inputs. Messages name the input; key contents never appear.
    pub fn parse(inputs: &Object) -> Result<Machine, ProviderError> {
        let m: Machine = serde_json::from_value(serde_json::Value::Object(inputs.clone()))
            .map_err(|e| ProviderError::new(format!("invalid inputs: {e}")).code("invalidInput"))?;
        let bad = |msg: String| Err(ProviderError::new(msg).code("invalidInput"));
        if !m.system.starts_with('/') {
            return bad(format!(
                "`system` must be a store path or derivation (got {:?}): use e.g. `nixos.config.system.build.toplevel`",
                m.system
            ));
        }
        if !m.profile.starts_with('/') {
            return bad(format!("`profile` must be an absolute path (got {:?})", m.profile));
        }
        for (name, k) in &m.keys {
            if name.is_empty()
                || name.contains('/')
                || name == "."
                || name == ".."
                || name.chars().any(char::is_control)
            {
                return bad(format!("key name {name:?} is not a file name"));
            }
            let sources = [k.text.is_some(), k.file.is_some(), k.command.is_some()];
            if sources.iter().filter(|s| **s).count() != 1 {
                return bad(format!("key `{name}` needs exactly one of `text`, `file`, `command`"));
            }
            if let Some(f) = &k.file {
                if f.starts_with("/nix/store/") {
                    return bad(format!(
                        "key `{name}`: `file` is in the Nix store ({f}), which is world-readable; write the path as \
                         a string (\"/path/to/secret\"), not a Nix path literal, so it is never copied there"
                    ));
                }
                if !f.starts_with('/') {
                    return bad(format!("key `{name}`: `file` must be an absolute path"));
                }
            }
            if !k.dest_dir.starts_with('/') {
                return bad(format!("key `{name}`: `destDir` must be an absolute path"));
            }
            if k.dest_dir.split('/').any(|c| c == "." || c == "..")
                || k.dest_dir.chars().any(char::is_control)
            {
                return bad(format!(
                    "key `{name}`: `destDir` {:?} must be a plain absolute path (no `.` or `..`, no control characters)",
                    k.dest_dir
                ));
            }
            if k.dest_dir == "/nix/store" || k.dest_dir.starts_with("/nix/store/") {
                return bad(format!("key `{name}`: `destDir` is in the Nix store, which is world-readable"));
            }
            for (what, v) in [("user", &k.user), ("group", &k.group)] {
                if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
                    return bad(format!("key `{name}`: `{what}` {v:?} is not a valid name"));
                }
            }
        }
        for (i, c) in m.health_checks.iter().enumerate() {
            if c.command.is_some() == c.http.is_some() {
                return bad(format!("healthChecks[{i}] needs exactly one of `command` and `http`"));
            }
            if let Some(u) = &c.http {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return bad(format!(
                        "healthChecks[{i}].http must be an http:// or https:// URL (got {u:?})"
                    ));
                }
            }
        }
        if let Some(k) = &m.host_key {
            if ferry_ssh::normalise_host_key(k).is_none() {
                return bad(format!(
                    "`hostKey` is not a public key line like `ssh-ed25519 AAAA…` (got {k:?})"
                ));
            }
        }
        Ok(m)
    }

    pub fn magic_timeout(&self) -> u64 {
        if self.rollback.magic.enable && matches!(self.goal, Goal::Switch | Goal::Test) {
            self.rollback.magic.confirm_timeout
        } else {
            0
        }
    }
}
