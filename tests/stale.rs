//! Stale and forged tokens (DESIGN.md invariants 1, 2 and 7), on every
//! backend: hooks, io_uring and epoll (see `common::each_backend`).

mod common;

use common::{
    counting_fd_callback, dup, dups, each_backend, each_backend_with, pair, raw, Call, Rig,
};
use evnexus::{Generation, Interest, Occurred, Readiness, StaleReason, Token};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn report_after_deregister_is_stale() {
    each_backend(|rig| {
        let engine = &rig.engine;
        let (a, _b) = pair();
        let (runs, cb) = counting_fd_callback();
        let watch = engine.register_fd(raw(&a), Interest::READABLE, cb).unwrap();
        let token = watch.token();
        assert_eq!(
            engine
                .occurred_fd(token, raw(&a), Readiness::READABLE)
                .unwrap(),
            Occurred::Dispatched
        );
        assert!(watch.deregister());
        assert_eq!(
            engine
                .occurred_fd(token, raw(&a), Readiness::READABLE)
                .unwrap(),
            Occurred::Stale(StaleReason::Generation)
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(engine.stats().stale.generation, 1);
    });
}

#[test]
fn stale_token_after_slot_reuse_on_same_fd_is_rejected() {
    // The first watch ends before the second is made, on the same fd
    // number: on the loop backends the fd leaves the epoll set and enters
    // it again.
    each_backend(|rig| {
        let engine = &rig.engine;
        let (a, _b) = pair();
        let (old_runs, old_cb) = counting_fd_callback();
        let old = engine
            .register_fd(raw(&a), Interest::READABLE, old_cb)
            .unwrap();
        let old_token = old.token();
        drop(old);
        // Same fd number, and (with one slot free) the same slot, new generation.
        let (new_runs, new_cb) = counting_fd_callback();
        let new = engine
            .register_fd(raw(&a), Interest::READABLE, new_cb)
            .unwrap();
        assert_eq!(
            new.token().index(),
            old_token.index(),
            "the slot was reused"
        );
        assert_ne!(new.token(), old_token);
        assert_eq!(
            engine
                .occurred_fd(old_token, raw(&a), Readiness::READABLE)
                .unwrap(),
            Occurred::Stale(StaleReason::Generation)
        );
        assert_eq!(old_runs.load(Ordering::SeqCst), 0);
        assert_eq!(
            new_runs.load(Ordering::SeqCst),
            0,
            "the old report reached the new registration"
        );
        assert_eq!(
            engine
                .occurred_fd(new.token(), raw(&a), Readiness::READABLE)
                .unwrap(),
            Occurred::Dispatched
        );
        assert_eq!(new_runs.load(Ordering::SeqCst), 1);
        // The first registration ended before the second was made.
        let s = engine.stats();
        assert_eq!((s.registered, s.deregistered), (2, 1));
        if let Some(rec) = &rig.rec {
            // The application saw the first registration end before the second.
            let calls = rec.calls();
            assert!(matches!(calls[1], Call::FdDeregister(_, t) if t == old_token));
            assert!(matches!(calls[2], Call::FdRegister(_, _, t) if t == new.token()));
        }
    });
}

/// xorshift64*: enough randomness for tokens, no dependency.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_tokens_never_dispatch() {
    each_backend(|rig| {
        let engine = &rig.engine;
        let (a, _b) = pair();
        // One descriptor per registration: 200 of them are live at once.
        let fds = dups(&a, 300);
        // A populated arena, so random indices hit real slots too: 100 live fd
        // watches, 100 live timers, 100 dead registrations.
        let mut live = Vec::new();
        let mut runs = Vec::new();
        for (i, fd) in fds.iter().enumerate() {
            let (r, cb) = counting_fd_callback();
            runs.push(r);
            if i % 3 == 0 {
                live.push(Some(
                    engine
                        .register_fd(fd.as_raw_fd(), Interest::READABLE, cb)
                        .unwrap(),
                ));
            } else {
                let w = engine
                    .register_fd(fd.as_raw_fd(), Interest::READABLE, cb)
                    .unwrap();
                if i % 3 == 1 {
                    drop(w);
                } else {
                    live.push(Some(w));
                }
            }
        }
        let live_tokens: std::collections::HashSet<u64> =
            live.iter().flatten().map(|w| w.token().as_u64()).collect();
        let mut next = rng(0x9e37_79b9_7f4a_7c15);
        let mut stale = 0u64;
        let mut tried = 0u64;
        while tried < 1_000_000 {
            let raw_token = match tried % 4 {
                // Any u64.
                0 => next(),
                // Index in the populated range, random generation.
                1 => (next() & !0xff_ffff) | (next() % 512),
                // Index in range, small generation (as a real stale token has).
                2 => ((next() % 8) << 24) | (next() % 512),
                // Index in range, generation zero.
                _ => next() % 512,
            };
            if live_tokens.contains(&raw_token) {
                continue; // vanishingly rare; a live token is not a forgery
            }
            tried += 1;
            let t = Token::from_u64(raw_token);
            match engine.occurred_fd(t, raw(&a), Readiness::READABLE).unwrap() {
                Occurred::Stale(_) => stale += 1,
                other => panic!("random token {t:?} gave {other:?}"),
            }
            match engine.occurred_timeout(t).unwrap() {
                Occurred::Stale(_) => stale += 1,
                other => panic!("random token {t:?} fired a timer: {other:?}"),
            }
        }
        assert_eq!(stale, 2_000_000);
        assert!(runs.iter().all(|r| r.load(Ordering::SeqCst) == 0));
        let s = engine.stats();
        assert_eq!(s.dispatched, 0);
        assert_eq!(s.stale.total(), 2_000_000);
        assert!(s.stale.out_of_range > 0 && s.stale.generation > 0);
        drop(live); // before the descriptors close
    });
}

