//! [`WakeFd`]: the eventfd by which any thread wakes a loop that sleeps in
//! `poll()`, `epoll_wait()` or `io_uring_enter()` (or in a host loop that
//! nests the engine), written at most once until the loop drains it.
//!
//! Two ways in. [`WakeFd::write`] always wakes (a `Waker`, a stop).
//! [`WakeFd::notify`] tells a loop that the registrations changed, and
//! writes only when a loop may sleep without looking at them again: one
//! is between [`WakeFd::arm`] and [`WakeFd::disarm`] (about to look, or
//! waiting), or the engine is nested, so that its loop sleeps in the host
//! between turns. A loop outside that window looks at every change when
//! its next turn begins, and a `run_once(None)` right after a registration
//! waits for the registration's event rather than return empty.
//!
//! The protocol, modelled in `tests/loom.rs`:
//!
//! - `write` sets `sent` and, if it was clear, writes the eventfd;
//! - the loop, once its wait has returned with the eventfd readable, calls
//!   `drain` *before it dispatches anything of that batch*: `drain` reads
//!   the eventfd (level-triggered waits only, see below), then clears
//!   `sent`.
//!
//! The built-in loop watches the eventfd edge-triggered
//! ([`WakeFd::new_edge`]): every write of an eventfd is a new edge, so the
//! wait that returned it has consumed the wake-up and `drain` only clears
//! `sent`, one system call fewer per wake-up. The counter it never reads
//! grows by one per write, at most one write per loop turn: 2^64 - 2 turns
//! before a write could fail. `poll()` is level-triggered, so the poll
//! backend's loop reads.
//!
//! A `write` that finds `sent` already set skips the system call: its
//! wake-up is the one already pending, or the one being drained, and the
//! loop looks at everything after the drain. That is why the drain must
//! come before the batch's callbacks: a wake-up that a callback of the
//! batch would have needed to see could otherwise land between that
//! callback and a later drain and be swallowed by it.

use crate::base::sync::{fence, AtomicBool, AtomicU32, Ordering};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub(crate) struct WakeFd {
    fd: OwnedFd,
    /// How many loops are between `arm` and `disarm`.
    sleeping: AtomicU32,
    /// A host loop drives the engine: it may sleep between turns.
    nested: AtomicBool,
    /// The eventfd has been written since the last drain.
    sent: AtomicBool,
    /// The loop's wait is edge-triggered: a drain need not read.
    edge: bool,
}

impl WakeFd {
    /// For a loop that waits level-triggered (`poll()`): its drain reads.
    pub(crate) fn new() -> io::Result<WakeFd> {
        WakeFd::with_trigger(false)
    }

    /// For a loop that watches the eventfd with `EPOLLET`: its drain does
    /// not read.
    pub(crate) fn new_edge() -> io::Result<WakeFd> {
        WakeFd::with_trigger(true)
    }

    fn with_trigger(edge: bool) -> io::Result<WakeFd> {
        // SAFETY: eventfd takes no pointers; it returns a new fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(WakeFd {
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            sleeping: AtomicU32::new(0),
            nested: AtomicBool::new(false),
            sent: AtomicBool::new(false),
            edge,
        })
    }

    /// A loop is about to look at the registrations and sleep.
    pub(crate) fn arm(&self) {
        // SeqCst, and the fence: pairs with the fence in `notify`. Either
        // the loop's look at the registrations (after this) sees a change
        // made before the notifier's fence, or the notifier sees this count
        // and writes the eventfd.
        self.sleeping.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// The loop is awake again.
    pub(crate) fn disarm(&self) {
        // Relaxed: the count only gates wake-ups; a late decrement costs at
        // most one spurious eventfd write.
        self.sleeping.fetch_sub(1, Ordering::Relaxed);
    }

    /// From now on every change wakes the loop: a host loop drives it and
    /// sleeps between turns (set when the nesting fd or the next timeout
    /// is asked for).
    pub(crate) fn set_nested(&self) {
        // SeqCst: ordered with `notify`'s fence, so a change made after the
        // host asked for the fd is seen to need a wake-up.
        self.nested.store(true, Ordering::SeqCst);
    }

    /// Registrations changed; wake a loop that could otherwise sleep
    /// without looking at them again.
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence above (see `arm`, `set_nested`).
        if self.sleeping.load(Ordering::Relaxed) > 0 || self.nested.load(Ordering::Relaxed) {
            self.write();
        }
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn borrow(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// Wakes the loop now or, if it is not waiting, makes its next wait
    /// return at once.
    pub(crate) fn write(&self) {
        // The fence pairs with the one in `drain`: either the loop's look
        // after its drain sees what the waking thread did before this call
        // (whatever ordering that thread used), or this swap sees the
        // drain's clear and writes. (SeqCst accesses alone would not do it
        // for a caller's relaxed or release store; loom, which models
        // SeqCst accesses as AcqRel, found that.)
        fence(Ordering::SeqCst);
        // AcqRel: one writer per drain; the fences above and in `drain`
        // carry the ordering with the loop.
        if !self.sent.swap(true, Ordering::AcqRel) {
            let one = 1u64;
            // SAFETY: writes the 8 bytes of `one`. EAGAIN (counter full)
            // means the loop is woken already.
            unsafe { libc::write(self.raw(), (&one as *const u64).cast(), 8) };
        }
    }

    /// Consumes a wake-up: called by a loop whose wait found the eventfd
    /// readable, before it dispatches anything of that batch.
    pub(crate) fn drain(&self) {
        if !self.edge {
            let mut buf = 0u64;
            // SAFETY: reads 8 bytes into `buf`, which is 8 bytes long. A
            // failure (EAGAIN: drained already) leaves nothing to do.
            unsafe { libc::read(self.raw(), (&mut buf as *mut u64).cast(), 8) };
        }
        // After the read (or the edge-triggered wait that consumed the
        // edge), so a write that skipped its system call (finding
        // `sent` set) is covered by this drain's loop turn, and one that
        // comes later writes afresh. Release, and the fence: see `write`.
        self.sent.store(false, Ordering::Release);
        fence(Ordering::SeqCst);
    }
}
