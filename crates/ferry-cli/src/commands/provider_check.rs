//! `ferry provider check EXECUTABLE [ARGS...] [--sample KIND=JSON]...`: run the protocol
//! conformance checks (`ferry_protocol::conformance`) against a provider program.
//!
//! Text: one `ok  NAME: DETAIL` / `FAIL NAME: DETAIL` line per check, then a verdict (the
//! report's own rendering). `--json`: `{"passed": bool, "checks": [{name, passed, detail}],
//! "stderr": "..."}`. Exit 1 when any check fails.

use ferry_protocol::conformance::{self, CheckOptions, CheckReport};
use serde_json::{json, Value};

use crate::cli::ProviderSubcommand;
use crate::commands::{emit, emit_json, Context};
use crate::error::{usage, Outcome};

pub fn run(ctx: &Context, command: ProviderSubcommand) -> anyhow::Result<Outcome> {
    let ProviderSubcommand::Check { executable, args, sample, json } = command;
    let samples = sample.iter().map(|s| parse_sample(s)).collect::<anyhow::Result<Vec<_>>>()?;
    let opts = CheckOptions {
        samples,
        // Conformance calls are quick; a provider's 600 s default would only hide a hang.
        timeout: ctx.opts.timeout_flag.unwrap_or(CheckOptions::default().timeout),
        ..CheckOptions::default()
    };
    let report = conformance::check(&executable, &args, &opts);
    if json {
        emit_json(&report_json(&report))?;
    } else {
        emit(&report.to_string())?;
    }
    Ok(if report.passed() { Outcome::Success } else { Outcome::Failed })
}

/// `KIND=JSON` with a JSON object; anything else is a usage error.
fn parse_sample(s: &str) -> anyhow::Result<(String, ferry_protocol::Object)> {
    let (kind, text) = s.split_once('=').ok_or_else(|| {
        usage(format!("--sample {s:?}: expected KIND=JSON, e.g. --sample 'file={{\"path\":\"/tmp/x\"}}'"))
    })?;
    if kind.is_empty() {
        return Err(usage(format!("--sample {s:?}: the kind is empty")));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => Ok((kind.to_string(), o)),
        Ok(_) => Err(usage(format!("--sample {s:?}: the inputs must be a JSON object"))),
        Err(e) => Err(usage(format!("--sample {s:?}: invalid JSON: {e}"))),
    }
}

fn report_json(r: &CheckReport) -> Value {
    json!({
        "passed": r.passed(),
        "checks": r.checks.iter().map(|c| json!({"name": c.name, "passed": c.passed, "detail": c.detail})).collect::<Vec<_>>(),
        "stderr": r.stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples() {
        let (k, o) = parse_sample(r#"file={"path":"/tmp/x","content":"a=b"}"#).unwrap();
        assert_eq!(k, "file");
        assert_eq!(o["content"], "a=b");
        for bad in ["file", "={}", "file=[1]", "file={"] {
            let e = parse_sample(bad).unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 2, "{bad}");
        }
    }
}
