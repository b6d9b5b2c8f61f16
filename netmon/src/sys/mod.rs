//! The only module that touches aya: loads the XDP object, attaches it,
//! reads its maps and the eviction ring. Everything above it works on plain
//! values.

use std::{
    ffi::CString,
    fs, io,
    os::fd::{AsFd, AsRawFd, RawFd},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{Xdp, XdpMode as AyaXdpMode, links::FdLink, xdp::XdpLink},
};
use aya_log::EbpfLogger;
use netmon_common::{
    CLOCK_MAP, COUNTERS_MAP, Counters, EVICT_BATCH, EVICTED_MAP, EvictBatch, FLOW_SLOTS_MAP,
    FlowKey, FlowSlot, FlowValue, HASH_SEED_GLOBAL, PENDING_MAP, Pending, SLOT_MASK_GLOBAL,
    SLOT_SHIFT_GLOBAL, XDP_PROGRAM,
};
use thiserror::Error;

use crate::UsageError;

pub mod bpf_stats;
pub mod clock;
pub mod ifstats;
pub mod netif;
pub mod netlink;
pub mod notify;
pub mod signal;

pub use clock::{clock_ns, mono_to_unix_ns, monotonic_ns};

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic mode with a note.
    #[default]
    Auto,
    /// Driver mode only: fastest, needs driver support.
    Native,
    /// Generic (SKB) mode: works on every interface, slower.
    Generic,
}

/// One sighting of an occupancy: a stay of a flow in a CPU's slot
/// (see `monitor::flowtable`), as a slot, a pending entry or a ring record
/// shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occupancy {
    pub cpu: u32,
    pub seq: u64,
    pub key: FlowKey,
    pub value: FlowValue,
}

/// The XDP object, embedded at build time (see build.rs). Empty when the
/// binary was built without `cargo xtask build`.
static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netmon.bpf.o"));

const FIX_PRIVILEGES: &str = "run as root, or grant the binary the capabilities: \
     setcap cap_bpf,cap_net_admin,cap_perfmon,cap_net_raw+ep target/release/netmon";

#[derive(Debug, Error)]
pub enum SysError {
    #[error(
        "this netmon binary was built without its XDP program; build it with `cargo xtask build` \
         (or run `cargo xtask run -- ARGS`)"
    )]
    NoObject,
    #[error("loading the XDP program needs privileges: {FIX_PRIVILEGES}")]
    Permission,
    #[error("loading the XDP program failed: {0}")]
    Load(String),
    #[error("attaching to {iface} in {mode} mode failed: {reason}{hint}")]
    Attach {
        iface: String,
        mode: &'static str,
        reason: String,
        hint: &'static str,
    },
    #[error(
        "another XDP program is attached to {iface}; netmon does not replace it \
         (`ip link show dev {iface}` shows it: detach it, or stop the netmon that holds it)"
    )]
    Busy { iface: String },
    #[error(
        "this kernel attached XDP without a bpf_link, which would outlive netmon; \
         netmon needs Linux 5.9 or newer"
    )]
    NoLink,
    #[error("reading map {map} failed: {reason}")]
    Map { map: &'static str, reason: String },
}

/// Is `err` (or anything it wraps) a refusal for lack of privileges? EPERM
/// always is; EACCES is also what the verifier returns for a program it
/// rejects, so it counts only when we are not root.
fn is_permission(err: &(dyn std::error::Error + 'static)) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            match io.raw_os_error() {
                Some(libc::EPERM) => return true,
                Some(libc::EACCES) if !root => return true,
                _ => {}
            }
        }
        cur = e.source();
    }
    false
}

