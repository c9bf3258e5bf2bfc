//! Input validation shared by every `local` kind, and small helpers for writing JSON Schemas.
//!
//! Every error produced here is [`ProviderError::invalid_input`] and names the input. Messages
//! quote the offending value only through [`describe`], which never prints strings of inputs
//! the caller marked sensitive.

use ferry_protocol::{Object, PlanAction, PlanResult, ProviderError};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Typed, validating access to one resource's inputs.
pub(crate) struct Inputs<'a> {
    obj: &'a Object,
    sensitive: &'a [&'a str],
}

impl<'a> Inputs<'a> {
    /// Wrap `obj`, rejecting inputs not in `known`. Values of `sensitive` inputs are never
    /// quoted in error messages.
    pub fn new(obj: &'a Object, known: &[&str], sensitive: &'a [&'a str]) -> Result<Self, ProviderError> {
        if let Some(unknown) = obj.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ProviderError::invalid_input(format!(
                "unknown input `{unknown}` (known inputs: {})",
                known.join(", ")
            )));
        }
        Ok(Inputs { obj, sensitive })
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name)
    }

    fn wrong_type(&self, name: &str, expected: &str, got: &Value) -> ProviderError {
        // `name` may be nested (`env.A`, `create[1]`): sensitivity is per top-level input.
        let top = name.split(['.', '[']).next().unwrap_or(name);
        let got = if self.sensitive.contains(&top) { format!("a {}", type_name(got)) } else { describe(got) };
        ProviderError::invalid_input(format!("input `{name}` must be {expected}, got {got}"))
    }

    pub fn required_str(&self, name: &str) -> Result<&'a str, ProviderError> {
        self.opt_str(name)?.ok_or_else(|| ProviderError::invalid_input(format!("input `{name}` is required")))
    }

    pub fn opt_str(&self, name: &str) -> Result<Option<&'a str>, ProviderError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong_type(name, "a string", v)),
        }
    }

    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, ProviderError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong_type(name, "a boolean", v)),
        }
    }

    /// A non-negative integer within `min..=max`.
    pub fn opt_uint(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, ProviderError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(self.wrong_type(name, &format!("an integer from {min} to {max}"), v)),
            },
        }
    }

    pub fn opt_object(&self, name: &str) -> Result<Option<&'a Object>, ProviderError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(v) => Err(self.wrong_type(name, "an attribute set", v)),
        }
    }

    pub fn opt_string_list(&self, name: &str) -> Result<Option<Vec<String>>, ProviderError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let expected = "a list of strings";
        let Value::Array(items) = v else {
            return Err(self.wrong_type(name, expected, v));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(self.wrong_type(&format!("{name}[{i}]"), "a string", other)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A command line: a non-empty list of strings, run without a shell.
    pub fn opt_argv(&self, name: &str) -> Result<Option<Vec<String>>, ProviderError> {
        match self.opt_string_list(name)? {
            Some(argv) if argv.is_empty() || argv[0].is_empty() => Err(ProviderError::invalid_input(
                format!("input `{name}` must be a non-empty list of strings (program, then arguments)"),
            )),
            other => Ok(other),
        }
    }

    pub fn opt_string_map(&self, name: &str) -> Result<Option<BTreeMap<String, String>>, ProviderError> {
        let Some(obj) = self.opt_object(name)? else {
            return Ok(None);
        };
        obj.iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(self.wrong_type(&format!("{name}.{k}"), "a string", other)),
            })
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map(Some)
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "attribute set",
    }
}

/// A short description of a (non-sensitive) value for error messages.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => format!("{} {v}", type_name(v)),
        Value::String(s) => Value::String(truncate(s, 80)).to_string(),
        Value::Array(_) | Value::Object(_) => format!("a {}", type_name(v)),
    }
}

/// The first `max` characters of `s`, with `…` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// `{ type: object, properties, required, additionalProperties: false }`.
pub(crate) fn object_schema(description: &str, properties: Value, required: &[&str]) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "description": description,
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// Outputs schemas list every output; they are all present after a successful create.
pub(crate) fn outputs_schema(properties: Value) -> Value {
    let required: Vec<String> =
        properties.as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": required,
    })
}

/// Plan for kinds whose every change regenerates the resource: diff the normalized inputs
/// (so spelling out a default is no change) and replace on any difference.
pub(crate) fn replace_on_change(
    prior: Option<&Object>,
    desired: &Object,
    sensitive: &[String],
) -> PlanResult {
    let Some(prior) = prior else {
        return PlanResult {
            action: PlanAction::Create,
            changes: vec![],
            reason: None,
            create_before_destroy: false,
        };
    };
    let mut changes = ferry_protocol::sdk::diff_inputs(prior, desired, sensitive);
    if changes.is_empty() {
        return PlanResult { action: PlanAction::Noop, changes, reason: None, create_before_destroy: false };
    }
    for c in &mut changes {
        c.forces_replace = true;
    }
    PlanResult {
        action: PlanAction::Replace,
        changes,
        reason: Some("this kind regenerates its value on any input change".into()),
        create_before_destroy: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Object {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn unknown_inputs_are_named() {
        let o = obj(json!({"pth": "/x"}));
        let err = Inputs::new(&o, &["path"], &[]).err().map(|e| e.message);
        assert_eq!(err.as_deref(), Some("unknown input `pth` (known inputs: path)"));
    }

    #[test]
    fn sensitive_values_are_not_quoted() {
        let o = obj(json!({"secret": 1234, "plain": 1234}));
        let i = Inputs::new(&o, &["secret", "plain"], &["secret"]).expect("known inputs");
        let e = i.opt_str("secret").err().map(|e| e.message).unwrap_or_default();
        assert!(!e.contains("1234"), "{e}");
        let e = i.opt_str("plain").err().map(|e| e.message).unwrap_or_default();
        assert!(e.contains("1234"), "{e}");
    }

    #[test]
    fn truncate_cuts_on_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hi", 2), "hi");
    }
}
