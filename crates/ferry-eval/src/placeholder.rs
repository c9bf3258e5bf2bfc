//! Placeholders for outputs not known yet: `<ferry:unknown:NAME:OUTPUT>` inside strings.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Placeholder {
    pub resource: String,
    pub output: String,
}

const OPEN: &str = "<ferry:unknown:";

/// Every placeholder in a string, in order.
pub fn find_in_str(s: &str) -> Vec<Placeholder> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find(OPEN) {
        let after = &rest[i + OPEN.len()..];
        let Some(end) = after.find('>') else { break };
        let body = &after[..end];
        if let Some((r, o)) = body.rsplit_once(':') {
            out.push(Placeholder { resource: r.to_string(), output: o.to_string() });
        }
        rest = &after[end + 1..];
    }
    out
}

/// Every placeholder anywhere in a JSON value.
pub fn find_placeholders(v: &Value) -> Vec<Placeholder> {
    let mut out = Vec::new();
    walk(v, &mut |s| out.extend(find_in_str(s)));
    out.sort();
    out.dedup();
    out
}

fn walk(v: &Value, f: &mut dyn FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| walk(x, f)),
        Value::Object(o) => o.iter().for_each(|(k, x)| {
            f(k);
            walk(x, f)
        }),
        _ => {}
    }
}

/// What eval.nix previews in place of a value computed from unknown outputs that cannot be
/// shown honestly (a derivation built from a placeholder: its store path would be invented).
pub const OPAQUE: &str = "<ferry:unknown>";

/// Replace placeholders in a string for display: `(known after apply: NAME.OUTPUT)`, and
/// [`OPAQUE`] as `(known after apply)`.
pub fn render_placeholders(s: &str) -> String {
    if s == OPAQUE {
        return "(known after apply)".into();
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(OPEN) {
        out.push_str(&rest[..i]);
        let after = &rest[i + OPEN.len()..];
        match after.find('>') {
            Some(end) => {
                let body = &after[..end];
                let shown = body.rsplit_once(':').map(|(r, o)| format!("{r}.{o}")).unwrap_or_default();
                out.push_str(&format!("(known after apply: {shown})"));
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_renders() {
        let s = "<ferry:unknown:b:x> and <ferry:unknown:web.example.com:path>!";
        assert_eq!(
            find_in_str(s),
            vec![
                Placeholder { resource: "b".into(), output: "x".into() },
                Placeholder { resource: "web.example.com".into(), output: "path".into() }
            ]
        );
        assert_eq!(
            render_placeholders(s),
            "(known after apply: b.x) and (known after apply: web.example.com.path)!"
        );
        let v = serde_json::json!({"a": ["<ferry:unknown:k:publicKey>"], "b": 1});
        assert_eq!(find_placeholders(&v).len(), 1);
    }
}
