//! The poll(2) vocabulary every layer speaks: [`Interest`] (what a watch
//! asks for), [`Readiness`] (what an event reports), and the packing of an
//! fd watch's fd and interest into its slot's param word.

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
/// Not a poll(2) bit either (0x4000 is unused by poll): marks a watch whose
/// readiness is kept in user space.
const KEEP_READY_BIT: u16 = 0x4000;
/// The bits of an interest that are the engine's, not poll(2)'s.
const ENGINE_BITS: u16 = EDGE_BIT | KEEP_READY_BIT;

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
    /// Readiness kept in user space (tokio's model): the callback runs when
    /// the fd becomes ready, and again on every later turn of the loop,
    /// without a system call, until it calls
    /// [`FdEvent::clear_ready`](crate::FdEvent::clear_ready), which it
    /// does when a read or write says `WouldBlock`; then the loop waits for
    /// the kernel to report the fd ready again (edge-triggered in the
    /// epoll set). A callback that never calls `clear_ready` runs on every
    /// turn (as with tokio's `retain_ready`); watches without this flag
    /// keep plain level-triggered semantics. Only the built-in loops offer
    /// it. Saves the kernel's per-event work on fds that stay ready: a loop
    /// over many busy fds, each drained a little per turn.
    pub const KEEP_READY: Interest = Interest(KEEP_READY_BIT);

    /// An interest from a poll(2) `events` mask; bits that poll(2) does
    /// not define are dropped.
    pub const fn from_poll_events(events: libc::c_short) -> Interest {
        Interest(events as u16 & (IN | PRI | OUT | RDHUP | RDNORM | RDBAND | WRNORM | WRBAND))
    }
    /// The poll(2) `events` mask (without [`Interest::EDGE`]).
    pub const fn as_poll_events(self) -> libc::c_short {
        (self.0 & !ENGINE_BITS) as libc::c_short
    }
    /// Asks for edge-triggered events.
    pub const fn is_edge(self) -> bool {
        self.0 & EDGE_BIT != 0
    }
    /// Asks for readiness kept in user space ([`Interest::KEEP_READY`]).
    pub const fn keeps_ready(self) -> bool {
        self.0 & KEEP_READY_BIT != 0
    }
    /// Edge-triggered in the kernel's set: [`Interest::EDGE`] or
    /// [`Interest::KEEP_READY`].
    pub(crate) const fn edge_in_kernel(self) -> bool {
        self.0 & ENGINE_BITS != 0
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
        (KEEP_READY_BIT, "KEEP_READY"),
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
