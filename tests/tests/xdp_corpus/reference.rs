//! A userspace reference for the XDP program's parser: the same rules (see
//! the module doc of `xdp_corpus.rs`), written independently, with
//! etherparse's header parsers doing the byte-level work. Where etherparse's
//! policy differs from the kernel's, the kernel's rule wins and a comment
//! says so.

use etherparse::{
    EtherType, Ethernet2HeaderSlice, IpNumber, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice,
    Ipv6HeaderSlice, Ipv6RawExtHeaderSlice, SingleVlanHeaderSlice, TcpHeaderSlice, UdpHeaderSlice,
};
use netmon_common::{
    Counters, FlowKey, IP_V4, IP_V6, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, TCP_FIN,
    TCP_RST, TCP_SYN, size_class,
};

/// VLAN tags read before the EtherType decides; a fifth tag is "other L2".
const MAX_VLAN_TAGS: usize = 4;
/// MPLS label stack entries read; no bottom of stack among them is "other
/// L2".
const MAX_MPLS_LABELS: usize = 8;
/// IPv6 extension headers walked; a ninth is "chain too long".
const MAX_IPV6_EXT: usize = 8;
/// EtherTypes etherparse has no header parser for (MPLS, PPPoE session).
const MPLS_UNICAST: u16 = 0x8847;
const MPLS_MULTICAST: u16 = 0x8848;
const PPPOE_SESSION: u16 = 0x8864;
/// Bytes of the L4 header the program needs.
const TCP_FIXED: usize = 20;
const ICMP_FIXED: usize = 4;

/// What the program should make of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Malformed,
    Arp,
    OtherL2,
    Ip(IpPacket),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPacket {
    pub key: FlowKey,
    /// Byte 13 of the TCP header, or 0.
    pub tcp_flags: u8,
    /// IPv6 with more extension headers than the walk takes.
    pub chain_too_long: bool,
    /// The IP packet's length, header included, without link-layer
    /// padding (what IPFIX counts as octets).
    pub ip_len: u64,
}

/// A header runs past the frame or the packet, or a length field lies.
struct Malformed;

impl<E> From<E> for Malformed
where
    E: std::error::Error,
{
    fn from(_: E) -> Self {
        Malformed
    }
}

/// The encapsulations a frame's parse went through (for the corpus's
/// coverage, not for counting).
#[derive(Clone, Copy, Debug, Default)]
pub struct Seen {
    pub vlan_tags: usize,
    pub mpls: bool,
    pub pppoe: bool,
    pub ipv6_ah: bool,
}

pub fn parse(frame: &[u8]) -> Outcome {
    parse_seen(frame).0
}

pub fn parse_seen(frame: &[u8]) -> (Outcome, Seen) {
    let mut seen = Seen::default();
    let outcome = match ethernet(frame, &mut seen) {
        Ok(outcome) => outcome,
        Err(Malformed) => Outcome::Malformed,
    };
    (outcome, seen)
}

/// Adds what the program counts for a frame of `len` bytes with `outcome`.
pub fn count(c: &mut Counters, len: usize, outcome: &Outcome) {
    c.packets += 1;
    c.bytes += len as u64;
    c.size_classes[size_class(len as u32)] += 1;
    match outcome {
        Outcome::Malformed => c.malformed += 1,
        Outcome::Arp => c.arp += 1,
        Outcome::OtherL2 => c.other_l2 += 1,
        Outcome::Ip(p) if p.chain_too_long => c.other_ip += 1,
        Outcome::Ip(p) => match p.key.proto {
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
        },
    }
}

