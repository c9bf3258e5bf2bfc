//! The text form of a [`Plan`]: one block per resource, then the summary line.
//!
//! ```text
//!   + file-a (local.file)
//!       content = "hello"
//!       path = "/tmp/ferry-demo/a"
//!   ~ file-b (local.file)
//!       content: "a" -> "b"
//!       mode: "0644" -> "0600" (forces replacement)
//!       ! drift: content changed outside ferry
//!   -/+ key (local.ssh-keypair)
//!       # comment changed
//!       comment: "a" -> "b" (forces replacement)
//!   - old (local.file)
//!   <= half-made (local.file)
//!   ✗ broken: input `path` is required
//!
//! Plan: 1 to create, 1 to update, 1 to replace, 1 to destroy, 0 unchanged, 1 to adopt
//! ```
//!
//! Unchanged resources are listed only when verbose. Values are shown as the engine gives them:
//! already redacted (`(sensitive)`) and with `(known after apply)` for unknown outputs.

use ferry_engine::{Action, Plan, PlanEntry};
use ferry_protocol::Change;
use serde_json::Value;

use super::{value, Palette};

/// The whole plan, ending with the summary line (or `No changes.`).
pub fn render(plan: &Plan, verbose: bool, p: &Palette) -> String {
    let mut out = String::new();
    for entry in &plan.entries {
        out.push_str(&entry_text(entry, verbose, p));
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&summary_line(plan));
    out.push('\n');
    out
}

/// `Plan: ...` or `No changes.`
pub fn summary_line(plan: &Plan) -> String {
    if plan.summary.changes() == 0 && !plan.has_errors() {
        "No changes.".to_string()
    } else {
        format!("Plan: {}", plan.summary)
    }
}

/// One resource's block; empty for an unchanged resource unless `verbose` (or it drifted).
pub fn entry_text(e: &PlanEntry, verbose: bool, p: &Palette) -> String {
    const BODY: &str = "      ";
    let mut out = String::new();
    if let Some(err) = &e.error {
        let err = err.trim_end().replace('\n', "\n    ");
        out.push_str(&format!("  {}\n", p.red.apply_to(format!("✗ {}: {err}", e.name))));
        return out;
    }
    if e.action == Action::Noop && !verbose && e.drift.is_empty() {
        return out;
    }
    let style = match e.action {
        Action::Create => &p.green,
        Action::Update => &p.yellow,
        Action::Replace | Action::Delete => &p.red,
        Action::Adopt => &p.cyan,
        Action::Noop => &p.dim,
    };
    out.push_str(&format!(
        "  {} {} {}\n",
        style.apply_to(e.symbol()),
        p.bold.apply_to(&e.name),
        p.dim.apply_to(format!("({})", e.kind))
    ));
    if let Some(reason) = &e.reason {
        out.push_str(&format!("{BODY}{}\n", p.dim.apply_to(format!("# {reason}"))));
    }
    match e.action {
        Action::Create | Action::Adopt => {
            for (k, v) in &e.inputs {
                out.push_str(&format!("{BODY}{k} = {}\n", value(v)));
            }
            for k in e.known_after_apply.iter().filter(|k| !e.inputs.contains_key(*k)) {
                out.push_str(&format!("{BODY}{k} = (known after apply)\n"));
            }
        }
        Action::Update | Action::Replace => {
            for c in &e.changes {
                out.push_str(&format!("{BODY}{}\n", change_text(c, p)));
            }
            for k in e.known_after_apply.iter().filter(|k| !e.changes.iter().any(|c| &c.path == *k)) {
                out.push_str(&format!("{BODY}{k}: (known after apply)\n"));
            }
        }
        Action::Delete | Action::Noop => {}
    }
    for d in &e.drift {
        out.push_str(&format!("{BODY}{}\n", p.yellow.apply_to(format!("! drift: {d}"))));
    }
    out
}

