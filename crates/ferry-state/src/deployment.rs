//! Which deployment a state belongs to: its file, stored relative to the state's directory
//! (so moving the whole directory keeps the binding), and the name the file sets with a
//! top-level `name = "…";`, if any. A state without a binding (new, or written by a ferry
//! before schema v2) is bound by the first run that writes to it.

use std::path::{Component, Path, PathBuf};

use rusqlite::{params, OptionalExtension};

use crate::schema::sql_err;
use crate::time::now_rfc3339;
use crate::{StateError, StateStore};

/// The deployment a state belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentIdentity {
    /// The deployment file relative to the state database's directory (`../deployment.nix`
    /// for the default `.ferry/state.db`).
    pub file: PathBuf,
    /// The deployment's `name`, if its file sets one.
    pub name: Option<String>,
}

impl DeploymentIdentity {
    /// The identity of deployment file `file` (absolute) as seen from state `state_path`
    /// (absolute).
    pub fn new(state_path: &Path, file: &Path, name: Option<String>) -> DeploymentIdentity {
        let dir = state_path.parent().unwrap_or(Path::new("/"));
        DeploymentIdentity { file: relative(&normalize(dir), &normalize(file)), name }
    }

    /// The deployment file as an absolute path, for state `state_path`.
    pub fn file_path(&self, state_path: &Path) -> PathBuf {
        normalize(&state_path.parent().unwrap_or(Path::new("/")).join(&self.file))
    }

    /// Whether `other` is the same deployment: the same file, or both name themselves and
    /// the names are equal (a file that moved but kept its `name`).
    pub fn same_deployment(&self, other: &DeploymentIdentity) -> bool {
        self.file == other.file || matches!((&self.name, &other.name), (Some(a), Some(b)) if a == b)
    }

    /// `` `prod` (deployment.nix) `` or `deployment.nix`, with the file absolute.
    pub fn describe(&self, state_path: &Path) -> String {
        let file = self.file_path(state_path);
        match &self.name {
            Some(n) => format!("`{n}` ({})", file.display()),
            None => file.display().to_string(),
        }
    }
}

/// `path` without `.` and with `..` applied lexically (no symlinks are resolved: the file
/// may not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `to` relative to directory `from` (both absolute and normalized).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let a: Vec<Component> = from.components().collect();
    let b: Vec<Component> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for c in &b[common..] {
        out.push(c.as_os_str());
    }
    out
}

impl StateStore {
    /// The deployment this state is bound to; `None` if no run has written to it since it was
    /// created (or migrated from schema v1).
    pub fn deployment(&self) -> Result<Option<DeploymentIdentity>, StateError> {
        let row: Option<(String, Option<String>)> = self
            .conn
            .query_row("SELECT file, name FROM deployment WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(sql_err(&self.path))?;
        Ok(row.map(|(file, name)| DeploymentIdentity { file: PathBuf::from(file), name }))
    }

    /// Binds the state to `id` (replacing an earlier binding) and journals it as a `bind`
    /// event. A no-op when it is bound to exactly `id` already.
    pub fn bind_deployment(&self, id: &DeploymentIdentity) -> Result<(), StateError> {
        if self.deployment()?.as_ref() == Some(id) {
            return Ok(());
        }
        let tx = self.write_tx()?;
        let file = id.file.to_string_lossy().into_owned();
        tx.execute(
            "INSERT INTO deployment (id, file, name, bound_at) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET file = ?1, name = ?2, bound_at = ?3",
            params![file, id.name, now_rfc3339()],
        )
        .map_err(sql_err(&self.path))?;
        let message = match &id.name {
            Some(n) => format!("bound to deployment `{n}` ({file})"),
            None => format!("bound to deployment {file}"),
        };
        self.append_event(&tx, None, None, "bind", "bind", &message)?;
        tx.commit().map_err(sql_err(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_is_relative_to_the_state_directory() {
        let id = DeploymentIdentity::new(
            Path::new("/srv/site/.ferry/state.db"),
            Path::new("/srv/site/deployment.nix"),
            None,
        );
        assert_eq!(id.file, Path::new("../deployment.nix"));
        assert_eq!(
            id.file_path(Path::new("/moved/here/.ferry/state.db")),
            Path::new("/moved/here/deployment.nix")
        );
        let id = DeploymentIdentity::new(Path::new("/var/lib/s.db"), Path::new("/srv/./a/d.nix"), None);
        assert_eq!(id.file, Path::new("../../srv/a/d.nix"));
        assert_eq!(id.file_path(Path::new("/var/lib/s.db")), Path::new("/srv/a/d.nix"));
    }

    #[test]
    fn same_file_or_same_name() {
        let a = DeploymentIdentity { file: "../deployment.nix".into(), name: Some("prod".into()) };
        let renamed = DeploymentIdentity { file: "../prod.nix".into(), name: Some("prod".into()) };
        let other = DeploymentIdentity { file: "../other.nix".into(), name: None };
        let unnamed = DeploymentIdentity { file: "../deployment.nix".into(), name: None };
        assert!(a.same_deployment(&renamed));
        assert!(a.same_deployment(&unnamed));
        assert!(!a.same_deployment(&other));
        assert!(!a.same_deployment(&DeploymentIdentity { name: Some("test".into()), ..other }));
    }
}
