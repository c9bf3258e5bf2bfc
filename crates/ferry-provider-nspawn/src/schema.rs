//! The `nspawn.container` kind: its JSON Schema and the typed, validated view of its inputs.

use std::collections::BTreeMap;

use ferry_protocol::{ActionSchema, KindSchema, Object, Operation, ProviderError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::net::{Cidr, Family};

/// The `network` input's schema.
fn network_schema() -> Value {
    let addr_family = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "static": {
                "type": "object",
                "additionalProperties": false,
                "required": ["address"],
                "properties": {
                    "hostAddress": {"type": "string", "description": "the host side's address (default: none in zone mode, required in veth mode)"},
                    "address": {"type": "string", "description": "the container's address, `A.B.C.D` or `A.B.C.D/PREFIX`"}
                }
            },
            "pool": {"type": "string", "description": "a CIDR the container's address is taken from, once: it stays with the container"},
            "address": {"type": "string", "description": "with `pool`: the address wanted from the pool"}
        }
    });
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "mode": {"enum": ["host", "veth", "zone"], "default": "veth"},
            "zone": {"type": "string"},
            "v4": addr_family,
            "v6": addr_family
        }
    })
}

pub fn container() -> KindSchema {
    KindSchema {
        name: "container".into(),
        description: "A systemd-nspawn NixOS container on a host (RFC 108 style)".into(),
        inputs: json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["system"],
            "properties": {
                "host": ferry_hosts::spec::host_schema(false),
                "sshKey": ferry_hosts::spec::ssh_key_schema(),
                "name": {"type": "string", "description": "the machine name (default: the resource's name)"},
                "system": {"type": "string", "description": "the container toplevel (init, bin/switch-to-configuration)"},
                "network": network_schema(),
                "forwardPorts": {
                    "type": "array",
                    "default": [],
                    "items": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["hostPort"],
                        "properties": {
                            "protocol": {"enum": ["tcp", "udp"], "default": "tcp"},
                            "hostPort": {"type": "integer", "minimum": 1, "maximum": 65535},
                            "containerPort": {"type": "integer", "minimum": 1, "maximum": 65535}
                        }
                    }
                },
                "bindMounts": {
                    "type": "object",
                    "default": {},
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "hostPath": {"type": "string"},
                            "readOnly": {"type": "boolean", "default": true}
                        }
                    }
                },
                "privateUsers": {"type": ["string", "integer"], "default": "no"},
                "ephemeral": {"type": "boolean", "default": false},
                "autoStart": {"type": "boolean", "default": true},
                "credentials": {"type": "object", "default": {}, "additionalProperties": {"type": "string"}},
                "extraSettings": {
                    "type": "object",
                    "default": {},
                    "additionalProperties": false,
                    "properties": {
                        "Exec": {"type": "object"},
                        "Files": {"type": "object"},
                        "Network": {"type": "object"}
                    }
                },
                "activation": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "strategy": {"enum": ["none", "reload", "restart", "dynamic"], "default": "dynamic"}
                    }
                },
                "keepState": {"type": "boolean", "default": true},
                "stopTimeout": {"type": "integer", "minimum": 1, "default": 10}
            }
        }),
        outputs: json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "host": {"type": "string"},
                "address": {"type": ["string", "null"]},
                "address6": {"type": ["string", "null"]},
                "leaderPid": {"type": ["integer", "null"]},
                "generation": {"type": ["integer", "null"]},
                "systemPath": {"type": "string"},
                "hostKey": {"type": ["string", "null"]}
            }
        }),
        sensitive_inputs: vec!["credentials".into(), "sshKey".into()],
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
            ActionSchema { name: "start".into(), description: "start the container".into() },
            ActionSchema { name: "stop".into(), description: "stop the container".into() },
            ActionSchema { name: "restart".into(), description: "restart the container".into() },
            ActionSchema {
                name: "generations".into(),
                description: "list the container profile's generations".into(),
            },
            ActionSchema {
                name: "status".into(),
                description: "running or not, leader PID, generation, address".into(),
            },
        ],
        builds_inputs: true,
        heavy_inputs: true,
    }
}

pub use ferry_hosts::{HostSpec, SshHost};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Host,
    Veth,
    Zone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    None,
    Reload,
    Restart,
    Dynamic,
}

/// One address family's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrSpec {
    /// A fixed address; `host` is the host side's address (veth: required; zone: the bridge's).
    Static { host: Option<Cidr>, address: Cidr },
    /// Taken once from the pool (the pool's first address is the host side's).
    Pool { pool: Cidr, wanted: Option<Cidr> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub mode: Mode,
    pub zone: Option<String>,
    pub v4: Option<AddrSpec>,
    pub v6: Option<AddrSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub protocol: String,
    pub host_port: u16,
    pub container_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub host_path: String,
    pub read_only: bool,
}

