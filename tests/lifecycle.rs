//! What a registration owns lives exactly as long as it should (DESIGN.md
//! invariant 3): the callback and what it captures are dropped once, after
//! the last run, before deregistration returns; slot memory outlives every
//! report, however late. On every backend: hooks, io_uring and epoll (see
//! `common::each_backend`).

mod common;

use common::{dups, each_backend, hooks_engine, lowest_priority, pair, pin_to_cpu0, raw};
use evnexus::{Interest, Occurred, Readiness, StaleReason};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

/// Counts its drops; asserts it is never used after being dropped.
struct Canary {
    alive: Arc<AtomicBool>,
    drops: Arc<AtomicUsize>,
}

impl Canary {
    fn new() -> (Canary, Arc<AtomicBool>, Arc<AtomicUsize>) {
        let alive = Arc::new(AtomicBool::new(true));
        let drops = Arc::new(AtomicUsize::new(0));
        (
            Canary {
                alive: Arc::clone(&alive),
                drops: Arc::clone(&drops),
            },
            alive,
            drops,
        )
    }
    fn touch(&self) {
        assert!(
            self.alive.load(Ordering::SeqCst),
            "callback state used after drop"
        );
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        assert!(self.alive.swap(false, Ordering::SeqCst), "dropped twice");
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn callback_state_is_dropped_once_after_last_dispatch() {
    each_backend(|rig| {
        let engine = &rig.engine;
        let (a, _b) = pair();
        let fd = raw(&a);
        for _ in 0..if cfg!(debug_assertions) { 200 } else { 2000 } {
            let (canary, alive, drops) = Canary::new();
            let watch = engine
                .register_fd(fd, Interest::READABLE, move |_| {
                    canary.touch();
                    thread::yield_now();
                    canary.touch();
                })
                .unwrap();
            let token = watch.token();
            let go = Barrier::new(3);
            thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        go.wait();
                        for _ in 0..10 {
                            let _ = engine.occurred_fd(token, fd, Readiness::READABLE).unwrap();
                        }
                    });
                }
                go.wait();
                watch.deregister();
                // Returned from outside any callback: the state is gone already.
                assert!(!alive.load(Ordering::SeqCst));
                assert_eq!(drops.load(Ordering::SeqCst), 1);
            });
            assert_eq!(drops.load(Ordering::SeqCst), 1);
        }
    });
}

