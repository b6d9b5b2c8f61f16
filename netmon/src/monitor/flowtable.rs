//! The flow table: the kernel keeps each CPU's recent flows in a small
//! direct-mapped cache (see `FlowSlot` in netmon-common) and pushes a flow
//! out, with its final counts, when another flow needs its slot. This module
//! merges those pieces into one table of flows, the same whatever the cache
//! did.
//!
//! Every stay of a flow in a slot is an *occupancy*, named by its CPU and a
//! per-CPU sequence number. Userspace sees an occupancy several times: in
//! reads of the slots and of the pending evictions (counts so far), and at
//! most once in the ring (final counts). A flow's total is the sum over its
//! occupancies of the latest count seen of each; so the table keeps the last
//! count it saw of every occupancy still in the kernel, and adds only what
//! each new sighting adds to it. The final record ends an occupancy: no read
//! after it can show it again (the kernel sends the record only after the
//! slot and the pending entry have moved on), so it is forgotten.
//!
//! Two things make the per-interval work proportional to what changed, not
//! to the size of the table: the table remembers which flows changed since
//! the interval last took them ([`FlowTable::take_changes`]), and it files
//! every flow under the time it may go idle, in coarse buckets of a timing
//! wheel, so looking for idle flows ([`FlowTable::expire`]) only opens the
//! buckets that are due. A flow that was active since it was filed is filed
//! again under its new deadline when its bucket comes up (at most once per
//! idle timeout per flow), so activity itself costs nothing here.

use std::collections::{BTreeMap, HashMap, HashSet};

use netmon_common::{FlowKey, FlowValue};

pub use crate::sys::Occupancy;

/// A flow in the table (48 bytes: the table's size is mostly these and
/// the keys).
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Totals since the flow entered the table.
    value: FlowValue,
    /// Names the flow's current filing in the wheel; older filings of the
    /// same key are stale. (Wrapping: a stale filing that matches after
    /// 2^32 filings only makes `expire` look at the flow once more.)
    stamp: u32,
    /// In `dirty` since the last `take_changes`.
    dirty: bool,
}

/// A flow on the change list, with its packets and bytes when it first
/// changed since the last `take_changes` (what had been handed out).
#[derive(Clone, Copy, Debug)]
struct Changed {
    key: FlowKey,
    packets: u64,
    bytes: u64,
    ip_bytes: u64,
}

/// Buckets of the idle wheel per idle timeout: a bucket spans
/// `idle_ns / WHEEL_BUCKETS` (1 ms at least), so at most about this many
/// buckets (plus one per overdue interval) hold flows at any time.
const WHEEL_BUCKETS: u64 = 64;

#[derive(Debug)]
pub struct FlowTable {
    /// Flows tracked at most (`--max-flows`).
    max_flows: usize,
    /// Flows silent this long are due for removal ([`Self::expire`]).
    idle_ns: u64,
    /// Width of a wheel bucket in ns.
    bucket_ns: u64,
    /// Last sighting of every occupancy still in the kernel.
    live: HashMap<(u32, u64), (FlowKey, FlowValue)>,
    /// Occupancies whose final record came in this round and the one
    /// before: later sightings of them are stale.
    ended_now: HashSet<(u32, u64)>,
    ended_before: HashSet<(u32, u64)>,
    /// The flows.
    flows: HashMap<FlowKey, Entry>,
    /// Flows changed since the last `take_changes`, oldest first. A flow
    /// removed and back in the table is here once more; only its latest
    /// mention holds.
    dirty: Vec<Changed>,
    /// The idle wheel: bucket (deadline / `bucket_ns`) -> flows filed there,
    /// with the stamp of their filing. Every flow in the table is filed
    /// once, under a deadline no later than its real one.
    wheel: BTreeMap<u64, Vec<(FlowKey, u32)>>,
    next_stamp: u32,
    /// Packets and bytes of flows the full table could not take.
    untracked_packets: u64,
    untracked_bytes: u64,
    /// Set the first time the table was full.
    overflowed: bool,
}

impl FlowTable {
    /// A table of at most `max_flows` flows, which [`Self::expire`] removes
    /// once they have been silent for `idle_ns`.
    pub fn new(max_flows: usize, idle_ns: u64) -> Self {
        FlowTable {
            max_flows,
            idle_ns,
            bucket_ns: (idle_ns / WHEEL_BUCKETS).max(1_000_000),
            live: HashMap::new(),
            ended_now: HashSet::new(),
            ended_before: HashSet::new(),
            // Room for twice the flows it may hold, allocated now: a hash map
            // that turns its entries over while more than half full
            // eventually fills with tombstones and doubles once (the RSS
            // step of the ten-minute soak in BENCHMARKS.md); at half full or
            // less it rehashes in place. Pages are touched as flows arrive.
            flows: HashMap::with_capacity(max_flows.saturating_mul(2)),
            dirty: Vec::new(),
            wheel: BTreeMap::new(),
            next_stamp: 0,
            untracked_packets: 0,
            untracked_bytes: 0,
            overflowed: false,
        }
    }

