//! The flow table: the kernel keeps each CPU's recent flows in a small
//! direct-mapped cache (see `FlowSlot` in netmon-common) and pushes a flow
//! out, with its final counts, when another flow needs its slot. This module
//! merges those pieces into one table of flows, the same whatever the cache
//! did.
//!
//! Every stay of a flow in a slot is an *occupancy*, named by its CPU and a
//! per-CPU sequence number. Userspace sees an occupancy several times: in
//! reads of the slots (counts so far), and at most once in its CPU's
//! eviction ring (final counts). A flow's total is the sum over its
//! occupancies of the latest count seen of each; so the table keeps the last
//! count it saw of every occupancy still in the kernel, and adds only what
//! each new sighting adds to it. The final record ends an occupancy: no read
//! after it can show it again (the kernel writes the record before the
//! slot moves on, and userspace reads the slots before the rings), so it
//! is forgotten.
//!
//! Two things make the per-interval work proportional to what changed, not
//! to the size of the table: the table remembers which flows changed since
//! the interval last took them ([`FlowTable::take_changes`]), and it files
//! every flow under the time it may go idle, in coarse buckets of a timing
//! wheel, so looking for idle flows ([`FlowTable::expire`]) only opens the
//! buckets that are due. A flow that was active since it was filed is filed
//! again under its new deadline when its bucket comes up (at most once per
//! idle timeout per flow), so activity itself costs nothing here.
//!
//! What a final record costs, since every packet of a busy link can be one
//! (`cargo xtask bench flows`: 1,000,000 flows at 1,000,000 packets/s, every
//! packet evicting its slot's occupant): the table holds its flows in one
//! array of entries (key, totals, what was handed out; [`Entry`], 120
//! bytes) found through a hash index of 4-byte positions, so a record is one
//! hash of its key, one probe of the index and one entry; the occupancies
//! sighted in reads are a small map, and so are those of them that ended
//! lately (a record of an occupancy no read showed touches neither). Memory
//! is bounded by `--max-flows` ([`FlowTable::memory_bound`]), whatever the
//! traffic.

use std::{
    collections::{BTreeMap, HashMap, HashSet, TryReserveError},
    hash::{BuildHasher, BuildHasherDefault, Hasher},
};

use netmon_common::{FlowKey, FlowValue};

pub use crate::sys::Occupancy;

/// A flow in the table. The array of entries never shrinks and never holds
/// more than `--max-flows`; a removed flow's entry goes on the free list.
#[derive(Clone, Copy, Debug)]
struct Entry {
    key: FlowKey,
    /// Totals since the flow entered the table.
    value: FlowValue,
    /// Packets, bytes and IP bytes of `value` already handed out by
    /// `take_changes`: the next change is what came since.
    taken: [u64; 3],
    /// Names the flow's current filing in the wheel; older filings of the
    /// same entry (of this flow, or of an earlier flow in the same entry)
    /// are stale. (Wrapping: a stale filing that matches after 2^32
    /// filings only makes `expire` look at the flow once more.)
    stamp: u32,
    state: State,
}

const _: () = assert!(size_of::<Entry>() == 120);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// On the free list.
    Free,
    /// A flow, unchanged since the last `take_changes`.
    Clean,
    /// A flow on the change list.
    Dirty,
}

/// An occupancy: (CPU, sequence number).
type OccupancyId = (u32, u64);

/// Hashes an [`OccupancyId`] (numbers the kernel hands out, not chosen by
/// the traffic): a multiply and a final mix, far cheaper than SipHash on
/// the path of every record.
#[derive(Clone, Copy, Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(23) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn finish(&self) -> u64 {
        // murmur3's fmix64: every input bit reaches the high bits (the
        // table's tags) and the low ones (its buckets).
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

type IdMap<V> = HashMap<OccupancyId, V, BuildHasherDefault<IdHasher>>;

type IdSet = HashSet<OccupancyId, BuildHasherDefault<IdHasher>>;

/// The index of the flow table: where each flow's entry is, by the hash
/// of its key. Open addressing with linear probing over a power-of-two
/// array of 8-byte buckets, at most half full (room for twice
/// `--max-flows`, fixed at start), and deletion by shifting the following
/// buckets back: no tombstones, so entries coming and going never grow it
/// or slow it down. A bucket holds the low 32 bits of the key's hash (its
/// home bucket and a tag) and the entry's position + 1; 0 is empty. Its
/// address is known from the hash alone, so a batch of records can fetch
/// the buckets of the next ones from memory while it works on this one
/// ([`FlowTable::ended_all`]).
#[derive(Debug)]
struct Index {
    buckets: Vec<u64>,
    mask: usize,
}

