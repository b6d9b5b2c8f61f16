//! `cargo xtask bench xdp`: per-packet cost of netmon's XDP program under
//! `BPF_PROG_TEST_RUN`, in ns above a bare `XDP_PASS` program (`netmon_floor`
//! from the bench object) measured in the same run. netmon's program is the
//! shipped object's own (`--object`), loaded through `netmon::sys` as
//! netmon loads it; the floor and the new-flow driver come from the bench
//! object (`--bench-object`), the driver reaching netmon's program by a tail
//! call across the two objects.
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
use netmon::sys::{Counting, FlowMaps, Global, Object, object::TestRunOptions};
use netmon_common::{
    Counters, DEFAULT_EVICTED_BYTES, DEFAULT_RTT_PENDING, EvictBatch, FlowSlot, XDP_PROGRAM,
    bench::{
        CYCLE_BASE_GLOBAL, CYCLE_GLOBAL, FLOOR_PROGRAM as XDP_FLOOR_PROGRAM,
        NEW_FLOW_OFFSET as BENCH_NEW_FLOW_OFFSET, NEW_FLOW_PROGRAM as XDP_BENCH_NEW_FLOW_PROGRAM,
        TAIL_MAP,
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
/// (1,000 flows in records of EVICT_BATCH) fit the default ring, which is read after
/// every call.
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
/// Eviction ring: netmon's default size.
const RING_BYTES: u32 = DEFAULT_EVICTED_BYTES;
/// The bench reads the ring after this many new flows, as netmon's poller
/// would: well before it fills (104 bytes a record with its header).
const DRAIN_EVERY: u32 = 1000;
const _: () = assert!(DRAIN_EVERY as usize * 2 * 104 < RING_BYTES as usize);
/// Frame length of the full-size cases: a minimum Ethernet frame (64 bytes
/// on the wire with the FCS, which XDP does not see, so 60 here) rounded
/// up to the 64 bytes of the calibration figures.
const FRAME_LEN: usize = 64;
/// Targets, ns above the floor (issue 3).
const TARGET_ESTABLISHED: f64 = 20.0;
const TARGET_NEW_FLOW: f64 = 60.0;
const XDP_PASS: u32 = 2;

pub fn run(ctx: &crate::Ctx) -> Result<()> {
    let started = Instant::now();
    let objects = Objects::read(ctx)?;
    pin_to_one_cpu()?;
    let mut bench = Bench::load(&objects)?;

    crate::step(&format!(
        "XDP per-packet cost: {ROUNDS} rounds of {REPEAT} repeats per case, and {ROUNDS} rounds \
         of {NEW_FLOWS} new flows at repeat=1"
    ));
    let repeat_cases = repeat_cases();
    // Prime: insert each case's flow, and check the case takes its path.
    for case in &repeat_cases {
        let before = bench.counters()?;
        bench.run_once(Prog::Netmon, &case.frame, 1)?;
        let delta = bench.counters()?.minus(&before);
        (case.check)(&delta).with_context(|| format!("case {} took the wrong path", case.name))?;
    }
    let records_before = bench.counters()?.flow_records;

    // Repeat-based rounds. The order of the cases rotates from round to round
    // so that no case always runs first (or right after the floor).
    let mut floor_rounds = Vec::with_capacity(ROUNDS);
    let mut case_rounds: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); repeat_cases.len()];
    for round in 0..ROUNDS {
        let n = repeat_cases.len() + 1;
        for k in 0..n {
            let slot = (k + round) % n;
            if slot == 0 {
                let frame = &repeat_cases[0].frame;
                floor_rounds.push(bench.run_once(Prog::Floor, frame, REPEAT)?);
            } else {
                let case = &repeat_cases[slot - 1];
                case_rounds[slot - 1].push(bench.run_once(Prog::Netmon, &case.frame, REPEAT)?);
            }
        }
        eprint!(".");
    }
    eprintln!();
    ensure!(
        bench.counters()?.flow_records == records_before,
        "the repeat-based cases started flow records: they are not measuring established flows"
    );

    // new_flow with the driver and tail calls: a new flow on every run.
    let mut tail_rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        tail_rounds.push(new_flow_tail_round(&mut bench, &repeat_cases[0].frame)?);
        eprint!(".");
    }
    eprintln!();

    // new_flow at repeat=1, with its own floor and an established control.
    let established = &repeat_cases[0].frame;
    let mut nf_rounds = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        nf_rounds.push(new_flow_round(&mut bench, round as u32, established)?);
        eprint!(".");
    }
    eprintln!();
    bench.clear_flows()?;

    let report = Report::new(
        &floor_rounds,
        &repeat_cases,
        &case_rounds,
        &tail_rounds,
        &nf_rounds,
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
    /// The bench object: the floor and the driver.
    harness: Object,
}

