//! Passive RTT (issue 11, ePPing's method): the egress program records
//! what it sends that an answer will echo ([`record`]), the ingress
//! program looks the echo up and sends the round trip to userspace as an
//! [`RttSample`] ([`answer`]). The maps and the kinds are described at
//! `RTT_PENDING_MAP` in netmon-common; the rules chosen here:
//!
//! - **TCP timestamps** ([`RTT_TCP_TS`], id = TSval). Recorded: a segment
//!   with a timestamp option that carries data, SYN or FIN, whose TSval is
//!   the flow's first segment with that value (`FlowSlot::rtt_pad`, the
//!   last TSval the flow sent on this CPU, updated by every segment, pure
//!   ACKs too), and only a TSval that is a multiple of
//!   [`TS_RECORD_EVERY`] (the rate limit: a rule on the value, the same on
//!   every CPU, so the CPU that sends the first segment with a TSval is
//!   the one that records it; recording it from a later segment would time
//!   the echo from the wrong send, the peer echoing the TSval of the first
//!   segment that carried it, and the sample would come out short). Not recorded: pure ACKs. The peer echoes the TSval of a pure
//!   ACK only when it next has something to send, so the echo would time
//!   the peer's application, not the path. Matched: an incoming segment
//!   with ACK and TSecr not 0 (RFC 7323: TSecr is only valid with ACK) on
//!   the reverse flow, unless the flow's last lookup was of the same TSecr
//!   (`FlowSlot::rtt_mark` on the received flow): every ACK of a bulk
//!   transfer echoes the same value for a while, and only the first one
//!   can match.
//! - **Handshake** ([`RTT_TCP_SYN`], [`RTT_TCP_SYNACK`], id = the sent
//!   sequence number + 1). A SYN (no ACK) out is matched by the SYN-ACK
//!   acknowledging it; a SYN-ACK out by the peer's first ACK: an incoming
//!   segment with ACK and without SYN on a received flow whose slot had
//!   seen SYN and never ACK before it (the flow so far is the peer's SYN,
//!   maybe retransmitted). So a connection the host accepts costs one
//!   lookup, one it opens none. When the same answer also matched a
//!   timestamp (a SYN carries a TSval, recorded too), the handshake entry
//!   is deleted without a sample: one round trip, one sample, and the
//!   timestamp's is the one to keep (a retransmitted SYN carries a new
//!   TSval, so its echo is not ambiguous).
//! - **ICMP and ICMPv6 echo** ([`RTT_ICMP_ECHO`], id = identifier << 16 |
//!   sequence number): request out, reply in.
//!
//! Karn's rule: a SYN, SYN-ACK or echo request sent again with the same
//! id finds the entry there and marks it ambiguous; its answer deletes it
//! and counts `rtt_ambiguous`, no sample. (A TSval sent again finds its
//! entry too, and leaves it as it is: the echo times the first send.)
//!
//! Invariants: nothing here writes to the packet or changes a verdict;
//! the pending map is bounded (an insert into the full map fails and
//! counts `rtt_pending_full`); and a packet with nothing to record or
//! match costs no helper call and no map lookup, only compares on what the
//! parser read and on its flow's slot (`cargo xtask bench xdp` measures
//! it). A flow the cache could not take (its eviction ring was full) gets
//! no timestamp records or matches, having no slot; handshakes and echoes
//! need none.
#![expect(clippy::inline_always, reason = "per-packet path, see lib.rs")]

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{HashMap, RingBuf},
};
use netmon_common::{
    Counters, DEFAULT_RTT_PENDING, DEFAULT_RTT_SAMPLES_BYTES, DIR_TX, FlowKey, PROTO_ICMP,
    PROTO_ICMPV6, PROTO_TCP, RTT_ICMP_ECHO, RTT_TCP_SYN, RTT_TCP_SYNACK, RTT_TCP_TS, RttKey,
    RttPending, RttSample, TCP_FIN, TCP_SYN,
};

use crate::{
    flow::{BPF_RB_NO_WAKEUP, Counted},
    hdr::tcp,
    parse::{ECHO_REPLY, ECHO_REQUEST, Parsed},
};

