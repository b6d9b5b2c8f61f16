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
    /// Sequence and acknowledgment numbers.
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    /// The ACK flag (SYN, FIN, RST: `netmon_common::TCP_*`).
    pub const FLAG_ACK: u8 = 0x10;
    /// Options start after the fixed header and end at the data offset.
    pub const OPTIONS: usize = MIN_HLEN;
    /// Option kinds (RFC 9293, RFC 7323).
    pub const OPT_EOL: u8 = 0;
    pub const OPT_NOP: u8 = 1;
    pub const OPT_TS: u8 = 8;
    /// Length of the timestamp option: kind, length, TSval, TSecr.
    pub const OPT_TS_LEN: usize = 10;
    /// TSval and TSecr inside the timestamp option.
    pub const OPT_TS_VAL: usize = 2;
    pub const OPT_TS_ECR: usize = 6;
    /// The layout Linux (and most stacks) puts first on every segment of
    /// a connection that uses timestamps: NOP, NOP, kind 8, length 10,
    /// then TSval and TSecr (12 bytes, RFC 7323 appendix A). As the first
    /// 4 bytes read as a little-endian `u32`.
    pub const CANONICAL_TS_LE: u32 = u32::from_le_bytes([OPT_NOP, OPT_NOP, OPT_TS, 10]);
    pub const CANONICAL_TS_LEN: usize = 12;
    /// TSval and TSecr in the canonical layout.
    pub const CANONICAL_TS_VAL: usize = 4;
    pub const CANONICAL_TS_ECR: usize = 8;
    /// Options looked at when they are not in the canonical layout (a SYN
    /// puts MSS and SACK-permitted first; BSD's SYN has the timestamp sixth).
    /// A timestamp option further back is not found (no RTT sample, the
    /// segment counts as ever).
    pub const MAX_OPTIONS: usize = 8;
    /// Largest end of the options the walk takes: a bound the verifier
    /// needs on an offset passed to a function it checks on its own (it
    /// proves no access through a packet offset that may reach 64 KiB).
    /// Headers of TCP at 16 KiB into a frame are not walked.
    pub const MAX_OPTIONS_END: usize = 0x3fff;
}

/// UDP (RFC 768).
pub mod udp {
    pub const HLEN: usize = 8;
    /// Source port, then destination port.
    pub const PORTS: usize = 0;
}

/// ICMP and ICMPv6: type, code, checksum; for an echo request or reply
/// (RFC 792, RFC 4443) the identifier and sequence number after them.
pub mod icmp {
    pub const MIN_HLEN: usize = 4;
    pub const TYPE: usize = 0;
    /// Identifier then sequence number, in an echo message.
    pub const ECHO_ID_SEQ: usize = 4;
    pub const ECHO_HLEN: usize = 8;
    pub const V4_ECHO_REPLY: u8 = 0;
    pub const V4_ECHO_REQUEST: u8 = 8;
    pub const V6_ECHO_REQUEST: u8 = 128;
    pub const V6_ECHO_REPLY: u8 = 129;
}

// The bench driver (src/bin/netmon-bench.rs) moves the IPv4 source address
// of an untagged frame.
const _: () = assert!(netmon_common::bench::NEW_FLOW_OFFSET == eth::HLEN + ipv4::SRC);
// The echo driver moves the TSecr of an untagged IPv4/TCP frame whose
// options start with the canonical timestamp layout.
const _: () = assert!(
    netmon_common::bench::ECHO_OFFSET
        == eth::HLEN + ipv4::MIN_HLEN + tcp::OPTIONS + tcp::CANONICAL_TS_ECR
);
