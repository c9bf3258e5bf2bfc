//! The real nixpkgs (20.09) shipped beside the project in `../shared/nixpkgs/`, for tests of
//! what users actually write: NixOS systems, the module system, NixOS's own error messages.
//! Evaluation only — nothing from it can be built offline.
//!
//! The tarball is unpacked once into `/tmp/ferry-nixpkgs-SIZE-MTIME/` (about 176 MB, ~5 s),
//! under a lock, and reused by later test binaries and runs: a cache rebuilt from the tarball
//! whenever it changes. A user's fresh clone has no `../shared`: [`real_nixpkgs`] then returns
//! `None` and the test says it was skipped; under CI (`CI` set) a missing tarball fails.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The tarball: `FERRY_NIXPKGS_TARBALL`, or `../shared/nixpkgs/nixpkgs-20.09pre.tar.xz` from
/// the repository root.
fn tarball() -> PathBuf {
    if let Some(p) = std::env::var_os("FERRY_NIXPKGS_TARBALL") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/nixpkgs/nixpkgs-20.09pre.tar.xz")
}

/// The unpacked nixpkgs tree (a directory with `default.nix`, `lib/`, `nixos/`), or `None`
/// (with a note on stderr) when the tarball is not there and this is not CI.
pub fn real_nixpkgs(test: &str) -> Option<PathBuf> {
    let tar = tarball();
    let Ok(meta) = std::fs::metadata(&tar) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: the real nixpkgs tarball {} is missing; CI must run the real-nixpkgs tests",
            tar.display()
        );
        eprintln!("SKIPPED {test}: no real nixpkgs at {} (see shared/nixpkgs/README.md)", tar.display());
        return None;
    };
    let dir = PathBuf::from(format!("/tmp/ferry-nixpkgs-{}-{}", meta.size(), meta.mtime()));
    let tree = dir.join("nixpkgs");
    let done = dir.join(".unpacked");
    std::fs::create_dir_all(&dir).expect("nixpkgs cache dir");
    let lock = std::fs::File::create(dir.join(".lock")).expect("lock file");
    // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) }, 0);
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&tree);
        let st = Command::new("tar").arg("-xJf").arg(&tar).arg("-C").arg(&dir).status().expect("tar");
        assert!(st.success(), "unpacking {} failed", tar.display());
        std::fs::write(&done, "").expect("marker");
    }
    drop(lock);
    Some(tree)
}
