//! `processes.set` with `manager = "systemd"`, run for real: the set is deployed over SSH to a
//! booted systemd test host ([`SystemdHost`]: `systemd-nspawn -b` on this machine's `/usr`,
//! its own `/nix`, sshd on 127.0.0.N, this machine's network) and driven through the host's
//! `systemctl`. Process IDs are the units' `MainPID` (the container's PID namespace), read
//! with `systemctl show` inside the host. The host is rebooted once: the units are enabled and
//! come back by themselves.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_testkit::systemd_host::SystemdHost;
use ferry_testkit::{wait_until, Run, Sandbox};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");
const PREFIX: &str = "ferry-web-";

/// `sh -c script` in the host: (success, stdout trimmed).
fn sh(h: &SystemdHost, script: &str) -> (bool, String) {
    let o = h.exec(script);
    (o.status.success(), String::from_utf8_lossy(&o.stdout).trim().to_string())
}

#[test]
fn the_systemd_host_boots_answers_ssh_and_powers_off() {
    let sb = Sandbox::new(BIN);
    let base = sb.path().join("hosts");
    let mut h = SystemdHost::start(&base, "sdboot").expect("boot the systemd host");
    eprintln!("boot time: {:?}", h.boot_time());
    assert_eq!(sh(&h, "systemctl is-system-running"), (true, "running".into()), "{}", h.failed_units());
    assert_eq!(h.failed_units(), "");
    let (_, pid1) = sh(&h, "cat /proc/1/comm");
    assert_eq!(pid1, "systemd");
    let o =
        h.ssh_command().arg("systemctl is-active ferry-sshd.service; readlink /proc/1/exe").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "active\n/usr/lib/systemd/systemd");
    let leader = h.leader();
    assert!(std::path::Path::new(&format!("/proc/{leader}")).exists());
    h.kill();
    assert!(!std::path::Path::new(&format!("/proc/{leader}")).exists(), "the container's PID 1 is gone");
    assert!(
        std::net::TcpStream::connect((h.addr(), h.port())).is_err(),
        "sshd no longer listens on {}:{}",
        h.addr(),
        h.port()
    );
}

fn unit(n: &str) -> String {
    format!("{PREFIX}{n}.service")
}

/// `systemctl show -p P…` of process `n`'s unit, as a map.
fn show(h: &SystemdHost, n: &str, props: &[&str]) -> BTreeMap<String, String> {
    let (ok, out) = sh(h, &format!("systemctl show -p {} {}", props.join(","), unit(n)));
    assert!(ok, "systemctl show {}: {out}", unit(n));
    out.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// (ActiveState, MainPID) of process `n`'s unit.
fn state(h: &SystemdHost, n: &str) -> (String, u32) {
    let p = show(h, n, &["ActiveState", "MainPID"]);
    (p["ActiveState"].clone(), p["MainPID"].parse().unwrap())
}

/// The main PIDs of processes `names`, each of which must be active.
fn pids(h: &SystemdHost, names: &[&str]) -> BTreeMap<String, u32> {
    names
        .iter()
        .map(|n| {
            let (st, pid) = state(h, n);
            assert!(st == "active" && pid > 0, "{} is {st} (pid {pid})", unit(n));
            (n.to_string(), pid)
        })
        .collect()
}

/// `ferry processes status web`: NAME -> PID of the processes it reports running.
fn status_pids(sb: &Sandbox) -> BTreeMap<String, u32> {
    let r = sb.ferry(&["processes", "status", "web"]).ok();
    r.stdout
        .lines()
        .filter_map(|l| {
            let (n, rest) = l.split_once(": running (pid ")?;
            Some((n.trim().to_string(), rest.trim_end_matches(')').parse().ok()?))
        })
        .collect()
}

/// Whether process `pid` of the host's PID namespace exists (and is no zombie).
fn alive(h: &SystemdHost, pid: u32) -> bool {
    sh(h, &format!("s=$(cat /proc/{pid}/stat 2>/dev/null) || exit 1; s=${{s##*) }}; [ \"${{s%% *}}\" != Z ]"))
        .0
}

fn http(port: u16) -> String {
    ferry_testkit::http_get("127.0.0.1", port, "/").unwrap_or_default()
}

fn web(name: &str, port: u16, page: &str, extra: &str) -> String {
    format!(
        r#"{name} = p.mkProcess {{
          command = [ "httpd" "-f" "-p" "127.0.0.1:{port}" "-h" (t.writeTree "{name}-root" {{ "index.html" = "{page}"; }}) ];
          readiness.tcpPort = {port};
          {extra}
        }};"#
    )
}

