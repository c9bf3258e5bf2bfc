//! `ferry-provider-counter`: an example external ferry provider, built with the SDK.
//!
//! Provider `counter`, kind `value`: an integer kept in a plain-text file. It shows every part of
//! protocol v1 a provider author needs: input validation, idempotent create, read with drift and
//! adoption, update, delete of a missing resource, a named action, progress events, and
//! rejecting kinds it does not know. See README.md beside this file.

use ferry_protocol::sdk::{diff_inputs, serve, CallContext, Provider, ProviderInfo};
use ferry_protocol::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const KIND: &str = "value";

struct Counter;

/// The inputs of a `counter.value`, validated.
struct Inputs {
    start: i64,
    step: i64,
    file: PathBuf,
}

impl Inputs {
    fn parse(inputs: &Object) -> Result<Inputs, ProviderError> {
        if let Some(unknown) = inputs.keys().find(|k| !["start", "step", "file"].contains(&k.as_str())) {
            return Err(ProviderError::invalid_input(format!(
                "unknown input {unknown:?}; counter.value takes start, step and file"
            )));
        }
        let int = |name: &str, default: i64| match inputs.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_i64().ok_or_else(|| {
                ProviderError::invalid_input(format!("input {name} must be an integer, got {v}"))
            }),
        };
        let file = match inputs.get("file") {
            Some(Value::String(s)) if Path::new(s).is_absolute() => PathBuf::from(s),
            Some(Value::String(s)) => {
                return Err(ProviderError::invalid_input(format!(
                    "input file must be an absolute path, got {s:?}"
                )))
            }
            Some(v) => {
                return Err(ProviderError::invalid_input(format!("input file must be a string, got {v}")))
            }
            None => return Err(ProviderError::invalid_input("input file is required (an absolute path)")),
        };
        Ok(Inputs { start: int("start", 0)?, step: int("step", 1)?, file })
    }

    fn outputs(&self, value: i64) -> Object {
        let mut o = Object::new();
        o.insert("value".into(), json!(value));
        o.insert("file".into(), json!(self.file.to_string_lossy()));
        o
    }
}

/// Reject requests for kinds this provider did not declare in its handshake.
fn check_kind(kind: &str) -> Result<(), ProviderError> {
    if kind == KIND {
        Ok(())
    } else {
        Err(ProviderError::bad_request(format!("provider counter has no kind {kind:?}; it has: {KIND}")))
    }
}

/// The counter's current value; `None` when the file does not exist.
fn load(file: &Path) -> Result<Option<i64>, ProviderError> {
    match std::fs::read_to_string(file) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| {
            ProviderError::internal(format!("{} does not hold an integer: {:?}", file.display(), text.trim()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", file, e)),
    }
}

/// Write the value atomically (temporary file + rename), so a crash never leaves half a number.
fn store(file: &Path, value: i64) -> Result<(), ProviderError> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_error("create directory", dir, e))?;
    }
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".ferry-tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{value}\n")).map_err(|e| io_error("write", &tmp, e))?;
    std::fs::rename(&tmp, file).map_err(|e| io_error("write", file, e))
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> ProviderError {
    let err = ProviderError::internal(format!("cannot {what} {}: {e}", path.display()));
    // Out of space or a busy file may clear up; a missing permission will not.
    if matches!(e.kind(), std::io::ErrorKind::PermissionDenied) {
        err
    } else {
        err.retryable()
    }
}

