//! The ICMP socket layer: the only code here that touches ICMP sockets.
//!
//! Datagram ICMP sockets (`SOCK_DGRAM`, `IPPROTO_ICMP[V6]`) when
//! `net.ipv4.ping_group_range` admits our group, raw sockets (CAP_NET_RAW)
//! otherwise. Datagram sockets get their identifier from the kernel (read
//! back with getsockname) and only see their own replies; raw sockets see
//! every echo reply, so replies are matched by identifier and cookie.

use std::{
    io,
    mem::{MaybeUninit, size_of},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, Ordering},
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use thiserror::Error;
use tokio::io::{Interest, unix::AsyncFd};

use super::wire::{
    EchoPacket, EchoRepr, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST, strip_ipv4_header,
};

#[derive(Debug, Error)]
pub enum IcmpError {
    #[error(
        "no permission to open an ICMP{v} socket: run as root (or `setcap cap_net_raw+ep` on netmon), \
         or allow unprivileged ping with `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"`",
        v = if *.0 { "v6" } else { "" }
    )]
    Permission(bool),
    #[error("cannot open an ICMP{v} socket: {1}", v = if *.0 { "v6" } else { "" })]
    Open(bool, #[source] io::Error),
}

/// How the socket reaches ICMP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketKind {
    Datagram,
    Raw,
}

impl SocketKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Datagram => "unprivileged datagram ICMP socket",
            Self::Raw => "raw ICMP socket",
        }
    }
}

/// An echo reply that carries a netmon tag.
#[derive(Clone, Copy, Debug)]
pub struct Reply {
    pub from: IpAddr,
    pub echo: EchoRepr,
    /// Kernel receive time (CLOCK_REALTIME ns), when the kernel gave one.
    pub rx_real_ns: Option<i128>,
}

/// One ICMP or ICMPv6 socket, non-blocking, registered with tokio.
pub struct IcmpSocket {
    fd: AsyncFd<Socket>,
    pub v6: bool,
    pub kind: SocketKind,
    /// Identifier in our echo requests (and expected in replies on raw sockets).
    pub ident: u16,
    /// Whether sends ask the kernel for their transmit time (see
    /// [`TxStamp`]); cleared for good when the kernel refuses.
    tx_stamps: AtomicBool,
    /// Whether any send asked for one (then the error queue is read).
    tx_asked: AtomicBool,
}

/// The kernel's record of when an echo request left the IP stack for the
/// device (`SOF_TIMESTAMPING_TX_SCHED`, taken in `__dev_queue_xmit` right
/// before the egress hooks and the qdisc), read from the socket's error
/// queue. `key` is what [`IcmpSocket::send`] was given (`SCM_TS_OPT_ID`).
/// An RTT from this time to the kernel's receive time holds neither
/// netmon's own scheduling nor the system call: the path and the hosts'
/// network stacks only, the span the passive RTT of the same echo covers
/// (which starts at the TC egress hook, just after).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxStamp {
    pub key: u32,
    /// CLOCK_REALTIME ns, as the receive timestamps.
    pub real_ns: i128,
}

/// `SCM_TS_OPT_ID` (Linux 6.13, include/uapi/asm-generic/socket.h): the
/// timestamp key of one send, given with it. Not in the libc crate for
/// x86-64 and arm64 yet.
const SCM_TS_OPT_ID: libc::c_int = 81;
/// `ee_info` of a timestamp taken before the qdisc (linux/errqueue.h).
const SCM_TSTAMP_SCHED: u32 = 1;

fn setsockopt_raw<T>(
    sock: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: value points to a live T of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl IcmpSocket {
    /// Opens a datagram socket if allowed, a raw socket otherwise.
    /// `raw_ident` is the identifier used on a raw socket; `tx_stamps`:
    /// whether sends ask for the kernel's transmit timestamp.
    pub fn open(v6: bool, raw_ident: u16, tx_stamps: bool) -> Result<Self, IcmpError> {
        let (domain, proto) = if v6 {
            (Domain::IPV6, Protocol::ICMPV6)
        } else {
            (Domain::IPV4, Protocol::ICMPV4)
        };
        let (sock, kind) = match Socket::new(domain, Type::DGRAM, Some(proto)) {
            Ok(s) => (s, SocketKind::Datagram),
            Err(dgram_err) => match Socket::new(domain, Type::RAW, Some(proto)) {
                Ok(s) => (s, SocketKind::Raw),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
                    return Err(IcmpError::Permission(v6));
                }
                Err(_) => return Err(IcmpError::Open(v6, dgram_err)),
            },
        };
        let err = |e| IcmpError::Open(v6, e);
        sock.set_nonblocking(true).map_err(err)?;
        // Sweeps at high rates get bursts of replies: room for them in the
        // receive queue (the forced variant works as root, beyond rmem_max).
        let big: libc::c_int = 8 << 20;
        if setsockopt_raw(&sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &big).is_err() {
            let _ = sock.set_recv_buffer_size(big as usize);
        }
        if setsockopt_raw(&sock, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &big).is_err() {
            let _ = sock.set_send_buffer_size(big as usize);
        }
        let on: libc::c_int = 1;
        setsockopt_raw(&sock, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &on).map_err(err)?;
        // Transmit times: reported as software timestamps, with the key of
        // the send and without the packet (each send asks with its own
        // control message, see send). Without them (an old kernel), RTTs
        // start at the userspace clock right before the send.
        let report = libc::SOF_TIMESTAMPING_SOFTWARE
            | libc::SOF_TIMESTAMPING_OPT_ID
            | libc::SOF_TIMESTAMPING_OPT_TSONLY;
        let tx_stamps = tx_stamps
            && setsockopt_raw(&sock, libc::SOL_SOCKET, libc::SO_TIMESTAMPING, &report).is_ok();
        if !v6 {
            // Don't fragment: echo requests are small, and with DF set the
            // kernel skips picking an IP ID per packet (a hashed, shared
            // counter that costs more than the rest of the send at high rates).
            let df: libc::c_int = libc::IP_PMTUDISC_DO;
            setsockopt_raw(&sock, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, &df).map_err(err)?;
        }
        let ident = match kind {
            SocketKind::Datagram => {
                let any: SocketAddr = if v6 {
                    (Ipv6Addr::UNSPECIFIED, 0).into()
                } else {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                };
                sock.bind(&any.into()).map_err(err)?;
                sock.local_addr()
                    .map_err(err)?
                    .as_socket()
                    .map_or(0, |a| a.port())
            }
            SocketKind::Raw => {
                if v6 {
                    // ICMP6_FILTER: block every type but echo reply.
                    let mut filter = [u32::MAX; 8];
                    filter[usize::from(ICMPV6_ECHO_REPLY >> 5)] &= !(1 << (ICMPV6_ECHO_REPLY & 31));
                    setsockopt_raw(&sock, libc::IPPROTO_ICMPV6, 1, &filter).map_err(err)?;
                } else {
                    // ICMP_FILTER (SOL_RAW): a mask of the types to drop.
                    let mask: u32 = !(1 << ICMP_ECHO_REPLY);
                    setsockopt_raw(&sock, libc::SOL_RAW, 1, &mask).map_err(err)?;
                }
                raw_ident
            }
        };
        // SAFETY: the socket owns its descriptor, which is neither replaced
        // nor closed while the AsyncFd owns the socket.
        let fd = unsafe { AsyncFd::register(sock) }.map_err(|e| err(io::Error::from(e)))?;
        Ok(Self {
            fd,
            v6,
            kind,
            ident,
            tx_stamps: AtomicBool::new(tx_stamps),
            tx_asked: AtomicBool::new(false),
        })
    }

    /// Sends one echo request. Waits while the send queue is full.
    ///
    /// Returns the wall-clock time (ns) taken right before the `sendto`
    /// that sent it (the wait for the socket to be writable, and any
    /// retry, come before it). The kernel's own transmit time, keyed by
    /// `key`, follows on the error queue when the kernel gives one
    /// ([`TxStamp`], read by [`Self::recv_batch`]).
    pub async fn send(
        &self,
        to: IpAddr,
        seq: u16,
        cookie: u64,
        probe: u64,
        key: u32,
    ) -> io::Result<i128> {
        let repr = EchoRepr {
            msg_type: if self.v6 {
                ICMPV6_ECHO_REQUEST
            } else {
                ICMP_ECHO_REQUEST
            },
            ident: self.ident,
            seq,
            cookie,
            probe,
        };
        let mut buf = [0u8; 24];
        repr.emit(&mut buf);
        let addr = SockAddr::from(SocketAddr::new(to, 0));
        loop {
            let mut guard = self.fd.writable().await?;
            let mut sent_real_ns = 0;
            match guard.try_io(|fd| {
                let stamped = self.tx_stamps.load(Ordering::Relaxed);
                sent_real_ns = crate::sys::clock::realtime_ns();
                if !stamped {
                    return fd.get_ref().send_to(&buf, &addr);
                }
                self.tx_asked.store(true, Ordering::Relaxed);
                match send_stamped(fd.get_ref(), &buf, &addr, key) {
                    // A kernel before 6.13 does not know SCM_TS_OPT_ID:
                    // when a plain send of the same request goes through,
                    // plain sends from now on.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        sent_real_ns = crate::sys::clock::realtime_ns();
                        let plain = fd.get_ref().send_to(&buf, &addr);
                        if plain.is_ok() {
                            self.tx_stamps.store(false, Ordering::Relaxed);
                            log::debug!("no kernel transmit timestamps for echo requests: {e}");
                        }
                        plain
                    }
                    r => r,
                }
            }) {
                Ok(Ok(_)) => return Ok(sent_real_ns),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }

    /// Waits for readability (or transmit timestamps), then reads every
    /// queued transmit timestamp into `tx` and every queued packet (up to a
    /// batch), appending the tagged echo replies to `out`. A request's
    /// transmit timestamp is queued before it leaves, so it is in `tx`
    /// no later than the batch holding its reply.
    pub async fn recv_batch(&self, out: &mut Vec<Reply>, tx: &mut Vec<TxStamp>) -> io::Result<()> {
        let mut guard = self.fd.ready(Interest::READABLE | Interest::ERROR).await?;
        self.drain_tx_stamps(tx);
        let mut data = [0u8; 2048];
        for _ in 0..256 {
            match guard.try_io(|fd| recv_one(fd.get_ref(), self.v6, &mut data)) {
                Ok(Ok(Some((from, len, ts)))) => {
                    if let Some(r) = self.parse(from, &data[..len], ts) {
                        out.push(r);
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => break,
            }
        }
        Ok(())
    }

    /// Reads what is queued now, without waiting (at most `max` packets),
    /// transmit timestamps first, as [`Self::recv_batch`].
    /// Any task may call it beside the receiver: each packet is read once.
    pub fn try_recv_batch(
        &self,
        out: &mut Vec<Reply>,
        tx: &mut Vec<TxStamp>,
        max: usize,
    ) -> io::Result<()> {
        self.drain_tx_stamps(tx);
        let mut data = [0u8; 2048];
        for _ in 0..max {
            match recv_one(self.fd.get_ref(), self.v6, &mut data) {
                Ok(Some((from, len, ts))) => {
                    if let Some(r) = self.parse(from, &data[..len], ts) {
                        out.push(r);
                    }
                }
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Empties the error queue into `tx`: the transmit timestamps (they
    /// share the receive buffer with the replies, so they are never left
    /// to pile up). Anything else there (an ICMP error on a raw socket
    /// without IP_RECVERR never lands here) is dropped.
    fn drain_tx_stamps(&self, tx: &mut Vec<TxStamp>) {
        // Before any stamped send the queue holds nothing of ours: one
        // system call less per batch.
        if !self.tx_asked.load(Ordering::Relaxed) {
            return;
        }
        for _ in 0..4096 {
            match recv_tx_stamp(self.fd.get_ref()) {
                Ok(Some(t)) => tx.push(t),
                Ok(None) => {}
                Err(_) => break,
            }
        }
    }

    fn parse(&self, from: IpAddr, data: &[u8], rx_real_ns: Option<i128>) -> Option<Reply> {
        let icmp = if !self.v6 && self.kind == SocketKind::Raw {
            strip_ipv4_header(data).ok()?
        } else {
            data
        };
        let p = EchoPacket::new_checked(icmp).ok()?;
        let want = if self.v6 {
            ICMPV6_ECHO_REPLY
        } else {
            ICMP_ECHO_REPLY
        };
        if p.msg_type() != want || p.code() != 0 {
            return None;
        }
        // Datagram sockets: the kernel already matched the identifier.
        if self.kind == SocketKind::Raw && p.ident() != self.ident {
            return None;
        }
        if !self.v6 && self.kind == SocketKind::Raw && !p.checksum_ok() {
            return None;
        }
        let echo = EchoRepr::parse(&p)?;
        Some(Reply {
            from,
            echo,
            rx_real_ns,
        })
    }
}

/// One recvmsg into `data`: the sender, the length and the SO_TIMESTAMPNS time.
fn recv_one(
    sock: &Socket,
    v6: bool,
    data: &mut [u8],
) -> io::Result<Option<(IpAddr, usize, Option<i128>)>> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // Room for SCM_TIMESTAMPNS (32 bytes) and SCM_TIMESTAMPING (64).
    let mut control = [MaybeUninit::<u64>::uninit(); 32];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: all-zero is a valid msghdr; the fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut name).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 32]>();
    // SAFETY: msg points to live buffers of the lengths it states.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &raw mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = match (i32::from(name.ss_family), v6) {
        (libc::AF_INET, false) => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read((&raw const name).cast()) };
            IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
        }
        (libc::AF_INET6, true) => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((&raw const name).cast()) };
            IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
        }
        _ => return Ok(None),
    };
    let mut ts = None;
    // SAFETY: msg was filled by recvmsg; the CMSG macros stay inside msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let t: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                ts = Some(i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec));
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Ok(Some((from, n as usize, ts)))
}

/// Sends `buf` to `addr` asking for its transmit timestamp under `key`: the
/// control messages `SO_TIMESTAMPING` (`SOF_TIMESTAMPING_TX_SCHED`) and
/// `SCM_TS_OPT_ID`.
fn send_stamped(sock: &Socket, buf: &[u8], addr: &SockAddr, key: u32) -> io::Result<usize> {
    const ONE: usize = cmsg_space(size_of::<u32>());
    let mut control = [0u64; (2 * ONE).div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid msghdr; the fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = addr.as_ptr().cast_mut().cast();
    msg.msg_namelen = addr.len();
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = 2 * ONE;
    // SAFETY: the CMSG macros stay inside msg_controllen, which covers two
    // headers with a u32 each.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&raw const msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SO_TIMESTAMPING;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<u32>() as u32) as usize;
        std::ptr::write_unaligned(
            libc::CMSG_DATA(c).cast::<u32>(),
            libc::SOF_TIMESTAMPING_TX_SCHED,
        );
        let c = libc::CMSG_NXTHDR(&raw const msg, c);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = SCM_TS_OPT_ID;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<u32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u32>(), key);
    }
    // SAFETY: msg points to live buffers of the lengths it states.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &raw const msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `CMSG_SPACE` as a constant.
const fn cmsg_space(len: usize) -> usize {
    let align = size_of::<usize>();
    let hdr = size_of::<libc::cmsghdr>().div_ceil(align) * align;
    hdr + len.div_ceil(align) * align
}

/// One read of the error queue: a transmit timestamp taken before the
/// qdisc, or `None` for anything else; `WouldBlock` when it is empty.
fn recv_tx_stamp(sock: &Socket) -> io::Result<Option<TxStamp>> {
    let mut data = [0u8; 64];
    let mut control = [MaybeUninit::<u64>::uninit(); 32];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: all-zero is a valid msghdr; the fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 32]>();
    // SAFETY: msg points to live buffers of the lengths it states.
    let n = unsafe {
        libc::recvmsg(
            sock.as_raw_fd(),
            &raw mut msg,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let (mut real_ns, mut key) = (None, None);
    // SAFETY: msg was filled by recvmsg; the CMSG macros stay inside msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            let (level, kind) = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            if level == libc::SOL_SOCKET && kind == libc::SO_TIMESTAMPING {
                // struct scm_timestamping: ts[0] is the software time.
                let t: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                if t.tv_sec != 0 || t.tv_nsec != 0 {
                    real_ns = Some(i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec));
                }
            } else if (level == libc::SOL_IP && kind == libc::IP_RECVERR)
                || (level == libc::SOL_IPV6 && kind == libc::IPV6_RECVERR)
            {
                let e: libc::sock_extended_err =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                if e.ee_errno == libc::ENOMSG as u32
                    && e.ee_origin == libc::SO_EE_ORIGIN_TIMESTAMPING
                    && e.ee_info == SCM_TSTAMP_SCHED
                {
                    key = Some(e.ee_data);
                }
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Ok(match (key, real_ns) {
        (Some(key), Some(real_ns)) => Some(TxStamp { key, real_ns }),
        _ => None,
    })
}
