//! The only module that touches aya: loads the XDP object, attaches it,
//! reads and prunes its maps. Everything above it works on plain values.

use std::{
    ffi::CString,
    io,
    os::fd::{AsFd, AsRawFd, RawFd},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray},
    programs::{Xdp, XdpMode as AyaXdpMode, links::FdLink, xdp::XdpLink},
};
use aya_log::EbpfLogger;
use netmon_common::{COUNTERS_MAP, Counters, FLOWS_MAP, FlowKey, FlowValue, XDP_PROGRAM};
use thiserror::Error;

use crate::{UsageError, cli::XdpMode};

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
    ebpf: Ebpf,
    pub mode: AttachedMode,
}

impl Attachment {
    /// Loads the embedded object with a flow table of `max_flows` entries and
    /// attaches it to `iface` (index `ifindex`, from [`ifindex`]).
    pub fn attach(
        iface: &str,
        ifindex: u32,
        mode: XdpMode,
        max_flows: u32,
    ) -> Result<Self, SysError> {
        if XDP_OBJECT.is_empty() {
            return Err(SysError::NoObject);
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(FLOWS_MAP, max_flows)
            .load(XDP_OBJECT)
            .map_err(|e| {
                if is_permission(&e) {
                    SysError::Permission
                } else {
                    SysError::Load(chain(&e))
                }
            })?;
        let logger = EbpfLogger::init(&mut ebpf).map_err(|e| SysError::Load(chain(&e)))?;
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
                        ebpf,
                        mode: attempt,
                    });
                }
                Err(e) => {
                    if is_permission(&e) {
                        return Err(SysError::Permission);
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

    fn flows_fd(&self) -> Result<RawFd, SysError> {
        match self.ebpf.map(FLOWS_MAP) {
            Some(aya::maps::Map::HashMap(data)) => Ok(data.fd().as_fd().as_raw_fd()),
            _ => Err(SysError::Map {
                map: FLOWS_MAP,
                reason: "missing from the object, or not a hash map".into(),
            }),
        }
    }

    /// Every entry of the flow table, read in batches of up to [`BATCH`]
    /// entries per syscall (Linux 5.6+).
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, SysError> {
        lookup_batch(self.flows_fd()?).map_err(|e| SysError::Map {
            map: FLOWS_MAP,
            reason: format!("batch lookup: {e}"),
        })
    }

    /// Removes a flow from the kernel table and returns its last value, in
    /// one step (`BPF_MAP_LOOKUP_AND_DELETE_ELEM`, Linux 5.14+ for hash
    /// maps), so no packet counted before the removal is lost. `None` if the
    /// flow was not there.
    pub fn remove_flow(&self, key: &FlowKey) -> Result<Option<FlowValue>, SysError> {
        let fd = self.flows_fd()?;
        let mut value = FlowValue::default();
        let mut attr = ElemAttr {
            map_fd: fd as u32,
            pad: 0,
            key: std::ptr::from_ref(key) as u64,
            value: (&raw mut value) as u64,
            flags: 0,
        };
        match bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) {
            Ok(()) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(SysError::Map {
                map: FLOWS_MAP,
                reason: format!("lookup and delete: {e}"),
            }),
        }
    }

    /// Forwards waiting kernel log records to the `log` crate.
    pub fn flush_log(&mut self) {
        self.logger.flush();
    }
}

const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries per batch lookup. A hash bucket never holds more, so the kernel
/// never answers ENOSPC.
const BATCH: usize = 4096;

/// `union bpf_attr` for the element commands.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
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

/// Reads a whole hash map with `BPF_MAP_LOOKUP_BATCH`.
fn lookup_batch(fd: RawFd) -> io::Result<Vec<(FlowKey, FlowValue)>> {
    let mut out = Vec::new();
    let mut keys = vec![FlowKey::default(); BATCH];
    let mut values = vec![FlowValue::default(); BATCH];
    // For hash maps the batch token is a u32 bucket index.
    let mut in_token = 0u32;
    let mut out_token = 0u32;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                (&raw const in_token) as u64
            },
            out_batch: (&raw mut out_token) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: fd as u32,
            elem_flags: 0,
            flags: 0,
        };
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = attr.count as usize;
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        match result {
            Ok(()) => {}
            // ENOENT: no more entries; what came with it is already in.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
        in_token = out_token;
        first = false;
    }
}
