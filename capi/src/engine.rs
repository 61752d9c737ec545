//! Creating and freeing an engine, and driving its built-in loop.

use crate::boundary::{code, errno_of, ffi_boundary, EINVAL};
use crate::clock::{self, MonoClock};
use crate::hooks::{evnexus_hooks, CHooks};
use crate::{borrow, Evnexus};
use evnexus::{BackendKind, Engine};
use std::ffi::c_int;
use std::os::fd::{AsFd, AsRawFd};

/// The built-in loop on io_uring, or on epoll where the kernel refuses
/// io_uring.
pub const EVNEXUS_BACKEND_AUTO: c_int = 0;
/// The built-in loop on io_uring (fails rather than fall back).
pub const EVNEXUS_BACKEND_URING: c_int = 1;
/// The built-in loop on epoll.
pub const EVNEXUS_BACKEND_EPOLL: c_int = 2;
/// The application's plain `poll()` loop (`evnexus_beforepoll` /
/// `evnexus_afterpoll`).
pub const EVNEXUS_BACKEND_POLL: c_int = 3;
/// The application's own loop, through `evnexus_hooks`.
pub const EVNEXUS_BACKEND_HOOKS: c_int = 4;

fn kind_code(kind: BackendKind) -> c_int {
    match kind {
        BackendKind::Uring => EVNEXUS_BACKEND_URING,
        BackendKind::Epoll => EVNEXUS_BACKEND_EPOLL,
        BackendKind::Poll => EVNEXUS_BACKEND_POLL,
        BackendKind::Hooks => EVNEXUS_BACKEND_HOOKS,
        _ => -libc::EOPNOTSUPP,
    }
}

/// Boxes `engine` and hands it to C through `out`.
///
/// # Safety
/// `out` is non-NULL and writable.
unsafe fn give(engine: Engine, clock: MonoClock, out: *mut *mut Evnexus) -> c_int {
    let ev = Box::into_raw(Box::new(Evnexus::new(engine, clock)));
    // SAFETY: the caller's promise.
    unsafe { out.write(ev) };
    0
}

/// Creates an engine on `backend` (`EVNEXUS_BACKEND_AUTO`, `_URING`,
/// `_EPOLL` or `_POLL`) and stores it in `*out`.
///
/// Ownership: the caller owns the engine and frees it with `evnexus_free`.
/// Threading: any thread. Errors: `-EINVAL` for a NULL `out` or another
/// backend value (hooks engines come from `evnexus_new_with_hooks`); the
/// system's error when an epoll, eventfd or io_uring instance cannot be
/// created (`EVNEXUS_BACKEND_URING` fails rather than fall back to epoll).
/// `*out` is written only on success.
#[no_mangle]
pub extern "C" fn evnexus_new(out: *mut *mut Evnexus, backend: c_int) -> c_int {
    ffi_boundary! {
        if out.is_null() {
            return EINVAL;
        }
        let builder = Engine::builder();
        let builder = match backend {
            EVNEXUS_BACKEND_AUTO => builder,
            EVNEXUS_BACKEND_URING => builder.backend(BackendKind::Uring),
            EVNEXUS_BACKEND_EPOLL => builder.backend(BackendKind::Epoll),
            EVNEXUS_BACKEND_POLL => builder.backend(BackendKind::Poll),
            _ => return EINVAL,
        };
        match builder.build() {
            // SAFETY: `out` was checked non-NULL; writable by contract.
            Ok(engine) => unsafe { give(engine, MonoClock::new(), out) },
            Err(e) => errno_of(&e),
        }
    }
}

