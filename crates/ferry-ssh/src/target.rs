//! Where and how to connect: the target, the login identity, the host-key policy.

use std::fmt;
use std::path::PathBuf;

/// Where and how to connect.
#[derive(Clone, Default)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub identity: Option<Identity>,
    /// `"ssh-ed25519 AAAA…"`: the key to verify against (pinned or recorded); `None` = trust on
    /// first use.
    pub host_key: Option<String>,
    /// Extra arguments for `ssh` (e.g. `["-o", "Ciphers=aes128-gcm@openssh.com"]`).
    pub options: Vec<String>,
    /// Seconds to wait for the TCP connection and the SSH handshake.
    pub connect_timeout: u64,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("identity", &self.identity.as_ref().map(|i| i.describe()))
            .field("host_key", &self.host_key)
            .finish()
    }
}

impl Target {
    pub fn new(host: impl Into<String>) -> Self {
        Target { host: host.into(), port: 22, user: "root".into(), connect_timeout: 10, ..Default::default() }
    }

    /// `user@host` (with brackets for IPv6 literals as ssh expects none: ssh takes them bare).
    pub fn destination(&self) -> String {
        format!("{}@{}", self.user, self.host)
    }

    /// `host` or `host:port` for messages.
    pub fn display(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The private key to log in with.
#[derive(Clone)]
pub enum Identity {
    /// A key file on the deployer.
    File(PathBuf),
    /// Key material (sensitive): written to a 0600 file in the connection's private directory,
    /// removed when the connection closes.
    Key(String),
}

impl Identity {
    fn describe(&self) -> String {
        match self {
            Identity::File(p) => p.display().to_string(),
            Identity::Key(_) => "(key material)".into(),
        }
    }

    /// A `sshKey` input: key material if it looks like a private key, else a path.
    pub fn from_input(s: &str) -> Identity {
        if s.contains("PRIVATE KEY-----") {
            Identity::Key(s.to_string())
        } else {
            Identity::File(PathBuf::from(s))
        }
    }
}

/// How the host key is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Only the given key is accepted.
    Verify,
    /// No key known yet: accept the offered one and report it.
    TrustOnFirstUse,
}
