//! Fire-and-forget one-shot timers (`Engine::timer_at_detached`,
//! `Engine::timer_after_detached`) on every backend: hooks, io_uring and
//! epoll. No handle is kept; the timer runs once, or is cancelled by token,
//! and its callback (with everything it captured) is dropped either way.

mod common;
#[path = "common/drive.rs"]
mod drive;

use common::{each_backend, each_backend_owned, on_backends, Call, LOOP_BACKENDS};
use drive::{turn, turn_until};
use evnexus::{Occurred, StaleReason};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(5);

/// Sets its flag when dropped: tells whether a callback's captures went.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn flag() -> (DropFlag, Arc<AtomicBool>) {
    let f = Arc::new(AtomicBool::new(false));
    (DropFlag(Arc::clone(&f)), f)
}

#[test]
fn detached_timer_runs_once_at_or_after_its_deadline_without_a_handle() {
    each_backend(|rig| {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let (drop_flag, dropped) = flag();
        let start = Instant::now();
        let delay = Duration::from_millis(20);
        let token = rig
            .engine
            .timer_after_detached(delay, move |ev| {
                let _keep = &drop_flag;
                assert!(Instant::now() >= ev.deadline(), "never early");
                counted.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        turn_until(rig, "the detached timer", LIMIT, || {
            runs.load(Ordering::SeqCst) == 1
        });
        assert!(start.elapsed() >= delay);
        assert!(
            dropped.load(Ordering::SeqCst),
            "callback dropped after its run"
        );
        // It does not run again, and its token names nothing any more.
        for _ in 0..3 {
            turn(rig, Duration::from_millis(5));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(
            rig.engine.occurred_timeout(token).unwrap(),
            Occurred::Stale(StaleReason::Generation)
        );
        assert!(!rig.engine.deregister(token).unwrap());
    });
}

#[test]
fn detached_timer_at_a_past_instant_is_due_at_once() {
    each_backend(|rig| {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        rig.engine
            .timer_at_detached(Instant::now() - Duration::from_secs(1), move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        turn_until(rig, "the past-due timer", LIMIT, || {
            runs.load(Ordering::SeqCst) == 1
        });
    });
}

#[test]
fn detached_timer_is_cancelled_by_its_token_and_its_callback_dropped() {
    each_backend(|rig| {
        let (drop_flag, dropped) = flag();
        let token = rig
            .engine
            .timer_after_detached(Duration::from_millis(10), move |_| {
                let _keep = &drop_flag;
                panic!("a cancelled timer must not run");
            })
            .unwrap();
        assert!(
            !dropped.load(Ordering::SeqCst),
            "pending: the engine keeps it"
        );
        assert!(
            rig.engine.deregister(token).unwrap(),
            "cancelled before it fired"
        );
        assert!(
            dropped.load(Ordering::SeqCst),
            "callback dropped at cancellation"
        );
        if let Some(rec) = &rig.rec {
            assert!(rec.calls().contains(&Call::TimeoutDeregister(token)));
            assert_eq!(rec.live_timeouts(), 0);
        }
        // Well past the deadline: nothing runs.
        let end = Instant::now() + Duration::from_millis(50);
        while Instant::now() < end {
            assert_eq!(turn(rig, Duration::from_millis(10)), 0);
        }
        assert!(!rig.engine.deregister(token).unwrap(), "cancelled once");
    });
}

#[test]
fn dropping_the_engine_drops_pending_detached_timers() {
    each_backend_owned(|rig| {
        let (drop_flag, dropped) = flag();
        let token = rig
            .engine
            .timer_after_detached(Duration::MAX, move |_| {
                let _keep = &drop_flag;
            })
            .unwrap();
        let rec = rig.rec.clone();
        drop(rig.engine);
        assert!(dropped.load(Ordering::SeqCst));
        if let Some(rec) = rec {
            assert!(rec.calls().contains(&Call::TimeoutDeregister(token)));
        }
    });
}

#[test]
fn detached_timers_made_while_the_loop_runs_elsewhere_each_run_exactly_once() {
    // Due at once, registered from this thread while another thread runs
    // the loop: a timer may fire before its registration has returned (and
    // before its handle is put away). Each must run once, none be lost.
    const N: usize = 2_000;
    on_backends(
        &LOOP_BACKENDS,
        |b| b,
        |rig| {
            let engine = &rig.engine;
            let runs: Arc<Vec<AtomicUsize>> =
                Arc::new((0..N).map(|_| AtomicUsize::new(0)).collect());
            let total = Arc::new(AtomicUsize::new(0));
            std::thread::scope(|s| {
                s.spawn(|| engine.run().unwrap());
                for i in 0..N {
                    let (runs, total) = (Arc::clone(&runs), Arc::clone(&total));
                    engine
                        .timer_after_detached(Duration::ZERO, move |_| {
                            runs[i].fetch_add(1, Ordering::SeqCst);
                            total.fetch_add(1, Ordering::SeqCst);
                        })
                        .unwrap();
                }
                let end = Instant::now() + LIMIT;
                while total.load(Ordering::SeqCst) < N && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(1));
                }
                engine.stop();
            });
            assert!(runs.iter().all(|r| r.load(Ordering::SeqCst) == 1));
            assert_eq!(rig.engine.stats().live(), 0, "no registration left behind");
        },
    );
}
