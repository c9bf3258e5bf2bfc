//! The process managers, each driven through its own tools: `supervisord`/`supervisorctl`,
//! `s6-svscan`/`s6-svc`/`s6-svstat`, the generated init.d scripts, `systemctl`.
//!
//! Every manager keeps, under `STATE/.ferry/active/NAME`, a link to the config store path of
//! each process it has installed: the switch compares those with the new generation's.
//! Three operations change processes, each on a batch: `remove` (stop and uninstall),
//! `apply` (install the given configs and start, restarting processes whose config changed)
//! and `start` (start installed processes that are not running).

use std::collections::BTreeMap;

use ferry_protocol::ProviderError;
use serde::Deserialize;

use crate::host::Host;
use crate::scripts::{Sh, S6, SUPERVISORD, SYSTEMD, SYSVINIT};
use crate::supervisor::Rpc;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub manager: String,
    pub state_dir: String,
    pub runtime_dir: String,
    pub log_dir: String,
    #[serde(default)]
    pub order: Vec<String>,
    #[serde(default)]
    pub processes: BTreeMap<String, MProcess>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MProcess {
    pub config: String,
    #[serde(default)]
    pub readiness: Option<Readiness>,
    #[serde(default)]
    pub level: u32,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// A number, or a number not known yet while planning.
    #[serde(default)]
    pub uid: Option<serde_json::Value>,
    #[serde(default)]
    pub gid: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    pub tcp_port: Option<u16>,
    pub host: Option<String>,
    pub file: Option<String>,
    pub timeout: Option<u64>,
}

impl Manifest {
    /// A manifest with no processes (undeploy), keeping the directories.
    pub fn empty_like(&self) -> Manifest {
        Manifest { order: vec![], processes: BTreeMap::new(), ..self.clone() }
    }
}

/// A process as the manager reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Running {
        pid: u32,
    },
    /// Not running; the text says how (e.g. `FATAL`, `down`, `stopped`).
    Down(String),
    /// Between states (supervisord STARTING/BACKOFF, a fresh s6 start).
    Starting(String),
}

impl Status {
    pub fn describe(&self) -> String {
        match self {
            Status::Running { pid } => format!("running (pid {pid})"),
            Status::Down(s) => format!("not running ({s})"),
            Status::Starting(s) => format!("starting ({s})"),
        }
    }
}

pub struct Mgr<'a> {
    pub host: &'a Host,
    pub kind: String,
    pub state_dir: String,
    pub runtime_dir: String,
    pub log_dir: String,
    pub systemd_dir: String,
    /// systemd unit names, by process (from the manifests involved).
    pub units: BTreeMap<String, String>,
}

impl<'a> Mgr<'a> {
    pub fn new(host: &'a Host, m: &Manifest, systemd_dir: &str) -> Mgr<'a> {
        Mgr {
            host,
            kind: m.manager.clone(),
            state_dir: m.state_dir.clone(),
            runtime_dir: m.runtime_dir.clone(),
            log_dir: m.log_dir.clone(),
            systemd_dir: systemd_dir.into(),
            units: units_of(m),
        }
    }

    fn active_dir(&self) -> String {
        format!("{}/.ferry/active", self.state_dir)
    }
    /// supervisord's XML-RPC socket, when ferry can talk to it directly (a local set).
    fn rpc(&self) -> Option<Rpc> {
        (self.kind == "supervisord" && self.host.is_local())
            .then(|| Rpc::new(format!("{}/supervisord.sock", self.runtime_dir)))
    }
    fn rpc_err(&self, what: &str, e: String) -> ProviderError {
        ProviderError::new(format!("processes.set `{}`: {what}: {e}", self.host.resource))
    }
    fn scandir(&self) -> String {
        format!("{}/service", self.runtime_dir)
    }
    fn svscan_pid(&self) -> String {
        format!("{}/s6-svscan.pid", self.runtime_dir)
    }
    /// A script with the manager's shell library.
    fn script(&self) -> Sh {
        Sh::new(&[match self.kind.as_str() {
            "supervisord" => SUPERVISORD,
            "s6" => S6,
            "sysvinit" => SYSVINIT,
            _ => SYSTEMD,
        }])
    }

    /// Installed processes: name -> config store path.
    pub fn active(&self) -> Result<BTreeMap<String, String>, ProviderError> {
        if self.host.is_local() {
            let mut out = BTreeMap::new();
            let Ok(rd) = std::fs::read_dir(self.active_dir()) else { return Ok(out) };
            for e in rd.flatten() {
                if let (Ok(t), Some(n)) = (std::fs::read_link(e.path()), e.file_name().to_str()) {
                    out.insert(n.to_string(), t.display().to_string());
                }
            }
            return Ok(out);
        }
        let script = crate::scripts::common("list_active", &[self.active_dir()]);
        let out = self.host.sh("listing installed processes", &script)?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
            .collect())
    }

