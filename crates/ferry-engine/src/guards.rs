//! Guard rails: checks that refuse a run before anything changes (ADR 007).
//!
//! - A state belongs to one deployment (its file, relative to the state's directory, and its
//!   `name`); another deployment is refused unless `--rebind`. An unbound state (new, or from
//!   schema v1) is bound by the first apply that writes to it.
//! - An apply that would destroy every recorded resource and create nothing needs
//!   `ferry destroy` or `--allow-destroy-all`.
//! - A resource with `protect = true` is never replaced or destroyed: a plan that would is a
//!   plan error (and a plan error stops the whole apply), `ferry destroy` refuses it.

use crate::plan::{Action, Plan};
use crate::plan_phase::Planned;
use crate::session::Session;
use crate::EngineError;
use ferry_state::DeploymentIdentity;
use std::collections::BTreeSet;

/// The running deployment's identity as seen from the state.
fn identity(s: &Session) -> DeploymentIdentity {
    let cfg = &s.engine.cfg;
    DeploymentIdentity::new(&cfg.state_path, &cfg.file, s.deployment_name.clone())
}

/// Refuse a state bound to another deployment (unless `--rebind`).
pub(crate) fn check_identity(s: &Session) -> Result<(), EngineError> {
    let Some(st) = s.state() else { return Ok(()) };
    let Some(recorded) = st.deployment()? else { return Ok(()) };
    let current = identity(s);
    if s.engine.cfg.rebind || recorded.same_deployment(&current) {
        return Ok(());
    }
    let cfg = &s.engine.cfg;
    let state = cfg.state_path.display();
    let file = cfg.file.display();
    let own = ferry_state::default_state_path(&cfg.file);
    let own = if own == cfg.state_path {
        String::from("pass --state PATH")
    } else {
        format!("its default is {}: drop --state", own.display())
    };
    Err(EngineError::Refused(format!(
        "state {state} belongs to deployment {}, not to {}; nothing was changed (applying this \
         deployment there would destroy the other one's resources)\n\
         hint: give this deployment its own state ({own})\n\
         hint: if this file is that deployment now (moved, renamed or replaced on purpose), pass \
         --rebind, or run `ferry state rebind -f {file}`",
        recorded.describe(&cfg.state_path),
        current.describe(&cfg.state_path),
    )))
}

/// Before the first change of an apply: bind the state to this deployment and record the
/// `protect` flags that changed without any other change.
pub(crate) fn record_binding(s: &Session) -> Result<(), EngineError> {
    let Some(st) = s.state() else { return Ok(()) };
    st.bind_deployment(&identity(s))?;
    for (name, d) in &s.decls {
        if s.records.get(name).is_some_and(|r| r.protect != d.protect && r.last_applied_at.is_some()) {
            st.set_protect(name, d.protect)?;
        }
    }
    Ok(())
}

/// Refuse an apply that destroys every recorded resource and creates nothing.
pub(crate) fn check_destroy_all(s: &Session, planned: &Planned, plan: &Plan) -> Result<(), EngineError> {
    let n = s.records.len();
    if s.engine.cfg.allow_destroy_all || n == 0 || planned.orphans.len() < n || plan.summary.create > 0 {
        return Ok(());
    }
    let mut names: Vec<&str> = s.records.keys().map(String::as_str).take(10).collect();
    if n > names.len() {
        names.push("…");
    }
    let declares = if s.decls.is_empty() { "declares no resources" } else { "declares none of them" };
    Err(EngineError::Refused(format!(
        "this apply would destroy all {n} recorded resources ({}) and create nothing: {} {declares}; \
         nothing was changed\n\
         hint: if that is a mistake (the wrong file, a module left out of \
         `imports`), fix the deployment\n\
         hint: to destroy them on purpose, run `ferry destroy`, or pass --allow-destroy-all",
        names.join(", "),
        s.engine.cfg.file.display(),
    )))
}

/// The error of a protected resource whose change would replace it.
pub(crate) fn protected_replace(name: &str) -> String {
    format!(
        "resource `{name}` is protected (protect = true): this change replaces it, destroying the \
         current one; nothing was changed. Undo the change that forces the replacement, or set \
         `protect = false;` on `{name}` to allow it"
    )
}

