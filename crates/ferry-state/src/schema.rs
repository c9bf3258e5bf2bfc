//! Opening the database file: its directory (0700) and file modes (0600, also for the WAL
//! side files), connection pragmas, and the schema with its migrations.
//!
//! The schema version lives in `PRAGMA user_version`. A file with a newer version than
//! [`SCHEMA_VERSION`] is refused before anything is written to it.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::{fsafe, StateError};

/// Schema migrations; entry `i` takes the schema from version `i` to `i + 1`. Append only:
/// never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // v1: resources, runs, and the append-only event journal.
    r#"
    CREATE TABLE resources (
        name              TEXT PRIMARY KEY NOT NULL,
        kind              TEXT NOT NULL,
        provider          TEXT NOT NULL,              -- JSON
        inputs            TEXT NOT NULL DEFAULT '{}', -- JSON object, last success
        outputs           TEXT NOT NULL DEFAULT '{}', -- JSON object, last success/refresh
        status            TEXT NOT NULL CHECK (status IN ('ready', 'pending', 'failed')),
        pending           TEXT,                       -- JSON Intent, NULL when ready
        pending_since     TEXT,
        pending_intent    INTEGER,                    -- events.id of the intent event
        last_error        TEXT,
        dependencies      TEXT NOT NULL DEFAULT '[]',
        tags              TEXT NOT NULL DEFAULT '[]',
        sensitive_outputs TEXT NOT NULL DEFAULT '[]',
        created_at        TEXT NOT NULL,
        updated_at        TEXT NOT NULL,
        last_applied_at   TEXT,
        CHECK ((status = 'ready') = (pending IS NULL))
    );
    CREATE TABLE runs (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        command    TEXT NOT NULL,
        pid        INTEGER NOT NULL,
        host       TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at   TEXT,
        outcome    TEXT
    );
    CREATE TABLE events (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        time     TEXT NOT NULL,
        run      INTEGER,
        resource TEXT,
        op       TEXT NOT NULL,
        phase    TEXT NOT NULL,
        message  TEXT NOT NULL
    );
    CREATE INDEX events_by_resource ON events (resource, id);
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'the event journal is append-only'); END;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'the event journal is append-only'); END;
    "#,
    // v2: which deployment the state belongs to (one row; an old state has none until the
    // first deployment writes to it), the protect flag, and the object a create-before-destroy
    // replacement left to delete.
    r#"
    CREATE TABLE deployment (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        file     TEXT NOT NULL,  -- the deployment file, relative to the state's directory
        name     TEXT,           -- the file's top-level `name`, if it sets one
        bound_at TEXT NOT NULL
    );
    ALTER TABLE resources ADD COLUMN protect INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE resources ADD COLUMN deposed TEXT; -- JSON {inputs, outputs}: still to delete
    "#,
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.to_owned(), source }
}

pub(crate) fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> StateError + '_ {
    move |source| StateError::Sqlite { path: path.to_owned(), source }
}

/// `DB` + `suffix`, e.g. `state.db-wal`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Opens (and with `create`, creates) the database at `path`, refuses newer schemas, and
/// migrates older ones. Every file is checked first (`fsafe`): no symlinks, no files owned by
/// someone else, modes 0600/0700. A new database is built under a temporary name and linked
/// into place complete (schema, WAL mode), so nobody ever sees a half-made or empty one: an
/// empty file at `path` is therefore damage, refused with [`StateError::Empty`].
pub(crate) fn open_connection(path: &Path, create: bool) -> Result<Connection, StateError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let exists = match std::fs::symlink_metadata(path) {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => return Err(io_err(path)(e)),
    };
    if !exists && !create {
        return Err(StateError::Missing { path: path.to_owned() });
    }
    fsafe::prepare_dir(dir, create)?;
    if !exists {
        create_database(path)?;
    }
    if fsafe::check_existing(path)? == 0 {
        return Err(StateError::Empty { path: path.to_owned() });
    }
    for suffix in ["-wal", "-shm"] {
        fsafe::open_private(&sibling(path, suffix), true)?;
    }
    let conn = connect(path)?;
    // Check the version before anything writes.
    check_version(&conn, path)?;
    enable_wal(&conn, path)?;
    migrate(&conn, path)?;
    Ok(conn)
}

/// A connection to an existing, checked file: no SQLITE_OPEN_CREATE (it must not be re-created
/// behind our back with the umask's mode), no symlink followed, deleted content overwritten
/// (`secure_delete`: removed secrets do not linger in free pages).
fn connect(path: &Path) -> Result<Connection, StateError> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let conn = Connection::open_with_flags(path, flags).map_err(sql_err(path))?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(sql_err(path))?;
    // FULL: every commit is fsynced, so a recorded intent survives power loss, not just SIGKILL.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;")
        .map_err(sql_err(path))?;
    Ok(conn)
}

fn enable_wal(conn: &Connection, path: &Path) -> Result<(), StateError> {
    let mode: String =
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(sql_err(path))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StateError::Invalid(format!(
            "state database {}: cannot enable write-ahead logging (journal mode is {mode}); \
             keep the state on a local filesystem",
            path.display()
        )));
    }
    Ok(())
}

/// Builds a new database under a private temporary name beside `path` (created exclusively,
/// mode 0600, unpredictable) and hard-links it into place; if another process linked its own
/// first, theirs is used.
fn create_database(path: &Path) -> Result<(), StateError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".ferry-new-")
        .tempfile_in(dir)
        .map_err(io_err(dir))?
        .into_temp_path();
    let result = (|| {
        let conn = connect(&tmp)?;
        enable_wal(&conn, &tmp)?;
        migrate(&conn, &tmp)?;
        drop(conn);
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io_err(path)(e)),
        }
    })();
    for suffix in ["-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(sibling(&tmp, suffix));
    }
    result
}

/// Moves everything in the write-ahead log into the database and truncates the log, so content
/// deleted with `secure_delete` is gone from every file (the WAL keeps old page images until a
/// checkpoint). Best effort when readers hold old snapshots: what they pin goes at a later one.
pub(crate) fn checkpoint(conn: &Connection, path: &Path) -> Result<(), StateError> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(sql_err(path))
}

fn user_version(conn: &Connection, path: &Path) -> Result<i64, StateError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sql_err(path))
}

fn check_version(conn: &Connection, path: &Path) -> Result<i64, StateError> {
    let found = user_version(conn, path)?;
    if found < 0 {
        return Err(StateError::Corrupt {
            path: path.to_owned(),
            detail: format!("negative schema version {found}"),
        });
    }
    if found > SCHEMA_VERSION {
        return Err(StateError::NewerSchema { path: path.to_owned(), found, supported: SCHEMA_VERSION });
    }
    Ok(found)
}

/// Applies the missing migrations in one immediate transaction, so two processes opening a
/// fresh file at once cannot both migrate.
fn migrate(conn: &Connection, path: &Path) -> Result<(), StateError> {
    if check_version(conn, path)? == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(sql_err(path))?;
    let current = check_version(&tx, path)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql).map_err(sql_err(path))?;
        tx.pragma_update(None, "user_version", i as i64 + 1).map_err(sql_err(path))?;
    }
    tx.commit().map_err(sql_err(path))
}

/// The schema version recorded in the open database.
pub(crate) fn current_version(conn: &Connection, path: &Path) -> Result<i64, StateError> {
    user_version(conn, path)
}
