//! What the evaluator must never get wrong (issue 10): a typo in a deployment's shape is an
//! error, not an empty deployment; the user's `throw`s and assertions are shown with Nix's
//! message instead of reading as "known after apply"; `abort` text prints cleanly; previews
//! never show placeholder strings or store paths computed from them; a sensitive output
//! routed into a derivation is refused before anything reaches the store.

use ferry_testkit::Sandbox;
use std::collections::BTreeSet;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

const KEY: &str = r#"resources.key = { type = "local.ssh-keypair"; inputs.comment = "k"; };"#;

/// A sandbox with a key pair applied, so there is state a mistake could destroy.
fn applied() -> Sandbox {
    let sb = Sandbox::new(FERRY);
    sb.deployment(&format!("{{ resources, ... }}: {{ {KEY} }}"));
    sb.ferry(&["apply", "--yes"]).ok();
    sb
}

/// `plan` and `apply --yes` both exit 1 saying every needle, and the state is unchanged.
fn refused(sb: &Sandbox, needles: &[&str]) {
    let before = sb.state_snapshot();
    for verb in [&["plan"][..], &["apply", "--yes"]] {
        let r = sb.ferry(verb).expect(1);
        for n in needles {
            assert!(r.all().contains(n), "{verb:?}: output lacks {n:?}\n{}", r.all());
        }
        assert_eq!(sb.state_snapshot(), before, "{verb:?} changed the state");
    }
}

#[test]
fn unknown_top_level_attributes_are_errors_with_a_suggestion() {
    let sb = applied();
    let dep = sb.p("deployment.nix");
    // `resource` for `resources`: today this is an empty deployment that destroys the key.
    sb.deployment(&format!(
        "{{ resources, ... }}: {{ {} }}",
        KEY.replacen("resources.key", "resource.key", 1)
    ));
    refused(&sb, &[&dep, "unknown attribute `resource`", "did you mean `resources`?"]);
    // `import` for `imports`, and the same check in an imported module (named by its file).
    sb.write("more.nix", "{ ... }: { resourcs = { }; }");
    sb.deployment(&format!("{{ resources, ... }}: {{ import = [ ./more.nix ]; {KEY} }}"));
    refused(&sb, &["unknown attribute `import`", "did you mean `imports`?"]);
    sb.deployment(&format!("{{ resources, ... }}: {{ imports = [ ./more.nix ]; {KEY} }}"));
    refused(&sb, &[&sb.p("more.nix"), "unknown attribute `resourcs`", "did you mean `resources`?"]);
    // Nothing like a known attribute: no suggestion, but the allowed ones are listed.
    sb.deployment(&format!("{{ resources, ... }}: {{ machines = {{ }}; {KEY} }}"));
    refused(&sb, &["unknown attribute `machines`; a deployment or module sets only `resources`"]);
}

#[test]
fn a_users_throw_is_shown_with_nix_message_not_known_after_apply() {
    let sb = applied();
    let body = |content: &str| {
        format!(
            r#"{{ resources, ... }}: let check = x: if x == "" then throw "the banner must not be empty" else x; in {{
  {KEY}
  resources.motd = {{ type = "local.file"; inputs = {{ path = "@DIR@/motd"; content = {content}; }}; }};
}}"#
        )
    };
    let dep = sb.p("deployment.nix");
    // A throw that does not depend on any output: an error now, with the resource and file.
    sb.deployment(&body(r#"check """#));
    refused(&sb, &["resource `motd`", &dep, "the banner must not be empty"]);
    assert!(!sb.exists("motd"));
    let traced = sb.ferry(&["plan", "--show-trace"]).expect(1);
    assert!(traced.all().contains("while evaluating 'check'"), "no trace:\n{}", traced.all());
    // A failed `assert` too.
    sb.deployment(&body(r#"assert builtins.stringLength "x" == 2; "x""#));
    refused(&sb, &["resource `motd`", "assertion"]);
    // A throw behind an output not known yet is not the user's (yet): known after apply.
    sb.deployment(&body(r#"check resources.banner.value"#).replace(
        "resources.motd",
        r#"resources.banner = { type = "local.random"; inputs.length = 8; }; resources.motd"#,
    ));
    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.stdout.contains("content = (known after apply"), "{}", plan.stdout);
    sb.ferry(&["apply", "--yes"]).ok();
    assert_eq!(sb.read("motd").map(|s| s.len()), Some(8), "motd holds the random banner");
    // A check that fails on a placeholder (a type test) is pending too, and applies.
    sb.deployment(&body(r#"let v = resources.n.value; in assert builtins.isString v; "n=${v}""#).replace(
        "resources.motd",
        r#"resources.n = { type = "local.random"; inputs.length = 4; }; resources.motd"#,
    ));
    sb.ferry(&["apply", "--yes"]).ok();
    assert!(sb.read("motd").is_some_and(|s| s.starts_with("n=")));
}

#[test]
fn abort_messages_print_cleanly() {
    let sb = Sandbox::new(FERRY);
    sb.deployment(&format!(
        r#"{{ resources, ferry, ... }}: let t = import {}; p = ferry.lib.processes; in {{
  resources.s = {{ type = "processes.set"; inputs = p.set {{ pkgs = t.pkgs; manager = "runit"; processes = {{ a = p.mkProcess {{ command = [ "x" ]; }}; }}; }}; }};
}}"#,
        ferry_testkit::testkit_nix()
    ));
    let r = sb.ferry(&["plan"]).expect(1);
    let err = r.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default().to_string();
    assert!(err.contains("unknown manager `runit`"), "{}", r.all());
    assert!(!err.trim_end().ends_with('\''), "stray quote: {err}");
    assert!(!r.all().contains("(use '"), "broken hint line:\n{}", r.all());
}

