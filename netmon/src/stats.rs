//! Pure statistics: flow records from kernel map entries, rates between two
//! counter snapshots, top-N selection. No I/O, no clock.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use netmon_common::{
    Counters, FlowKey, FlowValue, IP_V4, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};

/// Bytes the wire carries per frame beyond what XDP sees: preamble and SFD
/// (8), FCS (4), inter-frame gap (12).
pub const WIRE_OVERHEAD_BYTES: u64 = 24;

/// One flow, decoded for people.
#[derive(Clone, Debug, PartialEq)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub packets: u64,
    pub bytes: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub tcp_flags: u32,
}

impl Flow {
    #[must_use]
    pub fn new(key: &FlowKey, value: &FlowValue) -> Self {
        let addr = |a: [u8; 16]| -> IpAddr {
            if key.ip_version == IP_V4 {
                IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
            } else {
                IpAddr::V6(Ipv6Addr::from(a))
            }
        };
        Flow {
            src: addr(key.src),
            dst: addr(key.dst),
            sport: u16::from_be(key.sport_be),
            dport: u16::from_be(key.dport_be),
            proto: key.proto,
            packets: value.packets,
            bytes: value.bytes,
            first_seen_ns: value.first_seen_ns,
            last_seen_ns: value.last_seen_ns,
            tcp_flags: value.tcp_flags,
        }
    }

    /// Whether the protocol has ports (TCP, UDP).
    #[must_use]
    pub fn has_ports(&self) -> bool {
        matches!(self.proto, PROTO_TCP | PROTO_UDP)
    }
}

/// `tcp`, `udp`, `icmp`, `icmpv6`, or `None` for other protocols (shown by
/// number).
#[must_use]
pub fn proto_name(proto: u8) -> Option<&'static str> {
    match proto {
        PROTO_TCP => Some("tcp"),
        PROTO_UDP => Some("udp"),
        PROTO_ICMP => Some("icmp"),
        PROTO_ICMPV6 => Some("icmpv6"),
        _ => None,
    }
}

/// Traffic during one interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    pub interval_s: f64,
    pub packets: u64,
    pub bytes: u64,
    pub pps: f64,
    /// Bits per second of L2 frames (FCS excluded).
    pub bps: f64,
    /// Share of the link's capacity in percent, wire overhead included;
    /// `None` when the link speed is unknown.
    pub util_pct: Option<f64>,
}

impl Rates {
    /// Rates between two snapshots taken `elapsed` apart on a link of
    /// `link_bps` bits per second (if known).
    #[must_use]
    pub fn between(
        prev: &Counters,
        cur: &Counters,
        elapsed: Duration,
        link_bps: Option<u64>,
    ) -> Self {
        let packets = cur.packets.saturating_sub(prev.packets);
        let bytes = cur.bytes.saturating_sub(prev.bytes);
        let secs = elapsed.as_secs_f64();
        let per_second = |n: f64| if secs > 0.0 { n / secs } else { 0.0 };
        let util_pct = link_bps.filter(|&b| b > 0).map(|link| {
            let wire_bits = (bytes + WIRE_OVERHEAD_BYTES * packets) as f64 * 8.0;
            per_second(wire_bits) / link as f64 * 100.0
        });
        Rates {
            interval_s: secs,
            packets,
            bytes,
            pps: per_second(packets as f64),
            bps: per_second(bytes as f64 * 8.0),
            util_pct,
        }
    }
}

/// Sorts flows by bytes, then packets, both descending (ties broken by the
/// addresses so output is stable), and keeps the first `n`.
pub fn top_by_bytes(flows: &mut Vec<Flow>, n: usize) {
    flows.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(b.packets.cmp(&a.packets))
            .then_with(|| {
                (a.src, a.sport, a.dst, a.dport, a.proto)
                    .cmp(&(b.src, b.sport, b.dst, b.dport, b.proto))
            })
    });
    flows.truncate(n);
}

#[cfg(test)]
mod tests {
    use netmon_common::IP_V6;

    use super::*;

    fn counters(packets: u64, bytes: u64) -> Counters {
        Counters {
            packets,
            bytes,
            ..Counters::default()
        }
    }

    #[test]
    fn rates_over_an_interval() {
        let r = Rates::between(
            &counters(100, 10_000),
            &counters(1100, 110_000),
            Duration::from_secs(2),
            None,
        );
        assert_eq!(r.packets, 1000);
        assert_eq!(r.bytes, 100_000);
        assert!((r.pps - 500.0).abs() < 1e-9);
        assert!((r.bps - 400_000.0).abs() < 1e-9);
        assert_eq!(r.util_pct, None);
    }

    #[test]
    fn utilisation_counts_the_wire_overhead() {
        // 10G line rate of 64-byte frames: 14,880,952 frames/s of 60 bytes
        // (FCS excluded) + 24 bytes overhead = 84 bytes on the wire each.
        let frames = 14_880_952;
        let r = Rates::between(
            &counters(0, 0),
            &counters(frames, frames * 60),
            Duration::from_secs(1),
            Some(10_000_000_000),
        );
        let util = r.util_pct.unwrap();
        assert!((util - 100.0).abs() < 0.001, "{util}");
    }

    #[test]
    fn flows_decode_addresses_and_ports() {
        let mut key = FlowKey {
            ip_version: IP_V4,
            proto: PROTO_UDP,
            sport_be: 40000u16.to_be(),
            dport_be: 9000u16.to_be(),
            ..FlowKey::default()
        };
        key.src[..4].copy_from_slice(&[198, 51, 100, 2]);
        key.dst[..4].copy_from_slice(&[198, 51, 100, 1]);
        let f = Flow::new(&key, &FlowValue::default());
        assert_eq!(f.src.to_string(), "198.51.100.2");
        assert_eq!(f.dst.to_string(), "198.51.100.1");
        assert_eq!((f.sport, f.dport), (40000, 9000));

        let mut key6 = FlowKey {
            ip_version: IP_V6,
            proto: PROTO_ICMPV6,
            ..FlowKey::default()
        };
        key6.src = "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets();
        let f = Flow::new(&key6, &FlowValue::default());
        assert_eq!(f.src.to_string(), "2001:db8::2");
        assert_eq!(proto_name(f.proto), Some("icmpv6"));
        assert_eq!(proto_name(47), None);
    }

    #[test]
    fn top_flows_by_bytes_then_packets() {
        let flow = |bytes, packets, port| Flow {
            src: IpAddr::V4(Ipv4Addr::LOCALHOST),
            dst: IpAddr::V4(Ipv4Addr::LOCALHOST),
            sport: port,
            dport: 1,
            proto: PROTO_UDP,
            packets,
            bytes,
            first_seen_ns: 0,
            last_seen_ns: 0,
            tcp_flags: 0,
        };
        let mut flows = vec![
            flow(10, 1, 1),
            flow(30, 1, 2),
            flow(30, 5, 3),
            flow(20, 1, 4),
        ];
        top_by_bytes(&mut flows, 3);
        let ports: Vec<u16> = flows.iter().map(|f| f.sport).collect();
        assert_eq!(ports, [3, 2, 4]);
    }
}