/// A container's validated inputs.
#[derive(Debug, Clone)]
pub struct Container {
    pub host: HostSpec,
    pub name: String,
    pub system: String,
    pub network: Network,
    pub forward_ports: Vec<Forward>,
    pub bind_mounts: BTreeMap<String, Bind>,
    pub private_users: String,
    pub ephemeral: bool,
    pub auto_start: bool,
    pub credentials: BTreeMap<String, String>,
    pub extra_settings: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    pub strategy: Strategy,
    pub keep_state: bool,
    pub stop_timeout: u64,
}

fn invalid(msg: impl Into<String>) -> ProviderError {
    ProviderError::new(msg).code("invalidInput")
}

/// A machine name systemd accepts and ferry can derive interface and file names from:
/// 1–64 characters, lower-case letters, digits and `-`, starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), ProviderError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid container name `{name}`: use 1-64 characters, lower-case letters, digits and `-` \
             (not first or last), e.g. `web-1`"
        )))
    }
}

fn settings_value(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Bool(b) => Some(vec![if *b { "yes" } else { "no" }.into()]),
        Value::Number(n) => Some(vec![n.to_string()]),
        Value::Array(a) => a.iter().map(|x| settings_value(x).and_then(|v| v.into_iter().next())).collect(),
        _ => None,
    }
}

fn addr_spec(v: Option<&Value>, family: Family, what: &str) -> Result<Option<AddrSpec>, ProviderError> {
    let Some(v) = v.and_then(Value::as_object) else { return Ok(None) };
    let parse = |s: &str, field: &str| {
        Cidr::parse(s, family).map_err(|e| invalid(format!("network.{what}.{field}: {e}")))
    };
    if let Some(st) = v.get("static").and_then(Value::as_object) {
        if v.contains_key("pool") {
            return Err(invalid(format!("network.{what}: give either `static` or `pool`, not both")));
        }
        let address = parse(st.get("address").and_then(Value::as_str).unwrap_or_default(), "static.address")?;
        let host = match st.get("hostAddress").and_then(Value::as_str) {
            Some(h) => Some(parse(h, "static.hostAddress")?),
            None => None,
        };
        if host.as_ref().is_some_and(|h| h.addr == address.addr) {
            return Err(invalid(format!(
                "network.{what}: the host and the container cannot share the address {}",
                address.addr
            )));
        }
        return Ok(Some(AddrSpec::Static { host, address }));
    }
    if let Some(p) = v.get("pool").and_then(Value::as_str) {
        let pool = parse(p, "pool")?;
        if pool.host_count() < 2 {
            return Err(invalid(format!(
                "network.{what}.pool {p}: too small (it needs room for the host and a container)"
            )));
        }
        let wanted = match v.get("address").and_then(Value::as_str) {
            Some(a) => {
                let c = parse(a, "address")?;
                if !pool.contains(&c.addr) {
                    return Err(invalid(format!(
                        "network.{what}.address {} is outside the pool {}",
                        c.addr, pool
                    )));
                }
                if c.addr == pool.first_host() || !pool.is_usable(&c.addr) {
                    return Err(invalid(format!(
                        "network.{what}.address {} is reserved in the pool {} (network, broadcast or the host's address {})",
                        c.addr,
                        pool,
                        pool.first_host()
                    )));
                }
                Some(c)
            }
            None => None,
        };
        return Ok(Some(AddrSpec::Pool { pool, wanted }));
    }
    if v.contains_key("address") {
        return Err(invalid(format!("network.{what}.address needs a `pool` (or use `static.address`)")));
    }
    Ok(None)
}

