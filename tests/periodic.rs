//! Periodic timers (`Engine::timer_every`, `Engine::timer_every_at`) on
//! every backend: the application's loop (hooks, the test reporting each
//! due timeout as a loop would), io_uring, epoll and the `poll()` loop.
//! The schedule never drifts and no run is early; a loop that falls
//! behind skips runs and says so; cancelling (from another thread during a
//! run, from inside the callback, by dropping the handle, by token) stops
//! it with nothing left running and the callback dropped.

mod common;
#[path = "common/drive.rs"]
mod drive;

use common::{on_backends, Call, Rig, ALL_BACKENDS};
use drive::{try_turn, turn, turn_until};
use evnexus::{Error, Periodic, Tick, Token};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

/// How late a run may be on this loaded machine before the test calls it
/// lost rather than late.
const LATE_BOUND: Duration = Duration::from_secs(2);

/// One run, as its callback saw it.
#[derive(Clone, Copy, Debug)]
struct Run {
    index: u64,
    missed: u64,
    deadline: Instant,
    token: Token,
    /// When the callback started and when it returned.
    started: Instant,
    returned: Instant,
}

impl Run {
    fn of(tick: &Tick<'_>) -> Run {
        let now = Instant::now();
        Run {
            index: tick.index(),
            missed: tick.missed(),
            deadline: tick.deadline(),
            token: tick.token(),
            started: now,
            returned: now,
        }
    }
}

type Runs = Arc<Mutex<Vec<Run>>>;

fn runs() -> (Runs, Runs) {
    let r = Arc::new(Mutex::new(Vec::new()));
    (Arc::clone(&r), r)
}

/// Sets its flag when dropped: tells whether the callback was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn drop_flag() -> (DropFlag, Arc<AtomicBool>) {
    let f = Arc::new(AtomicBool::new(false));
    (DropFlag(Arc::clone(&f)), f)
}

fn each(test: impl Fn(&Rig)) {
    on_backends(&ALL_BACKENDS, |b| b, |rig| test(&rig));
}

/// Turns `rig`'s loop on another thread while `body` runs; stops it after.
fn with_loop_thread<R>(rig: &Rig, body: impl FnOnce() -> R) -> R {
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let driver = s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                try_turn(rig, Duration::from_millis(2)).unwrap();
            }
        });
        let out = body();
        stop.store(true, Ordering::SeqCst);
        driver.join().expect("the loop thread panicked");
        out
    })
}

#[test]
fn periodic_timer_over_1000_periods_never_runs_early_and_never_drifts() {
    each(|rig| {
        let period = Duration::from_micros(200);
        const PERIODS: u64 = 1_000;
        let (seen, record) = runs();
        let start = Instant::now();
        let timer = rig
            .engine
            .timer_every(period, move |tick| {
                record.lock().unwrap().push(Run::of(tick));
                if tick.index() + 1 >= PERIODS {
                    tick.stop();
                }
            })
            .unwrap();
        turn_until(rig, "1,000 periods", LIMIT, || !timer.is_active());
        let runs = seen.lock().unwrap().clone();
        let first = runs[0].deadline;
        assert!(first >= start + period, "the first run is a period away");
        let mut worst = Duration::ZERO;
        let mut expected_index = 0;
        for (n, run) in (1u32..).zip(&runs) {
            // The n-th run is never before start + n * period ...
            assert!(
                run.started >= start + period * n,
                "run {n} (index {}) came {:?} early",
                run.index,
                (start + period * n) - run.started
            );
            // ... nor before its own deadline, which is on the schedule:
            // first + index * period exactly, however late the runs before.
            assert!(run.started >= run.deadline, "run {n} before its deadline");
            assert_eq!(
                run.deadline,
                first + period * run.index as u32,
                "drift at run {n}"
            );
            // Every period is either run or counted as missed.
            assert_eq!(
                run.index,
                expected_index + run.missed,
                "run {n}: index vs missed"
            );
            expected_index = run.index + 1;
            worst = worst.max(run.started - run.deadline);
        }
        // The last run covers the 1,000th period (it may be past it, if
        // the periods before were skipped), and it was the first to.
        assert!(expected_index >= PERIODS);
        assert!(runs.len() < 2 || runs[runs.len() - 2].index + 1 < PERIODS);
        assert!(worst < LATE_BOUND, "a run was {worst:?} late");
        // The callback was dropped with the chain, and nothing is left.
        assert_eq!(rig.engine.stats().live(), 0);
        eprintln!(
            "{:?}: {} runs for {PERIODS} periods of {period:?}, worst lateness {worst:?}",
            rig.kind,
            runs.len()
        );
    });
}

