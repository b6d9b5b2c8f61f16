//! netmon's XDP program: counts every frame in per-CPU totals and every IP
//! packet in a flow table, then passes it on untouched.
//!
//! Invariant: the program returns `XDP_PASS` for every input and never writes
//! to packet memory. Parsing failures only decide which counter a frame lands
//! in.
#![no_std]
#![no_main]
// Atomic adds on shared map values: core has no atomic RMW for the BPF
// target, so they are written as BPF's own `lock` instructions.
#![feature(asm_experimental_arch)]
// BPF calls between functions cost stack and verifier work; the per-packet
// path is inlined on purpose.
#![expect(clippy::inline_always, reason = "per-packet path, see above")]

use core::{arch::asm, mem::size_of, ptr::read_unaligned};

use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray},
    programs::XdpContext,
};
use aya_log_ebpf::warn;
use netmon_common::{
    Counters, DEFAULT_MAX_FLOWS, FlowKey, FlowValue, IP_V4, IP_V6, PROTO_ICMP, PROTO_ICMPV6,
    PROTO_TCP, PROTO_UDP, TCP_FIN, TCP_RST, TCP_SYN, size_class,
};

/// Slot 0 holds this CPU's [`Counters`].
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

/// Flow table, shared by all CPUs (values updated with atomic adds).
/// Userspace resizes it from `--max-flows` before load.
#[map(name = "FLOWS")]
static FLOWS: HashMap<FlowKey, FlowValue> = HashMap::with_max_entries(DEFAULT_MAX_FLOWS, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const VLAN_HLEN: usize = 4;
const IPV6_HLEN: usize = 40;
const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// Type, code, checksum.
const ICMP_MIN_HLEN: usize = 4;
/// Fragment offset bits of the IPv4 flags/fragment field.
const IPV4_FRAG_OFFSET: u16 = 0x1fff;
/// IPv6 extension headers walked before giving up (counted as other IP).
const MAX_IPV6_EXT: usize = 8;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;
const EEXIST: i32 = 17;

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

/// What the parser learned about one IP packet.
struct Parsed {
    key: FlowKey,
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
            match p.key.proto {
                _ if p.chain_too_long => c.other_ip += 1,
                PROTO_TCP => {
                    c.tcp += 1;
                    c.tcp_syn += u64::from(p.tcp_flags & TCP_SYN != 0);
                    c.tcp_fin += u64::from(p.tcp_flags & TCP_FIN != 0);
                    c.tcp_rst += u64::from(p.tcp_flags & TCP_RST != 0);
                }
                PROTO_UDP => c.udp += 1,
                PROTO_ICMP => c.icmp += 1,
                PROTO_ICMPV6 => c.icmpv6 += 1,
                _ => c.other_ip += 1,
            }
            if !count_flow(&p.key, len, p.tcp_flags) {
                c.flow_insert_failed += 1;
                if c.flow_insert_failed == 1 {
                    // Once per CPU: the first packet this CPU could not track.
                    warn!(ctx, "flow table full: new flows are counted in totals only");
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

#[inline(always)]
fn classify(ctx: &XdpContext) -> Result<L3, Stop> {
    let mut offset = ETH_HLEN;
    let mut ether_type = read_be16(ctx, 12)?;
    // Up to two VLAN tags (802.1Q, or 802.1ad outer + 802.1Q inner).
    for _ in 0..2 {
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            ether_type = read_be16(ctx, offset + 2)?;
            offset += VLAN_HLEN;
        }
    }
    match ether_type {
        ETH_P_IP => parse_ipv4(ctx, offset).map(L3::Ip),
        ETH_P_IPV6 => parse_ipv6(ctx, offset).map(L3::Ip),
        ETH_P_ARP => Ok(L3::Arp),
        _ => Ok(L3::OtherL2),
    }
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
    let hdr: [u8; 20] = read(ctx, l3)?;
    let ihl = usize::from(hdr[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
    // Lying lengths: a header shorter than 20 bytes, a packet shorter than
    // its header, or longer than the frame (truncated). A frame may be
    // longer than the packet (Ethernet padding): the packet ends at total_len.
    if hdr[0] >> 4 != 4 || ihl < 20 || total_len < ihl || l3 + total_len > frame_len(ctx) {
        return Err(Stop::Malformed);
    }
    let frag = u16::from_be_bytes([hdr[6], hdr[7]]);
    let mut key = FlowKey {
        ip_version: IP_V4,
        proto: hdr[9],
        ..FlowKey::default()
    };
    key.src[..4].copy_from_slice(&hdr[12..16]);
    key.dst[..4].copy_from_slice(&hdr[16..20]);
    // Only the first fragment (offset 0) carries the L4 header; later
    // fragments count towards the flow with ports 0.
    let tcp_flags = if frag & IPV4_FRAG_OFFSET == 0 {
        parse_l4(ctx, l3 + ihl, l3 + total_len, &mut key)?
    } else {
        0
    };
    Ok(Parsed {
        key,
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
    let mut key = FlowKey {
        ip_version: IP_V6,
        src: read(ctx, l3 + 8)?,
        dst: read(ctx, l3 + 24)?,
        ..FlowKey::default()
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
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT
        );
    key.proto = next;
    let tcp_flags = if done && first_fragment {
        parse_l4(ctx, offset, end, &mut key)?
    } else {
        0
    };
    Ok(Parsed {
        key,
        tcp_flags,
        chain_too_long: !done,
    })
}

/// Fills in the ports of TCP and UDP and returns the TCP flags. The L4
/// header must fit both the frame and the IP packet (which ends at `end`).
#[inline(always)]
fn parse_l4(ctx: &XdpContext, l4: usize, end: usize, key: &mut FlowKey) -> Result<u8, Stop> {
    let need = match key.proto {
        PROTO_TCP => TCP_MIN_HLEN,
        PROTO_UDP => UDP_HLEN,
        PROTO_ICMP | PROTO_ICMPV6 => ICMP_MIN_HLEN,
        _ => return Ok(0),
    };
    if l4 + need > end {
        return Err(Stop::Malformed);
    }
    match key.proto {
        PROTO_TCP => {
            let tcp: [u8; TCP_MIN_HLEN] = read(ctx, l4)?;
            key.sport_be = u16::from_ne_bytes([tcp[0], tcp[1]]);
            key.dport_be = u16::from_ne_bytes([tcp[2], tcp[3]]);
            Ok(tcp[13])
        }
        PROTO_UDP => {
            let udp: [u8; UDP_HLEN] = read(ctx, l4)?;
            key.sport_be = u16::from_ne_bytes([udp[0], udp[1]]);
            key.dport_be = u16::from_ne_bytes([udp[2], udp[3]]);
            Ok(0)
        }
        _ => {
            ptr_at::<[u8; ICMP_MIN_HLEN]>(ctx, l4)?;
            Ok(0)
        }
    }
}

/// Adds one packet to its flow. Returns false when the flow is new and the
/// table has no room for it.
#[inline(always)]
fn count_flow(key: &FlowKey, len: u64, tcp_flags: u8) -> bool {
    // The coarse clock (one tick, a few ms, of resolution; Linux 5.11+)
    // costs about 14 ns less per packet than bpf_ktime_get_ns, and flow
    // first/last-seen times need no finer grain.
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if let Some(v) = FLOWS.get_ptr_mut(key) {
        add(v, len, tcp_flags, now);
        return true;
    }
    let fresh = FlowValue {
        packets: 1,
        bytes: len,
        first_seen_ns: now,
        last_seen_ns: now,
        tcp_flags: u32::from(tcp_flags),
        pad: 0,
    };
    match FLOWS.insert(key, fresh, u64::from(BPF_NOEXIST)) {
        Ok(()) => true,
        // Another CPU inserted the same flow in between: add to its entry.
        Err(e) if e == -EEXIST => match FLOWS.get_ptr_mut(key) {
            Some(v) => {
                add(v, len, tcp_flags, now);
                true
            }
            None => false,
        },
        Err(_) => false,
    }
}

#[inline(always)]
fn add(v: *mut FlowValue, len: u64, tcp_flags: u8, now: u64) {
    // SAFETY: v points at a live map value (the kernel keeps it valid for
    // the program's run); the counters are only touched through atomics, so
    // concurrent CPUs never lose an update.
    unsafe {
        atomic_add(&raw mut (*v).packets, 1);
        atomic_add(&raw mut (*v).bytes, len);
        // Last writer wins; CPUs disagree by nanoseconds at most.
        (*v).last_seen_ns = now;
        let flags = u32::from(tcp_flags);
        if (*v).tcp_flags & flags != flags {
            atomic_or(&raw mut (*v).tcp_flags, flags);
        }
    }
}

/// `*p += v` as one BPF atomic instruction (`BPF_ATOMIC | BPF_ADD`).
///
/// # Safety
/// `p` must point at a live, 8-byte aligned map value field.
#[inline(always)]
unsafe fn atomic_add(p: *mut u64, v: u64) {
    // SAFETY: the caller guarantees p is valid; the instruction touches only *p.
    unsafe { asm!("lock *(u64 *)({p} + 0) += {v}", p = in(reg) p, v = in(reg) v) };
}

/// `*p |= v` as one BPF atomic instruction (`BPF_ATOMIC | BPF_OR`, Linux 5.12+).
///
/// # Safety
/// `p` must point at a live, 4-byte aligned map value field.
#[inline(always)]
unsafe fn atomic_or(p: *mut u32, v: u32) {
    // SAFETY: the caller guarantees p is valid; the instruction touches only *p.
    unsafe { asm!("lock *(u32 *)({p} + 0) |= {v}", p = in(reg) p, v = in(wreg) v) };
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
