//! `local.exec`: a resource whose lifecycle is a set of user-supplied commands.
//!
//! Commands are argv lists run directly (no shell) on the machine running ferry; use
//! `["sh", "-c", "…"]` for shell syntax. Each command gets the inherited environment plus
//! `env`, then these variables (which win over `env`):
//!
//! - `FERRY_RESOURCE`: the resource name;
//! - `FERRY_INPUTS`: the resource's inputs as a JSON object;
//! - `FERRY_OUTPUTS`: the recorded outputs as a JSON object, for `update`, `delete` and `read`
//!   when ferry has them (unset otherwise, and always unset for `create`).
//!
//! `stdin`, when given, is piped to the command; otherwise stdin is `/dev/null`. A command's
//! stdout must be empty or one JSON object: the object defines the outputs (`update` and `read`
//! outputs are merged over the recorded ones, so printing nothing keeps them). Stdout and stderr
//! are captured, never passed through, so they cannot corrupt the protocol stream; stderr lines
//! are forwarded as log events and the last lines are quoted when a command fails.
//!
//! `env` and `stdin` are sensitive: their values are hidden as `(sensitive)` in everything the
//! commands print that ferry passes on (stderr lines as log events, the stderr tail and stdout
//! quoted in errors), as written and JSON-escaped (as in `FERRY_INPUTS`), with long lines of a
//! multi-line value hidden on their own. Values shorter than 4 characters are not hidden.
//!
//! A command counts as finished when it has exited *and* closed stdout and stderr: a command
//! that starts a background process must redirect that process's output (e.g. `>/dev/null
//! 2>&1`), or ferry waits for the background process too.
//!
//! Lifecycle:
//! - `create` runs on create; with `outputNames`, each listed name must be printed.
//! - `update` runs when `create`, `env`, `stdin`, `cwd` or `outputNames` change. Without an
//!   `update` command such a change is planned as a replacement (`delete`, then `create`).
//!   Changing only the `update`/`delete`/`read` commands is an update that runs nothing.
//! - `delete` runs on delete; without it, deleting does nothing.
//! - `read` reports the resource: it prints the current outputs, or exits with code
//!   [`READ_GONE_EXIT`] (3) to say the resource no longer exists. Without a `read` command the
//!   recorded outputs are returned unchanged.
//!
//! At-least-once: without a `read` command ferry cannot tell whether an interrupted `create`
//! took effect, so a read with no recorded outputs answers "does not exist" and `create` runs
//! again. Make `create` idempotent, or supply `read` so ferry can adopt the earlier result.

use crate::schema::{object_schema, outputs_schema, truncate, Inputs};
use ferry_protocol::sdk::{diff_inputs, CallContext};
use ferry_protocol::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, ExitStatus, Stdio};

/// Exit code by which a `read` command says the resource no longer exists.
pub const READ_GONE_EXIT: i32 = 3;

const KNOWN: &[&str] = &["create", "update", "delete", "read", "env", "stdin", "outputNames", "cwd"];
const SENSITIVE: &[&str] = &["env", "stdin"];
/// Inputs that define the resource; changing only the others (the commands that manage an
/// existing resource) needs no command to run.
const DEFINITION: &[&str] = &["create", "env", "stdin", "cwd", "outputNames"];
const STDERR_TAIL_LINES: usize = 20;
const MAX_LINE_CHARS: usize = 1000;
const STDOUT_QUOTE_CHARS: usize = 200;

