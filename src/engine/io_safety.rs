//! I/O-safe registration: fd watches from [`AsFd`] values instead of raw
//! numbers.
//!
//! - [`Engine::register`] borrows the fd: the returned [`BorrowedFdWatch`]
//!   carries the borrow's lifetime, so the compiler refuses to close the fd
//!   while its watch exists (mio's `Registry::register` shape, with the
//!   "deregister before you close" rule checked instead of documented).
//! - [`Engine::register_owned`] takes the fd (an [`OwnedFd`](std::os::fd::OwnedFd),
//!   a socket, an `Arc` of one: any `AsFd + Send + 'static` value) and
//!   keeps it open until the watch's kernel entry is gone (calloop's
//!   `Generic` and tokio's `AsyncFd` shape). [`OwnedFdWatch::into_inner`]
//!   gives it back.
//!
//! Both are thin layers over [`Engine::register_fd`], which stays for
//! code that holds raw numbers (hooks, C callers).
//!
//! # How the owned fd is closed after its entry
//!
//! The engine drops a registration's callback only when it tears the
//! registration down, which happens after the backend has been told (the
//! epoll entry removed, the application's deregister hook returned). The
//! owned value lives in the callback closure, inside a [`Carrier`] whose
//! destructor runs at that teardown: it hands the value to the handle if the
//! handle still exists (to be returned by `into_inner` or dropped with the
//! handle), or drops it there. Either way the fd closes after its kernel
//! entry is gone.

use crate::base::error::Result;
use crate::base::readiness::Interest;
use crate::base::token::Token;
use crate::engine::fd::{FdEvent, FdWatch};
use crate::engine::Engine;
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex, PoisonError, Weak};

