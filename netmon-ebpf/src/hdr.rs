//! Header layouts: offsets and lengths of the fields the parser reads, and
//! the values it compares them with. Offsets are from the start of their
//! header; multi-byte fields are in network order on the wire.

/// Ethernet II.
pub mod eth {
    pub const HLEN: usize = 14;
    /// EtherType (or the TPID of a first VLAN tag).
    pub const ETHERTYPE: usize = 12;
    pub const P_IP: u16 = 0x0800;
    pub const P_IPV6: u16 = 0x86DD;
    pub const P_ARP: u16 = 0x0806;
    pub const P_8021Q: u16 = 0x8100;
    pub const P_8021AD: u16 = 0x88A8;
    pub const P_MPLS_UC: u16 = 0x8847;
    pub const P_MPLS_MC: u16 = 0x8848;
    /// PPPoE session stage (RFC 2516); discovery (0x8863) is other L2.
    pub const P_PPP_SES: u16 = 0x8864;
}

/// An 802.1Q / 802.1ad tag (after the TPID, which is the EtherType field
/// before it).
pub mod vlan {
    pub const HLEN: usize = 4;
    /// The EtherType after the tag (TCI at 0-1).
    pub const ETHERTYPE: usize = 2;
    /// Tags (802.1Q or 802.1ad, in any order) stepped over; a fifth tag
    /// leaves the frame "other L2".
    pub const MAX_TAGS: usize = 4;
}

/// One MPLS label stack entry (RFC 3032).
pub mod mpls {
    pub const HLEN: usize = 4;
    /// The byte holding the bottom-of-stack bit (label, TC, S, then TTL).
    pub const BOS_BYTE: usize = 2;
    /// Bottom-of-stack bit in [`BOS_BYTE`].
    pub const BOS: u8 = 0x01;
    /// Entries read; a stack without bottom-of-stack within them is "other
    /// L2" (nothing past the eighth entry is read).
    pub const MAX_LABELS: usize = 8;
}

/// PPPoE session header (RFC 2516) and the PPP protocol after it.
pub mod pppoe {
    /// Version/type, code, session id, length, PPP protocol.
    pub const HLEN: usize = 8;
    pub const VER_TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const PPP_PROTO: usize = 6;
    /// Version 1, type 1.
    pub const VER_TYPE_1_1: u8 = 0x11;
    /// Session data.
    pub const CODE_SESSION: u8 = 0;
    pub const PPP_IPV4: u16 = 0x0021;
    pub const PPP_IPV6: u16 = 0x0057;
}

/// IPv4 (RFC 791), the fixed part of the header.
pub mod ipv4 {
    pub const MIN_HLEN: usize = 20;
    /// Version (high nibble) and IHL (low nibble, 4-byte words).
    pub const VERSION_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    /// Flags (3 bits) and fragment offset (13 bits).
    pub const FRAG: usize = 6;
    pub const PROTO: usize = 9;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    /// Fragment offset bits of [`FRAG`].
    pub const FRAG_OFFSET_MASK: u16 = 0x1fff;
}

/// IPv6 (RFC 8200), the fixed header.
pub mod ipv6 {
    pub const HLEN: usize = 40;
    /// Version (high nibble of byte 0), traffic class, flow label.
    pub const VERSION: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    /// Source then destination address, 16 bytes each.
    pub const ADDRS: usize = 8;
    pub const ADDRS_LEN: usize = 32;
    /// Extension headers walked before giving up (counted as other IP).
    pub const MAX_EXT: usize = 8;
}

/// IPv6 extension headers: next header and length at the same place in
/// each.
pub mod ipv6_ext {
    pub const NEXT_HEADER: usize = 0;
    /// Hop-by-hop, routing, destination options: 8-byte units, the first 8
    /// not counted. AH: 4-byte units, minus 2 (RFC 4302).
    pub const LEN: usize = 1;
    /// Fragment header: offset (13 bits) and flags (3 bits) at 2-3.
    pub const FRAG_OFFSET: usize = 2;
    pub const FRAG_HLEN: usize = 8;
    pub const HOPOPTS: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const DSTOPTS: u8 = 60;
    /// Authentication Header (RFC 4302): (length + 2) * 4 bytes.
    pub const AH: u8 = 51;
}

/// TCP (RFC 9293).
pub mod tcp {
    pub const MIN_HLEN: usize = 20;
    /// Source port, then destination port.
    pub const PORTS: usize = 0;
    /// Data offset (header length in 4-byte words) in the high nibble.
    pub const DATA_OFFSET: usize = 12;
    /// The flag bits FIN..CWR.
    pub const FLAGS: usize = 13;
}

/// UDP (RFC 768).
pub mod udp {
    pub const HLEN: usize = 8;
    /// Source port, then destination port.
    pub const PORTS: usize = 0;
}

/// ICMP and ICMPv6: type, code, checksum.
pub mod icmp {
    pub const MIN_HLEN: usize = 4;
}

// The bench driver (src/bin/netmon-bench.rs) moves the IPv4 source address
// of an untagged frame.
const _: () = assert!(netmon_common::bench::NEW_FLOW_OFFSET == eth::HLEN + ipv4::SRC);
