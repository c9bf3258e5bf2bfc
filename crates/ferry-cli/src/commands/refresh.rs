//! `ferry refresh`: read every recorded resource, report drift, update recorded outputs.
//!
//! ```text
//!   ✓ file-a (local.file): in sync
//!   ! file-b (local.file): drifted
//!       content changed outside ferry
//!   ✗ file-c (local.file): missing
//!   ? proc (x.daemon): not readable (the provider cannot read this kind)
//!   ✗ file-d (local.file): error: permission denied
//!
//! Refresh: 1 in sync, 1 drifted, 1 missing, 1 not readable, 1 error
//! ```
//!
//! Drift is information, not failure (exit 0); a resource that could not be read exits 1.

use anyhow::Context as _;
use serde::Deserialize;

use crate::commands::{emit, emit_json, Context};
use crate::error::Outcome;
use crate::render::Palette;

pub fn run(ctx: &Context, json: bool) -> anyhow::Result<Outcome> {
    let progress = ctx.progress();
    let engine = ctx.engine(&progress)?;
    let result = engine.refresh();
    progress.finish();
    let report = result?;
    // The engine's report types are not exported; read them through their JSON form.
    let view: RefreshView = serde_json::to_value(&report)
        .and_then(serde_json::from_value)
        .context("cannot decode the refresh report")?;
    progress
        .suspend(|| if json { emit_json(&report) } else { emit(&render(&view, &ctx.stdout_palette())) })?;
    if view.resources.iter().any(|r| r.status == "error") {
        return Ok(Outcome::Failed);
    }
    Ok(Outcome::Success)
}

/// The fields of the engine's `RefreshReport` shown here.
#[derive(Debug, Deserialize)]
pub struct RefreshView {
    pub resources: Vec<RefreshEntry>,
}

#[derive(Debug, Deserialize)]
pub struct RefreshEntry {
    pub name: String,
    pub kind: String,
    pub status: String,
    #[serde(default)]
    pub drift: Vec<String>,
    #[serde(default)]
    pub error: Option<String>,
}

pub fn render(report: &RefreshView, p: &Palette) -> String {
    let mut out = String::new();
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for r in &report.resources {
        let (mark, text) = match r.status.as_str() {
            "inSync" => (p.green.apply_to("✓"), "in sync".to_string()),
            "drifted" => (p.yellow.apply_to("!"), "drifted".to_string()),
            "missing" => (p.red.apply_to("✗"), "missing".to_string()),
            "unreadable" => {
                (p.dim.apply_to("?"), "not readable (the provider cannot read this kind)".to_string())
            }
            "error" => (
                p.red.apply_to("✗"),
                format!("error: {}", r.error.as_deref().unwrap_or("unknown error").trim_end()),
            ),
            other => (p.dim.apply_to("?"), other.to_string()),
        };
        out.push_str(&format!(
            "  {mark} {} {}: {text}\n",
            p.bold.apply_to(&r.name),
            p.dim.apply_to(format!("({})", r.kind))
        ));
        for d in &r.drift {
            out.push_str(&format!("      {d}\n"));
        }
        let label = match r.status.as_str() {
            "inSync" => "in sync",
            "drifted" => "drifted",
            "missing" => "missing",
            "unreadable" => "not readable",
            "error" => "error",
            other => other,
        };
        match counts.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => counts.push((label, 1)),
        }
    }
    if report.resources.is_empty() {
        out.push_str("Refresh: nothing recorded\n");
    } else {
        let parts: Vec<String> = counts.iter().map(|(l, n)| format!("{n} {l}")).collect();
        out.push_str(&format!("\nRefresh: {}\n", parts.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, status: &str, drift: &[&str], error: Option<&str>) -> RefreshEntry {
        RefreshEntry {
            name: name.into(),
            kind: "local.file".into(),
            status: status.into(),
            drift: drift.iter().map(|s| s.to_string()).collect(),
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn lines_and_summary() {
        let report = RefreshView {
            resources: vec![
                entry("a", "inSync", &[], None),
                entry("b", "drifted", &["content changed outside ferry"], None),
                entry("c", "missing", &[], None),
                entry("d", "inSync", &[], None),
            ],
        };
        assert_eq!(
            render(&report, &Palette::plain()),
            "  ✓ a (local.file): in sync
  ! b (local.file): drifted
      content changed outside ferry
  ✗ c (local.file): missing
  ✓ d (local.file): in sync

Refresh: 2 in sync, 1 drifted, 1 missing
"
        );
    }
}
