//! Parsing of what people type as targets: address ranges (CIDR, `A-B`),
//! port specs (`22,80,443`, `1-1024`, `-`) and host names. Pure apart from
//! [`resolve`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::UsageError;

/// Sweeps larger than this need `--force`.
pub const MAX_TARGETS: u128 = 65_536;

/// An inclusive range of addresses of one family, as integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrRange {
    pub first: u128,
    pub last: u128,
    pub v6: bool,
}

impl AddrRange {
    #[must_use]
    pub fn len(&self) -> u128 {
        (self.last - self.first).saturating_add(1)
    }

    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        (self.first..=self.last).map(|n| to_addr(n, self.v6))
    }
}

fn to_addr(n: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(n))
    } else {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    }
}

fn to_int(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Parses `192.0.2.0/24`, `2001:db8::/120`, `192.0.2.10-192.0.2.20`,
/// `192.0.2.10-20` (last octet), or a single address. For IPv4 prefixes
/// shorter than /31 the network and broadcast addresses are left out.
pub fn parse_range(text: &str) -> Result<AddrRange, UsageError> {
    let bad = |why: &str| {
        UsageError(format!(
            "bad address range '{text}': {why}; write a CIDR (192.0.2.0/24, 2001:db8::/120), \
             a range (192.0.2.1-192.0.2.9) or an address"
        ))
    };
    if let Some((addr, len)) = text.split_once('/') {
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad("not an IP address before '/'"))?;
        let bits: u32 = if addr.is_ipv6() { 128 } else { 32 };
        let len: u32 = len
            .parse()
            .map_err(|_| bad("the prefix length is not a number"))?;
        if len > bits {
            return Err(bad(&format!("the prefix length is more than {bits}")));
        }
        let host_bits = bits - len;
        let host_mask: u128 = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let first = to_int(addr) & !host_mask;
        let last = first | host_mask;
        let (first, last) = if !addr.is_ipv6() && len < 31 {
            (first + 1, last - 1)
        } else {
            (first, last)
        };
        return Ok(AddrRange {
            first,
            last,
            v6: addr.is_ipv6(),
        });
    }
    if let Some((a, b)) = text.split_once('-') {
        let a: IpAddr = a.parse().map_err(|_| bad("not an IP address before '-'"))?;
        let b: IpAddr = match b.parse::<IpAddr>() {
            Ok(b) => b,
            // 192.0.2.10-20: the last octet only.
            Err(_) => match (a, b.parse::<u8>()) {
                (IpAddr::V4(a4), Ok(octet)) => {
                    let [w, x, y, _] = a4.octets();
                    IpAddr::V4(Ipv4Addr::new(w, x, y, octet))
                }
                _ => return Err(bad("not an IP address after '-'")),
            },
        };
        if a.is_ipv6() != b.is_ipv6() {
            return Err(bad("the two ends are of different address families"));
        }
        let (first, last) = (to_int(a), to_int(b));
        if first > last {
            return Err(bad("the first address is after the last"));
        }
        return Ok(AddrRange {
            first,
            last,
            v6: a.is_ipv6(),
        });
    }
    let a: IpAddr = text.parse().map_err(|_| bad("not an IP address"))?;
    Ok(AddrRange {
        first: to_int(a),
        last: to_int(a),
        v6: a.is_ipv6(),
    })
}

/// The addresses of some ranges: IPv4 first, then IPv6, each in ascending
/// order, overlaps once. Held as a few merged intervals and walked lazily,
/// so its memory does not depend on how many addresses it holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// Sorted by (family, first); disjoint and not adjacent.
    ranges: Vec<AddrRange>,
}

impl RangeSet {
    /// The union of `ranges`.
    #[must_use]
    pub fn new(mut ranges: Vec<AddrRange>) -> Self {
        ranges.sort_by_key(|r| (r.v6, r.first));
        let mut merged: Vec<AddrRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(m) if m.v6 == r.v6 && r.first <= m.last.saturating_add(1) => {
                    m.last = m.last.max(r.last);
                }
                _ => merged.push(r),
            }
        }
        Self { ranges: merged }
    }

    /// How many addresses (saturating at u128::MAX).
    #[must_use]
    pub fn len(&self) -> u128 {
        self.ranges
            .iter()
            .fold(0u128, |n, r| n.saturating_add(r.len()))
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    #[must_use]
    pub fn has_v4(&self) -> bool {
        self.ranges.iter().any(|r| !r.v6)
    }

    #[must_use]
    pub fn has_v6(&self) -> bool {
        self.ranges.iter().any(|r| r.v6)
    }

    /// Every address, one at a time.
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ranges.iter().flat_map(AddrRange::iter)
    }
}

