//! Frame builders for the XDP tests and the benches: whole Ethernet frames
//! (no FCS, as XDP sees them) of IPv4/IPv6 with TCP or UDP, behind VLAN
//! tags, MPLS or PPPoE, with valid lengths and IPv4 header checksums.
//! Addresses, ports and lengths are the caller's; TCP segments carry data
//! offset 5, window 64,240 and the flags given; IPv4 headers DF and TTL 64.
//! For passive RTT: TCP segments with sequence and acknowledgment numbers,
//! options (the timestamp option in Linux's layouts) and payload
//! ([`Segment`], [`tcp_frame`]), and ICMP/ICMPv6 echo requests and replies
//! ([`icmp_echo`]). L4 checksums are left 0: no program here reads them.

/// The two MAC addresses of a frame.
#[derive(Clone, Copy, Debug)]
pub struct Eth {
    pub dst: [u8; 6],
    pub src: [u8; 6],
}

/// Locally administered addresses, for frames that never leave a test run.
pub const ETH: Eth = Eth {
    dst: [0x02, 0, 0, 0, 0, 1],
    src: [0x02, 0, 0, 0, 0, 2],
};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_PSH: u8 = 0x08;

/// 2001:db8::`last` (documentation prefix).
pub const fn v6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0x20;
    a[1] = 0x01;
    a[2] = 0x0d;
    a[3] = 0xb8;
    a[15] = last;
    a
}

/// The Internet checksum of `data` (an IPv4 header with its checksum field
/// zero gives the value to put there; a whole header gives 0).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet header, then the VLAN tags `(tpid, vid)` given, then
/// `ether_type`.
pub fn ethernet(eth: Eth, tags: &[(u16, u16)], ether_type: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&eth.dst);
    f.extend_from_slice(&eth.src);
    for &(tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

/// A 20-byte IPv4 header (DF, TTL 64) with its checksum.
pub fn ipv4_header(src: [u8; 4], dst: [u8; 4], proto: u8, total_len: u16) -> [u8; 20] {
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total_len.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip
}

/// A 40-byte IPv6 header (hop limit 64).
pub fn ipv6_header(src: [u8; 16], dst: [u8; 16], next: u8, payload_len: u16) -> [u8; 40] {
    let mut ip = [0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&payload_len.to_be_bytes());
    ip[6] = next;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src);
    ip[24..40].copy_from_slice(&dst);
    ip
}

/// A 20-byte TCP header (sequence and checksum 0).
pub fn tcp_header(sport: u16, dport: u16, flags: u8) -> [u8; 20] {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&64_240u16.to_be_bytes());
    tcp
}

/// An 8-byte UDP header, checksum 0 (none, allowed for IPv4).
pub fn udp_header(sport: u16, dport: u16, len: u16) -> [u8; 8] {
    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&len.to_be_bytes());
    udp
}

/// The IPv4 part of a frame of `len` bytes that starts with `head` (the
/// link headers): the IP packet fills the rest, its payload zeros.
fn ipv4_in(head: Vec<u8>, len: usize, src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = head;
    let total_len = u16::try_from(len - f.len()).expect("a frame under 64 KiB");
    f.extend_from_slice(&ipv4_header(src, dst, proto, total_len));
    f.extend_from_slice(l4);
    f.resize(len, 0);
    f
}

/// A `len`-byte IPv4/TCP frame behind the VLAN tags given; the IP packet
/// fills the frame.
pub fn ipv4_tcp(
    eth: Eth,
    tags: &[(u16, u16)],
    (src, sport): ([u8; 4], u16),
    (dst, dport): ([u8; 4], u16),
    flags: u8,
    len: usize,
) -> Vec<u8> {
    let tcp = tcp_header(sport, dport, flags);
    ipv4_in(ethernet(eth, tags, ETH_P_IP), len, src, dst, 6, &tcp)
}

