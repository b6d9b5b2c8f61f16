//! IPFIX flow records (`--ipfix`): which counts of which flow leave netmon
//! when, so that every flow's counts leave exactly once in total. Pure; the
//! UDP sender is `export::ipfix`.
//!
//! Every interval the monitor hands the sinks the flows that carried
//! packets (with that interval's packets and bytes) and the flows removed
//! from the table as idle. Per flow this keeps what has not been exported
//! yet; a flow's pending counts leave
//! - when it is removed as idle (`flowEndReason` idle timeout),
//! - when it has been active for the active timeout since its last record
//!   (active timeout: the flow goes on, its next record starts from zero),
//! - at the end of the run, for every flow still pending (forced end).
//!
//! So the sum of a flow's records equals its count in the table: the
//! kernel cache's evictions are already merged there (`flowtable`). What
//! no record carries are the packets of flows the table could not take
//! (`flow_insert_failed`; they are in the totals).
//!
//! Times: a flow's first record starts at its first packet; a later record
//! starts where the one before it ended (the first packet after a record is
//! not timed on its own); a record ends at the flow's last packet (10 ms
//! resolution, see the kernel clock).

use std::collections::{HashMap, hash_map::Entry};

use netmon_common::{DIR_TX, FlowKey, FlowValue};

use super::{
    FlowChanges,
    ipfix_wire::{Direction, EndReason, FlowRecord},
    values::Flow,
};

/// What a flow carried since its last record.
#[derive(Clone, Copy, Debug)]
struct Pending {
    packets: u64,
    octets: u64,
    tcp_flags: u32,
    /// Kernel monotonic ns: where the record starts, and the flow's last
    /// packet so far.
    start_ns: u64,
    last_ns: u64,
    /// When the flow's active-timeout clock started (its first packet, or
    /// its last record), kernel monotonic ns.
    window_ns: u64,
}

/// The flows with counts not yet exported.
#[derive(Debug)]
pub struct IpfixFlows {
    pending: HashMap<FlowKey, Pending>,
    active_timeout_ns: u64,
    direction: Direction,
    /// `now_ns` of the last update: packets handed in by the next one
    /// came after it.
    last_update_ns: u64,
}

impl IpfixFlows {
    #[must_use]
    pub fn new(active_timeout_ns: u64, direction: Direction) -> Self {
        IpfixFlows {
            pending: HashMap::new(),
            active_timeout_ns,
            direction,
            last_update_ns: 0,
        }
    }

    /// Flows with counts not yet exported.
    #[must_use]
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes one interval's changes (or the final ones) and returns the
    /// records due.
    pub fn update(&mut self, changes: &FlowChanges) -> Vec<FlowRecord> {
        let now_ns = changes.now_ns;
        let mut out = Vec::new();
        for (key, delta) in changes.changed {
            self.add(key, delta);
        }
        self.last_update_ns = now_ns;
        for (key, _) in changes.removed {
            if let Some(p) = self.pending.remove(key)
                && p.packets > 0
            {
                out.push(record_of(
                    key,
                    &p,
                    EndReason::IdleTimeout,
                    self.direction,
                    changes.mono_to_unix_ns,
                ));
            }
        }
        if changes.end {
            for (key, p) in self.pending.drain().filter(|(_, p)| p.packets > 0) {
                out.push(record_of(
                    &key,
                    &p,
                    EndReason::ForcedEnd,
                    self.direction,
                    changes.mono_to_unix_ns,
                ));
            }
            return out;
        }
        let timeout = self.active_timeout_ns;
        let direction = self.direction;
        for (key, p) in &mut self.pending {
            if p.packets > 0 && now_ns.saturating_sub(p.window_ns) >= timeout {
                out.push(record_of(
                    key,
                    p,
                    EndReason::ActiveTimeout,
                    direction,
                    changes.mono_to_unix_ns,
                ));
                *p = Pending {
                    packets: 0,
                    octets: 0,
                    tcp_flags: 0,
                    start_ns: p.last_ns,
                    last_ns: p.last_ns,
                    window_ns: now_ns,
                };
            }
        }
        out
    }

    fn add(&mut self, key: &FlowKey, delta: &FlowValue) {
        let after = self.last_update_ns;
        let p = match self.pending.entry(*key) {
            Entry::Vacant(v) => v.insert(Pending {
                packets: 0,
                octets: 0,
                tcp_flags: 0,
                start_ns: delta.first_seen_ns,
                last_ns: delta.last_seen_ns,
                window_ns: delta.first_seen_ns,
            }),
            Entry::Occupied(o) => {
                let p = o.into_mut();
                if p.packets == 0 {
                    // A flow that sent a record before: this record starts
                    // after its last one ended and after the last update
                    // (the packets came since), and its active timeout runs
                    // from there.
                    p.start_ns = p.last_ns.max(after);
                    p.window_ns = p.start_ns;
                }
                p
            }
        };
        p.packets += delta.packets;
        p.octets += delta.ip_bytes;
        p.tcp_flags |= delta.tcp_flags;
        p.last_ns = p.last_ns.max(delta.last_seen_ns);
    }
}

