//! The state's files on the deployer (issue 11): the database, its side files, the run lock
//! and exports never follow a symlink or trust a file another user owns; ferry's modes are
//! enforced; an empty database is refused, not taken for a new state; removed secrets are gone
//! from the file's bytes; two runs racing on a new state get the usual lock message.

use ferry_testkit::Sandbox;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

const KEY: &str = r#"{ resources, ... }: {
  resources.key = { type = "local.ssh-keypair"; inputs.comment = "k"; };
}"#;

const NOBODY: u32 = 65534;

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), None).unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A "victim" file someone else cares about, to prove ferry neither wrote, truncated nor
/// chmodded it through a link.
fn victim(sb: &Sandbox) -> std::path::PathBuf {
    let v = sb.write("victim", "precious\n");
    std::fs::set_permissions(&v, std::fs::Permissions::from_mode(0o644)).unwrap();
    v
}

fn assert_untouched(v: &Path) {
    assert_eq!(std::fs::read_to_string(v).unwrap(), "precious\n", "the link's target was written");
    assert_eq!(mode(v), 0o644, "the link's target was chmodded");
}

/// A sticky, world-writable directory (like /tmp) holding the state, as `--state` may point.
fn shared_dir(sb: &Sandbox) -> std::path::PathBuf {
    let d = sb.path().join("shared");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
    d
}

#[test]
fn a_planted_lock_or_state_symlink_is_refused_and_its_target_untouched() {
    let sb = Sandbox::new(FERRY);
    sb.deployment(KEY);
    let v = victim(&sb);
    let dir = shared_dir(&sb);
    let db = dir.join("st.db");
    let db_s = db.display().to_string();

    // The lock file: on main this truncated the target to 0 bytes and chmodded it 0600.
    std::os::unix::fs::symlink(&v, dir.join("st.db.lock")).unwrap();
    let r = sb.ferry(&["apply", "--yes", "--state", &db_s]).expect(1);
    assert!(r.stderr.contains("st.db.lock") && r.stderr.contains("symbolic link"), "{}", r.stderr);
    assert_untouched(&v);
    std::fs::remove_file(dir.join("st.db.lock")).unwrap();
    std::fs::remove_file(&db).ok();

    // The database itself (and its WAL side file).
    for name in ["st.db", "st.db-wal"] {
        std::os::unix::fs::symlink(&v, dir.join(name)).unwrap();
        let r = sb.ferry(&["apply", "--yes", "--state", &db_s]).no_panic();
        assert_eq!(r.code, 1, "{name}: {}", r.all());
        assert!(r.stderr.contains(name) && r.stderr.contains("symbolic link"), "{name}: {}", r.stderr);
        assert_untouched(&v);
        std::fs::remove_file(dir.join(name)).unwrap();
        std::fs::remove_file(&db).ok();
    }
    assert!(!sb.read("victim").unwrap().contains("PRIVATE KEY"));
}

#[test]
fn files_owned_by_another_user_are_refused() {
    let sb = Sandbox::new(FERRY);
    sb.deployment(KEY);
    let dir = shared_dir(&sb);
    let db = dir.join("st.db");
    let db_s = db.display().to_string();
    sb.ferry(&["apply", "--yes", "--state", &db_s]).ok();
    let before = std::fs::read(&db).unwrap();

    // Someone else's database (they could read the private key): refused, owner kept.
    chown(&db, NOBODY);
    for verb in [&["plan"][..], &["apply", "--yes"], &["state", "list"]] {
        let args: Vec<&str> = verb.iter().copied().chain(["--state", &db_s]).collect();
        let r = sb.ferry(&args).expect(1);
        assert!(r.stderr.contains("owned by uid 65534"), "{verb:?}: {}", r.stderr);
    }
    assert_eq!(std::fs::metadata(&db).unwrap().uid(), NOBODY);
    assert_eq!(std::fs::read(&db).unwrap(), before, "the foreign database was written");
    chown(&db, 0);

    // A lock file someone else created in the shared directory.
    let lock = dir.join("st.db.lock");
    std::fs::write(&lock, "").unwrap();
    chown(&lock, NOBODY);
    let r = sb.ferry(&["apply", "--yes", "--state", &db_s]).expect(1);
    assert!(r.stderr.contains("st.db.lock") && r.stderr.contains("owned by uid 65534"), "{}", r.stderr);
    std::fs::remove_file(&lock).unwrap();

    // A directory others can write to without the sticky bit: they could swap the files.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let r = sb.ferry(&["plan", "--state", &db_s]).expect(1);
    assert!(r.stderr.contains("writable by other users and not sticky"), "{}", r.stderr);
}

