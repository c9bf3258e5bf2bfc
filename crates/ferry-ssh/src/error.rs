//! SSH failures, classified.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshError {
    /// The host offered a key other than the pinned/recorded one.
    HostKeyMismatch { host: String, expected: String, offered: Option<String> },
    /// No SSH connection could be made (refused, timed out, no route, name unknown…).
    Unreachable { host: String, detail: String },
    /// The host refused the credentials.
    Auth { host: String, user: String, detail: String },
    /// A command ran but failed.
    Failed { host: String, what: String, status: Option<i32>, stderr: String },
    /// A command did not finish in time.
    Timeout { host: String, what: String, seconds: u64 },
    /// Local trouble: cannot run `ssh`, cannot write the private directory…
    Local(String),
}

impl fmt::Display for SshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SshError::HostKeyMismatch { host, expected, offered } => {
                write!(f, "host key of {host} does not match: expected {}", short_key(expected))?;
                if let Some(o) = offered {
                    write!(f, ", the host offered {o}")?;
                }
                write!(
                    f,
                    ". Refusing to connect (this is what a man-in-the-middle looks like). If the host was \
                     reinstalled, check the new key's fingerprint on the host (`ssh-keygen -lf \
                     /etc/ssh/ssh_host_ed25519_key.pub`) and pin the new key: set `hostKey` to the \
                     content of that .pub file. A pinned `hostKey` always takes precedence over a key \
                     learned on first use and recorded in state"
                )
            }
            SshError::Unreachable { host, detail } => {
                write!(f, "cannot connect to {host}: {detail}")
            }
            SshError::Auth { host, user, detail } => write!(
                f,
                "{host} refused the login as {user}: {detail} (check `sshKey`, `user`, and that the key is \
                 authorized on the host)"
            ),
            SshError::Failed { host, what, status, stderr } => {
                match status {
                    Some(c) => write!(f, "{what} failed on {host} (exit {c})")?,
                    None => write!(f, "{what} failed on {host} (killed by a signal)")?,
                }
                let tail = tail_lines(stderr, 15);
                if !tail.is_empty() {
                    write!(f, ":\n{tail}")?;
                }
                Ok(())
            }
            SshError::Timeout { host, what, seconds } => {
                write!(f, "{what} on {host} did not finish within {seconds} s")
            }
            SshError::Local(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for SshError {}

/// The last `n` non-empty lines of `s`.
pub fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn short_key(k: &str) -> String {
    let mut parts = k.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(t), Some(b)) if b.len() > 24 => format!("{t} {}…{}", &b[..12], &b[b.len() - 8..]),
        _ => k.to_string(),
    }
}
