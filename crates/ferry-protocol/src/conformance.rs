//! Protocol conformance harness: [`check`] runs a provider program and tells, check by check,
//! where it departs from `docs/provider-protocol.md`. It backs `ferry provider check`.
//!
//! [`ProviderProcess`] is the small blocking client the checks use (one reader thread, a
//! channel, a timeout per wait, the process killed on drop). It records everything odd the
//! provider writes — lines that are not messages, answers to ids never sent, events about
//! requests not in flight — so the checks can report it.
//!
//! Architecture invariant: std and serde_json only; no async runtime, no ferry crate.

mod client;
mod lifecycle;

pub use client::{spawn_retrying, ClientError, ProviderProcess, Reply, StderrMode};

use crate::messages::*;
use crate::PROTOCOL_VERSION;
use lifecycle::check_lifecycle;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

// ------------------------------------------------------------------------------------ checks

/// What [`check`] should exercise.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Sample inputs per kind; each runs the full lifecycle (plan → create → read → plan →
    /// delete → read). Only give inputs whose create is harmless to run.
    pub samples: Vec<(String, Object)>,
    /// Limit for each call.
    pub timeout: Duration,
    /// How long the provider may take to exit once stdin is closed.
    pub exit_timeout: Duration,
    pub stderr: StderrMode,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            samples: Vec::new(),
            timeout: Duration::from_secs(10),
            exit_timeout: Duration::from_secs(5),
            stderr: StderrMode::Capture,
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    pub name: String,
    pub passed: bool,
    /// What was seen: the evidence for a pass, the reason for a failure.
    pub detail: String,
}

#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub checks: Vec<CheckOutcome>,
    /// The provider's stderr, when captured.
    pub stderr: String,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    pub fn failures(&self) -> impl Iterator<Item = &CheckOutcome> {
        self.checks.iter().filter(|c| !c.passed)
    }

    pub fn get(&self, name: &str) -> Option<&CheckOutcome> {
        self.checks.iter().find(|c| c.name == name)
    }

    fn record(&mut self, name: &str, result: Result<String, String>) {
        let (passed, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        self.checks.push(CheckOutcome { name: name.to_string(), passed, detail });
    }
}

/// One line per check, then the tail of the provider's stderr if anything failed.
impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.checks {
            writeln!(f, "{} {}: {}", if c.passed { "ok  " } else { "FAIL" }, c.name, c.detail)?;
        }
        let failed = self.failures().count();
        if failed == 0 {
            writeln!(f, "all {} checks passed", self.checks.len())
        } else {
            writeln!(f, "{failed} of {} checks failed", self.checks.len())?;
            let tail: Vec<&str> = self.stderr.lines().rev().take(20).collect();
            if !tail.is_empty() {
                writeln!(f, "provider stderr (last {} lines):", tail.len())?;
                for l in tail.into_iter().rev() {
                    writeln!(f, "  {l}")?;
                }
            }
            Ok(())
        }
    }
}

/// Names of the checks, as they appear in [`CheckReport::checks`].
pub mod names {
    pub const START: &str = "start";
    pub const HANDSHAKE: &str = "handshake";
    pub const PROVIDER_NAME: &str = "provider name";
    pub const KINDS: &str = "kinds";
    pub const UNSUPPORTED_VERSION: &str = "unsupported version";
    pub const MALFORMED_LINE: &str = "malformed request";
    pub const UNKNOWN_METHOD: &str = "unknown method";
    pub const UNKNOWN_KIND: &str = "unknown kind";
    pub const CONCURRENT_IDS: &str = "concurrent requests";
    pub const EVENTS: &str = "events";
    pub const STDOUT: &str = "stdout";
    pub const EXIT_ON_EOF: &str = "exit on stdin EOF";
    /// Followed by a space and the kind name.
    pub const LIFECYCLE: &str = "lifecycle";
}

fn handshake_call(versions: Vec<u32>) -> Call {
    Call::Handshake(HandshakeParams {
        protocol_versions: versions,
        ferry_version: concat!(env!("CARGO_PKG_VERSION"), "-conformance").to_string(),
        options: Default::default(),
    })
}

