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
//!   segment that carried it, and the sample would come out short). Not
//!   recorded: pure ACKs. The peer echoes the TSval of a pure
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
//! Where the work is done: the parser reads what a hook needs into a word
//! and a few bits (`parse::RttFields`); `count_flow` applies the
//! timestamp rules to the flow's slot while it has it ([`slot_step`]);
//! then one test tells whether there is anything to record or match
//! ([`record`], [`answer`]), and only then is the map work done, out of
//! line, in global functions ([`netmon_rtt_record`], [`netmon_rtt_answer`])
//! that the verifier checks once each.
//!
//! Invariants: nothing here writes to the packet or changes a verdict;
//! the pending map is bounded (an insert into the full map fails and
//! counts `rtt_pending_full`); and a packet with nothing to record or
//! match costs no helper call, no map lookup and no function call, only
//! compares on what the parser read and on its flow's slot (`cargo xtask
//! bench xdp` measures it). A flow the cache could not take (its eviction
//! ring was full) gets no timestamp records or matches, having no slot;
//! handshakes and echoes need none.
#![expect(clippy::inline_always, reason = "per-packet path, see lib.rs")]

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{HashMap, RingBuf},
};
use netmon_common::{
    Counters, DEFAULT_RTT_PENDING, DEFAULT_RTT_SAMPLES_BYTES, DIR_TX, FlowKey, FlowSlot,
    RTT_ICMP_ECHO, RTT_TCP_SYN, RTT_TCP_SYNACK, RTT_TCP_TS, RttKey, RttPending, RttSample, TCP_FIN,
    TCP_SYN,
};

