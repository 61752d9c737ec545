//! What both targets share: the deliberate panics and the panic hook that
//! lets them unwind, a poison-tolerant lock, and the conversions from the
//! input's raw bits.

use evnexus::{Interest, Readiness};
use std::sync::{Mutex, MutexGuard, Once};

/// The message of a callback's deliberate panic (the engine must contain it).
pub(crate) const DELIBERATE: &str = "evnexus-fuzz: deliberate callback panic";
/// The message of a hook's deliberate panic (the engine must contain it).
pub(crate) const HOOK_PANIC: &str = "evnexus-fuzz: deliberate hook panic";

/// The message of an injected hook error.
pub(crate) const INJECTED: &str = "evnexus-fuzz: injected hook failure";

/// Locks `m`; a panic elsewhere (a deliberate one, contained by the engine)
/// does not make the state unusable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn interest_of(bits: u16) -> Interest {
    Interest::from_poll_events(bits as i16)
}

pub(crate) fn readiness_of(bits: u16) -> Readiness {
    Readiness::from_poll_revents(bits as i16)
}

/// libfuzzer-sys aborts on any panic, from its own hook, before unwinding;
/// the engine must see the deliberate panics of callbacks and hooks unwind,
/// so those (and only those) skip that hook. Every other panic, on any
/// thread, is a finding and aborts.
pub(crate) fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            let deliberate = message == Some(DELIBERATE) || message == Some(HOOK_PANIC);
            if !deliberate {
                previous(info);
            }
        }));
    });
}
