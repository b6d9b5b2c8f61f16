//! Echo requests in flight: one socket per address family serves every
//! target; a receiver task per socket matches replies to probes by probe
//! number (in the payload), then checks sender, sequence and cookie.
//! Duplicates and late replies are counted per address, never timed.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::icmp::{IcmpError, IcmpSocket, Reply, SocketKind, TxStamp};
use crate::sys::clock::realtime_ns;

/// How long a finished probe is remembered to recognise duplicates and late
/// replies (by default; sweeps remember less, see [`Pinger::with_memory`]).
const REMEMBER: Duration = Duration::from_secs(60);

/// What became of one echo request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered after this long.
    Reply(Duration),
    /// Sent, and no reply came in time.
    NoReply,
    /// Never left this host; the reason (e.g. "Network is unreachable").
    NotSent(String),
}

/// The reason of a failed send in words: the OS's text without the
/// "(os error N)" suffix.
#[must_use]
pub fn reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_owned(),
        _ => text,
    }
}

/// Where the RTT of an answered probe goes.
pub enum Notify {
    Oneshot(oneshot::Sender<Duration>),
    /// A channel many probes share; the tag says which probe answered.
    Channel(mpsc::UnboundedSender<(u64, Duration)>, u64),
}

enum State {
    Waiting(Notify),
    Answered,
    Expired,
}

struct Entry {
    addr: IpAddr,
    seq: u16,
    sent: Instant,
    /// When the request left: the kernel's transmit timestamp once it is
    /// read (`kernel_tx`), the userspace clock before the send until then.
    sent_real_ns: i128,
    kernel_tx: bool,
    state: State,
}

/// Replies that were not RTT samples, per address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extra {
    pub duplicates: u64,
    pub late: u64,
}

#[derive(Default)]
struct Table {
    probes: HashMap<u64, Entry>,
    /// Finished probes, oldest first, to forget after a while.
    finished: VecDeque<(Instant, u64)>,
    extra: HashMap<IpAddr, Extra>,
}

impl Table {
    fn forget_old(&mut self, now: Instant, remember: Duration) {
        while let Some(&(t, id)) = self.finished.front() {
            if now.duration_since(t) < remember {
                break;
            }
            self.finished.pop_front();
            self.probes.remove(&id);
        }
    }

    fn on_reply(&mut self, r: &Reply, now: Instant, cookie: u64) {
        if r.echo.cookie != cookie {
            return;
        }
        let Some(e) = self.probes.get_mut(&r.echo.probe) else {
            return;
        };
        if e.addr != r.from || e.seq != r.echo.seq {
            return;
        }
        match std::mem::replace(&mut e.state, State::Answered) {
            State::Waiting(notify) => {
                let mono = now.duration_since(e.sent);
                // Prefer the kernel's receive time; fall back to our clock when
                // there is none or the wall clock stepped in between.
                let rtt = match r.rx_real_ns.map(|rx| rx - e.sent_real_ns) {
                    Some(ns) if ns > 0 && ns <= mono.as_nanos().cast_signed() + 1_000_000 => {
                        Duration::from_nanos(ns as u64)
                    }
                    _ => mono,
                };
                match notify {
                    Notify::Oneshot(tx) => {
                        let _ = tx.send(rtt);
                    }
                    Notify::Channel(tx, tag) => {
                        let _ = tx.send((tag, rtt));
                    }
                }
                self.finished.push_back((now, r.echo.probe));
            }
            State::Answered => self.extra.entry(r.from).or_default().duplicates += 1,
            State::Expired => {
                e.state = State::Expired;
                self.extra.entry(r.from).or_default().late += 1;
            }
        }
    }
}

struct Shared {
    cookie: u64,
    /// How long finished probes are remembered.
    remember: Duration,
    next_probe: AtomicU64,
    // Std Mutexes: every critical section is a few map operations and none
    // is held across an .await. Striped by probe number, so that senders on
    // several threads and the receivers rarely wait for one another.
    tables: Vec<Mutex<Table>>,
}

