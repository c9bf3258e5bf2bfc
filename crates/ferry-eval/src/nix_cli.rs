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
const PROCESSES_NIX: &str = include_str!("../nix/processes.nix");
const PROCESSES_IMAGE_NIX: &str = include_str!("../nix/processes-image.nix");

/// Options passed through to every Nix invocation.
#[derive(Debug, Clone, Default)]
pub struct NixSettings {
    /// `--option NAME VALUE` pairs (e.g. `substituters ""`).
    pub options: Vec<(String, String)>,
    pub show_trace: bool,
}

impl NixSettings {
    fn apply(&self, cmd: &mut Command) {
        for (k, v) in &self.options {
            cmd.arg("--option").arg(k).arg(v);
        }
        if self.show_trace {
            cmd.arg("--show-trace");
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
        let dir = tempfile::Builder::new().prefix("ferry-eval-").tempdir()?;
        std::fs::write(dir.path().join("eval.nix"), EVAL_NIX)?;
        std::fs::write(dir.path().join("lib.nix"), LIB_NIX)?;
        std::fs::write(dir.path().join("processes.nix"), PROCESSES_NIX)?;
        std::fs::write(dir.path().join("processes-image.nix"), PROCESSES_IMAGE_NIX)?;
        Ok(NixCli {
            dir,
            settings,
            stats: Mutex::new(EvalStats::default()),
            seq: AtomicU64::new(0),
            drvs: Default::default(),
        })
    }

    fn write_args(&self, req: &RoundRequest) -> Result<std::path::PathBuf, EvalError> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("args-{n}.json"));
        let f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        // Buffered: serde_json writes token by token, one syscall each on a bare File.
        let mut f = std::io::BufWriter::new(f);
        serde_json::to_writer(&mut f, req).map_err(|e| EvalError::Protocol(e.to_string()))?;
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

impl Evaluator for NixCli {
    fn round(&self, req: &RoundRequest) -> Result<RoundResult, EvalError> {
        let args = self.write_args(req)?;
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
        // Decoding reads `.drv` files for hidden edges: part of the evaluation's time.
        let res = out.and_then(|o| decode_round(&o, &self.drvs));
        {
            let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            s.evaluations += 1;
            s.eval_time += start.elapsed();
        }
        res
    }

    fn realise(&self, context: &BTreeMap<String, Vec<String>>) -> Result<Vec<String>, EvalError> {
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

    fn stats(&self) -> EvalStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Nix's error text, minus noise; `abort "ferry: ..."` messages become the bare message.
fn nix_error(stderr: &str) -> EvalError {
    const ABORT: &str = "evaluation aborted with the following error message: '";
    if let Some(i) = stderr.find(ABORT) {
        let rest = &stderr[i + ABORT.len()..];
        let msg = rest.rfind('\'').map(|j| &rest[..j]).unwrap_or(rest);
        let msg = msg.strip_prefix("ferry: ").unwrap_or(msg);
        return EvalError::Nix { message: msg.to_string(), user: true };
    }
    let message = stderr
        .lines()
        .filter(|l| !l.contains("(use '--show-trace' to show detailed location information)"))
        .collect::<Vec<_>>()
        .join("\n");
    let message = message.trim().trim_start_matches("error: ").to_string();
    EvalError::Nix { message, user: false }
}

#[derive(Deserialize)]
struct RawRound {
    declarations: Option<BTreeMap<String, Declaration>>,
    names: Vec<String>,
    results: BTreeMap<String, RawResult>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResult {
    ready: bool,
    inputs: Option<String>,
    context: BTreeMap<String, Vec<String>>,
    stable: bool,
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

fn decode_round(stdout: &[u8], drvs: &crate::drv::DrvReader) -> Result<RoundResult, EvalError> {
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
                unknown_inputs: r.unknown_inputs,
                preview,
                edges,
                hidden: hidden_placeholders(r.hidden.unwrap_or_default(), drvs)?,
            },
        );
    }
    Ok(RoundResult { declarations: raw.declarations, names: raw.names, results })
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
}
