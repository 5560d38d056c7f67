//! IP networks written `10.0.0.0/8`, `fd00::/8` or as one address (`192.0.2.7`): what
//! `metrics_allow` lists. IPv4-mapped IPv6 peers (`::ffff:10.1.2.3`, as a dual-stack socket
//! reports IPv4 clients) are matched as the IPv4 address they carry.

use crate::config::ConfigError;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

/// One network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    /// Whether the peer address `ip` is inside this network; an IPv4-mapped IPv6 address
    /// (a dual-stack socket's view of an IPv4 client) counts as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.contains_exactly(ip)
    }

    /// Whether `ip`, taken as written (an IP SAN of a certificate for `ip=` rules), is
    /// inside this network.
    pub fn contains_exactly(&self, ip: IpAddr) -> bool {
        match (ip, self.net) {
            (IpAddr::V4(a), IpAddr::V4(n)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(a) & mask == u32::from(n) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(n)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(n) & mask
            }
            _ => false,
        }
    }
}

impl Cidr {
    /// The prefix length (0 matches every address of the family).
    pub fn prefix_len(&self) -> u8 {
        self.len
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| {
            format!(
                "{s:?} is not a network; write e.g. \"10.0.0.0/8\", \"fd00::/8\" or \"192.0.2.7\""
            )
        })?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0..={max}"))?,
        };
        Ok(Cidr { net, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

/// Parses the list `key` of `file`; errors name the entry (`key[i]`).
pub(crate) fn parse_list(
    file: &Path,
    key: &str,
    items: &[String],
) -> Result<Vec<Cidr>, ConfigError> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse()
                .map_err(|e| ConfigError::new(file, format!("{key}[{i}]"), e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::1", "::1", true),
            ("::/0", "2001:db8::1", true),
            ("127.0.0.1/32", "::1", false),
        ];
        for (net, ip, want) in cases {
            let c: Cidr = net.parse().unwrap();
            assert_eq!(
                c.contains(ip.parse().unwrap()),
                *want,
                "{net} contains {ip}"
            );
        }
    }

    #[test]
    fn refuses_malformed_networks() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "host.example",
            "10.0.0.0/-1",
            "1.2.3.4/x",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
        let e = parse_list(
            Path::new("s.toml"),
            "metrics_allow",
            &["10.0.0.0/8".into(), "x".into()],
        )
        .unwrap_err();
        assert_eq!(e.key, "metrics_allow[1]");
    }
}