    /// Starts a round of reads (slots, pending, then the ring). Occupancies
    /// that ended two rounds ago are forgotten for good.
    pub fn new_round(&mut self) {
        self.ended_before = std::mem::take(&mut self.ended_now);
    }

    /// A sighting of an occupancy in a slot or among the pending evictions.
    pub fn seen(&mut self, o: &Occupancy) {
        let id = (o.cpu, o.seq);
        // A stale copy of an occupancy whose final record is in: on CPUs
        // that reorder stores, a pending entry can show its old occupant
        // for a moment after the batch went out.
        if self.ended_now.contains(&id) || self.ended_before.contains(&id) {
            return;
        }
        match self.live.insert(id, (o.key, o.value)) {
            None => self.add(&o.key, &o.value),
            // Counts only grow within an occupancy: add what came since.
            Some((key, last))
                if key == o.key
                    && o.value.packets >= last.packets
                    && o.value.bytes >= last.bytes =>
            {
                self.add(
                    &o.key,
                    &FlowValue {
                        packets: o.value.packets - last.packets,
                        bytes: o.value.bytes - last.bytes,
                        ip_bytes: o.value.ip_bytes.saturating_sub(last.ip_bytes),
                        ..o.value
                    },
                );
            }
            // Otherwise the earlier copy was torn (possible only on CPUs
            // that reorder stores): in its counts, or across a change of
            // occupant so that it named another flow. The latest copy
            // counts: take the earlier one back and add this one.
            Some((key, last)) => {
                self.take_back(&key, &last);
                self.add(&o.key, &o.value);
            }
        }
    }

    /// The final record of an occupancy, from the ring.
    pub fn ended(&mut self, o: &Occupancy) {
        self.seen(o);
        let id = (o.cpu, o.seq);
        self.live.remove(&id);
        self.ended_now.insert(id);
    }

    /// Takes back packets and bytes an earlier, torn copy added to `key`.
    fn take_back(&mut self, key: &FlowKey, counts: &FlowValue) {
        let (packets, bytes) = (counts.packets, counts.bytes);
        if let Some(e) = self.flows.get_mut(key) {
            Self::mark(&mut self.dirty, key, e);
            e.value.packets = e.value.packets.saturating_sub(packets);
            e.value.bytes = e.value.bytes.saturating_sub(bytes);
            e.value.ip_bytes = e.value.ip_bytes.saturating_sub(counts.ip_bytes);
            if e.value.packets == 0 {
                // Its wheel filing and its `dirty` mention go stale.
                self.flows.remove(key);
            }
        } else {
            self.untracked_packets = self.untracked_packets.saturating_sub(packets);
            self.untracked_bytes = self.untracked_bytes.saturating_sub(bytes);
        }
    }

    /// Puts a flow on the change list, before it changes.
    fn mark(dirty: &mut Vec<Changed>, key: &FlowKey, e: &mut Entry) {
        if !e.dirty {
            e.dirty = true;
            dirty.push(Changed {
                key: *key,
                packets: e.value.packets,
                bytes: e.value.bytes,
                ip_bytes: e.value.ip_bytes,
            });
        }
    }

    fn add(&mut self, key: &FlowKey, delta: &FlowValue) {
        if delta.packets == 0 && delta.bytes == 0 {
            return;
        }
        if let Some(e) = self.flows.get_mut(key) {
            Self::mark(&mut self.dirty, key, e);
            e.value.merge(delta);
        } else if self.flows.len() < self.max_flows {
            let stamp = self.file(*key, delta.last_seen_ns);
            self.flows.insert(
                *key,
                Entry {
                    value: *delta,
                    stamp,
                    dirty: true,
                },
            );
            self.dirty.push(Changed {
                key: *key,
                packets: 0,
                bytes: 0,
                ip_bytes: 0,
            });
        } else {
            self.untracked_packets += delta.packets;
            self.untracked_bytes += delta.bytes;
            if !self.overflowed {
                self.overflowed = true;
                log::warn!(
                    "flow table full ({} flows, --max-flows): packets of further flows are \
                     counted in the totals only",
                    self.max_flows
                );
            }
        }
    }

