//! IPFIX messages (RFC 7011) for flow records: the encoding only, pure.
//!
//! Two templates, one per address family, with the Information Elements of
//! RFC 7012 (IANA numbers): addresses, ports, protocol, TCP flags,
//! direction, end reason, octet and packet deltas, start and end times in
//! milliseconds. Messages stay under a size limit (the path MTU for UDP);
//! each carries the observation domain and the sequence number, which
//! counts the data records sent before the message (modulo 2^32).

use std::net::IpAddr;

/// IPFIX version number in the message header.
const VERSION: u16 = 10;
const MESSAGE_HEADER: usize = 16;
const SET_HEADER: usize = 4;
const TEMPLATE_SET_ID: u16 = 2;
/// Template (and data set) ids of the two templates.
pub const TEMPLATE_V4: u16 = 256;
pub const TEMPLATE_V6: u16 = 257;

/// Information Elements (RFC 7012 and IANA's registry): (id, length).
mod ie {
    pub const OCTET_DELTA_COUNT: (u16, u16) = (1, 8);
    pub const PACKET_DELTA_COUNT: (u16, u16) = (2, 8);
    pub const PROTOCOL_IDENTIFIER: (u16, u16) = (4, 1);
    pub const TCP_CONTROL_BITS: (u16, u16) = (6, 2);
    pub const SOURCE_TRANSPORT_PORT: (u16, u16) = (7, 2);
    pub const SOURCE_IPV4_ADDRESS: (u16, u16) = (8, 4);
    pub const DESTINATION_TRANSPORT_PORT: (u16, u16) = (11, 2);
    pub const DESTINATION_IPV4_ADDRESS: (u16, u16) = (12, 4);
    pub const SOURCE_IPV6_ADDRESS: (u16, u16) = (27, 16);
    pub const DESTINATION_IPV6_ADDRESS: (u16, u16) = (28, 16);
    pub const FLOW_DIRECTION: (u16, u16) = (61, 1);
    pub const FLOW_END_REASON: (u16, u16) = (136, 1);
    pub const FLOW_START_MILLISECONDS: (u16, u16) = (152, 8);
    pub const FLOW_END_MILLISECONDS: (u16, u16) = (153, 8);
}

/// The fields of both templates after the addresses, in record order.
const COMMON: [(u16, u16); 10] = [
    ie::SOURCE_TRANSPORT_PORT,
    ie::DESTINATION_TRANSPORT_PORT,
    ie::PROTOCOL_IDENTIFIER,
    ie::TCP_CONTROL_BITS,
    ie::FLOW_DIRECTION,
    ie::FLOW_END_REASON,
    ie::OCTET_DELTA_COUNT,
    ie::PACKET_DELTA_COUNT,
    ie::FLOW_START_MILLISECONDS,
    ie::FLOW_END_MILLISECONDS,
];

fn fields(v6: bool) -> impl Iterator<Item = (u16, u16)> {
    let addrs = if v6 {
        [ie::SOURCE_IPV6_ADDRESS, ie::DESTINATION_IPV6_ADDRESS]
    } else {
        [ie::SOURCE_IPV4_ADDRESS, ie::DESTINATION_IPV4_ADDRESS]
    };
    addrs.into_iter().chain(COMMON)
}

/// Bytes of one data record of the IPv4 or IPv6 template.
fn record_len(v6: bool) -> usize {
    fields(v6).map(|(_, len)| usize::from(len)).sum()
}

/// flowDirection (IANA): what the observation point saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress = 0,
    Egress = 1,
}

/// flowEndReason (RFC 7012, section 5.10.1 of RFC 5102's registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// No packet for the idle timeout.
    IdleTimeout = 1,
    /// Exported while still active (the active timeout).
    ActiveTimeout = 2,
    /// netmon stopped (or the interface went away).
    ForcedEnd = 4,
    /// The flow table had no room left.
    LackOfResources = 5,
}

