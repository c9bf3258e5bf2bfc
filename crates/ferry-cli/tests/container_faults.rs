//! `nspawn.container` creates that fail or are cut short (issue 13, fault 2): what they made on
//! the host — the container's files and its address claims — never outlives what state knows.
//! A failed create removes it again; what a create cut short by a crash left is marked
//! incomplete on the host, shown by `ferry container list`, and cleaned up by the next apply;
//! a claim that blocks another container's address says what holds it and how to free it.
//! Real systemd-nspawn containers on this machine (direct runtime), as in `containers.rs`.

#[path = "support/containers.rs"]
mod support;

use std::time::Duration;

use ferry_testkit::{wait_until, Sandbox};
use support::*;

/// A container system whose init exits at once: its start fails ("container … exited").
fn failing_system(name: &str) -> String {
    format!(
        r#"system = t.mkSystem {{ name = "{name}"; address = "0.0.0.0"; httpPort = 80;
        initScript = builtins.toFile "fail-init.sh" "echo failing on purpose >&2; exit 3\n"; }};"#
    )
}

/// A container system whose init never activates it: its start waits (60 s) for an activation
/// that never comes.
fn hanging_system(name: &str) -> String {
    format!(
        r#"system = t.mkSystem {{ name = "{name}"; address = "0.0.0.0"; httpPort = 80;
        initScript = builtins.toFile "hang-init.sh" "while :; do sleep 1; done\n"; }};"#
    )
}

fn deployment(res: &str, page: &str, inputs: &str) -> String {
    format!("{}{}}}\n", nix_header(), container(res, page, inputs))
}

fn address(name: &str, last: u8) -> String {
    format!(
        r#"name = "{name}"; stopTimeout = 2;
      network.v4.static = {{ hostAddress = "10.233.24.1"; address = "10.233.24.{last}"; }};"#
    )
}

#[test]
fn a_failed_create_removes_what_it_made_and_frees_its_address() {
    let _c = Cleanup::new(&["ct-fail", "ct-fixed"]);
    let sb = Sandbox::new(BIN);
    sb.deployment(&deployment(
        "web",
        "",
        &format!("{} {}", address("ct-fail", 2), failing_system("ct-fail")),
    ));
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    assert!(r.all().contains("container ct-fail exited"), "{}", r.all());
    assert!(r.all().contains("was removed again"), "the error says it was cleaned up: {}", r.all());
    let left = traces_of("ct-fail");
    assert!(left.is_empty(), "the failed create left this on the host: {left:?}");
    let list = sb.ferry(&["container", "list"]).ok().stdout;
    assert!(!list.contains("ct-fail"), "{list}");

    // The same address for the container under another name, now with a working system: the
    // failed create's claim does not block it.
    sb.deployment(&deployment("web", "fixed", &address("ct-fixed", 2)));
    let r = sb.ferry(&["apply", "--yes"]).ok();
    assert!(r.stdout.contains("1 created"), "{}", r.all());
    serves("10.233.24.2", 80, "fixed");
    sb.ferry(&["destroy", "--yes"]).ok();
    assert!(traces_of("ct-fixed").is_empty());
}

/// The PIDs of processes whose command line `pred` accepts.
fn pids_where(pred: impl Fn(u32, &[String]) -> bool) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, ppid, args)| pred(*ppid, args))
        .map(|(pid, _, _)| pid as i32)
        .collect()
}

/// ferry dies in the middle of a create (the deployer crashed): ferry, its nspawn provider and
/// the helper waiting for the container's activation are killed; the container, started
/// detached, stays, with its files and address claim.
fn crash_during_start(sb: &Sandbox, name: &str) {
    let mut child = sb.spawn(&["apply", "--yes"]);
    let ferry = child.id();
    wait_until(Duration::from_secs(60), &format!("{name} to be started"), || {
        !container_processes(name).is_empty()
    });
    let provider = pids_where(|ppid, a| ppid == ferry && a.iter().any(|x| x == "__provider"));
    let waiting =
        pids_where(|_, a| a.len() >= 4 && a[1].contains("nspawn") && a[2] == "start" && a[3] == name);
    ferry_testkit::kill9(&mut child);
    for pid in provider.into_iter().chain(waiting) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

#[test]
fn what_a_create_cut_short_left_is_listed_and_cleaned_up_by_the_next_apply() {
    let _c = Cleanup::new(&["ct-hang", "ct-next", "ct-other"]);
    let sb = Sandbox::new(BIN);
    sb.deployment(&deployment(
        "web",
        "",
        &format!("{} {}", address("ct-hang", 3), hanging_system("ct-hang")),
    ));
    crash_during_start(&sb, "ct-hang");
    let list = sb.ferry(&["container", "list"]).ok().stdout;
    assert!(
        list.lines()
            .any(|l| l.starts_with("ct-hang ") && l.contains("incomplete") && l.contains("10.233.24.3")),
        "the leftover is listed as incomplete: {list}"
    );

    // Another deployment wants the address: the error names the holder and how to free it.
    let other = Sandbox::new(BIN);
    other.deployment(&deployment("web", "other", &address("ct-other", 3)));
    let r = other.ferry(&["apply", "--yes"]).expect(1);
    let e = r.all();
    assert!(e.contains("10.233.24.3 is already used by container `ct-hang`"), "{e}");
    assert!(e.contains("ferry container list") && e.contains("did not complete"), "{e}");
    assert!(e.contains("ferry container destroy ct-hang --purge"), "{e}");
    assert!(traces_of("ct-other").is_empty(), "{:?}", traces_of("ct-other"));

    // The deployment that made it renames the container (and fixes its system): the next
    // apply removes what the cut-short create left, then creates the new one on its address.
    sb.deployment(&deployment("web", "next", &address("ct-next", 3)));
    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.stdout.contains("did not complete"), "the plan tells why: {}", plan.all());
    let r = sb.ferry(&["apply", "--yes"]).ok();
    assert!(r.stdout.contains("1 replaced"), "{}", r.all());
    let left = traces_of("ct-hang");
    assert!(left.is_empty(), "the next apply left this of the cut-short create: {left:?}");
    serves("10.233.24.3", 80, "next");
    let list = sb.ferry(&["container", "list"]).ok().stdout;
    assert!(list.lines().any(|l| l.starts_with("ct-next ") && l.contains("running")), "{list}");
    assert!(!list.contains("ct-hang"), "{list}");
    sb.ferry(&["destroy", "--yes"]).ok();
    assert!(traces_of("ct-next").is_empty());
}
