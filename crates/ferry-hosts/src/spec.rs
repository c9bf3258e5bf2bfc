//! The `host` input: where a resource's work runs, and how ferry becomes root there.
//!
//! `"local"` (the default), an SSH target such as a `nixos.machine`'s outputs (`{ host; port;
//! user; hostKey; sshOptions; become; }`, the private key in the top-level sensitive `sshKey`
//! input), or — for kinds that allow it — a running podman container (`{ podman = "NAME"; }`).

use ferry_protocol::Object;
use ferry_ssh::{Identity, Target};
use serde::Deserialize;
use serde_json::{json, Value};

/// How a non-root SSH user runs ferry's privileged commands on its host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Become {
    /// `sudo -n` (non-interactive: passwordless sudo for the user). The default.
    #[default]
    Sudo,
    /// OpenBSD's `doas -n` (Debian: `opendoas`), with a `permit nopass` rule for the user.
    Doas,
    /// systemd's `run0` (systemd ≥ 256), with polkit allowing the user without a prompt.
    Run0,
    /// Run as the user itself: no escalation (the user has what it needs, or is root).
    None,
}

impl Become {
    pub const NAMES: [&'static str; 4] = ["sudo", "doas", "run0", "none"];

    pub fn as_str(self) -> &'static str {
        match self {
            Become::Sudo => "sudo",
            Become::Doas => "doas",
            Become::Run0 => "run0",
            Become::None => "none",
        }
    }

    /// The words that run a command as root, before `sh -c SCRIPT` (none for [`Become::None`]).
    /// Every tool is told never to prompt: ferry has no terminal to prompt on, and a prompt
    /// would hang the run instead of failing it.
    pub fn prefix(self) -> &'static [&'static str] {
        match self {
            Become::Sudo => &["sudo", "-n"],
            Become::Doas => &["doas", "-n"],
            Become::Run0 => &["run0", "--no-ask-password"],
            Become::None => &[],
        }
    }
}

/// The `host` input, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSpec {
    Local,
    Ssh(SshHost),
    /// A running podman container on the local machine (`podman exec`).
    Podman(String),
}

/// An SSH target.
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
    /// How a non-root `user` becomes root (unused for root).
    #[serde(default, rename = "become")]
    pub become_: Become,
}

fn default_port() -> u16 {
    22
}
fn default_user() -> String {
    "root".into()
}

/// The JSON Schema of `become`.
pub fn become_schema() -> Value {
    json!({
        "enum": Become::NAMES,
        "default": "sudo",
        "description": "how a non-root SSH user runs ferry's commands as root: sudo -n, doas -n, run0, or none (as the user itself)"
    })
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
            "sshOptions": {"type": "array", "items": {"type": "string"}},
            "become": become_schema()
        }
    })
}

/// The JSON Schema of the `host` input: `"local"`, an SSH target, and with `podman` also
/// `{ podman = "CONTAINER"; }`.
pub fn host_schema(podman: bool) -> Value {
    let mut one_of = vec![json!({"const": "local"}), ssh_host_schema()];
    let mut description = "\"local\", or an SSH target (e.g. a nixos.machine's outputs)".to_string();
    if podman {
        one_of.push(json!({
            "type": "object",
            "required": ["podman"],
            "additionalProperties": false,
            "properties": {"podman": {"type": "string", "minLength": 1}}
        }));
        description =
            "\"local\", an SSH target (e.g. a nixos.machine's outputs) or { podman = \"CONTAINER\"; }".into();
    }
    json!({"description": description, "default": "local", "oneOf": one_of})
}

/// The JSON Schema of the top-level `sshKey` input that goes with `host`.
pub fn ssh_key_schema() -> Value {
    json!({"type": "string", "description": "for an SSH host: private key file path, or the key itself"})
}

impl HostSpec {
    /// How the host is named in outputs and messages.
    pub fn label(&self) -> String {
        match self {
            HostSpec::Local => "local".into(),
            HostSpec::Ssh(h) if h.port == 22 => h.host.clone(),
            HostSpec::Ssh(h) => format!("{}:{}", h.host, h.port),
            HostSpec::Podman(c) => format!("podman:{c}"),
        }
    }

