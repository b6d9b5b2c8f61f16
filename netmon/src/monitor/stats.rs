//! Pure statistics: flow records from kernel map entries, rates between two
//! counter snapshots, top-N selection, and what the summary keeps of flows
//! that left the table (bounded: the top retired flows and a distinct-flow
//! counter). No I/O, no clock. The values it makes are `report`'s
//! ([`Flow`], [`Rates`], [`IntervalFlows`], [`FlowSummary`]): the sinks
//! render them.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
    time::Duration,
};

use netmon_common::{Counters, FlowKey, FlowValue, IP_V4};

use crate::report::{Flow, FlowSummary, IntervalFlows, Rates};

/// Bytes the wire carries per frame beyond what XDP sees: preamble and SFD
/// (8), FCS (4), inter-frame gap (12).
pub const WIRE_OVERHEAD_BYTES: u64 = 24;

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
/// addresses so output is stable), and keeps the first `n`: the order that
/// the interval and the summary give their top flows in (they select on
/// undecoded flows, see `top_of`; the tests check it against this).
#[cfg(test)]
pub fn top_by_bytes(flows: &mut Vec<Flow>, n: usize) {
    top_by(flows, n, |f| (f.bytes, f.packets));
}

/// Like [`top_by_bytes`], packets first.
#[cfg(test)]
pub fn top_by_packets(flows: &mut Vec<Flow>, n: usize) {
    top_by(flows, n, |f| (f.packets, f.bytes));
}

#[cfg(test)]
fn top_by(flows: &mut Vec<Flow>, n: usize, rank: impl Fn(&Flow) -> (u64, u64)) {
    let order = |a: &Flow, b: &Flow| {
        rank(b).cmp(&rank(a)).then_with(|| {
            (a.src, a.sport, a.dst, a.dport, a.proto)
                .cmp(&(b.src, b.sport, b.dst, b.dport, b.proto))
        })
    };
    // The first n in linear time, then only those sorted.
    if n == 0 {
        flows.clear();
        return;
    }
    if flows.len() > n {
        flows.select_nth_unstable_by(n - 1, order);
        flows.truncate(n);
    }
    flows.sort_by(order);
}

/// The flows of one interval: `in_table` flows in the table, and `changed`, the
/// flows that changed during it with the packets and bytes of the
/// interval (as `FlowTable::take_changes` gives them); with `every`, all
/// of them decoded too. Costs what changed.
#[must_use]
pub fn interval_flows(
    in_table: usize,
    changed: &[(FlowKey, FlowValue)],
    top: usize,
    every: bool,
) -> IntervalFlows {
    let is_active = |f: &&(FlowKey, FlowValue)| f.1.packets > 0;
    let count = changed.iter().filter(is_active).count();
    if !every && top <= count / 16 {
        // A few of many: one pass for both, without a list of them all.
        let mut bytes = Best::new(top, |v| (v.bytes, v.packets));
        let mut packets = Best::new(top, |v| (v.packets, v.bytes));
        for flow in changed.iter().filter(is_active) {
            bytes.offer(flow);
            packets.offer(flow);
        }
        return IntervalFlows {
            in_table,
            active: count,
            every: Vec::new(),
            top_bytes: bytes.flows(),
            top_packets: packets.flows(),
        };
    }
    let mut active: Vec<&(FlowKey, FlowValue)> = changed.iter().filter(is_active).collect();
    IntervalFlows {
        in_table,
        active: active.len(),
        every: if every {
            active.iter().map(|(k, v)| Flow::new(k, v)).collect()
        } else {
            Vec::new()
        },
        top_bytes: top_of(&mut active, top, |v| (v.bytes, v.packets)),
        top_packets: top_of(&mut active, top, |v| (v.packets, v.bytes)),
    }
}

/// The order of [`top_by`] on undecoded flows (see [`top_of`]).
fn flow_order(
    rank: impl Fn(&FlowValue) -> (u64, u64),
) -> impl Fn(&(FlowKey, FlowValue), &(FlowKey, FlowValue)) -> std::cmp::Ordering {
    move |a, b| {
        rank(&b.1)
            .cmp(&rank(&a.1))
            .then_with(|| addresses(&a.0).cmp(&addresses(&b.0)))
    }
}

