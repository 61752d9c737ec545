//! fd watches: [`Interest`], [`Readiness`], the [`FdEvent`] a callback
//! receives, and the owning [`FdWatch`] handle.

use crate::engine::{Engine, Inner};
use crate::error::Result;
use crate::sync::Arc;
use crate::token::Token;
use std::fmt;
use std::ops::{BitOr, BitOrAssign};
use std::os::fd::RawFd;

// The poll(2) bits as u16; they all fit (POLLRDHUP is 0x2000).
const IN: u16 = libc::POLLIN as u16;
const PRI: u16 = libc::POLLPRI as u16;
const OUT: u16 = libc::POLLOUT as u16;
const ERR: u16 = libc::POLLERR as u16;
const HUP: u16 = libc::POLLHUP as u16;
const NVAL: u16 = libc::POLLNVAL as u16;
const RDHUP: u16 = libc::POLLRDHUP as u16;
const RDNORM: u16 = libc::POLLRDNORM as u16;
const RDBAND: u16 = libc::POLLRDBAND as u16;
const WRNORM: u16 = libc::POLLWRNORM as u16;
const WRBAND: u16 = libc::POLLWRBAND as u16;
/// Not a poll(2) bit (the kernel keeps 0x8000 to itself): marks an
/// edge-triggered watch.
const EDGE_BIT: u16 = 0x8000;

/// The conditions a watch asks for: a poll(2) `events` mask.
///
/// ```
/// use evnexus::Interest;
/// let both = Interest::READABLE | Interest::WRITABLE;
/// assert!(both.is_readable() && both.is_writable());
/// assert_eq!(Interest::from_poll_events(libc::POLLIN).as_poll_events(), libc::POLLIN);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interest(u16);

impl Interest {
    /// `POLLIN`.
    pub const READABLE: Interest = Interest(IN);
    /// `POLLOUT`.
    pub const WRITABLE: Interest = Interest(OUT);
    /// `POLLPRI`.
    pub const PRIORITY: Interest = Interest(PRI);
    /// `POLLRDHUP`: the peer closed its writing end.
    pub const READ_CLOSED: Interest = Interest(RDHUP);
    /// Nothing: the fd stays registered, but only errors and hang-ups are
    /// reported (poll(2) always reports those).
    pub const NONE: Interest = Interest(0);
    /// Edge-triggered: the callback runs when the condition *becomes* true,
    /// not again while it holds (`EPOLLET` in the loop's epoll set, on both
    /// built-in loops). Only the built-in loops offer it; level-triggered is
    /// the default and the libxl contract.
    pub const EDGE: Interest = Interest(EDGE_BIT);

    /// An interest from a poll(2) `events` mask; bits that poll(2) does
    /// not define are dropped.
    pub const fn from_poll_events(events: libc::c_short) -> Interest {
        Interest(events as u16 & (IN | PRI | OUT | RDHUP | RDNORM | RDBAND | WRNORM | WRBAND))
    }
    /// The poll(2) `events` mask (without [`Interest::EDGE`]).
    pub const fn as_poll_events(self) -> libc::c_short {
        (self.0 & !EDGE_BIT) as libc::c_short
    }
    /// Asks for edge-triggered events.
    pub const fn is_edge(self) -> bool {
        self.0 & EDGE_BIT != 0
    }
    /// Asks for readability.
    pub const fn is_readable(self) -> bool {
        self.0 & (IN | RDNORM) != 0
    }
    /// Asks for writability.
    pub const fn is_writable(self) -> bool {
        self.0 & (OUT | WRNORM) != 0
    }
    pub(crate) const fn bits(self) -> u16 {
        self.0
    }
}

impl BitOr for Interest {
    type Output = Interest;
    fn bitor(self, rhs: Interest) -> Interest {
        Interest(self.0 | rhs.0)
    }
}

impl BitOrAssign for Interest {
    fn bitor_assign(&mut self, rhs: Interest) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Interest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Interest(")?;
        poll_bits(f, self.0)?;
        write!(f, ")")
    }
}

/// The conditions an event reports: a poll(2) `revents` mask.
///
/// ```
/// use evnexus::Readiness;
/// let r = Readiness::from_poll_revents(libc::POLLIN | libc::POLLHUP);
/// assert!(r.is_readable() && r.is_hangup() && !r.is_writable());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Readiness(u16);

impl Readiness {
    /// `POLLIN`.
    pub const READABLE: Readiness = Readiness(IN);
    /// `POLLOUT`.
    pub const WRITABLE: Readiness = Readiness(OUT);
    /// `POLLERR`.
    pub const ERROR: Readiness = Readiness(ERR);
    /// `POLLHUP`.
    pub const HANGUP: Readiness = Readiness(HUP);
    /// Nothing reported (an application loop may still report an event
    /// with an empty mask; it is dispatched all the same).
    pub const EMPTY: Readiness = Readiness(0);

