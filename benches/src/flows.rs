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
//! reach a flow (`flow_insert_failed` = 0), and the packets in the ring,
//! the pending evictions and the slots add up to the runs (nothing lost in
//! the cache's evictions). The figure `evictions/packet` says how often a
//! packet found its slot held by another flow.
//!
//! What this does not measure (yet): netmon's userspace at these flow
//! counts (CPU time, memory); see BENCHMARKS.md.

use std::time::Instant;

use anyhow::{Result, ensure};
use serde_json::json;

use crate::{
    util::{machine, median, print_machine, write_report},
    xdp::{Bench, Objects, Prog, SLOTS, ipv4_tcp_frame, pin_to_one_cpu},
};

const FLOW_COUNTS: [u32; 4] = [1_000, 10_000, 100_000, 1_000_000];
/// Runs per test-run call: the evictions of one call fit the default ring
/// (about 10,800 flows), which is drained after every call.
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
    pin_to_one_cpu()?;
    crate::step(&format!(
        "XDP per-packet cost with {FLOW_COUNTS:?} active flows, {} slots per CPU, {ROUNDS} \
         rounds of {CALLS} calls of {CHUNK} runs",
        *SLOTS
    ));
    let mut rows = Vec::new();
    for flows in FLOW_COUNTS {
        rows.push(measure(&objects, flows)?);
        eprintln!("bench: {flows} flows done");
    }

    println!(
        "XDP per-packet cost by active flows (BPF_PROG_TEST_RUN, 64-byte IPv4/TCP, {} slots per \
         CPU, ns per packet, medians of {ROUNDS} rounds)",
        *SLOTS
    );
    println!(
        "{:>10} {:>8} {:>8} {:>11} {:>17}  exact",
        "flows", "floor", "netmon", "over_floor", "evictions/packet"
    );
    for r in &rows {
        println!(
            "{:>10} {:>8.1} {:>8.1} {:>11.1} {:>17.3}  yes",
            r.flows,
            r.floor,
            r.netmon,
            r.netmon - r.floor,
            r.evictions_per_packet
        );
    }
    let report = json!({
        "method": format!(
            "BPF_PROG_TEST_RUN of netmon_bench_new_flow cycling the source address round robin \
             through N addresses and tail-calling netmon (or the floor), {CALLS} calls of {CHUNK} \
             runs per program per round, alternating, ring drained after every call, {ROUNDS} \
             rounds, per-round mean, median over rounds; flows primed (each seen once) first; \
             process pinned to one CPU"
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
        "machine": machine(),
        "elapsed_s": started.elapsed().as_secs_f64(),
    });
    print_machine(&report["machine"]);
    let path = write_report(&ctx.out_dir, "flows.json", &report)?;
    println!("written: {}", path.display());
    Ok(())
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
    let (ns, out) = bench.test_run(netmon_common::bench::NEW_FLOW_PROGRAM, frame, repeat)?;
    let at = netmon_common::bench::NEW_FLOW_OFFSET..netmon_common::bench::NEW_FLOW_OFFSET + 4;
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
