//! The evaluator backend that runs the real Nix CLI (`nix-instantiate`, `nix-store`).

use crate::*;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

const EVAL_NIX: &str = include_str!("../nix/eval.nix");
const LIB_NIX: &str = include_str!("../nix/lib.nix");
const LOAD_NIX: &str = include_str!("../nix/load.nix");
const MODULES_NIX: &str = include_str!("../nix/modules.nix");

/// Options passed through to every Nix invocation.
#[derive(Debug, Clone, Default)]
pub struct NixSettings {
    /// `--option NAME VALUE` pairs (e.g. `substituters ""`).
    pub options: Vec<(String, String)>,
    pub show_trace: bool,
    /// Evaluator worker processes per round (`--eval-jobs`); 0 or 1: one process.
    pub eval_jobs: usize,
    /// A flake deployment's locked source ([`crate::flake::lock`]); `None`: the file.
    pub flake: Option<crate::flake::FlakeSource>,
    /// The Nix libraries offered as `ferry.lib.NAME` (a provider's, e.g. `processes`).
    pub libraries: Vec<NixLibrary>,
}

/// A Nix library a provider ships, offered to deployments as `ferry.lib.NAME`: its files,
/// written side by side, and the one of them (`entry`) imported with `{ }`.
#[derive(Debug, Clone)]
pub struct NixLibrary {
    pub name: String,
    pub entry: String,
    /// File name -> Nix source.
    pub files: Vec<(String, String)>,
}

/// Write each library into `lib-NAME/` and `libraries.nix`, the attribute set `lib.nix` imports.
fn write_libraries(dir: &std::path::Path, libraries: &[NixLibrary]) -> Result<(), EvalError> {
    let plain = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let mut set = String::from("{\n");
    for lib in libraries {
        if !plain(&lib.name) || !plain(&lib.entry) || lib.files.iter().any(|(f, _)| !plain(f)) {
            return Err(EvalError::Protocol(format!("invalid Nix library `{}`", lib.name)));
        }
        let sub = dir.join(format!("lib-{}", lib.name));
        std::fs::create_dir(&sub)?;
        for (file, source) in &lib.files {
            std::fs::write(sub.join(file), source)?;
        }
        set.push_str(&format!("  {} = import ./lib-{}/{} {{ }};\n", lib.name, lib.name, lib.entry));
    }
    set.push_str("}\n");
    std::fs::write(dir.join("libraries.nix"), set)?;
    Ok(())
}

impl NixSettings {
    fn apply(&self, cmd: &mut Command) {
        for (k, v) in &self.options {
            cmd.arg("--option").arg(k).arg(v);
        }
        if self.show_trace {
            cmd.arg("--show-trace");
        }
        if self.flake.is_some() {
            cmd.arg("--extra-experimental-features").arg(crate::flake::FEATURES);
        }
    }
}

/// Runs `eval.nix` through `nix-instantiate`. Holds a private directory (0700) with the Nix
/// library and each round's argument file (0600: it carries known outputs, which may be
/// sensitive); the directory is removed on drop.
pub struct NixCli {
    dir: tempfile::TempDir,
    settings: NixSettings,
    stats: Mutex<EvalStats>,
    seq: AtomicU64,
    drvs: crate::drv::DrvReader,
}

impl NixCli {
    pub fn new(settings: NixSettings) -> Result<Self, EvalError> {
        let dir = tempfile::Builder::new()
            .prefix("ferry-eval-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()?;
        std::fs::write(dir.path().join("eval.nix"), EVAL_NIX)?;
        std::fs::write(dir.path().join("lib.nix"), LIB_NIX)?;
        std::fs::write(dir.path().join("load.nix"), LOAD_NIX)?;
        std::fs::write(dir.path().join("modules.nix"), MODULES_NIX)?;
        write_libraries(dir.path(), &settings.libraries)?;
        Ok(NixCli {
            dir,
            settings,
            stats: Mutex::new(EvalStats::default()),
            seq: AtomicU64::new(0),
            drvs: Default::default(),
        })
    }

    fn write_args(&self, req: &impl Serialize) -> Result<std::path::PathBuf, EvalError> {
        #[derive(Serialize)]
        struct Args<'a, T: Serialize> {
            #[serde(flatten)]
            req: &'a T,
            flake: Option<&'a crate::flake::FlakeSource>,
        }
        let req = Args { req, flake: self.settings.flake.as_ref() };
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("args-{n}.json"));
        let f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        // Buffered: serde_json writes token by token, one syscall each on a bare File.
        let mut f = std::io::BufWriter::new(f);
        serde_json::to_writer(&mut f, &req).map_err(|e| EvalError::Protocol(e.to_string()))?;
        f.flush()?;
        Ok(path)
    }

    fn run(&self, mut cmd: Command, program: &str) -> Result<Vec<u8>, EvalError> {
        let out = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| EvalError::Spawn { program: program.to_string(), source })?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(nix_error(&String::from_utf8_lossy(&out.stderr)))
        }
    }
}

