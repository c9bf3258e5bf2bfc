//! `ferry destroy`: destroy every recorded resource (or the `--on` selection and what
//! depends on it). Same confirmation and report as apply (see [`super::apply`]), with
//! `Destroy these resources? [y/N]` and `Destroy complete: ...`.

use crate::commands::apply::{run_changes, Verb};
use crate::commands::Context;
use crate::error::Outcome;

pub fn run(ctx: &Context, yes: bool) -> anyhow::Result<Outcome> {
    run_changes(ctx, yes, Verb::Destroy)
}
