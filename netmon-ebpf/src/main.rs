//! netmon's XDP program: counts every frame in per-CPU totals and every IP
//! packet in a flow table, then passes it on untouched.
//!
//! Invariant: the program returns `XDP_PASS` for every input and never writes
//! to packet memory. Parsing failures only decide which counter a frame lands
//! in.
#![no_std]
#![no_main]
// BPF calls between functions cost stack and verifier work; the per-packet
// path is inlined on purpose.
#![expect(clippy::inline_always, reason = "per-packet path, see above")]

use core::{
    mem::size_of,
    ptr::{read_unaligned, read_volatile, write_unaligned, write_volatile},
    sync::atomic::{Ordering, compiler_fence},
};

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_get_smp_processor_id,
    macros::{map, xdp},
    maps::{Array, PerCpuArray, ProgramArray, RingBuf},
    programs::XdpContext,
};
use aya_log_ebpf::warn;
use netmon_common::{
    BENCH_NEW_FLOW_OFFSET, Counters, DEFAULT_EVICTED_BYTES, DEFAULT_SLOTS_PER_CPU, EVICT_BATCH,
    EvictBatch, FlowKey, FlowSlot, FlowValue, IP_V4, IP_V6, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP,
    PROTO_UDP, Pending, TCP_FIN, TCP_RST, TCP_SYN, size_class,
};

/// Slot 0 holds this CPU's [`Counters`].
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

/// Every CPU's flow cache: direct-mapped slots, CPU `c`'s at
/// `c << SLOT_SHIFT`, see [`FlowSlot`] and `FLOW_SLOTS_MAP`. One plain,
/// page-aligned array rather than a per-CPU array: its lookup is inlined to
/// a bounds check and a multiply, and each 96-byte slot spans exactly two
/// cache lines. Each CPU writes only its own slots. Userspace sizes it
/// before load.
#[map(name = "FLOW_SLOTS")]
static FLOW_SLOTS: Array<FlowSlot> =
    Array::with_max_entries(DEFAULT_SLOTS_PER_CPU, netmon_common::BPF_F_MMAPABLE);

/// Each CPU's evictions not yet in the ring (one entry, see [`Pending`]).
#[map(name = "PENDING")]
static PENDING: PerCpuArray<Pending> = PerCpuArray::with_max_entries(1, 0);

/// Occupants pushed out of a slot, with their final counts, for userspace,
/// [`EVICT_BATCH`] to a record. BPF ring buffer: Linux 5.8.
#[map(name = "EVICTED")]
static EVICTED: RingBuf = RingBuf::with_byte_size(DEFAULT_EVICTED_BYTES, 0);

/// The time flows are stamped with: kernel monotonic ns, written by
/// userspace every 10 ms (entry 0). A lookup in a plain array is inlined by
/// the verifier, so reading it is two loads and no helper call.
#[map(name = "CLOCK")]
static CLOCK: Array<u64> = Array::with_max_entries(1, 0);

/// `bpf_ringbuf_output` flag: no wakeup of a waiting reader. netmon reads
/// the ring on a 10 ms timer, never waits on it; a wakeup would cost an
/// interrupt (irq_work) per record sent to an empty ring.
const BPF_RB_NO_WAKEUP: u64 = 1;

/// Slots per CPU minus one. Set by userspace at load time.
#[unsafe(no_mangle)]
static SLOT_MASK: u32 = DEFAULT_SLOTS_PER_CPU - 1;

/// log2 of the slots per CPU. Set by userspace at load time.
#[unsafe(no_mangle)]
static SLOT_SHIFT: u32 = DEFAULT_SLOTS_PER_CPU.trailing_zeros();

