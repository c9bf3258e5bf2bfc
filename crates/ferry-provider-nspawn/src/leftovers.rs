//! What a create that failed or was cut short leaves on the host (issue 13, fault 2). A new
//! container is marked `incomplete` by `nspawn.sh prepare` before anything is claimed for it,
//! and the mark is cleared when its deploy completes. A failed create removes what it made
//! ([`undo_create`]); what a cut-short one left (ferry killed, the host gone during the undo)
//! is reported by `read` without recorded outputs as existing, with drift
//! ([`read_unrecorded`]), so the engine finishes it (update) or removes it (replace) instead of
//! creating beside it, and `ferry container list` shows it as `incomplete`.

use ferry_protocol::sdk::CallContext;
use ferry_protocol::{ProviderError, ReadResult};

use crate::container::{outputs_from_probe, probe, Probe};
use crate::host::Host;
use crate::schema::Container;

/// Undo what a failed create of a new container made: stop it and remove its unit, files,
/// profile and address claims — its root directory too, unless it was there before (data kept
/// by `keepState`, whose addresses stay claimed for it). If that fails too, the container stays
/// marked `incomplete`, for the next apply or destroy.
pub fn undo_create(
    h: &Host,
    c: &Container,
    before: &Probe,
    e: ProviderError,
    cx: &CallContext,
) -> ProviderError {
    match probe(h, &c.name) {
        Ok(now) if now.has_files || now.exists => {}
        _ => return e, // nothing was made (or the host cannot be reached: the error says so)
    }
    cx.warn(format!("the create of {} failed: removing what it made on {}", c.name, h.label));
    let purge = if before.has_root { "no" } else { "yes" };
    let timeout = c.stop_timeout.to_string();
    let undone = h
        .run("stopping the container", "stop", &[&c.name, &timeout], None, c.stop_timeout + 30)
        .and_then(|_| h.run("disabling the container", "enable", &[&c.name, "no"], None, 30))
        .and_then(|_| h.run("removing the container", "destroy", &[&c.name, purge], None, 120));
    let note = match undone {
        Ok(_) => "what the failed create made was removed again: its files and address claims".to_string(),
        Err(u) => format!(
            "removing what the failed create made failed too: {u}; the next `ferry apply` or `ferry destroy` removes it"
        ),
    };
    ProviderError { message: format!("{}\n({note})", e.message), ..e }
}

/// `read` without recorded outputs (after a create that was cut short or failed): a finished
/// deploy of these inputs is adopted; what an unfinished one left exists, with drift.
pub fn read_unrecorded(c: &Container, h: &Host, pr: &Probe, mine: bool) -> ReadResult {
    let absent = ReadResult { exists: false, outputs: None, inputs: None, drift: vec![] };
    if !mine {
        return absent;
    }
    let outputs = Some(outputs_from_probe(c, h, pr));
    if pr.incomplete {
        let drift = vec![format!(
            "the create of container `{}` on {} did not complete (it left its files and address claims)",
            c.name, h.label
        )];
        return ReadResult { exists: true, outputs, inputs: None, drift };
    }
    if pr.profile != c.system || (c.auto_start && !pr.running()) {
        return absent;
    }
    ReadResult { exists: true, outputs, inputs: None, drift: vec![] }
}
