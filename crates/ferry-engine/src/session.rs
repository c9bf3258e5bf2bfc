//! One run's context: state, lock, providers, declarations, and the evaluation rounds.

use crate::graph::Edge;
use crate::planner::{compile_schema, Kind};
use crate::provider_client::ProviderCommand;
use crate::redact::Redactor;
use crate::registry::Registry;
use crate::*;
use ferry_eval::{Declaration, KindOutputs, NixErrorKind, Recorded, ResourceEval, RoundRequest, RoundResult};
use ferry_state::{ResourceRecord, StateStore, Status};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

pub(crate) struct Session<'e> {
    pub engine: &'e Engine,
    pub state: Option<StateStore>,
    pub _lock: Option<ferry_state::RunLock>,
    pub registry: Arc<Registry>,
    pub records: BTreeMap<String, ResourceRecord>,
    pub decls: BTreeMap<String, Declaration>,
    /// Resolved kind per declared resource, or why it could not be resolved.
    pub kinds: BTreeMap<String, Result<Kind, ResourceError>>,
    /// Output names per kind string, for placeholders.
    pub schemas: BTreeMap<String, KindOutputs>,
    pub evals: BTreeMap<String, ResourceEval>,
    /// Visible dependencies per resource (name -> names it reads outputs of).
    pub deps: BTreeMap<String, BTreeSet<String>>,
    pub edges: BTreeSet<Edge>,
    pub redactor: Redactor,
    pub settled: BTreeMap<String, Map<String, Value>>,
    pub unstable: BTreeSet<String>,
    pub rounds: u32,
    /// The deployment file's top-level `name`, once the first round ran.
    pub deployment_name: Option<String>,
    pub write_drvs: bool,
    pub started: Instant,
}

pub(crate) enum Access {
    /// Read-only: no lock, a missing state file is an empty state.
    Read,
    /// Exclusive: create the state if needed and hold the run lock.
    Write,
}

impl<'e> Session<'e> {
    pub fn open(engine: &'e Engine, access: Access) -> Result<Self, EngineError> {
        let cfg = &engine.cfg;
        let (state, lock) = match access {
            Access::Read => match ferry_state::StateStore::open_existing(&cfg.state_path) {
                Ok(s) => (Some(s), None),
                Err(ferry_state::StateError::Missing { .. }) => (None, None),
                Err(e) => return Err(e.into()),
            },
            Access::Write => {
                let s = StateStore::open(&cfg.state_path)?;
                let l = s.lock(&cfg.command, cfg.lock_timeout)?;
                (Some(s), Some(l))
            }
        };
        let records = match &state {
            Some(s) => s.resources()?.into_iter().map(|r| (r.name.clone(), r)).collect(),
            None => BTreeMap::new(),
        };
        let mut redactor = Redactor::default();
        for r in records.values() {
            redactor.learn(&r.outputs, &r.sensitive_outputs);
            if let Some(d) = &r.deposed {
                redactor.learn(&d.outputs, &r.sensitive_outputs);
            }
        }
        let registry = Arc::new(Registry::new(
            &cfg.builtin_providers,
            cfg.call_timeout.min(std::time::Duration::from_secs(60)),
            cfg.provider_options.clone(),
            Arc::clone(&engine.sink),
            redactor.clone(),
        ));
        let mut s = Session {
            engine,
            state,
            _lock: lock,
            registry,
            records,
            decls: BTreeMap::new(),
            kinds: BTreeMap::new(),
            schemas: BTreeMap::new(),
            evals: BTreeMap::new(),
            deps: BTreeMap::new(),
            edges: BTreeSet::new(),
            redactor,
            settled: BTreeMap::new(),
            unstable: BTreeSet::new(),
            rounds: 0,
            deployment_name: None,
            write_drvs: matches!(access, Access::Write),
            started: Instant::now(),
        };
        // Built-in kinds are known before the first round, for exact placeholders.
        for (name, cmd) in &cfg.builtin_providers {
            if let Ok(client) = s.registry.client(cmd) {
                for k in &client.handshake.kinds {
                    s.schemas.insert(format!("{name}.{}", k.name), outputs_of(k));
                }
            }
        }
        Ok(s)
    }

