//! A ready-made provider loop: implement [`Provider`], call [`serve`] from `main`.
//!
//! `serve` answers the handshake from [`Provider::info`], then handles each request on its own
//! thread (so a slow `create` does not hold up a `read`), writing each response as one line.
//! It protects the protocol channel: after `serve` starts, anything the provider or its children
//! print to fd 1 goes to stderr instead of corrupting the JSON stream.

use crate::messages::*;
use crate::PROTOCOL_VERSION;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};

/// Static description of a provider, returned in the handshake.
#[derive(Debug, Clone)]
pub struct ProviderInfo {
    pub name: String,
    pub version: String,
    pub kinds: Vec<KindSchema>,
}

/// Handle passed to every operation, for progress and log events about that request.
#[derive(Clone)]
pub struct CallContext {
    id: u64,
    out: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl CallContext {
    /// A context whose events are dropped: for running provider code in-process (e.g. the
    /// CLI's imperative verbs), where the caller reports results itself.
    pub fn detached() -> CallContext {
        CallContext { id: 0, out: Arc::new(Mutex::new(Box::new(std::io::sink()))) }
    }

    pub fn request_id(&self) -> u64 {
        self.id
    }

    pub fn progress(&self, phase: &str, message: impl Into<String>) {
        self.emit(EventKind::Progress, Some(phase), message.into());
    }

    pub fn log(&self, message: impl Into<String>) {
        self.emit(EventKind::Log, None, message.into());
    }

    pub fn warn(&self, message: impl Into<String>) {
        self.emit(EventKind::Warning, None, message.into());
    }

    /// A progress event (phase `build`) reporting `count` builds that took `seconds`, which
    /// ferry adds to the run's `--timings`.
    pub fn built(&self, count: u32, seconds: f64, message: impl Into<String>) {
        let ev = Message::Event(Event {
            id: self.id,
            event: EventKind::Progress,
            message: message.into(),
            phase: Some("build".into()),
            builds: Some(crate::Builds { count, seconds }),
        });
        write_line(&self.out, &ev);
    }

    fn emit(&self, event: EventKind, phase: Option<&str>, message: String) {
        let ev = Message::Event(Event {
            id: self.id,
            event,
            message,
            phase: phase.map(str::to_string),
            builds: None,
        });
        write_line(&self.out, &ev);
    }
}

/// A provider. Only `info` and `create` are required; the defaults answer `unsupported`
/// (and `plan` compares inputs: equal → noop, else update if `update` is declared, else replace).
pub trait Provider: Send + Sync + 'static {
    fn info(&self) -> ProviderInfo;

    /// The run-wide options from the handshake (`force`, `nixOptions`, …), before any other
    /// call. Default: ignored.
    fn configure(&self, _options: &Object) {}

    fn plan(&self, p: PlanParams, _cx: &CallContext) -> Result<PlanResult, ProviderError> {
        Ok(default_plan(&self.info(), &p))
    }

    fn create(&self, p: CreateParams, cx: &CallContext) -> Result<OutputsResult, ProviderError>;

    fn read(&self, p: ReadParams, _cx: &CallContext) -> Result<ReadResult, ProviderError> {
        Err(ProviderError::unsupported(format!("kind {} does not support read", p.kind)))
    }

    fn update(&self, p: UpdateParams, _cx: &CallContext) -> Result<OutputsResult, ProviderError> {
        Err(ProviderError::unsupported(format!("kind {} does not support update", p.kind)))
    }

    fn delete(&self, _p: DeleteParams, _cx: &CallContext) -> Result<(), ProviderError> {
        Ok(())
    }

    fn action(&self, p: ActionParams, _cx: &CallContext) -> Result<ActionResult, ProviderError> {
        Err(ProviderError::unsupported(format!("kind {} has no action {}", p.kind, p.action)))
    }
}

/// The plan every provider gets unless it overrides [`Provider::plan`]: per-input changes,
/// `update` when the kind declares the update operation, `replace` otherwise.
pub fn default_plan(info: &ProviderInfo, p: &PlanParams) -> PlanResult {
    let kind = info.kinds.iter().find(|k| k.name == p.kind);
    let sensitive: &[String] = kind.map(|k| k.sensitive_inputs.as_slice()).unwrap_or(&[]);
    let Some(prior) = &p.prior else {
        return PlanResult {
            action: PlanAction::Create,
            changes: vec![],
            reason: None,
            create_before_destroy: false,
        };
    };
    let changes = diff_inputs(&prior.inputs, &p.inputs, sensitive);
    if changes.is_empty() {
        return PlanResult { action: PlanAction::Noop, changes, reason: None, create_before_destroy: false };
    }
    let can_update = kind.is_some_and(|k| k.supports(Operation::Update));
    let action = if can_update { PlanAction::Update } else { PlanAction::Replace };
    let changes = changes.into_iter().map(|c| Change { forces_replace: !can_update, ..c }).collect();
    PlanResult { action, changes, reason: None, create_before_destroy: false }
}