fn ethernet(frame: &[u8], seen: &mut Seen) -> Result<Outcome, Malformed> {
    let eth = Ethernet2HeaderSlice::from_slice(frame)?;
    let mut ether_type = eth.ether_type();
    let mut offset = eth.slice().len();
    // etherparse's packet slicers take a fixed tag layout of their own; the
    // program reads at most four tags of either TPID, in any order.
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS
        && (ether_type == EtherType::VLAN_TAGGED_FRAME
            || ether_type == EtherType::PROVIDER_BRIDGING)
    {
        let tag = SingleVlanHeaderSlice::from_slice(&frame[offset..])?;
        ether_type = tag.ether_type();
        offset += tag.slice().len();
        tags += 1;
    }
    seen.vlan_tags = tags;
    let rest = &frame[offset..];
    Ok(match ether_type {
        EtherType::IPV4 => Outcome::Ip(ipv4(rest)?),
        EtherType::IPV6 => Outcome::Ip(ipv6(rest, seen)?),
        EtherType::ARP => Outcome::Arp,
        EtherType(MPLS_UNICAST | MPLS_MULTICAST) => {
            seen.mpls = true;
            mpls(rest, seen)?
        }
        EtherType(PPPOE_SESSION) => {
            seen.pppoe = true;
            pppoe(rest, seen)?
        }
        // Also a fifth VLAN tag.
        _ => Outcome::OtherL2,
    })
}

/// IP by its version nibble: 4 or 6, anything else is not IP to the program.
fn ip_by_version(packet: &[u8], seen: &mut Seen) -> Result<Outcome, Malformed> {
    Ok(match packet.first().ok_or(Malformed)? >> 4 {
        4 => Outcome::Ip(ipv4(packet)?),
        6 => Outcome::Ip(ipv6(packet, seen)?),
        _ => Outcome::OtherL2,
    })
}

/// `rest`: the frame from the first MPLS label stack entry on (RFC 3032: 20
/// bits label, 3 bits traffic class, 1 bit bottom of stack, 8 bits TTL).
/// By hand: etherparse 0.21 has no MPLS header.
fn mpls(rest: &[u8], seen: &mut Seen) -> Result<Outcome, Malformed> {
    for i in 0..MAX_MPLS_LABELS {
        let entry = rest.get(i * 4..i * 4 + 4).ok_or(Malformed)?;
        let entry = u32::from_be_bytes(entry.try_into()?);
        let bottom_of_stack = (entry >> 8) & 1 == 1;
        if bottom_of_stack {
            // The payload's first byte must be there to tell IPv4 from IPv6.
            return ip_by_version(&rest[i * 4 + 4..], seen);
        }
    }
    // No bottom of stack among the entries the program reads.
    Ok(Outcome::OtherL2)
}

/// `rest`: the frame from the PPPoE header on (RFC 2516: version and type
/// nibbles, code, session id, length), then the 2-byte PPP protocol
/// (RFC 1661). By hand: etherparse 0.21 has no PPPoE header. The length
/// field is not checked, as in the program.
fn pppoe(rest: &[u8], seen: &mut Seen) -> Result<Outcome, Malformed> {
    let h = rest.get(..8).ok_or(Malformed)?;
    let (version, kind, code) = (h[0] >> 4, h[0] & 0x0f, h[1]);
    let protocol = u16::from_be_bytes([h[6], h[7]]);
    let ip = &rest[8..];
    Ok(match (version, kind, code, protocol) {
        (1, 1, 0, 0x0021) => Outcome::Ip(ipv4(ip)?),
        (1, 1, 0, 0x0057) => Outcome::Ip(ipv6(ip, seen)?),
        _ => Outcome::OtherL2,
    })
}

/// `rest`: the frame from the IPv4 header on.
fn ipv4(rest: &[u8]) -> Result<IpPacket, Malformed> {
    // Checks the version, IHL >= 5 and that the header with its options is
    // in the frame (implied by the total-length checks below).
    let ip = Ipv4HeaderSlice::from_slice(rest)?;
    let header_len = ip.slice().len();
    let total_len = usize::from(ip.total_len());
    if total_len < header_len || total_len > rest.len() {
        return Err(Malformed);
    }
    // Anything after total_len is Ethernet padding, not part of the packet.
    let packet = &rest[..total_len];
    let mut key = FlowKey {
        ip_version: IP_V4,
        proto: ip.protocol().0,
        ..FlowKey::default()
    };
    key.src[..4].copy_from_slice(&ip.source());
    key.dst[..4].copy_from_slice(&ip.destination());
    // A later fragment has no L4 header: counted to the flow with ports 0.
    let tcp_flags = if ip.fragments_offset().value() == 0 {
        l4(&mut key, &packet[header_len..])?
    } else {
        0
    };
    Ok(IpPacket {
        key,
        tcp_flags,
        chain_too_long: false,
        ip_len: packet.len() as u64,
    })
}

