//! Counting: the per-CPU totals and the per-CPU flow cache, with the maps
//! they live in. Any program that counts frames (XDP ingress, TC egress)
//! calls [`count_frame`]; a program that references none of
//! this gets none of these maps in its object.
#![expect(clippy::inline_always, reason = "per-packet path, see lib.rs")]

use core::{
    mem::size_of,
    ptr::{read_volatile, write_volatile},
    sync::atomic::{Ordering, compiler_fence},
};

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_get_smp_processor_id,
    macros::map,
    maps::{Array, PerCpuArray},
};
use aya_log_ebpf::warn;
use netmon_common::{
    Counters, DEFAULT_RING_ENTRIES, DEFAULT_SLOTS_PER_CPU, DIR_TX, DIRECTIONS, Evicted, FlowKey,
    FlowSlot, FlowValue, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, RingPos, SIZE_CLASS_MAX,
    TCP_FIN, TCP_RST, TCP_SYN, size_class,
};

use crate::{
    frame::{Frame, Malformed},
    parse::{L3, RttFields, classify},
    rtt,
};

/// This CPU's [`Counters`], one per direction: entry `DIR_RX` (0) for what
/// the XDP program counts, `DIR_TX` (1) for the TC egress program.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(DIRECTIONS, 0);

/// Every CPU's flow cache: direct-mapped slots, CPU `c`'s at
/// `c << SLOT_SHIFT`, see [`FlowSlot`] and `FLOW_SLOTS_MAP`. One plain,
/// page-aligned array rather than a per-CPU array: its lookup is inlined to
/// a bounds check and a multiply, and each 128-byte slot covers exactly
/// two cache lines. Each CPU writes only its own slots. Userspace sizes it
/// before load.
#[map(name = "FLOW_SLOTS")]
pub static FLOW_SLOTS: Array<FlowSlot> =
    Array::with_max_entries(DEFAULT_SLOTS_PER_CPU, netmon_common::BPF_F_MMAPABLE);

/// Every CPU's eviction ring: CPU `c`'s entries at `c << RING_SHIFT`,
/// written in place and read in place by userspace (mapped), see
/// `EVICTED_MAP` in netmon-common. Userspace sizes it before load.
#[map(name = "EVICTED")]
pub static EVICTED: Array<Evicted> =
    Array::with_max_entries(DEFAULT_RING_ENTRIES, netmon_common::BPF_F_MMAPABLE);

/// Where each CPU's eviction ring stands, one [`RingPos`] per CPU id.
#[map(name = "EVICT_POS")]
pub static EVICT_POS: Array<RingPos> = Array::with_max_entries(1, netmon_common::BPF_F_MMAPABLE);

/// The time flows are stamped with: kernel monotonic ns, written by
/// userspace every 10 ms. The object's only zero-initialised global, so the
/// whole of its `.bss` (`CLOCK_MAP`): the program reaches it by its address
/// (one load, no helper call), where an array's lookup would first put the
/// index on the stack, load it back and check it (the CPU waits for the
/// store to reach the load).
#[unsafe(no_mangle)]
static mut CLOCK: u64 = 0;

/// Slots per CPU minus one. Set by userspace at load time.
#[unsafe(no_mangle)]
static SLOT_MASK: u32 = DEFAULT_SLOTS_PER_CPU - 1;

/// log2 of the slots per CPU. Set by userspace at load time.
#[unsafe(no_mangle)]
static SLOT_SHIFT: u32 = DEFAULT_SLOTS_PER_CPU.trailing_zeros();

/// Eviction ring entries per CPU minus one. Set by userspace at load time.
#[unsafe(no_mangle)]
static RING_MASK: u32 = DEFAULT_RING_ENTRIES - 1;

/// log2 of the eviction ring entries per CPU. Set by userspace at load
/// time.
#[unsafe(no_mangle)]
static RING_SHIFT: u32 = DEFAULT_RING_ENTRIES.trailing_zeros();

/// Seeds of the slot hash, one per key word (`netmon_common::hash_seeds`).
/// Set by userspace at load time.
#[unsafe(no_mangle)]
static HASH_SEEDS: [u64; 5] = [0; 5];

