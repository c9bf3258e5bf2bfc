//! `ferry`: the command-line interface.
//!
//! This binary parses flags ([`cli`]), wires the engine, evaluator and state together
//! ([`commands`], one module per verb), renders plans and progress ([`render`]), and turns the
//! outcome into an exit status ([`error`]): 0 success, 1 failure, 2 usage error, 130
//! interrupted. Errors are printed once, here, as `error: ...`.
//!
//! Architecture invariant: no deployment logic lives here — the binary parses, wires and
//! renders; everything it shows comes from the engine's results and event stream.
//! `ferry __provider local` runs the built-in provider so the engine can start this same
//! binary as a protocol-speaking child process.

mod cli;
mod commands;
mod error;
mod interrupt;
mod render;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;

use crate::cli::{Cli, Command, LogFormat, PROVIDER_ENTRY};

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().take(3).collect();
    if args.get(1).is_some_and(|a| a == PROVIDER_ENTRY) {
        let name = args.get(2).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        std::process::exit(builtin_provider(&name));
    }

    let cli = Cli::parse();

    init_tracing(cli.global.verbose, cli.global.log_format);
    let show_trace = cli.global.show_trace;
    let engine_command = matches!(
        cli.command,
        Command::Plan(_)
            | Command::Apply(_)
            | Command::Destroy(_)
            | Command::Refresh(_)
            | Command::Graph(_)
            | Command::Providers(_)
    );
    let interrupted = if engine_command { interrupt::install() } else { Arc::new(AtomicBool::new(false)) };

    let code = match commands::run(cli, Arc::clone(&interrupted)) {
        Ok(outcome) => outcome.code(),
        Err(err) => {
            eprint!("{}", error::render(&err, show_trace));
            error::exit_code(&err)
        }
    };
    // A run cut short by Ctrl-C reports 130 however it ended.
    let code = if code != 0 && interrupted.load(Ordering::SeqCst) { 130 } else { code };
    std::process::exit(code);
}

/// `ferry __provider NAME`: serve a built-in provider on stdin/stdout.
fn builtin_provider(name: &str) -> i32 {
    interrupt::ignore_in_provider();
    let result = match name {
        "local" => ferry_provider_local::run(),
        "nixos" => ferry_provider_nixos::run(),
        "nspawn" => ferry_provider_nspawn::run(),
        "processes" => ferry_provider_processes::run(),
        "ids" => ferry_provider_processes::run_ids(),
        other => {
            eprintln!("error: no built-in provider `{other}` (built-in: local, nixos, nspawn, processes, ids); usage: ferry {PROVIDER_ENTRY} local");
            return 2;
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: provider {name}: {e}");
            1
        }
    }
}

/// Diagnostics from the libraries (`tracing`) on stderr: warnings by default, more with `-vv`
/// and `-vvv` (a single `-v` is for provider phases and logs), or as `FERRY_LOG` says.
fn init_tracing(verbose: u8, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let level = match verbose {
        0 | 1 => "warn",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.without_time().with_target(false).try_init(),
    };
}
