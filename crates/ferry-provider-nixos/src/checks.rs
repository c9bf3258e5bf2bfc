//! Health checks: commands run on the host over the shared connection, and HTTP requests made
//! from the deployer. Each check is tried `1 + retries` times, `interval` seconds apart.

use std::time::Duration;

use ferry_hosts::{HostExec, Script};

use crate::schema::Check;

/// Run every check in order; the first one that keeps failing is the error.
pub fn run_all(host: &dyn HostExec, checks: &[Check], progress: &dyn Fn(String)) -> Result<(), String> {
    for (i, c) in checks.iter().enumerate() {
        let what = describe(c);
        progress(format!("check {}/{}: {what}", i + 1, checks.len()));
        let mut last = String::new();
        let mut passed = false;
        for attempt in 0..=c.retries {
            if attempt > 0 {
                std::thread::sleep(Duration::from_secs(c.interval));
            }
            match once(host, c) {
                Ok(()) => {
                    passed = true;
                    break;
                }
                Err(e) => last = e,
            }
        }
        if !passed {
            return Err(format!("health check {what} failed after {} attempt(s): {last}", c.retries + 1));
        }
    }
    Ok(())
}

pub fn describe(c: &Check) -> String {
    match (&c.command, &c.http) {
        (Some(cmd), _) => format!("`{}`", cmd.join(" ")),
        (_, Some(url)) => format!("GET {url}"),
        _ => "(empty)".into(),
    }
}

fn once(host: &dyn HostExec, c: &Check) -> Result<(), String> {
    let timeout = Duration::from_secs(c.timeout);
    if let Some(cmd) = &c.command {
        // As the SSH user, as written: a check is not given root.
        let line = ferry_ssh::command_line(cmd);
        return host
            .run(&Script::new("health check", &line).timeout(timeout).privileged(false))
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    let url = c.http.as_deref().unwrap_or_default();
    let agent = ureq::AgentBuilder::new().timeout(timeout).redirects(0).build();
    let status = match agent.get(url).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => return Err(e.to_string()),
    };
    if status == c.status {
        Ok(())
    } else {
        Err(format!("HTTP status {status}, expected {}", c.status))
    }
}
