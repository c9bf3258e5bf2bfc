//! `processes.image`: a docker-archive tar (built by `ferry.lib.processes.image`, see
//! `nix/processes-image.nix`) loaded into podman's image store and tagged
//! `ref`. ferry realises the archive before create/update (the kind does not build inputs
//! itself).
//!
//! * create/update: `podman load -i ARCHIVE`, `podman tag ID REF`, then check that REF is the
//!   archive's image. The image ID is read from the archive (its `manifest.json` names the
//!   config blob, whose digest is the ID), so a load that left REF on another image fails.
//!   An update untags the previous image and removes it when nothing else uses or names it.
//! * read: REF present with the recorded ID; removed is "no longer exists" (created again),
//!   another image under REF is drift (loaded again).
//! * delete: `podman rmi REF` when REF is still the image ferry loaded (another image under
//!   that name is left alone).
//!
//! Everything goes through the `podman` on `PATH`.

use std::io::{Read, Seek, SeekFrom};
use std::process::{Command, Stdio};

use ferry_protocol::sdk::{CallContext, ProviderInfo};
use ferry_protocol::{Object, PlanAction, PlanParams, PlanResult, ProviderError, ReadResult};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInputs {
    pub archive: String,
    #[serde(rename = "ref")]
    pub reference: String,
}

fn err(name: &str, msg: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(format!("processes.image `{name}`: {msg}"))
}

impl ImageInputs {
    pub fn parse(name: &str, inputs: &Object) -> Result<ImageInputs, ProviderError> {
        let i: ImageInputs = serde_json::from_value(Value::Object(inputs.clone()))
            .map_err(|e| ProviderError::invalid_input(format!("processes.image `{name}`: {e}")))?;
        let bad = |m: String| Err(ProviderError::invalid_input(format!("processes.image `{name}`: {m}")));
        if !i.archive.starts_with('/') {
            return bad(format!(
                "archive `{}` is not an absolute path: give the derivation ferry.lib.processes.image builds",
                i.archive
            ));
        }
        if let Some(m) = ref_problem(&i.reference) {
            return bad(format!("ref `{}`: {m}", i.reference));
        }
        Ok(i)
    }
}

/// What is wrong with an image reference `[REGISTRY/]NAME[:TAG]`, as podman sees it.
fn ref_problem(r: &str) -> Option<&'static str> {
    if r.is_empty() || r.len() > 255 {
        return Some("must be 1 to 255 characters");
    }
    if r.contains('@') {
        return Some("digests are not supported: use NAME:TAG");
    }
    let (repo, tag) = match r.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        _ => (r, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Some(
                "the tag must be letters, digits, `_`, `.`, `-` (at most 128, not starting with `.` or `-`)",
            );
        }
    }
    let parts: Vec<&str> = repo.split('/').collect();
    let ok = parts.iter().enumerate().all(|(n, part)| {
        // A registry host may have a port: `registry.example:5000/name`.
        let part = match part.split_once(':') {
            Some((host, port))
                if n == 0
                    && parts.len() > 1
                    && !port.is_empty()
                    && port.chars().all(|c| c.is_ascii_digit()) =>
            {
                host
            }
            _ => part,
        };
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
            && part.starts_with(|c: char| c.is_ascii_alphanumeric())
    });
    if !ok {
        return Some(
            "the name must be lowercase letters, digits, `_`, `.`, `-` (path parts separated by `/`)",
        );
    }
    None
}

/// The default plan; a new `ref` replaces the image (the old name is removed).
pub fn plan(info: &ProviderInfo, p: &PlanParams) -> Result<PlanResult, ProviderError> {
    ImageInputs::parse(&p.resource, &p.inputs)?;
    let mut r = ferry_protocol::sdk::default_plan(info, p);
    if r.changes.iter().any(|c| c.path == "ref") {
        r.action = PlanAction::Replace;
        for c in r.changes.iter_mut().filter(|c| c.path == "ref") {
            c.forces_replace = true;
        }
    }
    Ok(r)
}

/// Run podman; (exit code, stdout, stderr).
fn podman(name: &str, args: &[&str]) -> Result<(i32, String, String), ProviderError> {
    let o = Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                err(name, "podman is not installed (not on PATH; Debian: apt-get install podman)")
            } else {
                err(name, format!("cannot run podman: {e}"))
            }
        })?;
    Ok((
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    ))
}

/// Run podman; stdout, or an error naming what failed with podman's last lines.
fn podman_ok(name: &str, what: &str, args: &[&str]) -> Result<String, ProviderError> {
    let (code, out, e) = podman(name, args)?;
    if code == 0 {
        return Ok(out);
    }
    Err(err(name, format!("{what} failed (`podman {}`, exit {code}){}", args.join(" "), tail(&e, &out))))
}

fn tail(err: &str, out: &str) -> String {
    let text = if err.trim().is_empty() { out } else { err };
    // podman's harmless chatter (e.g. netns notes from an outer wrapper) comes before the error.
    let lines: Vec<&str> = text.trim().lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(": {}", lines[lines.len().saturating_sub(6)..].join("\n"))
}