#[test]
fn exports_are_private_new_files_and_never_follow_links_or_keep_a_foreign_owner() {
    let sb = Sandbox::new(FERRY);
    sb.deployment(KEY);
    sb.ferry(&["apply", "--yes"]).ok();
    let v = victim(&sb);

    let out = sb.path().join("export.json");
    sb.ferry(&["state", "export", "-o", &out.display().to_string()]).ok();
    assert_eq!(mode(&out), 0o600);
    assert!(std::fs::read_to_string(&out).unwrap().contains("PRIVATE KEY"));
    // Re-exporting over our own file works and keeps it private.
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    sb.ferry(&["state", "export", "-o", &out.display().to_string()]).ok();
    assert_eq!(mode(&out), 0o600);

    // A symlink: refused, target untouched.
    let link = sb.path().join("link.json");
    std::os::unix::fs::symlink(&v, &link).unwrap();
    let r = sb.ferry(&["state", "export", "-o", &link.display().to_string()]).expect(1);
    assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
    assert_untouched(&v);

    // Another user's file: on main it kept its owner, who could then read the private key.
    let theirs = sb.write("theirs.json", "");
    chown(&theirs, NOBODY);
    let r = sb.ferry(&["state", "export", "-o", &theirs.display().to_string()]).expect(1);
    assert!(r.stderr.contains("owned by uid 65534"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "");
}

#[test]
fn ferrys_own_directory_is_kept_private() {
    let sb = Sandbox::new(FERRY);
    sb.deployment(KEY);
    let own = sb.path().join(".ferry");
    std::fs::create_dir(&own).unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o777)).unwrap();
    sb.ferry(&["apply", "--yes"]).ok();
    assert_eq!(mode(&own), 0o700, ".ferry stayed open to everyone");
    for entry in std::fs::read_dir(&own).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    // A `.ferry` that is a symlink (somewhere another user chose) is refused.
    let elsewhere = sb.path().join("elsewhere");
    std::fs::rename(&own, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &own).unwrap();
    let r = sb.ferry(&["plan"]).expect(1);
    assert!(r.stderr.contains(".ferry") && r.stderr.contains("symbolic link"), "{}", r.stderr);
}

#[test]
fn an_empty_state_file_is_refused_not_taken_for_a_new_state() {
    let sb = Sandbox::new(FERRY);
    sb.deployment(KEY);
    sb.ferry(&["apply", "--yes"]).ok();
    let db = sb.state_path();
    assert!(db.exists(), "expected the state at {}", db.display());
    std::fs::File::create(&db).unwrap(); // truncated, e.g. by a full disk or a careless `>`
    for verb in [&["plan"][..], &["apply", "--yes"], &["state", "list"]] {
        let r = sb.ferry(verb).expect(1);
        assert!(r.stderr.contains("is empty (0 bytes)"), "{verb:?}: {}", r.stderr);
        assert!(r.stderr.contains("ferry state import"), "{verb:?}: {}", r.stderr);
    }
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "ferry wrote into the empty file");
    // A state that does not exist yet is still created.
    std::fs::remove_file(&db).unwrap();
    sb.ferry(&["apply", "--yes"]).ok();
    assert!(std::fs::metadata(&db).unwrap().len() > 0);
}