/// `rest`: the frame from the IPv6 header on.
fn ipv6(rest: &[u8], seen: &mut Seen) -> Result<IpPacket, Malformed> {
    // Checks the version and that the 40-byte header is in the frame.
    let ip = Ipv6HeaderSlice::from_slice(rest)?;
    // Payload length 0 (a jumbogram, RFC 2675): the frame says how long. The
    // program does not look for the jumbo option; neither does this.
    let end = match usize::from(ip.payload_length()) {
        0 => rest.len(),
        n => ip.slice().len() + n,
    };
    if end > rest.len() {
        return Err(Malformed);
    }
    let packet = &rest[..end];
    let mut key = FlowKey {
        ip_version: IP_V6,
        src: ip.source(),
        dst: ip.destination(),
        ..FlowKey::default()
    };
    let mut next = ip.next_header();
    let mut offset = ip.slice().len();
    let mut first_fragment = true;
    let mut walked = 0;
    // Only these five are walked (etherparse also knows mobility, HIP, ...;
    // to the program those are plain "other" protocols). Each header must lie
    // wholly inside the packet.
    loop {
        match next {
            IpNumber::IPV6_HEADER_HOP_BY_HOP
            | IpNumber::IPV6_ROUTE_HEADER
            | IpNumber::IPV6_DESTINATION_OPTIONS
            | IpNumber::IPV6_FRAGMENTATION_HEADER
            | IpNumber::AUTHENTICATION_HEADER
                if walked == MAX_IPV6_EXT =>
            {
                key.proto = next.0;
                return Ok(IpPacket {
                    key,
                    tcp_flags: 0,
                    chain_too_long: true,
                    ip_len: packet.len() as u64,
                });
            }
            IpNumber::IPV6_HEADER_HOP_BY_HOP
            | IpNumber::IPV6_ROUTE_HEADER
            | IpNumber::IPV6_DESTINATION_OPTIONS => {
                let ext = Ipv6RawExtHeaderSlice::from_slice(&packet[offset..])?;
                next = ext.next_header();
                offset += ext.slice().len();
            }
            IpNumber::IPV6_FRAGMENTATION_HEADER => {
                let frag = Ipv6FragmentHeaderSlice::from_slice(&packet[offset..])?;
                next = frag.next_header();
                // The last fragment header in the chain decides.
                first_fragment = frag.fragment_offset().value() == 0;
                offset += frag.slice().len();
            }
            IpNumber::AUTHENTICATION_HEADER => {
                // By hand: etherparse's IpAuthHeaderSlice refuses a payload
                // length of 0, which the program walks (8 bytes) like any
                // other length. RFC 4302: (payload length + 2) 4-byte words.
                let h = packet.get(offset..offset + 2).ok_or(Malformed)?;
                let len = (usize::from(h[1]) + 2) * 4;
                if offset + len > packet.len() {
                    return Err(Malformed);
                }
                next = IpNumber(h[0]);
                offset += len;
                seen.ipv6_ah = true;
            }
            _ => break,
        }
        walked += 1;
    }
    key.proto = next.0;
    let tcp_flags = if first_fragment {
        l4(&mut key, &packet[offset..])?
    } else {
        0
    };
    Ok(IpPacket {
        key,
        tcp_flags,
        chain_too_long: false,
        ip_len: packet.len() as u64,
    })
}

