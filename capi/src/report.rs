//! Reports from the application's loop: `evnexus_occurred_fd` and
//! `evnexus_occurred_timeout` (libxl's `libxl_osevent_occurred_*`).

use crate::boundary::{errno_of, ffi_boundary, EINVAL};
use crate::{borrow, Evnexus};
use evnexus::{Occurred, Readiness, Token};
use std::ffi::{c_int, c_short};

/// `evnexus_occurred_*`: the callback ran on this thread (once for this
/// event, and again for every event that arrived while it ran).
pub const EVNEXUS_DISPATCHED: c_int = 0;
/// `evnexus_occurred_*`: the callback was running on another thread; this
/// event was folded into a rerun there. Nothing is lost.
pub const EVNEXUS_DEFERRED: c_int = 1;
/// `evnexus_occurred_fd`: the fd re-check found nothing ready; the callback
/// did not run.
pub const EVNEXUS_SUPPRESSED: c_int = 2;
/// `evnexus_occurred_*`: rejected; the token names no live registration of
/// this kind (or, for an fd, names one on another fd). Nothing ran, and
/// the rejection is counted in `evnexus_get_stats`.
pub const EVNEXUS_STALE: c_int = 3;

fn outcome(r: evnexus::Result<Occurred>) -> c_int {
    match r {
        Ok(Occurred::Dispatched) => EVNEXUS_DISPATCHED,
        Ok(Occurred::Deferred) => EVNEXUS_DEFERRED,
        Ok(Occurred::Suppressed) => EVNEXUS_SUPPRESSED,
        Ok(Occurred::Stale(_)) => EVNEXUS_STALE,
        Err(e) => errno_of(&e),
    }
}

/// Reports that `fd`, watched under `token`, has `revents` (poll(2) bits):
/// libxl's `libxl_osevent_occurred_fd`. Returns `EVNEXUS_DISPATCHED`,
/// `_DEFERRED`, `_SUPPRESSED` or `_STALE`.
///
/// Threading: any thread, at any delay, concurrently with anything,
/// callbacks and hooks included, with any `uint64_t`: a token that names no
/// live fd watch on `fd` is rejected by one atomic operation, with no lock
/// and no system call, and nothing runs.
///
/// Errors: `-EINVAL` for NULL `ev`. Ownership: nothing changes hands (the
/// callback runs here with its registration's `opaque`).
#[no_mangle]
pub extern "C" fn evnexus_occurred_fd(
    ev: *mut Evnexus,
    token: u64,
    fd: c_int,
    revents: c_short,
) -> c_int {
    ffi_boundary! {
        // SAFETY: the header's contract for `ev`.
        let Some(e) = (unsafe { borrow(ev) }) else {
            return EINVAL;
        };
        let revents = Readiness::from_poll_revents(revents);
        outcome(e.engine.occurred_fd(Token::from_u64(token), fd, revents))
    }
}

/// Reports that the timeout registered under `token` has occurred: libxl's
/// `libxl_osevent_occurred_timeout`. The callback runs at most once per
/// registration, however often or concurrently this is called. Returns
/// `EVNEXUS_DISPATCHED` or `EVNEXUS_STALE` (already fired, deregistered,
/// or not a timer).
///
/// Threading: as `evnexus_occurred_fd`. Errors: `-EINVAL` for NULL `ev`.
/// Ownership: nothing changes hands.
#[no_mangle]
pub extern "C" fn evnexus_occurred_timeout(ev: *mut Evnexus, token: u64) -> c_int {
    ffi_boundary! {
        // SAFETY: the header's contract for `ev`.
        let Some(e) = (unsafe { borrow(ev) }) else {
            return EINVAL;
        };
        outcome(e.engine.occurred_timeout(Token::from_u64(token)))
    }
}