/// One flow record: the counts since the flow's previous record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub tcp_flags: u16,
    pub direction: Direction,
    pub end_reason: EndReason,
    /// IP header and payload bytes (RFC 7012 octetDeltaCount).
    pub octets: u64,
    pub packets: u64,
    /// Unix time in ms of the first and last packet the record covers.
    pub start_ms: u64,
    pub end_ms: u64,
}

impl FlowRecord {
    fn v6(&self) -> bool {
        // A mixed record (never made by netmon) goes as IPv6 with mapped
        // addresses.
        self.src.is_ipv6() || self.dst.is_ipv6()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let v6 = self.v6();
        for a in [self.src, self.dst] {
            match (a, v6) {
                (IpAddr::V4(a), false) => out.extend_from_slice(&a.octets()),
                (IpAddr::V4(a), true) => out.extend_from_slice(&a.to_ipv6_mapped().octets()),
                (IpAddr::V6(a), _) => out.extend_from_slice(&a.octets()),
            }
        }
        out.extend_from_slice(&self.sport.to_be_bytes());
        out.extend_from_slice(&self.dport.to_be_bytes());
        out.push(self.proto);
        out.extend_from_slice(&self.tcp_flags.to_be_bytes());
        out.push(self.direction as u8);
        out.push(self.end_reason as u8);
        out.extend_from_slice(&self.octets.to_be_bytes());
        out.extend_from_slice(&self.packets.to_be_bytes());
        out.extend_from_slice(&self.start_ms.to_be_bytes());
        out.extend_from_slice(&self.end_ms.to_be_bytes());
    }
}

/// The template set announcing both templates.
fn template_set() -> Vec<u8> {
    let mut set = Vec::new();
    set.extend_from_slice(&TEMPLATE_SET_ID.to_be_bytes());
    set.extend_from_slice(&[0, 0]);
    for (id, v6) in [(TEMPLATE_V4, false), (TEMPLATE_V6, true)] {
        set.extend_from_slice(&id.to_be_bytes());
        set.extend_from_slice(&(fields(v6).count() as u16).to_be_bytes());
        for (ie, len) in fields(v6) {
            set.extend_from_slice(&ie.to_be_bytes());
            set.extend_from_slice(&len.to_be_bytes());
        }
    }
    let len = set.len() as u16;
    set[2..4].copy_from_slice(&len.to_be_bytes());
    set
}

/// One encoded message and the data records in it.
#[derive(Clone, Debug)]
pub struct Message {
    pub bytes: Vec<u8>,
    pub records: u32,
}

/// Encodes flow records into IPFIX messages for one observation domain,
/// keeping the sequence number.
#[derive(Debug)]
pub struct Encoder {
    domain: u32,
    /// Data records sent so far (mod 2^32): the next message's sequence
    /// number.
    sequence: u32,
    max_message: usize,
}

impl Encoder {
    /// `max_message`: the largest message in bytes (at least one template
    /// set and one record fit in 512).
    #[must_use]
    pub fn new(domain: u32, max_message: usize) -> Self {
        Encoder {
            domain,
            sequence: 0,
            max_message: max_message.clamp(512, usize::from(u16::MAX)),
        }
    }

    /// The sequence number the next message will carry.
    #[must_use]
    pub fn sequence(&self) -> u32 {
        self.sequence
    }

    /// Messages carrying `records` (and first, when `templates`, the
    /// template set), each within the size limit. At least one message
    /// when `templates`, none for no records otherwise.
    pub fn messages(
        &mut self,
        export_time_s: u32,
        records: &[FlowRecord],
        templates: bool,
    ) -> Vec<Message> {
        let mut out = Vec::new();
        let mut msg = self.header();
        let mut in_msg = 0u32;
        if templates {
            msg.extend_from_slice(&template_set());
        }
        // Records by family, each family's run in data sets of its
        // template; a set never spans messages.
        for v6 in [false, true] {
            let len = record_len(v6);
            let mut family = records.iter().filter(|r| r.v6() == v6).peekable();
            while family.peek().is_some() {
                if msg.len() + SET_HEADER + len > self.max_message {
                    out.push(self.finish(msg, export_time_s, in_msg));
                    msg = self.header();
                    in_msg = 0;
                }
                let set_start = msg.len();
                let id = if v6 { TEMPLATE_V6 } else { TEMPLATE_V4 };
                msg.extend_from_slice(&id.to_be_bytes());
                msg.extend_from_slice(&[0, 0]);
                while msg.len() + len <= self.max_message {
                    let Some(r) = family.next() else { break };
                    r.encode(&mut msg);
                    in_msg += 1;
                }
                let set_len = (msg.len() - set_start) as u16;
                msg[set_start + 2..set_start + 4].copy_from_slice(&set_len.to_be_bytes());
            }
        }
        if in_msg > 0 || templates || msg.len() > MESSAGE_HEADER {
            out.push(self.finish(msg, export_time_s, in_msg));
        }
        out
    }

