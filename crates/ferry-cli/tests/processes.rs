//! `processes.set` and `ids.pool` end to end: the ferry binary deploying process sets built
//! with `ferry.lib.processes` (busybox processes from the test package set) under the real
//! supervisord, s6-svscan and generated sysvinit scripts on this machine. Each process writes
//! its own PID to a file (`exec` keeps it), so the tests see exactly which processes restarted.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_testkit::{Run, Sandbox};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

fn http_get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().ok()?,
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut b = String::new();
    s.read_to_string(&mut b).ok()?;
    Some(b)
}

/// A process of a test set: Nix for `mkProcess`'s arguments.
fn web(dir: &str, name: &str, port: u16, page: &str, extra: &str) -> String {
    format!(
        r#"{name} = p.mkProcess {{
      command = [ "sh" "-c" "echo $$ > {dir}/pids/{name}; exec httpd -f -p 127.0.0.1:{port} -h ${{t.writeTree "{name}-root" {{ "index.html" = "{page}"; }}}}" ];
      readiness.tcpPort = {port};
      {extra}
    }};"#
    )
}

fn sleeper(dir: &str, name: &str, version: &str, extra: &str) -> String {
    format!(
        r#"{name} = p.mkProcess {{
      command = [ "sh" "-c" "echo $$ > {dir}/pids/{name}; exec sleep 100000" ];
      environment.VERSION = "{version}";
      {extra}
    }};"#
    )
}

struct Set<'a> {
    sb: &'a Sandbox,
    manager: &'a str,
}

impl<'a> Set<'a> {
    fn new(sb: &'a Sandbox, manager: &'a str) -> Set<'a> {
        std::fs::create_dir_all(sb.path().join("pids")).unwrap();
        Set { sb, manager }
    }

    fn dir(&self) -> String {
        self.sb.path().display().to_string()
    }

    fn write(&self, procs: &[String]) {
        self.sb.deployment(&format!(
            r#"{{ resources, ferry, ... }}:
let t = import {tk} {{ }}; p = ferry.lib.processes; in {{
  resources.web = {{
    type = "processes.set";
    inputs = p.set {{
      pkgs = t.pkgs; manager = "{m}"; name = "web";
      stateDir = "@DIR@/state"; profilePath = "@DIR@/profiles/processes-web"; startTimeout = 15;
      processes = {{
{procs}
      }};
    }};
  }};
}}
"#,
            tk = ferry_testkit::testkit_nix(),
            m = self.manager,
            procs = procs.join("\n")
        ));
    }

    fn pid(&self, name: &str) -> Option<u32> {
        self.sb.read(&format!("pids/{name}")).and_then(|s| s.trim().parse().ok())
    }

    fn alive(&self, name: &str) -> bool {
        self.pid(name).is_some_and(ferry_testkit::running)
    }

    fn pids(&self, names: &[&str]) -> BTreeMap<String, Option<u32>> {
        names.iter().map(|n| (n.to_string(), self.pid(n))).collect()
    }

    fn generation(&self) -> String {
        std::fs::read_link(self.sb.path().join("profiles/processes-web"))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    fn apply(&self) -> Run {
        self.sb.ferry(&["apply", "--yes", "-v"])
    }
}

fn kill(pid: &str) {
    let _ = std::process::Command::new("kill").arg(pid).stderr(std::process::Stdio::null()).status();
}

/// Stops whatever a test left running: `ferry destroy`, then the managers' daemons and the
/// processes by their PID files.
struct Cleanup<'a>(&'a Sandbox);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.ferry(&["destroy", "--yes"]);
        let dir = self.0.path();
        for f in ["state/run/supervisord.pid", "state/run/s6-svscan.pid"] {
            if let Ok(p) = std::fs::read_to_string(dir.join(f)) {
                kill(p.trim());
            }
        }
        if let Ok(rd) = std::fs::read_dir(dir.join("pids")) {
            for e in rd.flatten() {
                if let Ok(p) = std::fs::read_to_string(e.path()) {
                    kill(p.trim());
                }
            }
        }
    }
}

