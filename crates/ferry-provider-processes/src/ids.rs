//! `ids.pool`: sticky unique IDs (ports, uids, gids…) handed to claimants.
//!
//! The assignments are the resource's outputs (`POOL.CLAIMANT`), so ferry's state is where
//! they live: an update keeps every assignment whose claimant still claims the pool and whose
//! ID is still inside the pool's range; new claimants get the lowest free IDs (claimants in
//! name order); IDs of claimants that are gone are free again. An exhausted pool is an error
//! that changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use ferry_protocol::{Object, ProviderError};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pool {
    min: u64,
    max: u64,
    #[serde(default = "one")]
    step: u64,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Inputs {
    pools: BTreeMap<String, Pool>,
    #[serde(default)]
    claimants: BTreeMap<String, Vec<String>>,
}

/// Assign IDs for `inputs`, keeping `prior` assignments (the recorded outputs).
pub fn assign(name: &str, inputs: &Object, prior: Option<&Object>) -> Result<Object, ProviderError> {
    let bad = |m: String| ProviderError::invalid_input(format!("ids.pool `{name}`: {m}"));
    let i: Inputs = serde_json::from_value(Value::Object(inputs.clone())).map_err(|e| bad(e.to_string()))?;
    for (p, pool) in &i.pools {
        if pool.min > pool.max {
            return Err(bad(format!("pool `{p}`: min {} is greater than max {}", pool.min, pool.max)));
        }
    }
    // pool -> claimants
    let mut wants: BTreeMap<&str, Vec<&str>> = i.pools.keys().map(|p| (p.as_str(), vec![])).collect();
    for (c, pools) in &i.claimants {
        for p in pools {
            match wants.get_mut(p.as_str()) {
                Some(v) => v.push(c),
                None => {
                    return Err(bad(format!(
                        "claimant `{c}` claims from pool `{p}`, which is not declared (pools: {})",
                        i.pools.keys().cloned().collect::<Vec<_>>().join(", ")
                    )))
                }
            }
        }
    }
    let mut out = Object::new();
    for (p, claimants) in wants {
        let pool = &i.pools[p];
        let in_range =
            |id: u64| id >= pool.min && id <= pool.max && (id - pool.min).checked_rem(pool.step) == Some(0);
        let before = prior.and_then(|o| o.get(p)).and_then(Value::as_object);
        let mut assigned: BTreeMap<&str, u64> = BTreeMap::new();
        let mut used = BTreeSet::new();
        for c in &claimants {
            if let Some(id) = before.and_then(|b| b.get(*c)).and_then(Value::as_u64) {
                if in_range(id) && used.insert(id) {
                    assigned.insert(c, id);
                }
            }
        }
        let mut next = pool.min;
        for c in &claimants {
            if assigned.contains_key(c) {
                continue;
            }
            while used.contains(&next) {
                next += pool.step;
            }
            if next > pool.max {
                let size = (pool.max - pool.min) / pool.step + 1;
                return Err(bad(format!(
                    "pool `{p}` is exhausted: {} claimants for {size} IDs ({}..={})",
                    claimants.len(),
                    pool.min,
                    pool.max
                ))
                .code("exhausted"));
            }
            used.insert(next);
            assigned.insert(c, next);
        }
        out.insert(p.to_string(), json!(assigned));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Object {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn sticky_and_reuse_after_release() {
        let i = obj(
            json!({"pools": {"ports": {"min": 10, "max": 12}}, "claimants": {"a": ["ports"], "b": ["ports"]}}),
        );
        let o = assign("ids", &i, None).unwrap();
        assert_eq!(o["ports"], json!({"a": 10, "b": 11}));
        // a leaves, c arrives: b keeps 11, c gets the free 10.
        let i2 = obj(
            json!({"pools": {"ports": {"min": 10, "max": 12}}, "claimants": {"b": ["ports"], "c": ["ports"]}}),
        );
        let o2 = assign("ids", &i2, Some(&o)).unwrap();
        assert_eq!(o2["ports"], json!({"b": 11, "c": 10}));
        let i3 = obj(
            json!({"pools": {"ports": {"min": 10, "max": 11}}, "claimants": {"b": ["ports"], "c": ["ports"], "d": ["ports"]}}),
        );
        let e = assign("ids", &i3, Some(&o2)).unwrap_err();
        assert!(e.message.contains("pool `ports` is exhausted"), "{}", e.message);
        let i4 = obj(json!({"pools": {}, "claimants": {"b": ["ports"]}}));
        assert!(assign("ids", &i4, None).unwrap_err().message.contains("not declared"));
    }
}
