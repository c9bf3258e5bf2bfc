//! The append-only event journal (read by `ferry state log`) and the runs table.
//!
//! Invariant: events never hold input or output values, which may be secrets; only the
//! operation, the phase and a short message. Triggers in the schema refuse UPDATE and DELETE.

use rusqlite::{params, Connection};

use crate::schema::sql_err;
use crate::time::now_rfc3339;
use crate::{EventRecord, StateError, StateStore};

/// Longest message kept in an event; longer ones (provider errors) are cut.
const MAX_MESSAGE: usize = 200;

/// First line of `message`, at most [`MAX_MESSAGE`] characters.
pub(crate) fn short_message(message: &str) -> String {
    let line = message.lines().next().unwrap_or("").trim();
    if line.chars().count() <= MAX_MESSAGE {
        line.to_owned()
    } else {
        let cut: String = line.chars().take(MAX_MESSAGE).collect();
        format!("{cut}…")
    }
}

impl StateStore {
    /// Appends one event on `conn` (normally the caller's open transaction); returns its id.
    pub(crate) fn append_event(
        &self,
        conn: &Connection,
        run: Option<i64>,
        resource: Option<&str>,
        op: &str,
        phase: &str,
        message: &str,
    ) -> Result<i64, StateError> {
        conn.execute(
            "INSERT INTO events (time, run, resource, op, phase, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![now_rfc3339(), run, resource, op, phase, message],
        )
        .map_err(sql_err(&self.path))?;
        Ok(conn.last_insert_rowid())
    }

    /// Journal events, oldest first: all of them, or only those about `resource`; with `limit`,
    /// only the newest `limit` (still oldest first).
    pub fn events(
        &self,
        resource: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<EventRecord>, StateError> {
        let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, time, run, resource, op, phase, message FROM events
                 WHERE ?1 IS NULL OR resource = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(sql_err(&self.path))?;
        let rows = stmt
            .query_map(params![resource, limit], |r| {
                Ok(EventRecord {
                    id: r.get(0)?,
                    time: r.get(1)?,
                    run: r.get(2)?,
                    resource: r.get(3)?,
                    op: r.get(4)?,
                    phase: r.get(5)?,
                    message: r.get(6)?,
                })
            })
            .map_err(sql_err(&self.path))?;
        let mut events = rows.collect::<Result<Vec<_>, _>>().map_err(sql_err(&self.path))?;
        events.reverse();
        Ok(events)
    }

    /// Records the start of a run (pid, host, command) and returns its id.
    pub fn begin_run(&self, command: &str) -> Result<i64, StateError> {
        let tx = self.write_tx()?;
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        tx.execute(
            "INSERT INTO runs (command, pid, host, started_at) VALUES (?1, ?2, ?3, ?4)",
            params![command, std::process::id(), host, now_rfc3339()],
        )
        .map_err(sql_err(&self.path))?;
        let run = tx.last_insert_rowid();
        self.append_event(&tx, Some(run), None, "run", "run-start", command)?;
        tx.commit().map_err(sql_err(&self.path))?;
        Ok(run)
    }

    /// Records the end of run `run` with a short `outcome` (`ok`, `failed`, `interrupted`, ...).
    pub fn end_run(&self, run: i64, outcome: &str) -> Result<(), StateError> {
        let tx = self.write_tx()?;
        let n = tx
            .execute(
                "UPDATE runs SET ended_at = ?1, outcome = ?2 WHERE id = ?3",
                params![now_rfc3339(), outcome, run],
            )
            .map_err(sql_err(&self.path))?;
        if n == 0 {
            return Err(StateError::Invalid(format!(
                "state database {}: no run with id {run}",
                self.path.display()
            )));
        }
        self.append_event(&tx, Some(run), None, "run", "run-end", &short_message(outcome))?;
        tx.commit().map_err(sql_err(&self.path))
    }
}
