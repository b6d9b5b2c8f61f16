//! Test traffic with its own ground truth: UDP senders that count what
//! they sent, receivers that read every datagram (so the XDP program on the
//! receiving end has seen each before a test looks at counts).

use std::{
    net::{SocketAddr, UdpSocket},
    thread,
    time::Duration,
};

use crate::{A4, B4, Netns, Pair};

/// Sends `count` UDP datagrams of `payload` bytes from `from` to `to`,
/// pacing so the veth ring never overflows. Returns how many were sent.
pub fn send_udp(from: SocketAddr, to: SocketAddr, count: u64, payload: usize) -> u64 {
    let socket = UdpSocket::bind(from).expect("bind sender");
    let data = vec![0xa5u8; payload];
    let mut sent = 0;
    for i in 0..count {
        assert_eq!(socket.send_to(&data, to).expect("send_to"), payload);
        sent += 1;
        if i % 64 == 63 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    sent
}

/// A UDP socket bound to `at` in the current namespace, with a receive
/// buffer (16 MiB, forced: the tests run as root) that holds every datagram
/// a test sends even while the reading thread is not scheduled.
pub fn udp_receiver(at: SocketAddr) -> UdpSocket {
    use std::os::fd::AsRawFd;
    let s = UdpSocket::bind(at).expect("bind receiver");
    let size: libc::c_int = 16 << 20;
    // SAFETY: setsockopt on a valid socket with a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Receives `count` datagrams on `socket` (panics after 5 s without one):
/// the receiver's stack got each after the XDP program saw it.
pub fn receive_all(socket: &UdpSocket, count: u64) {
    let mut buf = [0u8; 2048];
    for n in 0..count {
        socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {n} of {count}: {e}"));
    }
}

/// Sends `count` UDP datagrams of `payload` bytes from `B4:sport` in `b` to
/// `A4:dport` in `a` and waits until `a` received them all (so the XDP
/// program on `a`'s end has seen each). Returns how many were sent.
pub fn send_through(pair: &Pair, sport: u16, dport: u16, count: u64, payload: usize) -> u64 {
    let to: SocketAddr = format!("{A4}:{dport}").parse().unwrap();
    let from: SocketAddr = format!("{B4}:{sport}").parse().unwrap();
    send_between(pair, from, to, count, payload)
}

/// [`send_through`] between any two addresses: `from` in `b`, `to` in `a`
/// (IPv4 or IPv6).
pub fn send_between(
    pair: &Pair,
    from: SocketAddr,
    to: SocketAddr,
    count: u64,
    payload: usize,
) -> u64 {
    let received = Received::start(&pair.a, to, count);
    let sent = pair.b.enter(|| send_udp(from, to, count, payload));
    received.wait();
    sent
}

/// A receiver of `count` datagrams at `at` in `ns`, reading on a thread
/// of its own while the test sends (so its buffer never overflows);
/// [`Received::wait`] returns once all came.
pub struct Received(thread::JoinHandle<()>);

impl Received {
    #[must_use]
    pub fn start(ns: &Netns, at: SocketAddr, count: u64) -> Self {
        let socket = ns.enter(|| udp_receiver(at));
        Received(thread::spawn(move || receive_all(&socket, count)))
    }

    pub fn wait(self) {
        self.0
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
    }
}
