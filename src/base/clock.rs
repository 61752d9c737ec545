//! Time: [`Clock`], the engine's conversion between `Instant`s and the
//! nanosecond offsets that slots and timer queues keep, and
//! [`poll_timeout_ms`], a wait for `poll()`.

use std::time::{Duration, Instant};

/// Converts between `Instant`s and the nanosecond offsets kept in slots.
///
/// Every `Instant` and every `Duration` is accepted: an instant before the
/// engine's base is offset 0 (already due), and one more than `u64::MAX`
/// nanoseconds (about 584 years) after it is [`Clock::NEVER`], a deadline
/// that never comes. Nothing here can overflow or panic.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    base: Instant,
    /// The instant of offset [`Clock::NEVER`], or the latest instant this
    /// platform can represent before it.
    never: Instant,
}

impl Clock {
    /// The offset of a deadline that never comes.
    pub(crate) const NEVER: u64 = u64::MAX;

    pub(crate) fn new() -> Clock {
        let base = Instant::now();
        // `base + u64::MAX ns` fits every 64-bit `Instant` (Linux keeps
        // seconds in an i64); halve the span if some platform disagrees.
        let mut span = Duration::from_nanos(Self::NEVER);
        let never = loop {
            match base.checked_add(span) {
                Some(t) => break t,
                None => span /= 2,
            }
        };
        Clock { base, never }
    }
    /// Offset of `at`; instants before the base clamp to 0 (already due),
    /// instants more than 584 years ahead clamp to [`Clock::NEVER`].
    #[inline]
    pub(crate) fn offset(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.base);
        // Without the u128 of `as_nanos`: seconds fit 64 bits of nanoseconds
        // for 584 years, and saturate after.
        d.as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()))
    }
    /// The offset of now.
    pub(crate) fn now(&self) -> u64 {
        self.offset(Instant::now())
    }
    /// The instant of an offset (the latest representable one for
    /// [`Clock::NEVER`]).
    #[inline]
    pub(crate) fn instant(&self, offset: u64) -> Instant {
        self.base
            .checked_add(Duration::from_nanos(offset))
            .map_or(self.never, |t| t.min(self.never))
    }
    /// The deadline `delay` from now, saturating at the instant of
    /// [`Clock::NEVER`] (so `Duration::MAX` means "never").
    pub(crate) fn after(&self, delay: Duration) -> Instant {
        Instant::now()
            .checked_add(delay)
            .map_or(self.never, |t| t.min(self.never))
    }
}

/// `d` in whole milliseconds for `poll()`, rounded up so a timer is never
/// woken for early; `None` (no timer) is -1, sleep without limit.
pub fn poll_timeout_ms(d: Option<Duration>) -> libc::c_int {
    match d {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
        }
    }
}
