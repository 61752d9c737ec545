//! The panic boundary and the error convention of every exported function.
//!
//! Every `extern "C"` function of this crate runs its body inside
//! [`ffi_boundary!`]: a Rust panic never unwinds into C (it would abort the
//! process, or worse). A contained panic becomes the function's panic value
//! ([`PanicValue`]): `-ENOTRECOVERABLE` for functions that return an error
//! code, nothing for `void` functions, a fixed message for
//! `evnexus_strerror`. A test in `lib.rs` checks that no exported function
//! skips the boundary.
//!
//! Errors are negative `errno` values, as in sd-event: [`errno_of`] maps the
//! engine's [`Error`] to one.

use evnexus::{Error, Unsupported};
use std::ffi::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What an exported function returns when a panic was contained in it.
pub(crate) trait PanicValue {
    fn on_panic() -> Self;
}

impl PanicValue for c_int {
    fn on_panic() -> c_int {
        -libc::ENOTRECOVERABLE
    }
}

impl PanicValue for i64 {
    fn on_panic() -> i64 {
        -i64::from(libc::ENOTRECOVERABLE)
    }
}

impl PanicValue for () {
    fn on_panic() {}
}

impl PanicValue for *const c_char {
    fn on_panic() -> *const c_char {
        c"evnexus: a panic was contained at the C boundary".as_ptr()
    }
}

/// Runs `body`, turning a panic into `R`'s panic value. The body is
/// asserted unwind-safe: after a contained panic the engine's own state is
/// consistent (the engine contains panics of its callbacks and hooks
/// itself), and what the failed call was building is dropped. Inlined, so
/// that each exported function is one frame (callgrind: 16 instructions
/// fewer per `evnexus_occurred_fd`).
#[inline(always)]
pub(crate) fn contain<R: PanicValue>(body: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| R::on_panic())
}

/// The body of every exported function: `ffi_boundary! { ... }`.
macro_rules! ffi_boundary {
    ($($body:tt)*) => {
        $crate::boundary::contain(move || { $($body)* })
    };
}
pub(crate) use ffi_boundary;

/// The negative errno for an engine error.
pub(crate) fn errno_of(e: &Error) -> c_int {
    -match e {
        Error::BadFd(_) | Error::ClosedWhileRegistered(_) => libc::EBADF,
        Error::Gone => libc::ENOENT,
        Error::Full { .. } => libc::ENOSPC,
        Error::Backend(io) => io_errno(io),
        Error::Unsupported(Unsupported::LoopBusy) => libc::EBUSY,
        Error::Unsupported(Unsupported::ForeignPollSet) => libc::EINVAL,
        Error::Unsupported(_) => libc::EOPNOTSUPP,
        Error::Reentrant => libc::EDEADLK,
        Error::CallbackPanicked(_) => libc::ENOTRECOVERABLE,
        _ => libc::EIO,
    }
}

/// The positive errno of an I/O error: the OS's (or the hook's) own code
/// when there is one, else the nearest for its kind.
fn io_errno(e: &std::io::Error) -> c_int {
    use std::io::ErrorKind as K;
    if let Some(code) = e.raw_os_error() {
        return code;
    }
    match e.kind() {
        K::Unsupported => libc::EOPNOTSUPP,
        K::InvalidInput | K::InvalidData => libc::EINVAL,
        K::NotFound => libc::ENOENT,
        K::PermissionDenied => libc::EPERM,
        K::OutOfMemory => libc::ENOMEM,
        K::WouldBlock => libc::EAGAIN,
        _ => libc::EIO,
    }
}

/// `Ok(v)` as `v`, an error as its negative errno.
pub(crate) fn code(r: evnexus::Result<c_int>) -> c_int {
    r.unwrap_or_else(|e| errno_of(&e))
}

/// `-EINVAL`, the answer to a NULL pointer or an argument out of range.
pub(crate) const EINVAL: c_int = -libc::EINVAL;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_the_boundary_becomes_enotrecoverable() {
        let r: c_int = ffi_boundary! {
            if std::hint::black_box(true) {
                panic!("a bug behind the ABI");
            }
            0
        };
        assert_eq!(r, -libc::ENOTRECOVERABLE);
        let r: i64 = ffi_boundary! { panic!("in a 64-bit function") };
        assert_eq!(r, -i64::from(libc::ENOTRECOVERABLE));
        let p: *const c_char = ffi_boundary! { panic!("in strerror") };
        assert!(!p.is_null());
    }

    #[test]
    fn no_panic_passes_the_value_through() {
        let r: c_int = ffi_boundary! { 7 };
        assert_eq!(r, 7);
    }

    #[test]
    fn engine_errors_map_to_their_errno() {
        assert_eq!(errno_of(&Error::BadFd(-1)), -libc::EBADF);
        assert_eq!(errno_of(&Error::Gone), -libc::ENOENT);
        assert_eq!(errno_of(&Error::Full { limit: 1 }), -libc::ENOSPC);
        assert_eq!(errno_of(&Error::Reentrant), -libc::EDEADLK);
        assert_eq!(
            errno_of(&Error::Backend(std::io::Error::from_raw_os_error(
                libc::EPERM
            ))),
            -libc::EPERM
        );
        assert_eq!(
            errno_of(&Error::Unsupported(Unsupported::LoopBusy)),
            -libc::EBUSY
        );
        assert_eq!(
            errno_of(&Error::Unsupported(Unsupported::NoBuiltinLoop)),
            -libc::EOPNOTSUPP
        );
    }
}
