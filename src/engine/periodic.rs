//! Periodic timers without drift: [`Engine::timer_every`],
//! [`Engine::timer_every_at`], the [`Periodic`] handle and the [`Tick`]
//! its callback receives.
//!
//! # A chain of one-shot timers
//!
//! A periodic timer is a chain of one-shot timers (the engine's own), one
//! *link* per run. Run `k` is due at `first + k * period`, computed from
//! `first` each time, so nothing accumulates: a late run does not move the
//! ones after it. Each link, when it fires, runs the callback, then
//! registers the next link; the callback's state moves from link to link,
//! so there is one callback, never run concurrently with itself (the next
//! link exists only once the callback has returned).
//!
//! Falling behind: when the callback returns after the next deadline, the
//! periods that have passed are skipped (tokio's `MissedTickBehavior::Skip`):
//! the next run is the first one of the schedule still in the future, and
//! [`Tick::missed`] says how many were skipped. The schedule keeps its phase.
//!
//! # Cancellation
//!
//! The [`Control`] shared by the handle and the links holds the *stopped*
//! flag and the token of the current link. Cancelling sets the flag, then
//! deregisters the current link, again until the current link stays the
//! same:
//!
//! - a link that starts after the flag was set does not run the callback;
//! - a run in progress registers no next link once it sees the flag; if it
//!   registered one before, it publishes it as current and then looks at
//!   the flag (and deregisters it itself if set), while the canceller sets
//!   the flag and then looks at the current link: sequentially consistent
//!   on both sides, so at least one of them sees the other's write;
//! - outside any callback, deregistering a link that is running waits for
//!   that run to return (including its registration of the next link), so
//!   the loop ends with nothing running and the callback dropped.
//!
//! The current link moves from `T(k)` to `T(k+1)` by a compare-and-swap
//! from `T(k)`, made by whichever comes first: run `k` once its
//! registration of link `k+1` returns, or link `k+1` when it starts (it may
//! fire on another thread before that registration has returned). Tokens
//! are never reused, so the swap never moves the current link backwards.

use crate::base::error::{Error, Result};
use crate::base::sync::{Arc, AtomicBool, AtomicU64, Ordering::SeqCst, StdArc};
use crate::base::token::Token;
use crate::engine::timer::TimerEvent;
use crate::engine::{Engine, EngineCore};
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

/// What the handle and the links of one periodic timer share.
struct Control {
    /// Set by [`Periodic::cancel`] (or its drop) and [`Tick::stop`]: no
    /// callback run starts, and no link is registered, after it.
    stopped: AtomicBool,
    /// Set when the callback has been dropped: the chain has ended.
    ended: AtomicBool,
    /// The token of the current link (0 before the first is registered).
    current: AtomicU64,
}

/// The callback and its schedule; moves from link to link.
struct Schedule<F> {
    callback: F,
    first: Instant,
    period: Duration,
    /// The instant that stands for "never" on this engine's clock.
    never: Instant,
}

impl<F> Schedule<F> {
    /// The deadline of run `k`: `first + k * period`, or "never" past what
    /// the clock can represent.
    fn deadline(&self, k: u64) -> Instant {
        let ns = u128::from(k) * self.period.as_nanos();
        u64::try_from(ns)
            .ok()
            .and_then(|ns| self.first.checked_add(Duration::from_nanos(ns)))
            .map_or(self.never, |t| t.min(self.never))
    }

    /// The run after run `k`, at `now`: `k + 1`, or the first run still in
    /// the future if that one is due already (missed periods are skipped).
    fn next(&self, k: u64, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.first).as_nanos();
        let first_future = elapsed / self.period.as_nanos() + 1;
        u64::try_from(first_future)
            .unwrap_or(u64::MAX)
            .max(k.saturating_add(1))
    }
}

/// One link of the chain: the one-shot timer of run `index`.
struct Link<F> {
    control: StdArc<Control>,
    /// `None` once handed on to the next link.
    schedule: Option<Box<Schedule<F>>>,
    /// The token of the previous link (0 for the first).
    prev: Token,
    index: u64,
    missed: u64,
}

