//! Shared by the probe_* tests: nftables rulesets in a namespace, the
//! binomial interval for loss checks, leftovers and output filters.

#![allow(dead_code, reason = "each probe_* test uses a different part")]

use netmon_tests::{Finished, Netns, run};
use serde_json::Value;

/// Loads an nftables ruleset (nft -f syntax) into `ns`.
pub fn nft(ns: &Netns, ruleset: &str) {
    ns.sh(&format!("nft -f - <<'EOF'\n{ruleset}\nEOF"));
}

/// The two-sided 99 % interval of a binomial(n, p) count (normal
/// approximation with continuity correction; n p (1-p) is large here).
#[must_use]
pub fn binomial_99(n: u64, p: f64) -> (f64, f64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (mean - 2.576 * sd - 0.5, mean + 2.576 * sd + 0.5)
}

/// Checks that none of `names` (namespaces or links) still exists.
pub fn assert_gone(names: &[String]) {
    let netns = run(std::process::Command::new("ip").args(["netns", "list"]));
    let links = run(std::process::Command::new("ip").args(["-br", "link"]));
    for line in netns.lines().chain(links.lines()) {
        let name = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .split('@')
            .next()
            .unwrap_or("");
        assert!(!names.iter().any(|n| n == name), "left behind: {line}");
    }
}

/// JSON lines of a finished run whose `type` is `kind`.
#[must_use]
pub fn of_type(f: &Finished, kind: &str) -> Vec<Value> {
    f.json_lines()
        .into_iter()
        .filter(|v| v["type"] == kind)
        .collect()
}

/// A netmon started in the background (for runs the test ends with a
/// signal); killed on drop if still running.
pub struct Background {
    pub child: std::process::Child,
    out: Option<std::thread::JoinHandle<String>>,
    err: Option<std::thread::JoinHandle<String>>,
}

impl Background {
    /// Starts `netmon ARGS` in `ns`, stdout and stderr read on threads.
    #[must_use]
    pub fn start(ns: &Netns, args: &[&str]) -> Self {
        use std::io::Read;
        let mut child = ns
            .command(netmon_tests::netmon_bin())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("cannot start netmon");
        let read = |mut p: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = p.read_to_string(&mut s);
                s
            })
        };
        let out = Some(read(Box::new(child.stdout.take().expect("piped"))));
        let err = Some(read(Box::new(child.stderr.take().expect("piped"))));
        Self { child, out, err }
    }

    /// `ip netns exec` execs netmon in place: this is netmon's pid.
    #[must_use]
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0, "kill failed");
    }

    /// Waits at most `limit` for the exit (kills and panics after it).
    #[must_use]
    pub fn wait(mut self, limit: std::time::Duration) -> Finished {
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("netmon still running after {limit:?}: killed");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        Finished {
            status,
            stdout: self
                .out
                .take()
                .expect("once")
                .join()
                .expect("stdout reader"),
            stderr: self
                .err
                .take()
                .expect("once")
                .join()
                .expect("stderr reader"),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// VmRSS of `pid` in KiB (None once it is gone).
#[must_use]
pub fn vm_rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The socket ioctl that reads a packet's receive time in ns
/// (linux/sockios.h; not in the libc crate).
const SIOCGSTAMPNS: libc::c_ulong = 0x8907;

/// Kernel receive times (CLOCK_REALTIME, ns) of the IPv6 packets that
/// arrive on `iface` in `ns` and that `keep` accepts (it sees the packet
/// from the IPv6 header on), captured with a packet socket until `stop`
/// is set (then up to 200 ms more, for packets still queued).
pub fn capture_ipv6(
    ns: &Netns,
    iface: &str,
    keep: impl Fn(&[u8]) -> bool + Send + Sync,
    ready: &std::sync::mpsc::Sender<()>,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<i128> {
    use std::{os::fd::FromRawFd, sync::atomic::Ordering};
    ns.enter(|| {
        let proto = (libc::ETH_P_IPV6 as u16).to_be();
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(proto)) };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is a fresh descriptor we own.
        let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(iface).unwrap();
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(ifindex > 0, "no interface {iface}");
        // SAFETY: all-zero is a valid sockaddr_ll; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = i32::try_from(ifindex).expect("ifindex fits i32");
        let setopt = |name: i32, v: &libc::timeval| {
            // SAFETY: v outlives the call.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    name,
                    std::ptr::from_ref(v).cast(),
                    size_of::<libc::timeval>() as u32,
                )
            }
        };
        // SAFETY: sll is a valid sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                fd,
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let big: libc::c_int = 32 << 20;
        // SAFETY: big outlives the call.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const big).cast(),
                size_of::<libc::c_int>() as u32,
            );
        }
        let tick = libc::timeval {
            tv_sec: 0,
            tv_usec: 20_000,
        };
        assert_eq!(setopt(libc::SO_RCVTIMEO, &tick), 0);
        ready.send(()).expect("test waits");
        let mut times = Vec::new();
        let mut buf = [0u8; 2048];
        let mut stopped_at = None;
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                if !keep(&buf[..n as usize]) {
                    continue;
                }
                let mut ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: SIOCGSTAMPNS writes one timespec.
                let rc = unsafe { libc::ioctl(fd, SIOCGSTAMPNS as _, &raw mut ts) };
                assert_eq!(rc, 0, "SIOCGSTAMPNS: {}", std::io::Error::last_os_error());
                times.push(i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec));
                continue;
            }
            if stop.load(Ordering::Relaxed) {
                let t = *stopped_at.get_or_insert_with(std::time::Instant::now);
                if t.elapsed() > std::time::Duration::from_millis(200) {
                    break;
                }
            }
        }
        drop(sock);
        times
    })
}

/// The most frames any window [t, t + 1 s) of `times` (sorted ns) holds.
#[must_use]
pub fn max_per_second(times: &[i128]) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= 1_000_000_000 {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// CLOCK_REALTIME now, in ns (the clock of capture timestamps).
#[must_use]
pub fn realtime_ns() -> i128 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    i128::try_from(d.as_nanos()).expect("fits")
}
