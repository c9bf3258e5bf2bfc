//! `examples/webapps` end to end: the real example file, applied by the ferry binary under the
//! real supervisord, with its state, profile and ports pointed into a sandbox through the
//! example's environment variables. Web app instances answer through the Host-routing proxy;
//! adding `webapp2` starts it and restarts the proxy while `webapp` keeps its PID; destroy
//! stops everything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_testkit::{Run, Sandbox};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/webapps/deployment.nix")
}

fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// `n` consecutive free ports, below the kernel's ephemeral range (so no other test's
/// `bind(0)` is handed one of them) and away from the fixed ports of the guide (23100..) and
/// of the example's defaults (23200.., 8088).
fn free_ports(n: u16) -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    for i in 0..200u64 {
        let base = 24000 + ((seed.wrapping_mul(2654435761).wrapping_add(i * 97)) % 7000) as u16;
        if (base..base + n).all(bindable) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports in 24000..31000");
}

/// `GET /` from 127.0.0.1:`port` with `Host: host`: the whole response, or `None` if nothing
/// answered.
fn get(port: u16, host: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().ok()?,
        Duration::from_secs(3),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    write!(s, "GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut b = String::new();
    s.read_to_string(&mut b).ok()?;
    Some(b)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// The example deployed from a sandbox: ferry runs with `-f examples/webapps/deployment.nix`,
/// the sandbox's state database and the example's settings.
struct Webapps {
    sb: Sandbox,
    proxy_port: u16,
    pool: (u16, u16),
}

impl Webapps {
    fn new() -> Webapps {
        let base = free_ports(5);
        Webapps { sb: Sandbox::new(BIN), proxy_port: base + 4, pool: (base, base + 3) }
    }

    /// ferry `args` with FERRY_WEBAPPS=`instances`.
    fn ferry(&self, instances: &str, args: &[&str]) -> Run {
        let out = self
            .sb
            .command(args)
            .arg("-f")
            .arg(example())
            .arg("--state")
            .arg(self.sb.path().join("state.db"))
            .env("FERRY_WEBAPPS", instances)
            .env("FERRY_WEBAPPS_DIR", self.sb.path())
            .env("FERRY_WEBAPPS_PROXY_PORT", self.proxy_port.to_string())
            .env("FERRY_WEBAPPS_PORTS", format!("{}-{}", self.pool.0, self.pool.1))
            .output()
            .expect("run ferry");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
        .no_panic()
    }

    /// `ferry processes status webapps`: the PID of each running process ("NAME: running (pid N)").
    fn pids(&self, instances: &str) -> BTreeMap<String, u32> {
        let r = self.ferry(instances, &["processes", "status", "webapps"]).ok();
        let pids: BTreeMap<String, u32> = r
            .stdout
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.split_once(": running (pid ")?;
                Some((name.to_string(), rest.strip_suffix(')')?.parse().ok()?))
            })
            .collect();
        for p in pids.values() {
            assert!(alive(*p), "pid {p} from `ferry processes status` is not a live process\n{}", r.stdout);
        }
        pids
    }

    /// The pool's assignments, from the recorded outputs of `ids`.
    fn ports(&self, instances: &str) -> BTreeMap<String, u16> {
        let r = self.ferry(instances, &["state", "show", "ids", "--json"]).ok();
        let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("state show --json");
        serde_json::from_value(v["outputs"]["ports"].clone()).expect("outputs.ports")
    }

    fn supervisord_pid(&self) -> Option<u32> {
        self.sb.read("state/run/supervisord.pid").and_then(|s| s.trim().parse().ok())
    }
}

/// Stops whatever the test left running, even when it fails: `ferry destroy`, then supervisord
/// by its PID file and every process the test saw.
struct Cleanup<'a> {
    w: &'a Webapps,
    seen: std::cell::RefCell<Vec<u32>>,
}

