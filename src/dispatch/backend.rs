//! The dispatch core's two interfaces with the layers around it:
//! [`Backend`], which the core calls and the backends (layer 3) implement,
//! and [`Dispatch`], which the built-in loop calls to dispatch what it
//! found and the facade (layer 4) implements (it is the facade that knows
//! the callback's event types). Both are defined here, so that calls only
//! go down: a backend names this trait, never the engine.

use crate::base::error::{Error, Result};
use crate::base::readiness::Interest;
use crate::base::token::{StaleReason, Token};
use crate::nexus::slot::BackendReg;
use std::os::fd::RawFd;
use std::time::Instant;

/// What became of one reported event.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[must_use]
pub enum Occurred {
    /// The callback ran on this thread: once for this event, and again for
    /// every batch of events that arrived while it ran.
    Dispatched,
    /// The callback was running on another thread; this event was folded
    /// into a rerun there. Nothing is lost.
    Deferred,
    /// The fd re-check option found nothing ready: the callback did not run.
    Suppressed,
    /// Rejected: the token names no live registration of this kind (see
    /// [`StaleReason`]). Nothing was run, nothing was touched.
    Stale(StaleReason),
}

/// Which backend an engine runs on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum BackendKind {
    /// The built-in loop on io_uring: the default of [`Engine::new`](crate::Engine::new).
    Uring,
    /// The built-in loop on epoll: where the kernel refuses io_uring.
    Epoll,
    /// The application's own loop, through [`OsEventHooks`](crate::OsEventHooks).
    Hooks,
    /// The application's plain `poll()` loop, through
    /// [`Engine::beforepoll`](crate::Engine::beforepoll) and
    /// [`Engine::afterpoll`](crate::Engine::afterpoll).
    Poll,
}

/// What became of a registration's kernel entry when it was removed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Removal {
    /// Removed (or there was nothing of the kernel's to remove).
    Done,
    /// The registration's fd had been closed while it was registered: its
    /// kernel entry was gone already, belonged to a newer registration of
    /// the same fd number (and was left alone), or is held open by another
    /// descriptor of the file.
    FdClosed,
}

/// A backend's own counts, for [`Stats`](crate::Stats).
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct BackendCounters {
    pub(crate) ring_sq_full: u64,
    pub(crate) ring_cq_overflow: u64,
    pub(crate) orphans_removed: u64,
    pub(crate) orphans_left: u64,
}

/// The engine's view of a backend. Every method may be called from any
/// thread, concurrently for different registrations, never twice at once
/// for the same registration (the slot's `CTRL` bit sees to that).
pub(crate) trait Backend: Send + Sync + 'static {
    fn kind(&self) -> BackendKind;
    fn fd_register(&self, fd: RawFd, interest: Interest, token: Token) -> Result<BackendReg>;
    /// The slot already holds the new interest when this is called.
    fn fd_modify(
        &self,
        fd: RawFd,
        token: Token,
        reg: &mut BackendReg,
        interest: Interest,
    ) -> Result<()>;
    fn fd_deregister(&self, fd: RawFd, token: Token, reg: BackendReg) -> Removal;
    fn timeout_register(&self, deadline: Instant, token: Token) -> Result<BackendReg>;
    /// The slot already holds the new deadline when this is called.
    fn timeout_modify(&self, token: Token, reg: &mut BackendReg, deadline: Instant) -> Result<()>;
    fn timeout_deregister(&self, token: Token, reg: BackendReg);
    /// Whether `timeout_register` must see the timer registered (an
    /// application hook may report it at once). A loop that keeps nothing
    /// per timer says no: its value is made before the timer is published,
    /// which then needs no `CTRL` (one CAS less per timer). Asked once,
    /// when the core is made: the answer must not change.
    fn timer_register_needs_ctrl(&self) -> bool {
        true
    }
    /// Timer `token` is live with `deadline` (an offset on the engine's
    /// clock) and nobody holds its slot's `CTRL` bit: called after every
    /// registration and modification of a timer, once `CTRL` is released,
    /// so that a loop which passed the timer over while `CTRL` was held
    /// learns of it again.
    fn timer_armed(&self, _token: Token, _deadline: u64) {}
    /// The set of registrations changed (one was published, modified or
    /// ended) and the change is visible in its slot.
    fn changed(&self) {}
    /// The backend's own counts.
    fn counters(&self) -> BackendCounters {
        BackendCounters::default()
    }
}

/// What a loop's batch did: callbacks run, and the first error, returned
/// after the whole batch was dispatched.
#[derive(Default)]
pub(crate) struct Tally {
    ran: usize,
    first_error: Option<Error>,
}

impl Tally {
    pub(crate) fn note(&mut self, r: Result<Occurred>) {
        match r {
            Ok(Occurred::Dispatched) => self.ran += 1,
            Ok(_) => {}
            Err(e) => {
                self.ran += 1;
                self.error(e);
            }
        }
    }
    pub(crate) fn error(&mut self, e: Error) {
        self.first_error.get_or_insert(e);
    }
    pub(crate) fn finish(self) -> Result<usize> {
        match self.first_error {
            Some(e) => Err(e),
            None => Ok(self.ran),
        }
    }
}

/// What the built-in loop needs of the engine: dispatching what its wait
/// found. Implemented by the facade, which builds the callbacks' events.
pub(crate) trait Dispatch {
    /// Dispatches readiness that the loop observed for `token` (its fd is
    /// the registered one: no fd check). Sets `kept` (the caller's `false`
    /// otherwise untouched) when the watch keeps its readiness
    /// ([`Interest::KEEP_READY`], not cleared by the callback): dispatch it
    /// again next turn. An out-parameter rather than a returned pair: see
    /// `Core::begin_fd_dispatch`.
    fn dispatch_ready(&self, token: Token, revents: u16, kept: &mut bool) -> Result<Occurred>;
    /// Dispatches a watch again whose readiness it kept; `None` (nothing
    /// counted) when it has ended meanwhile. Sets `kept` as above.
    fn redispatch(&self, token: Token, revents: u16, kept: &mut bool) -> Option<Result<Occurred>>;
    /// Fires each of timers `tokens` that is due at `now` (an offset on
    /// the engine's clock), in order, noting the outcomes in `tally`; one
    /// not due, being changed, or gone is skipped (the loop drops its
    /// queue entry).
    fn fire_due(&self, tokens: &[Token], now: u64, tally: &mut Tally);
    /// The deadline of pending timer `token`, for compacting the queue.
    fn timer_deadline(&self, token: Token) -> Option<u64>;
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_report_result_fits_in_two_registers() {
        assert!(std::mem::size_of::<crate::base::error::Result<super::Occurred>>() <= 16);
    }
}