#[test]
fn periodic_timer_that_falls_behind_skips_the_missed_runs_and_keeps_its_phase() {
    each(|rig| {
        let period = Duration::from_millis(20);
        let first = Instant::now() + period;
        let (seen, record) = runs();
        let timer = rig
            .engine
            .timer_every_at(first, period, move |tick| {
                let mut run = Run::of(tick);
                if tick.index() == 0 {
                    // A slow run: three and a half periods.
                    thread::sleep(period * 7 / 2);
                }
                run.returned = Instant::now();
                record.lock().unwrap().push(run);
                if record.lock().unwrap().len() == 3 {
                    tick.stop();
                }
            })
            .unwrap();
        turn_until(rig, "three runs", LIMIT, || !timer.is_active());
        let runs = seen.lock().unwrap().clone();
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0].index, 0);
        for pair in runs.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            // Runs due while the callback ran are skipped, and said so ...
            assert_eq!(after.index, before.index + after.missed + 1);
            // ... the next is the first still in the future when it
            // returned, on the schedule.
            assert!(after.deadline > before.returned);
            assert_eq!(after.deadline, first + period * after.index as u32);
            assert!(after.started >= after.deadline);
        }
        assert!(runs[1].missed >= 3, "3.5 periods late: {:?}", runs[1]);
    });
}

#[test]
fn cancel_from_another_thread_during_a_run_waits_for_it_and_nothing_runs_after() {
    each(|rig| {
        let period = Duration::from_millis(5);
        let running = Arc::new(AtomicBool::new(false));
        let entered = Arc::new(AtomicUsize::new(0));
        let (flag, dropped) = drop_flag();
        let timer = {
            let (running, entered) = (Arc::clone(&running), Arc::clone(&entered));
            rig.engine
                .timer_every(period, move |_| {
                    let _keep = &flag;
                    running.store(true, Ordering::SeqCst);
                    entered.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(30));
                    running.store(false, Ordering::SeqCst);
                })
                .unwrap()
        };
        with_loop_thread(rig, || {
            let end = Instant::now() + LIMIT;
            // The second run, so that a next run has been chained before.
            while entered.load(Ordering::SeqCst) < 2 || !running.load(Ordering::SeqCst) {
                assert!(Instant::now() < end, "the timer did not run");
                thread::yield_now();
            }
            assert!(timer.cancel(), "this call stopped it");
            assert!(
                !running.load(Ordering::SeqCst),
                "cancel returned during a run"
            );
            assert!(dropped.load(Ordering::SeqCst), "callback not dropped");
            let runs = entered.load(Ordering::SeqCst);
            thread::sleep(period * 10);
            assert_eq!(entered.load(Ordering::SeqCst), runs, "a run after cancel");
        });
        assert_eq!(rig.engine.stats().live(), 0);
        if let Some(rec) = &rig.rec {
            assert_eq!(rec.live_timeouts(), 0);
        }
    });
}

#[test]
fn cancel_racing_runs_from_another_thread_never_leaves_a_run_behind() {
    // A period short enough that the cancel lands at every point of a run
    // and of the registration of the next one.
    each(|rig| {
        with_loop_thread(rig, || {
            for round in 0..50u32 {
                let entered = Arc::new(AtomicUsize::new(0));
                let (flag, dropped) = drop_flag();
                let e = Arc::clone(&entered);
                let timer = rig
                    .engine
                    .timer_every(Duration::from_micros(50), move |_| {
                        let _keep = &flag;
                        e.fetch_add(1, Ordering::SeqCst);
                    })
                    .unwrap();
                thread::sleep(Duration::from_micros(u64::from(round % 7) * 100));
                timer.cancel();
                assert!(dropped.load(Ordering::SeqCst), "round {round}: not dropped");
                let runs = entered.load(Ordering::SeqCst);
                thread::sleep(Duration::from_millis(2));
                assert_eq!(entered.load(Ordering::SeqCst), runs, "round {round}");
            }
        });
        assert_eq!(rig.engine.stats().live(), 0);
    });
}

