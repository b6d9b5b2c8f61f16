//! The TCP socket layer: one non-blocking connect, classified; and the
//! file-descriptor limit that bounds how many run at once.

use std::{
    io,
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::net::TcpSocket;

/// What one connect attempt found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Connected, after this long.
    Open(Duration),
    /// Refused (RST).
    Closed,
    /// No answer within the timeout.
    Timeout,
    /// ICMP unreachable or prohibited, or a local firewall refused it.
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
        libc::EHOSTUNREACH
        | libc::ENETUNREACH
        | libc::EACCES
        | libc::EPERM
        | libc::EHOSTDOWN
        | libc::ENONET => Some(Attempt::Unreachable),
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
    let sock = match if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    } {
        Ok(s) => s,
        Err(e) => return classify(&e).filter(|a| *a == Attempt::Again).ok_or(e),
    };
    // Close with RST: an open port then leaves no TIME_WAIT behind on our side.
    // SO_LINGER 0 never blocks on close.
    socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO))?;
    let start = Instant::now();
    match tokio::time::timeout(timeout, sock.connect(addr)).await {
        Err(_elapsed) => Ok(Attempt::Timeout),
        Ok(Ok(stream)) => {
            let rtt = start.elapsed();
            // Connecting from the very port we probe (loopback, ports in the
            // ephemeral range) makes a TCP simultaneous open with ourselves.
            if stream.local_addr().ok() == Some(addr) {
                return Ok(Attempt::Again);
            }
            Ok(Attempt::Open(rtt))
        }
        Ok(Err(e)) => classify(&e).ok_or(e),
    }
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