    /// Readiness from a poll(2) `revents` mask.
    pub const fn from_poll_revents(revents: libc::c_short) -> Readiness {
        Readiness(revents as u16)
    }
    /// The poll(2) `revents` mask.
    pub const fn as_poll_revents(self) -> libc::c_short {
        self.0 as libc::c_short
    }
    /// Readable (`POLLIN`/`POLLRDNORM`), or at end of file (`POLLHUP`,
    /// `POLLRDHUP`): a read will not block.
    pub const fn is_readable(self) -> bool {
        self.0 & (IN | RDNORM | HUP | RDHUP) != 0
    }
    /// Writable (`POLLOUT`/`POLLWRNORM`).
    pub const fn is_writable(self) -> bool {
        self.0 & (OUT | WRNORM) != 0
    }
    /// `POLLPRI`.
    pub const fn is_priority(self) -> bool {
        self.0 & PRI != 0
    }
    /// `POLLERR`.
    pub const fn is_error(self) -> bool {
        self.0 & ERR != 0
    }
    /// `POLLHUP`.
    pub const fn is_hangup(self) -> bool {
        self.0 & HUP != 0
    }
    /// `POLLNVAL`: the fd is not open.
    pub const fn is_invalid(self) -> bool {
        self.0 & NVAL != 0
    }
    /// Nothing reported.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub(crate) const fn from_bits(bits: u16) -> Readiness {
        Readiness(bits)
    }
    pub(crate) const fn bits(self) -> u16 {
        self.0
    }
    /// What of this readiness answers `interest`, plus the conditions
    /// poll(2) always reports.
    pub(crate) const fn relevant_to(self, interest: Interest) -> Readiness {
        Readiness(self.0 & (interest.0 | ERR | HUP | NVAL))
    }
}

impl BitOr for Readiness {
    type Output = Readiness;
    fn bitor(self, rhs: Readiness) -> Readiness {
        Readiness(self.0 | rhs.0)
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Readiness(")?;
        poll_bits(f, self.0)?;
        write!(f, ")")
    }
}

fn poll_bits(f: &mut fmt::Formatter<'_>, bits: u16) -> fmt::Result {
    let names = [
        (IN, "IN"),
        (PRI, "PRI"),
        (OUT, "OUT"),
        (ERR, "ERR"),
        (HUP, "HUP"),
        (NVAL, "NVAL"),
        (RDHUP, "RDHUP"),
        (RDNORM, "RDNORM"),
        (RDBAND, "RDBAND"),
        (WRNORM, "WRNORM"),
        (WRBAND, "WRBAND"),
        (EDGE_BIT, "EDGE"),
    ];
    let mut first = true;
    for (bit, name) in names {
        if bits & bit != 0 {
            if !first {
                f.write_str("|")?;
            }
            f.write_str(name)?;
            first = false;
        }
    }
    if first {
        f.write_str("-")?;
    }
    Ok(())
}

/// The slot param of an fd watch: fd in the low half, interest above.
pub(crate) const fn pack_param(fd: RawFd, interest: u16) -> u64 {
    (fd as u32 as u64) | ((interest as u64) << 32)
}
pub(crate) const fn param_fd(param: u64) -> RawFd {
    param as u32 as RawFd
}
pub(crate) const fn param_interest(param: u64) -> Interest {
    Interest((param >> 32) as u16)
}

/// What an fd watch's callback receives: the event, and the way back into
/// the engine.
pub struct FdEvent<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) token: Token,
    pub(crate) fd: RawFd,
    pub(crate) readiness: Readiness,
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
        ended(self.engine.inner().deregister(self.token))
    }
    /// Changes this watch's interest (see [`FdWatch::modify`]).
    pub fn modify(&self, interest: Interest) -> Result<()> {
        self.engine.inner().modify_fd(self.token, interest)
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
    pub(crate) inner: Arc<Inner>,
    pub(crate) token: Token,
}

impl FdWatch {
    /// The token the backend or the application's loop carries.
    pub fn token(&self) -> Token {
        self.token
    }

    /// Changes the interest. Events already reported keep their readiness;
    /// the next events follow the new interest. Errors with
    /// [`Error::Gone`](crate::Error::Gone) when the watch has ended, and with
    /// the backend's error (the watch unchanged) when the backend refuses.
    pub fn modify(&self, interest: Interest) -> Result<()> {
        self.inner.modify_fd(self.token, interest)
    }

    /// Whether the watch is still registered (it may have ended from its
    /// own callback, or by a panic in it).
    pub fn is_live(&self) -> bool {
        self.inner.is_live(self.token)
    }

    /// Ends the watch. Outside any evnexus callback, waits until a run of
    /// the callback in progress on another thread has returned; from inside
    /// a callback, returns at once (see the crate docs, "Deregistration").
    /// Returns `true` if this call ended the watch, `false` if it had ended
    /// already. Dropping the handle does the same.
    pub fn deregister(self) -> bool {
        ended(self.inner.deregister(self.token))
        // Drop then finds the generation gone: one load, no second effect.
    }
}

impl Drop for FdWatch {
    fn drop(&mut self) {
        let _ = self.inner.deregister(self.token);
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