/// `network`: the mode, zone and address requests, checked together.
fn network(inputs: &Object) -> Result<Network, ProviderError> {
    let net = inputs.get("network").and_then(Value::as_object).cloned().unwrap_or_default();
    let mode = match net.get("mode").and_then(Value::as_str) {
        None => Mode::Veth,
        Some("host") => Mode::Host,
        Some("veth") => Mode::Veth,
        Some("zone") => Mode::Zone,
        Some(m) => return Err(invalid(format!("network.mode `{m}`: use host, veth or zone"))),
    };
    let zone = net.get("zone").and_then(Value::as_str).map(str::to_string);
    let mut v4 = addr_spec(net.get("v4"), Family::V4, "v4")?;
    let v6 = addr_spec(net.get("v6"), Family::V6, "v6")?;
    match mode {
        Mode::Host => {
            if v4.is_some() || v6.is_some() || zone.is_some() {
                return Err(invalid(
                    "network.mode = \"host\" shares the host's network: drop v4, v6 and zone",
                ));
            }
        }
        Mode::Veth | Mode::Zone => {
            if mode == Mode::Zone {
                let z = zone.as_deref().unwrap_or_default();
                if z.is_empty()
                    || z.len() > 12
                    || !z.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(invalid(format!(
                        "network.zone `{z}`: zone mode needs a zone name of 1-12 letters, digits, `-` or `_` \
                         (the bridge is vz-ZONE)"
                    )));
                }
            } else if zone.is_some() {
                return Err(invalid("network.zone is only used with mode = \"zone\""));
            }
            if v4.is_none() && v6.is_none() {
                v4 = Some(AddrSpec::Pool {
                    pool: Cidr::parse(crate::net::DEFAULT_POOL, Family::V4).expect("default pool"),
                    wanted: None,
                });
            }
            for (spec, what) in [(&v4, "v4"), (&v6, "v6")] {
                if let Some(AddrSpec::Static { host: None, .. }) = spec {
                    if mode == Mode::Veth {
                        return Err(invalid(format!(
                            "network.{what}.static.hostAddress is required in veth mode"
                        )));
                    }
                }
            }
        }
    }
    Ok(Network { mode, zone, v4, v6 })
}

/// `forwardPorts`, which need a private network with an IPv4 address.
fn forwards(inputs: &Object, net: &Network) -> Result<Vec<Forward>, ProviderError> {
    let mut forward_ports = vec![];
    for f in inputs.get("forwardPorts").and_then(Value::as_array).into_iter().flatten() {
        let host_port = f.get("hostPort").and_then(Value::as_u64).unwrap_or(0) as u16;
        forward_ports.push(Forward {
            protocol: f.get("protocol").and_then(Value::as_str).unwrap_or("tcp").to_string(),
            host_port,
            container_port: f.get("containerPort").and_then(Value::as_u64).map_or(host_port, |p| p as u16),
        });
    }
    if !forward_ports.is_empty() && net.mode == Mode::Host {
        return Err(invalid("forwardPorts needs a private network (network.mode veth or zone)"));
    }
    if !forward_ports.is_empty() && net.v4.is_none() {
        return Err(invalid("forwardPorts needs an IPv4 address (network.v4)"));
    }
    Ok(forward_ports)
}

type Settings = (
    BTreeMap<String, Bind>,
    String,
    BTreeMap<String, String>,
    BTreeMap<String, BTreeMap<String, Vec<String>>>,
);

/// `bindMounts`, `privateUsers`, `credentials`, `extraSettings`.
fn settings(inputs: &Object) -> Result<Settings, ProviderError> {
    let mut bind_mounts = BTreeMap::new();
    for (path, b) in inputs.get("bindMounts").and_then(Value::as_object).into_iter().flatten() {
        if !path.starts_with('/') || path.contains(':') {
            return Err(invalid(format!(
                "bindMounts.\"{path}\": the path in the container must be absolute, without `:`"
            )));
        }
        let host_path = b.get("hostPath").and_then(Value::as_str).unwrap_or(path).to_string();
        if !host_path.starts_with('/') || host_path.contains(':') {
            return Err(invalid(format!(
                "bindMounts.\"{path}\".hostPath `{host_path}`: must be absolute, without `:`"
            )));
        }
        bind_mounts.insert(
            path.clone(),
            Bind { host_path, read_only: b.get("readOnly").and_then(Value::as_bool).unwrap_or(true) },
        );
    }
    let private_users = match inputs.get("privateUsers") {
        None => "no".to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(invalid(format!("privateUsers: expected yes, no, pick, identity or a UID, got {v}")))
        }
    };
    let mut credentials = BTreeMap::new();
    for (id, v) in inputs.get("credentials").and_then(Value::as_object).into_iter().flatten() {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            return Err(invalid(format!(
                "credentials: invalid credential name `{id}` (letters, digits, `-`, `_`, `.`)"
            )));
        }
        credentials.insert(id.clone(), v.as_str().unwrap_or_default().to_string());
    }
    let mut extra_settings = BTreeMap::new();
    for (section, kv) in inputs.get("extraSettings").and_then(Value::as_object).into_iter().flatten() {
        let mut m = BTreeMap::new();
        for (k, v) in kv.as_object().into_iter().flatten() {
            let vals = settings_value(v).ok_or_else(|| {
                invalid(format!(
                    "extraSettings.{section}.{k}: use a string, number, boolean or a list of them"
                ))
            })?;
            m.insert(k.clone(), vals);
        }
        extra_settings.insert(section.clone(), m);
    }
    Ok((bind_mounts, private_users, credentials, extra_settings))
}

