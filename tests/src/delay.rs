//! A delay line for test paths, since this kernel has no netem: packets
//! that an `iptables -j NFQUEUE` rule queues are held by a thread of the
//! test for a fixed time, then accepted, in the order they came.
//!
//! The thread speaks nfnetlink_queue itself (a netlink socket, no library):
//! it binds the queue in metadata-only copy mode (it never needs a payload),
//! stamps each queued packet when it reads it, and releases it once
//! `arrival + delay` has passed. One delay for every packet means that the
//! packets due form a prefix of the queue, so a single batch verdict
//! ("accept everything up to id N") releases them, in order. The wait for the
//! next release is a `ppoll` with nanosecond timeout on a thread that runs
//! under SCHED_FIFO with a timer slack of 1 ns, so a release is late by
//! microseconds, not by the scheduler's whims while others compile; and it
//! is never early: a packet is held at least `delay` from the moment
//! userspace saw it, so every round trip through the line is longer than
//! `delay`, which makes `delay` a hard floor tests can assert against.
//!
//! On a virtual machine that is not enough: a halted vCPU is woken by the
//! host, late by however long the host takes. On a 2-vCPU KVM guest (AMD
//! EPYC, 2026-12-02) a SCHED_FIFO thread's 1 ms sleeps came back late by
//! 0.43 ms at the 99th percentile and 4.7 ms at the 99.9th, and TCP's
//! smoothed RTT through a 5 ms line read 5.7-5.8 ms. So while a line runs,
//! [`Wakers`] keeps every CPU busy with a SCHED_IDLE spinner: a vCPU that
//! never idles never waits for the host to wake it, and SCHED_IDLE gives
//! way to every other thread at once. With them, the same sleeps were late
//! by 0.056 ms at the 99th percentile and 0.43 ms at the 99.9th.
//! `tests/bench/wake-latency.py` measures both on any machine.

use std::{
    collections::VecDeque,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use crate::{Netns, join_netns};

/// What a delay line did, for the test to print and check.
#[derive(Debug, Clone, Copy, Default)]
pub struct DelayStats {
    /// Packets held and released.
    pub packets: u64,
    /// Shortest hold (release time − time userspace read the packet); never
    /// below the delay.
    pub min_hold: Duration,
    /// Longest hold.
    pub max_hold: Duration,
    /// Sum of the holds, for the mean.
    pub total_hold: Duration,
    /// Times the netlink socket overflowed (the kernel then drops the packet
    /// it could not queue to us): should stay 0.
    pub overruns: u64,
}

impl DelayStats {
    /// Mean hold.
    #[must_use]
    pub fn mean_hold(&self) -> Duration {
        if self.packets == 0 {
            Duration::ZERO
        } else {
            self.total_hold / u32::try_from(self.packets).unwrap_or(u32::MAX)
        }
    }

    fn held(&mut self, hold: Duration) {
        if self.packets == 0 || hold < self.min_hold {
            self.min_hold = hold;
        }
        self.max_hold = self.max_hold.max(hold);
        self.total_hold += hold;
        self.packets += 1;
    }
}

impl std::fmt::Display for DelayStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} packets held min {:.3} / mean {:.3} / max {:.3} ms, {} overruns",
            self.packets,
            ms(self.min_hold),
            ms(self.mean_hold()),
            ms(self.max_hold),
            self.overruns
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A running delay line: a thread in a network namespace holding the
/// packets of one NFQUEUE queue. Stopped (every held packet accepted, the
/// queue unbound) on drop.
pub struct DelayLine {
    /// Written to stop the thread (an eventfd it polls).
    stop: OwnedFd,
    thread: Option<thread::JoinHandle<io::Result<DelayStats>>>,
    /// Keeps the CPUs awake while the line runs (see the module docs).
    _wakers: Wakers,
    pub delay: Duration,
    pub queue: u16,
}

