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

use std::collections::{HashMap, HashSet};

use netmon_common::{FlowKey, FlowValue};

/// One sighting of an occupancy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occupancy {
    pub cpu: u32,
    pub seq: u64,
    pub key: FlowKey,
    pub value: FlowValue,
}

#[derive(Debug)]
pub struct FlowTable {
    /// Flows tracked at most (`--max-flows`).
    max_flows: usize,
    /// Last sighting of every occupancy still in the kernel.
    live: HashMap<(u32, u64), (FlowKey, FlowValue)>,
    /// Occupancies whose final record came in this round and the one
    /// before: later sightings of them are stale.
    ended_now: HashSet<(u32, u64)>,
    ended_before: HashSet<(u32, u64)>,
    /// Per-flow totals since the flow entered the table.
    flows: HashMap<FlowKey, FlowValue>,
    /// Packets and bytes of flows the full table could not take.
    untracked_packets: u64,
    untracked_bytes: u64,
    /// Set the first time the table was full.
    overflowed: bool,
}

impl FlowTable {
    pub fn new(max_flows: usize) -> Self {
        FlowTable {
            max_flows,
            live: HashMap::new(),
            ended_now: HashSet::new(),
            ended_before: HashSet::new(),
            flows: HashMap::new(),
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
                        ..o.value
                    },
                );
            }
            // Otherwise the earlier copy was torn (possible only on CPUs
            // that reorder stores): in its counts, or across a change of
            // occupant so that it named another flow. The latest copy
            // counts: take the earlier one back and add this one.
            Some((key, last)) => {
                self.take_back(&key, last.packets, last.bytes);
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
    fn take_back(&mut self, key: &FlowKey, packets: u64, bytes: u64) {
        if let Some(v) = self.flows.get_mut(key) {
            v.packets = v.packets.saturating_sub(packets);
            v.bytes = v.bytes.saturating_sub(bytes);
            if v.packets == 0 {
                self.flows.remove(key);
            }
        } else {
            self.untracked_packets = self.untracked_packets.saturating_sub(packets);
            self.untracked_bytes = self.untracked_bytes.saturating_sub(bytes);
        }
    }

    fn add(&mut self, key: &FlowKey, delta: &FlowValue) {
        if delta.packets == 0 && delta.bytes == 0 {
            return;
        }
        if let Some(v) = self.flows.get_mut(key) {
            v.merge(delta);
        } else if self.flows.len() < self.max_flows {
            self.flows.insert(*key, *delta);
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

    /// Removes a flow, returning its totals. Packets it carries later start
    /// it afresh.
    pub fn remove(&mut self, key: &FlowKey) -> Option<FlowValue> {
        self.flows.remove(key)
    }

    /// Every flow in the table with its totals.
    pub fn snapshot(&self) -> Vec<(FlowKey, FlowValue)> {
        self.flows.iter().map(|(k, v)| (*k, *v)).collect()
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
}

#[cfg(test)]
mod tests {
    use netmon_common::{IP_V4, PROTO_UDP};

    use super::*;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            src: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sport_be: port.to_be(),
            dport_be: 53u16.to_be(),
            proto: PROTO_UDP,
            ip_version: IP_V4,
            pad: [0; 2],
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
        let mut t = FlowTable::new(10);
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
        let mut t = FlowTable::new(10);
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
        let mut t = FlowTable::new(10);
        // The new occupant's key with the old occupant's (higher) counts.
        t.seen(&occ(0, 2, 1, 8, 20));
        t.seen(&occ(0, 2, 1, 2, 20));
        assert_eq!(packets(&t, 1), Some(2));
        t.ended(&occ(0, 2, 1, 3, 30));
        assert_eq!(packets(&t, 1), Some(3));
    }

    #[test]
    fn a_stale_sighting_after_the_final_record_adds_nothing() {
        let mut t = FlowTable::new(10);
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
        let mut t = FlowTable::new(10);
        // Occupancy (0, 1) first read with another flow's key.
        t.seen(&occ(0, 1, 2, 1, 20));
        t.seen(&occ(0, 1, 1, 5, 30));
        assert_eq!(packets(&t, 1), Some(5));
        assert_eq!(packets(&t, 2), None);
    }

    #[test]
    fn a_removed_flow_starts_afresh() {
        let mut t = FlowTable::new(10);
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
        let mut t = FlowTable::new(2);
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
}
