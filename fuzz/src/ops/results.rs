//! Results in a comparable form: the engine's `Error` has no `PartialEq`,
//! and the injected failures must be told apart from the backend's own.

use crate::common::{HOOK_PANIC, INJECTED};
use evnexus::Error;
use std::os::fd::RawFd;

pub(crate) type Res<T> = Result<T, ErrRepr>;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ErrRepr {
    BadFd(RawFd),
    Gone,
    Full(usize),
    /// `Error::Backend` from the injected hook error.
    Injected,
    /// `Error::Backend` from the injected hook panic.
    HookPanicked,
    Backend(String),
    Reentrant,
    Panicked(u64, String),
    Other(String),
}

pub(crate) fn repr<T>(r: evnexus::Result<T>) -> Res<T> {
    r.map_err(|e| match e {
        Error::BadFd(fd) => ErrRepr::BadFd(fd),
        Error::Gone => ErrRepr::Gone,
        Error::Full { limit } => ErrRepr::Full(limit),
        Error::Backend(e) => {
            let message = e.to_string();
            if message == INJECTED {
                ErrRepr::Injected
            } else if message.contains(HOOK_PANIC) {
                ErrRepr::HookPanicked
            } else {
                ErrRepr::Backend(message)
            }
        }
        Error::Reentrant => ErrRepr::Reentrant,
        Error::CallbackPanicked(p) => ErrRepr::Panicked(p.token.as_u64(), p.message),
        other => ErrRepr::Other(other.to_string()),
    })
}

/// An fd that is not `fd`.
pub(crate) fn other_fd(fd: RawFd) -> RawFd {
    fd.wrapping_add(1)
}
