//! `ferry apply` (and, through [`run_changes`], `ferry destroy`): plan, confirm, change,
//! report.
//!
//! Confirmation: with `--yes` the plan is shown and applied. Without it, a person is asked
//! `Apply these changes? [y/N]` when stdin and stderr are terminals; otherwise the command
//! refuses (exit 2). A plan without changes asks nothing. After the run:
//! `Apply complete: 1 created, 2 unchanged` (stdout), or `Apply failed: 1 failed, 2 skipped`
//! followed by `  ✗ NAME: ERROR` and `  - NAME: skipped: REASON` lines (stderr, exit 1), or
//! `Apply interrupted: ...` (exit 130).

use std::io::BufRead;
use std::sync::atomic::Ordering;

use ferry_engine::{Plan, RunReport, Summary};

use crate::commands::{can_ask, emit, Context};
use crate::error::{usage, Outcome};
use crate::render;

/// Which of the two changing verbs is running; only words differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Apply,
    Destroy,
}

impl Verb {
    fn noun(self) -> &'static str {
        match self {
            Verb::Apply => "Apply",
            Verb::Destroy => "Destroy",
        }
    }
    fn question(self) -> &'static str {
        match self {
            Verb::Apply => "Apply these changes? [y/N] ",
            Verb::Destroy => "Destroy these resources? [y/N] ",
        }
    }
    fn word(self) -> &'static str {
        match self {
            Verb::Apply => "apply",
            Verb::Destroy => "destroy",
        }
    }
}

pub fn run(ctx: &Context, yes: bool) -> anyhow::Result<Outcome> {
    // destroy works from state alone; apply needs something to apply.
    ctx.require_file()?;
    run_changes(ctx, yes, Verb::Apply)
}

#[derive(Default)]
struct Asked {
    shown: bool,
    refused_no_tty: bool,
    declined: bool,
}

pub fn run_changes(ctx: &Context, yes: bool, verb: Verb) -> anyhow::Result<Outcome> {
    let progress = ctx.progress();
    let engine = ctx.engine(&progress)?;
    let palette = ctx.stdout_palette();
    let verbose = ctx.opts.verbose > 0;
    let interactive = can_ask();
    let mut asked = Asked::default();

    let mut confirm = |plan: &Plan| -> bool {
        asked.shown = true;
        progress.suspend(|| {
            // A closed stdout must not stop the run; the plan is informational here.
            let _ = emit(&render::plan::render(plan, verbose, &palette));
            if yes {
                return true;
            }
            if !interactive {
                asked.refused_no_tty = true;
                return false;
            }
            let ok = ask(verb.question());
            if !ok || ctx.interrupted.load(Ordering::SeqCst) {
                asked.declined = true;
                return false;
            }
            true
        })
    };
    let result = match verb {
        Verb::Apply => engine.apply(&mut confirm),
        Verb::Destroy => engine.destroy(&mut confirm),
    };
    progress.finish();
    // Checked before the result: the engine reports a declined confirmation as its own error.
    if asked.refused_no_tty {
        return Err(usage(format!(
            "refusing to {} without confirmation: stdin is not a terminal; pass --yes",
            verb.word()
        )));
    }
    if asked.declined {
        eprintln!("{} cancelled; nothing was changed.", verb.noun());
        return Ok(Outcome::Failed);
    }
    let (plan, report) = result?;
    ctx.timings(&report.timings);
    if !asked.shown {
        progress.suspend(|| emit(&render::plan::render(&plan, verbose, &palette)))?;
        let errors = plan.entries.iter().filter(|e| e.error.is_some()).count();
        if errors > 0 {
            eprintln!("error: {} could not be planned; nothing was changed", super::plan::resources(errors));
            return Ok(Outcome::Failed);
        }
        if plan.summary.changes() == 0 && report.ok() {
            return Ok(Outcome::Success);
        }
    }
    let (text, outcome) = report_text(verb, &report);
    match outcome {
        Outcome::Success => emit(&text)?,
        _ => eprint!("{text}"),
    }
    Ok(outcome)
}

/// Ask `question` on stderr, read a line from stdin: `y` or `yes` (any case) is yes.
fn ask(question: &str) -> bool {
    eprint!("{question}");
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(_) => matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"),
        Err(_) => false,
    }
}

/// The closing report and how the command ends.
pub fn report_text(verb: Verb, r: &RunReport) -> (String, Outcome) {
    let noun = verb.noun();
    let mut out = String::new();
    let outcome = if r.interrupted {
        out.push_str(&format!("{noun} interrupted: {}\n", done(&r.summary)));
        Outcome::Interrupted
    } else if r.ok() {
        out.push_str(&format!("{noun} complete: {}\n", done(&r.summary)));
        Outcome::Success
    } else {
        out.push_str(&format!("{noun} failed: {} failed, {} skipped\n", r.failed.len(), r.skipped.len()));
        Outcome::Failed
    };
    for (name, error) in &r.failed {
        out.push_str(&format!("  ✗ {name}: {}\n", error.trim_end().replace('\n', "\n    ")));
    }
    for (name, reason) in &r.skipped {
        out.push_str(&format!("  - {name}: skipped: {reason}\n"));
    }
    (out, outcome)
}

/// What was done, in the past tense: `1 created, 1 destroyed, 3 unchanged`.
pub fn done(s: &Summary) -> String {
    let parts: Vec<String> = [
        (s.create, "created"),
        (s.update, "updated"),
        (s.replace, "replaced"),
        (s.delete, "destroyed"),
        (s.adopt, "adopted"),
        (s.unchanged, "unchanged"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, w)| format!("{n} {w}"))
    .collect();
    if parts.is_empty() {
        "nothing to do".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete() {
        let mut r = RunReport::default();
        r.summary.create = 2;
        r.summary.unchanged = 1;
        let (text, outcome) = report_text(Verb::Apply, &r);
        assert_eq!(text, "Apply complete: 2 created, 1 unchanged\n");
        assert_eq!(outcome, Outcome::Success);
        let (text, _) = report_text(Verb::Destroy, &RunReport::default());
        assert_eq!(text, "Destroy complete: nothing to do\n");
    }

    #[test]
    fn failed_lists_every_resource() {
        let r = RunReport {
            failed: vec![("file-b".into(), "permission denied: /etc/x".into())],
            skipped: vec![("file-c".into(), "depends on file-b, which failed".into())],
            ..RunReport::default()
        };
        let (text, outcome) = report_text(Verb::Apply, &r);
        assert_eq!(
            text,
            "Apply failed: 1 failed, 1 skipped\n  ✗ file-b: permission denied: /etc/x\n  - file-c: skipped: depends on file-b, which failed\n"
        );
        assert_eq!(outcome, Outcome::Failed);
    }

    #[test]
    fn interrupted_is_130() {
        let r = RunReport { interrupted: true, ..RunReport::default() };
        let (text, outcome) = report_text(Verb::Apply, &r);
        assert!(text.starts_with("Apply interrupted: "));
        assert_eq!(outcome.code(), 130);
    }
}