impl Index {
    fn new(max_flows: usize) -> Result<Self, TryReserveError> {
        let n = Self::buckets(max_flows);
        let mut buckets = Vec::new();
        buckets.try_reserve_exact(n)?;
        buckets.resize(n, 0);
        let mut buckets = huge_pages(buckets);
        // Resident now (see FlowTable::new): a write into every page.
        for b in buckets.iter_mut().step_by(PAGE / size_of::<u64>()) {
            // SAFETY: a valid, aligned u64 of the Vec. Volatile: a plain
            // store of the 0 it already holds could be optimised away.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
        Ok(Index {
            buckets,
            mask: n - 1,
        })
    }

    fn buckets(max_flows: usize) -> usize {
        max_flows
            .saturating_mul(INDEX_ROOM)
            .max(16)
            .next_power_of_two()
    }

    fn home(&self, hash: u64) -> usize {
        hash as usize & self.mask
    }

    /// The entry `is` accepts among those whose hash is `hash`.
    fn find(&self, hash: u64, is: impl Fn(u32) -> bool) -> Option<u32> {
        let tag = hash & 0xffff_ffff;
        let mut at = self.home(hash);
        loop {
            let b = self.buckets[at];
            if b == 0 {
                return None;
            }
            if b >> 32 == tag && is((b as u32) - 1) {
                return Some((b as u32) - 1);
            }
            at = (at + 1) & self.mask;
        }
    }

    /// Adds entry `pos`, whose key hashes to `hash` and is not in the
    /// index yet.
    fn insert(&mut self, hash: u64, pos: u32) {
        let mut at = self.home(hash);
        while self.buckets[at] != 0 {
            at = (at + 1) & self.mask;
        }
        self.buckets[at] = (hash << 32) | u64::from(pos + 1);
    }

    /// Removes entry `pos`, whose key hashes to `hash`.
    fn remove(&mut self, hash: u64, pos: u32) {
        let want = (hash << 32) | u64::from(pos + 1);
        let mut hole = self.home(hash);
        while self.buckets[hole] != want {
            if self.buckets[hole] == 0 {
                return;
            }
            hole = (hole + 1) & self.mask;
        }
        // Shift back every following bucket of the run that may sit in the
        // hole: one whose home is not between the hole and itself.
        let mut at = hole;
        loop {
            at = (at + 1) & self.mask;
            let b = self.buckets[at];
            if b == 0 {
                break;
            }
            let its_home = (b >> 32) as usize & self.mask;
            if at.wrapping_sub(its_home) & self.mask >= at.wrapping_sub(hole) & self.mask {
                self.buckets[hole] = b;
                hole = at;
            }
        }
        self.buckets[hole] = 0;
    }

    /// Starts fetching the home bucket of `hash`.
    fn prefetch(&self, hash: u64) {
        prefetch(&raw const self.buckets[self.home(hash)]);
    }

    /// The entry of the first bucket tagged like `hash` (a guess, for
    /// fetching it early; [`Self::find`] decides).
    fn peek(&self, hash: u64) -> Option<u32> {
        let tag = hash & 0xffff_ffff;
        let mut at = self.home(hash);
        loop {
            let b = self.buckets[at];
            if b == 0 {
                return None;
            }
            if b >> 32 == tag {
                return Some((b as u32) - 1);
            }
            at = (at + 1) & self.mask;
        }
    }
}

/// Asks the kernel to back `v`'s allocation with transparent huge pages
/// where it can (where they are enabled at all, or on request: `madvise`).
/// Entries and index are read at random, a million flows a second; with
/// 4 KiB pages nearly every such read also misses the TLB, whose few
/// thousand entries cover 8 MiB. Pages are still touched only when used.
fn huge_pages<T>(v: Vec<T>) -> Vec<T> {
    advise_huge_pages(&v);
    v
}

/// Bytes of a page (the smallest; huge pages hold 512 of them).
const PAGE: usize = 4096;

/// Makes every page of `v`'s spare capacity resident now, a write of one
/// byte into each (see [`FlowTable::new`]).
fn prefault<T>(mut v: Vec<T>) -> Vec<T> {
    let spare = v.spare_capacity_mut();
    let bytes = size_of_val(spare);
    let start = spare.as_mut_ptr().cast::<u8>();
    for offset in (0..bytes).step_by(PAGE) {
        // SAFETY: inside the Vec's allocation (its spare capacity, which
        // holds no value yet: any byte may be written there).
        unsafe { start.add(offset).write_volatile(0) };
    }
    v
}

/// [`huge_pages`] for a Vec in place.
fn advise_huge_pages<T>(v: &Vec<T>) {
    let start = v.as_ptr() as usize;
    let end = start + v.capacity() * size_of::<T>();
    let (from, to) = (start.next_multiple_of(PAGE), end & !(PAGE - 1));
    if to > from {
        // SAFETY: advice on whole pages inside an allocation this Vec
        // owns; it changes how they are backed, never their contents. A
        // kernel that cannot follow it says so, and nothing is lost.
        unsafe {
            libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE);
        }
    }
}