/// The scenario every manager goes through.
fn lifecycle(manager: &str) {
    let sb = Sandbox::new(BIN);
    let _c = Cleanup(&sb);
    let s = Set::new(&sb, manager);
    let d = s.dir();
    let (db_port, app_port, queue_port) =
        (ferry_testkit::free_port(), ferry_testkit::free_port(), ferry_testkit::free_port());
    let db = web(&d, "db", db_port, "db v1", "");
    let app = |page: &str| web(&d, "app", app_port, page, r#"dependsOn = [ "db" ];"#);
    let worker = |v: &str| sleeper(&d, "worker", v, r#"dependsOn = [ "db" ];"#);

    // Deploy three processes, one depending on another.
    s.write(&[db.clone(), app("app v1"), worker("1")]);
    let r = s.apply().ok();
    assert!(r.stdout.contains("1 created"), "{}", r.stdout);
    for n in ["db", "app", "worker"] {
        assert!(s.alive(n), "{n} runs after the first apply\n{}", r.stderr);
    }
    assert!(http_get(app_port).unwrap_or_default().contains("app v1"));
    let g1 = s.generation();
    assert!(g1.ends_with("processes-web-1-link"), "{g1}");
    let before = s.pids(&["db", "app", "worker"]);

    // A no-op apply touches nothing.
    let r = s.apply().ok();
    assert!(r.stdout.contains("No changes."), "{}", r.stdout);
    assert_eq!(s.pids(&["db", "app", "worker"]), before);

    // Change one process: only it restarts.
    s.write(&[db.clone(), app("app v1"), worker("2")]);
    let r = s.apply().ok();
    assert!(r.stderr.contains("restarted worker"), "{}", r.stderr);
    assert_ne!(s.pid("worker"), before["worker"], "worker restarted");
    assert!(s.alive("worker"));
    assert_eq!(s.pid("db"), before["db"], "db untouched");
    assert_eq!(s.pid("app"), before["app"], "app untouched");
    assert!(s.generation().ends_with("-2-link"));

    // Remove one: it stops, the others stay.
    let worker_pid = s.pid("worker");
    s.write(&[db.clone(), app("app v1")]);
    s.apply().ok();
    assert!(!worker_pid.is_some_and(ferry_testkit::running));
    assert_eq!(s.pid("db"), before["db"]);
    assert_eq!(s.pid("app"), before["app"]);

    // Add two, one depending on the other: the dependent starts only once its dependency
    // answers (queue takes a second to listen; consumer fails unless queue answers at start).
    let queue = format!(
        r#"queue = p.mkProcess {{
      command = [ "sh" "-c" "echo $$ > {d}/pids/queue; sleep 1; exec httpd -f -p 127.0.0.1:{queue_port} -h ${{t.writeTree "q" {{ "index.html" = "queue"; }}}}" ];
      readiness.tcpPort = {queue_port};
    }};"#
    );
    let consumer = format!(
        r#"consumer = p.mkProcess {{
      command = [ "sh" "-c" "wget -q -O {d}/consumed http://127.0.0.1:{queue_port}/ || exit 1; echo $$ > {d}/pids/consumer; exec sleep 100000" ];
      dependsOn = [ "queue" ];
    }};"#
    );
    s.write(&[db.clone(), app("app v1"), queue.clone(), consumer.clone()]);
    let r = s.apply().ok();
    assert!(s.alive("queue") && s.alive("consumer"), "{}", r.stderr);
    assert_eq!(sb.read("consumed").as_deref(), Some("queue"));
    assert_eq!(s.pid("db"), before["db"]);
    let g4 = s.generation();
    assert!(g4.ends_with("-4-link"), "{g4}");

    // A process that fails to start fails the switch; everything returns to generation 4.
    let broken =
        r#"broken = p.mkProcess { command = [ "sh" "-c" "echo broken >&2; exit 1" ]; };"#.to_string();
    let app4 = s.pid("app");
    s.write(&[db.clone(), app("app v2"), queue.clone(), consumer.clone(), broken]);
    let r = s.apply().expect(1);
    assert!(r.all().contains("`broken`"), "the error names the process: {}", r.all());
    assert!(r.all().contains("rolled back to the previous generation"), "{}", r.all());
    assert_eq!(s.generation(), g4, "the profile is unchanged");
    assert!(http_get(app_port).unwrap_or_default().contains("app v1"), "app runs its previous config again");
    assert!(s.alive("app") && s.alive("db") && s.alive("queue") && s.alive("consumer"));
    assert_eq!(s.pid("db"), before["db"]);
    let _ = app4;

    // Back to a good model; then roll back with the CLI: generation 4 again (queue and
    // consumer stop, db keeps its PID), shown as drift by the next plan.
    s.write(&[db.clone(), app("app v1"), queue.clone(), consumer.clone()]);
    let r = s.apply().ok();
    assert!(r.stdout.contains("No changes.") || r.stdout.contains("unchanged"), "{}", r.stdout);
    s.write(&[db.clone(), app("app v3")]);
    s.apply().ok();
    assert!(http_get(app_port).unwrap_or_default().contains("app v3"));
    assert!(!s.alive("queue"));
    let r = sb.ferry(&["processes", "rollback", "web"]).ok();
    assert!(r.stdout.contains("rolled back to generation 4"), "{}", r.stdout);
    assert!(http_get(app_port).unwrap_or_default().contains("app v1"));
    assert!(s.alive("queue") && s.alive("consumer"));
    assert_eq!(s.pid("db"), before["db"], "db is the same in both generations");
    assert!(s.generation().ends_with("-4-link"), "{}", s.generation());
    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.all().contains("points to"), "rollback shows as drift: {}", plan.all());
    let gens = sb.ferry(&["processes", "generations", "web"]).ok();
    assert!(gens.stdout.contains("(current)"), "{}", gens.stdout);

    // Drift: a process that died shows in the plan and the next apply starts it again.
    s.apply().ok();
    let db_pid = s.pid("db").unwrap();
    let _ = std::process::Command::new("kill").arg("-KILL").arg(db_pid.to_string()).status();
    std::thread::sleep(Duration::from_millis(300));
    if manager == "sysvinit" {
        // Nothing supervises sysvinit processes: the death is drift.
        let plan = sb.ferry(&["plan"]).ok();
        assert!(plan.all().contains("process `db` is not running"), "{}", plan.all());
        s.apply().ok();
        assert!(s.alive("db"));
        assert_ne!(s.pid("db"), Some(db_pid));
    } else {
        // supervisord and s6 restart it themselves.
        ferry_testkit::wait_until(Duration::from_secs(10), "the manager to restart db", || {
            s.alive("db") && s.pid("db") != Some(db_pid)
        });
    }
    let status = sb.ferry(&["processes", "status", "web"]).ok();
    assert!(status.stdout.contains("app: running (pid"), "{}", status.stdout);

    // Destroy stops everything.
    let pids = s.pids(&["db", "app"]);
    sb.ferry(&["destroy", "--yes"]).ok();
    for (n, p) in pids {
        let p = p.unwrap();
        assert!(!ferry_testkit::running(p), "{n} still runs");
    }
    assert!(!sb.path().join("profiles/processes-web").exists());
}

