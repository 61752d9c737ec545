//! A plain `poll()` loop in C: `evnexus_beforepoll` / `evnexus_afterpoll`
//! (libxl's `libxl_osevent_beforepoll` / `afterpoll`) over a caller's
//! `struct pollfd` array.
//!
//! The engine keeps one [`PollSet`] per engine between the two calls (what
//! the array's entries were registered as); the caller's array receives a
//! copy of its entries and hands back their `revents`.

use crate::boundary::{code, ffi_boundary, EINVAL};
use crate::{borrow, Evnexus};
use evnexus::{poll_timeout_ms, PollSet};
use libc::pollfd;
use std::ffi::c_int;
use std::sync::MutexGuard;

/// The engine's poll set; `None` while an `afterpoll` dispatches from it.
pub(crate) struct PollState {
    set: Option<PollSet>,
}

impl Default for PollState {
    fn default() -> PollState {
        PollState {
            set: Some(PollSet::new()),
        }
    }
}

fn lock(e: &Evnexus) -> MutexGuard<'_, PollState> {
    // Nothing panics while holding it; recover all the same.
    e.poll.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fills `fds[0 .. *nfds_io]` with the engine's fds and lowers
/// `*timeout_ms_io` to the time until the engine's next timer, in
/// milliseconds rounded up, for `poll(fds, n, *timeout_ms_io)`; `*nfds_io`
/// becomes the number of entries used. On entry `*nfds_io` is the array's
/// capacity and `*timeout_ms_io` the caller's own timeout (-1: none). The
/// caller may append fds of its own after the engine's entries.
///
/// Errors: `-ENOBUFS` when the array is too small: `*nfds_io` is then the
/// size needed (libxl's `ERROR_BUFFERFULL`; grow the array and call again).
/// `-EINVAL` for a NULL pointer (`fds` may be NULL with `*nfds_io` 0, to
/// ask for the size), `-EOPNOTSUPP` on an engine other than
/// `EVNEXUS_BACKEND_POLL`, `-EBUSY` while an `evnexus_afterpoll` of this
/// engine is dispatching.
///
/// Ownership: the caller owns the array. Threading: one loop per engine
/// calls `evnexus_beforepoll` / `evnexus_afterpoll`, from any thread;
/// registrations from other threads wake its `poll()` through the first
/// entry (an eventfd).
#[no_mangle]
pub extern "C" fn evnexus_beforepoll(
    ev: *mut Evnexus,
    fds: *mut pollfd,
    nfds_io: *mut usize,
    timeout_ms_io: *mut c_int,
) -> c_int {
    ffi_boundary! {
        // SAFETY: the header's contract for `ev`.
        let Some(e) = (unsafe { borrow(ev) }) else {
            return EINVAL;
        };
        if nfds_io.is_null() || timeout_ms_io.is_null() {
            return EINVAL;
        }
        // SAFETY: both checked non-NULL; valid by the header's contract.
        let (capacity, caller_timeout) = unsafe { (nfds_io.read(), timeout_ms_io.read()) };
        if fds.is_null() && capacity > 0 {
            return EINVAL;
        }
        let mut state = lock(e);
        let Some(set) = state.set.as_mut() else {
            return -libc::EBUSY;
        };
        let until_timer = match e.engine.beforepoll(set) {
            Ok(t) => t,
            Err(err) => return code(Err(err)),
        };
        let entries = set.fds();
        // SAFETY: checked non-NULL above.
        unsafe { nfds_io.write(entries.len()) };
        if entries.len() > capacity {
            return -libc::ENOBUFS;
        }
        // SAFETY: `fds` has room for `capacity` >= `entries.len()` entries
        // (the header's contract), and cannot overlap the engine's vector.
        unsafe { std::ptr::copy_nonoverlapping(entries.as_ptr(), fds, entries.len()) };
        let ours = poll_timeout_ms(until_timer);
        if ours >= 0 && (caller_timeout < 0 || ours < caller_timeout) {
            // SAFETY: checked non-NULL above.
            unsafe { timeout_ms_io.write(ours) };
        }
        0
    }
}

/// Dispatches what `poll()` found ready in `fds` (as filled by the last
/// `evnexus_beforepoll`, with `revents` set; `nfds` may count the caller's
/// own entries after the engine's), then every timer that is due. Returns
/// how many callbacks ran.
///
/// Entries whose registration ended since `evnexus_beforepoll` are
/// rejected as stale (counted in `evnexus_get_stats`), even if their fd number
/// now belongs to a new watch: that watch fires on the next cycle.
///
/// Errors: `-EINVAL` (NULL, `nfds` smaller than the engine's entries, an
/// engine entry whose fd was changed, or no `evnexus_beforepoll` before),
/// `-EOPNOTSUPP` on an engine other than `EVNEXUS_BACKEND_POLL`, `-EBUSY`
/// while another `evnexus_afterpoll` of this engine is dispatching.
/// Threading: as `evnexus_beforepoll`; callbacks run on this thread.
/// Ownership: the caller's array is only read.
#[no_mangle]
pub extern "C" fn evnexus_afterpoll(ev: *mut Evnexus, fds: *const pollfd, nfds: usize) -> c_int {
    ffi_boundary! {
        // SAFETY: the header's contract for `ev`.
        let Some(e) = (unsafe { borrow(ev) }) else {
            return EINVAL;
        };
        if fds.is_null() {
            return EINVAL;
        }
        // SAFETY: `fds` points at `nfds` entries (the header's contract).
        let given = unsafe { std::slice::from_raw_parts(fds, nfds) };
        // Take the set out: callbacks run without the lock held, and may
        // call into the engine (a nested beforepoll gets -EBUSY).
        let Some(mut set) = lock(e).set.take() else {
            return -libc::EBUSY;
        };
        let n = set.engine_len();
        let matches = n > 0
            && given.len() >= n
            && set.fds().iter().zip(given).all(|(ours, theirs)| ours.fd == theirs.fd);
        let result = if matches {
            for (ours, theirs) in set.fds_mut().iter_mut().zip(given) {
                ours.revents = theirs.revents;
            }
            code(e.engine.afterpoll(&mut set).map(|ran| c_int::try_from(ran).unwrap_or(c_int::MAX)))
        } else {
            EINVAL
        };
        lock(e).set = Some(set);
        result
    }
}
