//! Wire types of protocol v1. Field names are camelCase on the wire.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A JSON object (inputs or outputs of a resource).
pub type Object = Map<String, Value>;

/// ferry → provider: one line per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Unique within one provider process; echoed in the response and in events.
    pub id: u64,
    #[serde(flatten)]
    pub call: Call,
}

/// The operation and its parameters: `{"method": "...", "params": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params", rename_all = "camelCase")]
pub enum Call {
    Handshake(HandshakeParams),
    Plan(PlanParams),
    Create(CreateParams),
    Read(ReadParams),
    Update(UpdateParams),
    Delete(DeleteParams),
    Action(ActionParams),
}

impl Call {
    pub fn method(&self) -> &'static str {
        match self {
            Call::Handshake(_) => "handshake",
            Call::Plan(_) => "plan",
            Call::Create(_) => "create",
            Call::Read(_) => "read",
            Call::Update(_) => "update",
            Call::Delete(_) => "delete",
            Call::Action(_) => "action",
        }
    }

    /// The resource a call is about, if any (the handshake is about none).
    pub fn resource(&self) -> Option<&str> {
        match self {
            Call::Handshake(_) => None,
            Call::Plan(p) => Some(&p.resource),
            Call::Create(p) => Some(&p.resource),
            Call::Read(p) => Some(&p.resource),
            Call::Update(p) => Some(&p.resource),
            Call::Delete(p) => Some(&p.resource),
            Call::Action(p) => Some(&p.resource),
        }
    }
}

/// provider → ferry: a response (`result` xor `error`) or an event. One line each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Message {
    Response(Response),
    Event(Event),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub id: u64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// The operation's result object; its shape depends on the method.
    Result(Value),
    Error(ProviderError),
}

/// A structured error. `retryable` tells ferry a later attempt may succeed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderError {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default)]
    pub retryable: bool,
    /// Machine-readable code, e.g. `invalidInput`, `unsupported`, `notFound`, `internal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl ProviderError {
    pub fn new(message: impl Into<String>) -> Self {
        ProviderError { message: message.into(), resource: None, retryable: false, code: None }
    }
    pub fn code(mut self, code: &str) -> Self {
        self.code = Some(code.to_string());
        self
    }
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(message).code("invalidInput")
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(message).code("unsupported")
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(message).code(codes::NOT_FOUND)
    }
    /// For requests the provider cannot understand, including a kind it did not declare.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(message).code(codes::BAD_REQUEST)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(message).code(codes::INTERNAL)
    }
    /// Name the resource the error is about.
    pub fn about(mut self, resource: &str) -> Self {
        self.resource = Some(resource.to_string());
        self
    }
}

/// The error codes protocol v1 defines (see `docs/provider-protocol.md` §4.6). The set may
/// grow; receivers treat a code they do not know, or no code, as [`codes::INTERNAL`].
pub mod codes {
    /// The inputs are wrong; the user must change the deployment.
    pub const INVALID_INPUT: &str = "invalidInput";
    /// The kind does not support this operation or action.
    pub const UNSUPPORTED: &str = "unsupported";
    /// The resource the call needs does not exist.
    pub const NOT_FOUND: &str = "notFound";
    /// The request is malformed: not JSON, unknown method, wrong params, unknown kind.
    pub const BAD_REQUEST: &str = "badRequest";
    /// The handshake offered no protocol version the provider speaks.
    pub const UNSUPPORTED_VERSION: &str = "unsupportedVersion";
    /// Anything else.
    pub const INTERNAL: &str = "internal";
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProviderError {}

/// An unsolicited progress or log line about an in-flight request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The request this event belongs to.
    pub id: u64,
    pub event: EventKind,
    pub message: String,
    /// Short phase name for progress displays, e.g. `build`, `copy`, `activate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Nix builds the provider ran for this request (counted in the run's `--timings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builds: Option<Builds>,
}

/// Builds a provider ran (`nix-store --realise` invocations), and their wall time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Builds {
    pub count: u32,
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    Progress,
    Log,
    Warning,
}

// ---------------------------------------------------------------- handshake

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandshakeParams {
    /// Protocol versions ferry speaks; the provider picks one.
    pub protocol_versions: Vec<u32>,
    pub ferry_version: String,
    /// Run-wide options from ferry's command line (`force`, `alwaysActivate`, `nixOptions`,
    /// `copyJobs`, `activateJobs`, …). Providers ignore the ones they do not know.
    #[serde(default, skip_serializing_if = "Object::is_empty")]
    pub options: Object,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandshakeResult {
    pub protocol_version: u32,
    /// Provider name: the part before the dot in `type = "NAME.KIND"`.
    pub provider: String,
    #[serde(default)]
    pub version: String,
    pub kinds: Vec<KindSchema>,
}

/// What a provider declares about one resource kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KindSchema {
    /// Kind name without the provider prefix (`file` for `local.file`).
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the inputs object.
    pub inputs: Value,
    /// JSON Schema of the outputs object; its `properties` are the output names.
    pub outputs: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive_inputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive_outputs: Vec<String>,
    /// An input holding a list of extra output names (for kinds whose outputs are only
    /// known from their inputs, like `local.exec`'s `outputNames`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_names_input: Option<String>,
    /// Which of plan/create/read/update/delete the provider implements.
    pub operations: Vec<Operation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionSchema>,
    /// The provider builds the derivations its inputs refer to itself (e.g. on the target
    /// host): ferry does not realise them before `create`/`update` and sends their `.drv`
    /// paths as `context` instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub builds_inputs: bool,
    /// Evaluating this kind's inputs is costly (a whole NixOS system, seconds and a GiB):
    /// with several evaluator workers (`--eval-jobs`), ferry spreads a round's resources of
    /// such kinds over them; everything else is evaluated in one process.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub heavy_inputs: bool,
}

