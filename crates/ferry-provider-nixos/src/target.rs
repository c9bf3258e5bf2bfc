//! Where a provider's work runs: the local machine or an SSH target. Shared by the providers
//! that place things on hosts (`nspawn.container`, `processes.set`): the `host` input is
//! `"local"` or an SSH target such as a `nixos.machine`'s outputs (`{ host; port; user;
//! hostKey; }`), with the private key in the top-level, sensitive `sshKey` input.

use ferry_protocol::{Object, ProviderError};
use ferry_ssh::{Identity, Target};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSpec {
    Local,
    Ssh(SshHost),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshHost {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_user")]
    pub user: String,
    /// From the top-level `sshKey` input (sensitive inputs are top-level).
    #[serde(skip)]
    pub ssh_key: Option<String>,
    #[serde(default)]
    pub host_key: Option<String>,
    #[serde(default)]
    pub ssh_options: Vec<String>,
}

fn default_port() -> u16 {
    22
}
fn default_user() -> String {
    "root".into()
}

/// The JSON Schema of an SSH target object (the `host` input's object form).
pub fn ssh_host_schema() -> Value {
    json!({
        "type": "object",
        "required": ["host"],
        "properties": {
            "host": {"type": "string", "minLength": 1},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "user": {"type": "string"},
            "hostKey": {"type": "string"},
            "sshOptions": {"type": "array", "items": {"type": "string"}}
        }
    })
}

impl HostSpec {
    /// How the host is named in outputs and messages.
    pub fn label(&self) -> String {
        match self {
            HostSpec::Local => "local".into(),
            HostSpec::Ssh(h) if h.port == 22 => h.host.clone(),
            HostSpec::Ssh(h) => format!("{}:{}", h.host, h.port),
        }
    }

    /// The `host` input (`"local"`, absent, or an SSH target) with the top-level `sshKey`.
    /// Errors are plain messages; the caller names the resource.
    pub fn parse(inputs: &Object) -> Result<HostSpec, String> {
        match inputs.get("host") {
            None | Some(Value::Null) => Ok(HostSpec::Local),
            Some(Value::String(s)) if s == "local" => Ok(HostSpec::Local),
            Some(Value::String(s)) => Err(format!(
                "host `{s}`: use \"local\" or an SSH target {{ host = \"{s}\"; port = 22; hostKey = \"…\"; }} \
                 (e.g. a nixos.machine's outputs)"
            )),
            Some(v) => {
                let mut h: SshHost = serde_json::from_value(v.clone()).map_err(|e| format!("host: {e}"))?;
                h.ssh_key = inputs.get("sshKey").and_then(Value::as_str).map(str::to_string);
                Ok(HostSpec::Ssh(h))
            }
        }
    }
}

impl SshHost {
    /// The SSH target: host key pinned in the spec, else `recorded` (learned earlier), else
    /// trust on first use.
    pub fn target(&self, recorded: Option<String>) -> Target {
        Target {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            identity: self.ssh_key.as_deref().map(Identity::from_input),
            host_key: self.host_key.clone().or(recorded),
            options: self.ssh_options.clone(),
            connect_timeout: 10,
        }
    }
}

/// Open the multiplexed connection to `spec` (errors mapped like every SSH error of ferry).
pub fn connect(spec: &SshHost, recorded: Option<String>) -> Result<ferry_ssh::Connection, ProviderError> {
    ferry_ssh::Connection::open(&spec.target(recorded)).map_err(crate::transfer::ssh_error)
}
