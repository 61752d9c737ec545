//! loom models of the slot protocol, through the public API.
//!
//! Run (release, as `.ci/run` does):
//!
//! ```text
//! RUSTFLAGS="--cfg evnexus_loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom \
//!     cargo test --release --test loom
//! ```
//!
//! Under `--cfg evnexus_loom` the crate's `sync` module swaps every atomic, cell,
//! mutex, condvar and thread-local of the protocol for loom's, so each
//! model explores the interleavings of the real code.
#![cfg(evnexus_loom)]

mod common;

use common::{null_fd, NoHooks};
use evnexus::{Engine, Interest, Occurred, Readiness, StaleReason};
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::time::Duration;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// Two threads report the same live fd watch at once: the callback runs
/// exactly twice (once each, or once plus a rerun for the deferred one),
/// never concurrently with itself.
#[test]
fn occurred_vs_occurred_runs_twice_never_concurrently() {
    model(|| {
        let engine = Arc::new(Engine::with_hooks(NoHooks));
        let runs = Arc::new(AtomicUsize::new(0));
        let inside = Arc::new(AtomicBool::new(false));
        let (r, i) = (runs.clone(), inside.clone());
        let watch = engine
            .register_fd(null_fd(), Interest::READABLE, move |_| {
                assert!(!i.swap(true, Ordering::SeqCst), "ran concurrently");
                r.fetch_add(1, Ordering::SeqCst);
                i.store(false, Ordering::SeqCst);
            })
            .unwrap();
        let token = watch.token();
        let other = {
            let engine = engine.clone();
            thread::spawn(move || {
                engine
                    .occurred_fd(token, null_fd(), Readiness::READABLE)
                    .unwrap()
            })
        };
        let mine = engine
            .occurred_fd(token, null_fd(), Readiness::READABLE)
            .unwrap();
        let theirs = other.join().unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2, "{mine:?} {theirs:?}");
        assert!(mine == Occurred::Dispatched || theirs == Occurred::Dispatched);
        drop(watch);
    });
}

