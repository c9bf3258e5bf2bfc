//! `processes.image` end to end: images built with `ferry.lib.processes.image` from busybox
//! processes (the test package set), loaded by the ferry binary into the real podman, run with
//! podman, reached over HTTP; then (mutable) the processes switched in place inside the running
//! container by a `processes.set` with `host.podman`. podman runs through the test kit's
//! wrapper (`ferry_testkit::podman`: this machine's cgroup and rlimit workarounds).

use std::time::Duration;

use ferry_testkit::podman::Podman;
use ferry_testkit::{http_get, wait_until, Run, Sandbox};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

/// A name no other test (or run) uses: podman's image and container stores are machine-wide.
fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("ferry-it-{what}-{}-{nanos}", std::process::id())
}

/// Removes the test's containers and images whatever happened.
struct Cleanup<'a> {
    pod: &'a Podman,
    containers: Vec<String>,
    images: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = self.pod.run(&["rm", "-f", "-t", "0", c]);
        }
        for i in &self.images {
            let _ = self.pod.run(&["rmi", "-f", i]);
        }
    }
}

/// The model: `db` (answers 3 s after it starts: later than an init.d script's `start` waits) and `app`, which fetches db's page when it
/// starts and fails unless db answers — so app runs only if it was started after db was ready.
fn model() -> &'static str {
    r#"page = n: text: t.writeTree "${n}-root" { "index.html" = text; };
  processes = app: {
    db = p.mkProcess {
      command = [ "sh" "-c" "sleep 3; exec httpd -f -p 0.0.0.0:8081 -h ${page "db" "db v1"}" ];
      readiness.tcpPort = 8081;
    };
    app = p.mkProcess {
      command = [ "sh" "-c" "wget -q -O /tmp/from-db http://127.0.0.1:8081/ || exit 1; exec httpd -f -p 0.0.0.0:8082 -h ${page "app" app}" ];
      dependsOn = [ "db" ];
      readiness.tcpPort = 8082;
    };
  };"#
}

/// deployment.nix: the image resource (model with app page "app v1"), and, with `switch`
/// (container, app page), a processes.set switching that container in place. The state
/// directory is /srv/web (mutable) or /run/web (immutable: a tmpfs with `--read-only`).
fn write(sb: &Sandbox, image: &str, mutable: bool, switch: Option<(&str, &str)>) {
    let set = match switch {
        Some((container, page)) => format!(
            r#"resources.web = {{
    type = "processes.set";
    inputs = p.set (common // {{ processes = processes "{page}"; host.podman = "{container}"; startTimeout = 20; }});
  }};"#
        ),
        None => String::new(),
    };
    sb.deployment(&format!(
        r#"{{ resources, ferry, ... }}:
let
  t = import {tk} {{ }};
  p = ferry.lib.processes;
  {model}
  common = {{
    pkgs = t.pkgs; manager = "sysvinit"; name = "web";
    stateDir = "{state}"; profilePath = "/nix/var/nix/profiles/ferry/processes-web";
  }};
  img = p.image (common // {{
    imageName = "{image}"; tag = "1"; mutable = {mutable};
    exposedPorts = [ 8081 8082 ];
    processes = processes "app v1";
  }});
in {{
  resources.image = {{ type = "processes.image"; inputs = img.inputs; }};
  {set}
}}
"#,
        tk = ferry_testkit::testkit_nix(),
        model = model(),
        state = if mutable { "/srv/web" } else { "/run/web" },
    ));
}

fn page(port: u16) -> String {
    http_get("127.0.0.1", port, "/").unwrap_or_default()
}

/// `podman exec C sh -c SCRIPT`, trimmed stdout (panics on failure).
fn exec(pod: &Podman, c: &str, script: &str) -> String {
    pod.ok(&["exec", c, "sh", "-c", script])
}

fn pid_of(pod: &Podman, c: &str, process: &str) -> String {
    exec(pod, c, &format!("cat /srv/web/run/{process}.pid"))
}

/// `podman run -d` the image with both ports published on 127.0.0.1; waits until app answers.
fn run_container(pod: &Podman, image: &str, name: &str, extra: &[&str]) -> (u16, u16) {
    let (db_port, app_port) = (ferry_testkit::free_port(), ferry_testkit::free_port());
    let (p1, p2) = (format!("127.0.0.1:{db_port}:8081"), format!("127.0.0.1:{app_port}:8082"));
    let mut args = vec!["run", "-d", "--name", name, "-p", &p1, "-p", &p2];
    args.extend_from_slice(extra);
    let reference = format!("{image}:1");
    args.push(&reference);
    pod.ok(&args);
    wait_until(Duration::from_secs(60), "the container's app to answer", || {
        page(app_port).contains("app v1")
    });
    (db_port, app_port)
}

fn ferry(pod: &Podman, sb: &Sandbox, args: &[&str]) -> Run {
    pod.ferry(sb, args)
}

