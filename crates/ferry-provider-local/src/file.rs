//! `local.file`: a file on the machine running ferry, with given content and permission bits.
//!
//! Writes are atomic (a temporary file in the same directory, then `rename`), and the temporary
//! file is created 0600 before its final mode is applied, so secret content is never briefly
//! readable by others. Errors never quote `content`.
//! This module never follows the file's old path after `path` changes: a path change is a
//! replacement (create the new file, then delete the old one).
//!
//! The Nix store is Nix's alone: a `path` inside it (as written, or once the symlinks of its
//! directories are resolved) is refused at plan time, and a recorded path inside it is never
//! removed — a store path changed behind Nix's back no longer verifies.

use crate::schema::{describe, object_schema, outputs_schema, Inputs};
use ferry_protocol::sdk::{diff_inputs, CallContext};
use ferry_protocol::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const KNOWN: &[&str] = &["path", "content", "mode"];
/// No input is sensitive: plans show content diffs. Secrets that flow into `content` from a
/// sensitive output (a private key) are hidden by ferry's redaction of those values.
const SENSITIVE: &[&str] = &[];
const DEFAULT_MODE: u32 = 0o644;
/// Drifted content larger than this is reported only by its hash, not returned as an input.
const MAX_DRIFT_CONTENT: usize = 1 << 20;

pub(crate) fn schema() -> KindSchema {
    KindSchema {
        name: "file".into(),
        description: "A file on the machine running ferry, written atomically.".into(),
        inputs: object_schema(
            "A local file.",
            json!({
                "path": {"type": "string", "pattern": "^/",
                         "description": "Absolute path of the file. Missing parent directories are created. Changing it replaces the file."},
                "content": {"type": "string", "description": "The file's complete content."},
                "mode": {"type": "string", "pattern": "^(0o)?[0-7]{3,4}$", "default": "0644",
                         "description": "Permission bits as an octal string, e.g. \"0600\"."},
            }),
            &["path", "content"],
        ),
        outputs: outputs_schema(json!({
            "path": {"type": "string", "description": "Absolute path of the file."},
            "sha256": {"type": "string", "description": "Lower-case hex SHA-256 of the content."},
        })),
        sensitive_inputs: SENSITIVE.iter().map(|s| s.to_string()).collect(),
        sensitive_outputs: vec![],
        output_names_input: None,
        operations: vec![
            Operation::Plan,
            Operation::Create,
            Operation::Read,
            Operation::Update,
            Operation::Delete,
        ],
        actions: vec![],
        builds_inputs: false,
        heavy_inputs: false,
    }
}

/// Validated inputs of one file.
#[derive(Debug, Clone, PartialEq)]
struct FileSpec {
    path: PathBuf,
    content: String,
    mode: u32,
}

impl FileSpec {
    fn parse(obj: &Object) -> Result<Self, ProviderError> {
        let i = Inputs::new(obj, KNOWN, SENSITIVE)?;
        let path = i.required_str("path")?;
        if !path.starts_with('/') {
            return Err(ProviderError::invalid_input(format!(
                "input `path` must be an absolute path, got {}",
                describe(&Value::String(path.into()))
            )));
        }
        if path.ends_with('/') || Path::new(path).file_name().is_none() {
            return Err(ProviderError::invalid_input(format!(
                "input `path` must name a file, not a directory, got {}",
                describe(&Value::String(path.into()))
            )));
        }
        let content = i.required_str("content")?.to_string();
        let mode = match i.opt_str("mode")? {
            None => DEFAULT_MODE,
            Some(m) => parse_mode(m).ok_or_else(|| {
                ProviderError::invalid_input(format!(
                    "input `mode` must be an octal permission string like \"0644\", got {}",
                    describe(&Value::String(m.into()))
                ))
            })?,
        };
        Ok(FileSpec { path: PathBuf::from(path), content, mode })
    }

    /// Inputs with defaults filled in and the mode spelled canonically, for diffing.
    fn normalized(&self) -> Object {
        let mut o = Object::new();
        o.insert("path".into(), Value::String(self.path.display().to_string()));
        o.insert("content".into(), Value::String(self.content.clone()));
        o.insert("mode".into(), Value::String(format_mode(self.mode)));
        o
    }

    fn outputs(&self, sha256: String) -> Object {
        let mut o = Object::new();
        o.insert("path".into(), Value::String(self.path.display().to_string()));
        o.insert("sha256".into(), Value::String(sha256));
        o
    }
}

fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if !(3..=4).contains(&digits.len()) || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

fn format_mode(mode: u32) -> String {
    format!("{mode:04o}")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The Nix store directory (`NIX_STORE_DIR`, as Nix reads it, else `/nix/store`).
fn store_dir() -> PathBuf {
    std::env::var_os("NIX_STORE_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/nix/store"))
}

