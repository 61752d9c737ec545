//! A latency histogram with log-linear buckets, for p50 / p99.
//!
//! Hand-written rather than with hdrhistogram: the binary shares the
//! package's `[dependencies]`, and 64 lines do what the report needs.

use std::time::Duration;

/// Latency histogram: 16 linear sub-buckets per power of two of
/// nanoseconds (values exact below 16 ns, within 1/16 above).
pub(crate) struct Hist {
    buckets: Vec<u64>,
    /// Values recorded.
    pub(crate) count: u64,
}

impl Hist {
    const SUB_BITS: u32 = 4;
    const SUB: u64 = 1 << Self::SUB_BITS;

    pub(crate) fn new() -> Hist {
        Hist {
            buckets: vec![0; 64 * Self::SUB as usize],
            count: 0,
        }
    }
    fn index(v: u64) -> usize {
        if v < Self::SUB {
            return v as usize;
        }
        let e = 63 - v.leading_zeros(); // >= SUB_BITS
        let sub = (v >> (e - Self::SUB_BITS)) & (Self::SUB - 1);
        ((u64::from(e - Self::SUB_BITS + 1) * Self::SUB) + sub) as usize
    }
    /// Midpoint of bucket `i`.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < Self::SUB {
            return i;
        }
        let e = i / Self::SUB + u64::from(Self::SUB_BITS) - 1;
        let sub = i % Self::SUB;
        let width = 1u64 << (e - u64::from(Self::SUB_BITS));
        (Self::SUB + sub) * width + width / 2
    }
    pub(crate) fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[Self::index(ns)] += 1;
        self.count += 1;
    }
    pub(crate) fn merge(&mut self, other: &Hist) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
    }
    /// The `p`-quantile in nanoseconds, `None` when empty.
    pub(crate) fn quantile(&self, p: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((p * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::value(i));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_exact_below_16_ns_and_within_a_sixteenth_above() {
        let mut h = Hist::new();
        assert_eq!(h.quantile(0.5), None);
        for ns in 1..=10 {
            h.record(Duration::from_nanos(ns));
        }
        assert_eq!(h.quantile(0.5), Some(5));
        assert_eq!(h.quantile(1.0), Some(10));
        let mut h = Hist::new();
        h.record(Duration::from_micros(1234));
        let q = h.quantile(0.99).unwrap() as f64;
        assert!((q - 1_234_000.0).abs() <= 1_234_000.0 / 16.0, "{q}");
    }

    #[test]
    fn merged_histograms_count_both() {
        let (mut a, mut b) = (Hist::new(), Hist::new());
        a.record(Duration::from_nanos(3));
        b.record(Duration::from_nanos(3));
        b.record(Duration::from_secs(u64::MAX));
        a.merge(&b);
        assert_eq!(a.count, 3);
        assert_eq!(a.quantile(0.5), Some(3));
        assert!(a.quantile(1.0).unwrap() > 1 << 62);
    }
}
