//! Registrations from C: fd watches, timers, child exits; their change and
//! their end; and the free callback that runs once each is over.
//!
//! A registration's C callback, its `opaque` and its free callback travel
//! inside the Rust closure the engine keeps. The free callback is the drop
//! of a [`FreeGuard`] captured by that closure: the engine drops a closure
//! only when the registration is torn down, after the last run of the
//! callback has returned (a timer's or a child's one-shot closure is
//! consumed by its run, and dropped when that run returns). So the free
//! callback runs exactly once, after the last run, on whichever thread
//! ends the registration, as libvirt's `virFreeCallback` promises.
//!
//! A registration that fails still drops its closure, before the function
//! returns: passing a free callback always means exactly one call of it,
//! whatever the outcome. The guard is built before any argument is
//! checked, so that holds for `-EINVAL` too.

use crate::boundary::{errno_of, ffi_boundary, EINVAL};
use crate::clock;
use crate::handles::Handle;
use crate::{borrow, Evnexus};
use evnexus::{Interest, Token};
use std::ffi::{c_int, c_short, c_void};
use std::os::unix::process::ExitStatusExt;

/// `flags` of `evnexus_register_fd`: edge-triggered (one run per edge; the
/// built-in loops only). Without it a watch is level-triggered.
pub const EVNEXUS_FD_EDGE: u32 = 1;

/// A registration's callback for fd events: `revents` is the poll(2) mask
/// of every event folded into this run.
#[allow(non_camel_case_types)]
pub type evnexus_fd_fn = Option<
    unsafe extern "C" fn(
        ev: *mut Evnexus,
        token: u64,
        fd: c_int,
        revents: c_short,
        opaque: *mut c_void,
    ),
>;

/// A timer's callback: runs once, at or after the deadline.
#[allow(non_camel_case_types)]
pub type evnexus_timer_fn =
    Option<unsafe extern "C" fn(ev: *mut Evnexus, token: u64, opaque: *mut c_void)>;

/// A child watch's callback: runs once when child `pid` has exited and the
/// engine has reaped it. `status` is the wait status (use `WIFEXITED`,
/// `WEXITSTATUS`, ...), or a negative errno when the child could not be
/// reaped (it was not this process's child, or something else reaped it).
#[allow(non_camel_case_types)]
pub type evnexus_child_fn =
    Option<unsafe extern "C" fn(ev: *mut Evnexus, pid: c_int, status: c_int, opaque: *mut c_void)>;

/// Runs once per registration, after the last run of its callback has
/// returned (libvirt's `virFreeCallback`), with the registration's
/// `opaque`.
#[allow(non_camel_case_types)]
pub type evnexus_free_fn = Option<unsafe extern "C" fn(opaque: *mut c_void)>;

/// The C side of one registration: what the closure captures.
struct CSide<F> {
    callback: F,
    guard: FreeGuard,
    ev: *mut Evnexus,
}

// SAFETY: the header makes it the caller's promise that the callback, the
// free callback and `opaque` may be used from any thread; `ev` is the
// engine, which outlives every closure it keeps and is used by shared
// reference only.
unsafe impl<F> Send for CSide<F> {}

/// Calls the free callback on drop: see the module doc.
struct FreeGuard {
    free: evnexus_free_fn,
    opaque: *mut c_void,
}

impl Drop for FreeGuard {
    fn drop(&mut self) {
        if let Some(free) = self.free {
            // SAFETY: the caller passed a valid function for this
            // registration's `opaque`; this is its one call.
            unsafe { free(self.opaque) };
        }
    }
}

/// Stores the token if the caller asked for it, and returns 0.
///
/// # Safety
/// `token_out` is NULL or writable.
unsafe fn hand_out(token_out: *mut u64, token: Token) -> c_int {
    if !token_out.is_null() {
        // SAFETY: the caller's promise.
        unsafe { token_out.write(token.as_u64()) };
    }
    0
}

/// The poll(2) bits a watch may ask for. POLLERR, POLLHUP and POLLNVAL are
/// accepted and ignored (poll(2) always reports them).
const EVENT_BITS: c_short = libc::POLLIN
    | libc::POLLPRI
    | libc::POLLOUT
    | libc::POLLRDHUP
    | libc::POLLRDNORM
    | libc::POLLRDBAND
    | libc::POLLWRNORM
    | libc::POLLWRBAND
    | libc::POLLERR
    | libc::POLLHUP
    | libc::POLLNVAL;

fn interest(events: c_short, edge: bool) -> Option<Interest> {
    if events & !EVENT_BITS != 0 {
        return None;
    }
    let i = Interest::from_poll_events(events);
    Some(if edge { i | Interest::EDGE } else { i })
}

