//! The real executor: the local machine (`sh -c`), an SSH target (one multiplexed
//! connection, host key verified or learned; privileged scripts through the host's `become`),
//! or a running podman container (`podman exec -i CONTAINER sh -c`).

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_ssh::{quote, wait_output, Connection, WaitError};

use crate::error::{Exit, HostError};
use crate::exec::{Copied, Copy, HostExec, Output, Script, Transport};
use crate::spec::{Become, HostSpec};

enum Inner {
    Local,
    Ssh { conn: Box<Connection>, escalation: Become },
    Podman { container: String },
}

/// A host ferry reaches, for the length of one provider call.
pub struct HostConnection {
    label: String,
    inner: Inner,
}

impl HostConnection {
    /// Reach `spec`. SSH: the host key pinned in the spec, else `recorded` (learned on an
    /// earlier run), else trust on first use.
    pub fn open(spec: &HostSpec, recorded: Option<String>) -> Result<HostConnection, HostError> {
        let inner = match spec {
            HostSpec::Local => Inner::Local,
            HostSpec::Ssh(s) => {
                let conn = Connection::open(&s.target(recorded))?;
                Inner::Ssh { conn: Box::new(conn), escalation: s.escalation() }
            }
            HostSpec::Podman(c) => Inner::Podman { container: c.clone() },
        };
        Ok(HostConnection { label: spec.label(), inner })
    }

    /// The SSH connection (SSH hosts only): for what only SSH has — a fresh login (magic
    /// rollback's confirmation), `NIX_SSHOPTS`.
    pub fn ssh(&self) -> Option<&Connection> {
        match &self.inner {
            Inner::Ssh { conn, .. } => Some(conn),
            _ => None,
        }
    }

    /// How privileged scripts become root here.
    pub fn escalation(&self) -> Become {
        match &self.inner {
            Inner::Ssh { escalation, .. } => *escalation,
            _ => Become::None,
        }
    }

    /// The remote command line that runs `script` (SSH): `[BECOME…] sh -c 'SCRIPT'`. The script
    /// is always run by `sh`, whatever the user's login shell.
    pub fn remote_line(&self, script: &str, privileged: bool) -> String {
        remote_line(if privileged { self.escalation() } else { Become::None }, script)
    }
}

/// `[BECOME…] sh -c 'SCRIPT'`.
pub fn remote_line(escalation: Become, script: &str) -> String {
    let mut words: Vec<String> = escalation.prefix().iter().map(|w| w.to_string()).collect();
    words.extend(["sh".into(), "-c".into(), quote(script)]);
    words.join(" ")
}

impl HostExec for HostConnection {
    fn label(&self) -> &str {
        &self.label
    }

    fn transport(&self) -> Transport {
        match self.inner {
            Inner::Local => Transport::Local,
            Inner::Ssh { .. } => Transport::Ssh,
            Inner::Podman { .. } => Transport::Podman,
        }
    }

    fn host_key(&self) -> Option<String> {
        self.ssh().map(|c| c.host_key().to_string())
    }

    fn exec(&self, s: &Script) -> Result<Output, HostError> {
        match &self.inner {
            Inner::Local => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(s.script);
                local_output(c, s, "sh", &self.label)
            }
            Inner::Ssh { conn, .. } => {
                let line = self.remote_line(s.script, s.privileged);
                let o = conn.output(conn.command(&line), s.what, s.stdin, s.timeout)?;
                let out = Output {
                    exit: Exit::from_status(o.status),
                    stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
                };
                // ssh's own failures exit 255 (connection lost, host key, login).
                if out.exit == Exit::Code(255) {
                    return Err(HostError::Ssh(conn.classify(&out.stderr, s.what)));
                }
                Ok(out)
            }
            Inner::Podman { container } => {
                let mut c = Command::new("podman");
                c.args(["exec", "-i", container, "sh", "-c", s.script]);
                let out = local_output(c, s, "podman", &self.label)?;
                // podman's own failures (no such container, not running) exit 125.
                if out.exit == Exit::Code(125) {
                    return Err(HostError::Podman {
                        container: container.clone(),
                        detail: ferry_ssh::tail_lines(&out.stderr, 8),
                    });
                }
                Ok(out)
            }
        }
    }

    fn copy_closure(&self, c: &Copy) -> Result<Copied, HostError> {
        match &self.inner {
            Inner::Local => Ok(Copied::default()),
            Inner::Ssh { .. } => crate::transfer::copy_over_ssh(self, c),
            Inner::Podman { container } => crate::transfer::copy_into_podman(self, container, c),
        }
    }

    fn interactive(&self, script: &str, tty: bool) -> Result<Command, HostError> {
        Ok(match &self.inner {
            Inner::Local => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(script);
                c
            }
            Inner::Ssh { conn, .. } => {
                let line = self.remote_line(script, true);
                if tty {
                    conn.interactive_command(Some(&line))
                } else {
                    conn.command(&line)
                }
            }
            Inner::Podman { container } => {
                let mut c = Command::new("podman");
                c.arg("exec").arg(if tty { "-it" } else { "-i" }).args([container, "sh", "-c", script]);
                c
            }
        })
    }

    fn close(&self) {
        if let Some(c) = self.ssh() {
            c.close();
        }
    }
}