/// Seed of the slot hash. Set by userspace at load time.
#[unsafe(no_mangle)]
static HASH_SEED: u64 = 0;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const ETH_P_MPLS_UC: u16 = 0x8847;
const ETH_P_MPLS_MC: u16 = 0x8848;
/// PPPoE session stage (RFC 2516); discovery (0x8863) is other L2.
const ETH_P_PPP_SES: u16 = 0x8864;
const VLAN_HLEN: usize = 4;
/// VLAN tags (802.1Q or 802.1ad, in any order) stepped over; a fifth tag
/// leaves the frame "other L2".
const MAX_VLAN_TAGS: usize = 4;
/// One MPLS label stack entry (RFC 3032).
const MPLS_HLEN: usize = 4;
/// Bottom-of-stack bit, in byte 2 of a label stack entry.
const MPLS_BOS: u8 = 0x01;
/// MPLS label stack entries read; a stack without bottom-of-stack within
/// them is "other L2" (nothing past the eighth entry is read).
const MAX_MPLS_LABELS: usize = 8;
/// PPPoE header (version/type, code, session, length) and the PPP protocol.
const PPPOE_HLEN: usize = 8;
/// PPPoE version 1, type 1; code 0 (session data).
const PPPOE_VER_TYPE: u8 = 0x11;
const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;
const IPV6_HLEN: usize = 40;
const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// Type, code, checksum.
const ICMP_MIN_HLEN: usize = 4;
/// Fragment offset bits of the IPv4 flags/fragment field.
const IPV4_FRAG_OFFSET: u16 = 0x1fff;
/// IPv6 extension headers (hop-by-hop, routing, fragment, destination
/// options, AH) walked before giving up (counted as other IP).
const MAX_IPV6_EXT: usize = 8;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;
/// Authentication Header (RFC 4302): (length + 2) * 4 bytes.
const IPPROTO_AH: u8 = 51;

#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro fixes the signature"
)]
pub fn netmon_xdp(ctx: XdpContext) -> u32 {
    // Whatever happens while counting, the frame goes on: a monitor never
    // drops traffic.
    let _ = try_netmon(&ctx);
    xdp_action::XDP_PASS
}

/// A program that only passes the frame: the floor that `cargo xtask bench
/// xdp` subtracts from netmon's cost (BPF_PROG_TEST_RUN's own overhead).
/// Never attached.
#[xdp]
pub fn netmon_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The generator of `cargo xtask bench veth`: run with
/// `BPF_F_TEST_XDP_LIVE_FRAMES` on one end of a veth pair, it sends every
/// frame out of that end to the peer (where netmon's program sees it as a
/// native XDP frame). Never attached.
#[xdp]
pub fn netmon_bench_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

/// Addresses [`netmon_bench_new_flow`] cycles through (0: no cycle, a new
/// address every run). Set by the bench at load time.
#[unsafe(no_mangle)]
static BENCH_CYCLE: u32 = 0;

/// First address of the cycle, host order. Set by the bench at load time.
#[unsafe(no_mangle)]
static BENCH_CYCLE_BASE: u32 = 0;

/// Tail-call target of [`netmon_bench_new_flow`], set by the bench.
#[map(name = "BENCH_TAIL")]
static BENCH_TAIL: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// The `new_flow` driver of `cargo xtask bench xdp`: adds one to the IPv4
/// source address of the frame in place, so that every run of a repeated
/// test run carries a flow not seen before (or, for `cargo xtask bench
/// flows`, moves it round robin through [`BENCH_CYCLE`] addresses), then
/// tail-calls netmon's program (or the floor, for the driver's own cost). The only program here that
/// writes to a frame; never attached.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro fixes the signature"
)]
pub fn netmon_bench_new_flow(ctx: XdpContext) -> u32 {
    if let Ok(p) = ptr_at::<u32>(&ctx, BENCH_NEW_FLOW_OFFSET) {
        let p = p.cast_mut();
        // SAFETY: globals in read-only data, set by the bench before load.
        let (cycle, base) = unsafe {
            (
                read_volatile(&raw const BENCH_CYCLE),
                read_volatile(&raw const BENCH_CYCLE_BASE),
            )
        };
        // SAFETY: ptr_at checked the 4 bytes; test runs own their frame.
        let raw = unsafe { read_unaligned(p) };
        let next = if cycle == 0 {
            raw.wrapping_add(1)
        } else {
            // The next address of the cycle, round robin.
            let offset = u32::from_be(raw).wrapping_sub(base).wrapping_add(1) % cycle;
            base.wrapping_add(offset).to_be()
        };
        // SAFETY: as above.
        unsafe { write_unaligned(p, next) };
    }
    // SAFETY: entry 0 holds an XDP program (or nothing: then this returns).
    unsafe { BENCH_TAIL.tail_call(&ctx, 0) };
    xdp_action::XDP_PASS
}

