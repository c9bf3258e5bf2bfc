//! Errors at the CLI edge: how a failure maps to an exit status and how it is printed.
//!
//! Commands return `anyhow::Result<Outcome>`. An `Err` is printed exactly once by `main` as
//! `error: <message>` (plus `hint: ...` lines where the user can act); its exit status comes
//! from [`exit_code`]. A command that already reported its failure itself (a failed apply
//! lists every failed resource) returns `Ok(Outcome::Failed)` instead.

use ferry_engine::EngineError;
use ferry_eval::EvalError;
use ferry_state::StateError;

/// How a command ended when it did not return an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The failure was already reported.
    Failed,
    Interrupted,
}

impl Outcome {
    pub fn code(self) -> i32 {
        match self {
            Outcome::Success => 0,
            Outcome::Failed => 1,
            Outcome::Interrupted => 130,
        }
    }
}

/// The command line asks for something impossible: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// 2 for usage errors (ours or the engine's), 1 for everything else.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.is::<UsageError>() || matches!(cause.downcast_ref(), Some(EngineError::Usage(_))) {
            return 2;
        }
    }
    1
}

/// The text printed for an error: `error: ...` then hints, each line ending in `\n`.
/// `show_trace`: `--show-trace` was given, so do not suggest it.
pub fn render(err: &anyhow::Error, show_trace: bool) -> String {
    // `{:#}` joins the context chain with ": ". Nix's own messages start with "error: ";
    // drop that so the line does not read "error: error: ...".
    let text = chain_text(err);
    let text = text.trim_end();
    let text = text.strip_prefix("error: ").unwrap_or(text);
    let mut out = format!("error: {text}\n");
    for hint in hints(err).into_iter().filter(|h| !(show_trace && h.contains("--show-trace"))) {
        out.push_str(&format!("hint: {hint}\n"));
    }
    out
}

/// The context chain joined with ": " (like `{:#}`), leaving out a cause whose text the message
/// before it already includes (an error that prints its source *and* names it as `source`
/// would otherwise read "…: database is locked: database is locked").
fn chain_text(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = cause.to_string();
        if parts.last().is_some_and(|last| last.contains(s.trim())) {
            continue;
        }
        parts.push(s);
    }
    parts.join(": ")
}

fn hints(err: &anyhow::Error) -> Vec<String> {
    let mut hints = Vec::new();
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<StateError>() {
            state_hints(e, &mut hints);
        } else if let Some(e) = cause.downcast_ref::<EngineError>() {
            match e {
                EngineError::State(s) => state_hints(s, &mut hints),
                EngineError::Eval(EvalError::Nix { .. }) => {
                    hints.push("run with --show-trace for Nix's full evaluation trace".into())
                }
                EngineError::Nix { .. } => {
                    hints.push("run with --show-trace for Nix's full evaluation trace".into())
                }
                _ => {}
            }
        }
    }
    hints
}

fn state_hints(e: &StateError, hints: &mut Vec<String>) {
    if let StateError::Locked { .. } = e {
        hints.push("pass --lock-timeout SECONDS to wait for the other run".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_source_already_in_its_message_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("state database x: {source}")]
        struct Outer {
            #[source]
            source: std::io::Error,
        }
        let io = std::io::Error::other("database is locked");
        let err = anyhow::Error::new(Outer { source: io }).context("applying");
        assert_eq!(render(&err, false), "error: applying: state database x: database is locked\n");
    }

    #[test]
    fn usage_errors_exit_2_wherever_they_are_in_the_chain() {
        assert_eq!(exit_code(&usage("bad --on")), 2);
        let e: anyhow::Error = EngineError::Usage("no such resource".into()).into();
        assert_eq!(exit_code(&e), 2);
        assert_eq!(exit_code(&e.context("while planning")), 2);
        let e: anyhow::Error = EngineError::Deployment("cycle: a -> b -> a".into()).into();
        assert_eq!(exit_code(&e), 1);
        assert_eq!(exit_code(&anyhow::anyhow!("boom")), 1);
    }

    #[test]
    fn outcomes() {
        assert_eq!(Outcome::Success.code(), 0);
        assert_eq!(Outcome::Failed.code(), 1);
        assert_eq!(Outcome::Interrupted.code(), 130);
    }

    #[test]
    fn rendering_prints_once_with_hints() {
        let e: anyhow::Error = EngineError::Eval(EvalError::Nix {
            message: "error: undefined variable 'x'\n       at /d.nix:3:5".into(),
            user: false,
        })
        .into();
        let text = render(&e, false);
        assert!(text.starts_with("error: undefined variable 'x'\n"), "{text}");
        assert!(text.contains("hint: run with --show-trace"));
        assert!(!render(&e, true).contains("hint:"));
        let e = Err::<(), _>(std::io::Error::other("disk full")).context("writing /tmp/x").unwrap_err();
        assert_eq!(render(&e, false), "error: writing /tmp/x: disk full\n");
    }
}