/// A `len`-byte IPv4/UDP frame; the IP packet fills the frame.
pub fn ipv4_udp(
    eth: Eth,
    (src, sport): ([u8; 4], u16),
    (dst, dport): ([u8; 4], u16),
    len: usize,
) -> Vec<u8> {
    let udp_len = u16::try_from(len - 14 - 20).expect("a frame under 64 KiB");
    let udp = udp_header(sport, dport, udp_len);
    ipv4_in(ethernet(eth, &[], ETH_P_IP), len, src, dst, 17, &udp)
}

/// A `len`-byte IPv6/UDP frame; the IP packet fills the frame.
pub fn ipv6_udp(
    eth: Eth,
    (src, sport): ([u8; 16], u16),
    (dst, dport): ([u8; 16], u16),
    len: usize,
) -> Vec<u8> {
    let mut f = ethernet(eth, &[], ETH_P_IPV6);
    let payload_len = u16::try_from(len - f.len() - 40).expect("a frame under 64 KiB");
    f.extend_from_slice(&ipv6_header(src, dst, 17, payload_len));
    f.extend_from_slice(&udp_header(sport, dport, payload_len));
    f.resize(len, 0);
    f
}

/// IPv6, an Authentication Header (RFC 4302, payload length 4: 12 bytes and
/// a 96-bit ICV; SPI 0x100, sequence 1), then a TCP header: 98 bytes.
pub fn ipv6_ah_tcp(
    eth: Eth,
    (src, sport): ([u8; 16], u16),
    (dst, dport): ([u8; 16], u16),
    flags: u8,
) -> Vec<u8> {
    let mut f = ethernet(eth, &[], ETH_P_IPV6);
    f.extend_from_slice(&ipv6_header(src, dst, 51, 24 + 20));
    let mut ah = [0u8; 24];
    ah[0] = 6;
    ah[1] = 4;
    ah[4..8].copy_from_slice(&0x100u32.to_be_bytes()); // SPI
    ah[8..12].copy_from_slice(&1u32.to_be_bytes()); // sequence number
    f.extend_from_slice(&ah);
    f.extend_from_slice(&tcp_header(sport, dport, flags));
    f
}

/// An untagged IPv4 frame moved behind EtherType `ether_type` and `shim`
/// (VLAN tags, an MPLS label stack, a PPPoE header): the IP packet is
/// shortened by the shim's length, down to its first 40 bytes (the IP and
/// TCP headers), so the frame keeps its length unless the shim is longer
/// than the packet's payload.
pub fn ipv4_behind(plain: &[u8], ether_type: u16, shim: &[u8]) -> Vec<u8> {
    let mut f = plain[..12].to_vec();
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(shim);
    let len = plain.len();
    let mut ip = plain[14..len - shim.len().min(len - 14 - 40)].to_vec();
    let total_len = ip.len() as u16;
    ip[2..4].copy_from_slice(&total_len.to_be_bytes());
    ip[10..12].copy_from_slice(&[0, 0]);
    let sum = checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f
}

/// IPv6 from 2001:db8::1 to 2001:db8::2 with `exts` hop-by-hop headers of 8
/// bytes, then UDP 53 -> 53 without payload: the extension-header walk's
/// limit as a fixture.
pub fn ipv6_udp_behind_hop_by_hop(exts: usize) -> Vec<u8> {
    let payload = u16::try_from(exts * 8 + 8).expect("a short chain");
    let first = if exts == 0 { 17 } else { 0 };
    let mut f = ethernet(ETH, &[], ETH_P_IPV6);
    f.extend_from_slice(&ipv6_header(v6(1), v6(2), first, payload));
    for i in 0..exts {
        let next = if i + 1 == exts { 17 } else { 0 };
        f.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
    }
    f.extend_from_slice(&udp_header(53, 53, 8));
    f
}

/// TCP option kinds.
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_WS: u8 = 3;
const OPT_SACK_PERM: u8 = 4;
const OPT_TS: u8 = 8;

