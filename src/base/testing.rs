//! Test aids, compiled only with the `testing` feature (the crate's own
//! tests, benches and fuzz targets turn it on; it is not part of the API
//! and carries no semver promise).
//!
//! A *pause point* is a named place in a control path (registration,
//! modification) where a test can stop the calling thread, so that a race
//! that needs a preempted thread at exactly that place happens every time,
//! not once in a thousand runs. A pause is installed for the current thread
//! only ([`pause_at`]), so tests that run in parallel threads of one binary
//! do not see each other's pauses. Without the feature, [`pause`] is an
//! empty inline function.

use crate::base::sync::Raised;
use std::cell::RefCell;

/// Where a control operation can be paused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum PausePoint {
    /// A registration or modification holds the slot's `CTRL` bit and is
    /// about to call the backend (for a modify: the new value is in the
    /// slot already).
    BeforeBackendCall,
    /// A registration or modification has called the backend and still
    /// holds `CTRL`: the moment a concurrent loop meets the registration
    /// "under control".
    AfterBackendCall,
}

type PauseFn = Box<dyn FnMut(PausePoint)>;

std::thread_local! {
    static PAUSES: RefCell<Option<PauseFn>> = const { RefCell::new(None) };
}

/// Raised by the first [`pause_at`] of the process. Until then a pause
/// point is one load and a branch: the benches, which build this feature
/// for their low-level access, then time registration as a user's build
/// runs it, not with a thread-local lookup per pause point (about 45
/// instructions of the 760 a register and deregister took, callgrind).
static ANY_PAUSE: Raised = Raised::new();

/// Makes the calling thread run `f` at every pause point it passes, until
/// [`clear_pauses`]. `f` typically waits on a barrier or channel that the
/// test controls.
pub fn pause_at(f: impl FnMut(PausePoint) + 'static) {
    // Before the install: the installing thread's own pause points see it
    // in program order, which is all `pause` needs (pauses are per thread).
    ANY_PAUSE.raise();
    PAUSES.with(|p| *p.borrow_mut() = Some(Box::new(f)));
}

/// Removes the calling thread's pause function.
pub fn clear_pauses() {
    PAUSES.with(|p| *p.borrow_mut() = None);
}

/// Called by the engine at `point`: runs the thread's pause function, if
/// any. Re-entrant calls (the pause function itself calling the engine) do
/// not pause again.
#[inline]
pub(crate) fn pause(point: PausePoint) {
    if !ANY_PAUSE.is_raised() {
        return;
    }
    PAUSES.with(|p| {
        let taken = p.borrow_mut().take();
        if let Some(mut f) = taken {
            f(point);
            let mut slot = p.borrow_mut();
            if slot.is_none() {
                *slot = Some(f);
            }
        }
    });
}
