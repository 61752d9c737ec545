//! Registrations by token: [`Engine::deregister`], [`Engine::modify_fd`]
//! and [`Engine::reset_timer`], for code that keeps tokens rather than
//! handles (a C caller, an application loop, a handle let go of with
//! `into_token`). Each is safe with any `u64`: a token that names no live
//! registration of the right kind touches nothing.

use crate::base::error::{Error, Result};
use crate::base::readiness::Interest;
use crate::base::token::Token;
use crate::engine::Engine;
use std::time::Instant;

#[cfg(doc)]
use crate::base::stats::Stats;
#[cfg(doc)]
use crate::engine::{fd::FdWatch, timer::Timer};

impl Engine {
    /// Ends the registration named by `token`, whatever its kind (fd
    /// watch, timer, child watch): the handle's `deregister`/`cancel` by
    /// token, for code that keeps tokens rather than handles (a C caller,
    /// an application loop). Safe with any `u64`: a token that names no
    /// live registration (ended already, stale, forged, out of range) is
    /// `Ok(false)` and touches nothing.
    ///
    /// - `Ok(true)`: this call ended the registration. Its callback will
    ///   not start again. From outside any evnexus callback, the call has
    ///   also waited for a run in progress on another thread to return,
    ///   the backend has been told (the hook called, the kernel entry
    ///   removed) and the callback dropped. From inside a callback or hook
    ///   it does not wait (see the crate docs, "Deregistration"); if another
    ///   thread is modifying the registration at that moment, that thread
    ///   tells the backend when its modify's backend call returns (and the
    ///   modify returns [`Error::Gone`]).
    /// - `Err(`[`Error::ClosedWhileRegistered`]`)`: this call ended the
    ///   registration as above, but its fd had been closed while still
    ///   registered, so its kernel entry could not be removed: it was gone
    ///   already, or it belongs to a newer watch of the same fd number
    ///   (and was left alone), or another descriptor keeps it (see
    ///   [`Engine::register_fd`]). Counted in
    ///   [`Stats::closed_while_registered`].
    ///
    /// ```
    /// use evnexus::{Engine, Token};
    /// use std::time::Duration;
    /// # fn main() -> evnexus::Result<()> {
    /// let engine = Engine::new()?;
    /// let token = engine.timer_after(Duration::from_secs(60), |_| {})?.token();
    /// // (Dropping the handle above cancelled that timer already.)
    /// assert_eq!(engine.deregister(token)?, false);
    /// let timer = engine.timer_after(Duration::from_secs(60), |_| {})?;
    /// assert_eq!(engine.deregister(timer.token())?, true);
    /// assert!(!timer.is_pending());
    /// assert_eq!(engine.deregister(Token::from_u64(u64::MAX))?, false);
    /// # Ok(()) }
    /// ```
    pub fn deregister(&self, token: Token) -> Result<bool> {
        self.core.deregister(token)
    }

    /// Changes the interest of the fd watch named by `token`: the
    /// handle's [`FdWatch::modify`] by token. Safe with any `u64`:
    /// [`Error::Gone`] for a token that names no live fd watch (ended,
    /// stale, forged, out of range, or a timer's), with nothing touched.
    /// Watches behind [`Engine::watch_signal`] and [`Engine::watch_child`]
    /// are fd watches too; leave their interest alone.
    ///
    /// Otherwise errors as [`FdWatch::modify`], and with
    /// [`Error::Reentrant`] from inside a hook.
    ///
    /// ```
    /// use evnexus::{Engine, Error, Interest, Token};
    /// use std::os::fd::AsRawFd;
    /// # fn main() -> evnexus::Result<()> {
    /// let engine = Engine::new()?;
    /// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let watch = engine.register_fd(a.as_raw_fd(), Interest::READABLE, |_| {})?;
    /// engine.modify_fd(watch.token(), Interest::READABLE | Interest::WRITABLE)?;
    /// assert!(matches!(
    ///     engine.modify_fd(Token::from_u64(u64::MAX), Interest::READABLE),
    ///     Err(Error::Gone)
    /// ));
    /// # Ok(()) }
    /// ```
    pub fn modify_fd(&self, token: Token, interest: Interest) -> Result<()> {
        // A live timer is the wrong kind. A token's generation names one
        // registration for good (generations never wrap), so its kind
        // cannot change between this look and the modify: if the timer
        // ends meanwhile, the modify finds it gone.
        if self.core.timer_deadline(token).is_some() {
            return Err(Error::Gone);
        }
        self.core.modify_fd(token, interest)
    }

    /// Moves the deadline of the pending timer named by `token`: the
    /// handle's [`Timer::reset_at`] by token. Safe with any `u64`:
    /// [`Error::Gone`] for a token that names no pending timer (fired,
    /// cancelled, stale, forged, out of range, or an fd watch's), with
    /// nothing touched. The deadline is taken as by [`Engine::timer_at`].
    /// With a [periodic timer](Engine::timer_every)'s pending token it
    /// moves that one run; the runs after it keep their schedule.
    ///
    /// Otherwise errors as [`Timer::reset_at`], and with
    /// [`Error::Reentrant`] from inside a hook.
    ///
    /// ```
    /// use evnexus::{Engine, Error};
    /// use std::time::{Duration, Instant};
    /// # fn main() -> evnexus::Result<()> {
    /// let engine = Engine::new()?;
    /// let token = engine.timer_after_detached(Duration::from_secs(3600), |ev| ev.engine().stop())?;
    /// engine.reset_timer(token, Instant::now())?;
    /// engine.run()?; // it fires at once and stops the loop
    /// assert!(matches!(engine.reset_timer(token, Instant::now()), Err(Error::Gone)));
    /// # Ok(()) }
    /// ```
    pub fn reset_timer(&self, token: Token, deadline: Instant) -> Result<()> {
        // Only a pending timer may be reset; as in `modify_fd`, its kind
        // cannot change before the modify, which finds it gone if it
        // fires or is cancelled meanwhile.
        if self.core.timer_deadline(token).is_none() {
            return Err(Error::Gone);
        }
        self.core.modify_timer(token, deadline)
    }
}
