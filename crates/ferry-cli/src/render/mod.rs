//! Turning engine and state values into text: the plan ([`plan`]), live progress
//! ([`progress`]), and the small shared helpers below.
//!
//! Renderers build strings; they never decide exit statuses. Sensitive values arrive here
//! already redacted by the engine (plans, events, errors, `ferry_engine::shown` for state).

pub mod plan;
pub mod progress;

use console::Style;
use serde_json::Value;

/// The marker shown instead of a sensitive value.
pub const SENSITIVE: &str = "(sensitive)";

/// Colours for one output stream; all no-ops when the stream is not a terminal.
#[derive(Clone)]
pub struct Palette {
    pub green: Style,
    pub yellow: Style,
    pub red: Style,
    pub cyan: Style,
    pub dim: Style,
    pub bold: Style,
}

impl Palette {
    pub fn new(color: bool) -> Self {
        let s = |st: Style| st.force_styling(color);
        Palette {
            green: s(Style::new().green()),
            yellow: s(Style::new().yellow()),
            red: s(Style::new().red()),
            cyan: s(Style::new().cyan()),
            dim: s(Style::new().dim()),
            bold: s(Style::new().bold()),
        }
    }

    #[cfg(test)]
    pub fn plain() -> Self {
        Palette::new(false)
    }
}

/// Whether a string is one of the engine's display markers (`(sensitive)`,
/// `(known after apply)`, `(known after apply: key.publicKey)`) rather than a real value.
pub fn is_marker(s: &str) -> bool {
    s == SENSITIVE || (s.starts_with("(known after apply") && s.ends_with(')'))
}

/// A value on one line: compact JSON, except that markers are printed bare.
pub fn value(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::String(s) if is_marker(s) => out.push_str(s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                write_value(out, item);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Seconds for humans: `0.01s`, `0.41s`, `2.1s`, `75s`.
pub fn seconds(s: f64) -> String {
    if s < 1.0 {
        let t = format!("{s:.2}");
        format!("{}s", t.trim_end_matches('0').trim_end_matches('.'))
    } else if s < 10.0 {
        format!("{s:.1}s")
    } else {
        format!("{s:.0}s")
    }
}

/// Rows as left-aligned columns separated by two spaces (the last column is not padded).
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(console::measure_text_width(cell));
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[i] - console::measure_text_width(cell) + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_print_markers_bare() {
        assert_eq!(value(&json!("/tmp/x")), "\"/tmp/x\"");
        assert_eq!(value(&json!("(known after apply)")), "(known after apply)");
        assert_eq!(
            value(&json!({"keys": ["(known after apply: key.publicKey)", "ssh-ed25519 AAA"], "n": 1})),
            "{\"keys\": [(known after apply: key.publicKey), \"ssh-ed25519 AAA\"], \"n\": 1}"
        );
        assert_eq!(value(&json!("(sensitive)")), "(sensitive)");
    }

    #[test]
    fn tables_align() {
        let t = table(&[
            vec!["NAME".into(), "KIND".into(), "STATUS".into()],
            vec!["file-a".into(), "local.file".into(), "ready".into()],
        ]);
        assert_eq!(t, "NAME    KIND        STATUS\nfile-a  local.file  ready\n");
    }

    #[test]
    fn seconds_are_short() {
        assert_eq!(seconds(0.012), "0.01s");
        assert_eq!(seconds(0.41), "0.41s");
        assert_eq!(seconds(0.5), "0.5s");
        assert_eq!(seconds(2.14), "2.1s");
        assert_eq!(seconds(75.4), "75s");
    }
}
