//! `cargo xtask bench xdp`: per-packet cost of netmon's XDP program under
//! `BPF_PROG_TEST_RUN`, in ns above a bare `XDP_PASS` program (`netmon_floor`
//! from the bench object) measured in the same run. netmon's program is the
//! shipped object's own (`--object`), loaded through `netmon::sys` as
//! netmon loads it; the floor and the new-flow driver come from the bench
//! object (`--bench-object`), the driver reaching netmon's program by a tail
//! call across the two objects. netmon's flow slots and eviction rings
//! have netmon's default sizes on this machine
//! (`NETMON_BENCH_RING_ENTRIES=N` sets the ring entries per CPU instead).
//!
//! Three methods, because the kernel runs *the same frame* `repeat` times:
//!
//! - **repeat** (`floor`, `established`, `ipv6_udp`, `qinq`, `vlan4`, `mpls`,
//!   `pppoe`, `ipv6_ah`, `truncated`):
//!   one frame, `REPEAT` runs per call, the kernel's average per run; every
//!   case once per round, [`ROUNDS`] rounds, median over rounds. The frame's
//!   flow is inserted by a priming call, so every timed run finds it in its
//!   slot (for `ipv6_udp` and `qinq` too).
//! - **driver** (`new_flow`, `floor_new_flow`): `netmon_bench_new_flow`
//!   moves the source address on in place and tail-calls netmon (or the
//!   floor), so every run of a repeated call is a new flow; see
//!   [`new_flow_tail_round`].
//! - **repeat=1** (`new_flow_repeat1`): [`NEW_FLOWS`] calls per round, each with a
//!   frame of a flow never seen before (distinct source address/port), each
//!   interleaved with a repeat=1 call of the floor program on the same frame
//!   and one of netmon on an established flow (a control that shows what
//!   the single-run method itself adds). Per round the mean of the
//!   per-call durations without the slowest 1 % (a mean, because one new
//!   flow in eight also sends a batch of evictions to the ring; a median
//!   would hide that); the figure is the median over rounds, and its floor
//!   is the repeat=1 floor. The flow cache has netmon's default size per CPU
//!   ([`SLOTS`]); a round brings many times more flows than it has slots, so
//!   nearly every new flow evicts an occupant to the ring: the steady state
//!   of a busy link, and the dearer of the two ways a flow moves in. Slots
//!   and ring are emptied between rounds. The bench pins itself to one CPU,
//!   so every run sees the same CPU's slots.
//!
//! Passive RTT (issue 11) adds the egress program and ingress packets with
//! an echo to look up:
//!
//! - **repeat**, TC: `tc_established` (the `established` frame through
//!   the shipped object's `netmon_tc`) and `tc_established_ts` (a data
//!   segment with a timestamp whose TSval its flow has sent already:
//!   nothing to record), over the TC floor `netmon_tc_floor` (a classifier
//!   returning `TC_ACT_UNSPEC`, measured in the same rounds); XDP:
//!   `established_ts` (an ACK whose TSecr is the one its flow looked up
//!   last: nothing to match). Target of these three: no more than the
//!   packet without a timestamp on the same hook + 5 ns (issue 11 item 5).
//! - **driver** (`echo_lookup`, `floor_echo`): `netmon_bench_echo` adds
//!   one to the frame's TSecr in place and tail-calls netmon (or the
//!   floor), so every run looks an echo up in `RTT_PENDING`: a lookup that
//!   misses (nothing is pending), the common case (a flow records one
//!   TSval in four, and every new TSecr is looked up).
//! - **repeat=1** (`rtt_record_repeat1`, `rtt_match_repeat1`): per round
//!   [`RTT_PAIRS`] timestamps recorded by the TC program (each a new TSval
//!   that the rate limit lets through: a multiple of 4) and matched by the XDP program
//!   (each a sample in the ring), every call interleaved with the floor of
//!   its hook at repeat=1 on the same frame: the whole cost of a record
//!   (a `bpf_ktime_get_ns` and an insert) and of a match (lookup, clock,
//!   delete, ring output).
//!
//! Loaded with an object without passive RTT (no `RTT_PENDING`: an older
//! build, for a before/after run), the RTT cases are left out.
//!
//! After every case the program's own counters are read back, so the bench
//! fails if a case does not take the path it is named after; after every
//! new_flow round the packets in the ring and the slots must add up to the
//! packets the round sent.

