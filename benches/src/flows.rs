//! `cargo xtask bench flows`: the XDP program's per-packet cost as the
//! number of active flows grows past what its flow cache holds.
//!
//! For each count N of [`FLOW_COUNTS`], the object is loaded with netmon's
//! default slots for this machine and its bench driver
//! (`netmon_bench_new_flow`) set to cycle the frame's IPv4 source address
//! round robin through N addresses: every run is the next flow of N, as on a
//! link where N flows each send in turn. The flows are primed (each seen
//! once), then [`ROUNDS`] rounds of [`CALLS`] calls of [`CHUNK`] runs each
//! into netmon alternate with as many into the floor program (the driver
//! and the tail call alone); the ring is drained after every call, as
//! netmon's poller does every 10 ms. Per round the mean ns per run, then
//! the median over rounds; over floor = netmon − floor.
//!
//! Checks, per N: every run was counted (TCP packets = runs), none failed to
//! reach a flow (`flow_insert_failed` = 0), and the packets in the rings
//! and the slots add up to the runs (nothing lost in
//! the cache's evictions). The figure `evictions/packet` says how often a
//! packet found its slot held by another flow.
//!
//! Then netmon's userspace at the same flow counts (`NETMON_BENCH_FLOWS=
//! kernel|userspace` runs one part only; `NETMON_BENCH_FLOW_COUNTS=1000000`
//! other counts). The real binary (`--netmon`) runs with `--format json
//! --interval 1s --max-flows M` (the default, or the power of two at or
//! above N) on one end of a veth pair in a namespace of the bench. The
//! driver, loaded from the bench object in that namespace (and attached to
//! the pair's silent end only so that test runs do not patch the kernel's
//! XDP dispatcher twice per call), tail-calls the XDP program netmon
//! attached (by its id, from `ip -j link`): netmon's own program counts
//! into netmon's own maps, and its userspace works as it does on a link.
//! netmon's threads run at nice [`NETMON_NICE`] (see there). A thread
//! pinned to one CPU and under `SCHED_FIFO` (the load offered must not
//! depend on the other jobs of the machine) calls the driver at
//! [`OFFERED_PPS`] by the clock, in calls of [`PACE_BATCH`] runs, for
//! [`WARMUP`] + [`WINDOW`] + [`TAIL`], and a whole number of cycles: every
//! flow gets exactly `total / N` packets, the ground truth. Every second
//! it samples netmon's `/proc` (utime + stime, per thread too; VmRSS and
//! its kinds); CPU and memory are those of the [`WINDOW`] after [`WARMUP`].
//!
//! Checks, against the driver's count: netmon's summary totals, nothing
//! untracked (`flow_insert_failed` 0, no "ring full" on stderr), every
//! flow in the table, the top flows' counts. The summary lists only the
//! top flows, so the same traffic runs once more with netmon exporting
//! over IPFIX to a collector of the bench (RFC 7011, decoded here, sequence
//! numbers checked): every flow must come out with exactly its packets and
//! IP bytes, and no other flow. In that run netmon's interval is longer
//! than the run (see [`run_netmon`]).

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use netmon::sys::{
    AttachedMode, Global, Link, Object,
    object::{ProgramHandle, TestRunOptions},
};
use netmon_common::{
    DEFAULT_MAX_FLOWS,
    bench::{CYCLE_BASE_GLOBAL, CYCLE_GLOBAL, NEW_FLOW_OFFSET, NEW_FLOW_PROGRAM, TAIL_MAP},
};
use netmon_tests::{Netmon, Netns, join_netns};
use serde_json::{Value, json};

use crate::{
    util::{machine, median, print_machine, write_report},
    xdp::{Bench, Objects, Prog, SLOTS, ipv4_tcp_frame, pin_to_one_cpu},
};

const FLOW_COUNTS: [u32; 4] = [1_000, 10_000, 100_000, 1_000_000];
/// Runs per test-run call: the evictions of one call fit a CPU's ring
/// (16,384 entries at least), which is drained after every call.
const CHUNK: u32 = 8_000;
/// Calls per round and per program.
const CALLS: u32 = 25;
const ROUNDS: usize = 7;
/// The first source address of the cycle (the frames never leave the
/// kernel's test run).
const BASE: [u8; 4] = [198, 51, 100, 2];

struct Row {
    flows: u32,
    floor: f64,
    netmon: f64,
    evictions_per_packet: f64,
    floor_rounds: Vec<f64>,
    netmon_rounds: Vec<f64>,
}

pub fn run(ctx: &crate::Ctx) -> Result<()> {
    let started = Instant::now();
    let objects = Objects::read(ctx)?;
    let (kernel, userspace) = parts()?;
    let counts = flow_counts()?;
    pin_to_one_cpu()?;
    let mut rows = Vec::new();
    if kernel {
        crate::step(&format!(
            "XDP per-packet cost with {counts:?} active flows, {} slots per CPU, {ROUNDS} \
             rounds of {CALLS} calls of {CHUNK} runs",
            *SLOTS
        ));
        for &flows in &counts {
            rows.push(measure(&objects, flows)?);
            eprintln!("bench: {flows} flows done");
        }
    }
    let mut user_rows = Vec::new();
    if userspace {
        crate::step(&format!(
            "netmon's userspace with {counts:?} active flows at {OFFERED_PPS} packets/s offered \
             ({WARMUP:?} warm-up, {WINDOW:?} measured)"
        ));
        for &flows in &counts {
            let row = measure_userspace(ctx, &objects, flows)?;
            eprintln!(
                "bench: netmon with {flows} flows: {:.1} % of a core, {:.1} MiB, {}",
                row.cpu_pct,
                row.rss_mib,
                if row.exact() { "exact" } else { "NOT exact" }
            );
            user_rows.push(row);
        }
    }

    if kernel {
        print_kernel_table(&rows);
    }
    if userspace {
        print_user_table(&rows, &user_rows);
    }
    let report = json!({
        "method": format!(
            "BPF_PROG_TEST_RUN of netmon_bench_new_flow cycling the source address round robin \
             through N addresses and tail-calling netmon (or the floor), {CALLS} calls of {CHUNK} \
             runs per program per round, alternating, ring drained after every call, {ROUNDS} \
             rounds, per-round mean, median over rounds; flows primed (each seen once) first; \
             process pinned to one CPU"
        ),
        "userspace_method": format!(
            "netmon --format json --interval 1s --max-flows M (threads at nice {NETMON_NICE}) \
             on a veth in a namespace of the bench; the driver (pinned to one CPU, SCHED_FIFO, \
             cycling N source addresses) tail-calls netmon's attached XDP program under \
             BPF_PROG_TEST_RUN at {OFFERED_PPS} runs/s offered ({PACE_BATCH} runs a call, by \
             the clock), every flow getting the same number of packets; netmon's utime+stime \
             and VmRSS from /proc over the {WINDOW:?} after {WARMUP:?}; checks against the \
             driver's count after SIGINT; then the same with --ipfix (interval longer than the \
             run) and every flow's exported count checked"
        ),
        "slots_per_cpu": *SLOTS,
        "rows": rows.iter().map(|r| json!({
            "flows": r.flows,
            "floor_ns": r.floor,
            "netmon_ns": r.netmon,
            "over_floor_ns": r.netmon - r.floor,
            "evictions_per_packet": r.evictions_per_packet,
            "floor_rounds_ns": r.floor_rounds,
            "netmon_rounds_ns": r.netmon_rounds,
            "exact": true,
        })).collect::<Vec<_>>(),
        "userspace": user_rows.iter().map(UserRow::json).collect::<Vec<_>>(),
        "machine": machine(),
        "load_average": fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "elapsed_s": started.elapsed().as_secs_f64(),
    });
    print_machine(&report["machine"]);
    println!(
        "load average: {}",
        report["load_average"].as_str().unwrap_or("?")
    );
    let path = write_report(&ctx.out_dir, "flows.json", &report)?;
    println!("written: {}", path.display());
    let inexact: Vec<String> = user_rows
        .iter()
        .filter(|r| !r.exact())
        .map(|r| format!("{} flows: {}", r.flows, r.failures.join("; ")))
        .collect();
    if !inexact.is_empty() {
        bail!("netmon's counts were not exact: {}", inexact.join(" | "));
    }
    Ok(())
}