pub(crate) fn schema() -> KindSchema {
    let argv = |what: &str| {
        json!({"type": "array", "items": {"type": "string"}, "minItems": 1,
               "description": format!("Command run {what}: program, then arguments (no shell).")})
    };
    KindSchema {
        name: "exec".into(),
        description: "A resource managed by user-supplied commands printing JSON outputs.".into(),
        inputs: object_schema(
            "Commands managing one resource.",
            json!({
                "create": argv("to create the resource; its stdout JSON object is the outputs"),
                "update": argv("when the resource's definition changes; without it, changes replace"),
                "delete": argv("to delete the resource"),
                "read": argv(&format!("to read the resource's outputs; exit code {READ_GONE_EXIT} means it is gone")),
                "env": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "Extra environment variables for every command."},
                "stdin": {"type": "string", "description": "Text piped to every command's stdin."},
                "outputNames": {"type": "array", "items": {"type": "string"},
                                "description": "Output names the commands print; others may reference them before apply."},
                "cwd": {"type": "string", "description": "Working directory of the commands."},
            }),
            &["create"],
        ),
        outputs: outputs_schema(json!({})),
        sensitive_inputs: SENSITIVE.iter().map(|s| s.to_string()).collect(),
        sensitive_outputs: vec![],
        output_names_input: Some("outputNames".into()),
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

#[derive(Debug, Clone)]
struct ExecSpec {
    create: Vec<String>,
    update: Option<Vec<String>>,
    delete: Option<Vec<String>>,
    read: Option<Vec<String>>,
    env: BTreeMap<String, String>,
    stdin: Option<String>,
    output_names: Vec<String>,
    cwd: Option<String>,
}

impl ExecSpec {
    fn parse(obj: &Object) -> Result<Self, ProviderError> {
        let i = Inputs::new(obj, KNOWN, SENSITIVE)?;
        let create = i
            .opt_argv("create")?
            .ok_or_else(|| ProviderError::invalid_input("input `create` is required"))?;
        let cwd = i.opt_str("cwd")?.map(str::to_string);
        if cwd.as_deref() == Some("") {
            return Err(ProviderError::invalid_input("input `cwd` must not be empty"));
        }
        Ok(ExecSpec {
            create,
            update: i.opt_argv("update")?,
            delete: i.opt_argv("delete")?,
            read: i.opt_argv("read")?,
            env: i.opt_string_map("env")?.unwrap_or_default(),
            stdin: i.opt_str("stdin")?.map(str::to_string),
            output_names: i.opt_string_list("outputNames")?.unwrap_or_default(),
            cwd,
        })
    }
}

/// Shown instead of a sensitive value.
const HIDDEN: &str = "(sensitive)";
/// Shorter values are not hidden (they would hide ordinary words), as in ferry's redactor.
const MIN_SECRET: usize = 4;
/// Lines of a multi-line value at least this long are hidden on their own: stderr is passed on
/// line by line.
const MIN_SECRET_LINE: usize = 12;

/// The resource's own sensitive inputs (`env` values, `stdin`), to hide in what its commands
/// print. Longest first, so a whole value is replaced before its lines.
struct Secrets(Vec<String>);

impl Secrets {
    fn of(spec: &ExecSpec) -> Secrets {
        let values: Vec<&String> = spec.env.values().chain(spec.stdin.as_ref()).collect();
        let mut all: Vec<String> = Vec::new();
        for v in values {
            all.push(v.clone());
            let escaped = Value::String(v.clone()).to_string();
            all.push(escaped[1..escaped.len() - 1].to_string());
            if v.contains('\n') {
                all.extend(
                    v.lines().map(str::trim).filter(|l| l.len() >= MIN_SECRET_LINE).map(str::to_string),
                );
            }
        }
        all.retain(|s| s.len() >= MIN_SECRET);
        all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        all.dedup();
        Secrets(all)
    }

    fn hide(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.0 {
            out = out.replace(s.as_str(), HIDDEN);
        }
        out
    }
}

/// One command invocation's context.
struct Invocation<'a> {
    phase: &'static str,
    argv: &'a [String],
    spec: &'a ExecSpec,
    resource: &'a str,
    inputs: &'a Object,
    outputs: Option<&'a Object>,
}

struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr_tail: VecDeque<String>,
}

pub(crate) fn plan(p: &PlanParams) -> Result<PlanResult, ProviderError> {
    let desired = ExecSpec::parse(&p.inputs)?;
    let Some(prior) = &p.prior else {
        return Ok(PlanResult {
            action: PlanAction::Create,
            changes: vec![],
            reason: None,
            create_before_destroy: false,
        });
    };
    let sensitive: Vec<String> = SENSITIVE.iter().map(|s| s.to_string()).collect();
    let mut changes = diff_inputs(&prior.inputs, &p.inputs, &sensitive);
    if changes.is_empty() {
        return Ok(PlanResult {
            action: PlanAction::Noop,
            changes,
            reason: None,
            create_before_destroy: false,
        });
    }
    let redefined = changes.iter().any(|c| DEFINITION.contains(&c.path.as_str()));
    if !redefined {
        let reason = "only the update/delete/read commands change; no command runs now";
        return Ok(PlanResult {
            action: PlanAction::Update,
            changes,
            reason: Some(reason.into()),
            create_before_destroy: false,
        });
    }
    if desired.update.is_some() {
        return Ok(PlanResult {
            action: PlanAction::Update,
            changes,
            reason: None,
            create_before_destroy: false,
        });
    }
    for c in &mut changes {
        c.forces_replace = DEFINITION.contains(&c.path.as_str());
    }
    Ok(PlanResult {
        action: PlanAction::Replace,
        changes,
        reason: Some("no `update` command: the resource is deleted and created again".into()),
        create_before_destroy: false,
    })
}