    /// The `host` input (`"local"`, absent, or an SSH target) with the top-level `sshKey`;
    /// `{ podman = …; }` only when `podman` is allowed. Errors are plain messages; the caller
    /// names the resource.
    pub fn parse(inputs: &Object, podman: bool) -> Result<HostSpec, String> {
        match inputs.get("host") {
            None | Some(Value::Null) => Ok(HostSpec::Local),
            Some(Value::String(s)) if s == "local" => Ok(HostSpec::Local),
            Some(Value::String(s)) => Err(format!(
                "host `{s}`: use \"local\" or an SSH target {{ host = \"{s}\"; port = 22; hostKey = \"…\"; }} \
                 (e.g. a nixos.machine's outputs)"
            )),
            Some(Value::Object(o)) if podman && o.contains_key("podman") => match o["podman"].as_str() {
                Some(c) if !c.is_empty() && o.len() == 1 => Ok(HostSpec::Podman(c.to_string())),
                _ => Err("host: { podman = \"CONTAINER\"; } takes one non-empty container name".into()),
            },
            Some(v) => {
                let mut h: SshHost = serde_json::from_value(v.clone()).map_err(|e| format!("host: {e}"))?;
                h.ssh_key = inputs.get("sshKey").and_then(Value::as_str).map(str::to_string);
                Ok(HostSpec::Ssh(h))
            }
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, HostSpec::Local)
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

    /// How privileged commands run for this user: never escalated for root.
    pub fn escalation(&self) -> Become {
        if self.user == "root" {
            Become::None
        } else {
            self.become_
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(v: Value) -> Object {
        json!({ "host": v, "sshKey": "/k" }).as_object().cloned().unwrap()
    }

    #[test]
    fn host_inputs() {
        assert_eq!(HostSpec::parse(&inputs(json!("local")), true).unwrap(), HostSpec::Local);
        assert_eq!(HostSpec::parse(&Object::new(), false).unwrap(), HostSpec::Local);
        assert_eq!(
            HostSpec::parse(&inputs(json!({"podman": "web"})), true).unwrap(),
            HostSpec::Podman("web".into())
        );
        let HostSpec::Ssh(s) =
            HostSpec::parse(&inputs(json!({"host": "127.0.0.2", "port": 2222})), true).unwrap()
        else {
            panic!("not ssh")
        };
        assert_eq!(
            (s.host.as_str(), s.port, s.user.as_str(), s.ssh_key.as_deref(), s.become_),
            ("127.0.0.2", 2222, "root", Some("/k"), Become::Sudo)
        );
        assert_eq!(s.escalation(), Become::None, "root never escalates");
        assert!(HostSpec::parse(&inputs(json!({"podman": ""})), true).is_err());
        assert!(HostSpec::parse(&inputs(json!({"podman": "a", "host": "b"})), true).is_err());
        // Where podman is not allowed, `{ podman }` is no SSH target either.
        assert!(HostSpec::parse(&inputs(json!({"podman": "web"})), false).is_err());
        assert!(HostSpec::parse(&inputs(json!("web1")), true).unwrap_err().contains("SSH target"));
    }

    #[test]
    fn become_is_a_choice() {
        for (name, b, prefix) in [
            ("sudo", Become::Sudo, &["sudo", "-n"][..]),
            ("doas", Become::Doas, &["doas", "-n"][..]),
            ("run0", Become::Run0, &["run0", "--no-ask-password"][..]),
            ("none", Become::None, &[][..]),
        ] {
            let h = json!({"host": "h", "user": "deploy", "become": name});
            let HostSpec::Ssh(s) = HostSpec::parse(&inputs(h), false).unwrap() else { panic!() };
            assert_eq!((s.escalation(), s.escalation().prefix(), b.as_str()), (b, prefix, name));
        }
        assert!(HostSpec::parse(&inputs(json!({"host": "h", "become": "su"})), false).is_err());
    }
}
