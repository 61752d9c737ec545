//! Memory: this process's resident set, read from `/proc/self/status`. The
//! report gives the peak (`VmHWM`); with `--rss-every` a sampler thread
//! follows `VmRSS` through the load phase, so that a soak can show that
//! the simulation's memory is flat.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`); `None` where
/// there is no such file or field.
pub(crate) fn status_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_kib(&text, field)
}

/// `field` from the text of a `/proc/PID/status` (`VmRSS:\t  1234 kB`).
fn parse_status_kib(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// The samples taken once the warm-up was over.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Settled {
    pub(crate) samples: u64,
    pub(crate) min: u64,
    pub(crate) max: u64,
}

impl Settled {
    /// max / min: 1.0 is perfectly flat.
    pub(crate) fn ratio(&self) -> f64 {
        self.max as f64 / self.min.max(1) as f64
    }
}

/// The RSS curve of the load phase, in KiB. Kept as running figures, not
/// as the samples, so that it takes the same memory however long the run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Curve {
    pub(crate) every: Duration,
    pub(crate) warmup: Duration,
    pub(crate) samples: u64,
    pub(crate) first: u64,
    pub(crate) min: u64,
    pub(crate) max: u64,
    pub(crate) last: u64,
    /// `None` until a sample is taken at or after `warmup`.
    pub(crate) settled: Option<Settled>,
}

impl Curve {
    fn new(every: Duration, warmup: Duration) -> Curve {
        Curve {
            every,
            warmup,
            samples: 0,
            first: 0,
            min: u64::MAX,
            max: 0,
            last: 0,
            settled: None,
        }
    }

    /// Adds a sample of `kib` taken `at` after the start.
    fn add(&mut self, at: Duration, kib: u64) {
        if self.samples == 0 {
            self.first = kib;
        }
        self.samples += 1;
        self.min = self.min.min(kib);
        self.max = self.max.max(kib);
        self.last = kib;
        if at >= self.warmup {
            let s = self.settled.get_or_insert(Settled {
                samples: 0,
                min: kib,
                max: kib,
            });
            s.samples += 1;
            s.min = s.min.min(kib);
            s.max = s.max.max(kib);
        }
    }
}

/// A thread that samples `VmRSS` every `every` until [`Sampler::finish`].
pub(crate) struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Curve>,
}

impl Sampler {
    /// Starts sampling now: one sample at once, one every `every`, and one
    /// when stopped.
    pub(crate) fn start(every: Duration, warmup: Duration) -> std::io::Result<Sampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = thread::Builder::new().name("rss".into()).spawn(move || {
            let start = Instant::now();
            let mut curve = Curve::new(every, warmup);
            let mut next = start;
            loop {
                if let Some(kib) = status_kib("VmRSS") {
                    curve.add(start.elapsed(), kib);
                }
                next += every;
                loop {
                    if stop2.load(Ordering::SeqCst) {
                        // The last sample: the end of the load.
                        if let Some(kib) = status_kib("VmRSS") {
                            curve.add(start.elapsed(), kib);
                        }
                        return curve;
                    }
                    let now = Instant::now();
                    if now >= next {
                        break;
                    }
                    thread::park_timeout(next - now);
                }
            }
        })?;
        Ok(Sampler { stop, thread })
    }

    /// Stops the sampler; `None` if its thread panicked.
    pub(crate) fn finish(self) -> Option<Curve> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.thread().unpark();
        self.thread.join().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tevnexus\nVmPeak:\t  123456 kB\nVmHWM:\t    7168 kB\nVmRSS:\t    6012 kB\nThreads:\t9\n";

    #[test]
    fn status_fields_are_read_in_kib() {
        assert_eq!(parse_status_kib(STATUS, "VmRSS"), Some(6012));
        assert_eq!(parse_status_kib(STATUS, "VmHWM"), Some(7168));
    }

    #[test]
    fn a_missing_or_malformed_status_field_is_none() {
        assert_eq!(parse_status_kib(STATUS, "VmSwap"), None);
        assert_eq!(parse_status_kib("VmRSS:\t12 MB\n", "VmRSS"), None);
        // A field whose name only starts like the one asked for.
        assert_eq!(parse_status_kib("VmRSSX:\t12 kB\n", "VmRSS"), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        assert!(status_kib("VmRSS").is_some_and(|kib| kib > 0));
    }

    #[test]
    fn curve_keeps_first_min_max_last_and_the_settled_part() {
        let s = Duration::from_secs;
        let mut c = Curve::new(s(10), s(20));
        for (at, kib) in [(0, 100), (10, 300), (20, 210), (30, 200), (40, 220)] {
            c.add(s(at), kib);
        }
        assert_eq!(
            (c.samples, c.first, c.min, c.max, c.last),
            (5, 100, 100, 300, 220)
        );
        let settled = c.settled.expect("samples after the warm-up");
        assert_eq!((settled.samples, settled.min, settled.max), (3, 200, 220));
        assert!((settled.ratio() - 1.1).abs() < 1e-9);
    }

    #[test]
    fn curve_without_a_sample_after_the_warm_up_has_no_settled_part() {
        let mut c = Curve::new(Duration::from_secs(10), Duration::from_secs(30));
        c.add(Duration::from_secs(0), 100);
        c.add(Duration::from_secs(10), 100);
        assert_eq!(c.settled, None);
    }
}