/// Does `err` (or anything it wraps) carry the OS error `errno`?
fn has_errno(err: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(errno))
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// An attach error that no other mode can get past: missing privileges,
/// or EBUSY (a program or link holds this mode already) / EEXIST (one
/// holds the other mode: native and generic exclude each other).
fn fatal_attach_error(err: &(dyn std::error::Error + 'static), iface: &str) -> Option<SysError> {
    if is_permission(err) {
        Some(SysError::Permission)
    } else if has_errno(err, libc::EBUSY) || has_errno(err, libc::EEXIST) {
        Some(SysError::Busy {
            iface: iface.to_owned(),
        })
    } else {
        None
    }
}

/// Full error chain on one line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cur = e.source();
    }
    text
}

/// Resolves an interface name to its index.
pub fn ifindex(iface: &str) -> Result<u32, UsageError> {
    let missing = || {
        UsageError(format!(
            "no interface named '{iface}'; list interfaces with `ip link`, \
             or omit --iface to use the default route's"
        ))
    };
    let name = CString::new(iface).map_err(|_| missing())?;
    // SAFETY: name is a valid NUL-terminated string for the call's duration.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(missing());
    }
    Ok(index)
}

/// The mode an attachment ended up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Generic,
}

impl AttachedMode {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            AttachedMode::Native => "native",
            AttachedMode::Generic => "generic",
        }
    }
}

/// The loaded program, attached to one interface. Dropping it detaches.
pub struct Attachment {
    /// Declared before `ebpf`: the link goes first, then the program.
    link: Option<FdLink>,
    logger: EbpfLogger<&'static dyn log::Log>,
    /// The eviction ring, taken out of `ebpf` (reading it needs `&mut`).
    ring: RingBuf<MapData>,
    /// The clock the program stamps flows with (see [`Self::publish_clock`]).
    clock: Array<MapData, u64>,
    ebpf: Ebpf,
    /// Entries of the slot array: CPU `c`'s slots start at `c << slot_shift`.
    slot_entries: u32,
    slot_shift: u32,
    /// The id of each possible CPU, in the order of the per-CPU copies (the
    /// ids the program puts in ring records).
    cpu_ids: Vec<u32>,
    pub mode: AttachedMode,
}

impl Attachment {
    /// Loads the embedded object with `slots_per_cpu` flow slots per CPU (a
    /// power of two) and attaches it to `iface` (index `ifindex`, from
    /// [`ifindex`]).
    pub fn attach(
        iface: &str,
        ifindex: u32,
        mode: XdpMode,
        slots_per_cpu: u32,
    ) -> Result<Self, SysError> {
        if XDP_OBJECT.is_empty() {
            return Err(SysError::NoObject);
        }
        debug_assert!(slots_per_cpu.is_power_of_two());
        let cpu_ids = fs::read_to_string(POSSIBLE_CPUS)
            .ok()
            .and_then(|s| parse_cpu_list(&s))
            .ok_or_else(|| SysError::Load(format!("cannot read the CPU list {POSSIBLE_CPUS}")))?;
        let mut ebpf = load_object(&cpu_ids, slots_per_cpu)?;
        let logger = EbpfLogger::init(&mut ebpf).map_err(|e| SysError::Load(chain(&e)))?;
        let ring = ebpf
            .take_map(EVICTED_MAP)
            .ok_or_else(|| SysError::Load(format!("no map {EVICTED_MAP} in the object")))
            .and_then(|m| RingBuf::try_from(m).map_err(|e| SysError::Load(chain(&e))))?;
        let mut clock: Array<MapData, u64> = ebpf
            .take_map(CLOCK_MAP)
            .ok_or_else(|| SysError::Load(format!("no map {CLOCK_MAP} in the object")))
            .and_then(|m| Array::try_from(m).map_err(|e| SysError::Load(chain(&e))))?;
        // The first packets are stamped with the time of the attach.
        write_clock(&mut clock).map_err(|e| SysError::Load(e.to_string()))?;
        let program: &mut Xdp = ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or_else(|| SysError::Load(format!("no program {XDP_PROGRAM} in the object")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| SysError::Load(chain(&e)))?;
        program.load().map_err(|e| {
            if is_permission(&e) {
                SysError::Permission
            } else {
                SysError::Load(chain(&e))
            }
        })?;
        let attempts: &[AttachedMode] = match mode {
            XdpMode::Auto => &[AttachedMode::Native, AttachedMode::Generic],
            XdpMode::Native => &[AttachedMode::Native],
            XdpMode::Generic => &[AttachedMode::Generic],
        };
        let mut last_err = None;
        for &attempt in attempts {
            let flags = match attempt {
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
                    return Ok(Attachment {
                        link: Some(link),
                        logger,
                        ring,
                        clock,
                        ebpf,
                        slot_entries: slot_entries(&cpu_ids, slots_per_cpu)?,
                        slot_shift: slots_per_cpu.trailing_zeros(),
                        cpu_ids,
                        mode: attempt,
                    });
                }
                Err(e) => {
                    if let Some(fatal) = fatal_attach_error(&e, iface) {
                        return Err(fatal);
                    }
                    if mode == XdpMode::Auto && attempt == AttachedMode::Native {
                        log::info!(
                            "native XDP on {iface} failed ({}); trying generic mode",
                            chain(&e)
                        );
                    }
                    last_err = Some((attempt, chain(&e)));
                }
            }
        }
        let (attempt, reason) = last_err.expect("at least one attempt was made");
        Err(SysError::Attach {
            iface: iface.to_owned(),
            mode: attempt.as_str(),
            reason,
            hint: if attempt == AttachedMode::Native {
                "; the driver may lack native XDP: try --xdp-mode generic"
            } else {
                "; is another XDP program attached? (`ip link show` shows it)"
            },
        })
    }

