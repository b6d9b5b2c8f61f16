//! The clocks: kernel monotonic time (what the XDP program stamps flows
//! with) and Unix time (what the output shows, and the clock of kernel
//! receive timestamps).

/// Reads `clock` in ns.
#[must_use]
pub fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer for clock_gettime.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Kernel monotonic time (`CLOCK_MONOTONIC`, the clock of
/// `bpf_ktime_get_ns`) in ns.
#[must_use]
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

/// CLOCK_REALTIME in ns: the clock of kernel receive timestamps.
#[must_use]
pub fn realtime_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Offset from CLOCK_MONOTONIC to Unix time. The kernel stamps flows with
/// the monotonic time netmon publishes to it every 10 ms.
#[must_use]
pub fn mono_to_unix_ns() -> i128 {
    let mono = clock_ns(libc::CLOCK_MONOTONIC);
    clock_ns(libc::CLOCK_REALTIME) - mono
}
