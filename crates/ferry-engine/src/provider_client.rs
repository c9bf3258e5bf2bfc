//! A connection to one provider process: handshake, concurrent calls matched by id, per-call
//! timeouts, and clear errors when the provider crashes, hangs or writes garbage.

use ferry_protocol::{Call, HandshakeParams, HandshakeResult, Message, Outcome, Request, PROTOCOL_VERSION};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How to start a provider.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderCommand {
    /// Shown in messages: `local` for built-ins, the executable path otherwise.
    pub label: String,
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The provider answered with a structured error.
    #[error("{}", .0.message)]
    Provider(ferry_protocol::ProviderError),
    /// The provider process is unusable (crashed, garbage, timeout, could not start).
    #[error("{0}")]
    Broken(String),
}

impl CallError {
    pub fn retryable(&self) -> bool {
        matches!(self, CallError::Provider(e) if e.retryable)
    }
}

/// Progress/log lines a provider sends about a request.
pub type EventSink = Arc<dyn Fn(&str /*resource*/, &ferry_protocol::Event) + Send + Sync>;

/// A caller waiting for a response: the resource it is about, and where to send the answer.
type Waiter = (Option<String>, Sender<Result<Value, CallError>>);

struct Shared {
    waiting: HashMap<u64, Waiter>,
    broken: Option<String>,
    stderr_tail: VecDeque<String>,
}

