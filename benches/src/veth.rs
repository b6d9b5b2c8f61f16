//! `cargo xtask bench veth`: netmon in situ on a veth pair.
//!
//! Two network namespaces created here (and always removed, by a guard),
//! joined by a veth pair. The generator is the kernel's own: a thread inside
//! the *tx* namespace runs the object's `netmon_bench_tx` program (it
//! returns XDP_TX) with `BPF_PROG_TEST_RUN` in live-frames mode, the xdp_md
//! context naming the tx veth as the ingress device (the kernel resolves it
//! in the caller's namespace). The kernel turns each XDP_TX into a redirect
//! to that device's `ndo_xdp_xmit`, which on a veth puts the frame, an
//! `xdp_frame` in a page-pool page with full XDP headroom, straight into the
//! ring of the peer: the receiving veth in the *rx* namespace, whose NAPI
//! poll runs its XDP program (if any) on the frame natively, without the
//! skb copy that frames from a packet socket need, then builds an skb and
//! hands it to the stack (the processing runs inline, in the softirq the
//! test run's batches raise on the same CPU). The frames are 60-byte
//! IPv4/UDP frames 198.51.100.2 -> 198.51.100.1:9000 of [`FLOWS`] source
//! ports; a test-run call repeats one frame, so each flow gets its own
//! call. The receiving veth has GRO on: that is what enables its NAPI, and
//! without NAPI a veth with no XDP program refuses redirected frames (the
//! kernel frees them without counting them anywhere; the bench then fails).
//!
//! Four configurations ([`CONFIGS`]: nothing attached, netmon as users run
//! it, the object's XDP_PASS-only program, netmon in generic mode) run once
//! per round, [`ROUNDS`] rounds, the order rotating every round; rates are
//! medians, and the target compares netmon with nothing attached. The rate
//! is the frames that arrived at the receiving veth per second of wall time
//! spent inside the test-run calls. The XDP_PASS-only run shows what
//! running any XDP program on the frames costs, so that netmon's own share
//! can be told apart. Generic mode still makes sense with `xdp_frames`:
//! veth builds an skb from each frame and the generic hook runs on that skb
//! in `__netif_receive_skb_core`.
//!
//! Ground truth, all outside netmon, checked in every run: the tx veth's
//! ethtool counters, read around every test-run call, split the frames run
//! into frames the receiving veth's ring took (`tx_queue_0_xdp_xmit`) and
//! frames it refused when full (`tx_queue_0_xdp_xmit_errors`); the two must
//! add up to the frames run, the frames taken must equal the receiving
//! veth's `rx_packets` (`ip -s link`), and netmon's summary (packets,
//! bytes, every flow) must equal them. After the timed rounds, every
//! configuration runs once more with nftables counters on the receiving
//! veth's netdev ingress hook (all frames, and per flow) as a further
//! witness; those check runs are not timed, because the counters cost the
//! receive path about as much as netmon does.

use crate::util::{median, write_report};
use netmon_tests::{Netmon, Netns, join_netns, unique};
use std::{
    ffi::CString,
    fmt::Write as _,
    fs,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use netmon::sys::{
    self, AttachedMode, Link, Object,
    object::{TestRunAttrs, TestRunOptions},
};
use netmon_common::bench::{
    FLOOR_PROGRAM as XDP_FLOOR_PROGRAM, TX_PROGRAM as XDP_BENCH_TX_PROGRAM,
};
use netmon_tests::frames;
use serde_json::{Value, json};

/// Frames per run (each run with netmon attached gets this many).
const PACKETS: u64 = 1_000_000;
/// Rounds; each runs every configuration once.
const ROUNDS: usize = 9;
/// Distinct flows (UDP source ports).
const FLOWS: usize = 16;
/// Test-run calls per flow and run (each call has a fixed cost, under 1 %
/// of a call of 62,500 frames); consecutive calls use different flows.
const CALLS_PER_FLOW: u64 = 1;
/// Frames per test-run call (its `repeat`).
const REPEAT: u64 = PACKETS / (FLOWS as u64 * CALLS_PER_FLOW);
const _: () = assert!(REPEAT * FLOWS as u64 * CALLS_PER_FLOW == PACKETS);
/// Live-frames batch: frames the kernel runs through the program and
/// flushes to the veth before the receive softirq gets to run (the kernel's
/// default, NAPI_POLL_WEIGHT; the peer's ring holds 256).
const BATCH: u32 = 64;
/// Frame length without FCS: the minimum Ethernet frame.
const FRAME_LEN: usize = 60;
/// Target: rate with netmon >= this share of the rate without.
const TARGET_RATIO: f64 = 0.95;

const TX_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x02];
const RX_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
const TX_IP: [u8; 4] = [198, 51, 100, 2];
const RX_IP: [u8; 4] = [198, 51, 100, 1];
const SPORT_BASE: u16 = 40_000;
const DPORT: u16 = 9000;
/// The nftables table (netdev family) that counts on the receiving veth.
const NFT_TABLE: &str = "nmbench";

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