#[test]
fn mutable_image_load_run_drift_switch_in_place_destroy() {
    let pod = Podman::new();
    let sb = Sandbox::new(BIN);
    let image = unique("img");
    let container = format!("{image}-c");
    let mut guard =
        Cleanup { pod: &pod, containers: vec![container.clone()], images: vec![format!("{image}:1")] };
    let reference = format!("{image}:1");

    // Build and load.
    write(&sb, &image, true, None);
    let r = ferry(&pod, &sb, &["apply", "--yes"]).ok();
    assert!(r.stdout.contains("1 created"), "{}", r.stdout);
    assert_eq!(pod.run(&["image", "exists", &reference]).code, 0, "{reference} is loaded");
    let id = pod.ok(&["image", "inspect", "--format", "{{.Id}}", &reference]);
    let show = ferry(&pod, &sb, &["state", "show", "image"]).ok();
    assert!(
        show.stdout.contains(&format!("imageId = \"{id}\"")),
        "imageId is podman's ID {id}: {}",
        show.stdout
    );

    // Nothing to do the second time.
    let r = ferry(&pod, &sb, &["apply", "--yes"]).ok();
    assert!(r.stdout.contains("No changes."), "{}", r.stdout);

    // Removed behind ferry's back: the plan says so, apply loads it again.
    pod.ok(&["rmi", &reference]);
    let plan = ferry(&pod, &sb, &["plan"]).ok();
    assert!(plan.all().contains("no longer exists"), "{}", plan.all());
    assert!(plan.all().contains("image (processes.image)"), "{}", plan.all());
    ferry(&pod, &sb, &["apply", "--yes"]).ok();
    assert_eq!(pod.ok(&["image", "inspect", "--format", "{{.Id}}", &reference]), id, "the same image again");

    // Run it: the entry point brings the set up in dependency order, reachable from here.
    let (db_port, app_port) = run_container(&pod, &image, &container, &[]);
    assert!(page(db_port).contains("db v1"), "{}", page(db_port));
    assert!(page(app_port).contains("app v1"));
    assert_eq!(exec(&pod, &container, "cat /tmp/from-db"), "db v1", "app started once db answered");
    // The processes.set layout (manager.rs): active links, init.d links, pid files, profile
    // generation 1 made like nix-env.
    let profile = exec(&pod, &container, "readlink /nix/var/nix/profiles/ferry/processes-web");
    assert_eq!(profile, "processes-web-1-link");
    let store = exec(&pod, &container, "readlink /nix/var/nix/profiles/ferry/processes-web-1-link");
    assert!(store.starts_with("/nix/store/") && store.ends_with("-ferry-processes-web-sysvinit"), "{store}");
    for n in ["db", "app"] {
        let active = exec(&pod, &container, &format!("readlink /srv/web/.ferry/active/{n}"));
        assert_eq!(active, exec(&pod, &container, &format!("readlink {store}/processes/{n}")), "{n} active");
        let initd = exec(&pod, &container, &format!("readlink /srv/web/init.d/{n}"));
        assert_eq!(initd, format!("{active}/init.d"));
        let pid = pid_of(&pod, &container, n);
        assert!(
            exec(&pod, &container, &format!("cat /proc/{pid}/cmdline | tr '\\0' ' '")).starts_with("httpd")
        );
    }

    // Switch app in place with processes.set over podman exec: app restarts, db and the
    // container keep running.
    let started = pod.ok(&["inspect", "--format", "{{.State.Pid}} {{.State.StartedAt}}", &container]);
    let (db_pid, app_pid) = (pid_of(&pod, &container, "db"), pid_of(&pod, &container, "app"));
    write(&sb, &image, true, Some((&container, "app v2")));
    let r = ferry(&pod, &sb, &["apply", "--yes", "-v"]).ok();
    assert!(r.stdout.contains("1 created"), "{}", r.all());
    assert!(r.all().contains("restarted app"), "{}", r.all());
    assert!(page(app_port).contains("app v2"), "the new app is served: {}", page(app_port));
    assert_ne!(pid_of(&pod, &container, "app"), app_pid, "app restarted");
    assert_eq!(pid_of(&pod, &container, "db"), db_pid, "db untouched");
    assert!(page(db_port).contains("db v1"));
    assert_eq!(
        pod.ok(&["inspect", "--format", "{{.State.Pid}} {{.State.StartedAt}}", &container]),
        started,
        "the container was not restarted"
    );
    assert_eq!(
        exec(&pod, &container, "readlink /nix/var/nix/profiles/ferry/processes-web"),
        "processes-web-2-link"
    );

    // Mutable: a restarted container boots the switched generation.
    pod.ok(&["restart", "-t", "10", &container]);
    wait_until(Duration::from_secs(60), "app v2 after the restart", || page(app_port).contains("app v2"));
    assert!(page(db_port).contains("db v1"));

    // The image is in use: destroying it fails, naming the resource and what to do.
    let r = ferry(&pod, &sb, &["destroy", "--yes"]).expect(1);
    assert!(r.all().contains("processes.image `image`"), "{}", r.all());
    assert!(r.all().contains("podman rm"), "{}", r.all());
    assert_eq!(pod.run(&["image", "exists", &reference]).code, 0);

    // Without the container, destroy removes the image.
    pod.ok(&["rm", "-f", "-t", "0", &container]);
    guard.containers.clear();
    ferry(&pod, &sb, &["destroy", "--yes"]).ok();
    assert_eq!(pod.run(&["image", "exists", &reference]).code, 1, "{reference} removed");
    assert_eq!(pod.run(&["image", "exists", &id]).code, 1, "image {id} removed");
}

