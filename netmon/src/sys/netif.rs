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

/// Whether `iface` is administratively up and has carrier (what the link
/// watch reports as "up"); `None` if sysfs does not say.
#[must_use]
pub fn link_up(iface: &str) -> Option<bool> {
    let base = format!("/sys/class/net/{iface}");
    let flags = fs::read_to_string(format!("{base}/flags")).ok()?;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
    if flags & 1 == 0 {
        return Some(false);
    }
    // `carrier` reads "1" or "0" when the interface is up.
    Some(fs::read_to_string(format!("{base}/carrier")).ok()?.trim() == "1")
}

/// Size in bytes of CPU 0's L2 cache (`/sys/devices/system/cpu/cpu0/cache`,
/// the unified level-2 entry), if the kernel says.
#[must_use]
pub fn l2_cache_bytes() -> Option<u64> {
    l2_cache_bytes_in(std::path::Path::new("/sys/devices/system/cpu/cpu0/cache"))
}

/// [`l2_cache_bytes`] from a directory laid out like
/// `/sys/devices/system/cpu/cpu0/cache` (`indexN/{level,type,size}`, and
/// other entries such as `uevent`, which are skipped).
fn l2_cache_bytes_in(dir: &std::path::Path) -> Option<u64> {
    for entry in fs::read_dir(dir).ok()?.filter_map(Result::ok) {
        let read = |f: &str| fs::read_to_string(entry.path().join(f)).ok();
        let (Some(level), Some(kind)) = (read("level"), read("type")) else {
            continue;
        };
        if level.trim() == "2" && kind.trim() != "Instruction" {
            return netmon_common::parse_cache_size(&read("size")?);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::fs;

    #[test]
    fn l2_size_from_a_sysfs_like_directory() {
        let dir = std::env::temp_dir().join(format!("netmon-cache-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for (index, level, kind, size) in [
            ("index0", "1", "Data", "32K"),
            ("index1", "1", "Instruction", "32K"),
            ("index2", "2", "Unified", "512K"),
            ("index3", "3", "Unified", "32768K"),
        ] {
            let d = dir.join(index);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("level"), format!("{level}\n")).unwrap();
            fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            fs::write(d.join("size"), format!("{size}\n")).unwrap();
        }
        // A file beside the index directories, as sysfs has.
        fs::write(dir.join("uevent"), "").unwrap();
        assert_eq!(l2_cache_bytes_in(&dir), Some(512 << 10));
        fs::remove_dir_all(&dir).unwrap();
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
