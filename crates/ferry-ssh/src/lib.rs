//! ferry's shared SSH layer: one multiplexed OpenSSH connection per host, with verified host keys.
//!
//! ferry drives the real OpenSSH client (`ssh`), so users' `~/.ssh/config`, agents and
//! `ProxyJump`s keep working. A [`Connection`] starts one master connection (`ControlMaster`)
//! in a private directory (mode 0700) and every later command — copies (through
//! [`Connection::nix_sshopts`]), activation, keys, checks — reuses it.
//!
//! Host keys are always verified ([`HostKeyPolicy`]): against a key pinned in the deployment or
//! recorded in state, or trust-on-first-use when neither exists, in which case the key the host
//! offered is returned by [`Connection::host_key`] so the caller can record it. A mismatch is
//! [`SshError::HostKeyMismatch`]. ferry's own options come first on the command line, so a user
//! configuration cannot turn checking off behind ferry's back.
//!
//! Architecture invariant: depends on no other ferry crate; never logs key material.

mod connection;
mod error;
mod quote;
mod target;
mod wait;

pub use connection::Connection;
pub use error::{tail_lines, SshError};
pub use quote::{command_line, quote};
pub use target::{HostKeyPolicy, Identity, Target};
pub use wait::{wait_output, WaitError};

/// Normalise a public host key: `"type base64"`, comment dropped.
pub fn normalise_host_key(k: &str) -> Option<String> {
    let mut parts = k.split_whitespace();
    let (t, b) = (parts.next()?, parts.next()?);
    if !(t.starts_with("ssh-") || t.starts_with("ecdsa-") || t.starts_with("sk-")) || b.len() < 16 {
        return None;
    }
    Some(format!("{t} {b}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn quoting_survives_the_shell() {
        let words = ["echo", "a b", "it's", "$HOME", "`x`", ""];
        let line = command_line(&words);
        let out = Command::new("sh").arg("-c").arg(format!("printf '%s|' {}", &line[5..])).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a b|it's|$HOME|`x`||");
    }

    #[test]
    fn host_keys_are_normalised() {
        assert_eq!(
            normalise_host_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG root@x").as_deref(),
            Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG")
        );
        assert_eq!(normalise_host_key("hello"), None);
        assert_eq!(normalise_host_key("rsa AAAAC3NzaC1lZDI1NTE5AAAAIG"), None);
    }

    #[test]
    fn identity_from_input_tells_material_from_paths() {
        assert!(matches!(Identity::from_input("/root/.ssh/id_ed25519"), Identity::File(_)));
        assert!(matches!(
            Identity::from_input(
                "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
            ),
            Identity::Key(_)
        ));
        let t = Target { identity: Some(Identity::Key("secret".into())), ..Target::new("h") };
        assert!(!format!("{t:?}").contains("secret"));
    }

    #[test]
    fn unreachable_host_is_a_clear_error() {
        // 127.0.0.254:1 on loopback: nothing listens there.
        let t = Target { port: 1, connect_timeout: 3, ..Target::new("127.0.0.254") };
        let e = Connection::open(&t).unwrap_err();
        assert!(matches!(e, SshError::Unreachable { .. }), "{e:?}");
        assert!(e.to_string().contains("cannot connect to 127.0.0.254:1"), "{e}");
    }
}