/// The deployment and where to look on the host (copied: the test reboots the host).
struct Deployment<'a> {
    sb: &'a Sandbox,
    addr: String,
    port: u16,
    host_key: String,
    client_key: String,
    /// The host's directory (its `/nix` is `nix/`) and the container's root.
    dir: std::path::PathBuf,
    root: std::path::PathBuf,
}

impl Deployment<'_> {
    fn write(&self, procs: &[String]) {
        self.sb.deployment(&format!(
            r#"{{ resources, ferry, ... }}:
let t = import {tk} {{ }}; p = ferry.lib.processes; in {{
  resources.web = {{
    type = "processes.set";
    inputs = p.set {{
      pkgs = t.pkgs; manager = "systemd"; name = "web";
      host = {{ host = "{addr}"; port = {port}; hostKey = "{key}"; }};
      sshKey = "{ckey}";
      startTimeout = 20;
      processes = {{
{procs}
      }};
    }};
  }};
}}
"#,
            tk = ferry_testkit::testkit_nix(),
            addr = self.addr,
            port = self.port,
            key = self.host_key,
            ckey = self.client_key,
            procs = procs.join("\n")
        ));
    }

    fn apply(&self) -> Run {
        self.sb.ferry(&["apply", "--yes", "-v"])
    }

    /// The profile link in the host's /nix (`processes-web-N-link`).
    fn generation(&self) -> String {
        std::fs::read_link(self.dir.join("nix/var/nix/profiles/ferry/processes-web"))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    /// Where manager.rs installs process `n`'s unit (the default `systemdDir`), on this
    /// machine's file system.
    fn unit_file(&self, n: &str) -> std::path::PathBuf {
        self.root.join("etc/systemd/system").join(unit(n))
    }
}

/// The set's units enabled in the host (`multi-user.target.wants`), sorted.
fn wanted(d: &Deployment) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d.root.join("etc/systemd/system/multi-user.target.wants"))
        .map(|rd| rd.flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)).collect())
        .unwrap_or_default();
    v.retain(|u| u.starts_with(PREFIX));
    v.sort();
    v
}

