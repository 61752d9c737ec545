//! Deadlines in C: nanoseconds on `CLOCK_MONOTONIC` (an `int64_t`), the
//! clock Rust's `Instant` reads on Linux.
//!
//! `Instant` does not expose its clock value, so the engine pairs one
//! `Instant` with two `clock_gettime` readings taken around it, and converts
//! both ways from that pair, rounding so that a deadline is never moved
//! earlier: an `Instant` handed to C comes out at or after the true value,
//! a C deadline becomes an `Instant` at or after it.

use std::time::{Duration, Instant};

/// The engine's pairing of `Instant` with `CLOCK_MONOTONIC`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MonoClock {
    base: Instant,
    /// `CLOCK_MONOTONIC` read just before `base`.
    before_ns: i64,
    /// `CLOCK_MONOTONIC` read just after `base`.
    after_ns: i64,
}

/// `CLOCK_MONOTONIC` now, in nanoseconds.
pub(crate) fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to fill; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec)
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl MonoClock {
    pub(crate) fn new() -> MonoClock {
        let before_ns = monotonic_ns();
        let base = Instant::now();
        let after_ns = monotonic_ns();
        MonoClock {
            base,
            before_ns,
            after_ns,
        }
    }

    /// `at` on `CLOCK_MONOTONIC`, in ns, at or after its true value
    /// (saturating at `i64::MAX`, "never").
    pub(crate) fn to_ns(self, at: Instant) -> i64 {
        match at.checked_duration_since(self.base) {
            Some(ahead) => self.after_ns.saturating_add(nanos(ahead)),
            None => self
                .after_ns
                .saturating_sub(nanos(self.base.duration_since(at))),
        }
    }

    /// The `Instant` of `CLOCK_MONOTONIC` deadline `ns`, at or after it.
    /// Deadlines too far ahead to represent become the farthest `Instant`
    /// a day's arithmetic can still add to (the engine treats it as never).
    pub(crate) fn instant(self, ns: i64) -> Instant {
        let delta = ns.saturating_sub(self.before_ns);
        if delta >= 0 {
            let ahead = Duration::from_nanos(delta as u64);
            self.base
                .checked_add(ahead)
                .unwrap_or_else(|| far_future(self.base))
        } else {
            let behind = Duration::from_nanos(delta.unsigned_abs());
            // Before the pairing: already due; any earlier instant is as good.
            self.base.checked_sub(behind).unwrap_or(self.base)
        }
    }
}

/// An `Instant` about 292 years after `base` (`i64::MAX` ns): the farthest
/// deadline C can name.
fn far_future(base: Instant) -> Instant {
    base.checked_add(Duration::from_nanos(i64::MAX as u64))
        .unwrap_or(base)
}

/// `now + delay_ns`, saturating at the far future.
pub(crate) fn after(delay_ns: i64) -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_nanos(delay_ns.max(0) as u64))
        .unwrap_or_else(|| far_future(now))
}

/// A relative timeout from C: `-1` is none, other negatives are invalid.
pub(crate) fn timeout(ns: i64) -> Result<Option<Duration>, ()> {
    match ns {
        -1 => Ok(None),
        n if n < 0 => Err(()),
        n => Ok(Some(Duration::from_nanos(n as u64))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_round_trip_without_moving_earlier() {
        let clock = MonoClock::new();
        let now = Instant::now();
        let ns = clock.to_ns(now);
        assert!(ns >= monotonic_ns() - 1_000_000_000, "same clock");
        let back = clock.instant(ns);
        assert!(back >= now, "a deadline never comes back earlier");
        assert!(back - now < Duration::from_millis(50), "nor much later");
    }

    #[test]
    fn c_deadlines_are_never_early() {
        let clock = MonoClock::new();
        let deadline_ns = monotonic_ns() + 5_000_000;
        let at = clock.instant(deadline_ns);
        // When the Instant has passed, so has the C deadline.
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        assert!(monotonic_ns() >= deadline_ns);
    }

    #[test]
    fn extreme_deadlines_saturate() {
        let clock = MonoClock::new();
        let far = clock.instant(i64::MAX);
        assert!(far > Instant::now() + Duration::from_secs(100 * 365 * 86_400));
        assert!(clock.instant(i64::MIN) <= Instant::now());
        assert_eq!(clock.to_ns(far_future(Instant::now())), i64::MAX);
        assert!(after(i64::MAX) > Instant::now());
    }

    #[test]
    fn relative_timeouts_accept_minus_one_only() {
        assert_eq!(timeout(-1), Ok(None));
        assert_eq!(timeout(0), Ok(Some(Duration::ZERO)));
        assert_eq!(timeout(-2), Err(()));
        assert_eq!(timeout(i64::MIN), Err(()));
    }
}