/// Stripes of the probe table.
const STRIPES: u64 = 16;

impl Shared {
    fn table(&self, id: u64) -> MutexGuard<'_, Table> {
        self.tables[(id % STRIPES) as usize]
            .lock()
            .expect("probe table poisoned")
    }

    /// Puts the kernel's transmit times on the probes still waiting. The
    /// key of a stamp is the probe number's low 32 bits (see send_with).
    fn on_tx_stamps(&self, stamps: &[TxStamp]) {
        let next = self.next_probe.load(Ordering::Relaxed);
        for s in stamps {
            let id = next.wrapping_sub(u64::from((next as u32).wrapping_sub(s.key)));
            if let Some(e) = self.table(id).probes.get_mut(&id)
                && matches!(e.state, State::Waiting(_))
            {
                e.sent_real_ns = s.real_ns;
                e.kernel_tx = true;
            }
        }
    }

    fn on_replies(&self, batch: &[Reply]) {
        let now = Instant::now();
        for r in batch {
            self.table(r.echo.probe).on_reply(r, now, self.cookie);
        }
    }

    fn expire(&self, id: u64) -> bool {
        let mut t = self.table(id);
        if let Some(e) = t.probes.get_mut(&id) {
            if matches!(e.state, State::Waiting(_)) {
                e.state = State::Expired;
                t.finished.push_back((Instant::now(), id));
                return true;
            }
        }
        false
    }
}

/// Sends echo requests and waits for their replies.
pub struct Pinger {
    shared: Arc<Shared>,
    v4: Option<Arc<IcmpSocket>>,
    v6: Option<Arc<IcmpSocket>>,
    receivers: Vec<JoinHandle<()>>,
}

/// A probe on the wire.
pub struct InFlight {
    shared: Arc<Shared>,
    id: u64,
    rx: oneshot::Receiver<Duration>,
}