/// Store paths in the output.
fn store_paths(s: &str) -> BTreeSet<String> {
    s.split(|c: char| c == '"' || c.is_whitespace())
        .filter(|w| w.starts_with("/nix/store/"))
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-').to_string())
        .collect()
}

#[test]
fn previews_never_show_placeholders_or_invented_store_paths() {
    let sb = Sandbox::new(FERRY);
    sb.deployment(
        r#"{ resources, ... }: let
  greeting = derivation { name = "greeting"; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "echo ${resources.key.publicKey} > $out" ]; };
  fixed = builtins.toFile "fixed" "same in every view";
in {
  resources.key = { type = "local.ssh-keypair"; inputs.comment = "k"; };
  resources.ids = { type = "ids.pool"; inputs = { pools.ports = { min = 9100; max = 9199; }; claimants.web = [ "ports" ]; }; };
  resources.conf = {
    type = "local.file";
    inputs = {
      path = "@DIR@/conf";
      content = builtins.toJSON { port = resources.ids.ports.web; };
    };
  };
  resources.nested = {
    type = "local.exec";
    inputs = {
      create = [ "sh" "-c" "cat ${greeting} >&2; echo ${toString resources.ids.ports.web} >&2" "${fixed}" ];
      update = [ "true" ];
    };
  };
}"#,
    );
    let plan = sb.ferry(&["plan"]).ok();
    let out = plan.all();
    assert!(!out.contains("<ferry:"), "raw placeholder in the plan:\n{out}");
    // The nested output renders as a reference; what is known is shown exactly.
    assert!(out.contains("(known after apply: ids.ports.web)"), "{out}");
    assert!(out.contains(&format!("path = \"{}\"", sb.p("conf"))), "{out}");
    assert!(out.contains("\"sh\", \"-c\", (known after apply), \"/nix/store/"), "{out}");
    sb.ferry(&["apply", "--yes"]).ok();
    // Whatever store path apply really used, the plan never showed a made-up one: the only
    // store path it showed is the one that does not depend on any output.
    let state = sb.ferry(&["state", "show", "nested", "--json"]).ok().stdout;
    let applied = store_paths(&state);
    assert!(applied.iter().any(|p| p.ends_with("-greeting")), "{state}");
    let shown = store_paths(&out);
    assert_eq!(shown.len(), 1, "plan showed store paths {shown:?}:\n{out}");
    assert!(shown.iter().all(|p| p.ends_with("-fixed")), "{shown:?}");
}

/// Every store path (top level).
fn store_listing() -> BTreeSet<String> {
    std::fs::read_dir("/nix/store")
        .expect("/nix/store")
        .filter_map(|e| e.ok().map(|e| e.path().display().to_string()))
        .collect()
}

