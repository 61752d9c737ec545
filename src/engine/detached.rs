//! Fire-and-forget one-shot timers: [`Engine::timer_at_detached`] and
//! [`Engine::timer_after_detached`].
//!
//! A [`Timer`] handle cancels its timer when dropped. A detached timer has
//! no handle for the caller: its handle is kept in the timer's own
//! callback, so the registration owns itself. It ends in one of three ways,
//! each of which drops the callback and the handle inside it:
//!
//! - it fires: the callback runs once and is dropped with its captures;
//! - [`Engine::deregister`] with its token cancels it;
//! - the engine is dropped, which ends every registration still live.
//!
//! The handle inside the callback holds a reference to the engine's
//! internals; that cycle is broken by each of the three, so nothing leaks
//! while the [`Engine`] itself is dropped at some point.

use crate::base::error::Result;
use crate::base::token::Token;
use crate::engine::timer::{Timer, TimerEvent};
use crate::engine::Engine;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

impl Engine {
    /// A one-shot timer at `deadline` that runs without a handle: `callback`
    /// runs once, at or after `deadline` (as with [`Engine::timer_at`]),
    /// unless [`Engine::deregister`] is called with the returned token
    /// first. The registration lives until it fires, is cancelled, or the
    /// engine is dropped.
    ///
    /// ```
    /// use evnexus::Engine;
    /// use std::time::{Duration, Instant};
    /// # fn main() -> evnexus::Result<()> {
    /// let engine = Engine::new()?;
    /// let deadline = Instant::now() + Duration::from_millis(1);
    /// engine.timer_at_detached(deadline, |ev| {
    ///     assert!(std::time::Instant::now() >= ev.deadline());
    ///     ev.engine().stop();
    /// })?;
    /// engine.run()?; // the timer stops it
    /// # Ok(()) }
    /// ```
    pub fn timer_at_detached<F>(&self, deadline: Instant, callback: F) -> Result<Token>
    where
        F: FnOnce(&TimerEvent<'_>) + Send + 'static,
    {
        let (own, callback) = self_owning(callback);
        Ok(adopt(own, self.timer_at(deadline, callback)?))
    }

    /// A one-shot timer `delay` from now that runs without a handle (see
    /// [`Engine::timer_at_detached`]). Any `Duration` is accepted, as with
    /// [`Engine::timer_after`].
    ///
    /// ```
    /// use evnexus::Engine;
    /// use std::time::Duration;
    /// # fn main() -> evnexus::Result<()> {
    /// let engine = Engine::new()?;
    /// let token = engine.timer_after_detached(Duration::from_secs(3600), |_| {
    ///     println!("an hour later");
    /// })?;
    /// // No handle to keep; cancel it by token:
    /// assert_eq!(engine.deregister(token)?, true);
    /// # Ok(()) }
    /// ```
    pub fn timer_after_detached<F>(&self, delay: Duration, callback: F) -> Result<Token>
    where
        F: FnOnce(&TimerEvent<'_>) + Send + 'static,
    {
        let (own, callback) = self_owning(callback);
        Ok(adopt(own, self.timer_after(delay, callback)?))
    }
}

/// Wraps `callback` so that it keeps its own registration's handle: the
/// cell the handle goes into, and the callback to register.
fn self_owning<F>(callback: F) -> (Arc<OnceLock<Timer>>, impl FnOnce(&TimerEvent<'_>) + Send)
where
    F: FnOnce(&TimerEvent<'_>) + Send + 'static,
{
    let own = Arc::new(OnceLock::new());
    let keep = Arc::clone(&own);
    let wrapped = move |ev: &TimerEvent<'_>| {
        // The handle lives as long as this closure: it is dropped after
        // the callback, or with the closure if the timer is cancelled (its
        // drop then finds the timer ended already and does nothing).
        let _own: Arc<OnceLock<Timer>> = keep;
        callback(ev);
    };
    (own, wrapped)
}

/// Puts the registration's handle into its callback's cell; returns its
/// token.
fn adopt(own: Arc<OnceLock<Timer>>, timer: Timer) -> Token {
    let token = timer.token();
    // If the timer fired (or was cancelled by token) before this line, its
    // callback has let go of its `Arc` already, so the handle is dropped
    // with `own` here, and its deregistration finds the timer ended and
    // does nothing. Otherwise the callback's `Arc` keeps it. The cell is
    // set only here, so `set` cannot fail; were it set, the value would be
    // dropped all the same.
    let _ = own.set(timer);
    token
}
