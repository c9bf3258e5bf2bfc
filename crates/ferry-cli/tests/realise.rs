//! Derivations in inputs are built only when their resource is about to be applied.

use ferry_testkit::Sandbox;

fn sandbox() -> Sandbox {
    Sandbox::new(env!("CARGO_BIN_EXE_ferry"))
}

/// A derivation whose out path is unique to this sandbox, so the test sees a fresh build.
fn deployment(sb: &Sandbox) -> String {
    format!(
        r#"{{ resources, ... }}:
let
  page = derivation {{
    name = "ferry-realise-test";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo built-for-{tag} > $out" ];
  }};
in {{
  resources.page = {{
    type = "local.file";
    inputs = {{ path = "@DIR@/page-path"; content = "${{page}}"; }};
  }};
}}"#,
        tag = sb.path().file_name().unwrap().to_string_lossy()
    )
}

#[test]
fn plan_does_not_build_and_apply_builds_just_in_time() {
    let sb = sandbox();
    sb.deployment(&deployment(&sb));
    let plan = sb.ferry(&["plan", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&plan.stdout).expect("plan --json");
    let entry = &v["entries"][0];
    let out_path = entry["inputs"]["content"].as_str().expect("content is the out path").to_string();
    assert!(out_path.starts_with("/nix/store/"), "{out_path}");
    assert!(!std::path::Path::new(&out_path).exists(), "plan must not build {out_path}");

    let apply = sb.ferry(&["apply", "--yes", "--timings"]).ok();
    assert!(std::path::Path::new(&out_path).exists(), "apply builds {out_path}");
    assert_eq!(sb.read("page-path").as_deref(), Some(out_path.as_str()));
    let built = std::fs::read_to_string(&out_path).unwrap();
    assert!(built.starts_with("built-for-"), "{built}");
    assert!(apply.stderr.contains("1 build"), "timings count the build: {}", apply.stderr);
}
