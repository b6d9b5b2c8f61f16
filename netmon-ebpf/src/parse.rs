//! The parser: Ethernet, VLAN tags, MPLS or PPPoE, IPv4/IPv6 (with IPv6
//! extension headers), then the ports and TCP flags of L4, over any
//! [`Frame`]; untagged IPv4 TCP and UDP first through a fast path
//! ([`classify`]). What it steps over is restated in ARCHITECTURE.md ("What the
//! parser steps over"). For passive RTT it also reads the TCP sequence
//! and acknowledgment numbers and timestamp option, and the identifier
//! and sequence number of an ICMP/ICMPv6 echo ([`RttFields`]); these never
//! change what a frame counts as (a timestamp option that cannot be read
//! is just absent).
#![expect(clippy::inline_always, reason = "per-packet path, see lib.rs")]

use netmon_common::{
    DIR_TX, IP_V4, IP_V6, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, TCP_SYN,
};

use crate::{
    frame::{Frame, Header, Malformed, frame_len, read, read_be16},
    hdr::{eth, icmp, ipv4, ipv6, ipv6_ext, mpls, pppoe, tcp, udp, vlan},
};

/// What the parser learned about one IP packet.
pub struct Parsed {
    /// The flow key as `FlowKey::words`: built a word at a time, which the
    /// compiler keeps in registers (byte arrays end up byte by byte).
    pub key: [u64; 5],
    pub proto: u8,
    /// TCP flags (see [`tcp::FLAGS`]) or 0.
    pub tcp_flags: u8,
    /// The IP packet's length, header included (IPv4 total length, IPv6
    /// 40 + payload length; a jumbogram's what the frame holds).
    pub ip_len: u32,
    /// IPv6 whose extension-header chain was longer than we walk.
    pub chain_too_long: bool,
    /// Offset of the IP header in the frame.
    pub l3: usize,
    /// Offset of the end of the TCP or UDP header (the start of the
    /// payload; for other protocols the start of L4): what every segment
    /// of a GSO super-packet repeats. Only the egress program reads it.
    pub hdr_end: usize,
    /// What passive RTT needs of TCP and ICMP echo (see `rtt`).
    pub rtt: RttFields,
}

/// What passive RTT reads of a packet's L4 header, packed into a word and
/// a byte (every field of the parser's result is copied along its paths;
/// seven fields here cost the established path measurably more than two),
/// and only what the packet's hook needs (`Frame::DIRECTION`). All zero
/// for what the packet is not.
#[derive(Clone, Copy, Default)]
pub struct RttFields {
    /// TCP: the timestamp this hook works with (egress: TSval, ingress:
    /// TSecr; without [`RTT_TS`] not to be used) << 32 | the sequence number (egress)
    /// or acknowledgment number (ingress). ICMP/ICMPv6 echo: identifier
    /// << 16 | sequence number. Host byte order.
    pub word: u64,
    /// [`RTT_TS`], [`RTT_DATA`], [`RTT_HANDSHAKE`], [`RTT_ECHO`].
    pub bits: u8,
}

impl RttFields {
    /// TSval (egress) or TSecr (ingress).
    #[inline(always)]
    #[must_use]
    pub fn ts(&self) -> u32 {
        (self.word >> 32) as u32
    }

    /// The sequence number (egress), acknowledgment number (ingress), or
    /// an echo's identifier << 16 | sequence number.
    #[inline(always)]
    #[must_use]
    pub fn num(&self) -> u32 {
        self.word as u32
    }
}

/// [`RttFields::bits`]: a TCP timestamp this hook works with (see
/// [`tcp_timestamp`]): egress, any; ingress, with ACK and a TSecr not 0.
pub const RTT_TS: u8 = 1;
/// Egress: a TCP segment that carries data (the IP packet goes on past
/// the TCP header).
pub const RTT_DATA: u8 = 2;
/// A handshake entry to record or match: egress, a SYN (or SYN-ACK, by its
/// ACK flag); ingress, a SYN-ACK.
pub const RTT_HANDSHAKE: u8 = 4;
/// An echo entry: egress, an ICMP echo request (type 8) or ICMPv6 echo
/// request (128); ingress, a reply (0, 129); with its identifier and
/// sequence number in the packet.
pub const RTT_ECHO: u8 = 8;

