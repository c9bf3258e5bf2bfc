//! Address assignment on a container's host: static addresses are claimed, a pool address is
//! taken once and kept. Claims are files on the host created with O_EXCL (`nspawn.sh claim`),
//! so parallel creates never hand out the same address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferry_protocol::{Object, ProviderError};
use serde_json::Value;

use crate::container::{probe, Probe, OWNER_DEPLOYMENT, OWNER_IMPERATIVE};
use crate::host::Host;
use crate::net::{allocate, Cidr};
use crate::schema::{AddrSpec, Container, Mode};
use crate::unit::{Addr, Resolved};

fn err(msg: impl Into<String>) -> ProviderError {
    ProviderError::new(msg)
}

/// Every claim on the host: address -> the container holding it.
pub(crate) fn claims(h: &Host) -> Result<BTreeMap<IpAddr, String>, ProviderError> {
    let out = h.run("listing address claims", "claims", &[], None, 30)?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (a, o) = l.split_once(' ')?;
            Some((a.parse().ok()?, o.to_string()))
        })
        .collect())
}

/// The helper's exit status for an address another container has claimed (`nspawn.sh claim`).
const CLAIM_TAKEN: i32 = 4;

/// Claim `addr` for the container on the host: an error naming the holder if another has it.
fn claim(h: &Host, name: &str, addr: IpAddr) -> Result<bool, ProviderError> {
    match h.run("claiming an address", "claim", &[name, &addr.to_string()], None, 30) {
        Ok(_) => Ok(true),
        Err(e) if e.exit_code() == Some(CLAIM_TAKEN) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// "the address A is already used by container `X` on HOST…", with what X is and how to free
/// the claim.
fn already_used(h: &Host, addr: IpAddr, pick: &str) -> ProviderError {
    let holder = claims(h).ok().and_then(|c| c.get(&addr).cloned());
    let Some(x) = holder else {
        return err(format!("the address {addr} is already used by another container on {}{pick}", h.label))
            .code("invalidInput");
    };
    let list = if h.label == "local" {
        "`ferry container list`".to_string()
    } else {
        format!("`ferry container list --host {}`", h.label)
    };
    let free = match probe(h, &x) {
        Ok(p) => how_to_free(&x, &p),
        Err(_) => format!("`ferry container destroy {x} --purge` removes it and frees its addresses"),
    };
    err(format!(
        "the address {addr} is already used by container `{x}` on {}{pick}; {list} shows it, and {free}",
        h.label
    ))
    .code("invalidInput")
}

/// How to free the claims of container `x`, given what the host has of it.
fn how_to_free(x: &str, p: &Probe) -> String {
    let purge = format!("`ferry container destroy {x} --purge`");
    if p.incomplete {
        format!(
            "it is what a create that did not complete left: `ferry apply` or `ferry destroy` in the \
             deployment that declares it cleans it up, or {purge} removes it and frees its addresses"
        )
    } else if p.owner == OWNER_DEPLOYMENT {
        "it belongs to a deployment: remove it there (`ferry destroy`, or delete the resource and `ferry apply`)"
            .to_string()
    } else if p.owner == OWNER_IMPERATIVE {
        format!("it was made with `ferry container create`: {purge} removes it and frees its addresses")
    } else {
        format!(
            "no container owns it any more (data kept by `keepState`, or a leftover claim): {purge} frees it"
        )
    }
}

/// Assign one family's addresses: static ones are claimed; a pool address already held (in
/// the prior outputs or on the host) is kept, otherwise the first free one is claimed.
fn resolve_family(h: &Host, c: &Container, spec: &AddrSpec, held: &[&str]) -> Result<Addr, ProviderError> {
    match spec {
        AddrSpec::Static { host, address } => {
            if !claim(h, &c.name, address.addr)? {
                return Err(already_used(h, address.addr, ": pick another address"));
            }
            Ok(Addr { host: *host, container: *address })
        }
        AddrSpec::Pool { pool, wanted } => {
            let host = Cidr { addr: pool.first_host(), prefix: pool.prefix };
            let mk = |a: IpAddr| Addr { host: Some(host), container: Cidr { addr: a, prefix: pool.prefix } };
            if let Some(w) = wanted {
                if !claim(h, &c.name, w.addr)? {
                    return Err(already_used(h, w.addr, ""));
                }
                return Ok(mk(w.addr));
            }
            for a in held.iter().filter_map(|s| s.split('/').next()?.parse::<IpAddr>().ok()) {
                if pool.is_usable(&a) && a != pool.first_host() && claim(h, &c.name, a)? {
                    return Ok(mk(a));
                }
            }
            for _ in 0..20 {
                let taken: BTreeSet<IpAddr> =
                    claims(h)?.into_keys().chain(std::iter::once(pool.first_host())).collect();
                let a = allocate(pool, &taken, None).map_err(|e| {
                    err(format!("container `{}` on {}: {e}", c.name, h.label)).code("invalidInput")
                })?;
                if claim(h, &c.name, a)? {
                    return Ok(mk(a));
                }
            }
            Err(err(format!("could not claim an address from {pool} on {}: too much contention", h.label)))
        }
    }
}

pub(crate) fn resolve(
    h: &Host,
    c: &Container,
    prior: Option<&Object>,
    probe: &Probe,
) -> Result<Resolved, ProviderError> {
    let prior_s =
        |k: &str| prior.and_then(|o| o.get(k)).and_then(Value::as_str).unwrap_or_default().to_string();
    let (p4, p6) = (prior_s("address"), prior_s("address6"));
    let v4 = match &c.network.v4 {
        Some(s) if c.network.mode != Mode::Host => Some(resolve_family(h, c, s, &[&p4, &probe.address])?),
        _ => None,
    };
    let v6 = match &c.network.v6 {
        Some(s) if c.network.mode != Mode::Host => Some(resolve_family(h, c, s, &[&p6, &probe.address6])?),
        _ => None,
    };
    // Addresses the container held and no longer uses go back to the pool.
    let now: Vec<String> =
        [&v4, &v6].iter().filter_map(|a| a.as_ref().map(|a| a.container.addr.to_string())).collect();
    let old: Vec<String> = [p4, p6, probe.address.clone(), probe.address6.clone()]
        .into_iter()
        .filter(|a| !a.is_empty() && !now.contains(a))
        .collect();
    if !old.is_empty() {
        let mut args = vec![c.name.as_str()];
        args.extend(old.iter().map(String::as_str));
        h.run("releasing addresses", "release", &args, None, 30)?;
    }
    Ok(Resolved::new(c, v4, v6))
}
