//! The blocking client the checks use: one provider process, a reader thread feeding a channel,
//! a timeout on every wait, the process killed on drop. It files everything odd the provider
//! writes so the checks can report it.

use crate::messages::*;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the provider's stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StderrMode {
    /// Into a buffer, readable with [`ProviderProcess::stderr_text`].
    #[default]
    Capture,
    /// To this process's stderr.
    Inherit,
    /// Discarded.
    Null,
}

/// Why a call got no usable response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no response to {method} within {}s", .timeout.as_secs_f32())]
    Timeout { method: String, timeout: Duration },
    #[error("provider closed its stdout before answering {method}{}", exit_note(.status))]
    Exited { method: String, status: Option<ExitStatus> },
    #[error("provider wrote a line that is not a protocol message ({error}): {line}")]
    Garbage { line: String, error: String },
    #[error("cannot talk to the provider: {0}")]
    Io(#[from] std::io::Error),
}

fn exit_note(status: &Option<ExitStatus>) -> String {
    status.map(|s| format!(" ({s})")).unwrap_or_default()
}

/// A response and the events that came before it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub id: u64,
    pub outcome: Outcome,
    pub events: Vec<Event>,
}

/// One line the provider wrote, as the reader thread saw it.
enum Line {
    Text(String),
    NotUtf8(Vec<u8>),
}

/// A running provider program with a blocking request/response client on its stdio.
pub struct ProviderProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Line>,
    stdout_closed: bool,
    stderr: Option<Arc<Mutex<Vec<u8>>>>,
    next_id: u64,
    /// Requests sent and not yet answered, with their method.
    in_flight: HashMap<u64, String>,
    answered: HashSet<u64>,
    /// Raw lines sent; each may be answered once with id 0.
    raw_sent: usize,
    /// Responses that arrived for another id than the one being waited for.
    early: HashMap<u64, Reply>,
    /// Events that arrived for a request other than the one being waited for.
    early_events: HashMap<u64, Vec<Event>>,
    events_seen: usize,
    violations: Vec<String>,
}