#[test]
fn a_sensitive_output_routed_into_a_derivation_is_refused_before_the_store() {
    let sb = Sandbox::new(FERRY);
    sb.deployment(
        r#"{ resources, ... }: {
  resources.key = { type = "local.ssh-keypair"; inputs.comment = "k"; };
  resources.leak = {
    type = "local.exec";
    inputs.create = [ "cat" "${derivation { name = "leak"; system = builtins.currentSystem; builder = "/bin/sh";
      args = [ "-c" "echo '${resources.key.privateKey}' > $out" ]; }}" ];
  };
}"#,
    );
    let before = store_listing();
    let r = sb.ferry(&["apply", "--yes"]).expect(1);
    let said = "resource `leak`";
    for needle in [said, "input `create`", "sensitive output `key.privateKey`", "Nix store"] {
        assert!(r.all().contains(needle), "lacks {needle:?}:\n{}", r.all());
    }
    assert!(!r.all().contains("PRIVATE KEY"), "{}", r.all());
    let state = sb.ferry(&["state", "list", "--json"]).ok().stdout;
    assert!(!state.contains("\"leak\""), "leak must not have run: {state}");
    // The key exists now (a later round found the leak): nothing new in the store holds it.
    let private = ferry_testkit::sqlite(&sb.state_path(), "SELECT outputs FROM resources WHERE name = 'key'");
    let line =
        private.split("\\n").find(|l| l.len() > 40 && !l.contains("PRIVATE")).expect("key body").to_string();
    for p in store_listing().difference(&before) {
        let hit = std::process::Command::new("grep").args(["-rqF", &line, p]).status().expect("grep");
        assert!(!hit.success(), "the secret reached the store in {p}");
    }
    // With the key recorded, plan refuses too, before any change.
    let plan = sb.ferry(&["plan"]).expect(1);
    assert!(plan.all().contains("sensitive output `key.privateKey`"), "{}", plan.all());
}

/// NixOS reports option typos, type errors and failed assertions with `throw`: each must be
/// shown with NixOS's own message, not planned as "known after apply". Real nixpkgs, plan only.
#[test]
fn real_nixos_errors_are_shown() {
    let Some(nixpkgs) = ferry_testkit::nixpkgs::real_nixpkgs("real_nixos_errors_are_shown") else { return };
    let sb = Sandbox::new(FERRY);
    sb.deployment(&format!(
        r#"{{ resources, ... }}:
let
  system = (import {np}/nixos/lib/eval-config.nix {{
    system = "x86_64-linux";
    modules = [ {{ boot.loader.grub.enable = false; fileSystems."/".device = "/dev/sda1"; }} ./web.nix ];
  }}).config.system.build.toplevel;
in {{
  resources.web = {{ type = "local.file"; inputs = {{ path = "@DIR@/web"; content = "${{system}}"; }}; }};
}}"#,
        np = nixpkgs.display()
    ));
    let cases = [
        ("{ services.nginx.enabel = true; }", "The option `services.nginx.enabel' defined in"),
        ("{ services.nginx.enable = \"yes\"; }", "is not of type `boolean'"),
        (
            r#"{ assertions = [ { assertion = false; message = "web needs a database"; } ]; }"#,
            "Failed assertions:\n- web needs a database",
        ),
    ];
    for (module, says) in cases {
        sb.write("web.nix", module);
        let r = sb.ferry(&["plan"]).expect(1);
        assert!(r.all().contains("resource `web`"), "{module}:\n{}", r.all());
        assert!(r.all().contains(says), "{module}: lacks {says:?}:\n{}", r.all());
        assert!(!r.all().contains("known after apply"), "{}", r.all());
    }
}

/// Module deployments misused without nixpkgs at hand: each is one message naming the file
/// and what to write, and nothing changes.
#[test]
fn module_deployment_mistakes_say_what_to_write() {
    let sb = applied();
    let dep = sb.p("deployment.nix");
    sb.deployment("{ ferry, ... }: ferry.modules { modules = [ ]; }");
    refused(&sb, &[&dep, "ferry.modules needs `lib`"]);
    sb.deployment("{ ferry, ... }: ferry.modules { lib = { }; modules = ./x.nix; }");
    refused(&sb, &[&dep, "ferry.modules needs `modules`, a list of modules"]);
    // A module-system module given as the deployment itself, or imported as a plain module.
    sb.deployment("{ config, lib, ... }: { resources = { }; }");
    refused(&sb, &[&dep, "is a module-system module", "ferry.modules { lib = nixpkgs.lib;"]);
    sb.write("mod.nix", "{ lib, ... }: { resources = { }; }");
    sb.deployment(&format!("{{ resources, ... }}: {{ imports = [ ./mod.nix ]; {KEY} }}"));
    refused(&sb, &[&sb.p("mod.nix"), "is a module-system module"]);
    // Module-system attributes in a plain deployment point at ferry.modules too.
    sb.deployment(&format!("{{ resources, ... }}: {{ options = {{ }}; {KEY} }}"));
    refused(&sb, &["unknown attribute `options`", "module-system options need ferry.modules"]);
}