    fn set_active(&self, sh: &mut Sh, procs: &[(&str, &str)]) {
        let mut args = vec![self.active_dir()];
        args.extend(procs.iter().flat_map(|(n, c)| [n.to_string(), c.to_string()]));
        sh.call("set_active", &args);
    }

    fn unset_active(&self, sh: &mut Sh, names: &[&str]) {
        sh.call("unset_active", &with(&self.active_dir(), names));
    }

    /// Directories, and the manager's daemon when it has one (supervisord, s6-svscan).
    /// `conf` is the profile's manager configuration (supervisord.conf), if any.
    pub fn ensure(&self, profile: &str) -> Result<(), ProviderError> {
        let mut sh = self.script();
        sh.call("ensure_dirs", &[&self.state_dir, &self.runtime_dir, &self.log_dir, &self.active_dir()]);
        let what = match self.kind.as_str() {
            "supervisord" => {
                sh.call("sv_up", &[&self.state_dir, &self.runtime_dir, &self.log_dir, profile]);
                "starting supervisord"
            }
            "s6" => {
                let log = format!("{}/s6-svscan.log", self.log_dir);
                sh.call("s6_up", &[self.scandir(), self.svscan_pid(), log]);
                "starting s6-svscan"
            }
            _ => "creating directories",
        };
        self.host.sh(what, sh.text())?;
        Ok(())
    }

    /// Live status of `names` (all of them in one call).
    pub fn status(&self, names: &[String]) -> Result<BTreeMap<String, Status>, ProviderError> {
        let mut out = BTreeMap::new();
        if names.is_empty() {
            return Ok(out);
        }
        match self.kind.as_str() {
            "supervisord" if self.rpc().is_some() => self.status_rpc(names, &mut out),
            "supervisord" => self.status_supervisorctl(names, &mut out)?,
            "s6" => self.status_s6(names, &mut out)?,
            "sysvinit" => self.status_sysvinit(names, &mut out)?,
            _ => self.status_systemd(names, &mut out)?,
        }
        for n in names {
            out.entry(n.clone()).or_insert_with(|| Status::Down("unknown".into()));
        }
        Ok(out)
    }

    fn status_rpc(&self, names: &[String], out: &mut BTreeMap<String, Status>) {
        // Not answering: no supervisord, so nothing runs.
        let all = self.rpc().map(|r| r.all()).unwrap_or(Ok(BTreeMap::new())).unwrap_or_default();
        for n in names {
            let st = match all.get(n) {
                None => Status::Down("not loaded".into()),
                Some(i) if i.state == "RUNNING" => Status::Running { pid: i.pid },
                Some(i) if matches!(i.state.as_str(), "STARTING" | "BACKOFF" | "STOPPING") => {
                    Status::Starting(i.state.clone())
                }
                Some(i) => Status::Down(format!("{} {}", i.state, i.description).trim().to_string()),
            };
            out.insert(n.clone(), st);
        }
    }