/// A random-enough u64 from the clock, the pid and a stack address.
fn random_u64() -> u64 {
    let local = 0u8;
    let x = realtime_ns() as u64
        ^ (u64::from(std::process::id()) << 32)
        ^ (&raw const local as u64).rotate_left(17);
    // splitmix64 finaliser
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Pinger {
    /// Opens the sockets of the families asked for and starts their receivers.
    /// RTTs run from the kernel's transmit timestamp of each request
    /// where the kernel gives one (see [`TxStamp`]).
    pub fn new(v4: bool, v6: bool) -> Result<Self, IcmpError> {
        Self::open(v4, v6, REMEMBER, true)
    }

    /// Like [`Self::new`], remembering finished probes for `remember` (late
    /// replies and duplicates after that are ignored, not counted), for
    /// sweeps: they keep it short, so that the table holds about
    /// `rate * remember` probes, and they ask for no kernel transmit
    /// timestamps (a sweep asks whether a host answers; a timestamp's
    /// control message and error-queue read cost a fifth of a /20 sweep's
    /// time on loopback), so their RTTs start at the userspace clock.
    pub fn with_memory(v4: bool, v6: bool, remember: Duration) -> Result<Self, IcmpError> {
        Self::open(v4, v6, remember, false)
    }

    fn open(v4: bool, v6: bool, remember: Duration, tx_stamps: bool) -> Result<Self, IcmpError> {
        let cookie = random_u64();
        let shared = Arc::new(Shared {
            cookie,
            remember,
            next_probe: AtomicU64::new(cookie >> 40),
            tables: (0..STRIPES).map(|_| Mutex::default()).collect(),
        });
        let ident = (cookie >> 16) as u16;
        let v4 = if v4 {
            Some(Arc::new(IcmpSocket::open(false, ident, tx_stamps)?))
        } else {
            None
        };
        let v6 = if v6 {
            Some(Arc::new(IcmpSocket::open(true, ident, tx_stamps)?))
        } else {
            None
        };
        let receivers = v4
            .iter()
            .chain(v6.iter())
            .map(|sock| {
                let (sock, shared) = (Arc::clone(sock), Arc::clone(&shared));
                tokio::spawn(async move {
                    let mut batch = Vec::with_capacity(256);
                    let mut tx = Vec::with_capacity(256);
                    loop {
                        batch.clear();
                        tx.clear();
                        let got = sock.recv_batch(&mut batch, &mut tx).await;
                        // Transmit times first: a request's is read no later
                        // than its reply.
                        shared.on_tx_stamps(&tx);
                        if let Err(e) = got {
                            log::warn!("receiving ICMP replies: {e}");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                        shared.on_replies(&batch);
                    }
                })
            })
            .collect();
        Ok(Self {
            shared,
            v4,
            v6,
            receivers,
        })
    }

    /// Which socket kinds are in use, for `--verbose`.
    pub fn kinds(&self) -> Vec<(&'static str, SocketKind)> {
        let mut v = Vec::new();
        if let Some(s) = &self.v4 {
            v.push(("IPv4", s.kind));
        }
        if let Some(s) = &self.v6 {
            v.push(("IPv6", s.kind));
        }
        v
    }

    /// Sends one echo request to `addr`. An error means it never left
    /// (no route, refused by a firewall); the caller counts it as lost.
    pub async fn send(&self, addr: IpAddr) -> std::io::Result<InFlight> {
        let (tx, rx) = oneshot::channel();
        let id = self.send_with(addr, Notify::Oneshot(tx)).await?;
        Ok(InFlight {
            shared: Arc::clone(&self.shared),
            id,
            rx,
        })
    }

    /// Sends one echo request whose RTT, if it comes, goes to `tx` with
    /// `tag`. Returns the probe number for [`Self::expire`]. Many probes
    /// share one channel and need no task each.
    pub async fn send_tagged(
        &self,
        addr: IpAddr,
        tx: mpsc::UnboundedSender<(u64, Duration)>,
        tag: u64,
    ) -> std::io::Result<u64> {
        self.send_with(addr, Notify::Channel(tx, tag)).await
    }

    async fn send_with(&self, addr: IpAddr, notify: Notify) -> std::io::Result<u64> {
        let sock = match addr {
            IpAddr::V4(_) => self.v4.as_ref(),
            IpAddr::V6(_) => self.v6.as_ref(),
        }
        .expect("the pinger was opened for this address family");
        let id = self.shared.next_probe.fetch_add(1, Ordering::Relaxed);
        let seq = id as u16;
        {
            let now = Instant::now();
            let mut t = self.shared.table(id);
            let remember = self.shared.remember;
            t.forget_old(now, remember);
            let entry = Entry {
                addr,
                seq,
                sent: now,
                sent_real_ns: realtime_ns(),
                kernel_tx: false,
                state: State::Waiting(notify),
            };
            t.probes.insert(id, entry);
        }
        match sock
            .send(addr, seq, self.shared.cookie, id, id as u32)
            .await
        {
            Ok(sent_real_ns) => {
                // The time of the sendto itself, not of the bookkeeping
                // before it, unless the kernel's transmit time is already
                // there. A reply handled before this update was timed from
                // the earlier stamp: longer, never shorter.
                if let Some(e) = self.shared.table(id).probes.get_mut(&id)
                    && !e.kernel_tx
                {
                    e.sent_real_ns = sent_real_ns;
                }
                Ok(id)
            }
            Err(e) => {
                self.shared.expire(id);
                Err(e)
            }
        }
    }

    /// Gives up on probe `id`: true if it was still waiting (a timeout),
    /// false if its reply came first.
    pub fn expire(&self, id: u64) -> bool {
        self.shared.expire(id)
    }

    /// Sends and waits: the RTT, or `None` after `timeout` or a send error.
    pub async fn probe(&self, addr: IpAddr, timeout: Duration) -> Option<Duration> {
        match self.probe_outcome(addr, timeout).await {
            Outcome::Reply(rtt) => Some(rtt),
            Outcome::NoReply | Outcome::NotSent(_) => None,
        }
    }

    /// Sends and waits: a reply, no reply within `timeout`, or why the
    /// request could not be sent.
    pub async fn probe_outcome(&self, addr: IpAddr, timeout: Duration) -> Outcome {
        match self.send(addr).await {
            Ok(f) => f
                .wait(timeout)
                .await
                .map_or(Outcome::NoReply, Outcome::Reply),
            Err(e) => {
                log::debug!("echo request to {addr} not sent: {e}");
                Outcome::NotSent(reason(&e))
            }
        }
    }

    /// Reads the replies queued right now on the sender's own thread, so
    /// that fast senders share the receiving work (the receiver tasks read
    /// the rest).
    pub fn drain_now(&self) {
        let (mut batch, mut tx) = (Vec::new(), Vec::new());
        for sock in self.v4.iter().chain(self.v6.iter()) {
            let _ = sock.try_recv_batch(&mut batch, &mut tx, 64);
        }
        self.shared.on_tx_stamps(&tx);
        self.shared.on_replies(&batch);
    }

    /// Makes room for `probes` probes in flight, so that a sweep does not
    /// grow the table while it sends.
    pub fn reserve(&self, probes: usize) {
        for t in &self.shared.tables {
            t.lock()
                .expect("probe table poisoned")
                .probes
                .reserve(probes / STRIPES as usize + 16);
        }
    }

    /// Duplicates and late replies seen from `addr` so far.
    pub fn extra(&self, addr: IpAddr) -> Extra {
        let mut sum = Extra::default();
        for t in &self.shared.tables {
            if let Some(e) = t.lock().expect("probe table poisoned").extra.get(&addr) {
                sum.duplicates += e.duplicates;
                sum.late += e.late;
            }
        }
        sum
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        for r in &self.receivers {
            r.abort();
        }
    }
}

impl InFlight {
    /// The RTT, or `None` when no reply came within `timeout`.
    pub async fn wait(mut self, timeout: Duration) -> Option<Duration> {
        if let Ok(Ok(rtt)) = tokio::time::timeout(timeout, &mut self.rx).await {
            return Some(rtt);
        }
        // Expiry and a reply are decided under the table lock: if the reply
        // won the race, its RTT is already in the channel.
        if self.shared.expire(self.id) {
            None
        } else {
            self.rx.try_recv().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::probe::wire::{EchoRepr, ICMP_ECHO_REPLY};

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn reply(probe: u64, seq: u16, cookie: u64) -> Reply {
        Reply {
            from: LO,
            echo: EchoRepr {
                msg_type: ICMP_ECHO_REPLY,
                ident: 1,
                seq,
                cookie,
                probe,
            },
            rx_real_ns: None,
        }
    }

    fn waiting(t: &mut Table, id: u64, seq: u16) -> oneshot::Receiver<Duration> {
        let (tx, rx) = oneshot::channel();
        t.probes.insert(
            id,
            Entry {
                addr: LO,
                seq,
                sent: Instant::now(),
                sent_real_ns: 0,
                kernel_tx: false,
                state: State::Waiting(Notify::Oneshot(tx)),
            },
        );
        rx
    }

    #[test]
    fn replies_are_matched_then_counted_as_duplicates() {
        let mut t = Table::default();
        let mut rx = waiting(&mut t, 5, 5);
        let now = Instant::now();
        t.on_reply(&reply(5, 5, 9), now, 9);
        assert!(rx.try_recv().is_ok());
        t.on_reply(&reply(5, 5, 9), now, 9);
        t.on_reply(&reply(5, 5, 9), now, 9);
        assert_eq!(
            t.extra[&LO],
            Extra {
                duplicates: 2,
                late: 0
            }
        );
    }

    #[test]
    fn foreign_and_mismatched_replies_are_ignored() {
        let mut t = Table::default();
        let mut rx = waiting(&mut t, 5, 5);
        let now = Instant::now();
        t.on_reply(&reply(5, 5, 8), now, 9); // wrong cookie
        t.on_reply(&reply(5, 6, 9), now, 9); // wrong sequence
        t.on_reply(&reply(6, 5, 9), now, 9); // unknown probe
        let mut other = reply(5, 5, 9);
        other.from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        t.on_reply(&other, now, 9); // wrong sender
        assert!(rx.try_recv().is_err());
        assert!(t.extra.is_empty());
    }

    #[test]
    fn late_replies_are_counted_not_timed() {
        let mut t = Table::default();
        let _rx = waiting(&mut t, 5, 5);
        t.probes.get_mut(&5).unwrap().state = State::Expired;
        t.on_reply(&reply(5, 5, 9), Instant::now(), 9);
        t.on_reply(&reply(5, 5, 9), Instant::now(), 9);
        assert_eq!(
            t.extra[&LO],
            Extra {
                duplicates: 0,
                late: 2
            }
        );
    }

    #[test]
    fn kernel_timestamp_is_preferred_when_sane() {
        let mut t = Table::default();
        let mut rx = waiting(&mut t, 1, 1);
        let sent = t.probes[&1].sent;
        let mut r = reply(1, 1, 9);
        r.rx_real_ns = Some(250_000);
        t.on_reply(&r, sent + Duration::from_millis(1), 9);
        assert_eq!(rx.try_recv().unwrap(), Duration::from_micros(250));
        // A timestamp beyond our own clock's measure is not trusted.
        let mut rx = waiting(&mut t, 2, 2);
        let sent = t.probes[&2].sent;
        let mut r = reply(2, 2, 9);
        r.rx_real_ns = Some(50_000_000);
        t.on_reply(&r, sent + Duration::from_millis(1), 9);
        assert_eq!(rx.try_recv().unwrap(), Duration::from_millis(1));
    }

    #[test]
    fn transmit_stamps_find_their_probe_across_the_key_wrap() {
        // Probe numbers around 2^32: keys (their low 32 bits) wrap to 0.
        let first = (1u64 << 32) - 2;
        let shared = Shared {
            cookie: 9,
            remember: REMEMBER,
            next_probe: AtomicU64::new(first + 4),
            tables: (0..STRIPES).map(|_| Mutex::default()).collect(),
        };
        let mut rxs = Vec::new();
        for id in first..first + 4 {
            let mut t = shared.table(id);
            rxs.push(waiting(&mut t, id, id as u16));
            t.probes.get_mut(&id).unwrap().sent_real_ns = 1_000;
        }
        // Probe first + 3 was answered before its stamp was read: it keeps
        // the time it was timed from.
        shared
            .table(first + 3)
            .probes
            .get_mut(&(first + 3))
            .unwrap()
            .state = State::Answered;
        let stamps: Vec<TxStamp> = (first..first + 4)
            .map(|id| TxStamp {
                key: id as u32,
                real_ns: i128::from(id as u32) + 5_000,
            })
            .collect();
        assert_eq!(stamps[2].key, 0, "the keys wrap in this test");
        shared.on_tx_stamps(&stamps);
        for id in first..first + 4 {
            let e = &shared.table(id).probes[&id];
            let want = if id == first + 3 {
                (1_000, false)
            } else {
                (i128::from(id as u32) + 5_000, true)
            };
            assert_eq!((e.sent_real_ns, e.kernel_tx), want, "probe {id}");
        }
    }

    #[test]
    fn send_errors_read_as_the_os_says_them() {
        let e = std::io::Error::from_raw_os_error(libc::ENETUNREACH);
        assert_eq!(reason(&e), "Network is unreachable");
        assert_eq!(reason(&std::io::Error::other("odd")), "odd");
    }

    #[test]
    fn finished_probes_are_forgotten_after_a_while() {
        let mut t = Table::default();
        let _rx = waiting(&mut t, 1, 1);
        let now = Instant::now();
        t.on_reply(&reply(1, 1, 9), now, 9);
        t.forget_old(now + REMEMBER / 2, REMEMBER);
        assert_eq!(t.probes.len(), 1);
        t.forget_old(now + REMEMBER, REMEMBER);
        assert!(t.probes.is_empty());
    }
}