/// Which parts run: `NETMON_BENCH_FLOWS=kernel|userspace` (both when
/// unset), for measuring one part alone.
fn parts() -> Result<(bool, bool)> {
    match std::env::var("NETMON_BENCH_FLOWS").ok().as_deref() {
        None | Some("") => Ok((true, true)),
        Some("kernel") => Ok((true, false)),
        Some("userspace") => Ok((false, true)),
        Some(other) => bail!("NETMON_BENCH_FLOWS={other}: expected kernel or userspace"),
    }
}

/// The flow counts: [`FLOW_COUNTS`], or those of
/// `NETMON_BENCH_FLOW_COUNTS` (comma-separated).
fn flow_counts() -> Result<Vec<u32>> {
    match std::env::var("NETMON_BENCH_FLOW_COUNTS")
        .ok()
        .filter(|s| !s.is_empty())
    {
        None => Ok(FLOW_COUNTS.to_vec()),
        Some(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n >= 2)
                    .with_context(|| format!("NETMON_BENCH_FLOW_COUNTS: {n:?} is not a count >= 2"))
            })
            .collect(),
    }
}

fn print_kernel_table(rows: &[Row]) {
    println!(
        "XDP per-packet cost by active flows (BPF_PROG_TEST_RUN, 64-byte IPv4/TCP, {} slots per \
         CPU, ns per packet, medians of {ROUNDS} rounds)",
        *SLOTS
    );
    println!(
        "{:>10} {:>8} {:>8} {:>11} {:>17}  exact",
        "flows", "floor", "netmon", "over_floor", "evictions/packet"
    );
    for r in rows {
        println!(
            "{:>10} {:>8.1} {:>8.1} {:>11.1} {:>17.3}  yes",
            r.flows,
            r.floor,
            r.netmon,
            r.netmon - r.floor,
            r.evictions_per_packet
        );
    }
}

/// The userspace table, with the kernel's ns over the floor beside it
/// when that part ran.
fn print_user_table(rows: &[Row], user: &[UserRow]) {
    println!(
        "netmon's userspace by active flows ({OFFERED_PPS} packets/s offered, `--format json \
         --interval 1s`, {WINDOW:?} measured after {WARMUP:?}; targets at 1,000,000 flows: \
         <= {TARGET_CPU_PCT} % of a core, <= {TARGET_RSS_MIB} MiB, exact)"
    );
    println!(
        "{:>10} {:>10} {:>10} {:>9} {:>12} {:>9} {:>9} {:>12}  exact",
        "flows", "max_flows", "kernel_ns", "cpu_%", "cpu_%/s", "rss_MiB", "offered", "achieved"
    );
    for u in user {
        let kernel = rows
            .iter()
            .find(|r| r.flows == u.flows)
            .map_or_else(|| "-".to_owned(), |r| format!("{:.1}", r.netmon - r.floor));
        let per_s = &u.cpu_pct_per_s;
        let lo = per_s.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = per_s.iter().copied().fold(0.0, f64::max);
        println!(
            "{:>10} {:>10} {:>10} {:>9.1} {:>12} {:>9.1} {:>9} {:>12.0}  {}",
            u.flows,
            u.max_flows,
            kernel,
            u.cpu_pct,
            format!("{lo:.0}-{hi:.0}"),
            u.rss_mib,
            u.offered_pps,
            u.window_pps,
            if u.exact() { "yes" } else { "NO" }
        );
    }
    for u in user {
        let threads: Vec<String> = u
            .cpu_pct_by_thread
            .iter()
            .map(|(n, p)| format!("{n} {p:.1}%"))
            .collect();
        println!(
            "  {} flows: by thread: {}; driver {:.0} ns/run in its calls ({:.0} in the kernel's \
             loop)",
            u.flows,
            threads.join(", "),
            u.driver_ns.0,
            u.driver_ns.1
        );
        for f in &u.failures {
            println!("  {} flows: FAILED: {f}", u.flows);
        }
    }
}

/// One flow count: load, prime, measure, check.
fn measure(objects: &Objects, flows: u32) -> Result<Row> {
    let base = u32::from_be_bytes(BASE);
    let mut bench = Bench::load_cycling(objects, flows, base)?;
    let mut frame = ipv4_tcp_frame(BASE, 40_000, &[]);
    let before = bench.counters()?;
    let (mut evictions, mut in_ring, mut runs) = (0u64, 0u64, 0u64);

    // Prime: every flow once.
    bench.set_tail(Prog::Netmon)?;
    let mut left = flows;
    while left > 0 {
        let n = left.min(CHUNK);
        run_cycle(&bench, &mut frame, n, flows, base)?;
        runs += u64::from(n);
        let (e, p) = bench.drain_ring();
        evictions += e;
        in_ring += p;
        left -= n;
    }
    let primed_evictions = evictions;

    let (mut floor_rounds, mut netmon_rounds) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (mut floor, mut netmon) = (0.0, 0.0);
        for _ in 0..CALLS {
            bench.set_tail(Prog::Floor)?;
            floor += run_cycle(&bench, &mut frame, CHUNK, flows, base)?;
            bench.set_tail(Prog::Netmon)?;
            netmon += run_cycle(&bench, &mut frame, CHUNK, flows, base)?;
            runs += u64::from(CHUNK);
            let (e, p) = bench.drain_ring();
            evictions += e;
            in_ring += p;
        }
        floor_rounds.push(floor / f64::from(CALLS));
        netmon_rounds.push(netmon / f64::from(CALLS));
    }

    let delta = bench.counters()?.minus(&before);
    ensure!(
        delta.tcp == runs && delta.flow_insert_failed == 0,
        "{flows} flows: {} packets counted, {} not counted to a flow; expected {runs}, 0",
        delta.tcp,
        delta.flow_insert_failed
    );
    let evictions = bench.check_conserved(&format!("{flows} flows"), (evictions, in_ring), runs)?;
    let measured = runs - u64::from(flows);
    Ok(Row {
        flows,
        floor: median(&floor_rounds),
        netmon: median(&netmon_rounds),
        evictions_per_packet: (evictions - primed_evictions) as f64 / measured as f64,
        floor_rounds,
        netmon_rounds,
    })
}

