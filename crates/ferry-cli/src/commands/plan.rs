//! `ferry plan`: evaluate and compare, change nothing. Prints the plan (text or `--json`) on
//! stdout; exits 1 when some resource could not be planned.

use crate::commands::{emit, emit_json, Context};
use crate::error::Outcome;
use crate::render;

pub fn run(ctx: &Context, json: bool) -> anyhow::Result<Outcome> {
    ctx.require_file()?;
    let progress = ctx.progress();
    let engine = ctx.engine(&progress)?;
    let result = engine.plan();
    progress.finish();
    let (plan, timings) = result?;
    progress.suspend(|| {
        if json {
            emit_json(&plan)
        } else {
            emit(&render::plan::render(&plan, ctx.opts.verbose > 0, &ctx.stdout_palette()))
        }
    })?;
    ctx.timings(&timings);
    let errors = plan.entries.iter().filter(|e| e.error.is_some()).count();
    if errors > 0 {
        eprintln!("error: {} could not be planned", resources(errors));
        return Ok(Outcome::Failed);
    }
    Ok(Outcome::Success)
}

/// `1 resource`, `2 resources`.
pub fn resources(n: usize) -> String {
    format!("{n} resource{}", if n == 1 { "" } else { "s" })
}
