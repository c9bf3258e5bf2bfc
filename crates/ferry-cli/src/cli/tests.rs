//! Tests of the command line's definition and flag resolution.

use super::*;
use clap::CommandFactory;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("ferry").chain(args.iter().copied()))
}

#[test]
fn definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn other_files_get_their_own_state() {
    let r = parse(&["plan", "-f", "other.nix"]).unwrap().global.resolve(Path::new("/srv/site"));
    assert_eq!(r.state, Path::new("/srv/site/.ferry/other.state.db"));
    let r = parse(&["plan", "-f", "a/prod"]).unwrap().global.resolve(Path::new("/srv"));
    assert_eq!(r.state, Path::new("/srv/a/.ferry/prod.state.db"));
}

#[test]
fn defaults_resolve_beside_the_file() {
    let cli = parse(&["plan"]).unwrap();
    let r = cli.global.resolve(Path::new("/srv/site"));
    assert_eq!(r.file, Path::new("/srv/site/deployment.nix"));
    assert_eq!(r.state, Path::new("/srv/site/.ferry/state.db"));
    assert_eq!(r.timeout, Duration::from_secs(600));
    assert_eq!(r.lock_timeout, None);
    assert!(r.jobs >= 2);
    assert_eq!(r.log_format, LogFormat::Text);
    // Evaluator workers default to what cores and free memory allow; a number is taken as is.
    assert_eq!(r.eval_jobs, ferry_eval::auto_eval_jobs());
    let one = parse(&["plan", "--eval-jobs", "1"]).unwrap().global.resolve(Path::new("/srv"));
    assert_eq!(one.eval_jobs, 1);
}

#[test]
fn global_flags_after_the_verb() {
    let cli = parse(&[
        "apply",
        "--yes",
        "-f",
        "./x/d.nix",
        "--jobs",
        "3",
        "--on",
        "web-*,@db",
        "-vv",
        "--nix-option",
        "substituters",
        "",
        "--nix-option",
        "sandbox",
        "false",
        "--lock-timeout",
        "5",
        "--log-format",
        "json",
    ])
    .unwrap();
    assert!(matches!(cli.command, Command::Apply(ApplyArgs { confirm: ConfirmArgs { yes: true }, .. })));
    let r = cli.global.resolve(Path::new("/home/u"));
    assert_eq!(r.file, Path::new("/home/u/x/d.nix"));
    // Not `deployment.nix`: its own state beside it.
    assert_eq!(r.state, Path::new("/home/u/x/.ferry/d.state.db"));
    assert_eq!(r.jobs, 3);
    assert_eq!(r.verbose, 2);
    assert_eq!(r.on.as_deref(), Some("web-*,@db"));
    assert_eq!(
        r.nix_options,
        vec![("substituters".into(), String::new()), ("sandbox".into(), "false".into())]
    );
    assert_eq!(r.lock_timeout, Some(Duration::from_secs(5)));
    assert_eq!(r.log_format, LogFormat::Json);
}

#[test]
fn state_subcommands() {
    let cli = parse(&["state", "show", "key", "--json", "--state", "/tmp/s.db"]).unwrap();
    assert!(matches!(cli.command, Command::State { command: StateCommand::Show { json: true, .. } }));
    assert_eq!(cli.global.resolve(Path::new("/")).state, Path::new("/tmp/s.db"));
    let cli = parse(&["state", "log", "--limit", "5"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::State { command: StateCommand::Log { name: None, limit: Some(5), .. } }
    ));
    assert!(parse(&["state", "import", "-"]).is_ok());
}

#[test]
fn provider_check_takes_program_arguments() {
    let cli = parse(&["provider", "check", "--sample", "counter={}", "./prov", "serve", "--fast"]).unwrap();
    match cli.command {
        Command::Provider { command: ProviderSubcommand::Check { executable, args, sample, .. } } => {
            assert_eq!(executable, Path::new("./prov"));
            assert_eq!(args, vec!["serve", "--fast"]);
            assert_eq!(sample, vec!["counter={}"]);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn usage_errors_are_exit_2() {
    for bad in [
        &["plan", "--jobs", "0"][..],
        &["frobnicate"],
        &["apply", "--log-format", "xml"],
        &["completions", "tcsh"],
        &["state", "show"],
    ] {
        let err = parse(bad).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{bad:?}");
    }
}

#[test]
fn builtin_provider_entry_is_not_a_subcommand() {
    // `ferry __provider NAME` is dispatched in main before clap, so it appears in no help
    // text or completion script.
    assert!(parse(&["__provider", "local"]).is_err());
}

#[test]
fn flake_references_resolve_with_their_own_state() {
    let r = parse(&["plan", "--flake", ".#prod"]).unwrap().global.resolve(Path::new("/srv/fleet"));
    let f = r.flake.as_ref().expect("a flake deployment");
    assert_eq!((f.dir.as_path(), f.attr.as_str()), (Path::new("/srv/fleet"), "prod"));
    assert_eq!(r.file, Path::new("/srv/fleet/flake.nix#prod"));
    assert_eq!(r.state, Path::new("/srv/fleet/.ferry/flake-prod.state.db"));
    // `-f DIR#NAME` is the same; a file whose name has a `#` in it stays a file.
    let r = parse(&["plan", "-f", "../fleet#web"]).unwrap().global.resolve(Path::new("/srv/x"));
    assert_eq!(r.flake.map(|f| f.attr), Some("web".to_string()));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("odd#name.nix"), "{ }").unwrap();
    let r = parse(&["plan", "-f", "odd#name.nix"]).unwrap().global.resolve(dir.path());
    assert!(r.flake.is_none() && r.file.ends_with("odd#name.nix"));
    // A bad reference is kept as an error for the command to report.
    let r = parse(&["plan", "--flake", "github:o/r#x"]).unwrap().global.resolve(Path::new("/"));
    assert!(r.flake.is_none() && r.flake_error.is_some());
    assert!(parse(&["plan", "--flake", ".#a", "-f", "x.nix"]).is_err(), "--flake and -f conflict");
    assert!(parse(&["plan", "--eval-jobs", "auto"]).is_ok() && parse(&["plan", "--eval-jobs", "x"]).is_err());
}
