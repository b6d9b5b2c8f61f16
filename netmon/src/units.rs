//! Parsing and printing of the units people type and read: durations
//! (`500ms`, `2s`, `1m`), packet and bit rates.

use std::time::Duration;

/// Parses `DUR`: a number with a unit, `ms`, `s`, `m` or `h` (`500ms`, `2s`,
/// `1.5s`, `1m`). A bare number is rejected: it is too easy to mean
/// milliseconds and get seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("'{text}' has no unit; write e.g. 500ms, 2s or 1m"))?;
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        format!("'{text}' does not start with a number; write e.g. 500ms, 2s or 1m")
    })?;
    let seconds = match unit {
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' in '{text}'; use us, ms, s, m or h (e.g. 500ms, 2s, 1m)"
            ));
        }
    };
    if !seconds.is_finite() || seconds > 1e9 {
        return Err(format!("'{text}' is too long a duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Like [`parse_duration`], but zero is refused (intervals, timeouts).
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err(format!("'{text}' must be longer than zero"));
    }
    Ok(d)
}

/// `1234567.0` -> `"1.23 M"`: SI prefixes for rates people scan by eye.
#[must_use]
pub fn si(value: f64) -> String {
    const PREFIXES: [(f64, &str); 4] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    for (scale, prefix) in PREFIXES {
        if value.abs() >= scale {
            return format!("{:.2} {prefix}", value / scale);
        }
    }
    format!("{value:.0} ")
}

/// Bits per second with an SI prefix: `"1.23 Mbit/s"`.
#[must_use]
pub fn bits_per_second(bps: f64) -> String {
    format!("{}bit/s", si(bps))
}

/// Packets per second with an SI prefix: `"1.23 kpps"`.
#[must_use]
pub fn packets_per_second(pps: f64) -> String {
    format!("{}pps", si(pps))
}

/// Bytes with binary prefixes: `"1.5 MiB"`.
#[must_use]
pub fn bytes(n: u64) -> String {
    const PREFIXES: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (scale, prefix) in PREFIXES {
        if n >= scale {
            return format!("{:.2} {prefix}", n as f64 / scale as f64);
        }
    }
    format!("{n} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_how_to_fix_them() {
        for bad in ["", "5", "s", "5x", "1..5s", "-1s", "ms5"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(
                err.contains("e.g.") || err.contains("too long"),
                "{bad}: {err}"
            );
        }
        assert!(parse_positive_duration("0ms").is_err());
    }

    #[test]
    fn rates_use_si_prefixes() {
        assert_eq!(bits_per_second(0.0), "0 bit/s");
        assert_eq!(bits_per_second(999.0), "999 bit/s");
        assert_eq!(bits_per_second(1_234_567.0), "1.23 Mbit/s");
        assert_eq!(packets_per_second(14_880_000.0), "14.88 Mpps");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(12), "12 B");
    }
}
