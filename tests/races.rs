//! Races between reports, callbacks and deregistration (DESIGN.md
//! invariants 4 and 5), with real threads, on every backend: hooks,
//! io_uring and epoll (see `common::each_backend`).

mod common;

use common::{each_backend, pair, raw, Call};
use evnexus::{Interest, Occurred, Readiness, StaleReason};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const ROUNDS: usize = if cfg!(debug_assertions) { 300 } else { 2000 };

#[test]
fn timer_delivered_twice_runs_once() {
    each_backend(|rig| {
        let engine = &rig.engine;
        let runs = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&runs);
        let timer = engine
            .timer_after(Duration::from_secs(3600), move |_| {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        let token = timer.token();
        assert_eq!(
            engine.occurred_timeout(token).unwrap(),
            Occurred::Dispatched
        );
        assert_eq!(
            engine.occurred_timeout(token).unwrap(),
            Occurred::Stale(StaleReason::Generation)
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(!timer.cancel(), "a fired timer cannot be cancelled");
        // The timer ended when it fired, once.
        let s = engine.stats();
        assert_eq!((s.dispatched, s.deregistered, s.live()), (1, 1, 0));
        if let Some(rec) = &rig.rec {
            // A timeout that occurred is over for the application: no deregister hook.
            assert!(!rec.calls().contains(&Call::TimeoutDeregister(token)));
        }
    });
}

#[test]
fn timer_delivered_by_two_threads_at_once_runs_once() {
    each_backend(|rig| {
        let engine = &rig.engine;
        for _ in 0..ROUNDS {
            let runs = Arc::new(AtomicUsize::new(0));
            let r = Arc::clone(&runs);
            let timer = engine
                .timer_after(Duration::from_secs(3600), move |_| {
                    r.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            let token = timer.token();
            let barrier = Barrier::new(2);
            let outcomes: Vec<Occurred> = thread::scope(|s| {
                let hs: Vec<_> = (0..2)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            engine.occurred_timeout(token).unwrap()
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(runs.load(Ordering::SeqCst), 1, "{outcomes:?}");
            let dispatched = outcomes
                .iter()
                .filter(|o| **o == Occurred::Dispatched)
                .count();
            assert_eq!(dispatched, 1, "{outcomes:?}");
            assert!(outcomes.contains(&Occurred::Stale(StaleReason::Generation)));
        }
    });
}

#[test]
fn cancel_vs_fire_has_exactly_one_outcome() {
    each_backend(|rig| {
        let engine = &rig.engine;
        let (mut cancelled_wins, mut fire_wins) = (0, 0);
        for _ in 0..ROUNDS {
            let runs = Arc::new(AtomicUsize::new(0));
            let r = Arc::clone(&runs);
            let timer = engine
                .timer_after(Duration::from_secs(3600), move |_| {
                    r.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            let token = timer.token();
            let barrier = Barrier::new(2);
            let (cancelled, fired) = thread::scope(|s| {
                let c = s.spawn(|| {
                    barrier.wait();
                    timer.cancel()
                });
                let f = s.spawn(|| {
                    barrier.wait();
                    engine.occurred_timeout(token).unwrap()
                });
                (c.join().unwrap(), f.join().unwrap())
            });
            let ran = runs.load(Ordering::SeqCst);
            if cancelled {
                cancelled_wins += 1;
                assert_eq!(ran, 0, "cancel returned true but the callback ran");
                assert_eq!(fired, Occurred::Stale(StaleReason::Generation));
                if let Some(rec) = &rig.rec {
                    assert!(rec.calls().contains(&Call::TimeoutDeregister(token)));
                }
            } else {
                fire_wins += 1;
                assert_eq!(
                    ran, 1,
                    "cancel returned false but the callback did not run once"
                );
                assert_eq!(fired, Occurred::Dispatched);
            }
            // Either way the timer has ended: none is left live.
            assert_eq!(engine.stats().live(), 0);
        }
        assert_eq!(cancelled_wins + fire_wins, ROUNDS);
        let s = engine.stats();
        assert_eq!(s.dispatched, fire_wins as u64);
        assert_eq!(
            (s.registered, s.deregistered),
            (ROUNDS as u64, ROUNDS as u64)
        );
        if let Some(rec) = &rig.rec {
            // Cancelled timeouts were deregistered with the application; fired ones
            // were reported by it (here, by the test), so they are its to forget.
            assert_eq!(rec.live_timeouts(), fire_wins);
        }
    });
}

#[test]
fn event_during_callback_is_rerun_not_lost() {
    each_backend(|rig| {
        let engine = &rig.engine;
        let (a, _b) = pair();
        let entered = Arc::new(Barrier::new(2));
        let release = Arc::new(Barrier::new(2));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (en, rel, s2) = (
            Arc::clone(&entered),
            Arc::clone(&release),
            Arc::clone(&seen),
        );
        let first = AtomicBool::new(true);
        let watch = engine
            .register_fd(
                raw(&a),
                Interest::READABLE | Interest::WRITABLE,
                move |ev| {
                    s2.lock()
                        .unwrap()
                        .push((thread::current().id(), ev.readiness()));
                    if first.swap(false, Ordering::SeqCst) {
                        en.wait(); // the first run is in progress...
                        rel.wait(); // ...until the other thread has reported twice
                    }
                },
            )
            .unwrap();
        let token = watch.token();
        let fd = raw(&a);
        let dispatcher = {
            let engine = &engine;
            thread::scope(|s| {
                let d = s.spawn(move || {
                    (
                        thread::current().id(),
                        engine.occurred_fd(token, fd, Readiness::READABLE).unwrap(),
                    )
                });
                entered.wait();
                // While the callback runs on the dispatcher, two more events.
                assert_eq!(
                    engine.occurred_fd(token, fd, Readiness::WRITABLE).unwrap(),
                    Occurred::Deferred
                );
                assert_eq!(
                    engine.occurred_fd(token, fd, Readiness::HANGUP).unwrap(),
                    Occurred::Deferred
                );
                release.wait();
                d.join().unwrap()
            })
        };
        assert_eq!(dispatcher.1, Occurred::Dispatched);
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.len(),
            2,
            "the two deferred events make exactly one rerun: {seen:?}"
        );
        assert!(
            seen.iter().all(|(id, _)| *id == dispatcher.0),
            "reruns on the dispatcher"
        );
        assert_eq!(seen[0].1, Readiness::READABLE);
        assert_eq!(
            seen[1].1,
            Readiness::WRITABLE | Readiness::HANGUP,
            "revents are ORed"
        );
        let s = engine.stats();
        assert_eq!((s.dispatched, s.reruns), (2, 2));
    });
}

#[test]
fn deregister_from_other_thread_waits_for_running_callback() {
    each_backend(|rig| {
        let engine = &rig.engine;
        let (a, _b) = pair();
        let entered = Arc::new(Barrier::new(2));
        let finished = Arc::new(AtomicBool::new(false));
        let (en, fin) = (Arc::clone(&entered), Arc::clone(&finished));
        let watch = engine
            .register_fd(raw(&a), Interest::READABLE, move |_| {
                en.wait();
                thread::sleep(Duration::from_millis(200));
                fin.store(true, Ordering::SeqCst);
            })
            .unwrap();
        let token = watch.token();
        let fd = raw(&a);
        thread::scope(|s| {
            let d = s.spawn(|| engine.occurred_fd(token, fd, Readiness::READABLE).unwrap());
            entered.wait();
            let t0 = Instant::now();
            assert!(watch.deregister());
            // deregister returned: the callback must have finished...
            assert!(
                finished.load(Ordering::SeqCst),
                "deregister returned while the callback ran"
            );
            assert!(t0.elapsed() >= Duration::from_millis(100));
            // ...and must never start again.
            assert_eq!(
                engine.occurred_fd(token, fd, Readiness::READABLE).unwrap(),
                Occurred::Stale(StaleReason::Generation)
            );
            assert_eq!(d.join().unwrap(), Occurred::Dispatched);
        });
        let s = engine.stats();
        assert_eq!((s.dispatched, s.deregistered, s.live()), (1, 1, 0));
        if let Some(rec) = &rig.rec {
            assert!(rec.calls().contains(&Call::FdDeregister(fd, token)));
        }
    });
}

#[test]
fn deregister_from_inside_own_callback() {
    each_backend(|rig| {
        let engine = &rig.engine;
        let (a, _b) = pair();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&runs);
        let watch = engine
            .register_fd(raw(&a), Interest::READABLE, move |ev| {
                r.fetch_add(1, Ordering::SeqCst);
                assert!(ev.deregister(), "first deregister ends the watch");
                assert!(!ev.deregister(), "second finds it ended");
                // Returning is fine: the run goes to its end.
            })
            .unwrap();
        let token = watch.token();
        assert_eq!(
            engine
                .occurred_fd(token, raw(&a), Readiness::READABLE)
                .unwrap(),
            Occurred::Dispatched
        );
        assert!(!watch.is_live());
        assert_eq!(
            engine
                .occurred_fd(token, raw(&a), Readiness::READABLE)
                .unwrap(),
            Occurred::Stale(StaleReason::Generation)
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(!watch.deregister(), "the handle finds the watch ended");
        let s = engine.stats();
        assert_eq!((s.dispatched, s.deregistered, s.live()), (1, 1, 0));
        if let Some(rec) = &rig.rec {
            assert!(rec.calls().contains(&Call::FdDeregister(raw(&a), token)));
            assert_eq!(rec.live_fds(), 0);
        }
    });
}

/// The rule: a thread that is running a callback never waits for another
/// callback. So two callbacks, running at once on two threads, that each
/// deregister the other, both return.
#[test]
fn callbacks_that_deregister_each_other_do_not_deadlock() {
    each_backend(|rig| {
        let engine = &rig.engine;
        let (a, _a2) = pair();
        let (b, _b2) = pair();
        for _ in 0..50 {
            let both_in = Arc::new(Barrier::new(2));
            let slot_a: Arc<Mutex<Option<evnexus::FdWatch>>> = Arc::default();
            let slot_b: Arc<Mutex<Option<evnexus::FdWatch>>> = Arc::default();
            let make = |other: Arc<Mutex<Option<evnexus::FdWatch>>>, bar: Arc<Barrier>| {
                move |_: &evnexus::FdEvent<'_>| {
                    bar.wait(); // both callbacks are running now
                    let w = other.lock().unwrap().take();
                    if let Some(w) = w {
                        w.deregister(); // the other's callback is running: must not wait
                    }
                }
            };
            let wa = engine
                .register_fd(
                    raw(&a),
                    Interest::READABLE,
                    make(Arc::clone(&slot_b), Arc::clone(&both_in)),
                )
                .unwrap();
            let wb = engine
                .register_fd(
                    raw(&b),
                    Interest::READABLE,
                    make(Arc::clone(&slot_a), Arc::clone(&both_in)),
                )
                .unwrap();
            let (ta, tb) = (wa.token(), wb.token());
            *slot_a.lock().unwrap() = Some(wa);
            *slot_b.lock().unwrap() = Some(wb);
            let (fa, fb) = (raw(&a), raw(&b));
            let done = Arc::new(AtomicBool::new(false));
            thread::scope(|s| {
                let d = Arc::clone(&done);
                s.spawn(move || {
                    // A watchdog, so a deadlock fails instead of hanging.
                    let t0 = Instant::now();
                    while !d.load(Ordering::SeqCst) {
                        assert!(t0.elapsed() < Duration::from_secs(20), "deadlock");
                        thread::sleep(Duration::from_millis(5));
                    }
                });
                let x = s.spawn(|| engine.occurred_fd(ta, fa, Readiness::READABLE).unwrap());
                let y = s.spawn(|| engine.occurred_fd(tb, fb, Readiness::READABLE).unwrap());
                assert_eq!(x.join().unwrap(), Occurred::Dispatched);
                assert_eq!(y.join().unwrap(), Occurred::Dispatched);
                done.store(true, Ordering::SeqCst);
            });
            for t in [ta, tb] {
                assert_eq!(
                    engine.occurred_fd(t, fa, Readiness::READABLE).unwrap(),
                    Occurred::Stale(StaleReason::Generation)
                );
            }
        }
        let s = engine.stats();
        assert_eq!((s.dispatched, s.live()), (100, 0));
        if let Some(rec) = &rig.rec {
            assert_eq!(rec.live_fds(), 0);
        }
    });
}

#[test]
fn occurred_and_deregister_race_never_runs_after_deregister_returns() {
    each_backend(|rig| {
        let engine = &rig.engine;
        let (a, _b) = pair();
        let fd = raw(&a);
        for _ in 0..ROUNDS {
            let dead = Arc::new(AtomicBool::new(false));
            let late = Arc::new(AtomicUsize::new(0));
            let (d2, l2) = (Arc::clone(&dead), Arc::clone(&late));
            let watch = engine
                .register_fd(fd, Interest::READABLE, move |_| {
                    if d2.load(Ordering::SeqCst) {
                        l2.fetch_add(1, Ordering::SeqCst);
                    }
                })
                .unwrap();
            let token = watch.token();
            let barrier = Barrier::new(3);
            thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        barrier.wait();
                        for _ in 0..20 {
                            let _ = engine.occurred_fd(token, fd, Readiness::READABLE).unwrap();
                        }
                    });
                }
                barrier.wait();
                watch.deregister();
                dead.store(true, Ordering::SeqCst);
            });
            assert_eq!(
                late.load(Ordering::SeqCst),
                0,
                "a callback ran after deregister returned"
            );
        }
    });
}
