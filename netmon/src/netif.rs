//! Facts about interfaces and the CPU read from /proc and /sys: the default
//! route's interface, link speed, and the L2 cache size the kernel's flow
//! cache is sized to.

use std::fs;

/// Interface of the IPv4 default route in the text of `/proc/net/route`
/// (the one with the lowest metric).
#[must_use]
pub fn default_route_v4(proc_net_route: &str) -> Option<String> {
    proc_net_route
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            let (iface, dest, flags, metric, mask) =
                (f.first()?, f.get(1)?, f.get(3)?, f.get(6)?, f.get(7)?);
            let up = u32::from_str_radix(flags, 16).ok()? & 1 == 1;
            (up && *dest == "00000000" && *mask == "00000000").then(|| {
                (
                    metric.parse::<u64>().unwrap_or(u64::MAX),
                    (*iface).to_owned(),
                )
            })
        })
        .min()
        .map(|(_, iface)| iface)
}

/// Interface of the IPv6 default route in the text of `/proc/net/ipv6_route`.
#[must_use]
pub fn default_route_v6(proc_net_ipv6_route: &str) -> Option<String> {
    proc_net_ipv6_route
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // dest dest_len src src_len next_hop metric refcnt use flags iface
            let (dest, len, metric, iface) = (f.first()?, f.get(1)?, f.get(5)?, f.get(9)?);
            (dest.chars().all(|c| c == '0') && *len == "00" && *iface != "lo").then(|| {
                (
                    u64::from_str_radix(metric, 16).unwrap_or(u64::MAX),
                    (*iface).to_owned(),
                )
            })
        })
        .min()
        .map(|(_, iface)| iface)
}

/// The interface of the default route (IPv4 first, then IPv6).
#[must_use]
pub fn default_interface() -> Option<String> {
    fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|t| default_route_v4(&t))
        .or_else(|| {
            fs::read_to_string("/proc/net/ipv6_route")
                .ok()
                .and_then(|t| default_route_v6(&t))
        })
}

/// Link speed in bits per second, if the driver reports one.
#[must_use]
pub fn link_speed_bps(iface: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/sys/class/net/{iface}/speed")).ok()?;
    let mbps: i64 = text.trim().parse().ok()?;
    (mbps > 0).then(|| mbps as u64 * 1_000_000)
}

/// Size in bytes of CPU 0's L2 cache (`/sys/devices/system/cpu/cpu0/cache`,
/// the unified level-2 entry), if the kernel says.
#[must_use]
pub fn l2_cache_bytes() -> Option<u64> {
    let dir = fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    for entry in dir.filter_map(Result::ok) {
        let read = |f: &str| fs::read_to_string(entry.path().join(f)).ok();
        if read("level")?.trim() == "2" && read("type")?.trim() != "Instruction" {
            return parse_cache_size(&read("size")?);
        }
    }
    None
}

/// A cache size as sysfs writes it (`512K`, `2048K`, `1M`), in bytes.
#[must_use]
pub fn parse_cache_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let mult = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        _ => return None,
    };
    Some(n * mult)
}

/// Default slots per CPU of the kernel's flow cache: the largest power of
/// two whose slots (`slot_bytes` each) fill at most a quarter of the L2
/// cache, within 1024..=16384; 4096 when the L2 size is unknown.
///
/// Why a quarter: a new flow's slot is a random one, and what it costs is
/// mostly whether that slot is still in the L2 beside the packet data, the
/// ring and the rest of the kernel. On an AMD EPYC (512 KiB L2) `cargo
/// xtask bench xdp` measured a new flow at 57, 87 and 153 ns over the floor
/// with 256, 1024 and 4096 slots (24, 96 and 384 KiB).
#[must_use]
pub fn default_flow_slots(l2_bytes: Option<u64>, slot_bytes: u64) -> u32 {
    let Some(l2) = l2_bytes else {
        return 4096;
    };
    let fit = (l2 / 4 / slot_bytes).max(1);
    let pow2 = 1u64 << fit.ilog2();
    pow2.clamp(1024, 16384) as u32
}

#[cfg(test)]
mod tests {
    #[test]
    fn flow_slots_follow_the_l2() {
        use super::{default_flow_slots, parse_cache_size};
        assert_eq!(parse_cache_size("512K"), Some(512 << 10));
        assert_eq!(parse_cache_size("2048K\n"), Some(2 << 20));
        assert_eq!(parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(parse_cache_size("12"), Some(12));
        assert_eq!(parse_cache_size("1G"), None);
        assert_eq!(parse_cache_size("K"), None);
        // AMD EPYC (Zen 3): 512 KiB L2 -> 1365 slots of 96 bytes fit a
        // quarter -> 1024.
        assert_eq!(default_flow_slots(Some(512 << 10), 96), 1024);
        // Intel Xeon model 167: 2 MiB -> 5461 -> 4096.
        assert_eq!(default_flow_slots(Some(2 << 20), 96), 4096);
        assert_eq!(default_flow_slots(Some(64 << 20), 96), 16384);
        assert_eq!(default_flow_slots(Some(64 << 10), 96), 1024);
        assert_eq!(default_flow_slots(None, 96), 4096);
    }

    use super::*;

    #[test]
    fn finds_the_lowest_metric_default_route() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            wlan0\t00000000\t0102A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
            eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
            eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(default_route_v4(table).as_deref(), Some("eth0"));
        assert_eq!(default_route_v4("Iface\tDestination\n"), None);
    }

    #[test]
    fn finds_the_ipv6_default_route() {
        let table = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth1\n\
            20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth1\n\
            00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n";
        assert_eq!(default_route_v6(table).as_deref(), Some("eth1"));
    }
}
