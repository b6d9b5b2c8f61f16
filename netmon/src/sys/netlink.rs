//! What happens to the watched interface, from the kernel's rtnetlink link
//! notifications (`RTMGRP_LINK`), not from polling names: deleted (or
//! moved to another namespace), and carrier up or down.
//!
//! The parsing is pure ([`parse_link_messages`]); [`LinkWatch`] is the
//! socket.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use tokio::io::unix::AsyncFd;

const NLMSG_HDRLEN: usize = 16;
/// `struct ifinfomsg`: family, pad, type, index, flags, change.
const IFINFOMSG_LEN: usize = 16;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const NLMSG_ALIGNTO: usize = 4;
const IFF_UP: u32 = 0x1;
const IFF_LOWER_UP: u32 = 0x1_0000;
const RTMGRP_LINK: u32 = 1;

/// A change of the watched interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// The interface is gone from this namespace (deleted, or moved).
    Deleted,
    /// Administratively up and with carrier (`IFF_UP` and `IFF_LOWER_UP`),
    /// or not.
    State { up: bool },
}

fn align(n: usize) -> usize {
    n.div_ceil(NLMSG_ALIGNTO) * NLMSG_ALIGNTO
}

/// The events for interface `ifindex` in a buffer of netlink messages, in
/// order. Messages for other interfaces, of other types, or truncated are
/// skipped.
#[must_use]
pub fn parse_link_messages(buf: &[u8], ifindex: u32) -> Vec<LinkEvent> {
    let mut events = Vec::new();
    let mut at = 0;
    while buf.len() - at >= NLMSG_HDRLEN {
        let h = &buf[at..];
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let kind = u16::from_ne_bytes([h[4], h[5]]);
        if len < NLMSG_HDRLEN || len > h.len() {
            break;
        }
        if (kind == RTM_NEWLINK || kind == RTM_DELLINK) && len >= NLMSG_HDRLEN + IFINFOMSG_LEN {
            let m = &h[NLMSG_HDRLEN..];
            let index = i32::from_ne_bytes([m[4], m[5], m[6], m[7]]);
            let flags = u32::from_ne_bytes([m[8], m[9], m[10], m[11]]);
            if u32::try_from(index).is_ok_and(|i| i == ifindex) {
                events.push(if kind == RTM_DELLINK {
                    LinkEvent::Deleted
                } else {
                    LinkEvent::State {
                        up: flags & IFF_UP != 0 && flags & IFF_LOWER_UP != 0,
                    }
                });
            }
        }
        at += align(len);
        if at > buf.len() {
            break;
        }
    }
    events
}

/// A netlink socket subscribed to link notifications.
pub struct LinkWatch {
    fd: AsyncFd<OwnedFd>,
    ifindex: u32,
    buf: Vec<u8>,
}

impl LinkWatch {
    /// Subscribes to link changes in this network namespace. Open it before
    /// the interface is checked once more, so that no change is missed in
    /// between.
    pub fn open(ifindex: u32) -> io::Result<Self> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid start.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = RTMGRP_LINK;
        // SAFETY: bind with a valid sockaddr_nl and its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the OwnedFd owns its descriptor, which is neither replaced
        // nor closed while the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Self {
            fd,
            ifindex,
            buf: vec![0; 64 << 10],
        })
    }

    /// The next events for the watched interface (waits for them).
    pub async fn next(&mut self) -> io::Result<Vec<LinkEvent>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let fd = self.fd.get_ref().as_raw_fd();
            let buf = &mut self.buf;
            match guard.try_io(|_| {
                // SAFETY: recv into our buffer, at most its length.
                let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(Ok(n)) => {
                    let events = parse_link_messages(&self.buf[..n], self.ifindex);
                    if !events.is_empty() {
                        return Ok(events);
                    }
                }
                // ENOBUFS: notifications were dropped; the caller checks
                // the interface itself.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Ok(Vec::new());
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One RTM_NEWLINK/RTM_DELLINK message for `index` with `flags`, with an
    /// attribute after the ifinfomsg (as the kernel sends: IFLA_IFNAME).
    fn message(kind: u16, index: i32, flags: u32) -> Vec<u8> {
        let mut attr = Vec::new();
        attr.extend_from_slice(&(4u16 + 3).to_ne_bytes());
        attr.extend_from_slice(&3u16.to_ne_bytes());
        attr.extend_from_slice(b"va\0");
        attr.push(0); // padding to 4
        let len = NLMSG_HDRLEN + IFINFOMSG_LEN + attr.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(&[0, 0, 1, 0]); // family, pad, type (ARPHRD_ETHER)
        m.extend_from_slice(&index.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&attr);
        m
    }

    #[test]
    fn events_of_the_watched_interface_in_order() {
        let mut buf = message(RTM_NEWLINK, 7, IFF_UP | IFF_LOWER_UP);
        buf.extend(message(RTM_NEWLINK, 8, 0));
        buf.extend(message(RTM_NEWLINK, 7, IFF_UP));
        buf.extend(message(RTM_NEWLINK, 7, 0));
        buf.extend(message(RTM_DELLINK, 7, 0));
        assert_eq!(
            parse_link_messages(&buf, 7),
            vec![
                LinkEvent::State { up: true },
                LinkEvent::State { up: false },
                LinkEvent::State { up: false },
                LinkEvent::Deleted,
            ]
        );
        assert_eq!(
            parse_link_messages(&buf, 8),
            vec![LinkEvent::State { up: false }]
        );
        assert!(parse_link_messages(&buf, 9).is_empty());
    }

    #[test]
    fn truncated_and_foreign_messages_are_skipped() {
        let m = message(RTM_DELLINK, 7, 0);
        for cut in 0..m.len() {
            // A truncated message yields nothing, and never panics.
            assert!(parse_link_messages(&m[..cut], 7).is_empty(), "cut {cut}");
        }
        // Another type (RTM_NEWADDR) with the same layout is not a link.
        let mut other = m.clone();
        other[4..6].copy_from_slice(&20u16.to_ne_bytes());
        assert!(parse_link_messages(&other, 7).is_empty());
        // A length field below the header ends the walk.
        let mut bad = m;
        bad[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(parse_link_messages(&bad, 7).is_empty());
    }
}