impl NixCli {
    fn instantiate(&self, req: &RoundRequest, args: &impl Serialize) -> Result<Vec<u8>, EvalError> {
        let args = self.write_args(args)?;
        let mut cmd = Command::new("nix-instantiate");
        cmd.args(["--eval", "--strict", "--json"])
            .arg(self.dir.path().join("eval.nix"))
            .arg("--arg")
            .arg("argsFile")
            .arg(&args);
        if req.write_drvs {
            cmd.arg("--read-write-mode");
        }
        self.settings.apply(&mut cmd);
        let start = Instant::now();
        let out = self.run(cmd, "nix-instantiate");
        let _ = std::fs::remove_file(&args);
        {
            let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            s.evaluations += 1;
            s.eval_time += start.elapsed();
        }
        out
    }
}

impl NixCli {
    /// eval.nix in probe mode (`probeInput`: `None` all inputs, `""` their names only).
    fn probe_raw(&self, req: &RoundRequest, name: &str, input: Option<&str>) -> Result<Vec<u8>, EvalError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct ProbeArgs<'a> {
            #[serde(flatten)]
            req: &'a RoundRequest,
            probe: &'a str,
            probe_input: Option<&'a str>,
        }
        let args = ProbeArgs { req, probe: name, probe_input: input };
        // A probe never writes derivations: it only asks why the inputs failed.
        let read_only = RoundRequest { write_drvs: false, ..req.clone() };
        self.instantiate(&read_only, &args)
    }
}

/// The marker of ferry's own "not known yet" throw (`pending` in eval.nix).
const PENDING_MARKER: &str = "ferry-pending:";

impl Evaluator for NixCli {
    fn round(&self, req: &RoundRequest) -> Result<RoundResult, EvalError> {
        if self.settings.eval_jobs > 1 {
            self.round_workers(req, self.settings.eval_jobs)
        } else {
            self.round_one(req)
        }
    }

    fn probe(&self, req: &RoundRequest, name: &str, input: Option<&str>) -> Result<Probe, EvalError> {
        self.probe_one(req, name, input)
    }

    fn input_names(&self, req: &RoundRequest, name: &str) -> Result<Vec<String>, EvalError> {
        self.input_names_one(req, name)
    }

    fn realise(&self, context: &BTreeMap<String, Vec<String>>) -> Result<Vec<String>, EvalError> {
        self.realise_one(context)
    }

    fn stats(&self) -> EvalStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl NixCli {
    pub(crate) fn round_one(&self, req: &RoundRequest) -> Result<RoundResult, EvalError> {
        self.round_once(req, false).map(|(r, _)| r)
    }

    /// One `nix-instantiate` of a round. With `defer_heavy`, two or more pending resources of
    /// heavy kinds are not evaluated but returned, by name, for the workers.
    pub(crate) fn round_once(
        &self,
        req: &RoundRequest,
        defer_heavy: bool,
    ) -> Result<(RoundResult, Vec<String>), EvalError> {
        // Sensitive outputs are marked so that a derivation built from one fails to
        // instantiate (eval.nix `markSensitive`). The marker works only read-only: in
        // read-write mode Nix checks a context's paths as soon as it is made. So a round that
        // writes derivations and sees sensitive values is checked read-only first, and then
        // runs unmarked — it cannot reach a derivation that the check did not see.
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Args<'a> {
            #[serde(flatten)]
            req: &'a RoundRequest,
            #[serde(skip_serializing_if = "Option::is_none")]
            mark_sensitive: Option<bool>,
            defer_heavy: bool,
        }
        let secrets_in_play =
            req.sensitive.keys().any(|n| req.known.contains_key(n) || req.recorded.contains_key(n));
        let args = |mark_sensitive| Args { req, mark_sensitive, defer_heavy };
        if !req.write_drvs || !secrets_in_play {
            return decode_round(&self.instantiate(req, &args(None))?, &self.drvs);
        }
        let check = RoundRequest { write_drvs: false, ..req.clone() };
        self.instantiate(&check, &Args { req: &check, mark_sensitive: None, defer_heavy })?;
        decode_round(&self.instantiate(req, &args(Some(false)))?, &self.drvs)
    }

    fn probe_one(&self, req: &RoundRequest, name: &str, input: Option<&str>) -> Result<Probe, EvalError> {
        match self.probe_raw(req, name, input) {
            Ok(_) => Ok(Probe::Ready),
            Err(EvalError::Nix { message, user: false }) if is_pending_throw(&message) => Ok(Probe::Pending),
            Err(EvalError::Nix { message, user: false }) => Ok(Probe::Failed(message)),
            Err(e) => Err(e),
        }
    }