/// Watches `fd` for `events` (poll(2) bits: `POLLIN`, `POLLOUT`, ...;
/// `flags`: 0, or `EVNEXUS_FD_EDGE` on a built-in loop); `cb` runs for each
/// event with `opaque`, never concurrently with itself. Stores the token
/// in `*token_out` (if not NULL).
///
/// Ownership: the engine does not own `fd`: keep it open until the watch
/// has ended (then close it; a new watch on the same fd number gets a new
/// token, and reports for the old one are rejected). `free_cb` (may be
/// NULL) runs exactly once with `opaque`, after the last run of `cb` has
/// returned: when the watch is deregistered, when the engine is freed, or,
/// if this call fails, before it returns.
///
/// Threading: any thread. `cb` runs on the thread that delivers the event
/// (the loop's, or the one calling `evnexus_occurred_fd`), possibly before
/// this function has returned; `cb`, `free_cb` and `opaque` must be usable
/// from any thread. `cb` may call any function on `ev` except
/// `evnexus_free`.
///
/// Errors: `-EINVAL` (NULL `ev` or `cb`, unknown bits in `events` or
/// `flags`), `-EBADF` (a negative or closed fd), `-ENOSPC` (the engine is
/// full), `-EOPNOTSUPP` (edge on a hooks or poll engine), a hook's own
/// error or the system's (epoll_ctl).
#[no_mangle]
pub extern "C" fn evnexus_register_fd(
    ev: *mut Evnexus,
    fd: c_int,
    events: c_short,
    flags: u32,
    cb: evnexus_fd_fn,
    opaque: *mut c_void,
    free_cb: evnexus_free_fn,
    token_out: *mut u64,
) -> c_int {
    ffi_boundary! {
        let guard = FreeGuard { free: free_cb, opaque };
        // SAFETY: the header's contract for `ev`.
        let (Some(e), Some(callback)) = (unsafe { borrow(ev) }, cb) else {
            return EINVAL;
        };
        let edge = flags & EVNEXUS_FD_EDGE != 0;
        let (0, Some(interest)) = (flags & !EVNEXUS_FD_EDGE, interest(events, edge)) else {
            return EINVAL;
        };
        let side = CSide { callback, guard, ev };
        let registered = e.engine.register_fd(fd, interest, move |event| {
            let side = &side; // the whole of it, guard included
            let (token, revents) = (event.token().as_u64(), event.readiness().as_poll_revents());
            // SAFETY: the caller of `evnexus_register_fd` passed a valid
            // callback for `opaque`, callable from any thread.
            unsafe { (side.callback)(side.ev, token, event.fd(), revents, side.guard.opaque) }
        });
        match registered {
            Ok(watch) => {
                let token = watch.token();
                e.handles.insert(token, Handle::Fd { watch, edge });
                // SAFETY: `token_out` is NULL or writable (the header).
                unsafe { hand_out(token_out, token) }
            }
            Err(err) => errno_of(&err),
        }
    }
}

/// Changes what the fd watch `token` asks for to `events` (poll(2) bits;
/// an edge-triggered watch stays edge-triggered). Events already reported
/// keep their readiness; the next follow the new interest.
///
/// Threading: any thread, callbacks included (a callback may modify its
/// own watch); not from inside a hook (`-EDEADLK`). A modify that races the
/// watch's registration from a thread other than its callback's may find
/// no watch yet (`-ENOENT`): modify after `evnexus_register_fd` returned.
///
/// Errors: `-EINVAL` (NULL, unknown bits), `-ENOENT` (the token names no
/// live fd watch: any `uint64_t` is safe here), `-EDEADLK`, a hook's own
/// error (the watch is then unchanged). Ownership: nothing changes hands
/// (the watch keeps its callback, `opaque` and free callback).
#[no_mangle]
pub extern "C" fn evnexus_modify_fd(ev: *mut Evnexus, token: u64, events: c_short) -> c_int {
    ffi_boundary! {
        // SAFETY: the header's contract for `ev`.
        let Some(e) = (unsafe { borrow(ev) }) else {
            return EINVAL;
        };
        let Some(handle) = e.handles.get(Token::from_u64(token)) else {
            return -libc::ENOENT;
        };
        let Handle::Fd { watch, edge } = &*handle else {
            return -libc::ENOENT;
        };
        let Some(interest) = interest(events, *edge) else {
            return EINVAL;
        };
        watch.modify(interest).map_or_else(|err| errno_of(&err), |()| 0)
    }
}

