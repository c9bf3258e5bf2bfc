//! Keeping sensitive values out of plans, events and errors.
//!
//! Two rules: an input the kind declares sensitive is shown as `(sensitive)`; and any string
//! that contains the value of a sensitive output (say, a private key flowing into a file's
//! content) is shown as `(sensitive)` too.

use serde_json::{Map, Value};
use std::sync::{Arc, RwLock};

pub const SHOWN: &str = "(sensitive)";

/// Lines of a multi-line secret at least this long are secrets by themselves: a provider
/// forwards a command's stderr line by line, so a private key echoed by a command arrives in
/// pieces that never contain the whole value.
const MIN_SECRET_LINE: usize = 12;

/// Clones share what is learned: the provider registry holds a clone to hide secrets in
/// provider log events, including secrets learned after it started.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    /// Remember the values of `names` in `outputs` as secrets.
    pub fn learn(&mut self, outputs: &Map<String, Value>, names: &[String]) {
        let mut found = Vec::new();
        for n in names {
            if let Some(v) = outputs.get(n) {
                collect_strings(v, &mut found);
            }
        }
        let lines: Vec<String> = found
            .iter()
            .filter(|s| s.contains('\n'))
            .flat_map(|s| s.lines().map(str::trim).filter(|l| l.len() >= MIN_SECRET_LINE).map(str::to_string))
            .collect();
        let mut secrets = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        secrets.extend(found);
        secrets.extend(lines);
        secrets.retain(|s| s.len() >= 4);
        // Longest first, so a whole value is replaced before its lines are.
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
    }

    fn secrets(&self) -> std::sync::RwLockReadGuard<'_, Vec<String>> {
        self.secrets.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) if self.secrets().iter().any(|x| s.contains(x.as_str())) => {
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
        for x in self.secrets().iter() {
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

    #[test]
    fn lines_of_multiline_secrets_are_secrets_shared_by_clones() {
        let mut r = Redactor::default();
        let shared = r.clone();
        let outs = json!({"privateKey": "-----BEGIN-----\nAAAAlongbase64line\nshort\n-----END-----\n"});
        r.learn(outs.as_object().unwrap(), &["privateKey".to_string()]);
        assert_eq!(shared.text("log: AAAAlongbase64line"), "log: (sensitive)");
        assert_eq!(shared.text("log: short"), "log: short");
        assert_eq!(
            shared.text(&format!("all: {}", outs["privateKey"].as_str().unwrap())),
            "all: (sensitive)"
        );
    }
}
