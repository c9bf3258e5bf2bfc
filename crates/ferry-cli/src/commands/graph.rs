//! `ferry graph`: the resources and their visible output -> input edges, as Graphviz DOT
//! (`ferry graph | dot -Tsvg`), or `--json` `{"nodes": [...], "edges": [...]}`.

use crate::commands::{emit, emit_json, Context};
use crate::error::Outcome;

pub fn run(ctx: &Context, json: bool) -> anyhow::Result<Outcome> {
    ctx.require_file()?;
    let progress = ctx.progress();
    let engine = ctx.engine(&progress)?;
    let result = engine.graph();
    progress.finish();
    let graph = result?;
    progress.suspend(|| if json { emit_json(&graph) } else { emit(&graph.to_dot()) })?;
    Ok(Outcome::Success)
}