    /// Writes the kernel monotonic time into the program's clock. The
    /// program stamps flows' first and last packets with it, so its
    /// resolution is how often this runs (every 10 ms in the monitor).
    pub fn publish_clock(&mut self) -> Result<(), SysError> {
        write_clock(&mut self.clock)
    }

    /// Detaches the program from the interface. The maps stay readable, so
    /// a final read after this sees every packet that was counted.
    pub fn detach(&mut self) {
        self.link.take();
    }

    /// The global counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, SysError> {
        let map_err = |e: aya::maps::MapError| SysError::Map {
            map: COUNTERS_MAP,
            reason: chain(&e),
        };
        let map = self.ebpf.map(COUNTERS_MAP).ok_or_else(|| SysError::Map {
            map: COUNTERS_MAP,
            reason: "missing from the object".into(),
        })?;
        let array: PerCpuArray<&MapData, Counters> = PerCpuArray::try_from(map).map_err(map_err)?;
        let per_cpu = array.get(&0, 0).map_err(map_err)?;
        let mut total = Counters::default();
        for c in per_cpu.iter() {
            total.accumulate(c);
        }
        Ok(total)
    }

    fn map_fd(&self, name: &'static str) -> Result<RawFd, SysError> {
        match self.ebpf.map(name) {
            Some(aya::maps::Map::Array(data)) => Ok(data.fd().as_fd().as_raw_fd()),
            _ => Err(SysError::Map {
                map: name,
                reason: "missing from the object, or not an array".into(),
            }),
        }
    }

    /// Every occupied flow slot and pending eviction of every CPU, as they
    /// are now. The slots come in one `BPF_MAP_LOOKUP_BATCH` (Linux 5.6+).
    /// Copies torn across a change of occupant (`seq != seq_end`) are left
    /// out: the next read has them.
    pub fn occupancies(&self) -> Result<Vec<Occupancy>, SysError> {
        let rows: Vec<FlowSlot> = lookup_batch(self.map_fd(FLOW_SLOTS_MAP)?, self.slot_entries)
            .map_err(|e| SysError::Map {
                map: FLOW_SLOTS_MAP,
                reason: format!("batch lookup: {e}"),
            })?;
        // A slot's place in the array names its CPU.
        let mut out: Vec<Occupancy> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, s)| occupancy((i >> self.slot_shift) as u32, s))
            .collect();
        let map_err = |e: aya::maps::MapError| SysError::Map {
            map: PENDING_MAP,
            reason: chain(&e),
        };
        let map = self.ebpf.map(PENDING_MAP).ok_or_else(|| SysError::Map {
            map: PENDING_MAP,
            reason: "missing from the object".into(),
        })?;
        let pending: PerCpuArray<&MapData, Pending> =
            PerCpuArray::try_from(map).map_err(map_err)?;
        for (position, p) in pending.get(&0, 0).map_err(map_err)?.iter().enumerate() {
            let n = usize::try_from(p.count).map_or(0, |n| n.min(EVICT_BATCH));
            out.extend(
                p.batch.slots[..n]
                    .iter()
                    .filter_map(|s| occupancy(self.cpu_ids[position], s)),
            );
        }
        Ok(out)
    }

    /// Moves the final records of evicted occupancies from the ring to
    /// `out`. Read [`occupancies`](Self::occupancies) before, never after,
    /// in one round: a record may only be consumed after every read that
    /// could still show its occupancy.
    pub fn drain_evicted(&mut self, out: &mut Vec<Occupancy>) {
        while let Some(item) = self.ring.next() {
            if item.len() < size_of::<EvictBatch>() {
                continue;
            }
            // SAFETY: the program sends whole EvictBatch records (checked
            // length), every bit pattern is valid, and read_unaligned copes
            // with the ring's 8-byte alignment.
            let batch = unsafe { item.as_ptr().cast::<EvictBatch>().read_unaligned() };
            let n = (batch.count as usize).min(EVICT_BATCH);
            out.extend(batch.slots[..n].iter().map(|s| Occupancy {
                cpu: batch.cpu,
                seq: s.seq,
                key: s.key,
                value: s.value,
            }));
        }
    }

    /// Forwards waiting kernel log records to the `log` crate.
    pub fn flush_log(&mut self) {
        self.logger.flush();
    }
}

