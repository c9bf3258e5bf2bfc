//! Real NixOS (nixpkgs 20.09, evaluation only): machines defined the documented way — the
//! system inside the deployment function — plan with the very system paths a bare
//! `nix-instantiate` gives (evaluated by two worker processes), build nothing, and `--on`
//! evaluates only what it selects.

use ferry_testkit::Sandbox;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

fn sys_fn(np: &std::path::Path) -> String {
    format!(
        r#"sys = name: (import {np}/nixos/lib/eval-config.nix {{ system = "x86_64-linux"; modules = [ {{
    boot.loader.grub.enable = false; fileSystems."/".device = "/dev/sda1";
    networking.hostName = name; services.openssh.enable = true;
  }} ]; }}).config.system.build.toplevel;"#,
        np = np.display()
    )
}

/// `system = "PATH"` of `name` in a plan's text.
fn planned_system(plan: &str, name: &str) -> String {
    let at = plan
        .find(&format!("+ {name} (nixos.machine)"))
        .unwrap_or_else(|| panic!("{name} not planned:\n{plan}"));
    let line = plan[at..].lines().find(|l| l.trim_start().starts_with("system = ")).expect("system line");
    line.trim().trim_start_matches("system = ").trim_matches('"').to_string()
}

#[test]
fn real_nixos_machines_plan_with_their_true_system_paths_and_build_nothing() {
    let Some(np) = ferry_testkit::nixpkgs::real_nixpkgs(
        "real_nixos_machines_plan_with_their_true_system_paths_and_build_nothing",
    ) else {
        return;
    };
    let sb = Sandbox::new(FERRY);
    let machine = |n: &str| {
        format!(
            r#"  resources.{n} = {{ type = "nixos.machine"; inputs = {{ host = "127.0.0.1"; port = 1; system = sys "{n}"; }}; }};"#
        )
    };
    sb.deployment(&format!(
        "{{ resources, ... }}:\nlet {}\nin {{\n{}\n{}\n}}\n",
        sys_fn(&np),
        machine("m1"),
        machine("m2")
    ));
    let bare = std::process::Command::new("nix-instantiate")
        .args(["--readonly-mode", "--eval", "--strict", "--json", "-E"])
        .arg(format!("let {} in [ (sys \"m1\").outPath (sys \"m2\").outPath ]", sys_fn(&np)))
        .output()
        .expect("nix-instantiate");
    assert!(bare.status.success(), "{}", String::from_utf8_lossy(&bare.stderr));
    let want: Vec<String> = serde_json::from_slice(&bare.stdout).unwrap();

    // Two evaluator workers: the first pass, then each machine in its own process.
    let plan = sb.ferry(&["plan", "--eval-jobs", "2", "--timings"]).ok();
    assert_eq!(planned_system(&plan.stdout, "m1"), want[0]);
    assert_eq!(planned_system(&plan.stdout, "m2"), want[1]);
    assert!(want[0].contains("-nixos-system-m1-") && want[0] != want[1]);
    assert!(
        plan.stderr.contains("timings: 3 Nix evaluations ") && plan.stderr.contains("0 builds"),
        "{}",
        plan.stderr
    );
    for p in &want {
        assert!(!std::path::Path::new(p).exists(), "{p} was built");
    }

    // `--on m2`: the declarations pass, then m2 alone.
    let on = sb.ferry(&["plan", "--on", "m2", "--timings"]).ok();
    assert_eq!(planned_system(&on.stdout, "m2"), want[1]);
    assert!(!on.stdout.contains("+ m1 "), "{}", on.stdout);
    assert!(on.stderr.contains("timings: 2 Nix evaluations"), "{}", on.stderr);
}