/// Creates an engine whose registrations the application's own loop
/// carries through `hooks` (see `evnexus_hooks`), and stores it in `*out`.
///
/// Ownership: `*hooks` is copied; `hooks->user` must stay valid until
/// `evnexus_free` returns. The caller owns the engine. Threading: any
/// thread. Errors: `-EINVAL` for a NULL pointer, `hooks->size` smaller than
/// `sizeof(evnexus_hooks)`, or a NULL hook. `*out` is written only on
/// success.
#[no_mangle]
pub extern "C" fn evnexus_new_with_hooks(
    out: *mut *mut Evnexus,
    hooks: *const evnexus_hooks,
) -> c_int {
    ffi_boundary! {
        if out.is_null() {
            return EINVAL;
        }
        let clock = MonoClock::new();
        // SAFETY: `hooks` is NULL or points at a struct whose size field is
        // readable and says how much more is (the header's contract).
        let Some(hooks) = (unsafe { CHooks::new(hooks, clock) }) else {
            return EINVAL;
        };
        // SAFETY: `out` was checked non-NULL; writable by contract.
        unsafe { give(Engine::with_hooks(hooks), clock, out) }
    }
}

/// Frees an engine: ends every registration still live (each one's hook is
/// told, each one's free callback runs, on this thread, before this
/// returns) and releases everything the engine holds. NULL is a no-op.
///
/// Exclusive: this must be the last call on `ev`, with no other call on it
/// in progress on any thread and none of its callbacks running; it must
/// not be called from one of its own callbacks or hooks. Free callbacks
/// that run here may still call into `ev` (deregister, report), but not
/// register.
///
/// Ownership: takes the engine back; `ev` is invalid afterwards. Threading:
/// exclusive, as above. Errors: none (a `void` function).
#[no_mangle]
pub extern "C" fn evnexus_free(ev: *mut Evnexus) {
    ffi_boundary! {
        if ev.is_null() {
            return;
        }
        // First end the registrations while the engine is still whole, so
        // that the free callbacks this runs may call into it.
        // SAFETY: `ev` came from `evnexus_new*` (the header's contract).
        if let Some(e) = unsafe { borrow(ev) } {
            e.handles.clear();
        }
        // SAFETY: `ev` came from `Box::into_raw` in `give`, and the caller
        // makes this the last use of it.
        drop(unsafe { Box::from_raw(ev) });
    }
}

/// The backend the engine runs on: `EVNEXUS_BACKEND_URING`, `_EPOLL`,
/// `_POLL` or `_HOOKS` (`_AUTO` resolves to one of the first two).
/// Threading: any thread. Errors: `-EINVAL` for NULL. Ownership: nothing changes hands.
#[no_mangle]
pub extern "C" fn evnexus_backend(ev: *mut Evnexus) -> c_int {
    ffi_boundary! {
        // SAFETY: the header's contract for `ev`.
        match unsafe { borrow(ev) } {
            Some(e) => kind_code(e.engine.backend()),
            None => EINVAL,
        }
    }
}

/// Built-in loop: waits until something is ready, a timer is due, the
/// engine is woken (`evnexus_wake`) or `timeout_ns` nanoseconds pass (-1:
/// no limit; 0: do not wait), then dispatches everything ready and due.
/// Returns how many callbacks ran (saturating at `INT_MAX`).
///
/// Threading: one thread drives the loop at a time; registrations,
/// changes and reports from other threads take effect while it waits.
/// Errors: `-EINVAL` (NULL, or a negative timeout other than -1),
/// `-EOPNOTSUPP` on a hooks or poll engine, `-EBUSY` when another thread
/// (or a callback of this loop) is running it, the system's error when the
/// wait fails. Ownership: nothing changes hands.
#[no_mangle]
pub extern "C" fn evnexus_run_once(ev: *mut Evnexus, timeout_ns: i64) -> c_int {
    ffi_boundary! {
        // SAFETY: the header's contract for `ev`.
        let Some(e) = (unsafe { borrow(ev) }) else {
            return EINVAL;
        };
        let Ok(timeout) = clock::timeout(timeout_ns) else {
            return EINVAL;
        };
        code(e.engine.run_once(timeout).map(|n| c_int::try_from(n).unwrap_or(c_int::MAX)))
    }
}

/// Built-in loop: runs until `evnexus_stop`. Returns 0. Errors: the first
/// error of an iteration (as `evnexus_run_once`). Threading: as
/// `evnexus_run_once`. Ownership: nothing changes hands.
#[no_mangle]
pub extern "C" fn evnexus_run(ev: *mut Evnexus) -> c_int {
    ffi_boundary! {
        // SAFETY: the header's contract for `ev`.
        let Some(e) = (unsafe { borrow(ev) }) else {
            return EINVAL;
        };
        code(e.engine.run().map(|()| 0))
    }
}