impl<F> Drop for Link<F> {
    fn drop(&mut self) {
        // Dropped with the schedule still in it: not handed on, so the
        // chain ends here (stopped, cancelled, deregistered by token, the
        // engine dropped, the next link refused, or a panic). The callback
        // goes first, so that `ended` means "dropped".
        if let Some(schedule) = self.schedule.take() {
            drop(schedule);
            self.control.ended.store(true, SeqCst);
        }
    }
}

impl<F: FnMut(&Tick<'_>) + Send + 'static> Link<F> {
    /// Registers this link as a one-shot timer at `deadline` (its run's);
    /// returns its token, or the error (the link, and with it the chain, is
    /// then dropped).
    fn register(self, engine: &Engine, deadline: Instant) -> Result<Token> {
        let timer = engine.timer_at(deadline, move |ev| self.fire(ev))?;
        Ok(timer.into_token())
    }

    /// The link's timer fired: run the callback, then register the next
    /// link unless the timer has been stopped.
    fn fire(mut self, ev: &TimerEvent<'_>) {
        let control = StdArc::clone(&self.control);
        // This link is current from now on, if its registrant has not said
        // so yet (see the module doc).
        let _ = control.current.compare_exchange(
            self.prev.as_u64(),
            ev.token().as_u64(),
            SeqCst,
            SeqCst,
        );
        if control.stopped.load(SeqCst) {
            return; // The chain ends with this link, without a run.
        }
        let Some(schedule) = self.schedule.as_mut() else {
            return;
        };
        let deadline = schedule.deadline(self.index);
        (schedule.callback)(&Tick {
            engine: ev.engine(),
            token: ev.token(),
            deadline,
            index: self.index,
            missed: self.missed,
            control: &control,
        });
        if control.stopped.load(SeqCst) {
            return;
        }
        let next = schedule.next(self.index, Instant::now());
        let next_deadline = schedule.deadline(next);
        let link = Link {
            control: StdArc::clone(&control),
            schedule: self.schedule.take(),
            prev: ev.token(),
            index: next,
            missed: next - self.index - 1,
        };
        // An error ends the chain: the new link was dropped with it.
        if let Ok(token) = link.register(ev.engine(), next_deadline) {
            let _ = control.current.compare_exchange(
                ev.token().as_u64(),
                token.as_u64(),
                SeqCst,
                SeqCst,
            );
            if control.stopped.load(SeqCst) {
                // Stopped while we registered: the canceller may have
                // looked at the current link before we published this
                // one. From inside a callback this does not wait; the link,
                // if it fires meanwhile, finds the flag and does not run.
                let _ = ev.engine().deregister(token);
            }
        }
    }
}

/// What a periodic timer's callback receives: one run.
///
/// ```
/// use evnexus::Engine;
/// use std::time::{Duration, Instant};
/// # fn main() -> evnexus::Result<()> {
/// let engine = Engine::new()?;
/// let first = Instant::now();
/// let period = Duration::from_millis(1);
/// let _t = engine.timer_every_at(first, period, move |tick| {
///     // Run `index` of the schedule, due at `first + index * period`.
///     assert_eq!(tick.deadline(), first + period * tick.index() as u32);
///     assert!(Instant::now() >= tick.deadline());
///     if tick.missed() > 0 {
///         println!("{} runs skipped before run {}", tick.missed(), tick.index());
///     }
///     // This run's own one-shot timer has fired: its token is spent.
///     assert_eq!(tick.engine().deregister(tick.token()).unwrap(), false);
///     if tick.index() >= 2 {
///         tick.stop(); // no run after this one
///         tick.engine().stop();
///     }
/// })?;
/// engine.run()?;
/// # Ok(()) }
/// ```
pub struct Tick<'a> {
    engine: &'a Engine,
    token: Token,
    deadline: Instant,
    index: u64,
    missed: u64,
    control: &'a Control,
}