/// Is `path` inside the Nix store, as written or once the symlinks of its existing directories
/// are resolved? (The file itself may be a symlink into the store: writing or removing replaces
/// the link, not its target.)
fn in_store(path: &Path) -> bool {
    let store = store_dir();
    let real_store = fs::canonicalize(&store).unwrap_or_else(|_| store.clone());
    let inside = |p: &Path| p.starts_with(&store) || p.starts_with(&real_store);
    if inside(path) {
        return true;
    }
    let mut dir = path.parent();
    while let Some(d) = dir {
        if let Ok(real) = fs::canonicalize(d) {
            return inside(&real);
        }
        dir = d.parent();
    }
    false
}

/// Refuse a file that would be written inside the Nix store.
fn refuse_store(spec: &FileSpec) -> Result<(), ProviderError> {
    if !in_store(&spec.path) {
        return Ok(());
    }
    Err(ProviderError::invalid_input(format!(
        "input `path` ({}) is inside the Nix store ({}): store paths are immutable, written only by Nix, \
         and one changed behind Nix's back no longer verifies; write the file outside the store",
        spec.path.display(),
        store_dir().display()
    )))
}

pub(crate) fn plan(p: &PlanParams) -> Result<PlanResult, ProviderError> {
    let spec = FileSpec::parse(&p.inputs)?;
    refuse_store(&spec)?;
    let desired = spec.normalized();
    let Some(prior) = &p.prior else {
        return Ok(PlanResult {
            action: PlanAction::Create,
            changes: vec![],
            reason: None,
            create_before_destroy: false,
        });
    };
    // Recorded inputs were valid when recorded; if they no longer parse, diff them as they are.
    let before =
        FileSpec::parse(&prior.inputs).map(|s| s.normalized()).unwrap_or_else(|_| prior.inputs.clone());
    let sensitive: Vec<String> = SENSITIVE.iter().map(|s| s.to_string()).collect();
    let mut changes = diff_inputs(&before, &desired, &sensitive);
    if changes.is_empty() {
        return Ok(PlanResult {
            action: PlanAction::Noop,
            changes,
            reason: None,
            create_before_destroy: false,
        });
    }
    let mut action = PlanAction::Update;
    for c in &mut changes {
        if c.path == "path" {
            c.forces_replace = true;
            action = PlanAction::Replace;
        }
    }
    let reason = (action == PlanAction::Replace)
        .then(|| "the file moves to a new path: write the new file, then remove the old one".into());
    // The new path never collides with the old one: write the new file before removing the old.
    let create_before_destroy = action == PlanAction::Replace;
    Ok(PlanResult { action, changes, reason, create_before_destroy })
}

pub(crate) fn create(p: &CreateParams, cx: &CallContext) -> Result<OutputsResult, ProviderError> {
    let spec = FileSpec::parse(&p.inputs)?;
    refuse_store(&spec)?;
    write(&spec, cx)
}

pub(crate) fn update(p: &UpdateParams, cx: &CallContext) -> Result<OutputsResult, ProviderError> {
    let spec = FileSpec::parse(&p.inputs)?;
    refuse_store(&spec)?;
    let result = write(&spec, cx)?;
    // Plan says replace for a path change, but stay correct if asked to update across paths.
    if let Some(old) = recorded_path(&p.prior.inputs, Some(&p.prior.outputs)) {
        if old != spec.path {
            remove(&old, cx)?;
        }
    }
    Ok(result)
}

pub(crate) fn delete(p: &DeleteParams, cx: &CallContext) -> Result<(), ProviderError> {
    match recorded_path(&p.inputs, Some(&p.outputs)) {
        Some(path) => remove(&path, cx),
        None => Err(ProviderError::invalid_input("no recorded `path` to delete")),
    }
}

pub(crate) fn read(p: &ReadParams) -> Result<ReadResult, ProviderError> {
    let spec = FileSpec::parse(&p.inputs)?;
    let path = recorded_path(&p.inputs, p.outputs.as_ref()).unwrap_or_else(|| spec.path.clone());
    let gone = ReadResult { exists: false, outputs: None, inputs: None, drift: vec![] };
    // Not followed: a symlink put where the file was is drift, and apply replaces the link.
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(gone),
        Err(e) => return Err(io_error("inspect", &path, e)),
    };
    if !meta.is_file() {
        if p.outputs.is_none() {
            return Ok(gone);
        }
        return Ok(ReadResult {
            exists: true,
            outputs: p.outputs.clone(),
            inputs: None,
            drift: vec![format!("{} is no longer a regular file", path.display())],
        });
    }
    let bytes = fs::read(&path).map_err(|e| io_error("read", &path, e))?;
    let actual_sha = sha256_hex(&bytes);
    let actual_mode = meta.permissions().mode() & 0o7777;
    let declared_sha = sha256_hex(spec.content.as_bytes());
    let outputs = FileSpec { path: path.clone(), ..spec.clone() }.outputs(actual_sha.clone());

    if p.outputs.is_none() {
        // Adoption after an interrupted create: only a file that is exactly what we would have
        // written counts as ours.
        let ours = actual_sha == declared_sha && actual_mode == spec.mode;
        return Ok(if ours {
            ReadResult { exists: true, outputs: Some(outputs), inputs: None, drift: vec![] }
        } else {
            gone
        });
    }

    // Compare content with the recorded inputs (ferry sends `read` the inputs of the last
    // successful apply, not the desired ones), so neither a pending change of `content` nor a
    // refreshed `sha256` output can hide a file changed behind ferry's back.
    let recorded_sha = declared_sha;
    let mut drift = Vec::new();
    let mut real = Object::new();
    if actual_sha != recorded_sha {
        drift.push(format!("content changed on disk (sha256 {actual_sha}, recorded {recorded_sha})"));
        if let Ok(text) = String::from_utf8(bytes) {
            if text.len() <= MAX_DRIFT_CONTENT {
                real.insert("content".into(), Value::String(text));
            }
        }
    }
    if actual_mode != spec.mode {
        drift.push(format!("mode is {}, declared {}", format_mode(actual_mode), format_mode(spec.mode)));
        real.insert("mode".into(), Value::String(format_mode(actual_mode)));
    }
    Ok(ReadResult { exists: true, outputs: Some(outputs), inputs: (!real.is_empty()).then_some(real), drift })
}