#[test]
fn supervisord_lifecycle() {
    lifecycle("supervisord");
}

#[test]
fn s6_lifecycle() {
    lifecycle("s6");
}

#[test]
fn sysvinit_lifecycle() {
    lifecycle("sysvinit");
}

/// The PIDs of `parent`'s children.
fn children(parent: u32) -> Vec<u32> {
    let mut v = vec![];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(parent) {
            v.push(pid);
        }
    }
    v
}

#[test]
fn a_dead_supervisord_is_restarted_and_the_set_comes_back_in_dependency_order() {
    dead_manager("supervisord", "state/run/supervisord.pid");
}

#[test]
fn a_dead_s6_svscan_is_restarted_and_the_set_comes_back_in_dependency_order() {
    dead_manager("s6", "state/run/s6-svscan.pid");
}

/// Issue 13, fault 4: the manager's daemon dies with everything under it (a crash of the whole
/// tree). The plan shows drift, and apply starts the daemon again and brings the set up as a
/// first deploy does: level by level, each level running and ready before the next starts.
/// Each process logs its start to `order`, or `NAME-early` when it started before its
/// dependency answered.
fn dead_manager(manager: &str, pid_file: &str) {
    let sb = Sandbox::new(BIN);
    let _c = Cleanup(&sb);
    let s = Set::new(&sb, manager);
    let d = s.dir();
    let (db_port, app_port) = (ferry_testkit::free_port(), ferry_testkit::free_port());
    let root = |n: &str| format!(r#"${{t.writeTree "{n}-root" {{ "index.html" = "{n}"; }}}}"#);
    // Answers a second after it starts, like a database that loads before it listens.
    let db = format!(
        r#"db = p.mkProcess {{
      command = [ "sh" "-c" "echo $$ > {d}/pids/db; echo db >> {d}/order; sleep 1; exec httpd -f -p 127.0.0.1:{db_port} -h {r}" ];
      readiness.tcpPort = {db_port};
    }};"#,
        r = root("db")
    );
    let app = format!(
        r#"app = p.mkProcess {{
      command = [ "sh" "-c" "wget -q -O /dev/null http://127.0.0.1:{db_port}/ || {{ echo app-early >> {d}/order; exit 1; }}; echo $$ > {d}/pids/app; echo app >> {d}/order; sleep 1; exec httpd -f -p 127.0.0.1:{app_port} -h {r}" ];
      readiness.tcpPort = {app_port};
      dependsOn = [ "db" ];
    }};"#,
        r = root("app")
    );
    let worker = format!(
        r#"worker = p.mkProcess {{
      command = [ "sh" "-c" "wget -q -O /dev/null http://127.0.0.1:{app_port}/ || {{ echo worker-early >> {d}/order; exit 1; }}; echo $$ > {d}/pids/worker; echo worker >> {d}/order; exec sleep 100000" ];
      dependsOn = [ "app" ];
    }};"#
    );
    s.write(&[db, app, worker]);
    let r = s.apply().ok();
    assert!(r.stdout.contains("1 created"), "{}", r.all());
    assert_eq!(sb.read("order").as_deref(), Some("db\napp\nworker\n"), "the first deploy");

    // The daemon, what it runs directly (supervisord's programs, s6's s6-supervise) and every
    // process die.
    std::fs::write(sb.path().join("order"), "").unwrap();
    let daemon = sb.read(pid_file).expect("the daemon's pid file");
    let daemon_pid: u32 = daemon.trim().parse().expect("a pid");
    let procs = s.pids(&["db", "app", "worker"]);
    let all: Vec<u32> = std::iter::once(daemon_pid)
        .chain(children(daemon_pid))
        .chain(procs.values().map(|p| p.expect("a pid")))
        .collect();
    for pid in &all {
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    for pid in all {
        ferry_testkit::wait_until(Duration::from_secs(5), "the process to die", || {
            !ferry_testkit::running(pid)
        });
    }
    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.all().contains("process `db` is"), "the dead set is drift: {}", plan.all());

    let r = s.apply().ok();
    assert!(!r.all().contains("3 unchanged"), "apply acts on the drift: {}", r.all());
    assert!(r.all().contains("restarted (were not running) db, app, worker"), "{}", r.all());
    // Ready when apply returns, and started in order: no process started before its dependency
    // answered.
    assert!(s.alive("db") && s.alive("app") && s.alive("worker"), "{}", r.all());
    assert!(http_get(app_port).unwrap_or_default().contains("app"), "app answers when apply returns");
    assert_eq!(sb.read("order").as_deref(), Some("db\napp\nworker\n"), "{}", r.all());
    let new_daemon = sb.read(pid_file).unwrap_or_default();
    assert_ne!(new_daemon.trim(), daemon.trim(), "a new daemon");
    assert_eq!(sb.ferry(&["plan"]).ok().stdout.trim(), "No changes.");
}