    fn status_supervisorctl(
        &self,
        names: &[String],
        out: &mut BTreeMap<String, Status>,
    ) -> Result<(), ProviderError> {
        let mut sh = self.script();
        sh.call("sv_ctl", &[self.state_dir.as_str(), "status"]);
        let (_, text, _) = self.host.sh_status(sh.text())?;
        let mut seen = BTreeMap::new();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            let (Some(n), Some(state)) = (w.next(), w.next()) else { continue };
            let rest: Vec<&str> = w.collect();
            let st = if state == "RUNNING" {
                let pid = rest
                    .iter()
                    .position(|x| *x == "pid")
                    .and_then(|i| rest.get(i + 1))
                    .and_then(|p| p.trim_end_matches(',').parse().ok())
                    .unwrap_or(0);
                Status::Running { pid }
            } else if matches!(state, "STARTING" | "BACKOFF" | "STOPPING") {
                Status::Starting(state.into())
            } else {
                Status::Down(format!("{state} {}", rest.join(" ")).trim().to_string())
            };
            seen.insert(n.to_string(), st);
        }
        for n in names {
            out.insert(n.clone(), seen.remove(n).unwrap_or_else(|| Status::Down("not loaded".into())));
        }
        Ok(())
    }

    fn status_s6(&self, names: &[String], out: &mut BTreeMap<String, Status>) -> Result<(), ProviderError> {
        let mut sh = self.script();
        sh.call("s6_status", &with(&self.scandir(), &names.iter().map(String::as_str).collect::<Vec<_>>()));
        let (_, text, _) = self.host.sh_status(sh.text())?;
        for line in text.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            let Some(n) = w.first() else { continue };
            let st = match w.as_slice() {
                [_, "true", pid, secs, _, _] => {
                    let secs: u64 = secs.parse().unwrap_or(0);
                    let pid = pid.parse().unwrap_or(0);
                    if secs >= 1 {
                        Status::Running { pid }
                    } else {
                        Status::Starting(format!("up for {secs}s, pid {pid}"))
                    }
                }
                // Exited by itself (not killed by a signal): it failed.
                [_, "false", _, _, "true", code] if code.parse::<i32>().is_ok_and(|c| c >= 0) => {
                    Status::Down(format!("exited with status {code}"))
                }
                [_, "false", _, _, "true", _] => Status::Starting("down, wanted up".into()),
                [_, "false", ..] => Status::Down("down".into()),
                _ => Status::Down(w[1..].join(" ")),
            };
            out.insert(n.to_string(), st);
        }
        Ok(())
    }

    fn status_sysvinit(
        &self,
        names: &[String],
        out: &mut BTreeMap<String, Status>,
    ) -> Result<(), ProviderError> {
        let mut sh = self.script();
        sh.call(
            "sysv_status",
            &with(&self.runtime_dir, &names.iter().map(String::as_str).collect::<Vec<_>>()),
        );
        let text = self.host.sh("reading process status", sh.text())?;
        for line in text.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                [n, "running", pid] => {
                    out.insert(n.to_string(), Status::Running { pid: pid.parse().unwrap_or(0) });
                }
                [n, ..] => {
                    out.insert(n.to_string(), Status::Down("stopped".into()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn status_systemd(
        &self,
        names: &[String],
        out: &mut BTreeMap<String, Status>,
    ) -> Result<(), ProviderError> {
        let units: Vec<String> = names.iter().map(|n| self.unit(n)).collect();
        // A simple service is `active` as soon as it is forked, and stays so for a moment
        // after it exited: like supervisord's startsecs, it runs once its main process has
        // been up for a second (systemd.sh's `Up=`).
        let mut sh = self.script();
        sh.call("systemd_status", &units);
        let (_, text, _) = self.host.sh_status(sh.text())?;
        let mut cur: BTreeMap<&str, &str> = BTreeMap::new();
        let flush = |cur: &mut BTreeMap<&str, &str>, out: &mut BTreeMap<String, Status>| {
            if let Some(id) = cur.get("Id") {
                if let Some(n) = names.iter().find(|n| self.unit(n) == *id) {
                    let pid = cur.get("MainPID").and_then(|p| p.parse().ok()).unwrap_or(0);
                    // Seconds the main process has been up (None: unknown).
                    let up = cur.get("Up").and_then(|u| {
                        let w: Vec<f64> = u.split_whitespace().filter_map(|x| x.parse().ok()).collect();
                        match w.as_slice() {
                            [start, now, tck] if *tck > 0.0 => Some(now - start / tck),
                            _ => None,
                        }
                    });
                    let st = match cur.get("ActiveState").copied() {
                        Some("active") if pid != 0 && up.is_some_and(|u| u >= 1.0) => Status::Running { pid },
                        // No such process: it exited, systemd has not noticed yet.
                        Some("active") if pid != 0 && up.is_none() => {
                            Status::Starting(format!("exiting, pid {pid}"))
                        }
                        Some("active") => Status::Starting(format!("up for less than 1s, pid {pid}")),
                        Some("activating") => Status::Starting(format!(
                            "activating ({})",
                            cur.get("SubState").copied().unwrap_or("?")
                        )),
                        s => Status::Down(s.unwrap_or("unknown").into()),
                    };
                    out.insert(n.clone(), st);
                }
            }
            cur.clear();
        };
        for line in text.lines() {
            if line.trim().is_empty() {
                flush(&mut cur, out);
            } else if let Some((k, v)) = line.split_once('=') {
                cur.insert(k, v);
            }
        }
        flush(&mut cur, out);
        Ok(())
    }

    fn unit(&self, n: &str) -> String {
        self.units.get(n).cloned().unwrap_or_else(|| format!("{n}.service"))
    }

    /// Stop and uninstall `names` (in this order).
    pub fn remove(&self, names: &[&str]) -> Result<(), ProviderError> {
        if names.is_empty() {
            return Ok(());
        }
        let what = format!("stopping {}", names.join(", "));
        let mut sh = self.script();
        match self.kind.as_str() {
            "supervisord" => {
                sh.call("sv_unlink", &with(&self.state_dir, names));
                if let Some(rpc) = self.rpc() {
                    self.unset_active(&mut sh, names);
                    self.host.sh(&what, sh.text())?;
                    return rpc.update(names).map_err(|e| self.rpc_err("stopping processes", e));
                }
                sh.call("sv_stop", &with(&self.state_dir, names))
                    .call("sv_update", &with(&self.state_dir, names));
            }
            "s6" => {
                for n in names {
                    sh.call("s6_drop", &[&self.scandir(), *n]);
                }
                sh.call("s6_rescan_quiet", &[self.scandir()]);
            }
            "sysvinit" => {
                sh.call("sysv_remove", &with(&self.state_dir, names));
            }
            _ => {
                let units: Vec<String> = names.iter().map(|n| self.unit(n)).collect();
                let units: Vec<&str> = units.iter().map(String::as_str).collect();
                sh.call("systemd_remove", &with(&self.systemd_dir, &units));
            }
        }
        self.unset_active(&mut sh, names);
        self.host.sh(&what, sh.text()).map(|_| ())
    }

    /// Install the configs of `procs` (name, config, unit) and start them; a process whose
    /// config changed is stopped first.
    pub fn apply(
        &self,
        procs: &[(&str, &str)],
        active: &BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        if procs.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = procs.iter().map(|p| p.0).collect();
        let pairs: Vec<&str> = procs.iter().flat_map(|(n, c)| [*n, *c]).collect();
        let mut sh = self.script();
        match self.kind.as_str() {
            "supervisord" => {
                sh.call("sv_link", &with(&self.state_dir, &pairs));
                // `update NAMES` re-reads the configuration and, for these groups only, stops and
                // removes changed ones and adds (autostarts) new and changed ones.
                if let Some(rpc) = self.rpc() {
                    self.set_active(&mut sh, procs);
                    self.host.sh(&format!("installing {}", names.join(", ")), sh.text())?;
                    return rpc.update(&names).map_err(|e| self.rpc_err("starting processes", e));
                }
                let changed: Vec<&str> = names.iter().copied().filter(|n| active.contains_key(*n)).collect();
                if !changed.is_empty() {
                    sh.call("sv_stop", &with(&self.state_dir, &changed));
                }
                self.set_active(&mut sh, procs);
                sh.call("sv_update", &with(&self.state_dir, &names));
            }
            "s6" => {
                // A changed process gets a fresh service directory (and s6-supervise), so its
                // status carries no exit code of the previous instance.
                for (n, c) in procs {
                    if active.contains_key(*n) {
                        sh.call("s6_drop", &[&self.scandir(), *n]);
                    }
                    sh.call("s6_create", &[&self.scandir(), *n, *c]);
                }
                sh.call("s6_rescan", &[self.scandir()]);
                self.set_active(&mut sh, procs);
            }
            "sysvinit" => {
                for (n, c) in procs {
                    let was = if active.contains_key(*n) { "1" } else { "0" };
                    sh.call("sysv_install", &[&self.state_dir, *n, *c, was]);
                }
                self.set_active(&mut sh, procs);
            }
            _ => {
                let units: Vec<String> =
                    procs.iter().flat_map(|(n, c)| [self.unit(n), c.to_string()]).collect();
                let mut args = vec![self.systemd_dir.clone()];
                args.extend(units);
                sh.call("systemd_install", &args);
                self.set_active(&mut sh, procs);
            }
        }
        self.host.sh(&format!("starting {}", names.join(", ")), sh.text()).map(|_| ())
    }

    /// Start installed processes that are not running (same config).
    pub fn start(&self, names: &[&str]) -> Result<(), ProviderError> {
        if names.is_empty() {
            return Ok(());
        }
        let mut sh = self.script();
        match self.kind.as_str() {
            // Installed again (a supervisord started anew has none), then `update`: a group that
            // supervisord does not know is added (and started).
            "supervisord" if self.rpc().is_some() => {
                let rpc = self.rpc().expect("checked");
                sh.call("sv_relink", &with2(&self.state_dir, &self.active_dir(), names));
                self.host.sh(&format!("installing {}", names.join(", ")), sh.text())?;
                rpc.update(names).map_err(|e| self.rpc_err("starting processes", e))?;
                for n in names {
                    rpc.start(n).map_err(|e| self.rpc_err("starting processes", e))?;
                }
                return Ok(());
            }
            "supervisord" => {
                sh.call("sv_relink", &with2(&self.state_dir, &self.active_dir(), names));
                sh.call("sv_start", &with(&self.state_dir, names));
            }
            "s6" => {
                let active = self.active()?;
                for n in names {
                    let Some(c) = active.get(*n) else { continue };
                    sh.call("s6_drop", &[&self.scandir(), *n]).call("s6_create", &[&self.scandir(), *n, c]);
                }
                sh.call("s6_rescan", &[self.scandir()]);
            }
            "sysvinit" => {
                sh.call("sysv_start", &with(&self.state_dir, names));
            }
            _ => {
                let units: Vec<String> = names.iter().map(|n| self.unit(n)).collect();
                sh.call("systemd_start", &units);
            }
        }
        self.host.sh(&format!("starting {}", names.join(", ")), sh.text()).map(|_| ())
    }

    /// Stop the manager's daemon (after every process was removed).
    pub fn shutdown(&self) -> Result<(), ProviderError> {
        let mut sh = self.script();
        match self.kind.as_str() {
            "supervisord" => sh.call("sv_shutdown", &[&self.state_dir]),
            "s6" => sh.call("s6_shutdown", &[self.scandir(), self.svscan_pid()]),
            _ => return Ok(()),
        };
        self.host.sh("stopping the process manager", sh.text()).map(|_| ())
    }
}

/// `first` and then `rest`, as call arguments.
fn with<'a>(first: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![first];
    v.extend_from_slice(rest);
    v
}

fn with2<'a>(first: &'a str, second: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![first, second];
    v.extend_from_slice(rest);
    v
}

/// systemd unit names of a manifest's processes.
pub fn units_of(m: &Manifest) -> BTreeMap<String, String> {
    m.processes.iter().filter_map(|(n, p)| p.unit.clone().map(|u| (n.clone(), u))).collect()
}