/// Why a frame could not be parsed to the end.
enum Stop {
    /// A header runs past the end of the frame, or a length field lies.
    Malformed,
}

/// Pointer to a `T` at `offset` bytes into the frame, if the frame is long
/// enough to hold it. The one bounds check every packet read goes through.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, Stop> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(Stop::Malformed);
    }
    Ok((start + offset) as *const T)
}

/// Reads a `T` (an integer or byte array) at `offset`. Packet data carries no
/// alignment guarantee, hence `read_unaligned`.
#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, Stop> {
    let p = ptr_at::<T>(ctx, offset)?;
    // SAFETY: ptr_at checked that size_of::<T>() bytes at p are in the frame.
    Ok(unsafe { read_unaligned(p) })
}

#[inline(always)]
fn read_be16(ctx: &XdpContext, offset: usize) -> Result<u16, Stop> {
    read::<u16>(ctx, offset).map(u16::from_be)
}

/// Reads a `T` at `offset` bytes past `p`, a pointer into the frame whose
/// bounds the caller has checked with [`ptr_at`].
///
/// # Safety
/// `offset + size_of::<T>()` bytes from `p` must lie within the frame.
#[inline(always)]
unsafe fn load<T: Copy>(p: *const u8, offset: usize) -> T {
    // SAFETY: the caller guarantees the bytes are in the frame. With
    // allows-misaligned-mem-access (.cargo/config.toml) this is one load.
    unsafe { read_unaligned(p.add(offset).cast::<T>()) }
}

/// Word 4 of a key (see [`FlowKey::from_words`]) without the ports.
#[inline(always)]
fn proto_word(ip_version: u8, proto: u8) -> u64 {
    (u64::from(ip_version) << 40) | (u64::from(proto) << 32)
}

/// What the parser learned about one IP packet.
struct Parsed {
    /// The flow key as [`FlowKey::words`]: built a word at a time, which the
    /// compiler keeps in registers (byte arrays end up byte by byte).
    key: [u64; 5],
    proto: u8,
    /// TCP flags (byte 13 of the TCP header) or 0.
    tcp_flags: u8,
    /// IPv6 whose extension-header chain was longer than we walk.
    chain_too_long: bool,
}

#[inline(always)]
fn try_netmon(ctx: &XdpContext) -> Result<(), ()> {
    let counters = COUNTERS.get_ptr_mut(0).ok_or(())?;
    // SAFETY: slot 0 of a per-CPU array: this CPU's copy, not shared, and XDP
    // programs do not nest on one CPU.
    let c = unsafe { &mut *counters };
    let len = (ctx.data_end() - ctx.data()) as u64;
    c.packets += 1;
    c.bytes += len;
    c.size_classes[size_class(len as u32)] += 1;

    match classify(ctx) {
        Ok(L3::Arp) => c.arp += 1,
        Ok(L3::OtherL2) => c.other_l2 += 1,
        Ok(L3::Ip(p)) => {
            match p.proto {
                _ if p.chain_too_long => c.other_ip += 1,
                PROTO_TCP => {
                    c.tcp += 1;
                    // Most segments carry none of the three.
                    if p.tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0 {
                        c.tcp_syn += u64::from(p.tcp_flags & TCP_SYN != 0);
                        c.tcp_fin += u64::from(p.tcp_flags & TCP_FIN != 0);
                        c.tcp_rst += u64::from(p.tcp_flags & TCP_RST != 0);
                    }
                }
                PROTO_UDP => c.udp += 1,
                PROTO_ICMP => c.icmp += 1,
                PROTO_ICMPV6 => c.icmpv6 += 1,
                _ => c.other_ip += 1,
            }
            if !count_flow(c, &FlowKey::from_words(p.key), len, p.tcp_flags) {
                c.flow_insert_failed += 1;
                if c.flow_insert_failed == 1 {
                    // Once per CPU: the first packet this CPU could not track.
                    warn!(
                        ctx,
                        "flow eviction ring full: packets of new flows are counted in totals only"
                    );
                }
            }
        }
        Err(Stop::Malformed) => c.malformed += 1,
    }
    Ok(())
}