/// The first `n` of `items` in the order of [`top_of`], for a few of many
/// (the top 10 of a million changed flows): one pass in memory order,
/// keeping the best `n` so far, best first. A selection in place instead
/// moves pointers around and then follows them all over memory (`cargo
/// xtask bench flows`: a quarter of netmon's time at a million flows an
/// interval).
fn best_of<'a>(
    items: impl Iterator<Item = &'a (FlowKey, FlowValue)>,
    n: usize,
    rank: impl Fn(&FlowValue) -> (u64, u64),
) -> Vec<Flow> {
    let mut best = Best::new(n, rank);
    for item in items {
        best.offer(item);
    }
    best.flows()
}

/// The best `n` flows offered so far in the order of [`top_of`], best
/// first (see [`best_of`]).
struct Best<'a, R> {
    n: usize,
    rank: R,
    kept: Vec<&'a (FlowKey, FlowValue)>,
}

impl<'a, R: Fn(&FlowValue) -> (u64, u64)> Best<'a, R> {
    fn new(n: usize, rank: R) -> Self {
        Best {
            n,
            rank,
            kept: Vec::with_capacity(n + 1),
        }
    }

    fn offer(&mut self, item: &'a (FlowKey, FlowValue)) {
        if self.n == 0 {
            return;
        }
        let order = |a: &(FlowKey, FlowValue), b: &(FlowKey, FlowValue)| {
            // The rank alone first: most flows fall behind the n-th on it.
            (self.rank)(&b.1)
                .cmp(&(self.rank)(&a.1))
                .then_with(|| addresses(&a.0).cmp(&addresses(&b.0)))
        };
        if self.kept.len() == self.n {
            if order(item, self.kept[self.n - 1]).is_ge() {
                return;
            }
            self.kept.pop();
        }
        let at = self.kept.partition_point(|b| order(b, item).is_lt());
        self.kept.insert(at, item);
    }

    fn flows(&self) -> Vec<Flow> {
        self.kept.iter().map(|(k, v)| Flow::new(k, v)).collect()
    }
}

/// What [`top_of`] orders flows of equal rank by: IPv4 before IPv6, then
/// the addresses and ports as [`Flow`] compares them (an address's bytes
/// in order: as one big-endian number, compared in one go).
fn addresses(k: &FlowKey) -> (bool, u128, u16, u128, u16, u8) {
    (
        k.ip_version != IP_V4,
        u128::from_be_bytes(k.src),
        u16::from_be(k.sport_be),
        u128::from_be_bytes(k.dst),
        u16::from_be(k.dport_be),
        k.proto,
    )
}

/// The order of [`top_by`] on undecoded flows: `rank` descending, then the
/// addresses and ports as [`Flow`] compares them (IPv4 before IPv6, then
/// the address bytes, then the port in host order).
fn top_of(
    items: &mut [&(FlowKey, FlowValue)],
    n: usize,
    rank: impl Fn(&FlowValue) -> (u64, u64) + Copy,
) -> Vec<Flow> {
    if n == 0 {
        return Vec::new();
    }
    let n = n.min(items.len());
    if n <= items.len() / 16 {
        return best_of(items.iter().copied(), n, rank);
    }
    let flow_order = flow_order(rank);
    let order = |a: &&(FlowKey, FlowValue), b: &&(FlowKey, FlowValue)| flow_order(a, b);
    if items.len() > n {
        items.select_nth_unstable_by(n - 1, order);
    }
    let first = &mut items[..n];
    first.sort_by(order);
    first.iter().map(|(k, v)| Flow::new(k, v)).collect()
}

/// What the summary needs of flows across the run, in memory that does not
/// grow with the number of flows the run has seen: the biggest flows among
/// those removed from the table as idle
/// ([`RetiredTop`]), and a count of distinct flows ([`DistinctFlows`]).
#[derive(Debug)]
pub struct FlowTracker {
    retired: RetiredTop,
    distinct: DistinctFlows,
}

/// Retired flows the summary keeps at least ([`FlowTracker::new`] keeps
/// `max(--top, RETIRED_KEEP)`): about 200 bytes each.
pub const RETIRED_KEEP: usize = 4096;

impl FlowTracker {
    /// Keeps the `keep` biggest retired flows (at least `top`, the flows the
    /// summary shows).
    #[must_use]
    pub fn new(keep: usize) -> Self {
        FlowTracker {
            retired: RetiredTop::new(keep),
            distinct: DistinctFlows::default(),
        }
    }

