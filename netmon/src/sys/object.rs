//! Loading any eBPF object, and what can be done with its programs and
//! maps: load a program into the kernel, attach it through a bpf_link, run
//! it under `BPF_PROG_TEST_RUN`, point a program array at it. [`FlowMaps`]
//! reads and writes the maps of the counting code (netmon-ebpf's `flow`
//! module), whichever object holds them.
//!
//! One loading path for the monitor ([`super::Attachment`]), the
//! integration tests and the benches; every failure becomes a
//! [`SysError`].

use std::{
    io,
    os::fd::{AsFd, AsRawFd, RawFd},
};

pub use aya::programs::{TestRunAttrs, TestRunOptions, TestRunResult};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{
        LinkOrder, ProgramFd, SchedClassifier, TcAttachType, Xdp, XdpMode as AyaXdpMode,
        links::FdLink,
        tc::{SchedClassifierLink, TcAttachOptions},
        xdp::XdpLink,
    },
};
use netmon_common::{
    CLOCK_MAP, COUNTERS_MAP, Counters, DEFAULT_RTT_PENDING, DIR_RX, EVICT_POS_MAP, EVICTED_MAP,
    Evicted, FLOW_SLOTS_MAP, FlowSlot, HASH_SEEDS_GLOBAL, RING_MASK_GLOBAL, RING_SHIFT_GLOBAL,
    RTT_PENDING_MAP, RTT_SAMPLES_MAP, RingPos, RttKey, RttPending, RttSample, SLOT_MASK_GLOBAL,
    SLOT_SHIFT_GLOBAL, hash_seeds,
};

use super::{
    AttachedMode, Occupancy, SysError, chain, fatal_attach_error, is_permission, lookup_batch,
    monotonic_ns, occupancy,
};

/// A value for a global of an object (`#[no_mangle] static` in read-only
/// data), set at load time.
#[derive(Clone, Copy, Debug)]
pub enum Global {
    U32(u32),
    U64s([u64; 5]),
}

/// A loaded object: its maps exist in the kernel; its programs are loaded
/// one by one ([`Object::load_xdp`]).
pub struct Object {
    pub(super) ebpf: Ebpf,
}

/// A loaded program, by its own file descriptor (see [`Object::program`]).
pub struct ProgramHandle(ProgramFd);

impl ProgramHandle {
    /// The loaded program whose kernel id is `id`, whoever loaded it
    /// (`cargo xtask bench flows` puts a running netmon's XDP program, by
    /// the id `ip link` shows, into its driver's program array).
    pub fn by_id(id: u32) -> Result<Self, SysError> {
        let name = format!("program id {id}");
        for info in aya::programs::loaded_programs() {
            let info = info.map_err(|e| program_error(&name, &e))?;
            if info.id() == id {
                return info
                    .fd()
                    .map(ProgramHandle)
                    .map_err(|e| program_error(&name, &e));
            }
        }
        Err(SysError::Program {
            program: name,
            reason: "no loaded program has this id".into(),
        })
    }
}

/// An attachment of a program through a bpf_link: it dies with its file
/// descriptor, so a killed process leaves nothing attached. Dropping it
/// detaches.
pub struct Link {
    _link: FdLink,
}

