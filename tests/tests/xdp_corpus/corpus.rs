//! The frames fed to the XDP program: valid templates (up to four VLAN
//! tags, MPLS label stacks and PPPoE sessions in front of IP, IPv6 extension
//! headers including AH), each truncated at every offset, and templates
//! damaged on purpose (flipped bytes, lying length fields, long and looping
//! IPv6 extension chains, AH lengths past the packet, VLAN stacks longer
//! than four, MPLS stacks without bottom of stack or longer than eight, PPPoE
//! that carries no IP), plus random bytes. Everything comes from one seeded PRNG, so a seed names a
//! corpus.

/// Shortest frame BPF_PROG_TEST_RUN accepts for XDP (ETH_HLEN): the kernel
/// refuses shorter input with EINVAL, so truncations below 14 bytes cannot be
/// fed this way (the program's own "< 14 bytes" branch is unreachable here).
pub const MIN_FRAME: usize = 14;
/// Longest frame generated: above the largest RFC 2819 size class, well
/// under what an XDP test run takes in one buffer (a page less head and
/// tail room).
pub const MAX_FRAME: usize = 1600;

/// xorshift64* (Vigna): tiny, fast, and the same sequence on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // xorshift has one fixed point, 0; any other start is fine.
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi` (modulo bias is irrelevant here).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    pub fn percent(&mut self, p: usize) -> bool {
        self.range(0, 99) < p
    }

    pub fn byte(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }

    pub fn u16(&mut self) -> u16 {
        (self.next_u64() >> 48) as u16
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.range(0, items.len() - 1)]
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

/// One corpus entry and where it came from (printed next to a failure).
pub struct Frame {
    pub bytes: Vec<u8>,
    pub origin: &'static str,
}

/// A length field of a template, for lying about it.
#[derive(Clone, Copy)]
enum Field {
    /// IPv4 IHL: low nibble of the byte.
    Ihl(usize),
    /// TCP data offset: high nibble of the byte.
    DataOffset(usize),
    /// A big-endian u16: IPv4 total length, IPv6 payload length, UDP length.
    Be16(usize),
    /// IPv6 extension header length (8-byte units, first 8 not counted).
    HdrLen(usize),
}

/// A frame under construction plus the positions of its length fields.
#[derive(Default)]
struct Template {
    bytes: Vec<u8>,
    fields: Vec<Field>,
}

impl Template {
    fn push(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
    }

    fn set_be16(&mut self, at: usize, v: usize) {
        let v = u16::try_from(v).unwrap_or(u16::MAX);
        self.bytes[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
}

/// What a template carries above Ethernet and the VLAN tags.
#[derive(Clone, Copy, PartialEq, Eq)]
enum L3Kind {
    Ipv4,
    Ipv6,
    Arp,
    RandomEtherType,
}

/// Small pools so that many frames share a flow and the flow table sums
/// packets, bytes and flags over several frames.
const V4_ADDRS: [[u8; 4]; 5] = [
    [10, 0, 0, 1],
    [10, 0, 0, 2],
    [192, 0, 2, 7],
    [0, 0, 0, 0],
    [255, 255, 255, 255],
];
const V6_ADDRS: [[u8; 16]; 4] = [
    [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
    [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42],
    [0; 16],
];
const PORTS: [u16; 6] = [80, 443, 53, 0, 65535, 40000];
/// SYN, SYN+ACK, ACK, FIN+ACK, RST, PSH+ACK, everything.
const TCP_FLAGS: [u8; 7] = [0x02, 0x12, 0x10, 0x11, 0x04, 0x18, 0xff];
/// Next-header values the program walks as IPv6 extension headers.
const EXT_HEADERS: [u8; 5] = [0, 43, 60, 44, 51];
/// MPLS label stack entries the program reads.
const MPLS_LABELS: usize = 8;
/// VLAN tags the program steps over.
const VLAN_TAGS: usize = 4;
/// PPP protocols that are not IP: LCP, IPCP, IPv6CP, CHAP, MPLS unicast.
const PPP_NOT_IP: [u16; 5] = [0xc021, 0x8021, 0x8057, 0xc223, 0x0281];

fn pick_port(rng: &mut Rng) -> [u8; 2] {
    if rng.percent(80) {
        rng.pick(&PORTS).to_be_bytes()
    } else {
        rng.u16().to_be_bytes()
    }
}

fn pick_proto(rng: &mut Rng) -> u8 {
    match rng.range(0, 99) {
        0..=34 => 6,
        35..=64 => 17,
        65..=76 => 1,
        77..=86 => 58,
        // Anything, including the extension-header numbers.
        _ => rng.byte(),
    }
}

/// Destination and source MAC, `tags` VLAN tags, and `ether_type`.
fn ethernet(t: &mut Template, rng: &mut Rng, tags: usize, ether_type: u16) {
    let macs = rng.bytes(12);
    t.push(&macs);
    for i in 0..tags {
        // QinQ: 802.1ad outside, 802.1Q inside; sometimes 802.1Q twice.
        let tpid: u16 = if i == 0 && tags > 1 && rng.percent(70) {
            0x88a8
        } else if rng.percent(85) {
            0x8100
        } else {
            0x88a8
        };
        t.push(&tpid.to_be_bytes());
        let tci = rng.bytes(2);
        t.push(&tci);
    }
    t.push(&ether_type.to_be_bytes());
}

/// An L4 header (or opaque payload for other protocols) and `payload` bytes.
fn l4(t: &mut Template, rng: &mut Rng, proto: u8, payload: usize) {
    let start = t.bytes.len();
    match proto {
        6 => {
            let (sport, dport) = (pick_port(rng), pick_port(rng));
            t.push(&sport);
            t.push(&dport);
            let seq_ack = rng.bytes(8);
            t.push(&seq_ack);
            let words = if rng.percent(80) { 5 } else { rng.range(6, 15) };
            t.fields.push(Field::DataOffset(t.bytes.len()));
            t.push(&[(words as u8) << 4, rng.pick(&TCP_FLAGS)]);
            let rest = rng.bytes(6 + (words - 5) * 4);
            t.push(&rest);
        }
        17 => {
            let (sport, dport) = (pick_port(rng), pick_port(rng));
            t.push(&sport);
            t.push(&dport);
            t.fields.push(Field::Be16(t.bytes.len()));
            t.push(&[0, 0, 0, 0]);
        }
        1 | 58 => {
            let icmp = [rng.pick(&[0, 8, 128, 129, 3]), 0, 0, 0, 0, 1, 0, 1];
            t.push(&icmp);
        }
        _ => {}
    }
    let body = rng.bytes(payload);
    t.push(&body);
    if proto == 17 {
        let len = t.bytes.len() - start;
        t.set_be16(start + 4, len);
    }
}

fn ipv4(t: &mut Template, rng: &mut Rng, payload: usize) {
    let l3 = t.bytes.len();
    let ihl = if rng.percent(25) { rng.range(6, 15) } else { 5 };
    let proto = pick_proto(rng);
    // 15 % later fragments (offset != 0), which carry no ports.
    let frag = if rng.percent(15) {
        rng.range(1, 0x1fff) as u16
    } else {
        0
    } | (u16::from(rng.byte() & 0x60) << 8);
    t.fields.push(Field::Ihl(l3));
    t.push(&[0x40 | ihl as u8, rng.byte()]);
    t.fields.push(Field::Be16(t.bytes.len()));
    t.push(&[0, 0]);
    let id = rng.bytes(2);
    t.push(&id);
    t.push(&frag.to_be_bytes());
    t.push(&[rng.byte(), proto, 0, 0]);
    t.push(&rng.pick(&V4_ADDRS));
    t.push(&rng.pick(&V4_ADDRS));
    let options = rng.bytes((ihl - 5) * 4);
    t.push(&options);
    l4(t, rng, proto, payload);
    let total = t.bytes.len() - l3;
    t.set_be16(l3 + 2, total);
}

/// An IPv6 header, `exts` extension headers of random kinds, then L4.
fn ipv6_with(t: &mut Template, rng: &mut Rng, exts: &[u8], payload: usize) {
    let l3 = t.bytes.len();
    let tc_flow = rng.bytes(3);
    t.push(&[
        0x60 | (tc_flow[0] & 0x0f),
        tc_flow[1],
        tc_flow[2],
        rng.byte(),
    ]);
    t.fields.push(Field::Be16(t.bytes.len()));
    t.push(&[0, 0, 0, rng.byte()]);
    let mut next_at = l3 + 6;
    t.push(&rng.pick(&V6_ADDRS));
    t.push(&rng.pick(&V6_ADDRS));
    for &ext in exts {
        t.bytes[next_at] = ext;
        next_at = t.bytes.len();
        if ext == 44 {
            // 70 % first fragments (offset 0), M flag random.
            let offset = if rng.percent(70) {
                0
            } else {
                rng.range(1, 0x1fff) as u16
            };
            t.push(&[0, rng.byte()]);
            t.push(&((offset << 3) | u16::from(rng.byte() & 1)).to_be_bytes());
            let id = rng.bytes(4);
            t.push(&id);
        } else if ext == 51 {
            // AH (RFC 4302): (payload length + 2) 4-byte words; 1 is the
            // smallest real one (no ICV), 4 carries a 96-bit ICV.
            let len = rng.pick(&[0, 1, 2, 4, 4, 5]);
            t.fields.push(Field::HdrLen(t.bytes.len() + 1));
            t.push(&[0, len]);
            let rest = rng.bytes((usize::from(len) + 2) * 4 - 2);
            t.push(&rest);
        } else {
            let hdrlen = rng.pick(&[0, 0, 0, 1, 2]);
            t.fields.push(Field::HdrLen(t.bytes.len() + 1));
            t.push(&[0, hdrlen]);
            let opts = rng.bytes((usize::from(hdrlen) + 1) * 8 - 2);
            t.push(&opts);
        }
    }
    let proto = pick_proto(rng);
    t.bytes[next_at] = proto;
    l4(t, rng, proto, payload);
    let payload_len = t.bytes.len() - l3 - 40;
    t.set_be16(l3 + 4, payload_len);
}

fn ipv6(t: &mut Template, rng: &mut Rng, payload: usize) {
    let n = match rng.range(0, 99) {
        0..=49 => 0,
        50..=89 => rng.range(1, 3),
        // Up to the walk's limit of 8, which must still reach L4.
        _ => rng.range(4, 8),
    };
    let exts: Vec<u8> = (0..n).map(|_| rng.pick(&EXT_HEADERS)).collect();
    ipv6_with(t, rng, &exts, payload);
}

/// What sits between the Ethernet header (and its VLAN tags) and IP.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encap {
    None,
    /// A label stack of this many entries, bottom of stack on the last.
    Mpls(usize),
    Pppoe,
}

/// `n` MPLS label stack entries, bottom of stack on the last if `bottom`.
fn mpls_labels(t: &mut Template, rng: &mut Rng, n: usize, bottom: bool) {
    for i in 0..n {
        let label = rng.range(0, 0xf_ffff) as u32;
        let tc = u32::from(rng.byte() & 7);
        let s = u32::from(bottom && i + 1 == n);
        let entry = (label << 12) | (tc << 9) | (s << 8) | u32::from(rng.byte());
        t.push(&entry.to_be_bytes());
    }
}

/// A PPPoE session header (version/type, code, session, length) and the
/// PPP protocol; the length is set by [`pppoe_length`].
fn pppoe_header(t: &mut Template, rng: &mut Rng, ver_type: u8, code: u8, protocol: u16) {
    t.push(&[ver_type, code]);
    let session = rng.bytes(2);
    t.push(&session);
    t.fields.push(Field::Be16(t.bytes.len()));
    t.push(&[0, 0]);
    t.push(&protocol.to_be_bytes());
}

/// Sets the PPPoE length (at `at`) to what follows it, the PPP protocol
/// included (RFC 2516).
fn pppoe_length(t: &mut Template, at: usize) {
    let len = t.bytes.len() - at - 2;
    t.set_be16(at, len);
}

/// A frame the program should parse to the end: 0-4 VLAN tags, then IPv4,
/// IPv6 (both also behind an MPLS label stack or a PPPoE session header),
/// ARP or a random EtherType, with up to `max_payload` payload bytes.
fn template(rng: &mut Rng, max_payload: usize) -> Template {
    let mut t = Template::default();
    let tags = rng.pick(&[0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 4]);
    let kind = match rng.range(0, 99) {
        0..=41 => L3Kind::Ipv4,
        42..=83 => L3Kind::Ipv6,
        84..=91 => L3Kind::Arp,
        _ => L3Kind::RandomEtherType,
    };
    let ip = matches!(kind, L3Kind::Ipv4 | L3Kind::Ipv6);
    let encap = match rng.range(0, 99) {
        _ if !ip => Encap::None,
        0..=69 => Encap::None,
        70..=84 => Encap::Mpls(rng.pick(&[1, 1, 2, 2, 3, MPLS_LABELS])),
        _ => Encap::Pppoe,
    };
    let ether_type = match (kind, encap) {
        (_, Encap::Mpls(_)) => rng.pick(&[0x8847, 0x8847, 0x8848]),
        (_, Encap::Pppoe) => 0x8864,
        (L3Kind::Ipv4, _) => 0x0800,
        (L3Kind::Ipv6, _) => 0x86dd,
        (L3Kind::Arp, _) => 0x0806,
        (L3Kind::RandomEtherType, _) => rng.u16(),
    };
    ethernet(&mut t, rng, tags, ether_type);
    let mut pppoe_at = None;
    match encap {
        Encap::None => {}
        Encap::Mpls(n) => mpls_labels(&mut t, rng, n, true),
        Encap::Pppoe => {
            let protocol = if kind == L3Kind::Ipv4 { 0x0021 } else { 0x0057 };
            pppoe_at = Some(t.bytes.len() + 4);
            pppoe_header(&mut t, rng, 0x11, 0, protocol);
        }
    }
    let payload = rng.range(0, max_payload);
    match kind {
        L3Kind::Ipv4 => ipv4(&mut t, rng, payload),
        L3Kind::Ipv6 => ipv6(&mut t, rng, payload),
        L3Kind::Arp => {
            // Ethernet/IPv4 ARP request.
            t.push(&[0, 1, 8, 0, 6, 4, 0, 1]);
            let addrs = rng.bytes(20);
            t.push(&addrs);
        }
        L3Kind::RandomEtherType => {
            let body = rng.bytes(payload);
            t.push(&body);
        }
    }
    if let Some(at) = pppoe_at {
        pppoe_length(&mut t, at);
    }
    pad(&mut t, rng);
    t
}

/// Ethernet padding to the 60-byte minimum, as a NIC would add: beyond the
/// IP packet's own length, so not part of it.
fn pad(t: &mut Template, rng: &mut Rng) {
    if t.bytes.len() < 60 && rng.percent(50) {
        t.bytes.resize(60, 0);
    }
}

/// Sets `field` to a lie: random, off by a little, or an extreme.
fn lie(t: &mut Template, rng: &mut Rng, field: Field) {
    let b = &mut t.bytes;
    match field {
        Field::Ihl(at) => b[at] = (b[at] & 0xf0) | (rng.byte() & 0x0f),
        Field::DataOffset(at) => b[at] = (b[at] & 0x0f) | (rng.byte() & 0xf0),
        Field::HdrLen(at) => {
            b[at] = match rng.range(0, 2) {
                0 => rng.byte(),
                1 => b[at].wrapping_add(rng.pick(&[1, 2, 255])),
                _ => rng.pick(&[0, 255]),
            }
        }
        Field::Be16(at) => {
            let now = u16::from_be_bytes([b[at], b[at + 1]]);
            let v = match rng.range(0, 2) {
                0 => rng.u16(),
                1 => {
                    let delta = rng.range(1, 8) as u16;
                    if rng.percent(50) {
                        now.wrapping_add(delta)
                    } else {
                        now.wrapping_sub(delta)
                    }
                }
                _ => rng.pick(&[0, 1, 19, 20, 39, 40, 0xffff]),
            };
            b[at..at + 2].copy_from_slice(&v.to_be_bytes());
        }
    }
}

/// The corpus being built.
struct Corpus {
    rng: Rng,
    frames: Vec<Frame>,
}

impl Corpus {
    fn add(&mut self, bytes: Vec<u8>, origin: &'static str) {
        assert!(
            (MIN_FRAME..=MAX_FRAME).contains(&bytes.len()),
            "{origin}: {} bytes",
            bytes.len()
        );
        self.frames.push(Frame { bytes, origin });
    }

    /// Valid templates, each also cut at every length from 14 up.
    fn truncated_templates(&mut self, n: usize) {
        for _ in 0..n {
            let t = template(&mut self.rng, 40);
            for len in MIN_FRAME..t.bytes.len() {
                self.add(t.bytes[..len].to_vec(), "template truncated");
            }
            self.add(t.bytes, "template");
        }
    }

    /// Frames of every size class, up to MAX_FRAME.
    fn large_templates(&mut self, n: usize) {
        for _ in 0..n {
            let t = template(&mut self.rng, 1_400);
            if t.bytes.len() <= MAX_FRAME {
                self.add(t.bytes, "large template");
            }
        }
    }

    /// 1-4 bytes replaced, mostly in the headers; sometimes also truncated.
    fn byte_mutations(&mut self, n: usize) {
        let rng = &mut self.rng;
        for _ in 0..n {
            let mut b = template(rng, 40).bytes;
            for _ in 0..rng.range(1, 4) {
                let hi = if rng.percent(80) {
                    b.len().min(90)
                } else {
                    b.len()
                };
                let at = rng.range(0, hi - 1);
                b[at] = rng.byte();
            }
            if rng.percent(20) {
                b.truncate(rng.range(MIN_FRAME, b.len()));
            }
            self.frames.push(Frame {
                bytes: b,
                origin: "byte mutation",
            });
        }
    }

    /// Lying length fields: IHL, total length, payload length, UDP length,
    /// TCP data offset, extension header length.
    fn lying_lengths(&mut self, n: usize) {
        let mut lies = 0;
        while lies < n {
            let mut t = template(&mut self.rng, 40);
            if t.fields.is_empty() {
                continue;
            }
            for _ in 0..self.rng.range(1, 2) {
                let field = self.rng.pick(&t.fields);
                lie(&mut t, &mut self.rng, field);
            }
            self.add(t.bytes, "lying length");
            lies += 1;
        }
    }

    /// IPv6 extension chains at and past the walk's limit of 8.
    fn extension_chains(&mut self, n: usize) {
        let rng = &mut self.rng;
        for _ in 0..n {
            let mut t = Template::default();
            let tags = rng.pick(&[0, 1, 2]);
            ethernet(&mut t, rng, tags, 0x86dd);
            let (exts, origin): (Vec<u8>, _) = match rng.range(0, 3) {
                0 => {
                    let n = rng.range(9, 24);
                    (
                        (0..n).map(|_| rng.pick(&EXT_HEADERS)).collect(),
                        "long chain",
                    )
                }
                // The same header over and over: each names itself as next.
                1 => {
                    let ext = rng.pick(&EXT_HEADERS);
                    (vec![ext; rng.range(7, 20)], "self-referencing chain")
                }
                2 => {
                    let n = rng.pick(&[7, 8, 8, 9]);
                    (
                        (0..n).map(|_| rng.pick(&EXT_HEADERS)).collect(),
                        "chain at the limit",
                    )
                }
                _ => {
                    // Several fragment headers: the last one decides.
                    let n = rng.range(2, 5);
                    (vec![44; n], "fragment headers")
                }
            };
            let payload = rng.range(0, 24);
            ipv6_with(&mut t, rng, &exts, payload);
            if rng.percent(25) {
                let field = rng.pick(&t.fields);
                lie(&mut t, rng, field);
            }
            self.frames.push(Frame {
                bytes: t.bytes,
                origin,
            });
        }
    }

    /// A chain that jumps: a huge hdrlen points past the packet's end.
    fn hdrlen_past_the_end(&mut self, n: usize) {
        for _ in 0..n {
            let mut t = Template::default();
            ethernet(&mut t, &mut self.rng, 0, 0x86dd);
            ipv6_with(&mut t, &mut self.rng, &[0, 60, 43], 8);
            let hdrlens: Vec<usize> = t
                .fields
                .iter()
                .filter_map(|f| match *f {
                    Field::HdrLen(at) => Some(at),
                    _ => None,
                })
                .collect();
            let at = self.rng.pick(&hdrlens);
            t.bytes[at] = self.rng.pick(&[31, 127, 255]);
            self.add(t.bytes, "hdrlen past the end");
        }
    }

    /// VLAN stacks of 3 to 8 tags: the program steps over four.
    fn vlan_stacks(&mut self, n: usize) {
        for _ in 0..n {
            let mut t = Template::default();
            let tags = self.rng.range(3, 2 * VLAN_TAGS);
            let ether_type = self.rng.pick(&[0x0800, 0x86dd, 0x0806, 0x8100, 0x88a8]);
            ethernet(&mut t, &mut self.rng, tags, ether_type);
            match ether_type {
                0x0800 => ipv4(&mut t, &mut self.rng, 16),
                0x86dd => ipv6(&mut t, &mut self.rng, 16),
                _ => {
                    let body = self.rng.bytes(30);
                    t.push(&body);
                }
            }
            self.add(t.bytes, "vlan stack");
        }
    }

    /// MPLS stacks and PPPoE headers that do not lead to IP, or lead to it
    /// oddly: no bottom of stack, more entries than the program reads, a
    /// payload that is neither IPv4 nor IPv6 (a pseudowire control word, an
    /// Ethernet frame), an IP version that is not the one the PPP protocol
    /// names, PPP protocols that are not IP, PPPoE discovery codes and wrong
    /// versions; some cut short.
    fn damaged_encapsulations(&mut self, n: usize) {
        let rng = &mut self.rng;
        for _ in 0..n {
            let mut t = Template::default();
            let tags = rng.pick(&[0, 0, 1, 2, VLAN_TAGS]);
            let mpls = rng.percent(50);
            ethernet(&mut t, rng, tags, if mpls { 0x8847 } else { 0x8864 });
            let origin = if mpls {
                match rng.range(0, 3) {
                    0 => {
                        let labels = rng.range(1, MPLS_LABELS + 4);
                        mpls_labels(&mut t, rng, labels, false);
                        "mpls without bottom of stack"
                    }
                    1 => {
                        let labels = rng.range(MPLS_LABELS - 1, MPLS_LABELS + 4);
                        mpls_labels(&mut t, rng, labels, true);
                        "mpls stack at and past the limit"
                    }
                    2 => {
                        let labels = rng.range(1, 3);
                        mpls_labels(&mut t, rng, labels, true);
                        // Control word (nibble 0), or an Ethernet frame.
                        let any = rng.byte();
                        let first = rng.pick(&[0x00, 0x10, 0x02, any]);
                        t.push(&[first]);
                        "mpls payload not ip by its first nibble"
                    }
                    _ => {
                        mpls_labels(&mut t, rng, 1, true);
                        "mpls payload cut"
                    }
                }
            } else {
                let at = t.bytes.len() + 4;
                let origin = match rng.range(0, 2) {
                    0 => {
                        let protocol = if rng.percent(80) {
                            rng.pick(&PPP_NOT_IP)
                        } else {
                            rng.u16()
                        };
                        pppoe_header(&mut t, rng, 0x11, 0, protocol);
                        "pppoe not ip"
                    }
                    1 => {
                        // Discovery codes (PADI, PADO, PADR, PADS, PADT)
                        // or another version/type.
                        let (vt, code) = if rng.percent(50) {
                            (0x11, rng.pick(&[0x09, 0x07, 0x19, 0x65, 0xa7]))
                        } else {
                            {
                                let any = rng.byte();
                                (rng.pick(&[0x12, 0x21, 0x01, 0x10, any]), 0)
                            }
                        };
                        pppoe_header(&mut t, rng, vt, code, 0x0021);
                        "pppoe wrong version or code"
                    }
                    _ => {
                        let protocol = rng.pick(&[0x0021, 0x0057]);
                        pppoe_header(&mut t, rng, 0x11, 0, protocol);
                        "pppoe with the other ip version"
                    }
                };
                // Then IPv4 or IPv6 regardless of what the header says.
                if rng.percent(50) {
                    ipv4(&mut t, rng, 16);
                } else {
                    ipv6(&mut t, rng, 16);
                }
                pppoe_length(&mut t, at);
                if rng.percent(20) {
                    let field = rng.pick(&t.fields);
                    lie(&mut t, rng, field);
                }
                origin
            };
            if mpls && rng.percent(80) {
                if rng.percent(50) {
                    ipv4(&mut t, rng, 16);
                } else {
                    ipv6(&mut t, rng, 16);
                }
            }
            if rng.percent(15) {
                let cut = rng.range(MIN_FRAME, t.bytes.len().max(MIN_FRAME));
                t.bytes.truncate(cut);
            }
            t.bytes.resize(t.bytes.len().max(MIN_FRAME), 0);
            self.frames.push(Frame {
                bytes: t.bytes,
                origin,
            });
        }
    }

    /// IPv6 with AH (alone, or among other extension headers) whose length
    /// runs past the packet, or just fits.
    fn ah_past_the_end(&mut self, n: usize) {
        let rng = &mut self.rng;
        for _ in 0..n {
            let mut t = Template::default();
            let tags = rng.pick(&[0, 1]);
            ethernet(&mut t, rng, tags, 0x86dd);
            let exts: &[u8] = rng.pick(&[&[51][..], &[0, 51], &[51, 60], &[44, 51, 43]]);
            let payload = rng.range(0, 24);
            ipv6_with(&mut t, rng, exts, payload);
            // Walk the chain to the AH.
            let l3 = MIN_FRAME + 4 * tags;
            let (mut next, mut at) = (t.bytes[l3 + 6], l3 + 40);
            while next != 51 {
                let len = if next == 44 {
                    8
                } else {
                    (usize::from(t.bytes[at + 1]) + 1) * 8
                };
                next = t.bytes[at];
                at += len;
            }
            let room = t.bytes.len() - at;
            t.bytes[at + 1] = match rng.range(0, 2) {
                0 => rng.pick(&[0xff, 0x80, 0x40]),
                // Just past the packet, or exactly to its end.
                1 => u8::try_from((room / 4).saturating_sub(1)).unwrap_or(0xff),
                _ => u8::try_from((room / 4).saturating_sub(2)).unwrap_or(0xff),
            };
            self.frames.push(Frame {
                bytes: t.bytes,
                origin: "ah length past the end",
            });
        }
    }

    /// Random bytes of random length; half of them made to look like IP
    /// (EtherType, version, often a length that fits) so the parser goes deep.
    fn random_bytes(&mut self, n: usize) {
        let rng = &mut self.rng;
        for i in 0..n {
            let len = rng.range(MIN_FRAME, MAX_FRAME);
            let mut b = rng.bytes(len);
            let origin = if i % 2 == 0 {
                "random bytes"
            } else {
                let tags = rng.pick(&[0, 1, 2]);
                let (ether_type, version) = rng.pick(&[(0x0800u16, 0x40u8), (0x86dd, 0x60)]);
                let mut t = Template::default();
                ethernet(&mut t, rng, tags, ether_type);
                let l3 = t.bytes.len();
                if l3 + 40 < b.len() {
                    b[..l3].copy_from_slice(&t.bytes);
                    b[l3] = version | (b[l3] & 0x0f);
                    if rng.percent(50) {
                        let room = b.len() - l3;
                        let (at, v) = if version == 0x40 {
                            (l3 + 2, rng.range(20, room))
                        } else {
                            (l3 + 4, rng.range(0, room - 40))
                        };
                        b[at..at + 2].copy_from_slice(&(v as u16).to_be_bytes());
                    }
                }
                "random ip-like bytes"
            };
            self.frames.push(Frame { bytes: b, origin });
        }
    }
}

/// The whole corpus for `seed`: about 260,000 frames.
pub fn generate(seed: u64) -> Vec<Frame> {
    let mut c = Corpus {
        rng: Rng::new(seed),
        frames: Vec::new(),
    };
    c.truncated_templates(1_200);
    c.large_templates(5_000);
    c.byte_mutations(50_000);
    c.lying_lengths(40_000);
    c.extension_chains(12_000);
    c.hdrlen_past_the_end(2_000);
    c.vlan_stacks(5_000);
    c.damaged_encapsulations(12_000);
    c.ah_past_the_end(3_000);
    c.random_bytes(40_000);
    c.frames
}
