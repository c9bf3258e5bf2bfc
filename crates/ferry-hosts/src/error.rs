//! One error type for everything done on a host, and its one mapping to a provider error.
//!
//! Errors are told apart by their variant (and a command's exit status), never by their text.

use ferry_protocol::ProviderError;
use ferry_ssh::SshError;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn from_status(s: std::process::ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt as _;
        match (s.code(), s.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::Signal(0),
        }
    }

    pub fn code(self) -> Option<i32> {
        match self {
            Exit::Code(c) => Some(c),
            Exit::Signal(_) => None,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit {c}"),
            Exit::Signal(0) => f.write_str("killed by a signal"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    /// The SSH layer failed: host key mismatch, unreachable, login refused, local trouble.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// A command ran on the host and failed.
    #[error("{}", failure_text(.what, .host, *.exit, .output, .command, .helper))]
    Failed {
        what: String,
        host: String,
        exit: Exit,
        /// stdout then stderr, as the command printed them.
        output: String,
        /// The command line, for the "how to see why" hint when the command printed nothing.
        command: String,
        /// The helper script it ran, for that hint ("ferry's container helper").
        helper: Option<&'static str>,
    },
    /// A command did not finish in time (and was killed).
    #[error("{what} on {host} did not finish within {seconds} s")]
    Timeout { what: String, host: String, seconds: u64 },
    /// A local program could not be started.
    #[error("{what}: cannot run {program}: {detail}")]
    Spawn { what: String, program: String, detail: String },
    /// podman could not run anything in the container (podman's own exit status 125).
    #[error("cannot run commands in container `{container}` (is it running? `podman ps`): {detail}")]
    Podman { container: String, detail: String },
    /// ferry itself lacks what the host needs (e.g. root for local containers).
    #[error("{0}")]
    Unsupported(String),
}

impl HostError {
    /// The exit status of a failed command.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            HostError::Failed { exit, .. } => exit.code(),
            _ => None,
        }
    }

    /// The structured error code a provider reports.
    pub fn code(&self) -> &'static str {
        match self {
            HostError::Ssh(SshError::HostKeyMismatch { .. }) => "hostKeyMismatch",
            HostError::Ssh(SshError::Unreachable { .. }) => "unreachable",
            HostError::Ssh(SshError::Auth { .. }) => "authFailed",
            HostError::Podman { .. } => "unreachable",
            _ => "remoteFailed",
        }
    }

    /// Whether trying again later may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            HostError::Ssh(SshError::Unreachable { .. } | SshError::Timeout { .. })
                | HostError::Timeout { .. }
        )
    }

    /// The provider error, its message prefixed (e.g. with the resource): `PREFIX: MESSAGE`.
    pub fn provider_error_in(&self, prefix: &str) -> ProviderError {
        let mut pe = ProviderError::from(self);
        pe.message = format!("{prefix}: {}", pe.message);
        pe
    }
}

impl From<&HostError> for ProviderError {
    fn from(e: &HostError) -> ProviderError {
        let mut pe = ProviderError::new(e.to_string()).code(e.code());
        pe.retryable = e.retryable();
        pe
    }
}

impl From<HostError> for ProviderError {
    fn from(e: HostError) -> ProviderError {
        ProviderError::from(&e)
    }
}

/// A failure, never an empty message: what failed, where, how it ended, then its `error:`
/// lines first (they say what to do), else the output's tail; when it printed nothing, the
/// command to run on the host with tracing to see why.
fn failure_text(
    what: &str,
    host: &str,
    exit: Exit,
    output: &str,
    command: &str,
    helper: &Option<&'static str>,
) -> String {
    let errors: Vec<&str> = output.lines().filter_map(|l| l.strip_prefix("error: ")).collect();
    let detail = if errors.is_empty() {
        ferry_ssh::tail_lines(output, 15)
    } else {
        let rest: Vec<&str> = output.lines().filter(|l| !l.starts_with("error: ")).collect();
        let mut d = errors.join("\n");
        let tail = ferry_ssh::tail_lines(&rest.join("\n"), 15);
        if !tail.is_empty() {
            d = format!("{d}\n{tail}");
        }
        d
    };
    let detail = match helper {
        _ if !detail.trim().is_empty() => detail,
        Some(helper) => format!(
            "{helper} printed nothing on stdout or stderr; to see why, run it on {host} as root with tracing: {}",
            command.replacen("sh /run/ferry/", "sh -x /run/ferry/", 1)
        ),
        None => "it printed nothing on stdout or stderr".to_string(),
    };
    format!("{what} failed on {host} ({exit}): {detail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(what: &str, host: &str, exit: Exit, output: &str, command: &str) -> HostError {
        HostError::Failed {
            what: what.into(),
            host: host.into(),
            exit,
            output: output.into(),
            command: command.into(),
            helper: Some("ferry's container helper"),
        }
    }

    #[test]
    fn a_failure_without_output_still_says_what_happened_and_what_to_do() {
        let line = "sh /run/ferry/ferry-nspawn-0123456789ab.sh claims ";
        let e = failed("listing address claims", "local", Exit::Code(1), "", line);
        assert_eq!(
            e.to_string(),
            "listing address claims failed on local (exit 1): ferry's container helper printed nothing \
             on stdout or stderr; to see why, run it on local as root with tracing: \
             sh -x /run/ferry/ferry-nspawn-0123456789ab.sh claims "
        );
        let e = failed("starting", "h", Exit::Signal(9), " \n\n", line);
        assert!(
            e.to_string().starts_with(
                "starting failed on h (killed by signal 9): ferry's container helper printed nothing"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_failure_shows_error_lines_first_then_the_output() {
        let e = failed("x", "h", Exit::Code(4), "owner=a\nerror: it broke: do this\n", "sh s x");
        assert_eq!(e.to_string(), "x failed on h (exit 4): it broke: do this\nowner=a");
        assert_eq!(e.exit_code(), Some(4), "callers tell failures apart by exit status");
        assert_eq!(ProviderError::from(&e).code.as_deref(), Some("remoteFailed"));
    }

    #[test]
    fn ssh_failures_keep_their_class() {
        let e = HostError::Ssh(SshError::Unreachable { host: "h".into(), detail: "refused".into() });
        let pe = e.provider_error_in("processes.set `web`");
        assert_eq!((pe.code.as_deref(), pe.retryable), (Some("unreachable"), true));
        assert_eq!(pe.message, "processes.set `web`: cannot connect to h: refused");
        let e = HostError::Ssh(SshError::HostKeyMismatch {
            host: "h".into(),
            expected: "k".into(),
            offered: None,
        });
        assert_eq!(ProviderError::from(e).code.as_deref(), Some("hostKeyMismatch"));
    }
}