#[test]
fn a_systemd_set_on_a_booted_systemd_host() {
    let started = Instant::now();
    let sb = Sandbox::new(BIN);
    let mut h = SystemdHost::start(&sb.path().join("hosts"), "sdproc").expect("boot the systemd host");
    eprintln!("systemd host booted in {:?}", h.boot_time());
    let d = Deployment {
        sb: &sb,
        addr: h.addr().to_string(),
        port: h.port(),
        host_key: h.host_key().to_string(),
        client_key: h.client_key().display().to_string(),
        dir: h.dir().to_path_buf(),
        root: h.root(),
    };
    let (db_port, app_port, queue_port) =
        (ferry_testkit::free_port(), ferry_testkit::free_port(), ferry_testkit::free_port());
    let db = web("db", db_port, "db v1", "");
    let app = |page: &str| web("app", app_port, page, r#"dependsOn = [ "db" ];"#);
    let worker = |v: &str| {
        format!(
            r#"worker = p.mkProcess {{
          command = [ "sleep" "100000" ];
          environment.VERSION = "{v}";
          dependsOn = [ "db" ];
        }};"#
        )
    };

    // Deploy three processes, two depending on the third.
    d.write(&[db.clone(), app("app v1"), worker("1")]);
    let r = d.apply().ok();
    assert!(r.stdout.contains("1 created"), "{}", r.all());
    let first = pids(&h, &["db", "app", "worker"]);
    assert_eq!(status_pids(&sb), first, "the status action reports the units' main PIDs");
    for n in ["db", "app", "worker"] {
        let link = std::fs::read_link(d.unit_file(n)).unwrap_or_else(|e| panic!("unit of {n}: {e}"));
        assert!(link.starts_with("/nix/store/"), "{n}: {}", link.display());
        assert!(alive(&h, first[n]));
    }
    assert!(http(app_port).contains("app v1"), "app serves its page");
    assert!(http(db_port).contains("db v1"));
    assert!(d.generation().ends_with("processes-web-1-link"), "{}", d.generation());
    assert_eq!(wanted(&d), vec![unit("app"), unit("db"), unit("worker")], "the units are enabled");
    // The dependency as systemd loaded it, and ferry's order: db was up before app started.
    let deps = show(&h, "app", &["Wants", "After"]);
    assert!(deps["Wants"].contains(&unit("db")) && deps["After"].contains(&unit("db")), "{deps:?}");
    let up = |n: &str, p: &str| -> u64 { show(&h, n, &[p])[p].parse().unwrap() };
    assert!(
        up("db", "ActiveEnterTimestampMonotonic") < up("app", "ExecMainStartTimestampMonotonic"),
        "db active before app started"
    );
    assert_eq!(h.failed_units(), "");

    // A no-op apply touches nothing.
    let r = d.apply().ok();
    assert!(r.stdout.contains("No changes."), "{}", r.stdout);
    assert_eq!(pids(&h, &["db", "app", "worker"]), first);

    // Change one process: only it restarts.
    d.write(&[db.clone(), app("app v1"), worker("2")]);
    let r = d.apply().ok();
    assert!(r.stderr.contains("restarted worker"), "{}", r.stderr);
    let second = pids(&h, &["db", "app", "worker"]);
    assert_ne!(second["worker"], first["worker"], "worker restarted");
    assert!(!alive(&h, first["worker"]), "the old worker is gone");
    assert_eq!(second["db"], first["db"], "db untouched");
    assert_eq!(second["app"], first["app"], "app untouched");
    assert!(d.generation().ends_with("-2-link"), "{}", d.generation());
    let (_, env) = sh(&h, &format!("tr '\\0' '\\n' < /proc/{}/environ", second["worker"]));
    assert!(env.lines().any(|l| l == "VERSION=2"), "the new worker has the new environment: {env}");

    // Remove one: its unit is stopped and gone, the others stay.
    d.write(&[db.clone(), app("app v1")]);
    let r = d.apply().ok();
    assert!(r.stderr.contains("stopped worker"), "{}", r.stderr);
    assert!(!alive(&h, second["worker"]), "worker stopped");
    assert!(std::fs::symlink_metadata(d.unit_file("worker")).is_err(), "worker's unit file removed");
    assert_eq!(wanted(&d), vec![unit("app"), unit("db")], "worker disabled");
    let gone = show(&h, "worker", &["LoadState", "ActiveState"]);
    assert_eq!((gone["LoadState"].as_str(), gone["ActiveState"].as_str()), ("not-found", "inactive"));
    assert_eq!(
        pids(&h, &["db", "app"]),
        BTreeMap::from([("db".into(), first["db"]), ("app".into(), first["app"])])
    );

    // Add two, one depending on the other: the dependent starts only once its dependency
    // answers (queue takes a second to listen; consumer fails unless queue answers at start).
    let queue = format!(
        r#"queue = p.mkProcess {{
          command = [ "sh" "-c" "sleep 1; exec httpd -f -p 127.0.0.1:{queue_port} -h ${{t.writeTree "q" {{ "index.html" = "queue"; }}}}" ];
          readiness.tcpPort = {queue_port};
        }};"#
    );
    let consumer = format!(
        r#"consumer = p.mkProcess {{
          command = [ "sh" "-c" "wget -q -O /var/lib/consumed http://127.0.0.1:{queue_port}/ || exit 1; exec sleep 100000" ];
          dependsOn = [ "queue" ];
        }};"#
    );
    d.write(&[db.clone(), app("app v1"), queue.clone(), consumer.clone()]);
    let r = d.apply().ok();
    assert!(r.stderr.contains("started queue, consumer; 2 unchanged"), "{}", r.stderr);
    let fourth = pids(&h, &["db", "app", "queue", "consumer"]);
    assert_eq!(std::fs::read_to_string(h.root().join("var/lib/consumed")).ok().as_deref(), Some("queue"));
    assert_eq!(fourth["db"], first["db"]);
    let g4 = d.generation();
    assert!(g4.ends_with("-4-link"), "{g4}");

    // A process that fails to start (it lives half a second, then exits) fails the switch;
    // everything returns to generation 4.
    let broken = r#"broken = p.mkProcess { command = [ "sh" "-c" "echo broken >&2; sleep 0.5; exit 1" ]; };"#;
    d.write(&[db.clone(), app("app v2"), queue.clone(), consumer.clone(), broken.to_string()]);
    let r = d.apply().expect(1);
    let log = "/var/lib/ferry-processes/web/log/broken.log";
    assert!(r.all().contains("process `broken`") && r.all().contains(&format!("(see {log})")), "{}", r.all());
    let text = std::fs::read_to_string(d.root.join(log.trim_start_matches('/'))).unwrap_or_default();
    assert!(text.contains("broken"), "the log the error points to has the process's output: {text:?}");
    assert!(r.all().contains("rolled back to the previous generation"), "{}", r.all());
    assert_eq!(d.generation(), g4, "the profile is unchanged");
    assert!(http(app_port).contains("app v1"), "app runs its previous config again");
    let back = pids(&h, &["db", "app", "queue", "consumer"]);
    for n in ["db", "queue", "consumer"] {
        assert_eq!(back[n], fourth[n], "{n} untouched by the failed switch");
    }
    assert!(std::fs::symlink_metadata(d.unit_file("broken")).is_err(), "broken's unit removed");
    let gone = show(&h, "broken", &["LoadState", "ActiveState"]);
    assert_eq!((gone["LoadState"].as_str(), gone["ActiveState"].as_str()), ("not-found", "inactive"));
    assert_eq!(h.failed_units(), "", "no failed unit is left behind");

    // Processes that exit at once, a new one and a changed one: systemd gives up on them
    // (start limit, units `failed`); the rollback removes the new one and starts app's
    // previous config again.
    let crash = r#"crash = p.mkProcess { command = [ "sh" "-c" "echo crashed >&2; exit 3" ]; dependsOn = [ "db" ]; };"#;
    let app_crash = r#"app = p.mkProcess { command = [ "sh" "-c" "echo app crashed >&2; exit 4" ]; dependsOn = [ "db" ]; };"#;
    d.write(&[db.clone(), app_crash.to_string(), queue.clone(), consumer.clone(), crash.to_string()]);
    let r = d.apply().expect(1);
    assert!(
        ["crash", "app"].iter().any(|n| r.all().contains(&format!("process `{n}` failed to start"))
            || r.all().contains(&format!("process `{n}` keeps exiting"))),
        "{}",
        r.all()
    );
    assert!(r.all().contains("rolled back to the previous generation"), "{}", r.all());
    assert_eq!(d.generation(), g4, "the profile is unchanged");
    assert!(http(app_port).contains("app v1"), "app runs its previous config again");
    let after_crash = pids(&h, &["db", "app", "queue", "consumer"]);
    for n in ["db", "queue", "consumer"] {
        assert_eq!(after_crash[n], fourth[n], "{n} untouched by the failed switch");
    }
    let gone = show(&h, "crash", &["LoadState", "ActiveState"]);
    assert_eq!((gone["LoadState"].as_str(), gone["ActiveState"].as_str()), ("not-found", "inactive"));
    assert_eq!(h.failed_units(), "", "no failed unit is left behind");

    // Back to the good model: nothing to do. Then a new generation without queue and
    // consumer, and a rollback with the CLI to generation 4.
    d.write(&[db.clone(), app("app v1"), queue.clone(), consumer.clone()]);
    let r = d.apply().ok();
    assert!(r.stdout.contains("No changes."), "{}", r.stdout);
    d.write(&[db.clone(), app("app v3")]);
    d.apply().ok();
    assert!(http(app_port).contains("app v3"));
    assert!(!alive(&h, fourth["queue"]) && !alive(&h, fourth["consumer"]));
    assert!(d.generation().ends_with("-5-link"), "{}", d.generation());
    let r = sb.ferry(&["processes", "rollback", "web"]).ok();
    assert!(r.stdout.contains("rolled back to generation 4"), "{}", r.stdout);
    assert!(http(app_port).contains("app v1"));
    let rolled = pids(&h, &["db", "app", "queue", "consumer"]);
    assert_eq!(rolled["db"], first["db"], "db is the same in both generations");
    assert!(d.generation().ends_with("-4-link"), "{}", d.generation());
    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.all().contains("points to"), "the rollback shows as drift: {}", plan.all());

    // Back to the declared generation.
    d.apply().ok();
    assert!(http(app_port).contains("app v3"));
    let now = pids(&h, &["db", "app"]);
    assert_eq!(now["db"], first["db"]);
    assert!(
        d.unit_file("queue").symlink_metadata().is_err()
            && d.unit_file("consumer").symlink_metadata().is_err()
    );

    // A process killed behind ferry's back: systemd restarts it (Restart=always), no drift.
    let (ok, out) = sh(&h, &format!("systemctl kill -s KILL {}", unit("db")));
    assert!(ok, "{out}");
    wait_until(
        Duration::from_secs(20),
        "systemd to restart db",
        || matches!(state(&h, "db"), (s, p) if s == "active" && p != 0 && p != now["db"]),
    );
    assert!(!alive(&h, now["db"]));
    assert_eq!(state(&h, "app").1, now["app"], "app untouched");
    let restarted_db = state(&h, "db").1;
    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.stdout.contains("No changes."), "{}", plan.all());

    // A process stopped behind ferry's back: drift, and the next apply starts only it.
    let (ok, out) = sh(&h, &format!("systemctl stop {}", unit("db")));
    assert!(ok, "{out}");
    assert_eq!(state(&h, "db"), ("inactive".to_string(), 0));
    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.all().contains("process `db` is not running"), "{}", plan.all());
    assert!(!plan.all().contains("process `app`"), "{}", plan.all());
    let r = d.apply().ok();
    assert!(r.stderr.contains("restarted (were not running) db"), "{}", r.stderr);
    let repaired = pids(&h, &["db", "app"]);
    assert_ne!(repaired["db"], restarted_db);
    assert_eq!(repaired["app"], now["app"], "app untouched");
    assert!(http(db_port).contains("db v1"));
    assert!(sb.ferry(&["plan"]).ok().stdout.contains("No changes."));

    // systemd itself honours the dependency: starting app alone pulls db in, and starts it first.
    let (ok, out) =
        sh(&h, &format!("systemctl stop {} {} && systemctl start {}", unit("app"), unit("db"), unit("app")));
    assert!(ok, "{out}");
    pids(&h, &["db", "app"]);
    assert!(
        up("db", "ActiveEnterTimestampMonotonic") <= up("app", "ExecMainStartTimestampMonotonic"),
        "systemd started db before app"
    );

    // A reboot: the units are enabled (WantedBy=multi-user.target), systemd starts them at boot.
    assert_eq!(wanted(&d), vec![unit("app"), unit("db")]);
    let leader = h.leader();
    h.reboot().expect("reboot the systemd host");
    eprintln!("systemd host rebooted in {:?}", h.boot_time());
    assert_ne!(h.leader(), leader, "a new systemd");
    wait_until(Duration::from_secs(30), "db and app to run after the reboot", || {
        ["db", "app"].iter().all(|n| matches!(state(&h, n), (s, p) if s == "active" && p != 0))
    });
    wait_until(Duration::from_secs(30), "app to answer after the reboot", || {
        http(app_port).contains("app v3")
    });
    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.stdout.contains("No changes."), "{}", plan.all());

    // Destroy stops everything and removes the units and the profile.
    let last = pids(&h, &["db", "app"]);
    sb.ferry(&["destroy", "--yes"]).ok();
    for (n, pid) in last {
        assert!(!alive(&h, pid), "{n} still runs");
        assert!(std::fs::symlink_metadata(d.unit_file(&n)).is_err(), "{n}'s unit file removed");
        assert_eq!(show(&h, &n, &["LoadState"])["LoadState"], "not-found");
    }
    assert!(http(app_port).is_empty() && http(db_port).is_empty());
    assert_eq!(d.generation(), "", "the profile is removed");
    assert!(wanted(&d).is_empty(), "every unit disabled: {:?}", wanted(&d));
    assert_eq!(h.failed_units(), "");
    eprintln!("scenario took {:?}", started.elapsed());
}
