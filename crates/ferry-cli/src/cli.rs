//! The command line: clap definitions for every verb and the global flags, and the resolution
//! of those flags into absolute paths and defaults.
//!
//! This module only describes and normalises arguments; it never runs anything. The internal
//! entry point `ferry __provider NAME` is not described here: `main` dispatches it before
//! parsing, so it shows up in no help text and no completion script.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ferry_eval::flake::FlakeRef;

/// ferry: declarative deployments for Nix.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, arg_required_else_help = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The deployment file, or a flake deployment DIR#NAME (as --flake).
    #[arg(short = 'f', long = "file", value_name = "PATH", global = true)]
    pub file: Option<PathBuf>,
    /// A flake deployment: output ferryDeployments.NAME of the flake in DIR (`.#prod`; NAME
    /// defaults to `default`). Inputs are pinned by its flake.lock.
    #[arg(long = "flake", value_name = "DIR#NAME", global = true, conflicts_with = "file")]
    pub flake: Option<String>,
    /// The state database [default: <dir of file>/.ferry/state.db for deployment.nix,
    /// <dir of file>/.ferry/NAME.state.db for NAME.nix].
    #[arg(long = "state", value_name = "PATH", global = true)]
    pub state: Option<PathBuf>,
    /// More output (repeatable): provider phases and logs, then debug logs.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// No progress output; errors are still shown.
    #[arg(short = 'q', long = "quiet", global = true)]
    pub quiet: bool,
    /// `json`: every engine event as one JSON object per line on stderr.
    #[arg(long = "log-format", value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Pass `--option NAME VALUE` to every Nix invocation (repeatable).
    #[arg(
        long = "nix-option",
        num_args = 2,
        value_names = ["NAME", "VALUE"],
        action = clap::ArgAction::Append,
        allow_hyphen_values = true,
        global = true
    )]
    pub nix_option: Vec<String>,
    /// Builds Nix runs at once (`--option max-jobs N` for every Nix invocation).
    #[arg(long = "max-jobs", value_name = "N", global = true)]
    pub max_jobs: Option<u64>,
    /// Build everything that can be built when a build fails, instead of stopping at the first
    /// failure (Nix's `keep-going` option). The failure is reported either way.
    #[arg(long = "keep-going", global = true)]
    pub keep_going: bool,
    /// Evaluator worker processes for costly resources (NixOS machines, containers): when a
    /// round has two or more, they are evaluated in chunks of at most 4 (a worker's memory is
    /// bounded by its chunk) by up to N `nix-instantiate` processes at once; everything else
    /// in one. `auto` (the default): one per core, as many as free memory allows (1.5 GiB
    /// each). 1: everything in one process.
    #[arg(long = "eval-jobs", value_name = "N|auto", value_parser = parse_eval_jobs, global = true)]
    pub eval_jobs: Option<EvalJobs>,
    /// Pass `--show-trace` to Nix.
    #[arg(long = "show-trace", global = true)]
    pub show_trace: bool,
    /// Print Nix invocation counts and time per stage after the run.
    #[arg(long = "timings", global = true)]
    pub timings: bool,
    /// Wait up to SECONDS for another run's lock [default: fail at once].
    #[arg(long = "lock-timeout", value_name = "SECONDS", global = true)]
    pub lock_timeout: Option<u64>,
    /// Default timeout of one provider call [default: 600].
    #[arg(long = "timeout", value_name = "SECONDS", global = true)]
    pub timeout: Option<u64>,
    /// Parallel provider calls [default: 16, or CPUs × 2 if more]; machines have their own
    /// copy/activation limits (--copy-jobs, --activate-jobs).
    #[arg(
        short = 'j',
        long = "jobs",
        value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub jobs: Option<u64>,
    /// Only these resources (and what they need): comma-separated globs and @tags.
    #[arg(long = "on", value_name = "SEL", global = true)]
    pub on: Option<String>,
}

/// `--eval-jobs`: a number of workers, or `auto` (from cores and free memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalJobs {
    N(usize),
    Auto,
}

