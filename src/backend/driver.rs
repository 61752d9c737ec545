//! [`Driver`]: the state of a built-in loop, owned by whichever thread is
//! running the loop (`run_once`) at the moment.
//!
//! The loop's state (its ring or wait buffer, its timer queue) is touched by
//! one thread at a time without a lock: `enter` makes the calling thread the
//! driver with one CAS; only the driver may borrow the state, and only for
//! short stretches that never call user code (a callback that registers a
//! timer, running on the driving thread, borrows it afresh). Other threads
//! leave their changes in a lock-free command queue and wake the loop.

use crate::base::sync::{thread_ordinal, AtomicBool, AtomicU64, Ordering, UnsafeCell};

pub(crate) struct Driver<S> {
    /// `thread_ordinal() + 1` of the driving thread, 0 when none.
    owner: AtomicU64,
    /// The state is borrowed right now (only ever set by the driver).
    borrowed: AtomicBool,
    state: UnsafeCell<S>,
}

// SAFETY: the state is only reached through `with`, which hands it to the
// one thread that owns the driver, never twice at once; `S: Send` is what
// moving it between successive driving threads needs.
unsafe impl<S: Send> Sync for Driver<S> {}

fn me() -> u64 {
    thread_ordinal() as u64 + 1
}

/// Ownership of a driver; dropping it lets another thread drive.
pub(crate) struct DriverGuard<'a, S>(&'a Driver<S>);

impl<S> Drop for DriverGuard<'_, S> {
    fn drop(&mut self) {
        // Release: publishes our writes to the state to the next driver,
        // which Acquires the owner word in `enter`.
        self.0.owner.store(0, Ordering::Release);
    }
}

impl<S> Driver<S> {
    pub(crate) fn new(state: S) -> Driver<S> {
        Driver {
            owner: AtomicU64::new(0),
            borrowed: AtomicBool::new(false),
            state: UnsafeCell::new(state),
        }
    }

    /// Makes the calling thread the driver; `None` if another thread is (or
    /// this thread already is: a callback may not run the loop it runs in).
    pub(crate) fn enter(&self) -> Option<DriverGuard<'_, S>> {
        // Acquire: see the Release in `DriverGuard::drop`.
        self.owner
            .compare_exchange(0, me(), Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| DriverGuard(self))
    }

    /// Runs `f` on the state if the calling thread drives the loop and the
    /// state is not borrowed already; `None` otherwise (the caller then
    /// goes through the command queue). `f` must not call user code.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> Option<R> {
        // Relaxed: only this thread can have stored `me()` there, and it
        // sees its own store; any other value means "not ours".
        if self.owner.load(Ordering::Relaxed) != me() {
            return None;
        }
        // Relaxed load and store, not a swap: the flag is only ever touched
        // by the owning thread, so nothing can come between the two, and a
        // swap is a locked instruction (this runs several times a turn).
        if self.borrowed.load(Ordering::Relaxed) {
            return None;
        }
        self.borrowed.store(true, Ordering::Relaxed);
        let r = self.state.with_mut(|state| {
            // SAFETY: we own the driver (checked above), so no other thread
            // touches the state, and `borrowed` rules out a second borrow on
            // this thread; the borrow ends when `f` returns.
            f(unsafe { &mut *state })
        });
        self.borrowed.store(false, Ordering::Relaxed);
        Some(r)
    }
}