/// The ID of the image REF names, or None if podman has no image by that name.
fn image_id(name: &str, reference: &str) -> Result<Option<String>, ProviderError> {
    let (code, _, e) = podman(name, &["image", "exists", reference])?;
    match code {
        0 => {}
        1 => return Ok(None),
        _ => {
            return Err(err(
                name,
                format!("`podman image exists {reference}` failed (exit {code}){}", tail(&e, "")),
            ))
        }
    }
    let out =
        podman_ok(name, "inspecting the image", &["image", "inspect", "--format", "{{.Id}}", reference])?;
    Ok(out.lines().next().map(|l| l.trim().to_string()).filter(|s| !s.is_empty()))
}

/// The image ID a docker-archive holds — its `manifest.json` names the config blob
/// (`<sha256>.json`, or `blobs/sha256/<sha256>`), whose digest is the image ID — and the
/// tags it carries (`RepoTags`).
pub fn archive_image(path: &str) -> Result<(String, Vec<String>), String> {
    let manifest = tar_member(path, "manifest.json")?
        .ok_or_else(|| format!("{path} has no manifest.json: not an (uncompressed) docker-archive"))?;
    #[derive(Deserialize)]
    struct Entry {
        #[serde(rename = "Config")]
        config: String,
        #[serde(rename = "RepoTags", default)]
        repo_tags: Option<Vec<String>>,
    }
    let entries: Vec<Entry> = serde_json::from_slice(&manifest)
        .map_err(|e| format!("{path}: manifest.json is not a docker-archive manifest: {e}"))?;
    let [entry] = entries.as_slice() else {
        return Err(format!(
            "{path} holds {} images; processes.image loads archives of one image",
            entries.len()
        ));
    };
    let file = entry.config.rsplit('/').next().unwrap_or_default();
    let id = file.strip_suffix(".json").unwrap_or(file);
    if id.len() != 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "{path}: the manifest's config `{}` is not named by its sha256 digest",
            entry.config
        ));
    }
    Ok((id.to_ascii_lowercase(), entry.repo_tags.clone().unwrap_or_default()))
}

/// A reference as podman names it: `web` -> `localhost/web:latest`.
fn normalize(r: &str) -> String {
    let tagged = match r.rsplit_once(':') {
        Some((_, t)) if !t.contains('/') => r.to_string(),
        _ => format!("{r}:latest"),
    };
    let first = tagged.split('/').next().unwrap_or_default();
    if tagged.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost") {
        tagged
    } else {
        format!("localhost/{tagged}")
    }
}