pub(crate) fn create(p: &CreateParams, cx: &CallContext) -> Result<OutputsResult, ProviderError> {
    let spec = ExecSpec::parse(&p.inputs)?;
    let inv = Invocation {
        phase: "create",
        argv: &spec.create,
        spec: &spec,
        resource: &p.resource,
        inputs: &p.inputs,
        outputs: None,
    };
    let outputs = run_for_outputs(&inv, cx)?;
    check_output_names(&spec, &outputs, "create")?;
    Ok(OutputsResult { outputs })
}

pub(crate) fn update(p: &UpdateParams, cx: &CallContext) -> Result<OutputsResult, ProviderError> {
    let spec = ExecSpec::parse(&p.inputs)?;
    let redefined = DEFINITION.iter().any(|k| p.prior.inputs.get(*k) != p.inputs.get(*k));
    if !redefined {
        return Ok(OutputsResult { outputs: p.prior.outputs.clone() });
    }
    let Some(argv) = &spec.update else {
        return Err(ProviderError::unsupported(
            "this exec resource has no `update` command; changing its inputs replaces it",
        ));
    };
    let inv = Invocation {
        phase: "update",
        argv,
        spec: &spec,
        resource: &p.resource,
        inputs: &p.inputs,
        outputs: Some(&p.prior.outputs),
    };
    let mut outputs = p.prior.outputs.clone();
    outputs.extend(run_for_outputs(&inv, cx)?);
    check_output_names(&spec, &outputs, "update")?;
    Ok(OutputsResult { outputs })
}

pub(crate) fn delete(p: &DeleteParams, cx: &CallContext) -> Result<(), ProviderError> {
    let spec = ExecSpec::parse(&p.inputs)?;
    let Some(argv) = &spec.delete else {
        cx.log("no `delete` command: nothing to do");
        return Ok(());
    };
    let inv = Invocation {
        phase: "delete",
        argv,
        spec: &spec,
        resource: &p.resource,
        inputs: &p.inputs,
        outputs: Some(&p.outputs),
    };
    let done = run(&inv, cx)?;
    if !done.status.success() {
        return Err(failure(&inv, &done));
    }
    Ok(())
}

pub(crate) fn read(p: &ReadParams, cx: &CallContext) -> Result<ReadResult, ProviderError> {
    let spec = ExecSpec::parse(&p.inputs)?;
    let gone = ReadResult { exists: false, outputs: None, inputs: None, drift: vec![] };
    let Some(argv) = &spec.read else {
        // Nothing to look at: trust the record, and with no record let `create` run again.
        return Ok(match &p.outputs {
            Some(o) => ReadResult { exists: true, outputs: Some(o.clone()), inputs: None, drift: vec![] },
            None => gone,
        });
    };
    let inv = Invocation {
        phase: "read",
        argv,
        spec: &spec,
        resource: &p.resource,
        inputs: &p.inputs,
        outputs: p.outputs.as_ref(),
    };
    let done = run(&inv, cx)?;
    if done.status.code() == Some(READ_GONE_EXIT) {
        return Ok(gone);
    }
    if !done.status.success() {
        return Err(failure(&inv, &done));
    }
    let mut outputs = p.outputs.clone().unwrap_or_default();
    outputs.extend(parse_outputs(&inv, &done.stdout)?);
    check_output_names(&spec, &outputs, "read")?;
    Ok(ReadResult { exists: true, outputs: Some(outputs), inputs: None, drift: vec![] })
}

fn run_for_outputs(inv: &Invocation, cx: &CallContext) -> Result<Object, ProviderError> {
    let done = run(inv, cx)?;
    if !done.status.success() {
        return Err(failure(inv, &done));
    }
    parse_outputs(inv, &done.stdout)
}

fn check_output_names(spec: &ExecSpec, outputs: &Object, phase: &str) -> Result<(), ProviderError> {
    match spec.output_names.iter().find(|n| !outputs.contains_key(n.as_str())) {
        None => Ok(()),
        Some(missing) => {
            let printed: Vec<&str> = outputs.keys().map(String::as_str).collect();
            Err(ProviderError::new(format!(
                "the {phase} command did not print output `{missing}` declared in `outputNames` \
                 (printed: {})",
                if printed.is_empty() { "none".to_string() } else { printed.join(", ") }
            )))
        }
    }
}