use crate::{
    hdr::tcp,
    parse::{Parsed, RTT_DATA, RTT_ECHO, RTT_HANDSHAKE, RTT_TS, RttFields},
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

/// `bpf_ringbuf_output` flag: no wakeup of a waiting reader. netmon reads
/// the ring on a timer, never waits on it; a wakeup would cost an
/// interrupt (irq_work) per record sent to an empty ring.
const BPF_RB_NO_WAKEUP: u64 = 1;

/// `BPF_NOEXIST`: insert only a key that is not there.
const BPF_NOEXIST: u64 = 1;
/// The error an insert with [`BPF_NOEXIST`] returns for a key that is there.
const EEXIST: i32 = 17;

/// Marks a present timestamp in the `ts` argument of [`netmon_rtt_record`]
/// and [`netmon_rtt_answer`] (the TSval or TSecr in the low 32 bits).
const TS_PRESENT: u64 = 1 << 32;

/// Marks, in what [`slot_step`] returns, the first ACK of a SYN-ACK this
/// host sent (see the module doc): a received TCP segment with ACK and
/// without SYN on a flow that had shown SYN and never ACK before it.
const FIRST_ACK: u64 = 1 << 33;

/// The packet's work on its flow's slot, inside `count_flow` where the
/// slot and the flags it had are at hand (out there, keeping them alive
/// made the established path several ns dearer). `r` what the parser read
/// for RTT, `prior_flags` the flags the flow had shown before this packet.
/// Returns [`TS_PRESENT`] | the TSval to record or the
/// TSecr to look up, or 0, and (ingress) [`FIRST_ACK`]; see the module doc.
#[inline(always)]
pub fn slot_step(
    slot: &mut FlowSlot,
    direction: u8,
    r: RttFields,
    prior_flags: u32,
    tcp_flags: u8,
) -> u64 {
    let mut todo = 0;
    if direction == DIR_TX {
        if r.bits & RTT_TS != 0 {
            let tsval = r.ts();
            if tsval != slot.rtt_pad {
                slot.rtt_pad = tsval;
                if tsval.is_multiple_of(TS_RECORD_EVERY)
                    && (r.bits & RTT_DATA != 0 || tcp_flags & (TCP_SYN | TCP_FIN) != 0)
                {
                    todo = TS_PRESENT | u64::from(tsval);
                }
            }
        }
    } else {
        if r.bits & RTT_TS != 0 {
            let tsecr = r.ts();
            if slot.rtt_mark != tsecr {
                slot.rtt_mark = tsecr;
                todo = TS_PRESENT | u64::from(tsecr);
            }
        }
        // Rare: only a flow that began with SYN has it among its flags.
        if prior_flags & u32::from(TCP_SYN) != 0
            && prior_flags & u32::from(tcp::FLAG_ACK) == 0
            && tcp_flags & (TCP_SYN | tcp::FLAG_ACK) == tcp::FLAG_ACK
        {
            todo |= FIRST_ACK;
        }
    }
    todo
}

/// A handshake or echo entry as the `hs` argument of [`netmon_rtt_record`]
/// and [`netmon_rtt_answer`]: the kind (never 0) and the id.
#[inline(always)]
fn hs(kind: u8, id: u32) -> u64 {
    (u64::from(kind) << 32) | u64::from(id)
}

/// Records what the transmitted packet `p` (flow `key`, direction `DIR_TX`
/// in it) will be answered by, see the module doc: its timestamp when
/// [`slot_step`] said so (`todo`), its SYN or SYN-ACK, its echo request.
/// The map work is out of line ([`netmon_rtt_record`]), called only then.
#[inline(always)]
pub fn record(c: &mut Counters, key: &FlowKey, p: &Parsed, todo: u64) {
    let r = &p.rtt;
    // One test for a packet with nothing to record.
    if todo | u64::from(r.bits & (RTT_HANDSHAKE | RTT_ECHO)) == 0 {
        return;
    }
    let hs = if r.bits & RTT_ECHO != 0 {
        hs(RTT_ICMP_ECHO, r.num())
    } else if r.bits & RTT_HANDSHAKE == 0 {
        0
    } else if p.tcp_flags & tcp::FLAG_ACK == 0 {
        hs(RTT_TCP_SYN, r.num().wrapping_add(1))
    } else {
        hs(RTT_TCP_SYNACK, r.num().wrapping_add(1))
    };
    // SAFETY: a reference.
    let done = unsafe { netmon_rtt_record(key, todo, hs) };
    c.rtt_recorded += done & 0xff;
    c.rtt_pending_full += done >> 8;
}

/// Looks up what the received packet `p` (flow `key`, direction `DIR_RX`)
/// answers, see the module doc: its TSecr when [`slot_step`] said so
/// (`todo`), the SYN a SYN-ACK acknowledges, the SYN-ACK a first ACK
/// acknowledges, the echo request of a reply. The map work is out of line
/// ([`netmon_rtt_answer`]), called only then.
#[inline(always)]
pub fn answer(c: &mut Counters, key: &FlowKey, p: &Parsed, todo: u64) {
    let r = &p.rtt;
    // One test for a packet with nothing to match.
    if todo | u64::from(r.bits & (RTT_HANDSHAKE | RTT_ECHO)) == 0 {
        return;
    }
    let hs = if r.bits & RTT_ECHO != 0 {
        hs(RTT_ICMP_ECHO, r.num())
    } else if r.bits & RTT_HANDSHAKE != 0 {
        hs(RTT_TCP_SYN, r.num())
    } else if todo & FIRST_ACK != 0 {
        hs(RTT_TCP_SYNACK, r.num())
    } else {
        0
    };
    // SAFETY: a reference.
    let done = unsafe { netmon_rtt_answer(key, todo & (TS_PRESENT | u64::from(u32::MAX)), hs) };
    c.rtt_samples += done & 0xff;
    c.rtt_samples_lost += (done >> 8) & 0xff;
    c.rtt_ambiguous += done >> 16;
}

// The map work as global functions (BTF linkage global): the verifier
// checks each once, on its own, instead of once for every state of the
// parser that reaches it, and the per-packet path keeps only the decision
// (inline, the lookup's code made every TCP packet about 9 ns dearer on
// AMD EPYC even when it did nothing). A call costs a return through the
// return thunk; only a packet with something to record or match pays it.
// Their arguments are scalars and a pointer to the caller's key (memory
// the verifier sizes from its BTF type, and which may be null to it).

/// Records a transmitted packet of flow `*key`: its timestamp (`ts`:
/// [`TS_PRESENT`] | TSval, or 0) and its handshake or echo entry (`hs`:
/// kind << 32 | id, or 0), both sent now. Returns entries recorded | entries
/// the full map refused << 8.
///
/// # Safety
/// `key` is null or points to a `FlowKey`.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn netmon_rtt_record(key: *const FlowKey, ts: u64, hs: u64) -> u64 {
    // SAFETY: null or a FlowKey (the caller's promise; the verifier checks
    // the memory too, and would refuse a dereference without this check).
    let Some(key) = (unsafe { key.as_ref() }) else {
        return 0;
    };
    let words = key.words();
    let now = ktime();
    let mut done = 0;
    if ts & TS_PRESENT != 0 {
        done += insert(&pending_key(words, RTT_TCP_TS, ts as u32), now, false);
    }
    if hs != 0 {
        done += insert(&pending_key(words, (hs >> 32) as u8, hs as u32), now, true);
    }
    done
}