enum L3 {
    Ip(Parsed),
    Arp,
    OtherL2,
}

/// What the link layer carries, found by [`link`].
enum Net {
    Ipv4,
    Ipv6,
    Arp,
    Other,
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> Result<L3, Stop> {
    // One call site per network parser, whatever the encapsulation: the
    // parsers are inlined, so a copy per path would multiply the code.
    let (net, l3) = link(ctx)?;
    match net {
        Net::Ipv4 => parse_ipv4(ctx, l3).map(L3::Ip),
        Net::Ipv6 => parse_ipv6(ctx, l3).map(L3::Ip),
        Net::Arp => Ok(L3::Arp),
        Net::Other => Ok(L3::OtherL2),
    }
}

/// The link layer: Ethernet, up to [`MAX_VLAN_TAGS`] VLAN tags, then
/// either the network layer (IPv4, IPv6, ARP), an MPLS label stack or a
/// PPPoE session header in front of IP. Returns what follows and its offset.
/// Accepted: Ethernet, VLAN tags*, (MPLS | PPPoE)?, IP. Nothing is stepped
/// over after MPLS or PPPoE (no VLAN tag, no Ethernet pseudowire).
#[inline(always)]
fn link(ctx: &XdpContext) -> Result<(Net, usize), Stop> {
    let mut offset = ETH_HLEN;
    let mut ether_type = read_be16(ctx, 12)?;
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        ether_type = read_be16(ctx, offset + 2)?;
        offset += VLAN_HLEN;
    }
    let net = match ether_type {
        ETH_P_IP => Net::Ipv4,
        ETH_P_IPV6 => Net::Ipv6,
        ETH_P_ARP => Net::Arp,
        ETH_P_MPLS_UC | ETH_P_MPLS_MC => return mpls(ctx, offset),
        ETH_P_PPP_SES => return pppoe(ctx, offset),
        // Includes a tag after the fourth.
        _ => Net::Other,
    };
    Ok((net, offset))
}

/// An MPLS label stack at `offset`: up to [`MAX_MPLS_LABELS`] entries, the
/// last with bottom-of-stack set, then IP, told apart by the first nibble
/// (4 or 6; anything else, e.g. a pseudowire control word, is other L2).
/// An entry or the first payload byte cut off is malformed; a stack with no
/// bottom-of-stack in its first eight entries is other L2.
#[inline(always)]
fn mpls(ctx: &XdpContext, mut offset: usize) -> Result<(Net, usize), Stop> {
    for _ in 0..MAX_MPLS_LABELS {
        let entry: [u8; MPLS_HLEN] = read(ctx, offset)?;
        offset += MPLS_HLEN;
        if entry[2] & MPLS_BOS != 0 {
            let first: u8 = read(ctx, offset)?;
            let net = match first >> 4 {
                4 => Net::Ipv4,
                6 => Net::Ipv6,
                _ => Net::Other,
            };
            return Ok((net, offset));
        }
    }
    Ok((Net::Other, offset))
}

/// A PPPoE session header and PPP protocol at `offset` (8 bytes, else
/// malformed). Version/type 0x11, code 0 and protocol 0x0021 (IPv4) or
/// 0x0057 (IPv6) go on to IP; anything else is other L2. The PPPoE length
/// field is not checked: the IP header's own length decides, as for
/// untagged frames.
#[inline(always)]
fn pppoe(ctx: &XdpContext, offset: usize) -> Result<(Net, usize), Stop> {
    let h: [u8; PPPOE_HLEN] = read(ctx, offset)?;
    let net = if h[0] != PPPOE_VER_TYPE || h[1] != 0 {
        Net::Other
    } else {
        match u16::from_be_bytes([h[6], h[7]]) {
            PPP_IPV4 => Net::Ipv4,
            PPP_IPV6 => Net::Ipv6,
            _ => Net::Other,
        }
    };
    Ok((net, offset + PPPOE_HLEN))
}