    /// Files `key`, last seen at `last_seen_ns`, in the wheel bucket of its
    /// deadline; returns the stamp of the filing.
    fn file(&mut self, key: FlowKey, last_seen_ns: u64) -> u32 {
        let stamp = self.next_stamp;
        self.next_stamp = self.next_stamp.wrapping_add(1);
        let bucket = last_seen_ns.saturating_add(self.idle_ns) / self.bucket_ns;
        self.wheel.entry(bucket).or_default().push((key, stamp));
        stamp
    }

    /// Appends every flow that carried packets since the last call, with
    /// the packets and bytes it carried since then (the rest of the value:
    /// first and last packet, flags, as in its totals). Costs what changed,
    /// not the size of the table.
    pub fn take_changes(&mut self, out: &mut Vec<(FlowKey, FlowValue)>) {
        // Latest first: a flow removed and back since the last call has an
        // older mention, of its earlier stay, which must not count.
        for c in self.dirty.drain(..).rev() {
            let Some(e) = self.flows.get_mut(&c.key) else {
                continue;
            };
            if !e.dirty {
                continue;
            }
            e.dirty = false;
            let packets = e.value.packets.saturating_sub(c.packets);
            if packets > 0 {
                out.push((
                    c.key,
                    FlowValue {
                        packets,
                        bytes: e.value.bytes.saturating_sub(c.bytes),
                        ip_bytes: e.value.ip_bytes.saturating_sub(c.ip_bytes),
                        ..e.value
                    },
                ));
            }
        }
    }