/// Takes the pending entries a received packet of flow `*key` answers:
/// its TSecr (`ts`: [`TS_PRESENT`] | TSecr, or 0) first, then its
/// handshake or echo entry (`hs`: kind << 32 | id, or 0), deleted without
/// a sample when the timestamp matched (one round trip, one sample).
/// Returns samples sent | samples lost (ring full) << 8 | ambiguous
/// entries << 16.
///
/// # Safety
/// `key` is null or points to a `FlowKey`.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn netmon_rtt_answer(key: *const FlowKey, ts: u64, hs: u64) -> u64 {
    // SAFETY: null or a FlowKey (the caller's promise; the verifier checks
    // the memory too, and would refuse a dereference without this check).
    let Some(key) = (unsafe { key.as_ref() }) else {
        return 0;
    };
    let words = key.words();
    let mut done = 0;
    let mut matched = false;
    if ts & TS_PRESENT != 0 {
        let (took, outcome) = take(&reverse(words, RTT_TCP_TS, ts as u32), false);
        (matched, done) = (took, outcome);
    }
    if hs != 0 {
        let (_, outcome) = take(&reverse(words, (hs >> 32) as u8, hs as u32), matched);
        done += outcome;
    }
    done
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
fn pending_key(words: &[u64; 5], kind: u8, id: u32) -> RttKey {
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
/// becomes ambiguous. Returns 1 when inserted, 1 << 8 when the map was
/// full, else 0 (see [`netmon_rtt_record`]).
#[inline(always)]
fn insert(key: &RttKey, sent_ns: u64, karn: bool) -> u64 {
    let value = RttPending {
        sent_ns,
        ambiguous: 0,
        pad: 0,
    };
    match RTT_PENDING.insert(key, value, BPF_NOEXIST) {
        Ok(()) => 1,
        Err(e) if e == -EEXIST => {
            if karn {
                if let Some(entry) = RTT_PENDING.get_ptr_mut(key) {
                    // SAFETY: a value of the map, valid while this program
                    // runs (RCU); one aligned store.
                    unsafe { write_volatile(&raw mut (*entry).ambiguous, 1) };
                }
            }
            0
        }
        // E2BIG: the map is full.
        Err(_) => 1 << 8,
    }
}

/// Takes the pending entry `key` answered by this packet, if there is
/// one: deletes it and sends its sample (none when it is ambiguous, or
/// with `quiet`: the same answer matched a timestamp already). Returns
/// whether there was an entry and this packet took it (another CPU taking
/// it in between wins), and the outcome as [`netmon_rtt_answer`] counts it.
#[inline(always)]
fn take(key: &RttKey, quiet: bool) -> (bool, u64) {
    if quiet {
        return (RTT_PENDING.remove(key).is_ok(), 0);
    }
    let Some(entry) = RTT_PENDING.get_ptr(key) else {
        return (false, 0);
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
        return (false, 0);
    }
    if ambiguous != 0 {
        return (true, 1 << 16);
    }
    let sample = RttSample {
        flow: key.flow,
        rtt_ns: now.saturating_sub(sent_ns),
    };
    let sent = RTT_SAMPLES
        .output::<RttSample>(&sample, BPF_RB_NO_WAKEUP)
        .is_ok();
    (true, if sent { 1 } else { 1 << 8 })
}
