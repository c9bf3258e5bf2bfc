//! Provider processes for one run: started on first use, one per provider command, restarted
//! if one breaks (so a crash fails the calls in flight, not every later resource).

use crate::events::{EngineEvent, EventSink};
use crate::provider_client::{CallError, ProviderClient, ProviderCommand};
use crate::redact::Redactor;
use ferry_eval::ProviderSpec;
use ferry_protocol::KindSchema;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Registry {
    builtins: BTreeMap<String, ProviderCommand>,
    clients: Mutex<BTreeMap<ProviderCommand, Arc<ProviderClient>>>,
    handshake_timeout: Duration,
    /// Run-wide options sent in every handshake.
    options: ferry_protocol::Object,
    sink: Arc<dyn EventSink>,
    /// Hides secrets in provider events (shared with the session's, which learns them).
    redactor: Redactor,
    pub calls: AtomicU64,
    /// Builds the providers reported (`builds` in their events), for `--timings`.
    pub builds: Arc<BuildCount>,
}

/// Builds reported by providers, summed over the run.
#[derive(Default)]
pub struct BuildCount {
    count: AtomicU64,
    micros: AtomicU64,
}

impl BuildCount {
    fn add(&self, b: ferry_protocol::Builds) {
        self.count.fetch_add(u64::from(b.count), Ordering::Relaxed);
        let micros = if b.seconds.is_finite() && b.seconds > 0.0 { (b.seconds * 1e6) as u64 } else { 0 };
        self.micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// (builds, seconds) so far.
    pub fn total(&self) -> (u64, f64) {
        (self.count.load(Ordering::Relaxed), self.micros.load(Ordering::Relaxed) as f64 / 1e6)
    }
}

impl Registry {
    pub fn new(
        builtins: &[(String, ProviderCommand)],
        handshake_timeout: Duration,
        options: ferry_protocol::Object,
        sink: Arc<dyn EventSink>,
        redactor: Redactor,
    ) -> Self {
        Registry {
            options,
            redactor,
            builtins: builtins.iter().cloned().collect(),
            clients: Mutex::new(BTreeMap::new()),
            handshake_timeout,
            sink,
            calls: AtomicU64::new(0),
            builds: Arc::default(),
        }
    }

    /// The command serving `kind` ("local.file"): the declared external provider, or the
    /// built-in provider named by the kind's prefix.
    pub fn command_for(&self, kind: &str, spec: Option<&ProviderSpec>) -> Result<ProviderCommand, String> {
        if let Some(p) = spec {
            return Ok(ProviderCommand {
                label: p.executable.clone(),
                program: PathBuf::from(&p.executable),
                args: p.args.clone(),
            });
        }
        let prefix = kind.split_once('.').map(|(p, _)| p).unwrap_or("");
        self.builtins.get(prefix).cloned().ok_or_else(|| {
            format!(
                "no built-in provider `{prefix}` for kind `{kind}` (built-in: {}); declare `provider = {{ executable = ...; }}` for an external one",
                self.builtins.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// The command recorded in state (`{"builtin":"local"}` or `{"executable":..,"args":[..]}`).
    pub fn command_from_record(&self, kind: &str, v: &Value) -> Result<ProviderCommand, String> {
        if let Some(exe) = v.get("executable").and_then(Value::as_str) {
            let args = v
                .get("args")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            let spec = ProviderSpec { executable: exe.to_string(), args, context: Default::default() };
            return self.command_for(kind, Some(&spec));
        }
        self.command_for(kind, None)
    }

    /// How a command is recorded in state.
    pub fn record_of(&self, cmd: &ProviderCommand) -> Value {
        match self.builtins.iter().find(|(_, c)| *c == cmd) {
            Some((name, _)) => json!({ "builtin": name }),
            None => json!({ "executable": cmd.program, "args": cmd.args }),
        }
    }

    /// The running client for `cmd`, started (or restarted after a failure) on demand.
    pub fn client(&self, cmd: &ProviderCommand) -> Result<Arc<ProviderClient>, CallError> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(cmd) {
            if !c.is_broken() {
                return Ok(Arc::clone(c));
            }
        }
        let sink = Arc::clone(&self.sink);
        let redactor = self.redactor.clone();
        let builds = Arc::clone(&self.builds);
        let events = Arc::new(move |resource: &str, ev: &ferry_protocol::Event| {
            if let Some(b) = ev.builds {
                builds.add(b);
            }
            let resource = resource.to_string();
            // Provider messages are free text (a command's stderr, say): hide known secrets.
            let ev = ferry_protocol::Event { message: redactor.text(&ev.message), ..ev.clone() };
            match ev.event {
                ferry_protocol::EventKind::Progress => sink.event(EngineEvent::Phase {
                    resource,
                    phase: ev.phase.clone().unwrap_or_else(|| "progress".into()),
                    message: ev.message.clone(),
                }),
                ferry_protocol::EventKind::Log | ferry_protocol::EventKind::Warning => {
                    sink.event(EngineEvent::Log {
                        resource,
                        level: if ev.event == ferry_protocol::EventKind::Log {
                            "info".into()
                        } else {
                            "warning".into()
                        },
                        message: ev.message.clone(),
                    })
                }
            }
        });
        let client =
            Arc::new(ProviderClient::start(cmd.clone(), self.handshake_timeout, &self.options, events)?);
        clients.insert(cmd.clone(), Arc::clone(&client));
        Ok(client)
    }

    /// The schema of `kind` as declared by its provider's handshake.
    pub fn schema(&self, kind: &str, cmd: &ProviderCommand) -> Result<KindSchema, String> {
        let client = self.client(cmd).map_err(|e| e.to_string())?;
        let (prefix, name) =
            kind.split_once('.').ok_or_else(|| format!("kind `{kind}` must look like PROVIDER.KIND"))?;
        if client.handshake.provider != prefix {
            return Err(format!(
                "kind `{kind}`: provider {} calls itself `{}`, so its kinds are `{}.*`",
                cmd.label, client.handshake.provider, client.handshake.provider
            ));
        }
        client.handshake.kinds.iter().find(|k| k.name == name).cloned().ok_or_else(|| {
            let known: Vec<String> =
                client.handshake.kinds.iter().map(|k| format!("{prefix}.{}", k.name)).collect();
            format!("unknown kind `{kind}`; provider {} offers: {}", cmd.label, known.join(", "))
        })
    }

    pub fn call(
        &self,
        cmd: &ProviderCommand,
        call: ferry_protocol::Call,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.client(cmd)?.call(call, timeout)
    }

    /// Many calls to one provider, pipelined (see [`ProviderClient::call_many`]).
    pub fn call_many(
        &self,
        cmd: &ProviderCommand,
        calls: Vec<ferry_protocol::Call>,
        timeout: Duration,
    ) -> Vec<Result<Value, CallError>> {
        self.calls.fetch_add(calls.len() as u64, Ordering::Relaxed);
        match self.client(cmd) {
            Ok(c) => c.call_many(calls, timeout),
            Err(e) => calls.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    /// Every started client (for `ferry providers`).
    pub fn started(&self) -> Vec<Arc<ProviderClient>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    pub fn shutdown(&self) {
        let clients: Vec<_> = std::mem::take(&mut *self.clients.lock().unwrap_or_else(|e| e.into_inner()))
            .into_values()
            .collect();
        for c in clients {
            c.shutdown(Duration::from_secs(5));
        }
    }
}