impl Engine {
    /// Watches the fd that `fd` borrows; `callback` runs for each event, as
    /// with [`Engine::register_fd`]. The returned watch borrows `fd`, so the
    /// fd cannot be closed (dropped, moved away) while the watch exists.
    ///
    /// The callback is `'static` and cannot capture the borrowed value; it
    /// gets the fd number from [`FdEvent::fd`]. To let the callback own the
    /// I/O object, use [`Engine::register_owned`].
    ///
    /// Errors as [`Engine::register_fd`].
    ///
    /// ```
    /// use evnexus::{Engine, Interest};
    /// use std::os::unix::net::UnixStream;
    /// # fn main() -> evnexus::Result<()> {
    /// let engine = Engine::new()?;
    /// let (a, mut b) = UnixStream::pair().unwrap();
    /// let watch = engine.register(&a, Interest::READABLE, |ev| {
    ///     println!("fd {} is {:?}", ev.fd(), ev.readiness());
    /// })?;
    /// std::io::Write::write_all(&mut b, b"x").unwrap();
    /// assert_eq!(engine.run_once(None)?, 1);
    /// drop(watch); // ends the borrow: `a` may be closed now
    /// drop(a);
    /// # Ok(()) }
    /// ```
    ///
    /// Closing the fd while its watch is still registered does not compile:
    ///
    /// ```compile_fail
    /// # use evnexus::{Engine, Interest};
    /// # let engine = Engine::new().unwrap();
    /// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let watch = engine.register(&a, Interest::READABLE, |_| {}).unwrap();
    /// drop(a); // error[E0505]: cannot move out of `a` because it is borrowed
    /// watch.deregister();
    /// ```
    pub fn register<'fd, S, F>(
        &self,
        fd: &'fd S,
        interest: Interest,
        callback: F,
    ) -> Result<BorrowedFdWatch<'fd>>
    where
        S: AsFd + ?Sized,
        F: FnMut(&FdEvent<'_>) + Send + 'static,
    {
        let watch = self.register_fd(fd.as_fd().as_raw_fd(), interest, callback)?;
        Ok(BorrowedFdWatch {
            watch,
            _fd: PhantomData,
        })
    }

    /// Watches `io`'s fd and owns `io`: `callback` runs for each event with
    /// a shared reference to it, and `io` is dropped (its fd closed) only
    /// after the watch has ended *and* its kernel entry is gone, so the fd
    /// can never be closed while registered. [`OwnedFdWatch::into_inner`]
    /// ends the watch and gives `io` back instead.
    ///
    /// `io` may be an [`OwnedFd`](std::os::fd::OwnedFd), a socket, a pipe end,
    /// or an `Arc` of one when the program also needs it outside the
    /// callback. Its `as_fd` is read once, here; it must name the same fd
    /// for as long as the value lives (every std type does).
    ///
    /// The callback gets `&S`, not `&mut S`: replacing the value would
    /// close the registered fd. std's sockets, pipes and files read and
    /// write through `&` (`Read for &UnixStream`, ...); keep mutable state
    /// in the callback's own captures.
    ///
    /// Errors as [`Engine::register_fd`]; on an error `io` has been dropped.
    ///
    /// ```
    /// use evnexus::{Engine, Interest};
    /// use std::io::Read;
    /// use std::os::unix::net::UnixStream;
    /// # fn main() -> evnexus::Result<()> {
    /// let engine = Engine::new()?;
    /// let (a, mut b) = UnixStream::pair().unwrap();
    /// let watch = engine.register_owned(a, Interest::READABLE, |ev, mut a: &UnixStream| {
    ///     let mut buf = [0u8; 16];
    ///     let n = a.read(&mut buf).unwrap();
    ///     println!("{:?}: {:?}", ev.readiness(), &buf[..n]);
    /// })?;
    /// std::io::Write::write_all(&mut b, b"hello").unwrap();
    /// assert_eq!(engine.run_once(None)?, 1);
    /// let a: UnixStream = watch.into_inner().expect("outside any callback");
    /// # drop(a);
    /// # Ok(()) }
    /// ```
    pub fn register_owned<S, F>(
        &self,
        io: S,
        interest: Interest,
        mut callback: F,
    ) -> Result<OwnedFdWatch<S>>
    where
        S: AsFd + Send + 'static,
        F: FnMut(&FdEvent<'_>, &S) + Send + 'static,
    {
        let fd = io.as_fd().as_raw_fd();
        let returned = Arc::new(Mutex::new(None));
        let carrier = Carrier {
            io: Some(io),
            back: Arc::downgrade(&returned),
        };
        let watch = self.register_fd(fd, interest, move |ev| {
            if let Some(io) = &carrier.io {
                callback(ev, io);
            }
        })?;
        Ok(OwnedFdWatch { watch, returned })
    }
}

/// Owns the registered value inside the callback closure; dropped when the
/// engine tears the registration down (after the backend removal).
struct Carrier<S> {
    /// `Some` until the carrier is dropped.
    io: Option<S>,
    /// The handle's return cell, while the handle exists.
    back: Weak<Mutex<Option<S>>>,
}

impl<S> Drop for Carrier<S> {
    fn drop(&mut self) {
        let Some(io) = self.io.take() else { return };
        match self.back.upgrade() {
            // The handle exists: it returns or drops the value. (If it is
            // dropped right after this upgrade, the cell goes with our
            // temporary `Arc` below and the value with it.)
            Some(cell) => *cell.lock().unwrap_or_else(PoisonError::into_inner) = Some(io),
            None => drop(io),
        }
    }
}

/// The handle of a watch made by [`Engine::register`]: an [`FdWatch`] that
/// borrows its fd for `'fd`. Dropping it deregisters the watch.
///
/// ```
/// # use evnexus::{Engine, Interest};
/// # fn main() -> evnexus::Result<()> {
/// let engine = Engine::new()?;
/// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
/// let watch = engine.register(&a, Interest::READABLE, |_| {})?;
/// watch.modify(Interest::READABLE | Interest::WRITABLE)?;
/// assert!(watch.is_live());
/// assert!(watch.deregister());
/// # Ok(()) }
/// ```
pub struct BorrowedFdWatch<'fd> {
    watch: FdWatch,
    _fd: PhantomData<BorrowedFd<'fd>>,
}