    fn input_names_one(&self, req: &RoundRequest, name: &str) -> Result<Vec<String>, EvalError> {
        #[derive(Deserialize)]
        struct Names {
            names: Vec<String>,
        }
        let out = self.probe_raw(req, name, Some(""))?;
        let n: Names = serde_json::from_slice(&out)
            .map_err(|e| EvalError::Protocol(format!("unexpected output from eval.nix: {e}")))?;
        Ok(n.names)
    }

    fn realise_one(&self, context: &BTreeMap<String, Vec<String>>) -> Result<Vec<String>, EvalError> {
        if context.is_empty() {
            return Ok(vec![]);
        }
        let mut cmd = Command::new("nix-store");
        cmd.arg("--realise");
        for (path, outputs) in context {
            if path.ends_with(".drv") && !outputs.is_empty() {
                cmd.arg(format!("{path}!{}", outputs.join(",")));
            } else {
                cmd.arg(path);
            }
        }
        self.settings.apply(&mut cmd);
        let start = Instant::now();
        let out = self.run(cmd, "nix-store");
        {
            let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            s.builds += 1;
            s.build_time += start.elapsed();
        }
        Ok(String::from_utf8_lossy(&out?).lines().map(str::to_string).collect())
    }
}

/// Nix prints an uncaught `throw` as `error: MESSAGE` (then the trace, with `--show-trace`).
/// (Newer Nix prints the trace first and the message last.)
fn is_pending_throw(message: &str) -> bool {
    message.starts_with(PENDING_MARKER)
        || message
            .lines()
            .any(|l| l.trim_start().strip_prefix("error: ").is_some_and(|m| m.starts_with(PENDING_MARKER)))
}

/// The line Nix 2.8 appends to an error printed without `--show-trace`.
const SHOW_TRACE_HINT: &str = "(use '--show-trace' to show detailed location information)";

/// Nix's error text, minus noise; `abort "ferry: ..."` messages become the bare message (with
/// Nix's trace after it, when `--show-trace` printed one).
pub(crate) fn nix_error(stderr: &str) -> EvalError {
    const ABORT: &str = "evaluation aborted with the following error message: '";
    let stderr = strip_hint(stderr);
    if let Some(i) = stderr.find(ABORT) {
        let rest = &stderr[i + ABORT.len()..];
        // The message ends with `'` where the trace (a blank line, then `… while` or `at`)
        // begins, or at the end; Nix indents its continuation lines by 7 spaces.
        let end = ["\n\n       … ", "\n\n       at "].iter().filter_map(|m| rest.find(m)).min();
        let (msg, trace) = match end {
            Some(j) => (&rest[..j], &rest[j..]),
            None => (rest, ""),
        };
        let msg = msg.trim_end();
        let msg = msg.strip_suffix('\'').unwrap_or(msg).replace("\n       ", "\n");
        let msg = msg.strip_prefix("ferry: ").unwrap_or(&msg).to_string();
        let message = if trace.trim().is_empty() { msg } else { format!("{msg}\n{}", trace.trim_end()) };
        return EvalError::Nix { message, user: true };
    }
    if let Some((resource, output)) = sensitive_marker(&stderr) {
        return EvalError::SensitiveInStore { resource, output };
    }
    let message = stderr.trim();
    let message = message.strip_prefix("error:").unwrap_or(message).trim_start();
    EvalError::Nix { message: message.replace("\n       ", "\n"), user: false }
}

/// The (resource, output) named by the marker of a sensitive output (eval.nix `markerOf`),
/// when Nix refused a derivation built from it.
fn sensitive_marker(stderr: &str) -> Option<(String, String)> {
    const MARKER: &str = "/nix/store/00000000000000000000000000000000-ferry-sensitive-";
    let rest = &stderr[stderr.find(MARKER)? + MARKER.len()..];
    let body = rest[..rest.find('\'')?].strip_suffix(".drv")?;
    let (resource, output) = body.split_once('=')?;
    Some((resource.to_string(), output.to_string()))
}