fn load_error(e: &(dyn std::error::Error + 'static)) -> SysError {
    if is_permission(e) {
        SysError::Permission
    } else {
        SysError::Load(chain(e))
    }
}

fn program_error(program: &str, e: &(dyn std::error::Error + 'static)) -> SysError {
    if is_permission(e) {
        SysError::Permission
    } else {
        SysError::Program {
            program: program.to_owned(),
            reason: chain(e),
        }
    }
}

impl Object {
    /// Loads `bytes` as they are.
    pub fn load(bytes: &[u8]) -> Result<Self, SysError> {
        Self::load_with(bytes, &[], &[])
    }

    /// Loads `bytes` with `globals` set and the maps of `max_entries`
    /// resized. Every global named must exist in the object.
    pub fn load_with(
        bytes: &[u8],
        globals: &[(&str, Global)],
        max_entries: &[(&str, u32)],
    ) -> Result<Self, SysError> {
        if bytes.is_empty() {
            return Err(SysError::NoObject);
        }
        let mut loader = EbpfLoader::new();
        for (name, value) in globals {
            match value {
                Global::U32(v) => loader.override_global(name, v, true),
                Global::U64s(v) => loader.override_global(name, &v[..], true),
            };
        }
        for &(name, n) in max_entries {
            loader.map_max_entries(name, n);
        }
        let ebpf = loader.load(bytes).map_err(|e| load_error(&e))?;
        Ok(Self { ebpf })
    }

    /// Loads an object that holds the counting code (the shipped object)
    /// with the flow cache, ring and passive-RTT pending map sized by
    /// `counting`, and takes the counting maps out (the RTT maps stay:
    /// [`RttMaps::take`]). The clock is set to now, so the first packets are stamped with
    /// the time of the load.
    pub fn load_counting(bytes: &[u8], counting: &Counting) -> Result<(Self, FlowMaps), SysError> {
        let cpu_ids = possible_cpus()?;
        let slots = counting.slots_per_cpu;
        let ring = counting.ring_entries_per_cpu;
        for (n, what) in [(slots, "flow slots"), (ring, "eviction ring entries")] {
            if !n.is_power_of_two() {
                return Err(SysError::Load(format!(
                    "{n} {what} per CPU is not a power of two"
                )));
            }
        }
        let entries = per_cpu_entries(&cpu_ids, slots)?;
        let ring_entries = per_cpu_entries(&cpu_ids, ring)?;
        let mut object = Self::load_with(
            bytes,
            &[
                (SLOT_MASK_GLOBAL, Global::U32(slots - 1)),
                (SLOT_SHIFT_GLOBAL, Global::U32(slots.trailing_zeros())),
                (RING_MASK_GLOBAL, Global::U32(ring - 1)),
                (RING_SHIFT_GLOBAL, Global::U32(ring.trailing_zeros())),
                (
                    HASH_SEEDS_GLOBAL,
                    Global::U64s(hash_seeds(counting.hash_seed)),
                ),
            ],
            &[
                (FLOW_SLOTS_MAP, entries),
                (EVICTED_MAP, ring_entries),
                (EVICT_POS_MAP, per_cpu_entries(&cpu_ids, 1)?),
                (RTT_PENDING_MAP, counting.rtt_pending),
            ],
        )?;
        let mut maps = FlowMaps::take(&mut object, cpu_ids, slots, ring)?;
        maps.publish_clock()?;
        Ok((object, maps))
    }

    /// Names of the object's programs, sorted.
    pub fn program_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.ebpf.programs().map(|(n, _)| n.to_owned()).collect();
        v.sort();
        v
    }

    /// Names of the object's maps not taken out of it, sorted (global data
    /// sections such as `.rodata` included).
    pub fn map_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.ebpf.maps().map(|(n, _)| n.to_owned()).collect();
        v.sort();
        v
    }

    fn xdp(&self, name: &str) -> Result<&Xdp, SysError> {
        self.ebpf
            .program(name)
            .ok_or_else(|| SysError::Program {
                program: name.to_owned(),
                reason: "not in the object".into(),
            })?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| program_error(name, &e))
    }

    /// The program `name` as its type (`Xdp`, `SchedClassifier`).
    fn typed_mut<'a, P>(&'a mut self, name: &str) -> Result<&'a mut P, SysError>
    where
        &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| SysError::Program {
                program: name.to_owned(),
                reason: "not in the object".into(),
            })?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| program_error(name, &e))
    }

    fn xdp_mut(&mut self, name: &str) -> Result<&mut Xdp, SysError> {
        self.typed_mut(name)
    }

    /// Loads the XDP program `name` into the kernel (the verifier runs).
    pub fn load_xdp(&mut self, name: &str) -> Result<(), SysError> {
        self.xdp_mut(name)?
            .load()
            .map_err(|e| program_error(name, &e))
    }

    /// Attaches the loaded XDP program `name` to `iface` (index `ifindex`)
    /// in `mode`, through a bpf_link only: a netlink attachment, which
    /// would outlive the process, is detached again and refused
    /// ([`SysError::NoLink`]). A failure another mode may get past is
    /// [`SysError::Attach`].
    pub fn attach_xdp(
        &mut self,
        name: &str,
        iface: &str,
        ifindex: u32,
        mode: AttachedMode,
    ) -> Result<Link, SysError> {
        let program = self.xdp_mut(name)?;
        let flags = match mode {
            AttachedMode::Native => AyaXdpMode::Driver,
            AttachedMode::Generic => AyaXdpMode::Skb,
        };
        match program.attach_to_if_index(ifindex, flags) {
            Ok(id) => {
                let link: XdpLink = program
                    .take_link(id)
                    .map_err(|e| SysError::Load(chain(&e)))?;
                // A netlink attachment (no bpf_link) would survive a
                // SIGKILL; converting fails for it, and dropping it
                // detaches.
                let link = FdLink::try_from(link).map_err(|_| SysError::NoLink)?;
                Ok(Link { _link: link })
            }
            Err(e) => Err(
                fatal_attach_error(&e, iface).unwrap_or_else(|| SysError::Attach {
                    iface: iface.to_owned(),
                    mode: mode.as_str(),
                    reason: chain(&e),
                    hint: if mode == AttachedMode::Native {
                        "; the driver may lack native XDP: try --xdp-mode generic"
                    } else {
                        "; is another XDP program attached? (`ip link show` shows it)"
                    },
                }),
            ),
        }
    }

    fn tc_mut(&mut self, name: &str) -> Result<&mut SchedClassifier, SysError> {
        self.typed_mut(name)
    }

    /// Loads the TC program `name` into the kernel (the verifier runs).
    pub fn load_tc(&mut self, name: &str) -> Result<(), SysError> {
        self.tc_mut(name)?
            .load()
            .map_err(|e| program_error(name, &e))
    }

    /// Attaches the loaded TC program `name` to `iface`'s egress through
    /// TCX (a bpf_link, Linux 6.6), after the programs already there; never
    /// through netlink (a clsact filter would outlive the process). An
    /// error is [`SysError::Attach`] (no TCX on this kernel among the
    /// causes) or [`SysError::Permission`].
    pub fn attach_tc_egress(&mut self, name: &str, iface: &str) -> Result<Link, SysError> {
        let program = self.tc_mut(name)?;
        let attach_err = |e: &(dyn std::error::Error + 'static)| {
            if is_permission(e) {
                SysError::Permission
            } else {
                SysError::Attach {
                    iface: iface.to_owned(),
                    mode: "TCX egress",
                    reason: chain(e),
                    hint: "; TCX needs Linux 6.6",
                }
            }
        };
        let id = program
            .attach_with_options(
                iface,
                TcAttachType::Egress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|e| attach_err(&e))?;
        let link: SchedClassifierLink = program
            .take_link(id)
            .map_err(|e| SysError::Load(chain(&e)))?;
        // Always a bpf_link for TcxOrder; converting fails for a netlink
        // attachment, which dropping then removes.
        let link = FdLink::try_from(link).map_err(|_| SysError::NoLink)?;
        Ok(Link { _link: link })
    }

    /// One `BPF_PROG_TEST_RUN` of the loaded XDP program `name`.
    pub fn test_run(&self, name: &str, opts: TestRunOptions) -> Result<TestRunResult, SysError> {
        use aya::programs::TestRun as _;
        self.xdp(name)?
            .test_run(opts)
            .map_err(|e| program_error(name, &e))
    }

    /// One `BPF_PROG_TEST_RUN` of the loaded TC program `name` (the frame
    /// as an skb, from its Ethernet header).
    pub fn test_run_tc(
        &mut self,
        name: &str,
        opts: TestRunOptions,
    ) -> Result<TestRunResult, SysError> {
        use aya::programs::TestRun as _;
        self.tc_mut(name)?
            .test_run(opts)
            .map_err(|e| program_error(name, &e))
    }

    /// A handle to the loaded XDP program `name`, for a program array
    /// ([`Self::set_tail_call`]) of this object or another.
    pub fn program(&self, name: &str) -> Result<ProgramHandle, SysError> {
        let fd = self
            .xdp(name)?
            .fd()
            .and_then(|fd| fd.try_clone().map_err(Into::into))
            .map_err(|e| program_error(name, &e))?;
        Ok(ProgramHandle(fd))
    }

    /// Puts `program` (of this object or another: a program array takes
    /// any loaded program of its type) at `index` of this object's program
    /// array `map`.
    pub fn set_tail_call(
        &mut self,
        map: &'static str,
        index: u32,
        program: &ProgramHandle,
    ) -> Result<(), SysError> {
        let fd = &program.0;
        let map_err = |e: aya::maps::MapError| SysError::Map {
            map,
            reason: chain(&e),
        };
        let data = self.ebpf.map_mut(map).ok_or_else(|| SysError::Map {
            map,
            reason: "missing from the object".into(),
        })?;
        let mut array = ProgramArray::try_from(data).map_err(map_err)?;
        array.set(index, fd, 0).map_err(map_err)
    }
}