impl Cleanup<'_> {
    fn saw(&self, pids: &BTreeMap<String, u32>) {
        self.seen.borrow_mut().extend(pids.values());
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.w.ferry("webapp", &["destroy", "--yes"]);
        let mut pids = self.seen.borrow().clone();
        pids.extend(self.w.supervisord_pid());
        for p in pids.into_iter().filter(|p| alive(*p)) {
            let _ = std::process::Command::new("kill")
                .arg(p.to_string())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

#[test]
fn webapps_behind_the_proxy_and_adding_one_restarts_only_the_proxy() {
    let w = Webapps::new();
    let c = Cleanup { w: &w, seen: Default::default() };
    let one = "webapp";
    let two = "webapp webapp2";
    let in_pool = |p: u16| (w.pool.0..=w.pool.1).contains(&p);

    // One instance behind the proxy.
    let r = w.ferry(one, &["apply", "--yes", "-v"]).ok();
    assert!(r.stdout.contains("Apply complete: 2 created"), "{}", r.all());
    let pids1 = w.pids(one);
    c.saw(&pids1);
    assert_eq!(pids1.keys().collect::<Vec<_>>(), ["proxy", "webapp"], "{pids1:?}");
    let ports1 = w.ports(one);
    assert_eq!(ports1.keys().collect::<Vec<_>>(), ["webapp"], "the proxy claims no port: {ports1:?}");
    let port = ports1["webapp"];
    assert!(in_pool(port), "webapp's port {port} is from the pool {:?}", w.pool);
    let page = get(w.proxy_port, "webapp.localhost").unwrap_or_default();
    assert!(page.starts_with("HTTP/1.0 200"), "{page}");
    assert!(page.contains(&format!("webapp on port {port}")), "the proxy answers with webapp's page: {page}");
    assert!(
        get(port, "x").unwrap_or_default().contains(&format!("webapp on port {port}")),
        "webapp itself serves the page on its port"
    );
    let unknown = get(w.proxy_port, "nothing.localhost").unwrap_or_default();
    assert!(unknown.starts_with("HTTP/1.0 404"), "an unknown host is not routed: {unknown}");
    assert!(!unknown.contains("on port"), "{unknown}");
    let missing = get(w.proxy_port, "webapp2.localhost").unwrap_or_default();
    assert!(missing.starts_with("HTTP/1.0 404"), "webapp2 is not routed yet: {missing}");

    // Add webapp2: it starts, the proxy gets its route (restarts), webapp keeps port and PID.
    let r = w.ferry(two, &["apply", "--yes", "-v"]).ok();
    assert!(r.stderr.contains("started webapp2") && r.stderr.contains("restarted proxy"), "{}", r.all());
    let pids2 = w.pids(two);
    c.saw(&pids2);
    assert_eq!(pids2.keys().collect::<Vec<_>>(), ["proxy", "webapp", "webapp2"], "{pids2:?}");
    assert_eq!(pids2["webapp"], pids1["webapp"], "webapp was not restarted");
    assert_ne!(pids2["proxy"], pids1["proxy"], "the proxy was restarted with its new routes");
    assert!(!alive(pids1["proxy"]), "the old proxy process is gone");
    let ports2 = w.ports(two);
    assert_eq!(ports2["webapp"], port, "webapp keeps its port");
    let port2 = ports2["webapp2"];
    assert!(in_pool(port2) && port2 != port, "webapp2 gets another port of the pool: {ports2:?}");
    let page2 = get(w.proxy_port, "webapp2.localhost").unwrap_or_default();
    assert!(page2.starts_with("HTTP/1.0 200"), "{page2}");
    assert!(
        page2.contains(&format!("webapp2 on port {port2}")),
        "webapp2 answers through the proxy: {page2}"
    );
    let page = get(w.proxy_port, "webapp.localhost").unwrap_or_default();
    assert!(
        page.contains(&format!("webapp on port {port}")),
        "webapp still answers through the proxy: {page}"
    );
    assert!(get(w.proxy_port, "nothing.localhost").unwrap_or_default().starts_with("HTTP/1.0 404"));

    // Applying the same again changes nothing.
    let r = w.ferry(two, &["apply", "--yes"]).ok();
    assert!(r.stdout.contains("No changes."), "{}", r.all());
    assert_eq!(w.pids(two), pids2, "a no-op apply restarts nothing");

    // Destroy stops every process and the supervisord ferry started.
    let supervisord = w.supervisord_pid().expect("supervisord's PID file");
    assert!(alive(supervisord), "supervisord runs until the destroy");
    w.ferry(two, &["destroy", "--yes"]).ok();
    for (name, pid) in &pids2 {
        assert!(!alive(*pid), "{name} (pid {pid}) still runs after the destroy");
    }
    assert!(!alive(supervisord), "supervisord (pid {supervisord}) still runs after the destroy");
    assert!(get(w.proxy_port, "webapp.localhost").is_none(), "nothing listens on the proxy's port");
    assert!(!w.sb.exists("profiles/processes-webapps"), "the profile is removed");
    let list = w.ferry(two, &["state", "list", "--json"]).ok();
    assert_eq!(list.stdout.trim(), "[]", "nothing is recorded: {}", list.stdout);
}
