//! Pure statistics: flow records from kernel map entries, rates between two
//! counter snapshots, top-N selection. No I/O, no clock.

use std::{
    collections::HashMap,
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
    top_by(flows, n, |f| (f.bytes, f.packets));
}

/// Like [`top_by_bytes`], packets first.
pub fn top_by_packets(flows: &mut Vec<Flow>, n: usize) {
    top_by(flows, n, |f| (f.packets, f.bytes));
}

fn top_by(flows: &mut Vec<Flow>, n: usize, rank: impl Fn(&Flow) -> (u64, u64)) {
    flows.sort_by(|a, b| {
        rank(b).cmp(&rank(a)).then_with(|| {
            (a.src, a.sport, a.dst, a.dport, a.proto)
                .cmp(&(b.src, b.sport, b.dst, b.dport, b.proto))
        })
    });
    flows.truncate(n);
}

/// The flows of one interval.
#[derive(Debug, Default)]
pub struct IntervalFlows {
    /// Flows in the flow table at the end of the interval.
    pub in_table: usize,
    /// Flows that carried packets during the interval.
    pub active: usize,
    /// Top flows by bytes and by packets, counting this interval's traffic
    /// only.
    pub top_bytes: Vec<Flow>,
    pub top_packets: Vec<Flow>,
}

/// Flow bookkeeping across intervals: per-flow deltas between snapshots of
/// the flow table, and the final counts of flows userspace removed from
/// it (idle), so the summary still includes them.
#[derive(Debug, Default)]
pub struct FlowTracker {
    last: HashMap<FlowKey, FlowValue>,
    retired: HashMap<FlowKey, FlowValue>,
}

impl FlowTracker {
    /// Takes a new snapshot of the flow table; returns what happened
    /// since the previous one.
    pub fn interval(&mut self, snapshot: Vec<(FlowKey, FlowValue)>, top: usize) -> IntervalFlows {
        let mut deltas = Vec::new();
        for (key, value) in &snapshot {
            let (p0, b0) = self.last.get(key).map_or((0, 0), |v| (v.packets, v.bytes));
            let packets = value.packets.saturating_sub(p0);
            if packets > 0 {
                let delta = FlowValue {
                    packets,
                    bytes: value.bytes.saturating_sub(b0),
                    ..*value
                };
                deltas.push(Flow::new(key, &delta));
            }
        }
        let in_table = snapshot.len();
        self.last = snapshot.into_iter().collect();
        let active = deltas.len();
        let mut top_packets = deltas.clone();
        top_by_bytes(&mut deltas, top);
        top_by_packets(&mut top_packets, top);
        IntervalFlows {
            in_table,
            active,
            top_bytes: deltas,
            top_packets,
        }
    }

    /// Flows of the last snapshot whose last packet is at least `idle_ns`
    /// older than `now_ns` (both kernel monotonic time).
    pub fn idle(&self, now_ns: u64, idle_ns: u64) -> Vec<FlowKey> {
        self.last
            .iter()
            .filter(|(_, v)| now_ns.saturating_sub(v.last_seen_ns) >= idle_ns)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Records the final value of a flow removed from the flow table.
    pub fn retire(&mut self, key: FlowKey, value: &FlowValue) {
        self.last.remove(&key);
        self.retired
            .entry(key)
            .and_modify(|v| v.merge(value))
            .or_insert(*value);
    }

    /// Every flow of the run: the final kernel snapshot plus retired flows
    /// (a flow retired and seen again is one flow with both counts).
    pub fn all(&self, snapshot: &[(FlowKey, FlowValue)]) -> Vec<Flow> {
        let mut merged = self.retired.clone();
        for (key, value) in snapshot {
            merged
                .entry(*key)
                .and_modify(|v| v.merge(value))
                .or_insert(*value);
        }
        merged.iter().map(|(k, v)| Flow::new(k, v)).collect()
    }
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

    fn key(port: u16) -> FlowKey {
        FlowKey {
            ip_version: IP_V4,
            proto: PROTO_UDP,
            sport_be: port.to_be(),
            ..FlowKey::default()
        }
    }

    fn value(packets: u64, first: u64, last: u64) -> FlowValue {
        FlowValue {
            packets,
            bytes: packets * 100,
            first_seen_ns: first,
            last_seen_ns: last,
            ..FlowValue::default()
        }
    }

    #[test]
    fn tracker_reports_per_interval_deltas() {
        let mut t = FlowTracker::default();
        let i = t.interval(
            vec![(key(1), value(10, 1, 5)), (key(2), value(3, 2, 6))],
            10,
        );
        assert_eq!((i.in_table, i.active), (2, 2));
        assert_eq!(i.top_bytes[0].sport, 1);
        assert_eq!(i.top_bytes[0].packets, 10);
        // Flow 1 grows by 1, flow 2 by 5: flow 2 leads this interval.
        let i = t.interval(
            vec![(key(1), value(11, 1, 7)), (key(2), value(8, 2, 8))],
            10,
        );
        assert_eq!(i.active, 2);
        assert_eq!(i.top_packets[0].sport, 2);
        assert_eq!(i.top_packets[0].packets, 5);
        assert_eq!(i.top_bytes[1].bytes, 100);
        // Nothing new: no active flows.
        let i = t.interval(
            vec![(key(1), value(11, 1, 7)), (key(2), value(8, 2, 8))],
            10,
        );
        assert_eq!((i.in_table, i.active), (2, 0));
        assert!(i.top_bytes.is_empty());
    }

    #[test]
    fn retired_flows_keep_their_counts() {
        let mut t = FlowTracker::default();
        t.interval(
            vec![(key(1), value(10, 100, 200)), (key(2), value(3, 150, 900))],
            10,
        );
        let idle = t.idle(1000, 500);
        assert_eq!(idle, vec![key(1)], "only flow 1 is 800 ns idle");
        t.retire(key(1), &value(10, 100, 200));
        // Flow 1 comes back: a new kernel entry with 4 packets.
        let i = t.interval(
            vec![(key(1), value(4, 2000, 2100)), (key(2), value(3, 150, 900))],
            10,
        );
        assert_eq!(i.active, 1);
        assert_eq!(
            i.top_bytes[0].packets, 4,
            "a re-created flow's first interval counts all of it"
        );
        let mut all = t.all(&[(key(1), value(4, 2000, 2100)), (key(2), value(3, 150, 900))]);
        top_by_packets(&mut all, 10);
        assert_eq!(all[0].packets, 14);
        assert_eq!((all[0].first_seen_ns, all[0].last_seen_ns), (100, 2100));
        assert_eq!(all[1].packets, 3);
    }
}
