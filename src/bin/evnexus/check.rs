//! What the threads check: the kinds of failed check that count as
//! misdeliveries, the tally of them, and the small tools the checks use.

use crate::lock;
use evnexus::{Generation, Token};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The kinds of failed checks that count as misdeliveries.
#[derive(Clone, Copy)]
pub(crate) enum Check {
    /// A callback ran after its registration's deregister/cancel returned.
    DeadDispatch,
    /// A callback saw another registration's token, fd or deadline.
    WrongIdentity,
    /// A callback ran concurrently with itself.
    Concurrent,
    /// A timer fired twice (same registration, or same token).
    TimerTwice,
    /// `cancel()` said one thing, the callback did the other.
    CancelOutcome,
    /// A timer callback ran before its (never moved) deadline.
    FiredEarly,
    /// A replayed, forged, wrong-fd or wrong-kind report was dispatched.
    BadTokenAccepted,
    /// After deregister/cancel returned (outside callbacks), the callback
    /// was still running or not yet dropped, or deregister of a live watch
    /// said it had ended already.
    NotQuiesced,
    /// An outcome the configuration rules out (Suppressed without the fd
    /// re-check, a callback panic, an engine error).
    Unexpected,
}

pub(crate) const CHECK_NAMES: [&str; 9] = [
    "dispatch to a dead registration",
    "callback saw wrong token/fd/deadline",
    "callback ran concurrently with itself",
    "timer fired twice",
    "cancel() contradicted by the callback",
    "timer fired before its deadline",
    "bad token dispatched",
    "deregister/cancel returned too early",
    "unexpected outcome or engine error",
];

pub(crate) struct Checks {
    pub(crate) failed: [AtomicU64; 9],
    pub(crate) notes: Mutex<Vec<String>>,
}

impl Checks {
    pub(crate) fn new() -> Checks {
        Checks {
            failed: std::array::from_fn(|_| AtomicU64::new(0)),
            notes: Mutex::new(Vec::new()),
        }
    }
    pub(crate) fn fail(&self, check: Check, what: impl FnOnce() -> String) {
        self.failed[check as usize].fetch_add(1, Ordering::SeqCst);
        let mut notes = lock(&self.notes);
        if notes.len() < 20 {
            notes.push(format!("{}: {}", CHECK_NAMES[check as usize], what()));
        }
    }
    pub(crate) fn total(&self) -> u64 {
        self.failed.iter().map(|c| c.load(Ordering::SeqCst)).sum()
    }
}

/// The highest generation handed out at each slot index, to catch a token
/// handed out twice (the second registration could fire or be dispatched
/// under the first one's token: a double fire or a misdelivery).
///
/// Bounded by the slot indices the engine has used, that is by the peak of
/// live registrations, not by the run time; and complete: generations of a
/// slot only grow and never wrap ([`evnexus::Generation`]), so a token
/// whose generation is not above every one recorded at its index was
/// handed out before, however long ago.
///
/// The record of a registration is made when its token cell is first bound
/// (by the registrant after `register_*` returned, or by its callback if
/// that ran first), under the ledger's lock. That is before the slot can
/// be handed out again: a slot is reused only after its registration ended,
/// which needs the handle (so `register_*` has returned) or a callback run
/// (which binds first). So the records of one index come in generation
/// order, and a later generation never reaches the ledger first.
#[derive(Default)]
pub(crate) struct TokenLedger {
    last: Mutex<HashMap<u32, u64>>,
}

impl TokenLedger {
    /// Binds a registration's token cell: the first of (registrant,
    /// callback) stores `token` and records it (a token seen before fails
    /// [`Check::WrongIdentity`]); the other must find the same value.
    /// Returns `false` when the cell holds another token.
    pub(crate) fn bind(&self, cell: &AtomicU64, token: u64, checks: &Checks) -> bool {
        let bound = cell.load(Ordering::SeqCst);
        if bound != 0 {
            return bound == token;
        }
        let mut last = lock(&self.last);
        if let Err(prev) = cell.compare_exchange(0, token, Ordering::SeqCst, Ordering::SeqCst) {
            return prev == token;
        }
        let t = Token::from_u64(token);
        let generation = t.generation().map_or(0, Generation::get);
        let highest = last.entry(t.index()).or_insert(0);
        if generation <= *highest {
            let before = *highest;
            checks.fail(Check::WrongIdentity, || {
                format!(
                    "token {t} handed out again (slot {} had generation {before} already)",
                    t.index()
                )
            });
        } else {
            *highest = generation;
        }
        true
    }
}

/// Sets its flag when dropped: captured by a callback, it tells whether
/// the engine has dropped the callback.
pub(crate) struct DropMark(pub(crate) Arc<AtomicBool>);

impl Drop for DropMark {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(index: u32, generation: u64) -> u64 {
        (generation << Token::INDEX_BITS) | u64::from(index)
    }

    #[test]
    fn registrant_and_callback_bind_the_same_token_once() {
        let (ledger, checks) = (TokenLedger::default(), Checks::new());
        let cell = AtomicU64::new(0);
        assert!(ledger.bind(&cell, token(3, 1), &checks));
        assert!(ledger.bind(&cell, token(3, 1), &checks));
        assert!(!ledger.bind(&cell, token(4, 1), &checks));
        assert_eq!(checks.total(), 0);
    }

    #[test]
    fn later_generations_of_a_slot_pass() {
        let (ledger, checks) = (TokenLedger::default(), Checks::new());
        for generation in [1, 2, 5] {
            assert!(ledger.bind(&AtomicU64::new(0), token(3, generation), &checks));
            assert!(ledger.bind(&AtomicU64::new(0), token(9, generation), &checks));
        }
        assert_eq!(checks.total(), 0);
    }

    #[test]
    fn a_token_handed_out_twice_fails_however_long_after() {
        let (ledger, checks) = (TokenLedger::default(), Checks::new());
        assert!(ledger.bind(&AtomicU64::new(0), token(3, 7), &checks));
        for index in 0..10_000 {
            ledger.bind(&AtomicU64::new(0), token(index + 10, 1), &checks);
        }
        assert_eq!(checks.total(), 0);
        // Same token again, and an older generation of the same slot.
        ledger.bind(&AtomicU64::new(0), token(3, 7), &checks);
        ledger.bind(&AtomicU64::new(0), token(3, 6), &checks);
        assert_eq!(
            checks.failed[Check::WrongIdentity as usize].load(Ordering::SeqCst),
            2
        );
        assert_eq!(checks.total(), 2);
    }

    #[test]
    fn a_token_of_generation_zero_fails() {
        let (ledger, checks) = (TokenLedger::default(), Checks::new());
        ledger.bind(&AtomicU64::new(0), token(3, 0), &checks);
        assert_eq!(checks.total(), 1);
    }
}