pub struct ProviderClient {
    pub command: ProviderCommand,
    pub handshake: HandshakeResult,
    stdin: Mutex<Option<ChildStdin>>,
    child: Arc<Mutex<Child>>,
    shared: Arc<Mutex<Shared>>,
    next_id: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ProviderClient {
    /// Start the provider and perform the handshake.
    pub fn start(
        command: ProviderCommand,
        timeout: Duration,
        options: &ferry_protocol::Object,
        events: EventSink,
    ) -> Result<Self, CallError> {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(&command.program);
        cmd.args(&command.args)
            // Own process group: Ctrl-C at the terminal must not kill a provider mid-call.
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = ferry_protocol::conformance::spawn_retrying(&mut cmd).map_err(|e| {
            CallError::Broken(format!(
                "cannot start provider {}: {e}{}",
                command.label,
                if e.kind() == std::io::ErrorKind::NotFound {
                    " (executable not found: check `provider.executable`)"
                } else {
                    ""
                }
            ))
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| CallError::Broken("no stdout".into()))?;
        let stderr = child.stderr.take().ok_or_else(|| CallError::Broken("no stderr".into()))?;
        let shared = Arc::new(Mutex::new(Shared {
            waiting: HashMap::new(),
            broken: None,
            stderr_tail: VecDeque::new(),
        }));
        {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut s = lock(&shared);
                    if s.stderr_tail.len() >= 20 {
                        s.stderr_tail.pop_front();
                    }
                    s.stderr_tail.push_back(line);
                }
            });
        }
        let pgid = child.id() as i32;
        {
            let shared = Arc::clone(&shared);
            let label = command.label.clone();
            std::thread::spawn(move || read_loop(label, stdout, shared, events, pgid));
        }
        let child = Arc::new(Mutex::new(child));
        {
            let shared = Arc::clone(&shared);
            let child = Arc::clone(&child);
            let label = command.label.clone();
            std::thread::spawn(move || watch_exit(label, child, shared, pgid));
        }
        let mut client = ProviderClient {
            command,
            handshake: HandshakeResult {
                protocol_version: 0,
                provider: String::new(),
                version: String::new(),
                kinds: vec![],
            },
            stdin: Mutex::new(stdin),
            child,
            shared,
            next_id: Mutex::new(0),
        };
        let hs = client.call(
            Call::Handshake(HandshakeParams {
                protocol_versions: vec![PROTOCOL_VERSION],
                ferry_version: env!("CARGO_PKG_VERSION").to_string(),
                options: options.clone(),
            }),
            timeout,
        )?;
        client.handshake = serde_json::from_value(hs).map_err(|e| {
            CallError::Broken(format!("provider {} sent an invalid handshake: {e}", client.command.label))
        })?;
        if client.handshake.protocol_version != PROTOCOL_VERSION {
            return Err(CallError::Broken(format!(
                "provider {} speaks protocol v{}, ferry speaks v{PROTOCOL_VERSION}",
                client.command.label, client.handshake.protocol_version
            )));
        }
        Ok(client)
    }

    pub fn is_broken(&self) -> bool {
        lock(&self.shared).broken.is_some()
    }

    /// Send one request and wait for its response (other calls may run meanwhile).
    pub fn call(&self, call: Call, timeout: Duration) -> Result<Value, CallError> {
        self.call_many(vec![call], timeout)
            .pop()
            .unwrap_or_else(|| Err(CallError::Broken("internal: no answer slot".into())))
    }

    /// Send many requests at once (pipelined) and wait for all answers, in the given order.
    /// Each call gets `timeout` from the moment the batch was sent.
    pub fn call_many(&self, calls: Vec<Call>, timeout: Duration) -> Vec<Result<Value, CallError>> {
        let mut pending = Vec::with_capacity(calls.len());
        let mut lines = String::new();
        {
            let mut s = lock(&self.shared);
            if let Some(b) = &s.broken {
                return calls.iter().map(|_| Err(CallError::Broken(b.clone()))).collect();
            }
            let mut n = lock(&self.next_id);
            for call in calls {
                *n += 1;
                let id = *n;
                let (tx, rx) = channel();
                let what = (call.method(), call.resource().map(str::to_string));
                s.waiting.insert(id, (what.1.clone(), tx));
                match serde_json::to_string(&Request { id, call }) {
                    Ok(line) => {
                        lines.push_str(&line);
                        lines.push('\n');
                    }
                    Err(e) => {
                        s.waiting.remove(&id);
                        let (tx, rx2) = channel();
                        let _ = tx.send(Err(CallError::Broken(format!("cannot encode request: {e}"))));
                        pending.push((rx2, what));
                        continue;
                    }
                }
                pending.push((rx, what));
            }
        }
        let write = {
            let mut stdin = lock(&self.stdin);
            match stdin.as_mut() {
                Some(w) => w.write_all(lines.as_bytes()).and_then(|_| w.flush()),
                None => Err(std::io::Error::other("stdin closed")),
            }
        };
        if let Err(e) = write {
            let msg = self
                .describe_exit(&format!("provider {} is not accepting requests ({e})", self.command.label));
            self.mark_broken(msg);
        }
        let deadline = std::time::Instant::now() + timeout;
        pending
            .into_iter()
            .map(|(rx, (method, resource))| {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(left) {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => {
                        let about = resource.map(|r| format!(" for resource `{r}`")).unwrap_or_default();
                        let msg = format!(
                            "provider {} did not answer `{method}`{about} within {}s; it was stopped",
                            self.command.label,
                            timeout.as_secs_f64()
                        );
                        self.mark_broken(msg.clone());
                        self.kill();
                        Err(CallError::Broken(msg))
                    }
                    Err(RecvTimeoutError::Disconnected) => Err(CallError::Broken(
                        self.describe_exit(&format!("provider {} went away", self.command.label)),
                    )),
                }
            })
            .collect()
    }

    fn mark_broken(&self, msg: String) {
        let waiting: Vec<_> = {
            let mut s = lock(&self.shared);
            s.broken.get_or_insert(msg.clone());
            s.waiting.drain().collect()
        };
        for (_, (_, tx)) in waiting {
            let _ = tx.send(Err(CallError::Broken(msg.clone())));
        }
    }

    fn describe_exit(&self, base: &str) -> String {
        let status = lock(&self.child).try_wait().ok().flatten();
        let tail: Vec<String> = lock(&self.shared).stderr_tail.iter().cloned().collect();
        let mut msg = base.to_string();
        if let Some(st) = status {
            msg.push_str(&format!(" (exited: {st})"));
        }
        if !tail.is_empty() {
            msg.push_str(&format!("; its last stderr lines:\n  {}", tail.join("\n  ")));
        }
        msg
    }

    /// Kills the provider and everything it started (its process group: a child left holding
    /// the provider's stdout must not outlive it).
    pub fn kill(&self) {
        let mut c = lock(&self.child);
        kill_group(c.id() as i32);
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Close stdin and give the provider a moment to exit by itself.
    pub fn shutdown(&self, grace: Duration) {
        lock(&self.stdin).take();
        // A provider that broke the protocol (garbage, timeout) is not trusted to wind down:
        // waiting out the grace period only delayed ferry's exit by seconds.
        if self.is_broken() {
            self.kill();
            return;
        }
        let deadline = std::time::Instant::now() + grace;
        loop {
            if let Ok(Some(_)) = lock(&self.child).try_wait() {
                return;
            }
            if std::time::Instant::now() >= deadline {
                self.kill();
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ProviderClient {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(2));
    }
}

/// SIGKILL to the provider's process group (it is started as the leader of its own group).
fn kill_group(pgid: i32) {
    if pgid > 1 {
        // SAFETY: killpg has no memory-safety preconditions; a stale group id fails with ESRCH.
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
    }
}

/// Notices the provider's exit at once, even when a process it started still holds its stdout
/// open (then the reader sees no end of file): gives the reader a moment to take the answers
/// written before the exit and, if calls are still in flight, kills the rest of the process
/// group and fails those calls naming the provider.
fn watch_exit(label: String, child: Arc<Mutex<Child>>, shared: Arc<Mutex<Shared>>, pgid: i32) {
    let status = loop {
        match lock(&child).try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(_) => return,
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(100));
    let waiting: Vec<_> = {
        let mut s = lock(&shared);
        if s.waiting.is_empty() {
            // Nothing in flight (e.g. it exited after ferry closed its stdin): what it left
            // running in its group is not ferry's to kill.
            return;
        }
        kill_group(pgid);
        let tail: Vec<String> = s.stderr_tail.iter().cloned().collect();
        let mut msg = format!("provider {label} exited ({status})");
        if !tail.is_empty() {
            msg.push_str(&format!("; its last stderr lines:\n  {}", tail.join("\n  ")));
        }
        let b = s.broken.get_or_insert(msg).clone();
        s.waiting.drain().map(|(_, w)| (w, b.clone())).collect()
    };
    for ((_, tx), b) in waiting {
        let _ = tx.send(Err(CallError::Broken(b)));
    }
}

fn read_loop(
    label: String,
    stdout: std::process::ChildStdout,
    shared: Arc<Mutex<Shared>>,
    events: EventSink,
    pgid: i32,
) {
    let mut reader = BufReader::new(stdout);
    let mut buf = String::new();
    let fail = |msg: String| {
        let waiting: Vec<_> = {
            let mut s = lock(&shared);
            // Give the stderr reader a moment to collect the provider's last words.
            drop(s);
            std::thread::sleep(Duration::from_millis(50));
            s = lock(&shared);
            let tail: Vec<String> = s.stderr_tail.iter().cloned().collect();
            let mut full = msg.clone();
            if !tail.is_empty() {
                full.push_str(&format!("; its last stderr lines:\n  {}", tail.join("\n  ")));
            }
            s.broken.get_or_insert(full);
            let b = s.broken.clone().unwrap_or_default();
            s.waiting.drain().map(|(_, w)| (w, b.clone())).collect()
        };
        for ((_, tx), b) in waiting {
            let _ = tx.send(Err(CallError::Broken(b)));
        }
    };
    loop {
        buf.clear();
        match reader.read_line(&mut buf) {
            Ok(0) => {
                fail(format!("provider {label} exited unexpectedly (closed its output)"));
                return;
            }
            Ok(_) => {}
            Err(e) => {
                fail(format!("provider {label}: cannot read its output: {e}"));
                return;
            }
        }
        let line = buf.trim_end();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Message>(line) {
            Ok(Message::Response(r)) => {
                let waiter = lock(&shared).waiting.remove(&r.id);
                if let Some((resource, tx)) = waiter {
                    let res = match r.outcome {
                        Outcome::Result(v) => Ok(v),
                        Outcome::Error(mut e) => {
                            if e.resource.is_none() {
                                e.resource = resource;
                            }
                            Err(CallError::Provider(e))
                        }
                    };
                    let _ = tx.send(res);
                } else {
                    // An answer to nothing ferry asked (or asked and already had answered):
                    // the provider lost track; nothing it says can be matched any more.
                    kill_group(pgid);
                    fail(format!(
                        "provider {label} answered request id {}, which ferry never sent or had already answered; it was stopped",
                        r.id
                    ));
                    return;
                }
            }
            Ok(Message::Event(ev)) => {
                let resource = lock(&shared).waiting.get(&ev.id).and_then(|(r, _)| r.clone());
                if let Some(r) = resource {
                    events(&r, &ev);
                }
            }
            Err(_) => {
                let shown: String = line.chars().take(200).collect();
                kill_group(pgid);
                fail(format!("provider {label} wrote something that is not a protocol message: {shown:?}"));
                return;
            }
        }
    }
}