/// The timestamp option as Linux puts it first on every segment after the
/// SYNs (RFC 7323 appendix A): NOP, NOP, kind 8, length 10, TSval, TSecr.
pub fn ts_option(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![OPT_NOP, OPT_NOP, OPT_TS, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&tsecr.to_be_bytes());
    o
}

/// The options of a Linux SYN or SYN-ACK with timestamps: MSS 1460,
/// SACK-permitted, timestamp, NOP, window scale 7 (20 bytes); the
/// timestamp is the third option, not where [`ts_option`] puts it.
pub fn syn_options(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![OPT_MSS, 4, 0x05, 0xb4, OPT_SACK_PERM, 2, OPT_TS, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&tsecr.to_be_bytes());
    o.extend_from_slice(&[OPT_NOP, OPT_WS, 3, 7]);
    o
}

/// The options of a BSD (macOS) SYN: MSS, NOP, window scale, NOP, NOP,
/// timestamp, SACK-permitted, EOL (24 bytes); the timestamp sixth.
pub fn bsd_syn_options(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![
        OPT_MSS, 4, 0x05, 0xb4, OPT_NOP, OPT_WS, 3, 6, OPT_NOP, OPT_NOP,
    ];
    o.extend_from_slice(&[OPT_TS, 10]);
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&tsecr.to_be_bytes());
    o.extend_from_slice(&[OPT_SACK_PERM, 2, 0, 0]);
    o
}

/// One TCP segment: ports, sequence and acknowledgment numbers, flags,
/// options (a multiple of 4 bytes, at most 40) and how many payload bytes
/// (zeros) follow the header.
#[derive(Clone, Debug, Default)]
pub struct Segment {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub options: Vec<u8>,
    pub payload: usize,
}

impl Segment {
    /// The TCP header with its options.
    pub fn header(&self) -> Vec<u8> {
        assert!(
            self.options.len().is_multiple_of(4) && self.options.len() <= 40,
            "TCP options of {} bytes",
            self.options.len()
        );
        let mut h = tcp_header(self.sport, self.dport, self.flags).to_vec();
        h[4..8].copy_from_slice(&self.seq.to_be_bytes());
        h[8..12].copy_from_slice(&self.ack.to_be_bytes());
        h[12] = (((20 + self.options.len()) / 4) << 4) as u8;
        h.extend_from_slice(&self.options);
        h
    }
}

/// An IP address of either version, for the builders that take both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// Ethernet, IPv4 or IPv6 (by the addresses' version; both must be of
/// one) and `l4` (protocol `proto`), then `payload` zero bytes.
fn ip_frame(src: Addr, dst: Addr, proto: u8, l4: &[u8], payload: usize) -> Vec<u8> {
    let len = l4.len() + payload;
    match (src, dst) {
        (Addr::V4(s), Addr::V4(d)) => {
            let mut f = ethernet(ETH, &[], ETH_P_IP);
            let total = u16::try_from(20 + len).expect("a packet under 64 KiB");
            f.extend_from_slice(&ipv4_header(s, d, proto, total));
            f.extend_from_slice(l4);
            f.resize(f.len() + payload, 0);
            f
        }
        (Addr::V6(s), Addr::V6(d)) => {
            let mut f = ethernet(ETH, &[], ETH_P_IPV6);
            let plen = u16::try_from(len).expect("a packet under 64 KiB");
            f.extend_from_slice(&ipv6_header(s, d, proto, plen));
            f.extend_from_slice(l4);
            f.resize(f.len() + payload, 0);
            f
        }
        _ => panic!("addresses of two IP versions: {src:?}, {dst:?}"),
    }
}

/// An untagged frame of the TCP segment `seg` from `src` to `dst`.
pub fn tcp_frame(src: Addr, dst: Addr, seg: &Segment) -> Vec<u8> {
    ip_frame(src, dst, 6, &seg.header(), seg.payload)
}