    /// Removes the flows whose last packet is at least the idle timeout
    /// older than `now_ns` (kernel monotonic time), appending each with its
    /// totals to `out`. Packets a removed flow carries later start it
    /// afresh. Opens only the wheel buckets that are due.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<(FlowKey, FlowValue)>) {
        let now_bucket = now_ns / self.bucket_ns;
        let mut later = Vec::new();
        while let Some(entry) = self.wheel.first_entry() {
            if *entry.key() > now_bucket {
                break;
            }
            for (key, stamp) in entry.remove() {
                let Some(e) = self.flows.get(&key) else {
                    continue;
                };
                if e.stamp != stamp {
                    continue;
                }
                if now_ns.saturating_sub(e.value.last_seen_ns) >= self.idle_ns {
                    let e = self.flows.remove(&key).expect("present");
                    out.push((key, e.value));
                } else {
                    // Active since it was filed: file it again afterwards
                    // (its new bucket may be the one just opened).
                    later.push((key, e.value.last_seen_ns));
                }
            }
        }
        for (key, last_seen_ns) in later {
            let stamp = self.file(key, last_seen_ns);
            if let Some(e) = self.flows.get_mut(&key) {
                e.stamp = stamp;
            }
        }
    }

    /// Flows in the table.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether the table holds no flow.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Every flow in the table with its totals. Costs the whole table: for
    /// the end of a run, not for every interval.
    pub fn snapshot(&self) -> Vec<(FlowKey, FlowValue)> {
        self.flows.iter().map(|(k, e)| (*k, e.value)).collect()
    }

    /// Packets and bytes of flows the full table could not take.
    pub fn untracked(&self) -> (u64, u64) {
        (self.untracked_packets, self.untracked_bytes)
    }

    /// Occupancies still in the kernel (for tests and diagnostics).
    #[cfg(test)]
    fn live(&self) -> usize {
        self.live.len()
    }

    /// Removes a flow, returning its totals (tests; [`Self::expire`] is how
    /// flows leave the table).
    #[cfg(test)]
    fn remove(&mut self, key: &FlowKey) -> Option<FlowValue> {
        self.flows.remove(key).map(|e| e.value)
    }

    /// Filings in the wheel, stale ones included (for tests).
    #[cfg(test)]
    fn filings(&self) -> usize {
        self.wheel.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use netmon_common::{IP_V4, PROTO_UDP};

    use super::*;

    /// The idle timeout of the tables under test: 1 s.
    const IDLE: u64 = 1_000_000_000;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            src: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sport_be: port.to_be(),
            dport_be: 53u16.to_be(),
            proto: PROTO_UDP,
            ip_version: IP_V4,
            direction: 0,
            pad: 0,
        }
    }

    fn occ(cpu: u32, seq: u64, port: u16, packets: u64, last: u64) -> Occupancy {
        Occupancy {
            cpu,
            seq,
            key: key(port),
            value: FlowValue {
                packets,
                bytes: packets * 100,
                ip_bytes: packets * 86,
                first_seen_ns: 10,
                last_seen_ns: last,
                tcp_flags: 0,
                pad: 0,
            },
        }
    }

    fn packets(t: &FlowTable, port: u16) -> Option<u64> {
        t.snapshot()
            .iter()
            .find(|(k, _)| *k == key(port))
            .map(|(_, v)| v.packets)
    }

    #[test]
    fn repeated_sightings_count_once() {
        let mut t = FlowTable::new(10, IDLE);
        t.seen(&occ(0, 1, 1, 5, 20));
        t.seen(&occ(0, 1, 1, 5, 20));
        t.seen(&occ(0, 1, 1, 8, 30));
        assert_eq!(packets(&t, 1), Some(8));
        // The final record after the last sighting adds what came since.
        t.ended(&occ(0, 1, 1, 9, 40));
        assert_eq!(packets(&t, 1), Some(9));
        assert_eq!(t.snapshot()[0].1.bytes, 900);
        assert_eq!(t.snapshot()[0].1.last_seen_ns, 40);
        assert_eq!(t.live(), 0);
    }

    #[test]
    fn occupancies_on_several_cpus_and_after_eviction_add_up() {
        let mut t = FlowTable::new(10, IDLE);
        // Flow 1 on CPU 0 twice (evicted in between), and on CPU 1.
        t.seen(&occ(0, 1, 1, 3, 20));
        t.ended(&occ(0, 1, 1, 4, 25));
        t.seen(&occ(0, 7, 1, 2, 30));
        t.seen(&occ(1, 1, 1, 6, 35));
        assert_eq!(packets(&t, 1), Some(4 + 2 + 6));
        // An occupancy never seen before its record counts whole.
        t.ended(&occ(1, 2, 2, 5, 40));
        assert_eq!(packets(&t, 2), Some(5));
        assert_eq!(t.live(), 2);
    }

    #[test]
    fn a_copy_torn_in_its_counts_is_corrected_by_the_next() {
        let mut t = FlowTable::new(10, IDLE);
        // The new occupant's key with the old occupant's (higher) counts.
        t.seen(&occ(0, 2, 1, 8, 20));
        t.seen(&occ(0, 2, 1, 2, 20));
        assert_eq!(packets(&t, 1), Some(2));
        t.ended(&occ(0, 2, 1, 3, 30));
        assert_eq!(packets(&t, 1), Some(3));
    }

    #[test]
    fn a_stale_sighting_after_the_final_record_adds_nothing() {
        let mut t = FlowTable::new(10, IDLE);
        t.seen(&occ(0, 1, 1, 4, 20));
        t.ended(&occ(0, 1, 1, 5, 25));
        // A pending entry still showing the occupant, this round and next.
        t.seen(&occ(0, 1, 1, 5, 25));
        t.new_round();
        t.seen(&occ(0, 1, 1, 5, 25));
        assert_eq!(packets(&t, 1), Some(5));
        assert_eq!(t.live(), 0);
    }

    #[test]
    fn a_torn_copy_is_corrected_by_the_next() {
        let mut t = FlowTable::new(10, IDLE);
        // Occupancy (0, 1) first read with another flow's key.
        t.seen(&occ(0, 1, 2, 1, 20));
        t.seen(&occ(0, 1, 1, 5, 30));
        assert_eq!(packets(&t, 1), Some(5));
        assert_eq!(packets(&t, 2), None);
    }

    #[test]
    fn a_removed_flow_starts_afresh() {
        let mut t = FlowTable::new(10, IDLE);
        t.seen(&occ(0, 1, 1, 7, 20));
        assert_eq!(t.remove(&key(1)).map(|v| v.packets), Some(7));
        assert_eq!(packets(&t, 1), None);
        // The same occupancy carries on: only the new packets count.
        t.seen(&occ(0, 1, 1, 11, 90));
        assert_eq!(packets(&t, 1), Some(4));
        assert_eq!(t.remove(&key(3)), None);
    }

    #[test]
    fn a_full_table_counts_what_it_cannot_take() {
        let mut t = FlowTable::new(2, IDLE);
        for port in 1..=5 {
            t.seen(&occ(0, u64::from(port), port, 5, 20));
        }
        assert_eq!(t.snapshot().len(), 2);
        assert_eq!(t.untracked(), (15, 1500));
        // Untracked flows stay untracked while the table is full, and their
        // later packets too.
        t.seen(&occ(0, 5, 5, 7, 30));
        assert_eq!(t.untracked(), (17, 1700));
        // Room again: a new flow gets in.
        t.remove(&key(1));
        t.seen(&occ(0, 9, 6, 1, 40));
        assert_eq!(packets(&t, 6), Some(1));
    }

    fn changes(t: &mut FlowTable) -> Vec<(u16, u64, u64)> {
        let mut out = Vec::new();
        t.take_changes(&mut out);
        let mut v: Vec<(u16, u64, u64)> = out
            .iter()
            .map(|(k, v)| (u16::from_be(k.sport_be), v.packets, v.bytes))
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn changes_are_handed_out_once_with_what_came_since() {
        let mut t = FlowTable::new(10, IDLE);
        t.seen(&occ(0, 1, 1, 5, 20));
        t.seen(&occ(0, 2, 2, 3, 20));
        assert_eq!(changes(&mut t), [(1, 5, 500), (2, 3, 300)]);
        assert_eq!(changes(&mut t), [], "nothing new");
        // Flow 1 grows on its occupancy and on another CPU; flow 2 is read
        // again unchanged.
        t.seen(&occ(0, 1, 1, 6, 30));
        t.seen(&occ(1, 1, 1, 2, 30));
        t.seen(&occ(0, 2, 2, 3, 20));
        t.ended(&occ(0, 1, 1, 7, 40));
        assert_eq!(changes(&mut t), [(1, 4, 400)]);
        let mut out = Vec::new();
        t.seen(&occ(1, 1, 1, 3, 50));
        t.take_changes(&mut out);
        assert_eq!(out[0].1.last_seen_ns, 50, "times are the flow's own");
        assert_eq!(out[0].1.first_seen_ns, 10);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_flow_removed_and_back_in_one_interval_is_reported_once() {
        let mut t = FlowTable::new(10, IDLE);
        t.seen(&occ(0, 1, 1, 5, 20));
        t.remove(&key(1));
        t.seen(&occ(0, 2, 1, 2, 30));
        assert_eq!(changes(&mut t), [(1, 2, 200)]);
    }

    fn expire(t: &mut FlowTable, now: u64) -> Vec<(u16, u64)> {
        let mut out = Vec::new();
        t.expire(now, &mut out);
        let mut v: Vec<(u16, u64)> = out
            .iter()
            .map(|(k, v)| (u16::from_be(k.sport_be), v.packets))
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn idle_flows_expire_at_their_deadline_with_their_totals() {
        let mut t = FlowTable::new(10, IDLE);
        t.seen(&occ(0, 1, 1, 5, 100));
        t.seen(&occ(0, 2, 2, 3, 400_000_000));
        assert_eq!(expire(&mut t, 100 + IDLE - 1), []);
        assert_eq!(expire(&mut t, 100 + IDLE), [(1, 5)]);
        assert_eq!(t.len(), 1);
        assert_eq!(expire(&mut t, 400_000_000 + IDLE), [(2, 3)]);
        assert_eq!(t.len(), 0);
        assert_eq!(t.filings(), 0);
    }

    #[test]
    fn a_flow_active_since_it_was_filed_is_filed_again() {
        let mut t = FlowTable::new(10, IDLE);
        t.seen(&occ(0, 1, 1, 5, 100));
        // Active again 0.9 s later: not idle at the first deadline.
        t.seen(&occ(0, 1, 1, 6, 900_000_000));
        assert_eq!(expire(&mut t, 100 + IDLE), []);
        assert_eq!(t.filings(), 1, "filed again, once");
        assert_eq!(expire(&mut t, 900_000_000 + IDLE - 1), []);
        assert_eq!(expire(&mut t, 900_000_000 + IDLE), [(1, 6)]);
        // It comes back: counted afresh, and expires on its own deadline.
        t.seen(&occ(0, 1, 1, 8, 3 * IDLE));
        assert_eq!(changes(&mut t), [(1, 2, 200)]);
        assert_eq!(expire(&mut t, 4 * IDLE), [(1, 2)]);
    }

    #[test]
    fn expiry_opens_only_due_buckets() {
        let mut t = FlowTable::new(100_000, IDLE);
        // 50,000 flows seen at 0.5 s, then a check long before their
        // deadline leaves every filing where it is.
        for port in 0..50_000u16 {
            t.seen(&occ(0, u64::from(port) + 1, port, 1, IDLE / 2));
        }
        let buckets = t.wheel.len();
        assert_eq!(expire(&mut t, IDLE), []);
        assert_eq!((t.wheel.len(), t.filings()), (buckets, 50_000));
        // Stale filings (a flow removed and back) are dropped unseen.
        t.remove(&key(7));
        t.seen(&occ(1, 1, 7, 1, 2 * IDLE));
        let gone = expire(&mut t, IDLE / 2 + IDLE);
        assert_eq!(gone.len(), 49_999);
        assert_eq!((t.len(), t.filings()), (1, 1));
    }
}
