//! The container orchestration against a fake host (`ferry_hosts::fake`): which helper calls a
//! deploy makes, in which order, and how a failing call ends it. No root, sshd or Nix.

use std::collections::BTreeMap;

use ferry_hosts::build::Builder;
use ferry_hosts::fake::{Call, FakeHost};
use ferry_hosts::{Copied, HostError, Slots};
use ferry_protocol::sdk::CallContext;
use ferry_protocol::{Object, ProviderError};
use serde_json::{json, Value};

use crate::container::{place, Deps, Probe, OWNER_DEPLOYMENT};
use crate::host::Host;
use crate::schema::Container;

const SYSTEM: &str = "/nix/store/0000000000000000000000000000000a-nixos-system-web";

fn container(extra: Value) -> Container {
    let mut inputs = json!({
        "system": SYSTEM,
        "host": {"host": "10.0.0.5", "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFAKEFAKEFAKE"},
        "credentials": {"token": "s3cret-value"},
    });
    if let (Value::Object(i), Value::Object(e)) = (&mut inputs, extra) {
        i.extend(e);
    }
    Container::parse("web", inputs.as_object().unwrap()).unwrap()
}

/// A host that runs systemd-nspawn and knows nothing of the container yet.
fn fresh_probe() -> Probe {
    Probe::parse("runtime=direct\nexists=0\nnspawn=1\nnft=1\nip=1\n")
}

fn deploy(fake: &FakeHost, c: &Container, pr: &Probe) -> Result<Object, ProviderError> {
    let builder = Builder::default();
    let slots = Slots::new(1);
    let context = BTreeMap::new();
    let d = Deps {
        builder: &builder,
        nix_args: vec![],
        context: &context,
        owner: OWNER_DEPLOYMENT,
        copy_slots: &slots,
    };
    let h = Host::on(Box::new(fake.clone()))?;
    place(&h, &d, c, None, pr, &CallContext::detached())
}

/// Each call as the helper's mode (`install` for the install step, `copy` for a transfer).
fn modes(fake: &FakeHost) -> Vec<String> {
    fake.calls()
        .iter()
        .map(|c| match c {
            Call::Copy { .. } => "copy".to_string(),
            Call::Exec { script, .. } if script.contains("mktemp") => "install".to_string(),
            Call::Exec { script, .. } => script.split_whitespace().nth(2).unwrap_or_default().to_string(),
        })
        .collect()
}

fn writes_of(fake: &FakeHost, path_part: &str) -> Vec<Call> {
    fake.calls()
        .into_iter()
        .filter(|c| c.script().contains(" write ") && c.script().contains(path_part))
        .collect()
}

#[test]
fn a_create_installs_the_helper_copies_claims_writes_then_starts() {
    let fake = FakeHost::new("10.0.0.5");
    fake.copies(Copied { paths: 3, bytes: 1 << 20 });
    fake.reply("set-profile", 0, "link=/nix/var/nix/profiles/ferry/nspawn/web/system-1-link\n");
    let c = container(json!({"network": {"v4": {"pool": "10.233.1.0/24"}}}));
    let out = deploy(&fake, &c, &fresh_probe()).unwrap();

    let m = modes(&fake);
    let files = m.iter().filter(|m| *m == "write").count();
    let mut want = vec!["install", "copy", "prepare", "claims", "claim"];
    want.extend(std::iter::repeat_n("write", files));
    want.extend(["enable", "set-profile", "start", "probe"]);
    assert_eq!(m, want, "the helper calls of a create, in order");
    // unit, networkd files, one credential, address, address6, unit.digest.
    assert!(files >= 6, "{m:?}");
    assert_eq!(fake.calls()[1], Call::Copy { paths: vec![SYSTEM.to_string()] });
    assert!(
        fake.scripts().iter().any(|s| s.ends_with("claim web 10.233.1.2")),
        "the pool's first free address"
    );
    assert_eq!(out["address"], "10.233.1.2");
    assert_eq!(out["generation"], 1);
    assert_eq!(out["hostKey"], "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFAKEFAKEFAKE");

    // The credential travels on stdin into its 0600 file, never on a command line.
    let cred = writes_of(&fake, "/credentials/token");
    let [Call::Exec { script, stdin, privileged, .. }] = cred.as_slice() else { panic!("{cred:?}") };
    assert!(script.ends_with(" 0600") && *privileged, "{script}");
    assert_eq!(stdin.as_deref(), Some(&b"s3cret-value"[..]));
    assert!(fake.scripts().iter().all(|s| !s.contains("s3cret")), "no secret in any script");
}