/// Run `executable args...` through every conformance check. Never panics on provider
/// misbehaviour: everything ends up in the report.
pub fn check(executable: &Path, args: &[String], opts: &CheckOptions) -> CheckReport {
    let mut report = CheckReport::default();
    let mut p = match ProviderProcess::spawn(executable, args, opts.stderr) {
        Ok(p) => p,
        Err(e) => {
            report.record(names::START, Err(format!("cannot start {}: {e}", executable.display())));
            return report;
        }
    };

    let hs = check_handshake(&mut p, opts, &mut report);
    if let Some(hs) = &hs {
        report.record(names::PROVIDER_NAME, check_provider_name(&hs.provider));
        report.record(names::KINDS, check_kinds(&hs.kinds));
    }

    let mut version_probe_violations = Vec::new();
    let mut version_probe_stderr = String::new();
    report.record(
        names::UNSUPPORTED_VERSION,
        check_unsupported_version(
            executable,
            args,
            opts,
            &mut version_probe_violations,
            &mut version_probe_stderr,
        ),
    );

    if let Some(hs) = &hs {
        report.record(names::MALFORMED_LINE, check_malformed(&mut p, opts.timeout));
        report.record(names::UNKNOWN_METHOD, check_unknown_method(&mut p, opts.timeout));
        report.record(names::UNKNOWN_KIND, check_unknown_kind(&mut p, opts.timeout));
        report.record(names::CONCURRENT_IDS, check_concurrent(&mut p, hs, opts));
        for (kind, inputs) in &opts.samples {
            let name = format!("{} {kind}", names::LIFECYCLE);
            report.record(&name, check_lifecycle(&mut p, hs, kind, inputs, opts.timeout));
        }
    }

    p.close_stdin();
    let exit = p.wait_exit(opts.exit_timeout);
    // Whatever the provider wrote before exiting still counts for the stdout check.
    p.drain(Duration::from_millis(if matches!(exit, Ok(Some(_))) { 500 } else { 0 }));
    let (event_violations, other): (Vec<String>, Vec<String>) =
        p.violations().iter().cloned().chain(version_probe_violations).partition(|v| v.starts_with("event "));
    report.record(
        names::EVENTS,
        if event_violations.is_empty() {
            Ok(match p.events_seen() {
                0 => "no events sent".to_string(),
                n => format!("{n} event(s), each about a request in flight"),
            })
        } else {
            Err(event_violations.join("; "))
        },
    );
    report.record(
        names::STDOUT,
        if other.is_empty() {
            Ok("every line was a protocol message answering a request sent".into())
        } else {
            Err(other.join("; "))
        },
    );
    report.record(
        names::EXIT_ON_EOF,
        match exit {
            Ok(Some(s)) if s.success() => Ok("exited with status 0".into()),
            Ok(Some(s)) => Err(format!("exited with {s} after stdin was closed; expected status 0")),
            Ok(None) => Err(format!(
                "still running {}s after stdin was closed; a provider must exit on stdin EOF",
                opts.exit_timeout.as_secs_f32()
            )),
            Err(e) => Err(format!("cannot wait for the provider: {e}")),
        },
    );
    report.stderr = p.stderr_text() + &version_probe_stderr;
    report
}

