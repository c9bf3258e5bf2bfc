//! The switch against a fake host (`ferry_hosts::fake`): which manager operations it runs, in
//! which order, and how a failure ends it. No root, sshd or process manager.

use std::time::Duration;

use ferry_hosts::fake::FakeHost;
use ferry_hosts::{HostError, SshError};
use ferry_protocol::sdk::CallContext;
use serde_json::json;

use crate::host::Host;
use crate::manager::{Manifest, Mgr};
use crate::set::switch;

/// Two sysvinit processes: `db`, and `app` depending on it (level 1).
fn manifest() -> Manifest {
    serde_json::from_value(json!({
        "manager": "sysvinit", "stateDir": "/srv/web", "runtimeDir": "/run/web", "logDir": "/var/log/web",
        "order": ["db", "app"],
        "processes": {
            "db": {"config": "/nix/store/00000000000000000000000000000000-db", "level": 0},
            "app": {"config": "/nix/store/00000000000000000000000000000000-app", "level": 1}
        }
    }))
    .unwrap()
}

/// The function calls of every script run, in order (the libraries' own lines left out: a
/// call is a function name and quoted words, at the start of a line).
fn calls(fake: &FakeHost) -> Vec<String> {
    let call = |l: &&str| {
        let (f, rest) = l.split_once(' ').unwrap_or((l, ""));
        !f.is_empty() && f.chars().all(|c| c.is_ascii_lowercase() || c == '_') && rest.starts_with('\'')
    };
    fake.scripts()
        .iter()
        .flat_map(|s| s.lines().filter(call).map(str::to_string).collect::<Vec<_>>())
        .collect()
}

fn position(calls: &[String], prefix: &str) -> usize {
    calls.iter().position(|c| c.starts_with(prefix)).unwrap_or_else(|| panic!("no `{prefix}` in {calls:#?}"))
}

fn run(fake: &FakeHost) -> Result<String, ferry_protocol::ProviderError> {
    let host = Host::on("web", Box::new(fake.clone()), true);
    let m = manifest();
    let mgr = Mgr::new(&host, &m, "/etc/systemd/system");
    let profile = "/nix/store/00000000000000000000000000000000-processes-web";
    switch(&mgr, &m, Some(profile), None, Duration::from_secs(2), &CallContext::detached())
        .map(|s| s.describe())
}

#[test]
fn a_first_switch_starts_level_by_level_each_running_before_the_next() {
    let fake = FakeHost::new("10.0.0.5");
    fake.reply("\nsysv_status '", 0, "db running 11\napp running 12\n");
    let summary = run(&fake).unwrap();
    let c = calls(&fake);
    let (ensure, db, app) = (
        position(&c, "ensure_dirs '/srv/web'"),
        position(&c, "sysv_install '/srv/web' 'db'"),
        position(&c, "sysv_install '/srv/web' 'app'"),
    );
    let db_checked =
        c.iter().enumerate().position(|(i, l)| i > db && l.starts_with("sysv_status '/run/web' 'db'"));
    assert!(ensure < db && db < app, "{c:#?}");
    assert!(db_checked.is_some_and(|i| i < app), "db runs before app starts: {c:#?}");
    assert_eq!(
        c[db], "sysv_install '/srv/web' 'db' '/nix/store/00000000000000000000000000000000-db' '0'",
        "new: not stopped first"
    );
    assert!(c[db + 1].starts_with("set_active '/srv/web/.ferry/active' 'db'"), "{c:#?}");
    assert!(fake
        .calls()
        .iter()
        .all(|call| matches!(call, ferry_hosts::fake::Call::Exec { privileged: true, .. })));
    assert!(summary.contains("started") && summary.contains("db") && summary.contains("app"), "{summary}");
}

#[test]
fn a_process_that_does_not_start_stops_the_switch_before_its_dependents() {
    let fake = FakeHost::new("10.0.0.5");
    fake.reply("\nsysv_status '", 0, "db stopped\n");
    let e = run(&fake).unwrap_err();
    assert_eq!(
        e.message,
        "processes.set `web`: process `db` failed to start: stopped (see /var/log/web/db.log)"
    );
    assert!(
        !calls(&fake).iter().any(|c| c.starts_with("sysv_install '/srv/web' 'app'")),
        "app is never started"
    );
}

#[test]
fn a_failing_script_and_a_lost_connection_keep_their_meaning() {
    let fake = FakeHost::new("10.0.0.5");
    fake.reply("\nsysv_install '", 1, "error: /srv/web/init.d: read-only file system\n");
    let e = run(&fake).unwrap_err();
    assert_eq!(e.message, "processes.set `web`: starting db failed on 10.0.0.5 (exit 1): /srv/web/init.d: read-only file system");
    assert_eq!(e.code.as_deref(), Some("remoteFailed"));

    let fake = FakeHost::new("10.0.0.5");
    let lost = SshError::Unreachable { host: "10.0.0.5".into(), detail: "Connection reset".into() };
    fake.fail("\nlist_active '", HostError::Ssh(lost));
    let e = run(&fake).unwrap_err();
    assert_eq!((e.code.as_deref(), e.retryable), (Some("unreachable"), true));
    assert_eq!(e.message, "processes.set `web`: cannot connect to 10.0.0.5: Connection reset");
}