impl BorrowedFdWatch<'_> {
    /// The token the backend or the application's loop carries.
    pub fn token(&self) -> Token {
        self.watch.token()
    }
    /// Changes the interest (see [`FdWatch::modify`]).
    pub fn modify(&self, interest: Interest) -> Result<()> {
        self.watch.modify(interest)
    }
    /// Whether the watch is still registered.
    pub fn is_live(&self) -> bool {
        self.watch.is_live()
    }
    /// Ends the watch (see [`FdWatch::deregister`]); `true` if this call
    /// ended it.
    pub fn deregister(self) -> bool {
        self.watch.deregister()
    }
}

impl fmt::Debug for BorrowedFdWatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BorrowedFdWatch")
            .field("token", &self.token())
            .finish()
    }
}

/// The handle of a watch made by [`Engine::register_owned`], which owns
/// the registered value `S`. Dropping the handle deregisters the watch;
/// the value is dropped (its fd closed) after the kernel entry is gone.
///
/// After the watch has ended another way (its callback deregistered it or
/// panicked, the engine was dropped), the value is kept, open, until the
/// handle is dropped or [`OwnedFdWatch::into_inner`] takes it.
///
/// ```
/// # use evnexus::{Engine, Interest};
/// # fn main() -> evnexus::Result<()> {
/// let engine = Engine::new()?;
/// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
/// let watch = engine.register_owned(a, Interest::READABLE, |_, _| {})?;
/// assert!(watch.is_live());
/// assert!(watch.deregister()); // `a` is closed, after its epoll entry went
/// # Ok(()) }
/// ```
pub struct OwnedFdWatch<S> {
    watch: FdWatch,
    /// Where the carrier leaves the value at teardown.
    returned: Arc<Mutex<Option<S>>>,
}

impl<S> OwnedFdWatch<S> {
    /// The token the backend or the application's loop carries.
    pub fn token(&self) -> Token {
        self.watch.token()
    }
    /// Changes the interest (see [`FdWatch::modify`]).
    pub fn modify(&self, interest: Interest) -> Result<()> {
        self.watch.modify(interest)
    }
    /// Whether the watch is still registered.
    pub fn is_live(&self) -> bool {
        self.watch.is_live()
    }
    /// Ends the watch (see [`FdWatch::deregister`]) and drops the value
    /// after its kernel entry is gone; `true` if this call ended the watch.
    pub fn deregister(self) -> bool {
        self.watch.deregister()
        // `returned` drops next, with the value if the teardown is done.
    }

    /// Ends the watch and returns the value, still open and no longer
    /// registered.
    ///
    /// `None` only when this is called from inside an evnexus callback or
    /// hook while the watch's own callback is running (on this thread or
    /// another), or a modify of the watch is under way on another thread:
    /// deregistration does not wait there (see the crate docs,
    /// "Deregistration"), and the value is dropped, after the kernel entry,
    /// when that run or modify ends.
    ///
    /// ```
    /// # use evnexus::{Engine, Interest};
    /// # fn main() -> evnexus::Result<()> {
    /// let engine = Engine::new()?;
    /// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let watch = engine.register_owned(a, Interest::READABLE, |_, _| {})?;
    /// let a = watch.into_inner().unwrap();
    /// // Not registered any more: it can be registered again.
    /// let _again = engine.register_owned(a, Interest::READABLE, |_, _| {})?;
    /// # Ok(()) }
    /// ```
    pub fn into_inner(self) -> Option<S> {
        let OwnedFdWatch { watch, returned } = self;
        watch.deregister();
        let io = returned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        io
    }
}

impl<S> fmt::Debug for OwnedFdWatch<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedFdWatch")
            .field("token", &self.token())
            .finish()
    }
}