fn check_handshake(
    p: &mut ProviderProcess,
    opts: &CheckOptions,
    report: &mut CheckReport,
) -> Option<HandshakeResult> {
    let result = match p.call(handshake_call(vec![PROTOCOL_VERSION]), opts.timeout) {
        Err(e) => Err(format!("{e}; further checks skipped")),
        Ok(Reply { outcome: Outcome::Error(e), .. }) => {
            Err(format!("handshake answered with an error: {}", describe(&e)))
        }
        Ok(Reply { outcome: Outcome::Result(v), .. }) => {
            match serde_json::from_value::<HandshakeResult>(v.clone()) {
                Err(e) => Err(format!("handshake result is not a HandshakeResult ({e}): {v}")),
                Ok(hs) if hs.protocol_version != PROTOCOL_VERSION => Err(format!(
                    "provider picked protocol version {}, but only {PROTOCOL_VERSION} was offered",
                    hs.protocol_version
                )),
                Ok(hs) => Ok(hs),
            }
        }
    };
    match result {
        Ok(hs) => {
            report.record(
                names::HANDSHAKE,
                Ok(format!(
                    "protocol v{}, provider {:?} {}, {} kind(s)",
                    hs.protocol_version,
                    hs.provider,
                    hs.version,
                    hs.kinds.len()
                )),
            );
            Some(hs)
        }
        Err(detail) => {
            report.record(names::HANDSHAKE, Err(detail));
            None
        }
    }
}

fn check_provider_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        Err("provider name is empty".into())
    } else if name.contains('.') || name.chars().any(char::is_whitespace) {
        Err(format!("provider name {name:?} must not contain dots or whitespace (it is the NAME in type = \"NAME.KIND\")"))
    } else {
        Ok(format!("{name:?}"))
    }
}

fn schema_properties(schema: &Value) -> Vec<String> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

fn check_kinds(kinds: &[KindSchema]) -> Result<String, String> {
    let mut problems = Vec::new();
    if kinds.is_empty() {
        problems.push("the provider declares no kinds".to_string());
    }
    let mut seen = HashSet::new();
    for k in kinds {
        let label = format!("kind {:?}", k.name);
        if k.name.is_empty() {
            problems.push("a kind has an empty name".into());
        } else if k.name.contains('.') || k.name.chars().any(char::is_whitespace) {
            problems.push(format!("{label}: name must not contain dots or whitespace"));
        }
        if !seen.insert(k.name.as_str()) {
            problems.push(format!("{label} is declared twice"));
        }
        for (what, schema, sensitive) in
            [("inputs", &k.inputs, &k.sensitive_inputs), ("outputs", &k.outputs, &k.sensitive_outputs)]
        {
            if !schema.is_object() {
                problems.push(format!("{label}: the {what} schema must be a JSON object, got {schema}"));
                continue;
            }
            let props = schema_properties(schema);
            for s in sensitive {
                if !props.contains(s) {
                    problems.push(format!(
                        "{label}: sensitive {what} name {s:?} is not a property of the {what} schema"
                    ));
                }
            }
        }
        if let Some(input) = &k.output_names_input {
            if !schema_properties(&k.inputs).contains(input) {
                problems.push(format!(
                    "{label}: outputNamesInput {input:?} is not a property of the inputs schema"
                ));
            }
        }
        if !k.supports(Operation::Create) {
            problems.push(format!("{label}: operations must include create"));
        }
        let mut actions = HashSet::new();
        for a in &k.actions {
            if a.name.is_empty() || !actions.insert(a.name.as_str()) {
                problems.push(format!("{label}: action names must be non-empty and unique ({:?})", a.name));
            }
        }
    }
    if problems.is_empty() {
        let names: Vec<&str> = kinds.iter().map(|k| k.name.as_str()).collect();
        Ok(names.join(", "))
    } else {
        Err(problems.join("; "))
    }
}

/// In a process of its own, since a provider may end its session after refusing a handshake.
fn check_unsupported_version(
    executable: &Path,
    args: &[String],
    opts: &CheckOptions,
    violations: &mut Vec<String>,
    stderr: &mut String,
) -> Result<String, String> {
    let mut p = ProviderProcess::spawn(executable, args, opts.stderr)
        .map_err(|e| format!("cannot start {} again: {e}", executable.display()))?;
    let unknown = PROTOCOL_VERSION + 1000;
    let result = match p.call(handshake_call(vec![unknown]), opts.timeout) {
        Ok(Reply { outcome: Outcome::Error(e), .. }) => {
            if e.code.as_deref() == Some(codes::UNSUPPORTED_VERSION) {
                Ok(format!("refused protocol v{unknown}: {}", describe(&e)))
            } else {
                Ok(format!(
                    "refused protocol v{unknown} (code should be unsupportedVersion): {}",
                    describe(&e)
                ))
            }
        }
        Ok(Reply { outcome: Outcome::Result(v), .. }) => {
            Err(format!("accepted a handshake offering only protocol v{unknown}: {v}"))
        }
        Err(e) => Err(format!("handshake offering only protocol v{unknown}: {e}")),
    };
    p.close_stdin();
    let _ = p.wait_exit(opts.exit_timeout);
    p.drain(Duration::from_millis(200));
    violations.extend(p.violations().iter().map(|v| format!("{v} (in the unsupported-version session)")));
    *stderr = p.stderr_text();
    result
}

