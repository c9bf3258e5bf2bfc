//! Secrets and files (issue 11), end to end through the ferry binary: keys on test hosts never
//! follow a planted symlink and go only into directories no one but root can change; keys with
//! spaces in their paths are tracked and removed; a re-pinned host key wins over the one learned
//! on first use; `local.file` leaves the Nix store alone.

use ferry_testkit::host::{test_systems_nix, TestHost};
use ferry_testkit::Sandbox;

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

/// A deployment with one machine `m` on `h`, with extra inputs (Nix attrset body).
fn machine(h: &TestHost, inputs: &str) -> String {
    format!(
        r#"{{ resources, ... }}:
let t = import {nix} {{ }}; in {{
  resources.m = {{
    type = "nixos.machine";
    inputs = {{
      host = "{addr}"; port = {port}; sshKey = "{key}";
      system = t.mkSystem {{ name = "m"; address = "{addr}"; }};
      rollback.magic.confirmTimeout = 5;
      {inputs}
    }};
  }};
}}
"#,
        nix = test_systems_nix().display(),
        addr = h.addr(),
        port = h.port(),
        key = h.client_key().display(),
    )
}

fn host(sb: &Sandbox, name: &str) -> TestHost {
    let base = sb.path().join("hosts");
    std::fs::create_dir_all(&base).unwrap();
    TestHost::start(&base, name).expect("start test host")
}

/// Run a script on the host; its trimmed stdout.
#[test]
fn a_pinned_host_key_wins_over_the_one_learned_on_first_use() {
    let sb = Sandbox::new(BIN);
    let mut h = host(&sb, "repin");
    sb.deployment(&machine(&h, ""));
    sb.ferry(&["apply", "--yes"]).ok();
    let learned = h.host_key().to_string();

    // Reinstalled: a new host key. Without a pin, ferry refuses and says how to re-pin.
    h.regenerate_host_key().unwrap();
    assert_ne!(h.host_key(), learned);
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    let all = r.all();
    assert!(all.contains("does not match") && all.contains("hostKeyMismatch"), "{all}");
    assert!(all.contains("set `hostKey`") && all.contains("takes precedence"), "{all}");

    // Pinning the new key applies, and records it.
    sb.deployment(&machine(&h, &format!(r#"hostKey = "{}";"#, h.host_key())));
    sb.ferry(&["apply", "--yes"]).ok();
    let show = sb.ferry(&["state", "show", "m", "--json"]).ok();
    let rec: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(rec["outputs"]["hostKey"].as_str(), Some(h.host_key()), "{rec}");
    sb.ferry(&["plan"]).ok().says("No changes");
}

