//! Readiness for supervisors and tests: the systemd notification protocol
//! (`sd_notify(3)`). When `NOTIFY_SOCKET` names a Unix datagram socket,
//! netmon sends `READY=1` there once it counts, so a `Type=notify` service
//! (or a test) knows without reading prose on stderr.

use std::{io, os::unix::net::UnixDatagram};

/// Sends `state` (lines like `READY=1`) to `$NOTIFY_SOCKET`. Without the
/// variable this does nothing and succeeds. An abstract socket is written
/// with a leading `@`.
pub fn notify(state: &str) -> io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), &path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_the_state_to_the_named_socket() {
        let dir = std::env::temp_dir().join(format!("netmon-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        // SAFETY: no other test reads or writes NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        notify("READY=1\nSTATUS=counting").unwrap();
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=counting");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
