//! What NixOS users write, with the real nixpkgs (20.09, evaluation only: nothing here is
//! built or applied to a real-nixpkgs system): a deployment written as module-system modules
//! (issue 12, item 2), a flake whose machines come from `nixosConfigurations` (item 1), and a
//! real NixOS container and a process set of real packages (item 5). Skipped, saying so, when
//! the nixpkgs tarball is absent (never under CI).

use ferry_testkit::Sandbox;
use std::path::Path;
use std::process::Command;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// `nix-instantiate --eval` of `expr` (a list of strings), as Nix alone computes it.
fn bare(expr: &str, flakes: bool) -> Vec<String> {
    let mut c = Command::new("nix-instantiate");
    if flakes {
        c.args(["--extra-experimental-features", "nix-command flakes"]);
    }
    let out = c
        .args(["--readonly-mode", "--eval", "--strict", "--json", "-E", expr])
        .output()
        .expect("nix-instantiate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `KEY = "VALUE"` of resource `name` in a plan's text.
fn planned(plan: &str, name: &str, key: &str) -> String {
    let at = plan.find(&format!("+ {name} (")).unwrap_or_else(|| panic!("{name} not planned:\n{plan}"));
    let line = plan[at..]
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} for {name}:\n{plan}"));
    line.trim().trim_start_matches(&format!("{key} = ")).trim_matches('"').to_string()
}

#[test]
fn a_real_nixos_container_and_a_process_set_of_real_packages_plan_and_build_nothing() {
    let test = "a_real_nixos_container_and_a_process_set_of_real_packages_plan_and_build_nothing";
    let Some(np) = ferry_testkit::nixpkgs::real_nixpkgs(test) else { return };
    let lets = format!(
        r#"pkgs = import {np} {{ system = "x86_64-linux"; config = {{ }}; overlays = [ ]; }};
  container = (import {np}/nixos/lib/eval-config.nix {{ system = "x86_64-linux"; modules = [ {{
    boot.isContainer = true; networking.hostName = "web"; services.nginx.enable = true;
  }} ]; }}).config.system.build.toplevel;"#,
        np = np.display()
    );
    let sb = Sandbox::new(FERRY);
    sb.deployment(&format!(
        r#"{{ resources, ferry, ... }}:
let
  {lets}
  p = ferry.lib.processes;
  nginxConf = pkgs.writeText "nginx.conf" "daemon off; events {{ }} http {{ server {{ listen 127.0.0.1:18080; }} }}";
in {{
  resources.web = {{ type = "nspawn.container"; inputs = {{ system = container; network.mode = "host"; }}; }};
  resources.svc = {{
    type = "processes.set";
    inputs = p.set {{
      inherit pkgs; manager = "supervisord"; name = "svc";
      stateDir = "@DIR@/svc"; profilePath = "@DIR@/profiles/svc";
      processes = {{
        redis = p.mkProcess {{ command = [ "${{pkgs.redis}}/bin/redis-server" "--port" "16379" ]; readiness.tcpPort = 16379; }};
        nginx = p.mkProcess {{ command = [ "${{pkgs.nginx}}/bin/nginx" "-c" nginxConf ]; readiness.tcpPort = 18080; dependsOn = [ "redis" ]; }};
      }};
    }};
  }};
}}"#
    ).replace("@DIR@", &sb.p("")));
    let want =
        bare(&format!("let {lets} in [ container.outPath pkgs.nginx.outPath pkgs.redis.outPath ]"), false);
    let plan = sb.ferry(&["plan", "--timings"]).ok();
    assert_eq!(planned(&plan.stdout, "web", "system"), want[0]);
    assert!(want[0].contains("-nixos-system-web-"), "{}", want[0]);
    let processes = planned(&plan.stdout, "svc", "processes");
    assert!(processes.contains(&format!("{}/bin/nginx", want[1])), "{processes}");
    assert!(processes.contains(&format!("{}/bin/redis-server", want[2])), "{processes}");
    assert!(processes.contains(r#""dependsOn": ["redis"]"#), "{processes}");
    let profile = planned(&plan.stdout, "svc", "profile");
    assert!(profile.ends_with("-ferry-processes-svc-supervisord"), "{profile}");
    assert!(plan.stderr.contains("0 builds"), "{}", plan.stderr);
    for p in want.iter().chain([&profile]) {
        assert!(!Path::new(p).exists(), "{p} was built");
    }
}

/// A NixOps4-style deployment: options with submodules, a mix-in through `imports`, `mkIf`,
/// `mkMerge` and priorities, all from nixpkgs' own module system.
#[test]
fn a_module_deployment_uses_nixpkgs_module_system_and_its_errors_name_option_paths() {
    let test = "a_module_deployment_uses_nixpkgs_module_system_and_its_errors_name_option_paths";
    let Some(np) = ferry_testkit::nixpkgs::real_nixpkgs(test) else { return };
    let sb = Sandbox::new(FERRY);
    sb.write(
        "customer.nix",
        r#"{ name, lib, ... }: {
  options.greeting = lib.mkOption { type = lib.types.str; default = "hello"; };
  options.enable = lib.mkOption { type = lib.types.bool; default = true; };
}"#,
    );
    sb.write(
        "customers.nix",
        &r#"{ config, lib, resources, ... }:
let inherit (lib) mkOption types mkIf mkMerge mapAttrs' nameValuePair; in {
  options.customers = mkOption { type = types.attrsOf (types.submodule ./customer.nix); default = { }; };
  config.resources = mkMerge [
    (mapAttrs' (n: c: nameValuePair "motd-${n}" (mkIf c.enable {
      type = "local.file";
      inputs = { path = "@DIR@/out/${n}"; content = "${c.greeting} ${n}\n"; mode = lib.mkDefault "0644"; };
    })) config.customers)
    { key = { type = "local.ssh-keypair"; inputs.comment = "deploy"; };
      authorized = { type = "local.file"; tags = [ "keys" ];
        inputs = { path = "@DIR@/out/authorized_keys"; content = resources.key.publicKey + "\n"; }; }; }
  ];
}"#
        .replace("@DIR@", &sb.p("")),
    );
    // A mix-in: tightens one customer's file mode over the module's default.
    sb.write("private.nix", r#"{ lib, ... }: { resources.motd-alice.inputs.mode = lib.mkForce "0600"; }"#);
    let deployment = |customers: &str| {
        format!(
            r#"{{ ferry, ... }}: ferry.modules {{
  nixpkgs = {np};
  modules = [ ./customers.nix ./private.nix {{ name = "shop"; {customers} }} ];
}}"#,
            np = np.display()
        )
    };
    sb.deployment(&deployment(
        r#"customers.alice.greeting = "hi"; customers.bob = { }; customers.carol.enable = false;"#,
    ));
    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.stdout.contains("(known after apply: key.publicKey)"), "{}", plan.stdout);
    assert!(!plan.stdout.contains("motd-carol"), "{}", plan.stdout);
    sb.ferry(&["apply", "--yes"]).ok().says("4 created");
    assert_eq!(sb.read("out/alice").as_deref(), Some("hi alice\n"));
    assert_eq!(sb.read("out/bob").as_deref(), Some("hello bob\n"));
    assert_eq!(sb.mode("out/alice") & 0o777, 0o600);
    assert_eq!(sb.mode("out/bob") & 0o777, 0o644);
    assert!(sb.read("out/authorized_keys").unwrap().starts_with("ssh-ed25519 "));
    assert!(!sb.exists("out/carol"));
    // The module's `name` names the deployment in its state.
    let id = ferry_testkit::sqlite(&sb.state_path(), "SELECT name FROM deployment");
    assert_eq!(id.trim(), "shop");
    sb.ferry(&["plan", "--on", "@keys"]).ok().says("No changes.");

    // Mistakes are the module system's errors, naming the option path; nothing changes.
    let before = sb.state_snapshot();
    let cases = [
        (r#"customers.alice.greting = "hi";"#, "The option `customers.alice.greting' defined in"),
        (r#"customers.alice.greeting = 5;"#, "customers.alice.greeting' in"),
        (r#"customers.alice = { greeting = "hi"; enable = "no"; };"#, "is not of type `boolean'"),
        (
            r#"customers.alice.greeting = "hi"; resources.motd-alice.protect = "yes";"#,
            "resources.motd-alice.protect' in",
        ),
        (
            r#"customers.alice.greeting = "hi"; resources.extra.inptus = { };"#,
            "The option `resources.extra.inptus' defined in",
        ),
        (
            r#"customers.alice.greeting = "hi"; resources.extra.inputs = { };"#,
            "The option `resources.extra.type' is used but not defined",
        ),
    ];
    for (customers, says) in cases {
        sb.deployment(&deployment(&format!(r#"customers.bob = {{ }}; {customers}"#)));
        let r = sb.ferry(&["apply", "--yes"]).expect(1);
        assert!(r.all().contains(says), "{customers}: lacks {says:?}:\n{}", r.all());
        assert!(!r.all().contains("known after apply"), "{}", r.all());
        assert_eq!(sb.state_snapshot(), before, "{customers}: the state changed");
        assert_eq!(sb.read("out/alice").as_deref(), Some("hi alice\n"));
    }
    // ferry's own messages name the files that define the resource, not only the top file.
    sb.write("extra.nix", r#"{ resources.extra = { type = "nokind"; inputs = { }; }; }"#);
    sb.write(
        "private.nix",
        r#"{ lib, ... }: { resources.motd-alice.inputs.mode = lib.mkForce "0600"; resources.motd-alice.type = lib.mkForce "nokind"; }"#,
    );
    let with_extra = deployment(r#"customers.alice.greeting = "hi";"#)
        .replace("./private.nix", "./private.nix ./extra.nix");
    sb.deployment(&with_extra);
    let (customers, private, extra) = (sb.p("customers.nix"), sb.p("private.nix"), sb.p("extra.nix"));
    sb.ferry(&["plan"]).expect(1).says(&format!("resource `extra` ({extra}): type `nokind`"));
    sb.write("extra.nix", "{ }");
    // Defined in two files: both are named.
    sb.ferry(&["plan"])
        .expect(1)
        .says(&format!("resource `motd-alice` ({customers}, {private}): type `nokind`"));
    assert_eq!(sb.state_snapshot(), before);
    sb.write("private.nix", r#"{ lib, ... }: { resources.motd-alice.inputs.mode = lib.mkForce "0600"; }"#);

    // A module given as a plain deployment is named, with what to write instead.
    sb.deployment("{ config, lib, ... }: { resources = { }; }");
    sb.ferry(&["plan"]).expect(1).says("is a module-system module").says("ferry.modules");
    assert_eq!(sb.state_snapshot(), before);
}

/// The way Colmena and deploy-rs users already have their fleet: `nixosConfigurations` in a
/// flake with nixpkgs as an input, deployed by `ferryDeployments.NAME` through
/// `ferry.fromNixosConfiguration`, the deployment itself written as modules.
#[test]
fn a_flake_deploys_its_nixos_configurations_with_their_true_system_paths() {
    let test = "a_flake_deploys_its_nixos_configurations_with_their_true_system_paths";
    let Some(np) = ferry_testkit::nixpkgs::real_nixpkgs(test) else { return };
    let sb = Sandbox::new(FERRY);
    sb.write(
        "fleet/flake.nix",
        &format!(
            r#"{{
  inputs.nixpkgs.url = "path:{np}";
  outputs = {{ self, nixpkgs }}:
    let
      host = name: nixpkgs.lib.nixosSystem {{ system = "x86_64-linux"; modules = [ {{
        boot.loader.grub.enable = false; fileSystems."/".device = "/dev/sda1";
        networking.hostName = name; services.openssh.enable = true;
      }} ]; }};
    in {{
      nixosConfigurations.web1 = host "web1";
      nixosConfigurations.web2 = host "web2";
      ferryDeployments.prod = {{ ferry, ... }}: ferry.modules {{
        inherit (nixpkgs) lib;
        modules = [ ({{ lib, ... }}: {{
          resources = lib.mapAttrs (name: cfg: {{
            type = "nixos.machine";
            inputs = {{ host = "127.0.0.1"; port = 1; system = ferry.fromNixosConfiguration cfg; }};
          }}) self.nixosConfigurations;
        }}) ];
      }};
    }};
}}
"#,
            np = np.display()
        ),
    );
    let fleet = sb.path().join("fleet");
    let lock = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command flakes", "flake", "lock", "--offline"])
        .args(["--option", "flake-registry", ""])
        .arg(&fleet)
        .output()
        .expect("nix flake lock");
    assert!(lock.status.success(), "{}", String::from_utf8_lossy(&lock.stderr));
    let state = sb.p("state/prod.db");
    // One process: the whole flake deployment is one evaluation.
    let plan =
        sb.ferry(&["plan", "--flake", "fleet#prod", "--state", &state, "--eval-jobs", "1", "--timings"]).ok();
    let url = format!("path:{}", fleet.display());
    let want = bare(
        &format!(
            r#"let f = builtins.getFlake "{url}"; in map (h: f.nixosConfigurations.${{h}}.config.system.build.toplevel.outPath) [ "web1" "web2" ]"#
        ),
        true,
    );
    assert_eq!(planned(&plan.stdout, "web1", "system"), want[0]);
    assert_eq!(planned(&plan.stdout, "web2", "system"), want[1]);
    assert!(want[0].contains("-nixos-system-web1-") && want[0] != want[1]);
    assert!(
        plan.stderr.contains("timings: 1 Nix evaluation ") && plan.stderr.contains("0 builds"),
        "{}",
        plan.stderr
    );
    for p in &want {
        assert!(!Path::new(p).exists(), "{p} was built");
    }
    let on = sb.ferry(&["plan", "--flake", "fleet#prod", "--state", &state, "--on", "web2"]).ok();
    assert!(on.stdout.contains("+ web2 (nixos.machine)") && !on.stdout.contains("web1"), "{}", on.stdout);
}
