//! Types shared by the XDP program (`netmon-ebpf`) and userspace (`netmon`).
//!
//! Everything here is `#[repr(C)]`, `Copy`, and laid out without implicit
//! padding, so the kernel and userspace agree on every byte of a map key or
//! value. The `user` feature adds the `aya::Pod` impls that userspace needs.
#![no_std]

use core::mem::size_of;

/// Name of the XDP program inside the eBPF object.
pub const XDP_PROGRAM: &str = "netmon_xdp";
/// A program in the same object that only returns `XDP_PASS`: the
/// benchmark floor. Never attached.
pub const XDP_FLOOR_PROGRAM: &str = "netmon_floor";
/// A program in the same object that returns `XDP_TX`: the traffic
/// generator of `cargo xtask bench veth` (live-frames test runs). Never
/// attached.
pub const XDP_BENCH_TX_PROGRAM: &str = "netmon_bench_tx";
/// Name of the per-CPU array holding one [`Counters`] per CPU.
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the flow hash map ([`FlowKey`] -> [`FlowValue`]).
pub const FLOWS_MAP: &str = "FLOWS";
/// Default capacity of the flow table; `--max-flows` resizes it before load.
pub const DEFAULT_MAX_FLOWS: u32 = 65_536;

/// `FlowKey::ip_version` values.
pub const IP_V4: u8 = 4;
pub const IP_V6: u8 = 6;

/// IP protocol numbers the program looks into.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// TCP flag bits as they appear in byte 13 of the TCP header.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;

/// Key of the flow table: one direction of one conversation.
///
/// Addresses are stored as they appear on the wire; an IPv4 address fills the
/// first 4 bytes and the rest stay zero. Ports are in network byte order
/// (the program copies them without swapping); for ICMP and for non-first
/// IPv4 fragments they are 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    /// [`IP_V4`] or [`IP_V6`].
    pub ip_version: u8,
    /// Explicit padding to 40 bytes; always zero so equal flows hash equally.
    pub pad: [u8; 2],
}

/// Value of the flow table. Updated with atomic adds from every CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub packets: u64,
    /// Sum of L2 frame lengths (Ethernet header included, FCS excluded).
    pub bytes: u64,
    /// `bpf_ktime_get_coarse_ns()` (`CLOCK_MONOTONIC_COARSE`, resolution one
    /// kernel tick) of the first and last packet.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// OR of the TCP flags seen (0 for other protocols). A u32 so the
    /// kernel can update it with an atomic OR (BPF atomics are 32/64-bit).
    pub tcp_flags: u32,
    pub pad: u32,
}

/// Frame-size classes of RFC 2819 (etherStatsPkts*Octets), by L2 length
/// without FCS: the RFC's 64 octets include the 4-byte FCS, so the class
/// bounds here are 4 lower.
pub const SIZE_CLASSES: usize = 7;
pub const SIZE_CLASS_LABELS: [&str; SIZE_CLASSES] = [
    "64",
    "65-127",
    "128-255",
    "256-511",
    "512-1023",
    "1024-1518",
    ">1518",
];

/// Upper bound (inclusive, without FCS) of each size class but the last.
pub const SIZE_CLASS_MAX: [u32; SIZE_CLASSES - 1] = [60, 123, 251, 507, 1019, 1514];

/// Index of the size class of a frame of `len` bytes (FCS excluded).
#[expect(clippy::inline_always, reason = "called per packet in the XDP program")]
#[inline(always)]
#[must_use]
pub fn size_class(len: u32) -> usize {
    // A chain of comparisons: the verifier needs no loop and the branch
    // predictor learns the common sizes.
    if len <= SIZE_CLASS_MAX[0] {
        0
    } else if len <= SIZE_CLASS_MAX[1] {
        1
    } else if len <= SIZE_CLASS_MAX[2] {
        2
    } else if len <= SIZE_CLASS_MAX[3] {
        3
    } else if len <= SIZE_CLASS_MAX[4] {
        4
    } else if len <= SIZE_CLASS_MAX[5] {
        5
    } else {
        6
    }
}

/// Global counters, one copy per CPU, summed by userspace. Exact whatever
/// happens to the flow table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub tcp: u64,
    pub udp: u64,
    pub icmp: u64,
    pub icmpv6: u64,
    /// IP packets of any other protocol (including IPv6 whose extension
    /// header chain was too long to walk to the end).
    pub other_ip: u64,
    pub arp: u64,
    /// Frames that are neither IP nor ARP.
    pub other_l2: u64,
    pub size_classes: [u64; SIZE_CLASSES],
    pub tcp_syn: u64,
    pub tcp_fin: u64,
    pub tcp_rst: u64,
    /// Frames whose headers end before the packet says they should.
    pub malformed: u64,
    /// Packets of flows that could not be inserted into a full flow table.
    /// They are still in every other counter.
    pub flow_insert_failed: u64,
}

impl Counters {
    /// Adds `other` to `self` field by field (for summing per-CPU copies).
    pub fn accumulate(&mut self, other: &Counters) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.tcp += other.tcp;
        self.udp += other.udp;
        self.icmp += other.icmp;
        self.icmpv6 += other.icmpv6;
        self.other_ip += other.other_ip;
        self.arp += other.arp;
        self.other_l2 += other.other_l2;
        for (a, b) in self.size_classes.iter_mut().zip(other.size_classes.iter()) {
            *a += *b;
        }
        self.tcp_syn += other.tcp_syn;
        self.tcp_fin += other.tcp_fin;
        self.tcp_rst += other.tcp_rst;
        self.malformed += other.malformed;
        self.flow_insert_failed += other.flow_insert_failed;
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data, `repr(C)`, no implicit padding (checked by the
    // size assertions below), every bit pattern valid.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counters {}
}

// The layouts must have no implicit padding: the kernel hashes every key byte.
const _: () = assert!(size_of::<FlowKey>() == 40);
const _: () = assert!(size_of::<FlowValue>() == 40);
const _: () = assert!(size_of::<Counters>() == 8 * (14 + SIZE_CLASSES));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_class_bounds_follow_rfc2819_without_fcs() {
        assert_eq!(size_class(42), 0); // a padded-to-60 runt still lands in "64"
        assert_eq!(size_class(60), 0);
        assert_eq!(size_class(61), 1);
        assert_eq!(size_class(123), 1);
        assert_eq!(size_class(124), 2);
        assert_eq!(size_class(1514), 5);
        assert_eq!(size_class(1515), 6);
        assert_eq!(size_class(9000), 6);
    }

    #[test]
    fn accumulate_adds_every_field() {
        let mut one = Counters {
            packets: 1,
            bytes: 2,
            tcp: 3,
            udp: 4,
            icmp: 5,
            icmpv6: 6,
            other_ip: 7,
            arp: 8,
            other_l2: 9,
            size_classes: [1, 2, 3, 4, 5, 6, 7],
            tcp_syn: 10,
            tcp_fin: 11,
            tcp_rst: 12,
            malformed: 13,
            flow_insert_failed: 14,
        };
        let copy = one;
        one.accumulate(&copy);
        assert_eq!(one.packets, 2);
        assert_eq!(one.flow_insert_failed, 28);
        assert_eq!(one.size_classes, [2, 4, 6, 8, 10, 12, 14]);
        assert_eq!(one.malformed, 26);
    }
}