impl Provider for Counter {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: "counter".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kinds: vec![KindSchema {
                name: KIND.into(),
                description: "An integer counter kept in a file".into(),
                inputs: json!({
                    "type": "object",
                    "properties": {
                        "start": {"type": "integer", "default": 0, "description": "value written on create and when start changes"},
                        "step": {"type": "integer", "default": 1, "description": "what the increment action adds"},
                        "file": {"type": "string", "description": "absolute path of the file holding the value"}
                    },
                    "required": ["file"],
                    "additionalProperties": false
                }),
                outputs: json!({
                    "type": "object",
                    "properties": {
                        "value": {"type": "integer", "description": "the counter's current value"},
                        "file": {"type": "string", "description": "the file holding it"}
                    }
                }),
                sensitive_inputs: vec![],
                sensitive_outputs: vec![],
                output_names_input: None,
                operations: vec![
                    Operation::Plan,
                    Operation::Create,
                    Operation::Read,
                    Operation::Update,
                    Operation::Delete,
                ],
                actions: vec![ActionSchema {
                    name: "increment".into(),
                    description: "add step to the value".into(),
                }],
                builds_inputs: false,
                heavy_inputs: false,
            }],
        }
    }

    /// The file names the resource, so moving it is a replace; start and step change in place.
    fn plan(&self, p: PlanParams, _cx: &CallContext) -> Result<PlanResult, ProviderError> {
        check_kind(&p.kind)?;
        let desired = Inputs::parse(&p.inputs)?;
        let Some(prior) = p.prior else {
            return Ok(PlanResult {
                action: PlanAction::Create,
                changes: vec![],
                reason: None,
                create_before_destroy: false,
            });
        };
        let old_file = prior.inputs.get("file").and_then(Value::as_str).map(PathBuf::from);
        let moved = old_file.as_deref() != Some(desired.file.as_path());
        let changes: Vec<Change> = diff_inputs(&prior.inputs, &p.inputs, &[])
            .into_iter()
            .map(|c| Change { forces_replace: c.path == "file", ..c })
            .collect();
        let (action, reason) = match (changes.is_empty(), moved) {
            (true, _) => (PlanAction::Noop, None),
            (false, true) => (PlanAction::Replace, Some("the counter moves to another file".to_string())),
            (false, false) => (PlanAction::Update, None),
        };
        // Old providers delete first; this one keeps that default (the protocol allows either).
        Ok(PlanResult { action, changes, reason, create_before_destroy: false })
    }

    /// Idempotent: repeating a create (after a crash, §6 of the spec) rewrites the same value.
    fn create(&self, p: CreateParams, cx: &CallContext) -> Result<OutputsResult, ProviderError> {
        check_kind(&p.kind)?;
        let inputs = Inputs::parse(&p.inputs)?;
        cx.progress("write", format!("writing {} to {}", inputs.start, inputs.file.display()));
        store(&inputs.file, inputs.start)?;
        Ok(OutputsResult { outputs: inputs.outputs(inputs.start) })
    }

    /// Drift when the file holds another value than recorded; adoption (`outputs: None`) when
    /// the file already exists.
    fn read(&self, p: ReadParams, _cx: &CallContext) -> Result<ReadResult, ProviderError> {
        check_kind(&p.kind)?;
        let inputs = Inputs::parse(&p.inputs)?;
        let Some(value) = load(&inputs.file)? else {
            return Ok(ReadResult { exists: false, outputs: None, inputs: None, drift: vec![] });
        };
        let recorded = p.outputs.as_ref().and_then(|o| o.get("value")).and_then(Value::as_i64);
        let drift = match recorded {
            Some(r) if r != value => vec![format!("value is {value}, recorded {r}")],
            _ => vec![],
        };
        Ok(ReadResult { exists: true, outputs: Some(inputs.outputs(value)), inputs: None, drift })
    }

    /// A new `start` resets the value; a new `step` alone keeps it.
    fn update(&self, p: UpdateParams, cx: &CallContext) -> Result<OutputsResult, ProviderError> {
        check_kind(&p.kind)?;
        let inputs = Inputs::parse(&p.inputs)?;
        let old_start = Inputs::parse(&p.prior.inputs).map(|i| i.start).ok();
        let value = match load(&inputs.file)? {
            Some(v) if old_start == Some(inputs.start) => v,
            _ => {
                cx.progress("write", format!("writing {} to {}", inputs.start, inputs.file.display()));
                store(&inputs.file, inputs.start)?;
                inputs.start
            }
        };
        Ok(OutputsResult { outputs: inputs.outputs(value) })
    }

    /// Deleting a counter that is already gone succeeds.
    fn delete(&self, p: DeleteParams, _cx: &CallContext) -> Result<(), ProviderError> {
        check_kind(&p.kind)?;
        let inputs = Inputs::parse(&p.inputs)?;
        match std::fs::remove_file(&inputs.file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &inputs.file, e)),
        }
    }

    fn action(&self, p: ActionParams, cx: &CallContext) -> Result<ActionResult, ProviderError> {
        check_kind(&p.kind)?;
        if p.action != "increment" {
            return Err(ProviderError::unsupported(format!(
                "counter.value has no action {:?}; it has: increment",
                p.action
            )));
        }
        let inputs = Inputs::parse(&p.inputs)?;
        cx.progress("read", format!("reading {}", inputs.file.display()));
        let Some(value) = load(&inputs.file)? else {
            return Err(ProviderError::not_found(format!(
                "{} does not exist; run `ferry apply` to create the counter again",
                inputs.file.display()
            )));
        };
        let new = value
            .checked_add(inputs.step)
            .ok_or_else(|| ProviderError::invalid_input(format!("{value} + {} overflows", inputs.step)))?;
        cx.log(format!("{value} + {} = {new}", inputs.step));
        store(&inputs.file, new)?;
        Ok(ActionResult { outputs: Some(inputs.outputs(new)), message: Some(format!("value is now {new}")) })
    }
}

fn main() {
    if let Err(e) = serve(Counter) {
        eprintln!("ferry-provider-counter: {e}");
        std::process::exit(1);
    }
}