impl<'a> Tick<'a> {
    /// The engine, to register or deregister from the callback.
    pub fn engine(&self) -> &'a Engine {
        self.engine
    }
    /// The token of this run's one-shot timer. Each run has its own; this
    /// one has fired, so [`Engine::deregister`] with it does nothing (stop
    /// the timer with [`Tick::stop`]).
    pub fn token(&self) -> Token {
        self.token
    }
    /// When this run was due: `first + index * period`. The engine's own
    /// loops never run it before; with hooks, the application's loop
    /// decides (as for [`TimerEvent::deadline`]).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
    /// Which run of the schedule this is: 0 for the run at `first`, `k` for
    /// the run at `first + k * period`.
    pub fn index(&self) -> u64 {
        self.index
    }
    /// How many runs of the schedule were skipped just before this one,
    /// because the previous run returned after they were due.
    pub fn missed(&self) -> u64 {
        self.missed
    }
    /// Stops the periodic timer: no run after this one. Its callback is
    /// dropped when this run returns.
    pub fn stop(&self) {
        self.control.stopped.store(true, SeqCst);
    }
}

impl fmt::Debug for Tick<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tick")
            .field("token", &self.token)
            .field("deadline", &self.deadline)
            .field("index", &self.index)
            .field("missed", &self.missed)
            .finish()
    }
}

/// The owning handle of a periodic timer. Dropping it cancels the timer
/// (as [`Periodic::cancel`]); [`Periodic::detach`] lets it run without a
/// handle.
///
/// ```
/// use evnexus::Engine;
/// use std::time::Duration;
/// # fn main() -> evnexus::Result<()> {
/// let engine = Engine::new()?;
/// let beat = engine.timer_every(Duration::from_secs(1), |tick| {
///     println!("beat {} ({} missed)", tick.index(), tick.missed());
/// })?;
/// assert!(beat.is_active());
/// assert!(beat.cancel(), "stopped by this call");
/// # Ok(()) }
/// ```
pub struct Periodic {
    core: Arc<EngineCore>,
    control: StdArc<Control>,
    /// Cleared by [`Periodic::detach`].
    cancel_on_drop: bool,
}

impl Periodic {
    /// Whether the timer will run again: it has not been cancelled or
    /// stopped, and its chain has not ended another way.
    ///
    /// ```
    /// use evnexus::Engine;
    /// use std::time::Duration;
    /// # fn main() -> evnexus::Result<()> {
    /// let engine = Engine::new()?;
    /// let once = engine.timer_every(Duration::from_millis(1), |tick| tick.stop())?;
    /// while once.is_active() {
    ///     engine.run_once(None)?;
    /// }
    /// assert!(!once.cancel(), "it had stopped itself");
    /// # Ok(()) }
    /// ```
    pub fn is_active(&self) -> bool {
        !self.control.stopped.load(SeqCst) && !self.control.ended.load(SeqCst)
    }

    /// Cancels the timer: no run starts after this call. Outside any
    /// evnexus callback it also waits for a run in progress on another
    /// thread to return, and the callback has been dropped when it returns;
    /// from inside a callback it does not wait (see the crate docs,
    /// "Deregistration"), and a run in progress elsewhere is the last.
    ///
    /// Returns `true` if this call stopped the timer, `false` if it had
    /// stopped already ([`Tick::stop`], a deregistration of its pending
    /// token, a panic in its callback, a next run that could not be
    /// registered, or the engine dropped).
    ///
    /// ```
    /// use evnexus::Engine;
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// # fn main() -> evnexus::Result<()> {
    /// let engine = Engine::new()?;
    /// let runs = Arc::new(AtomicU32::new(0));
    /// let counted = Arc::clone(&runs);
    /// let timer = engine.timer_every(Duration::from_millis(1), move |_| {
    ///     counted.fetch_add(1, Ordering::SeqCst);
    /// })?;
    /// while runs.load(Ordering::SeqCst) < 3 {
    ///     engine.run_once(None)?;
    /// }
    /// assert!(timer.cancel());
    /// engine.run_once(Some(Duration::from_millis(5)))?;
    /// assert_eq!(runs.load(Ordering::SeqCst), 3, "no run after cancel");
    /// # Ok(()) }
    /// ```
    pub fn cancel(mut self) -> bool {
        self.cancel_on_drop = false;
        self.stop()
    }

