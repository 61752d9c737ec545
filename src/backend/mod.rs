//! Backends: what waits for the OS on the engine's behalf.
//!
//! The engine knows a backend only through [`Backend`]: it tells it when a
//! registration is made, modified or ended, and keeps whatever the backend
//! wants per registration in the slot (under the slot's `CTRL` bit). Events
//! come back through the engine's one dispatch path (`occurred_*`), which is
//! the same for every backend.

use crate::fd::Interest;
use crate::slot::BackendReg;
use crate::token::Token;
use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

pub(crate) mod poll;

/// Which backend an engine runs on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum BackendKind {
    /// The application's own loop, through [`OsEventHooks`](crate::OsEventHooks).
    Hooks,
    /// The application's plain `poll()` loop, through
    /// [`Engine::beforepoll`](crate::Engine::beforepoll) and
    /// [`Engine::afterpoll`](crate::Engine::afterpoll).
    Poll,
}

/// The engine's view of a backend. Every method may be called from any
/// thread, concurrently for different registrations, never twice at once
/// for the same registration (the slot's `CTRL` bit sees to that).
pub(crate) trait Backend: Send + Sync + 'static {
    fn kind(&self) -> BackendKind;
    fn fd_register(&self, fd: RawFd, interest: Interest, token: Token) -> io::Result<BackendReg>;
    fn fd_modify(&self, fd: RawFd, reg: &mut BackendReg, interest: Interest) -> io::Result<()>;
    fn fd_deregister(&self, fd: RawFd, reg: BackendReg);
    fn timeout_register(&self, deadline: Instant, token: Token) -> io::Result<BackendReg>;
    fn timeout_modify(&self, reg: &mut BackendReg, deadline: Instant) -> io::Result<()>;
    fn timeout_deregister(&self, reg: BackendReg);
    /// The set of registrations changed (one was published, modified or
    /// ended) and the change is visible in its slot.
    fn changed(&self) {}
    /// The poll-loop backend, for `beforepoll`/`afterpoll`.
    fn as_poll(&self) -> Option<&poll::PollBackend> {
        None
    }
}
