//! `ferry completions SHELL`: a completion script for bash, zsh, fish, elvish or powershell
//! on stdout, generated from the clap definition so it never drifts from the real flags.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::commands::emit;
use crate::error::Outcome;

pub fn run(shell: Shell) -> anyhow::Result<Outcome> {
    emit(&script(shell))?;
    Ok(Outcome::Success)
}

pub fn script(shell: Shell) -> String {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "ferry", &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::Elvish, Shell::PowerShell] {
            let s = script(shell);
            assert!(s.contains("ferry"), "{shell}");
            assert!(s.contains("apply"), "{shell}");
        }
        // The internal provider entry point is offered by no shell.
        assert!(!script(Shell::Bash).contains(",__provider)"));
        assert!(!script(Shell::Fish).contains("\"__provider\""));
    }
}
