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

use crate::host::{q, Host};
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
    fn supervisor_conf(&self) -> String {
        format!("{}/supervisord.conf", self.state_dir)
    }
    fn ctl(&self) -> String {
        format!("supervisorctl -c {}", q(&self.supervisor_conf()))
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
    fn initd(&self, n: &str) -> String {
        format!("{}/init.d/{n}", self.state_dir)
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
        let out = self.host.sh(
            "listing installed processes",
            &format!(
                "d={}; [ -d \"$d\" ] || exit 0; for l in \"$d\"/*; do [ -L \"$l\" ] && printf '%s %s\\n' \"${{l##*/}}\" \"$(readlink \"$l\")\"; done; true",
                q(&self.active_dir())
            ),
        )?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
            .collect())
    }

    fn set_active(&self, names: &[(&str, &str)]) -> String {
        let mut s = format!("mkdir -p {}\n", q(&self.active_dir()));
        for (n, config) in names {
            s += &format!("ln -sfn {} {}\n", q(config), q(&format!("{}/{n}", self.active_dir())));
        }
        s
    }

    fn unset_active(&self, names: &[&str]) -> String {
        names.iter().map(|n| format!("rm -f {}\n", q(&format!("{}/{n}", self.active_dir())))).collect()
    }

    /// Directories, and the manager's daemon when it has one (supervisord, s6-svscan).
    /// `conf` is the profile's manager configuration (supervisord.conf), if any.
    pub fn ensure(&self, profile: &str) -> Result<(), ProviderError> {
        let dirs = format!(
            "mkdir -p {} {} {} {}\n",
            q(&self.state_dir),
            q(&self.runtime_dir),
            q(&self.log_dir),
            q(&self.active_dir())
        );
        match self.kind.as_str() {
            "supervisord" => {
                let conf = self.supervisor_conf();
                self.host.sh(
                    "starting supervisord",
                    &format!(
                        "{dirs}mkdir -p {cd}\nln -sfn {src} {conf}\n\
                         p=$(cat {pid} 2>/dev/null)\n\
                         if [ -z \"$p\" ] || ! kill -0 \"$p\" 2>/dev/null || [ ! -S {sock} ]; then\n\
                           supervisord -c {conf} >>{log} 2>&1 </dev/null || exit 1\n\
                           i=0; until [ -S {sock} ] && {ctl} pid >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 100 ] && {{ echo 'supervisord did not come up' >&2; exit 1; }}; sleep 0.1; done\n\
                         fi",
                        cd = q(&format!("{}/conf.d", self.state_dir)),
                        src = q(&format!("{profile}/supervisord.conf")),
                        conf = q(&conf),
                        ctl = self.ctl(),
                        pid = q(&format!("{}/supervisord.pid", self.runtime_dir)),
                        sock = q(&format!("{}/supervisord.sock", self.runtime_dir)),
                        log = q(&format!("{}/supervisord.out", self.log_dir)),
                    ),
                )?;
            }
            "s6" => {
                self.host.sh(
                    "starting s6-svscan",
                    &format!(
                        "{dirs}mkdir -p {scan}\n\
                         p=$(cat {pid} 2>/dev/null)\n\
                         if [ -z \"$p\" ] || ! kill -0 \"$p\" 2>/dev/null; then\n\
                           setsid s6-svscan {scan} >>{log} 2>&1 </dev/null &\n\
                           echo $! > {pid}\n\
                           i=0; until [ -p {scan}/.s6-svscan/control ]; do i=$((i+1)); [ $i -gt 100 ] && {{ echo 's6-svscan did not come up' >&2; exit 1; }}; sleep 0.05; done\n\
                         fi",
                        scan = q(&self.scandir()),
                        pid = q(&self.svscan_pid()),
                        log = q(&format!("{}/s6-svscan.log", self.log_dir)),
                    ),
                )?;
            }
            _ => {
                self.host.sh("creating directories", &dirs)?;
            }
        }
        Ok(())
    }

    /// Live status of `names` (all of them in one call).
    pub fn status(&self, names: &[String]) -> Result<BTreeMap<String, Status>, ProviderError> {
        let mut out = BTreeMap::new();
        if names.is_empty() {
            return Ok(out);
        }
        match self.kind.as_str() {
            "supervisord" if self.rpc().is_some() => {
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
            "supervisord" => {
                let (_, text, _) = self.host.sh_status(&format!("{} status", self.ctl()))?;
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
                    out.insert(
                        n.clone(),
                        seen.remove(n).unwrap_or_else(|| Status::Down("not loaded".into())),
                    );
                }
            }
            "s6" => {
                let mut script = String::new();
                for n in names {
                    let d = q(&format!("{}/{n}", self.scandir()));
                    script += &format!(
                        "printf '%s ' {n}; if [ -d {d}/supervise ]; then s6-svstat -o up,pid,updownfor,wantedup,exitcode {d} 2>/dev/null || echo unknown; else echo missing; fi\n",
                        n = q(n)
                    );
                }
                let (_, text, _) = self.host.sh_status(&script)?;
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
            }
            "sysvinit" => {
                let mut script = String::new();
                for n in names {
                    let pid = q(&format!("{}/{n}.pid", self.runtime_dir));
                    script += &format!(
                        "p=$(cat {pid} 2>/dev/null); s=; if [ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null; then s=$(cat /proc/\"$p\"/stat 2>/dev/null); s=${{s##*) }}; s=${{s%% *}}; fi; \
                         if [ -n \"$p\" ] && [ -n \"$s\" ] && [ \"$s\" != Z ]; then echo {n} running \"$p\"; else echo {n} stopped; fi\n",
                        n = q(n)
                    );
                }
                let text = self.host.sh("reading process status", &script)?;
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
            }
            _ => {
                let units: Vec<String> = names.iter().map(|n| q(&self.unit(n))).collect();
                // A simple service is `active` as soon as it is forked, and stays so for a moment
                // after it exited: like supervisord's startsecs, it runs once its main process has
                // been up for a second. Its age: start time (/proc/PID/stat field 22, clock ticks
                // since boot) against /proc/uptime, both read on the host (in systemd's PID
                // namespace: a main PID with no /proc entry is a process that has exited).
                let (_, text, _) = self.host.sh_status(&format!(
                    "systemctl show -p Id,ActiveState,SubState,MainPID {} | while IFS= read -r l; do\n\
                     printf '%s\\n' \"$l\"\n\
                     case $l in MainPID=*) p=${{l#MainPID=}}; if [ \"$p\" != 0 ] && s=$(cat /proc/\"$p\"/stat 2>/dev/null); then \
                     s=${{s##*) }}; set -- $s; printf 'Up=%s %s %s\\n' \"${{20}}\" \"$(cut -d' ' -f1 /proc/uptime)\" \"$(getconf CLK_TCK 2>/dev/null || echo 100)\"; fi;; esac\n\
                     done",
                    units.join(" ")
                ))?;
                let mut cur: BTreeMap<&str, &str> = BTreeMap::new();
                let flush = |cur: &mut BTreeMap<&str, &str>, out: &mut BTreeMap<String, Status>| {
                    if let Some(id) = cur.get("Id") {
                        if let Some(n) = names.iter().find(|n| self.unit(n) == *id) {
                            let pid = cur.get("MainPID").and_then(|p| p.parse().ok()).unwrap_or(0);
                            // Seconds the main process has been up (None: unknown).
                            let up = cur.get("Up").and_then(|u| {
                                let w: Vec<f64> =
                                    u.split_whitespace().filter_map(|x| x.parse().ok()).collect();
                                match w.as_slice() {
                                    [start, now, tck] if *tck > 0.0 => Some(now - start / tck),
                                    _ => None,
                                }
                            });
                            let st = match cur.get("ActiveState").copied() {
                                Some("active") if pid != 0 && up.is_some_and(|u| u >= 1.0) => {
                                    Status::Running { pid }
                                }
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
                        flush(&mut cur, &mut out);
                    } else if let Some((k, v)) = line.split_once('=') {
                        cur.insert(k, v);
                    }
                }
                flush(&mut cur, &mut out);
            }
        }
        for n in names {
            out.entry(n.clone()).or_insert_with(|| Status::Down("unknown".into()));
        }
        Ok(out)
    }

    fn unit(&self, n: &str) -> String {
        self.units.get(n).cloned().unwrap_or_else(|| format!("{n}.service"))
    }

    /// Stop and uninstall `names` (in this order).
    pub fn remove(&self, names: &[&str]) -> Result<(), ProviderError> {
        if names.is_empty() {
            return Ok(());
        }
        let list = names.iter().map(|n| q(n)).collect::<Vec<_>>().join(" ");
        let script = match self.kind.as_str() {
            "supervisord" => {
                let mut s = String::new();
                for n in names {
                    s += &format!("rm -f {}\n", q(&format!("{}/conf.d/{n}.conf", self.state_dir)));
                }
                if let Some(rpc) = self.rpc() {
                    self.host
                        .sh(&format!("stopping {}", names.join(", ")), &(s + &self.unset_active(names)))?;
                    return rpc.update(names).map_err(|e| self.rpc_err("stopping processes", e));
                }
                // `stop` first: `update` alone stops a group with stopProcessGroup, which
                // answers only on supervisord's next 1 s tick, for each group in turn.
                s + &format!(
                    "{c} stop {list} >/dev/null 2>&1 || true\n{c} update {list} >/dev/null\n",
                    c = self.ctl()
                ) + &self.unset_active(names)
            }
            "s6" => {
                let mut s = String::new();
                for n in names {
                    s += &self.s6_drop(n);
                }
                s + &format!("s6-svscanctl -an {} 2>/dev/null || true\n", q(&self.scandir()))
                    + &self.unset_active(names)
            }
            "sysvinit" => {
                let mut s = String::new();
                for n in names {
                    let i = q(&self.initd(n));
                    s += &format!("if [ -e {i} ]; then {i} stop; fi\nrm -f {i}\n");
                }
                s + &self.unset_active(names)
            }
            _ => {
                let mut s = String::new();
                for n in names {
                    let u = self.unit(n);
                    // A unit that failed stays loaded (and `systemctl --failed`, the system
                    // `degraded`) after its file is gone, unless its failure is reset.
                    s += &format!(
                        "systemctl stop {u} || true\nsystemctl reset-failed {u} 2>/dev/null || true\n\
                         systemctl disable --quiet {u} 2>/dev/null || true\nrm -f {}\n",
                        q(&format!("{}/{u}", self.systemd_dir)),
                        u = q(&u)
                    );
                }
                s + "systemctl daemon-reload\n" + &self.unset_active(names)
            }
        };
        self.host.sh(&format!("stopping {}", names.join(", ")), &script).map(|_| ())
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
        let list = names.iter().map(|n| q(n)).collect::<Vec<_>>().join(" ");
        let pairs: Vec<(&str, &str)> = procs.to_vec();
        let script = match self.kind.as_str() {
            "supervisord" => {
                let mut s = format!("mkdir -p {}\n", q(&format!("{}/conf.d", self.state_dir)));
                for (n, c) in procs {
                    s += &format!(
                        "ln -sfn {} {}\n",
                        q(&format!("{c}/program.conf")),
                        q(&format!("{}/conf.d/{n}.conf", self.state_dir))
                    );
                }
                // `update NAMES` re-reads the configuration and, for these groups only, stops and
                // removes changed ones and adds (autostarts) new and changed ones.
                if let Some(rpc) = self.rpc() {
                    self.host
                        .sh(&format!("installing {}", names.join(", ")), &(s + &self.set_active(&pairs)))?;
                    return rpc.update(&names).map_err(|e| self.rpc_err("starting processes", e));
                }
                let changed: Vec<String> =
                    procs.iter().filter(|p| active.contains_key(p.0)).map(|p| q(p.0)).collect();
                if !changed.is_empty() {
                    s += &format!("{} stop {} >/dev/null 2>&1 || true\n", self.ctl(), changed.join(" "));
                }
                s + &self.set_active(&pairs) + &format!("{} update {list}\n", self.ctl())
            }
            "s6" => {
                // A changed process gets a fresh service directory (and s6-supervise), so its
                // status carries no exit code of the previous instance.
                let mut s = String::new();
                for (n, c) in procs {
                    if active.contains_key(*n) {
                        s += &self.s6_drop(n);
                    }
                    s += &self.s6_create(n, c);
                }
                s + &format!("s6-svscanctl -a {}\n", q(&self.scandir())) + &self.set_active(&pairs)
            }
            "sysvinit" => {
                let mut s = format!("mkdir -p {}\n", q(&format!("{}/init.d", self.state_dir)));
                for (n, c) in procs {
                    let i = q(&self.initd(n));
                    if active.contains_key(*n) {
                        s += &format!("if [ -e {i} ]; then {i} stop; fi\n");
                    }
                    s += &format!("ln -sfn {} {i}\n{i} start\n", q(&format!("{c}/init.d")));
                }
                s + &self.set_active(&pairs)
            }
            _ => {
                let mut s = format!("mkdir -p {}\n", q(&self.systemd_dir));
                for (n, c) in procs {
                    let u = self.unit(n);
                    s += &format!(
                        "ln -sfn {} {}\n",
                        q(&format!("{c}/{u}")),
                        q(&format!("{}/{u}", self.systemd_dir))
                    );
                }
                s += "systemctl daemon-reload\n";
                for (n, _) in procs {
                    let u = self.unit(n);
                    // Enabled (its [Install] section: multi-user.target), so it runs after a reboot.
                    s += &format!("systemctl enable --quiet {u}\nsystemctl restart {u}\n", u = q(&u));
                }
                s + &self.set_active(&pairs)
            }
        };
        self.host.sh(&format!("starting {}", names.join(", ")), &script).map(|_| ())
    }

    /// Start installed processes that are not running (same config).
    pub fn start(&self, names: &[&str]) -> Result<(), ProviderError> {
        if names.is_empty() {
            return Ok(());
        }
        let list = names.iter().map(|n| q(n)).collect::<Vec<_>>().join(" ");
        let script = match self.kind.as_str() {
            // `update` first: a group that supervisord does not know (a new supervisord) is added.
            "supervisord" if self.rpc().is_some() => {
                let rpc = self.rpc().expect("checked");
                rpc.update(names).map_err(|e| self.rpc_err("starting processes", e))?;
                for n in names {
                    rpc.start(n).map_err(|e| self.rpc_err("starting processes", e))?;
                }
                return Ok(());
            }
            "supervisord" => format!("{c} update {list} >/dev/null; {c} start {list}\n", c = self.ctl()),
            "s6" => {
                let active = self.active()?;
                let mut s = String::new();
                for n in names {
                    let Some(c) = active.get(*n) else { continue };
                    s += &self.s6_drop(n);
                    s += &self.s6_create(n, c);
                }
                s + &format!("s6-svscanctl -a {}\n", q(&self.scandir()))
            }
            "sysvinit" => names.iter().map(|n| format!("{} start\n", q(&self.initd(n)))).collect(),
            _ => names
                .iter()
                .map(|n| {
                    let u = self.unit(n);
                    format!("systemctl start {}\n", q(&u))
                })
                .collect(),
        };
        self.host.sh(&format!("starting {}", names.join(", ")), &script).map(|_| ())
    }

    /// Stop a service, end its s6-supervise, remove its directory. The directory is first
    /// renamed to a dot name, which s6-svscan ignores: otherwise it would start a new
    /// s6-supervise for it as soon as the old one exits.
    fn s6_drop(&self, n: &str) -> String {
        let d = q(&format!("{}/{n}", self.scandir()));
        let old = q(&format!("{}/.{n}.old", self.scandir()));
        format!(
            "rm -rf {old}; if [ -d {d} ]; then mv {d} {old}; \
             if [ -d {old}/supervise ] && s6-svok {old} 2>/dev/null; then s6-svc -wD -T 30000 -d {old} || true; s6-svc -x {old} || true; \
             i=0; while s6-svok {old} 2>/dev/null; do i=$((i+1)); [ $i -gt 200 ] && break; sleep 0.05; done; fi; rm -rf {old}; fi\n"
        )
    }

    /// A service directory for config `c`, moved into place whole (s6-svscan may scan any time).
    fn s6_create(&self, n: &str, c: &str) -> String {
        let d = q(&format!("{}/{n}", self.scandir()));
        let tmp = q(&format!("{}/.{n}.new", self.scandir()));
        format!(
            "rm -rf {tmp}; mkdir -p {tmp}\n\
             for f in run finish timeout-kill dependencies; do if [ -e {c}/$f ]; then ln -s {c}/$f {tmp}/$f; fi; done\n\
             ln -s {c} {tmp}/config\nmv {tmp} {d}\n",
            c = q(c)
        )
    }

    /// Stop the manager's daemon (after every process was removed).
    pub fn shutdown(&self) -> Result<(), ProviderError> {
        let script = match self.kind.as_str() {
            "supervisord" => format!(
                "if {c} pid >/dev/null 2>&1; then p=$({c} pid); {c} shutdown >/dev/null 2>&1; \
                 i=0; while kill -0 \"$p\" 2>/dev/null; do i=$((i+1)); [ $i -gt 200 ] && break; sleep 0.05; done; fi\n",
                c = self.ctl()
            ),
            "s6" => format!(
                "p=$(cat {pid} 2>/dev/null); if [ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null; then s6-svscanctl -t {scan} 2>/dev/null || kill \"$p\"; \
                 i=0; while kill -0 \"$p\" 2>/dev/null; do i=$((i+1)); [ $i -gt 200 ] && break; sleep 0.05; done; fi; rm -f {pid}\n",
                pid = q(&self.svscan_pid()),
                scan = q(&self.scandir())
            ),
            _ => return Ok(()),
        };
        self.host.sh("stopping the process manager", &script).map(|_| ())
    }
}

/// systemd unit names of a manifest's processes.
pub fn units_of(m: &Manifest) -> BTreeMap<String, String> {
    m.processes.iter().filter_map(|(n, p)| p.unit.clone().map(|u| (n.clone(), u))).collect()
}
