//! One module per verb. [`run`] dispatches; the helpers here build what several verbs share:
//! the [`Engine`] (from the global flags), the progress sink, and output that survives a
//! closed pipe.
//!
//! Commands print results to stdout and diagnostics to stderr; they never exit the process
//! themselves — `main` does, from the returned [`Outcome`] or error.

pub mod apply;
pub mod completions;
pub mod container;
pub mod destroy;
pub mod graph;
pub mod machine;
pub mod plan;
pub mod processes;
pub mod provider_check;
pub mod providers;
pub mod refresh;
pub mod state;

use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context as _;
use ferry_engine::{Engine, EngineConfig, ProviderCommand, Selection, Timings};
use ferry_eval::{NixCli, NixSettings};

use crate::cli::{Cli, Command, GuardArgs, Resolved, RolloutArgs, StateCommand, PROVIDER_ENTRY};
use crate::error::{usage, Outcome};
use crate::render::progress::{Mode, Progress};
use crate::render::{seconds, Palette};

/// What every command gets: the resolved global flags and the command line.
pub struct Context {
    pub opts: Resolved,
    /// The command line, recorded as the lock holder and in the journal.
    pub command_line: String,
    /// Set by the Ctrl-C handler (see `crate::interrupt`).
    pub interrupted: Arc<AtomicBool>,
    /// How changes roll out (apply's flags; defaults elsewhere).
    pub rollout: RolloutArgs,
    /// Guard rails stepped over on purpose (`--rebind`, `--allow-destroy-all`).
    pub guards: GuardArgs,
}

pub fn run(cli: Cli, interrupted: Arc<AtomicBool>) -> anyhow::Result<Outcome> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let ctx = Context {
        opts: cli.global.resolve(&cwd),
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
        interrupted,
        rollout: match &cli.command {
            Command::Apply(a) => a.rollout.clone(),
            _ => RolloutArgs::default(),
        },
        guards: match &cli.command {
            Command::Apply(a) => a.guards.clone(),
            Command::Plan(a) => GuardArgs { rebind: a.rebind, allow_destroy_all: false },
            _ => GuardArgs::default(),
        },
    };
    // Flag errors first, before anything looks at files.
    if let Some(on) = &ctx.opts.on {
        Selection::parse(on).map_err(usage)?;
    }
    if let Some(e) = &ctx.opts.flake_error {
        return Err(usage(e.clone()));
    }
    match cli.command {
        Command::Plan(a) => plan::run(&ctx, a.json),
        Command::Apply(a) => apply::run(&ctx, a.confirm.yes),
        Command::Destroy(a) => destroy::run(&ctx, a.yes),
        Command::Refresh(a) => refresh::run(&ctx, a.json),
        Command::Graph(a) => graph::run(&ctx, a.json),
        Command::Providers(a) => providers::run(&ctx, a.json),
        Command::State { command } => match command {
            StateCommand::List(a) => state::list(&ctx, a.json),
            StateCommand::Show { name, json } => state::show(&ctx, &name, json),
            StateCommand::Rm { name } => state::rm(&ctx, &name),
            StateCommand::Rebind => state::rebind(&ctx),
            StateCommand::Export { output, json: _ } => state::export(&ctx, output.as_deref()),
            StateCommand::Import { source, trust_providers } => state::import(&ctx, &source, trust_providers),
            StateCommand::Log { name, limit, json } => state::log(&ctx, name.as_deref(), limit, json),
        },
        Command::Provider { command } => provider_check::run(&ctx, command),
        Command::Machine { command } => machine::run(&ctx, command),
        Command::Processes { command } => processes::run(&ctx, command),
        Command::Container { command } => container::run(&ctx, command),
        Command::Ssh { name, command } => machine::ssh(&ctx, &name, &command),
        Command::Exec { on, parallel, command } => machine::exec(&ctx, on.as_deref(), parallel, &command),
        Command::Completions { shell } => completions::run(shell),
    }
}

impl Context {
    /// The progress sink for this command's engine events.
    pub fn progress(&self) -> Arc<Progress> {
        let o = &self.opts;
        Arc::new(Progress::new(Mode::choose(o.log_format, o.quiet), o.verbose, o.quiet))
    }

    /// An engine configured from the global flags, reporting to `progress`.
    pub fn engine(&self, progress: &Arc<Progress>) -> anyhow::Result<Engine> {
        let o = &self.opts;
        let selection = match &o.on {
            Some(s) => Some(Selection::parse(s).map_err(usage)?),
            None => None,
        };
        let cfg = EngineConfig {
            file: o.file.clone(),
            state_path: o.state.clone(),
            state_given: o.state_given,
            jobs: o.jobs,
            selection,
            builtin_providers: self.builtin_providers()?,
            call_timeout: o.timeout,
            lock_timeout: o.lock_timeout,
            interrupted: self.interrupted.clone(),
            command: self.command_line.clone(),
            provider_options: self.provider_options(),
            batch: self.rollout.batch.map(|n| n as usize),
            fail_fast: self.rollout.fail_fast,
            rebind: self.guards.rebind,
            allow_destroy_all: self.guards.allow_destroy_all,
        };
        let flake = match &o.flake {
            Some(r) => {
                self.check_flake_state(r)?;
                Some(ferry_eval::flake::lock(r, &o.nix_options)?)
            }
            None => None,
        };
        let eval = NixCli::new(NixSettings {
            options: o.nix_options.clone(),
            show_trace: o.show_trace,
            eval_jobs: o.eval_jobs,
            flake,
            libraries: nix_libraries(),
        })?;
        Ok(Engine::new(cfg, Arc::new(eval), progress.clone()))
    }