/// A timer registered from C; see `evnexus_timer_at`.
fn timer(
    e: &Evnexus,
    deadline: std::time::Instant,
    callback: unsafe extern "C" fn(*mut Evnexus, u64, *mut c_void),
    guard: FreeGuard,
    token_out: *mut u64,
) -> c_int {
    let side = CSide {
        callback,
        guard,
        ev: e as *const Evnexus as *mut Evnexus,
    };
    let registered = e.engine.timer_at(deadline, move |event| {
        // The whole of `side` moves in (not only the fields used), so that
        // its guard drops with the closure.
        let side = side;
        // SAFETY: the caller passed a valid callback for `opaque`, callable
        // from any thread.
        unsafe { (side.callback)(side.ev, event.token().as_u64(), side.guard.opaque) }
        // `side` (and the free callback) drops here: the one run is over.
    });
    match registered {
        Ok(timer) => {
            let token = timer.token();
            e.handles.insert(token, Handle::Timer(timer));
            // SAFETY: `token_out` is NULL or writable (the header).
            unsafe { hand_out(token_out, token) }
        }
        Err(err) => errno_of(&err),
    }
}

/// A one-shot timer at `deadline_ns` (nanoseconds on `CLOCK_MONOTONIC`; a
/// deadline in the past fires at once): `cb` runs once with `opaque`, at
/// or after the deadline, unless the timer is deregistered first. Stores
/// the token in `*token_out` (if not NULL).
///
/// Ownership: `free_cb` (may be NULL) runs exactly once with `opaque`:
/// right after `cb` has returned, or when the timer is deregistered before
/// it fired, or when the engine is freed, or, if this call fails, before it
/// returns.
///
/// Threading: any thread; `cb` runs on the loop's thread (or the one
/// calling `evnexus_occurred_timeout`), possibly before this returns.
/// `cb`, `free_cb` and `opaque` must be usable from any thread.
///
/// Errors: `-EINVAL` (NULL `ev` or `cb`, a negative deadline), `-ENOSPC`,
/// a hook's own error.
#[no_mangle]
pub extern "C" fn evnexus_timer_at(
    ev: *mut Evnexus,
    deadline_ns: i64,
    cb: evnexus_timer_fn,
    opaque: *mut c_void,
    free_cb: evnexus_free_fn,
    token_out: *mut u64,
) -> c_int {
    ffi_boundary! {
        let guard = FreeGuard { free: free_cb, opaque };
        // SAFETY: the header's contract for `ev`.
        let (Some(e), Some(callback)) = (unsafe { borrow(ev) }, cb) else {
            return EINVAL;
        };
        if deadline_ns < 0 {
            return EINVAL;
        }
        timer(e, e.clock.instant(deadline_ns), callback, guard, token_out)
    }
}

/// A one-shot timer `delay_ns` nanoseconds from now (0: due at once);
/// otherwise as `evnexus_timer_at`. Ownership and threading: as
/// `evnexus_timer_at`. Errors: as `evnexus_timer_at`, and `-EINVAL` for a
/// negative delay.
#[no_mangle]
pub extern "C" fn evnexus_timer_after(
    ev: *mut Evnexus,
    delay_ns: i64,
    cb: evnexus_timer_fn,
    opaque: *mut c_void,
    free_cb: evnexus_free_fn,
    token_out: *mut u64,
) -> c_int {
    ffi_boundary! {
        let guard = FreeGuard { free: free_cb, opaque };
        // SAFETY: the header's contract for `ev`.
        let (Some(e), Some(callback)) = (unsafe { borrow(ev) }, cb) else {
            return EINVAL;
        };
        if delay_ns < 0 {
            return EINVAL;
        }
        timer(e, clock::after(delay_ns), callback, guard, token_out)
    }
}

/// Moves the pending timer `token` to `deadline_ns` (`CLOCK_MONOTONIC`).
///
/// Threading: any thread, callbacks included; not from inside a hook
/// (`-EDEADLK`). As for `evnexus_modify_fd`, a reset that races the
/// timer's registration from another thread may find no timer yet.
/// Errors: `-EINVAL` (NULL, negative deadline), `-ENOENT` (the token names
/// no pending timer: fired, deregistered, or never one; any `uint64_t` is
/// safe), `-EDEADLK`, a hook's own error (the timer is then unchanged).
/// Ownership: nothing changes hands.
#[no_mangle]
pub extern "C" fn evnexus_timer_reset_at(ev: *mut Evnexus, token: u64, deadline_ns: i64) -> c_int {
    ffi_boundary! {
        // SAFETY: the header's contract for `ev`.
        let Some(e) = (unsafe { borrow(ev) }) else {
            return EINVAL;
        };
        if deadline_ns < 0 {
            return EINVAL;
        }
        reset(e, token, e.clock.instant(deadline_ns))
    }
}