/// One SCHED_IDLE thread per CPU, each pinned to its CPU and spinning
/// until dropped, so that no CPU idles (see the module docs).
struct Wakers {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Wakers {
    fn start() -> Self {
        use std::sync::{Arc, atomic::AtomicBool};
        let stop = Arc::new(AtomicBool::new(false));
        let cpus = thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let threads = (0..cpus)
            .map(|cpu| {
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    // SAFETY: a zeroed cpu_set_t with one CPU set, and
                    // sched_setaffinity / sched_setscheduler on the
                    // calling thread (pid 0) with valid arguments. Best
                    // effort: a spinner that is not pinned or not idle
                    // still keeps some CPU awake.
                    unsafe {
                        let mut set: libc::cpu_set_t = std::mem::zeroed();
                        libc::CPU_SET(cpu, &mut set);
                        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set);
                        let param = libc::sched_param { sched_priority: 0 };
                        libc::sched_setscheduler(0, libc::SCHED_IDLE, &raw const param);
                    }
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Wakers { stop, threads }
    }
}

impl Drop for Wakers {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl DelayLine {
    /// Binds NFQUEUE queue `queue` in `ns` and holds each packet queued to
    /// it for `delay`. Returns once the queue is bound: a rule that queues
    /// packets to it may be added then (a queue nobody binds drops them).
    #[must_use]
    pub fn start(ns: &Netns, queue: u16, delay: Duration) -> Self {
        // SAFETY: eventfd with valid flags; the fd is owned right away.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(raw >= 0, "eventfd: {}", io::Error::last_os_error());
        // SAFETY: a fresh fd nothing else owns.
        let stop = unsafe { OwnedFd::from_raw_fd(raw) };
        let stop_rx = stop.try_clone().expect("dup the eventfd");
        let (ready_tx, ready_rx) = mpsc::channel();
        let ns_name = ns.name.clone();
        let thread = thread::spawn(move || -> io::Result<DelayStats> {
            let setup = || -> io::Result<Queue> {
                join_netns(&ns_name)?;
                realtime();
                Queue::bind(queue)
            };
            match setup() {
                Ok(q) => {
                    let _ = ready_tx.send(Ok(()));
                    q.run(delay, &stop_rx)
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    Err(e)
                }
            }
        });
        let ready = ready_rx
            .recv()
            .unwrap_or_else(|_| panic!("delay line thread in {} died before binding", ns.name));
        if let Err(e) = ready {
            panic!(
                "delay line in {}: cannot bind NFQUEUE {queue}: {e}",
                ns.name
            );
        }
        DelayLine {
            stop,
            thread: Some(thread),
            _wakers: Wakers::start(),
            delay,
            queue,
        }
    }

    /// Stops the line (accepting whatever it still holds) and returns what
    /// it did; panics if it failed while running.
    #[must_use]
    pub fn stop(mut self) -> DelayStats {
        self.finish()
            .unwrap_or_else(|e| panic!("delay line failed: {e}"))
    }

    /// Stops the thread and collects its result (a panic of the thread
    /// becomes an error here: this runs in `drop`, perhaps while a failed
    /// test unwinds, where a second panic would abort the test binary).
    fn finish(&mut self) -> Result<DelayStats, String> {
        let one: u64 = 1;
        // SAFETY: an 8-byte write of a u64 to our eventfd.
        let _ = unsafe { libc::write(self.stop.as_raw_fd(), (&raw const one).cast(), 8) };
        match self.thread.take().map(thread::JoinHandle::join) {
            Some(Ok(result)) => result.map_err(|e| e.to_string()),
            Some(Err(_)) => Err("its thread panicked".to_owned()),
            None => Ok(DelayStats::default()),
        }
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("warning: delay line failed: {e}");
        }
    }
}

/// Asks for SCHED_FIFO and a 1 ns timer slack for the calling thread, so
/// releases happen on time on a busy machine; best effort (a test still
/// runs without, less precisely, and says so).
fn realtime() {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a
    // valid parameter; prctl with an integer argument.
    unsafe {
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) != 0 {
            eprintln!(
                "warning: delay line without SCHED_FIFO: {}",
                io::Error::last_os_error()
            );
        }
        libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0);
    }
}

/// Netlink message types of nfnetlink_queue (subsystem in the high byte).
const MSG_PACKET: u16 = ((libc::NFNL_SUBSYS_QUEUE as u16) << 8) | libc::NFQNL_MSG_PACKET as u16;
const MSG_VERDICT_BATCH: u16 =
    ((libc::NFNL_SUBSYS_QUEUE as u16) << 8) | libc::NFQNL_MSG_VERDICT_BATCH as u16;
