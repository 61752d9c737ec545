//! Backends: what waits for the OS on the engine's behalf.
//!
//! The engine knows a backend only through [`Backend`]: it tells it when a
//! registration is made, modified or ended, and keeps whatever the backend
//! wants per registration in the slot (under the slot's `CTRL` bit). Events
//! come back through the engine's one dispatch path (`occurred_*`), which is
//! the same for every backend.

use crate::engine::Occurred;
use crate::error::{Error, Result};
use crate::fd::Interest;
use crate::slot::BackendReg;
use crate::token::Token;
use std::os::fd::RawFd;
use std::time::Instant;

pub(crate) mod builtin;
pub(crate) mod driver;
pub(crate) mod epoll;
pub(crate) mod fd_table;
pub(crate) mod orphan;
pub(crate) mod poll;
pub(crate) mod timers;
pub(crate) mod uring;
pub(crate) mod wake;

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
    /// Timer `token` is live with `deadline` (an offset on the engine's
    /// clock) and nobody holds its slot's `CTRL` bit: called after every
    /// registration and modification of a timer, once `CTRL` is released,
    /// so that a loop which passed the timer over while `CTRL` was held
    /// learns of it again.
    fn timer_armed(&self, _token: Token, _deadline: u64) {}
    /// The set of registrations changed (one was published, modified or
    /// ended) and the change is visible in its slot.
    fn changed(&self) {}
    /// The poll-loop backend, for `beforepoll`/`afterpoll`.
    fn as_poll(&self) -> Option<&poll::PollBackend> {
        None
    }
    /// The built-in loop, for `run_once`/`run`.
    fn as_builtin(&self) -> Option<&dyn builtin::BuiltinLoop> {
        None
    }
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
