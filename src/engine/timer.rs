//! One-shot timers: the [`TimerEvent`] a callback receives and the owning
//! [`Timer`] handle.
//!
//! A timer's deadline lives in its slot's param word as nanoseconds after
//! the engine's base instant (so it is read and changed with one atomic
//! access); `base::clock::Clock` converts.

use crate::base::error::Result;
use crate::base::token::Token;
use crate::engine::{CoreRef, Engine};
use std::fmt;
use std::time::{Duration, Instant};

/// What a timer's callback receives.
pub struct TimerEvent<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) token: Token,
    /// As an offset on the engine's clock: made an `Instant` only when
    /// asked for (many callbacks never do; the conversion was about 40
    /// instructions of every firing).
    pub(crate) deadline: u64,
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
        self.engine.core.clock.instant(self.deadline)
    }
}

impl fmt::Debug for TimerEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerEvent")
            .field("token", &self.token)
            .field("deadline", &self.deadline())
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
    pub(crate) core: CoreRef,
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
    /// did not take effect, whatever the hook answered), and with the
    /// hook's error on an application loop that refuses the change (the
    /// old deadline stands).
    pub fn reset_at(&self, deadline: Instant) -> Result<()> {
        self.core.modify_timer(self.token, deadline)
    }

    /// Moves the deadline to `delay` from now. Any `Duration` is accepted;
    /// a delay beyond 584 years (`Duration::MAX` included) means "never".
    pub fn reset_after(&self, delay: Duration) -> Result<()> {
        self.reset_at(self.core.clock.after(delay))
    }

    /// Whether the timer is still pending (neither fired nor cancelled).
    pub fn is_pending(&self) -> bool {
        self.core.is_live(self.token)
    }

    /// Cancels the timer. Returns `true` if it was cancelled before it
    /// fired: its callback will never run. Returns `false` if it has fired
    /// (or is firing): its callback runs, or ran, exactly once; outside any
    /// evnexus callback this call then waits for that run to return.
    pub fn cancel(self) -> bool {
        crate::engine::fd::ended(self.core.deregister(self.token))
        // Drop then finds the generation gone: one load, no second effect.
    }

    /// Lets go of the handle without cancelling the timer, and returns its
    /// token: the timer is detached, as one made by
    /// [`Engine::timer_at_detached`]. It goes on until it fires, is
    /// cancelled by [`Engine::deregister`] with the token, or the engine is
    /// dropped; [`Engine::reset_timer`] moves it by token.
    ///
    /// ```
    /// use evnexus::Engine;
    /// use std::time::{Duration, Instant};
    /// # fn main() -> evnexus::Result<()> {
    /// let engine = Engine::new()?;
    /// let token = engine.timer_after(Duration::from_secs(60), |ev| ev.engine().stop())?.into_token();
    /// engine.reset_timer(token, Instant::now())?; // due now
    /// engine.run()?; // the timer stops the loop
    /// assert_eq!(engine.deregister(token)?, false, "it has fired");
    /// # Ok(()) }
    /// ```
    pub fn into_token(self) -> Token {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: as in `FdWatch::into_token`: `core` is moved out exactly
        // once, and `this` is never dropped.
        drop(unsafe { std::ptr::read(&this.core) });
        this.token
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let _ = self.core.deregister(self.token);
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer").field("token", &self.token).finish()
    }
}
