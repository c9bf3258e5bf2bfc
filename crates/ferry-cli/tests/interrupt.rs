//! Ctrl-C: stop starting new work, let running calls finish, record everything, exit 130.

use ferry_testkit::{wait_until, Sandbox};
use std::time::Duration;

#[test]
fn sigint_lets_running_calls_finish_and_exits_130() {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_ferry"));
    sb.deployment(
        r#"{ resources, ... }: {
  resources.slow = {
    type = "local.exec";
    inputs = {
      create = [ "sh" "-c" "touch @DIR@/slow-started; sleep 2; echo '{\"v\": \"done\"}'" ];
      outputNames = [ "v" ];
    };
  };
  resources.after = {
    type = "local.file";
    inputs = { path = "@DIR@/after"; content = resources.slow.v; };
  };
}"#,
    );
    let child = sb.spawn(&["apply", "--yes"]);
    wait_until(Duration::from_secs(60), "the slow create to start", || sb.exists("slow-started"));
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The running call finished and was recorded; its dependent was not started.
    assert!(!sb.exists("after"), "no new work after the interrupt");
    let show = sb.ferry(&["state", "show", "slow", "--json"]).ok();
    assert!(show.stdout.contains("\"done\""), "outputs of the finished call are recorded: {}", show.stdout);
    // Resuming converges without creating `slow` again.
    let again = sb.ferry(&["apply", "--yes"]).ok();
    assert!(!again.stderr.contains("[slow] create"), "slow is not created twice: {}", again.stderr);
    assert_eq!(sb.read("after").as_deref(), Some("done"));
}