impl Container {
    /// Parse and validate; `resource` is the default name.
    pub fn parse(resource: &str, inputs: &Object) -> Result<Container, ProviderError> {
        let host = HostSpec::parse(inputs, false).map_err(invalid)?;
        let name = inputs.get("name").and_then(Value::as_str).unwrap_or(resource).to_string();
        validate_name(&name)?;
        let system = inputs.get("system").and_then(Value::as_str).unwrap_or_default().to_string();
        if !system.starts_with("/nix/store/") {
            return Err(invalid(format!(
                "system `{system}` is not a store path (give a derivation or a /nix/store path)"
            )));
        }
        let network = network(inputs)?;
        let forward_ports = forwards(inputs, &network)?;
        let (bind_mounts, private_users, credentials, extra_settings) = settings(inputs)?;
        let strategy = match inputs.get("activation").and_then(|a| a.get("strategy")).and_then(Value::as_str)
        {
            None | Some("dynamic") => Strategy::Dynamic,
            Some("none") => Strategy::None,
            Some("reload") => Strategy::Reload,
            Some("restart") => Strategy::Restart,
            Some(s) => {
                return Err(invalid(format!(
                    "activation.strategy `{s}`: use none, reload, restart or dynamic"
                )))
            }
        };
        let b = |k: &str, d: bool| inputs.get(k).and_then(Value::as_bool).unwrap_or(d);
        Ok(Container {
            host,
            name,
            system,
            network,
            forward_ports,
            bind_mounts,
            private_users,
            ephemeral: b("ephemeral", false),
            auto_start: b("autoStart", true),
            credentials,
            extra_settings,
            strategy,
            keep_state: b("keepState", true),
            stop_timeout: inputs.get("stopTimeout").and_then(Value::as_u64).unwrap_or(10),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Object {
        v.as_object().cloned().unwrap_or_default()
    }

    fn err_of(v: Value) -> String {
        match Container::parse("c", &obj(v)) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.message,
        }
    }

    #[test]
    fn defaults_are_a_veth_container_from_the_default_pool() {
        let c = Container::parse("web", &obj(json!({"system": "/nix/store/x-sys"})))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(c.name, "web");
        assert_eq!(c.host, HostSpec::Local);
        assert_eq!(c.network.mode, Mode::Veth);
        assert!(matches!(c.network.v4, Some(AddrSpec::Pool { .. })));
        assert_eq!(c.strategy, Strategy::Dynamic);
        assert!(c.keep_state && c.auto_start);
    }

    #[test]
    fn bad_inputs_have_clear_messages() {
        assert!(err_of(json!({"system": "/nix/store/x", "name": "Web_1"}))
            .contains("invalid container name `Web_1`"));
        assert!(err_of(json!({"system": "/nix/store/x", "name": "x".repeat(65)}))
            .contains("invalid container name"));
        assert!(err_of(json!({"system": "/tmp/x"})).contains("not a store path"));
        assert!(err_of(json!({"system": "/nix/store/x", "network": {"v4": {"pool": "10.1.0.0/33"}}}))
            .contains("network.v4.pool"));
        assert!(err_of(json!({"system": "/nix/store/x", "network": {"v4": {"pool": "10.1.0.0/24", "address": "10.2.0.5"}}}))
            .contains("outside the pool 10.1.0.0/24"));
        assert!(err_of(
            json!({"system": "/nix/store/x", "network": {"v4": {"static": {"address": "10.1.0.2"}}}})
        )
        .contains("hostAddress is required"));
        assert!(err_of(json!({"system": "/nix/store/x", "network": {"mode": "zone"}})).contains("zone name"));
        assert!(err_of(
            json!({"system": "/nix/store/x", "network": {"mode": "host"}, "forwardPorts": [{"hostPort": 80}]})
        )
        .contains("private network"));
        assert!(err_of(json!({"system": "/nix/store/x", "bindMounts": {"rel": {}}})).contains("absolute"));
        assert!(err_of(json!({"system": "/nix/store/x", "host": "example"})).contains("SSH target"));
    }

    #[test]
    fn extra_settings_take_scalars_and_lists() {
        let c = Container::parse(
            "c",
            &obj(json!({"system": "/nix/store/x", "extraSettings": {"Exec": {"Hostname": "h", "Capability": ["CAP_A", "CAP_B"], "NoNewPrivileges": true}}})),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let exec = &c.extra_settings["Exec"];
        assert_eq!(exec["Capability"], vec!["CAP_A", "CAP_B"]);
        assert_eq!(exec["NoNewPrivileges"], vec!["yes"]);
    }
}