fn protected_orphan(name: &str) -> String {
    format!(
        "resource `{name}` is protected (protect = true in state): it is no longer in the \
         deployment, and apply would destroy it; nothing was changed. To destroy it, declare it \
         again with `protect = false;` and apply, then remove it; to keep it but stop managing \
         it, run `ferry state rm {name}`"
    )
}

/// Plan errors the planner does not see: a replace or destroy of a protected resource, an
/// orphan whose provider cannot be started. Also notes deposed objects still to delete.
pub(crate) fn mark_plan_errors(s: &Session, planned: &Planned, plan: &mut Plan) {
    let orphans: BTreeSet<&String> = planned.orphans.iter().collect();
    for e in plan.entries.iter_mut().filter(|e| e.error.is_none()) {
        let rec = s.records.get(&e.name);
        if rec.is_some_and(|r| r.deposed.is_some()) {
            e.drift.push(DEPOSED.into());
        }
        let error = match (e.action, rec) {
            (Action::Replace, _) if s.decls.get(&e.name).is_some_and(|d| d.protect) => {
                protected_replace(&e.name)
            }
            (Action::Delete, Some(r)) if orphans.contains(&e.name) => match s.kind_of_record(r) {
                _ if r.protect => protected_orphan(&e.name),
                Err(err) => format!("resource `{}`: {err}", e.name),
                Ok(_) => continue,
            },
            _ => continue,
        };
        plan.summary.remove(e.action);
        e.error = Some(error);
    }
}

const DEPOSED: &str = "the old object a replacement superseded is still there: it is deleted first";

/// Whether the plan deletes a deposed object (which needs confirmation like any change).
pub(crate) fn has_deposed(plan: &Plan) -> bool {
    plan.entries.iter().any(|e| e.drift.iter().any(|d| d == DEPOSED))
}

/// Before a state is created for a file other than `deployment.nix` at its default place:
/// refuse if the directory's `.ferry/state.db` — shared by every file of the directory before
/// schema v2 — may hold this deployment (unbound, or bound to this file). Otherwise its
/// resources would be created a second time in a new, empty state.
pub(crate) fn check_shared_state(cfg: &crate::EngineConfig) -> Result<(), EngineError> {
    let shared = cfg.file.parent().map(|d| d.join(ferry_state::DEFAULT_STATE_PATH));
    let Some(shared) = shared.filter(|p| *p != cfg.state_path) else { return Ok(()) };
    if cfg.state_given || cfg.state_path.exists() || !shared.exists() {
        return Ok(());
    }
    let store = ferry_state::StateStore::open_existing(&shared)?;
    let this = DeploymentIdentity::new(&shared, &cfg.file, None);
    let mine = match store.deployment()? {
        None => !store.resources()?.is_empty(),
        Some(bound) => bound.file == this.file,
    };
    if !mine {
        return Ok(());
    }
    Err(EngineError::Refused(format!(
        "{} has no state of its own yet ({}), but {} may hold its resources: older ferry versions \
         shared one state per directory; nothing was changed\n\
         hint: if it is this deployment's state, keep using it: pass --state {}\n\
         hint: if it is not, start this deployment's own state: pass --state {}",
        cfg.file.display(),
        cfg.state_path.display(),
        shared.display(),
        shared.display(),
        cfg.state_path.display(),
    )))
}

/// Refuse `ferry destroy` of protected resources.
pub(crate) fn check_destroy(s: &Session, chosen: &BTreeSet<String>) -> Result<(), EngineError> {
    let protected: Vec<&str> =
        chosen.iter().filter(|n| s.records.get(*n).is_some_and(|r| r.protect)).map(String::as_str).collect();
    if protected.is_empty() {
        return Ok(());
    }
    Err(EngineError::Refused(format!(
        "refusing to destroy protected resources: {} (protect = true); nothing was changed\n\
         hint: set `protect = false;` on them in the deployment and apply first, or leave them out \
         with --on",
        protected.join(", ")
    )))
}