/// Top-level input differences; values of `sensitive` inputs are left out.
pub fn diff_inputs(before: &Object, after: &Object, sensitive: &[String]) -> Vec<Change> {
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| {
            let hide = sensitive.iter().any(|s| s == k);
            let show = |v: Option<&Value>| {
                v.map(|v| if hide { Value::String("(sensitive)".into()) } else { v.clone() })
            };
            Change {
                path: k.clone(),
                before: show(before.get(k)),
                after: show(after.get(k)),
                forces_replace: false,
            }
        })
        .collect()
}

/// Run the provider loop on stdin/stdout until stdin closes. Returns when every in-flight
/// request has been answered.
pub fn serve<P: Provider>(provider: P) -> std::io::Result<()> {
    let (input, output) = protect_stdio()?;
    serve_on(provider, input, output)
}

/// [`serve`] over arbitrary streams (used by tests and by ferry's built-in providers).
pub fn serve_on<P: Provider>(
    provider: P,
    input: impl std::io::Read,
    output: impl Write + Send + 'static,
) -> std::io::Result<()> {
    let kinds: Arc<Vec<String>> = Arc::new(provider.info().kinds.into_iter().map(|k| k.name).collect());
    let provider = Arc::new(provider);
    let out: Arc<Mutex<Box<dyn Write + Send>>> = Arc::new(Mutex::new(Box::new(output)));
    // A pool that grows to the peak number of concurrent requests: a request is handed to an
    // idle worker, or to a new one when all are busy, so a slow `create` never holds up a
    // `read`, and thousands of quick calls do not each pay for a thread.
    let (jobs, queue) = std::sync::mpsc::channel::<Request>();
    let queue = Arc::new(Mutex::new(queue));
    let idle = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for line in BufReader::new(input).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let req: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                // Without a readable id we cannot answer a specific request; answer id 0 so the
                // peer sees the problem instead of waiting forever.
                let id = serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| v.get("id").and_then(Value::as_u64))
                    .unwrap_or(0);
                let err = ProviderError::new(format!("malformed request: {e}")).code("badRequest");
                write_line(&out, &Message::Response(Response { id, outcome: Outcome::Error(err) }));
                continue;
            }
        };
        use std::sync::atomic::Ordering;
        // Claim an idle worker if there is one; otherwise start another.
        let claimed = idle.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if !claimed {
            let (provider, out, kinds, queue, idle) = (
                Arc::clone(&provider),
                Arc::clone(&out),
                Arc::clone(&kinds),
                Arc::clone(&queue),
                Arc::clone(&idle),
            );
            workers.push(std::thread::spawn(move || loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok(req) = next else { return };
                handle(&*provider, &kinds, &out, req);
                idle.fetch_add(1, Ordering::SeqCst);
            }));
        }
        if jobs.send(req).is_err() {
            break;
        }
    }
    drop(jobs);
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

fn handle<P: Provider>(
    provider: &P,
    kinds: &[String],
    out: &Arc<Mutex<Box<dyn Write + Send>>>,
    req: Request,
) {
    let cx = CallContext { id: req.id, out: Arc::clone(out) };
    let resource = req.call.resource().map(str::to_string);
    let outcome = match check_kind(kinds, &req.call).and_then(|_| dispatch(provider, req.call, &cx)) {
        Ok(v) => Outcome::Result(v),
        Err(mut e) => {
            if e.resource.is_none() {
                e.resource = resource;
            }
            Outcome::Error(e)
        }
    };
    write_line(out, &Message::Response(Response { id: req.id, outcome }));
}

/// Requests about a kind the provider did not declare are answered with `badRequest`.
fn check_kind(kinds: &[String], call: &Call) -> Result<(), ProviderError> {
    let kind = match call {
        Call::Handshake(_) => return Ok(()),
        Call::Plan(p) => &p.kind,
        Call::Create(p) => &p.kind,
        Call::Read(p) => &p.kind,
        Call::Update(p) => &p.kind,
        Call::Delete(p) => &p.kind,
        Call::Action(p) => &p.kind,
    };
    if kinds.iter().any(|k| k == kind) {
        Ok(())
    } else {
        Err(ProviderError::new(format!("unknown kind `{kind}` (this provider has: {})", kinds.join(", ")))
            .code("badRequest"))
    }
}

