//! fd watches: the [`FdEvent`] a callback receives, and the owning
//! [`FdWatch`] handle.

use crate::base::error::Result;
use crate::base::readiness::{Interest, Readiness};
use crate::base::token::Token;
use crate::engine::{CoreRef, Engine};
use std::fmt;
use std::os::fd::RawFd;

/// What an fd watch's callback receives: the event, and the way back into
/// the engine.
pub struct FdEvent<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) token: Token,
    pub(crate) fd: RawFd,
    pub(crate) readiness: Readiness,
    /// [`FdEvent::clear_ready`] was called.
    pub(crate) cleared: std::sync::atomic::AtomicBool,
}

impl<'a> FdEvent<'a> {
    /// The engine, to register, modify or deregister from the callback.
    /// Callbacks get it here so they need not capture it (an engine
    /// captured by one of its own callbacks would never be dropped).
    pub fn engine(&self) -> &'a Engine {
        self.engine
    }
    /// The watch's token.
    pub fn token(&self) -> Token {
        self.token
    }
    /// The watched fd.
    pub fn fd(&self) -> RawFd {
        self.fd
    }
    /// What was reported: the OR of every event folded into this run.
    pub fn readiness(&self) -> Readiness {
        self.readiness
    }
    /// Ends this watch. The callback is not started again; the current run
    /// goes on to its end, after which the callback is dropped. Returns
    /// `false` if the watch had already ended.
    pub fn deregister(&self) -> bool {
        ended(self.engine.core().deregister(self.token))
    }
    /// Says the fd is drained (a read or write returned `WouldBlock`): a
    /// watch with [`Interest::KEEP_READY`] is then not dispatched again
    /// until the kernel reports it ready anew. Without that flag it does
    /// nothing (the kernel decides, level- or edge-triggered).
    ///
    /// ```
    /// use evnexus::{Engine, Interest};
    /// use std::io::{ErrorKind, Read};
    /// use std::os::fd::AsRawFd;
    /// # fn main() -> evnexus::Result<()> {
    /// let engine = Engine::new()?;
    /// let (mut r, _w) = std::os::unix::net::UnixStream::pair().unwrap();
    /// r.set_nonblocking(true).unwrap();
    /// let fd = r.as_raw_fd();
    /// let _watch = engine.register_fd(fd, Interest::READABLE | Interest::KEEP_READY, move |ev| {
    ///     let mut buf = [0u8; 512];
    ///     match r.read(&mut buf) {
    ///         Ok(_) => {} // more may be there: run again next turn, no system call
    ///         Err(e) if e.kind() == ErrorKind::WouldBlock => ev.clear_ready(),
    ///         Err(_) => ev.clear_ready(),
    ///     }
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn clear_ready(&self) {
        // Relaxed: read back on this thread after the callback returns.
        self.cleared
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    /// Changes this watch's interest (see [`FdWatch::modify`]).
    pub fn modify(&self, interest: Interest) -> Result<()> {
        self.engine.core().modify_fd(self.token, interest)
    }
}

impl fmt::Debug for FdEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FdEvent")
            .field("token", &self.token)
            .field("fd", &self.fd)
            .field("readiness", &self.readiness)
            .finish()
    }
}

/// The owning handle of an fd watch. Dropping it deregisters the watch.
///
/// ```
/// use evnexus::{Engine, Interest};
/// # fn main() -> evnexus::Result<()> {
/// let engine = Engine::new()?;
/// let (r, _w) = std::os::unix::net::UnixStream::pair().unwrap();
/// use std::os::fd::AsRawFd;
/// let watch = engine.register_fd(r.as_raw_fd(), Interest::READABLE, |ev| {
///     println!("fd {} is {:?}", ev.fd(), ev.readiness());
/// })?;
/// watch.modify(Interest::READABLE | Interest::WRITABLE)?;
/// assert!(watch.deregister());
/// # Ok(()) }
/// ```
pub struct FdWatch {
    pub(crate) core: CoreRef,
    pub(crate) token: Token,
}

impl FdWatch {
    /// The token the backend or the application's loop carries.
    pub fn token(&self) -> Token {
        self.token
    }

    /// Changes the interest. Events already reported keep their readiness;
    /// the next events follow the new interest. Errors with
    /// [`Error::Gone`](crate::Error::Gone) when the watch has ended (also
    /// when it ended while the backend was being asked, whatever the
    /// backend answered), and with the backend's error (the watch
    /// unchanged) when the backend refuses.
    pub fn modify(&self, interest: Interest) -> Result<()> {
        self.core.modify_fd(self.token, interest)
    }

    /// Whether the watch is still registered (it may have ended from its
    /// own callback, or by a panic in it).
    pub fn is_live(&self) -> bool {
        self.core.is_live(self.token)
    }

    /// Ends the watch. Outside any evnexus callback, waits until a run of
    /// the callback in progress on another thread has returned; from inside
    /// a callback, returns at once (see the crate docs, "Deregistration").
    /// Returns `true` if this call ended the watch, `false` if it had ended
    /// already. Dropping the handle does the same.
    pub fn deregister(self) -> bool {
        ended(self.core.deregister(self.token))
        // Drop then finds the generation gone: one load, no second effect.
    }

    /// Lets go of the handle without ending the watch, and returns its
    /// token. The watch goes on until [`Engine::deregister`] with the
    /// token, its callback deregisters it (or panics), or the engine is
    /// dropped; [`Engine::modify_fd`] changes it by token. For code that
    /// keeps tokens rather than handles (a C caller, a table of its own).
    ///
    /// ```
    /// use evnexus::{Engine, Interest};
    /// use std::os::fd::AsRawFd;
    /// # fn main() -> evnexus::Result<()> {
    /// let engine = Engine::new()?;
    /// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let token = engine.register_fd(a.as_raw_fd(), Interest::READABLE, |_| {})?.into_token();
    /// engine.modify_fd(token, Interest::READABLE | Interest::WRITABLE)?;
    /// assert_eq!(engine.deregister(token)?, true); // before `a` closes
    /// # Ok(()) }
    /// ```
    pub fn into_token(self) -> Token {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped nor used after this line but for
        // its `Copy` token, so its `core` is moved out exactly once (and
        // dropped at the end of this statement): the handle is counted
        // out of the engine, the watch is left alone.
        drop(unsafe { std::ptr::read(&this.core) });
        this.token
    }
}

impl Drop for FdWatch {
    fn drop(&mut self) {
        let _ = self.core.deregister(self.token);
    }
}

/// Whether a deregistration ended the registration (an fd closed while
/// registered was ended all the same; `Engine::deregister` says so).
pub(crate) fn ended(r: Result<bool>) -> bool {
    r.unwrap_or(true)
}

impl fmt::Debug for FdWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FdWatch")
            .field("token", &self.token)
            .finish()
    }
}