use crate::util::{median, write_report};
use std::{
    fmt::Write as _,
    fs,
    mem::size_of,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use netmon::sys::{Counting, FlowMaps, Global, Object, RttMaps, object::TestRunOptions};
use netmon_common::{
    Counters, DEFAULT_RTT_PENDING, DIR_RX, DIR_TX, FlowSlot, RttSample, TC_PROGRAM, XDP_PROGRAM,
    bench::{
        CYCLE_BASE_GLOBAL, CYCLE_GLOBAL, ECHO_OFFSET, ECHO_PROGRAM,
        FLOOR_PROGRAM as XDP_FLOOR_PROGRAM, NEW_FLOW_OFFSET as BENCH_NEW_FLOW_OFFSET,
        NEW_FLOW_PROGRAM as XDP_BENCH_NEW_FLOW_PROGRAM, TAIL_MAP, TC_FLOOR_PROGRAM,
    },
};
use netmon_tests::frames;
use serde_json::{Value, json};

/// Runs per `BPF_PROG_TEST_RUN` call in the repeat-based cases.
const REPEAT: u32 = 5_000_000;
/// Rounds; every figure is a median over rounds.
const ROUNDS: usize = 7;
/// New flows (repeat=1 calls) per round in `new_flow`: over ten times the
/// slots, so that nearly every one evicts an occupant.
const NEW_FLOWS: u32 = 60_000;
/// Runs per call of the tail-call `new_flow` method. Each call's evictions
/// (8,000 at most) fit a CPU's ring (16,384 entries at least), which is
/// read after every call.
const NF_REPEAT: u32 = 8000;
/// Calls per round and per program (the floor and netmon alternate) of the
/// tail-call method.
const NF_CALLS: u32 = 25;
/// Slots per CPU: netmon's default on this machine (a quarter of the L2).
pub(crate) static SLOTS: std::sync::LazyLock<u32> = std::sync::LazyLock::new(default_slots);

fn default_slots() -> u32 {
    let l2 = fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index2/size")
        .ok()
        .and_then(|s| netmon_common::parse_cache_size(&s));
    netmon_common::default_flow_slots(l2, size_of::<FlowSlot>() as u64)
}
/// Eviction ring entries per CPU: netmon's default on this machine, or
/// `NETMON_BENCH_RING_ENTRIES` (a power of two, 16,384 at least: what a new
/// flow costs by ring size).
fn ring_entries() -> Result<u32> {
    if let Some(s) = std::env::var("NETMON_BENCH_RING_ENTRIES")
        .ok()
        .filter(|s| !s.is_empty())
    {
        let n = s
            .parse::<u32>()
            .ok()
            .filter(|n| n.is_power_of_two() && *n >= 16_384);
        return n.with_context(|| {
            format!("NETMON_BENCH_RING_ENTRIES: {s:?} is not a power of two >= 16384")
        });
    }
    let ids = netmon::sys::possible_cpus().map_or(1, |ids| ids.iter().max().map_or(1, |m| m + 1));
    Ok(netmon_common::ring_entries_per_cpu(ids))
}
/// The bench reads the ring after this many new flows, as netmon's poller
/// would: well before it fills (one entry per evicted flow, a CPU's ring
/// 16,384 entries at least).
const DRAIN_EVERY: u32 = 1000;
const _: () = assert!(2 * DRAIN_EVERY < 16_384 && NF_REPEAT < 16_384);
/// Frame length of the full-size cases: a minimum Ethernet frame (64 bytes
/// on the wire with the FCS, which XDP does not see, so 60 here) rounded
/// up to the 64 bytes of the calibration figures.
const FRAME_LEN: usize = 64;
/// Targets, ns above the floor (issue 3).
const TARGET_ESTABLISHED: f64 = 20.0;
const TARGET_NEW_FLOW: f64 = 60.0;
/// What a packet with nothing to record or match may cost beyond the same
/// packet without passive RTT's work (issue 11): its row is held to the
/// row of the packet without a timestamp on the same hook plus this.
const TARGET_NOTHING_TO_MATCH: f64 = 5.0;
/// Timestamps recorded and matched per round of the repeat=1 RTT cases
/// (the ring holds over 4,000 samples; it is read after every round).
const RTT_PAIRS: u32 = 3000;
const XDP_PASS: u32 = 2;
/// `TC_ACT_UNSPEC` as a test run's return value.
const TC_ACT_UNSPEC: u32 = u32::MAX;

pub fn run(ctx: &crate::Ctx) -> Result<()> {
    let started = Instant::now();
    let objects = Objects::read(ctx)?;
    pin_to_one_cpu()?;
    let mut bench = Bench::load(&objects)?;

    crate::step(&format!(
        "XDP per-packet cost: {ROUNDS} rounds of {REPEAT} repeats per case, and {ROUNDS} rounds \
         of {NEW_FLOWS} new flows at repeat=1"
    ));
    if !bench.has_rtt() {
        crate::step("the shipped object has no passive RTT (no RTT_PENDING): its cases left out");
    }
    let repeat_cases: Vec<Case> = repeat_cases()
        .into_iter()
        .filter(|c| !c.rtt || bench.has_rtt())
        .collect();
    // Prime: insert each case's flow, and check the case takes its path.
    for case in &repeat_cases {
        let before = bench.counters_of(case.hook)?;
        bench.run_once(Prog::netmon(case.hook), &case.frame, 1)?;
        let delta = bench.counters_of(case.hook)?.minus(&before);
        (case.check)(&delta).with_context(|| format!("case {} took the wrong path", case.name))?;
    }
    let quiet_before = bench.quiet_counts()?;

    // Repeat-based rounds. The order of the cases and the two floors
    // rotates from round to round so that no case always runs first (or
    // right after a floor). Each hook's floor runs on its first case's frame.
    let first = |hook: Hook| {
        repeat_cases
            .iter()
            .find(|c| c.hook == hook)
            .map(|c| c.frame.clone())
            .expect("a case on each hook")
    };
    let floors = [
        (Prog::Floor, first(Hook::Xdp)),
        (Prog::TcFloor, first(Hook::Tc)),
    ];
    let mut floor_rounds = [Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS)];
    let mut case_rounds: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); repeat_cases.len()];
    for round in 0..ROUNDS {
        let n = repeat_cases.len() + floors.len();
        for k in 0..n {
            let slot = (k + round) % n;
            if let Some((prog, frame)) = floors.get(slot) {
                floor_rounds[slot].push(bench.run_once(*prog, frame, REPEAT)?);
            } else {
                let i = slot - floors.len();
                let case = &repeat_cases[i];
                case_rounds[i].push(bench.run_once(
                    Prog::netmon(case.hook),
                    &case.frame,
                    REPEAT,
                )?);
            }
        }
        eprint!(".");
    }
    eprintln!();
    let quiet_after = bench.quiet_counts()?;
    ensure!(
        quiet_after == quiet_before,
        "the repeat-based cases started flow records or did passive-RTT work (flow records rx, \
         tx; RTT recorded, samples, ambiguous; before {quiet_before:?}, after {quiet_after:?}): \
         they are not measuring established flows with nothing to record or match"
    );

    // new_flow with the driver and tail calls: a new flow on every run.
    let established = first(Hook::Xdp);
    let mut tail_rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        tail_rounds.push(new_flow_tail_round(&mut bench, &established)?);
        eprint!(".");
    }
    eprintln!();

    // new_flow at repeat=1, with its own floor and an established control.
    let mut nf_rounds = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        nf_rounds.push(new_flow_round(&mut bench, round as u32, &established)?);
        eprint!(".");
    }
    eprintln!();
    bench.clear_flows()?;

    let (echo_rounds, rtt_rounds) = if bench.has_rtt() {
        rtt_rounds(&mut bench)?
    } else {
        (Vec::new(), Vec::new())
    };

    let report = Report::new(
        &floor_rounds,
        &repeat_cases,
        &case_rounds,
        &tail_rounds,
        &nf_rounds,
        &echo_rounds,
        &rtt_rounds,
    );
    print!("{}", report.table());
    let json = report.json(started.elapsed());
    crate::util::print_machine(&json["machine"]);
    let path = write_report(&ctx.out_dir, "xdp.json", &json)?;
    println!("written: {}", path.display());
    for missed in report.missed() {
        println!("TARGET MISSED: {missed}");
    }
    Ok(())
}

/// Mean ns per run of a round's floor calls and netmon calls.
type FloorAndNetmon = (f64, f64);

/// The passive-RTT rounds: an echo looked up on every run (the echo
/// driver), and records and matches at repeat=1.
fn rtt_rounds(bench: &mut Bench) -> Result<(Vec<FloorAndNetmon>, Vec<RttSummary>)> {
    let mut frame = echo_lookup_frame();
    bench.run_once(Prog::Netmon, &frame, 1)?;
    let mut echo_rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        echo_rounds.push(echo_tail_round(bench, &mut frame)?);
        eprint!(".");
    }
    eprintln!();
    let mut rtt_rounds = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        rtt_rounds.push(rtt_round(bench, round as u32)?);
        eprint!(".");
    }
    eprintln!();
    Ok((echo_rounds, rtt_rounds))
}