    /// Records the final value of a flow removed from the flow table.
    pub fn retire(&mut self, key: FlowKey, value: &FlowValue) {
        self.distinct.insert(&key);
        self.retired.add(key, value);
    }

    /// The end of the run: every flow of the final table (`table`), merged
    /// with the retired flows still kept (a flow retired and seen again is
    /// one flow with both counts), and the top `top` of them by bytes.
    pub fn summary(&mut self, table: &[(FlowKey, FlowValue)], top: usize) -> FlowSummary {
        // Flows of the table that were retired before, with both counts,
        // and the retired flows not in the table: at most K. The others are
        // ranked where they are (a reference each, no copy of the table).
        let mut retired: HashMap<FlowKey, FlowValue> = self.retired.iter().collect();
        let mut merged = Vec::with_capacity(retired.len());
        let mut items: Vec<&(FlowKey, FlowValue)> = Vec::with_capacity(table.len());
        for flow in table {
            self.distinct.insert(&flow.0);
            if let Some(mut v) = retired.remove(&flow.0) {
                v.merge(&flow.1);
                merged.push((flow.0, v));
            } else {
                items.push(flow);
            }
        }
        merged.extend(retired);
        items.extend(merged.iter());
        let flows = top_of(&mut items, top, |v| (v.bytes, v.packets));
        FlowSummary {
            top: flows,
            tracked: self.distinct.count(),
            tracked_exact: self.distinct.is_exact(),
            retired_kept: self.retired.keep,
            retired_dropped: self.retired.dropped,
            retired_dropped_max_bytes: self.retired.dropped_max_bytes,
        }
    }
}

/// The `keep` biggest retired flows by bytes. A flow retired again while
/// kept adds to its entry; when more than `keep` are held, the one with the
/// fewest bytes (then packets) is dropped. So the smallest kept entry never
/// shrinks, and every dropped record had at most as many bytes as the
/// smallest entry kept at the time.
#[derive(Debug)]
pub struct RetiredTop {
    keep: usize,
    flows: HashMap<FlowKey, FlowValue>,
    /// (bytes, packets, key words) of every entry, smallest first.
    order: BTreeSet<(u64, u64, [u64; 5])>,
    dropped: u64,
    dropped_max_bytes: u64,
}

impl RetiredTop {
    #[must_use]
    pub fn new(keep: usize) -> Self {
        RetiredTop {
            keep,
            flows: HashMap::new(),
            order: BTreeSet::new(),
            dropped: 0,
            dropped_max_bytes: 0,
        }
    }

    fn rank(key: &FlowKey, v: &FlowValue) -> (u64, u64, [u64; 5]) {
        (v.bytes, v.packets, *key.words())
    }

    pub fn add(&mut self, key: FlowKey, value: &FlowValue) {
        let mut value = *value;
        if let Some(held) = self.flows.get(&key) {
            self.order.remove(&Self::rank(&key, held));
            value = {
                let mut v = *held;
                v.merge(&value);
                v
            };
        }
        self.flows.insert(key, value);
        self.order.insert(Self::rank(&key, &value));
        while self.flows.len() > self.keep {
            let (bytes, _, words) = self.order.pop_first().expect("not empty");
            self.flows.remove(&FlowKey::from_words(words));
            self.dropped += 1;
            self.dropped_max_bytes = self.dropped_max_bytes.max(bytes);
        }
    }

    /// The entries kept.
    pub fn iter(&self) -> impl Iterator<Item = (FlowKey, FlowValue)> + '_ {
        self.flows.iter().map(|(k, v)| (*k, *v))
    }
}

/// Distinct flow keys seen, in bounded memory: exact up to
/// [`DISTINCT_EXACT_UP_TO`] keys (a set of 64-bit hashes of the keys: two
/// keys collide with probability about n²/2⁶⁵, below 10⁻¹¹ there), beyond
/// that a HyperLogLog estimate ([`HyperLogLog`], 2^16 registers: relative
/// standard error 0.41%).
#[derive(Debug)]
pub struct DistinctFlows {
    /// `None` once more than [`DISTINCT_EXACT_UP_TO`] keys came.
    exact: Option<HashSet<u64>>,
    sketch: HyperLogLog,
}

/// Keys [`DistinctFlows`] counts exactly (its set holds at most this many
/// hashes, about 300 KiB).
pub const DISTINCT_EXACT_UP_TO: usize = 16_384;