    pub fn state(&self) -> Option<&StateStore> {
        self.state.as_ref()
    }

    /// Run one evaluation round over `pending` (None: all declared resources).
    pub fn round(
        &mut self,
        pending: Option<Vec<String>>,
        optimistic: bool,
    ) -> Result<RoundResult, EngineError> {
        self.rounds += 1;
        let n = pending.as_ref().map(Vec::len);
        self.engine.sink.event(EngineEvent::EvalStarted { round: self.rounds, pending: n });
        let start = Instant::now();
        let recorded = if optimistic {
            self.records
                .values()
                .filter(|r| {
                    r.status == Status::Ready
                        && r.last_applied_at.is_some()
                        && !self.settled.contains_key(&r.name)
                })
                .map(|r| {
                    let rec = Recorded {
                        inputs: r.inputs.clone(),
                        outputs: r.outputs.clone(),
                        no_dependencies: r.dependencies.is_empty(),
                    };
                    (r.name.clone(), rec)
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        let req = RoundRequest {
            file: self.engine.cfg.file.clone(),
            known: self.settled.clone(),
            recorded,
            unstable: self.unstable.iter().cloned().collect(),
            sensitive: self.sensitive_outputs(),
            pending,
            schemas: self.schemas.clone(),
            want_declarations: self.decls.is_empty(),
            want_previews: true,
            want_edges: true,
            write_drvs: self.write_drvs,
        };
        let res = round_with_fallback(&*self.engine.eval, req).map_err(|e| self.eval_error(e))?;
        if !res.failures.is_empty() {
            let all: Vec<&str> = res.failures.values().map(String::as_str).collect();
            return Err(EngineError::Deployment(self.redactor.text(&all.join("\n\n"))));
        }
        let ready = res.results.values().filter(|r| r.inputs.is_some()).count();
        self.engine.sink.event(EngineEvent::EvalFinished {
            round: self.rounds,
            ready,
            seconds: start.elapsed().as_secs_f64(),
        });
        for (name, r) in &res.results {
            if let Some(edges) = crate::graph::edges_of(name, r) {
                self.deps.insert(name.clone(), edges.iter().map(|e| e.from.clone()).collect());
                self.edges.extend(edges);
            } else if !self.deps.contains_key(name) {
                if let Some(rec) = self.records.get(name) {
                    self.deps.insert(name.clone(), rec.dependencies.iter().cloned().collect());
                }
            }
            self.evals.insert(name.clone(), r.clone());
        }
        Ok(res)
    }

    /// Sensitive output names per resource, recorded or declared by its kind.
    pub fn sensitive_outputs(&self) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in self.records.values().filter(|r| !r.sensitive_outputs.is_empty()) {
            m.insert(r.name.clone(), r.sensitive_outputs.clone());
        }
        for (name, k) in &self.kinds {
            if let Ok(k) = k {
                if !k.schema.sensitive_outputs.is_empty() {
                    m.insert(name.clone(), k.schema.sensitive_outputs.clone());
                }
            }
        }
        m
    }

    fn eval_error(&self, e: ferry_eval::EvalError) -> EngineError {
        let kind = e.nix_kind();
        match e {
            ferry_eval::EvalError::Nix { message, user: true } => {
                EngineError::Deployment(self.redactor.text(&message))
            }
            ferry_eval::EvalError::Nix { message, user: false } => {
                let kind = kind.unwrap_or(NixErrorKind::Other);
                let file = self.engine.cfg.file.display();
                let mut msg = format!("evaluating {file}:\n{message}");
                if let Some(h) = self.hint(&kind) {
                    msg.push_str(&format!("\nhint: {h}"));
                }
                EngineError::Nix { message: self.redactor.text(&msg), kind }
            }
            other => EngineError::Eval(other),
        }
    }

    /// Explain common Nix errors in ferry's terms.
    fn hint(&self, kind: &NixErrorKind) -> Option<String> {
        let NixErrorKind::MissingAttribute { name: attr, paths } = kind else { return None };
        // Nix quotes the source line: look for `resources.X.ATTR` (an undeclared output of X)
        // or `resources.ATTR` (an undeclared resource).
        let suffix = format!(".{attr}");
        for path in paths {
            // `resources.ATTR` or `resources.ATTR.OUTPUT`: the resource itself is missing.
            // (Comparing the whole path only caught the bare form, so the usual
            // `resources.nothere.path` got no hint.)
            if path == attr || path.split('.').next() == Some(attr.as_str()) {
                return Some(format!("no resource named `{attr}` is declared"));
            }
            if let Some(res) = path.strip_suffix(&suffix) {
                let outputs = self
                    .kinds
                    .get(res)
                    .and_then(|k| k.as_ref().ok())
                    .map(|k| format!("; its outputs are: {}", k.schema.output_names().join(", ")))
                    .unwrap_or_default();
                return Some(format!("resource `{res}` has no output `{attr}`{outputs}"));
            }
        }
        None
    }

    /// First round: declarations, kinds, providers. Re-runs once if external providers
    /// brought schemas the round did not have.
    pub fn first_round(&mut self, optimistic: bool) -> Result<(), EngineError> {
        // With a selection (`--on`), the first pass reads only the declarations (cheap: no
        // inputs are evaluated); then only the selected resources and what they need are.
        let narrow = self.engine.cfg.selection.is_some();
        let res = self.round(if narrow { Some(vec![]) } else { None }, optimistic)?;
        let decls = res.declarations.unwrap_or_default();
        self.deployment_name = res.deployment_name;
        self.validate_declarations(&decls)?;
        self.decls = decls;
        let before = self.schemas.len();
        self.resolve_kinds();
        if narrow {
            return self.narrow_rounds(optimistic);
        }
        let waiting = self.evals.values().any(|e| e.inputs.is_none());
        if self.schemas.len() != before && waiting {
            self.round(None, optimistic)?;
        }
        Ok(())
    }

    /// Evaluates the selection and, round by round, the declared resources its edges (or the
    /// dependencies recorded in state) reach, until nothing new is reached.
    fn narrow_rounds(&mut self, optimistic: bool) -> Result<(), EngineError> {
        for (name, rec) in &self.records {
            self.deps.entry(name.clone()).or_insert_with(|| rec.dependencies.iter().cloned().collect());
        }
        let mut done: BTreeSet<String> = BTreeSet::new();
        loop {
            let todo: Vec<String> = self
                .selected()
                .unwrap_or_default()
                .into_iter()
                .filter(|n| self.decls.contains_key(n) && !done.contains(n))
                .collect();
            if todo.is_empty() {
                return Ok(());
            }
            done.extend(todo.iter().cloned());
            self.round(Some(todo), optimistic)?;
        }
    }

    fn validate_declarations(&self, decls: &BTreeMap<String, Declaration>) -> Result<(), EngineError> {
        for (name, d) in decls {
            if d.files.len() > 1 {
                return Err(EngineError::Deployment(format!(
                    "resource `{name}` is declared more than once: in {}",
                    d.files.join(" and in ")
                )));
            }
            if !valid_name(name) {
                return Err(EngineError::Deployment(format!(
                    "resource name `{name}` ({}) is not valid: use letters, digits, `_`, `-` and `.`, starting with a letter, digit or `_`",
                    d.file
                )));
            }
            if let Some(a) = d.unknown_attrs.first() {
                return Err(EngineError::Deployment(format!(
                    "resource `{name}` ({}): unknown attribute `{a}` (allowed: type, inputs, provider, tags, timeout, protect)",
                    d.file
                )));
            }
            if d.kind.split_once('.').is_none_or(|(p, k)| p.is_empty() || k.is_empty()) {
                return Err(EngineError::Deployment(format!(
                    "resource `{name}` ({}): type `{}` must look like PROVIDER.KIND, e.g. \"local.file\"",
                    d.file, d.kind
                )));
            }
        }
        Ok(())
    }

    /// Resolve each declared resource's kind to a provider and schema (per-resource errors).
    pub fn resolve_kinds(&mut self) {
        // Resolve each distinct (kind, provider) once: deployments have many resources of few kinds.
        type Resolved =
            Result<(ProviderCommand, Arc<ferry_protocol::KindSchema>, Arc<jsonschema::JSONSchema>), String>;
        type Key = (String, Option<(String, Vec<String>)>);
        let mut cache: BTreeMap<Key, Resolved> = BTreeMap::new();
        let decls = std::mem::take(&mut self.decls);
        for (name, d) in &decls {
            let key = (d.kind.clone(), d.provider.as_ref().map(|p| (p.executable.clone(), p.args.clone())));
            let resolved = cache
                .entry(key)
                .or_insert_with(|| {
                    if let Some(p) = &d.provider {
                        if !p.context.is_empty() {
                            self.engine
                                .eval
                                .realise(&p.context)
                                .map_err(|e| format!("building provider {}: {e}", p.executable))?;
                        }
                    }
                    let command = self.registry.command_for(&d.kind, d.provider.as_ref())?;
                    let schema = self.registry.schema(&d.kind, &command)?;
                    let validator = compile_schema(&d.kind, &schema)?;
                    Ok((command, Arc::new(schema), validator))
                })
                .clone();
            let r = resolved
                .map(|(command, schema, validator)| {
                    let timeout = d
                        .timeout
                        .map(std::time::Duration::from_secs_f64)
                        .unwrap_or(self.engine.cfg.call_timeout);
                    Kind { kind: d.kind.clone(), schema, command, timeout, validator }
                })
                .map_err(|e| ResourceError::Kind(format!("resource `{name}` ({}): {}", d.file, e)));
            if let Ok(k) = &r {
                if !self.schemas.contains_key(&d.kind) {
                    self.schemas.insert(d.kind.clone(), outputs_of(&k.schema));
                }
            }
            self.kinds.insert(name.clone(), r);
        }
        self.decls = decls;
    }

    /// Resolve the kind of a recorded resource (for deletes of orphans, destroy, refresh).
    pub fn kind_of_record(&self, rec: &ResourceRecord) -> Result<Kind, ResourceError> {
        if let Some(Ok(k)) = self.kinds.get(&rec.name) {
            if k.kind == rec.kind {
                return Ok(k.clone());
            }
        }
        let command =
            self.registry.command_from_record(&rec.kind, &rec.provider).map_err(ResourceError::Kind)?;
        let schema = Arc::new(self.registry.schema(&rec.kind, &command).map_err(ResourceError::Kind)?);
        let validator = compile_schema(&rec.kind, &schema).map_err(ResourceError::Kind)?;
        Ok(Kind { kind: rec.kind.clone(), schema, command, timeout: self.engine.cfg.call_timeout, validator })
    }

    /// Names selected by `--on`, plus everything they depend on.
    pub fn selected(&self) -> Option<BTreeSet<String>> {
        let sel = self.engine.cfg.selection.as_ref()?;
        let mut out: BTreeSet<String> = BTreeSet::new();
        for (name, d) in &self.decls {
            if sel.matches(name, &d.tags) {
                out.insert(name.clone());
            }
        }
        for (name, r) in &self.records {
            if !self.decls.contains_key(name) && sel.matches(name, &r.tags) {
                out.insert(name.clone());
            }
        }
        let mut stack: Vec<String> = out.iter().cloned().collect();
        while let Some(n) = stack.pop() {
            for d in self.deps.get(&n).into_iter().flatten() {
                if self.decls.contains_key(d) && out.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
        Some(out)
    }

    pub fn timings(&self, plan_seconds: f64, apply_seconds: f64) -> Timings {
        let st = self.engine.eval.stats();
        let (builds, build_seconds) = self.registry.builds.total();
        Timings {
            nix_evaluations: st.evaluations,
            eval_seconds: st.eval_time.as_secs_f64(),
            nix_builds: st.builds.saturating_add(u32::try_from(builds).unwrap_or(u32::MAX)),
            build_seconds: st.build_time.as_secs_f64() + build_seconds,
            plan_seconds,
            apply_seconds,
            total_seconds: self.started.elapsed().as_secs_f64(),
            provider_calls: self.registry.calls.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.registry.shutdown();
    }
}

pub(crate) fn outputs_of(k: &ferry_protocol::KindSchema) -> KindOutputs {
    KindOutputs {
        outputs: k.output_names(),
        output_names_input: k.output_names_input.clone(),
        heavy: k.heavy_inputs,
    }
}

pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// One round; if it fails, retry once without previews and edges. Placeholders are strings, so a
/// deployment doing arithmetic on a not-yet-known number breaks those views with an error
/// `tryEval` cannot catch; if the round succeeds without them, that was the cause and the run
/// goes on without previews. Otherwise the first error is the real one.
pub(crate) fn round_with_fallback(
    eval: &dyn ferry_eval::Evaluator,
    req: RoundRequest,
) -> Result<RoundResult, ferry_eval::EvalError> {
    // Only type errors: a missing attribute (an undeclared output) is a real error that the
    // placeholder view is there to catch early.
    let placeholder_caused = |e: &ferry_eval::EvalError| e.nix_kind() == Some(NixErrorKind::Type);
    let mut res = match eval.round(&req) {
        Err(e) if placeholder_caused(&e) && (req.want_previews || req.want_edges) => {
            let retry = RoundRequest { want_previews: false, want_edges: false, ..req.clone() };
            eval.round(&retry).map_err(|_| e)?
        }
        Err(ferry_eval::EvalError::SensitiveInStore { resource, output }) => {
            return Err(locate_sensitive(eval, &req, &resource, &output));
        }
        r => r?,
    };
    settle_undetermined(eval, &req, &mut res)?;
    Ok(res)
}

/// Nix refused a derivation built from the sensitive output `source.output` (nothing was
/// written to the store). Find the resource and the input that did it — one probe per
/// resource, then per input of the culprit, only on this error path — and say so.
fn locate_sensitive(
    eval: &dyn ferry_eval::Evaluator,
    req: &RoundRequest,
    source: &str,
    output: &str,
) -> ferry_eval::EvalError {
    let leaks = |name: &str, input: Option<&str>| {
        matches!(eval.probe(req, name, input), Err(ferry_eval::EvalError::SensitiveInStore { .. }))
    };
    let names = match &req.pending {
        Some(p) => p.clone(),
        None => {
            let list = RoundRequest {
                pending: Some(vec![]),
                want_declarations: false,
                want_previews: false,
                want_edges: false,
                write_drvs: false,
                ..req.clone()
            };
            eval.round(&list).map(|r| r.names).unwrap_or_default()
        }
    };
    let culprit = names.iter().find(|n| leaks(n, None));
    let file = req.file.display();
    let what = match culprit {
        Some(name) => {
            let input =
                eval.input_names(req, name).unwrap_or_default().into_iter().find(|i| leaks(name, Some(i)));
            match input {
                Some(i) => format!("resource `{name}` ({file}): input `{i}`"),
                None => format!("resource `{name}` ({file})"),
            }
        }
        None => format!("a resource of {file}"),
    };
    ferry_eval::EvalError::Nix {
        message: format!(
            "{what} builds a derivation from the sensitive output `{source}.{output}`, which would \
             write the secret into the world-readable Nix store; ferry refused before anything was \
             written. Pass the secret to an input that keeps it out of the store (a machine's \
             `keys`, a container's `credentials`), not into a derivation or `builtins.toFile`."
        ),
        user: true,
    }
}

/// A resource that is not ready and whose inputs fail with placeholders too may have hit a
/// `throw` of the user's (an option typo, a failed assertion in nixpkgs) rather than ferry's
/// "not known yet": `tryEval` cannot tell. Ask Nix again without `tryEval`, once per such
/// resource; the first throw's message decides. Only these resources cost an invocation.
fn settle_undetermined(
    eval: &dyn ferry_eval::Evaluator,
    req: &RoundRequest,
    res: &mut RoundResult,
) -> Result<(), ferry_eval::EvalError> {
    let names: Vec<String> =
        res.results.iter().filter(|(_, r)| r.undetermined).map(|(n, _)| n.clone()).collect();
    for name in names {
        match eval.probe(req, &name, None)? {
            ferry_eval::Probe::Pending | ferry_eval::Probe::Ready => {
                if let Some(r) = res.results.get_mut(&name) {
                    r.undetermined = false;
                }
            }
            ferry_eval::Probe::Failed(message) => {
                let file = res.results.get(&name).map(|r| r.file.clone()).unwrap_or_default();
                res.failures.insert(
                    name.clone(),
                    format!("resource `{name}` ({file}): evaluating its inputs failed:\n{message}"),
                );
            }
        }
    }
    Ok(())
}