/// `repeat` runs of the cycling driver on `frame`, which then holds the
/// frame the last run left; checks that the source address moved on by
/// `repeat` steps of the cycle and nothing else changed. Returns the
/// kernel's mean ns per run.
fn run_cycle(
    bench: &Bench,
    frame: &mut Vec<u8>,
    repeat: u32,
    cycle: u32,
    base: u32,
) -> Result<f64> {
    let (ns, out) = bench.test_run(NEW_FLOW_PROGRAM, frame, repeat)?;
    let at = NEW_FLOW_OFFSET..NEW_FLOW_OFFSET + 4;
    let addr = |f: &[u8]| u32::from_be_bytes(f[at.clone()].try_into().expect("4 bytes"));
    let start = addr(frame).wrapping_sub(base);
    let want = base + ((u64::from(start) + u64::from(repeat)) % u64::from(cycle)) as u32;
    ensure!(
        out.len() == frame.len()
            && out[..at.start] == frame[..at.start]
            && out[at.end..] == frame[at.end..]
            && addr(&out) == want,
        "the driver did not move the source address {repeat} steps round a cycle of {cycle}"
    );
    *frame = out;
    Ok(ns)
}

// ---------------------------------------------------------------------------
// netmon's userspace at these flow counts.

/// Offered load of the userspace part: runs of the driver per second.
const OFFERED_PPS: u64 = 1_000_000;
/// Runs per test-run call when on time: one call a millisecond.
const PACE_BATCH: u64 = 1_000;
/// Runs per call at most when behind (4 ms of traffic): a late driver
/// catches up in bursts no bigger than this, not all at once.
const MAX_BATCH: u64 = 4_000;
/// From the first packet to the start of the measured window: every flow
/// is in the table and a few intervals have run.
const WARMUP: Duration = Duration::from_secs(5);
/// The measured window.
const WINDOW: Duration = Duration::from_secs(10);
/// Traffic after the window (so the window never sees the driver stop).
const TAIL: Duration = Duration::from_secs(1);
/// Targets at 1,000,000 flows (issue 10).
const TARGET_CPU_PCT: f64 = 25.0;
const TARGET_RSS_MIB: f64 = 300.0;
/// Bytes of the driver's frame and of its IP packet.
const FRAME_BYTES: u64 = 64;
const IP_BYTES: u64 = 50;
/// `XDP_PASS`: the driver's verdict.
const XDP_PASS: u32 = 2;

/// A running netmon at one flow count, as measured.
struct UserRow {
    flows: u32,
    max_flows: u32,
    /// Packets in all, and per flow (`total / flows`).
    total: u64,
    per_flow: u64,
    offered_pps: u64,
    /// Runs per second over the window, and over the whole drive.
    window_pps: f64,
    drive_pps: f64,
    /// The driver's wall time per run inside its test-run calls, and the
    /// kernel's time per run (netmon's program, the driver and the test
    /// run's loop), ns.
    driver_ns: (f64, f64),
    /// netmon's user+system time over the window, % of one core; the same
    /// per second (min, median, max); and per thread name.
    cpu_pct: f64,
    cpu_pct_per_s: Vec<f64>,
    cpu_pct_by_thread: Vec<(String, f64)>,
    /// VmRSS at the end of the window and at most during it, MiB; the
    /// kinds of resident memory at the end (RssAnon, RssFile, RssShmem).
    rss_mib: f64,
    rss_max_mib: f64,
    rss_kinds_mib: Vec<(String, f64)>,
    /// What was checked against the driver's count, and what failed.
    checks: Vec<String>,
    failures: Vec<String>,
    xdp_mode: String,
    /// What netmon said on stderr (its start line, any warning).
    stderr: String,
    /// Per interval line: packets not counted to a flow, and packets/s.
    untracked_per_interval: Vec<u64>,
    pps_per_interval: Vec<u64>,
    /// netmon's CPU in the run with the IPFIX export (% of one core).
    ipfix_cpu_pct: f64,
    /// Flows whose IPFIX counts were checked one by one.
    flows_checked: u64,
}

impl UserRow {
    fn exact(&self) -> bool {
        self.failures.is_empty()
    }

    fn json(&self) -> Value {
        json!({
            "flows": self.flows,
            "max_flows": self.max_flows,
            "packets": self.total,
            "packets_per_flow": self.per_flow,
            "offered_pps": self.offered_pps,
            "achieved_pps_window": self.window_pps,
            "achieved_pps_drive": self.drive_pps,
            "driver_wall_ns_per_run": self.driver_ns.0,
            "driver_kernel_ns_per_run": self.driver_ns.1,
            "cpu_pct_of_one_core": self.cpu_pct,
            "cpu_pct_per_second": self.cpu_pct_per_s,
            "cpu_pct_by_thread": self.cpu_pct_by_thread.iter().cloned().collect::<BTreeMap<_, _>>(),
            "rss_mib": self.rss_mib,
            "rss_max_mib": self.rss_max_mib,
            "rss_kinds_mib": self.rss_kinds_mib.iter().cloned().collect::<BTreeMap<_, _>>(),
            "xdp_mode": self.xdp_mode,
            "netmon_nice": NETMON_NICE,
            "netmon_stderr": self.stderr.lines().collect::<Vec<_>>(),
            "untracked_per_interval": self.untracked_per_interval,
            "ipfix_run_cpu_pct_of_one_core": self.ipfix_cpu_pct,
            "flows_checked_one_by_one": self.flows_checked,
            "pps_per_interval": self.pps_per_interval,
            "exact": self.exact(),
            "checks": self.checks,
            "failures": self.failures,
            "targets_met": (self.flows == 1_000_000).then(|| {
                self.cpu_pct <= TARGET_CPU_PCT && self.rss_mib <= TARGET_RSS_MIB && self.exact()
            }),
        })
    }
}