pub fn run(ctx: &crate::Ctx) -> Result<()> {
    let netmon = &ctx.netmon;
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
    // The bench object `cargo xtask bench` built: the generator's program
    // and the XDP_PASS-only program.
    let object = &ctx.bench_object;
    let object_bytes = fs::read(object)
        .with_context(|| format!("cannot read the bench object {}", object.display()))?;
    let mut topo = Topology::create()?;
    let generator = Generator::start(&topo, object_bytes.clone())?;
    crate::step(&format!(
        "veth in situ: {ROUNDS} rounds of {PACKETS} frames per configuration ({}) on {} \
         (namespaces {} -> {}), live-frames test run of {XDP_BENCH_TX_PROGRAM}",
        CONFIGS.map(Config::name).join(", "),
        topo.rx_if,
        topo.tx.name,
        topo.rx.name
    ));
    // Warm-up: caches, page pools, the neighbour entries.
    generator.send(REPEAT / 2)?;

    let mut results: Vec<Vec<RunResult>> = vec![Vec::with_capacity(ROUNDS); CONFIGS.len()];
    for round in 0..ROUNDS {
        // The order rotates every round: no configuration always runs first.
        for k in 0..CONFIGS.len() {
            let i = (k + round) % CONFIGS.len();
            check_interrupted()?;
            let r = run_once(&topo, &generator, CONFIGS[i], netmon, &object_bytes)?;
            log_run(&format!("round {}", round + 1), CONFIGS[i], &r);
            results[i].push(r);
        }
    }
    // Check runs, not timed: every configuration once more with the
    // nftables counters as a further witness of what arrived.
    topo.add_nft_counters()?;
    let mut checks = Vec::with_capacity(CONFIGS.len());
    for c in CONFIGS {
        check_interrupted()?;
        let r = run_once(&topo, &generator, c, netmon, &object_bytes)?;
        log_run("check", c, &r);
        checks.push((c, r));
    }
    drop(generator);
    drop(topo);

    let report = Report { results, checks };
    print!("{}", report.table());
    let json = report.json(started.elapsed());
    crate::util::print_machine(&json["machine"]);
    let path = write_report(&ctx.out_dir, "veth.json", &json)?;
    println!("written: {}", path.display());
    if report.ratio(Config::Netmon) < TARGET_RATIO {
        println!(
            "TARGET MISSED: the rate with netmon is {:.1} % of the rate without, target >= {:.0} %",
            report.ratio(Config::Netmon) * 100.0,
            TARGET_RATIO * 100.0
        );
    }
    if !report.all_delivered() {
        bail!("the kernel's counters of what arrived disagree in some runs (see the table)");
    }
    if !report.all_exact() {
        bail!("netmon's totals differ from what arrived (see the table)");
    }
    Ok(())
}

fn log_run(what: &str, c: Config, r: &RunResult) {
    eprintln!(
        "bench:   {what:<8} {:<14} {:>9.0} pps (in-loop {:>9.0}), arrived {}{}{}",
        c.name(),
        r.pps,
        r.loop_pps(),
        r.rx_packets,
        if r.delivered() {
            String::new()
        } else {
            format!(
                " (COUNTERS DISAGREE: ring took {}, nft {:?})",
                r.sent.accepted,
                r.nft.as_ref().map(|n| n.0)
            )
        },
        r.netmon.as_ref().map_or_else(String::new, |n| format!(
            ", netmon {} packets / {} bytes: {}",
            n.packets,
            n.bytes,
            if r.exact() { "exact" } else { "MISMATCH" }
        ))
    );
}

/// What is on the receiving veth during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Config {
    /// Nothing: the baseline.
    Without,
    /// netmon as users run it (`--xdp-mode auto`: native on veth).
    Netmon,
    /// The object's empty program (`netmon_floor`, returns XDP_PASS) in
    /// native mode, attached by the bench: what running any XDP program on
    /// the frames costs, netmon's work aside.
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

/// The bench object's `netmon_floor` program attached to the receiving
/// veth in native mode (from a thread inside the rx namespace). Dropping it
/// closes the bpf_link, which detaches the program.
struct FloorAttachment {
    /// Declared first: the link goes before the program.
    _link: Link,
    _object: Object,
}

