//! `local.random`: a value chosen once and kept — a random alphanumeric string, or a free TCP
//! port on 127.0.0.1. A new value is chosen only when the inputs change (use `keepers` to tie
//! regeneration to other values). The value lives only in ferry's state: there is nothing to
//! read back or delete.

use crate::schema::{object_schema, outputs_schema, replace_on_change, Inputs};
use ferry_protocol::sdk::CallContext;
use ferry_protocol::*;
use rand::distributions::{Alphanumeric, DistString};
use serde_json::{json, Value};

const KNOWN: &[&str] = &["length", "port", "keepers"];
const DEFAULT_LENGTH: u64 = 16;
const MAX_LENGTH: u64 = 4096;

pub(crate) fn schema() -> KindSchema {
    KindSchema {
        name: "random".into(),
        description: "A random string or free local TCP port, regenerated only when inputs change.".into(),
        inputs: object_schema(
            "What to generate.",
            json!({
                "length": {"type": "integer", "minimum": 1, "maximum": MAX_LENGTH, "default": DEFAULT_LENGTH,
                           "description": "Length of the alphanumeric string."},
                "port": {"type": "boolean", "default": false,
                         "description": "Pick a free TCP port on 127.0.0.1 instead of a string."},
                "keepers": {"type": "object",
                            "description": "Arbitrary values; changing any of them picks a new value."},
            }),
            &[],
        ),
        outputs: outputs_schema(json!({
            "value": {"type": ["string", "integer"],
                      "description": "The random string, or the port number when `port` is true."},
        })),
        sensitive_inputs: vec![],
        sensitive_outputs: vec![],
        output_names_input: None,
        operations: vec![Operation::Plan, Operation::Create, Operation::Read, Operation::Delete],
        actions: vec![],
        builds_inputs: false,
        heavy_inputs: false,
    }
}

struct RandomSpec {
    length: u64,
    port: bool,
    keepers: Object,
}

impl RandomSpec {
    fn parse(obj: &Object) -> Result<Self, ProviderError> {
        let i = Inputs::new(obj, KNOWN, &[])?;
        Ok(RandomSpec {
            length: i.opt_uint("length", 1, MAX_LENGTH)?.unwrap_or(DEFAULT_LENGTH),
            port: i.opt_bool("port")?.unwrap_or(false),
            keepers: i.opt_object("keepers")?.cloned().unwrap_or_default(),
        })
    }

    fn normalized(&self) -> Object {
        let mut o = Object::new();
        o.insert("length".into(), json!(self.length));
        o.insert("port".into(), json!(self.port));
        o.insert("keepers".into(), Value::Object(self.keepers.clone()));
        o
    }
}

pub(crate) fn plan(p: &PlanParams) -> Result<PlanResult, ProviderError> {
    let desired = RandomSpec::parse(&p.inputs)?.normalized();
    let prior = p.prior.as_ref().map(|prior| {
        RandomSpec::parse(&prior.inputs).map(|s| s.normalized()).unwrap_or_else(|_| prior.inputs.clone())
    });
    Ok(replace_on_change(prior.as_ref(), &desired, &[]))
}

pub(crate) fn create(p: &CreateParams, cx: &CallContext) -> Result<OutputsResult, ProviderError> {
    let spec = RandomSpec::parse(&p.inputs)?;
    let value = if spec.port {
        cx.progress("generate", "picking a free TCP port on 127.0.0.1");
        json!(free_port()?)
    } else {
        let len = usize::try_from(spec.length).unwrap_or(DEFAULT_LENGTH as usize);
        Value::String(Alphanumeric.sample_string(&mut rand::rngs::OsRng, len))
    };
    let mut outputs = Object::new();
    outputs.insert("value".into(), value);
    Ok(OutputsResult { outputs })
}

pub(crate) fn read(p: &ReadParams) -> ReadResult {
    ReadResult { exists: p.outputs.is_some(), outputs: p.outputs.clone(), inputs: None, drift: vec![] }
}

/// A port the kernel says is free right now. Nothing reserves it afterwards; the value is
/// "sticky" in ferry's state, not held open.
fn free_port() -> Result<u16, ProviderError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| ProviderError::new(format!("cannot bind a TCP port on 127.0.0.1: {e}")).retryable())?;
    let port = listener
        .local_addr()
        .map_err(|e| ProviderError::new(format!("cannot read the bound port: {e}")).retryable())?
        .port();
    Ok(port)
}