/// The passive-RTT maps of the counting code (see `RTT_PENDING_MAP` in
/// netmon-common): the sent packets waiting for their answer and the ring
/// of samples. Taken from the object after [`Object::load_counting`].
pub struct RttMaps {
    pending: HashMap<MapData, RttKey, RttPending>,
    samples: RingBuf<MapData>,
}

impl RttMaps {
    /// Takes the RTT maps out of `object`; `None` when the object has none
    /// (an object built without passive RTT).
    pub fn take(object: &mut Object) -> Result<Option<Self>, SysError> {
        let (Some(pending), Some(samples)) = (
            object.ebpf.take_map(RTT_PENDING_MAP),
            object.ebpf.take_map(RTT_SAMPLES_MAP),
        ) else {
            return Ok(None);
        };
        Ok(Some(Self {
            pending: HashMap::try_from(pending).map_err(map_err(RTT_PENDING_MAP))?,
            samples: RingBuf::try_from(samples).map_err(map_err(RTT_SAMPLES_MAP))?,
        }))
    }

    /// Moves the samples in the ring to `out`; returns how many records of
    /// another size than an [`RttSample`] were skipped (none, from
    /// netmon's program).
    pub fn drain_samples(&mut self, out: &mut Vec<RttSample>) -> usize {
        let mut skipped = 0;
        while let Some(item) = self.samples.next() {
            if item.len() != size_of::<RttSample>() {
                skipped += 1;
                continue;
            }
            // SAFETY: a whole RttSample (checked length), every bit pattern
            // valid, read_unaligned copes with the ring's alignment.
            out.push(unsafe { item.as_ptr().cast::<RttSample>().read_unaligned() });
        }
        skipped
    }

