//! The only module that touches aya: loads eBPF objects ([`object`]: any
//! object, its programs and maps, for the monitor, the tests and the
//! benches), attaches netmon's program ([`Attachment`]), reads its maps and
//! the eviction ring. Everything above it works on plain values.

use std::{ffi::CString, io, os::fd::RawFd};

use aya_log::EbpfLogger;
use netmon_common::{Counters, DIR_TX, Evicted, FlowKey, FlowValue, TC_PROGRAM, XDP_PROGRAM};
use thiserror::Error;

use crate::UsageError;

pub mod bpf_stats;
pub mod clock;
pub mod ifstats;
pub mod netif;
pub mod netlink;
pub mod notify;
pub mod object;
pub mod signal;

pub use clock::{clock_ns, mono_to_unix_ns, monotonic_ns};
pub use object::{Counting, FlowMaps, Global, Link, Object, RttMaps, possible_cpus};

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
    #[error("program {program}: {reason}")]
    Program { program: String, reason: String },
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

/// Names of the programs attached through TCX to `iface`'s egress (in the
/// calling thread's network namespace), in their order; empty when none.
/// For checks that nothing is left attached (`ip link` and `tc filter`
/// do not show TCX).
pub fn tcx_egress_programs(iface: &str) -> Result<Vec<String>, SysError> {
    let (_, programs) =
        aya::programs::SchedClassifier::query_tcx(iface, aya::programs::TcAttachType::Egress)
            .map_err(|e| SysError::Load(chain(&e)))?;
    Ok(programs
        .iter()
        .map(|p| String::from_utf8_lossy(p.name()).into_owned())
        .collect())
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

/// netmon's programs, loaded from the embedded object and attached to one
/// interface: XDP on ingress and, where the kernel has TCX (Linux 6.6),
/// the TC program on egress. It holds their links, each a bpf_link, so a
/// killed netmon leaves nothing attached. Dropping it detaches.
pub struct Attachment {
    /// Declared first: the links go first, then the programs and maps.
    links: Vec<Link>,
    logger: EbpfLogger<&'static dyn log::Log>,
    maps: FlowMaps,
    /// The passive-RTT maps, until [`take_rtt`](Self::take_rtt); `None`
    /// when the object has none.
    rtt: Option<RttMaps>,
    object: Object,
    pub mode: AttachedMode,
    /// Whether the egress program is attached (transmit counts exist).
    pub egress: bool,
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
        let (mut object, maps) = Object::load_counting(XDP_OBJECT, &Counting::new(slots_per_cpu)?)?;
        // Passive RTT is an addition: an object without its maps (or with
        // maps of another kind) still counts.
        let rtt = RttMaps::take(&mut object).unwrap_or_else(|e| {
            log::warn!("no passive RTT: {e}");
            None
        });
        let logger = EbpfLogger::init(&mut object.ebpf).map_err(|e| SysError::Load(chain(&e)))?;
        object.load_xdp(XDP_PROGRAM)?;
        let tc_loaded = match object.load_tc(TC_PROGRAM) {
            Ok(()) => true,
            Err(e @ SysError::Permission) => return Err(e),
            Err(e) => {
                log::warn!("counting received traffic only: the egress program did not load ({e})");
                false
            }
        };
        let attempts: &[AttachedMode] = match mode {
            XdpMode::Auto => &[AttachedMode::Native, AttachedMode::Generic],
            XdpMode::Native => &[AttachedMode::Native],
            XdpMode::Generic => &[AttachedMode::Generic],
        };
        let mut last_err = None;
        for &attempt in attempts {
            match object.attach_xdp(XDP_PROGRAM, iface, ifindex, attempt) {
                Ok(link) => {
                    let mut links = vec![link];
                    // Egress through TCX only: without it (before Linux
                    // 6.6) netmon counts ingress alone rather than leave a
                    // netlink (clsact) filter behind when killed.
                    let egress = tc_loaded
                        && match object.attach_tc_egress(TC_PROGRAM, iface) {
                            Ok(link) => {
                                links.push(link);
                                true
                            }
                            Err(e) => {
                                log::warn!(
                                    "counting received traffic only: the egress program did not \
                                     attach to {iface} ({e})"
                                );
                                false
                            }
                        };
                    return Ok(Attachment {
                        links,
                        logger,
                        maps,
                        rtt,
                        object,
                        mode: attempt,
                        egress,
                    });
                }
                Err(e @ SysError::Attach { .. }) => {
                    if mode == XdpMode::Auto && attempt == AttachedMode::Native {
                        if let SysError::Attach { reason, .. } = &e {
                            log::info!(
                                "native XDP on {iface} failed ({reason}); trying generic mode"
                            );
                        }
                    }
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.expect("at least one attempt was made"))
    }

    /// Eviction ring entries per CPU, and the bytes of every CPU's ring.
    pub fn ring_size(&self) -> (u32, usize) {
        self.maps.ring_size()
    }

    /// Writes the kernel monotonic time into the program's clock. The
    /// program stamps flows' first and last packets with it, so its
    /// resolution is how often this runs (every 10 ms in the monitor).
    pub fn publish_clock(&mut self) -> Result<(), SysError> {
        self.maps.publish_clock()
    }

    /// Detaches every program. The maps stay readable, so a final read
    /// after this sees every packet that was counted.
    pub fn detach(&mut self) {
        self.links.clear();
    }

    /// The global counters of received traffic, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, SysError> {
        self.maps.counters()
    }

    /// The global counters of transmitted traffic, summed over CPUs;
    /// `None` when the egress program is not attached.
    pub fn tx_counters(&self) -> Result<Option<Counters>, SysError> {
        if self.egress {
            self.maps.counters_of(DIR_TX).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Every occupied flow slot of every CPU, as it is now (see
    /// [`FlowMaps::occupancies`]).
    pub fn occupancies(&self) -> Result<Vec<Occupancy>, SysError> {
        self.maps.occupancies()
    }

    /// Moves the final records of evicted occupancies from every CPU's
    /// eviction ring to `out` until the rings are empty or `out` holds
    /// `max`; returns whether the rings may hold more. Read
    /// [`occupancies`](Self::occupancies) before, never after, in one
    /// round: a record may only be consumed after every read that could
    /// still show its occupancy.
    pub fn drain_evicted(&mut self, out: &mut Vec<Occupancy>, max: usize) -> bool {
        self.maps.drain_evicted(out, max)
    }

    /// Takes the passive-RTT maps out (once): the monitor reads them apart
    /// from the counting maps, so that listing pending entries never holds
    /// up the eviction ring. `None` when the object has none.
    pub fn take_rtt(&mut self) -> Option<RttMaps> {
        self.rtt.take()
    }

    /// Forwards waiting kernel log records to the `log` crate.
    pub fn flush_log(&mut self) {
        self.logger.flush();
    }
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

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

/// A whole copy of an occupied slot, as seen by CPU `cpu`;
/// `None` for an empty one or one torn across a change of occupant
/// (`seq != seq_end`: the next read has it).
fn occupancy(cpu: u32, s: &Evicted) -> Option<Occupancy> {
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
}