fn parse_eval_jobs(s: &str) -> Result<EvalJobs, String> {
    match s {
        "auto" => Ok(EvalJobs::Auto),
        n => n.parse().map(EvalJobs::N).map_err(|_| format!("`{n}` is neither a number nor `auto`")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what apply would change.
    Plan(PlanArgs),
    /// Make the deployment so.
    Apply(ApplyArgs),
    /// Destroy the deployed resources.
    Destroy(ConfirmArgs),
    /// Read every resource, report drift, update recorded outputs.
    Refresh(ReadArgs),
    /// Inspect and edit the state database.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Print the resource graph (DOT; --json for nodes and edges).
    Graph(ReadArgs),
    /// List providers, their kinds and schemas.
    Providers(ReadArgs),
    /// Work with provider programs.
    Provider {
        #[command(subcommand)]
        command: ProviderSubcommand,
    },
    /// Work with deployed NixOS machines (generations, rollback, gc, reboot, keys).
    Machine {
        #[command(subcommand)]
        command: MachineCommand,
    },
    /// Work with systemd-nspawn containers: operate declared ones (start, stop, run, shell…),
    /// or manage containers outside any deployment (create, update, rollback, destroy).
    Container {
        #[command(subcommand)]
        command: ContainerCommand,
    },
    /// Work with deployed process sets (status, generations, rollback).
    Processes {
        #[command(subcommand)]
        command: ProcessesCommand,
    },
    /// Open a shell on a machine, or run a command there: `ferry ssh NAME [-- CMD...]`.
    Ssh {
        name: String,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Run a command on the selected machines in parallel: `ferry exec --on SEL -- CMD...`.
    Exec {
        /// Machines to run on [default: all recorded machines].
        #[arg(long = "on", value_name = "SEL")]
        on: Option<String>,
        /// At most N machines at once [default: 16].
        #[arg(long = "parallel", short = 'p', value_name = "N", default_value_t = 16)]
        parallel: usize,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ReadArgs {
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `ferry plan`'s flags.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Plan as if the state belonged to this deployment file (see `apply --rebind`).
    #[arg(long)]
    pub rebind: bool,
}

/// The guard rails `apply` can be told to step over.
#[derive(Debug, Clone, Default, Args)]
pub struct GuardArgs {
    /// Use a state that belongs to another deployment file (or name), and make it this one's.
    #[arg(long)]
    pub rebind: bool,
    /// Allow a plan that destroys every recorded resource and creates nothing.
    #[arg(long = "allow-destroy-all")]
    pub allow_destroy_all: bool,
}

#[derive(Debug, Clone, Default, Args)]
pub struct ConfirmArgs {
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

/// `ferry apply`'s flags: confirmation plus how changes roll out.
#[derive(Debug, Clone, Default, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub confirm: ConfirmArgs,
    #[command(flatten)]
    pub guards: GuardArgs,
    #[command(flatten)]
    pub rollout: RolloutArgs,
}

/// How changes roll out (apply, and the machine verbs that deploy).
#[derive(Debug, Clone, Default, Args)]
pub struct RolloutArgs {
    /// Overwrite what ferry never deployed (e.g. a machine profile set by someone else).
    #[arg(long)]
    pub force: bool,
    /// Re-activate machines whose system is unchanged.
    #[arg(long = "always-activate")]
    pub always_activate: bool,
    /// Parallel closure copies to hosts [default: 4].
    #[arg(long = "copy-jobs", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub copy_jobs: Option<u64>,
    /// Parallel activations [default: no limit beyond --jobs].
    #[arg(long = "activate-jobs", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub activate_jobs: Option<u64>,
    /// Change N resources at a time; the next batch starts when the whole batch succeeded.
    #[arg(long = "batch", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: Option<u64>,
    /// Start no new work after the first failure.
    #[arg(long = "fail-fast")]
    pub fail_fast: bool,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List recorded resources.
    List(ReadArgs),
    /// Show one recorded resource (sensitive values hidden).
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Forget a resource without destroying it.
    Rm { name: String },
    /// Make the state belong to the deployment file given with -f (default ./deployment.nix).
    Rebind,
    /// Write all of state as JSON (contains secrets).
    Export {
        /// Write to FILE (mode 0600) instead of stdout.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Accepted for uniformity: the export is always JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace all of state with an export (FILE, or `-` for stdin).
    Import {
        #[arg(value_name = "FILE|-")]
        source: String,
        /// Run the provider programs the export records (external providers, named by path):
        /// without this flag an export that names any is refused, listing them, because plan
        /// and destroy run them with your privileges.
        #[arg(long)]
        trust_providers: bool,
    },
    /// Show the event journal, optionally of one resource.
    Log {
        name: Option<String>,
        /// Only the newest N events.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MachineCommand {
    /// List a machine's system generations.
    Generations { name: String },
    /// Switch a machine to its previous generation (or --to GEN) and activate it.
    Rollback {
        name: String,
        #[arg(long = "to", value_name = "GEN")]
        to: Option<u64>,
    },
    /// Delete all but the newest N generations and collect garbage on the machine.
    Gc {
        name: String,
        #[arg(long = "keep", value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        keep: u64,
    },
    /// Reboot a machine and wait for it to come back with a new boot id.
    Reboot {
        name: String,
        /// Give up after SECONDS.
        #[arg(long = "wait", value_name = "SECONDS", default_value_t = 300)]
        wait: u64,
    },
    /// Upload a machine's keys again (e.g. after a reboot emptied /run/keys).
    UploadKeys { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ProcessesCommand {
    /// Each process's live status (running with its PID, or how it is not).
    Status { name: String },
    /// List a process set's profile generations.
    Generations { name: String },
    /// Switch a process set to its previous generation (or --to GEN): only the processes whose
    /// configuration differs are restarted.
    Rollback {
        name: String,
        #[arg(long = "to", value_name = "GEN")]
        to: Option<u64>,
    },
}

/// Where an imperative container runs.
#[derive(Debug, Clone, Args)]
pub struct ContainerHost {
    /// `local`, a machine recorded in this directory's state (its address and host key are
    /// used), or `[user@]host[:port]` together with --host-key.
    #[arg(long = "host", value_name = "HOST", default_value = "local")]
    pub host: String,
    /// The host's public key (`ssh-ed25519 AAAA…`), for a `[user@]host[:port]` host.
    #[arg(long = "host-key", value_name = "KEY")]
    pub host_key: Option<String>,
    /// The private key to log in with.
    #[arg(long = "ssh-key", value_name = "FILE")]
    pub ssh_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Create and start a container outside any deployment from a Nix file of its settings
    /// (the inputs of `nspawn.container`: system, network, forwardPorts, bindMounts, …).
    Create {
        name: String,
        #[arg(long = "config", value_name = "FILE")]
        config: PathBuf,
        #[command(flatten)]
        host: ContainerHost,
    },
    /// Update an imperative container (new settings with --config), then activate it by its
    /// strategy, or force --reload / --restart.
    Update {
        name: String,
        #[arg(long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long, conflicts_with = "restart")]
        reload: bool,
        #[arg(long)]
        restart: bool,
        #[command(flatten)]
        host: ContainerHost,
    },
    /// List the containers ferry manages on a host (declared and imperative).
    List {
        #[command(flatten)]
        host: ContainerHost,
    },
    /// Start a container.
    Start {
        name: String,
        #[command(flatten)]
        host: ContainerHost,
    },
    /// Stop a container.
    Stop {
        name: String,
        #[command(flatten)]
        host: ContainerHost,
    },
    /// Restart a container.
    Restart {
        name: String,
        #[command(flatten)]
        host: ContainerHost,
    },
    /// Switch an imperative container to its previous generation (or --to GEN) and reload it.
    Rollback {
        name: String,
        #[arg(long = "to", value_name = "GEN")]
        to: Option<u64>,
        #[command(flatten)]
        host: ContainerHost,
    },
    /// List a container's generations.
    Generations {
        name: String,
        #[command(flatten)]
        host: ContainerHost,
    },
    /// Run a command inside a running container: `ferry container run NAME -- CMD...`.
    Run {
        name: String,
        #[command(flatten)]
        host: ContainerHost,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Open a shell inside a running container.
    Shell {
        name: String,
        #[command(flatten)]
        host: ContainerHost,
    },
    /// Print a container's addresses.
    ShowIp {
        name: String,
        #[command(flatten)]
        host: ContainerHost,
    },
    /// Stop an imperative container and remove it; its root directory stays unless --purge.
    Destroy {
        name: String,
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        host: ContainerHost,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProviderSubcommand {
    /// Run protocol conformance checks against a provider program; exit 1 on failure.
    Check {
        /// The provider program.
        executable: PathBuf,
        /// Arguments passed to it.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
        /// Inputs for a create/read/delete round trip of KIND (repeatable).
        #[arg(long = "sample", value_name = "KIND=JSON")]
        sample: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

/// The internal first argument under which the binary serves a built-in provider
/// (`ferry __provider local`).
pub const PROVIDER_ENTRY: &str = "__provider";

/// A provider call's default time limit.
pub const DEFAULT_CALL_TIMEOUT_SECS: u64 = 600;

/// Global flags with defaults filled in and paths made absolute.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The deployment file; for a flake deployment its label `DIR/flake.nix#NAME`.
    pub file: PathBuf,
    /// A flake deployment (`--flake`, or `-f DIR#NAME`).
    pub flake: Option<FlakeRef>,
    /// Why the flake reference given is not one.
    pub flake_error: Option<String>,
    pub state: PathBuf,
    /// `--state` was given (not the default beside the file).
    pub state_given: bool,
    pub verbose: u8,
    pub quiet: bool,
    pub log_format: LogFormat,
    pub nix_options: Vec<(String, String)>,
    pub eval_jobs: usize,
    pub show_trace: bool,
    pub timings: bool,
    pub lock_timeout: Option<Duration>,
    pub timeout: Duration,
    /// `--timeout` as given, for commands whose own default differs.
    pub timeout_flag: Option<Duration>,
    pub jobs: usize,
    pub on: Option<String>,
}

/// `FERRY_NIX_OPTIONS="substituters=;max-jobs=4"`: Nix options for every invocation, before
/// any `--nix-option` flags (which win, coming later on Nix's command line).
fn env_nix_options() -> Vec<(String, String)> {
    std::env::var("FERRY_NIX_OPTIONS")
        .unwrap_or_default()
        .split(';')
        .filter(|s| !s.trim().is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (kv.trim().to_string(), String::new()),
        })
        .collect()
}

impl GlobalArgs {
    /// Fill in defaults relative to `cwd`.
    pub fn resolve(&self, cwd: &Path) -> Resolved {
        let flake_arg = self.flake.clone().or_else(|| {
            let f = self.file.as_deref()?;
            let s = f.to_str()?;
            (s.contains('#') && !absolute(cwd, f).is_file()).then(|| s.to_string())
        });
        let (flake, flake_error) = match flake_arg.map(|s| FlakeRef::parse(&s, cwd)) {
            Some(Ok(r)) => (Some(r), None),
            Some(Err(e)) => (None, Some(e.to_string())),
            None => (None, None),
        };
        let file = match &flake {
            Some(r) => r.label(),
            None => absolute(cwd, self.file.as_deref().unwrap_or(Path::new("deployment.nix"))),
        };
        let state = match (&self.state, &flake) {
            (Some(p), _) => absolute(cwd, p),
            (None, Some(r)) => r.dir.join(".ferry").join(format!("flake-{}.state.db", r.attr)),
            (None, None) => ferry_state::default_state_path(&file),
        };
        let jobs = match self.jobs {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => std::thread::available_parallelism().map_or(16, |n| (n.get() * 2).max(16)),
        };
        Resolved {
            file,
            flake,
            flake_error,
            state,
            state_given: self.state.is_some(),
            verbose: self.verbose,
            quiet: self.quiet,
            log_format: self.log_format,
            nix_options: env_nix_options()
                .into_iter()
                .chain(
                    self.nix_option.chunks(2).map(|c| (c[0].clone(), c.get(1).cloned().unwrap_or_default())),
                )
                .chain(self.max_jobs.map(|n| ("max-jobs".to_string(), n.to_string())))
                .chain(self.keep_going.then(|| ("keep-going".to_string(), "true".to_string())))
                .collect(),
            show_trace: self.show_trace,
            eval_jobs: match self.eval_jobs {
                Some(EvalJobs::N(n)) => n.max(1),
                None | Some(EvalJobs::Auto) => ferry_eval::auto_eval_jobs(),
            },
            timings: self.timings,
            lock_timeout: self.lock_timeout.filter(|&s| s > 0).map(Duration::from_secs),
            timeout: Duration::from_secs(self.timeout.unwrap_or(DEFAULT_CALL_TIMEOUT_SECS)),
            timeout_flag: self.timeout.map(Duration::from_secs),
            jobs,
            on: self.on.clone(),
        }
    }
}

/// `p` made absolute against `cwd`, with `.` components dropped (no symlink resolution: the
/// file need not exist).
fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() { p.to_path_buf() } else { cwd.join(p) };
    joined.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect()
}

#[cfg(test)]
mod tests;