/// The addresses of `specs`, without repeats. Refuses more than
/// [`MAX_TARGETS`] unless `force`.
pub fn parse_ranges(specs: &[String], force: bool) -> Result<RangeSet, UsageError> {
    let ranges = specs
        .iter()
        .map(|s| parse_range(s))
        .collect::<Result<Vec<_>, _>>()?;
    let set = RangeSet::new(ranges);
    let total = set.len();
    if total > MAX_TARGETS && !force {
        return Err(UsageError(format!(
            "{total} targets is more than {MAX_TARGETS}; narrow the ranges or add --force"
        )));
    }
    if total > 1 << 24 {
        return Err(UsageError(format!(
            "{total} targets is more than netmon sweeps at once (16,777,216)"
        )));
    }
    Ok(set)
}

/// Parses a port spec: `22,80,443`, `1-1024`, `-` (1-65535), `8000-` (to
/// 65535), `-100` (from 1), mixed with commas. Sorted, without repeats.
pub fn parse_ports(spec: &str) -> Result<Vec<u16>, UsageError> {
    let bad = |why: String| {
        UsageError(format!(
            "bad port spec '{spec}': {why}; write e.g. 22,80,443 or 1-1024 or - (all ports)"
        ))
    };
    let number = |t: &str| -> Result<u16, UsageError> {
        match t.trim().parse::<u32>() {
            Ok(p @ 1..=65535) => Ok(p as u16),
            Ok(p) => Err(bad(format!("{p} is not a port between 1 and 65535"))),
            Err(_) => Err(bad(format!("'{t}' is not a number"))),
        }
    };
    let mut wanted = vec![false; 65536];
    for item in spec.split(',') {
        let part = item.trim();
        if part.is_empty() {
            return Err(bad("empty item".into()));
        }
        let (lo, hi) = if let Some((a, b)) = part.split_once('-') {
            let lo = if a.trim().is_empty() { 1 } else { number(a)? };
            let hi = if b.trim().is_empty() {
                65535
            } else {
                number(b)?
            };
            (lo, hi)
        } else {
            let p = number(part)?;
            (p, p)
        };
        if lo > hi {
            return Err(bad(format!("{lo} is after {hi}")));
        }
        for p in lo..=hi {
            wanted[usize::from(p)] = true;
        }
    }
    Ok((1..=65535u16).filter(|&p| wanted[usize::from(p)]).collect())
}

/// Splits `HOST:PORT` or `[V6]:PORT`.
pub fn split_host_port(text: &str) -> Result<(String, u16), UsageError> {
    let bad = || {
        UsageError(format!(
            "bad target '{text}': write HOST:PORT, e.g. 192.0.2.1:443 or [2001:db8::1]:22"
        ))
    };
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        (h, p)
    } else {
        text.rsplit_once(':').ok_or_else(bad)?
    };
    if host.is_empty() || host.contains(':') && !text.starts_with('[') {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_owned(), p)),
        _ => Err(bad()),
    }
}