/// Two threads report while a third deregisters: after deregister returns
/// the callback is not running and never starts again; every report is
/// either dispatched, folded into a rerun, or stale.
#[test]
fn occurred_vs_occurred_vs_deregister() {
    model(|| {
        let engine = Arc::new(Engine::with_hooks(NoHooks));
        let dead = Arc::new(AtomicBool::new(false));
        let runs = Arc::new(AtomicUsize::new(0));
        let (d, r) = (dead.clone(), runs.clone());
        let watch = engine
            .register_fd(null_fd(), Interest::READABLE, move |_| {
                assert!(!d.load(Ordering::SeqCst), "ran after deregister returned");
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        let token = watch.token();
        let reporters: Vec<_> = (0..2)
            .map(|_| {
                let engine = engine.clone();
                thread::spawn(move || {
                    engine
                        .occurred_fd(token, null_fd(), Readiness::READABLE)
                        .unwrap()
                })
            })
            .collect();
        assert!(watch.deregister());
        dead.store(true, Ordering::SeqCst);
        let outcomes: Vec<Occurred> = reporters.into_iter().map(|h| h.join().unwrap()).collect();
        let dispatched = outcomes
            .iter()
            .filter(|o| **o == Occurred::Dispatched)
            .count();
        let deferred = outcomes
            .iter()
            .filter(|o| **o == Occurred::Deferred)
            .count();
        let stale = outcomes
            .iter()
            .filter(|o| **o == Occurred::Stale(StaleReason::Generation))
            .count();
        assert_eq!(dispatched + deferred + stale, 2, "{outcomes:?}");
        let ran = runs.load(Ordering::SeqCst);
        assert!(
            ran >= dispatched && ran <= dispatched + deferred,
            "{ran} {outcomes:?}"
        );
        assert_eq!(
            engine
                .occurred_fd(token, null_fd(), Readiness::READABLE)
                .unwrap(),
            Occurred::Stale(StaleReason::Generation)
        );
    });
}

/// A timer reported while it is cancelled: exactly one outcome.
#[test]
fn timer_fire_vs_cancel_has_exactly_one_outcome() {
    model(|| {
        let engine = Arc::new(Engine::with_hooks(NoHooks));
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let timer = engine
            .timer_after(Duration::from_secs(3600), move |_| {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        let token = timer.token();
        let fire = {
            let engine = engine.clone();
            thread::spawn(move || engine.occurred_timeout(token).unwrap())
        };
        let cancelled = timer.cancel();
        let fired = fire.join().unwrap();
        let ran = runs.load(Ordering::SeqCst);
        if cancelled {
            assert_eq!((ran, fired), (0, Occurred::Stale(StaleReason::Generation)));
        } else {
            assert_eq!((ran, fired), (1, Occurred::Dispatched));
        }
    });
}

/// A timer reported by two threads at once runs once.
#[test]
fn timer_fire_vs_fire_runs_once() {
    model(|| {
        let engine = Arc::new(Engine::with_hooks(NoHooks));
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let timer = engine
            .timer_after(Duration::from_secs(3600), move |_| {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        let token = timer.token();
        let other = {
            let engine = engine.clone();
            thread::spawn(move || engine.occurred_timeout(token).unwrap())
        };
        let a = engine.occurred_timeout(token).unwrap();
        let b = other.join().unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(
            (a == Occurred::Dispatched) != (b == Occurred::Dispatched),
            "{a:?} {b:?}"
        );
        drop(timer);
    });
}

/// One thread deregisters a watch while another registers a new one (which
/// may take the freed slot) and a third reports the old token late: the old
/// report never reaches the new registration.
#[test]
fn register_vs_reuse_never_misdelivers_old_token() {
    model(|| {
        let engine = Arc::new(Engine::with_hooks(NoHooks));
        let old = engine
            .register_fd(null_fd(), Interest::READABLE, |_| {})
            .unwrap();
        let old_token = old.token();
        let new_runs = Arc::new(AtomicUsize::new(0));
        let registrar = {
            let (engine, n) = (engine.clone(), new_runs.clone());
            thread::spawn(move || {
                drop(old);
                engine
                    .register_fd(null_fd(), Interest::READABLE, move |_| {
                        n.fetch_add(1, Ordering::SeqCst);
                    })
                    .unwrap()
            })
        };
        let late = {
            let engine = engine.clone();
            thread::spawn(move || {
                engine
                    .occurred_fd(old_token, null_fd(), Readiness::READABLE)
                    .unwrap()
            })
        };
        let outcome = late.join().unwrap();
        let new = registrar.join().unwrap();
        assert_ne!(new.token(), old_token);
        assert_eq!(
            new_runs.load(Ordering::SeqCst),
            0,
            "old token reached {:?}: {outcome:?}",
            new.token()
        );
        assert_eq!(
            engine
                .occurred_fd(old_token, null_fd(), Readiness::READABLE)
                .unwrap(),
            Occurred::Stale(StaleReason::Generation)
        );
        drop(new);
    });
}

/// Two threads deregister the same registration at once, from outside any
/// callback (one through the handle, one by token): whichever returns, the
/// callback has been dropped by then, also for the one that did not end it.
/// (An earlier one-step release freed the word before the callback was
/// dropped, and the second deregistration returned at once.)
#[test]
fn deregister_vs_deregister_both_return_after_the_callback_is_dropped() {
    model(|| {
        struct DropFlag(Arc<AtomicBool>);
        impl Drop for DropFlag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let engine = Arc::new(Engine::with_hooks(NoHooks));
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = DropFlag(dropped.clone());
        let watch = engine
            .register_fd(null_fd(), Interest::READABLE, move |_| {
                let _ = &flag;
            })
            .unwrap();
        let token = watch.token();
        let other = {
            let (engine, dropped) = (engine.clone(), dropped.clone());
            thread::spawn(move || {
                let ended = engine.deregister(token).unwrap();
                assert!(dropped.load(Ordering::SeqCst), "returned before the drop");
                ended
            })
        };
        let mine = watch.deregister();
        assert!(dropped.load(Ordering::SeqCst), "returned before the drop");
        let theirs = other.join().unwrap();
        assert!(mine != theirs, "exactly one of them ended it");
    });
}