#[test]
fn fired_timer_drops_its_callback_at_once_and_a_cancelled_one_without_running() {
    each_backend(|rig| {
        let engine = &rig.engine;
        let (canary, alive, _) = Canary::new();
        let timer = engine
            .timer_after(Duration::from_secs(60), move |_| canary.touch())
            .unwrap();
        assert!(alive.load(Ordering::SeqCst));
        assert_eq!(
            engine.occurred_timeout(timer.token()).unwrap(),
            Occurred::Dispatched
        );
        assert!(
            !alive.load(Ordering::SeqCst),
            "a one-shot callback is consumed by its run"
        );

        let (canary, alive, drops) = Canary::new();
        let timer = engine
            .timer_after(Duration::from_secs(60), move |_| canary.touch())
            .unwrap();
        assert!(timer.cancel());
        assert!(!alive.load(Ordering::SeqCst));
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn late_reports_after_heavy_reuse_read_only_live_memory() {
    // Reports for tokens of long-gone registrations, after the arena grew
    // through several pages and slots were reused many times: all stale, no
    // crash (miri and the sanitizers run this too).
    each_backend(|rig| {
        let engine = &rig.engine;
        let (a, _b) = pair();
        let mut old = Vec::new();
        for round in 0..20 {
            // A round's watches are live at once: one descriptor each, closed
            // after the watches end.
            let fds = dups(&a, 50 + round * 10);
            let watches: Vec<_> = fds
                .iter()
                .map(|fd| {
                    engine
                        .register_fd(fd.as_raw_fd(), Interest::READABLE, |_| {})
                        .unwrap()
                })
                .collect();
            old.extend(watches.iter().map(|w| w.token()));
            drop(watches);
        }
        for t in old {
            assert_eq!(
                engine.occurred_fd(t, raw(&a), Readiness::READABLE).unwrap(),
                Occurred::Stale(StaleReason::Generation)
            );
        }
    });
}

#[test]
fn dropping_callback_that_owns_its_own_handle_does_not_deadlock() {
    // The callback owns its own watch's handle; tearing the watch down drops
    // the callback, which drops the handle, which deregisters the watch
    // being torn down: that nested deregister must not wait for itself.
    each_backend(|rig| {
        let engine = &rig.engine;
        let (a, _b) = pair();
        let cell: Arc<std::sync::Mutex<Option<evnexus::FdWatch>>> = Arc::default();
        let c2 = Arc::clone(&cell);
        let watch = engine
            .register_fd(raw(&a), Interest::READABLE, move |ev| {
                let _own = &c2;
                ev.deregister();
            })
            .unwrap();
        let token = watch.token();
        *cell.lock().unwrap() = Some(watch);
        drop(cell); // now only the callback holds the handle
        assert_eq!(
            engine
                .occurred_fd(token, raw(&a), Readiness::READABLE)
                .unwrap(),
            Occurred::Dispatched
        );
        assert_eq!(
            engine
                .occurred_fd(token, raw(&a), Readiness::READABLE)
                .unwrap(),
            Occurred::Stale(StaleReason::Generation)
        );
    });
}

/// Handles keep their engine's core alive without a shared reference count:
/// each thread counts its handles on a stripe of its own, and the engine's
/// drop closes the count (`base/handles.rs`). Here four threads, two of
/// them pinned to one CPU and one of those at the lowest priority, make
/// timer and fd handles, hand some to the others, and drop them while the
/// engine is being dropped. The core (seen through the recording hooks it
/// owns) must outlive every handle, and go with the last one.
#[test]
fn the_core_outlives_handles_dropped_on_any_thread_while_the_engine_goes() {
    const PER_THREAD: usize = 2_000;
    for _round in 0..20 {
        let (engine, recorder) = hooks_engine();
        let engine = Arc::new(engine);
        let (a, _b) = pair();
        let fd = a.as_raw_fd();
        let ready = Arc::new(Barrier::new(5));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (engine, ready) = (Arc::clone(&engine), Arc::clone(&ready));
                thread::spawn(move || {
                    if t < 2 {
                        pin_to_cpu0();
                    }
                    if t == 1 {
                        lowest_priority();
                    }
                    let far = std::time::Instant::now() + Duration::from_secs(3600);
                    let mut timers: Vec<_> = (0..PER_THREAD)
                        .map(|_| engine.timer_at(far, |_| panic!("never due")).unwrap())
                        .collect();
                    let watches: Vec<_> = (0..8)
                        .map(|_| engine.register_fd(fd, Interest::READABLE, |_| {}).unwrap())
                        .collect();
                    // Half go to the main thread, to be dropped there after
                    // the engine; the rest are dropped here while the main
                    // thread drops the engine.
                    let kept = timers.split_off(PER_THREAD / 2);
                    drop(engine);
                    ready.wait();
                    drop(watches);
                    for t in timers {
                        drop(t);
                    }
                    kept
                })
            })
            .collect();
        ready.wait();
        // The last reference: the engine goes (and closes its handles'
        // count) while the threads drop theirs.
        drop(engine);
        let kept: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(
            Arc::strong_count(&recorder),
            2,
            "the core went while 4,000 handles were out"
        );
        assert!(
            kept.iter().all(|t| !t.is_pending()),
            "the engine ended them"
        );
        // Dropped on two threads at once: the last one out lets go.
        let mut kept = kept;
        let second = kept.split_off(kept.len() / 2);
        thread::scope(|s| {
            s.spawn(move || drop(second));
            s.spawn(move || drop(kept));
        });
        assert_eq!(
            Arc::strong_count(&recorder),
            1,
            "the core outlived its last handle"
        );
    }
}
