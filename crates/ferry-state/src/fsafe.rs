//! File safety for everything ferry writes beside the state: the database, its WAL side files,
//! the run lock and exports. ferry never follows a symlink there, never uses a file another
//! user owns (that user could read the private keys in it), forces the modes it promises
//! (files 0600, its own `.ferry` directory 0700), and refuses a directory in which someone else
//! could swap files (writable by others without the sticky bit, or owned by another user).
//!
//! Checks are made on the open file descriptor (`O_NOFOLLOW`, then `fstat`/`fchmod`), so a
//! symlink planted between a check and the open cannot redirect the write.

use std::fs::{File, OpenOptions, Permissions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::StateError;

/// The directory ferry creates for state by default; ferry owns it and keeps it 0700.
pub(crate) const OWN_DIR: &str = ".ferry";

fn unsafe_file(path: &Path, reason: impl Into<String>) -> StateError {
    StateError::Unsafe { path: path.to_owned(), reason: reason.into() }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.to_owned(), source }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Checks an existing file ferry is about to use: not a symlink, a regular file, owned by the
/// invoking user. `meta` is from `lstat` or `fstat` of an `O_NOFOLLOW` descriptor.
fn check_meta(path: &Path, meta: &std::fs::Metadata) -> Result<(), StateError> {
    if meta.file_type().is_symlink() {
        return Err(unsafe_file(path, "is a symbolic link; ferry never follows links where it writes"));
    }
    if !meta.file_type().is_file() {
        return Err(unsafe_file(path, "is not a regular file"));
    }
    if meta.uid() != euid() {
        return Err(unsafe_file(
            path,
            format!(
                "is owned by uid {}, not by you (uid {}); another user could read or replace it",
                meta.uid(),
                euid()
            ),
        ));
    }
    Ok(())
}

/// Opens `path` for reading and writing without following a symlink, creating it with mode
/// 0600 when `create` is set and it is missing, checks it (regular, ours) and forces 0600 on
/// the descriptor. `Ok(None)` if it does not exist and `create` is not set.
pub(crate) fn open_private(path: &Path, create: bool) -> Result<Option<File>, StateError> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    let file = match opts.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound && create => {
            match opts.clone().create_new(true).open(path) {
                Ok(f) => f,
                // Someone created it in between: open what is there, with the same checks.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => return open_private(path, false),
                Err(e) => return Err(io_err(path)(e)),
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(unsafe_file(path, "is a symbolic link; ferry never follows links where it writes"))
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    let meta = file.metadata().map_err(io_err(path))?;
    check_meta(path, &meta)?;
    if meta.mode() & 0o7777 != 0o600 {
        file.set_permissions(Permissions::from_mode(0o600)).map_err(io_err(path))?;
    }
    Ok(Some(file))
}

/// Checks an existing file without opening it for writing (for the database itself, which
/// SQLite opens): `lstat`, then the rules of [`check_meta`], then 0600. Returns its length.
pub(crate) fn check_existing(path: &Path) -> Result<u64, StateError> {
    let file = open_private(path, false)?.ok_or_else(|| StateError::Missing { path: path.to_owned() })?;
    Ok(file.metadata().map_err(io_err(path))?.len())
}

/// Creates a new file exclusively (never through a symlink, never an existing file), mode 0600.
pub(crate) fn create_exclusive(path: &Path) -> Result<File, StateError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.kind() {
            ErrorKind::AlreadyExists => unsafe_file(path, "already exists"),
            _ => io_err(path)(e),
        })
}

/// A new `.ferry` directory gets a `.gitignore` of everything in it: state never lands in a
/// commit by `git add -A`, nor in the Nix store through a git flake (only tracked files are).
fn ignore_in_git(dir: &Path) -> Result<(), StateError> {
    let path = dir.join(".gitignore");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(io_err(&path))?;
    std::io::Write::write_all(&mut f, b"# ferry's state: secrets, never committed\n*\n")
        .map_err(io_err(&path))
}