fn dispatch<P: Provider>(p: &P, call: Call, cx: &CallContext) -> Result<Value, ProviderError> {
    fn to<T: serde::Serialize>(v: T) -> Result<Value, ProviderError> {
        serde_json::to_value(v).map_err(|e| ProviderError::new(e.to_string()).code("internal"))
    }
    match call {
        Call::Handshake(h) => {
            if !h.protocol_versions.contains(&PROTOCOL_VERSION) {
                return Err(ProviderError::new(format!(
                    "provider speaks protocol v{PROTOCOL_VERSION}, ferry offered {:?}",
                    h.protocol_versions
                ))
                .code("unsupportedVersion"));
            }
            p.configure(&h.options);
            let info = p.info();
            to(HandshakeResult {
                protocol_version: PROTOCOL_VERSION,
                provider: info.name,
                version: info.version,
                kinds: info.kinds,
            })
        }
        Call::Plan(x) => to(p.plan(x, cx)?),
        Call::Create(x) => to(p.create(x, cx)?),
        Call::Read(x) => to(p.read(x, cx)?),
        Call::Update(x) => to(p.update(x, cx)?),
        Call::Delete(x) => {
            p.delete(x, cx)?;
            Ok(Value::Object(Object::new()))
        }
        Call::Action(x) => to(p.action(x, cx)?),
    }
}

fn write_line(out: &Mutex<Box<dyn Write + Send>>, msg: &Message) {
    let mut line = serde_json::to_string(msg).expect("protocol messages always serialize");
    line.push('\n');
    // A poisoned lock only means another writer panicked mid-line; keep going.
    let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
    let _ = w.write_all(line.as_bytes());
    let _ = w.flush();
}

/// Move the protocol channel off fds 0/1 so that stray prints (from the provider or from
/// programs it runs) land on stderr: dup stdin/stdout to private close-on-exec fds, point fd 0
/// at /dev/null and fd 1 at fd 2.
#[cfg(unix)]
fn protect_stdio() -> std::io::Result<(std::fs::File, std::fs::File)> {
    use libc::{dup2, fcntl, F_DUPFD_CLOEXEC};
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::io::AsRawFd;
    // SAFETY: plain fd syscalls on fds this process owns; results are checked.
    unsafe {
        let input = fcntl(0, F_DUPFD_CLOEXEC, 3);
        let output = fcntl(1, F_DUPFD_CLOEXEC, 3);
        if input < 0 || output < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let null = std::fs::File::open("/dev/null")?;
        if dup2(null.as_raw_fd(), 0) < 0 || dup2(2, 1) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((
            std::fs::File::from(OwnedFd::from_raw_fd(input)),
            std::fs::File::from(OwnedFd::from_raw_fd(output)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Slow;
    impl Provider for Slow {
        fn info(&self) -> ProviderInfo {
            let kind = KindSchema {
                name: "k".into(),
                description: String::new(),
                inputs: json!({"type": "object"}),
                outputs: json!({"type": "object", "properties": {}}),
                sensitive_inputs: vec![],
                sensitive_outputs: vec![],
                output_names_input: None,
                operations: vec![Operation::Create],
                actions: vec![],
                builds_inputs: false,
                heavy_inputs: false,
            };
            ProviderInfo { name: "slow".into(), version: "0".into(), kinds: vec![kind] }
        }
        fn create(&self, _p: CreateParams, _cx: &CallContext) -> Result<OutputsResult, ProviderError> {
            std::thread::sleep(std::time::Duration::from_millis(300));
            Ok(OutputsResult { outputs: Object::new() })
        }
    }

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_slow_call_does_not_hold_up_others_and_ids_are_echoed() {
        let create = r#"{"id":1,"method":"create","params":{"kind":"k","resource":"a","inputs":{}}}"#;
        let plan =
            r#"{"id":2,"method":"plan","params":{"kind":"k","resource":"b","inputs":{},"prior":null}}"#;
        let bad =
            r#"{"id":3,"method":"plan","params":{"kind":"nope","resource":"c","inputs":{},"prior":null}}"#;
        let input = format!("{create}\n{plan}\n{bad}\n");
        let sink = Sink::default();
        serve_on(Slow, input.as_bytes(), sink.clone()).unwrap();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let ids: Vec<u64> = text
            .lines()
            .map(|l| match serde_json::from_str::<Message>(l).unwrap() {
                Message::Response(r) => r.id,
                Message::Event(e) => panic!("unexpected event {e:?}"),
            })
            .collect();
        assert_eq!(ids.len(), 3, "{text}");
        assert_eq!(*ids.last().unwrap(), 1, "the slow create answers last: {text}");
        assert!(text.contains("unknown kind `nope`"), "{text}");
    }
}