#[test]
fn out_of_range_token_is_rejected_without_touching_memory() {
    each_backend(|rig| {
        let engine = &rig.engine;
        // Nothing was ever registered: no page exists at all.
        for raw_token in [0, 1, u64::MAX, (1 << 24) | 5, (7 << 24) | 0xff_ffff] {
            assert_eq!(
                engine.occurred_timeout(Token::from_u64(raw_token)).unwrap(),
                Occurred::Stale(StaleReason::OutOfRange),
                "{raw_token:#x}"
            );
        }
        assert_eq!(engine.stats().stale.out_of_range, 5);
    });
}

#[test]
fn occurred_with_wrong_fd_is_stale() {
    each_backend(|rig| {
        let engine = &rig.engine;
        let (a, b) = pair();
        let (runs, cb) = counting_fd_callback();
        let watch = engine.register_fd(raw(&a), Interest::READABLE, cb).unwrap();
        assert_eq!(
            engine
                .occurred_fd(watch.token(), raw(&b), Readiness::READABLE)
                .unwrap(),
            Occurred::Stale(StaleReason::FdMismatch)
        );
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        assert_eq!(engine.stats().stale.fd_mismatch, 1);
    });
}

#[test]
fn timer_token_reported_as_fd_and_fd_token_as_timer_are_wrong_kind() {
    each_backend(|rig| {
        let engine = &rig.engine;
        let (a, _b) = pair();
        let (runs, cb) = counting_fd_callback();
        let watch = engine.register_fd(raw(&a), Interest::READABLE, cb).unwrap();
        let timer = engine
            .timer_after(Duration::from_secs(60), |_| panic!("must not fire"))
            .unwrap();
        assert_eq!(
            engine.occurred_timeout(watch.token()).unwrap(),
            Occurred::Stale(StaleReason::WrongKind)
        );
        assert_eq!(
            engine
                .occurred_fd(timer.token(), raw(&a), Readiness::READABLE)
                .unwrap(),
            Occurred::Stale(StaleReason::WrongKind)
        );
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        assert!(timer.is_pending());
        assert_eq!(engine.stats().stale.wrong_kind, 2);
    });
}