/// An address for a host name or address text. Prefers the first address
/// the resolver gives.
pub async fn resolve(host: &str) -> anyhow::Result<IpAddr> {
    if let Ok(a) = host.parse::<IpAddr>() {
        return Ok(a);
    }
    let trimmed = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(a) = trimmed.parse::<IpAddr>() {
        return Ok(a);
    }
    let mut addrs = tokio::net::lookup_host((host, 0)).await.map_err(|e| {
        anyhow::anyhow!("cannot resolve '{host}': {e}; check the name and the resolver")
    })?;
    addrs
        .next()
        .map(|sa| sa.ip())
        .ok_or_else(|| anyhow::anyhow!("cannot resolve '{host}': the resolver returned no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Vec<String> {
        parse_range(text)
            .unwrap()
            .iter()
            .map(|a| a.to_string())
            .collect()
    }

    #[test]
    fn ipv4_prefixes_skip_network_and_broadcast() {
        let r = parse_range("127.0.0.0/24").unwrap();
        assert_eq!(r.len(), 254);
        assert_eq!(all("192.0.2.0/30"), ["192.0.2.1", "192.0.2.2"]);
        assert_eq!(all("192.0.2.4/31"), ["192.0.2.4", "192.0.2.5"]);
        assert_eq!(all("192.0.2.77/32"), ["192.0.2.77"]);
        // Host bits in the address are ignored, as routers do.
        assert_eq!(all("192.0.2.9/30"), ["192.0.2.9", "192.0.2.10"]);
        assert_eq!(parse_range("127.0.0.0/20").unwrap().len(), 4094);
        assert_eq!(parse_range("0.0.0.0/0").unwrap().len(), (1u128 << 32) - 2);
    }

    #[test]
    fn ipv6_prefixes_keep_every_address() {
        assert_eq!(
            all("2001:db8::/126"),
            ["2001:db8::", "2001:db8::1", "2001:db8::2", "2001:db8::3"]
        );
        assert_eq!(parse_range("2001:db8::/0").unwrap().len(), u128::MAX);
    }

    #[test]
    fn ranges_and_single_addresses() {
        assert_eq!(
            all("192.0.2.254-192.0.3.1"),
            ["192.0.2.254", "192.0.2.255", "192.0.3.0", "192.0.3.1"]
        );
        assert_eq!(
            all("192.0.2.8-10"),
            ["192.0.2.8", "192.0.2.9", "192.0.2.10"]
        );
        assert_eq!(
            all("2001:db8::fe-2001:db8::100"),
            ["2001:db8::fe", "2001:db8::ff", "2001:db8::100"]
        );
        assert_eq!(all("::1"), ["::1"]);
    }

    #[test]
    fn bad_ranges_are_usage_errors() {
        for bad in [
            "192.0.2.0/33",
            "2001:db8::/129",
            "192.0.2.0/x",
            "192.0.2.300/24",
            "10.0.0.9-10.0.0.1",
            "10.0.0.1-::1",
            "host",
            "",
            "10.0.0.1-300",
        ] {
            let e = parse_range(bad).expect_err(bad);
            assert!(e.0.contains("bad address range"), "{e}");
        }
    }

    #[test]
    fn expansion_refuses_too_many_without_force() {
        assert_eq!(
            parse_ranges(&["10.0.0.0/16".into()], false).unwrap().len(),
            65534
        );
        let e = parse_ranges(&["10.0.0.0/15".into()], false).unwrap_err();
        assert!(e.0.contains("--force"), "{e}");
        assert_eq!(
            parse_ranges(&["10.0.0.0/15".into()], true).unwrap().len(),
            131_070
        );
        assert_eq!(
            parse_ranges(&["2001:db8:ff::/104".into()], true)
                .unwrap()
                .len(),
            1 << 24
        );
        let e = parse_ranges(&["2001:db8:ff::/103".into()], true).unwrap_err();
        assert!(e.0.contains("16,777,216"), "{e}");
    }

    #[test]
    fn range_sets_merge_overlaps_and_stream_in_order() {
        let set = |specs: &[&str]| {
            parse_ranges(
                &specs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
                false,
            )
            .unwrap()
        };
        // Overlaps count once; the union comes out sorted, IPv4 first.
        let v = set(&["192.0.2.1-3", "::1", "192.0.2.0/30", "192.0.2.9"]);
        assert_eq!(v.len(), 5);
        let all: Vec<String> = v.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            all,
            ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.9", "::1"]
        );
        // Adjacent ranges merge; a range inside another disappears.
        let v = set(&["10.0.0.0-10.0.0.4", "10.0.0.5-10.0.0.9", "10.0.0.2-3"]);
        assert_eq!(v, set(&["10.0.0.0-10.0.0.9"]));
        assert!(!v.has_v6() && v.has_v4());
        // Streaming a range of 2^24 takes no memory up front: the first
        // and a later address come at once.
        let big = parse_ranges(&["2001:db8:ff::/104".into()], true).unwrap();
        let mut it = big.iter();
        assert_eq!(it.next().unwrap().to_string(), "2001:db8:ff::");
        assert_eq!(it.nth(255).unwrap().to_string(), "2001:db8:ff::100");
        assert_eq!(size_of_val(&big), size_of::<Vec<AddrRange>>());
        // The edges of the address space do not overflow.
        let edge = set(&["255.255.255.254-255.255.255.255", "255.255.255.255"]);
        assert_eq!(edge.len(), 2);
        let top = RangeSet::new(vec![
            parse_range("ffff::/16").unwrap(),
            parse_range("ffff:ffff::/32").unwrap(),
        ]);
        assert_eq!(top.len(), 1 << 112);
    }

    #[test]
    fn port_specs() {
        assert_eq!(parse_ports("22,80,443").unwrap(), [22, 80, 443]);
        assert_eq!(parse_ports("1-3,2,80").unwrap(), [1, 2, 3, 80]);
        assert_eq!(parse_ports("-").unwrap().len(), 65535);
        assert_eq!(
            parse_ports("65530-").unwrap(),
            [65530, 65531, 65532, 65533, 65534, 65535]
        );
        assert_eq!(parse_ports("-3").unwrap(), [1, 2, 3]);
        for bad in ["0", "65536", "80,", "a", "10-5", "1-2-3", ""] {
            let e = parse_ports(bad).expect_err(bad);
            assert!(e.0.starts_with("bad port spec"), "{e}");
        }
    }

    #[test]
    fn host_port() {
        assert_eq!(
            split_host_port("127.0.0.1:80").unwrap(),
            ("127.0.0.1".into(), 80)
        );
        assert_eq!(split_host_port("[::1]:22").unwrap(), ("::1".into(), 22));
        assert_eq!(
            split_host_port("localhost:8080").unwrap(),
            ("localhost".into(), 8080)
        );
        for bad in ["::1:22", "host", "host:0", "host:x", ":80", "[::1]"] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
    }
}
