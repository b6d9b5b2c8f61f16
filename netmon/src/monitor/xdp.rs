//! The attached XDP program as a monitor [`Source`](super::Source).

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread,
};

use anyhow::{Context, Result};
use netmon_common::{Counters, FlowKey, FlowValue, RttSample};

use super::{SERVICE_EVERY, Source, flowtable};
use crate::sys;

/// The attached program as a monitor [`Source`]: its counters,
/// and the flow table merged from its per-CPU flow caches.
///
/// A thread of its own ([`RingDrainer`]) empties the kernel's eviction rings
/// (one per CPU, 8 MiB in all) every [`SERVICE_EVERY`] into
/// `Shared::backlog`, whatever the monitor loop is doing: the rings never
/// wait behind an interval's work, only for the lock, which nothing holds
/// for longer than one read of the maps (or of [`CHUNK`] records from the
/// rings), and
/// up to [`BACKLOG`] records wait there for the loop. The loop moves the records
/// into the table between intervals ([`Source::service`]) and at each
/// interval, after reading the slots.
pub struct XdpSource {
    shared: Arc<Mutex<Shared>>,
    drainer: Option<RingDrainer>,
    table: flowtable::FlowTable,
    /// Reused buffers: kernel sightings, and records taken from `evicted`.
    seen: Vec<flowtable::Occupancy>,
    ended: Vec<flowtable::Occupancy>,
    /// The interface whose own counters are reported, if asked.
    iface: Option<String>,
    /// The kernel's run-time statistics, on while the live view shows them.
    run_stats: Option<sys::bpf_stats::RunStats>,
    /// The passive-RTT maps, read by the loop alone (not under the lock the
    /// ring thread takes: listing the pending entries costs two system
    /// calls per entry). `None` when the object has none.
    rtt: Option<sys::RttMaps>,
    /// Whether passive RTT is measured: the egress program records sends.
    egress: bool,
}

/// What the ring thread and the monitor loop share.
struct Shared {
    attachment: sys::Attachment,
    /// Final records taken from the eviction ring, not yet in the flow
    /// table.
    backlog: Backlog,
}

/// Final records taken from the eviction ring and not yet in the flow
/// table: at most [`BACKLOG`], in chunks of [`CHUNK`], oldest first. A
/// chunk is filled from the ring by the ring thread and read by the loop
/// where it is (one copy of each record); emptied chunks are kept for
/// reuse.
#[derive(Default)]
struct Backlog {
    full: VecDeque<Vec<flowtable::Occupancy>>,
    spare: Vec<Vec<flowtable::Occupancy>>,
    /// Records in `full`.
    records: usize,
}

impl Backlog {
    /// Moves records from the ring while fewer than [`BACKLOG`] wait.
    fn fill(&mut self, attachment: &mut sys::Attachment) {
        while self.records < BACKLOG {
            let mut chunk = self.spare.pop().unwrap_or_default();
            let more = attachment.drain_evicted(&mut chunk, CHUNK);
            if chunk.is_empty() {
                self.spare.push(chunk);
                return;
            }
            self.records += chunk.len();
            self.full.push_back(chunk);
            if !more {
                return;
            }
        }
    }

