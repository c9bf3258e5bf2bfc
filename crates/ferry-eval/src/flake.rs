//! Flake deployments: a `PATH#NAME` reference names output `ferryDeployments.NAME` of the flake
//! in directory PATH. ferry stays on `nix-instantiate --eval` (ADR 001): before the first
//! round it asks `nix flake metadata` for the flake's locked URL, inputs pinned by its
//! `flake.lock` (which ferry never writes), and `eval.nix` loads it with `builtins.getFlake`.
//! Nix 2.4 and newer have flakes behind the `nix-command` and `flakes` experimental features,
//! which ferry enables for its own invocations only.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

/// The experimental features flake evaluation needs, passed to each Nix invocation of a flake
/// deployment (`--extra-experimental-features`, which adds to what nix.conf enables).
pub const FEATURES: &str = "nix-command flakes";

/// The oldest Nix with flakes (as an experimental feature).
const MIN_VERSION: (u32, u32) = (2, 4);

/// A flake deployment as written on the command line: `DIR#NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlakeRef {
    /// The flake's directory (absolute), the one holding `flake.nix`.
    pub dir: PathBuf,
    /// The deployment: output `ferryDeployments.NAME`.
    pub attr: String,
}

impl FlakeRef {
    /// `.#web`, `/srv/fleet#prod`, `.` (deployment `default`): relative to `cwd`. Only local
    /// directories are flake deployments here (a `github:` reference has no place for state).
    pub fn parse(s: &str, cwd: &Path) -> Result<FlakeRef, FlakeError> {
        let (path, attr) = match s.split_once('#') {
            Some((p, a)) => (p, a),
            None => (s, "default"),
        };
        let path = path.strip_prefix("path:").unwrap_or(path);
        if path.contains(':') {
            return Err(FlakeError::NotLocal(s.to_string()));
        }
        let attr = attr.strip_prefix("ferryDeployments.").unwrap_or(attr);
        if attr.is_empty() || attr.contains(['.', '"', '/']) {
            return Err(FlakeError::BadName(s.to_string()));
        }
        let dir = if path.is_empty() { cwd.to_path_buf() } else { cwd.join(path) };
        let dir: PathBuf = dir.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect();
        Ok(FlakeRef { dir, attr: attr.to_string() })
    }

    /// The deployment's label: `DIR/flake.nix#NAME`, used where a plain deployment uses its
    /// file (messages, and the state's record of which deployment it belongs to).
    pub fn label(&self) -> PathBuf {
        self.dir.join(format!("flake.nix#{}", self.attr))
    }

    /// Whether Nix takes this flake from git (only tracked files enter the store) rather than
    /// copying its whole directory: the directory is inside a git work tree.
    pub fn in_git(&self) -> bool {
        self.dir.ancestors().any(|d| d.join(".git").exists())
    }

    /// Of `files` (in the flake's directory, existing), those git does not track: Nix does not
    /// see them in a git flake. Empty outside git, or when git cannot tell.
    fn untracked<'a>(&self, files: &[&'a str]) -> Vec<&'a str> {
        if !self.in_git() {
            return vec![];
        }
        files
            .iter()
            .copied()
            .filter(|f| self.dir.join(f).exists())
            .filter(|f| {
                Command::new("git")
                    .arg("-C")
                    .arg(&self.dir)
                    .args(["ls-files", "--error-unmatch", "--", f])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| !s.success() && s.code() == Some(1))
            })
            .collect()
    }
}

