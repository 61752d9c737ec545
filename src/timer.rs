//! One-shot timers: the [`TimerEvent`] a callback receives and the owning
//! [`Timer`] handle.
//!
//! A timer's deadline lives in its slot's param word as nanoseconds after
//! the engine's base instant (so it is read and changed with one atomic
//! access); [`Clock`] converts.

use crate::engine::{Engine, Inner};
use crate::error::Result;
use crate::sync::Arc;
use crate::token::Token;
use std::fmt;
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

/// What a timer's callback receives.
pub struct TimerEvent<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) token: Token,
    pub(crate) deadline: Instant,
}

impl<'a> TimerEvent<'a> {
    /// The engine, to register or deregister from the callback without
    /// capturing it.
    pub fn engine(&self) -> &'a Engine {
        self.engine
    }
    /// The timer's token.
    pub fn token(&self) -> Token {
        self.token
    }
    /// The deadline the timer had when it fired. The engine's own loops
    /// (`run_once`, `run`, `poll_once`, `afterpoll`) never fire a timer
    /// before it, even when it is reset concurrently. With hooks,
    /// the application decides when a timeout has occurred: a report that
    /// races a [`Timer::reset_at`] fires the timer, and this is then the
    /// moved deadline (libxl behaves the same way).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl fmt::Debug for TimerEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerEvent")
            .field("token", &self.token)
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// The owning handle of a one-shot timer. Dropping it cancels the timer.
///
/// ```
/// use evnexus::Engine;
/// use std::time::Duration;
/// # fn main() -> evnexus::Result<()> {
/// let engine = Engine::new()?;
/// let timer = engine.timer_after(Duration::from_secs(60), |ev| println!("{:?}", ev.token()))?;
/// timer.reset_after(Duration::from_secs(30))?;
/// assert!(timer.cancel(), "cancelled before it fired");
/// # Ok(()) }
/// ```
pub struct Timer {
    pub(crate) inner: Arc<Inner>,
    pub(crate) token: Token,
}

impl Timer {
    /// The token the backend or the application's loop carries.
    pub fn token(&self) -> Token {
        self.token
    }

    /// Moves the deadline. Any `Instant` is accepted: one in the past makes
    /// the timer due at once; one more than 584 years after the engine was
    /// built means "never" (the timer stays pending until cancelled).
    ///
    /// Errors with [`Error::Gone`](crate::Error::Gone) once the timer has
    /// fired or been cancelled, including when it fires or is cancelled on
    /// another thread while this call is under way (the new deadline then
    /// did not take effect), and with the hook's error on an application
    /// loop that refuses the change (the old deadline stands).
    pub fn reset_at(&self, deadline: Instant) -> Result<()> {
        self.inner.modify_timer(self.token, deadline)
    }

    /// Moves the deadline to `delay` from now. Any `Duration` is accepted;
    /// a delay beyond 584 years (`Duration::MAX` included) means "never".
    pub fn reset_after(&self, delay: Duration) -> Result<()> {
        self.reset_at(self.inner.clock.after(delay))
    }

    /// Whether the timer is still pending (neither fired nor cancelled).
    pub fn is_pending(&self) -> bool {
        self.inner.is_live(self.token)
    }

    /// Cancels the timer. Returns `true` if it was cancelled before it
    /// fired: its callback will never run. Returns `false` if it has fired
    /// (or is firing): its callback runs, or ran, exactly once; outside any
    /// evnexus callback this call then waits for that run to return.
    pub fn cancel(self) -> bool {
        crate::fd::ended(self.inner.deregister(self.token))
        // Drop then finds the generation gone: one load, no second effect.
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let _ = self.inner.deregister(self.token);
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer").field("token", &self.token).finish()
    }
}
