//! supervisord's own XML-RPC interface over its UNIX socket, for a set on the local machine.
//! `supervisorctl` is a Python program: each call costs 0.15–0.3 s of interpreter start-up,
//! and a switch needs several, where the same calls over the socket take milliseconds (see
//! bench/README.md). The requests and responses are the `xmlrpc` crate's; this module only
//! carries them over HTTP/1.0 on the socket, as `supervisorctl` does. On other hosts the
//! manager keeps using `supervisorctl` through the host's shell.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use xmlrpc::{Request, Transport, Value};

/// A process as `supervisor.getAllProcessInfo` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub state: String,
    pub pid: u32,
    pub description: String,
}

/// supervisord's fault codes that mean "already so" for the calls made here.
const BAD_NAME: i32 = 10;
const NOT_RUNNING: i32 = 70;

pub struct Rpc {
    socket: PathBuf,
}

struct Unix<'a>(&'a Path);

impl Transport for Unix<'_> {
    type Stream = Cursor<Vec<u8>>;

    fn transmit(
        self,
        request: &Request<'_>,
    ) -> Result<Self::Stream, Box<dyn std::error::Error + Send + Sync>> {
        let mut body = vec![];
        request.write_as_xml(&mut body)?;
        let mut s = UnixStream::connect(self.0)?;
        // Generous: stopProcess waits for the process to exit (up to its stopwaitsecs).
        s.set_read_timeout(Some(Duration::from_secs(600)))?;
        write!(
            s,
            "POST /RPC2 HTTP/1.0\r\nHost: localhost\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        s.write_all(&body)?;
        let mut resp = vec![];
        s.read_to_end(&mut resp)?;
        let split = resp.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no HTTP header in the answer")?;
        let head = String::from_utf8_lossy(&resp[..split]);
        let status = head.lines().next().unwrap_or("");
        if status.split_whitespace().nth(1) != Some("200") {
            return Err(format!("supervisord answered `{status}`").into());
        }
        Ok(Cursor::new(resp[split + 4..].to_vec()))
    }
}

impl Rpc {
    pub fn new(socket: impl Into<PathBuf>) -> Rpc {
        Rpc { socket: socket.into() }
    }

    fn call(&self, req: Request<'_>) -> Result<Value, xmlrpc::Error> {
        req.call(Unix(&self.socket))
    }

    fn fault_code(e: &xmlrpc::Error) -> Option<i32> {
        e.fault().map(|f| f.fault_code)
    }

    /// Every process supervisord knows, by name.
    pub fn all(&self) -> Result<BTreeMap<String, Info>, String> {
        let v = self.call(Request::new("supervisor.getAllProcessInfo")).map_err(|e| e.to_string())?;
        let mut out = BTreeMap::new();
        for p in v.as_array().unwrap_or_default() {
            let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            out.insert(
                s("name"),
                Info {
                    state: s("statename"),
                    pid: p.get("pid").and_then(Value::as_i32).unwrap_or(0) as u32,
                    description: s("description"),
                },
            );
        }
        Ok(out)
    }

    /// `supervisorctl update NAMES`: re-read the configuration, then for these groups only
    /// stop and remove the removed and changed ones, add (and so autostart) the added and
    /// changed ones. Changed processes are stopped with `stopProcess`, which answers as soon
    /// as the process is gone (`stopProcessGroup` answers on supervisord's next 1 s tick).
    pub fn update(&self, names: &[&str]) -> Result<(), String> {
        let v =
            self.call(Request::new("supervisor.reloadConfig")).map_err(|e| format!("reloadConfig: {e}"))?;
        let lists = v.as_array().and_then(|a| a.first()).and_then(Value::as_array).unwrap_or_default();
        let list = |i: usize| -> Vec<String> {
            lists
                .get(i)
                .and_then(Value::as_array)
                .unwrap_or_default()
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        };
        let (added, changed, removed) = (list(0), list(1), list(2));
        let has = |l: &[String], n: &str| l.iter().any(|x| x == n);
        for n in names {
            if has(&removed, n) || has(&changed, n) {
                self.stop(n)?;
                match self.call(Request::new("supervisor.removeProcessGroup").arg(*n)) {
                    Err(e) if Self::fault_code(&e) != Some(BAD_NAME) => {
                        return Err(format!("removeProcessGroup {n}: {e}"))
                    }
                    _ => {}
                }
            }
            if has(&added, n) || has(&changed, n) {
                self.call(Request::new("supervisor.addProcessGroup").arg(*n))
                    .map_err(|e| format!("addProcessGroup {n}: {e}"))?;
            }
        }
        Ok(())
    }

    /// Stop one program (waits until it exited); not running or unknown is fine.
    pub fn stop(&self, n: &str) -> Result<(), String> {
        match self.call(Request::new("supervisor.stopProcess").arg(format!("{n}:{n}")).arg(true)) {
            Err(e) if !matches!(Self::fault_code(&e), Some(BAD_NAME | NOT_RUNNING)) => {
                Err(format!("stopProcess {n}: {e}"))
            }
            _ => Ok(()),
        }
    }

    /// Start one program without waiting (the switch polls); already started is fine.
    pub fn start(&self, n: &str) -> Result<(), String> {
        const ALREADY_STARTED: i32 = 60;
        match self.call(Request::new("supervisor.startProcess").arg(format!("{n}:{n}")).arg(false)) {
            Err(e) if Self::fault_code(&e) != Some(ALREADY_STARTED) => Err(format!("startProcess {n}: {e}")),
            _ => Ok(()),
        }
    }
}
