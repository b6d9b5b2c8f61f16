//! Latency bookkeeping for one target: an hdrhistogram for percentiles,
//! exact min/max/mean/stddev, and RFC 3550 interarrival jitter. Pure.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest RTT the histogram holds (longer samples are clamped to it).
const MAX_RTT_NS: u64 = 3_600_000_000_000;

/// RTT samples of one target.
#[derive(Clone, Debug)]
pub struct Latency {
    /// Nanoseconds, three significant figures.
    hist: Histogram<u64>,
    count: u64,
    /// Sum of squared deviations from the mean (Welford).
    m2: f64,
    mean_ns: f64,
    min_ns: u64,
    max_ns: u64,
    /// RFC 3550 §6.4.1 jitter estimate in ns, and the previous sample.
    jitter_ns: f64,
    prev_ns: Option<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

/// What a target's latency looks like, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub stddev: f64,
    pub jitter: f64,
}

impl Latency {
    #[must_use]
    pub fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, MAX_RTT_NS, 3)
                .expect("static histogram bounds are valid"),
            count: 0,
            m2: 0.0,
            mean_ns: 0.0,
            min_ns: u64::MAX,
            max_ns: 0,
            jitter_ns: 0.0,
            prev_ns: None,
        }
    }

    /// Adds one RTT. Feed samples in the order the probes were sent: the
    /// jitter compares each sample with the one before it.
    ///
    /// Jitter is RFC 3550's interarrival jitter applied to round trips: for
    /// consecutive answered probes i-1 and i, D = RTT(i) - RTT(i-1) (the
    /// send-time difference cancels out), and J += (|D| - J) / 16.
    pub fn record(&mut self, rtt: Duration) {
        let ns = u64::try_from(rtt.as_nanos())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_RTT_NS);
        self.hist.saturating_record(ns);
        self.count += 1;
        let x = ns as f64;
        let delta = x - self.mean_ns;
        self.mean_ns += delta / self.count as f64;
        self.m2 += delta * (x - self.mean_ns);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
        if let Some(prev) = self.prev_ns {
            let d = (x - prev as f64).abs();
            self.jitter_ns += (d - self.jitter_ns) / 16.0;
        }
        self.prev_ns = Some(ns);
    }

    /// Adds the samples of `later` (the same target's next stretch of
    /// probes): percentiles, min, max, mean and standard deviation as if
    /// every sample had been recorded here. The jitter too when `later`
    /// has one sample (a probe per interval); with more, it becomes
    /// `later`'s (a running estimate: its latest value stands).
    pub fn merge(&mut self, later: &Latency) {
        if later.count == 0 {
            return;
        }
        // Both histograms have the same bounds: adding cannot fail.
        let _ = self.hist.add(&later.hist);
        let n = (self.count + later.count) as f64;
        let delta = later.mean_ns - self.mean_ns;
        self.m2 += later.m2 + delta * delta * self.count as f64 * later.count as f64 / n;
        self.mean_ns += delta * later.count as f64 / n;
        self.count += later.count;
        self.min_ns = self.min_ns.min(later.min_ns);
        self.max_ns = self.max_ns.max(later.max_ns);
        match (later.count, self.prev_ns, later.prev_ns) {
            // One sample (a probe per interval): go on with the recurrence.
            (1, Some(prev), Some(x)) => {
                let d = (x as f64 - prev as f64).abs();
                self.jitter_ns += (d - self.jitter_ns) / 16.0;
            }
            (1, None, _) => {}
            _ => self.jitter_ns = later.jitter_ns,
        }
        self.prev_ns = later.prev_ns;
    }

    /// `None` without samples.
    #[must_use]
    pub fn summary(&self) -> Option<Summary> {
        if self.count == 0 {
            return None;
        }
        let ms = |ns: f64| ns / 1e6;
        let q = |p: f64| ms(self.hist.value_at_quantile(p) as f64);
        // Population standard deviation, as ping and mtr print it.
        let stddev = (self.m2 / self.count as f64).sqrt();
        Some(Summary {
            min: ms(self.min_ns as f64),
            mean: ms(self.mean_ns),
            // Percentiles are within 0.1% (3 significant figures); keep them inside [min, max].
            p50: q(0.5).clamp(ms(self.min_ns as f64), ms(self.max_ns as f64)),
            p90: q(0.9).clamp(ms(self.min_ns as f64), ms(self.max_ns as f64)),
            p99: q(0.99).clamp(ms(self.min_ns as f64), ms(self.max_ns as f64)),
            max: ms(self.max_ns as f64),
            stddev: ms(stddev),
            jitter: ms(self.jitter_ns),
        })
    }

    /// Samples recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the samples in seconds (from the exact mean).
    #[must_use]
    pub fn sum_s(&self) -> f64 {
        self.mean_ns * self.count as f64 / 1e9
    }

    /// For each upper bound in seconds (ascending), the samples at or below
    /// it: the buckets of a Prometheus histogram. Within the histogram's
    /// precision (3 significant figures).
    #[must_use]
    pub fn cumulative_counts(&self, bounds_s: &[f64]) -> Vec<u64> {
        bounds_s
            .iter()
            .map(|b| {
                let ns = (b * 1e9) as u64;
                if ns == 0 {
                    0
                } else {
                    self.hist.count_between(0, ns)
                }
            })
            .collect()
    }

    /// Counts in `bins` logarithmically spaced bins from min to max, each
    /// with its upper bound in ms. Empty without samples.
    #[must_use]
    pub fn bins(&self, bins: usize) -> Vec<(f64, u64)> {
        if self.count == 0 || bins == 0 {
            return Vec::new();
        }
        let (lo, hi) = (self.min_ns.max(1) as f64, self.max_ns.max(1) as f64);
        if hi <= lo * 1.0001 {
            return vec![(hi / 1e6, self.count)];
        }
        let ratio = (hi / lo).powf(1.0 / bins as f64);
        let mut out: Vec<(f64, u64)> = (1..=bins)
            .map(|i| (lo * ratio.powf(i as f64) / 1e6, 0))
            .collect();
        for v in self.hist.iter_recorded() {
            let x = self.hist.highest_equivalent(v.value_iterated_to()) as f64;
            let i = if x <= lo {
                0
            } else {
                (((x / lo).ln() / ratio.ln()).ceil() as usize)
                    .saturating_sub(1)
                    .min(bins - 1)
            };
            out[i].1 += v.count_at_value();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1e3)
    }

    #[test]
    fn empty_has_no_summary() {
        assert_eq!(Latency::new().summary(), None);
        assert!(Latency::new().bins(8).is_empty());
    }

    #[test]
    fn summary_of_known_samples() {
        let mut l = Latency::new();
        for v in [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0] {
            l.record(ms(v));
        }
        let s = l.summary().unwrap();
        assert!((s.min - 1.0).abs() < 1e-9);
        assert!((s.max - 10.0).abs() < 1e-9);
        assert!((s.mean - 5.5).abs() < 1e-9);
        // Population stddev of 1..10 = sqrt(8.25).
        assert!((s.stddev - 8.25f64.sqrt()).abs() < 1e-9, "{}", s.stddev);
        assert!((s.p50 - 5.0).abs() < 0.01, "{}", s.p50);
        assert!((s.p90 - 9.0).abs() < 0.01, "{}", s.p90);
        assert!((s.p99 - 10.0).abs() < 0.01, "{}", s.p99);
    }

    #[test]
    fn jitter_follows_rfc3550() {
        // Alternating 10 ms / 20 ms: |D| = 10 every step, J_n = 10 (1 - (15/16)^n).
        let mut l = Latency::new();
        let mut j = 0.0;
        l.record(ms(10.0));
        for i in 1..=50 {
            l.record(ms(if i % 2 == 0 { 10.0 } else { 20.0 }));
            j += (10.0 - j) / 16.0;
        }
        let s = l.summary().unwrap();
        assert!((s.jitter - j).abs() < 1e-6, "{} vs {j}", s.jitter);
        // Constant latency: no jitter.
        let mut c = Latency::new();
        for _ in 0..10 {
            c.record(ms(3.0));
        }
        assert!(c.summary().unwrap().jitter.abs() < 1e-12);
    }

    #[test]
    fn merged_latency_equals_one_of_all_samples() {
        let (mut a, mut b, mut all) = (Latency::new(), Latency::new(), Latency::new());
        for v in [1.0, 2.0, 3.0] {
            a.record(ms(v));
            all.record(ms(v));
        }
        for v in [10.0, 20.0] {
            b.record(ms(v));
            all.record(ms(v));
        }
        a.merge(&b);
        let (m, w) = (a.summary().unwrap(), all.summary().unwrap());
        assert_eq!(a.count(), 5);
        assert!((m.mean - w.mean).abs() < 1e-9 && (m.stddev - w.stddev).abs() < 1e-9);
        assert!((m.min - 1.0).abs() < 1e-9 && (m.max - 20.0).abs() < 1e-9);
        assert!((a.sum_s() - 0.036).abs() < 1e-12, "{}", a.sum_s());
        // Samples at or below 2.5 ms, 15 ms and 1 s.
        assert_eq!(a.cumulative_counts(&[0.0025, 0.015, 1.0]), vec![2, 4, 5]);
    }

    #[test]
    fn bins_cover_every_sample() {
        let mut l = Latency::new();
        for i in 1..=1000 {
            l.record(Duration::from_micros(i * 10));
        }
        let b = l.bins(8);
        assert_eq!(b.len(), 8);
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 1000);
        assert!((b[7].0 - 10.0).abs() < 0.01, "{b:?}");
        let mut one = Latency::new();
        one.record(ms(1.0));
        one.record(ms(1.0));
        assert_eq!(one.bins(8), vec![(1.0, 2)]);
    }

    #[test]
    fn merging_is_recording_everything_in_one() {
        let samples = [100u64, 250, 130, 900, 120, 4000, 135];
        let mut whole = Latency::new();
        let (mut a, mut b) = (Latency::new(), Latency::new());
        for (i, us) in samples.iter().enumerate() {
            let d = Duration::from_micros(*us);
            whole.record(d);
            if i < 3 { a.record(d) } else { b.record(d) }
        }
        a.merge(&b);
        a.merge(&Latency::new());
        // One sample at a time: exactly the jitter of recording them.
        let mut one_by_one = Latency::new();
        for us in samples {
            let mut single = Latency::new();
            single.record(Duration::from_micros(us));
            one_by_one.merge(&single);
        }
        let jitter = one_by_one.summary().unwrap().jitter;
        assert!(
            (jitter - whole.summary().unwrap().jitter).abs() < 1e-9,
            "{jitter}"
        );
        let (w, m) = (whole.summary().unwrap(), a.summary().unwrap());
        for (x, y) in [
            (w.min, m.min),
            (w.max, m.max),
            (w.mean, m.mean),
            (w.stddev, m.stddev),
            (w.p50, m.p50),
            (w.p99, m.p99),
        ] {
            assert!((x - y).abs() < 1e-9, "{w:?} vs {m:?}");
        }
    }
}
