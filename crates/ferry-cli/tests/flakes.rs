//! Flake deployments (issue 12, item 1): `--flake DIR#NAME` / `-f DIR#NAME` evaluates output
//! `ferryDeployments.NAME`, inputs pinned by flake.lock (which ferry never writes), with the
//! experimental features Nix 2.8 needs enabled by ferry itself; and no state inside a flake
//! that Nix would copy whole into the store. Offline: `path:` inputs only.

use ferry_testkit::Sandbox;
use std::path::Path;
use std::process::Command;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// `nix flake lock` in `dir`, offline and without the global registry.
fn flake_lock(dir: &Path) {
    let out = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command flakes", "flake", "lock", "--offline"])
        .args(["--option", "flake-registry", ""])
        .arg(dir)
        .output()
        .expect("nix flake lock");
    assert!(out.status.success(), "nix flake lock: {}", String::from_utf8_lossy(&out.stderr));
}

/// The store path Nix copies flake `dir` to.
fn flake_store_path(dir: &Path) -> std::path::PathBuf {
    let out = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command flakes", "flake", "metadata", "--json"])
        .arg(dir)
        .output()
        .expect("nix flake metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["path"].as_str().unwrap().into()
}

fn flake_nix(greet: &Path, out: &Path, extra_input: &str) -> String {
    format!(
        r#"{{
  inputs.greet = {{ url = "path:{greet}"; flake = false; }};
  {extra_input}
  outputs = {{ self, greet, ... }}: {{
    ferryDeployments.site = {{ resources, ferry, ... }}: {{
      resources.motd = {{ type = "local.file"; inputs = {{ path = "{out}"; content = (import greet).greeting + "\n"; }}; }};
    }};
    ferryDeployments.other = {{ resources, ... }}: {{ resources = {{ }}; }};
  }};
}}
"#,
        greet = greet.display(),
        out = out.display()
    )
}

#[test]
fn flake_deployments_evaluate_pinned_inputs_and_keep_state_out_of_the_store() {
    let sb = Sandbox::new(FERRY);
    sb.write("greet/default.nix", r#"{ greeting = "hello from an input"; }"#);
    let greet = sb.path().join("greet");
    let out = sb.path().join("motd");
    let fl = sb.path().join("fl");
    sb.write("fl/flake.nix", &flake_nix(&greet, &out, ""));
    let state = sb.p("elsewhere/state.db");
    let args = |verb: &'static str, r: &str| -> Vec<String> {
        vec![verb.into(), "--flake".into(), r.into(), "--state".into(), state.clone()]
    };
    let run = |a: &[String], extra: &[&str]| {
        let mut v: Vec<&str> = a.iter().map(String::as_str).collect();
        v.extend_from_slice(extra);
        sb.ferry(&v)
    };

    // No flake.lock: ferry does not write one (that would pin whatever the inputs are now).
    run(&args("plan", "fl#site"), &[]).expect(1).says("There is no flake.lock").says("nix flake lock");
    assert!(!sb.path().join("fl/flake.lock").exists() && !Path::new(&state).exists());
    flake_lock(&fl);

    // The flake is not in git, so Nix copies its directory whole: the default state (inside
    // it) is refused before Nix runs, and nothing is created.
    sb.ferry(&["apply", "--yes", "--flake", "fl#site"])
        .expect(2)
        .says("not in a git repository")
        .says("--state");
    assert!(!sb.path().join("fl/.ferry").exists());

    // Applied from the flake, with `-f DIR#NAME` as well as `--flake`.
    let plan = sb.ferry(&["plan", "-f", "fl#site", "--state", &state]).ok();
    assert!(plan.stdout.contains("+ motd (local.file)"), "{}", plan.stdout);
    run(&args("apply", "fl#site"), &["--yes"]).ok();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello from an input\n");

    // A missing deployment names the ones the flake has.
    run(&args("plan", "fl#sight"), &[]).expect(1).says("ferryDeployments.sight").says("`other`, `site`");

    // Inputs are pinned: a changed input directory changes nothing until the lock is updated.
    sb.write("greet/default.nix", r#"{ greeting = "changed"; }"#);
    run(&args("plan", "fl#site"), &[]).ok().says("No changes.");

    // A flake.nix whose inputs no longer match flake.lock is an error, and changes nothing.
    let before = std::fs::read_to_string(fl.join("flake.lock")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    sb.write(
        "fl/flake.nix",
        &flake_nix(
            &greet,
            &out,
            &format!("inputs.more = {{ url = \"path:{}\"; flake = false; }};", greet.display()),
        ),
    );
    run(&args("apply", "fl#site"), &["--yes"]).expect(1).says("nix flake lock");
    assert_eq!(std::fs::read_to_string(fl.join("flake.lock")).unwrap(), before, "ferry wrote flake.lock");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello from an input\n");
    sb.write("fl/flake.nix", &flake_nix(&greet, &out, ""));

    // Each flake deployment is its own deployment: the state of `site` is not `other`'s.
    run(&args("apply", "fl#other"), &["--yes"]).expect(1).says("belongs to deployment");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello from an input\n");

    // Bad references are usage errors.
    sb.ferry(&["plan", "--flake", "github:owner/repo#x"]).expect(2).says("not a local flake deployment");
    sb.ferry(&["plan", "--flake", "fl#a.b"]).expect(2).says("plain attribute name");
}

#[test]
fn a_git_flake_keeps_its_default_state_beside_it_and_out_of_git_and_the_store() {
    let sb = Sandbox::new(FERRY);
    sb.write("greet/default.nix", r#"{ greeting = "hello"; }"#);
    let out = sb.path().join("motd");
    let fl = sb.path().join("repo");
    sb.write("repo/flake.nix", &flake_nix(&sb.path().join("greet"), &out, ""));
    flake_lock(&fl);
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .current_dir(&fl)
            .args(["-c", "user.email=t@example.invalid", "-c", "user.name=t"])
            .args(args)
            .output()
            .expect("git");
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    git(&["init", "-q"]);
    // Nix sees only tracked files: untracked, the flake is named as such, with what to run.
    sb.ferry(&["plan", "--flake", "repo#site"])
        .expect(1)
        .says("flake.nix and flake.lock are not: `git add flake.nix flake.lock`");
    git(&["add", "flake.nix", "flake.lock"]);
    git(&["commit", "-qm", "fleet"]);

    sb.ferry(&["apply", "--yes", "--flake", "repo#site"]).ok();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello\n");
    assert!(fl.join(".ferry/flake-site.state.db").is_file());
    // `.ferry/` ignores itself: `git add -A` takes no state, and Nix copies only tracked files.
    git(&["add", "-A"]);
    assert_eq!(git(&["status", "--porcelain"]), "", "state would be committed");
    let copied = flake_store_path(&fl);
    assert!(copied.join("flake.nix").exists() && !copied.join(".ferry").exists(), "{}", copied.display());
    sb.ferry(&["plan", "--flake", "repo#site"]).ok().says("No changes.");
}