#[test]
fn recheck_suppresses_condition_that_no_longer_holds() {
    each_backend_with(
        |b| b.recheck_fds(true),
        |rig| {
            let engine = &rig.engine;
            let (a, b) = pair();
            let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            let s2 = Arc::clone(&seen);
            let watch = engine
                .register_fd(raw(&a), Interest::READABLE, move |ev| {
                    s2.lock().unwrap().push(ev.readiness())
                })
                .unwrap();
            // Nothing to read: the application's report is out of date.
            assert_eq!(
                engine
                    .occurred_fd(watch.token(), raw(&a), Readiness::READABLE)
                    .unwrap(),
                Occurred::Suppressed
            );
            assert!(seen.lock().unwrap().is_empty());
            std::io::Write::write_all(&mut &b, b"x").unwrap();
            assert_eq!(
                engine
                    .occurred_fd(watch.token(), raw(&a), Readiness::READABLE)
                    .unwrap(),
                Occurred::Dispatched
            );
            assert!(seen.lock().unwrap()[0].is_readable());
            assert_eq!(engine.stats().recheck_suppressed, 1);
            // Without the option, the same out-of-date report is dispatched: the
            // generation check does not need the fd check.
            let plain = Rig::new(rig.kind, |b| b);
            let plain = &plain.engine;
            let (c, _d) = pair();
            let (runs, cb) = counting_fd_callback();
            let w = plain.register_fd(raw(&c), Interest::READABLE, cb).unwrap();
            assert_eq!(
                plain
                    .occurred_fd(w.token(), raw(&c), Readiness::READABLE)
                    .unwrap(),
                Occurred::Dispatched
            );
            assert_eq!(runs.load(Ordering::SeqCst), 1);
        },
    );
}

#[test]
fn slot_is_retired_at_max_generation_not_wrapped() {
    let near_max = Generation::new(Generation::MAX.get() - 1).unwrap();
    each_backend_with(
        |b| b.first_generation(near_max),
        |rig| {
            let engine = &rig.engine;
            let (a, _b) = pair();
            // The churn below runs while `third` watches `a`.
            let churn_fd = dup(&a);
            let first = engine
                .register_fd(raw(&a), Interest::READABLE, |_| {})
                .unwrap();
            let t1 = first.token();
            assert_eq!(t1.generation(), Some(near_max));
            drop(first);
            let second = engine
                .register_fd(raw(&a), Interest::READABLE, |_| {})
                .unwrap();
            let t2 = second.token();
            assert_eq!(t2.index(), t1.index(), "reused once more");
            assert_eq!(t2.generation(), Some(Generation::MAX));
            drop(second);
            // The slot reached the maximum: retired, not wrapped to generation 1.
            let third = engine
                .register_fd(raw(&a), Interest::READABLE, |_| {})
                .unwrap();
            assert_ne!(
                third.token().index(),
                t1.index(),
                "a retired slot was reused"
            );
            assert_eq!(engine.stats().retired_slots, 1);
            for old in [t1, t2] {
                assert_eq!(
                    engine
                        .occurred_fd(old, raw(&a), Readiness::READABLE)
                        .unwrap(),
                    Occurred::Stale(StaleReason::Generation)
                );
            }
            // Nothing can make a generation-1 token for the retired index match.
            let wrapped = Token::from_u64((1 << 24) | t1.index() as u64);
            assert_eq!(
                engine
                    .occurred_fd(wrapped, raw(&a), Readiness::READABLE)
                    .unwrap(),
                Occurred::Stale(StaleReason::Generation)
            );
            // Churn on: the retired slot stays out of circulation.
            for _ in 0..100 {
                let w = engine
                    .register_fd(churn_fd.as_raw_fd(), Interest::READABLE, |_| {})
                    .unwrap();
                assert_ne!(w.token().index(), t1.index());
            }
            drop(third);
        },
    );
}