/// The test-run driver of the userspace part: the bench object's
/// `netmon_bench_new_flow`, cycling through `flows` source addresses, its
/// tail call pointing at the XDP program a running netmon attached.
struct Driver {
    /// The driver attached (generic XDP) to the pair's silent end, so that
    /// it stays in the kernel's XDP dispatcher: otherwise every test-run
    /// call adds it to the dispatcher and removes it again, each time
    /// patching its code and waiting for an RCU grace period (measured:
    /// 16 ms per call on a busy 2-CPU machine, which capped the driver at
    /// 250,000 runs/s). Declared first: dropped before the object.
    _resident: Link,
    harness: Object,
    frame: Vec<u8>,
    cycle: u32,
    base: u32,
    /// Wall time inside test-run calls, and the kernel's own time of
    /// their runs (mean per run × runs).
    busy: Duration,
    kernel_ns: f64,
}

impl Driver {
    /// Loads the driver and points it at netmon's program; `resident`:
    /// the interface (of the calling thread's namespace) it attaches to
    /// only to stay resident. No frame may arrive there.
    fn new(objects: &Objects, flows: u32, netmon_prog_id: u32, resident: &str) -> Result<Self> {
        let base = u32::from_be_bytes(BASE);
        let mut harness = Object::load_with(
            &objects.bench,
            &[
                (CYCLE_GLOBAL, Global::U32(flows)),
                (CYCLE_BASE_GLOBAL, Global::U32(base)),
            ],
            &[],
        )
        .context("loading the bench object failed")?;
        harness.load_xdp(NEW_FLOW_PROGRAM)?;
        let netmon = ProgramHandle::by_id(netmon_prog_id)
            .context("cannot open netmon's attached XDP program")?;
        harness
            .set_tail_call(TAIL_MAP, 0, &netmon)
            .context("setting the driver's tail call to netmon's program")?;
        let ifindex = netmon::sys::ifindex(resident)?;
        let resident = harness
            .attach_xdp(NEW_FLOW_PROGRAM, resident, ifindex, AttachedMode::Generic)
            .with_context(|| format!("cannot attach the driver to {resident}"))?;
        Ok(Self {
            _resident: resident,
            harness,
            frame: ipv4_tcp_frame(BASE, 40_000, &[]),
            cycle: flows,
            base,
            busy: Duration::ZERO,
            kernel_ns: 0.0,
        })
    }

    /// `repeat` runs: the next `repeat` flows of the cycle, one packet each.
    /// Checks the verdict and that the source address moved on by `repeat`
    /// steps of the cycle (so every run reached the driver).
    fn run(&mut self, repeat: u32) -> Result<()> {
        let mut out = vec![0u8; self.frame.len() + 256];
        let called = Instant::now();
        let res = self
            .harness
            .test_run(
                NEW_FLOW_PROGRAM,
                TestRunOptions {
                    data_in: Some(&self.frame),
                    data_out: Some(&mut out),
                    repeat,
                    ..TestRunOptions::new()
                },
            )
            .context("BPF_PROG_TEST_RUN failed")?;
        self.busy += called.elapsed();
        self.kernel_ns += res.duration.as_nanos() as f64 * f64::from(repeat);
        ensure!(
            res.return_value == XDP_PASS,
            "the driver returned {} instead of XDP_PASS",
            res.return_value
        );
        out.truncate(res.data_size_out as usize);
        let at = NEW_FLOW_OFFSET..NEW_FLOW_OFFSET + 4;
        let addr = |f: &[u8]| u32::from_be_bytes(f[at.clone()].try_into().expect("4 bytes"));
        let start = addr(&self.frame).wrapping_sub(self.base);
        let want =
            self.base + ((u64::from(start) + u64::from(repeat)) % u64::from(self.cycle)) as u32;
        ensure!(
            out.len() == self.frame.len() && addr(&out) == want,
            "the driver did not move the source address {repeat} steps round a cycle of {}",
            self.cycle
        );
        self.frame = out;
        Ok(())
    }
}

/// One reading of netmon's /proc entries.
#[derive(Clone, Debug)]
struct ProcSample {
    at: Instant,
    /// Runs of the driver so far.
    runs: u64,
    /// utime + stime in clock ticks, whole process and per thread name.
    ticks: u64,
    thread_ticks: BTreeMap<String, u64>,
    /// kB: VmRSS, RssAnon, RssFile, RssShmem.
    rss_kb: [u64; 4],
}

/// utime + stime (clock ticks) of a /proc/.../stat line, and the name in
/// it.
fn stat_ticks(stat: &str) -> Option<(String, u64)> {
    // "pid (comm) state ...": the name may hold spaces and parentheses, so
    // the fields start after the last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); fields[0] is field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

fn proc_sample(pid: i32, runs: u64) -> Result<ProcSample> {
    let at = Instant::now();
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("netmon (pid {pid}) is gone"))?;
    let (_, ticks) = stat_ticks(&stat).context("unreadable /proc/PID/stat")?;
    let mut thread_ticks = BTreeMap::new();
    for task in fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        if let Some((name, t)) = fs::read_to_string(task.path().join("stat"))
            .ok()
            .as_deref()
            .and_then(stat_ticks)
        {
            *thread_ticks.entry(name).or_default() += t;
        }
    }
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        at,
        runs,
        ticks,
        thread_ticks,
        rss_kb: [
            kb("VmRSS:"),
            kb("RssAnon:"),
            kb("RssFile:"),
            kb("RssShmem:"),
        ],
    })
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Sets the calling thread's CPUs: `Some(cpu)`, that one; `None`, all.
fn set_affinity(cpu: Option<usize>) -> Result<()> {
    // SAFETY: plain libc calls on a zeroed cpu_set_t owned here.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if let Some(c) = cpu {
            libc::CPU_SET(c, &mut set);
        } else {
            let n = libc::sysconf(libc::_SC_NPROCESSORS_CONF).max(1) as usize;
            for c in 0..n.min(libc::CPU_SETSIZE as usize) {
                libc::CPU_SET(c, &mut set);
            }
        }
        ensure!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) == 0,
            "sched_setaffinity failed: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Nice value of netmon's threads in the bench. This machine is shared: a
/// neighbour's job that keeps both CPUs busy left netmon's threads
/// unscheduled for long enough (beyond the 65 ms the kernel's ring holds
/// at a million evictions a second and the 260 ms of netmon's backlog)
/// that packets went untracked; at -10 they are scheduled first. CPU time
/// and memory do not depend on it.
const NETMON_NICE: i32 = -10;

