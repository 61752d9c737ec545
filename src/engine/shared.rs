//! What an engine's values share ([`EngineCore`]: the dispatch core and the
//! count of handles) and how a handle holds it ([`CoreRef`]).
//!
//! The engine, its shadow, the periodic timers and the wakers hold the
//! core through an `Arc`. The `Timer` and `FdWatch` handles, made and
//! dropped with every registration, do not: they share one strong
//! reference, taken when the core is made, and count themselves in a
//! [`HandleCount`] of per-thread stripes, so that registering on two
//! threads does not bounce the `Arc`'s count between them. When the last
//! owner ends the registrations ([`EngineCore::close`]), the count is
//! closed, and the shared reference goes with the last handle (or at once,
//! if none is out).

use crate::base::handles::HandleCount;
use crate::base::sync::Arc;
use crate::dispatch::Core;
use crate::engine::callback::Callback;
use std::ops::Deref;
use std::ptr::NonNull;

/// The dispatch core with this facade's callbacks, and its handles' count.
pub(crate) struct EngineCore {
    core: Core<Callback>,
    handles: HandleCount,
}

impl Deref for EngineCore {
    type Target = Core<Callback>;
    #[inline]
    fn deref(&self) -> &Core<Callback> {
        &self.core
    }
}

impl EngineCore {
    /// The shared core, with the strong reference that its handles will
    /// share taken already.
    pub(crate) fn new_arc(core: Core<Callback>) -> Arc<EngineCore> {
        let arc = Arc::new(EngineCore {
            core,
            handles: HandleCount::new(),
        });
        // The handles' reference: let go of by `close` or by the last
        // handle out (`CoreRef::drop`), through this same pointer.
        let _ = Arc::into_raw(Arc::clone(&arc));
        arc
    }

    /// No handle can be made any more: the last owner has ended every
    /// registration (`Drop for Engine`, `Drop for Shadow`). Lets go of the
    /// handles' reference if none is out. Called once per core.
    pub(crate) fn close(this: &Arc<EngineCore>) {
        if this.handles.close() {
            // SAFETY: the count says no handle is out, so the handles'
            // reference is ours; `this` is another one, so the core outlives
            // this call.
            unsafe { Self::let_go_of_handles_reference(Arc::as_ptr(this)) };
        }
    }

    /// Lets go of the handles' reference, the one `new_arc` took.
    ///
    /// # Safety
    /// `ptr` is the core's `Arc` pointer (`Arc::as_ptr`), and the handles'
    /// count said the caller is the one to let go (`close`, or the last
    /// `put` after it): once per core. The core may be freed by this call.
    unsafe fn let_go_of_handles_reference(ptr: *const EngineCore) {
        // SAFETY: the function contract: `ptr` carries the `Arc`
        // allocation's provenance, and the reference it drops is the one
        // `new_arc` leaked, dropped once.
        unsafe { Arc::decrement_strong_count(ptr) };
    }
}

/// A handle's hold on its engine's core.
pub(crate) struct CoreRef(NonNull<EngineCore>);

// SAFETY: a `CoreRef` is a shared reference to an `EngineCore` kept alive by
// the handles' reference (see the module doc), and `EngineCore` is `Send`
// and `Sync` (checked below), as for the `Arc<EngineCore>` it replaces.
unsafe impl Send for CoreRef {}
// SAFETY: as above.
unsafe impl Sync for CoreRef {}

const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<EngineCore>();
};

impl CoreRef {
    /// A new handle's hold on `core`; the caller holds an owner's reference,
    /// so the engine is not closed.
    #[inline]
    pub(crate) fn new(core: &Arc<EngineCore>) -> CoreRef {
        core.handles.take();
        // `as_ptr`, not a reference's address: the pointer keeps the `Arc`
        // allocation's provenance, which `decrement_strong_count` needs.
        let ptr = Arc::as_ptr(core) as *mut EngineCore;
        // SAFETY: an `Arc`'s pointer is never null.
        CoreRef(unsafe { NonNull::new_unchecked(ptr) })
    }
}

impl Deref for CoreRef {
    type Target = EngineCore;
    #[inline]
    fn deref(&self) -> &EngineCore {
        // SAFETY: this handle is counted (`new`), so the handles' reference,
        // let go of only when the count reaches zero after the close, keeps
        // the core alive until `drop` below.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for CoreRef {
    #[inline]
    fn drop(&mut self) {
        if self.handles.put() {
            // SAFETY: the count says this was the last handle out after the
            // close; `self.0` came from `Arc::as_ptr` (`new`); nothing
            // touches the core after this line.
            unsafe { EngineCore::let_go_of_handles_reference(self.0.as_ptr()) };
        }
    }
}

/// The integration tests' no-op hooks (a path relative to this file's
/// directory only outside an inline module).
#[cfg(all(test, not(evnexus_loom)))]
#[path = "../../tests/common/no_hooks.rs"]
mod no_hooks;

#[cfg(all(test, not(evnexus_loom)))]
mod tests {
    use super::no_hooks;
    use crate::base::sync::Arc;
    use crate::Engine;
    use std::time::{Duration, Instant};

    /// The core goes with the last of the engine and its handles, whichever
    /// is last (also under miri, which checks the pointer the last handle
    /// lets the core go through).
    #[test]
    fn the_core_goes_with_the_last_of_the_engine_and_its_handles() {
        let far = Instant::now() + Duration::from_secs(3600);
        let engine = Engine::with_hooks(no_hooks::NoHooks);
        let core = Arc::downgrade(engine.core());
        let kept = engine.timer_at(far, |_| {}).unwrap();
        let token = engine.timer_at(far, |_| {}).unwrap().into_token();
        drop(engine.timer_at(far, |_| {}).unwrap());
        drop(engine);
        assert!(core.upgrade().is_some(), "a handle is still out");
        assert!(!kept.is_pending(), "the engine ended its timer");
        assert_ne!(kept.token(), token);
        drop(kept);
        assert!(core.upgrade().is_none(), "the last handle let it go");

        let engine = Engine::with_hooks(no_hooks::NoHooks);
        let core = Arc::downgrade(engine.core());
        drop(engine.timer_at(far, |_| {}).unwrap());
        drop(engine);
        assert!(
            core.upgrade().is_none(),
            "no handle out: the engine let it go"
        );
    }
}
