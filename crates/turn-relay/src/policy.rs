//! Which peers an allocation may relay to (DESIGN.md §Security defaults).
//!
//! Denied unless allowed: unspecified, loopback (unless `allow_loopback_peers`), private (RFC 1918, RFC 6598
//! shared, IPv6 ULA), link-local, multicast and broadcast addresses, plus `denied_peer_ip`. Entries of
//! `allowed_peer_ip` win over every denial, as in coturn.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An inclusive address range: a CIDR block, one address, or `first-last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    first: IpAddr,
    last: IpAddr,
}

impl IpRange {
    /// Parses `10.0.0.0/8`, `192.0.2.7`, `10.0.0.1-10.0.0.255`, `fd00::/8`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || format!("{s:?} is not an address, CIDR block or `first-last` range");
        if let Some((a, b)) = s.split_once('-') {
            let (first, last): (IpAddr, IpAddr) = (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            );
            if first.is_ipv4() != last.is_ipv4() || to_u128(first) > to_u128(last) {
                return Err(bad());
            }
            return Ok(Self { first, last });
        }
        if let Some((a, len)) = s.split_once('/') {
            let ip: IpAddr = a.parse().map_err(|_| bad())?;
            let len: u32 = len.parse().map_err(|_| bad())?;
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            if len > bits {
                return Err(bad());
            }
            let host_bits = bits - len;
            let mask: u128 = if host_bits == 128 {
                u128::MAX
            } else {
                (1_u128 << host_bits) - 1
            };
            let base = to_u128(ip) & !mask;
            return Ok(Self {
                first: from_u128(base, ip.is_ipv4()),
                last: from_u128(base | mask, ip.is_ipv4()),
            });
        }
        let ip: IpAddr = s.parse().map_err(|_| bad())?;
        Ok(Self {
            first: ip,
            last: ip,
        })
    }

    /// Does the range hold `ip`? (IPv4-mapped IPv6 addresses are compared as IPv4.)
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.first.is_ipv4()
            && (to_u128(self.first)..=to_u128(self.last)).contains(&to_u128(ip))
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

/// The compiled peer policy.
#[derive(Clone, Debug, Default)]
pub struct PeerPolicy {
    allow_loopback: bool,
    allowed: Vec<IpRange>,
    denied: Vec<IpRange>,
}

impl PeerPolicy {
    /// From the `[turn]` lists (already validated).
    pub fn new(
        allow_loopback: bool,
        allowed: &[String],
        denied: &[String],
    ) -> Result<Self, String> {
        Ok(Self {
            allow_loopback,
            allowed: allowed
                .iter()
                .map(|s| IpRange::parse(s))
                .collect::<Result<_, _>>()?,
            denied: denied
                .iter()
                .map(|s| IpRange::parse(s))
                .collect::<Result<_, _>>()?,
        })
    }

    /// May an allocation relay to `ip`?
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.allowed.iter().any(|r| r.contains(ip)) {
            return true;
        }
        if self.denied.iter().any(|r| r.contains(ip)) {
            return false;
        }
        if ip.is_loopback() {
            return self.allow_loopback;
        }
        !builtin_denied(ip)
    }
}

fn builtin_denied(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_unspecified()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xC0) == 64) // 100.64.0.0/10, RFC 6598 shared
                || o[0] >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xFE00) == 0xFC00 // fc00::/7 unique local
                || (s[0] & 0xFFC0) == 0xFE80 // fe80::/10 link-local
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn default_policy() {
        let p = PeerPolicy::default();
        for denied in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "224.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "240.0.0.1",
        ] {
            assert!(!p.permits(ip(denied)), "{denied} must be denied");
        }
        for allowed in [
            "192.0.2.10",
            "8.8.8.8",
            "2001:db8::1",
            "100.128.0.1",
            "::ffff:8.8.8.8",
        ] {
            assert!(p.permits(ip(allowed)), "{allowed} must be allowed");
        }
    }

    #[test]
    fn overrides() {
        let p = PeerPolicy::new(
            true,
            &["10.0.0.0/24".into(), "192.168.1.5-192.168.1.9".into()],
            &["8.8.8.0/24".into()],
        )
        .expect("valid");
        assert!(p.permits(ip("127.0.0.1")) && p.permits(ip("::1")));
        assert!(p.permits(ip("10.0.0.200")) && !p.permits(ip("10.0.1.1")));
        assert!(p.permits(ip("192.168.1.7")) && !p.permits(ip("192.168.1.10")));
        assert!(!p.permits(ip("8.8.8.8")));
        let both =
            PeerPolicy::new(false, &["8.8.8.8".into()], &["8.8.8.0/24".into()]).expect("valid");
        assert!(both.permits(ip("8.8.8.8")), "allowed wins over denied");
    }

    #[test]
    fn range_parsing() {
        assert!(IpRange::parse("10.0.0.0/33").is_err());
        assert!(IpRange::parse("10.0.0.9-10.0.0.1").is_err());
        assert!(IpRange::parse("10.0.0.1-::1").is_err());
        assert!(IpRange::parse("nonsense").is_err());
        assert!(
            IpRange::parse("0.0.0.0/0")
                .expect("all")
                .contains(ip("1.2.3.4"))
        );
        assert!(
            IpRange::parse("::/0")
                .expect("all v6")
                .contains(ip("2001:db8::1"))
        );
    }
}