/// Counts one frame: in this CPU's totals of its direction
/// (`C::DIRECTION`), and, for IP, in its flow. Never touches the frame;
/// counts nothing when the counters cannot be reached (never, for an
/// array of both directions).
///
/// On egress a GSO/TSO super-packet counts as the packets the wire
/// carries: `segs` packets, each with its own copy of the headers, so
/// `len + (segs - 1) * header length` bytes, and frame sizes per segment
/// (`segs - 1` full segments, the rest in the last). On ingress
/// `segments()` is the constant 1 and none of this is compiled in.
#[inline(always)]
pub fn count_frame<C: Frame + EbpfContext>(ctx: &C) {
    let Some(counters) = COUNTERS.get_ptr_mut(u32::from(C::DIRECTION)) else {
        return;
    };
    // SAFETY: an entry of a per-CPU array: this CPU's copy, not shared,
    // and programs that count do not nest on one CPU (the XDP and TC
    // programs write different entries).
    let c = unsafe { &mut *counters };
    let len = ctx.wire_len();
    c.packets += 1;
    c.bytes += len;
    c.size_classes[size_class(len as u32)] += 1;

    match classify(ctx) {
        Ok(L3::Arp) => c.arp += 1,
        Ok(L3::OtherL2) => c.other_l2 += 1,
        Ok(L3::Ip(p)) => {
            let segs = ctx.segments();
            let (mut flow_len, mut ip_len) = (len, u64::from(p.ip_len));
            if segs > 1 {
                let more = segs - 1;
                let hdr = p.hdr_end as u64;
                let seg_size = ctx.segment_size();
                c.packets += more;
                c.bytes += more * hdr;
                flow_len += more * hdr;
                ip_len += more * (hdr - p.l3 as u64);
                add_size_class(c, len, u64::MAX);
                add_size_class(c, hdr + seg_size, more);
                add_size_class(c, len.saturating_sub(more * seg_size), 1);
            }
            match p.proto {
                _ if p.chain_too_long => c.other_ip += segs,
                PROTO_TCP => {
                    c.tcp += segs;
                    // Most segments carry none of the three.
                    if p.tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0 {
                        c.tcp_syn += u64::from(p.tcp_flags & TCP_SYN != 0);
                        c.tcp_fin += u64::from(p.tcp_flags & TCP_FIN != 0);
                        c.tcp_rst += u64::from(p.tcp_flags & TCP_RST != 0);
                    }
                }
                PROTO_UDP => c.udp += segs,
                PROTO_ICMP => c.icmp += segs,
                PROTO_ICMPV6 => c.icmpv6 += segs,
                _ => c.other_ip += segs,
            }
            let mut key = p.key;
            // Bits 48-55: the direction (0 on ingress: no change).
            key[4] |= u64::from(C::DIRECTION) << 48;
            let key = FlowKey::from_words(key);
            let counted = count_flow(
                c,
                &key,
                C::DIRECTION,
                (segs, flow_len, ip_len),
                p.tcp_flags,
                p.rtt,
            );
            if counted.is_none() {
                c.flow_insert_failed += 1;
                if c.flow_insert_failed == 1 {
                    // Once per CPU: the first packet this CPU could not track.
                    warn!(
                        ctx,
                        "flow eviction ring full: packets of new flows are counted in totals only"
                    );
                }
            }
            // The direction is a constant: each hook compiles one half.
            let todo = counted.unwrap_or(0);
            if C::DIRECTION == DIR_TX {
                rtt::record(c, &key, &p, todo);
            } else {
                rtt::answer(c, &key, &p, todo);
            }
        }
        Err(Malformed) => c.malformed += 1,
    }
}

/// Adds `n` (wrapping: `u64::MAX` takes one away) to the size class of
/// `len`, for the frames of a GSO super-packet, as `size_class` would
/// pick it, but without a branch and without an index that depends on
/// `len`: a chain of branches gave the verifier 7 states per class, 343
/// for the three of a super-packet, each walked through the rest of the
/// program (the TC program verified 0.93 million instructions of its 1
/// million), and a computed index is marked precise back to the lengths
/// and the parser's offsets, so that no later state could be pruned.
/// Here each class's counter gets `n` times 1 or 0: "above the class
/// below" minus "above this class", each the sign bit of a subtraction
/// (`len` hidden from the compiler, which would turn the subtraction back
/// into a compare and a branch). Lengths fit 32 bits.
#[inline(always)]
fn add_size_class(c: &mut Counters, len: u64, n: u64) {
    let len = core::hint::black_box(len);
    // 1 when len > max.
    let above = |max: u32| u64::from(max).wrapping_sub(len) >> 63;
    let mut above_below: u64 = 1;
    for (k, count) in c.size_classes.iter_mut().enumerate() {
        let above_this = SIZE_CLASS_MAX.get(k).map_or(0, |&max| above(max));
        *count = count.wrapping_add((above_below - above_this).wrapping_mul(n));
        above_below = above_this;
    }
}

