//! The TCP socket layer: one non-blocking connect, classified; and the
//! file-descriptor limit that bounds how many run at once.

use std::{
    io,
    net::SocketAddr,
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

/// What one connect attempt found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Connected, after this long.
    Open(Duration),
    /// Refused (RST).
    Closed,
    /// No answer within the timeout.
    Timeout,
    /// An ICMP error other than port unreachable (destination unreachable,
    /// prohibited, time exceeded), or a local firewall refused it.
    Unreachable,
    /// Not a verdict on the port (our own ephemeral port, out of local
    /// ports or descriptors): try again.
    Again,
}

/// Classifies a connect error.
#[must_use]
pub fn classify(e: &io::Error) -> Option<Attempt> {
    match e.raw_os_error()? {
        libc::ECONNREFUSED => Some(Attempt::Closed),
        // Every ICMP destination unreachable but port unreachable (which
        // Linux reports as ECONNREFUSED), time exceeded and parameter
        // problem end a connect with one of these; so does a local firewall.
        libc::EHOSTUNREACH
        | libc::ENETUNREACH
        | libc::ENETDOWN
        | libc::EACCES
        | libc::EPERM
        | libc::EHOSTDOWN
        | libc::ENONET
        | libc::ENOPROTOOPT
        | libc::EOPNOTSUPP
        | libc::EPROTO => Some(Attempt::Unreachable),
        libc::ETIMEDOUT => Some(Attempt::Timeout),
        libc::EADDRNOTAVAIL
        | libc::EADDRINUSE
        | libc::EMFILE
        | libc::ENFILE
        | libc::ENOBUFS
        | libc::EAGAIN => Some(Attempt::Again),
        _ => None,
    }
}

/// One connect to `addr`, waiting at most `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Attempt> {
    connect_with(addr, timeout, &mut None).await
}

/// A TCP socket that was refused and reset, ready for the next connect.
pub struct Spare {
    v4: bool,
    sock: Socket,
}

/// Like [`connect`], reusing `spare` if it holds a socket, and leaving a
/// refused socket in it for the next call.
///
/// On loopback and other local paths the kernel often has the answer (a
/// RST) before `connect` returns. Asking again with a second `connect`
/// reads it at once, without a trip through the reactor; for a refused
/// connect that second call also resets the socket (Linux disconnects it),
/// so the next port needs no new socket. Only connects still in progress
/// are registered with tokio.
pub async fn connect_with(
    addr: SocketAddr,
    timeout: Duration,
    spare: &mut Option<Spare>,
) -> io::Result<Attempt> {
    let v4 = addr.is_ipv4();
    let sock = if let Some(s) = spare.take().filter(|s| s.v4 == v4) {
        s.sock
    } else {
        let domain = if v4 { Domain::IPV4 } else { Domain::IPV6 };
        match Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::TCP)) {
            Ok(s) => s,
            Err(e) => return classify(&e).filter(|a| *a == Attempt::Again).ok_or(e),
        }
    };
    let target = SockAddr::from(addr);
    let start = Instant::now();
    match sock.connect(&target) {
        Ok(()) => return Ok(opened(&sock, addr, start.elapsed())),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return classify(&e).ok_or(e),
    }
    match sock.connect(&target) {
        // Connected in the meantime.
        Ok(()) => return Ok(opened(&sock, addr, start.elapsed())),
        Err(e) if e.raw_os_error() == Some(libc::EALREADY) => {}
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            *spare = Some(Spare { v4, sock });
            return Ok(Attempt::Closed);
        }
        Err(e) => return classify(&e).ok_or(e),
    }
    let stream = tokio::net::TcpStream::from_std(std::net::TcpStream::from(sock))?;
    if tokio::time::timeout(timeout, stream.writable())
        .await
        .is_err()
    {
        return Ok(Attempt::Timeout);
    }
    let rtt = start.elapsed();
    if let Some(e) = stream.take_error()? {
        return classify(&e).ok_or(e);
    }
    Ok(opened(&SockRef::from(&stream), addr, rtt))
}

/// The verdict on a connected socket.
fn opened(sock: &Socket, addr: SocketAddr, rtt: Duration) -> Attempt {
    // Connecting from the very port we probe (loopback, ports in the
    // ephemeral range) makes a TCP simultaneous open with ourselves.
    if sock.local_addr().ok().and_then(|a| a.as_socket()) == Some(addr) {
        return Attempt::Again;
    }
    // Close with RST (SO_LINGER 0, which never blocks): an open port then
    // leaves no TIME_WAIT behind on our side.
    let _ = sock.set_linger(Some(Duration::ZERO));
    Attempt::Open(rtt)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut r) } != 0 {
        return 1024;
    }
    if r.rlim_cur < r.rlim_max {
        let want = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: want is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const want) } == 0 {
            return want.rlim_cur;
        }
    }
    r.rlim_cur
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener};

    use super::*;

    #[test]
    fn errors_map_to_states() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(classify(&e(libc::ECONNREFUSED)), Some(Attempt::Closed));
        assert_eq!(classify(&e(libc::EHOSTUNREACH)), Some(Attempt::Unreachable));
        // ICMP protocol unreachable (IPv4 type 3 code 2), source route
        // failed (code 5), parameter problem.
        assert_eq!(classify(&e(libc::ENOPROTOOPT)), Some(Attempt::Unreachable));
        assert_eq!(classify(&e(libc::EOPNOTSUPP)), Some(Attempt::Unreachable));
        assert_eq!(classify(&e(libc::EPROTO)), Some(Attempt::Unreachable));
        assert_eq!(classify(&e(libc::EADDRNOTAVAIL)), Some(Attempt::Again));
        assert_eq!(classify(&e(libc::EINVAL)), None);
    }

    #[tokio::test]
    async fn loopback_open_and_closed() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let open = l.local_addr().unwrap();
        assert!(matches!(
            connect(open, Duration::from_secs(1)).await.unwrap(),
            Attempt::Open(_)
        ));
        // A port that was just free: bind, read the port, drop.
        let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap();
        assert_eq!(
            connect(closed, Duration::from_secs(1)).await.unwrap(),
            Attempt::Closed
        );
    }
}
