//! `cargo xtask bench veth`: netmon in situ on a veth pair.
//!
//! Two network namespaces created here (and always removed, by a guard),
//! joined by a veth pair: a generator in the *tx* namespace pushes raw
//! Ethernet frames (IPv4/UDP, 198.51.100.2 -> 198.51.100.1, [`FLOWS`] source
//! ports) through an `AF_PACKET` socket with `sendmmsg`; netmon watches the
//! veth end in the *rx* namespace (`ip netns exec RX netmon --iface R
//! --format json`, stopped with SIGINT).
//!
//! Four configurations ([`CONFIGS`]: nothing attached, netmon as users run
//! it, the object's XDP_PASS-only program, netmon in generic mode) run once
//! per round, [`ROUNDS`] rounds, the order rotating every round; rates are
//! medians, and the target compares netmon with nothing attached. The
//! XDP_PASS-only run shows what attaching any XDP program to a veth costs,
//! so that netmon's own share can be told apart. Every run with netmon checks
//! that netmon's totals equal what arrived. Ground truth is the receiving
//! veth's own rx counter (`ip -s link`), read right after netmon attached
//! and after the traffic stopped: a kernel count outside netmon of the
//! frames that entered that interface's receive path, which is exactly
//! where XDP runs. It is cross-checked against the generator's count of
//! frames the kernel accepted (a frame the veth drops fails `sendmmsg` with
//! ENOBUFS and is sent again, so accepted = arrived when nothing else is on
//! the link; the namespaces are kept silent: no IPv6, static neighbours).

use crate::bench_util::{median, write_report};
use std::{
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader},
    mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use aya::{
    Ebpf, EbpfLoader,
    programs::{Xdp, XdpMode},
};
use netmon_common::XDP_FLOOR_PROGRAM;
use serde_json::{Value, json};

/// Packets per run (each run with netmon attached pushes this many).
const PACKETS: u64 = 1_000_000;
/// Rounds; each runs every configuration once.
const ROUNDS: usize = 9;
/// Distinct flows (UDP source ports) the generator cycles through.
const FLOWS: usize = 16;
/// Frame length without FCS: the minimum Ethernet frame.
const FRAME_LEN: usize = 60;
/// Frames per `sendmmsg` call (a multiple of [`FLOWS`]).
const BATCH: usize = 64;
/// Target: rate with netmon >= this share of the rate without.
const TARGET_RATIO: f64 = 0.95;

const TX_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x02];
const RX_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
const TX_IP: [u8; 4] = [198, 51, 100, 2];
const RX_IP: [u8; 4] = [198, 51, 100, 1];
const SPORT_BASE: u16 = 40_000;
const DPORT: u16 = 9000;

/// Set by SIGINT/SIGTERM: the bench stops at the next check and its guards
/// clean up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

pub fn run(root: &Path, netmon: &Path) -> Result<()> {
    let started = Instant::now();
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    ensure!(
        netmon.exists(),
        "{} does not exist; build it with `cargo xtask build`",
        netmon.display()
    );
    // The object `cargo xtask bench` built (main.rs's EBPF_OBJECT), for the
    // empty-XDP comparison run.
    let object = root.join(crate::EBPF_OBJECT);
    let object_bytes = fs::read(&object)
        .with_context(|| format!("cannot read the XDP object {}", object.display()))?;
    let topo = Topology::create()?;
    let generator = Generator::open(&topo)?;
    crate::step(&format!(
        "veth in situ: {ROUNDS} rounds of {PACKETS} packets per configuration ({}) on {} \
         (namespaces {} -> {})",
        CONFIGS.map(Config::name).join(", "),
        topo.rx_if,
        topo.tx_ns,
        topo.rx_ns
    ));
    // Warm-up: caches, page pools, the neighbour entries.
    generator.send(PACKETS / 2)?;

    let mut results: Vec<Vec<RunResult>> = vec![Vec::with_capacity(ROUNDS); CONFIGS.len()];
    for round in 0..ROUNDS {
        // The order rotates every round: no configuration always runs first.
        for k in 0..CONFIGS.len() {
            let i = (k + round) % CONFIGS.len();
            check_interrupted()?;
            let r = run_once(&topo, &generator, CONFIGS[i], netmon, &object_bytes)?;
            eprintln!(
                "xtask:   round {} {:<14} {:>9.0} pps{}",
                round + 1,
                CONFIGS[i].name(),
                r.pps,
                r.netmon.as_ref().map_or_else(String::new, |n| format!(
                    "  netmon {} packets / {} bytes, arrived {} / {}: {}",
                    n.packets,
                    n.bytes,
                    r.rx_packets,
                    r.sent.accepted * FRAME_LEN as u64,
                    if r.exact() { "exact" } else { "MISMATCH" }
                ))
            );
            results[i].push(r);
        }
    }
    drop(generator);
    drop(topo);

    let report = Report { results };
    print!("{}", report.table());
    let json = report.json(started.elapsed());
    let path = write_report(root, "veth.json", &json)?;
    println!("written: {}", path.display());
    if report.ratio(Config::Netmon) < TARGET_RATIO {
        println!(
            "TARGET MISSED: the rate with netmon is {:.1} % of the rate without, target >= {:.0} %",
            report.ratio(Config::Netmon) * 100.0,
            TARGET_RATIO * 100.0
        );
    }
    if !report.all_exact() {
        bail!("netmon's totals differ from what arrived (see the table)");
    }
    Ok(())
}