#[test]
fn cancel_or_drop_from_inside_the_callback_makes_that_run_the_last() {
    each(|rig| {
        for how in ["cancel", "drop", "stop"] {
            let handle: Arc<Mutex<Option<Periodic>>> = Arc::default();
            let entered = Arc::new(AtomicUsize::new(0));
            let (flag, dropped) = drop_flag();
            let timer = {
                let (handle, entered) = (Arc::clone(&handle), Arc::clone(&entered));
                rig.engine
                    .timer_every(Duration::from_millis(1), move |tick| {
                        let _keep = &flag;
                        if entered.fetch_add(1, Ordering::SeqCst) == 2 {
                            let own = handle.lock().unwrap().take().expect("the handle");
                            match how {
                                "cancel" => assert!(own.cancel(), "stopped by this call"),
                                "drop" => drop(own),
                                _ => {
                                    tick.stop();
                                    assert!(!own.is_active());
                                    own.detach();
                                }
                            }
                        }
                    })
                    .unwrap()
            };
            *handle.lock().unwrap() = Some(timer);
            turn_until(rig, "the callback's own cancel", LIMIT, || {
                dropped.load(Ordering::SeqCst)
            });
            for _ in 0..5 {
                turn(rig, Duration::from_millis(2));
            }
            assert_eq!(
                entered.load(Ordering::SeqCst),
                3,
                "{how}: runs after the last"
            );
            assert_eq!(rig.engine.stats().live(), 0, "{how}");
        }
    });
}

