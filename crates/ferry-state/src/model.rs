//! The values the state store reads and writes: operations, intents, resource records and
//! journal events. Plain data with serde; no I/O here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::StateError;

/// A provider operation that changes (or claims) a real resource.
///
/// Serialized (and displayed) as a lowercase string: `create`, `update`, `delete`, `adopt`, or
/// `action:NAME` for a named provider action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Create a new real resource.
    Create,
    /// Change an existing real resource in place.
    Update,
    /// Destroy the real resource; on success the record is removed.
    Delete,
    /// Take over an existing real resource found by `read`.
    Adopt,
    /// A named provider action (rollback, rotate, backup, ...).
    Action(String),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create => f.write_str("create"),
            Op::Update => f.write_str("update"),
            Op::Delete => f.write_str("delete"),
            Op::Adopt => f.write_str("adopt"),
            Op::Action(name) => write!(f, "action:{name}"),
        }
    }
}

impl FromStr for Op {
    type Err = StateError;

    fn from_str(s: &str) -> Result<Op, StateError> {
        match s {
            "create" => Ok(Op::Create),
            "update" => Ok(Op::Update),
            "delete" => Ok(Op::Delete),
            "adopt" => Ok(Op::Adopt),
            _ => match s.strip_prefix("action:") {
                Some(name) if !name.is_empty() => Ok(Op::Action(name.to_owned())),
                _ => Err(StateError::Invalid(format!(
                    "unknown operation `{s}` (expected create, update, delete, adopt or action:NAME)"
                ))),
            },
        }
    }
}

impl Serialize for Op {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Op {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Op, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a resource stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The last operation succeeded; `inputs`/`outputs` describe the real resource.
    Ready,
    /// An operation was started and no result was recorded: it may or may not have happened
    /// (the run crashed or was killed). The next run reconciles with `read`.
    Pending(Op),
    /// The provider reported that the pending operation failed; see `last_error`.
    Failed,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Ready => f.write_str("ready"),
            Status::Pending(op) => write!(f, "pending {op}"),
            Status::Failed => f.write_str("failed"),
        }
    }
}

/// What is about to be sent to a provider; recorded before the call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    /// Resource name (unique in the deployment).
    pub resource: String,
    /// The operation about to be performed.
    pub op: Op,
    /// Resource kind, e.g. `local.file`.
    pub kind: String,
    /// How to reach the provider: `{"builtin":"local"}` or `{"executable":..,"args":[..]}`.
    pub provider: Value,
    /// The inputs about to be sent (may hold sensitive values).
    pub inputs: Map<String, Value>,
    /// Names of the resources this one depends on.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// User tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Output names the provider declared sensitive.
    #[serde(default)]
    pub sensitive_outputs: Vec<String>,
    /// The resource's `protect` flag (create/update/adopt record it on success).
    #[serde(default, skip_serializing_if = "is_false")]
    pub protect: bool,
    /// Create-before-destroy replacement. On a `create`: when it succeeds, the object it
    /// replaces (the record's last inputs and outputs) is kept as [`ResourceRecord::deposed`],
    /// still to be deleted. On a `delete`: it deletes that deposed object, not the record.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deposed: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An object a create-before-destroy replacement superseded and has not deleted yet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deposed {
    /// Its inputs, as last applied.
    pub inputs: Map<String, Value>,
    /// Its outputs.
    pub outputs: Map<String, Value>,
}

/// The result of a successful provider call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Success {
    /// The resource's outputs; `None` for delete (and for actions that change no outputs).
    pub outputs: Option<Map<String, Value>>,
}

/// An operation that was started (and, if `status` is `Failed`, reported failed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingOp {
    /// The operation.
    pub op: Op,
    /// The inputs sent with it (kept apart from the last successful inputs).
    pub inputs: Map<String, Value>,
    /// When the intent was recorded (RFC 3339 UTC).
    pub since: String,
}

/// Everything state knows about one resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceRecord {
    /// Resource name.
    pub name: String,
    /// Resource kind, e.g. `local.file`.
    pub kind: String,
    /// How to reach the provider.
    pub provider: Value,
    /// Inputs of the last successful create/update/adopt (empty if none succeeded yet).
    #[serde(default)]
    pub inputs: Map<String, Value>,
    /// Outputs of the last success or refresh (empty if none succeeded yet).
    #[serde(default)]
    pub outputs: Map<String, Value>,
    /// Ready, pending (crashed mid-operation) or failed.
    pub status: Status,
    /// The operation started but not completed, or completed with failure.
    #[serde(default)]
    pub pending: Option<PendingOp>,
    /// The provider's message for the last failure; cleared on success.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Names of the resources this one depends on (as of the last success).
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// User tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Output names the provider declared sensitive; never print their values.
    #[serde(default)]
    pub sensitive_outputs: Vec<String>,
    /// When the record was first written (RFC 3339 UTC).
    #[serde(default)]
    pub created_at: String,
    /// When the record last changed (RFC 3339 UTC).
    #[serde(default)]
    pub updated_at: String,
    /// When an operation on it last succeeded; `None` if none ever did, so a pending create
    /// with no `last_applied_at` may or may not have created anything.
    #[serde(default)]
    pub last_applied_at: Option<String>,
    /// `protect = true`: ferry refuses to destroy or replace it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub protect: bool,
    /// The object a create-before-destroy replacement superseded, while it is not deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deposed: Option<Deposed>,
}

/// One entry of the append-only journal. Never holds input or output values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Monotonic id (also the intent id for `intent` events).
    pub id: i64,
    /// When it happened (RFC 3339 UTC).
    pub time: String,
    /// The run it belongs to, if any.
    pub run: Option<i64>,
    /// The resource it concerns, if any.
    pub resource: Option<String>,
    /// The operation (`create`, `read`, `rm`, `import`, `run`, ...).
    pub op: String,
    /// `intent`, `ok`, `error`, `refresh`, `rm`, `import`, `run-start` or `run-end`.
    pub phase: String,
    /// A short human message.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_round_trips_as_lowercase_string() {
        for op in [Op::Create, Op::Update, Op::Delete, Op::Adopt, Op::Action("rotate".into())] {
            let json = serde_json::to_value(&op).unwrap();
            assert_eq!(json, Value::String(op.to_string()));
            assert_eq!(serde_json::from_value::<Op>(json).unwrap(), op);
        }
        assert_eq!(Op::Action("rollback".into()).to_string(), "action:rollback");
        assert!("Create".parse::<Op>().is_err());
        assert!("action:".parse::<Op>().is_err());
    }

    #[test]
    fn status_serializes_lowercase() {
        assert_eq!(serde_json::to_value(Status::Ready).unwrap(), "ready");
        assert_eq!(
            serde_json::to_value(Status::Pending(Op::Create)).unwrap(),
            serde_json::json!({"pending": "create"})
        );
    }
}
