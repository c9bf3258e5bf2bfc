//! A not-yet-known output used as a number must not break planning (placeholders are strings).

use ferry_testkit::Sandbox;

#[test]
fn arithmetic_on_an_unknown_output_plans_and_applies() {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_ferry"));
    sb.deployment(
        r#"{ resources, ... }: {
  resources.port = { type = "local.random"; inputs.port = true; };
  resources.conf = {
    type = "local.file";
    inputs = { path = "@DIR@/conf"; content = "next=${toString (resources.port.value + 1)}"; };
  };
}"#,
    );
    let plan = sb.ferry(&["plan"]).ok();
    assert!(plan.stdout.contains("+ conf"), "{}", plan.stdout);
    sb.ferry(&["apply", "--yes"]).ok();
    let content = sb.read("conf").expect("conf written");
    let n: u32 = content.trim_start_matches("next=").parse().expect("a number");
    assert!(n > 1, "{content}");
}
