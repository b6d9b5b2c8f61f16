//! Property-based fuzzing (proptest) of every parser that takes user or wire
//! input: durations, port specs, address ranges and sweep range sets,
//! `HOST:PORT`, ICMP echo messages and the IPv4 header in front of them,
//! netlink link notifications, and the decoding of flow keys from kernel
//! records. Each target checks
//! that nothing panics on arbitrary input and, on inputs generated from the
//! grammar, that the result equals an independent oracle.
//!
//! `cargo test` runs each target briefly. `cargo xtask fuzz --seconds N`
//! runs each for N seconds (`NETMON_FUZZ_SECS`) in a release build and
//! prints how many inputs each tried. Not coverage-guided: cargo-fuzz needs
//! netmon as a library crate to link against, which it is not yet.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use netmon_common::{FlowKey, IP_V4, IP_V6};
use proptest::{
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner},
};

use crate::{
    probe::{
        targets::{AddrRange, RangeSet, parse_ports, parse_range, split_host_port},
        wire::{EchoPacket, EchoRepr, internet_checksum, strip_ipv4_header},
    },
    report::Flow,
    units::parse_duration,
};

/// Runs `test` on inputs from `strategy`: one batch of 256, or batches until
/// `NETMON_FUZZ_SECS` seconds have passed. Panics with the (shrunk) failing
/// input.
fn fuzz<S: Strategy>(
    name: &str,
    strategy: &S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let secs: u64 = std::env::var("NETMON_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Batches are seeded from one base seed, printed with a failure and
    // taken from NETMON_FUZZ_SEED to repeat a run.
    let base: u64 = std::env::var("NETMON_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut runs: u64 = 0;
    for batch in 0u64.. {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&base.to_le_bytes());
        seed[8..16].copy_from_slice(&batch.to_le_bytes());
        let config = Config {
            cases: 256,
            failure_persistence: None,
            ..Config::default()
        };
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed);
        let mut runner = TestRunner::new_with_rng(config, rng);
        if let Err(e) = runner.run(strategy, &test) {
            panic!("fuzz target {name} (NETMON_FUZZ_SEED={base}, batch {batch}): {e}");
        }
        runs += 256;
        if Instant::now() >= deadline {
            break;
        }
    }
    if secs > 0 {
        println!("fuzz target {name}: {runs} inputs in {secs} s, no failure");
    }
}

/// Text made mostly of the characters these parsers care about.
fn texty() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-fmsuhin.,:\\-\\[\\]/ ]{0,24}",
        any::<String>(),
        "[0-9]{0,40}(ms|s|m|h|us|µs|min|)",
    ]
}

