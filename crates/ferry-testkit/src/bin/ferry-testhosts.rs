//! `ferry-testhosts`: test hosts (see `ferry_testkit::host`) that outlive the command, for
//! benchmarks and manual experiments. Needs root.
//!
//! ```text
//! ferry-testhosts up --dir DIR NAME...   start hosts DIR/NAME (or keep the running ones), detached
//! ferry-testhosts down --dir DIR         stop every host of DIR, release their addresses
//! ferry-testhosts list --dir DIR         the running hosts of DIR
//! ```
//!
//! `up` and `list` write `DIR/hosts.json`: `[{"name", "addr", "port", "hostKey", "clientKey"}]`
//! for every running host of DIR (`hostKey` is `"ssh-ed25519 AAAA…"`, `clientKey` the path of
//! a private key authorized for root). `down` removes it.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use ferry_testkit::host::{running_hosts, stop_hosts, TestHost};

const USAGE: &str = "usage: ferry-testhosts up --dir DIR NAME...
       ferry-testhosts down --dir DIR
       ferry-testhosts list --dir DIR

Test hosts (private mount namespaces running sshd on 127.0.0.N, see ferry_testkit::host) that
keep running after the command exits. `up` starts hosts DIR/NAME... in parallel (a running one is
kept) and writes DIR/hosts.json: [{\"name\",\"addr\",\"port\",\"hostKey\",\"clientKey\"}] for every
running host of DIR. `down` stops every host of DIR (only processes inside their namespaces) and
releases their addresses. Needs root.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Usage(msg)) => {
            if !msg.is_empty() {
                eprintln!("ferry-testhosts: {msg}\n");
            }
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
        Err(Failed(msg)) => {
            eprintln!("ferry-testhosts: {msg}");
            ExitCode::FAILURE
        }
    }
}

enum Error {
    Usage(String),
    Failed(String),
}
use Error::{Failed, Usage};

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Failed(e.to_string())
    }
}

fn run(args: &[String]) -> Result<(), Error> {
    let Some((command, rest)) = args.split_first() else { return Err(Usage(String::new())) };
    if matches!(command.as_str(), "-h" | "--help" | "help") {
        println!("{USAGE}");
        return Ok(());
    }
    let mut dir: Option<PathBuf> = None;
    let mut names: Vec<String> = vec![];
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => dir = Some(it.next().ok_or_else(|| Usage("--dir needs a value".into()))?.into()),
            s if s.starts_with("--dir=") => dir = Some(s["--dir=".len()..].into()),
            "-h" | "--help" => return Err(Usage(String::new())),
            s if s.starts_with('-') => return Err(Usage(format!("unknown option {s}"))),
            s => names.push(s.to_string()),
        }
    }
    let dir = dir.ok_or_else(|| Usage("--dir DIR is required".into()))?;
    match command.as_str() {
        "up" => {
            if names.is_empty() {
                return Err(Usage("up: name at least one host".into()));
            }
            up(&dir, &names)
        }
        "down" | "list" if !names.is_empty() => Err(Usage(format!("{command} takes no host names"))),
        "down" => down(&dir),
        "list" => {
            let hosts = running_hosts(&dir)?;
            if dir.is_dir() {
                write_json(&dir, &hosts)?;
            }
            table(&hosts, &|_| "running");
            Ok(())
        }
        other => Err(Usage(format!("unknown command {other}"))),
    }
}

fn up(dir: &Path, names: &[String]) -> Result<(), Error> {
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = names.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(Usage(format!("host {dup} named twice")));
    }
    std::fs::create_dir_all(dir)?;
    let start = Instant::now();
    // One thread per host: starting one is mostly waiting (ssh-keygen, unshare, sshd).
    let results: Vec<(String, io::Result<&'static str>)> = std::thread::scope(|s| {
        let handles: Vec<_> = names.iter().map(|n| (n, s.spawn(move || up_one(dir, n)))).collect();
        handles
            .into_iter()
            .map(|(n, h)| (n.clone(), h.join().unwrap_or_else(|_| Err(io::Error::other("panicked")))))
            .collect()
    });
    let hosts = running_hosts(dir)?;
    write_json(dir, &hosts)?;
    let status = |h: &TestHost| {
        results
            .iter()
            .find(|(n, _)| n == h.name())
            .and_then(|(_, r)| r.as_ref().ok().copied())
            .unwrap_or("running")
    };
    table(&hosts, &status);
    let failed: Vec<String> =
        results.iter().filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}"))).collect();
    println!(
        "{} host(s) running in {} ({:.1} s); info in {}",
        hosts.len(),
        dir.display(),
        start.elapsed().as_secs_f64(),
        dir.join("hosts.json").display()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failed(format!("could not start:\n{}", failed.join("\n"))))
    }
}

/// Keep host `name` if it runs (restarting sshd if it is down), else start it detached.
fn up_one(dir: &Path, name: &str) -> io::Result<&'static str> {
    if let Some(host) = TestHost::attach(dir, name)? {
        host.start_sshd()?;
        return Ok("kept");
    }
    TestHost::start_detached(dir, name)?;
    Ok("started")
}

fn down(dir: &Path) -> Result<(), Error> {
    let stopped = stop_hosts(dir)?;
    let json = dir.join("hosts.json");
    if json.exists() {
        std::fs::remove_file(json)?;
    }
    println!("stopped {} host(s) of {}{}", stopped.len(), dir.display(), list_suffix(&stopped));
    Ok(())
}

fn list_suffix(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(": {}", names.join(" "))
    }
}

fn write_json(dir: &Path, hosts: &[TestHost]) -> io::Result<()> {
    let list: Vec<serde_json::Value> = hosts
        .iter()
        .map(|h| {
            serde_json::json!({
                "name": h.name(),
                "addr": h.addr(),
                "port": h.port(),
                "hostKey": h.host_key(),
                "clientKey": h.client_key().display().to_string(),
            })
        })
        .collect();
    let tmp = dir.join(".hosts.json.tmp");
    std::fs::write(&tmp, format!("{:#}\n", serde_json::Value::Array(list)))?;
    std::fs::rename(tmp, dir.join("hosts.json"))
}

fn table(hosts: &[TestHost], status: &dyn Fn(&TestHost) -> &'static str) {
    let width = hosts.iter().map(|h| h.name().len()).max().unwrap_or(0).max(4);
    println!("{:width$}  {:<15}  {:>4}  STATUS", "NAME", "ADDRESS", "PORT");
    for h in hosts {
        println!("{:width$}  {:<15}  {:>4}  {}", h.name(), h.addr(), h.port(), status(h));
    }
}
