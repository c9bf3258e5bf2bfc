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
fn sh(h: &TestHost, script: &str) -> String {
    let o = h.exec(script);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn key_upload_never_follows_a_planted_symlink() {
    let sb = Sandbox::new(BIN);
    let h = host(&sb, "sym");
    // Root-owned /run/app (only root can change it) with two traps: a symlink at the old
    // predictable temporary name and one at the destination itself.
    let o = h.exec(
        "set -e; mkdir -p /run/app; echo victim-one > /etc/victim; echo victim-two > /etc/victim2; \
         ln -s /etc/victim /run/app/tok.ferry-tmp; ln -s /etc/victim2 /run/app/tok2; \
         mkdir -p /etc/victim-dir; ln -s /etc/victim-dir /run/app/tok3",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let keys = r#"keys.tok = { text = "tok-secret-91b2"; destDir = "/run/app"; user = "nobody"; group = "nogroup"; permissions = "0440"; };
                  keys.tok2 = { text = "tok2-secret-5e7a"; destDir = "/run/app"; user = "nobody"; group = "nogroup"; };
                  keys.tok3 = { text = "tok3-secret-0d9b"; destDir = "/run/app"; };"#;
    sb.deployment(&machine(&h, keys));
    let r = sb.ferry(&["apply", "--yes", "-vv"]).ok();
    assert!(
        !r.all().contains("tok-secret-91b2") && !r.all().contains("tok2-secret-5e7a"),
        "secret in output"
    );

    // The symlinks' targets are untouched: content, owner and mode.
    assert_eq!(sh(&h, "cat /etc/victim"), "victim-one");
    assert_eq!(sh(&h, "stat -c '%a %U %G' /etc/victim"), "644 root root");
    assert_eq!(sh(&h, "cat /etc/victim2"), "victim-two");
    assert_eq!(sh(&h, "stat -c '%a %U %G' /etc/victim2"), "644 root root");
    // The keys are regular files with their declared owner and mode; the link at tok2 was
    // replaced, not followed.
    assert_eq!(sh(&h, "stat -c '%F %a %U %G' /run/app/tok"), "regular file 440 nobody nogroup");
    assert_eq!(sh(&h, "cat /run/app/tok"), "tok-secret-91b2");
    assert_eq!(sh(&h, "stat -c '%F %a %U %G' /run/app/tok2"), "regular file 600 nobody nogroup");
    assert_eq!(sh(&h, "cat /run/app/tok2"), "tok2-secret-5e7a");
    // A link to a directory is replaced too: nothing is moved into the directory.
    assert_eq!(sh(&h, "stat -c '%F %a %U %G' /run/app/tok3"), "regular file 600 root root");
    assert_eq!(sh(&h, "cat /run/app/tok3"), "tok3-secret-0d9b");
    assert_eq!(sh(&h, "ls -A /etc/victim-dir"), "");
    // No temporary file is left behind (the planted link is the only other entry).
    assert_eq!(sh(&h, "ls -A /run/app | sort | tr '\\n' ' '"), "tok tok.ferry-tmp tok2 tok3");
    sb.ferry(&["plan"]).ok().says("No changes");

    // A key replaced by a symlink on the host is drift, and apply puts a regular file back.
    h.exec("rm /run/app/tok && ln -s /etc/victim /run/app/tok");
    sb.ferry(&["plan"]).ok().says("key tok is a symlink on the host");
    sb.ferry(&["apply", "--yes"]).ok();
    assert_eq!(sh(&h, "stat -c '%F' /run/app/tok"), "regular file");
    assert_eq!(sh(&h, "cat /etc/victim"), "victim-one");
}

#[test]
fn keys_go_only_into_directories_no_one_but_root_can_change() {
    let sb = Sandbox::new(BIN);
    let h = host(&sb, "dirs");
    // /run/shared belongs to nobody (who could swap entries under it); /run/via-link is a
    // symlink to /etc.
    let o = h.exec("set -e; mkdir -p /run/shared/keys; chown nobody /run/shared; ln -s /etc /run/via-link");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (dir, why) in [
        ("/run/shared/keys", "/run/shared is not owned by root"),
        ("/run/via-link", "/run/via-link is a symlink"),
    ] {
        sb.deployment(&machine(
            &h,
            &format!(r#"keys.passwd = {{ text = "dir-secret-2c4f"; destDir = "{dir}"; user = "nobody"; group = "nogroup"; }};"#),
        ));
        let r = sb.ferry(&["apply", "--yes"]).expect(1);
        assert!(r.all().contains(why) && r.all().contains("unsafeKeyDir"), "{dir}: {}", r.all());
        assert!(!r.all().contains("dir-secret-2c4f"), "secret in output");
    }
    assert_eq!(sh(&h, "ls -A /run/shared/keys"), "", "nothing written under a directory nobody controls");
    assert_eq!(sh(&h, "stat -c '%U' /etc/passwd"), "root");
    assert!(!sh(&h, "cat /etc/passwd").contains("dir-secret"), "/etc/passwd untouched");
    assert_eq!(sh(&h, "ls -A /etc | grep -c ferry-key || true"), "0");
}

#[test]
fn a_profile_in_a_directory_others_can_change_is_refused() {
    let sb = Sandbox::new(BIN);
    let h = host(&sb, "prof");
    let o = h.exec("set -e; mkdir -p /run/theirs; chown nobody /run/theirs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    sb.deployment(&machine(&h, r#"profile = "/run/theirs/system";"#));
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    assert!(r.all().contains("refusing to set profile /run/theirs/system"), "{}", r.all());
    assert_eq!(sh(&h, "ls -A /run/theirs"), "", "no profile link was made there");
    assert_eq!(sh(&h, "test -e /run/current-system && echo activated || echo not"), "not");
}

#[test]
fn keys_with_spaces_are_tracked_and_removed() {
    let sb = Sandbox::new(BIN);
    let h = host(&sb, "spaces");
    let key =
        r#"keys."my key" = { text = "space-secret-8d3e"; destDir = "/run/my app"; permissions = "0400"; };"#;
    sb.deployment(&machine(&h, key));
    sb.ferry(&["apply", "--yes"]).ok();
    assert_eq!(sh(&h, "cat '/run/my app/my key'"), "space-secret-8d3e");
    assert_eq!(sh(&h, "stat -c '%a %U %G' '/run/my app/my key'"), "400 root root");
    sb.ferry(&["plan"]).ok().says("No changes");
    sb.ferry(&["apply", "--yes"]).ok().says("No changes");

    // Missing on the host: drift naming the key.
    h.exec("rm '/run/my app/my key'");
    sb.ferry(&["plan"]).ok().says("key my key is missing on the host (/run/my app/my key)");
    sb.ferry(&["apply", "--yes"]).ok();
    assert_eq!(sh(&h, "cat '/run/my app/my key'"), "space-secret-8d3e");

    // Removed from the deployment: planned, and the file goes.
    sb.deployment(&machine(&h, ""));
    sb.ferry(&["plan"]).ok().says("keys").says("1 to update");
    sb.ferry(&["apply", "--yes"]).ok().says("1 updated");
    assert_eq!(sh(&h, "test -e '/run/my app/my key' && echo present || echo gone"), "gone");
    sb.ferry(&["plan"]).ok().says("No changes");
}

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

/// A `local.file` deployment: one file resource per (name, path).
fn files(entries: &[(&str, &str)]) -> String {
    let mut s = String::from("{ ... }: {\n");
    for (name, path) in entries {
        s += &format!(
            "  resources.{name} = {{ type = \"local.file\"; inputs.path = \"{path}\"; inputs.content = \"ferry-was-here\\n\"; }};\n"
        );
    }
    s + "}\n"
}

#[test]
fn local_file_refuses_the_nix_store_at_plan_time_and_never_deletes_in_it() {
    let sb = Sandbox::new(BIN);
    // A store path of this test's own.
    let src = sb.write("blob", &format!("store-content {}\n", sb.path().display()));
    let o = std::process::Command::new("nix-store").arg("--add").arg(&src).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let store_file = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let original = std::fs::read_to_string(&store_file).unwrap();

    // Written as a store path, or reached through a symlink to the store: refused at plan time.
    std::os::unix::fs::symlink("/nix/store", sb.path().join("store-link")).unwrap();
    let via_link = sb.p("store-link/ferry-test-new-file");
    for path in [store_file.as_str(), "/nix/store/ferry-test-new-file", via_link.as_str()] {
        sb.deployment(&files(&[("f", path)]));
        let r = sb.ferry(&["plan"]).expect(1);
        assert!(
            r.all().contains("f")
                && r.all().contains("input `path`")
                && r.all().contains("inside the Nix store"),
            "{}",
            r.all()
        );
        sb.ferry(&["apply", "--yes"]).expect(1);
    }
    assert_eq!(std::fs::read_to_string(&store_file).unwrap(), original);
    assert!(!std::path::Path::new("/nix/store/ferry-test-new-file").exists());

    // A store path recorded by an earlier ferry (planted through state export/import): removing
    // the resource forgets it and leaves the store path alone.
    let ok_path = sb.p("ok.txt");
    sb.deployment(&files(&[("f", &ok_path)]));
    sb.ferry(&["apply", "--yes"]).ok();
    let export = sb.ferry(&["state", "export"]).ok().stdout;
    assert!(export.contains(&ok_path), "{export}");
    sb.write("planted.json", &export.replace(&ok_path, &store_file));
    sb.ferry(&["state", "import", "planted.json"]).ok();
    sb.deployment("{ ... }: { }\n");
    let r = sb.ferry(&["apply", "--yes", "-v", "--allow-destroy-all"]).ok();
    assert!(r.all().contains("not removing") && r.all().contains("inside the Nix store"), "{}", r.all());
    assert_eq!(std::fs::read_to_string(&store_file).unwrap(), original, "the store path is untouched");
    assert!(sb.ferry(&["state", "list"]).ok().stdout.lines().all(|l| !l.starts_with("f ")));
}

#[test]
fn local_exec_hides_its_own_sensitive_inputs_in_what_its_commands_print() {
    let sb = Sandbox::new(BIN);
    sb.deployment(
        r#"{ ... }: {
  resources.traced = { type = "local.exec"; inputs = {
    env.TOKEN = "exec-env-secret-31f7";
    stdin = "exec-stdin-secret-8a2c\nsecond line of the stdin secret\n";
    create = [ "sh" "-c" "set -x; : \"$TOKEN\"; cat >&2; echo \"$FERRY_INPUTS\" >&2; exit 1" ];
  }; };
  resources.chatty = { type = "local.exec"; inputs = {
    env.TOKEN = "exec-env-secret-31f7";
    create = [ "sh" "-c" "echo \"not json $TOKEN\"" ];
  }; };
}"#,
    );
    let secrets = ["exec-env-secret-31f7", "exec-stdin-secret-8a2c", "second line of the stdin secret"];
    let mut seen = vec![];
    let r = sb.ferry(&["apply", "--yes", "-vv", "--log-format", "json"]).expect(1);
    // The failures are reported, with the secrets' places marked.
    assert!(r.all().contains("the create command `sh` failed with exit code 1"), "{}", r.all());
    assert!(
        r.all().contains("printed invalid JSON") && r.all().contains("not json (sensitive)"),
        "{}",
        r.all()
    );
    seen.push(("apply --log-format json", r.all()));
    seen.push(("apply -v", sb.ferry(&["apply", "--yes", "-v"]).expect(1).all()));
    for args in [
        &["state", "show", "traced"][..],
        &["state", "show", "traced", "--json"],
        &["state", "show", "chatty", "--json"],
        &["state", "log", "--json"],
        &["plan", "--json"],
    ] {
        seen.push((args.join(" ").leak(), sb.ferry(args).all()));
    }
    for (what, text) in &seen {
        for s in secrets {
            assert!(!text.contains(s), "{what} shows `{s}`:\n{text}");
        }
    }
}

#[test]
fn local_file_replaced_by_a_symlink_is_drift_and_the_link_is_replaced_not_followed() {
    let sb = Sandbox::new(BIN);
    let path = sb.p("f.txt");
    sb.deployment(&files(&[("f", &path)]));
    sb.ferry(&["apply", "--yes"]).ok();
    // Someone puts a symlink there, to a file that even has the declared content.
    let victim = sb.write("victim.txt", "ferry-was-here\n");
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    sb.ferry(&["plan"]).ok().says("is no longer a regular file").says("1 to update");
    sb.ferry(&["apply", "--yes"]).ok();
    assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_file(), "a regular file again");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "ferry-was-here\n");
    assert_eq!(sb.mode("victim.txt") & 0o777, 0o644);
    sb.ferry(&["plan"]).ok().says("No changes");
}