/// An untagged ICMP (IPv4) or ICMPv6 (IPv6) echo request (`reply` false:
/// type 8 / 128) or reply (type 0 / 129) with identifier `id`, sequence
/// number `seq` and 56 bytes of data, as ping sends.
pub fn icmp_echo(src: Addr, dst: Addr, reply: bool, id: u16, seq: u16) -> Vec<u8> {
    let (proto, kind) = match (src, reply) {
        (Addr::V4(_), false) => (1, 8),
        (Addr::V4(_), true) => (1, 0),
        (Addr::V6(_), false) => (58, 128),
        (Addr::V6(_), true) => (58, 129),
    };
    let mut h = vec![kind, 0, 0, 0];
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    ip_frame(src, dst, proto, &h, 56)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_checksums_hold() {
        let f = ipv4_tcp(
            ETH,
            &[(0x8100, 7)],
            ([198, 51, 100, 2], 1),
            ([198, 51, 100, 1], 2),
            TCP_ACK,
            64,
        );
        assert_eq!(f.len(), 64);
        assert_eq!(checksum(&f[18..38]), 0);
        assert_eq!(usize::from(u16::from_be_bytes([f[20], f[21]])), 64 - 18);
        let u = ipv4_udp(ETH, ([198, 51, 100, 2], 1), ([198, 51, 100, 1], 2), 60);
        assert_eq!((u.len(), checksum(&u[14..34])), (60, 0));
        assert_eq!(u16::from_be_bytes([u[38], u[39]]), 60 - 34);
        let b = ipv4_behind(
            &f[..14].iter().chain(&f[18..]).copied().collect::<Vec<_>>(),
            0x8847,
            &[0, 1, 1, 64],
        );
        assert_eq!((b.len(), checksum(&b[18..38])), (60, 0));
        assert_eq!(ipv6_ah_tcp(ETH, (v6(3), 1), (v6(1), 2), TCP_ACK).len(), 98);
        assert_eq!(ipv6_udp(ETH, (v6(2), 1), (v6(1), 2), 64).len(), 64);
        assert_eq!(ipv6_udp_behind_hop_by_hop(2).len(), 14 + 40 + 16 + 8);
    }

    #[test]
    fn segments_and_echoes_are_laid_out() {
        let seg = Segment {
            sport: 40_000,
            dport: 80,
            seq: 0x0102_0304,
            ack: 0x0a0b_0c0d,
            flags: TCP_ACK,
            options: ts_option(7, 9),
            payload: 100,
        };
        let f = tcp_frame(
            Addr::V4([198, 51, 100, 1]),
            Addr::V4([198, 51, 100, 2]),
            &seg,
        );
        assert_eq!(f.len(), 14 + 20 + 32 + 100);
        assert_eq!(checksum(&f[14..34]), 0);
        assert_eq!(
            usize::from(u16::from_be_bytes([f[16], f[17]])),
            20 + 32 + 100
        );
        let t = &f[34..];
        assert_eq!(t[12] >> 4, 8);
        assert_eq!(&t[4..12], &[1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(&t[20..32], &[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]);
        assert_eq!(syn_options(1, 0).len(), 20);
        assert_eq!(bsd_syn_options(1, 0).len(), 24);
        assert_eq!(
            &bsd_syn_options(5, 6)[10..20],
            &[8, 10, 0, 0, 0, 5, 0, 0, 0, 6]
        );
        let t6 = tcp_frame(Addr::V6(v6(1)), Addr::V6(v6(2)), &Segment::default());
        assert_eq!((t6.len(), t6[20]), (14 + 40 + 20, 6));
        let e = icmp_echo(Addr::V6(v6(1)), Addr::V6(v6(2)), true, 0x1234, 5);
        assert_eq!((e.len(), e[20], e[54]), (14 + 40 + 8 + 56, 58, 129));
        assert_eq!(&e[58..62], &[0x12, 0x34, 0, 5]);
        let e = icmp_echo(
            Addr::V4([192, 0, 2, 1]),
            Addr::V4([192, 0, 2, 2]),
            false,
            1,
            2,
        );
        assert_eq!((e.len(), e[23], e[34]), (14 + 20 + 8 + 56, 1, 8));
    }
}