/// One round of `echo_lookup`: [`NF_CALLS`] calls of [`NF_REPEAT`] runs of
/// the echo driver into netmon, alternating with as many into the floor;
/// every run echoes a TSecr its flow has not looked up (the driver adds one
/// in place, and each call starts from the frame the last one left), and
/// nothing is pending, so every run is one lookup that misses. Returns the
/// mean ns per run of the floor calls and of the netmon calls, after
/// checking that every packet counted and none started a flow or a sample.
fn echo_tail_round(bench: &mut Bench, frame: &mut Vec<u8>) -> Result<(f64, f64)> {
    let before = bench.counters()?;
    let (mut floor, mut netmon) = (Vec::new(), Vec::new());
    for _ in 0..NF_CALLS {
        bench.set_tail(Prog::Floor)?;
        floor.push(bench.run_echo_driver(frame, NF_REPEAT)?);
        bench.set_tail(Prog::Netmon)?;
        netmon.push(bench.run_echo_driver(frame, NF_REPEAT)?);
    }
    let sent = u64::from(NF_CALLS * NF_REPEAT);
    let d = bench.counters()?.minus(&before);
    ensure!(
        d.tcp == sent && d.flow_records == 0 && d.rtt_samples + d.rtt_ambiguous == 0,
        "echo_lookup: {} packets, {} flow records, {} samples, {} ambiguous; expected {sent}, \
         0, 0, 0",
        d.tcp,
        d.flow_records,
        d.rtt_samples,
        d.rtt_ambiguous
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok((mean(&floor), mean(&netmon)))
}

/// Per-call durations of one round of the repeat=1 RTT cases.
#[derive(Default)]
struct RttRound {
    tc_floor: Vec<f64>,
    record: Vec<f64>,
    xdp_floor: Vec<f64>,
    matched: Vec<f64>,
}

/// One round of `rtt_record_repeat1` and `rtt_match_repeat1`: [`RTT_PAIRS`]
/// times, the TC program records a new TSval (a multiple of 4, which the
/// rate limit records; repeat=1, after the TC floor on the same frame),
/// and the XDP program matches its echo (repeat=1, after the XDP floor on
/// the same frame). Checks that every TSval was recorded and every echo
/// gave a sample.
fn rtt_round(bench: &mut Bench, round: u32) -> Result<RttSummary> {
    let (tx_before, rx_before) = (bench.counters_of(Hook::Tc)?, bench.counters()?);
    let mut r = RttRound::default();
    for i in 0..RTT_PAIRS {
        let ts = 4 * (round * RTT_PAIRS + i + 1);
        let (sent, echo) = rtt_pair_frames(ts);
        r.tc_floor.push(bench.run_once(Prog::TcFloor, &sent, 1)?);
        r.record.push(bench.run_once(Prog::TcNetmon, &sent, 1)?);
        r.xdp_floor.push(bench.run_once(Prog::Floor, &echo, 1)?);
        r.matched.push(bench.run_once(Prog::Netmon, &echo, 1)?);
    }
    let samples = bench.drain_rtt_samples();
    let tx = bench.counters_of(Hook::Tc)?.minus(&tx_before);
    let rx = bench.counters()?.minus(&rx_before);
    let n = u64::from(RTT_PAIRS);
    ensure!(
        tx.rtt_recorded == n && rx.rtt_samples == n && samples == n,
        "rtt round {round}: {} recorded, {} samples counted, {samples} in the ring; expected {n}",
        tx.rtt_recorded,
        rx.rtt_samples
    );
    let stat = |v: &[f64]| (trimmed_mean(v), median(v));
    Ok(RttSummary {
        tc_floor: stat(&r.tc_floor),
        record: stat(&r.record),
        xdp_floor: stat(&r.xdp_floor),
        matched: stat(&r.matched),
    })
}

/// Per series of one RTT round: as [`NewFlowSummary`].
struct RttSummary {
    tc_floor: (f64, f64),
    record: (f64, f64),
    xdp_floor: (f64, f64),
    matched: (f64, f64),
}

/// One round of the tail-call `new_flow`: [`NF_CALLS`] calls of
/// [`NF_REPEAT`] runs of the driver into netmon, alternating with as many
/// into the floor; every run is a new flow (the driver changes the source
/// address, and each call starts from the frame the last one left). Returns
/// the mean ns per run of the floor calls and of the netmon calls, after
/// checking that every packet started a flow record and is accounted for.
fn new_flow_tail_round(bench: &mut Bench, frame: &[u8]) -> Result<(f64, f64)> {
    bench.clear_flows()?;
    let before = bench.counters()?;
    let mut frame = frame.to_vec();
    let (mut floor, mut netmon) = (Vec::new(), Vec::new());
    let (mut evictions, mut in_ring) = (0, 0);
    for _ in 0..NF_CALLS {
        bench.set_tail(Prog::Floor)?;
        floor.push(bench.run_driver(&mut frame, NF_REPEAT)?);
        bench.set_tail(Prog::Netmon)?;
        netmon.push(bench.run_driver(&mut frame, NF_REPEAT)?);
        let (e, p) = bench.drain_ring();
        evictions += e;
        in_ring += p;
    }
    let sent = u64::from(NF_CALLS * NF_REPEAT);
    let delta = bench.counters()?.minus(&before);
    ensure!(
        delta.tcp == sent && delta.flow_records == sent && delta.flow_insert_failed == 0,
        "tail-call new_flow: {} packets, {} flow records, {} not counted to a flow; expected \
         {sent}, {sent}, 0",
        delta.tcp,
        delta.flow_records,
        delta.flow_insert_failed
    );
    let evictions = bench.check_conserved("tail-call new_flow", (evictions, in_ring), sent)?;
    ensure!(
        evictions + u64::from(*SLOTS) >= sent,
        "tail-call new_flow: only {evictions} of {sent} new flows evicted an occupant"
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok((mean(&floor), mean(&netmon)))
}

/// One round of `new_flow`: [`NEW_FLOWS`] new flows, each with the floor
/// and the established control, then the checks that every packet is
/// accounted for.
fn new_flow_round(bench: &mut Bench, round: u32, established: &[u8]) -> Result<NewFlowSummary> {
    bench.clear_flows()?;
    // The control's flow must be in the (just emptied) table.
    bench.run_once(Prog::Netmon, established, 1)?;
    let before = bench.counters()?;
    let mut r = NewFlowRound::default();
    let (mut evictions, mut in_ring) = (0, 0);
    for i in 0..NEW_FLOWS {
        let frame = new_flow_frame(round * NEW_FLOWS + i);
        r.floor.push(bench.run_once(Prog::Floor, &frame, 1)?);
        r.new_flow.push(bench.run_once(Prog::Netmon, &frame, 1)?);
        r.established
            .push(bench.run_once(Prog::Netmon, established, 1)?);
        if i % DRAIN_EVERY == DRAIN_EVERY - 1 {
            let (e, p) = bench.drain_ring();
            evictions += e;
            in_ring += p;
        }
    }
    let delta = bench.counters()?.minus(&before);
    ensure!(
        delta.flow_insert_failed == 0 && delta.tcp == u64::from(2 * NEW_FLOWS),
        "new_flow round {round}: {} packets could not be counted to a flow",
        delta.flow_insert_failed
    );
    ensure!(
        delta.flow_records >= u64::from(NEW_FLOWS),
        "new_flow round {round}: {} flow records started, expected at least {NEW_FLOWS}",
        delta.flow_records
    );
    // Conservation: every packet of the round (and the control's
    // priming packet) is in the ring or in a slot.
    let (e, p) = bench.drain_ring();
    let evictions = bench.check_conserved(
        &format!("new_flow round {round}"),
        (evictions + e, in_ring + p),
        u64::from(2 * NEW_FLOWS) + 1,
    )?;
    ensure!(
        evictions * 10 >= u64::from(NEW_FLOWS) * 9,
        "new_flow round {round}: only {evictions} of {NEW_FLOWS} new flows evicted an occupant"
    );
    Ok(r.summarise())
}

/// The two kernel objects the benches are given: the shipped one and the
/// bench one.
pub(crate) struct Objects {
    pub shipped: Vec<u8>,
    pub bench: Vec<u8>,
}

impl Objects {
    pub(crate) fn read(ctx: &crate::Ctx) -> Result<Self> {
        let read = |path: &std::path::Path| {
            fs::read(path).with_context(|| {
                format!(
                    "cannot read the kernel object {}; build it with `cargo xtask build`",
                    path.display()
                )
            })
        };
        Ok(Self {
            shipped: read(&ctx.object)?,
            bench: read(&ctx.bench_object)?,
        })
    }
}

/// netmon's program (the shipped object, loaded as netmon loads it, its
/// maps taken out) and the bench object's floor and driver.
pub(crate) struct Bench {
    netmon: Object,
    maps: FlowMaps,
    /// The passive-RTT maps, if the shipped object has them.
    rtt: Option<RttMaps>,
    /// The bench object: the floors and the drivers.
    harness: Object,
}

/// The hook a case runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    /// XDP ingress (`netmon_xdp`).
    Xdp,
    /// TC egress (`netmon_tc`).
    Tc,
}

#[derive(Clone, Copy)]
pub(crate) enum Prog {
    /// The XDP floor.
    Floor,
    /// netmon's XDP program.
    Netmon,
    /// The TC floor.
    TcFloor,
    /// netmon's TC program.
    TcNetmon,
}

impl Prog {
    fn name(self) -> &'static str {
        match self {
            Prog::Floor => XDP_FLOOR_PROGRAM,
            Prog::Netmon => XDP_PROGRAM,
            Prog::TcFloor => TC_FLOOR_PROGRAM,
            Prog::TcNetmon => TC_PROGRAM,
        }
    }

    fn netmon(hook: Hook) -> Prog {
        match hook {
            Hook::Xdp => Prog::Netmon,
            Hook::Tc => Prog::TcNetmon,
        }
    }

    fn hook(self) -> Hook {
        match self {
            Prog::Floor | Prog::Netmon => Hook::Xdp,
            Prog::TcFloor | Prog::TcNetmon => Hook::Tc,
        }
    }
}

