//! The interface's own counters, from `/sys/class/net/IF/statistics`: what
//! the driver received, sent, dropped and got wrong, beside what XDP
//! counts (a NIC shedding packets before XDP shows here only).

use std::{fs, path::Path};

use crate::report::IfCounters;

/// The counters of `iface` now; `None` when sysfs does not have the
/// interface (a counter file that is missing or unreadable reads 0: not
/// every driver has every counter).
#[must_use]
pub fn read(iface: &str) -> Option<IfCounters> {
    read_in(&Path::new("/sys/class/net").join(iface).join("statistics"))
}

/// [`read`] from a directory laid out like
/// `/sys/class/net/IF/statistics` (one file per counter, a decimal
/// number and a newline).
fn read_in(dir: &Path) -> Option<IfCounters> {
    if !dir.is_dir() {
        return None;
    }
    let n = |name: &str| -> u64 {
        fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    };
    Some(IfCounters {
        rx_packets: n("rx_packets"),
        rx_bytes: n("rx_bytes"),
        tx_packets: n("tx_packets"),
        tx_bytes: n("tx_bytes"),
        rx_dropped: n("rx_dropped"),
        rx_missed_errors: n("rx_missed_errors"),
        rx_errors: n("rx_errors"),
        rx_fifo_errors: n("rx_fifo_errors"),
        rx_crc_errors: n("rx_crc_errors"),
        rx_frame_errors: n("rx_frame_errors"),
        rx_length_errors: n("rx_length_errors"),
        rx_over_errors: n("rx_over_errors"),
        tx_dropped: n("tx_dropped"),
        tx_errors: n("tx_errors"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_counter_by_its_sysfs_name() {
        let dir = std::env::temp_dir().join(format!("netmon-ifstats-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for (name, v) in [
            ("rx_packets", "10\n"),
            ("rx_dropped", "3\n"),
            ("rx_missed_errors", "2\n"),
            ("tx_bytes", "999\n"),
            ("rx_crc_errors", "garbage\n"),
        ] {
            fs::write(dir.join(name), v).unwrap();
        }
        let c = read_in(&dir).unwrap();
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(c.rx_packets, 10);
        assert_eq!(c.rx_dropped, 3);
        assert_eq!(c.rx_missed_errors, 2);
        assert_eq!(c.tx_bytes, 999);
        assert_eq!(c.rx_crc_errors, 0, "unreadable counts as 0");
        assert_eq!(c.tx_errors, 0, "missing counts as 0");
        assert!(read_in(Path::new("/nonexistent/netmon")).is_none());
    }

    #[test]
    fn loopback_has_statistics() {
        assert!(read("lo").is_some());
    }
}