    /// Puts the oldest chunk into `into` (empty; its buffer becomes a
    /// spare); false when none waits.
    fn take(&mut self, into: &mut Vec<flowtable::Occupancy>) -> bool {
        let Some(mut chunk) = self.full.pop_front() else {
            return false;
        };
        self.records -= chunk.len();
        std::mem::swap(&mut chunk, into);
        chunk.clear();
        self.spare.push(chunk);
        true
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic elsewhere cannot leave Shared half-updated in a way that
    // matters here: keep going with what is there.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Final records the ring thread holds for the loop at most (27 MiB, in
/// chunks allocated only when records wait that long): 260 ms of a
/// million evictions a second, on top of what the kernel's ring holds, for
/// the loop's interval work to finish (about 100 ms with a million flows
/// changing every interval, more on a busy machine: `cargo xtask bench
/// flows`). Beyond it the records wait in the kernel's ring and then, if
/// the loop falls further behind, packets of new flows are counted in the
/// totals only (`flow_insert_failed`): memory stays bounded, counts exact.
const BACKLOG: usize = 1 << 18;
/// Records in a chunk of the backlog (850 KiB).
const CHUNK: usize = 1 << 13;

/// The thread that empties the eviction ring and publishes the clock the
/// program stamps flows with, every 10 ms: neither waits behind the
/// monitor loop's interval work.
struct RingDrainer {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<()>,
}

impl RingDrainer {
    fn start(shared: Arc<Mutex<Shared>>) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new()
            .name("netmon-ring".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || {
                    let mut clock_failed = false;
                    while !stop.load(Ordering::Acquire) {
                        thread::park_timeout(SERVICE_EVERY);
                        let mut s = lock(&shared);
                        let Shared {
                            attachment,
                            backlog,
                        } = &mut *s;
                        if let Err(e) = attachment.publish_clock()
                            && !std::mem::replace(&mut clock_failed, true)
                        {
                            log::warn!("{e}; flow first/last-seen times stop advancing");
                        }
                        backlog.fill(attachment);
                    }
                }
            })
            .context("cannot start the eviction ring thread")?;
        Ok(RingDrainer { stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        // A panic in the thread has been reported on stderr already.
        let _ = self.thread.join();
    }
}

impl XdpSource {
    pub fn new(mut attachment: sys::Attachment, table: flowtable::FlowTable) -> Result<Self> {
        let rtt = attachment.take_rtt();
        let egress = attachment.egress;
        if egress && rtt.is_none() {
            log::info!("this program has no passive-RTT maps: no passive RTT is measured");
        }
        let shared = Arc::new(Mutex::new(Shared {
            attachment,
            backlog: Backlog::default(),
        }));
        let drainer = RingDrainer::start(Arc::clone(&shared))?;
        Ok(XdpSource {
            shared,
            drainer: Some(drainer),
            table,
            seen: Vec::new(),
            ended: Vec::new(),
            iface: None,
            run_stats: None,
            rtt,
            egress,
        })
    }

    /// Also reports `iface`'s own counters (sysfs) every interval.
    #[must_use]
    pub fn with_if_counters(mut self, iface: &str) -> Self {
        self.iface = Some(iface.to_owned());
        self
    }

    /// Also reports the programs' run time, holding the kernel's run-time
    /// statistics on as long as this source lives.
    #[must_use]
    pub fn with_run_stats(mut self, stats: sys::bpf_stats::RunStats) -> Self {
        self.run_stats = Some(stats);
        self
    }

    /// Moves the final records of evicted flows into the table: those the
    /// ring thread took, then what is in the ring now, [`CHUNK`] at a time.
    fn take_evicted(&mut self) {
        loop {
            let more = {
                let mut s = lock(&self.shared);
                let Shared {
                    attachment,
                    backlog,
                } = &mut *s;
                backlog.take(&mut self.ended) || attachment.drain_evicted(&mut self.ended, CHUNK)
            };
            self.table.ended_all(&self.ended);
            self.ended.clear();
            if !more {
                break;
            }
        }
    }
}

impl Drop for XdpSource {
    fn drop(&mut self) {
        if let Some(d) = self.drainer.take() {
            d.stop();
        }
    }
}

impl Source for XdpSource {
    fn counters(&mut self) -> Result<Counters> {
        let mut c = lock(&self.shared).attachment.counters()?;
        // Packets of flows the full table could not take join those the
        // kernel could not count to a flow.
        c.flow_insert_failed += self.table.untracked().0;
        Ok(c)
    }
    fn tx_counters(&mut self) -> Result<Option<Counters>> {
        Ok(lock(&self.shared).attachment.tx_counters()?)
    }
    fn flow_changes(&mut self, changed: &mut Vec<(FlowKey, FlowValue)>) -> Result<usize> {
        // The slots first, then the ring (see Attachment::drain_evicted):
        // every record taken after the slots were read goes in after them.
        self.table.new_round();
        self.seen.clear();
        self.seen
            .extend(lock(&self.shared).attachment.occupancies()?.iter());
        for o in &self.seen {
            self.table.seen(o);
        }
        self.take_evicted();
        self.table.take_changes(changed);
        Ok(self.table.len())
    }
    fn expire_idle(&mut self, removed: &mut Vec<(FlowKey, FlowValue)>) -> Result<()> {
        self.table.expire(sys::monotonic_ns(), removed);
        Ok(())
    }
    fn flows(&mut self) -> Result<Vec<(FlowKey, FlowValue)>> {
        self.flow_changes(&mut Vec::new())?;
        Ok(self.table.snapshot())
    }
    fn service(&mut self) {
        self.take_evicted();
    }
    fn passive_rtt(&self) -> bool {
        self.egress
    }
    fn rtt_samples(&mut self, out: &mut Vec<RttSample>) {
        if let Some(rtt) = &mut self.rtt {
            let skipped = rtt.drain_samples(out);
            if skipped > 0 {
                log::warn!("skipped {skipped} passive-RTT records of an unknown size");
            }
        }
    }
    fn expire_rtt_pending(&mut self, before_ns: u64) -> Result<u64> {
        match &mut self.rtt {
            Some(rtt) => Ok(rtt.expire_pending(before_ns)?),
            None => Ok(0),
        }
    }
    fn finish(&mut self) {
        lock(&self.shared).attachment.detach();
        // Detaching does not wait for runs of the program already under way
        // on other CPUs (they finish within microseconds); the final reads
        // come after them.
        thread::sleep(std::time::Duration::from_millis(20));
        if let Some(d) = self.drainer.take() {
            d.stop();
        }
    }
    fn drain_log(&mut self) {
        lock(&self.shared).attachment.flush_log();
    }
    fn if_counters(&mut self) -> Option<crate::report::IfCounters> {
        sys::ifstats::read(self.iface.as_deref()?)
    }
    fn program_cost(&mut self) -> Option<crate::report::ProgramCost> {
        self.run_stats.as_ref()?;
        lock(&self.shared).attachment.program_cost()
    }
}