/// A deployment whose set is built from `procs` (Nix body of `processes = { … }`) with `manager`.
fn one_set(sb: &Sandbox, manager: &str, procs: &str) {
    sb.deployment(&format!(
        r#"{{ resources, ferry, ... }}:
let t = import {tk} {{ }}; p = ferry.lib.processes; in {{
  resources.web = {{
    type = "processes.set";
    inputs = p.set {{
      pkgs = t.pkgs; manager = "{manager}"; name = "web";
      stateDir = "@DIR@/state"; profilePath = "@DIR@/profiles/processes-web";
      processes = {{ {procs} }};
    }};
  }};
}}
"#,
        tk = ferry_testkit::testkit_nix()
    ));
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let sb = Sandbox::new(BIN);
    let _c = Cleanup(&sb);
    let ok = r#"a = p.mkProcess { command = [ "sleep" "1000" ]; };"#;
    let cases = [
        ("runit", ok.to_string(), "unknown manager `runit` (supported: supervisord, s6, sysvinit, systemd)"),
        ("s6", r#"a = p.mkProcess { command = [ "sleep" "1" ]; dependsOn = [ "db" ]; };"#.into(), "process `a` depends on `db`, which is not a process of this set"),
        (
            "s6",
            r#"a = p.mkProcess { command = [ "x" ]; dependsOn = [ "b" ]; }; b = p.mkProcess { command = [ "y" ]; dependsOn = [ "a" ]; };"#.into(),
            "dependency cycle among processes: a, b",
        ),
        ("supervisord", r#"a = p.mkProcess { command = [ "x" ]; user = "root;rm"; };"#.into(), "invalid user name `root;rm`"),
    ];
    for (manager, procs, want) in cases {
        one_set(&sb, manager, &procs);
        for verb in [&["plan"][..], &["apply", "--yes"][..]] {
            let r = sb.ferry(verb).expect(1);
            assert!(r.all().contains(want), "{verb:?}: wanted {want:?}\n{}", r.all());
        }
        assert!(!sb.exists("state") && !sb.exists("profiles"), "nothing is created");
        let snap = sb.state_snapshot();
        assert!(snap == "<no state>" || snap.contains("\"resources\":[]"), "nothing is recorded: {snap}");
    }
    // Inputs written by hand (not through ferry.lib.processes) are checked by the provider,
    // which names the resource.
    let hand = |body: &str| {
        sb.deployment(&format!(
            r#"{{ ... }}: {{ resources.hand = {{ type = "processes.set"; inputs = {{
              host = "local"; stateDir = "@DIR@/state"; profile = "/nix/store/00000000000000000000000000000000-x"; {body} }}; }}; }}"#
        ))
    };
    hand(
        r#"manager = "s6"; processes = { a = { config = "/nix/store/x"; dependsOn = [ "b" ]; }; b = { config = "/nix/store/y"; dependsOn = [ "a" ]; }; };"#,
    );
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    assert!(r.all().contains("processes.set `hand`: dependency cycle: a -> b -> a"), "{}", r.all());
    hand(r#"manager = "s6"; processes = { a = { config = "/nix/store/x"; user = "Not Valid"; }; };"#);
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    assert!(
        r.all().contains("processes.set `hand`: process `a`: invalid user name `Not Valid`"),
        "{}",
        r.all()
    );
    hand(r#"manager = "runit"; processes = { };"#);
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    assert!(r.all().contains("hand") && r.all().contains("runit"), "{}", r.all());
    assert!(!sb.exists("state"), "nothing is created");
    let list = sb.ferry(&["state", "list", "--json"]).ok();
    assert_eq!(list.stdout.trim(), "[]", "nothing is recorded: {}", list.stdout);
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let sb = Sandbox::new(BIN);
    let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ferry-provider-processes/nix/processes.nix");
    let expr = format!(
        r#"let t = import {tk} {{ }}; p = import {lib} {{ }}; in (p.set {{
          pkgs = t.pkgs; manager = "systemd"; name = "web"; stateDir = "/var/lib/web";
          processes = {{
            db = p.mkProcess {{ command = [ "sleep" "1000" ]; restart = "on-failure"; }};
            app = p.mkProcess {{ command = [ "sleep" "1001" ]; dependsOn = [ "db" ]; user = "nobody"; environment.A = "b c"; }};
          }};
        }}).profile"#,
        tk = ferry_testkit::testkit_nix(),
        lib = lib.display()
    );
    let file = sb.write("systemd.nix", &expr);
    let o = std::process::Command::new("nix-build")
        .args(["--option", "substituters", "", "--no-out-link"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let profile = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let dir = format!("{profile}/etc/systemd/system");
    let app = std::fs::read_to_string(format!("{dir}/ferry-web-app.service")).unwrap();
    assert!(
        app.contains("Wants=ferry-web-db.service") && app.contains("After=ferry-web-db.service"),
        "{app}"
    );
    let db = std::fs::read_to_string(format!("{dir}/ferry-web-db.service")).unwrap();
    assert!(db.contains("Restart=on-failure"), "{db}");
    let units: Vec<String> =
        ["ferry-web-db.service", "ferry-web-app.service"].iter().map(|u| format!("{dir}/{u}")).collect();
    let v = std::process::Command::new("systemd-analyze").arg("verify").args(&units).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));
    assert!(v.status.success() && !text.contains("ferry-web"), "systemd-analyze verify: {text}");
    // And a broken unit is caught by the same check (the test would notice a useless verify).
    let bad = sb.write("ferry-web-bad.service", "[Service]\nExecStart=relative/path\n");
    let v = std::process::Command::new("systemd-analyze").arg("verify").arg(&bad).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));
    assert!(!v.status.success() || text.contains("ferry-web-bad"), "{text}");
}