fn check_malformed(p: &mut ProviderProcess, timeout: Duration) -> Result<String, String> {
    // A line that is not JSON: nothing to echo, so the answer carries id 0.
    p.send_raw("this is not JSON {", None).map_err(|e| e.to_string())?;
    let first = match p.wait_any(timeout) {
        Ok(Reply { outcome: Outcome::Error(e), id, .. }) => {
            let code = e.code.clone();
            (id, code, describe(&e))
        }
        Ok(Reply { outcome: Outcome::Result(v), id, .. }) => {
            return Err(format!("a line that is not JSON got a result (id {id}): {v}"))
        }
        Err(e) => return Err(format!("a line that is not JSON got no error response: {e}")),
    };
    // Valid JSON with an id but params of the wrong shape: the id should be echoed.
    let id = p.fresh_id();
    p.send_raw(&json!({"id": id, "method": "create", "params": "not an object"}).to_string(), Some(id))
        .map_err(|e| e.to_string())?;
    let second = match p.wait(id, timeout) {
        Ok(Reply { outcome: Outcome::Error(e), .. }) => describe(&e),
        Ok(Reply { outcome: Outcome::Result(v), .. }) => {
            return Err(format!("a create with params of the wrong shape got a result: {v}"))
        }
        Err(ClientError::Timeout { .. }) => {
            return Err(format!("a request with malformed params got no error response with id {id}"))
        }
        Err(e) => return Err(format!("a request with malformed params: {e}")),
    };
    let (first_id, first_code, first_msg) = first;
    let note = if first_code.as_deref() == Some(codes::BAD_REQUEST) {
        String::new()
    } else {
        " (code should be badRequest)".into()
    };
    Ok(format!(
        "non-JSON line answered with id {first_id}: {first_msg}{note}; malformed params answered: {second}"
    ))
}

fn expect_error(
    p: &mut ProviderProcess,
    call: Call,
    timeout: Duration,
    what: &str,
) -> Result<String, String> {
    match p.call(call, timeout) {
        Ok(Reply { outcome: Outcome::Error(e), .. }) => Ok(describe(&e)),
        Ok(Reply { outcome: Outcome::Result(v), .. }) => {
            Err(format!("{what} got a result instead of an error: {v}"))
        }
        Err(e) => Err(format!("{what}: {e}")),
    }
}

fn check_unknown_method(p: &mut ProviderProcess, timeout: Duration) -> Result<String, String> {
    let id = p.fresh_id();
    let line = json!({"id": id, "method": "noSuchMethod", "params": {}}).to_string();
    p.send_raw(&line, Some(id)).map_err(|e| e.to_string())?;
    match p.wait(id, timeout) {
        Ok(Reply { outcome: Outcome::Error(e), .. }) => Ok(describe(&e)),
        Ok(Reply { outcome: Outcome::Result(v), .. }) => {
            Err(format!("method noSuchMethod got a result: {v}"))
        }
        Err(e) => Err(format!("method noSuchMethod: {e}")),
    }
}

const PROBE_RESOURCE: &str = "ferry-conformance-probe";

