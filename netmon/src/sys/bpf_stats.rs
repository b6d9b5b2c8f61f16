//! netmon's own cost: the kernel's BPF run-time statistics
//! (`BPF_ENABLE_STATS`, Linux 5.8), which make the kernel time every run
//! of every BPF program while some process holds them on, and each loaded
//! program's `run_time_ns` and `run_cnt` (`bpf_prog_get_info_by_fd`).
//!
//! Timing every run costs a little per packet (two clock reads), for every
//! program on the host: netmon holds the statistics on only while the
//! live view, which shows them, is open.

use std::os::fd::OwnedFd;

use aya::sys::{Stats, enable_stats};

use super::Attachment;
use crate::report::ProgramCost;

/// The kernel's run-time statistics, on while this lives.
#[derive(Debug)]
pub struct RunStats {
    _fd: OwnedFd,
}

impl RunStats {
    /// Turns the statistics on. Needs CAP_SYS_ADMIN (root) and Linux 5.8.
    pub fn enable() -> Result<Self, String> {
        enable_stats(Stats::RunTime)
            .map(|fd| Self { _fd: fd })
            .map_err(|e| format!("cannot turn on the kernel's BPF run-time statistics: {e}"))
    }
}

impl Attachment {
    /// The run time and runs of every program netmon loaded, summed (the
    /// counts grow only while [`RunStats`] are on, here or in another
    /// process). `None` if the kernel says nothing of any program.
    #[must_use]
    pub fn program_cost(&self) -> Option<ProgramCost> {
        let mut total: Option<ProgramCost> = None;
        for (_, program) in self.object.ebpf.programs() {
            // Programs of the object that were never loaded (bench-only
            // ones) have no info.
            let Ok(info) = program.info() else { continue };
            let t = total.get_or_insert_default();
            t.run_ns += u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
            t.runs += info.run_count();
        }
        total
    }
}