/// What is on the receiving veth during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Config {
    /// Nothing: the baseline.
    Without,
    /// netmon as users run it (`--xdp-mode auto`: native on veth).
    Netmon,
    /// The object's empty program (`netmon_floor`, returns XDP_PASS) in
    /// native mode, attached by the bench: what attaching any XDP program
    /// to a veth costs, netmon's work aside.
    XdpFloor,
    /// netmon with `--xdp-mode generic`.
    NetmonGeneric,
}

const CONFIGS: [Config; 4] = [
    Config::Without,
    Config::Netmon,
    Config::XdpFloor,
    Config::NetmonGeneric,
];

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Without => "without",
            Config::Netmon => "netmon",
            Config::XdpFloor => "xdp_pass_only",
            Config::NetmonGeneric => "netmon_generic",
        }
    }
    fn index(self) -> usize {
        CONFIGS.iter().position(|c| *c == self).expect("listed")
    }
}

/// The object's `netmon_floor` program attached to the receiving veth in
/// native mode (from a thread inside the rx namespace). Dropping it closes
/// the bpf_link, which detaches the program.
struct FloorAttachment {
    _ebpf: Ebpf,
}

impl FloorAttachment {
    fn attach(topo: &Topology, object: &[u8]) -> Result<Self> {
        let path = format!("/run/netns/{}", topo.rx_ns);
        let ifname = topo.rx_if.clone();
        let ebpf = thread::scope(|s| {
            s.spawn(|| -> Result<Ebpf> {
                let ns = fs::File::open(&path).with_context(|| format!("cannot open {path}"))?;
                // SAFETY: setns on a valid namespace fd; it moves only this
                // scoped thread.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns {path}: {}", std::io::Error::last_os_error());
                }
                let mut ebpf = EbpfLoader::new()
                    .load(object)
                    .context("loading the XDP object failed")?;
                let xdp: &mut Xdp = ebpf
                    .program_mut(XDP_FLOOR_PROGRAM)
                    .with_context(|| format!("no program {XDP_FLOOR_PROGRAM}"))?
                    .try_into()?;
                xdp.load()?;
                xdp.attach(&ifname, XdpMode::Driver)
                    .with_context(|| format!("attaching {XDP_FLOOR_PROGRAM} to {ifname}"))?;
                Ok(ebpf)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
        })?;
        Ok(FloorAttachment { _ebpf: ebpf })
    }
}

/// Runs a command, failing with its stderr; returns stdout.
fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    sh(Command::new("ip").args(args))
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The two namespaces and the veth pair between them. Dropping it deletes
/// both namespaces, which removes the veth pair and any XDP program on it.
struct Topology {
    tx_ns: String,
    rx_ns: String,
    tx_if: String,
    rx_if: String,
    /// Namespaces created so far (deleted on drop).
    created: Vec<String>,
}

impl Topology {
    fn create() -> Result<Self> {
        let id = std::process::id() % 100_000;
        let mut t = Topology {
            tx_ns: format!("nmbench-tx-{id}"),
            rx_ns: format!("nmbench-rx-{id}"),
            tx_if: format!("nmbt{id}"),
            rx_if: format!("nmbr{id}"),
            created: Vec::new(),
        };
        for ns in [t.tx_ns.clone(), t.rx_ns.clone()] {
            ip(&["netns", "add", &ns])?;
            t.created.push(ns.clone());
            // No IPv6 on the new links: no router solicitations, MLD or DAD
            // frames to disturb the counts.
            for key in ["all", "default"] {
                sh(Command::new("ip").args([
                    "netns",
                    "exec",
                    &ns,
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
                ]))?;
            }
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        ip(&[
            "-n",
            &t.tx_ns,
            "link",
            "add",
            &t.tx_if,
            "address",
            &mac_text(TX_MAC),
            "type",
            "veth",
            "peer",
            "name",
            &t.rx_if,
            "address",
            &mac_text(RX_MAC),
            "netns",
            &t.rx_ns,
        ])?;
        for (ns, ifname, addr, peer_ip, peer_mac) in [
            (
                &t.tx_ns,
                &t.tx_if,
                "198.51.100.2/24",
                "198.51.100.1",
                RX_MAC,
            ),
            (
                &t.rx_ns,
                &t.rx_if,
                "198.51.100.1/24",
                "198.51.100.2",
                TX_MAC,
            ),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", ifname])?;
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
            // Static neighbours: no ARP on the link during a run.
            ip(&[
                "-n",
                ns,
                "neigh",
                "replace",
                peer_ip,
                "lladdr",
                &mac_text(peer_mac),
                "dev",
                ifname,
                "nud",
                "permanent",
            ])?;
        }
        Ok(t)
    }

    /// The rx counters of the receiving veth: (packets, bytes, dropped).
    fn rx_stats(&self) -> Result<(u64, u64, u64)> {
        let s = link_stats(&self.rx_ns, &self.rx_if)?;
        Ok((
            s["rx"]["packets"].as_u64().unwrap_or(0),
            s["rx"]["bytes"].as_u64().unwrap_or(0),
            s["rx"]["dropped"].as_u64().unwrap_or(0),
        ))
    }

    /// Frames the sending veth dropped (its peer's queue was full).
    fn tx_dropped(&self) -> Result<u64> {
        Ok(link_stats(&self.tx_ns, &self.tx_if)?["tx"]["dropped"]
            .as_u64()
            .unwrap_or(0))
    }

    /// Is an XDP program attached to the receiving veth?
    fn rx_has_xdp(&self) -> Result<bool> {
        let out = ip(&["-n", &self.rx_ns, "-j", "link", "show", "dev", &self.rx_if])?;
        let v: Value = serde_json::from_str(&out).context("parsing `ip -j link`")?;
        Ok(v[0].get("xdp").is_some())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.created.drain(..) {
            let ok = Command::new("ip")
                .args(["netns", "del", &ns])
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                eprintln!("xtask: warning: could not delete network namespace {ns}");
            }
        }
    }
}

fn link_stats(ns: &str, ifname: &str) -> Result<Value> {
    let out = ip(&["-n", ns, "-s", "-j", "link", "show", "dev", ifname])?;
    let v: Value = serde_json::from_str(&out).context("parsing `ip -s -j link`")?;
    Ok(v[0]["stats64"].clone())
}

/// The AF_PACKET sender, its socket opened inside the tx namespace.
struct Generator {
    fd: OwnedFd,
    frames: Vec<[u8; FRAME_LEN]>,
}

/// What one burst of the generator did.
#[derive(Clone, Debug)]
struct Sent {
    /// Frames the kernel accepted (handed to the veth without a drop).
    accepted: u64,
    /// `sendmmsg` calls that failed with ENOBUFS (a dropped frame, resent).
    enobufs: u64,
    per_flow: Vec<u64>,
    elapsed: Duration,
}

impl Generator {
    fn open(topo: &Topology) -> Result<Self> {
        let path = format!("/run/netns/{}", topo.tx_ns);
        let ifname = topo.tx_if.clone();
        let fd = thread::spawn(move || -> Result<OwnedFd> {
            let ns = fs::File::open(&path).with_context(|| format!("cannot open {path}"))?;
            // SAFETY: setns on a valid namespace fd; it moves only this
            // thread, which ends right after opening the socket.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns {path}: {}", std::io::Error::last_os_error());
            }
            let cname = std::ffi::CString::new(ifname.clone())?;
            // SAFETY: a valid C string.
            let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
            ensure!(ifindex != 0, "no interface {ifname} in {path}");
            // Protocol 0: the socket only sends, it receives nothing (no
            // copy of every frame to it).
            // SAFETY: plain socket(2) call.
            let raw =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            if raw < 0 {
                bail!("socket(AF_PACKET): {}", std::io::Error::last_os_error());
            }
            // SAFETY: raw is a fresh fd that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: sockaddr_ll is plain data; zero is a valid start.
            let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex.cast_signed();
            // SAFETY: sll is a valid sockaddr_ll of the size given.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&raw const sll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc != 0 {
                bail!(
                    "bind(AF_PACKET, {ifname}): {}",
                    std::io::Error::last_os_error()
                );
            }
            Ok(fd)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))??;
        let frames = (0..FLOWS)
            .map(|i| udp_frame(SPORT_BASE + i as u16))
            .collect();
        Ok(Generator { fd, frames })
    }

    /// Pushes `n` frames as fast as the kernel takes them, cycling through
    /// the flows; a frame the veth drops is sent again.
    fn send(&self, n: u64) -> Result<Sent> {
        let mut iovs: Vec<libc::iovec> = (0..BATCH)
            .map(|k| libc::iovec {
                iov_base: self.frames[k % FLOWS].as_ptr() as *mut libc::c_void,
                iov_len: FRAME_LEN,
            })
            .collect();
        // SAFETY: mmsghdr is plain data; zeroed is valid (no name, no
        // control data).
        let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
            .map(|_| unsafe { mem::zeroed::<libc::mmsghdr>() })
            .collect();
        for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
        }
        let mut sent = Sent {
            accepted: 0,
            enobufs: 0,
            per_flow: vec![0; FLOWS],
            elapsed: Duration::ZERO,
        };
        let start = Instant::now();
        let mut pos = 0usize; // next message of the batch to send
        while sent.accepted < n {
            check_interrupted()?;
            let want = ((n - sent.accepted) as usize).min(BATCH - pos);
            // SAFETY: msgs[pos..pos + want] are initialised headers whose
            // iovecs point at frames that outlive the call.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs.as_mut_ptr().add(pos),
                    want as u32,
                    0,
                )
            };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ENOBUFS | libc::EAGAIN) => {
                        sent.enobufs += 1;
                        continue;
                    }
                    Some(libc::EINTR) => {
                        check_interrupted()?;
                        continue;
                    }
                    _ => bail!("sendmmsg: {e}"),
                }
            }
            for k in pos..pos + r as usize {
                sent.per_flow[k % FLOWS] += 1;
            }
            sent.accepted += r as u64;
            pos = (pos + r as usize) % BATCH;
        }
        sent.elapsed = start.elapsed();
        Ok(sent)
    }
}