/// Moves the pending timer `token` to `delay_ns` from now; otherwise as
/// `evnexus_timer_reset_at`. Ownership and threading: as
/// `evnexus_timer_reset_at`. Errors: as `evnexus_timer_reset_at`, and
/// `-EINVAL` for a negative delay.
#[no_mangle]
pub extern "C" fn evnexus_timer_reset_after(ev: *mut Evnexus, token: u64, delay_ns: i64) -> c_int {
    ffi_boundary! {
        // SAFETY: the header's contract for `ev`.
        let Some(e) = (unsafe { borrow(ev) }) else {
            return EINVAL;
        };
        if delay_ns < 0 {
            return EINVAL;
        }
        reset(e, token, clock::after(delay_ns))
    }
}

fn reset(e: &Evnexus, token: u64, deadline: std::time::Instant) -> c_int {
    let Some(handle) = e.handles.get(Token::from_u64(token)) else {
        return -libc::ENOENT;
    };
    let Handle::Timer(timer) = &*handle else {
        return -libc::ENOENT;
    };
    timer
        .reset_at(deadline)
        .map_or_else(|err| errno_of(&err), |()| 0)
}

/// Watches child process `pid`: when it exits the engine reaps it and `cb`
/// runs once with its wait status and `opaque`. Do not wait for the child
/// yourself. Stores the token in `*token_out` (if not NULL); deregistering
/// it stops watching (the child is then not reaped by the engine).
///
/// Ownership: `free_cb` (may be NULL) runs exactly once with `opaque`:
/// right after `cb` has returned, or when the watch is deregistered first,
/// or when the engine is freed, or, if this call fails, before it returns.
///
/// Threading: any thread; `cb` runs where the child's pidfd event is
/// delivered. Errors: `-EINVAL` (NULL `ev` or `cb`, `pid` <= 0), the
/// system's error when `pid` names no process (`pidfd_open`), `-ENOSPC`, a
/// hook's own error.
#[no_mangle]
pub extern "C" fn evnexus_watch_child(
    ev: *mut Evnexus,
    pid: c_int,
    cb: evnexus_child_fn,
    opaque: *mut c_void,
    free_cb: evnexus_free_fn,
    token_out: *mut u64,
) -> c_int {
    ffi_boundary! {
        let guard = FreeGuard { free: free_cb, opaque };
        // SAFETY: the header's contract for `ev`.
        let (Some(e), Some(callback)) = (unsafe { borrow(ev) }, cb) else {
            return EINVAL;
        };
        if pid <= 0 {
            return EINVAL;
        }
        let side = CSide { callback, guard, ev };
        let registered = e.engine.watch_child(pid as u32, move |event| {
            let side = side; // the whole of it, guard included
            let status = match event.status() {
                Ok(status) => status.into_raw(),
                Err(err) => -err.raw_os_error().unwrap_or(libc::ECHILD),
            };
            // SAFETY: the caller passed a valid callback for `opaque`,
            // callable from any thread.
            unsafe { (side.callback)(side.ev, pid, status, side.guard.opaque) }
        });
        match registered {
            Ok(child) => {
                let token = child.token();
                e.handles.insert(token, Handle::Child { _watch: child });
                // SAFETY: `token_out` is NULL or writable (the header).
                unsafe { hand_out(token_out, token) }
            }
            Err(err) => errno_of(&err),
        }
    }
}

/// Ends the registration `token` (fd watch, timer or child watch): its
/// callback will not start again, and its free callback runs once the last
/// run has returned.
///
/// Returns 0 if this call ended it; `-ENOENT` if the token names no live
/// registration (already ended, fired, or any other `uint64_t`: every
/// value is safe); `-EBADF` if this call ended it but the watch's fd had
/// been closed while still registered, so its kernel entry could not be
/// removed (close an fd only after its watch has ended).
///
/// Threading: any thread. Outside any callback this waits until a run of
/// the callback in progress on another thread has returned, and the free
/// callback has run. From inside a callback or hook it does not wait (a
/// callback may deregister itself or another registration without
/// deadlock); the free callback then runs when the last run returns. A
/// timer that is firing on another thread is over (`-ENOENT`), and this
/// call, outside a callback, waits for its run and free callback too.
/// Errors: `-EINVAL` for NULL `ev`. Ownership: the registration's `opaque`
/// goes back to the caller through its free callback.
#[no_mangle]
pub extern "C" fn evnexus_deregister(ev: *mut Evnexus, token: u64) -> c_int {
    ffi_boundary! {
        // SAFETY: the header's contract for `ev`.
        let Some(e) = (unsafe { borrow(ev) }) else {
            return EINVAL;
        };
        match e.engine.deregister(Token::from_u64(token)) {
            Ok(true) => 0,
            Ok(false) => -libc::ENOENT,
            Err(err) => errno_of(&err),
        }
    }
}
