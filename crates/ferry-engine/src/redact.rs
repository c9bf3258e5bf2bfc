//! Keeping sensitive values out of plans, events and errors.
//!
//! Two rules: an input the kind declares sensitive is shown as `(sensitive)`; and any string
//! that contains the value of a sensitive output (say, a private key flowing into a file's
//! content) is shown as `(sensitive)` too.

use serde_json::{Map, Value};

pub const SHOWN: &str = "(sensitive)";

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Remember the values of `names` in `outputs` as secrets.
    pub fn learn(&mut self, outputs: &Map<String, Value>, names: &[String]) {
        for n in names {
            if let Some(v) = outputs.get(n) {
                collect_strings(v, &mut self.secrets);
            }
        }
        self.secrets.retain(|s| s.len() >= 4);
        self.secrets.sort();
        self.secrets.dedup();
    }

    pub fn value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) if self.secrets.iter().any(|x| s.contains(x.as_str())) => {
                Value::String(SHOWN.into())
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| self.value(x)).collect()),
            Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), self.value(x))).collect()),
            other => other.clone(),
        }
    }

    /// Inputs for display: sensitive names hidden, secrets hidden anywhere.
    pub fn inputs(&self, inputs: &Map<String, Value>, sensitive: &[String]) -> Map<String, Value> {
        inputs
            .iter()
            .map(|(k, v)| {
                let shown = if sensitive.contains(k) { Value::String(SHOWN.into()) } else { self.value(v) };
                (k.clone(), shown)
            })
            .collect()
    }

    pub fn text(&self, s: &str) -> String {
        let mut out = s.to_string();
        for x in &self.secrets {
            out = out.replace(x.as_str(), SHOWN);
        }
        out
    }
}

fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hides_sensitive_inputs_and_flowing_secrets() {
        let mut r = Redactor::default();
        let outs = json!({"privateKey": "-----BEGIN KEY abc-----", "publicKey": "ssh-ed25519 AAA"});
        r.learn(outs.as_object().unwrap(), &["privateKey".to_string()]);
        let inputs = json!({"content": "key: -----BEGIN KEY abc-----", "path": "/x", "token": "t0ps3cret"});
        let shown = r.inputs(inputs.as_object().unwrap(), &["token".to_string()]);
        assert_eq!(shown["content"], SHOWN);
        assert_eq!(shown["token"], SHOWN);
        assert_eq!(shown["path"], "/x");
        assert_eq!(r.text("got -----BEGIN KEY abc----- here"), "got (sensitive) here");
    }
}
