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

use std::collections::HashMap;

use netmon_common::{FlowKey, FlowValue};

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
}

impl IpfixFlows {
    #[must_use]
    pub fn new(active_timeout_ns: u64, direction: Direction) -> Self {
        IpfixFlows {
            pending: HashMap::new(),
            active_timeout_ns,
            direction,
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
        for (key, _) in changes.removed {
            if let Some(p) = self.pending.remove(key) {
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
            for (key, p) in self.pending.drain() {
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
        let p = self.pending.entry(*key).or_insert(Pending {
            packets: 0,
            octets: 0,
            tcp_flags: 0,
            start_ns: delta.first_seen_ns,
            last_ns: delta.last_seen_ns,
            window_ns: delta.first_seen_ns,
        });
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
