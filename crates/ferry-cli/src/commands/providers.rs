//! `ferry providers`: every provider ferry can use here (the built-in ones, plus external
//! providers the deployment declares), its kinds and their schemas.
//!
//! ```text
//! local 0.1.0 (local)
//!   local.file — A file on the machine running ferry, written atomically.
//!     inputs:
//!       content: string, required, sensitive — The file's complete content.
//!       mode: string, default "0644" — Permission bits as an octal string.
//!       path: string, required — Absolute path of the file.
//!     outputs:
//!       path: string — Absolute path of the file.
//!     operations: plan, create, read, update, delete
//! ```
//!
//! `--json` prints the engine's provider descriptions unchanged.

use anyhow::Context as _;
use ferry_protocol::KindSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::commands::{emit, emit_json, Context};
use crate::error::Outcome;
use crate::render::{value, Palette};

/// The fields of the engine's `ProviderDescription` shown here.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderView {
    pub name: String,
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub version: String,
    pub kinds: Vec<KindSchema>,
}

pub fn run(ctx: &Context, json: bool) -> anyhow::Result<Outcome> {
    let progress = ctx.progress();
    let engine = ctx.engine(&progress)?;
    let result = engine.providers();
    progress.finish();
    let providers = result?;
    if json {
        progress.suspend(|| emit_json(&providers))?;
        return Ok(Outcome::Success);
    }
    // The engine's description type is not exported; read it through its JSON form.
    let views: Vec<ProviderView> = serde_json::to_value(&providers)
        .and_then(serde_json::from_value)
        .context("cannot decode the provider descriptions")?;
    progress.suspend(|| emit(&render(&views, &ctx.stdout_palette())))?;
    Ok(Outcome::Success)
}

pub fn render(providers: &[ProviderView], p: &Palette) -> String {
    let mut out = String::new();
    for (i, prov) in providers.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut head = p.bold.apply_to(&prov.name).to_string();
        if !prov.version.is_empty() {
            head.push_str(&format!(" {}", prov.version));
        }
        if !prov.command.is_empty() {
            head.push_str(&format!(" {}", p.dim.apply_to(format!("({})", prov.command))));
        }
        out.push_str(&head);
        out.push('\n');
        for k in &prov.kinds {
            out.push_str(&kind_text(&prov.name, k, p));
        }
    }
    out
}

fn kind_text(provider: &str, k: &KindSchema, p: &Palette) -> String {
    let mut out = format!("  {}", p.cyan.apply_to(format!("{provider}.{}", k.name)));
    if !k.description.is_empty() {
        out.push_str(&format!(" — {}", k.description.trim()));
    }
    out.push('\n');
    out.push_str("    inputs:\n");
    out.push_str(&fields(&k.inputs, &k.sensitive_inputs, true, p));
    out.push_str("    outputs:\n");
    out.push_str(&fields(&k.outputs, &k.sensitive_outputs, false, p));
    if let Some(input) = &k.output_names_input {
        out.push_str(&format!("      (more outputs, named by input `{input}`)\n"));
    }
    let ops: Vec<String> = k
        .operations
        .iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    out.push_str(&format!(
        "    operations: {}\n",
        if ops.is_empty() { "none".into() } else { ops.join(", ") }
    ));
    if !k.actions.is_empty() {
        out.push_str("    actions:\n");
        for a in &k.actions {
            out.push_str(&format!("      {}", a.name));
            if !a.description.is_empty() {
                out.push_str(&format!(" — {}", a.description.trim()));
            }
            out.push('\n');
        }
    }
    out
}

/// One line per property of an object schema.
fn fields(schema: &Value, sensitive: &[String], inputs: bool, p: &Palette) -> String {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return "      (none declared)\n".into();
    };
    if props.is_empty() {
        return "      (none)\n".into();
    }
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = String::new();
    for (name, prop) in props {
        let mut attrs = vec![type_text(prop)];
        if inputs && required.contains(&name.as_str()) {
            attrs.push("required".into());
        }
        if let Some(d) = prop.get("default") {
            attrs.push(format!("default {}", value(d)));
        }
        if sensitive.contains(name) {
            attrs.push(p.yellow.apply_to("sensitive").to_string());
        }
        out.push_str(&format!("      {name}: {}", attrs.join(", ")));
        if let Some(d) = prop.get("description").and_then(Value::as_str) {
            out.push_str(&format!(" — {}", d.trim()));
        }
        out.push('\n');
    }
    out
}

/// `string`, `integer | null`, `array of string`, `one of "a", "b"`, `any`.
fn type_text(prop: &Value) -> String {
    if let Some(values) = prop.get("enum").and_then(Value::as_array) {
        return format!("one of {}", values.iter().map(value).collect::<Vec<_>>().join(", "));
    }
    let base = match prop.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" | "),
        _ => return "any".into(),
    };
    match (base.as_str(), prop.get("items")) {
        ("array", Some(items)) => format!("array of {}", type_text(items)),
        _ => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_with_schemas() {
        let kind: KindSchema = serde_json::from_value(json!({
            "name": "file",
            "description": "A local file.",
            "inputs": {"type": "object", "required": ["path"], "properties": {
                "path": {"type": "string", "description": "Where."},
                "content": {"type": "string"},
                "mode": {"type": "string", "default": "0644"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "kind": {"enum": ["a", "b"]}
            }},
            "outputs": {"type": "object", "properties": {"sha256": {"type": ["string", "null"]}}},
            "sensitiveInputs": ["content"],
            "operations": ["plan", "create", "read"],
            "actions": [{"name": "rotate", "description": "New key."}]
        }))
        .unwrap();
        let text = render(
            &[ProviderView {
                name: "local".into(),
                command: "local".into(),
                version: "0.1.0".into(),
                kinds: vec![kind],
            }],
            &Palette::plain(),
        );
        assert_eq!(
            text,
            "local 0.1.0 (local)
  local.file — A local file.
    inputs:
      path: string, required — Where.
      content: string, sensitive
      mode: string, default \"0644\"
      tags: array of string
      kind: one of \"a\", \"b\"
    outputs:
      sha256: string | null
    operations: plan, create, read
    actions:
      rotate — New key.
"
        );
    }
}