/// Length of the frame in bytes, for checks of the lengths that headers
/// claim. `black_box` keeps LLVM from using these scalar checks to prove a
/// later `ptr_at` bounds check redundant: the verifier only trusts
/// comparisons of packet pointers, so every `ptr_at` check must stay.
#[inline(always)]
fn frame_len(ctx: &XdpContext) -> usize {
    core::hint::black_box(ctx.data_end() - ctx.data())
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l3: usize) -> Result<Parsed, Stop> {
    // Fixed part of the header: version/IHL .. destination address.
    let h = ptr_at::<[u8; 20]>(ctx, l3)?.cast::<u8>();
    // SAFETY: ptr_at checked the 20 bytes.
    let (w0, w1, proto, src, dst) = unsafe {
        (
            load::<u32>(h, 0),
            load::<u32>(h, 4),
            load::<u8>(h, 9),
            load::<u32>(h, 12),
            load::<u32>(h, 16),
        )
    };
    // Little-endian loads: byte 0 is the low byte.
    let version_ihl = w0 as u8;
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    let total_len = usize::from(u16::from_be((w0 >> 16) as u16));
    // Lying lengths: a header shorter than 20 bytes, a packet shorter than
    // its header, or longer than the frame (truncated). A frame may be
    // longer than the packet (Ethernet padding): the packet ends at total_len.
    if version_ihl >> 4 != 4 || ihl < 20 || total_len < ihl || l3 + total_len > frame_len(ctx) {
        return Err(Stop::Malformed);
    }
    let frag = u16::from_be((w1 >> 16) as u16);
    let mut key = [
        u64::from(src),
        0,
        u64::from(dst),
        0,
        proto_word(IP_V4, proto),
    ];
    // Only the first fragment (offset 0) carries the L4 header; later
    // fragments count towards the flow with ports 0.
    let tcp_flags = if frag & IPV4_FRAG_OFFSET == 0 {
        parse_l4(ctx, l3 + ihl, l3 + total_len, proto, &mut key[4])?
    } else {
        0
    };
    Ok(Parsed {
        key,
        proto,
        tcp_flags,
        chain_too_long: false,
    })
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l3: usize) -> Result<Parsed, Stop> {
    let hdr: [u8; 8] = read(ctx, l3)?;
    let payload_len = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
    let frame = frame_len(ctx);
    // Payload length 0 is a jumbogram (RFC 2675): the frame says how long.
    let end = if payload_len == 0 {
        frame
    } else {
        l3 + IPV6_HLEN + payload_len
    };
    if hdr[0] >> 4 != 6 || end > frame || l3 + IPV6_HLEN > end {
        return Err(Stop::Malformed);
    }
    let mut next = hdr[6];
    let a = ptr_at::<[u8; 32]>(ctx, l3 + 8)?.cast::<u8>();
    // SAFETY: ptr_at checked the 32 bytes of the two addresses.
    let mut key = unsafe {
        [
            load::<u64>(a, 0),
            load::<u64>(a, 8),
            load::<u64>(a, 16),
            load::<u64>(a, 24),
            0,
        ]
    };
    let mut offset = l3 + IPV6_HLEN;
    let mut first_fragment = true;
    let mut done = false;
    for _ in 0..MAX_IPV6_EXT {
        let len = match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let ext: [u8; 2] = read(ctx, offset)?;
                next = ext[0];
                (usize::from(ext[1]) + 1) * 8
            }
            IPPROTO_FRAGMENT => {
                let ext: [u8; 4] = read(ctx, offset)?;
                next = ext[0];
                // Fragment offset: the high 13 bits of bytes 2-3.
                first_fragment = u16::from_be_bytes([ext[2], ext[3]]) >> 3 == 0;
                8
            }
            IPPROTO_AH => {
                let ext: [u8; 2] = read(ctx, offset)?;
                next = ext[0];
                // RFC 4302: the length is in 4-byte words, minus 2.
                (usize::from(ext[1]) + 2) * 4
            }
            _ => {
                done = true;
                break;
            }
        };
        offset += len;
        if offset > end {
            return Err(Stop::Malformed);
        }
    }
    // Eight extension headers followed by an upper-layer header is a chain
    // walked to its end: only an extension header after the eighth is too
    // long.
    let done = done
        || !matches!(
            next,
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT | IPPROTO_AH
        );
    key[4] = proto_word(IP_V6, next);
    let tcp_flags = if done && first_fragment {
        parse_l4(ctx, offset, end, next, &mut key[4])?
    } else {
        0
    };
    Ok(Parsed {
        key,
        proto: next,
        tcp_flags,
        chain_too_long: !done,
    })
}