    /// Lets the timer run without a handle. It runs until its callback
    /// calls [`Tick::stop`], [`Engine::deregister`] is called with its
    /// pending token, or the engine is dropped.
    ///
    /// ```
    /// use evnexus::Engine;
    /// use std::time::Duration;
    /// # fn main() -> evnexus::Result<()> {
    /// let engine = Engine::new()?;
    /// engine
    ///     .timer_every(Duration::from_millis(1), |tick| {
    ///         if tick.index() >= 2 {
    ///             tick.stop(); // the run due third (or a later one, if the loop fell behind) is the last
    ///             tick.engine().stop();
    ///         }
    ///     })?
    ///     .detach();
    /// engine.run()?;
    /// # Ok(()) }
    /// ```
    pub fn detach(mut self) {
        self.cancel_on_drop = false;
    }

    /// Sets the stopped flag and deregisters the current link until it
    /// stays the same (see the module doc).
    fn stop(&self) -> bool {
        let was_stopped = self.control.stopped.swap(true, SeqCst);
        let stopped_here = !was_stopped && !self.control.ended.load(SeqCst);
        let mut current = self.control.current.load(SeqCst);
        loop {
            // A link that has fired is not ended again: this waits for its
            // run (outside callbacks). A stale token is a no-op.
            let _ = self.core.deregister(Token::from_u64(current));
            let now = self.control.current.load(SeqCst);
            if now == current {
                return stopped_here;
            }
            current = now;
        }
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        if self.cancel_on_drop {
            self.stop();
        }
    }
}

impl fmt::Debug for Periodic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Periodic")
            .field("active", &self.is_active())
            .finish()
    }
}