    fn header(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(self.max_message);
        h.resize(MESSAGE_HEADER, 0);
        h
    }

    /// Fills in the header of `msg` (which carries `records` data records)
    /// and advances the sequence number.
    fn finish(&mut self, mut msg: Vec<u8>, export_time_s: u32, records: u32) -> Message {
        let len = msg.len() as u16;
        msg[0..2].copy_from_slice(&VERSION.to_be_bytes());
        msg[2..4].copy_from_slice(&len.to_be_bytes());
        msg[4..8].copy_from_slice(&export_time_s.to_be_bytes());
        msg[8..12].copy_from_slice(&self.sequence.to_be_bytes());
        msg[12..16].copy_from_slice(&self.domain.to_be_bytes());
        self.sequence = self.sequence.wrapping_add(records);
        Message {
            bytes: msg,
            records,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        net::{Ipv4Addr, Ipv6Addr},
    };

    use super::*;

    fn record(i: u16, v6: bool) -> FlowRecord {
        let (src, dst) = if v6 {
            (
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            )
        } else {
            (
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)),
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
            )
        };
        FlowRecord {
            src,
            dst,
            sport: 40_000 + i,
            dport: 9000,
            proto: 17,
            tcp_flags: 0,
            direction: Direction::Ingress,
            end_reason: EndReason::IdleTimeout,
            octets: 1000 + u64::from(i),
            packets: 10 + u64::from(i),
            start_ms: 1_700_000_000_000,
            end_ms: 1_700_000_001_000,
        }
    }

    /// A decoder written from RFC 7011, independent of the encoder: the
    /// templates it learns, and each data record as (template id, fields
    /// by IE id).
    #[derive(Default)]
    struct Decoder {
        templates: HashMap<u16, Vec<(u16, u16)>>,
    }

    struct Decoded {
        sequence: u32,
        domain: u32,
        export_time: u32,
        records: Vec<(u16, HashMap<u16, Vec<u8>>)>,
    }

    impl Decoder {
        #[expect(clippy::many_single_char_names, reason = "RFC-style field reads")]
        fn decode(&mut self, m: &[u8]) -> Decoded {
            let be16 = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
            let be32 = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap());
            assert_eq!(be16(m, 0), 10, "version");
            assert_eq!(usize::from(be16(m, 2)), m.len(), "message length");
            let mut d = Decoded {
                export_time: be32(m, 4),
                sequence: be32(m, 8),
                domain: be32(m, 12),
                records: Vec::new(),
            };
            let mut at = 16;
            while at < m.len() {
                let (id, len) = (be16(m, at), usize::from(be16(m, at + 2)));
                assert!(len >= 4 && at + len <= m.len(), "set length");
                let body = &m[at + 4..at + len];
                if id == 2 {
                    let mut p = 0;
                    while p < body.len() {
                        let (tid, n) = (be16(body, p), usize::from(be16(body, p + 2)));
                        p += 4;
                        let f = (0..n)
                            .map(|i| (be16(body, p + 4 * i), be16(body, p + 4 * i + 2)))
                            .collect();
                        p += 4 * n;
                        self.templates.insert(tid, f);
                    }
                } else {
                    let t = self.templates.get(&id).expect("template before data");
                    let rlen: usize = t.iter().map(|(_, l)| usize::from(*l)).sum();
                    assert_eq!(body.len() % rlen, 0, "whole records in a set");
                    for r in body.chunks(rlen) {
                        let mut fields = HashMap::new();
                        let mut p = 0;
                        for (ie, l) in t {
                            fields.insert(*ie, r[p..p + usize::from(*l)].to_vec());
                            p += usize::from(*l);
                        }
                        d.records.push((id, fields));
                    }
                }
                at += len;
            }
            d
        }
    }

    fn be(v: &[u8]) -> u64 {
        v.iter().fold(0, |a, b| (a << 8) | u64::from(*b))
    }

    #[test]
    fn records_round_trip_through_an_independent_decoder() {
        let mut enc = Encoder::new(7, 1400);
        let mut rec4 = record(1, false);
        rec4.proto = 6;
        rec4.tcp_flags = 0x12;
        rec4.end_reason = EndReason::ActiveTimeout;
        let rec6 = record(2, true);
        let msgs = enc.messages(1_700_000_002, &[rec4, rec6], true);
        assert_eq!(msgs.len(), 1);
        let mut dec = Decoder::default();
        let d = dec.decode(&msgs[0].bytes);
        assert_eq!((d.sequence, d.domain, d.export_time), (0, 7, 1_700_000_002));
        assert_eq!(d.records.len(), 2);
        let (id, f) = &d.records[0];
        assert_eq!(*id, TEMPLATE_V4);
        assert_eq!(f[&8], [198, 51, 100, 2]);
        assert_eq!(f[&12], [198, 51, 100, 1]);
        assert_eq!(be(&f[&7]), 40_001);
        assert_eq!(be(&f[&11]), 9000);
        assert_eq!(be(&f[&4]), 6);
        assert_eq!(be(&f[&6]), 0x12);
        assert_eq!(be(&f[&61]), 0);
        assert_eq!(be(&f[&136]), 2);
        assert_eq!(be(&f[&1]), 1001);
        assert_eq!(be(&f[&2]), 11);
        assert_eq!(be(&f[&152]), 1_700_000_000_000);
        assert_eq!(be(&f[&153]), 1_700_000_001_000);
        let (id, f) = &d.records[1];
        assert_eq!(*id, TEMPLATE_V6);
        assert_eq!(f[&27], "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(f[&28], "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(be(&f[&2]), 12);
        // The next message's sequence number counts both records.
        let next = enc.messages(1_700_000_003, &[record(3, false)], false);
        assert_eq!(dec.decode(&next[0].bytes).sequence, 2);
        assert_eq!(enc.sequence(), 3);
    }

    #[test]
    fn messages_stay_under_the_limit_and_lose_no_record() {
        let mut enc = Encoder::new(1, 600);
        let records: Vec<_> = (0..100).map(|i| record(i, i % 3 == 0)).collect();
        let msgs = enc.messages(0, &records, true);
        assert!(msgs.len() > 1);
        let mut dec = Decoder::default();
        let mut seen = Vec::new();
        let mut expected_seq = 0u32;
        for m in &msgs {
            assert!(m.bytes.len() <= 600, "{} bytes", m.bytes.len());
            let d = dec.decode(&m.bytes);
            assert_eq!(d.records.len() as u32, m.records);
            assert_eq!(d.sequence, expected_seq);
            expected_seq += d.records.len() as u32;
            seen.extend(d.records.iter().map(|(_, f)| be(&f[&7])));
        }
        seen.sort_unstable();
        let mut want: Vec<u64> = (0..100).map(|i| 40_000 + i).collect();
        want.sort_unstable();
        assert_eq!(seen, want);
    }

    #[test]
    fn a_template_only_message_when_there_is_nothing_to_send() {
        let mut enc = Encoder::new(1, 1400);
        assert!(enc.messages(0, &[], false).is_empty());
        let msgs = enc.messages(0, &[], true);
        assert_eq!(msgs.len(), 1);
        let mut dec = Decoder::default();
        assert!(dec.decode(&msgs[0].bytes).records.is_empty());
        assert_eq!(dec.templates.len(), 2);
        assert_eq!(dec.templates[&TEMPLATE_V4].len(), 12);
        assert_eq!(enc.sequence(), 0);
    }
}
