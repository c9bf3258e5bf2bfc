//! Reloading a running container: `switch-to-configuration test` inside it (the helper's
//! `reload`, entered with `nsenter`). A failure is rolled back on the host — the profile to the
//! generation it had before the deploy, the running system to the one that ran before — so a
//! failed reload never leaves a profile claiming a system that does not run, for a later run
//! (or a restart) to take as deployed.

use ferry_protocol::ProviderError;

use crate::host::Host;

/// Reload container `name`; `prev_link` is its profile's generation link before this deploy.
/// Fails with code `activationFailed` (after rolling back) when the new system does not activate.
pub fn reload(h: &Host, name: &str, prev_link: &str) -> Result<(), ProviderError> {
    let out = h.run("reloading the container", "reload", &[name, prev_link], None, 600)?;
    let result = out.lines().rev().find_map(|l| l.strip_prefix("result=")).unwrap_or_default();
    let outcome = match result {
        "ok" => return Ok(()),
        "rolled-back" => "rolled back: the container runs, and its profile names, what it ran before",
        _ => "rolling back failed too: the container needs attention",
    };
    let tail: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("output: ")).collect();
    Err(ProviderError::new(format!(
        "reloading container {name} on {} failed (switch-to-configuration test); {outcome}. Last lines:\n{}",
        h.label,
        tail.join("\n")
    ))
    .code("activationFailed"))
}
