//! Waiting for a child process with a timeout.

use std::process::{Child, Output};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub enum WaitError {
    Timeout,
    Io(std::io::Error),
}

/// Wait for a child with piped stdout/stderr, up to `timeout`; kill it (and its process group
/// if it leads one) when time runs out.
pub fn wait_output(mut child: Child, timeout: Duration) -> Result<Output, WaitError> {
    use std::io::Read;
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut b = vec![];
        if let Some(s) = so.as_mut() {
            let _ = s.read_to_end(&mut b);
        }
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = vec![];
        if let Some(s) = se.as_mut() {
            let _ = s.read_to_end(&mut b);
        }
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(WaitError::Timeout);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(WaitError::Io(e)),
        }
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    Ok(Output { status, stdout, stderr })
}