impl Default for DistinctFlows {
    fn default() -> Self {
        DistinctFlows {
            exact: Some(HashSet::new()),
            sketch: HyperLogLog::new(),
        }
    }
}

impl DistinctFlows {
    pub fn insert(&mut self, key: &FlowKey) {
        // SipHash-1-3 with fixed keys: well mixed, and the same every run.
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let hash = h.finish();
        self.sketch.insert_hash(hash);
        if let Some(set) = &mut self.exact {
            set.insert(hash);
            if set.len() > DISTINCT_EXACT_UP_TO {
                self.exact = None;
            }
        }
    }

    #[must_use]
    pub fn count(&self) -> u64 {
        match &self.exact {
            Some(set) => set.len() as u64,
            None => self.sketch.estimate().round() as u64,
        }
    }

    #[must_use]
    pub fn is_exact(&self) -> bool {
        self.exact.is_some()
    }
}

/// A HyperLogLog sketch of 64-bit hashes with 2^[`HLL_P`] one-byte
/// registers (64 KiB), estimated with Ertl's improved raw estimator
/// ("New cardinality estimation algorithms for HyperLogLog sketches",
/// 2017, algorithm 6), which needs no bias tables and holds its relative
/// standard error of 1.04/√m = 0.41% from a handful of items up.
#[derive(Clone, Debug)]
pub struct HyperLogLog {
    registers: Vec<u8>,
}

/// Index bits of [`HyperLogLog`]: 2^16 registers.
pub const HLL_P: u32 = 16;

impl Default for HyperLogLog {
    fn default() -> Self {
        Self::new()
    }
}

impl HyperLogLog {
    #[must_use]
    pub fn new() -> Self {
        HyperLogLog {
            registers: vec![0; 1 << HLL_P],
        }
    }

    /// Adds an item by its 64-bit hash (uniformly distributed).
    pub fn insert_hash(&mut self, hash: u64) {
        let index = (hash >> (64 - HLL_P)) as usize;
        // The remaining 50 bits: rank = position of the first 1 (1-based),
        // 51 when they are all 0.
        let rest = hash << HLL_P;
        let rank = (rest.leading_zeros() + 1).min(64 - HLL_P + 1) as u8;
        let r = &mut self.registers[index];
        *r = (*r).max(rank);
    }

    /// The estimated number of distinct items.
    #[must_use]
    pub fn estimate(&self) -> f64 {
        let q = (64 - HLL_P) as usize;
        let m = self.registers.len() as f64;
        let mut counts = vec![0u32; q + 2];
        for &r in &self.registers {
            counts[usize::from(r)] += 1;
        }
        let mut z = m * hll_tau(1.0 - f64::from(counts[q + 1]) / m);
        for k in (1..=q).rev() {
            z = 0.5 * (z + f64::from(counts[k]));
        }
        z += m * hll_sigma(f64::from(counts[0]) / m);
        let alpha_inf = 1.0 / (2.0 * std::f64::consts::LN_2);
        alpha_inf * m * m / z
    }
}

fn hll_sigma(mut x: f64) -> f64 {
    if x >= 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if z.to_bits() == before.to_bits() {
            return z;
        }
    }
}