fn write_clock(clock: &mut Array<MapData, u64>) -> Result<(), SysError> {
    clock.set(0, monotonic_ns(), 0).map_err(|e| SysError::Map {
        map: CLOCK_MAP,
        reason: chain(&e),
    })
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Size of the eviction ring: 256 KiB per CPU (rounded up to a power of
/// two), 1 MiB at least. A record carries [`EVICT_BATCH`] flows in 3,088
/// bytes (with its header), so 1 MiB holds about 10,800 evicted flows
/// between two reads.
fn ring_bytes(cpus: usize) -> u32 {
    let cpus = u32::try_from(cpus).unwrap_or(u32::MAX).next_power_of_two();
    (1u32 << 20)
        .max(cpus.saturating_mul(256 << 10))
        .min(1 << 30)
}

const POSSIBLE_CPUS: &str = "/sys/devices/system/cpu/possible";

/// The CPU ids of a kernel CPU list such as `0-3,8-11` (the order in which
/// the kernel lays out per-CPU map values).
fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut ids = Vec::new();
    for part in s.trim().split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (lo, hi): (u32, u32) = (lo.parse().ok()?, hi.parse().ok()?);
        if lo > hi {
            return None;
        }
        ids.extend(lo..=hi);
    }
    Some(ids)
}

/// A seed for the slot hash, so nobody can aim collisions at a slot.
fn random_seed() -> u64 {
    let mut seed = 0u64;
    // SAFETY: getrandom writes at most 8 bytes to a valid u64.
    let n = unsafe { libc::getrandom((&raw mut seed).cast(), 8, 0) };
    if n != 8 {
        // No entropy source: the clock still differs from run to run.
        seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x5eed, |d| d.as_nanos() as u64);
    }
    seed
}

/// `union bpf_attr` for the batch commands.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The bpf(2) system call with one of the attr structs above.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<()> {
    // SAFETY: attr is a live, properly laid out bpf_attr variant for cmd;
    // the kernel reads and writes at most size_of::<T>() bytes of it, and
    // every pointer inside it points at memory that outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Loads the object into the kernel (its maps; programs are loaded later),