/// Adds one frame (`packets` on the wire: 1, or a GSO super-packet's
/// segments, of `len` frame bytes and `ip_len` IP bytes) to its flow in
/// this CPU's cache, for the program counting `direction`, and does the
/// packet's passive-RTT work on the slot (`rtt`, see `rtt::slot_step`,
/// whose result it returns). Returns `None` when the
/// packet could not be counted to a flow (the slot's occupant could not be
/// evicted because the ring is full; the occupant stays).
#[inline(always)]
pub fn count_flow(
    c: &mut Counters,
    key: &FlowKey,
    direction: u8,
    (packets, len, ip_len): (u64, u64, u64),
    tcp_flags: u8,
    rtt: RttFields,
) -> Option<u64> {
    // The clock userspace publishes (10 ms resolution): no helper call on
    // the path of a packet (see CLOCK).
    // SAFETY: a global of 8 bytes; userspace writes it whole.
    let now = unsafe { read_volatile(&raw const CLOCK) };
    let slot = FLOW_SLOTS.get_ptr_mut(slot_index(key))?;
    // SAFETY: one of this CPU's slots (see slot_index), written by no other
    // CPU, and programs that count do not nest on one CPU.
    let slot = unsafe { &mut *slot };
    // An empty slot's key is all zero, which no parsed key is (ip_version
    // is 4 or 6), so a match is always an occupied slot.
    if same_key(&slot.key, key) {
        let v = &mut slot.value;
        let prior_flags = v.tcp_flags;
        v.packets += packets;
        v.bytes += len;
        v.ip_bytes += ip_len;
        v.last_seen_ns = now;
        v.tcp_flags = prior_flags | u32::from(tcp_flags);
        return Some(rtt::slot_step(slot, direction, rtt, prior_flags, tcp_flags));
    }
    // A new flow for this slot. An occupant first goes to this CPU's
    // eviction ring; when it has no room the occupant stays and this packet
    // is counted to no flow.
    if slot.seq != 0 && !evict(slot) {
        return None;
    }
    c.flow_records += 1;
    // Unique per CPU across both directions (each counts its own
    // flow_records): twice the count, plus the direction. Never 0.
    let seq = (c.flow_records << 1) | u64::from(direction);
    // seq_end first, seq last (see FlowSlot): a reader that sees the new
    // seq at the start of its copy sees the new key and value after it.
    // SAFETY: plain stores into this CPU's slot.
    unsafe {
        write_volatile(&raw mut slot.seq_end, seq);
        compiler_fence(Ordering::Release);
        slot.key = *key;
        slot.value = FlowValue {
            packets,
            bytes: len,
            ip_bytes: ip_len,
            first_seen_ns: now,
            last_seen_ns: now,
            tcp_flags: u32::from(tcp_flags),
            pad: 0,
        };
        // The passive-RTT state is the occupancy's own.
        slot.rtt_mark = 0;
        slot.rtt_pad = 0;
        compiler_fence(Ordering::Release);
        write_volatile(&raw mut slot.seq, seq);
    }
    Some(rtt::slot_step(slot, direction, rtt, 0, tcp_flags))
}