fn ids_deployment(sb: &Sandbox, claimants: &[String], max: u32) {
    let list: String = claimants.iter().map(|c| format!("{c} = [ \"ports\" ]; ")).collect();
    sb.deployment(&format!(
        r#"{{ resources, ... }}: {{
  resources.ids = {{ type = "ids.pool"; inputs = {{ pools.ports = {{ min = 5000; max = {max}; }}; claimants = {{ {list} }}; }}; }};
  resources.out = {{ type = "local.file"; inputs = {{ path = "@DIR@/ports.json"; content = builtins.toJSON resources.ids.ports; }}; }};
}}
"#
    ));
}

fn ports(sb: &Sandbox) -> BTreeMap<String, u64> {
    serde_json::from_str(&sb.read("ports.json").expect("ports.json")).expect("json")
}

#[test]
fn id_pools_are_sticky_unique_and_fail_when_exhausted() {
    let sb = Sandbox::new(BIN);
    let names: Vec<String> = (0..100).map(|i| format!("c{i:03}")).collect();
    ids_deployment(&sb, &names, 5099);
    // Before the pool exists, the plan shows its outputs as known after apply.
    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.all().contains("ids.ports.c000"), "{}", plan.all());
    sb.ferry(&["apply", "--yes"]).ok();
    let first = ports(&sb);
    assert_eq!(first.len(), 100);
    let distinct: std::collections::BTreeSet<u64> = first.values().copied().collect();
    assert_eq!(distinct.len(), 100, "no duplicates");
    assert!(distinct.iter().all(|p| (5000..=5099).contains(p)));
    // Re-apply: nothing changes.
    assert!(sb.ferry(&["apply", "--yes"]).ok().stdout.contains("No changes."));
    // One claimant leaves, another arrives: everyone else keeps their ID; the newcomer gets
    // the freed one (the only one left).
    let mut next: Vec<String> = names[1..].to_vec();
    next.push("newcomer".into());
    ids_deployment(&sb, &next, 5099);
    sb.ferry(&["apply", "--yes"]).ok();
    let second = ports(&sb);
    for n in &names[1..] {
        assert_eq!(second[n], first[n], "{n} kept its port");
    }
    assert_eq!(second["newcomer"], first["c000"]);
    // Exhaustion: a clear error, and nothing recorded changes.
    let before = sb.state_snapshot();
    next.push("one-too-many".into());
    ids_deployment(&sb, &next, 5099);
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    assert!(
        r.all().contains("ids.pool `ids`: pool `ports` is exhausted: 101 claimants for 100 IDs"),
        "{}",
        r.all()
    );
    assert_eq!(ports(&sb), second);
    let _ = before;
}