/// What a frame carries, as far as the parser went.
pub enum L3 {
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

/// Word 4 of a key (see `FlowKey::from_words`) without the ports.
#[inline(always)]
fn proto_word(ip_version: u8, proto: u8) -> u64 {
    (u64::from(ip_version) << 40) | (u64::from(proto) << 32)
}

/// Parses a frame down to its flow key. `Err(Malformed)`: a header cut off
/// by the end of the frame, or a length field that lies. The common frame
/// (untagged IPv4 TCP or UDP) is taken by [`fast_ipv4`] with one bounds
/// check; everything else by the general parser.
#[inline(always)]
pub fn classify<F: Frame>(f: &F) -> Result<L3, Malformed> {
    if let Some(p) = fast_ipv4(f) {
        return Ok(L3::Ip(p));
    }
    // One call site per network parser, whatever the encapsulation: the
    // parsers are inlined, so a copy per path would multiply the code.
    let (net, l3) = link(f)?;
    match net {
        Net::Ipv4 => parse_ipv4(f, l3).map(L3::Ip),
        Net::Ipv6 => parse_ipv6(f, l3).map(L3::Ip),
        Net::Arp => Ok(L3::Arp),
        Net::Other => Ok(L3::OtherL2),
    }
}

/// The link layer: Ethernet, up to [`vlan::MAX_TAGS`] VLAN tags, then
/// either the network layer (IPv4, IPv6, ARP), an MPLS label stack or a
/// PPPoE session header in front of IP. Returns what follows and its offset.
/// Accepted: Ethernet, VLAN tags*, (MPLS | PPPoE)?, IP. Nothing is stepped
/// over after MPLS or PPPoE (no VLAN tag, no Ethernet pseudowire).
#[inline(always)]
fn link<F: Frame>(f: &F) -> Result<(Net, usize), Malformed> {
    let mut offset = eth::HLEN;
    let mut ether_type = read_be16(f, eth::ETHERTYPE)?;
    for _ in 0..vlan::MAX_TAGS {
        if ether_type != eth::P_8021Q && ether_type != eth::P_8021AD {
            break;
        }
        ether_type = read_be16(f, offset + vlan::ETHERTYPE)?;
        offset += vlan::HLEN;
    }
    let net = match ether_type {
        eth::P_IP => Net::Ipv4,
        eth::P_IPV6 => Net::Ipv6,
        eth::P_ARP => Net::Arp,
        eth::P_MPLS_UC | eth::P_MPLS_MC => return mpls_stack(f, offset),
        eth::P_PPP_SES => return pppoe_session(f, offset),
        // Includes a tag after the fourth.
        _ => Net::Other,
    };
    Ok((net, offset))
}

/// An MPLS label stack at `offset`: up to [`mpls::MAX_LABELS`] entries, the
/// last with bottom-of-stack set, then IP, told apart by the first nibble
/// (4 or 6; anything else, e.g. a pseudowire control word, is other L2).
/// An entry or the first payload byte cut off is malformed; a stack with no
/// bottom-of-stack in its first eight entries is other L2.
#[inline(always)]
fn mpls_stack<F: Frame>(f: &F, mut offset: usize) -> Result<(Net, usize), Malformed> {
    for _ in 0..mpls::MAX_LABELS {
        // A value, as in the IPv6 extension-header walk (see there).
        let entry: [u8; mpls::HLEN] = read(f, offset)?;
        offset += mpls::HLEN;
        if entry[mpls::BOS_BYTE] & mpls::BOS != 0 {
            let first: u8 = read(f, offset)?;
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

/// A PPPoE session header and PPP protocol at `offset` ([`pppoe::HLEN`]
/// bytes, else malformed). Version/type 0x11, code 0 and protocol 0x0021
/// (IPv4) or 0x0057 (IPv6) go on to IP; anything else is other L2. The
/// PPPoE length field is not checked: the IP header's own length decides,
/// as for untagged frames.
#[inline(always)]
fn pppoe_session<F: Frame>(f: &F, offset: usize) -> Result<(Net, usize), Malformed> {
    let h = Header::<{ pppoe::HLEN }>::at(f, offset)?;
    let net = if h.get::<u8, { pppoe::VER_TYPE }>() != pppoe::VER_TYPE_1_1
        || h.get::<u8, { pppoe::CODE }>() != pppoe::CODE_SESSION
    {
        Net::Other
    } else {
        match h.be16::<{ pppoe::PPP_PROTO }>() {
            pppoe::PPP_IPV4 => Net::Ipv4,
            pppoe::PPP_IPV6 => Net::Ipv6,
            _ => Net::Other,
        }
    };
    Ok((net, offset + pppoe::HLEN))
}

/// The common case behind one bounds check: untagged Ethernet, IPv4
/// without options, not a later fragment, then UDP, or TCP without
/// options or with only the canonical timestamp option (what Linux sends
/// after the handshake). Returns what the general parser below would (the
/// corpus test holds both to the reference parser); `None` for anything
/// else, which the general parser then takes from the start.
#[inline(always)]
fn fast_ipv4<F: Frame>(f: &F) -> Option<Parsed> {
    const L3: usize = eth::HLEN;
    const L4: usize = L3 + ipv4::MIN_HLEN;
    // A minimum Ethernet frame (60 bytes without the FCS) holds it.
    let h = Header::<{ L4 + tcp::MIN_HLEN }>::at(f, 0).ok()?;
    // Compared as they are on the wire: no byte swap.
    if h.get::<u16, { eth::ETHERTYPE }>() != eth::P_IP.to_be()
        || h.get::<u8, { L3 + ipv4::VERSION_IHL }>() != 0x45
    {
        return None;
    }
    let total_len = usize::from(h.be16::<{ L3 + ipv4::TOTAL_LEN }>());
    let frag = h.be16::<{ L3 + ipv4::FRAG }>();
    let proto = h.get::<u8, { L3 + ipv4::PROTO }>();
    let need = match proto {
        PROTO_TCP => tcp::MIN_HLEN,
        PROTO_UDP => udp::HLEN,
        _ => return None,
    };
    // What the general parser finds malformed, or parses another way.
    let end = L3 + total_len;
    if frag & ipv4::FRAG_OFFSET_MASK != 0 || total_len < ipv4::MIN_HLEN + need || end > frame_len(f)
    {
        return None;
    }
    let ports = h.get::<u32, { L4 + tcp::PORTS }>();
    let key = [
        u64::from(h.get::<u32, { L3 + ipv4::SRC }>()),
        0,
        u64::from(h.get::<u32, { L3 + ipv4::DST }>()),
        0,
        proto_word(IP_V4, proto) | u64::from(ports),
    ];
    let (tcp_flags, l4_hlen, rtt) = if proto == PROTO_TCP {
        let hlen = usize::from(h.get::<u8, { L4 + tcp::DATA_OFFSET }>() >> 4) * 4;
        let flags = h.get::<u8, { L4 + tcp::FLAGS }>();
        let num = if F::DIRECTION == DIR_TX {
            h.get::<u32, { L4 + tcp::SEQ }>()
        } else {
            h.get::<u32, { L4 + tcp::ACK }>()
        };
        let ts = match hlen {
            tcp::MIN_HLEN => None,
            // The options fit the packet: else the general parser reads none.
            // Options in another layout go to the general parser's walk.
            CANONICAL_TS_HLEN if L4 + CANONICAL_TS_HLEN <= end => {
                Some(canonical_timestamp(f, L4 + tcp::OPTIONS).ok().flatten()?)
            }
            _ => return None,
        };
        (flags, hlen, tcp_rtt::<F>(flags, num, end > L4 + hlen, ts))
    } else {
        (0, udp::HLEN, RttFields::default())
    };
    Some(Parsed {
        key,
        proto,
        tcp_flags,
        ip_len: total_len as u32,
        chain_too_long: false,
        l3: L3,
        hdr_end: L4 + l4_hlen,
        rtt,
    })
}

/// What passive RTT reads of a TCP segment (see [`RttFields`]): its
/// `flags`, `num` (the sequence number on egress, the acknowledgment
/// number on ingress, as on the wire), whether it carries data, and its
/// timestamp option's TSval and TSecr if it has one.
#[inline(always)]
fn tcp_rtt<F: Frame>(flags: u8, num: u32, data: bool, ts: Option<(u32, u32)>) -> RttFields {
    let mut rtt = RttFields {
        word: u64::from(u32::from_be(num)),
        bits: 0,
    };
    // Egress records what it sends (its sequence number, TSval), ingress
    // matches what is acknowledged and echoed.
    if F::DIRECTION == DIR_TX {
        if data {
            rtt.bits = RTT_DATA;
        }
        if flags & TCP_SYN != 0 {
            rtt.bits |= RTT_HANDSHAKE;
        }
    } else if flags & (TCP_SYN | tcp::FLAG_ACK) == TCP_SYN | tcp::FLAG_ACK {
        rtt.bits = RTT_HANDSHAKE;
    }
    if let Some((tsval, tsecr)) = ts {
        // Ingress: TSecr is only valid with ACK (RFC 7323), and 0 echoes
        // nothing.
        if F::DIRECTION == DIR_TX {
            rtt.word |= u64::from(tsval) << 32;
            rtt.bits |= RTT_TS;
        } else if flags & tcp::FLAG_ACK != 0 && tsecr != 0 {
            rtt.word |= u64::from(tsecr) << 32;
            rtt.bits |= RTT_TS;
        }
    }
    rtt
}

#[inline(always)]
fn parse_ipv4<F: Frame>(f: &F, l3: usize) -> Result<Parsed, Malformed> {
    // The fixed part of the header: version/IHL .. destination address,
    // every field read right after the one bounds check (a header pointer
    // kept alive across the length checks below costs registers, and under
    // pressure LLVM truncates the packet pointer, which the verifier
    // rejects).
    let h = Header::<{ ipv4::MIN_HLEN }>::at(f, l3)?;
    let (version_ihl, total_len, frag, proto, src, dst) = (
        h.get::<u8, { ipv4::VERSION_IHL }>(),
        h.be16::<{ ipv4::TOTAL_LEN }>(),
        h.be16::<{ ipv4::FRAG }>(),
        h.get::<u8, { ipv4::PROTO }>(),
        h.get::<u32, { ipv4::SRC }>(),
        h.get::<u32, { ipv4::DST }>(),
    );
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    let total_len = usize::from(total_len);
    // Lying lengths: a header shorter than 20 bytes, a packet shorter than
    // its header, or longer than the frame (truncated). A frame may be
    // longer than the packet (Ethernet padding): the packet ends at total_len.
    if version_ihl >> 4 != 4
        || ihl < ipv4::MIN_HLEN
        || total_len < ihl
        || l3 + total_len > frame_len(f)
    {
        return Err(Malformed);
    }
    let mut key = [
        u64::from(src),
        0,
        u64::from(dst),
        0,
        proto_word(IP_V4, proto),
    ];
    // Only the first fragment (offset 0) carries the L4 header; later
    // fragments count towards the flow with ports 0.
    let (tcp_flags, l4_hlen, rtt) = if frag & ipv4::FRAG_OFFSET_MASK == 0 {
        parse_l4(f, l3 + ihl, l3 + total_len, proto, &mut key[4])?
    } else {
        (0, 0, RttFields::default())
    };
    Ok(Parsed {
        key,
        proto,
        tcp_flags,
        ip_len: total_len as u32,
        chain_too_long: false,
        l3,
        hdr_end: l3 + ihl + l4_hlen,
        rtt,
    })
}

#[inline(always)]
fn parse_ipv6<F: Frame>(f: &F, l3: usize) -> Result<Parsed, Malformed> {
    // The first 8 bytes as a value, then the addresses (two checks, in
    // this order: see parse_ipv4 on pointers kept alive).
    let hdr: [u8; 8] = read(f, l3)?;
    let at = ipv6::PAYLOAD_LEN;
    let payload_len = usize::from(u16::from_be_bytes([hdr[at], hdr[at + 1]]));
    let frame = frame_len(f);
    // Payload length 0 is a jumbogram (RFC 2675): the frame says how long.
    let end = if payload_len == 0 {
        frame
    } else {
        l3 + ipv6::HLEN + payload_len
    };
    if hdr[ipv6::VERSION] >> 4 != 6 || end > frame || l3 + ipv6::HLEN > end {
        return Err(Malformed);
    }
    let mut next = hdr[ipv6::NEXT_HEADER];
    let a = Header::<{ ipv6::ADDRS_LEN }>::at(f, l3 + ipv6::ADDRS)?;
    let mut key = [
        a.get::<u64, 0>(),
        a.get::<u64, 8>(),
        a.get::<u64, 16>(),
        a.get::<u64, 24>(),
        0,
    ];
    let mut offset = l3 + ipv6::HLEN;
    let mut first_fragment = true;
    let mut done = false;
    for _ in 0..ipv6::MAX_EXT {
        let len = match next {
            // Inside the loop the bytes are read as values (one load, then
            // the fields out of the register): a pointer kept across
            // iterations gets the packet pointer spilled and truncated by
            // LLVM in ways the verifier rejects.
            ipv6_ext::HOPOPTS | ipv6_ext::ROUTING | ipv6_ext::DSTOPTS => {
                let ext: [u8; 2] = read(f, offset)?;
                next = ext[ipv6_ext::NEXT_HEADER];
                (usize::from(ext[ipv6_ext::LEN]) + 1) * 8
            }
            ipv6_ext::FRAGMENT => {
                let ext: [u8; 4] = read(f, offset)?;
                next = ext[ipv6_ext::NEXT_HEADER];
                // Fragment offset: the high 13 bits.
                let at = ipv6_ext::FRAG_OFFSET;
                first_fragment = u16::from_be_bytes([ext[at], ext[at + 1]]) >> 3 == 0;
                ipv6_ext::FRAG_HLEN
            }
            ipv6_ext::AH => {
                let ext: [u8; 2] = read(f, offset)?;
                next = ext[ipv6_ext::NEXT_HEADER];
                // RFC 4302: the length is in 4-byte words, minus 2.
                (usize::from(ext[ipv6_ext::LEN]) + 2) * 4
            }
            _ => {
                done = true;
                break;
            }
        };
        offset += len;
        if offset > end {
            return Err(Malformed);
        }
    }
    // Eight extension headers followed by an upper-layer header is a chain
    // walked to its end: only an extension header after the eighth is too
    // long.
    let done = done
        || !matches!(
            next,
            ipv6_ext::HOPOPTS
                | ipv6_ext::ROUTING
                | ipv6_ext::DSTOPTS
                | ipv6_ext::FRAGMENT
                | ipv6_ext::AH
        );
    key[4] = proto_word(IP_V6, next);
    let (tcp_flags, l4_hlen, rtt) = if done && first_fragment {
        parse_l4(f, offset, end, next, &mut key[4])?
    } else {
        (0, 0, RttFields::default())
    };
    Ok(Parsed {
        key,
        proto: next,
        tcp_flags,
        ip_len: (end - l3) as u32,
        chain_too_long: !done,
        l3,
        hdr_end: offset + l4_hlen,
        rtt,
    })
}

/// Adds the ports of TCP and UDP to `word` (word 4 of the key) and returns
/// the TCP flags, the length of the TCP or UDP header (data offset, 8;
/// 0 for other protocols) and what passive RTT reads. The L4 header must
/// fit both the frame and the IP packet (which ends at `end`): 20 bytes of
/// TCP, 8 of UDP, 4 of ICMP, else the frame is malformed. What RTT reads
/// beyond that (TCP options, an echo's identifier) is absent when it does
/// not fit, never malformed.
#[inline(always)]
fn parse_l4<F: Frame>(
    f: &F,
    l4: usize,
    end: usize,
    proto: u8,
    word: &mut u64,
) -> Result<(u8, usize, RttFields), Malformed> {
    let need = match proto {
        PROTO_TCP => tcp::MIN_HLEN,
        PROTO_UDP => udp::HLEN,
        PROTO_ICMP | PROTO_ICMPV6 => icmp::MIN_HLEN,
        _ => return Ok((0, 0, RttFields::default())),
    };
    if l4 + need > end {
        return Err(Malformed);
    }
    let mut rtt = RttFields::default();
    match proto {
        PROTO_TCP => {
            let t = Header::<{ tcp::MIN_HLEN }>::at(f, l4)?;
            // The ports go in as they are on the wire (source port,
            // destination port).
            *word |= u64::from(t.get::<u32, { tcp::PORTS }>());
            let hlen = usize::from(t.get::<u8, { tcp::DATA_OFFSET }>() >> 4) * 4;
            let flags = t.get::<u8, { tcp::FLAGS }>();
            let num = if F::DIRECTION == DIR_TX {
                t.get::<u32, { tcp::SEQ }>()
            } else {
                t.get::<u32, { tcp::ACK }>()
            };
            // Options only in a header that fits the packet.
            let ts = if hlen > tcp::MIN_HLEN && l4 + hlen <= end {
                tcp_timestamp(f, l4, hlen)
            } else {
                None
            };
            Ok((flags, hlen, tcp_rtt::<F>(flags, num, end > l4 + hlen, ts)))
        }
        PROTO_UDP => {
            let u = Header::<{ udp::HLEN }>::at(f, l4)?;
            *word |= u64::from(u.get::<u32, { udp::PORTS }>());
            Ok((0, udp::HLEN, rtt))
        }
        _ => {
            let h = Header::<{ icmp::MIN_HLEN }>::at(f, l4)?;
            // Egress records echo requests, ingress matches replies.
            let echo = match (proto, h.get::<u8, { icmp::TYPE }>()) {
                (PROTO_ICMP, icmp::V4_ECHO_REQUEST) | (PROTO_ICMPV6, icmp::V6_ECHO_REQUEST) => {
                    F::DIRECTION == DIR_TX
                }
                (PROTO_ICMP, icmp::V4_ECHO_REPLY) | (PROTO_ICMPV6, icmp::V6_ECHO_REPLY) => {
                    F::DIRECTION != DIR_TX
                }
                _ => false,
            };
            if echo && l4 + icmp::ECHO_HLEN <= end {
                if let Ok(e) = Header::<{ icmp::ECHO_HLEN }>::at(f, l4) {
                    rtt.word = u64::from(u32::from_be(e.get::<u32, { icmp::ECHO_ID_SEQ }>()));
                    rtt.bits = RTT_ECHO;
                }
            }
            Ok((0, 0, rtt))
        }
    }
}

/// TSval and TSecr of the timestamp option of the TCP header at `l4`,
/// `hlen` bytes long (more than 20, inside the packet). Fast path: the
/// canonical layout (NOP, NOP, timestamp first), what Linux puts on every
/// segment after the SYNs: one bounds check, one compare. Otherwise a walk
/// of at most [`tcp::MAX_OPTIONS`] options (a SYN starts with MSS and
/// SACK-permitted). `None`: no timestamp option found, or the options are
/// not in the readable part of the frame.
#[inline(always)]
fn tcp_timestamp<F: Frame>(f: &F, l4: usize, hlen: usize) -> Option<(u32, u32)> {
    let opts = l4 + tcp::OPTIONS;
    if hlen >= CANONICAL_TS_HLEN {
        if let Some(ts) = canonical_timestamp(f, opts).ok()? {
            return Some(ts);
        }
    }
    // Out of line, in a function the verifier checks once (see
    // `walk_options`); a SYN pays for the call.
    let found = f.walk_options(opts, l4 + hlen);
    if found == NO_TIMESTAMP {
        return None;
    }
    Some(((found >> 32) as u32, found as u32))
}

/// A TCP header length that holds the canonical timestamp option and
/// nothing else.
const CANONICAL_TS_HLEN: usize = tcp::OPTIONS + tcp::CANONICAL_TS_LEN;

/// TSval and TSecr of the canonical timestamp option (NOP, NOP, timestamp)
/// at `opts`: one bounds check, one compare. `Ok(None)`: the options start
/// otherwise; `Err`: the 12 bytes are not in the readable frame.
#[inline(always)]
fn canonical_timestamp<F: Frame>(f: &F, opts: usize) -> Result<Option<(u32, u32)>, Malformed> {
    let o = Header::<{ tcp::CANONICAL_TS_LEN }>::at(f, opts)?;
    Ok((o.get::<u32, 0>() == tcp::CANONICAL_TS_LE).then(|| {
        (
            u32::from_be(o.get::<u32, { tcp::CANONICAL_TS_VAL }>()),
            u32::from_be(o.get::<u32, { tcp::CANONICAL_TS_ECR }>()),
        )
    }))
}

/// What [`walk_options`] returns when it finds no timestamp option (a
/// TSval and TSecr both `u32::MAX`, which no stack sends together, are
/// taken for it).
pub const NO_TIMESTAMP: u64 = u64::MAX;

/// The options from `opts` to `opts_end` walked for a timestamp option, at
/// most [`tcp::MAX_OPTIONS`] of them: TSval << 32 | TSecr, or
/// [`NO_TIMESTAMP`]. Called by the global functions of `frame`
/// (`netmon_tcp_options_xdp`, `netmon_tcp_options_tc`) with offsets the
/// verifier knows nothing of, hence the bound first.
#[inline(always)]
pub fn walk_options<F: Frame>(f: &F, opts: usize, opts_end: usize) -> u64 {
    if opts_end > tcp::MAX_OPTIONS_END || opts > opts_end {
        return NO_TIMESTAMP;
    }
    let mut at = opts;
    for _ in 0..tcp::MAX_OPTIONS {
        // Kind and length as one value (see the IPv6 walk on pointers); a
        // lone last byte can only be NOP or EOL.
        if at + 2 > opts_end {
            return NO_TIMESTAMP;
        }
        let Ok([kind, len]) = read::<[u8; 2], F>(f, at) else {
            return NO_TIMESTAMP;
        };
        if kind == tcp::OPT_TS {
            if usize::from(len) != tcp::OPT_TS_LEN || at + tcp::OPT_TS_LEN > opts_end {
                return NO_TIMESTAMP;
            }
            let Ok(o) = Header::<{ tcp::OPT_TS_LEN }>::at(f, at) else {
                return NO_TIMESTAMP;
            };
            let tsval = u32::from_be(o.get::<u32, { tcp::OPT_TS_VAL }>());
            let tsecr = u32::from_be(o.get::<u32, { tcp::OPT_TS_ECR }>());
            return (u64::from(tsval) << 32) | u64::from(tsecr);
        }
        // EOL ends the options; NOP is one byte; every other option says
        // its length, at least 2 (else the options are garbage).
        at += match kind {
            tcp::OPT_EOL => return NO_TIMESTAMP,
            tcp::OPT_NOP => 1,
            _ if len < 2 => return NO_TIMESTAMP,
            _ => usize::from(len),
        };
    }
    NO_TIMESTAMP
}