/// `path: before -> after`, with ` (forces replacement)` when it does.
fn change_text(c: &Change, p: &Palette) -> String {
    let side = |v: &Option<Value>, missing: &str| v.as_ref().map_or(missing.to_string(), value);
    let mut s = format!("{}: {} -> {}", c.path, side(&c.before, "(none)"), side(&c.after, "(removed)"));
    if c.forces_replace {
        s.push_str(&format!(" {}", p.red.apply_to("(forces replacement)")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_engine::Summary;
    use serde_json::json;

    fn entry(name: &str, kind: &str, action: Action, inputs: Value) -> PlanEntry {
        PlanEntry {
            name: name.into(),
            kind: kind.into(),
            action,
            inputs: inputs.as_object().cloned().unwrap_or_default(),
            known_after_apply: vec![],
            changes: vec![],
            drift: vec![],
            reason: None,
            depends_on: vec![],
            tags: vec![],
            error: None,
            create_before_destroy: false,
        }
    }

    fn plan(entries: Vec<PlanEntry>) -> Plan {
        let mut summary = Summary::default();
        for e in &entries {
            if e.error.is_none() {
                summary.add(e.action);
            }
        }
        Plan { entries, summary }
    }

    fn change(path: &str, before: Value, after: Value, forces_replace: bool) -> Change {
        Change { path: path.into(), before: Some(before), after: Some(after), forces_replace }
    }

    #[test]
    fn every_action() {
        let mut upd = entry("file-b", "local.file", Action::Update, json!({}));
        upd.changes = vec![change("content", json!("a"), json!("b"), false)];
        upd.drift = vec!["content changed outside ferry".into()];
        let mut rep = entry("key", "local.ssh-keypair", Action::Replace, json!({}));
        rep.reason = Some("comment changed".into());
        rep.changes = vec![change("comment", json!("a"), json!("b"), true)];
        let mut bad = entry("broken", "local.file", Action::Create, json!({}));
        bad.error = Some("input `path` is required".into());
        let p = plan(vec![
            entry("file-a", "local.file", Action::Create, json!({"content": "hello", "path": "/tmp/a"})),
            upd,
            rep,
            entry("old", "local.file", Action::Delete, json!({"path": "/tmp/old"})),
            entry("half", "local.file", Action::Adopt, json!({"path": "/tmp/h"})),
            entry("same", "local.file", Action::Noop, json!({"path": "/tmp/s"})),
            bad,
        ]);
        let text = render(&p, false, &Palette::plain());
        assert_eq!(
            text,
            "  + file-a (local.file)
      content = \"hello\"
      path = \"/tmp/a\"
  ~ file-b (local.file)
      content: \"a\" -> \"b\"
      ! drift: content changed outside ferry
  -/+ key (local.ssh-keypair)
      # comment changed
      comment: \"a\" -> \"b\" (forces replacement)
  - old (local.file)
  <= half (local.file)
      path = \"/tmp/h\"
  ✗ broken: input `path` is required

Plan: 1 to create, 1 to update, 1 to replace, 1 to destroy, 1 unchanged, 1 to adopt
"
        );
        let verbose = render(&p, true, &Palette::plain());
        assert!(verbose.contains("\n    same (local.file)\n"), "{verbose}");
    }

    #[test]
    fn known_after_apply_inputs() {
        let mut e = entry(
            "host",
            "local.file",
            Action::Create,
            json!({"path": "/tmp/k", "content": "(known after apply: key.publicKey)"}),
        );
        e.known_after_apply = vec!["content".into(), "mode".into()];
        let text = render(&plan(vec![e]), false, &Palette::plain());
        assert!(text.contains("      content = (known after apply: key.publicKey)\n"), "{text}");
        assert!(text.contains("      mode = (known after apply)\n"), "{text}");
    }

    #[test]
    fn sensitive_values_stay_hidden() {
        let mut e = entry(
            "secret",
            "local.file",
            Action::Create,
            json!({"path": "/run/s", "content": "(sensitive)"}),
        );
        e.changes = vec![];
        let mut u = entry("token", "local.file", Action::Update, json!({}));
        u.changes = vec![change("content", json!("(sensitive)"), json!("(sensitive)"), false)];
        let text = render(&plan(vec![e, u]), true, &Palette::plain());
        assert!(text.contains("      content = (sensitive)\n"), "{text}");
        assert!(text.contains("      content: (sensitive) -> (sensitive)\n"), "{text}");
        assert!(!text.contains("\"(sensitive)\""));
    }

    #[test]
    fn no_changes() {
        let p = plan(vec![entry("same", "local.file", Action::Noop, json!({}))]);
        assert_eq!(render(&p, false, &Palette::plain()), "No changes.\n");
        assert_eq!(render(&Plan::default(), false, &Palette::plain()), "No changes.\n");
    }

    #[test]
    fn colours_only_when_asked() {
        let p = plan(vec![entry("a", "local.file", Action::Create, json!({}))]);
        assert!(!render(&p, false, &Palette::plain()).contains('\u{1b}'));
        assert!(render(&p, false, &Palette::new(true)).contains('\u{1b}'));
    }
}