/// Every file of the state (database, WAL, journal) as raw bytes.
fn raw_state(db: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(b) = std::fs::read(&p) {
            all.extend(b);
        }
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A distinctive slice of the private key recorded in state.
fn private_key_bytes(sb: &Sandbox) -> Vec<u8> {
    let out = sb.ferry(&["state", "export"]).ok().stdout;
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let key = doc.to_string();
    let start = key.find("PRIVATE KEY-----").expect("a private key in the export") + 20;
    let body: String = key[start..].chars().filter(|c| c.is_ascii_alphanumeric()).take(40).collect();
    assert_eq!(body.len(), 40);
    body.into_bytes()
}

#[test]
fn destroyed_and_forgotten_secrets_are_gone_from_the_file() {
    for how in ["destroy", "state rm"] {
        let sb = Sandbox::new(FERRY);
        sb.deployment(KEY);
        sb.ferry(&["apply", "--yes"]).ok();
        let secret = private_key_bytes(&sb);
        let db = sb.state_path();
        assert!(contains(&raw_state(&db), &secret), "the test's needle is not in the state");
        match how {
            "destroy" => sb.ferry(&["destroy", "--yes"]).ok(),
            _ => sb.ferry(&["state", "rm", "key"]).ok(),
        };
        assert!(!contains(&raw_state(&db), &secret), "{how}: the private key is still in the state's bytes");
    }
}

#[test]
fn two_applies_racing_on_a_new_state_get_the_lock_message() {
    for round in 0..4 {
        let sb = Sandbox::new(FERRY);
        sb.deployment(
            r#"{ resources, ... }: {
  resources.slow = { type = "local.exec"; inputs = { create = [ "sh" "-c" "sleep 2; echo '{}'" ]; }; };
}"#,
        );
        let a = sb.spawn(&["apply", "--yes"]);
        let b = sb.spawn(&["apply", "--yes"]);
        let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let codes: Vec<_> = outs.iter().map(|o| o.status.code()).collect();
        let texts: Vec<_> = outs.iter().map(|o| String::from_utf8_lossy(&o.stderr).to_string()).collect();
        assert!(codes.contains(&Some(0)), "round {round}: nobody won: {texts:?}");
        for (code, text) in codes.iter().zip(&texts) {
            assert!(!text.contains("database is locked"), "round {round}: raw SQLite message: {text}");
            assert!(!text.contains("panicked"), "{text}");
            if *code != Some(0) {
                assert!(text.contains("is locked by pid"), "round {round}: loser's message: {text}");
            }
        }
    }
}

#[test]
fn importing_an_export_that_names_provider_programs_needs_consent() {
    let sb = Sandbox::new(FERRY);
    sb.deployment(r#"{ resources, ... }: { resources.f = { type = "local.file"; inputs = { path = "@DIR@/f"; content = "x"; }; }; }"#);
    sb.ferry(&["apply", "--yes"]).ok();
    let marker = sb.p("PROVIDER-RAN");
    let evil = sb.executable("evil.sh", &format!("#!/bin/sh\ntouch {marker}\nexit 1\n"));
    let mut doc: serde_json::Value =
        serde_json::from_str(&sb.ferry(&["state", "export"]).ok().stdout).unwrap();
    doc["resources"][0]["provider"] = serde_json::json!({ "executable": evil, "args": ["--x"] });
    sb.write("planted.json", &doc.to_string());
    let before = sb.state_snapshot();

    // An export from someone else names a program: on main `import` then a plain `plan` ran it.
    let r = sb.ferry(&["state", "import", "planted.json"]).expect(1);
    assert!(r.stderr.contains(&format!("{evil} --x   (for f)")), "{}", r.stderr);
    assert!(
        r.stderr.contains("--trust-providers") && r.stderr.contains("nothing was imported"),
        "{}",
        r.stderr
    );
    assert_eq!(sb.state_snapshot(), before);
    sb.deployment("{ resources, ... }: { }");
    sb.ferry(&["plan"]).no_panic();
    assert!(!sb.exists("PROVIDER-RAN"), "a recorded provider ran without consent");

    // With consent it is imported (and then used).
    sb.ferry(&["state", "import", "planted.json", "--trust-providers"]).ok();
    sb.ferry(&["plan"]).no_panic();
    assert!(sb.exists("PROVIDER-RAN"), "the consented provider was not used");
}