/// Sets the nice value of every thread of process `pid`, once its ring
/// thread exists (it starts when the program is attached).
fn renice_threads(pid: i32, nice: i32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tasks: Vec<(String, i32)> = fs::read_dir(format!("/proc/{pid}/task"))?
            .flatten()
            .filter_map(|t| {
                let tid = t.file_name().to_str()?.parse().ok()?;
                let comm = fs::read_to_string(t.path().join("comm")).ok()?;
                Some((comm.trim().to_owned(), tid))
            })
            .collect();
        if tasks.iter().any(|(comm, _)| comm == "netmon-ring") {
            for (_, tid) in tasks {
                // SAFETY: setpriority on a thread id, no pointers.
                let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
                ensure!(
                    rc == 0,
                    "cannot renice netmon's thread {tid}: {}",
                    std::io::Error::last_os_error()
                );
            }
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "netmon's ring thread did not start within 10 s"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The calling thread under `SCHED_FIFO` until dropped.
struct Realtime;

impl Realtime {
    fn enter() -> Result<Self> {
        let param = libc::sched_param { sched_priority: 10 };
        // SAFETY: sched_setscheduler on this thread with a valid param.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) };
        ensure!(
            rc == 0,
            "cannot run the driver under SCHED_FIFO: {}",
            std::io::Error::last_os_error()
        );
        Ok(Realtime)
    }
}

impl Drop for Realtime {
    fn drop(&mut self) {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: as in enter.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &raw const param) };
    }
}

/// The XDP program attached to `iface` in `ns`, by its kernel id (`ip -j
/// link`).
fn attached_prog_id(ns: &Netns, iface: &str) -> Result<u32> {
    let out = ns.ip(&format!("-j link show dev {iface}"));
    let v: Value = serde_json::from_str(&out).context("ip -j link printed no JSON")?;
    let xdp = &v[0]["xdp"];
    xdp["prog"]["id"]
        .as_u64()
        .or_else(|| {
            xdp["attached"]
                .as_array()
                .and_then(|a| a.iter().find_map(|p| p["prog"]["id"].as_u64()))
        })
        .and_then(|id| u32::try_from(id).ok())
        .with_context(|| format!("no XDP program on {iface}: {out}"))
}

/// A namespace with a veth pair whose first end netmon watches (the pair
/// itself stays silent: no addresses, no IPv6 link-local, so nothing but
/// the driver's test runs reaches netmon's program).
struct Topology {
    ns: Netns,
    iface: String,
    /// The other end: the driver's resident attachment.
    peer: String,
}

impl Topology {
    fn create() -> Self {
        let ns = Netns::new("fb");
        let (a, b) = ("fbva", "fbvb");
        ns.ip(&format!("link add {a} type veth peer name {b}"));
        for i in [a, b] {
            ns.ip(&format!("link set dev {i} addrgenmode none"));
            ns.sh(&format!("sysctl -qw net.ipv6.conf.{i}.disable_ipv6=1"));
            ns.ip(&format!("link set dev {i} up"));
        }
        Topology {
            ns,
            iface: a.to_owned(),
            peer: b.to_owned(),
        }
    }
}

/// What a drive leaves: the /proc samples, when it started, how long it
/// took, and the driver's ns per run (wall time in its calls, kernel).
struct Drive {
    samples: Vec<ProcSample>,
    start: Instant,
    seconds: f64,
    driver_ns: (f64, f64),
}

