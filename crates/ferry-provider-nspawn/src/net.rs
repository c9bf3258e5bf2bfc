//! Addresses, pools and interface names (pure logic).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use sha2::Digest;

/// The pool a container without any address settings takes its IPv4 address from.
pub const DEFAULT_POOL: &str = "10.233.0.0/16";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// An address with a prefix length (`10.0.0.2/24`); a bare address has the full length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    pub fn parse(s: &str, family: Family) -> Result<Cidr, String> {
        let s = s.trim();
        let c = if s.contains('/') {
            let n: IpNet =
                s.parse().map_err(|_| format!("`{s}` is not a valid CIDR (e.g. 10.233.0.0/16)"))?;
            Cidr { addr: n.addr(), prefix: n.prefix_len() }
        } else {
            let a: IpAddr = s.parse().map_err(|_| format!("`{s}` is not a valid IP address"))?;
            Cidr { addr: a, prefix: if a.is_ipv4() { 32 } else { 128 } }
        };
        match (family, c.addr) {
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_)) => Ok(c),
            (Family::V4, _) => Err(format!("`{s}` is not an IPv4 address")),
            (Family::V6, _) => Err(format!("`{s}` is not an IPv6 address")),
        }
    }

    fn net(&self) -> IpNet {
        IpNet::new(self.addr, self.prefix).expect("prefix checked at parse")
    }

    pub fn max_prefix(&self) -> u8 {
        if self.addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    pub fn contains(&self, a: &IpAddr) -> bool {
        self.net().contains(a)
    }

    /// Addresses in the block, capped (a v6 /64 is "many").
    pub fn host_count(&self) -> u128 {
        let bits = u32::from(self.max_prefix() - self.prefix);
        if bits >= 64 {
            u128::from(u64::MAX)
        } else {
            1u128 << bits
        }
    }

    fn nth(&self, i: u128) -> IpAddr {
        match self.net().network() {
            IpAddr::V4(n) => IpAddr::V4((u32::from(n).wrapping_add(i as u32)).into()),
            IpAddr::V6(n) => IpAddr::V6((u128::from(n).wrapping_add(i)).into()),
        }
    }

    /// The pool's first host address: the host side of every container from the pool.
    pub fn first_host(&self) -> IpAddr {
        self.nth(1)
    }

    /// Not the network address, nor the IPv4 broadcast address.
    pub fn is_usable(&self, a: &IpAddr) -> bool {
        let n = self.net();
        n.contains(a) && *a != n.network() && !(a.is_ipv4() && self.prefix < 31 && *a == n.broadcast())
    }

    /// The block this address is in (`10.233.0.7/16` → `10.233.0.0/16`).
    pub fn network(&self) -> Cidr {
        Cidr { addr: self.net().network(), prefix: self.prefix }
    }
}

/// The first usable address of `pool` that is neither the host's nor in `taken`; `wanted`
/// first if given (an error if taken).
pub fn allocate(pool: &Cidr, taken: &BTreeSet<IpAddr>, wanted: Option<IpAddr>) -> Result<IpAddr, String> {
    if let Some(w) = wanted {
        if taken.contains(&w) {
            return Err(format!("the address {w} is already used by another container"));
        }
        return Ok(w);
    }
    let limit = pool.host_count().min(1 << 20);
    for i in 2..limit {
        let a = pool.nth(i);
        if pool.is_usable(&a) && !taken.contains(&a) {
            return Ok(a);
        }
    }
    Err(format!("the address pool {pool} is exhausted: every address is taken by a container on this host"))
}

/// A Linux interface name (at most 15 bytes) for `prefix` + `name`: as is when it fits,
/// otherwise shortened deterministically (`ve-` + the name's first 6 characters + 6 hex
/// characters of its SHA-256), so long container names still work and never collide by
/// accident.
pub fn ifname(prefix: &str, name: &str) -> String {
    let full = format!("{prefix}{name}");
    if full.len() <= 15 {
        return full;
    }
    let hash = hex::encode(sha2::Sha256::digest(name.as_bytes()));
    let keep = 15 - prefix.len() - 6;
    format!("{prefix}{}{}", &name[..keep.min(name.len())], &hash[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        Cidr::parse(s, if s.contains(':') { Family::V6 } else { Family::V4 })
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!(c("10.0.0.2").to_string(), "10.0.0.2/32");
        assert_eq!(c("10.0.0.2/24").network().to_string(), "10.0.0.0/24");
        assert_eq!(c("fd00::5").prefix, 128);
        assert!(Cidr::parse("10.0.0.0/33", Family::V4).is_err());
        assert!(Cidr::parse("10.0.0", Family::V4).is_err());
        assert!(Cidr::parse("fd00::1", Family::V4).unwrap_err().contains("not an IPv4"));
    }

    #[test]
    fn pool_allocation_skips_the_host_and_taken_addresses() {
        let pool = c("10.233.0.0/29");
        assert_eq!(pool.first_host().to_string(), "10.233.0.1");
        let mut taken = BTreeSet::new();
        let mut got = vec![];
        for _ in 0..5 {
            let a = allocate(&pool, &taken, None).unwrap_or_else(|e| panic!("{e}"));
            taken.insert(a);
            got.push(a.to_string());
        }
        assert_eq!(got, ["10.233.0.2", "10.233.0.3", "10.233.0.4", "10.233.0.5", "10.233.0.6"]);
        let e = allocate(&pool, &taken, None).unwrap_err();
        assert!(e.contains("exhausted"), "{e}");
        // A freed address is reused.
        taken.remove(&"10.233.0.3".parse().unwrap());
        assert_eq!(allocate(&pool, &taken, None).unwrap().to_string(), "10.233.0.3");
        assert!(allocate(&pool, &taken, Some("10.233.0.2".parse().unwrap()))
            .unwrap_err()
            .contains("already used"));
        let v6 = c("fd42::/64");
        assert_eq!(allocate(&v6, &BTreeSet::new(), None).unwrap().to_string(), "fd42::2");
    }

    #[test]
    fn interface_names_fit_and_are_stable() {
        assert_eq!(ifname("ve-", "web"), "ve-web");
        assert_eq!(ifname("ve-", "abcdefghijkl"), "ve-abcdefghijkl");
        let long = ifname("ve-", "a-very-long-container-name");
        assert_eq!(long.len(), 15);
        assert!(long.starts_with("ve-a-very"));
        assert_eq!(long, ifname("ve-", "a-very-long-container-name"));
        assert_ne!(long, ifname("ve-", "a-very-long-container-name2"));
    }
}
