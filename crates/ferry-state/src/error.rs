//! The error type of the state store. Every variant names the file it concerns and, where the
//! user can act, what to do; rendering happens once at the CLI edge.

use std::path::PathBuf;

use crate::lock::LockHolder;

/// Everything that can go wrong reading or writing state.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum StateError {
    /// SQLite reported an error on the state database.
    #[error("state database {}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The underlying SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// A filesystem operation on the database, its directory or its lock file failed.
    #[error("state file {}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The database was written by a newer ferry; it is left untouched.
    #[error(
        "state database {} has schema version {found}, newer than this ferry supports ({supported}); upgrade ferry",
        path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The schema version found in the file.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },
    /// Another run holds the exclusive run lock.
    #[error(
        "state {} is locked by {holder}; wait for that run to finish, or retry with a lock timeout",
        path.display()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds the lock, as recorded in the lock file.
        holder: LockHolder,
    },
    /// A state file (database, side file, lock, export) or its directory is one ferry must not
    /// use: a symbolic link, not a regular file, owned by another user, or in a directory others
    /// could swap files in.
    #[error("{}: {reason}; ferry refuses to use it (remove or fix it and retry)", path.display())]
    Unsafe {
        /// The file or directory concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The database file exists but is empty (truncated): treating it as a new state would plan
    /// every resource as new and create duplicates.
    #[error(
        "state database {} is empty (0 bytes): it was truncated or overwritten; restore it from a \
         backup, or delete it and `ferry state import EXPORT` from a `ferry state export`; ferry \
         will not treat it as a new, empty state",
        path.display()
    )]
    Empty {
        /// The database file.
        path: PathBuf,
    },
    /// A read-only command found no state database.
    #[error("no state database at {}; nothing has been applied yet", path.display())]
    Missing {
        /// Where the database was expected.
        path: PathBuf,
    },
    /// The named resource is not recorded in state.
    #[error("resource `{name}` is not in state database {}", path.display())]
    UnknownResource {
        /// The database file.
        path: PathBuf,
        /// The resource name.
        name: String,
    },
    /// A caller-supplied value (an import document, an intent) is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// A stored value could not be decoded: the file was edited by hand or damaged.
    #[error("state database {} is damaged: {detail}; restore it from a backup or `ferry state export`", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What could not be decoded.
        detail: String,
    },
}
