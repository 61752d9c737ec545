//! Fire-and-forget one-shot timers: [`Engine::timer_at_detached`] and
//! [`Engine::timer_after_detached`].
//!
//! A [`Timer`] handle cancels its timer when dropped. A detached timer is
//! one whose handle was let go of at once ([`Timer::into_token`]): nothing
//! outside the engine refers to it but its token. It ends in one of three
//! ways, each of which drops the callback with its captures:
//!
//! - it fires: the callback runs once and is dropped;
//! - [`Engine::deregister`] with its token cancels it;
//! - the engine is dropped, which ends every registration still live.

use crate::base::error::Result;
use crate::base::token::Token;
use crate::engine::callback::Callback;
use crate::engine::timer::TimerEvent;
use crate::engine::Engine;
use std::time::{Duration, Instant};

#[cfg(doc)]
use crate::engine::timer::Timer;

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
        // Straight to the core: a `Timer` handle made and let go of would
        // take and drop a reference to the engine, two locked instructions
        // on a line every registering thread shares.
        self.core
            .register_timer(deadline, Callback::timer(callback))
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
        self.timer_at_detached(self.core.clock.after(delay), callback)
    }
}