const MSG_CONFIG: u16 = ((libc::NFNL_SUBSYS_QUEUE as u16) << 8) | libc::NFQNL_MSG_CONFIG as u16;
/// nlmsghdr (16) + nfgenmsg (4).
const HEADER: usize = 20;

/// A bound nfnetlink_queue socket.
struct Queue {
    fd: OwnedFd,
    num: u16,
}

impl Queue {
    /// Opens a netlink socket in the current namespace and binds queue
    /// `num` in metadata-only mode.
    fn bind(num: u16) -> io::Result<Queue> {
        // SAFETY: socket(2) with constant arguments; the fd is owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Room for thousands of queued-packet messages: an overflow makes
        // the kernel drop the packet, which a test would see as loss.
        let size: libc::c_int = 8 << 20;
        // SAFETY: setsockopt with a c_int value on our socket.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        // SAFETY: a zeroed sockaddr_nl is valid (pid 0: the kernel picks).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: bind with a sockaddr_nl of its own size.
        if unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        let q = Queue { fd, num };
        // nfqnl_msg_config_cmd: command, pad, pf (unused since 3.8).
        q.config(
            libc::NFQA_CFG_CMD as u16,
            &[libc::NFQNL_CFG_CMD_BIND as u8, 0, 0, 0],
        )?;
        // nfqnl_msg_config_params: copy_range (be32), copy_mode: metadata.
        let mut params = 0u32.to_be_bytes().to_vec();
        params.push(libc::NFQNL_COPY_META as u8);
        q.config(libc::NFQA_CFG_PARAMS as u16, &params)?;
        q.config(libc::NFQA_CFG_QUEUE_MAXLEN as u16, &16_384u32.to_be_bytes())?;
        Ok(q)
    }