/// Adds the ports of TCP and UDP to `word` (word 4 of the key) and returns
/// the TCP flags. The L4 header must fit both the frame and the IP packet
/// (which ends at `end`).
#[inline(always)]
fn parse_l4(
    ctx: &XdpContext,
    l4: usize,
    end: usize,
    proto: u8,
    word: &mut u64,
) -> Result<u8, Stop> {
    let need = match proto {
        PROTO_TCP => TCP_MIN_HLEN,
        PROTO_UDP => UDP_HLEN,
        PROTO_ICMP | PROTO_ICMPV6 => ICMP_MIN_HLEN,
        _ => return Ok(0),
    };
    if l4 + need > end {
        return Err(Stop::Malformed);
    }
    match proto {
        PROTO_TCP => {
            let t = ptr_at::<[u8; TCP_MIN_HLEN]>(ctx, l4)?.cast::<u8>();
            // SAFETY: ptr_at checked the 20 bytes. The ports go in as they
            // are on the wire (source port, destination port).
            let (ports, flags) = unsafe { (load::<u32>(t, 0), load::<u8>(t, 13)) };
            *word |= u64::from(ports);
            Ok(flags)
        }
        PROTO_UDP => {
            let u = ptr_at::<[u8; UDP_HLEN]>(ctx, l4)?.cast::<u8>();
            // SAFETY: ptr_at checked the 8 bytes.
            *word |= u64::from(unsafe { load::<u32>(u, 0) });
            Ok(0)
        }
        _ => {
            ptr_at::<[u8; ICMP_MIN_HLEN]>(ctx, l4)?;
            Ok(0)
        }
    }
}

/// Adds one packet to its flow in this CPU's cache. Returns false when the
/// packet could not be counted to a flow (the slot's occupant could not be
/// evicted because the ring is full; the occupant stays).
#[inline(always)]
fn count_flow(c: &mut Counters, key: &FlowKey, len: u64, tcp_flags: u8) -> bool {
    // The clock userspace publishes (10 ms resolution): no helper call on
    // the path of a packet (see CLOCK).
    let now = match CLOCK.get_ptr(0) {
        // SAFETY: entry 0 of an array, 8 bytes; userspace writes it whole.
        Some(t) => unsafe { read_volatile(t) },
        None => 0,
    };
    let Some(slot) = FLOW_SLOTS.get_ptr_mut(slot_index(key)) else {
        return false;
    };
    // SAFETY: one of this CPU's slots (see slot_index), written by no other
    // CPU, and XDP programs do not nest on one CPU.
    let slot = unsafe { &mut *slot };
    // An empty slot's key is all zero, which no parsed key is (ip_version
    // is 4 or 6), so a match is always an occupied slot.
    if same_key(&slot.key, key) {
        let v = &mut slot.value;
        v.packets += 1;
        v.bytes += len;
        v.last_seen_ns = now;
        v.tcp_flags |= u32::from(tcp_flags);
        return true;
    }
    // A new flow for this slot. An occupant first goes to this CPU's
    // pending evictions (and from there, a batch at a time, to the ring);
    // when neither has room it stays and this packet is counted to no flow.
    if slot.seq != 0 && !evict(slot) {
        return false;
    }
    c.flow_records += 1;
    let seq = c.flow_records;
    // seq_end first, seq last (see FlowSlot): a reader that sees the new
    // seq at the start of its copy sees the new key and value after it.
    // SAFETY: plain stores into this CPU's slot.
    unsafe {
        write_volatile(&raw mut slot.seq_end, seq);
        compiler_fence(Ordering::Release);
        slot.key = *key;
        slot.value = FlowValue {
            packets: 1,
            bytes: len,
            first_seen_ns: now,
            last_seen_ns: now,
            tcp_flags: u32::from(tcp_flags),
            pad: 0,
        };
        compiler_fence(Ordering::Release);
        write_volatile(&raw mut slot.seq, seq);
    }
    true
}