/// Where the file is: the recorded `path` output, else the `path` input.
fn recorded_path(inputs: &Object, outputs: Option<&Object>) -> Option<PathBuf> {
    outputs
        .and_then(|o| o.get("path"))
        .or_else(|| inputs.get("path"))
        .and_then(Value::as_str)
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
}

fn write(spec: &FileSpec, cx: &CallContext) -> Result<OutputsResult, ProviderError> {
    cx.progress("write", format!("writing {}", spec.path.display()));
    write_atomic(&spec.path, spec.content.as_bytes(), spec.mode)
        .map_err(|e| io_error("write", &spec.path, e))?;
    Ok(OutputsResult { outputs: spec.outputs(sha256_hex(spec.content.as_bytes())) })
}

fn remove(path: &Path, cx: &CallContext) -> Result<(), ProviderError> {
    if in_store(path) {
        // Recorded by a ferry that did not refuse store paths: leave the store to Nix.
        cx.log(format!(
            "not removing {}: it is inside the Nix store, which only Nix may change",
            path.display()
        ));
        return Ok(());
    }
    cx.progress("delete", format!("removing {}", path.display()));
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("remove", path, e)),
    }
}

fn io_error(what: &str, path: &Path, e: io::Error) -> ProviderError {
    let err = ProviderError::new(format!("cannot {what} {}: {e}", path.display()));
    match e.kind() {
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => err.retryable(),
        _ => err,
    }
}

/// Write `content` to a temporary sibling of `path`, set `mode`, sync, and rename it into place,
/// so readers see either the old file or the complete new one.
fn write_atomic(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "path names no file"));
    };
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.ferry-tmp-{}-{:08x}",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(content)?;
        // Set explicitly: the creation mode is filtered by the umask.
        f.set_permissions(Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    } else if let Ok(d) = fs::File::open(dir) {
        // Make the rename durable; failure here does not undo a completed write.
        let _ = d.sync_all();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_paths_are_recognised_as_written_and_through_symlinks() {
        assert!(in_store(Path::new("/nix/store/abc-x/f")));
        assert!(in_store(Path::new("/nix/store/f")));
        assert!(!in_store(Path::new("/nix/store2/f")));
        assert!(!in_store(Path::new("/tmp/nix/store/f")));
        let d = std::env::temp_dir().join(format!("ferry-store-link-{}", std::process::id()));
        let _ = fs::remove_file(&d);
        std::os::unix::fs::symlink(store_dir(), &d).ok();
        if d.exists() {
            assert!(in_store(&d.join("missing-dir/f")));
            assert!(!in_store(&d), "the link itself is replaced, not followed");
        }
        let _ = fs::remove_file(&d);
    }

    #[test]
    fn modes_parse_strictly() {
        assert_eq!(parse_mode("0644"), Some(0o644));
        assert_eq!(parse_mode("600"), Some(0o600));
        assert_eq!(parse_mode("0o755"), Some(0o755));
        assert_eq!(parse_mode("4755"), Some(0o4755));
        for bad in ["", "64", "0888", "rw-r--r--", "00644", "-644"] {
            assert_eq!(parse_mode(bad), None, "{bad}");
        }
        assert_eq!(format_mode(0o600), "0600");
    }

    #[test]
    fn plan_ignores_spelled_out_defaults() {
        let prior = json!({"path": "/a", "content": "x"}).as_object().cloned().unwrap_or_default();
        let desired =
            json!({"path": "/a", "content": "x", "mode": "644"}).as_object().cloned().unwrap_or_default();
        let p = PlanParams {
            kind: "file".into(),
            resource: "r".into(),
            inputs: desired,
            prior: Some(Prior { inputs: prior, outputs: Object::new() }),
        };
        assert_eq!(plan(&p).map(|r| r.action).ok(), Some(PlanAction::Noop));
    }
}