#[test]
fn a_running_container_with_a_new_system_is_reloaded_not_restarted() {
    let fake = FakeHost::new("10.0.0.5");
    fake.reply("reload", 0, "result=ok\n");
    let c = container(json!({"network": {"mode": "host"}}));
    let mut pr = fresh_probe();
    pr.exists = true;
    pr.owner = OWNER_DEPLOYMENT.into();
    pr.leader = Some(42);
    pr.current = "/nix/store/0000000000000000000000000000000b-old-system".into();
    let files = crate::unit::files(&c, &crate::unit::Resolved::new(&c, None, None));
    pr.started = crate::unit::digest(&files, &c);
    deploy(&fake, &c, &pr).unwrap();
    let m = modes(&fake);
    let tail: Vec<&str> = m.iter().rev().take(3).rev().map(String::as_str).collect();
    assert_eq!(tail, ["set-profile", "reload", "probe"], "{m:?}");
    assert!(!m.iter().any(|m| m == "stop" || m == "start"), "{m:?}");
}

#[test]
fn a_failing_helper_call_stops_the_deploy_with_its_typed_error() {
    let fake = FakeHost::new("10.0.0.5");
    fake.reply("set-profile", 1, "error: cannot set the profile: no space left\n");
    let c = container(json!({"network": {"mode": "host"}}));
    let e = deploy(&fake, &c, &fresh_probe()).unwrap_err();
    assert_eq!(
        e.message,
        "setting the profile failed on 10.0.0.5 (exit 1): cannot set the profile: no space left"
    );
    assert_eq!(e.code.as_deref(), Some("remoteFailed"));
    assert_eq!(modes(&fake).last().map(String::as_str), Some("set-profile"), "nothing after the failure");
}

#[test]
fn a_lost_connection_keeps_its_class() {
    let fake = FakeHost::new("10.0.0.5");
    let lost =
        ferry_hosts::SshError::Unreachable { host: "10.0.0.5".into(), detail: "Connection reset".into() };
    fake.fail("enable", HostError::Ssh(lost));
    let c = container(json!({"network": {"mode": "host"}}));
    let e = deploy(&fake, &c, &fresh_probe()).unwrap_err();
    assert_eq!((e.code.as_deref(), e.retryable), (Some("unreachable"), true), "{}", e.message);
}

#[test]
fn a_taken_static_address_is_told_by_the_claims_exit_status() {
    let fake = FakeHost::new("10.0.0.5");
    fake.reply("claims", 0, "10.233.1.7 other\n");
    fake.reply("claim web", 4, "");
    let c = container(
        json!({"network": {"v4": {"static": {"address": "10.233.1.7", "hostAddress": "10.233.1.1"}}}}),
    );
    let e = deploy(&fake, &c, &fresh_probe()).unwrap_err();
    assert!(
        e.message.starts_with(
            "the address 10.233.1.7 is already used by container `other` on 10.0.0.5: pick another address"
        ),
        "{}",
        e.message
    );
    // … and how to free it (issue 13, fault 2).
    assert!(e.message.contains("`ferry container list --host 10.0.0.5` shows it"), "{}", e.message);
    assert!(e.message.contains("`ferry container destroy other --purge`"), "{}", e.message);
    assert_eq!(e.code.as_deref(), Some("invalidInput"));
    assert!(writes_of(&fake, "/").is_empty(), "nothing written after a refused claim");
    // Another exit status of `claim` is a failure of its own, not a taken address.
    let fake = FakeHost::new("10.0.0.5");
    fake.reply("claim web", 1, "error: read-only file system\n");
    let e = deploy(&fake, &c, &fresh_probe()).unwrap_err();
    assert_eq!(e.message, "claiming an address failed on 10.0.0.5 (exit 1): read-only file system");
}
