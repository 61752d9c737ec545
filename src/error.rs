//! The crate's error type.

use crate::token::Token;
use std::fmt;
use std::io;
use std::os::fd::RawFd;

/// Everything that can go wrong, each a value: evnexus never panics on bad
/// input. Two words wide, so that `Result<Occurred>`, the result of every
/// report, comes back in registers.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The fd is negative or not open.
    BadFd(RawFd),
    /// The registration has ended (deregistered, cancelled, fired, or ended
    /// by a panic in its callback).
    Gone,
    /// The engine holds as many registrations as it may.
    Full {
        /// The engine's limit.
        limit: usize,
    },
    /// The backend refused: an application hook returned this error (or
    /// panicked), or a system call failed. The registration or change was
    /// not made. One corner: an application that reports a token from
    /// inside the register hook that then fails may have had that report
    /// dispatched (a timer then has fired) before the failure ended the
    /// registration.
    Backend(io::Error),
    /// The operation does not apply to this engine (see [`Unsupported`]).
    Unsupported(Unsupported),
    /// A registration was modified from inside one of the application's
    /// hooks. The hook could be serving that very registration, whose
    /// modify would then wait for itself; the engine refuses rather than
    /// deadlock.
    Reentrant,
    /// A watch's fd was closed while the watch was still registered. From
    /// [`Engine::deregister`](crate::Engine::deregister): the registration
    /// has ended all the same, but its kernel entry could not be removed
    /// (it went with the file, or belongs to a newer watch of the same fd
    /// number and was left alone, or another descriptor of the file keeps
    /// it). The fd is the watch's.
    ClosedWhileRegistered(RawFd),
    /// The callback of `token` panicked. The registration has been ended
    /// (for an fd watch: deregistered, its hook told; a timer had fired
    /// already), its slot torn down; the engine is otherwise unaffected.
    CallbackPanicked(Box<CallbackPanic>),
}

/// The panic of a callback, from [`Error::CallbackPanicked`].
#[derive(Debug)]
pub struct CallbackPanic {
    /// The registration whose callback panicked.
    pub token: Token,
    /// The panic message, when it was a string.
    pub message: String,
}

/// What an [`Error::Unsupported`] operation needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unsupported {
    /// `Builder::backend(BackendKind::Hooks)` without `Builder::hooks`.
    HooksMissing,
    /// `beforepoll`/`afterpoll` need the poll-loop backend.
    NotPollLoop,
    /// `afterpoll` with a set that this engine's `beforepoll` did not fill.
    ForeignPollSet,
    /// `run_once`/`run` need a built-in loop (io_uring or epoll).
    NoBuiltinLoop,
    /// Edge-triggered watches need a built-in loop.
    EdgeNeedsBuiltinLoop,
    /// Another thread (or an enclosing callback) is running the loop.
    LoopBusy,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unsupported::HooksMissing => "the hooks backend needs Builder::hooks",
            Unsupported::NotPollLoop => "beforepoll/afterpoll need the poll-loop backend",
            Unsupported::ForeignPollSet => {
                "afterpoll needs a set filled by this engine's beforepoll"
            }
            Unsupported::NoBuiltinLoop => "run_once/run need a built-in loop (io_uring or epoll)",
            Unsupported::EdgeNeedsBuiltinLoop => {
                "edge-triggered watches need a built-in loop (io_uring or epoll)"
            }
            Unsupported::LoopBusy => {
                "another thread (or an enclosing callback) is running this engine's loop"
            }
        })
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadFd(fd) => write!(f, "fd {fd} is not an open file descriptor"),
            Error::Gone => f.write_str("the registration has ended"),
            Error::Full { limit } => write!(f, "the engine already holds {limit} registrations"),
            Error::Backend(e) => write!(f, "the backend refused: {e}"),
            Error::Unsupported(what) => write!(f, "unsupported: {what}"),
            Error::Reentrant => {
                f.write_str("a hook called back into the engine for the registration it serves")
            }
            Error::ClosedWhileRegistered(fd) => write!(
                f,
                "fd {fd} was closed while still registered: its kernel entry could not be removed"
            ),
            Error::CallbackPanicked(p) => {
                write!(f, "the callback of {} panicked: {}", p.token, p.message)
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Backend(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Backend(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::BadFd(_) | Error::ClosedWhileRegistered(_) => io::ErrorKind::InvalidInput,
            Error::Gone => io::ErrorKind::NotFound,
            Error::Full { .. } => io::ErrorKind::OutOfMemory,
            Error::Backend(inner) => inner.kind(),
            Error::Unsupported(_) => io::ErrorKind::Unsupported,
            Error::Reentrant => io::ErrorKind::WouldBlock,
            Error::CallbackPanicked(_) => io::ErrorKind::Other,
        };
        match e {
            Error::Backend(inner) => inner,
            other => io::Error::new(kind, other),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_report_result_fits_in_two_registers() {
        assert!(std::mem::size_of::<crate::Result<crate::Occurred>>() <= 16);
    }
}
