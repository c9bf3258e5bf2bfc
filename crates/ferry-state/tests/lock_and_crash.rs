//! The run lock and crash safety, across threads and real processes. Child processes are this
//! test binary re-run on one `#[ignore]`d helper test, selected by an environment variable.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ferry_state::{Intent, Op, StateError, StateStore, Status, Success};
use serde_json::json;

const CHILD_ROLE: &str = "FERRY_STATE_TEST_CHILD";
const CHILD_DB: &str = "FERRY_STATE_TEST_DB";

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join(".ferry").join("state.db")
}

fn host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// A child process that is SIGKILLed when dropped, so a failing test leaks nothing.
struct ChildGuard(Child);

impl ChildGuard {
    fn id(&self) -> u32 {
        self.0.id()
    }

    fn sigkill(&mut self) {
        // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(self.0.id() as i32, libc::SIGKILL) };
        assert_eq!(rc, 0);
        self.0.wait().unwrap();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts this test binary as a child playing `role` on `db`, and waits until it prints `READY`.
fn spawn_child(role: &str, db: &Path) -> ChildGuard {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["child_process", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, role)
        .env(CHILD_DB, db)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = ChildGuard(child);
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            // libtest prints `test child_process ... ` on the same line.
            Some(Ok(line)) if line.trim_end().ends_with("READY") => break,
            Some(Ok(_)) => {}
            other => panic!("child ended before READY: {other:?}"),
        }
    }
    // Keep draining so the child never blocks on a full pipe.
    thread::spawn(move || for _ in lines {});
    child
}

/// The child side: `lock` takes the run lock and sleeps; `write` loops over the intent/result
/// lifecycle until killed (or 60 s pass). Both print READY once under way.
#[test]
#[ignore = "helper run as a child process by the other tests"]
fn child_process() {
    let (Ok(role), Ok(db)) = (std::env::var(CHILD_ROLE), std::env::var(CHILD_DB)) else {
        return;
    };
    let store = StateStore::open(Path::new(&db)).unwrap();
    match role.as_str() {
        "lock" => {
            let _lock = store.lock("apply --child", None).unwrap();
            println!("READY");
            thread::sleep(Duration::from_secs(60));
        }
        "write" => {
            let run = store.begin_run("apply").unwrap();
            println!("READY");
            let start = Instant::now();
            for i in 0u64.. {
                if start.elapsed() > Duration::from_secs(60) {
                    break;
                }
                let name = format!("r{}", i % 7);
                let op = if store.resource(&name).unwrap().is_some() { Op::Update } else { Op::Create };
                let intent = Intent {
                    resource: name,
                    op,
                    kind: "local.file".into(),
                    provider: json!({"builtin": "local"}),
                    inputs: json!({"i": i, "pad": "x".repeat(2000)}).as_object().unwrap().clone(),
                    dependencies: vec![],
                    tags: vec![],
                    sensitive_outputs: vec![],
                    protect: false,
                    deposed: false,
                };
                let id = store.record_intent(run, &intent).unwrap();
                let outputs = json!({"i": i}).as_object().unwrap().clone();
                store.record_success(run, id, &Success { outputs: Some(outputs) }).unwrap();
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

#[test]
fn second_lock_fails_fast_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let a = StateStore::open(&path).unwrap();
    let b = StateStore::open(&path).unwrap();
    assert_eq!(a.lock_holder().unwrap(), None);
    let lock = a.lock("apply", None).unwrap();
    let lock_file = lock.path().to_owned();
    assert_eq!(lock_file, PathBuf::from(format!("{}.lock", path.display())));
    assert_eq!(std::fs::metadata(&lock_file).unwrap().permissions().mode() & 0o777, 0o600);

    let start = Instant::now();
    let err = b.lock("plan", None).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(1), "must fail fast");
    match &err {
        StateError::Locked { holder, .. } => {
            assert_eq!(holder.pid, std::process::id());
            assert_eq!(holder.host, host());
            assert_eq!(holder.command, "apply");
            assert_eq!(holder, lock.holder());
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
    assert!(msg.contains(&host()), "{msg}");
    assert!(msg.contains(&lock.holder().started), "{msg}");
    assert_eq!(b.lock_holder().unwrap().as_ref(), Some(lock.holder()));

    drop(lock);
    assert_eq!(b.lock_holder().unwrap(), None);
    let again = b.lock("plan", None).unwrap();
    assert_eq!(again.holder().command, "plan");
}

#[test]
fn lock_with_timeout_waits_for_release() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let a = StateStore::open(&path).unwrap();
    let lock = a.lock("apply", None).unwrap();

    let b = StateStore::open(&path).unwrap();
    let short = b.lock("plan", Some(Duration::from_millis(250))).unwrap_err();
    assert!(matches!(short, StateError::Locked { .. }), "{short:?}");

    let waiter = thread::spawn(move || {
        let start = Instant::now();
        let lock = b.lock("plan", Some(Duration::from_secs(10)));
        (lock.map(|l| l.holder().clone()), start.elapsed())
    });
    thread::sleep(Duration::from_millis(500));
    drop(lock);
    let (got, waited) = waiter.join().unwrap();
    assert_eq!(got.unwrap().command, "plan");
    assert!(waited >= Duration::from_millis(400), "returned after {waited:?}");
    assert!(waited < Duration::from_secs(5), "returned after {waited:?}");
}

#[test]
fn lock_of_a_killed_process_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    drop(StateStore::open(&path).unwrap());
    let mut child = spawn_child("lock", &path);

    let store = StateStore::open(&path).unwrap();
    match store.lock("apply", None) {
        Err(StateError::Locked { holder, .. }) => {
            assert_eq!(holder.pid, child.id());
            assert_eq!(holder.command, "apply --child");
        }
        other => panic!("expected Locked by the child, got {other:?}"),
    }
    child.sigkill();
    let lock = store.lock("apply", Some(Duration::from_secs(5))).unwrap();
    assert_eq!(lock.holder().pid, std::process::id());
}

#[test]
fn sigkill_mid_write_leaves_a_consistent_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    drop(StateStore::open(&path).unwrap());
    for (kills, delay_ms) in [(1, 30), (2, 120), (3, 300)] {
        let mut child = spawn_child("write", &path);
        thread::sleep(Duration::from_millis(delay_ms));
        child.sigkill();

        let store = StateStore::open(&path).unwrap();
        assert_eq!(store.integrity_check().unwrap(), "ok");
        let records = store.resources().unwrap();
        assert!(!records.is_empty(), "child wrote nothing in {delay_ms} ms");
        for rec in &records {
            match &rec.status {
                Status::Ready => assert!(rec.pending.is_none()),
                Status::Pending(op) => assert_eq!(&rec.pending.as_ref().unwrap().op, op),
                Status::Failed => panic!("nothing failed: {rec:?}"),
            }
        }
        // The journal agrees with the rows: a resource's last event is its intent exactly when
        // the row is still pending, and at most one operation was in flight per kill.
        for rec in &records {
            let last = store.events(Some(&rec.name), Some(1)).unwrap();
            let expected = if rec.pending.is_some() { "intent" } else { "ok" };
            assert_eq!(last[0].phase, expected, "{rec:?}");
        }
        let events = store.events(None, None).unwrap();
        let intents = events.iter().filter(|e| e.phase == "intent").count();
        let oks = events.iter().filter(|e| e.phase == "ok").count();
        assert!(intents - oks <= kills, "{intents} intents, {oks} results, {kills} kills");
        assert_eq!(mode(&path), 0o600);
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