    /// One nfnetlink message: header, nfgenmsg for our queue, attributes
    /// `(type, payload)`.
    fn message(&self, kind: u16, flags: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut m = vec![0u8; HEADER];
        for (t, payload) in attrs {
            let len = 4 + payload.len();
            m.extend_from_slice(&u16::try_from(len).unwrap().to_ne_bytes());
            m.extend_from_slice(&t.to_ne_bytes());
            m.extend_from_slice(payload);
            m.resize(m.len().next_multiple_of(4), 0);
        }
        let len = u32::try_from(m.len()).unwrap();
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&kind.to_ne_bytes());
        m[6..8].copy_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
        // nfgenmsg: family AF_UNSPEC, version 0, res_id = queue (be16).
        m[16] = libc::AF_UNSPEC as u8;
        m[17] = libc::NFNETLINK_V0 as u8;
        m[18..20].copy_from_slice(&self.num.to_be_bytes());
        m
    }

    fn send(&self, m: &[u8]) -> io::Result<()> {
        // SAFETY: send of an initialised buffer on our socket (connected to
        // the kernel by default).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends a config attribute and waits for the kernel's acknowledgement.
    fn config(&self, attr: u16, payload: &[u8]) -> io::Result<()> {
        self.send(&self.message(MSG_CONFIG, libc::NLM_F_ACK as u16, &[(attr, payload)]))?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = self.recv(&mut buf, 0)?;
            for (kind, body) in Messages(&buf[..n]) {
                if kind == libc::NLMSG_ERROR as u16 {
                    return match errno(body) {
                        0 => Ok(()),
                        e => Err(io::Error::from_raw_os_error(e)),
                    };
                }
            }
        }
    }

    fn recv(&self, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
        // SAFETY: recv into a buffer of its own length on our socket.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Accepts every queued packet with an id up to `id`.
    fn accept_through(&self, id: u32) -> io::Result<()> {
        // nfqnl_msg_verdict_hdr: verdict (be32), id (be32).
        let mut hdr = (libc::NF_ACCEPT as u32).to_be_bytes().to_vec();
        hdr.extend_from_slice(&id.to_be_bytes());
        self.send(&self.message(
            MSG_VERDICT_BATCH,
            0,
            &[(libc::NFQA_VERDICT_HDR as u16, &hdr)],
        ))
    }

    /// Holds packets until `stop` becomes readable; then accepts the rest.
    fn run(self, delay: Duration, stop: &OwnedFd) -> io::Result<DelayStats> {
        let mut held: VecDeque<(Instant, u32)> = VecDeque::new();
        let mut stats = DelayStats::default();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let now = Instant::now();
            let timeout = held.front().map(|(arrived, _)| {
                let left = (*arrived + delay).saturating_duration_since(now);
                libc::timespec {
                    tv_sec: libc::time_t::try_from(left.as_secs()).unwrap_or(libc::time_t::MAX),
                    tv_nsec: libc::c_long::from(left.subsec_nanos()),
                }
            });
            let mut fds = [
                libc::pollfd {
                    fd: self.fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: stop.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let ts = timeout.as_ref().map_or(std::ptr::null(), |t| &raw const *t);
            // SAFETY: ppoll on two valid pollfds, a valid or null timeout
            // and no signal mask change.
            let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, ts, std::ptr::null()) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if fds[1].revents != 0 {
                break;
            }
            if fds[0].revents != 0 {
                self.read_packets(&mut buf, &mut held, &mut stats)?;
            }
            // Release what is due: a prefix of the queue, ids ascending.
            let now = Instant::now();
            let mut last = None;
            while let Some(&(arrived, id)) = held.front() {
                if now < arrived + delay {
                    break;
                }
                stats.held(now - arrived);
                last = Some(id);
                held.pop_front();
            }
            if let Some(id) = last {
                self.accept_through(id)?;
            }
        }
        if let Some(&(_, id)) = held.back() {
            self.accept_through(id)?;
        }
        self.config(
            libc::NFQA_CFG_CMD as u16,
            &[libc::NFQNL_CFG_CMD_UNBIND as u8, 0, 0, 0],
        )?;
        Ok(stats)
    }

    /// Reads every queued-packet message there is, stamping each with the
    /// time it was read.
    fn read_packets(
        &self,
        buf: &mut [u8],
        held: &mut VecDeque<(Instant, u32)>,
        stats: &mut DelayStats,
    ) -> io::Result<()> {
        loop {
            let n = match self.recv(buf, libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    stats.overruns += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let arrived = Instant::now();
            for (kind, body) in Messages(&buf[..n]) {
                if kind == libc::NLMSG_ERROR as u16 {
                    match errno(body) {
                        0 => continue,
                        e => return Err(io::Error::from_raw_os_error(e)),
                    }
                }
                if kind != MSG_PACKET {
                    continue;
                }
                let id = packet_id(body).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "queued packet without an id")
                })?;
                held.push_back((arrived, id));
            }
        }
    }
}

/// The netlink messages in a datagram: (type, bytes after the nlmsghdr).
struct Messages<'a>(&'a [u8]);

impl<'a> Iterator for Messages<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        if b.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
        if len < 16 || len > b.len() {
            self.0 = &[];
            return None;
        }
        let kind = u16::from_ne_bytes(b[4..6].try_into().unwrap());
        self.0 = &b[len.next_multiple_of(4).min(b.len())..];
        Some((kind, &b[16..len]))
    }
}

/// The (positive) errno of an NLMSG_ERROR body; 0 is an acknowledgement.
fn errno(body: &[u8]) -> i32 {
    body.get(0..4)
        .map_or(libc::EPROTO, |b| -i32::from_ne_bytes(b.try_into().unwrap()))
}

/// The packet id of a queued-packet message body (after the nlmsghdr):
/// nfgenmsg, then attributes; NFQA_PACKET_HDR starts with the id (be32).
fn packet_id(body: &[u8]) -> Option<u32> {
    let mut attrs = body.get(4..)?;
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes(attrs[0..2].try_into().unwrap()));
        let kind = u16::from_ne_bytes(attrs[2..4].try_into().unwrap()) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == libc::NFQA_PACKET_HDR as u16 && len >= 8 {
            return Some(u32::from_be_bytes(attrs[4..8].try_into().unwrap()));
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    None
}