/// Ports and TCP flags from `segment` (the IP packet from the L4 header on).
/// The program goes by the protocol number alone: ICMP (1) inside IPv6 and
/// ICMPv6 (58) inside IPv4 are read all the same.
fn l4(key: &mut FlowKey, segment: &[u8]) -> Result<u8, Malformed> {
    match key.proto {
        PROTO_TCP => {
            // The program needs only the fixed 20 bytes and ignores the data
            // offset; etherparse rejects a data offset below 5 and wants the
            // options present. So parse a copy of the fixed part with the
            // data offset set to 5.
            let mut fixed: [u8; TCP_FIXED] =
                segment.get(..TCP_FIXED).ok_or(Malformed)?.try_into()?;
            fixed[12] = (5 << 4) | (fixed[12] & 0x0f);
            let tcp = TcpHeaderSlice::from_slice(&fixed)?;
            key.sport_be = tcp.source_port().to_be();
            key.dport_be = tcp.destination_port().to_be();
            let flags = [
                (tcp.fin(), 0x01),
                (tcp.syn(), 0x02),
                (tcp.rst(), 0x04),
                (tcp.psh(), 0x08),
                (tcp.ack(), 0x10),
                (tcp.urg(), 0x20),
                (tcp.ece(), 0x40),
                (tcp.cwr(), 0x80),
            ];
            Ok(flags
                .iter()
                .filter(|(set, _)| *set)
                .fold(0, |acc, (_, bit)| acc | bit))
        }
        PROTO_UDP => {
            // The UDP length field is not checked, as in the program.
            let udp = UdpHeaderSlice::from_slice(segment)?;
            key.sport_be = udp.source_port().to_be();
            key.dport_be = udp.destination_port().to_be();
            Ok(0)
        }
        // Type, code, checksum: etherparse's ICMP slices want 8 bytes, the
        // program 4.
        PROTO_ICMP | PROTO_ICMPV6 if segment.len() < ICMP_FIXED => Err(Malformed),
        _ => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex fixture"))
            .collect()
    }

    fn ip(frame: &[u8]) -> IpPacket {
        match parse(frame) {
            Outcome::Ip(p) => p,
            other => panic!("not IP: {other:?}"),
        }
    }

    const MACS: &str = "020000000001 020000000002";

    #[test]
    fn ipv4_tcp_syn_in_a_vlan() {
        let f = hex(&format!(
            "{MACS} 8100 0064 0800 \
             45000028 0001 0000 4006 0000 0a000001 0a000002 \
             d431 0050 00000001 00000000 5002 ffff 0000 0000"
        ));
        let p = ip(&f);
        assert_eq!(p.key.ip_version, 4);
        assert_eq!(p.key.proto, 6);
        assert_eq!(p.key.src[..4], [10, 0, 0, 1]);
        assert_eq!(p.key.dst[4..], [0; 12]);
        assert_eq!(u16::from_be(p.key.sport_be), 0xd431);
        assert_eq!(u16::from_be(p.key.dport_be), 80);
        assert_eq!(p.tcp_flags, 0x02);
        // One byte short of the TCP header: malformed.
        assert_eq!(parse(&f[..f.len() - 1]), Outcome::Malformed);
    }

    #[test]
    fn ipv4_later_fragment_and_padding() {
        // Offset 1 (8 bytes in); UDP, 20 + 8 bytes; 18 bytes Ethernet padding.
        let f = hex(&format!(
            "{MACS} 0800 4500001c 0001 0001 4011 0000 0a000001 0a000002 \
             0035 0035 0008 0000 {}",
            "00".repeat(18)
        ));
        let p = ip(&f);
        assert_eq!((p.key.proto, p.key.sport_be, p.key.dport_be), (17, 0, 0));
        // Total length beyond the frame: malformed.
        let mut lie = f.clone();
        lie[17] = 0xff;
        assert_eq!(parse(&lie), Outcome::Malformed);
    }

    #[test]
    fn vlan_tags_beyond_four_are_other_l2() {
        let f = hex(&format!(
            "{MACS} 88a8 0001 8100 0002 8100 0003 88a8 0004 8100 0005 0800 4500"
        ));
        assert_eq!(parse(&f), Outcome::OtherL2);
        // The second tag cut off.
        assert_eq!(parse(&f[..19]), Outcome::Malformed);
    }

    const UDP_V4: &str = "4500001c 0001 0000 4011 0000 c6336401 cb007102 0035 1f90 0008 0000";

    #[test]
    fn four_vlan_tags_then_ipv4() {
        let f = hex(&format!(
            "{MACS} 88a8 0001 8100 0002 88a8 0003 8100 0004 0800 {UDP_V4}"
        ));
        let p = ip(&f);
        assert_eq!((p.key.proto, u16::from_be(p.key.dport_be)), (17, 8080));
    }

    #[test]
    fn mpls_stack_to_ip_by_first_nibble() {
        // Two labels, the second with bottom of stack.
        let f = hex(&format!("{MACS} 8100 0007 8847 00064040 000c8140 {UDP_V4}"));
        let p = ip(&f);
        assert_eq!(p.key.src[..4], [198, 51, 100, 1]);
        assert_eq!((p.key.proto, u16::from_be(p.key.sport_be)), (17, 53));
        // No bottom of stack in eight entries: other L2, even if IP follows.
        let f = hex(&format!("{MACS} 8847 {} {UDP_V4}", "00064040 ".repeat(8)));
        assert_eq!(parse(&f), Outcome::OtherL2);
        // Bottom of stack on the eighth: still IP.
        let f = hex(&format!(
            "{MACS} 8847 {} 00064140 {UDP_V4}",
            "00064040 ".repeat(7)
        ));
        assert!(matches!(parse(&f), Outcome::Ip(_)));
        // A pseudowire control word (first nibble 0): other L2.
        let f = hex(&format!("{MACS} 8847 00064140 00000000 {MACS} 0800"));
        assert_eq!(parse(&f), Outcome::OtherL2);
        // The stack cut off, or nothing after it: malformed.
        let f = hex(&format!("{MACS} 8847 00064040 0006"));
        assert_eq!(parse(&f), Outcome::Malformed);
        let f = hex(&format!("{MACS} 8847 00064140"));
        assert_eq!(parse(&f), Outcome::Malformed);
    }

    #[test]
    fn pppoe_session_to_ip_by_ppp_protocol() {
        let f = hex(&format!("{MACS} 8864 1100 0001 001e 0021 {UDP_V4}"));
        assert_eq!(ip(&f).key.proto, 17);
        // LCP (0xc021), a discovery code, a wrong version: other L2.
        for (ver, code, proto) in [
            ("11", "00", "c021"),
            ("11", "09", "0021"),
            ("21", "00", "0021"),
        ] {
            let f = hex(&format!(
                "{MACS} 8864 {ver}{code} 0001 001e {proto} {UDP_V4}"
            ));
            assert_eq!(parse(&f), Outcome::OtherL2);
        }
        // The PPP protocol cut off.
        let f = hex(&format!("{MACS} 8864 1100 0001 001e 00"));
        assert_eq!(parse(&f), Outcome::Malformed);
    }

    #[test]
    fn ipv6_ah_before_tcp() {
        // AH, payload length 4: 24 bytes; then a TCP SYN 40000 -> 443.
        let f = hex(&format!(
            "{MACS} 86dd 60000000 002c 33 40 {} {} 06 04 0000 00000100 00000001 {}              9c40 01bb 00000001 00000000 5002 ffff 0000 0000",
            "20010db8000000000000000000000001",
            "20010db8000000000000000000000002",
            "00".repeat(12)
        ));
        let p = ip(&f);
        assert_eq!((p.key.proto, u16::from_be(p.key.dport_be)), (6, 443));
        assert_eq!(p.tcp_flags, 0x02);
        // An AH length that runs past the packet: malformed.
        let mut lie = f.clone();
        lie[14 + 41] = 0xff;
        assert_eq!(parse(&lie), Outcome::Malformed);
    }

    #[test]
    fn ipv6_extension_walk_stops_after_eight() {
        let ipv6_udp = netmon_tests::frames::ipv6_udp_behind_hop_by_hop;
        let p = ip(&ipv6_udp(0));
        assert_eq!((p.key.proto, u16::from_be(p.key.dport_be)), (17, 53));
        // Eight extension headers are walked to the end...
        let p = ip(&ipv6_udp(8));
        assert!(!p.chain_too_long);
        assert_eq!((p.key.proto, u16::from_be(p.key.dport_be)), (17, 53));
        // ... a ninth is one too many: other IP, keyed by that next header.
        let p = ip(&ipv6_udp(9));
        assert!(p.chain_too_long);
        assert_eq!((p.key.proto, p.key.dport_be), (0, 0));
    }

    #[test]
    fn ipv6_later_fragment_has_no_ports() {
        // Fragment header with offset 1, then a UDP header that is not one.
        let f = hex(&format!(
            "{MACS} 86dd 60000000 0010 2c 40 {} {} 11000009 00000001 0035 0035 0008 0000",
            "20010db8000000000000000000000001", "20010db8000000000000000000000002"
        ));
        let p = ip(&f);
        assert_eq!((p.key.proto, p.key.sport_be, p.tcp_flags), (17, 0, 0));
    }
}