/// Run one command to completion, capturing stdout and forwarding stderr lines as log events.
fn run(inv: &Invocation, cx: &CallContext) -> Result<Finished, ProviderError> {
    let (program, args) = inv
        .argv
        .split_first()
        .ok_or_else(|| ProviderError::invalid_input(format!("the {} command is empty", inv.phase)))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(&inv.spec.env)
        .env("FERRY_RESOURCE", inv.resource)
        .env("FERRY_INPUTS", Value::Object(inv.inputs.clone()).to_string())
        .stdin(if inv.spec.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match inv.outputs {
        Some(o) => cmd.env("FERRY_OUTPUTS", Value::Object(o.clone()).to_string()),
        None => cmd.env_remove("FERRY_OUTPUTS"),
    };
    if let Some(cwd) = &inv.spec.cwd {
        cmd.current_dir(cwd);
    }
    cx.progress(inv.phase, format!("running {}", program));
    let mut child = cmd
        .spawn()
        .map_err(|e| ProviderError::new(format!("cannot run the {} command `{program}`: {e}", inv.phase)))?;

    // Feed stdin and drain stdout on their own threads so a chatty command cannot deadlock us.
    let stdin_feeder = child.stdin.take().zip(inv.spec.stdin.clone()).map(|(mut pipe, text)| {
        std::thread::spawn(move || {
            // The command may exit without reading it all; that is its business.
            let _ = pipe.write_all(text.as_bytes());
        })
    });
    let stdout_reader = child.stdout.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    });
    let mut stderr_tail = VecDeque::new();
    let secrets = Secrets::of(inv.spec);
    if let Some(pipe) = child.stderr.take() {
        for line in BufReader::new(pipe).split(b'\n') {
            let Ok(line) = line else { break };
            // Hidden before truncating, so a cut cannot leave a secret's head behind.
            let line = truncate(&secrets.hide(String::from_utf8_lossy(&line).trim_end()), MAX_LINE_CHARS);
            cx.log(format!("{}: {line}", inv.phase));
            if stderr_tail.len() == STDERR_TAIL_LINES {
                stderr_tail.pop_front();
            }
            stderr_tail.push_back(line);
        }
    }
    let status = child
        .wait()
        .map_err(|e| ProviderError::new(format!("waiting for the {} command `{program}`: {e}", inv.phase)))?;
    if let Some(t) = stdin_feeder {
        let _ = t.join();
    }
    let stdout = stdout_reader.and_then(|t| t.join().ok()).unwrap_or_default();
    Ok(Finished { status, stdout, stderr_tail })
}

fn failure(inv: &Invocation, done: &Finished) -> ProviderError {
    use std::os::unix::process::ExitStatusExt;
    let program = inv.argv.first().map(String::as_str).unwrap_or("");
    let how = match (done.status.code(), done.status.signal()) {
        (Some(code), _) => format!("failed with exit code {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => format!("failed ({})", done.status),
    };
    let mut msg = format!("the {} command `{program}` {how}", inv.phase);
    if done.stderr_tail.is_empty() {
        msg.push_str(" (no stderr output)");
    } else {
        msg.push_str(&format!("; last lines of stderr:\n{}", Vec::from(done.stderr_tail.clone()).join("\n")));
    }
    ProviderError::new(msg)
}

/// Stdout must be empty (no outputs) or exactly one JSON object.
fn parse_outputs(inv: &Invocation, stdout: &[u8]) -> Result<Object, ProviderError> {
    let program = inv.argv.first().map(String::as_str).unwrap_or("");
    let text = String::from_utf8_lossy(stdout);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(Object::new());
    }
    let quote = || truncate(&Secrets::of(inv.spec).hide(trimmed), STDOUT_QUOTE_CHARS);
    match serde_json::from_str::<Value>(trimmed) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ProviderError::new(format!(
            "the {} command `{program}` printed JSON that is not an object; stdout must be empty \
             or one JSON object of outputs (print logs to stderr). stdout was: {}",
            inv.phase,
            quote()
        ))),
        Err(e) => Err(ProviderError::new(format!(
            "the {} command `{program}` printed invalid JSON ({e}); stdout must be empty or one \
             JSON object of outputs (print logs to stderr). stdout was: {}",
            inv.phase,
            quote()
        ))),
    }
}