    /// The built-in providers: this executable run as `ferry __provider NAME`. (Their Nix
    /// libraries: [`nix_libraries`].)
    pub fn builtin_providers(&self) -> anyhow::Result<Vec<(String, ProviderCommand)>> {
        let exe =
            std::env::current_exe().context("cannot find the ferry executable to run built-in providers")?;
        Ok(["local", "nixos", "nspawn", "processes", "ids"]
            .iter()
            .map(|name| {
                let cmd = ProviderCommand {
                    label: (*name).into(),
                    program: exe.clone(),
                    args: vec![PROVIDER_ENTRY.into(), (*name).into()],
                };
                ((*name).to_string(), cmd)
            })
            .collect())
    }

    /// Run-wide options every provider gets in its handshake.
    pub fn provider_options(&self) -> ferry_protocol::Object {
        let r = &self.rollout;
        ferry_protocol::RunOptions {
            force: r.force,
            always_activate: r.always_activate,
            nix_options: self.opts.nix_options.clone(),
            copy_jobs: r.copy_jobs.map(|n| n as usize),
            activate_jobs: r.activate_jobs.map(|n| n as usize),
        }
        .to_object()
    }

    /// Colours for stdout (only on a terminal, and as `NO_COLOR`/`CLICOLOR` allow).
    pub fn stdout_palette(&self) -> Palette {
        Palette::new(console::colors_enabled())
    }

    /// The deployment file must exist (for verbs that evaluate it): a usage error otherwise.
    pub fn require_file(&self) -> anyhow::Result<()> {
        if let Some(r) = &self.opts.flake {
            if r.dir.join("flake.nix").is_file() {
                return Ok(());
            }
            return Err(usage(format!("no flake.nix in {}; pass --flake DIR#NAME", r.dir.display())));
        }
        let f = &self.opts.file;
        if f.is_file() {
            return Ok(());
        }
        Err(usage(format!("no deployment file at {}; pass -f FILE (default: ./deployment.nix)", f.display())))
    }

    /// Nix copies a flake that is not in git whole into the world-readable store, so no
    /// ferry state (its secrets) may lie inside it: refused before Nix runs. In a git work
    /// tree only tracked files are copied, and `.ferry/` holds a `.gitignore` of everything.
    fn check_flake_state(&self, r: &ferry_eval::flake::FlakeRef) -> anyhow::Result<()> {
        if r.in_git() {
            return Ok(());
        }
        let own = r.dir.join(".ferry");
        let inside = if self.opts.state.starts_with(&r.dir) {
            Some(self.opts.state.clone())
        } else if own.exists() {
            Some(own)
        } else {
            None
        };
        match inside {
            None => Ok(()),
            Some(p) => Err(usage(format!(
                "the state {} lies inside the flake {}, which is not in a git repository: Nix copies such a flake whole into the world-readable Nix store, secrets and all. Keep the state outside it (--state PATH), or make the flake a git repository (`git init`; ferry's .ferry/ is ignored)",
                p.display(),
                r.dir.display()
            ))),
        }
    }

    /// `--timings`: one line on stderr.
    pub fn timings(&self, t: &Timings) {
        if self.opts.timings {
            eprintln!("{}", timings_line(t));
        }
    }
}

/// `timings: 3 Nix evaluations (0.41s), 1 build (2.1s), plan 0.5s, apply 1.2s, total 1.9s,
/// 42 provider calls`
pub fn timings_line(t: &Timings) -> String {
    let n = |count: u64, one: &str, many: &str| format!("{count} {}", if count == 1 { one } else { many });
    format!(
        "timings: {} ({}), {} ({}), plan {}, apply {}, total {}, {}",
        n(t.nix_evaluations.into(), "Nix evaluation", "Nix evaluations"),
        seconds(t.eval_seconds),
        n(t.nix_builds.into(), "build", "builds"),
        seconds(t.build_seconds),
        seconds(t.plan_seconds),
        seconds(t.apply_seconds),
        seconds(t.total_seconds),
        n(t.provider_calls, "provider call", "provider calls"),
    )
}

/// Write `text` to stdout. A reader that went away (`ferry graph | head`) is not an error.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(()),
    }
}

/// `value` as pretty JSON on stdout.
pub fn emit_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
    text.push('\n');
    emit(&text)
}

/// Whether both stdin and stderr are terminals: a person can be asked.
pub fn can_ask() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// The state file, or the error every state command gives when nothing was applied yet.
pub fn require_state(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        Ok(())
    } else {
        anyhow::bail!("no state at {}: nothing has been applied yet", path.display())
    }
}

/// The Nix libraries of the built-in providers, offered to deployments as `ferry.lib.NAME`.
pub fn nix_libraries() -> Vec<ferry_eval::NixLibrary> {
    vec![ferry_eval::NixLibrary {
        name: "processes".into(),
        entry: "processes.nix".into(),
        files: ferry_provider_processes::NIX_LIBRARY
            .iter()
            .map(|(f, s)| (f.to_string(), s.to_string()))
            .collect(),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_format() {
        let t = Timings {
            nix_evaluations: 3,
            eval_seconds: 0.41,
            nix_builds: 1,
            build_seconds: 2.1,
            plan_seconds: 0.5,
            apply_seconds: 1.2,
            total_seconds: 1.9,
            provider_calls: 42,
        };
        assert_eq!(
            timings_line(&t),
            "timings: 3 Nix evaluations (0.41s), 1 build (2.1s), plan 0.5s, apply 1.2s, total 1.9s, 42 provider calls"
        );
    }
}
