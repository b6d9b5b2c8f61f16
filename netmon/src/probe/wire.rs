//! ICMP and ICMPv6 echo messages: a view checked once, and the parsed form.
//!
//! Layout (RFC 792, RFC 4443): type, code, checksum (16), identifier (16),
//! sequence (16), payload. netmon's payload is a 16-byte probe tag: a cookie
//! that is random per run, then the probe number, both big-endian.

use thiserror::Error;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;

const HEADER_LEN: usize = 8;
/// Bytes of netmon's payload: cookie + probe number.
pub const TAG_LEN: usize = 16;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("truncated packet ({0} bytes)")]
    Truncated(usize),
    #[error("bad IPv4 header")]
    BadIpHeader,
}

/// A checked view of an echo message.
#[derive(Debug)]
pub struct EchoPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> EchoPacket<T> {
    /// Checks that the header is there.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let len = buf.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated(len));
        }
        Ok(Self { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    pub fn msg_type(&self) -> u8 {
        self.b()[0]
    }

    pub fn code(&self) -> u8 {
        self.b()[1]
    }

    pub fn ident(&self) -> u16 {
        u16::from_be_bytes([self.b()[4], self.b()[5]])
    }

    pub fn seq(&self) -> u16 {
        u16::from_be_bytes([self.b()[6], self.b()[7]])
    }

    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..]
    }

    /// The probe tag (cookie, probe number), if the payload carries one.
    pub fn tag(&self) -> Option<(u64, u64)> {
        let p = self.payload();
        if p.len() < TAG_LEN {
            return None;
        }
        let cookie = u64::from_be_bytes(p[0..8].try_into().ok()?);
        let id = u64::from_be_bytes(p[8..16].try_into().ok()?);
        Some((cookie, id))
    }

    /// The RFC 1071 checksum over the whole message is zero (IPv4 only:
    /// ICMPv6 covers a pseudo-header the kernel checks for us).
    pub fn checksum_ok(&self) -> bool {
        internet_checksum(self.b()) == 0
    }
}

/// The parsed form of an echo message netmon sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EchoRepr {
    pub msg_type: u8,
    pub ident: u16,
    pub seq: u16,
    pub cookie: u64,
    pub probe: u64,
}

impl EchoRepr {
    /// Parses a message carrying a netmon tag.
    pub fn parse<T: AsRef<[u8]>>(p: &EchoPacket<T>) -> Option<Self> {
        let (cookie, probe) = p.tag()?;
        Some(Self {
            msg_type: p.msg_type(),
            ident: p.ident(),
            seq: p.seq(),
            cookie,
            probe,
        })
    }

    pub const fn buffer_len() -> usize {
        HEADER_LEN + TAG_LEN
    }

    /// Writes the message; the checksum is filled in (ICMPv6 senders let the
    /// kernel overwrite it, as it must include the pseudo-header).
    pub fn emit(&self, buf: &mut [u8]) {
        buf[0] = self.msg_type;
        buf[1] = 0;
        buf[2..4].copy_from_slice(&[0, 0]);
        buf[4..6].copy_from_slice(&self.ident.to_be_bytes());
        buf[6..8].copy_from_slice(&self.seq.to_be_bytes());
        buf[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        buf[16..24].copy_from_slice(&self.probe.to_be_bytes());
        let sum = internet_checksum(&buf[..Self::buffer_len()]);
        buf[2..4].copy_from_slice(&sum.to_be_bytes());
    }
}

/// The ICMP message inside an IPv4 packet (raw IPv4 sockets deliver the
/// IP header too).
pub fn strip_ipv4_header(packet: &[u8]) -> Result<&[u8], WireError> {
    let first = *packet.first().ok_or(WireError::Truncated(0))?;
    if first >> 4 != 4 {
        return Err(WireError::BadIpHeader);
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 {
        return Err(WireError::BadIpHeader);
    }
    packet.get(ihl..).ok_or(WireError::Truncated(packet.len()))
}

/// RFC 1071 one's complement sum.
#[must_use]
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // An echo request as netmon sends it: id 0x1234, seq 7, cookie
    // 0x0102030405060708, probe 42.
    const REQUEST: &str =
        "08 00 d5 86 12 34 00 07  01 02 03 04 05 06 07 08  00 00 00 00 00 00 00 2a";

    #[test]
    fn emit_matches_fixture() {
        let repr = EchoRepr {
            msg_type: ICMP_ECHO_REQUEST,
            ident: 0x1234,
            seq: 7,
            cookie: 0x0102_0304_0506_0708,
            probe: 42,
        };
        let mut buf = vec![0; EchoRepr::buffer_len()];
        repr.emit(&mut buf);
        assert_eq!(buf, hex(REQUEST));
    }

    #[test]
    fn parse_fixture() {
        let bytes = hex(REQUEST);
        let p = EchoPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.msg_type(), ICMP_ECHO_REQUEST);
        assert_eq!(p.code(), 0);
        assert!(p.checksum_ok());
        assert_eq!(p.ident(), 0x1234);
        assert_eq!(p.seq(), 7);
        let r = EchoRepr::parse(&p).unwrap();
        assert_eq!(r.cookie, 0x0102_0304_0506_0708);
        assert_eq!(r.probe, 42);
    }

    #[test]
    fn short_and_foreign_packets() {
        assert_eq!(
            EchoPacket::new_checked(&[0u8; 7][..]).unwrap_err(),
            WireError::Truncated(7)
        );
        // A plain `ping` reply: 8-byte header, a payload without our tag.
        let plain = hex("00 00 ff ff 00 01 00 01 aa bb");
        let p = EchoPacket::new_checked(&plain[..]).unwrap();
        assert_eq!(EchoRepr::parse(&p), None);
    }

    #[test]
    fn ipv4_header_is_stripped_by_ihl() {
        let mut pkt = hex("45 00 00 20 00 00 00 00 40 01 00 00 7f 00 00 01 7f 00 00 01");
        pkt.extend(hex(REQUEST));
        assert_eq!(strip_ipv4_header(&pkt).unwrap(), &hex(REQUEST)[..]);
        assert_eq!(
            strip_ipv4_header(&[0x60]).unwrap_err(),
            WireError::BadIpHeader
        );
        assert_eq!(
            strip_ipv4_header(&[0x46, 0, 0]).unwrap_err(),
            WireError::Truncated(3)
        );
    }
}