/// The locked flake `eval.nix` loads.
#[derive(Debug, Clone, Serialize)]
pub struct FlakeSource {
    /// The locked URL (`path:/dir?narHash=…`, `git+file:///dir?rev=…`).
    pub url: String,
    pub attr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FlakeError {
    #[error("`{0}` is not a local flake deployment; use DIR#NAME with the flake's directory (e.g. .#prod)")]
    NotLocal(String),
    #[error("`{0}`: the deployment name after `#` must be a plain attribute name (ferryDeployments.NAME)")]
    BadName(String),
    #[error("no flake.nix in {0}")]
    NoFlake(PathBuf),
    #[error("flake deployments need Nix {}.{} or newer (this is {found}); or use a deployment file", MIN_VERSION.0, MIN_VERSION.1)]
    NixTooOld { found: String },
    #[error("could not run {program}: {source}. Is Nix installed? (Debian: apt-get install nix-bin)")]
    Spawn { program: String, source: std::io::Error },
    #[error("locking the flake in {dir} failed: {message}")]
    Lock { dir: PathBuf, message: String },
}

/// Nix's version, `(major, minor)`, from `nix --version` ("nix (Nix) 2.8.0").
pub fn nix_version() -> Result<((u32, u32), String), FlakeError> {
    let out = Command::new("nix")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| FlakeError::Spawn { program: "nix".into(), source })?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok((parse_version(&text).unwrap_or((0, 0)), text))
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split_whitespace().last()?;
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The locked URL of `flake`, from `nix flake metadata --json --no-update-lock-file`: inputs
/// as `flake.lock` pins them; a lock file that is missing or out of date is an error telling
/// the user to run `nix flake lock` (ferry never writes it). `options`: `--option` pairs.
pub fn lock(flake: &FlakeRef, options: &[(String, String)]) -> Result<FlakeSource, FlakeError> {
    if !flake.dir.join("flake.nix").is_file() {
        return Err(FlakeError::NoFlake(flake.dir.clone()));
    }
    let lock_file = flake.dir.join("flake.lock");
    let (version, text) = nix_version()?;
    if version < MIN_VERSION {
        return Err(FlakeError::NixTooOld { found: text });
    }
    let mut cmd = Command::new("nix");
    cmd.args([
        "--extra-experimental-features",
        FEATURES,
        "flake",
        "metadata",
        "--json",
        "--no-update-lock-file",
    ]);
    for (k, v) in options {
        cmd.arg("--option").arg(k).arg(v);
    }
    let out = cmd
        .arg(&flake.dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| FlakeError::Spawn { program: "nix".into(), source })?;
    let lock_err = |message: String| FlakeError::Lock { dir: flake.dir.clone(), message };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut message = crate::nix_cli::nix_error(&stderr).to_string();
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let untracked = flake.untracked(&["flake.nix", "flake.lock"]);
        if !untracked.is_empty() {
            message.push_str(&format!(
                "\nNix sees only the files git tracks in a git flake, and {} not: `git add {}`",
                if untracked.len() == 1 {
                    format!("{} is", untracked[0])
                } else {
                    format!("{} are", untracked.join(" and "))
                },
                untracked.join(" ")
            ));
        } else if !lock_file.exists() {
            message.push_str("\nThere is no flake.lock: run `nix flake lock` in the flake first (ferry evaluates the inputs it pins and never writes it)");
        } else if mtime(&flake.dir.join("flake.nix")) > mtime(&lock_file) {
            message.push_str("\nflake.nix is newer than flake.lock: if its inputs changed, run `nix flake lock` (ferry never writes flake.lock)");
        }
        return Err(lock_err(message));
    }
    #[derive(serde::Deserialize)]
    struct Metadata {
        url: String,
    }
    let m: Metadata = serde_json::from_slice(&out.stdout)
        .map_err(|e| lock_err(format!("unexpected `nix flake metadata` output: {e}")))?;
    Ok(FlakeSource { url: m.url, attr: flake.attr.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_relative_to_the_working_directory() {
        let cwd = Path::new("/home/u/fleet");
        let r = FlakeRef::parse(".#prod", cwd).unwrap();
        assert_eq!(r, FlakeRef { dir: "/home/u/fleet".into(), attr: "prod".into() });
        assert_eq!(r.label(), Path::new("/home/u/fleet/flake.nix#prod"));
        assert_eq!(FlakeRef::parse("#x", cwd).unwrap().dir, Path::new("/home/u/fleet"));
        assert_eq!(FlakeRef::parse("../other", cwd).unwrap().attr, "default");
        assert_eq!(FlakeRef::parse("path:/srv/f#ferryDeployments.a", cwd).unwrap().dir, Path::new("/srv/f"));
        assert_eq!(FlakeRef::parse("path:/srv/f#ferryDeployments.a", cwd).unwrap().attr, "a");
        assert!(matches!(FlakeRef::parse("github:o/r#a", cwd), Err(FlakeError::NotLocal(_))));
        assert!(matches!(FlakeRef::parse(".#a.b", cwd), Err(FlakeError::BadName(_))));
        assert!(matches!(FlakeRef::parse(".#", cwd), Err(FlakeError::BadName(_))));
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("nix (Nix) 2.8.0"), Some((2, 8)));
        assert_eq!(parse_version("nix (Nix) 2.18.1pre"), Some((2, 18)));
        assert_eq!(parse_version("nix (Nix) 2.3.16"), Some((2, 3)));
        assert_eq!(parse_version(""), None);
    }
}