impl Engine {
    /// A periodic timer: `callback` runs every `period`, first `period`
    /// from now. The same as [`Engine::timer_every_at`] with
    /// `first = now + period`.
    ///
    /// ```
    /// use evnexus::Engine;
    /// use std::time::{Duration, Instant};
    /// # fn main() -> evnexus::Result<()> {
    /// let engine = Engine::new()?;
    /// let start = Instant::now();
    /// let period = Duration::from_millis(2);
    /// let _beat = engine.timer_every(period, move |tick| {
    ///     // Never early: run n (from 1) is never before start + n * period.
    ///     assert!(Instant::now() >= start + period * (tick.index() as u32 + 1));
    ///     if tick.index() >= 4 {
    ///         tick.engine().stop();
    ///     }
    /// })?;
    /// engine.run()?;
    /// # Ok(()) }
    /// ```
    pub fn timer_every<F>(&self, period: Duration, callback: F) -> Result<Periodic>
    where
        F: FnMut(&Tick<'_>) + Send + 'static,
    {
        self.timer_every_at(self.core.clock.after(period), period, callback)
    }

    /// A periodic timer: `callback` runs at `first`, then every `period`:
    /// run `k` is due at `first + k * period`, however late the runs before
    /// it were (no drift). On the engine's own loops no run starts before
    /// it is due; with hooks, the application's loop decides when a
    /// timeout has occurred, as for one-shot timers.
    ///
    /// - **Never concurrently with itself:** the next run is registered
    ///   when the callback returns.
    /// - **Falling behind:** when the callback returns after the next run
    ///   was due (a slow callback, a loop that was busy), the runs whose
    ///   time has passed are skipped; the next run is the first one of the
    ///   schedule still in the future, and [`Tick::missed`] says how many
    ///   were skipped. So the `n`-th run (counted from 1) is never before
    ///   `first + (n - 1) * period`.
    /// - **Ending:** [`Periodic::cancel`] or dropping the handle;
    ///   [`Tick::stop`] from the callback; a panic in the callback (which
    ///   is reported as for any callback); the engine dropped; or a next
    ///   run that cannot be registered (the engine full, the application's
    ///   loop refusing the timeout): then [`Periodic::is_active`] is
    ///   `false`. The callback is dropped when it ends.
    /// - **Tokens:** each run is a one-shot timer with a token of its own
    ///   ([`Tick::token`]). [`Engine::deregister`] with the token of the
    ///   pending run ends the periodic timer without waiting for anything
    ///   (as [`Periodic::cancel`] does when nothing is running); with the
    ///   token of a run that has fired it does nothing.
    ///   [`Engine::reset_timer`] with the pending run's token moves that
    ///   run only.
    ///
    /// Any `first` is accepted, as with [`Engine::timer_at`]. Errors as
    /// [`Engine::timer_at`], and with [`Error::Backend`] of kind
    /// [`InvalidInput`](std::io::ErrorKind::InvalidInput) for a zero
    /// `period`.
    ///
    /// ```
    /// use evnexus::Engine;
    /// use std::time::{Duration, Instant};
    /// # fn main() -> evnexus::Result<()> {
    /// let engine = Engine::new()?;
    /// let first = Instant::now();
    /// let period = Duration::from_millis(1);
    /// let _beat = engine.timer_every_at(first, period, move |tick| {
    ///     assert_eq!(tick.deadline(), first + period * tick.index() as u32);
    ///     if tick.index() >= 3 {
    ///         tick.engine().stop();
    ///     }
    /// })?;
    /// engine.run()?;
    /// # Ok(()) }
    /// ```
    pub fn timer_every_at<F>(
        &self,
        first: Instant,
        period: Duration,
        callback: F,
    ) -> Result<Periodic>
    where
        F: FnMut(&Tick<'_>) + Send + 'static,
    {
        if period.is_zero() {
            return Err(Error::Backend(io::Error::new(
                io::ErrorKind::InvalidInput,
                "evnexus: a periodic timer needs a period above zero",
            )));
        }
        let control = StdArc::new(Control {
            stopped: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            current: AtomicU64::new(0),
        });
        let schedule = Box::new(Schedule {
            callback,
            first,
            period,
            never: self.core.clock.after(Duration::MAX),
        });
        let deadline = schedule.deadline(0);
        let link = Link {
            control: StdArc::clone(&control),
            schedule: Some(schedule),
            prev: Token::from_u64(0),
            index: 0,
            missed: 0,
        };
        let token = link.register(self, deadline)?;
        let _ = control
            .current
            .compare_exchange(0, token.as_u64(), SeqCst, SeqCst);
        Ok(Periodic {
            core: Arc::clone(&self.core),
            control,
            cancel_on_drop: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Schedule;
    use std::time::{Duration, Instant};

    fn schedule(period: Duration) -> Schedule<()> {
        let first = Instant::now();
        Schedule {
            callback: (),
            first,
            period,
            never: first + Duration::from_secs(1 << 40),
        }
    }

    #[test]
    fn run_k_is_due_at_first_plus_k_periods_and_past_the_clock_never() {
        let s = schedule(Duration::from_millis(3));
        assert_eq!(s.deadline(0), s.first);
        assert_eq!(s.deadline(7), s.first + Duration::from_millis(21));
        // Far beyond a u32 of periods: computed, not accumulated.
        let k = 5_000_000_000u64;
        assert_eq!(
            s.deadline(k),
            s.first + Duration::from_millis(3) * 1_000_000 * 5_000
        );
        assert_eq!(s.deadline(u64::MAX), s.never, "k * period overflows");
        let huge = schedule(Duration::MAX);
        assert_eq!(huge.deadline(0), huge.first);
        assert_eq!(huge.deadline(1), huge.never);
    }

    #[test]
    fn the_next_run_is_the_following_one_or_the_first_still_in_the_future() {
        let p = Duration::from_millis(10);
        let s = schedule(p);
        // On time (or the application's loop reporting early): k + 1.
        assert_eq!(s.next(0, s.first), 1);
        assert_eq!(s.next(0, s.first + p / 2), 1);
        assert_eq!(s.next(4, s.first), 5);
        // Returned after runs 1 and 2 were due: they are skipped.
        assert_eq!(s.next(0, s.first + p * 2 + p / 2), 3);
        // A run due exactly now is not in the future: skipped too.
        assert_eq!(s.next(0, s.first + p * 3), 4);
        // Never backwards, never the same run twice.
        assert_eq!(s.next(9, s.first + p * 3), 10);
        assert_eq!(s.next(u64::MAX - 1, s.first), u64::MAX);
    }
}