/// A 60-byte IPv4/UDP frame 198.51.100.2:`sport` -> 198.51.100.1:9000.
fn udp_frame(sport: u16) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&RX_MAC);
    f[6..12].copy_from_slice(&TX_MAC);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let total_len = (FRAME_LEN - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total_len.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&TX_IP);
    ip[16..20].copy_from_slice(&RX_IP);
    let mut sum: u32 = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&DPORT.to_be_bytes());
    udp[4..6].copy_from_slice(&(total_len - 20).to_be_bytes());
    // UDP checksum 0: none (allowed for IPv4).
    f
}

/// A running netmon; killed on drop if it was not stopped.
struct Monitor {
    child: Child,
    stdout: Option<thread::JoinHandle<Vec<String>>>,
    stderr_lines: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    mode: String,
}

/// What netmon's summary said.
#[derive(Clone, Debug)]
struct NetmonTotals {
    packets: u64,
    bytes: u64,
    /// Packets per flow of the generator's flows (by source port index).
    per_flow: Vec<u64>,
    mode: String,
}

impl Monitor {
    fn start(netmon: &Path, topo: &Topology, extra: &[&str]) -> Result<Self> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &topo.rx_ns])
            .arg(netmon)
            .args(["--iface", &topo.rx_if, "--format", "json", "--top"])
            .arg((FLOWS + 8).to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", netmon.display()))?;
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let stdout =
            thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).collect());
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut m = Monitor {
            child,
            stdout: Some(stdout),
            stderr_lines: rx,
            stderr_seen: Vec::new(),
            mode: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            check_interrupted()?;
            match m.stderr_lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let attached = line.contains("counting on");
                    if attached {
                        line.split(" in ")
                            .nth(1)
                            .and_then(|s| s.split(" XDP mode").next())
                            .unwrap_or("?")
                            .clone_into(&mut m.mode);
                    }
                    m.stderr_seen.push(line);
                    if attached {
                        return Ok(m);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = m.child.try_wait()? {
                        bail!(
                            "netmon exited ({status}) before attaching: {}",
                            m.stderr_seen.join(" / ")
                        );
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "netmon did not attach within 30 s: {}",
                            m.stderr_seen.join(" / ")
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = m.child.wait()?;
                    bail!(
                        "netmon exited ({status}) before attaching: {}",
                        m.stderr_seen.join(" / ")
                    );
                }
            }
        }
    }

    /// SIGINT, then the summary line.
    fn stop(mut self) -> Result<NetmonTotals> {
        let pid: libc::pid_t = self.child.id().cast_signed();
        // SAFETY: kill(2) on our own child, which has not been reaped.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                bail!("netmon did not stop within 15 s of SIGINT");
            }
            thread::sleep(Duration::from_millis(20));
        };
        let lines = self
            .stdout
            .take()
            .expect("joined once")
            .join()
            .map_err(|_| anyhow::anyhow!("stdout reader panicked"))?;
        self.stderr_seen.extend(self.stderr_lines.try_iter());
        ensure!(
            status.success(),
            "netmon exited with {status}: {}",
            self.stderr_seen.join(" / ")
        );
        let summary = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["type"] == "summary")
            .context("netmon printed no summary line")?;
        let packets = summary["packets"]
            .as_u64()
            .context("summary without packets")?;
        let bytes = summary["bytes"].as_u64().context("summary without bytes")?;
        let mut per_flow = vec![0; FLOWS];
        for f in summary["flows"].as_array().into_iter().flatten() {
            let sport = f["sport"].as_u64().unwrap_or(0);
            let i = sport.wrapping_sub(u64::from(SPORT_BASE)) as usize;
            if f["src"] == "198.51.100.2" && f["dport"] == DPORT && i < FLOWS {
                per_flow[i] += f["packets"].as_u64().unwrap_or(0);
            }
        }
        Ok(NetmonTotals {
            packets,
            bytes,
            per_flow,
            mode: self.mode.clone(),
        })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One run: `PACKETS` frames, with or without netmon.
