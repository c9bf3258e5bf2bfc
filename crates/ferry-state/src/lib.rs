//! ferry state: the SQLite store of what has been deployed, the exclusive run lock, and the
//! append-only event journal.
//!
//! The database (default `.ferry/state.db` beside the deployment; the caller passes the path)
//! holds per resource its kind, provider, last inputs, outputs, status and timestamps. It is
//! written with mode 0600 in a 0700 directory, in WAL mode with `synchronous = FULL`, one
//! transaction per write.
//!
//! Crash safety: callers record an [`Intent`] before each provider call
//! ([`StateStore::record_intent`]) and the result right after ([`StateStore::record_success`],
//! [`StateStore::record_failure`]). A process killed at any point leaves either the intent
//! (status [`Status::Pending`]) or the result; the next run reconciles pending records with the
//! provider's `read`.
//!
//! Modules: [`schema`] (file modes, pragmas, migrations), [`lock`] (the run lock), `records`
//! (resource rows), `journal` (events and runs), `transfer` (export/import), [`model`] (the
//! data types).
//!
//! Architecture invariants: no dependency on other ferry crates; never prints; never writes
//! input or output values into the event journal.

pub mod lock;
pub mod model;
pub mod schema;

mod deployment;
mod error;
mod fsafe;
mod journal;
mod records;
mod time;
mod transfer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

pub use deployment::DeploymentIdentity;
pub use error::StateError;
pub use fsafe::write_private_file;
pub use lock::{LockHolder, RunLock};
pub use model::{Deposed, EventRecord, Intent, Op, PendingOp, ResourceRecord, Status, Success};
pub use schema::SCHEMA_VERSION;
pub use time::now_rfc3339;
pub use transfer::EXPORT_VERSION;

use schema::sql_err;

/// The default location of the state database, relative to the deployment file's directory,
/// for the default file `deployment.nix`; see [`default_state_path`] for others.
pub const DEFAULT_STATE_PATH: &str = ".ferry/state.db";

/// Where the state of deployment file `file` lives by default: `DIR/.ferry/state.db` for
/// `DIR/deployment.nix`, `DIR/.ferry/STEM.state.db` for any other `DIR/STEM.nix` (or
/// `DIR/.ferry/NAME.state.db` for a file `NAME` without `.nix`), so two deployment files in
/// one directory never share a state.
pub fn default_state_path(file: &Path) -> PathBuf {
    let dir = file.parent().unwrap_or(Path::new("."));
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name == "deployment.nix" || name.is_empty() {
        return dir.join(DEFAULT_STATE_PATH);
    }
    let stem = name.strip_suffix(".nix").filter(|s| !s.is_empty()).unwrap_or(&name);
    dir.join(".ferry").join(format!("{stem}.state.db"))
}

/// An open state database. Owns one SQLite connection; `Send`, not `Sync`.
#[derive(Debug)]
pub struct StateStore {
    conn: Connection,
    path: PathBuf,
    /// Resource rows were replaced this session (old outputs, maybe secrets, sit in the WAL):
    /// checkpoint on close.
    replaced: std::cell::Cell<bool>,
}

impl StateStore {
    /// Opens the database at `path`, creating it (and its directory, mode 0700) if missing,
    /// and migrating an older schema. Fails with [`StateError::NewerSchema`] (leaving the file
    /// untouched) if a newer ferry wrote it.
    pub fn open(path: &Path) -> Result<StateStore, StateError> {
        Self::open_inner(path, true)
    }

    /// Like [`open`](Self::open) but fails with [`StateError::Missing`] if there is no
    /// database yet; for read-only commands.
    pub fn open_existing(path: &Path) -> Result<StateStore, StateError> {
        Self::open_inner(path, false)
    }

    fn open_inner(path: &Path, create: bool) -> Result<StateStore, StateError> {
        let conn = schema::open_connection(path, create)?;
        Ok(StateStore { conn, path: path.to_owned(), replaced: std::cell::Cell::new(false) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database (equal to [`SCHEMA_VERSION`] once opened).
    pub fn schema_version(&self) -> Result<i64, StateError> {
        schema::current_version(&self.conn, &self.path)
    }

    /// Takes the exclusive run lock (`DB.lock`), naming this process as holder with
    /// `holder_command`. With `timeout` `None` (or zero) fails fast with
    /// [`StateError::Locked`]; otherwise retries every 100 ms until `timeout` passes. The lock
    /// is released when the returned [`RunLock`] is dropped or the process dies.
    pub fn lock(&self, holder_command: &str, timeout: Option<Duration>) -> Result<RunLock, StateError> {
        lock::acquire(&self.path, holder_command, timeout)
    }

    /// Who holds the run lock right now, if anyone.
    pub fn lock_holder(&self) -> Result<Option<LockHolder>, StateError> {
        lock::holder(&self.path)
    }

    /// Runs `PRAGMA integrity_check`; returns `"ok"` when the file is sound, otherwise
    /// SQLite's findings, one per line.
    pub fn integrity_check(&self) -> Result<String, StateError> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check").map_err(sql_err(&self.path))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(sql_err(&self.path))?;
        let lines = rows.collect::<Result<Vec<_>, _>>().map_err(sql_err(&self.path))?;
        Ok(lines.join("\n"))
    }

    /// Starts a write transaction that takes the write lock at once (so it cannot fail
    /// half-way with "database is locked" after reading).
    fn write_tx(&self) -> Result<Transaction<'_>, StateError> {
        Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(sql_err(&self.path))
    }

    fn corrupt(&self, detail: String) -> StateError {
        StateError::Corrupt { path: self.path.clone(), detail }
    }
}

impl Drop for StateStore {
    /// After resource rows were replaced, folds the WAL into the database and truncates it, so
    /// old page images (replaced outputs, secrets among them) do not stay in the side file. Best effort: errors cannot be reported
    /// here, and a busy reader only delays it to the next close.
    fn drop(&mut self) {
        if self.replaced.get() {
            let _ = schema::checkpoint(&self.conn, &self.path);
        }
    }
}
