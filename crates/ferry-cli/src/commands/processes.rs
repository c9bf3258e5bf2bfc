//! `ferry processes …`: actions on a recorded `processes.set` (status, generations, rollback),
//! through the engine ([`ferry_engine::Engine::action`]), which holds the state lock. A
//! rollback keeps the recorded outputs, so the next plan shows the rolled-back profile as drift.

use serde_json::json;

use crate::cli::ProcessesCommand;
use crate::commands::{emit, Context};
use crate::error::Outcome;

pub fn run(ctx: &Context, cmd: ProcessesCommand) -> anyhow::Result<Outcome> {
    let (name, action, args) = match cmd {
        ProcessesCommand::Status { name } => (name, "status", json!({})),
        ProcessesCommand::Generations { name } => (name, "generations", json!({})),
        ProcessesCommand::Rollback { name, to } => (name, "rollback", json!({ "to": to })),
    };
    let progress = ctx.progress();
    let engine = ctx.engine(&progress)?;
    let args = args.as_object().cloned().unwrap_or_default();
    let result = engine.action(&name, action, args)?;
    if let Some(m) = result.message {
        emit(&format!("{m}\n"))?;
    }
    Ok(Outcome::Success)
}