/// Moves a slot's occupant to this CPU's pending evictions, first sending
/// them to the ring as one batch when they are full. False when the ring has
/// no room (nothing changed then).
#[inline(always)]
fn evict(slot: &FlowSlot) -> bool {
    let Some(p) = PENDING.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's entry of a per-CPU array, as for the slots.
    let p = unsafe { &mut *p };
    let mut n = p.count as usize;
    if n >= EVICT_BATCH {
        // count goes to 0 before the batch is visible in the ring (see
        // Pending).
        // SAFETY: plain stores into this CPU's entry.
        unsafe { write_volatile(&raw mut p.count, 0) };
        compiler_fence(Ordering::Release);
        p.batch.count = EVICT_BATCH as u32;
        // SAFETY: no preconditions.
        p.batch.cpu = unsafe { bpf_get_smp_processor_id() };
        if EVICTED
            .output::<EvictBatch>(&p.batch, BPF_RB_NO_WAKEUP)
            .is_err()
        {
            // SAFETY: as above.
            unsafe { write_volatile(&raw mut p.count, EVICT_BATCH as u64) };
            return false;
        }
        n = 0;
    }
    let Some(entry) = p.batch.slots.get_mut(n) else {
        return false;
    };
    // The same order as a slot gets a new occupant (see FlowSlot).
    // SAFETY: plain stores into this CPU's entry.
    unsafe {
        write_volatile(&raw mut entry.seq_end, slot.seq);
        compiler_fence(Ordering::Release);
        copy_words(&raw mut entry.key, &raw const slot.key);
        copy_words(&raw mut entry.value, &raw const slot.value);
        compiler_fence(Ordering::Release);
        write_volatile(&raw mut entry.seq, slot.seq);
        compiler_fence(Ordering::Release);
        write_volatile(&raw mut p.count, n as u64 + 1);
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

/// Copies a 40-byte `T` a word at a time. A plain assignment between two map
/// values becomes a call to memmove (the compiler cannot tell the values
/// apart), which BPF has no room for; volatile accesses stay single loads
/// and stores.
///
/// # Safety
/// Both pointers must be valid, 8-aligned and 40 bytes long.
#[inline(always)]
unsafe fn copy_words<T>(dst: *mut T, src: *const T) {
    const { assert!(size_of::<T>() == 40) };
    let (d, s) = (dst.cast::<u64>(), src.cast::<u64>());
    for i in 0..5 {
        // SAFETY: the caller guarantees 40 valid bytes at both.
        unsafe { write_volatile(d.add(i), read_volatile(s.add(i))) };
    }
}

/// The slot of `key` in this CPU's cache: a seeded multiply-xorshift hash of
/// the key's five words, masked to the slot count, in this CPU's part of the
/// array.
#[inline(always)]
fn slot_index(key: &FlowKey) -> u32 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    // SAFETY: globals in read-only data, set by userspace before load.
    let (seed, mask, shift) = unsafe {
        (
            read_volatile(&raw const HASH_SEED),
            read_volatile(&raw const SLOT_MASK),
            read_volatile(&raw const SLOT_SHIFT),
        )
    };
    // SAFETY: no preconditions; the verifier inlines it (x86-64, arm64).
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let w = key.words();
    let mut h = seed;
    for &x in w {
        h = (h ^ x).wrapping_mul(K);
        h ^= h >> 29;
    }
    (cpu << shift) | ((h >> 32) as u32 & mask)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a real panic, so this
    // is never called; looping satisfies the `!` type without UB.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