    /// Every pending entry, as it is now (tests; costs two system calls
    /// per entry).
    pub fn pending(&self) -> Result<Vec<(RttKey, RttPending)>, SysError> {
        self.pending
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(RTT_PENDING_MAP))
    }

    /// Deletes the pending entries sent before `before_ns` (kernel
    /// monotonic ns): their answer will not come, or too late to be a
    /// sample. Returns how many it deleted. An entry the program deletes
    /// meanwhile (it matched) is not an error.
    pub fn expire_pending(&mut self, before_ns: u64) -> Result<u64, SysError> {
        let stale: Vec<RttKey> = self
            .pending
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.sent_ns < before_ns)
            .map(|(k, _)| k)
            .collect();
        let mut deleted = 0;
        for k in &stale {
            if self.pending.remove(k).is_ok() {
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

/// How the counting code's maps and globals are set up at load.
#[derive(Clone, Copy, Debug)]
pub struct Counting {
    /// Flow slots per CPU, a power of two.
    pub slots_per_cpu: u32,
    /// Seed of the slot hash.
    pub hash_seed: u64,
    /// Entries of each CPU's eviction ring (a power of two).
    pub ring_entries_per_cpu: u32,
    /// Entries of the passive-RTT pending map (`RTT_PENDING_MAP`): sent
    /// packets waiting for their answer, at most.
    pub rtt_pending: u32,
}

impl Counting {
    /// netmon's set-up: a random seed, a ring sized for the CPUs.
    pub fn new(slots_per_cpu: u32) -> Result<Self, SysError> {
        Ok(Self {
            slots_per_cpu,
            hash_seed: super::random_seed(),
            ring_entries_per_cpu: netmon_common::ring_entries_per_cpu(per_cpu_entries(
                &possible_cpus()?,
                1,
            )?),
            rtt_pending: DEFAULT_RTT_PENDING,
        })
    }
}

const POSSIBLE_CPUS: &str = "/sys/devices/system/cpu/possible";

/// The id of each possible CPU, in the order of the per-CPU copies of a
/// per-CPU map value.
pub fn possible_cpus() -> Result<Vec<u32>, SysError> {
    std::fs::read_to_string(POSSIBLE_CPUS)
        .ok()
        .and_then(|s| super::parse_cpu_list(&s))
        .ok_or_else(|| SysError::Load(format!("cannot read the CPU list {POSSIBLE_CPUS}")))
}

/// Entries of an array with `per_cpu` entries for every CPU id the kernel
/// can hand out (the highest possible id + 1): the flow slots, the
/// eviction rings, their positions.
fn per_cpu_entries(cpu_ids: &[u32], per_cpu: u32) -> Result<u32, SysError> {
    cpu_ids
        .iter()
        .max()
        .map_or(0, |&m| m + 1)
        .checked_mul(per_cpu)
        .ok_or_else(|| SysError::Load("too many map entries for the CPU count".into()))
}

/// An array map mapped into this process (`BPF_F_MMAPABLE`), shared with
/// the programs that write it; unmapped on drop.
struct Mapped {
    ptr: *mut u8,
    len: usize,
    /// The map, kept open while it is mapped.
    _map: Map,
}

// SAFETY: the mapping is plain shared memory owned by this value; whoever
// owns it may use it from any thread (FlowMaps synchronises with the
// program through the ring's positions, not through the thread).
unsafe impl Send for Mapped {}

impl Mapped {
    /// Maps all `entries` values (of `value_size` bytes) of array `map`,
    /// for reading, and for writing too when `writable`.
    fn new(
        map: Map,
        name: &'static str,
        entries: u32,
        value_size: usize,
        writable: bool,
    ) -> Result<Self, SysError> {
        let Map::Array(data) = &map else {
            return Err(SysError::Map {
                map: name,
                reason: "not an array".into(),
            });
        };
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = (entries as usize * value_size.next_multiple_of(8)).next_multiple_of(page);
        // SAFETY: a new shared mapping of the map's values (the kernel
        // checks the length against the map); nothing else is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                if writable {
                    libc::PROT_READ | libc::PROT_WRITE
                } else {
                    libc::PROT_READ
                },
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(SysError::Map {
                map: name,
                reason: format!("mmap: {}", io::Error::last_os_error()),
            });
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
            _map: map,
        })
    }

    /// Value `index` of the mapped array of `T`s, in bounds.
    fn value<T>(&self, index: usize) -> *mut T {
        assert!(
            (index + 1) * size_of::<T>() <= self.len,
            "value {index} outside the mapping"
        );
        // SAFETY: inside the mapping (checked above), which is page-aligned,
        // its values 8-byte multiples.
        unsafe { self.ptr.cast::<T>().add(index) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Every CPU's eviction ring (`EVICTED_MAP`) and its positions
/// (`EVICT_POS_MAP`), mapped: userspace reads the entries where the program
/// wrote them and moves each CPU's tail (see `RingPos`).
struct Rings {
    entries: Mapped,
    pos: Mapped,
    /// Entries per CPU, a power of two.
    per_cpu: u32,
    /// The id of each possible CPU, in the order of the per-CPU copies of
    /// a per-CPU map value: the rings read, in turn.
    cpu_ids: Vec<u32>,
    /// Position in `cpu_ids` the next read starts at, so that a reader
    /// that stops at its limit does not always favour the first CPUs.
    next: usize,
}

impl Rings {
    /// CPU `cpu`'s positions, and its unread entries as (first, count).
    fn unread_of(&self, cpu: u32) -> (*mut RingPos, u64, u64) {
        let pos = self.pos.value::<RingPos>(cpu as usize);
        // SAFETY: this CPU's positions; the program writes `head` only,
        // this reader alone `tail` (single aligned words).
        let (head, tail) = unsafe {
            (
                std::ptr::read_volatile(&raw const (*pos).head),
                std::ptr::read_volatile(&raw const (*pos).tail),
            )
        };
        // The entries below the head are whole once the head is seen.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        // More than a ring's worth cannot be there: the program never
        // writes past the tail.
        (
            pos,
            tail,
            head.wrapping_sub(tail).min(u64::from(self.per_cpu)),
        )
    }

    /// Entry `n` (counted from 0 for ever) of CPU `cpu`'s ring.
    fn entry(&self, cpu: u32, n: u64) -> Evicted {
        let index =
            cpu as usize * self.per_cpu as usize + (n & u64::from(self.per_cpu - 1)) as usize;
        // SAFETY: an entry of this CPU's ring, inside the mapping; every
        // bit pattern is a valid Evicted.
        unsafe { std::ptr::read_volatile(self.entries.value::<Evicted>(index)) }
    }

    /// Moves up to `max - out.len()` unread entries to `out`, CPU by CPU,
    /// each CPU's oldest first; true when it stopped at `max`.
    fn drain(&mut self, out: &mut Vec<Occupancy>, max: usize) -> bool {
        let n = self.cpu_ids.len();
        for k in 0..n {
            let cpu = self.cpu_ids[(self.next + k) % n];
            let (pos, tail, unread) = self.unread_of(cpu);
            let take = unread.min(max.saturating_sub(out.len()) as u64);
            out.extend((0..take).map(|i| {
                let e = self.entry(cpu, tail.wrapping_add(i));
                Occupancy {
                    cpu,
                    seq: e.seq,
                    key: e.key,
                    value: e.value,
                }
            }));
            // The entries are copied before the program may reuse them.
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            // SAFETY: as in unread_of.
            unsafe { std::ptr::write_volatile(&raw mut (*pos).tail, tail.wrapping_add(take)) };
            if take < unread {
                self.next = (self.next + k) % n;
                return true;
            }
        }
        self.next = (self.next + 1) % n.max(1);
        false
    }

    /// Each CPU's unread entries, left in the ring (tests, benches).
    fn unread(&self) -> Vec<(u32, Evicted)> {
        let mut out = Vec::new();
        for &cpu in &self.cpu_ids {
            let (_, tail, unread) = self.unread_of(cpu);
            out.extend((0..unread).map(|i| (cpu, self.entry(cpu, tail.wrapping_add(i)))));
        }
        out
    }
}

/// The counting code's maps, taken out of their object: the totals, the
/// flow slots, the eviction rings and the clock.
pub struct FlowMaps {
    counters: PerCpuArray<MapData, Counters>,
    slots: Map,
    slot_entries: u32,
    slot_shift: u32,
    rings: Rings,
    clock: Array<MapData, u64>,
}

fn take(object: &mut Object, name: &'static str) -> Result<Map, SysError> {
    object.ebpf.take_map(name).ok_or_else(|| SysError::Map {
        map: name,
        reason: "missing from the object".into(),
    })
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> SysError {
    move |e| SysError::Map {
        map,
        reason: chain(&e),
    }
}

impl FlowMaps {
    fn take(
        object: &mut Object,
        cpu_ids: Vec<u32>,
        slots_per_cpu: u32,
        ring_per_cpu: u32,
    ) -> Result<Self, SysError> {
        let counters =
            PerCpuArray::try_from(take(object, COUNTERS_MAP)?).map_err(map_err(COUNTERS_MAP))?;
        let slots = take(object, FLOW_SLOTS_MAP)?;
        let entries = Mapped::new(
            take(object, EVICTED_MAP)?,
            EVICTED_MAP,
            per_cpu_entries(&cpu_ids, ring_per_cpu)?,
            size_of::<Evicted>(),
            false,
        )?;
        let pos = Mapped::new(
            take(object, EVICT_POS_MAP)?,
            EVICT_POS_MAP,
            per_cpu_entries(&cpu_ids, 1)?,
            size_of::<RingPos>(),
            true,
        )?;
        let clock = Array::try_from(take(object, CLOCK_MAP)?).map_err(map_err(CLOCK_MAP))?;
        Ok(Self {
            counters,
            slot_entries: per_cpu_entries(&cpu_ids, slots_per_cpu)?,
            slot_shift: slots_per_cpu.trailing_zeros(),
            slots,
            rings: Rings {
                entries,
                pos,
                per_cpu: ring_per_cpu,
                cpu_ids,
                next: 0,
            },
            clock,
        })
    }

    /// The global counters of what was received (the XDP program), summed
    /// over CPUs.
    pub fn counters(&self) -> Result<Counters, SysError> {
        self.counters_of(DIR_RX)
    }

    /// The global counters of direction `dir` (`DIR_RX`, `DIR_TX`), summed
    /// over CPUs.
    pub fn counters_of(&self, dir: u8) -> Result<Counters, SysError> {
        let per_cpu = self
            .counters
            .get(&u32::from(dir), 0)
            .map_err(map_err(COUNTERS_MAP))?;
        let mut total = Counters::default();
        for c in per_cpu.iter() {
            total.accumulate(c);
        }
        Ok(total)
    }

    /// Writes the kernel monotonic time into the program's clock.
    pub fn publish_clock(&mut self) -> Result<(), SysError> {
        self.set_clock(monotonic_ns())
    }

    /// Writes `ns` into the program's clock (tests and benches: any value
    /// will do).
    pub fn set_clock(&mut self, ns: u64) -> Result<(), SysError> {
        self.clock.set(0, ns, 0).map_err(map_err(CLOCK_MAP))
    }

    fn slots_fd(&self) -> Result<RawFd, SysError> {
        match &self.slots {
            Map::Array(data) => Ok(data.fd().as_fd().as_raw_fd()),
            _ => Err(SysError::Map {
                map: FLOW_SLOTS_MAP,
                reason: "not an array".into(),
            }),
        }
    }

    /// Every slot of every CPU as it is now, CPU `c`'s at
    /// `c << slots_shift()`, in one `BPF_MAP_LOOKUP_BATCH` (Linux 5.6+).
    pub fn slots(&self) -> Result<Vec<FlowSlot>, SysError> {
        lookup_batch(self.slots_fd()?, self.slot_entries).map_err(|e: io::Error| SysError::Map {
            map: FLOW_SLOTS_MAP,
            reason: format!("batch lookup: {e}"),
        })
    }

    /// log2 of the slots per CPU: slot `i` is CPU `i >> slot_shift()`'s.
    pub fn slot_shift(&self) -> u32 {
        self.slot_shift
    }

    /// Each CPU's evictions not read from its ring yet, with the CPU id,
    /// left where they are (tests and benches: what `drain_evicted` would
    /// take next).
    pub fn unread_evicted(&self) -> Vec<(u32, Evicted)> {
        self.rings.unread()
    }

    /// Eviction ring entries per CPU, and the bytes of every CPU's ring.
    pub fn ring_size(&self) -> (u32, usize) {
        (self.rings.per_cpu, self.rings.entries.len)
    }

    /// The id of each possible CPU, in the order of the per-CPU copies.
    pub fn cpu_ids(&self) -> &[u32] {
        &self.rings.cpu_ids
    }

    /// Every occupied flow slot of every CPU, as it is now. Copies torn
    /// across a change of occupant (`seq != seq_end`) are left out: the
    /// next read has them. An occupant leaves its slot only after its
    /// final record is in its CPU's ring, so what this does not show, a
    /// later [`drain_evicted`](Self::drain_evicted) does.
    pub fn occupancies(&self) -> Result<Vec<Occupancy>, SysError> {
        // A slot's place in the array names its CPU.
        Ok(self
            .slots()?
            .iter()
            .enumerate()
            .filter_map(|(i, s)| occupancy((i >> self.slot_shift) as u32, &s.into()))
            .collect())
    }

    /// Moves the final records of evicted occupancies from the rings to
    /// `out` until the rings are empty or `out` holds `max`; returns
    /// whether it stopped at `max` (the rings may hold more). Read
    /// [`occupancies`](Self::occupancies) before, never after, in one
    /// round: a record may only be consumed after every read that could
    /// still show its occupancy.
    pub fn drain_evicted(&mut self, out: &mut Vec<Occupancy>, max: usize) -> bool {
        self.rings.drain(out, max)
    }

    /// Empties every slot and every CPU's ring (tests and benches, between
    /// rounds; never while netmon counts).
    pub fn clear_flows(&mut self) -> Result<(), SysError> {
        let mut slots: Array<&mut MapData, FlowSlot> =
            Array::try_from(&mut self.slots).map_err(map_err(FLOW_SLOTS_MAP))?;
        for i in 0..self.slot_entries {
            slots
                .set(i, FlowSlot::default(), 0)
                .map_err(map_err(FLOW_SLOTS_MAP))?;
        }
        let mut discard = Vec::new();
        while self.drain_evicted(&mut discard, 1 << 16) {
            discard.clear();
        }
        Ok(())
    }
}