/// `total` runs at [`OFFERED_PPS`], paced by the clock, sampling netmon
/// (`pid`) about once a second.
fn drive(driver: &mut Driver, total: u64, pid: i32) -> Result<Drive> {
    let mut samples = vec![proc_sample(pid, 0)?];
    let start = Instant::now();
    let mut runs = 0u64;
    while runs < total {
        // Whole batches: a call for every few runs that came due while the
        // last one ran would keep the driver's CPU busy with calls.
        let next = (runs + PACE_BATCH).min(total);
        let due = (start.elapsed().as_secs_f64() * OFFERED_PPS as f64) as u64;
        if due < next {
            let at = Duration::from_secs_f64(next as f64 / OFFERED_PPS as f64);
            thread::sleep(at.saturating_sub(start.elapsed()));
            continue;
        }
        let n = (due - runs).min(MAX_BATCH).min(total - runs);
        driver.run(n as u32)?;
        runs += n;
        if samples
            .last()
            .is_some_and(|s| s.at.elapsed() >= Duration::from_secs(1))
        {
            samples.push(proc_sample(pid, runs)?);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    samples.push(proc_sample(pid, runs)?);
    Ok(Drive {
        samples,
        start,
        seconds,
        driver_ns: (
            driver.busy.as_nanos() as f64 / total as f64,
            driver.kernel_ns / total as f64,
        ),
    })
}

/// One run of netmon under the paced driver: what the drive measured and
/// how netmon ended; with `ipfix`, what its IPFIX export said.
struct NetmonRun {
    drive: Drive,
    run: netmon_tests::Finished,
    xdp_mode: String,
    ipfix: Option<Collected>,
}

/// Runs netmon (`--format json --interval 1s --max-flows max_flows`, and
/// with `ipfix` an IPFIX export to a collector of the bench) in a
/// namespace of its own while the driver sends `total` packets round
/// robin over `flows` flows; stops it once an interval has passed after
/// the last packet.
fn run_netmon(
    ctx: &crate::Ctx,
    objects: &Objects,
    (flows, max_flows, total): (u32, u32, u64),
    ipfix: bool,
) -> Result<NetmonRun> {
    let topo = Topology::create();
    let collector = if ipfix {
        Some(Collector::start(&topo.ns)?)
    } else {
        None
    };
    // netmon runs on any CPU: not pinned like this thread (a child inherits
    // its parent's CPUs).
    set_affinity(None)?;
    let max_flows_arg = max_flows.to_string();
    let mut args = vec![
        "--iface",
        &topo.iface,
        "--format",
        "json",
        "--max-flows",
        &max_flows_arg,
    ];
    if ipfix {
        // One interval for the whole run: the export's bookkeeping of a
        // million changed flows every second costs more than all of
        // netmon's flow work (see BENCHMARKS.md), and is not what is
        // measured here.
        args.extend(["--interval", "3600s", "--ipfix", COLLECTOR]);
    } else {
        args.extend(["--interval", "1s"]);
    }
    let netmon = Netmon::start_bin(&ctx.netmon, &topo.ns, &args);
    let xdp_mode = netmon.xdp_mode().to_owned();
    let pid = netmon.pid();
    renice_threads(pid, NETMON_NICE)?;
    let prog_id = attached_prog_id(&topo.ns, &topo.iface)?;
    // The driver works from a thread inside the namespace (it attaches
    // there), pinned to one CPU and real-time while it drives.
    let drive = thread::scope(|s| {
        s.spawn(|| -> Result<Drive> {
            join_netns(&topo.ns.name).context("cannot enter the bench's namespace")?;
            let mut driver = Driver::new(objects, flows, prog_id, &topo.peer)?;
            pin_to_one_cpu()?;
            // The offered load must not depend on what else the machine
            // runs: the driver takes its CPU whenever runs are due (it
            // sleeps in between, and the kernel keeps 5 % of every second
            // for others).
            let _realtime = Realtime::enter()?;
            drive(&mut driver, total, pid)
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })?;
    // Let an interval pass with everything counted, then stop netmon.
    thread::sleep(Duration::from_millis(1500));
    netmon.signal(libc::SIGINT);
    let run = netmon.wait(Duration::from_secs(120));
    let ipfix = collector.map(Collector::finish).transpose()?;
    drop(topo);
    Ok(NetmonRun {
        drive,
        run,
        xdp_mode,
        ipfix,
    })
}

/// netmon at `flows` active flows under the paced driver: CPU, memory,
/// and every count it gives against the driver's, then the same traffic
/// once more with an IPFIX export at the end, for the count of every
/// flow.
fn measure_userspace(ctx: &crate::Ctx, objects: &Objects, flows: u32) -> Result<UserRow> {
    let max_flows = DEFAULT_MAX_FLOWS.max(flows.next_power_of_two());
    let per_flow = ((WARMUP + WINDOW + TAIL).as_secs_f64() * OFFERED_PPS as f64 / f64::from(flows))
        .ceil() as u64;
    let total = per_flow * u64::from(flows);
    let measured = run_netmon(ctx, objects, (flows, max_flows, total), false)?;
    let mut row = UserRow::new(flows, max_flows, per_flow, &measured)?;
    check_run(&mut row, "measured run", &measured.run);
    crate::step(&format!(
        "{flows} flows: once more, with every flow's count exported over IPFIX at the end"
    ));
    let checked = run_netmon(ctx, objects, (flows, max_flows, total), true)?;
    check_run(&mut row, "IPFIX run", &checked.run);
    let collected = checked.ipfix.as_ref().expect("an IPFIX run");
    check_flows(&mut row, collected);
    row.ipfix_cpu_pct = UserRow::new(flows, max_flows, per_flow, &checked)?.cpu_pct;
    Ok(row)
}

impl UserRow {
    /// The row of a run (its checks still to do): CPU and memory over the
    /// window, rates.
    fn new(flows: u32, max_flows: u32, per_flow: u64, r: &NetmonRun) -> Result<Self> {
        let d = &r.drive;
        let in_window: Vec<&ProcSample> = d
            .samples
            .iter()
            .filter(|s| {
                let t = s.at.duration_since(d.start);
                t >= WARMUP && t <= WARMUP + WINDOW + Duration::from_millis(500)
            })
            .collect();
        ensure!(
            in_window.len() >= 2,
            "{flows} flows: too few samples in the window ({})",
            in_window.len()
        );
        let (first, last) = (in_window[0], in_window[in_window.len() - 1]);
        let hz = clock_ticks_per_s();
        let secs = last.at.duration_since(first.at).as_secs_f64();
        let pct = |ticks: u64, secs: f64| ticks as f64 / hz / secs * 100.0;
        let mib = |kb: u64| kb as f64 / 1024.0;
        let total = per_flow * u64::from(flows);
        Ok(UserRow {
            flows,
            max_flows,
            total,
            per_flow,
            offered_pps: OFFERED_PPS,
            window_pps: (last.runs - first.runs) as f64 / secs,
            drive_pps: total as f64 / d.seconds,
            driver_ns: d.driver_ns,
            cpu_pct: pct(last.ticks - first.ticks, secs),
            cpu_pct_per_s: in_window
                .windows(2)
                .map(|w| {
                    let secs = w[1].at.duration_since(w[0].at).as_secs_f64();
                    pct(w[1].ticks - w[0].ticks, secs)
                })
                .collect(),
            cpu_pct_by_thread: last
                .thread_ticks
                .iter()
                .map(|(name, t)| {
                    let before = first.thread_ticks.get(name).copied().unwrap_or(0);
                    (name.clone(), pct(t.saturating_sub(before), secs))
                })
                .collect(),
            rss_mib: mib(last.rss_kb[0]),
            rss_max_mib: in_window
                .iter()
                .map(|s| mib(s.rss_kb[0]))
                .fold(0.0, f64::max),
            rss_kinds_mib: ["VmRSS", "RssAnon", "RssFile", "RssShmem"]
                .iter()
                .zip(last.rss_kb)
                .map(|(k, kb)| ((*k).to_owned(), mib(kb)))
                .collect(),
            checks: Vec::new(),
            failures: Vec::new(),
            xdp_mode: r.xdp_mode.clone(),
            stderr: r.run.stderr.clone(),
            untracked_per_interval: Vec::new(),
            pps_per_interval: Vec::new(),
            ipfix_cpu_pct: 0.0,
            flows_checked: 0,
        })
    }
}

/// Checks netmon's output against the driver's count: totals, nothing
/// untracked, every flow in the table, the top flows' counts.
fn check_run(row: &mut UserRow, what: &str, run: &netmon_tests::Finished) {
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // Per interval: the measured run's (the first checked).
    if row.untracked_per_interval.is_empty() {
        row.untracked_per_interval = lines
            .iter()
            .filter(|v| v["type"] == "rates")
            .map(|v| v["counters"]["flow_insert_failed"].as_u64().unwrap_or(0))
            .collect();
        row.pps_per_interval = lines
            .iter()
            .filter(|v| v["type"] == "rates")
            .map(|v| v["pps"].as_f64().unwrap_or(0.0).round() as u64)
            .collect();
    }
    let mut check = |ok: bool, check: String| {
        let check = format!("{what}: {check}");
        if ok {
            row.checks.push(check);
        } else {
            row.failures.push(check);
        }
    };
    check(
        run.status.success(),
        format!("netmon exited with {}", run.status),
    );
    for warning in ["ring full", "table full", "cannot send IPFIX"] {
        check(
            !run.stderr.contains(warning),
            format!("stderr without {warning:?}"),
        );
    }
    let Some(summary) = lines.iter().find(|v| v["type"] == "summary") else {
        check(
            false,
            format!("a summary line; stderr: {}", run.stderr.trim()),
        );
        return;
    };
    let (total, per_flow, flows) = (row.total, row.per_flow, u64::from(row.flows));
    let c = &summary["counters"];
    check(
        summary["packets"] == total && summary["bytes"] == total * FRAME_BYTES,
        format!(
            "summary packets {} bytes {} = the driver's {total}, {}",
            summary["packets"],
            summary["bytes"],
            total * FRAME_BYTES
        ),
    );
    check(c["tcp"] == total, format!("tcp {} = {total}", c["tcp"]));
    check(
        c["flow_insert_failed"] == 0,
        format!("flow_insert_failed {} = 0", c["flow_insert_failed"]),
    );
    check(
        summary["retired_flows_dropped"] == 0,
        format!(
            "retired_flows_dropped {} = 0",
            summary["retired_flows_dropped"]
        ),
    );
    if let Some(in_table) = lines
        .iter()
        .rfind(|v| v["type"] == "rates")
        .map(|v| &v["flows_in_table"])
    {
        check(
            *in_table == flows,
            format!("flows_in_table {in_table} = {flows} at the last interval"),
        );
    }
    let top = summary["flows"].as_array().cloned().unwrap_or_default();
    check(
        !top.is_empty()
            && top.iter().all(|f| {
                f["packets"] == per_flow
                    && f["bytes"] == per_flow * FRAME_BYTES
                    && f["dst"] == "198.51.100.1"
            }),
        format!(
            "each of the summary's {} top flows has {per_flow} packets",
            top.len()
        ),
    );
}

/// Where netmon sends IPFIX in the check run (inside the bench's
/// namespace).
const COLLECTOR: &str = "127.0.0.1:4739";

/// An IPFIX collector of the bench: a thread in the namespace reading
/// netmon's messages (RFC 7011) on [`COLLECTOR`] into per-flow sums.
struct Collector {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Result<Collected>>,
}

/// An IPv4 flow as IPFIX names it: source, destination, ports, protocol.
type V4Flow = ([u8; 4], [u8; 4], u16, u16, u8);

/// What the collector received: per IPv4 flow (source, destination,
/// ports, protocol) the packets and octets of all its records; the data
/// records and the sequence numbers that did not follow (lost messages).
#[derive(Debug, Default)]
struct Collected {
    flows: HashMap<V4Flow, (u64, u64)>,
    records: u64,
    other_records: u64,
    messages: u64,
    sequence_breaks: u64,
    malformed: u64,
}

impl Collector {
    fn start(ns: &Netns) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let name = ns.name.clone();
        let thread = thread::spawn({
            let stop = Arc::clone(&stop);
            move || -> Result<Collected> {
                let socket = (|| -> Result<std::net::UdpSocket> {
                    join_netns(&name).context("cannot enter the bench's namespace")?;
                    let socket = std::net::UdpSocket::bind(COLLECTOR)
                        .with_context(|| format!("cannot listen on {COLLECTOR}"))?;
                    // Room for the end of a run: every flow's record at once
                    // (about 36,000 datagrams for a million flows).
                    let bytes: libc::c_int = 512 << 20;
                    // SAFETY: setsockopt on an open socket with an int.
                    let rc = unsafe {
                        libc::setsockopt(
                            std::os::fd::AsRawFd::as_raw_fd(&socket),
                            libc::SOL_SOCKET,
                            libc::SO_RCVBUFFORCE,
                            (&raw const bytes).cast(),
                            size_of::<libc::c_int>() as libc::socklen_t,
                        )
                    };
                    ensure!(
                        rc == 0,
                        "SO_RCVBUFFORCE: {}",
                        std::io::Error::last_os_error()
                    );
                    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
                    Ok(socket)
                })();
                let socket = match socket {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return Err(e);
                    }
                };
                let mut collected = Collected::default();
                let mut decoder = Decoder::default();
                let mut buf = vec![0u8; 65_536];
                loop {
                    match socket.recv(&mut buf) {
                        Ok(n) => decoder.message(&buf[..n], &mut collected),
                        // Quiet for 200 ms after netmon ended: all is in.
                        Err(_) if stop.load(Ordering::Acquire) => return Ok(collected),
                        Err(_) => {}
                    }
                }
            }
        });
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Collector { stop, thread }),
            Ok(Err(e)) => bail!("IPFIX collector: {e}"),
            Err(_) => bail!("the IPFIX collector thread ended"),
        }
    }

    /// Everything received (call once netmon has ended).
    fn finish(self) -> Result<Collected> {
        self.stop.store(true, Ordering::Release);
        self.thread
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

/// Decodes IPFIX messages: the templates they announce, then the data
/// records of IPv4 flows by those templates.
#[derive(Default)]
struct Decoder {
    /// Template id -> (Information Element id, length) of each field.
    templates: HashMap<u16, Vec<(u16, usize)>>,
    /// The next sequence number expected (data records sent before); none
    /// before the first message.
    next_sequence: Option<u32>,
}

/// IPFIX Information Elements read (RFC 7012).
mod ie {
    pub const OCTETS: u16 = 1;
    pub const PACKETS: u16 = 2;
    pub const PROTOCOL: u16 = 4;
    pub const SPORT: u16 = 7;
    pub const SRC_V4: u16 = 8;
    pub const DPORT: u16 = 11;
    pub const DST_V4: u16 = 12;
}

impl Decoder {
    fn message(&mut self, m: &[u8], c: &mut Collected) {
        let be16 =
            |b: &[u8], at: usize| b.get(at..at + 2).map(|x| u16::from_be_bytes([x[0], x[1]]));
        let be32 = |b: &[u8], at: usize| {
            b.get(at..at + 4)
                .map(|x| u32::from_be_bytes(x.try_into().expect("4 bytes")))
        };
        let (Some(10), Some(len), Some(sequence)) = (be16(m, 0), be16(m, 2), be32(m, 8)) else {
            c.malformed += 1;
            return;
        };
        if usize::from(len) != m.len() {
            c.malformed += 1;
            return;
        }
        c.messages += 1;
        // netmon's first message is numbered 0.
        if self.next_sequence.unwrap_or(0) != sequence {
            c.sequence_breaks += 1;
        }
        let mut records = 0u32;
        let mut at = 16;
        while let (Some(id), Some(set_len)) = (be16(m, at), be16(m, at + 2)) {
            let end = at + usize::from(set_len);
            if set_len < 4 || end > m.len() {
                c.malformed += 1;
                return;
            }
            let set = &m[at + 4..end];
            if id == 2 {
                self.templates_in(set);
            } else if id >= 256 {
                records += self.records_in(id, set, c);
            }
            at = end;
        }
        self.next_sequence = Some(sequence.wrapping_add(records));
    }

    fn templates_in(&mut self, set: &[u8]) {
        let be16 = |at: usize| {
            set.get(at..at + 2)
                .map(|x| u16::from_be_bytes([x[0], x[1]]))
        };
        let mut at = 0;
        while let (Some(id), Some(count)) = (be16(at), be16(at + 2)) {
            at += 4;
            let mut fields = Vec::new();
            for _ in 0..count {
                let (Some(ie), Some(len)) = (be16(at), be16(at + 2)) else {
                    return;
                };
                // An enterprise number follows an enterprise-specific IE.
                at += if ie & 0x8000 == 0 { 4 } else { 8 };
                fields.push((ie & 0x7fff, usize::from(len)));
            }
            self.templates.insert(id, fields);
        }
    }

    /// Sums the data records of `set` (template `id`); returns how many.
    fn records_in(&self, id: u16, set: &[u8], c: &mut Collected) -> u32 {
        let Some(fields) = self.templates.get(&id) else {
            c.malformed += 1;
            return 0;
        };
        let len: usize = fields.iter().map(|f| f.1).sum();
        if len == 0 {
            return 0;
        }
        let mut n = 0;
        for record in set.chunks_exact(len) {
            n += 1;
            c.records += 1;
            let (mut src, mut dst, mut ports, mut proto) = (None, None, (0, 0), 0);
            let (mut packets, mut octets) = (0, 0);
            let mut at = 0;
            for &(ie, flen) in fields {
                let v = &record[at..at + flen];
                let uint = v.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
                match ie {
                    ie::SRC_V4 => src = v.try_into().ok(),
                    ie::DST_V4 => dst = v.try_into().ok(),
                    ie::SPORT => ports.0 = uint as u16,
                    ie::DPORT => ports.1 = uint as u16,
                    ie::PROTOCOL => proto = uint as u8,
                    ie::PACKETS => packets = uint,
                    ie::OCTETS => octets = uint,
                    _ => {}
                }
                at += flen;
            }
            match (src, dst) {
                (Some(src), Some(dst)) => {
                    let sum = c
                        .flows
                        .entry((src, dst, ports.0, ports.1, proto))
                        .or_default();
                    sum.0 += packets;
                    sum.1 += octets;
                }
                _ => c.other_records += 1,
            }
        }
        n
    }
}

/// Checks the IPFIX export of the check run flow by flow: every one of the
/// driver's flows, with exactly its packets and IP bytes, and nothing else.
fn check_flows(row: &mut UserRow, c: &Collected) {
    let (flows, per_flow) = (row.flows, row.per_flow);
    let base = u32::from_be_bytes(BASE);
    let mut wrong = Vec::new();
    let mut right = 0u64;
    for i in 0..flows {
        let src = (base + i).to_be_bytes();
        let got = c
            .flows
            .get(&(src, [198, 51, 100, 1], 40_000, 9000, 6))
            .copied();
        if got == Some((per_flow, per_flow * IP_BYTES)) {
            right += 1;
        } else if wrong.len() < 5 {
            wrong.push(format!(
                "{}.{}.{}.{}: {got:?}",
                src[0], src[1], src[2], src[3]
            ));
        }
    }
    row.flows_checked = u64::from(flows);
    let mut check = |ok: bool, check: String| {
        let check = format!("IPFIX run: {check}");
        if ok {
            row.checks.push(check);
        } else {
            row.failures.push(check);
        }
    };
    check(
        right == u64::from(flows),
        format!(
            "{right} of {flows} flows exported with exactly {per_flow} packets and {} IP bytes{}",
            per_flow * IP_BYTES,
            if wrong.is_empty() {
                String::new()
            } else {
                format!("; wrong: {}", wrong.join(", "))
            }
        ),
    );
    check(
        c.flows.len() == flows as usize && c.other_records == 0,
        format!(
            "{} flows and {} IPv6 records exported, no other",
            c.flows.len(),
            c.other_records
        ),
    );
    check(
        c.sequence_breaks == 0 && c.malformed == 0 && c.messages > 0,
        format!(
            "{} messages, {} data records, {} sequence breaks, {} malformed",
            c.messages, c.records, c.sequence_breaks, c.malformed
        ),
    );
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use netmon::report::ipfix_wire::{Direction, Encoder, EndReason, FlowRecord};

    use super::*;

    fn record(src: [u8; 4], packets: u64) -> FlowRecord {
        FlowRecord {
            src: IpAddr::from(src),
            dst: IpAddr::from([198, 51, 100, 1]),
            sport: 40_000,
            dport: 9000,
            proto: 6,
            tcp_flags: 0x10,
            direction: Direction::Ingress,
            end_reason: EndReason::ForcedEnd,
            octets: packets * IP_BYTES,
            packets,
            start_ms: 1,
            end_ms: 2,
        }
    }

    #[test]
    fn the_collector_reads_what_netmon_encodes_and_sees_a_lost_message() {
        let mut encoder = Encoder::new(7, 1400);
        // 100 records of 50 flows (two each), an IPv6 one, over several
        // messages, the templates in the first.
        let mut records: Vec<FlowRecord> = (0..100u8)
            .map(|i| record([198, 51, 100, i % 50], u64::from(i) + 1))
            .collect();
        let mut v6 = record([0; 4], 5);
        v6.src = "2001:db8::2".parse().unwrap();
        v6.dst = "2001:db8::1".parse().unwrap();
        records.push(v6);
        let messages = encoder.messages(0, &records, true);
        assert!(messages.len() > 1);
        let (mut decoder, mut c) = (Decoder::default(), Collected::default());
        for m in &messages {
            decoder.message(&m.bytes, &mut c);
        }
        assert_eq!(
            (c.messages, c.records, c.other_records),
            (messages.len() as u64, 101, 1)
        );
        assert_eq!((c.sequence_breaks, c.malformed), (0, 0));
        assert_eq!(c.flows.len(), 50);
        // Flow i got records i + 1 and i + 51.
        let got = c.flows[&([198, 51, 100, 3], [198, 51, 100, 1], 40_000, 9000, 6)];
        assert_eq!(got, (4 + 54, (4 + 54) * IP_BYTES));
        // A message missing from the middle breaks the sequence.
        let more = encoder.messages(0, &records[..60], false);
        let (mut decoder, mut c) = (Decoder::default(), Collected::default());
        for m in messages
            .iter()
            .chain(more.iter())
            .filter(|m| m.bytes != more[0].bytes)
        {
            decoder.message(&m.bytes, &mut c);
        }
        assert_eq!(c.sequence_breaks, 1);
    }

    #[test]
    fn stat_lines_give_the_name_and_cpu_ticks() {
        let line = "4242 (netmon ring) S 1 2 3 4 5 6 7 8 9 10 120 35 0 0 20 0 3 0 99";
        assert_eq!(stat_ticks(line), Some(("netmon ring".to_owned(), 155)));
        assert_eq!(stat_ticks("garbage"), None);
    }
}