impl Bench {
    fn load(objects: &Objects) -> Result<Self> {
        Self::load_cycling(objects, 0, 0)
    }

    /// Loads both objects, with the driver cycling through `cycle` source
    /// addresses from `base` (host order); `cycle` 0: no cycle.
    pub(crate) fn load_cycling(objects: &Objects, cycle: u32, base: u32) -> Result<Self> {
        let counting = Counting {
            slots_per_cpu: *SLOTS,
            hash_seed: 0x5eed_5eed_5eed_5eed,
            ring_entries_per_cpu: ring_entries()?,
            rtt_pending: DEFAULT_RTT_PENDING,
        };
        let (mut netmon, mut maps) = Object::load_counting(&objects.shipped, &counting)
            .context("loading the shipped object failed")?;
        netmon.load_xdp(XDP_PROGRAM)?;
        netmon.load_tc(TC_PROGRAM)?;
        let rtt = RttMaps::take(&mut netmon)?;
        // A nonzero clock, as netmon publishes one (the cost of reading it
        // does not depend on its value).
        maps.set_clock(1_000_000_000)?;
        let mut harness = Object::load_with(
            &objects.bench,
            &[
                (CYCLE_GLOBAL, Global::U32(cycle)),
                (CYCLE_BASE_GLOBAL, Global::U32(base)),
            ],
            &[],
        )
        .context("loading the bench object failed")?;
        for name in [XDP_FLOOR_PROGRAM, XDP_BENCH_NEW_FLOW_PROGRAM, ECHO_PROGRAM] {
            harness.load_xdp(name)?;
        }
        harness.load_tc(TC_FLOOR_PROGRAM)?;
        Ok(Bench {
            netmon,
            maps,
            rtt,
            harness,
        })
    }

    /// Whether the shipped object has passive RTT.
    fn has_rtt(&self) -> bool {
        self.rtt.is_some()
    }

    /// Takes the samples out of the RTT ring; returns how many.
    fn drain_rtt_samples(&mut self) -> u64 {
        let mut samples: Vec<RttSample> = Vec::new();
        if let Some(rtt) = &mut self.rtt {
            rtt.drain_samples(&mut samples);
        }
        samples.len() as u64
    }

    /// This machine's counters of `hook`'s direction, summed over CPUs.
    fn counters_of(&self, hook: Hook) -> Result<Counters> {
        let dir = match hook {
            Hook::Xdp => DIR_RX,
            Hook::Tc => DIR_TX,
        };
        Ok(self.maps.counters_of(dir)?)
    }

    /// What a packet of an established flow with nothing to record or
    /// match must leave as it was: flow records (rx, tx) and the RTT work
    /// (recorded, pending full, samples, samples lost, ambiguous).
    fn quiet_counts(&self) -> Result<[u64; 7]> {
        let (rx, tx) = (self.counters_of(Hook::Xdp)?, self.counters_of(Hook::Tc)?);
        Ok([
            rx.flow_records,
            tx.flow_records,
            tx.rtt_recorded,
            tx.rtt_pending_full,
            rx.rtt_samples,
            rx.rtt_samples_lost,
            rx.rtt_ambiguous,
        ])
    }

    /// The object that holds program `name`.
    fn object(&self, name: &str) -> &Object {
        if name == XDP_PROGRAM || name == TC_PROGRAM {
            &self.netmon
        } else {
            &self.harness
        }
    }

    /// One `BPF_PROG_TEST_RUN`; returns the kernel's average ns per run and
    /// checks the verdict and that the frame came back unchanged.
    fn run_once(&mut self, prog: Prog, frame: &[u8], repeat: u32) -> Result<f64> {
        let (ns, out) = match prog.hook() {
            Hook::Xdp => self.test_run(prog.name(), frame, repeat)?,
            Hook::Tc => self.test_run_tc(prog.name(), frame, repeat)?,
        };
        ensure!(
            out == frame,
            "{}: the program changed the frame",
            prog.name()
        );
        Ok(ns)
    }

