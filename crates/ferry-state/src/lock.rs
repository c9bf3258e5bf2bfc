//! The exclusive run lock: `flock(2)` on a lock file beside the database (`state.db.lock`,
//! mode 0600), with the holder (pid, host, start time, command) written into it as JSON.
//!
//! The kernel releases a flock when the holding process dies, even by SIGKILL, so a crashed
//! run never leaves a stale lock. The holder JSON is informational only: whether the lock is
//! held is decided by flock, never by the file's contents.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::time::now_rfc3339;
use crate::StateError;

/// How often a waiting `lock` retries.
const RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// How long a fail-fast `lock` keeps re-reading an empty holder file: the holder writes its
/// JSON just after acquiring, and a `lock_holder` probe holds the lock only for an instant.
const HOLDER_GRACE: Duration = Duration::from_millis(300);

/// Who holds the run lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Process id of the holder.
    pub pid: u32,
    /// Host name of the holder.
    pub host: String,
    /// When it acquired the lock (RFC 3339 UTC).
    pub started: String,
    /// What it is running, e.g. `apply`.
    pub command: String,
}

impl LockHolder {
    /// A holder describing this process, now.
    pub fn current(command: &str) -> LockHolder {
        LockHolder {
            pid: std::process::id(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            started: now_rfc3339(),
            command: command.to_owned(),
        }
    }

    /// Stand-in when the lock is held but its file names nobody (written by a foreign tool,
    /// or the holder had not yet written itself).
    fn unknown() -> LockHolder {
        LockHolder { pid: 0, host: "unknown".into(), started: "unknown".into(), command: "unknown".into() }
    }
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} on host {} (started {}, running `{}`)",
            self.pid, self.host, self.started, self.command
        )
    }
}

/// The held run lock. Dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
    holder: LockHolder,
}

impl RunLock {
    /// Who this lock was taken for.
    pub fn holder(&self) -> &LockHolder {
        &self.holder
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Clear the holder first so nobody reads a stale name; closing the fd releases the flock.
        // Errors cannot be reported from drop and do not matter: flock decides, not the file.
        let _ = self.file.set_len(0);
    }
}

/// The lock file for the database at `db`: `DB.lock`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.to_owned(), source }
}

/// Opens (creating) the lock file: never through a symlink, never one owned by someone else,
/// never truncated before the flock is ours; mode 0600.
fn open_lock_file(path: &Path) -> Result<File, StateError> {
    crate::fsafe::open_private(path, true)?.ok_or_else(|| StateError::Missing { path: path.to_owned() })
}

/// Tries `flock(LOCK_EX|LOCK_NB)`; `Ok(false)` if someone else holds it.
fn try_flock(file: &File, path: &Path) -> Result<bool, StateError> {
    loop {
        // SAFETY: flock on a valid, owned file descriptor has no memory-safety preconditions.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(io_err(path)(err)),
        }
    }
}

fn unlock(file: &File) {
    // SAFETY: as above.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
}

/// Reads the holder JSON; `None` if the file is empty or not a holder.
fn read_holder(file: &mut File) -> Option<LockHolder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Takes the run lock for the database at `db`, failing fast or waiting up to `timeout`.
pub fn acquire(db: &Path, command: &str, timeout: Option<Duration>) -> Result<RunLock, StateError> {
    let path = lock_path(db);
    let mut file = open_lock_file(&path)?;
    let start = Instant::now();
    loop {
        if try_flock(&file, &path)? {
            let holder = LockHolder::current(command);
            let json = serde_json::to_string(&holder)
                .map_err(|e| StateError::Invalid(format!("cannot encode lock holder: {e}")))?;
            file.set_len(0).map_err(io_err(&path))?;
            file.seek(SeekFrom::Start(0)).map_err(io_err(&path))?;
            file.write_all(json.as_bytes()).map_err(io_err(&path))?;
            file.flush().map_err(io_err(&path))?;
            return Ok(RunLock { file, path, holder });
        }
        let holder = read_holder(&mut file);
        // Without a timeout, fail as soon as a real holder is known; an empty file gets a short
        // grace period (see HOLDER_GRACE).
        let limit = timeout.unwrap_or(Duration::ZERO);
        let limit = if holder.is_some() { limit } else { limit.max(HOLDER_GRACE) };
        if start.elapsed() >= limit {
            return Err(StateError::Locked { path, holder: holder.unwrap_or_else(LockHolder::unknown) });
        }
        thread::sleep(RETRY_INTERVAL);
    }
}

/// Who holds the lock for the database at `db` right now, if anyone. Probes with a
/// non-blocking flock that is released at once.
pub fn holder(db: &Path) -> Result<Option<LockHolder>, StateError> {
    let path = lock_path(db);
    if !path.exists() {
        return Ok(None);
    }
    let mut file = open_lock_file(&path)?;
    if try_flock(&file, &path)? {
        unlock(&file);
        return Ok(None);
    }
    Ok(Some(read_holder(&mut file).unwrap_or_else(LockHolder::unknown)))
}