/// Moves a slot's occupant to this CPU's eviction ring (see `RingPos` in
/// netmon-common): the entry whole, then the head past it. False when the
/// ring has no room (nothing changed then).
#[inline(always)]
fn evict(slot: &FlowSlot) -> bool {
    // SAFETY: no preconditions; the verifier inlines it (x86-64, arm64).
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(pos) = EVICT_POS.get_ptr_mut(cpu) else {
        return false;
    };
    // SAFETY: globals in read-only data, set by userspace before load.
    let (mask, shift) = unsafe {
        (
            read_volatile(&raw const RING_MASK),
            read_volatile(&raw const RING_SHIFT),
        )
    };
    // SAFETY: this CPU's entry: the program writes only `head` (programs
    // that count do not nest on one CPU), userspace only `tail`; each a
    // single aligned word.
    let (head, tail) = unsafe {
        (
            read_volatile(&raw const (*pos).head),
            read_volatile(&raw const (*pos).tail),
        )
    };
    // Full, or a tail beyond the head (which userspace never writes): keep
    // the occupant.
    if head.wrapping_sub(tail) > u64::from(mask) {
        return false;
    }
    let Some(entry) = EVICTED.get_ptr_mut((cpu << shift) | (head as u32 & mask)) else {
        return false;
    };
    // The same order as a slot gets a new occupant (see FlowSlot), then the
    // head: a reader that sees the new head sees the whole entry (x86).
    // SAFETY: plain stores into this CPU's entry, which userspace reads
    // only below the head.
    unsafe {
        write_volatile(&raw mut (*entry).seq_end, slot.seq);
        compiler_fence(Ordering::Release);
        copy_words(&raw mut (*entry).key, &raw const slot.key);
        copy_words(&raw mut (*entry).value, &raw const slot.value);
        compiler_fence(Ordering::Release);
        write_volatile(&raw mut (*entry).seq, slot.seq);
        compiler_fence(Ordering::Release);
        write_volatile(&raw mut (*pos).head, head.wrapping_add(1));
    }
    true
}

/// Key equality as five word compares (`==` on the arrays becomes a call
/// to memcmp, which BPF has no room for).
#[inline(always)]
fn same_key(a: &FlowKey, b: &FlowKey) -> bool {
    let (a, b) = (a.words(), b.words());
    ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4])) == 0
}

/// Copies a `T` of whole words (the key, 40 bytes; the value, 48) a word
/// at a time. A plain assignment between two map values becomes a call to
/// memmove (the compiler cannot tell the values apart), which BPF has no
/// room for; volatile accesses stay single loads and stores.
///
/// # Safety
/// Both pointers must be valid and 8-aligned for a `T`.
#[inline(always)]
unsafe fn copy_words<T>(dst: *mut T, src: *const T) {
    const { assert!(size_of::<T>().is_multiple_of(8) && size_of::<T>() <= 64) };
    let (d, s) = (dst.cast::<u64>(), src.cast::<u64>());
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: the caller guarantees a valid T (whole words) at both.
        unsafe { write_volatile(d.add(i), read_volatile(s.add(i))) };
    }
}

/// The slot of `key` in this CPU's cache: a seeded multilinear hash of the
/// key's five words, masked to the slot count, in this CPU's part of the
/// array.
///
/// Each word, mixed with the seed and its high half folded into its low
/// half, is multiplied by its own odd constant and the products summed; one multiply-xorshift round then brings every
/// input bit into the high half, whose low bits pick the slot. The five
/// multiplies do not depend on one another, so the CPU runs them side by
/// side: about 12 cycles of latency where the five chained rounds of the
/// first design took about 30, a quarter of the whole program's time on
/// an established flow (`perf` samples of the JITed program, BENCHMARKS.md
/// "Where the time goes, instruction by instruction").
#[inline(always)]
fn slot_index(key: &FlowKey) -> u32 {
    const K: [u64; 5] = [
        0x9E37_79B9_7F4A_7C15,
        0xC2B2_AE3D_27D4_EB4F,
        0x1656_67B1_9E37_79F9,
        0xD6E8_FEB8_6659_FD93,
        0xFF51_AFD7_ED55_8CCD,
    ];
    // SAFETY: globals in read-only data, set by userspace before load.
    let (seeds, mask, shift) = unsafe {
        (
            read_volatile(&raw const HASH_SEEDS),
            read_volatile(&raw const SLOT_MASK),
            read_volatile(&raw const SLOT_SHIFT),
        )
    };
    // SAFETY: no preconditions; the verifier inlines it (x86-64, arm64).
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let w = key.words();
    let mut h: u64 = 0;
    for ((&x, k), seed) in w.iter().zip(K).zip(seeds) {
        let mut y = x ^ seed;
        // A multiply carries bits upward only: without this fold, keys
        // that differ in a word's top bits alone (the last bytes of an
        // IPv6 address) would differ only in the product's top bits, and
        // 1,000 such flows took 333-510 slots of 1,024 instead of ~639
        // (`the_slot_hash_spreads_flows_like_a_random_function`).
        y ^= y >> 32;
        h = h.wrapping_add(y.wrapping_mul(k));
    }
    h ^= h >> 29;
    h = h.wrapping_mul(K[0]);
    (cpu << shift) | ((h >> 32) as u32 & mask)
}
