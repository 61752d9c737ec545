//! The crate's error type.

use crate::token::Token;
use std::fmt;
use std::io;
use std::os::fd::RawFd;

/// Everything that can go wrong, each a value: evnexus never panics on bad
/// input.
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
    /// The operation does not apply to this engine's backend.
    Unsupported(&'static str),
    /// A registration was modified from inside one of the application's
    /// hooks. The hook could be serving that very registration, whose
    /// modify would then wait for itself; the engine refuses rather than
    /// deadlock.
    Reentrant,
    /// The callback of `token` panicked. The registration has been ended
    /// (for an fd watch: deregistered, its hook told; a timer had fired
    /// already), its slot torn down; the engine is otherwise unaffected.
    CallbackPanicked {
        /// The registration whose callback panicked.
        token: Token,
        /// The panic message, when it was a string.
        message: String,
    },
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
            Error::Unsupported(what) => write!(f, "unsupported by this engine's backend: {what}"),
            Error::Reentrant => {
                f.write_str("a hook called back into the engine for the registration it serves")
            }
            Error::CallbackPanicked { token, message } => {
                write!(f, "the callback of {token} panicked: {message}")
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
            Error::BadFd(_) => io::ErrorKind::InvalidInput,
            Error::Gone => io::ErrorKind::NotFound,
            Error::Full { .. } => io::ErrorKind::OutOfMemory,
            Error::Backend(inner) => inner.kind(),
            Error::Unsupported(_) => io::ErrorKind::Unsupported,
            Error::Reentrant => io::ErrorKind::WouldBlock,
            Error::CallbackPanicked { .. } => io::ErrorKind::Other,
        };
        match e {
            Error::Backend(inner) => inner,
            other => io::Error::new(kind, other),
        }
    }
}