/// Sent packets waiting for their answer, every CPU's (the answer may come
/// in on another): see `RTT_PENDING_MAP`. A preallocated hash map:
/// inserts and deletes take no allocation, and at most `max_entries`
/// entries exist (userspace sizes it at load, `Counting::rtt_pending`).
#[map(name = "RTT_PENDING")]
pub static RTT_PENDING: HashMap<RttKey, RttPending> =
    HashMap::with_max_entries(DEFAULT_RTT_PENDING, 0);

/// The samples, for userspace, which reads the ring on a timer (so no
/// wakeup is sent, see `BPF_RB_NO_WAKEUP`).
#[map(name = "RTT_SAMPLES")]
pub static RTT_SAMPLES: RingBuf = RingBuf::with_byte_size(DEFAULT_RTT_SAMPLES_BYTES, 0);

/// `BPF_NOEXIST`: insert only a key that is not there.
const BPF_NOEXIST: u64 = 1;
/// The error an insert with [`BPF_NOEXIST`] returns for a key that is there.
const EEXIST: i32 = 17;

/// Records what the transmitted packet `p` (flow key `words`, direction
/// `DIR_TX` in it) will be answered by, see the module doc. `flow`: its
/// slot, if the cache took it.
#[inline(always)]
pub fn record(c: &mut Counters, words: &[u64; 5], p: &Parsed, flow: Option<&Counted>) {
    let r = &p.rtt;
    match p.proto {
        PROTO_TCP => {
            let syn = p.tcp_flags & TCP_SYN != 0;
            let mut ts = false;
            if let (true, Some(f)) = (r.ts, flow) {
                // SAFETY: this CPU's slot (see Counted).
                let slot = unsafe { &mut *f.slot };
                if r.tsval != slot.rtt_pad {
                    slot.rtt_pad = r.tsval;
                    ts = r.tsval.is_multiple_of(TS_RECORD_EVERY)
                        && (r.payload || p.tcp_flags & (TCP_SYN | TCP_FIN) != 0);
                }
            }
            if !ts && !syn {
                return;
            }
            let now = ktime();
            if ts {
                insert(c, &key(words, RTT_TCP_TS, r.tsval), now, false);
            }
            if syn {
                let kind = if p.tcp_flags & tcp::FLAG_ACK != 0 {
                    RTT_TCP_SYNACK
                } else {
                    RTT_TCP_SYN
                };
                insert(c, &key(words, kind, r.seq.wrapping_add(1)), now, true);
            }
        }
        PROTO_ICMP | PROTO_ICMPV6 if r.echo == ECHO_REQUEST => {
            insert(c, &key(words, RTT_ICMP_ECHO, r.seq), ktime(), true);
        }
        _ => {}
    }
}

/// Looks up what the received packet `p` (flow key `words`, direction
/// `DIR_RX`) answers, and sends a sample when it answers a pending entry,
/// see the module doc. `flow`: its slot, if the cache took it.
#[inline(always)]
pub fn answer(c: &mut Counters, words: &[u64; 5], p: &Parsed, flow: Option<&Counted>) {
    let r = &p.rtt;
    match p.proto {
        PROTO_TCP => {
            let flags = p.tcp_flags;
            if flags & tcp::FLAG_ACK == 0 {
                return;
            }
            let mut matched = false;
            if let (true, Some(f)) = (r.ts && r.tsecr != 0, flow) {
                // SAFETY: this CPU's slot (see Counted).
                let slot = unsafe { &mut *f.slot };
                if slot.rtt_mark != r.tsecr {
                    slot.rtt_mark = r.tsecr;
                    matched = take(c, &reverse(words, RTT_TCP_TS, r.tsecr), false);
                }
            }
            let kind = if flags & TCP_SYN != 0 {
                RTT_TCP_SYN
            } else if flow.is_some_and(|f| {
                f.prior_flags & u32::from(TCP_SYN | tcp::FLAG_ACK) == u32::from(TCP_SYN)
            }) {
                RTT_TCP_SYNACK
            } else {
                return;
            };
            take(c, &reverse(words, kind, r.ack), matched);
        }
        PROTO_ICMP | PROTO_ICMPV6 if r.echo == ECHO_REPLY => {
            take(c, &reverse(words, RTT_ICMP_ECHO, r.seq), false);
        }
        _ => {}
    }
}