#[derive(Clone, Copy)]
pub(crate) enum Prog {
    Floor,
    Netmon,
}

impl Prog {
    fn name(self) -> &'static str {
        match self {
            Prog::Floor => XDP_FLOOR_PROGRAM,
            Prog::Netmon => XDP_PROGRAM,
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
            ring_bytes: RING_BYTES,
            rtt_pending: DEFAULT_RTT_PENDING,
        };
        let (mut netmon, mut maps) = Object::load_counting(&objects.shipped, &counting)
            .context("loading the shipped object failed")?;
        netmon.load_xdp(XDP_PROGRAM)?;
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
        for name in [XDP_FLOOR_PROGRAM, XDP_BENCH_NEW_FLOW_PROGRAM] {
            harness.load_xdp(name)?;
        }
        Ok(Bench {
            netmon,
            maps,
            harness,
        })
    }

    /// The object that holds program `name`.
    fn object(&self, name: &str) -> &Object {
        if name == XDP_PROGRAM {
            &self.netmon
        } else {
            &self.harness
        }
    }

    /// One `BPF_PROG_TEST_RUN`; returns the kernel's average ns per run and
    /// checks the verdict and that the frame came back unchanged.
    fn run_once(&self, prog: Prog, frame: &[u8], repeat: u32) -> Result<f64> {
        let (ns, out) = self.test_run(prog.name(), frame, repeat)?;
        ensure!(out == frame, "the program changed the frame");
        Ok(ns)
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

    /// This machine's counters summed over CPUs.
    pub(crate) fn counters(&self) -> Result<Counters> {
        Ok(self.maps.counters()?)
    }

    /// Checks that `sent` packets are all accounted for: `drained` (evicted
    /// flows and their packets taken from the ring so far), the pending
    /// evictions and the slots. Returns the evicted flows in all.
    pub(crate) fn check_conserved(
        &self,
        what: &str,
        drained: (u64, u64),
        sent: u64,
    ) -> Result<u64> {
        let (e, p) = self.pending()?;
        let (evictions, evicted) = (drained.0 + e, drained.1 + p);
        let in_slots = self.packets_in_slots()?;
        ensure!(
            evicted + in_slots == sent,
            "{what}: {evicted} packets in the ring and pending evictions and {in_slots} in the \
             slots, expected {sent}"
        );
        Ok(evictions)
    }

    /// Packets of the flows now in a slot, all CPUs.
    fn packets_in_slots(&self) -> Result<u64> {
        Ok(self.maps.slots()?.iter().map(|s| s.value.packets).sum())
    }

    /// Empties the ring: (evictions, packets in them).
    pub(crate) fn drain_ring(&mut self) -> (u64, u64) {
        let (mut evictions, mut packets) = (0, 0);
        let mut batches: Vec<EvictBatch> = Vec::new();
        self.maps.drain_batches(&mut batches);
        for rec in &batches {
            for s in rec.slots.iter().take(rec.count as usize) {
                evictions += 1;
                packets += s.value.packets;
            }
        }
        (evictions, packets)
    }

    /// Evictions waiting for a batch, all CPUs: (evictions, packets).
    fn pending(&self) -> Result<(u64, u64)> {
        let (mut evictions, mut packets) = (0, 0);
        for p in &self.maps.pending()? {
            for s in p.batch.slots.iter().take(p.count as usize) {
                evictions += 1;
                packets += s.value.packets;
            }
        }
        Ok((evictions, packets))
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

/// A repeat-based case: its frame, what it is, and the counter delta one run
/// of it must produce.
struct Case {
    name: &'static str,
    what: &'static str,
    frame: Vec<u8>,
    check: fn(&Counters) -> Result<()>,
}

fn repeat_cases() -> Vec<Case> {
    vec![
        Case {
            name: "established",
            what: "IPv4/TCP (ACK), flow already in the table",
            frame: ipv4_tcp_frame([198, 51, 100, 2], 40_000, &[]),
            check: |d| expect(d.packets == 1 && d.tcp == 1 && d.tcp_syn == 0, d),
        },
        Case {
            name: "ipv6_udp",
            what: "IPv6/UDP, flow already in the table",
            frame: ipv6_udp_frame(),
            check: |d| expect(d.packets == 1 && d.udp == 1, d),
        },
        Case {
            name: "qinq",
            what: "802.1ad + 802.1Q tags, IPv4/TCP, flow already in the table",
            frame: ipv4_tcp_frame([198, 51, 100, 3], 40_001, &[(0x88A8, 100), (0x8100, 200)]),
            check: |d| expect(d.packets == 1 && d.tcp == 1, d),
        },
        Case {
            name: "vlan4",
            what: "four VLAN tags (802.1ad, 802.1Q x3), IPv4/TCP, 70 bytes, flow in the table",
            // Tags 100 (802.1ad), 200, 300, 400 (802.1Q), then IPv4.
            frame: ipv4_tcp_behind(
                0x88A8,
                &[
                    0x00, 0x64, 0x81, 0x00, 0x00, 0xc8, 0x81, 0x00, 0x01, 0x2c, 0x81, 0x00, 0x01,
                    0x90, 0x08, 0x00,
                ],
                [198, 51, 100, 5],
            ),
            check: |d| expect(d.packets == 1 && d.tcp == 1 && d.other_l2 == 0, d),
        },
        Case {
            name: "mpls",
            what: "MPLS, two labels, IPv4/TCP, flow already in the table",
            // Label 16 (no bottom of stack), label 17 (bottom), TTL 64.
            frame: ipv4_tcp_behind(
                0x8847,
                &[0x00, 0x01, 0x00, 0x40, 0x00, 0x01, 0x11, 0x40],
                [198, 51, 100, 6],
            ),
            check: |d| expect(d.packets == 1 && d.tcp == 1 && d.other_l2 == 0, d),
        },
        Case {
            name: "pppoe",
            what: "PPPoE session, PPP IPv4, IPv4/TCP, flow already in the table",
            // Version/type 0x11, code 0, session 1, length 48 (PPP protocol
            // and the 46-byte IP packet), protocol 0x0021.
            frame: ipv4_tcp_behind(
                0x8864,
                &[0x11, 0x00, 0x00, 0x01, 0x00, 0x30, 0x00, 0x21],
                [198, 51, 100, 7],
            ),
            check: |d| expect(d.packets == 1 && d.tcp == 1 && d.other_l2 == 0, d),
        },
        Case {
            name: "ipv6_ah",
            what: "IPv6, AH (24 bytes), TCP (ACK), 98 bytes, flow already in the table",
            frame: ipv6_ah_tcp_frame(),
            check: |d| expect(d.packets == 1 && d.tcp == 1 && d.other_ip == 0, d),
        },
        Case {
            name: "truncated",
            what: "IPv4/TCP cut 10 bytes into the TCP header (44 bytes)",
            frame: ipv4_tcp_frame([198, 51, 100, 4], 40_002, &[])[..44].to_vec(),
            check: |d| expect(d.packets == 1 && d.malformed == 1 && d.tcp == 0, d),
        },
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

/// The mean of `v` without its slowest [`TRIM`]. A mean, not a median: one
/// new flow in [`EVICT_BATCH`] also sends the batch to the ring, and the
/// per-packet cost is the average over both kinds of call.
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
    floor: Row,
    floor_tail: Row,
    floor_r1: Row,
    rows: Vec<Row>,
}

impl Report {
    fn new(
        floor_rounds: &[f64],
        cases: &[Case],
        case_rounds: &[Vec<f64>],
        tail: &[(f64, f64)],
        nf: &[NewFlowSummary],
    ) -> Report {
        let (floor_tail, new_flow) = Self::tail_rows(tail);
        let repeat_method = format!("repeat={REPEAT}, median of {ROUNDS} rounds");
        let r1_method = format!(
            "repeat=1, {NEW_FLOWS} calls/round into {} slots (nearly all evict), 99 % mean \
             per round, median of {ROUNDS} rounds",
            *SLOTS
        );
        let floor_ns = median(floor_rounds);
        let floor = Row {
            name: "floor",
            what: format!("{XDP_FLOOR_PROGRAM}: returns XDP_PASS only"),
            method: repeat_method.clone(),
            ns: floor_ns,
            floor_ns,
            rounds: floor_rounds.to_vec(),
            call_median_ns: None,
            target: None,
        };
        let mut rows = Vec::new();
        for (case, rounds) in cases.iter().zip(case_rounds) {
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
        Report {
            floor,
            floor_tail,
            floor_r1,
            rows,
        }
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

    fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nXDP per-packet cost (BPF_PROG_TEST_RUN, {FRAME_LEN}-byte frames unless noted, ns per packet)"
        );
        let _ = writeln!(
            s,
            "{:<20} {:>7} {:>7} {:>10} {:>15} {:>8} {:>9}  method",
            "case", "ns", "floor", "over_floor", "rounds min-max", "target", "verdict"
        );
        for row in std::iter::once(&self.floor)
            .chain(std::iter::once(&self.floor_tail))
            .chain(std::iter::once(&self.floor_r1))
            .chain(&self.rows)
        {
            let (min, max) = spread(&row.rounds);
            let is_floor = row.name.starts_with("floor");
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
        json!({
            "floor_ns": self.floor.ns,
            "floor_new_flow_ns": self.floor_tail.ns,
            "floor_repeat1_ns": self.floor_r1.ns,
            "floor_rounds_ns": self.floor.rounds,
            "floor_repeat1_rounds_ns": self.floor_r1.rounds,
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