    /// As [`Self::test_run`], for the TC program `name` (the frame as an
    /// skb): checks the verdict `TC_ACT_UNSPEC`.
    fn test_run_tc(&mut self, name: &str, frame: &[u8], repeat: u32) -> Result<(f64, Vec<u8>)> {
        let mut out = vec![0u8; frame.len() + 256];
        let object = if name == TC_PROGRAM {
            &mut self.netmon
        } else {
            &mut self.harness
        };
        let res = object
            .test_run_tc(
                name,
                TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    repeat,
                    ..TestRunOptions::new()
                },
            )
            .context("BPF_PROG_TEST_RUN (tc) failed")?;
        ensure!(
            res.return_value == TC_ACT_UNSPEC,
            "{name}: verdict {} instead of TC_ACT_UNSPEC",
            res.return_value
        );
        out.truncate(res.data_size_out as usize);
        Ok((res.duration.as_nanos() as f64, out))
    }

    /// `repeat` runs of `name` on `frame`: the kernel's average ns per run
    /// and the frame it handed back, after checking the verdict.
    pub(crate) fn test_run(&self, name: &str, frame: &[u8], repeat: u32) -> Result<(f64, Vec<u8>)> {
        let mut out = vec![0u8; frame.len() + 256];
        let res = self
            .object(name)
            .test_run(
                name,
                TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    repeat,
                    ..TestRunOptions::new()
                },
            )
            .context("BPF_PROG_TEST_RUN failed")?;
        ensure!(
            res.return_value == XDP_PASS,
            "{name}: verdict {} instead of XDP_PASS",
            res.return_value
        );
        out.truncate(res.data_size_out as usize);
        Ok((res.duration.as_nanos() as f64, out))
    }

    /// Points the driver's tail call at `prog` (netmon's program: in the
    /// other object).
    pub(crate) fn set_tail(&mut self, prog: Prog) -> Result<()> {
        let target = self.object(prog.name()).program(prog.name())?;
        self.harness
            .set_tail_call(TAIL_MAP, 0, &target)
            .context("setting the driver's tail call")?;
        Ok(())
    }

    /// `repeat` runs of the driver on `frame`, which then holds the frame
    /// the last run left (the source address moved on by `repeat`). Checks
    /// that nothing but the source address changed.
    fn run_driver(&self, frame: &mut Vec<u8>, repeat: u32) -> Result<f64> {
        let (ns, out) = self.test_run(XDP_BENCH_NEW_FLOW_PROGRAM, frame, repeat)?;
        let addr = BENCH_NEW_FLOW_OFFSET..BENCH_NEW_FLOW_OFFSET + 4;
        ensure!(
            out.len() == frame.len()
                && out[..addr.start] == frame[..addr.start]
                && out[addr.end..] == frame[addr.end..],
            "the frame changed beyond the driver's source address"
        );
        let src = |f: &[u8]| u32::from_le_bytes(f[addr.clone()].try_into().expect("4 bytes"));
        let runs = src(&out).wrapping_sub(src(frame));
        ensure!(runs == repeat, "the driver ran {runs} times, not {repeat}");
        *frame = out;
        Ok(ns)
    }

    /// `repeat` runs of the echo driver on `frame`, which then holds the
    /// frame the last run left (the TSecr moved on by `repeat`). Checks
    /// that nothing but the TSecr changed.
    fn run_echo_driver(&self, frame: &mut Vec<u8>, repeat: u32) -> Result<f64> {
        let (ns, out) = self.test_run(ECHO_PROGRAM, frame, repeat)?;
        let at = ECHO_OFFSET..ECHO_OFFSET + 4;
        ensure!(
            out.len() == frame.len()
                && out[..at.start] == frame[..at.start]
                && out[at.end..] == frame[at.end..],
            "the frame changed beyond the echo driver's TSecr"
        );
        let tsecr = |f: &[u8]| u32::from_be_bytes(f[at.clone()].try_into().expect("4 bytes"));
        let runs = tsecr(&out).wrapping_sub(tsecr(frame));
        ensure!(
            runs == repeat,
            "the echo driver ran {runs} times, not {repeat}"
        );
        *frame = out;
        Ok(ns)
    }

    /// This machine's counters summed over CPUs.
    pub(crate) fn counters(&self) -> Result<Counters> {
        Ok(self.maps.counters()?)
    }

    /// Checks that `sent` packets are all accounted for: `drained` (evicted
    /// flows and their packets taken from the rings so far), the evictions
    /// not read yet and the slots. Returns the evicted flows in all.
    pub(crate) fn check_conserved(
        &self,
        what: &str,
        drained: (u64, u64),
        sent: u64,
    ) -> Result<u64> {
        let (e, p) = self.unread();
        let (evictions, evicted) = (drained.0 + e, drained.1 + p);
        let in_slots = self.packets_in_slots()?;
        ensure!(
            evicted + in_slots == sent,
            "{what}: {evicted} packets in the rings (read or not) and {in_slots} in the \
             slots, expected {sent}"
        );
        Ok(evictions)
    }

    /// Packets of the flows now in a slot, all CPUs.
    fn packets_in_slots(&self) -> Result<u64> {
        Ok(self.maps.slots()?.iter().map(|s| s.value.packets).sum())
    }

    /// Empties the rings: (evictions, packets in them).
    pub(crate) fn drain_ring(&mut self) -> (u64, u64) {
        let (mut evictions, mut packets) = (0, 0);
        let mut out = Vec::new();
        while {
            out.clear();
            let more = self.maps.drain_evicted(&mut out, 1 << 16);
            for s in &out {
                evictions += 1;
                packets += s.value.packets;
            }
            more
        } {}
        (evictions, packets)
    }

    /// Evictions in the rings not read yet, all CPUs: (evictions, packets).
    fn unread(&self) -> (u64, u64) {
        let unread = self.maps.unread_evicted();
        let packets = unread.iter().map(|(_, e)| e.value.packets).sum();
        (unread.len() as u64, packets)
    }

    /// Empties the slots of every CPU and the ring.
    pub(crate) fn clear_flows(&mut self) -> Result<()> {
        Ok(self.maps.clear_flows()?)
    }
}