#[test]
fn immutable_image_runs_read_only_and_stops_on_sigterm() {
    let pod = Podman::new();
    let sb = Sandbox::new(BIN);
    let image = unique("ro");
    let container = format!("{image}-c");
    let _guard =
        Cleanup { pod: &pod, containers: vec![container.clone()], images: vec![format!("{image}:1")] };

    write(&sb, &image, false, None);
    ferry(&pod, &sb, &["apply", "--yes"]).ok();
    // Immutable: nothing outside podman's tmpfs mounts needs to be writable.
    let (db_port, app_port) = run_container(&pod, &image, &container, &["--read-only"]);
    assert!(page(db_port).contains("db v1"));
    assert!(page(app_port).contains("app v1"));
    assert_eq!(
        exec(
            &pod,
            &container,
            "test -e /nix/var/nix/profiles/ferry/processes-web && echo profile || echo none"
        ),
        "none"
    );
    let active = exec(&pod, &container, "readlink /run/web/.ferry/active/app");
    assert!(active.ends_with("-ferry-process-app-sysvinit"), "{active}");

    // SIGTERM to PID 1: processes stopped dependents first, PID 1 exits 0 (not killed).
    let r = pod.run(&["stop", "-t", "20", &container]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(pod.ok(&["inspect", "--format", "{{.State.ExitCode}}", &container]), "0");
    let logs = pod.ok(&["logs", &container]);
    let (a, d) = (logs.find("app stopped"), logs.find("db stopped"));
    assert!(a.is_some() && d.is_some() && a < d, "app stops before db:\n{logs}");
}

#[test]
fn bad_image_inputs_are_clear_errors() {
    let pod = Podman::new();
    let sb = Sandbox::new(BIN);
    let write = |body: &str| {
        sb.deployment(&format!(
            r#"{{ resources, ferry, ... }}:
let t = import {tk} {{ }}; p = ferry.lib.processes;
  procs = {{ a = p.mkProcess {{ command = [ "sleep" "1000" ]; }}; }};
in {{ {body} }}
"#,
            tk = ferry_testkit::testkit_nix()
        ))
    };

    // A manager the image cannot run.
    write(
        r#"resources.i = { type = "processes.image"; inputs = (p.image { pkgs = t.pkgs; manager = "s6"; name = "x"; processes = procs; }).inputs; };"#,
    );
    let r = ferry(&pod, &sb, &["plan"]).expect(1);
    assert!(r.all().contains("manager `s6` is not supported in images"), "{}", r.all());
    assert!(r.all().contains("pkgs.s6"), "{}", r.all());
    write(
        r#"resources.i = { type = "processes.image"; inputs = (p.image { pkgs = t.pkgs; manager = "runit"; name = "x"; processes = procs; }).inputs; };"#,
    );
    let r = ferry(&pod, &sb, &["plan"]).expect(1);
    assert!(r.all().contains("unknown manager `runit`"), "{}", r.all());

    // An archive that does not exist: nothing is loaded, the error names the resource and path.
    let missing = "/nix/store/00000000000000000000000000000000-missing-image.tar";
    write(&format!(
        r#"resources.i = {{ type = "processes.image"; inputs = {{ archive = "{missing}"; ref = "ferry-it-missing:1"; }}; }};"#
    ));
    let r = ferry(&pod, &sb, &["apply", "--yes"]).expect(1);
    assert!(r.all().contains("processes.image `i`"), "{}", r.all());
    assert!(r.all().contains(&format!("archive {missing} does not exist")), "{}", r.all());

    // A bad ref is refused while planning.
    write(
        r#"resources.i = { type = "processes.image"; inputs = { archive = "/nix/store/x.tar"; ref = "Not A Ref"; }; };"#,
    );
    let r = ferry(&pod, &sb, &["plan"]).expect(1);
    assert!(r.all().contains("ref `Not A Ref`"), "{}", r.all());

    // No archive at all.
    write(r#"resources.i = { type = "processes.image"; inputs = { ref = "x:1"; }; };"#);
    let r = ferry(&pod, &sb, &["plan"]).expect(1);
    assert!(r.all().contains("archive"), "{}", r.all());
}