/// sized for `slots_per_cpu` flow slots on each CPU of `cpu_ids`.
fn load_object(cpu_ids: &[u32], slots_per_cpu: u32) -> Result<Ebpf, SysError> {
    let mask = slots_per_cpu - 1;
    let shift = slots_per_cpu.trailing_zeros();
    let seed = random_seed();
    EbpfLoader::new()
        .map_max_entries(FLOW_SLOTS_MAP, slot_entries(cpu_ids, slots_per_cpu)?)
        .map_max_entries(EVICTED_MAP, ring_bytes(cpu_ids.len()))
        .override_global(SLOT_MASK_GLOBAL, &mask, true)
        .override_global(SLOT_SHIFT_GLOBAL, &shift, true)
        .override_global(HASH_SEED_GLOBAL, &seed, true)
        .load(XDP_OBJECT)
        .map_err(|e| {
            if is_permission(&e) {
                SysError::Permission
            } else {
                SysError::Load(chain(&e))
            }
        })
}

/// Entries of the slot array: `slots_per_cpu` for every CPU id the kernel
/// can hand out (the highest possible id + 1).
fn slot_entries(cpu_ids: &[u32], slots_per_cpu: u32) -> Result<u32, SysError> {
    cpu_ids
        .iter()
        .max()
        .map_or(0, |&m| m + 1)
        .checked_mul(slots_per_cpu)
        .ok_or_else(|| SysError::Load("too many flow slots for the CPU count".into()))
}

/// A whole copy of an occupied slot or pending entry, as seen by CPU `cpu`;
/// `None` for an empty one or one torn across a change of occupant
/// (`seq != seq_end`: the next read has it).
fn occupancy(cpu: u32, s: &FlowSlot) -> Option<Occupancy> {
    (s.seq != 0 && s.seq == s.seq_end).then_some(Occupancy {
        cpu,
        seq: s.seq,
        key: s.key,
        value: s.value,
    })
}

/// Reads a whole array of `entries` values with `BPF_MAP_LOOKUP_BATCH`
/// (Linux 5.6), a few syscalls instead of one per entry.
fn lookup_batch<V: Copy + Default>(fd: RawFd, entries: u32) -> io::Result<Vec<V>> {
    let cpus = 1;
    // The kernel copies each CPU's value rounded up to 8 bytes.
    const { assert!(size_of::<V>().is_multiple_of(8)) };
    let total = entries as usize;
    let mut values = vec![V::default(); total * cpus];
    let mut keys = vec![0u32; total];
    let mut done = 0;
    let mut in_token = 0u32;
    let mut out_token = 0u32;
    while done < total {
        let mut attr = BatchAttr {
            in_batch: if done == 0 {
                0
            } else {
                (&raw const in_token) as u64
            },
            out_batch: (&raw mut out_token) as u64,
            keys: keys[done..].as_mut_ptr() as u64,
            values: values[done * cpus..].as_mut_ptr() as u64,
            count: (total - done) as u32,
            map_fd: fd as u32,
            elem_flags: 0,
            flags: 0,
        };
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        done += attr.count as usize;
        match result {
            Ok(()) => {}
            // ENOENT: the end of the array; what came with it is in.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(e),
        }
        in_token = out_token;
    }
    values.truncate(done * cpus);
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_give_ids_in_order() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(
            parse_cpu_list("0-2,8,10-11"),
            Some(vec![0, 1, 2, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn the_ring_grows_with_the_cpus() {
        assert_eq!(ring_bytes(1), 1 << 20);
        assert_eq!(ring_bytes(2), 1 << 20);
        assert_eq!(ring_bytes(6), 2 << 20);
        assert_eq!(ring_bytes(64), 16 << 20);
        assert!(ring_bytes(100_000).is_power_of_two());
    }
}