impl KindSchema {
    /// Names declared in the outputs schema's `properties`.
    pub fn output_names(&self) -> Vec<String> {
        self.outputs
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn supports(&self, op: Operation) -> bool {
        self.operations.contains(&op)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Operation {
    Plan,
    Create,
    Read,
    Update,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionSchema {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

// ---------------------------------------------------------------- operations

/// What ferry last recorded for a resource: its inputs and outputs after the last success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prior {
    pub inputs: Object,
    pub outputs: Object,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanParams {
    pub kind: String,
    pub resource: String,
    /// Desired inputs.
    pub inputs: Object,
    /// Recorded state; `None` when the resource does not exist yet.
    #[serde(default)]
    pub prior: Option<Prior>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanResult {
    pub action: PlanAction,
    /// Human-readable changes (never containing sensitive values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `replace`: the replacement may be created before the old resource is deleted
    /// (they do not collide, e.g. a file moving to a new path). Default `false`: delete
    /// first, then create.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create_before_destroy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PlanAction {
    Noop,
    Create,
    Update,
    Replace,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// Input name (dotted for nested fields).
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// Changing this input forces replacement.
    #[serde(default)]
    pub forces_replace: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateParams {
    pub kind: String,
    pub resource: String,
    pub inputs: Object,
    /// For kinds with `buildsInputs`: store paths the inputs refer to, each `.drv` with the
    /// outputs used (`{"/nix/store/…-system.drv": ["out"]}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputsResult {
    pub outputs: Object,
}

/// Read the real resource. `outputs` is `None` when ferry has no record of the result (an
/// interrupted create): the provider should then look the resource up from its inputs alone
/// and return it if it exists, so ferry adopts it instead of creating a duplicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadParams {
    pub kind: String,
    pub resource: String,
    pub inputs: Object,
    #[serde(default)]
    pub outputs: Option<Object>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadResult {
    pub exists: bool,
    /// Current outputs, when the resource exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Object>,
    /// Inputs as found in reality, when they differ from the recorded ones (drift).
    /// Only the differing inputs need to be present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Object>,
    /// Human-readable drift descriptions (empty: no drift).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateParams {
    pub kind: String,
    pub resource: String,
    pub inputs: Object,
    pub prior: Prior,
    /// As in [`CreateParams::context`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteParams {
    pub kind: String,
    pub resource: String,
    pub inputs: Object,
    pub outputs: Object,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionParams {
    pub kind: String,
    pub resource: String,
    pub action: String,
    #[serde(default)]
    pub args: Object,
    pub inputs: Object,
    pub outputs: Object,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionResult {
    /// New outputs, when the action changed them (e.g. `rotate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Object>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_wire_shape() {
        let r = Request {
            id: 7,
            call: Call::Create(CreateParams {
                kind: "file".into(),
                resource: "motd".into(),
                inputs: json!({"path": "/tmp/x"}).as_object().unwrap().clone(),
                context: Default::default(),
            }),
        };
        let s = serde_json::to_value(&r).unwrap();
        assert_eq!(
            s,
            json!({"id": 7, "method": "create",
                   "params": {"kind": "file", "resource": "motd", "inputs": {"path": "/tmp/x"}}})
        );
        let back: Request = serde_json::from_value(s).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn messages_distinguish_responses_and_events() {
        let ok: Message = serde_json::from_str(r#"{"id":1,"result":{"outputs":{}}}"#).unwrap();
        assert!(matches!(ok, Message::Response(Response { id: 1, outcome: Outcome::Result(_) })));
        let err: Message =
            serde_json::from_str(r#"{"id":2,"error":{"message":"boom","retryable":true}}"#).unwrap();
        match err {
            Message::Response(Response { outcome: Outcome::Error(e), .. }) => {
                assert_eq!(e.message, "boom");
                assert!(e.retryable);
            }
            other => panic!("{other:?}"),
        }
        let ev: Message =
            serde_json::from_str(r#"{"id":3,"event":"progress","message":"copying","phase":"copy"}"#)
                .unwrap();
        assert!(matches!(ev, Message::Event(Event { id: 3, event: EventKind::Progress, .. })));
    }
}