/// Only TSvals that are a multiple of this are recorded: the rate limit
/// (a Linux TSval moves on every ms, so at most 250 records per flow per
/// second). A rule on the value itself, the same on every CPU: whichever
/// CPU sends the first segment carrying such a TSval records it, and a
/// later segment with it, on any CPU, finds the entry taken. (A limit kept
/// per CPU, such as one record per clock tick, let a CPU that had skipped
/// a TSval leave it to another CPU's later segment: a sample short by the
/// time between the two, below the path's RTT.)
const TS_RECORD_EVERY: u32 = 4;

#[inline(always)]
fn ktime() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// The pending key of a transmitted packet: its flow (`words`, direction
/// `DIR_TX` already in word 4) with `kind` in the key's pad byte (bits
/// 56-63 of word 4), and `id`.
#[inline(always)]
fn key(words: &[u64; 5], kind: u8, id: u32) -> RttKey {
    RttKey {
        flow: FlowKey::from_words([
            words[0],
            words[1],
            words[2],
            words[3],
            words[4] | (u64::from(kind) << 56),
        ]),
        id,
        pad: 0,
    }
}

/// The pending key a received packet (flow key `words`, direction
/// `DIR_RX` = 0) answers: addresses and ports swapped, direction `DIR_TX`,
/// `kind`, `id`.
#[inline(always)]
fn reverse(words: &[u64; 5], kind: u8, id: u32) -> RttKey {
    let w = words[4];
    // Bits 0-31 the ports (source, destination, as on the wire): swapped
    // by a rotation. Bits 32-47 the protocol and IP version, kept.
    let ports = u64::from((w as u32).rotate_left(16));
    RttKey {
        flow: FlowKey::from_words([
            words[2],
            words[3],
            words[0],
            words[1],
            (w & 0x0000_ffff_0000_0000)
                | ports
                | (u64::from(DIR_TX) << 48)
                | (u64::from(kind) << 56),
        ]),
        id,
        pad: 0,
    }
}

/// Inserts `key` sent at `sent_ns` unless it is there. There already: with
/// `karn`, the packet was sent again with the same id, and the entry
/// becomes ambiguous.
#[inline(always)]
fn insert(c: &mut Counters, key: &RttKey, sent_ns: u64, karn: bool) {
    let value = RttPending {
        sent_ns,
        ambiguous: 0,
        pad: 0,
    };
    match RTT_PENDING.insert(key, value, BPF_NOEXIST) {
        Ok(()) => c.rtt_recorded += 1,
        Err(e) if e == -EEXIST => {
            if karn {
                if let Some(entry) = RTT_PENDING.get_ptr_mut(key) {
                    // SAFETY: a value of the map, valid while this program
                    // runs (RCU); one aligned store.
                    unsafe { write_volatile(&raw mut (*entry).ambiguous, 1) };
                }
            }
        }
        // E2BIG: the map is full.
        Err(_) => c.rtt_pending_full += 1,
    }
}

/// Takes the pending entry `key` answered by this packet, if there is
/// one: deletes it and sends its sample (none when it is ambiguous, or
/// with `quiet`: the same answer matched a timestamp already). True when
/// there was an entry and this packet took it (another CPU taking it in
/// between wins).
#[inline(always)]
fn take(c: &mut Counters, key: &RttKey, quiet: bool) -> bool {
    if quiet {
        return RTT_PENDING.remove(key).is_ok();
    }
    let Some(entry) = RTT_PENDING.get_ptr(key) else {
        return false;
    };
    let now = ktime();
    // SAFETY: a value of the map, valid while this program runs (RCU).
    let (sent_ns, ambiguous) = unsafe {
        (
            read_volatile(&raw const (*entry).sent_ns),
            read_volatile(&raw const (*entry).ambiguous),
        )
    };
    if RTT_PENDING.remove(key).is_err() {
        return false;
    }
    if ambiguous != 0 {
        c.rtt_ambiguous += 1;
        return true;
    }
    let sample = RttSample {
        flow: key.flow,
        rtt_ns: now.saturating_sub(sent_ns),
    };
    if RTT_SAMPLES
        .output::<RttSample>(&sample, BPF_RB_NO_WAKEUP)
        .is_ok()
    {
        c.rtt_samples += 1;
    } else {
        c.rtt_samples_lost += 1;
    }
    true
}