/// Run a local command for `s`, feeding its stdin, within its timeout.
pub(crate) fn local_output(
    mut c: Command,
    s: &Script,
    program: &str,
    host: &str,
) -> Result<Output, HostError> {
    c.stdin(if s.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| HostError::Spawn {
        what: s.what.to_string(),
        program: program.to_string(),
        detail: e.to_string(),
    })?;
    if let (Some(data), Some(mut w)) = (s.stdin, child.stdin.take()) {
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
    }
    let o = wait_output(child, s.timeout).map_err(|e| match e {
        WaitError::Timeout => HostError::Timeout {
            what: s.what.to_string(),
            host: host.to_string(),
            seconds: s.timeout.as_secs(),
        },
        WaitError::Io(e) => {
            HostError::Spawn { what: s.what.to_string(), program: program.to_string(), detail: e.to_string() }
        }
    })?;
    Ok(Output {
        exit: Exit::from_status(o.status),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    })
}

/// A script run locally (the deployer), for transfers: `what` names it in errors.
pub(crate) fn run_local(c: Command, what: &str, program: &str) -> Result<String, HostError> {
    let s = Script::new(what, "").timeout(Duration::from_secs(6 * 3600));
    let out = local_output(c, &s, program, "the deployer")?;
    if out.success() {
        return Ok(out.stdout);
    }
    Err(HostError::Failed {
        what: what.to_string(),
        host: "the deployer".into(),
        exit: out.exit,
        output: out.stderr,
        command: program.to_string(),
        helper: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileged_lines_use_the_chosen_tool_and_always_sh() {
        assert_eq!(remote_line(Become::Sudo, "echo 'a b'"), r#"sudo -n sh -c "echo 'a b'""#);
        assert_eq!(remote_line(Become::Doas, "id -u"), "doas -n sh -c 'id -u'");
        assert_eq!(remote_line(Become::Run0, "id -u"), "run0 --no-ask-password sh -c 'id -u'");
        assert_eq!(remote_line(Become::None, "id -u"), "sh -c 'id -u'");
        // What the remote shell makes of the line is the script, intact.
        let line = remote_line(Become::None, "printf '%s|' \"$0\" 'it'\\''s'");
        let out = Command::new("sh").arg("-c").arg(&line).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "sh|it's|");
    }

    #[test]
    fn local_scripts_report_exit_status_output_and_timeouts() {
        let h = HostConnection::open(&HostSpec::Local, None).unwrap();
        let out = h.exec(&Script::new("t", "cat; echo err >&2; exit 3").stdin(Some(b"in"))).unwrap();
        assert_eq!((out.exit, out.stdout.as_str(), out.stderr.as_str()), (Exit::Code(3), "in", "err\n"));
        let e = h.run(&Script::new("failing", "echo 'error: do this'; exit 4")).unwrap_err();
        assert_eq!(e.exit_code(), Some(4));
        assert_eq!(e.to_string(), "failing failed on local (exit 4): do this");
        let e = h.run(&Script::new("sleeping", "sleep 5").timeout(Duration::from_millis(200))).unwrap_err();
        assert!(matches!(e, HostError::Timeout { .. }), "{e:?}");
    }
}