fn record_of(
    key: &FlowKey,
    p: &Pending,
    end_reason: EndReason,
    direction: Direction,
    mono_to_unix_ns: i128,
) -> FlowRecord {
    let flow = Flow::new(key, &FlowValue::default());
    // A flow the egress program counted is egress whatever the exporter's
    // default (the observation point's direction for the rest).
    let direction = if key.direction == DIR_TX {
        Direction::Egress
    } else {
        direction
    };
    let ms = |ns: u64| u64::try_from((i128::from(ns) + mono_to_unix_ns) / 1_000_000).unwrap_or(0);
    FlowRecord {
        src: flow.src,
        dst: flow.dst,
        sport: flow.sport,
        dport: flow.dport,
        proto: flow.proto,
        // tcpControlBits is 16 bits (RFC 7125); the kernel keeps the 8
        // flag bits of the TCP header.
        tcp_flags: (p.tcp_flags & 0xffff) as u16,
        direction,
        end_reason,
        octets: p.octets,
        packets: p.packets,
        start_ms: ms(p.start_ns),
        end_ms: ms(p.last_ns),
    }
}

#[cfg(test)]
mod tests {
    use netmon_common::{IP_V4, PROTO_UDP};

    use super::*;

    const MS: u64 = 1_000_000;

    fn key(port: u16) -> FlowKey {
        let mut k = FlowKey {
            proto: PROTO_UDP,
            ip_version: IP_V4,
            sport_be: port.to_be(),
            dport_be: 9000u16.to_be(),
            ..FlowKey::default()
        };
        k.src[..4].copy_from_slice(&[198, 51, 100, 2]);
        k.dst[..4].copy_from_slice(&[198, 51, 100, 1]);
        k
    }

    fn delta(packets: u64, first_ms: u64, last_ms: u64) -> FlowValue {
        FlowValue {
            packets,
            bytes: packets * 100,
            ip_bytes: packets * 86,
            first_seen_ns: first_ms * MS,
            last_seen_ns: last_ms * MS,
            ..FlowValue::default()
        }
    }

    fn changes<'a>(
        changed: &'a [(FlowKey, FlowValue)],
        removed: &'a [(FlowKey, FlowValue)],
        now_ms: u64,
        end: bool,
    ) -> FlowChanges<'a> {
        FlowChanges {
            changed,
            removed,
            end,
            now_ns: now_ms * MS,
            mono_to_unix_ns: 1_000_000 * i128::from(MS),
        }
    }

    #[test]
    fn counts_leave_once_across_active_timeouts_and_the_end() {
        let mut f = IpfixFlows::new(1000 * MS, Direction::Ingress);
        let a = key(1);
        // 5 packets in the first second: nothing due yet.
        let r = f.update(&changes(&[(a, delta(5, 100, 900))], &[], 900, false));
        assert!(r.is_empty());
        // 3 more; a second has passed since the first packet: one record
        // of all 8, active timeout, from the first to the last packet.
        let r = f.update(&changes(&[(a, delta(3, 100, 1100))], &[], 1150, false));
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].packets, r[0].octets), (8, 8 * 86));
        assert_eq!(r[0].end_reason, EndReason::ActiveTimeout);
        assert_eq!(
            (r[0].start_ms, r[0].end_ms),
            (1_000_000 + 100, 1_000_000 + 1100)
        );
        // Quiet for a while: nothing to send for it.
        assert!(f.update(&changes(&[], &[], 2500, false)).is_empty());
        // Two more, then the end: the rest, forced end. They came after
        // the update at 2500, where this record starts (and its active
        // timeout: not due at 2600).
        let r = f.update(&changes(&[(a, delta(2, 100, 2600))], &[], 2600, false));
        assert!(r.is_empty());
        let r = f.update(&changes(&[], &[], 2700, true));
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].packets, r[0].end_reason), (2, EndReason::ForcedEnd));
        assert_eq!(
            (r[0].start_ms, r[0].end_ms),
            (1_000_000 + 2500, 1_000_000 + 2600)
        );
        assert!(f.is_empty());
    }

    #[test]
    fn an_idle_flow_leaves_with_what_it_has_not_sent() {
        let mut f = IpfixFlows::new(100_000 * MS, Direction::Ingress);
        let (a, b) = (key(1), key(2));
        f.update(&changes(
            &[(a, delta(4, 0, 10)), (b, delta(1, 0, 10))],
            &[],
            10,
            false,
        ));
        let r = f.update(&changes(&[], &[(a, delta(4, 0, 10))], 70_000, false));
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].sport, r[0].packets, r[0].end_reason),
            (1, 4, EndReason::IdleTimeout)
        );
        assert_eq!(f.len(), 1);
        // The flow's packets after it went idle start a new record.
        f.update(&changes(
            &[(a, delta(1, 80_000, 80_000))],
            &[],
            80_000,
            false,
        ));
        let r = f.update(&changes(&[], &[], 80_001, true));
        let mut got: Vec<_> = r.iter().map(|r| (r.sport, r.packets)).collect();
        got.sort_unstable();
        assert_eq!(got, vec![(1, 1), (2, 1)]);
    }

    #[test]
    fn transmitted_flows_leave_as_egress() {
        let mut f = IpfixFlows::new(100_000 * MS, Direction::Ingress);
        let rx = key(1);
        let tx = FlowKey {
            direction: DIR_TX,
            ..key(1)
        };
        f.update(&changes(
            &[(rx, delta(2, 0, 10)), (tx, delta(3, 0, 10))],
            &[],
            10,
            false,
        ));
        let r = f.update(&changes(&[], &[], 20, true));
        let mut got: Vec<_> = r.iter().map(|r| (r.packets, r.direction)).collect();
        got.sort_unstable_by_key(|g| g.0);
        assert_eq!(got, vec![(2, Direction::Ingress), (3, Direction::Egress)]);
    }
}