/// The content of the regular file `want` (or `./want`) in the tar file `path`, if present.
fn tar_member(path: &str, want: &str) -> Result<Option<Vec<u8>>, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot open {path}: {e}"))?;
    let mut hdr = [0u8; 512];
    loop {
        if let Err(e) = f.read_exact(&mut hdr) {
            return if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Ok(None)
            } else {
                Err(format!("cannot read {path}: {e}"))
            };
        }
        if hdr.iter().all(|b| *b == 0) {
            return Ok(None);
        }
        let cstr = |b: &[u8]| {
            let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        };
        let mut name = cstr(&hdr[..100]);
        if &hdr[257..262] == b"ustar" {
            let prefix = cstr(&hdr[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let size =
            tar_size(&hdr[124..136]).ok_or_else(|| format!("{path} is not a tar file (bad header)"))?;
        let kind = hdr[156];
        if matches!(kind, b'0' | 0) && name.trim_start_matches("./") == want {
            let mut data = vec![0u8; size as usize];
            f.read_exact(&mut data).map_err(|e| format!("cannot read {want} in {path}: {e}"))?;
            return Ok(Some(data));
        }
        let skip = size.div_ceil(512) * 512;
        f.seek(SeekFrom::Current(skip as i64)).map_err(|e| format!("cannot read {path}: {e}"))?;
    }
}

/// A tar size field: octal digits (NUL/space padded), or GNU base-256.
fn tar_size(b: &[u8]) -> Option<u64> {
    if b[0] & 0x80 != 0 {
        return Some(b[1..].iter().fold(0u64, |a, x| (a << 8) | u64::from(*x)));
    }
    let s: String = b.iter().take_while(|c| **c != 0).map(|c| *c as char).collect();
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn outputs(i: &ImageInputs, id: &str) -> Object {
    json!({"ref": i.reference, "imageId": id, "archive": i.archive}).as_object().cloned().unwrap_or_default()
}

/// create/update: load the archive, tag it, check REF names it; an update removes the
/// previous image when it is no longer named or used.
pub fn load(
    name: &str,
    inputs: &Object,
    prior: Option<&Object>,
    cx: &CallContext,
) -> Result<Object, ProviderError> {
    let i = ImageInputs::parse(name, inputs)?;
    if !std::path::Path::new(&i.archive).exists() {
        return Err(err(
            name,
            format!(
                "archive {} does not exist (ferry builds it before loading: was it garbage-collected, or is it not a derivation's output?)",
                i.archive
            ),
        ));
    }
    let (id, tags) = archive_image(&i.archive).map_err(|m| err(name, m))?;
    cx.progress("load", format!("loading {} into podman", i.archive));
    podman_ok(name, "loading the image", &["load", "--quiet", "-i", &i.archive])?;
    podman_ok(name, "tagging the image", &["tag", &id, &i.reference])?;
    match image_id(name, &i.reference)? {
        Some(got) if got == id => {}
        got => {
            return Err(err(
                name,
                format!(
                    "after loading {}, {} is {} instead of the archive's image {id}",
                    i.archive,
                    i.reference,
                    got.as_deref().unwrap_or("missing")
                ),
            ))
        }
    }
    // The archive's own tags came with the load: ferry manages `ref` only.
    for t in tags.iter().filter(|t| normalize(t) != normalize(&i.reference)) {
        let _ = podman(name, &["untag", &id, t])?;
    }
    let old = prior.and_then(|o| o.get("imageId")).and_then(Value::as_str).filter(|o| *o != id);
    if let Some(old) = old {
        // Untagged by the new load; still named otherwise or used by a container: kept.
        match podman(name, &["rmi", old])? {
            (0, _, _) => cx.log(format!("removed the previous image {old}")),
            (_, out, e) => cx.log(format!("kept the previous image {old}{}", tail(&e, &out))),
        }
    }
    cx.log(format!("{} is image {id}", i.reference));
    Ok(outputs(&i, &id))
}

/// REF present with the recorded ID (drift otherwise); adoption when `recorded` is None and REF
/// already is the archive's image.
pub fn read(name: &str, inputs: &Object, recorded: Option<&Object>) -> Result<ReadResult, ProviderError> {
    let i = ImageInputs::parse(name, inputs)?;
    let missing = ReadResult { exists: false, outputs: None, inputs: None, drift: vec![] };
    let Some(id) = image_id(name, &i.reference)? else { return Ok(missing) };
    let Some(rec) = recorded else {
        let Ok((want, _)) = archive_image(&i.archive) else { return Ok(missing) };
        if want != id {
            return Ok(missing);
        }
        return Ok(ReadResult { exists: true, outputs: Some(outputs(&i, &id)), inputs: None, drift: vec![] });
    };
    let loaded = rec.get("imageId").and_then(Value::as_str).unwrap_or_default();
    if id == loaded {
        return Ok(ReadResult { exists: true, outputs: Some(rec.clone()), inputs: None, drift: vec![] });
    }
    let mut actual = Object::new();
    actual.insert("archive".into(), json!(format!("(another image under {}: {id})", i.reference)));
    Ok(ReadResult {
        exists: true,
        outputs: Some(rec.clone()),
        inputs: Some(actual),
        drift: vec![format!("{} is image {id}, ferry loaded {loaded}", i.reference)],
    })
}

/// Remove REF when it still names the image ferry loaded.
pub fn delete(name: &str, inputs: &Object, recorded: &Object, cx: &CallContext) -> Result<(), ProviderError> {
    let reference = inputs
        .get("ref")
        .or_else(|| recorded.get("ref"))
        .and_then(Value::as_str)
        .ok_or_else(|| err(name, "no `ref` recorded: nothing to remove"))?;
    let Some(id) = image_id(name, reference)? else { return Ok(()) };
    let loaded = recorded.get("imageId").and_then(Value::as_str).unwrap_or_default();
    if !loaded.is_empty() && id != loaded {
        cx.warn(format!("{reference} is now image {id}, not the image ferry loaded ({loaded}): left alone"));
        return Ok(());
    }
    let (code, out, e) = podman(name, &["rmi", reference])?;
    if code != 0 {
        let hint = if e.contains("in use") || e.contains("container") {
            " (a container uses it: remove the container first, e.g. `podman rm -f NAME`)"
        } else {
            ""
        };
        return Err(err(name, format!("removing {reference} failed (exit {code}){hint}{}", tail(&e, &out))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs() {
        for ok in ["web", "web:1", "localhost/web:v1.2", "registry.example:5000/a/b:x_y", "a-b.c"] {
            assert_eq!(ref_problem(ok), None, "{ok}");
        }
        for bad in ["", "Web:1", "web:", "web:-x", "web@sha256:00", "/web", "web//x", "a b", "web:a/b"] {
            assert!(ref_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn normalized_refs() {
        assert_eq!(normalize("web"), "localhost/web:latest");
        assert_eq!(normalize("web:1"), "localhost/web:1");
        assert_eq!(normalize("localhost/web:1"), "localhost/web:1");
        assert_eq!(normalize("quay.io/a/b"), "quay.io/a/b:latest");
        assert_eq!(normalize("reg:5000/a:2"), "reg:5000/a:2");
    }

    #[test]
    fn tar_sizes() {
        assert_eq!(tar_size(b"00000001750\0"), Some(1000));
        assert_eq!(tar_size(b"     1750 \0\0"), Some(1000));
        let mut b = [0u8; 12];
        b[0] = 0x80;
        b[11] = 2;
        b[10] = 1;
        assert_eq!(tar_size(&b), Some(258));
        assert_eq!(tar_size(b"zz\0\0\0\0\0\0\0\0\0\0"), None);
    }
}