/// Makes sure `dir` (the directory the state lives in) is one nobody else can swap files in,
/// creating it with mode 0700 if missing. ferry's own `.ferry` directory must be ours and is
/// kept 0700; any other directory must be ours or root's, and if others may write to it, it
/// must be sticky (like `/tmp`), where nobody can replace another user's files.
pub(crate) fn prepare_dir(dir: &Path, create: bool) -> Result<(), StateError> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound && create => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent_or_dot(dir))
                .map_err(io_err(dir))?;
            let created = match std::fs::create_dir(dir) {
                Ok(()) => true,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => false,
                Err(e) => return Err(io_err(dir)(e)),
            };
            std::fs::set_permissions(dir, Permissions::from_mode(0o700)).map_err(io_err(dir))?;
            if created && dir.file_name().is_some_and(|n| n == OWN_DIR) {
                ignore_in_git(dir)?;
            }
            return prepare_dir(dir, false);
        }
        Err(e) => return Err(io_err(dir)(e)),
    };
    let own = dir.file_name().is_some_and(|n| n == OWN_DIR);
    if own && meta.file_type().is_symlink() {
        return Err(unsafe_file(dir, "is a symbolic link; ferry keeps its state in a real directory"));
    }
    let meta =
        if meta.file_type().is_symlink() { std::fs::metadata(dir).map_err(io_err(dir))? } else { meta };
    if !meta.is_dir() {
        return Err(unsafe_file(dir, "is not a directory"));
    }
    let me = euid();
    if own {
        if meta.uid() != me {
            return Err(unsafe_file(dir, format!("is owned by uid {}, not by you (uid {me})", meta.uid())));
        }
        if meta.mode() & 0o7777 != 0o700 {
            std::fs::set_permissions(dir, Permissions::from_mode(0o700)).map_err(io_err(dir))?;
        }
        return Ok(());
    }
    if meta.uid() != me && meta.uid() != 0 {
        return Err(unsafe_file(
            dir,
            format!(
                "(the state's directory) is owned by uid {}, who could replace the state files",
                meta.uid()
            ),
        ));
    }
    let mode = meta.mode();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(unsafe_file(
            dir,
            "(the state's directory) is writable by other users and not sticky; they could replace the state files",
        ));
    }
    Ok(())
}

/// Writes `bytes` to `path` (an export: secrets in plain text) readable only by the invoking
/// user: a new file is created exclusively with mode 0600; an existing one is replaced only if
/// it is a regular file of ours (never through a symlink, never keeping another user's
/// ownership), by renaming a fresh private file over it.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    use std::io::Write;
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            check_meta(path, &meta)?;
            let dir = parent_or_dot(path);
            let mut tmp =
                tempfile::Builder::new().prefix(".ferry-export-").tempfile_in(&dir).map_err(io_err(&dir))?;
            tmp.write_all(bytes).and_then(|()| tmp.as_file().sync_all()).map_err(io_err(tmp.path()))?;
            tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let mut file = create_exclusive(path)?;
            file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io_err(path))
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

fn parent_or_dot(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_refused_and_modes_forced() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, "keep").unwrap();
        std::fs::set_permissions(&target, Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("st.db.lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = open_private(&link, true).unwrap_err();
        assert!(matches!(err, StateError::Unsafe { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o644);

        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, Permissions::from_mode(0o664)).unwrap();
        open_private(&f, false).unwrap().unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        assert!(create_exclusive(&f).is_err());
    }

    #[test]
    fn own_directory_is_tightened_and_others_checked() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join(OWN_DIR);
        std::fs::create_dir(&own).unwrap();
        std::fs::set_permissions(&own, Permissions::from_mode(0o777)).unwrap();
        prepare_dir(&own, false).unwrap();
        assert_eq!(std::fs::metadata(&own).unwrap().mode() & 0o7777, 0o700);
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, Permissions::from_mode(0o777)).unwrap();
        assert!(prepare_dir(&open, false).is_err());
        std::fs::set_permissions(&open, Permissions::from_mode(0o1777)).unwrap();
        prepare_dir(&open, false).unwrap();
        let fresh = dir.path().join("a/b");
        prepare_dir(&fresh, true).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o7777, 0o700);
    }
}