#[test]
fn dropping_the_handle_cancels_the_timer_and_drops_the_callback() {
    each(|rig| {
        let entered = Arc::new(AtomicUsize::new(0));
        let (flag, dropped) = drop_flag();
        let e = Arc::clone(&entered);
        let timer = rig
            .engine
            .timer_every(Duration::from_millis(1), move |_| {
                let _keep = &flag;
                e.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        turn_until(rig, "two runs", LIMIT, || {
            entered.load(Ordering::SeqCst) >= 2
        });
        drop(timer);
        assert!(dropped.load(Ordering::SeqCst));
        let runs = entered.load(Ordering::SeqCst);
        for _ in 0..5 {
            turn(rig, Duration::from_millis(2));
        }
        assert_eq!(entered.load(Ordering::SeqCst), runs);
        if let Some(rec) = &rig.rec {
            // The pending run's timeout was taken back from the loop.
            assert!(rec
                .calls()
                .iter()
                .any(|c| matches!(c, Call::TimeoutDeregister(_))));
            assert_eq!(rec.live_timeouts(), 0);
        }
    });
}

#[test]
fn detached_periodic_timer_runs_until_its_callback_stops_it() {
    each(|rig| {
        let (seen, record) = runs();
        let (flag, dropped) = drop_flag();
        rig.engine
            .timer_every(Duration::from_millis(1), move |tick| {
                let _keep = &flag;
                record.lock().unwrap().push(Run::of(tick));
                if tick.index() >= 4 {
                    tick.stop();
                }
            })
            .unwrap()
            .detach();
        turn_until(rig, "the detached timer", LIMIT, || {
            dropped.load(Ordering::SeqCst)
        });
        let runs = seen.lock().unwrap();
        // The chain ends at the first run whose index reaches 4: index 4
        // itself, or a later one when a slow machine skipped periods.
        let last = runs.last().expect("the detached timer never ran");
        assert!(last.index >= 4, "stopped early, at index {}", last.index);
        assert!(
            runs[..runs.len() - 1].iter().all(|r| r.index < 4),
            "a run after the one that stopped the chain: {:?}",
            runs.iter().map(|r| r.index).collect::<Vec<_>>()
        );
        // Each run had a token of its own, which is spent.
        for run in runs.iter() {
            assert!(!rig.engine.deregister(run.token).unwrap());
        }
        assert_eq!(rig.engine.stats().live(), 0);
    });
}

#[test]
fn deregister_with_a_fired_runs_token_changes_nothing() {
    each(|rig| {
        let entered = Arc::new(AtomicUsize::new(0));
        let e = Arc::clone(&entered);
        let timer = rig
            .engine
            .timer_every(Duration::from_millis(1), move |tick| {
                // This run's own timer has fired: deregistering it is a
                // no-op, and the chain goes on.
                assert!(!tick.engine().deregister(tick.token()).unwrap());
                e.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        turn_until(rig, "three runs", LIMIT, || {
            entered.load(Ordering::SeqCst) >= 3
        });
        assert!(timer.is_active());
        assert!(timer.cancel());
    });
}

#[test]
fn deregister_with_the_pending_runs_token_ends_the_periodic_timer() {
    // The application's loop sees the pending run's token (a timeout
    // registration); deregistering it by token ends the chain.
    on_backends(
        &[evnexus::BackendKind::Hooks],
        |b| b,
        |rig| {
            let rec = rig.rec.as_ref().unwrap();
            let (flag, dropped) = drop_flag();
            let timer = rig
                .engine
                .timer_every(Duration::from_secs(3600), move |_| {
                    let _keep = &flag;
                })
                .unwrap();
            let pending: Vec<Token> = rec.timeouts.lock().unwrap().keys().copied().collect();
            assert_eq!(pending.len(), 1);
            assert!(rig.engine.deregister(pending[0]).unwrap());
            assert!(dropped.load(Ordering::SeqCst));
            assert!(!timer.is_active());
            assert!(!timer.cancel(), "it had ended already");
        },
    );
}

#[test]
fn a_panicking_callback_ends_the_periodic_timer_and_is_reported() {
    each(|rig| {
        let (flag, dropped) = drop_flag();
        let timer = rig
            .engine
            .timer_every(Duration::from_millis(1), move |tick| {
                let _keep = &flag;
                if tick.index() >= 1 {
                    panic!("tick {} panics", tick.index());
                }
            })
            .unwrap();
        let end = Instant::now() + LIMIT;
        let error = loop {
            assert!(Instant::now() < end, "no panic reported");
            match try_turn(rig, Duration::from_millis(5)) {
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert!(matches!(error, Error::CallbackPanicked(_)), "{error}");
        assert!(dropped.load(Ordering::SeqCst));
        assert!(!timer.is_active());
        assert_eq!(rig.engine.stats().live(), 0);
    });
}

#[test]
fn zero_period_is_refused_and_huge_ones_are_never_due() {
    each(|rig| {
        let refused = rig.engine.timer_every(Duration::ZERO, |_| {});
        assert!(
            matches!(&refused, Err(Error::Backend(e)) if e.kind() == std::io::ErrorKind::InvalidInput),
            "{refused:?}"
        );
        assert_eq!(rig.engine.stats().live(), 0);
        let never = rig
            .engine
            .timer_every(Duration::MAX, |_| panic!("due in 584 years"))
            .unwrap();
        let far = rig
            .engine
            .timer_every_at(Instant::now(), Duration::MAX, |tick| {
                assert_eq!(tick.index(), 0, "the second run is never due");
            })
            .unwrap();
        for _ in 0..5 {
            turn(rig, Duration::from_millis(2));
        }
        assert!(never.is_active() && far.is_active());
        assert!(never.cancel() && far.cancel());
    });
}

#[test]
fn dropping_the_engine_ends_periodic_timers_and_drops_their_callbacks() {
    on_backends(
        &ALL_BACKENDS,
        |b| b,
        |rig| {
            let (flag, dropped) = drop_flag();
            let timer = rig
                .engine
                .timer_every(Duration::from_millis(1), move |_| {
                    let _keep = &flag;
                })
                .unwrap();
            drop(rig.engine);
            assert!(dropped.load(Ordering::SeqCst));
            assert!(!timer.is_active());
            assert!(!timer.cancel());
        },
    );
}