impl ProviderProcess {
    /// Start `executable args...` with piped stdin/stdout.
    pub fn spawn(executable: &Path, args: &[String], stderr: StderrMode) -> std::io::Result<Self> {
        let mut cmd = Command::new(executable);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped());
        cmd.stderr(match stderr {
            StderrMode::Capture => Stdio::piped(),
            StderrMode::Inherit => Stdio::inherit(),
            StderrMode::Null => Stdio::null(),
        });
        let mut child = spawn_retrying(&mut cmd)?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if buf.last() == Some(&b'\n') {
                            buf.pop();
                        }
                        let line = match String::from_utf8(std::mem::take(&mut buf)) {
                            Ok(s) => Line::Text(s),
                            Err(e) => Line::NotUtf8(e.into_bytes()),
                        };
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let stderr = child.stderr.take().map(|mut pipe| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&buf);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&chunk[..n]);
                }
            });
            buf
        });
        Ok(ProviderProcess {
            stdin: child.stdin.take(),
            child,
            lines,
            stdout_closed: false,
            stderr,
            next_id: 1,
            in_flight: HashMap::new(),
            answered: HashSet::new(),
            raw_sent: 0,
            early: HashMap::new(),
            early_events: HashMap::new(),
            events_seen: 0,
            violations: Vec::new(),
        })
    }

    /// An id not used before in this process.
    pub fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Send a request without waiting for its response.
    pub fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        let line = serde_json::to_string(request).expect("requests always serialize");
        self.write_line(&line)?;
        self.in_flight.insert(request.id, request.call.method().to_string());
        self.next_id = self.next_id.max(request.id.saturating_add(1));
        Ok(())
    }

    /// Send one arbitrary line (for probing malformed input). A response to it is accepted
    /// with id 0 or with `expect_id`.
    pub fn send_raw(&mut self, line: &str, expect_id: Option<u64>) -> Result<(), ClientError> {
        self.write_line(line)?;
        self.raw_sent += 1;
        if let Some(id) = expect_id {
            self.in_flight.insert(id, "(malformed request)".into());
        }
        Ok(())
    }

    fn write_line(&mut self, line: &str) -> Result<(), ClientError> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stdin already closed"))?;
        stdin.write_all(line.as_bytes())?;
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Send `call` with a fresh id and wait for its response.
    pub fn call(&mut self, call: Call, timeout: Duration) -> Result<Reply, ClientError> {
        let id = self.fresh_id();
        self.send(&Request { id, call })?;
        self.wait(id, timeout)
    }

    /// Wait for the response to request `id`; responses to other ids that arrive meanwhile are
    /// kept for their own `wait`. A garbage line ends the wait with [`ClientError::Garbage`].
    pub fn wait(&mut self, id: u64, timeout: Duration) -> Result<Reply, ClientError> {
        let method = self.in_flight.get(&id).cloned().unwrap_or_else(|| "request".into());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(reply) = self.early.remove(&id) {
                return Ok(reply);
            }
            match self.next_message(deadline)? {
                None => return Err(self.stopped(method, timeout)),
                Some(_) => continue,
            }
        }
    }

    /// Wait for any response, e.g. to a raw line whose id the provider could not read.
    pub fn wait_any(&mut self, timeout: Duration) -> Result<Reply, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(id) = self.early.keys().next().copied() {
                return Ok(self.early.remove(&id).expect("key just seen"));
            }
            if self.next_message(deadline)?.is_none() {
                return Err(self.stopped("request".into(), timeout));
            }
        }
    }

    fn stopped(&mut self, method: String, timeout: Duration) -> ClientError {
        if self.stdout_closed {
            let status = self.child.try_wait().ok().flatten();
            ClientError::Exited { method, status }
        } else {
            ClientError::Timeout { method, timeout }
        }
    }

    /// Read one line and file it. `Ok(None)`: deadline passed or stdout closed.
    fn next_message(&mut self, deadline: Instant) -> Result<Option<()>, ClientError> {
        if self.stdout_closed {
            return Ok(None);
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        let line = match self.lines.recv_timeout(wait) {
            Ok(Line::Text(s)) => s,
            Ok(Line::NotUtf8(bytes)) => {
                let line = String::from_utf8_lossy(&bytes).into_owned();
                return Err(self.garbage(line, "not UTF-8".into()));
            }
            Err(RecvTimeoutError::Timeout) => return Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                self.stdout_closed = true;
                // Give the process a moment to be reaped so the exit status can be reported.
                let _ = self.wait_exit(Duration::from_millis(200));
                return Ok(None);
            }
        };
        if line.trim().is_empty() {
            return Ok(Some(()));
        }
        let msg: Message = match serde_json::from_str(&line) {
            Ok(m) => m,
            Err(e) => return Err(self.garbage(line, e.to_string())),
        };
        match msg {
            Message::Event(ev) => {
                self.events_seen += 1;
                if !self.in_flight.contains_key(&ev.id) {
                    self.violations.push(format!("event about id {} which is not in flight: {line}", ev.id));
                }
                self.early_events.entry(ev.id).or_default().push(ev);
            }
            Message::Response(r) => {
                let known = self.in_flight.remove(&r.id).is_some();
                if !known {
                    if r.id == 0 && self.raw_sent > 0 {
                        self.raw_sent -= 1;
                    } else if self.answered.contains(&r.id) {
                        self.violations.push(format!("second response to id {}: {line}", r.id));
                    } else {
                        self.violations.push(format!("response to id {} which was never sent: {line}", r.id));
                    }
                }
                self.answered.insert(r.id);
                let events = self.early_events.remove(&r.id).unwrap_or_default();
                self.early.insert(r.id, Reply { id: r.id, outcome: r.outcome, events });
            }
        }
        Ok(Some(()))
    }

    fn garbage(&mut self, line: String, error: String) -> ClientError {
        let shown: String = if line.chars().count() > 200 {
            line.chars().take(200).chain("…".chars()).collect()
        } else {
            line
        };
        self.violations.push(format!("not a protocol message ({error}): {shown}"));
        ClientError::Garbage { line: shown, error }
    }

    /// Close the provider's stdin: the signal to finish and exit.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Read and file whatever the provider writes until it closes stdout or `timeout` passes,
    /// so that late garbage or stray responses are recorded as violations.
    pub fn drain(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(None) = self.next_message(deadline) {
                return;
            }
            if Instant::now() >= deadline {
                return;
            }
        }
    }

    /// How many events the provider has sent.
    pub fn events_seen(&self) -> usize {
        self.events_seen
    }

    /// Everything odd seen on stdout so far.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// The captured stderr ([`StderrMode::Capture`]), lossily decoded; empty otherwise.
    pub fn stderr_text(&self) -> String {
        self.stderr
            .as_ref()
            .map(|b| String::from_utf8_lossy(&b.lock().unwrap_or_else(|e| e.into_inner())).into_owned())
            .unwrap_or_default()
    }

    /// The provider's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ProviderProcess {
    fn drop(&mut self) {
        self.stdin = None;
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `Command::spawn`, retried briefly on ETXTBSY: a provider script written just before (by a
/// test, an installer) can still be open for writing in a child that another thread forked and
/// that has not reached `exec` yet.
pub fn spawn_retrying(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(26) && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => return r,
        }
    }
}