impl FloorAttachment {
    fn attach(topo: &Topology, object: &[u8]) -> Result<Self> {
        thread::scope(|s| {
            s.spawn(|| -> Result<FloorAttachment> {
                topo.rx.join_this_thread()?;
                let mut object = Object::load(object).context("loading the bench object failed")?;
                object.load_xdp(XDP_FLOOR_PROGRAM)?;
                let ifindex = sys::ifindex(&topo.rx_if)?;
                let link = object
                    .attach_xdp(
                        XDP_FLOOR_PROGRAM,
                        &topo.rx_if,
                        ifindex,
                        AttachedMode::Native,
                    )
                    .with_context(|| format!("attaching {XDP_FLOOR_PROGRAM} to {}", topo.rx_if))?;
                Ok(FloorAttachment {
                    _link: link,
                    _object: object,
                })
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
        })
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

/// Runs `args` inside the namespace `ns` (`ip netns exec`).
fn in_ns(ns: &str, args: &[&str]) -> Result<String> {
    sh(Command::new("ip").args(["netns", "exec", ns]).args(args))
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The two namespaces and the veth pair between them (the test kit's
/// guards: dropping the topology deletes both namespaces, which removes the
/// veth pair, any XDP program on it and the nftables table).
struct Topology {
    tx_if: String,
    rx_if: String,
    /// A device in the tx namespace, down, that holds the generator's
    /// program (see [`GeneratorState::open`]).
    pin_if: String,
    /// Are the nftables counters loaded?
    nft: bool,
    // Namespaces last: dropped after everything inside them.
    tx: Netns,
    rx: Netns,
}

impl Topology {
    fn create() -> Result<Self> {
        let t = Topology {
            tx_if: unique("nmbt"),
            rx_if: unique("nmbr"),
            pin_if: unique("nmbd"),
            nft: false,
            tx: Netns::new("nmbtx"),
            rx: Netns::new("nmbrx"),
        };
        for ns in [&t.tx, &t.rx] {
            // No IPv6 on the new links: no router solicitations, MLD or DAD
            // frames to disturb the counts.
            ns.sh(
                "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
            );
        }
        ip(&[
            "-n",
            &t.tx.name,
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
            &t.rx.name,
        ])?;
        for (ns, ifname, addr, peer_ip, peer_mac) in [
            (
                &t.tx.name,
                &t.tx_if,
                "198.51.100.2/24",
                "198.51.100.1",
                RX_MAC,
            ),
            (
                &t.rx.name,
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
        // The pin device: a second veth pair inside the tx namespace, left
        // down (the `dummy` driver is not always there).
        ip(&[
            "-n",
            &t.tx.name,
            "link",
            "add",
            &t.pin_if,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{}p", t.pin_if),
        ])?;
        // GRO on the receiving veth enables its NAPI (and its xdp_frame
        // ring) when no XDP program is attached; without it the "without"
        // run would get nothing (the tx veth's ndo_xdp_xmit fails).
        in_ns(&t.rx.name, &["ethtool", "-K", &t.rx_if, "gro", "on"])?;
        Ok(t)
    }

    /// Loads the nftables counters: one for every frame on the receiving
    /// veth's ingress hook and one per flow (set elements). They cost the
    /// receive path about as much as netmon does, so only the check runs
    /// after the timed rounds have them.
    fn add_nft_counters(&mut self) -> Result<()> {
        let ports = (0..FLOWS)
            .map(|i| (SPORT_BASE + i as u16).to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let ruleset = format!(
            "table netdev {NFT_TABLE} {{\n\
             \tset flows {{ type inet_service; counter; elements = {{ {ports} }} }}\n\
             \tchain ingress {{\n\
             \t\ttype filter hook ingress device \"{}\" priority 0; policy accept;\n\
             \t\tcounter\n\
             \t\tip saddr {} udp sport @flows\n\
             \t}}\n\
             }}\n",
            self.rx_if,
            std::net::Ipv4Addr::from(TX_IP)
        );
        let path = std::env::temp_dir().join(format!("{}.nft", self.rx.name));
        fs::write(&path, ruleset).with_context(|| format!("cannot write {}", path.display()))?;
        let loaded = in_ns(&self.rx.name, &["nft", "-f", &path.to_string_lossy()]);
        let _ = fs::remove_file(&path);
        loaded?;
        self.nft = true;
        Ok(())
    }

    /// The rx counters of the receiving veth: (packets, bytes, dropped).
    fn rx_stats(&self) -> Result<(u64, u64, u64)> {
        let out = ip(&[
            "-n",
            &self.rx.name,
            "-s",
            "-j",
            "link",
            "show",
            "dev",
            &self.rx_if,
        ])?;
        let v: Value = serde_json::from_str(&out).context("parsing `ip -s -j link`")?;
        let rx = &v[0]["stats64"]["rx"];
        Ok((
            rx["packets"].as_u64().unwrap_or(0),
            rx["bytes"].as_u64().unwrap_or(0),
            rx["dropped"].as_u64().unwrap_or(0),
        ))
    }

    /// The nftables counters, once loaded: (all frames, frames per flow).
    fn nft_counts(&self) -> Result<Option<(u64, Vec<u64>)>> {
        if !self.nft {
            return Ok(None);
        }
        let out = in_ns(
            &self.rx.name,
            &["nft", "-j", "list", "table", "netdev", NFT_TABLE],
        )?;
        let v: Value = serde_json::from_str(&out).context("parsing `nft -j list table`")?;
        let mut total = None;
        let mut per_flow = vec![0; FLOWS];
        for item in v["nftables"].as_array().into_iter().flatten() {
            if let Some(rule) = item.get("rule") {
                for e in rule["expr"].as_array().into_iter().flatten() {
                    if let Some(p) = e["counter"]["packets"].as_u64() {
                        total = Some(p);
                    }
                }
            }
            if let Some(set) = item.get("set") {
                for e in set["elem"].as_array().into_iter().flatten() {
                    let port = e["elem"]["val"].as_u64().unwrap_or(0);
                    let i = port.wrapping_sub(u64::from(SPORT_BASE)) as usize;
                    if i < FLOWS {
                        per_flow[i] = e["elem"]["counter"]["packets"].as_u64().unwrap_or(0);
                    }
                }
            }
        }
        Ok(Some((
            total.context("no counter in the nftables table")?,
            per_flow,
        )))
    }

    /// Is an XDP program attached to the receiving veth?
    fn rx_has_xdp(&self) -> Result<bool> {
        let out = ip(&[
            "-n",
            &self.rx.name,
            "-j",
            "link",
            "show",
            "dev",
            &self.rx_if,
        ])?;
        let v: Value = serde_json::from_str(&out).context("parsing `ip -j link`")?;
        Ok(v[0].get("xdp").is_some())
    }
}

/// `SIOCETHTOOL` (linux/sockios.h); not in the libc crate.
const SIOCETHTOOL: libc::Ioctl = 0x8946;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETH_SS_STATS: u32 = 1;
const ETH_GSTRING_LEN: usize = 32;

/// `struct ifreq` with the `ifr_data` member of its union.
#[repr(C)]
struct IfreqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// A few of an interface's `ethtool -S` counters, read with the
/// `SIOCETHTOOL` ioctl (microseconds, not a process per read). The socket
/// is opened in the caller's network namespace, where the name resolves.
struct EthtoolStats {
    sock: OwnedFd,
    name: [u8; libc::IFNAMSIZ],
    n_stats: usize,
    /// Indices of the wanted counters.
    picks: Vec<usize>,
}

impl EthtoolStats {
    fn open(ifname: &str, wanted: &[&str]) -> Result<Self> {
        // SAFETY: plain socket(2) call.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let mut name = [0u8; libc::IFNAMSIZ];
        ensure!(
            ifname.len() < name.len(),
            "interface name {ifname} too long"
        );
        name[..ifname.len()].copy_from_slice(ifname.as_bytes());
        let mut s = EthtoolStats {
            // SAFETY: raw is a fresh fd that nothing else owns.
            sock: unsafe { OwnedFd::from_raw_fd(raw) },
            name,
            n_stats: 0,
            picks: Vec::new(),
        };
        // struct ethtool_sset_info: cmd, reserved, sset_mask, data[1].
        let mut info = [0u64; 3];
        info[0] = u64::from(ETHTOOL_GSSET_INFO);
        info[1] = 1 << ETH_SS_STATS;
        s.ioctl(info.as_mut_ptr().cast())?;
        s.n_stats = (info[2] & 0xffff_ffff) as usize;
        // struct ethtool_gstrings: cmd, string_set, len, data[len * 32].
        let mut strings = vec![0u32; 3 + s.n_stats * ETH_GSTRING_LEN / 4];
        strings[0] = ETHTOOL_GSTRINGS;
        strings[1] = ETH_SS_STATS;
        strings[2] = s.n_stats as u32;
        s.ioctl(strings.as_mut_ptr().cast())?;
        let bytes: Vec<u8> = strings[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
        let names: Vec<String> = bytes
            .chunks(ETH_GSTRING_LEN)
            .map(|c| {
                let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
                String::from_utf8_lossy(&c[..end]).into_owned()
            })
            .collect();
        for w in wanted {
            let i = names
                .iter()
                .position(|n| n == w)
                .with_context(|| format!("{ifname} has no ethtool counter {w}: {names:?}"))?;
            s.picks.push(i);
        }
        Ok(s)
    }

    fn ioctl(&self, data: *mut libc::c_void) -> Result<()> {
        let mut req = IfreqData {
            name: self.name,
            data,
            _pad: [0; 16],
        };
        // SAFETY: req is a valid ifreq whose data points at a buffer of the
        // size its ethtool command header announces.
        if unsafe { libc::ioctl(self.sock.as_raw_fd(), SIOCETHTOOL, &raw mut req) } != 0 {
            bail!("SIOCETHTOOL: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The wanted counters, in the order asked for.
    fn read(&self) -> Result<Vec<u64>> {
        // struct ethtool_stats: cmd, n_stats, data[n_stats].
        let mut buf = vec![0u64; 1 + self.n_stats];
        buf[0] = u64::from(ETHTOOL_GSTATS) | ((self.n_stats as u64) << 32);
        self.ioctl(buf.as_mut_ptr().cast())?;
        Ok(self.picks.iter().map(|&i| buf[1 + i]).collect())
    }
}

/// The generator: a thread inside the tx namespace that owns the loaded
/// `netmon_bench_tx` program and runs it in live-frames mode on request.
struct Generator {
    requests: Option<mpsc::Sender<u64>>,
    results: mpsc::Receiver<Result<Sent>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// What one burst of the generator did.
#[derive(Clone, Debug, Default)]
struct Sent {
    /// Frames run through the program (the calls' `repeat`s).
    run: u64,
    /// Frames the receiving veth's ring took (tx veth's `xdp_xmit`).
    accepted: u64,
    /// Frames the ring refused, full (tx veth's `xdp_xmit_errors`).
    refused: u64,
    /// Accepted frames per flow.
    per_flow: Vec<u64>,
    /// Test-run calls.
    calls: u64,
    /// Wall time inside the test-run calls, summed.
    elapsed: Duration,
    /// The kernel's own time of its run loops (the calls' `duration`, which
    /// is per frame, times `repeat`), summed: the calls without their setup.
    loop_time: Duration,
}

/// The generator thread's state.
struct GeneratorState {
    /// The generator's attachment to the idle device (see `open`); declared
    /// before the object it belongs to.
    _pin: Link,
    object: Object,
    /// `xdp_md` with the tx veth as ingress device, queue 0.
    ctx: [u8; 24],
    /// The tx veth's `tx_queue_0_xdp_xmit` and `tx_queue_0_xdp_xmit_errors`.
    stats: EthtoolStats,
    frames: Vec<[u8; FRAME_LEN]>,
}

impl Generator {
    fn start(topo: &Topology, object: Vec<u8>) -> Result<Self> {
        let (req_tx, req_rx) = mpsc::channel::<u64>();
        let (res_tx, res_rx) = mpsc::channel::<Result<Sent>>();
        let ns = topo.tx.name.clone();
        let ifname = topo.tx_if.clone();
        let pin_if = topo.pin_if.clone();
        let thread = thread::spawn(move || {
            let state = match GeneratorState::open(&ns, &ifname, &pin_if, &object) {
                Ok(s) => {
                    let _ = res_tx.send(Ok(Sent::default()));
                    s
                }
                Err(e) => {
                    let _ = res_tx.send(Err(e));
                    return;
                }
            };
            for repeat in req_rx {
                if res_tx.send(state.send(repeat)).is_err() {
                    break;
                }
            }
        });
        let g = Generator {
            requests: Some(req_tx),
            results: res_rx,
            thread: Some(thread),
        };
        g.results
            .recv()
            .context("the generator thread ended while starting")??;
        Ok(g)
    }

    /// Runs every flow [`CALLS_PER_FLOW`] times, `repeat` frames a call.
    fn send(&self, repeat: u64) -> Result<Sent> {
        self.requests
            .as_ref()
            .expect("running")
            .send(repeat)
            .context("the generator thread ended")?;
        self.results.recv().context("the generator thread ended")?
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl GeneratorState {
    /// Enters the tx namespace (for good: this thread only generates),
    /// loads the program and opens the counters.
    fn open(ns: &str, ifname: &str, pin_if: &str, object: &[u8]) -> Result<Self> {
        join_netns(ns)?;
        let cname = CString::new(ifname)?;
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        ensure!(ifindex != 0, "no interface {ifname} in {ns}");
        let mut object = Object::load(object).context("loading the bench object failed")?;
        object
            .load_xdp(XDP_BENCH_TX_PROGRAM)
            .with_context(|| format!("loading {XDP_BENCH_TX_PROGRAM}"))?;
        // Attached (generic mode) to a device that is down and sees no
        // traffic, the program stays in the kernel's XDP dispatcher: else
        // every test-run call adds it there and removes it again, each time
        // rewriting the dispatcher and waiting for an RCU grace period,
        // which takes longer than the frames of the call.
        let pin = object
            .attach_xdp(
                XDP_BENCH_TX_PROGRAM,
                pin_if,
                sys::ifindex(pin_if)?,
                AttachedMode::Generic,
            )
            .with_context(|| format!("attaching {XDP_BENCH_TX_PROGRAM} to {pin_if}"))?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex (u32 each). The kernel resolves
        // ingress_ifindex in the calling thread's namespace: this one.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(FRAME_LEN as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let stats = EthtoolStats::open(
            ifname,
            &["tx_queue_0_xdp_xmit", "tx_queue_0_xdp_xmit_errors"],
        )?;
        let frames = (0..FLOWS)
            .map(|i| udp_frame(SPORT_BASE + i as u16))
            .collect();
        Ok(GeneratorState {
            _pin: pin,
            object,
            ctx,
            stats,
            frames,
        })
    }

    fn send(&self, repeat: u64) -> Result<Sent> {
        let mut sent = Sent {
            per_flow: vec![0; FLOWS],
            ..Sent::default()
        };
        for call in 0..FLOWS as u64 * CALLS_PER_FLOW {
            check_interrupted()?;
            let flow = (call % FLOWS as u64) as usize;
            let before = self.stats.read()?;
            let opts = TestRunOptions {
                data_in: Some(&self.frames[flow]),
                ctx_in: Some(&self.ctx),
                repeat: u32::try_from(repeat)?,
                attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                ..TestRunOptions::new()
            };
            let t = Instant::now();
            let r = self.object.test_run(XDP_BENCH_TX_PROGRAM, opts);
            sent.elapsed += t.elapsed();
            check_interrupted()?;
            let r = r.with_context(|| format!("live-frames test run of {XDP_BENCH_TX_PROGRAM}"))?;
            sent.loop_time += r.duration * u32::try_from(repeat)?;
            let after = self.stats.read()?;
            let (took, refused) = (after[0] - before[0], after[1] - before[1]);
            ensure!(
                took + refused == repeat,
                "test-run call {call}: {repeat} frames run, the receiving veth's ring took \
                 {took} and refused {refused}: {} vanished (is NAPI off on the receiving veth?)",
                repeat.saturating_sub(took + refused)
            );
            sent.run += repeat;
            sent.accepted += took;
            sent.refused += refused;
            sent.per_flow[flow] += took;
            sent.calls += 1;
        }
        Ok(sent)
    }
}

/// A 60-byte IPv4/UDP frame 198.51.100.2:`sport` -> 198.51.100.1:9000.
fn udp_frame(sport: u16) -> [u8; FRAME_LEN] {
    let eth = frames::Eth {
        dst: RX_MAC,
        src: TX_MAC,
    };
    frames::ipv4_udp(eth, (TX_IP, sport), (RX_IP, DPORT), FRAME_LEN)
        .try_into()
        .expect("FRAME_LEN bytes")
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

/// Starts netmon on the receiving veth (the test kit's guard: killed on
/// drop if the run fails) and waits until it is ready.
fn start_netmon(netmon: &Path, topo: &Topology, extra: &[&str]) -> Netmon {
    let top = (FLOWS + 8).to_string();
    let mut args = vec!["--iface", &topo.rx_if, "--format", "json", "--top", &top];
    args.extend_from_slice(extra);
    Netmon::start_bin(netmon, &topo.rx, &args)
}

/// SIGINT, then the summary.
fn stop_netmon(netmon: Netmon) -> Result<NetmonTotals> {
    let mode = netmon.xdp_mode().to_owned();
    let run = netmon.stop();
    ensure!(
        run.status.success(),
        "netmon exited with {}: {}",
        run.status,
        run.stderr.trim()
    );
    let summary = run.summary();
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
        mode,
    })
}

/// One run: [`PACKETS`] frames, with or without netmon.
#[derive(Clone, Debug)]
struct RunResult {
    sent: Sent,
    rx_packets: u64,
    rx_bytes: u64,
    rx_dropped: u64,
    /// The nftables counters' deltas (check runs only): all, per flow.
    nft: Option<(u64, Vec<u64>)>,
    pps: f64,
    netmon: Option<NetmonTotals>,
}

impl RunResult {
    /// Arrivals per second of the kernel's run loops (setup left out).
    fn loop_pps(&self) -> f64 {
        self.rx_packets as f64 / self.sent.loop_time.as_secs_f64()
    }
    /// The kernel's counters agree: what the ring took is what the veth
    /// received (and what the nftables counters saw, flow by flow, when
    /// they are there).
    fn delivered(&self) -> bool {
        self.rx_packets == self.sent.accepted
            && self.nft.as_ref().is_none_or(|(packets, per_flow)| {
                *packets == self.sent.accepted && *per_flow == self.sent.per_flow
            })
    }
    /// netmon's totals equal what arrived, flow by flow.
    fn exact(&self) -> bool {
        self.delivered()
            && self.netmon.as_ref().is_some_and(|n| {
                n.packets == self.rx_packets
                    && n.bytes == self.rx_packets * FRAME_LEN as u64
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
        Config::Netmon => monitor = Some(start_netmon(netmon, topo, &[])),
        Config::NetmonGeneric => {
            monitor = Some(start_netmon(netmon, topo, &["--xdp-mode", "generic"]));
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
    let nft0 = topo.nft_counts()?;
    let sent = generator.send(REPEAT)?;
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
    let nft1 = topo.nft_counts()?;
    let totals = monitor.map(stop_netmon).transpose()?;
    drop(floor);
    let rx_packets = p1 - p0;
    Ok(RunResult {
        pps: rx_packets as f64 / sent.elapsed.as_secs_f64(),
        sent,
        rx_packets,
        rx_bytes: b1 - b0,
        rx_dropped: d1 - d0,
        nft: nft0.zip(nft1).map(|((n0, f0), (n1, f1))| {
            (n1 - n0, f1.iter().zip(&f0).map(|(a, b)| a - b).collect())
        }),
        netmon: totals,
    })
}

struct Report {
    /// Timed runs per configuration, in [`CONFIGS`] order.
    results: Vec<Vec<RunResult>>,
    /// The check runs with the nftables counters (not in the rates).
    checks: Vec<(Config, RunResult)>,
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
    /// Median in-loop rate of `c` over that without.
    fn loop_ratio(&self, c: Config) -> f64 {
        let rate = |c| {
            median(
                &self
                    .runs(c)
                    .iter()
                    .map(RunResult::loop_pps)
                    .collect::<Vec<_>>(),
            )
        };
        rate(c) / rate(Config::Without)
    }
    /// Every run, timed and check, with a label.
    fn all_runs(&self) -> impl Iterator<Item = (String, &RunResult)> {
        CONFIGS
            .into_iter()
            .flat_map(move |c| {
                self.runs(c)
                    .iter()
                    .enumerate()
                    .map(move |(i, r)| (format!("{} #{}", c.name(), i + 1), r))
            })
            .chain(
                self.checks
                    .iter()
                    .map(|(c, r)| (format!("{} check", c.name()), r)),
            )
    }
    fn all_delivered(&self) -> bool {
        self.all_runs().all(|(_, r)| r.delivered())
    }
    fn all_exact(&self) -> bool {
        self.all_runs()
            .filter(|(_, r)| r.netmon.is_some())
            .all(|(_, r)| r.exact())
    }
    fn refused(&self) -> u64 {
        self.all_runs().map(|(_, r)| r.sent.refused).sum()
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
             live-frames test run of {XDP_BENCH_TX_PROGRAM} (XDP_TX, batch {BATCH}, {} calls \
             of {REPEAT}); frames arrived at the receiving veth per second of test-run wall time",
            FLOWS as u64 * CALLS_PER_FLOW
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
            "in-loop ratio (the kernel's own time of the test-run loops, setup left out): \
             netmon {:.3}, xdp_pass_only {:.3}, netmon_generic {:.3}",
            self.loop_ratio(Config::Netmon),
            self.loop_ratio(Config::XdpFloor),
            self.loop_ratio(Config::NetmonGeneric)
        );
        s.push_str(&self.arrivals_table());
        s
    }

    /// Every run's counters side by side, and whether they agree.
    fn arrivals_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\narrivals and exactness (ring = frames the receiving veth's ring took, the tx \
             veth's ethtool xdp_xmit; veth = its rx_packets; nft = its ingress counter, check \
             runs only; netmon bytes must be veth x {FRAME_LEN}; flows: per-flow counts of \
             ring, nft and netmon agree)"
        );
        let _ = writeln!(
            s,
            "{:<20} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>8}  exact",
            "run", "refused", "ring", "veth", "nft", "netmon", "veth rxB", "netmon B", "flows ok"
        );
        for (label, r) in self.all_runs() {
            let n = r.netmon.as_ref();
            let flows_ok = r.nft.as_ref().is_none_or(|f| f.1 == r.sent.per_flow)
                && n.is_none_or(|n| n.per_flow == r.sent.per_flow);
            let _ = writeln!(
                s,
                "{:<20} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>8}  {}",
                label,
                r.sent.refused,
                r.sent.accepted,
                r.rx_packets,
                r.nft
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |f| f.0.to_string()),
                n.map_or_else(|| "-".to_owned(), |n| n.packets.to_string()),
                r.rx_bytes,
                n.map_or_else(|| "-".to_owned(), |n| n.bytes.to_string()),
                flows_ok,
                match (r.delivered(), n.is_some()) {
                    (false, _) => "COUNTERS DISAGREE",
                    (true, false) => "-",
                    (true, true) if r.exact() => "yes",
                    (true, true) => "NO",
                }
            );
        }
        let _ = writeln!(
            s,
            "(refused = frames the receiving veth's full ring refused; the kernel freed them, \
             they are not part of what arrived; {} in all)",
            self.refused()
        );
        s
    }

    fn json(&self, elapsed: Duration) -> Value {
        let run_json = |r: &RunResult| {
            let mut v = json!({
                "pps": r.pps,
                "frames_run": r.sent.run,
                "ring_accepted": r.sent.accepted,
                "ring_refused": r.sent.refused,
                "test_run_calls": r.sent.calls,
                "elapsed_s": r.sent.elapsed.as_secs_f64(),
                "loop_time_s": r.sent.loop_time.as_secs_f64(),
                "rx_packets": r.rx_packets,
                "rx_bytes": r.rx_bytes,
                "rx_dropped": r.rx_dropped,
                "loop_pps": r.loop_pps(),
                "ring_per_flow": r.sent.per_flow,
                "nft_packets": r.nft.as_ref().map(|f| f.0),
                "nft_per_flow": r.nft.as_ref().map(|f| f.1.clone()),
                "delivered": r.delivered(),
            });
            if let Some(n) = &r.netmon {
                v["netmon_packets"] = json!(n.packets);
                v["netmon_bytes"] = json!(n.bytes);
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
                        "in_loop_ratio_to_without": self.loop_ratio(c),
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
            "all_delivered": self.all_delivered(),
            "all_exact": self.all_exact(),
            "ring_refused_total": self.refused(),
            "ground_truth": "frames the receiving veth's ring took, per flow (the tx veth's \
                ethtool tx_queue_0_xdp_xmit, read around every test-run call; with \
                xdp_xmit_errors they must add up to the frames run) and the receiving veth's \
                rx_packets (ip -s link) must agree in every run; in the check runs after the \
                timed rounds also an nftables counter on the receiving veth's netdev ingress \
                hook, total and per flow; netmon's packets, bytes (= packets x frame_len) and \
                flows must equal them",
            "checks": self.checks.iter().map(|(c, r)| {
                let mut v = run_json(r);
                v["config"] = json!(c.name());
                v
            }).collect::<Vec<_>>(),
            "method": format!(
                "BPF_PROG_TEST_RUN of {XDP_BENCH_TX_PROGRAM} (XDP_TX) in live-frames mode \
                 (batch {BATCH}) from a thread in the tx namespace, ingress_ifindex = the tx \
                 veth: the frames go through the veth's ndo_xdp_xmit into the receiving veth's \
                 ring (GRO on there for its NAPI); the program held in the XDP dispatcher by \
                 a generic-mode attachment to an idle device; {} calls of {REPEAT} frames, \
                 one flow each; rate = frames that arrived (rx_packets) / wall time inside the \
                 test-run calls; configurations {} alternate, order rotating each round, \
                 {ROUNDS} rounds; medians",
                FLOWS as u64 * CALLS_PER_FLOW,
                CONFIGS.map(Config::name).join(", ")
            ),
            "configs": configs,
            "machine": crate::util::machine(),
            "elapsed_s": elapsed.as_secs_f64(),
        })
    }
}