#[test]
fn fuzz_durations() {
    fuzz("duration: any text", &texty(), |s| {
        // Never panics; what it accepts is finite and within the bound.
        if let Ok(d) = parse_duration(&s) {
            prop_assert!(d.as_secs_f64() <= 1e9, "{s:?} -> {d:?}");
        }
        Ok(())
    });
    let units = [("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0)];
    fuzz(
        "duration: NUMBER UNIT",
        &(0u32..1_000_000, 0..units.len()),
        |(n, u)| {
            let (unit, scale) = units[u];
            let got = parse_duration(&format!("{n}{unit}"));
            let seconds = f64::from(n) * scale;
            // Longer than 1e9 s (31 years) is refused.
            if seconds > 1e9 {
                prop_assert!(got.is_err(), "{}{} accepted", n, unit);
            } else {
                let want = Duration::from_secs_f64(seconds);
                prop_assert_eq!(got.map_err(TestCaseError::fail)?, want, "{}{}", n, unit);
            }
            Ok(())
        },
    );
}

/// A port spec item and the ports it means.
fn port_item() -> impl Strategy<Value = (String, Vec<u16>)> {
    prop_oneof![
        (1u16..=65535).prop_map(|p| (p.to_string(), vec![p])),
        (1u16..=65535, 0u16..300).prop_map(|(a, len)| {
            let b = a.saturating_add(len);
            (format!("{a}-{b}"), (a..=b).collect())
        }),
        (65000u16..=65535).prop_map(|a| (format!("{a}-"), (a..=65535).collect())),
        (1u16..300).prop_map(|b| (format!("-{b}"), (1..=b).collect())),
    ]
}

#[test]
fn fuzz_port_specs() {
    fuzz("ports: any text", &texty(), |s| {
        if let Ok(ports) = parse_ports(&s) {
            prop_assert!(!ports.is_empty());
            prop_assert!(ports.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
            prop_assert!(ports[0] >= 1);
        }
        Ok(())
    });
    fuzz(
        "ports: comma lists against an oracle",
        &prop::collection::vec(port_item(), 1..6),
        |items| {
            let spec = items
                .iter()
                .map(|(t, _)| t.as_str())
                .collect::<Vec<_>>()
                .join(",");
            let mut want: Vec<u16> = items.iter().flat_map(|(_, p)| p.clone()).collect();
            want.sort_unstable();
            want.dedup();
            let got = parse_ports(&spec).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got, want, "{}", spec);
            Ok(())
        },
    );
}

#[test]
fn fuzz_host_port() {
    fuzz("HOST:PORT: any text", &texty(), |s| {
        if let Ok((host, port)) = split_host_port(&s) {
            prop_assert!(!host.is_empty() && port > 0, "{s:?}");
        }
        Ok(())
    });
    let host = prop_oneof![
        "[a-z][a-z0-9.-]{0,20}".prop_map(|h| (h.clone(), h)),
        any::<u32>().prop_map(|a| {
            let h = Ipv4Addr::from(a).to_string();
            (h.clone(), h)
        }),
        any::<u128>().prop_map(|a| {
            let h = Ipv6Addr::from(a).to_string();
            (format!("[{h}]"), h)
        }),
    ];
    fuzz(
        "HOST:PORT: round trip",
        &(host, 1u16..=65535),
        |((written, host), port)| {
            let (h, p) = split_host_port(&format!("{written}:{port}"))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!((h, p), (host, port));
            Ok(())
        },
    );
}

#[test]
fn fuzz_address_ranges() {
    fuzz("range: any text", &texty(), |s| {
        if let Ok(r) = parse_range(&s) {
            prop_assert!(r.first <= r.last, "{s:?}: {r:?}");
            prop_assert!(r.v6 || r.last <= u128::from(u32::MAX));
        }
        Ok(())
    });
    fuzz(
        "range: IPv4 CIDR against an oracle",
        &(any::<u32>(), 16u32..=32),
        |(addr, len)| {
            let r = parse_range(&format!("{}/{len}", Ipv4Addr::from(addr)))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let size = 1u128 << (32 - len);
            let net = u128::from(addr) & !(size - 1);
            // Network and broadcast addresses are left out below /31.
            let (first, last) = if len < 31 {
                (net + 1, net + size - 2)
            } else {
                (net, net + size - 1)
            };
            prop_assert_eq!((r.first, r.last, r.v6), (first, last, false));
            prop_assert_eq!(r.iter().count() as u128, r.len());
            Ok(())
        },
    );
    // Overlapping ranges: the set streams each address once, in order.
    let range = (0u128..2000, 0u128..300).prop_map(|(first, len)| AddrRange {
        first,
        last: first + len,
        v6: false,
    });
    fuzz(
        "range set: union against an oracle",
        &prop::collection::vec(range, 1..6),
        |ranges| {
            let mut want: Vec<u128> = ranges.iter().flat_map(|r| r.first..=r.last).collect();
            want.sort_unstable();
            want.dedup();
            let set = RangeSet::new(ranges);
            let got: Vec<u128> = set
                .iter()
                .map(|a| match a {
                    IpAddr::V4(a) => u128::from(u32::from(a)),
                    IpAddr::V6(a) => u128::from(a),
                })
                .collect();
            prop_assert_eq!(set.len(), want.len() as u128);
            prop_assert_eq!(got, want);
            Ok(())
        },
    );
}

#[test]
fn fuzz_icmp_messages() {
    let bytes = prop::collection::vec(any::<u8>(), 0..1600);
    fuzz("ICMP: any bytes", &bytes, |b| {
        if let Ok(p) = EchoPacket::new_checked(&b[..]) {
            let _ = (p.msg_type(), p.code(), p.ident(), p.seq(), p.payload());
            let _ = (p.tag(), p.checksum_ok(), EchoRepr::parse(&p));
        }
        if let Ok(rest) = strip_ipv4_header(&b) {
            let ihl = usize::from(b[0] & 0x0f) * 4;
            prop_assert_eq!(rest.len(), b.len() - ihl);
        }
        let _ = internet_checksum(&b);
        Ok(())
    });
    let repr = (
        any::<bool>(),
        any::<u16>(),
        any::<u16>(),
        any::<u64>(),
        any::<u64>(),
    );
    fuzz(
        "ICMP: emit then parse",
        &repr,
        |(v4, ident, seq, cookie, probe)| {
            let r = EchoRepr {
                msg_type: if v4 { 8 } else { 128 },
                ident,
                seq,
                cookie,
                probe,
            };
            let mut buf = vec![0u8; EchoRepr::buffer_len()];
            r.emit(&mut buf);
            let p = EchoPacket::new_checked(&buf[..])
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(p.checksum_ok());
            let back = EchoRepr::parse(&p).ok_or_else(|| TestCaseError::fail("no tag"))?;
            prop_assert_eq!(back, r);
            Ok(())
        },
    );
}

#[test]
fn fuzz_netlink_link_messages() {
    // Whatever the kernel (or anything else) sends on the netlink socket:
    // no panic, and never more events than 16-byte headers fit.
    let bytes = prop::collection::vec(any::<u8>(), 0..512);
    fuzz(
        "netlink: any bytes",
        &(bytes, any::<u32>()),
        |(b, ifindex)| {
            let events = crate::sys::netlink::parse_link_messages(&b, ifindex);
            prop_assert!(events.len() <= b.len() / 32);
            Ok(())
        },
    );
}

#[test]
fn fuzz_flow_keys_from_kernel_records() {
    // A key as a record carries it: any bytes (a torn or corrupted record
    // included) must decode without a panic; v4 keys name v4 addresses.
    let key = (
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<u16>(),
        any::<u16>(),
        any::<u8>(),
        any::<u8>(),
    );
    fuzz(
        "flow key: any bytes",
        &key,
        |(src, dst, sport_be, dport_be, proto, ip_version)| {
            let k = FlowKey {
                src,
                dst,
                sport_be,
                dport_be,
                proto,
                ip_version,
                ..FlowKey::default()
            };
            let f = Flow::new(&k, &netmon_common::FlowValue::default());
            prop_assert_eq!(f.src.is_ipv4(), ip_version == IP_V4);
            if ip_version == IP_V6 {
                prop_assert_eq!(f.src, IpAddr::V6(Ipv6Addr::from(src)));
            }
            prop_assert_eq!(
                (f.sport, f.dport),
                (u16::from_be(sport_be), u16::from_be(dport_be))
            );
            Ok(())
        },
    );
}
