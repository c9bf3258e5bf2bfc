//! The host helper refuses destructive modes on a name that would widen the path it removes
//! (`rm -rf "/var/lib/machines/$name"` with an empty name is every container's root).

#[test]
fn destroy_refuses_names_that_are_not_one_path_component() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("nspawn.sh");
    std::fs::write(&script, ferry_provider_nspawn::host::SCRIPT).unwrap();
    for name in ["", ".", "..", "a/../..", "-rf"] {
        let out =
            std::process::Command::new("sh").arg(&script).args(["destroy", name, "yes"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{name:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("invalid container name '{name}'")), "{name:?}: {err}");
    }
}