fn check_unknown_kind(p: &mut ProviderProcess, timeout: Duration) -> Result<String, String> {
    let call = Call::Plan(PlanParams {
        kind: "no-such-kind-ferry-conformance".into(),
        resource: PROBE_RESOURCE.into(),
        inputs: Object::new(),
        prior: None,
    });
    expect_error(p, call, timeout, "a plan for an undeclared kind")
}

/// Two plans sent back to back, with ids above 2^32 so that truncated ids show.
fn check_concurrent(
    p: &mut ProviderProcess,
    hs: &HandshakeResult,
    opts: &CheckOptions,
) -> Result<String, String> {
    let Some(kind) = hs.kinds.first() else {
        return Err("no kind to send requests about".into());
    };
    let inputs =
        opts.samples.iter().find(|(k, _)| *k == kind.name).map(|(_, i)| i.clone()).unwrap_or_default();
    let base = (1u64 << 32) + p.fresh_id() * 2;
    let ids = [base + 7, base + 3];
    for (n, id) in ids.iter().enumerate() {
        let call = Call::Plan(PlanParams {
            kind: kind.name.clone(),
            resource: format!("{PROBE_RESOURCE}-{n}"),
            inputs: inputs.clone(),
            prior: None,
        });
        p.send(&Request { id: *id, call }).map_err(|e| e.to_string())?;
    }
    let deadline = Instant::now() + opts.timeout;
    for id in ids {
        let left = deadline.saturating_duration_since(Instant::now());
        p.wait(id, left).map_err(|e| format!("request {id}: {e}"))?;
    }
    Ok(format!("both answered with their ids ({} and {})", ids[0], ids[1]))
}

pub(super) fn describe(e: &ProviderError) -> String {
    let code = e.code.as_deref().unwrap_or("no code");
    format!("[{code}] {}", e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &str) -> KindSchema {
        KindSchema {
            name: name.into(),
            description: String::new(),
            inputs: json!({"type": "object", "properties": {"a": {}}}),
            outputs: json!({"type": "object", "properties": {"b": {}}}),
            sensitive_inputs: vec![],
            sensitive_outputs: vec![],
            output_names_input: None,
            operations: vec![Operation::Create],
            actions: vec![],
            builds_inputs: false,
            heavy_inputs: false,
        }
    }

    #[test]
    fn kinds_are_checked() {
        assert!(check_kinds(&[kind("x"), kind("y")]).is_ok());
        assert!(check_kinds(&[]).is_err());
        assert!(check_kinds(&[kind("x"), kind("x")]).unwrap_err().contains("twice"));
        assert!(check_kinds(&[kind("")]).is_err());
        let mut k = kind("x");
        k.sensitive_outputs = vec!["secret".into()];
        assert!(check_kinds(&[k]).unwrap_err().contains("secret"));
        let mut k = kind("x");
        k.inputs = json!(true);
        assert!(check_kinds(&[k]).unwrap_err().contains("JSON object"));
        let mut k = kind("x");
        k.operations = vec![Operation::Read];
        assert!(check_kinds(&[k]).unwrap_err().contains("create"));
    }

    #[test]
    fn provider_names_are_checked() {
        assert!(check_provider_name("counter").is_ok());
        assert!(check_provider_name("").is_err());
        assert!(check_provider_name("a.b").is_err());
    }

    #[test]
    fn a_missing_executable_fails_the_report() {
        let report = check(Path::new("/nonexistent/ferry-provider"), &[], &CheckOptions::default());
        assert!(!report.passed());
        assert_eq!(report.checks[0].name, names::START);
        assert!(report.checks[0].detail.contains("cannot start"), "{report}");
    }

    #[cfg(unix)]
    #[test]
    fn an_echoing_program_is_not_a_provider() {
        let opts = CheckOptions {
            timeout: Duration::from_millis(300),
            exit_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        // `cat` echoes requests back: they are not messages a provider may send.
        let report = check(Path::new("cat"), &[], &opts);
        assert!(!report.passed());
        let hs = report.get(names::HANDSHAKE).expect("handshake check");
        assert!(!hs.passed && hs.detail.contains("not a protocol message"), "{report}");
    }
}