/// A hint to start loading the cache line at `p` (nothing else happens;
/// where no hint is available, nothing at all).
#[inline(always)]
#[allow(clippy::inline_always, reason = "a single instruction")]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address, and changes
    // nothing but the cache; SSE is part of x86_64.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above (PRFM never faults).
    unsafe {
        std::arch::asm!("prfm pldl1keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}

/// Buckets of the idle wheel per idle timeout: a bucket spans
/// `idle_ns / WHEEL_BUCKETS` (1 ms at least), so at most about this many
/// buckets (plus one per overdue interval) hold flows at any time.
const WHEEL_BUCKETS: u64 = 64;

#[derive(Debug)]
pub struct FlowTable {
    /// Flows tracked at most (`--max-flows`).
    max_flows: usize,
    /// Flows silent this long are due for removal ([`Self::expire`]).
    idle_ns: u64,
    /// Width of a wheel bucket in ns.
    bucket_ns: u64,
    /// Last sighting of every occupancy seen in a read and still in the
    /// kernel (a few per slot at most: only reads put them here).
    live: IdMap<(FlowKey, FlowValue)>,
    /// Sighted occupancies whose final record came in this round and the
    /// one before: later sightings of them are stale. (One never sighted
    /// cannot be sighted after its record either: the kernel writes the
    /// record before a new occupant takes the slot, and userspace reads the
    /// slots before the rings; these guard against a reader that sees the
    /// two out of order.)
    ended_now: IdSet,
    ended_before: IdSet,
    /// The flows, and the positions in `entries` that are free.
    entries: Vec<Entry>,
    free: Vec<u32>,
    /// Position in `entries` of every flow, by key (hashed with `keys`).
    index: Index,
    /// foldhash with a random seed per table: keys come from the traffic,
    /// so nobody can aim collisions at the index. SipHash (std's
    /// `RandomState`) did the same job at a fifth of netmon's time with a
    /// million flows (perf, AMD EPYC family 23).
    keys: foldhash::fast::RandomState,
    /// Entries changed since the last `take_changes`, by position (an
    /// entry removed and reused since may be here twice; its state says
    /// whether it still needs taking).
    dirty: Vec<u32>,
    /// Room for the changed flows of an interval, resident from the start;
    /// handed to the first `take_changes` caller whose list is smaller.
    changes: Vec<(FlowKey, FlowValue)>,
    /// The idle wheel: bucket (deadline / `bucket_ns`) -> entries filed
    /// there, with the stamp of their filing. Every flow in the table is
    /// filed once, under a deadline no later than its real one.
    wheel: BTreeMap<u64, Vec<(u32, u32)>>,
    next_stamp: u32,
    /// Packets and bytes of flows the full table could not take.
    untracked_packets: u64,
    untracked_bytes: u64,
    /// Set the first time the table was full.
    overflowed: bool,
}

/// Records [`FlowTable::ended_all`] looks ahead: enough misses in flight
/// to cover a memory access, few enough that what it fetched is still in
/// the cache when its turn comes.
const AHEAD: usize = 8;

/// Index buckets per flow of `--max-flows` (at least; a power of two in
/// all): probes stay short at half full.
const INDEX_ROOM: usize = 2;

impl FlowTable {
    /// A table of at most `max_flows` flows, which [`Self::expire`] removes
    /// once they have been silent for `idle_ns`.
    ///
    /// Everything that grows with the flows is allocated here, for
    /// `max_flows`, and made resident at once ([`Self::memory_bound`],
    /// which netmon prints at start): the entries, the index, the change
    /// list and free list, and the list of changed flows the monitor gets
    /// from [`Self::take_changes`]. Faulting those pages in as flows
    /// arrived cost the first second of a busy link a quarter of a
    /// core, on top of the flows themselves, and the eviction ring
    /// overflowed meanwhile (`cargo xtask bench flows`, a million new
    /// flows in that second); now memory does not change after the start,
    /// and if it is not there, the start fails rather than a busy moment.
    pub fn new(max_flows: usize, idle_ns: u64) -> Self {
        Self::try_new(max_flows, idle_ns).expect("memory for the flow table")
    }

    /// [`Self::new`], or the error of an allocation that failed (memory
    /// for `--max-flows` flows is not there), for one clear error line.
    pub fn try_new(max_flows: usize, idle_ns: u64) -> Result<Self, TryReserveError> {
        /// An empty Vec with room for `n`.
        fn room<T>(n: usize) -> Result<Vec<T>, TryReserveError> {
            let mut v = Vec::new();
            v.try_reserve_exact(n)?;
            Ok(v)
        }
        Ok(FlowTable {
            max_flows,
            idle_ns,
            bucket_ns: (idle_ns / WHEEL_BUCKETS).max(1_000_000),
            live: IdMap::default(),
            ended_now: IdSet::default(),
            ended_before: IdSet::default(),
            entries: prefault(huge_pages(room(max_flows)?)),
            free: prefault(room(max_flows)?),
            index: Index::new(max_flows)?,
            keys: foldhash::fast::RandomState::default(),
            dirty: prefault(room(max_flows)?),
            changes: prefault(huge_pages(room(max_flows)?)),
            wheel: BTreeMap::new(),
            next_stamp: 0,
            untracked_packets: 0,
            untracked_bytes: 0,
            overflowed: false,
        })
    }

    /// Bytes of a table of `max_flows` flows: what [`Self::new`] makes
    /// resident (entries, index, change and free lists, the monitor's list
    /// of changed flows) and the wheel's filings, which grow with the flows
    /// in the table (8 bytes each).
    #[must_use]
    pub fn memory_bound(max_flows: usize) -> u64 {
        let per_flow = size_of::<Entry>()
            + size_of::<(u32, u32)>()
            + 2 * size_of::<u32>()
            + size_of::<(FlowKey, FlowValue)>();
        (max_flows * per_flow + Index::buckets(max_flows) * size_of::<u64>()) as u64
    }

    /// Starts a round of reads (the slots, then the rings). Occupancies
    /// that ended two rounds ago are forgotten for good.
    pub fn new_round(&mut self) {
        std::mem::swap(&mut self.ended_before, &mut self.ended_now);
        self.ended_now.clear();
    }

    /// A sighting of an occupancy in a slot.
    pub fn seen(&mut self, o: &Occupancy) {
        let id = (o.cpu, o.seq);
        match self.live.get_mut(&id) {
            // Counts only grow within an occupancy: add what came since.
            Some((key, last))
                if *key == o.key
                    && o.value.packets >= last.packets
                    && o.value.bytes >= last.bytes =>
            {
                let delta = FlowValue {
                    packets: o.value.packets - last.packets,
                    bytes: o.value.bytes - last.bytes,
                    ip_bytes: o.value.ip_bytes.saturating_sub(last.ip_bytes),
                    ..o.value
                };
                *last = o.value;
                self.add(&o.key, &delta);
            }
            // Otherwise the earlier copy was torn (possible only on CPUs
            // that reorder stores): in its counts, or across a change of
            // occupant so that it named another flow. The latest copy
            // counts: take the earlier one back and add this one.
            Some(held) => {
                let (key, last) = std::mem::replace(held, (o.key, o.value));
                self.take_back(&key, &last);
                self.add(&o.key, &o.value);
            }
            None => {
                // A stale copy of an occupancy whose final record is in: on
                // CPUs that reorder stores, a pending entry can show its
                // old occupant for a moment after the batch went out.
                if self.ended_now.contains(&id) || self.ended_before.contains(&id) {
                    return;
                }
                self.live.insert(id, (o.key, o.value));
                self.add(&o.key, &o.value);
            }
        }
    }

    /// The final record of an occupancy, from the ring: what it carried
    /// beyond its last sighting (all of it, if never sighted).
    pub fn ended(&mut self, o: &Occupancy) {
        let hash = self.hash(&o.key);
        self.ended_hashed(o, hash);
    }

    /// [`Self::ended`] of every record of `records`, in order. A record
    /// is mostly two memory misses (its index bucket, its entry) when the
    /// table is large; this fetches those of the records [`AHEAD`] and
    /// `AHEAD / 2` further on while it works on each, so that the misses
    /// of several records overlap instead of following one another.
    pub fn ended_all(&mut self, records: &[Occupancy]) {
        let mut hashes = [0u64; AHEAD];
        for (slot, o) in hashes.iter_mut().zip(records) {
            *slot = self.hash(&o.key);
            self.index.prefetch(*slot);
        }
        for (i, o) in records.iter().enumerate() {
            let hash = hashes[i % AHEAD];
            // The records themselves (written on the ring thread's CPU).
            if let Some(later) = records.get(i + 2 * AHEAD) {
                let later: *const Occupancy = later;
                prefetch(later);
                prefetch(later.cast::<u8>().wrapping_add(size_of::<Occupancy>() - 1));
            }
            if let Some(next) = records.get(i + AHEAD) {
                let h = self.hash(&next.key);
                self.index.prefetch(h);
                hashes[i % AHEAD] = h;
            }
            if i + AHEAD / 2 < records.len()
                && let Some(p) = self.index.peek(hashes[(i + AHEAD / 2) % AHEAD])
                && let Some(e) = self.entries.get(p as usize)
            {
                let e: *const Entry = e;
                prefetch(e);
                prefetch(e.cast::<u8>().wrapping_add(size_of::<Entry>() - 1));
            }
            self.ended_hashed(o, hash);
        }
    }

    /// [`Self::ended`] with the hash of the record's key.
    fn ended_hashed(&mut self, o: &Occupancy, hash: u64) {
        let id = (o.cpu, o.seq);
        let sighted = self.live.remove(&id);
        if sighted.is_some() {
            self.ended_now.insert(id);
        }
        match sighted {
            None => self.add_hashed(&o.key, hash, &o.value),
            Some((key, last))
                if key == o.key
                    && o.value.packets >= last.packets
                    && o.value.bytes >= last.bytes =>
            {
                self.add_hashed(
                    &o.key,
                    hash,
                    &FlowValue {
                        packets: o.value.packets - last.packets,
                        bytes: o.value.bytes - last.bytes,
                        ip_bytes: o.value.ip_bytes.saturating_sub(last.ip_bytes),
                        ..o.value
                    },
                );
            }
            // The last sighting was torn (see `seen`).
            Some((key, last)) => {
                self.take_back(&key, &last);
                self.add_hashed(&o.key, hash, &o.value);
            }
        }
    }

    fn hash(&self, key: &FlowKey) -> u64 {
        let mut bytes = [0u8; size_of::<FlowKey>()];
        for (to, w) in bytes.chunks_exact_mut(8).zip(key.words()) {
            to.copy_from_slice(&w.to_ne_bytes());
        }
        // One write of the 40 bytes, not five of a word: each write call
        // has a cost of its own.
        let mut h = self.keys.build_hasher();
        h.write(&bytes);
        h.finish()
    }

    /// Position of `key`'s entry.
    fn find(&self, key: &FlowKey, hash: u64) -> Option<u32> {
        let entries = &self.entries;
        self.index.find(hash, |i| entries[i as usize].key == *key)
    }

    /// Takes back packets and bytes an earlier, torn copy added to `key`.
    fn take_back(&mut self, key: &FlowKey, counts: &FlowValue) {
        let (packets, bytes) = (counts.packets, counts.bytes);
        let hash = self.hash(key);
        if let Some(i) = self.find(key, hash) {
            let e = &mut self.entries[i as usize];
            Self::mark(&mut self.dirty, i, e);
            e.value.packets = e.value.packets.saturating_sub(packets);
            e.value.bytes = e.value.bytes.saturating_sub(bytes);
            e.value.ip_bytes = e.value.ip_bytes.saturating_sub(counts.ip_bytes);
            if e.value.packets == 0 {
                // Its wheel filing and its change-list mention go stale.
                self.remove_at(i, hash);
            }
        } else {
            self.untracked_packets = self.untracked_packets.saturating_sub(packets);
            self.untracked_bytes = self.untracked_bytes.saturating_sub(bytes);
        }
    }

    /// Puts the entry at `i` on the change list, if it is not there.
    fn mark(dirty: &mut Vec<u32>, i: u32, e: &mut Entry) {
        if e.state == State::Clean {
            e.state = State::Dirty;
            dirty.push(i);
        }
    }

    fn add(&mut self, key: &FlowKey, delta: &FlowValue) {
        let hash = self.hash(key);
        self.add_hashed(key, hash, delta);
    }

    /// [`Self::add`] of a key whose hash is known.
    fn add_hashed(&mut self, key: &FlowKey, hash: u64, delta: &FlowValue) {
        if delta.packets == 0 && delta.bytes == 0 {
            return;
        }
        if let Some(i) = self.find(key, hash) {
            let e = &mut self.entries[i as usize];
            Self::mark(&mut self.dirty, i, e);
            e.value.merge(delta);
        } else if self.len() < self.max_flows {
            let stamp = self.next_stamp;
            self.next_stamp = self.next_stamp.wrapping_add(1);
            let entry = Entry {
                key: *key,
                value: *delta,
                taken: [0; 3],
                stamp,
                state: State::Dirty,
            };
            let i = if let Some(i) = self.free.pop() {
                self.entries[i as usize] = entry;
                i
            } else {
                self.entries.push(entry);
                u32::try_from(self.entries.len() - 1).expect("--max-flows fits u32")
            };
            self.index.insert(hash, i);
            self.dirty.push(i);
            self.file(i, stamp, delta.last_seen_ns);
        } else {
            self.untracked_packets += delta.packets;
            self.untracked_bytes += delta.bytes;
            if !self.overflowed {
                self.overflowed = true;
                log::warn!(
                    "flow table full ({} flows, --max-flows): packets of further flows are \
                     counted in the totals only",
                    self.max_flows
                );
            }
        }
    }

    /// Removes the flow at `i` (whose key hashes to `hash`) from the table;
    /// returns its key and totals.
    fn remove_at(&mut self, i: u32, hash: u64) -> (FlowKey, FlowValue) {
        self.index.remove(hash, i);
        let e = &mut self.entries[i as usize];
        e.state = State::Free;
        self.free.push(i);
        (e.key, e.value)
    }

    /// Files the entry at `i` (stamp `stamp`), last seen at `last_seen_ns`,
    /// in the wheel bucket of its deadline.
    fn file(&mut self, i: u32, stamp: u32, last_seen_ns: u64) {
        let bucket = last_seen_ns.saturating_add(self.idle_ns) / self.bucket_ns;
        self.wheel.entry(bucket).or_default().push((i, stamp));
    }

    /// Appends every flow that carried packets since the last call, with
    /// the packets and bytes it carried since then (the rest of the value:
    /// first and last packet, flags, as in its totals). Costs what changed,
    /// not the size of the table.
    pub fn take_changes(&mut self, out: &mut Vec<(FlowKey, FlowValue)>) {
        if out.capacity() < self.changes.capacity() {
            // The caller's list becomes the one made ready in `new`, once
            // (growing it here copied up to 88 MiB, a million changed
            // flows, in the middle of an interval, and faulted it in).
            self.changes.append(out);
            std::mem::swap(out, &mut self.changes);
            self.changes = Vec::new();
        }
        out.reserve(self.dirty.len());
        // When most entries changed, one pass in memory order over the
        // entries beats jumping between them in the order they changed.
        let sweep = self.dirty.len() >= self.entries.len() / 4;
        let mut take = |e: &mut Entry| {
            if e.state != State::Dirty {
                return;
            }
            e.state = State::Clean;
            let packets = e.value.packets.saturating_sub(e.taken[0]);
            if packets > 0 {
                out.push((
                    e.key,
                    FlowValue {
                        packets,
                        bytes: e.value.bytes.saturating_sub(e.taken[1]),
                        ip_bytes: e.value.ip_bytes.saturating_sub(e.taken[2]),
                        ..e.value
                    },
                ));
            }
            e.taken = [e.value.packets, e.value.bytes, e.value.ip_bytes];
        };
        if sweep {
            self.entries.iter_mut().for_each(&mut take);
        } else {
            for &i in &self.dirty {
                take(&mut self.entries[i as usize]);
            }
        }
        self.dirty.clear();
    }

    /// Removes the flows whose last packet is at least the idle timeout
    /// older than `now_ns` (kernel monotonic time), appending each with its
    /// totals to `out`. Packets a removed flow carries later start it
    /// afresh. Opens only the wheel buckets that are due.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<(FlowKey, FlowValue)>) {
        let now_bucket = now_ns / self.bucket_ns;
        let mut later = Vec::new();
        while let Some(entry) = self.wheel.first_entry() {
            if *entry.key() > now_bucket {
                break;
            }
            for (i, stamp) in entry.remove() {
                let e = &self.entries[i as usize];
                if e.state == State::Free || e.stamp != stamp {
                    continue;
                }
                if now_ns.saturating_sub(e.value.last_seen_ns) >= self.idle_ns {
                    let hash = self.hash(&e.key);
                    out.push(self.remove_at(i, hash));
                } else {
                    // Active since it was filed: file it again afterwards
                    // (its new bucket may be the one just opened).
                    later.push((i, e.value.last_seen_ns));
                }
            }
        }
        for (i, last_seen_ns) in later {
            let stamp = self.next_stamp;
            self.next_stamp = self.next_stamp.wrapping_add(1);
            self.entries[i as usize].stamp = stamp;
            self.file(i, stamp, last_seen_ns);
        }
    }

    /// Flows in the table.
    pub fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    /// Whether the table holds no flow.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every flow in the table with its totals. Costs the whole table: for
    /// the end of a run, not for every interval.
    pub fn snapshot(&self) -> Vec<(FlowKey, FlowValue)> {
        self.entries
            .iter()
            .filter(|e| e.state != State::Free)
            .map(|e| (e.key, e.value))
            .collect()
    }

    /// Packets and bytes of flows the full table could not take.
    pub fn untracked(&self) -> (u64, u64) {
        (self.untracked_packets, self.untracked_bytes)
    }

    /// Occupancies still in the kernel (for tests and diagnostics).
    #[cfg(test)]
    fn live(&self) -> usize {
        self.live.len()
    }

    /// Removes a flow, returning its totals (tests; [`Self::expire`] is how
    /// flows leave the table).
    #[cfg(test)]
    fn remove(&mut self, key: &FlowKey) -> Option<FlowValue> {
        let hash = self.hash(key);
        let i = self.find(key, hash)?;
        Some(self.remove_at(i, hash).1)
    }

    /// Filings in the wheel, stale ones included (for tests).
    #[cfg(test)]
    fn filings(&self) -> usize {
        self.wheel.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use netmon_common::{IP_V4, PROTO_UDP};

    use super::*;

    /// The idle timeout of the tables under test: 1 s.
    const IDLE: u64 = 1_000_000_000;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            src: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sport_be: port.to_be(),
            dport_be: 53u16.to_be(),
            proto: PROTO_UDP,
            ip_version: IP_V4,
            direction: 0,
            pad: 0,
        }
    }

    fn occ(cpu: u32, seq: u64, port: u16, packets: u64, last: u64) -> Occupancy {
        Occupancy {
            cpu,
            seq,
            key: key(port),
            value: FlowValue {
                packets,
                bytes: packets * 100,
                ip_bytes: packets * 86,
                first_seen_ns: 10,
                last_seen_ns: last,
                tcp_flags: 0,
                pad: 0,
            },
        }
    }

    fn packets(t: &FlowTable, port: u16) -> Option<u64> {
        t.snapshot()
            .iter()
            .find(|(k, _)| *k == key(port))
            .map(|(_, v)| v.packets)
    }

    #[test]
    fn repeated_sightings_count_once() {
        let mut t = FlowTable::new(10, IDLE);
        t.seen(&occ(0, 1, 1, 5, 20));
        t.seen(&occ(0, 1, 1, 5, 20));
        t.seen(&occ(0, 1, 1, 8, 30));
        assert_eq!(packets(&t, 1), Some(8));
        // The final record after the last sighting adds what came since.
        t.ended(&occ(0, 1, 1, 9, 40));
        assert_eq!(packets(&t, 1), Some(9));
        assert_eq!(t.snapshot()[0].1.bytes, 900);
        assert_eq!(t.snapshot()[0].1.last_seen_ns, 40);
        assert_eq!(t.live(), 0);
    }

    #[test]
    fn occupancies_on_several_cpus_and_after_eviction_add_up() {
        let mut t = FlowTable::new(10, IDLE);
        // Flow 1 on CPU 0 twice (evicted in between), and on CPU 1.
        t.seen(&occ(0, 1, 1, 3, 20));
        t.ended(&occ(0, 1, 1, 4, 25));
        t.seen(&occ(0, 7, 1, 2, 30));
        t.seen(&occ(1, 1, 1, 6, 35));
        assert_eq!(packets(&t, 1), Some(4 + 2 + 6));
        // An occupancy never seen before its record counts whole.
        t.ended(&occ(1, 2, 2, 5, 40));
        assert_eq!(packets(&t, 2), Some(5));
        assert_eq!(t.live(), 2);
    }

    #[test]
    fn a_copy_torn_in_its_counts_is_corrected_by_the_next() {
        let mut t = FlowTable::new(10, IDLE);
        // The new occupant's key with the old occupant's (higher) counts.
        t.seen(&occ(0, 2, 1, 8, 20));
        t.seen(&occ(0, 2, 1, 2, 20));
        assert_eq!(packets(&t, 1), Some(2));
        t.ended(&occ(0, 2, 1, 3, 30));
        assert_eq!(packets(&t, 1), Some(3));
    }

    #[test]
    fn a_stale_sighting_after_the_final_record_adds_nothing() {
        let mut t = FlowTable::new(10, IDLE);
        t.seen(&occ(0, 1, 1, 4, 20));
        t.ended(&occ(0, 1, 1, 5, 25));
        // A pending entry still showing the occupant, this round and next.
        t.seen(&occ(0, 1, 1, 5, 25));
        t.new_round();
        t.seen(&occ(0, 1, 1, 5, 25));
        assert_eq!(packets(&t, 1), Some(5));
        assert_eq!(t.live(), 0);
    }

    #[test]
    fn a_torn_copy_is_corrected_by_the_next() {
        let mut t = FlowTable::new(10, IDLE);
        // Occupancy (0, 1) first read with another flow's key.
        t.seen(&occ(0, 1, 2, 1, 20));
        t.seen(&occ(0, 1, 1, 5, 30));
        assert_eq!(packets(&t, 1), Some(5));
        assert_eq!(packets(&t, 2), None);
    }

    #[test]
    fn a_removed_flow_starts_afresh() {
        let mut t = FlowTable::new(10, IDLE);
        t.seen(&occ(0, 1, 1, 7, 20));
        assert_eq!(t.remove(&key(1)).map(|v| v.packets), Some(7));
        assert_eq!(packets(&t, 1), None);
        // The same occupancy carries on: only the new packets count.
        t.seen(&occ(0, 1, 1, 11, 90));
        assert_eq!(packets(&t, 1), Some(4));
        assert_eq!(t.remove(&key(3)), None);
    }

    #[test]
    fn a_full_table_counts_what_it_cannot_take() {
        let mut t = FlowTable::new(2, IDLE);
        for port in 1..=5 {
            t.seen(&occ(0, u64::from(port), port, 5, 20));
        }
        assert_eq!(t.snapshot().len(), 2);
        assert_eq!(t.untracked(), (15, 1500));
        // Untracked flows stay untracked while the table is full, and their
        // later packets too.
        t.seen(&occ(0, 5, 5, 7, 30));
        assert_eq!(t.untracked(), (17, 1700));
        // Room again: a new flow gets in.
        t.remove(&key(1));
        t.seen(&occ(0, 9, 6, 1, 40));
        assert_eq!(packets(&t, 6), Some(1));
    }

    fn changes(t: &mut FlowTable) -> Vec<(u16, u64, u64)> {
        let mut out = Vec::new();
        t.take_changes(&mut out);
        let mut v: Vec<(u16, u64, u64)> = out
            .iter()
            .map(|(k, v)| (u16::from_be(k.sport_be), v.packets, v.bytes))
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn changes_are_handed_out_once_with_what_came_since() {
        let mut t = FlowTable::new(10, IDLE);
        t.seen(&occ(0, 1, 1, 5, 20));
        t.seen(&occ(0, 2, 2, 3, 20));
        assert_eq!(changes(&mut t), [(1, 5, 500), (2, 3, 300)]);
        assert_eq!(changes(&mut t), [], "nothing new");
        // Flow 1 grows on its occupancy and on another CPU; flow 2 is read
        // again unchanged.
        t.seen(&occ(0, 1, 1, 6, 30));
        t.seen(&occ(1, 1, 1, 2, 30));
        t.seen(&occ(0, 2, 2, 3, 20));
        t.ended(&occ(0, 1, 1, 7, 40));
        assert_eq!(changes(&mut t), [(1, 4, 400)]);
        let mut out = Vec::new();
        t.seen(&occ(1, 1, 1, 3, 50));
        t.take_changes(&mut out);
        assert_eq!(out[0].1.last_seen_ns, 50, "times are the flow's own");
        assert_eq!(out[0].1.first_seen_ns, 10);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_flow_removed_and_back_in_one_interval_is_reported_once() {
        let mut t = FlowTable::new(10, IDLE);
        t.seen(&occ(0, 1, 1, 5, 20));
        t.remove(&key(1));
        t.seen(&occ(0, 2, 1, 2, 30));
        assert_eq!(changes(&mut t), [(1, 2, 200)]);
    }

    fn expire(t: &mut FlowTable, now: u64) -> Vec<(u16, u64)> {
        let mut out = Vec::new();
        t.expire(now, &mut out);
        let mut v: Vec<(u16, u64)> = out
            .iter()
            .map(|(k, v)| (u16::from_be(k.sport_be), v.packets))
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn idle_flows_expire_at_their_deadline_with_their_totals() {
        let mut t = FlowTable::new(10, IDLE);
        t.seen(&occ(0, 1, 1, 5, 100));
        t.seen(&occ(0, 2, 2, 3, 400_000_000));
        assert_eq!(expire(&mut t, 100 + IDLE - 1), []);
        assert_eq!(expire(&mut t, 100 + IDLE), [(1, 5)]);
        assert_eq!(t.len(), 1);
        assert_eq!(expire(&mut t, 400_000_000 + IDLE), [(2, 3)]);
        assert_eq!(t.len(), 0);
        assert_eq!(t.filings(), 0);
    }

    #[test]
    fn a_flow_active_since_it_was_filed_is_filed_again() {
        let mut t = FlowTable::new(10, IDLE);
        t.seen(&occ(0, 1, 1, 5, 100));
        // Active again 0.9 s later: not idle at the first deadline.
        t.seen(&occ(0, 1, 1, 6, 900_000_000));
        assert_eq!(expire(&mut t, 100 + IDLE), []);
        assert_eq!(t.filings(), 1, "filed again, once");
        assert_eq!(expire(&mut t, 900_000_000 + IDLE - 1), []);
        assert_eq!(expire(&mut t, 900_000_000 + IDLE), [(1, 6)]);
        // It comes back: counted afresh, and expires on its own deadline.
        t.seen(&occ(0, 1, 1, 8, 3 * IDLE));
        assert_eq!(changes(&mut t), [(1, 2, 200)]);
        assert_eq!(expire(&mut t, 4 * IDLE), [(1, 2)]);
    }

    #[test]
    fn expiry_opens_only_due_buckets() {
        let mut t = FlowTable::new(100_000, IDLE);
        // 50,000 flows seen at 0.5 s, then a check long before their
        // deadline leaves every filing where it is.
        for port in 0..50_000u16 {
            t.seen(&occ(0, u64::from(port) + 1, port, 1, IDLE / 2));
        }
        let buckets = t.wheel.len();
        assert_eq!(expire(&mut t, IDLE), []);
        assert_eq!((t.wheel.len(), t.filings()), (buckets, 50_000));
        // Stale filings (a flow removed and back) are dropped unseen.
        t.remove(&key(7));
        t.seen(&occ(1, 1, 7, 1, 2 * IDLE));
        let gone = expire(&mut t, IDLE / 2 + IDLE);
        assert_eq!(gone.len(), 49_999);
        assert_eq!((t.len(), t.filings()), (1, 1));
    }

    #[test]
    fn an_occupancy_ended_unseen_counts_whole_and_leaves_nothing_live() {
        let mut t = FlowTable::new(10, IDLE);
        t.ended(&occ(0, 1, 1, 5, 20));
        t.ended(&occ(1, 1, 1, 2, 30));
        assert_eq!(packets(&t, 1), Some(7));
        assert_eq!(t.live(), 0);
    }

    #[test]
    fn only_sighted_occupancies_are_remembered_as_ended_and_for_two_rounds() {
        let mut t = FlowTable::new(10, IDLE);
        t.seen(&occ(0, 1, 1, 5, 20));
        t.ended(&occ(0, 1, 1, 6, 25));
        // Never sighted: counted whole, nothing to remember.
        t.ended(&occ(0, 2, 2, 3, 25));
        assert_eq!((t.ended_now.len(), t.live()), (1, 0));
        t.new_round();
        t.seen(&occ(0, 1, 1, 6, 25));
        assert_eq!(packets(&t, 1), Some(6), "stale one round later");
        t.new_round();
        assert!(t.ended_now.is_empty() && t.ended_before.is_empty());
        assert_eq!(packets(&t, 2), Some(3));
    }

    #[test]
    fn sightings_count_however_many_records_came_in_the_round() {
        // A long round (one interval of a run at a million evictions a
        // second), then the final read of the occupancies still in the
        // kernel, whose records never come (the program is detached): every
        // one of them counts.
        let mut t = FlowTable::new(1000, IDLE);
        let records: Vec<Occupancy> = (0..500_000u64)
            .map(|i| occ(0, i + 1, (i % 1000) as u16, 1, 20))
            .collect();
        t.ended_all(&records);
        for port in 0..1000u16 {
            t.seen(&occ(1, u64::from(port) + 1, port, 2, 30));
        }
        let total: u64 = t.snapshot().iter().map(|(_, v)| v.packets).sum();
        assert_eq!(total, 500_000 + 2 * 1000);
    }

    #[test]
    fn entries_of_removed_flows_are_reused_and_the_table_stays_within_max_flows() {
        let mut t = FlowTable::new(1000, IDLE);
        let buckets = t.index.buckets.len();
        for round in 0..5u64 {
            let at = round * 3 * IDLE;
            for port in 0..1000u16 {
                t.ended(&occ(0, round * 1000 + u64::from(port) + 1, port, 1, at));
            }
            assert_eq!(t.len(), 1000);
            let mut gone = Vec::new();
            t.expire(at + IDLE, &mut gone);
            assert_eq!((gone.len(), t.len()), (1000, 0));
        }
        assert_eq!(t.entries.len(), 1000, "every entry reused");
        assert_eq!(t.index.buckets.len(), buckets, "the index never grew");
        assert_eq!(t.filings(), 0);
    }

    #[test]
    fn changes_are_the_same_by_list_and_by_sweep() {
        // 100 flows; then 3 of them change (the list), then 90 (the sweep).
        let mut t = FlowTable::new(200, IDLE);
        for port in 0..100u16 {
            t.ended(&occ(0, u64::from(port) + 1, port, 2, 20));
        }
        assert_eq!(changes(&mut t).len(), 100);
        for (n, seq) in [(3u16, 1000u64), (90, 2000)] {
            for port in 0..n {
                t.ended(&occ(1, seq + u64::from(port), port, 5, 30));
            }
            let got = changes(&mut t);
            assert_eq!(got.len(), usize::from(n));
            assert!(got.iter().all(|&(_, p, b)| p == 5 && b == 500), "{got:?}");
        }
        assert_eq!(changes(&mut t), []);
        assert_eq!(
            t.snapshot().iter().map(|(_, v)| v.packets).sum::<u64>(),
            100 * 2 + 3 * 5 + 90 * 5
        );
    }

    #[test]
    fn memory_bound_grows_with_max_flows_only() {
        let small = FlowTable::memory_bound(1024);
        let big = FlowTable::memory_bound(1 << 20);
        assert!(small < 1 << 20, "{small}");
        // Per flow: 120 (entry) + 8 (filing) + 4 + 4 (change and free
        // lists) + 88 (a changed flow) + 2 index buckets of 8 bytes.
        let per_flow = (big - small) as f64 / f64::from((1 << 20) - 1024);
        assert!((239.0..=241.0).contains(&per_flow), "{per_flow}");
    }

    #[test]
    fn the_index_agrees_with_a_map_through_inserts_and_removals() {
        // 16 buckets (room for 8 flows) and hashes crowded onto a few homes,
        // so runs wrap around the end and removals shift buckets back.
        let mut index = Index::new(8).unwrap();
        assert_eq!(index.buckets.len(), 16);
        let mut reference: HashMap<u32, u64> = HashMap::new();
        let mut state = 0x1234_5678_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let r = next();
            let pos = (r % 12) as u32;
            // Homes 13, 14, 15 and 0 only; the tag's high bits vary.
            let hash = ((r >> 8) & 0xffff_0000) | ((13 + (r >> 40) % 4) % 16);
            match reference.get(&pos) {
                Some(&h) => {
                    assert_eq!(index.find(h, |p| p == pos), Some(pos));
                    index.remove(h, pos);
                    reference.remove(&pos);
                }
                None if reference.len() < 8 => {
                    index.insert(hash, pos);
                    reference.insert(pos, hash);
                }
                None => {}
            }
            for (&p, &h) in &reference {
                assert_eq!(index.find(h, |q| q == p), Some(p), "{p} lost");
            }
            let used = index.buckets.iter().filter(|&&b| b != 0).count();
            assert_eq!(used, reference.len());
        }
    }

    #[test]
    fn records_in_a_batch_count_as_one_by_one() {
        // A batch longer than the look-ahead, with flows repeating in it
        // and new ones among them, and a sighted occupancy ending in it.
        let records: Vec<Occupancy> = (0..100u64)
            .map(|i| occ((i % 2) as u32, i + 1, (i % 7) as u16, i % 5 + 1, 20 + i))
            .collect();
        let (mut one, mut all) = (FlowTable::new(10, IDLE), FlowTable::new(10, IDLE));
        for t in [&mut one, &mut all] {
            t.seen(&occ(0, 3, 2, 1, 10));
        }
        for o in &records {
            one.ended(o);
        }
        all.ended_all(&records);
        let sorted = |t: &FlowTable| {
            let mut v: Vec<(u16, u64, u64)> = t
                .snapshot()
                .iter()
                .map(|(k, v)| (u16::from_be(k.sport_be), v.packets, v.last_seen_ns))
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(sorted(&one), sorted(&all));
        assert_eq!(sorted(&all).len(), 7);
        assert_eq!((one.live(), all.live()), (0, 0));
    }

    #[test]
    fn a_table_too_big_for_memory_is_an_error_not_an_abort() {
        let err = FlowTable::try_new(usize::MAX / 64, IDLE).expect_err("no memory for that");
        assert!(!err.to_string().is_empty());
    }
}
