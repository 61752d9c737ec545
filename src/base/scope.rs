//! What the current thread is doing inside the engine (running callbacks,
//! running hooks), and the text of a caught panic.
//!
//! A thread inside a callback or a hook must not wait for a callback to
//! return: it could be waiting for itself, or for a thread that waits for
//! it. Deregistration and modification ask here before they wait.

use crate::base::sync::{CALLBACK_DEPTH as CALLBACKS, HOOK_DEPTH as HOOKS};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Marks the current thread as inside a callback (or hook) until dropped.
pub(crate) struct Scope {
    hook: bool,
}

impl Scope {
    #[inline]
    pub(crate) fn enter_callback() -> Scope {
        CALLBACKS.with(|c| c.set(c.get() + 1));
        Scope { hook: false }
    }
    #[inline]
    pub(crate) fn enter_hook() -> Scope {
        HOOKS.with(|c| c.set(c.get() + 1));
        Scope { hook: true }
    }
}

impl Drop for Scope {
    #[inline]
    fn drop(&mut self) {
        let counter = if self.hook { &HOOKS } else { &CALLBACKS };
        counter.with(|c| c.set(c.get() - 1));
    }
}

/// Whether the current thread is running a callback or a hook.
pub(crate) fn in_callback_or_hook() -> bool {
    CALLBACKS.with(|c| c.get() > 0) || in_hook()
}

/// Whether the current thread is running an application hook.
pub(crate) fn in_hook() -> bool {
    HOOKS.with(|c| c.get() > 0)
}

/// The message of a caught panic; drops the payload (whose destructor is
/// user code and may panic too) without unwinding.
pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    };
    let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
    message
}
