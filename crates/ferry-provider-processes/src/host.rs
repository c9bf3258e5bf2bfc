//! Where a set's commands run. Every operation on the host is a shell script (`sh -c`), so the
//! same code can later run over a `ferry-ssh` connection; only readiness probes (TCP, files)
//! are done natively for the local host.

use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_protocol::ProviderError;

pub struct Host {
    /// Resource name, for error messages.
    pub resource: String,
}

impl Host {
    pub fn local(resource: &str) -> Host {
        Host { resource: resource.into() }
    }

    /// Run `script` with `sh -c`; stdout on success, an error naming `what` (with the end of
    /// stderr) otherwise.
    pub fn sh(&self, what: &str, script: &str) -> Result<String, ProviderError> {
        let (code, out, err) = self.sh_status(script)?;
        if code == 0 {
            Ok(out)
        } else {
            Err(ProviderError::new(format!(
                "processes.set `{}`: {what} failed (exit {code}){}",
                self.resource,
                tail(&err, &out)
            )))
        }
    }

    /// Run `script`; (exit code, stdout, stderr) whatever the exit code.
    pub fn sh_status(&self, script: &str) -> Result<(i32, String, String), ProviderError> {
        let o = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| {
                ProviderError::new(format!("processes.set `{}`: cannot run sh: {e}", self.resource))
            })?;
        Ok((
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ))
    }

    pub fn tcp_ready(&self, host: &str, port: u16) -> bool {
        use std::net::ToSocketAddrs;
        let Ok(addrs) = (host, port).to_socket_addrs() else { return false };
        addrs
            .into_iter()
            .any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
    }

    pub fn file_exists(&self, path: &str) -> bool {
        std::path::Path::new(path).exists()
    }

    pub fn read_file(&self, path: &str) -> Result<String, ProviderError> {
        std::fs::read_to_string(path).map_err(|e| {
            ProviderError::new(format!("processes.set `{}`: cannot read {path}: {e}", self.resource))
        })
    }
}

fn tail(err: &str, out: &str) -> String {
    let text = if err.trim().is_empty() { out } else { err };
    let lines: Vec<&str> = text.trim().lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let start = lines.len().saturating_sub(8);
    format!(": {}", lines[start..].join("\n"))
}

/// Shell single-quoting.
pub fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