fn hll_tau(mut x: f64) -> f64 {
    if x <= 0.0 || x >= 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z.to_bits() == before.to_bits() {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use netmon_common::{IP_V6, PROTO_ICMPV6, PROTO_UDP};

    use super::*;
    use crate::report::proto_name;

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
            direction: 0,
            packets,
            bytes,
            first_seen_ns: 0,
            last_seen_ns: 0,
            tcp_flags: 0,
            rtt: None,
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
        let i = interval_flows(
            2,
            &[(key(1), value(10, 1, 5)), (key(2), value(3, 2, 6))],
            10,
            false,
        );
        assert_eq!((i.in_table, i.active), (2, 2));
        assert!(i.every.is_empty(), "only when asked");
        assert_eq!(i.top_bytes[0].sport, 1);
        assert_eq!(i.top_bytes[0].packets, 10);
        // Flow 1 grows by 1, flow 2 by 5: flow 2 leads this interval.
        let i = interval_flows(
            2,
            &[(key(1), value(1, 1, 7)), (key(2), value(5, 2, 8))],
            10,
            true,
        );
        assert_eq!(i.active, 2);
        let mut every: Vec<(u16, u64)> = i.every.iter().map(|f| (f.sport, f.packets)).collect();
        every.sort_unstable();
        assert_eq!(every, [(1, 1), (2, 5)]);
        assert_eq!(i.top_packets[0].sport, 2);
        assert_eq!(i.top_packets[0].packets, 5);
        assert_eq!(i.top_bytes[1].bytes, 100);
        // Nothing new: no active flows.
        let i = interval_flows(2, &[], 10, true);
        assert_eq!((i.in_table, i.active), (2, 0));
        assert!(i.top_bytes.is_empty());
    }

    #[test]
    fn retired_flows_keep_their_counts() {
        let mut t = FlowTracker::new(10);
        t.retire(key(1), &value(10, 100, 200));
        // Flow 1 came back: 4 packets in the final table.
        let s = t.summary(
            &[(key(1), value(4, 2000, 2100)), (key(2), value(3, 150, 900))],
            10,
        );
        let mut all = s.top;
        top_by_packets(&mut all, 10);
        assert_eq!(all[0].packets, 14);
        assert_eq!((all[0].first_seen_ns, all[0].last_seen_ns), (100, 2100));
        assert_eq!(all[1].packets, 3);
        assert_eq!((s.tracked, s.tracked_exact), (2, true));
        assert_eq!(s.retired_dropped, 0);
    }

    #[test]
    fn summary_top_matches_the_top_of_merged_flows() {
        let mut t = FlowTracker::new(50);
        // Retired: ports 0-99 (half of them dropped), 1-4 packets each.
        for port in 0..100u16 {
            t.retire(key(port), &value(1 + u64::from(port % 4), 0, 1));
        }
        let kept: HashMap<FlowKey, FlowValue> = t.retired.iter().collect();
        // In the table: ports 50-149, many of them also retired and kept.
        let table: Vec<(FlowKey, FlowValue)> = (50..150u16)
            .map(|port| (key(port), value(u64::from(port % 3), 0, 2)))
            .collect();
        let mut want: HashMap<FlowKey, FlowValue> = kept.clone();
        for (k, v) in &table {
            want.entry(*k).and_modify(|w| w.merge(v)).or_insert(*v);
        }
        let mut want: Vec<Flow> = want.iter().map(|(k, v)| Flow::new(k, v)).collect();
        top_by_bytes(&mut want, 30);
        let s = t.summary(&table, 30);
        assert_eq!(s.top, want);
        assert_eq!((s.tracked, s.tracked_exact), (150, true));
        assert_eq!(s.retired_dropped, 50);
    }

    #[test]
    fn top_selection_matches_a_full_sort() {
        let flows: Vec<Flow> = (0..1000u64)
            .map(|i| {
                // Many ties, so the address order decides.
                let v = value(1 + (i * 7919) % 13, 0, 0);
                Flow::new(&key((i * 31 % 1000) as u16), &v)
            })
            .collect();
        for n in [0, 1, 5, 999, 1000, 2000] {
            let mut full = flows.clone();
            full.sort_by(|a, b| {
                (b.bytes, b.packets)
                    .cmp(&(a.bytes, a.packets))
                    .then_with(|| (a.src, a.sport).cmp(&(b.src, b.sport)))
            });
            full.truncate(n);
            let mut top = flows.clone();
            top_by_bytes(&mut top, n);
            assert_eq!(top, full, "n = {n}");
        }
    }

    #[test]
    fn interval_top_matches_the_top_of_decoded_flows() {
        let mut changed = Vec::new();
        for i in 0..600u16 {
            let mut k = key(i % 7);
            // IPv4 and IPv6, many ties in bytes and packets.
            if i % 3 == 0 {
                k.ip_version = IP_V6;
                k.src = [
                    0x20,
                    0x01,
                    0x0d,
                    0xb8,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    (i % 5) as u8,
                ];
            } else {
                k.src[..4].copy_from_slice(&[198, 51, 100, (i % 11) as u8]);
            }
            k.dst[3] = (i / 7 % 4) as u8;
            k.dport_be = (i / 77).to_be();
            let p = u64::from(i % 4) * 3 % 5;
            changed.push((k, value(p, 0, 0)));
        }
        changed.sort_by_key(|(k, _)| *k.words());
        changed.dedup_by_key(|(k, _)| *k.words());
        let all: Vec<Flow> = changed
            .iter()
            .filter(|(_, v)| v.packets > 0)
            .map(|(k, v)| Flow::new(k, v))
            .collect();
        // n = 1, 3, 10: the single pass for a few of many; 100, 1000: the
        // selection.
        assert!(all.len() >= 160 && all.len() < 1600, "{}", all.len());
        for n in [0, 1, 3, 10, 100, 1000] {
            let i = interval_flows(0, &changed, n, false);
            let mut want = all.clone();
            top_by_bytes(&mut want, n);
            assert_eq!(i.top_bytes, want, "bytes, n = {n}");
            let mut want = all.clone();
            top_by_packets(&mut want, n);
            assert_eq!(i.top_packets, want, "packets, n = {n}");
            assert_eq!(i.active, all.len());
        }
    }

    #[test]
    fn retired_top_keeps_the_biggest_and_merges_returning_flows() {
        let mut r = RetiredTop::new(3);
        r.add(key(1), &value(10, 100, 200));
        r.add(key(2), &value(2, 100, 200));
        r.add(key(3), &value(5, 100, 200));
        // Flow 2 retires again while kept: one entry with both.
        r.add(key(2), &value(4, 300, 400));
        let held = |r: &RetiredTop| {
            let mut v: Vec<(u16, u64)> = r
                .iter()
                .map(|(k, v)| (u16::from_be(k.sport_be), v.packets))
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(held(&r), [(1, 10), (2, 6), (3, 5)]);
        // A bigger one pushes out the smallest (flow 3, 500 bytes)...
        r.add(key(4), &value(7, 100, 200));
        assert_eq!(held(&r), [(1, 10), (2, 6), (4, 7)]);
        // ...and a smaller one does not get in.
        r.add(key(5), &value(1, 100, 200));
        assert_eq!(held(&r), [(1, 10), (2, 6), (4, 7)]);
        assert_eq!((r.dropped, r.dropped_max_bytes), (2, 500));
        assert_eq!(r.order.len(), 3);
    }

    #[test]
    fn summary_memory_does_not_grow_with_flows_ever_seen() {
        let mut t = FlowTracker::new(100);
        for i in 0..200_000u64 {
            let mut k = key((i % 65_536) as u16);
            k.dst[..4].copy_from_slice(&((i / 65_536) as u32).to_be_bytes());
            t.retire(k, &value(1 + i % 1000, 0, 1));
        }
        assert_eq!(t.retired.flows.len(), 100);
        assert!(t.distinct.exact.is_none());
        let s = t.summary(&[], 10);
        assert!(!s.tracked_exact);
        let err = (s.tracked as f64 - 200_000.0).abs() / 200_000.0;
        assert!(err < 0.03, "{} ({err})", s.tracked);
        // The top 10 are flows of 1000 packets, each retired once.
        assert!(s.top.iter().all(|f| f.packets == 1000), "{:?}", s.top);
        assert_eq!(s.retired_dropped, 200_000 - 100);
    }

    #[test]
    fn distinct_flows_are_exact_up_to_the_limit() {
        let mut d = DistinctFlows::default();
        for round in 0..2 {
            for port in 0..1000u16 {
                d.insert(&key(port));
            }
            assert_eq!((d.count(), d.is_exact()), (1000, true), "round {round}");
        }
        for i in 0..=DISTINCT_EXACT_UP_TO as u32 {
            let mut k = key(7);
            k.src[..4].copy_from_slice(&i.to_be_bytes());
            d.insert(&k);
        }
        assert!(!d.is_exact());
    }

    /// SplitMix64: distinct, well-mixed 64-bit values for the sketch.
    fn splitmix(mut x: u64) -> u64 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    #[test]
    fn hyperloglog_estimates_within_its_error() {
        assert!(HyperLogLog::new().estimate().abs() < 1e-9, "empty");
        // Standard error 0.41%: 2% is about 5 sigma; small counts do better.
        let mut h = HyperLogLog::new();
        let mut n = 0u64;
        for target in [1u64, 10, 100, 1_000, 10_000, 40_000, 100_000, 1_000_000] {
            while n < target {
                h.insert_hash(splitmix(n));
                n += 1;
            }
            let est = h.estimate();
            let err = (est - n as f64).abs() / n as f64;
            assert!(err < 0.02, "n = {n}: estimate {est} ({err})");
        }
        // Repeats change nothing.
        let before = h.estimate();
        for i in 0..1000 {
            h.insert_hash(splitmix(i));
        }
        assert!((h.estimate() - before).abs() < 1e-9);
    }
}