#[derive(Clone, Debug)]
struct RunResult {
    sent: Sent,
    rx_packets: u64,
    rx_bytes: u64,
    rx_dropped: u64,
    tx_dropped: u64,
    pps: f64,
    netmon: Option<NetmonTotals>,
}

impl RunResult {
    /// netmon's totals equal what arrived (and what the generator sent),
    /// flow by flow.
    fn exact(&self) -> bool {
        self.netmon.as_ref().is_some_and(|n| {
            n.packets == self.rx_packets
                && n.packets == self.sent.accepted
                && n.bytes == self.sent.accepted * FRAME_LEN as u64
                && n.per_flow == self.sent.per_flow
        })
    }
}

fn run_once(
    topo: &Topology,
    generator: &Generator,
    config: Config,
    netmon: &Path,
    object: &[u8],
) -> Result<RunResult> {
    let mut floor = None;
    let mut monitor = None;
    match config {
        Config::Without => {}
        Config::Netmon => monitor = Some(Monitor::start(netmon, topo, &[])?),
        Config::NetmonGeneric => {
            monitor = Some(Monitor::start(netmon, topo, &["--xdp-mode", "generic"])?);
        }
        Config::XdpFloor => floor = Some(FloorAttachment::attach(topo, object)?),
    }
    let attached = config != Config::Without;
    ensure!(
        topo.rx_has_xdp()? == attached,
        "an XDP program is {} on {} in the {} run",
        if attached { "missing" } else { "attached" },
        topo.rx_if,
        config.name()
    );
    let (p0, b0, d0) = topo.rx_stats()?;
    let t0 = topo.tx_dropped()?;
    let sent = generator.send(PACKETS)?;
    // Let the receive side finish (it runs in softirq, mostly inline).
    let mut last = topo.rx_stats()?;
    loop {
        thread::sleep(Duration::from_millis(50));
        let now = topo.rx_stats()?;
        if now == last {
            break;
        }
        last = now;
    }
    let (p1, b1, d1) = last;
    let t1 = topo.tx_dropped()?;
    let totals = monitor.map(Monitor::stop).transpose()?;
    drop(floor);
    let rx_packets = p1 - p0;
    Ok(RunResult {
        pps: rx_packets as f64 / sent.elapsed.as_secs_f64(),
        sent,
        rx_packets,
        rx_bytes: b1 - b0,
        rx_dropped: d1 - d0,
        tx_dropped: t1 - t0,
        netmon: totals,
    })
}