/// Pins this process to the CPU it runs on, so that every test run uses the
/// same CPU's slots.
pub(crate) fn pin_to_one_cpu() -> Result<()> {
    // SAFETY: plain libc calls on a zeroed cpu_set_t owned here.
    unsafe {
        let cpu = libc::sched_getcpu();
        ensure!(cpu >= 0, "sched_getcpu failed");
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        ensure!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) == 0,
            "sched_setaffinity failed: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// A repeat-based case: its hook, its frame, what it is, and the counter
/// delta (of its hook's direction) the priming run must produce.
struct Case {
    name: &'static str,
    what: &'static str,
    hook: Hook,
    frame: Vec<u8>,
    check: fn(&Counters) -> Result<()>,
    /// A passive-RTT case: left out with an object without it.
    rtt: bool,
    /// The case (on the same hook) whose cost plus
    /// [`TARGET_NOTHING_TO_MATCH`] is this one's target.
    target_vs: Option<&'static str>,
}

/// The cases, the first of each hook the one its floor runs on.
#[expect(clippy::too_many_lines, reason = "a table of cases")]
fn repeat_cases() -> Vec<Case> {
    fn case(
        name: &'static str,
        what: &'static str,
        frame: Vec<u8>,
        check: fn(&Counters) -> Result<()>,
    ) -> Case {
        Case {
            name,
            what,
            hook: Hook::Xdp,
            frame,
            check,
            rtt: false,
            target_vs: None,
        }
    }
    vec![
        case(
            "established",
            "IPv4/TCP (ACK), flow already in the table",
            ipv4_tcp_frame([198, 51, 100, 2], 40_000, &[]),
            |d| expect(d.packets == 1 && d.tcp == 1 && d.tcp_syn == 0, d),
        ),
        Case {
            rtt: true,
            target_vs: Some("established"),
            ..case(
                "established_ts",
                "IPv4/TCP (ACK) with a timestamp whose TSecr its flow looked up last (nothing \
                 to match), 66 bytes, flow in the table",
                ts_frame(
                    ([198, 51, 100, 8], 40_008),
                    ([198, 51, 100, 1], 9000),
                    2000,
                    0,
                ),
                |d| expect(d.packets == 1 && d.tcp == 1 && d.rtt_samples == 0, d),
            )
        },
        Case {
            hook: Hook::Tc,
            ..case(
                "tc_established",
                "egress (netmon_tc): IPv4/TCP (ACK), flow already in the table",
                ipv4_tcp_frame([198, 51, 100, 2], 40_000, &[]),
                |d| expect(d.packets == 1 && d.tcp == 1 && d.rtt_recorded == 0, d),
            )
        },
        Case {
            hook: Hook::Tc,
            rtt: true,
            target_vs: Some("tc_established"),
            ..case(
                "tc_established_ts",
                "egress (netmon_tc): IPv4/TCP data (16 bytes) with a timestamp whose TSval its \
                 flow sent before (nothing to record), 82 bytes, flow in the table",
                ts_frame(
                    ([198, 51, 100, 1], 9000),
                    ([198, 51, 100, 9], 40_009),
                    3000,
                    16,
                ),
                // The priming run is the TSval's first: recorded.
                |d| expect(d.packets == 1 && d.tcp == 1 && d.rtt_recorded == 1, d),
            )
        },
        case(
            "ipv6_udp",
            "IPv6/UDP, flow already in the table",
            ipv6_udp_frame(),
            |d| expect(d.packets == 1 && d.udp == 1, d),
        ),
        case(
            "qinq",
            "802.1ad + 802.1Q tags, IPv4/TCP, flow already in the table",
            ipv4_tcp_frame([198, 51, 100, 3], 40_001, &[(0x88A8, 100), (0x8100, 200)]),
            |d| expect(d.packets == 1 && d.tcp == 1, d),
        ),
        case(
            "vlan4",
            "four VLAN tags (802.1ad, 802.1Q x3), IPv4/TCP, 70 bytes, flow in the table",
            // Tags 100 (802.1ad), 200, 300, 400 (802.1Q), then IPv4.
            ipv4_tcp_behind(
                0x88A8,
                &[
                    0x00, 0x64, 0x81, 0x00, 0x00, 0xc8, 0x81, 0x00, 0x01, 0x2c, 0x81, 0x00, 0x01,
                    0x90, 0x08, 0x00,
                ],
                [198, 51, 100, 5],
            ),
            |d| expect(d.packets == 1 && d.tcp == 1 && d.other_l2 == 0, d),
        ),
        case(
            "mpls",
            "MPLS, two labels, IPv4/TCP, flow already in the table",
            // Label 16 (no bottom of stack), label 17 (bottom), TTL 64.
            ipv4_tcp_behind(
                0x8847,
                &[0x00, 0x01, 0x00, 0x40, 0x00, 0x01, 0x11, 0x40],
                [198, 51, 100, 6],
            ),
            |d| expect(d.packets == 1 && d.tcp == 1 && d.other_l2 == 0, d),
        ),
        case(
            "pppoe",
            "PPPoE session, PPP IPv4, IPv4/TCP, flow already in the table",
            // Version/type 0x11, code 0, session 1, length 48 (PPP protocol
            // and the 46-byte IP packet), protocol 0x0021.
            ipv4_tcp_behind(
                0x8864,
                &[0x11, 0x00, 0x00, 0x01, 0x00, 0x30, 0x00, 0x21],
                [198, 51, 100, 7],
            ),
            |d| expect(d.packets == 1 && d.tcp == 1 && d.other_l2 == 0, d),
        ),
        case(
            "ipv6_ah",
            "IPv6, AH (24 bytes), TCP (ACK), 98 bytes, flow already in the table",
            ipv6_ah_tcp_frame(),
            |d| expect(d.packets == 1 && d.tcp == 1 && d.other_ip == 0, d),
        ),
        case(
            "truncated",
            "IPv4/TCP cut 10 bytes into the TCP header (44 bytes)",
            ipv4_tcp_frame([198, 51, 100, 4], 40_002, &[])[..44].to_vec(),
            |d| expect(d.packets == 1 && d.malformed == 1 && d.tcp == 0, d),
        ),
    ]
}

fn expect(ok: bool, delta: &Counters) -> Result<()> {
    if ok {
        Ok(())
    } else {
        bail!("counter delta {delta:?}")
    }
}

/// The frame of new flow number `i`: source 198.51.100.x, a port that
/// differs from every other `i` (up to 254 * 64,000 flows).
fn new_flow_frame(i: u32) -> Vec<u8> {
    let host = 10 + (i / 64_000) as u8;
    let port = 1024 + (i % 64_000) as u16;
    ipv4_tcp_frame([198, 51, 100, host], port, &[])
}

const DST_V4: [u8; 4] = [198, 51, 100, 1];

/// An untagged IPv4/TCP frame from `src` to `dst` (address, port) with the
/// timestamp option first (NOP, NOP, timestamp): with `payload` 0 an ACK
/// echoing `ts` (TSval 1), else a data segment of `payload` bytes sending
/// TSval `ts` (TSecr 1).
fn ts_frame(src: ([u8; 4], u16), dst: ([u8; 4], u16), ts: u32, payload: usize) -> Vec<u8> {
    let (tsval, tsecr, flags) = if payload == 0 {
        (1, ts, frames::TCP_ACK)
    } else {
        (ts, 1, frames::TCP_ACK | frames::TCP_PSH)
    };
    frames::tcp_frame(
        frames::Addr::V4(src.0),
        frames::Addr::V4(dst.0),
        &frames::Segment {
            sport: src.1,
            dport: dst.1,
            seq: 1,
            ack: 1,
            flags,
            options: frames::ts_option(tsval, tsecr),
            payload,
        },
    )
}

/// The frame of `echo_lookup`: an ACK echoing TSecr 1 (the driver moves it
/// on), 198.51.100.10:40010 -> 198.51.100.1:9000, TSecr at `ECHO_OFFSET`.
fn echo_lookup_frame() -> Vec<u8> {
    let f = ts_frame(([198, 51, 100, 10], 40_010), (DST_V4, 9000), 1, 0);
    debug_assert_eq!(f[ECHO_OFFSET..ECHO_OFFSET + 4], 1u32.to_be_bytes());
    f
}

/// Pair `ts` of the repeat=1 RTT cases: a data segment sending TSval `ts`
/// (egress, 198.51.100.1:9000 -> 198.51.100.11:40011) and the ACK echoing it
/// (ingress, the other way).
fn rtt_pair_frames(ts: u32) -> (Vec<u8>, Vec<u8>) {
    let (host, peer) = ((DST_V4, 9000), ([198, 51, 100, 11], 40_011));
    (ts_frame(host, peer, ts, 16), ts_frame(peer, host, ts, 0))
}

/// A [`FRAME_LEN`]-byte IPv4/TCP frame (ACK) from `src`:`sport` to
/// 198.51.100.1:9000, behind the VLAN tags `(tpid, vid)` given.
pub(crate) fn ipv4_tcp_frame(src: [u8; 4], sport: u16, tags: &[(u16, u16)]) -> Vec<u8> {
    frames::ipv4_tcp(
        frames::ETH,
        tags,
        (src, sport),
        (DST_V4, 9000),
        frames::TCP_ACK,
        FRAME_LEN,
    )
}

/// An IPv4/TCP frame (ACK) from `src`:40004 to 198.51.100.1:9000 behind
/// EtherType `ether_type` and `shim` (VLAN tags, an MPLS label stack, a
/// PPPoE header): the frame of [`ipv4_tcp_frame`] with the IP packet
/// shortened by the shim's length, down to its 40 bytes of headers. So
/// [`FRAME_LEN`] bytes, or more for a shim longer than 10 bytes.
fn ipv4_tcp_behind(ether_type: u16, shim: &[u8], src: [u8; 4]) -> Vec<u8> {
    frames::ipv4_behind(&ipv4_tcp_frame(src, 40_004, &[]), ether_type, shim)
}

/// IPv6, 2001:db8::3 -> 2001:db8::1, an Authentication Header (RFC 4302,
/// payload length 4: 12 bytes and a 96-bit ICV), then TCP (ACK) 40005 ->
/// 9000: 98 bytes.
fn ipv6_ah_tcp_frame() -> Vec<u8> {
    frames::ipv6_ah_tcp(
        frames::ETH,
        (frames::v6(3), 40_005),
        (frames::v6(1), 9000),
        frames::TCP_ACK,
    )
}

/// A [`FRAME_LEN`]-byte IPv6/UDP frame, 2001:db8::2:40000 -> 2001:db8::1:9000.
fn ipv6_udp_frame() -> Vec<u8> {
    frames::ipv6_udp(
        frames::ETH,
        (frames::v6(2), 40_000),
        (frames::v6(1), 9000),
        FRAME_LEN,
    )
}

/// Per-call durations of one `new_flow` round.
#[derive(Default)]
struct NewFlowRound {
    floor: Vec<f64>,
    new_flow: Vec<f64>,
    established: Vec<f64>,
}

/// Per series of one round: the mean of the calls without the slowest
/// [`TRIM`] (interrupts and preemption hit single calls), and the median.
struct NewFlowSummary {
    floor: (f64, f64),
    new_flow: (f64, f64),
    established: (f64, f64),
}

impl NewFlowRound {
    fn summarise(self) -> NewFlowSummary {
        let stat = |v: &[f64]| (trimmed_mean(v), median(v));
        NewFlowSummary {
            floor: stat(&self.floor),
            new_flow: stat(&self.new_flow),
            established: stat(&self.established),
        }
    }
}

/// Share of the slowest calls left out of a repeat=1 mean.
const TRIM: f64 = 0.01;

/// The mean of `v` without its slowest [`TRIM`]. A mean, not a median:
/// the per-packet cost is the average over every kind of call (a new flow
/// that evicts or not, a cache line the last call left cold or not).
fn trimmed_mean(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let keep = ((v.len() as f64) * (1.0 - TRIM)).ceil() as usize;
    let kept = &v[..keep.clamp(1, v.len())];
    kept.iter().sum::<f64>() / kept.len() as f64
}

fn spread(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// One row of the result.
struct Row {
    name: &'static str,
    what: String,
    method: String,
    ns: f64,
    floor_ns: f64,
    rounds: Vec<f64>,
    /// repeat=1 rows: the median over rounds of the per-call medians.
    call_median_ns: Option<f64>,
    target: Option<f64>,
}

impl Row {
    fn over(&self) -> f64 {
        self.ns - self.floor_ns
    }
    fn met(&self) -> Option<bool> {
        self.target.map(|t| self.over() <= t)
    }
}

struct Report {
    /// The floors, each row's own among them (`floor_ns` of a row).
    floors: Vec<Row>,
    rows: Vec<Row>,
}

impl Report {
    #[expect(clippy::too_many_lines, reason = "one row after the other")]
    fn new(
        floor_rounds: &[Vec<f64>; 2],
        cases: &[Case],
        case_rounds: &[Vec<f64>],
        tail: &[(f64, f64)],
        nf: &[NewFlowSummary],
        echo: &[(f64, f64)],
        rtt: &[RttSummary],
    ) -> Report {
        let (floor_tail, new_flow) = Self::tail_rows(tail);
        let repeat_method = format!("repeat={REPEAT}, median of {ROUNDS} rounds");
        let r1_method = format!(
            "repeat=1, {NEW_FLOWS} calls/round into {} slots (nearly all evict), 99 % mean \
             per round, median of {ROUNDS} rounds",
            *SLOTS
        );
        let floor_row = |name: &'static str, what: String, rounds: &[f64]| {
            let ns = median(rounds);
            Row {
                name,
                what,
                method: repeat_method.clone(),
                ns,
                floor_ns: ns,
                rounds: rounds.to_vec(),
                call_median_ns: None,
                target: None,
            }
        };
        let floor = floor_row(
            "floor",
            format!("{XDP_FLOOR_PROGRAM}: returns XDP_PASS only"),
            &floor_rounds[0],
        );
        let tc_floor = floor_row(
            "tc_floor",
            format!("{TC_FLOOR_PROGRAM}: returns TC_ACT_UNSPEC only (skb test run)"),
            &floor_rounds[1],
        );
        let mut rows = Vec::new();
        for (case, rounds) in cases.iter().zip(case_rounds) {
            let floor_ns = match case.hook {
                Hook::Xdp => floor.ns,
                Hook::Tc => tc_floor.ns,
            };
            rows.push(Row {
                name: case.name,
                what: case.what.to_owned(),
                method: repeat_method.clone(),
                ns: median(rounds),
                floor_ns,
                rounds: rounds.clone(),
                call_median_ns: None,
                target: (case.name == "established").then_some(TARGET_ESTABLISHED),
            });
        }
        // Nothing to match: no more than the same hook's packet without a
        // timestamp, plus TARGET_NOTHING_TO_MATCH.
        for case in cases {
            let Some(vs) = case.target_vs else { continue };
            let base = rows.iter().find(|r| r.name == vs).map(Row::over);
            if let (Some(base), Some(row)) = (base, rows.iter_mut().find(|r| r.name == case.name)) {
                row.target = Some(base + TARGET_NOTHING_TO_MATCH);
            }
        }
        let pick = |f: fn(&NewFlowSummary) -> (f64, f64)| -> (f64, f64, Vec<f64>) {
            let means: Vec<f64> = nf.iter().map(|s| f(s).0).collect();
            let call_medians: Vec<f64> = nf.iter().map(|s| f(s).1).collect();
            (median(&means), median(&call_medians), means)
        };
        let (f_med, f_mean, f_rounds) = pick(|s| s.floor);
        let floor_r1 = Row {
            name: "floor_repeat1",
            what: format!("{XDP_FLOOR_PROGRAM} on each new_flow frame, repeat=1"),
            method: r1_method.clone(),
            ns: f_med,
            floor_ns: f_med,
            rounds: f_rounds,
            call_median_ns: Some(f_mean),
            target: None,
        };
        // After the first row (established).
        rows.insert(1, new_flow);
        let (n_med, n_mean, n_rounds) = pick(|s| s.new_flow);
        rows.push(Row {
            name: "new_flow_repeat1",
            what: "new flows one test run each (distinct source port/address): a new flow \
                   arriving alone, caches cold"
                .to_owned(),
            method: r1_method.clone(),
            ns: n_med,
            floor_ns: f_med,
            rounds: n_rounds,
            call_median_ns: Some(n_mean),
            target: None,
        });
        let (e_med, e_mean, e_rounds) = pick(|s| s.established);
        rows.push(Row {
            name: "established_repeat1",
            what: "control: the established frame measured like new_flow (repeat=1)".to_owned(),
            method: r1_method,
            ns: e_med,
            floor_ns: f_med,
            rounds: e_rounds,
            call_median_ns: Some(e_mean),
            target: None,
        });
        let mut floors = vec![floor, tc_floor, floor_tail, floor_r1];
        if !echo.is_empty() {
            let (floor_echo, echo_lookup) = Self::echo_rows(echo);
            floors.push(floor_echo);
            rows.push(echo_lookup);
        }
        if !rtt.is_empty() {
            let (rtt_floors, rtt_rows) = Self::rtt_rows(rtt);
            floors.extend(rtt_floors);
            rows.extend(rtt_rows);
        }
        Report { floors, rows }
    }

    /// The rows of the tail-call method: its floor, and `new_flow`.
    fn tail_rows(tail: &[(f64, f64)]) -> (Row, Row) {
        let tail_method = format!(
            "{XDP_BENCH_NEW_FLOW_PROGRAM} + tail call, {NF_CALLS} calls of repeat={NF_REPEAT} per \
             round into {} slots, mean per round, median of {ROUNDS} rounds",
            *SLOTS
        );
        let tail_floor: Vec<f64> = tail.iter().map(|t| t.0).collect();
        let tail_netmon: Vec<f64> = tail.iter().map(|t| t.1).collect();
        let tail_floor_ns = median(&tail_floor);
        let floor_tail = Row {
            name: "floor_new_flow",
            what: format!(
                "{XDP_BENCH_NEW_FLOW_PROGRAM} (source address + 1) tail-calling {XDP_FLOOR_PROGRAM}"
            ),
            method: tail_method.clone(),
            ns: tail_floor_ns,
            floor_ns: tail_floor_ns,
            rounds: tail_floor,
            call_median_ns: None,
            target: None,
        };
        let new_flow = Row {
            name: "new_flow",
            what: format!(
                "IPv4/TCP, every run a flow not in the cache (the driver moves the source \
                 address on), nearly every one evicting the slot's occupant; the driver \
                 tail-calls {XDP_PROGRAM}"
            ),
            method: tail_method,
            ns: median(&tail_netmon),
            floor_ns: tail_floor_ns,
            rounds: tail_netmon,
            call_median_ns: None,
            target: Some(TARGET_NEW_FLOW),
        };
        (floor_tail, new_flow)
    }

    /// The rows of the echo driver: its floor, and `echo_lookup`.
    fn echo_rows(echo: &[(f64, f64)]) -> (Row, Row) {
        let method = format!(
            "{ECHO_PROGRAM} + tail call, {NF_CALLS} calls of repeat={NF_REPEAT} per round, mean \
             per round, median of {ROUNDS} rounds"
        );
        let floor: Vec<f64> = echo.iter().map(|t| t.0).collect();
        let netmon: Vec<f64> = echo.iter().map(|t| t.1).collect();
        let floor_ns = median(&floor);
        (
            Row {
                name: "floor_echo",
                what: format!("{ECHO_PROGRAM} (TSecr + 1) tail-calling {XDP_FLOOR_PROGRAM}"),
                method: method.clone(),
                ns: floor_ns,
                floor_ns,
                rounds: floor,
                call_median_ns: None,
                target: None,
            },
            Row {
                name: "echo_lookup",
                what: format!(
                    "IPv4/TCP ACK with a timestamp, every run a TSecr its flow has not looked up \
                     (the driver moves it on), nothing pending: one RTT_PENDING lookup that \
                     misses; the driver tail-calls {XDP_PROGRAM}"
                ),
                method,
                ns: median(&netmon),
                floor_ns,
                rounds: netmon,
                call_median_ns: None,
                target: None,
            },
        )
    }

    /// The rows of the repeat=1 RTT cases: their two floors, the record and
    /// the match.
    fn rtt_rows(rtt: &[RttSummary]) -> (Vec<Row>, Vec<Row>) {
        let method = format!(
            "repeat=1, {RTT_PAIRS} pairs/round (each a new TSval, a multiple of 4), 99 % mean per \
             round, median of {ROUNDS} rounds"
        );
        let pick = |f: fn(&RttSummary) -> (f64, f64)| -> (f64, f64, Vec<f64>) {
            let means: Vec<f64> = rtt.iter().map(|s| f(s).0).collect();
            let call_medians: Vec<f64> = rtt.iter().map(|s| f(s).1).collect();
            (median(&means), median(&call_medians), means)
        };
        let row = |name, what: String, (ns, call, rounds): (f64, f64, Vec<f64>), floor_ns| Row {
            name,
            what,
            method: method.clone(),
            ns,
            floor_ns,
            rounds,
            call_median_ns: Some(call),
            target: None,
        };
        let tc_floor = pick(|s| s.tc_floor);
        let xdp_floor = pick(|s| s.xdp_floor);
        let (tc_floor_ns, xdp_floor_ns) = (tc_floor.0, xdp_floor.0);
        (
            vec![
                row(
                    "tc_floor_repeat1",
                    format!("{TC_FLOOR_PROGRAM} on each rtt_record frame, repeat=1"),
                    tc_floor,
                    tc_floor_ns,
                ),
                row(
                    "floor_echo_repeat1",
                    format!("{XDP_FLOOR_PROGRAM} on each rtt_match frame, repeat=1"),
                    xdp_floor,
                    xdp_floor_ns,
                ),
            ],
            vec![
                row(
                    "rtt_record_repeat1",
                    "egress: a data segment with a TSval new to its flow, a multiple of 4: \
                     recorded (bpf_ktime_get_ns, an RTT_PENDING insert)"
                        .to_owned(),
                    pick(|s| s.record),
                    tc_floor_ns,
                ),
                row(
                    "rtt_match_repeat1",
                    "ingress: the ACK echoing it: matched (lookup, bpf_ktime_get_ns, delete, a \
                     sample to the RTT_SAMPLES ring)"
                        .to_owned(),
                    pick(|s| s.matched),
                    xdp_floor_ns,
                ),
            ],
        )
    }

    fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nXDP and TC per-packet cost (BPF_PROG_TEST_RUN, {FRAME_LEN}-byte frames unless noted, ns per packet; tc_* and rtt_record rows over a TC floor)"
        );
        let _ = writeln!(
            s,
            "{:<20} {:>7} {:>7} {:>10} {:>15} {:>8} {:>9}  method",
            "case", "ns", "floor", "over_floor", "rounds min-max", "target", "verdict"
        );
        for row in self.floors.iter().chain(&self.rows) {
            let (min, max) = spread(&row.rounds);
            let is_floor = row.name.contains("floor");
            let over = if is_floor {
                "-".to_owned()
            } else {
                format!("{:.1}", row.over())
            };
            let target = row
                .target
                .map_or_else(|| "-".to_owned(), |t| format!("<={t:.0}"));
            let verdict = match row.met() {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "-",
            };
            let mean = row
                .call_median_ns
                .map_or_else(String::new, |m| format!(" (per-call median {m:.1})"));
            let _ = writeln!(
                s,
                "{:<20} {:>7.1} {:>7.1} {:>10} {:>15} {:>8} {:>9}  {}{mean}",
                row.name,
                row.ns,
                row.floor_ns,
                over,
                format!("{min:.0}-{max:.0}"),
                target,
                verdict,
                row.method
            );
        }
        s
    }

    fn json(&self, elapsed: Duration) -> Value {
        let row_json = |r: &Row| {
            let (min, max) = spread(&r.rounds);
            let mut v = json!({
                "name": r.name,
                "ns": r.ns,
                "over_floor_ns": r.over(),
                "floor_ns": r.floor_ns,
                "what": r.what,
                "method": r.method,
                "rounds_ns": r.rounds,
                "min_ns": min,
                "max_ns": max,
            });
            if let Some(m) = r.call_median_ns {
                v["call_median_ns"] = json!(m);
            }
            if let Some(t) = r.target {
                v["target_over_floor_ns"] = json!(t);
                v["target_met"] = json!(r.over() <= t);
            }
            v
        };
        let floor = |name: &str| self.floors.iter().find(|f| f.name == name);
        let (xdp, tail, r1) = (
            floor("floor"),
            floor("floor_new_flow"),
            floor("floor_repeat1"),
        );
        json!({
            "floor_ns": xdp.map(|f| f.ns),
            "floor_new_flow_ns": tail.map(|f| f.ns),
            "floor_repeat1_ns": r1.map(|f| f.ns),
            "floor_rounds_ns": xdp.map(|f| &f.rounds),
            "floor_repeat1_rounds_ns": r1.map(|f| &f.rounds),
            "floors": self.floors.iter().map(row_json).collect::<Vec<_>>(),
            "cases": self.rows.iter().map(row_json).collect::<Vec<_>>(),
            "method": format!(
                "BPF_PROG_TEST_RUN; duration is the kernel's average per run. Repeat-based cases: \
                 repeat={REPEAT}, {ROUNDS} rounds, median over rounds, floor = {XDP_FLOOR_PROGRAM} \
                 measured the same way in the same rounds. new_flow: repeat=1 calls, each with a \
                 frame of a new flow, {NEW_FLOWS} per round, {ROUNDS} rounds, per-round mean of \
                 the per-call durations without the slowest 1 % (interrupts), then median over \
                 rounds; the ring is read every {DRAIN_EVERY} new flows, as netmon's poller would; its floor is {XDP_FLOOR_PROGRAM} \
                 at repeat=1 on the same frames, interleaved call by call; {} slots per CPU \
                 (netmon's default), emptied between rounds, process pinned to one CPU",
                *SLOTS
            ),
            "repeat": REPEAT,
            "rounds": ROUNDS,
            "new_flows_per_round": NEW_FLOWS,
            "slots_per_cpu": *SLOTS,
            "frame_len": FRAME_LEN,
            "machine": crate::util::machine(),
            "elapsed_s": elapsed.as_secs_f64(),
        })
    }

    fn missed(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| r.met() == Some(false))
            .map(|r| {
                format!(
                    "{} costs {:.1} ns above the floor, target <= {:.0} ns",
                    r.name,
                    r.over(),
                    r.target.unwrap_or_default()
                )
            })
            .collect()
    }
}