/// Makes `evnexus_run` return after the batch it is dispatching. Threading:
/// any thread, callbacks included. Returns 0 (also on engines without a
/// built-in loop, where it does nothing). Errors: `-EINVAL` for NULL.
/// Ownership: nothing changes hands.
#[no_mangle]
pub extern "C" fn evnexus_stop(ev: *mut Evnexus) -> c_int {
    ffi_boundary! {
        // SAFETY: the header's contract for `ev`.
        let Some(e) = (unsafe { borrow(ev) }) else {
            return EINVAL;
        };
        e.engine.stop();
        0
    }
}

/// Interrupts the built-in loop's wait (a wait that has not begun returns
/// at once). Threading: any thread. Returns 0 (also on engines without a
/// built-in loop, where it does nothing). Errors: `-EINVAL` for NULL.
/// Ownership: nothing changes hands.
#[no_mangle]
pub extern "C" fn evnexus_wake(ev: *mut Evnexus) -> c_int {
    ffi_boundary! {
        // SAFETY: the header's contract for `ev`.
        let Some(e) = (unsafe { borrow(ev) }) else {
            return EINVAL;
        };
        e.engine.waker().wake();
        0
    }
}

/// Nesting: the fd a host loop (GLib, sd-event, libuv, a plain `poll()`)
/// watches for readability to drive this engine, as `sd_event_get_fd`.
///
/// The recipe: watch this fd for `POLLIN` and sleep at most
/// `evnexus_next_timeout_ns`; when the fd is readable or that time has
/// passed, call `evnexus_run_once(ev, 0)` (dispatches what is ready and due
/// without blocking), then ask `evnexus_next_timeout_ns` again.
///
/// Built-in loops: the loop's epoll set, readable whenever a non-blocking
/// `evnexus_run_once` has an fd event to dispatch or the engine was woken
/// (a registration or timer change from another thread wakes it); timers
/// are not reflected in it. Poll engines: the wake-up eventfd of
/// `evnexus_beforepoll`'s first entry.
///
/// Ownership: the engine owns the fd: do not close it, read it or change
/// its flags; it is valid until `evnexus_free`. Threading: any thread.
/// Errors: `-EINVAL` for NULL, `-EOPNOTSUPP` on a hooks engine (its
/// application's loop keeps the registrations; there is nothing to nest).
#[no_mangle]
pub extern "C" fn evnexus_get_fd(ev: *mut Evnexus) -> c_int {
    ffi_boundary! {
        // SAFETY: the header's contract for `ev`.
        let Some(e) = (unsafe { borrow(ev) }) else {
            return EINVAL;
        };
        if e.engine.backend() == BackendKind::Hooks {
            return -libc::EOPNOTSUPP;
        }
        e.engine.as_fd().as_raw_fd()
    }
}

/// Nesting: how long a host loop may sleep before this engine has a timer
/// due, in nanoseconds: 0 when one is due now, -1 when no timer is pending
/// (sleep on the fd alone). Never later than the true answer (a cancelled
/// timer can make it earlier: the host then wakes once for nothing).
/// Rounding it to a host's coarser unit, round up (a host that wakes early
/// finds nothing due and asks again). Called between two `run_once` calls,
/// it also takes in timers registered meanwhile on other threads.
///
/// Threading: any thread (the host loop's, normally). Errors (values below
/// -1): `-EINVAL` for NULL. On a hooks engine: -1 (its application's loop
/// keeps the timeouts). Ownership: nothing changes hands.
#[no_mangle]
pub extern "C" fn evnexus_next_timeout_ns(ev: *mut Evnexus) -> i64 {
    ffi_boundary! {
        // SAFETY: the header's contract for `ev`.
        let Some(e) = (unsafe { borrow(ev) }) else {
            return i64::from(EINVAL);
        };
        match e.engine.next_timeout() {
            None => -1,
            Some(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        }
    }
}
