//! Recorded resources as they may be shown (`ferry state show`): the engine's redaction applied
//! to a record straight from state, without an evaluation. Outputs the record names sensitive,
//! inputs the kind's schema declares sensitive (asked from the recorded provider's handshake;
//! every input when it cannot be asked), and any string holding a sensitive output's value of
//! any recorded resource are hidden — in inputs, outputs, the deposed and pending objects and
//! the last error.

use std::sync::Arc;
use std::time::Duration;

use ferry_state::ResourceRecord;
use serde_json::{json, Map, Value};

use crate::events::{EngineEvent, EventSink};
use crate::provider_client::ProviderCommand;
use crate::redact::{Redactor, SHOWN};
use crate::registry::Registry;

/// A record ready to show.
#[derive(Debug, Clone)]
pub struct RecordView {
    /// The record as JSON, every sensitive value replaced by `(sensitive)`.
    pub json: Value,
    /// Whether the kind's sensitive inputs were known (if not, every input is hidden).
    pub inputs_known: bool,
}

impl Redactor {
    /// Learns every sensitive output value in `records` (and their deposed objects), so a
    /// secret that flowed into another resource's inputs is hidden there too.
    pub fn for_records(records: &[ResourceRecord]) -> Redactor {
        let mut r = Redactor::default();
        for rec in records {
            r.learn(&rec.outputs, &rec.sensitive_outputs);
            if let Some(d) = &rec.deposed {
                r.learn(&d.outputs, &rec.sensitive_outputs);
            }
        }
        r
    }
}

/// `rec` as it may be shown, `records` being everything in its state. Asks the provider
/// recorded for `rec` which of its kind's inputs are sensitive (`builtins`: the built-in
/// providers' commands; `timeout` bounds the handshake).
pub fn show(
    builtins: &[(String, ProviderCommand)],
    timeout: Duration,
    records: &[ResourceRecord],
    rec: &ResourceRecord,
) -> RecordView {
    let quiet: Arc<dyn EventSink> = Arc::new(|_: EngineEvent| {});
    let registry = Registry::new(builtins, timeout, Default::default(), quiet, Redactor::default());
    let inputs = sensitive_inputs(&registry, rec);
    let json = redacted_record(rec, inputs.as_deref(), &Redactor::for_records(records));
    RecordView { json, inputs_known: inputs.is_some() }
}

/// The sensitive inputs of `rec`'s kind, from its recorded provider's schema; `None` when the
/// provider cannot be asked.
pub fn sensitive_inputs(registry: &Registry, rec: &ResourceRecord) -> Option<Vec<String>> {
    let cmd = registry.command_from_record(&rec.kind, &rec.provider).ok()?;
    let client = registry.client(&cmd).ok()?;
    let kind = rec.kind.split_once('.').map_or(rec.kind.as_str(), |(_, k)| k);
    client.handshake.kinds.iter().find(|k| k.name == kind).map(|k| k.sensitive_inputs.clone())
}

/// The record as JSON with every sensitive value replaced. `sensitive_inputs` `None` means
/// unknown: every input is hidden.
pub fn redacted_record(rec: &ResourceRecord, sensitive_inputs: Option<&[String]>, r: &Redactor) -> Value {
    let inputs = |m: &Map<String, Value>| -> Value {
        Value::Object(match sensitive_inputs {
            Some(names) => r.inputs(m, names),
            None => m.keys().map(|k| (k.clone(), Value::String(SHOWN.into()))).collect(),
        })
    };
    let outputs = |m: &Map<String, Value>| -> Value {
        Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if rec.sensitive_outputs.contains(k) {
                        Value::String(SHOWN.into())
                    } else {
                        r.value(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        )
    };
    let mut v = serde_json::to_value(rec).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("inputs".into(), inputs(&rec.inputs));
        obj.insert("outputs".into(), outputs(&rec.outputs));
        if let Some(d) = &rec.deposed {
            obj.insert(
                "deposed".into(),
                json!({ "inputs": inputs(&d.inputs), "outputs": outputs(&d.outputs) }),
            );
        }
        if let Some(p) = &rec.pending {
            if let Some(Value::Object(po)) = obj.get_mut("pending") {
                po.insert("inputs".into(), inputs(&p.inputs));
            }
        }
        if let Some(e) = &rec.last_error {
            obj.insert("last_error".into(), Value::String(r.text(e)));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outputs: Value, sensitive: &[&str]) -> ResourceRecord {
        serde_json::from_value(json!({
            "name": "key", "kind": "local.ssh-keypair", "provider": {"builtin": "local"},
            "inputs": {"comment": "deploy", "token": "t0ps3cret"}, "outputs": outputs, "status": "ready",
            "sensitive_outputs": sensitive, "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-02T00:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn outputs_are_hidden_by_name() {
        let rec =
            record(json!({"publicKey": "ssh-ed25519 AAA", "privateKey": "-----BEGIN"}), &["privateKey"]);
        let shown = redacted_record(&rec, Some(&[]), &Redactor::default());
        assert_eq!(shown["outputs"], json!({"publicKey": "ssh-ed25519 AAA", "privateKey": "(sensitive)"}));
    }

    #[test]
    fn sensitive_inputs_unknown_hide_every_input_and_secrets_hide_everywhere() {
        let key = record(json!({"privateKey": "-----BEGIN s3cr3t-----"}), &["privateKey"]);
        let mut other = record(json!({"copy": "has -----BEGIN s3cr3t----- inside"}), &[]);
        other.name = "other".into();
        other.last_error = Some("failed near -----BEGIN s3cr3t-----".into());
        let r = Redactor::for_records(&[key, other.clone()]);
        let shown = redacted_record(&other, None, &r);
        assert_eq!(shown["inputs"], json!({"comment": "(sensitive)", "token": "(sensitive)"}));
        assert_eq!(shown["outputs"]["copy"], "(sensitive)");
        assert_eq!(shown["last_error"], "failed near (sensitive)");
        let shown = redacted_record(&other, Some(&["token".to_string()]), &r);
        assert_eq!(shown["inputs"], json!({"comment": "deploy", "token": "(sensitive)"}));
    }
}