fn strip_hint(stderr: &str) -> String {
    stderr.lines().filter(|l| l.trim() != SHOW_TRACE_HINT).collect::<Vec<_>>().join("\n")
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRound {
    declarations: Option<BTreeMap<String, Declaration>>,
    #[serde(default)]
    deployment_name: Option<String>,
    names: Vec<String>,
    results: BTreeMap<String, RawResult>,
    #[serde(default)]
    deferred: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResult {
    ready: bool,
    inputs: Option<String>,
    context: BTreeMap<String, Vec<String>>,
    stable: bool,
    undetermined: bool,
    file: String,
    unknown_inputs: Vec<String>,
    preview: Option<BTreeMap<String, Option<String>>>,
    edges: Option<String>,
    #[serde(default)]
    hidden: Option<BTreeMap<String, Option<RawHidden>>>,
}

/// One input's hidden-edge evidence (eval.nix `hiddenEdges`).
#[derive(Deserialize)]
struct RawHidden {
    /// Strings holding placeholders, inside derivations the input holds as values.
    strings: Vec<String>,
    /// Store paths its edges-mode JSON references.
    drvs: Vec<String>,
}

/// Per input, the placeholders found through derivations: in the walked strings, and in the
/// closures of the referenced `.drv` files that are in the store.
fn hidden_placeholders(
    raw: BTreeMap<String, Option<RawHidden>>,
    drvs: &crate::drv::DrvReader,
) -> Result<BTreeMap<String, std::collections::BTreeSet<Placeholder>>, EvalError> {
    let mut out = BTreeMap::new();
    for (input, h) in raw {
        let Some(h) = h else { continue };
        let mut found: std::collections::BTreeSet<Placeholder> =
            h.strings.iter().flat_map(|s| crate::placeholder::find_in_str(s)).collect();
        for d in h.drvs.iter().filter(|d| d.ends_with(".drv")) {
            if let Some(f) = drvs.closure(d)? {
                found.extend(f.iter().cloned());
            }
        }
        if !found.is_empty() {
            out.insert(input, found);
        }
    }
    Ok(out)
}

fn decode_round(
    stdout: &[u8],
    drvs: &crate::drv::DrvReader,
) -> Result<(RoundResult, Vec<String>), EvalError> {
    let bad = |e: serde_json::Error| EvalError::Protocol(format!("unexpected output from eval.nix: {e}"));
    let raw: RawRound = serde_json::from_slice(stdout).map_err(bad)?;
    let mut results = BTreeMap::new();
    for (name, r) in raw.results {
        let inputs = match (r.ready, r.inputs) {
            (true, Some(s)) => Some(serde_json::from_str::<Object>(&s).map_err(bad)?),
            _ => None,
        };
        let preview = match r.preview {
            None => None,
            Some(p) => {
                let mut m = BTreeMap::new();
                for (k, v) in p {
                    let v = match v {
                        Some(s) => Some(serde_json::from_str::<Value>(&s).map_err(bad)?),
                        None => None,
                    };
                    m.insert(k, v);
                }
                Some(m)
            }
        };
        let edges = match r.edges {
            Some(s) => Some(serde_json::from_str::<Value>(&s).map_err(bad)?),
            None => None,
        };
        results.insert(
            name,
            ResourceEval {
                inputs,
                context: r.context,
                stable: r.stable,
                undetermined: r.undetermined,
                file: r.file,
                unknown_inputs: r.unknown_inputs,
                preview,
                edges,
                hidden: hidden_placeholders(r.hidden.unwrap_or_default(), drvs)?,
            },
        );
    }
    let round = RoundResult {
        declarations: raw.declarations,
        deployment_name: raw.deployment_name,
        names: raw.names,
        results,
        failures: BTreeMap::new(),
    };
    Ok((round, raw.deferred))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_messages_are_unwrapped() {
        let e = nix_error(
            "error: evaluation aborted with the following error message: 'ferry: resource `a` (/x.nix) has no `type`'\n",
        );
        assert!(e.is_user_error());
        assert_eq!(e.to_string(), "resource `a` (/x.nix) has no `type`");
        let e = nix_error("error: syntax error, unexpected '}'\n\n       at /d.nix:3:1:\n(use '--show-trace' to show detailed location information)\n");
        assert!(!e.is_user_error());
        assert!(e.to_string().starts_with("syntax error"));
        assert!(!e.to_string().contains("show-trace"));
    }

    /// Nix 2.8's real output for a multi-line `abort` containing `'`, without and with
    /// `--show-trace`: no stray quote, no broken hint line, continuation lines unindented.
    #[test]
    fn abort_messages_print_cleanly() {
        let plain = "error: evaluation aborted with the following error message: 'ferry: it's bad\n       second line'\n(use '--show-trace' to show detailed location information)\n";
        assert_eq!(nix_error(plain).to_string(), "it's bad\nsecond line");
        let traced = "error: evaluation aborted with the following error message: 'ferry: it's bad\n       second line'\n\n       … while evaluating 'f'\n\n       at /tmp/ab.nix:1:9:\n";
        let m = nix_error(traced).to_string();
        assert!(m.starts_with("it's bad\nsecond line\n"), "{m}");
        assert!(m.contains("… while evaluating 'f'") && m.contains("/tmp/ab.nix:1:9"), "{m}");
    }
}