struct Report {
    /// Runs per configuration, in [`CONFIGS`] order.
    results: Vec<Vec<RunResult>>,
}

impl Report {
    fn runs(&self, c: Config) -> &[RunResult] {
        &self.results[c.index()]
    }
    fn rates(&self, c: Config) -> Vec<f64> {
        self.runs(c).iter().map(|r| r.pps).collect()
    }
    fn rate(&self, c: Config) -> f64 {
        median(&self.rates(c))
    }
    /// Median rate of `c` over the median rate without XDP.
    fn ratio(&self, c: Config) -> f64 {
        self.rate(c) / self.rate(Config::Without)
    }
    /// Per-round ratios of `c` to the run without in the same round.
    fn round_ratios(&self, c: Config) -> Vec<f64> {
        self.runs(c)
            .iter()
            .zip(self.runs(Config::Without))
            .map(|(w, o)| w.pps / o.pps)
            .collect()
    }
    fn netmon_runs(&self) -> impl Iterator<Item = (Config, usize, &RunResult)> {
        [Config::Netmon, Config::NetmonGeneric]
            .into_iter()
            .flat_map(move |c| self.runs(c).iter().enumerate().map(move |(i, r)| (c, i, r)))
    }
    fn all_exact(&self) -> bool {
        self.netmon_runs().all(|(_, _, r)| r.exact())
    }
    fn mode(&self, c: Config) -> String {
        self.runs(c)
            .first()
            .and_then(|r| r.netmon.as_ref())
            .map_or_else(|| "?".to_owned(), |n| n.mode.clone())
    }

    fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nveth in situ: {PACKETS} frames of {FRAME_LEN} bytes per run, {FLOWS} UDP flows, \
             AF_PACKET sendmmsg x{BATCH}; received packets per second at the receiving veth"
        );
        let _ = write!(s, "{:<8}", "round");
        for c in CONFIGS {
            let _ = write!(s, " {:>15}", c.name());
        }
        let _ = writeln!(s, "   netmon/without");
        for round in 0..ROUNDS {
            let _ = write!(s, "{:<8}", round + 1);
            for c in CONFIGS {
                let _ = write!(s, " {:>15.0}", self.runs(c)[round].pps);
            }
            let _ = writeln!(s, "   {:.3}", self.round_ratios(Config::Netmon)[round]);
        }
        let _ = write!(s, "{:<8}", "median");
        for c in CONFIGS {
            let _ = write!(s, " {:>15.0}", self.rate(c));
        }
        let _ = writeln!(s);
        let _ = write!(s, "{:<8}", "best");
        for c in CONFIGS {
            let best = self.rates(c).into_iter().fold(0.0, f64::max);
            let _ = write!(s, " {best:>15.0}");
        }
        let _ = writeln!(s, "   (fastest run: least disturbed by other load)");
        let _ = write!(s, "{:<8}", "ratio");
        for c in CONFIGS {
            let _ = write!(s, " {:>15.3}", self.ratio(c));
        }
        let _ = writeln!(s, "   (median rate / median rate without)");
        let ratio = self.ratio(Config::Netmon);
        let _ = writeln!(
            s,
            "netmon ({} mode) / without: {:.3} (median of per-round ratios {:.3}); target >= \
             {TARGET_RATIO}: {}",
            self.mode(Config::Netmon),
            ratio,
            median(&self.round_ratios(Config::Netmon)),
            if ratio >= TARGET_RATIO {
                "met"
            } else {
                "MISSED"
            }
        );
        let _ = writeln!(
            s,
            "netmon / xdp_pass_only (both native): {:.3}; netmon_generic ({} mode) / without: {:.3}",
            self.rate(Config::Netmon) / self.rate(Config::XdpFloor),
            self.mode(Config::NetmonGeneric),
            self.ratio(Config::NetmonGeneric)
        );
        let _ = writeln!(
            s,
            "\nexactness (ground truth: the receiving veth's rx_packets; bytes: frames accepted \
             by the kernel x {FRAME_LEN})"
        );
        let _ = writeln!(
            s,
            "{:<16} {:>10} {:>10} {:>10} {:>12} {:>12} {:>10} {:>6} {:>9}  exact",
            "run",
            "sent",
            "arrived",
            "netmon",
            "sent bytes",
            "netmon bytes",
            "veth rxB",
            "drops",
            "flows ok"
        );
        for (c, i, r) in self.netmon_runs() {
            let n = r.netmon.as_ref();
            let _ = writeln!(
                s,
                "{:<16} {:>10} {:>10} {:>10} {:>12} {:>12} {:>10} {:>6} {:>9}  {}",
                format!("{} #{}", c.name(), i + 1),
                r.sent.accepted,
                r.rx_packets,
                n.map_or(0, |n| n.packets),
                r.sent.accepted * FRAME_LEN as u64,
                n.map_or(0, |n| n.bytes),
                r.rx_bytes,
                r.tx_dropped + r.rx_dropped,
                n.is_some_and(|n| n.per_flow == r.sent.per_flow),
                if r.exact() { "yes" } else { "NO" }
            );
        }
        let _ = writeln!(
            s,
            "(drops = frames the veth dropped, which the generator sent again; veth rxB = the \
             receiving veth's rx_bytes, which in native XDP mode counts frames without their \
             14-byte Ethernet header)"
        );
        s
    }

    fn json(&self, elapsed: Duration) -> Value {
        let run_json = |r: &RunResult| {
            let mut v = json!({
                "pps": r.pps,
                "sent": r.sent.accepted,
                "enobufs_retries": r.sent.enobufs,
                "elapsed_s": r.sent.elapsed.as_secs_f64(),
                "rx_packets": r.rx_packets,
                "rx_bytes": r.rx_bytes,
                "rx_dropped": r.rx_dropped,
                "tx_dropped": r.tx_dropped,
            });
            if let Some(n) = &r.netmon {
                v["netmon_packets"] = json!(n.packets);
                v["netmon_bytes"] = json!(n.bytes);
                v["sent_bytes"] = json!(r.sent.accepted * FRAME_LEN as u64);
                v["per_flow_exact"] = json!(n.per_flow == r.sent.per_flow);
                v["exact"] = json!(r.exact());
                v["xdp_mode"] = json!(n.mode);
            }
            v
        };
        let configs: serde_json::Map<String, Value> = CONFIGS
            .iter()
            .map(|&c| {
                (
                    c.name().to_owned(),
                    json!({
                        "rate_pps": self.rate(c),
                        "best_pps": self.rates(c).into_iter().fold(0.0, f64::max),
                        "ratio_to_without": self.ratio(c),
                        "round_ratios": self.round_ratios(c),
                        "runs": self.runs(c).iter().map(run_json).collect::<Vec<_>>(),
                    }),
                )
            })
            .collect();
        json!({
            "packets_per_run": PACKETS,
            "frame_len": FRAME_LEN,
            "flows": FLOWS,
            "rounds": ROUNDS,
            "xdp_mode": self.mode(Config::Netmon),
            "rate_without_pps": self.rate(Config::Without),
            "rate_with_pps": self.rate(Config::Netmon),
            "ratio": self.ratio(Config::Netmon),
            "target_ratio": TARGET_RATIO,
            "target_met": self.ratio(Config::Netmon) >= TARGET_RATIO,
            "netmon_over_xdp_pass_only": self.rate(Config::Netmon) / self.rate(Config::XdpFloor),
            "all_exact": self.all_exact(),
            "ground_truth": "packets: rx_packets of the receiving veth (ip -s link, read after \
                netmon attached and after the traffic settled), cross-checked with the \
                generator's count of frames the kernel accepted; bytes: accepted frames x \
                frame_len (the veth's rx_bytes omits the Ethernet header in native XDP mode)",
            "method": format!(
                "AF_PACKET SOCK_RAW sendmmsg (batches of {BATCH}) from the tx namespace to a \
                 veth pair; rate = frames arrived at the receiving veth / generator wall time; \
                 configurations {} alternate, order rotating each round, {ROUNDS} rounds; medians",
                CONFIGS.map(Config::name).join(", ")
            ),
            "configs": configs,
            "machine": crate::bench_xdp::machine(),
            "elapsed_s": elapsed.as_secs_f64(),
        })
    }
}
