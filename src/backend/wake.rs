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
//! A change that matters only from some instant on (a timer handed to the
//! loop, due at its deadline) uses [`WakeFd::notify_due`]: a loop that
//! armed with [`WakeFd::arm_until`] wakes on its own by that instant (its
//! earliest timer), and looks at every change when it does, so a change due
//! no earlier than that needs no system call and no wake-up. (tokio's timer
//! driver skips its unpark the same way for a timer later than the one it
//! sleeps for.) So that such changes cannot pile up unseen while the loop
//! sleeps, the notifier still writes once the caller says its backlog is
//! full. The bound is stored before the fence of `arm_until`, and read
//! after the fence of `notify_due`: either the loop's look after its fence
//! sees the change, or the notifier sees that sleep's count and bound (or a
//! later sleep's, and then that sleep is over and the next look sees the
//! change). The loom model `notify_due_never_leaves_a_loop_asleep_past_a_change`
//! checks this, and fails with the bound stored after the fence.
//!
//! A `write` that finds `sent` already set skips the system call: its
//! wake-up is the one already pending, or the one being drained, and the
//! loop looks at everything after the drain. That is why the drain must
//! come before the batch's callbacks: a wake-up that a callback of the
//! batch would have needed to see could otherwise land between that
//! callback and a later drain and be swallowed by it.

use crate::base::clock::Clock;
use crate::base::sync::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
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
    /// The latest clock offset by which the sleeping loop wakes on its
    /// own ([`Clock::NEVER`]: it may sleep until woken).
    until: AtomicU64,
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
            until: AtomicU64::new(Clock::NEVER),
        })
    }

    /// A loop is about to look at the registrations and sleep, for as long
    /// as it likes.
    pub(crate) fn arm(&self) {
        self.arm_until(Clock::NEVER);
    }

    /// A loop is about to look at the registrations and sleep, waking on
    /// its own by clock offset `until` at the latest (its earliest timer;
    /// waking earlier is fine).
    pub(crate) fn arm_until(&self, until: u64) {
        // Relaxed: ordered by the fence below (see `notify_due`).
        self.until.store(until, Ordering::Relaxed);
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
        // A change due at once, for which nothing can wait.
        self.notify_due(0, || true);
    }

    /// A change that the loop must see by clock offset `due` (a timer
    /// handed over, due at its deadline): like [`WakeFd::notify`], but no
    /// wake-up for a loop that wakes on its own by then, unless
    /// `backlog_full` says too many such changes wait unseen.
    pub(crate) fn notify_due(&self, due: u64, backlog_full: impl FnOnce() -> bool) {
        fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence above (see `arm_until`,
        // `set_nested`).
        if self.nested.load(Ordering::Relaxed) {
            self.write();
            return;
        }
        // Relaxed: ordered by the fence above; the bound read is that of
        // the sleep whose count was read, or a later one (module docs).
        if self.sleeping.load(Ordering::Relaxed) > 0
            && (due < self.until.load(Ordering::Relaxed) || backlog_full())
        {
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

/// loom model of `arm_until` against `notify_due`. Run with the loom cfg:
/// `cargo test --release --lib` (see `tests/loom.rs` for the flags).
#[cfg(all(test, evnexus_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// A loop turns twice: the first sleep ends by offset 100 (a timer),
    /// the second has no bound. Another thread hands over a change due at
    /// 200. For every sleep the loop entered without seeing the change, the
    /// change woke it (the eventfd was written) or is due no earlier than
    /// that sleep's bound. (Bug put back: storing the bound after the
    /// fence of `arm_until` lets the notifier read the first sleep's bound
    /// for the second, skip its write, and leave the loop asleep with the
    /// change unseen; loom finds it.)
    #[test]
    fn notify_due_never_leaves_a_loop_asleep_past_a_change() {
        crate::base::sync::loom_check(|| {
            let wake = Arc::new(WakeFd::new_edge().unwrap());
            let change = Arc::new(AtomicBool::new(false));
            let notifier = {
                let (wake, change) = (wake.clone(), change.clone());
                loom::thread::spawn(move || {
                    // Release: as the command queue's push.
                    change.store(true, Ordering::Release);
                    wake.notify_due(200, || false);
                })
            };
            // The first sleep ends on its bound (time passes); the second,
            // unbounded, only on a wake-up: it lasts past the notifier.
            let mut slept_unseen = Vec::new();
            for until in [100, Clock::NEVER] {
                wake.arm_until(until);
                // Acquire: as the command queue's pop.
                if change.load(Ordering::Acquire) {
                    wake.disarm();
                    break;
                }
                slept_unseen.push(until);
                if until != Clock::NEVER {
                    wake.disarm();
                }
            }
            notifier.join().unwrap();
            let written = wake.sent.load(Ordering::SeqCst);
            for until in slept_unseen {
                assert!(
                    written || 200 >= until,
                    "the loop slept until {until} without the change due at 200, unwoken"
                );
            }
        });
    }
}
