//! The checks made when everything is quiet (after each round, every
//! thread joined): on a built-in loop, nothing live is lost (each timer
//! whose every possible deadline has passed fires, each level watch on a
//! readable fd runs, within `PAY_WITHIN` of turns of the loop); then the records, the handles, the statistics and the
//! application's loop all agree on what is live. At the end of the input,
//! every registration ends and nothing is left behind.

use super::driver::{run_once, Worker};
use super::entries::{Entry, Handle, Kind, Record, NEVER};
use super::world::World;
use crate::common::lock;
use evnexus::{Engine, Error, Interest};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A timer that must fire, or a watch that must run, in the next drive.
struct Owed {
    entry: Arc<Entry>,
    runs_before: u64,
    why: String,
}

/// How long what is owed may take to run. A turn of the loop dispatches
/// every ready watch and due timer it has heard of; but the io_uring loop
/// hears of readiness through a completion that the kernel may post late
/// (it runs as task work of the thread that submitted the wait: when that
/// thread has exited, a kernel worker posts it a tick later). Lost is what
/// has not run by then.
const PAY_WITHIN: Duration = Duration::from_millis(500);

pub(crate) fn quiescent(world: &Arc<World>, engine: &Engine) {
    if world.builtin {
        nothing_lost(world, engine);
    }
    agree(world, engine);
}

/// Built-in loops: what is due now runs in the next turns of the loop.
fn nothing_lost(world: &Arc<World>, engine: &Engine) {
    let now = Instant::now()
        .saturating_duration_since(world.t0)
        .as_nanos() as u64;
    let mut owed = Vec::new();
    for e in world.all() {
        let rec = &e.rec;
        if rec.is_dropped() {
            continue;
        }
        let values = rec.final_values();
        let runs_before = rec.runs.load(Ordering::SeqCst);
        match rec.kind {
            Kind::Timer => {
                if !values.is_empty() && values.iter().all(|&d| d <= now) {
                    let why = format!("a live timer due at {values:?} ns (now {now})");
                    owed.push(Owed {
                        entry: Arc::clone(&e),
                        runs_before,
                        why,
                    });
                }
            }
            Kind::Fd {
                pair,
                file,
                edge: false,
                ..
            } => {
                let readable = Interest::READABLE.as_poll_events() as u64;
                let p = &world.pairs[pair];
                if p.hold().file == file
                    && !values.is_empty()
                    && values.iter().all(|&v| v & readable != 0)
                    && p.is_readable()
                {
                    let why = format!(
                        "a live level watch for {values:x?} on fd {} (file {file}), readable",
                        p.fd()
                    );
                    owed.push(Owed {
                        entry: Arc::clone(&e),
                        runs_before,
                        why,
                    });
                }
            }
            Kind::Fd { edge: true, .. } => {}
        }
    }
    // Paid: it ran, or a callback of this drive ended it (by token) first.
    let paid = |o: &Owed| {
        o.entry.rec.runs.load(Ordering::SeqCst) > o.runs_before || o.entry.rec.is_dropped()
    };
    let since = Instant::now();
    let mut timeout = Duration::ZERO;
    while since.elapsed() < PAY_WITHIN {
        run_once(world, engine, Some(timeout));
        if owed.iter().all(paid) {
            return;
        }
        timeout = Duration::from_millis(1);
    }
    for o in &owed {
        assert!(
            paid(o),
            "lost: {} (token {:#x}) did not run within {PAY_WITHIN:?} of turns of the loop",
            o.why,
            o.entry.token
        );
    }
}

/// Whether the record shows a cause for its registration to have ended.
fn has_ended(rec: &Record) -> bool {
    rec.end_done.load(Ordering::SeqCst) != NEVER
        || rec.outside_end.load(Ordering::SeqCst) != NEVER
        || rec.panics.load(Ordering::SeqCst) > 0
        || rec.is_timer() && rec.runs.load(Ordering::SeqCst) > 0
}

/// Records, handles, statistics and the application's loop agree.
fn agree(world: &Arc<World>, engine: &Engine) {
    let entries = world.all();
    let made: Vec<*const Record> = entries.iter().map(|e| Arc::as_ptr(&e.rec)).collect();
    let (mut runs, mut panics) = (0, 0);
    for rec in world.all_records() {
        assert!(
            !rec.running.load(Ordering::SeqCst),
            "a callback runs at a quiet point"
        );
        let n = rec.runs.load(Ordering::SeqCst);
        runs += n;
        panics += rec.panics.load(Ordering::SeqCst);
        if !made.contains(&Arc::as_ptr(&rec)) {
            // A registration that failed, or was refused: gone at once.
            assert!(
                rec.is_dropped(),
                "a failed registration's callback was kept"
            );
            continue;
        }
        assert_eq!(
            rec.is_dropped(),
            has_ended(&rec),
            "callback dropped iff its registration ended ({:?}, runs {n})",
            rec.kind
        );
        if rec.is_timer() {
            assert!(n <= 1, "a timer ran {n} times");
            if rec.ended_by_call.load(Ordering::SeqCst) {
                assert_eq!(n, 0, "a cancelled timer fired");
            }
        }
        let gone = rec.gone_seen.load(Ordering::SeqCst);
        if gone != NEVER {
            assert!(
                rec.is_dropped(),
                "Gone or stale for a registration that never ended"
            );
            if !rec.is_timer() {
                assert!(
                    rec.may_have_ended_by(gone),
                    "Gone or stale for a watch before any end of it began"
                );
            }
        }
    }
    let mut live = 0;
    for e in &entries {
        let ended = e.rec.is_dropped();
        live += u64::from(!ended);
        let owed = e.rec.rerun_owed.load(Ordering::SeqCst);
        assert!(
            ended || owed == 0 || owed < e.rec.last_start.load(Ordering::SeqCst),
            "a report for {:#x} was Deferred at {owed}, and no run began after it",
            e.token
        );
        if let Some(t) = e.rec.seen_token.get() {
            assert_eq!(
                *t, e.token,
                "a callback saw another token than its handle's"
            );
        }
        let handle = e.handle.read().unwrap_or_else(|p| p.into_inner());
        match &*handle {
            Some(Handle::Fd(w)) => assert_eq!(w.is_live(), !ended, "is_live of {:#x}", e.token),
            Some(Handle::Timer(t)) => {
                assert_eq!(t.is_pending(), !ended, "is_pending of {:#x}", e.token)
            }
            None => {}
        }
    }
    let s = engine.stats();
    let registered = world.registered.load(Ordering::SeqCst);
    assert_eq!(s.registered, registered, "stats: registered");
    assert_eq!(s.live(), live, "stats: registered - deregistered = live");
    assert_eq!(s.dispatched, runs, "stats: dispatched = callback runs");
    assert_eq!(s.panicked, panics, "stats: panicked");
    let tally = &world.reports;
    // Relaxed: every worker has been joined (see `ReportTally`).
    let ours = |i: usize| tally.stale[i].load(Ordering::Relaxed);
    let stale = [
        s.stale.generation,
        s.stale.fd_mismatch,
        s.stale.out_of_range,
        s.stale.wrong_kind,
    ];
    let deferred = tally.deferred.load(Ordering::Relaxed);
    if let Some(h) = &world.hooks {
        // Only the workers report: every count is theirs.
        for (i, n) in stale.iter().enumerate() {
            assert_eq!(*n, ours(i), "stats: stale reports, reason {i}");
        }
        assert_eq!(s.reruns, deferred, "stats: reruns = Deferred reports");
        let st = lock(&h.0);
        let mut fds: Vec<u64> = st.fd_live.keys().copied().collect();
        let mut timers: Vec<u64> = st.timer_live.keys().copied().collect();
        fds.sort_unstable();
        timers.sort_unstable();
        let live_of = |timer: bool| {
            let mut v: Vec<u64> = entries
                .iter()
                .filter(|e| e.is_timer() == timer && !e.rec.is_dropped())
                .map(|e| e.token)
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(fds, live_of(false), "the loop's fd watches");
        assert_eq!(timers, live_of(true), "the loop's timeouts");
        assert_eq!(
            st.values_made - st.values_dropped,
            live,
            "hook values alive"
        );
        // Every injected hook failure is returned as that error, except
        // one met by a modify or reset whose registration ended meanwhile:
        // that call returns `Gone` (see `Core::modify`).
        let seen = world.injected_seen.load(Ordering::SeqCst);
        let gone = world.changes_gone.load(Ordering::SeqCst);
        assert!(
            seen <= st.injected && st.injected - seen <= gone,
            "injected hook failures {}: {seen} returned as errors, {gone} changes returned Gone",
            st.injected
        );
    } else {
        // The loop's own reports add to these.
        for (i, n) in stale.iter().enumerate() {
            assert!(*n >= ours(i), "stats: stale reports, reason {i}");
        }
        assert!(s.reruns >= deferred, "stats: reruns");
    }
}

/// The end of an input: every registration ends (the engine first, or the
/// handles first), and nothing is left: no callback, no hook value, no
/// watch in the application's loop.
pub(crate) fn end_of_input(world: Arc<World>, engine: Engine, drop_engine_first: bool) {
    if drop_engine_first {
        drop(engine);
        for e in world.all() {
            let handle = e.handle.write().unwrap_or_else(|p| p.into_inner()).take();
            match handle {
                Some(Handle::Fd(w)) => {
                    assert!(!w.is_live(), "a watch outlived its engine");
                    assert!(matches!(w.modify(Interest::READABLE), Err(Error::Gone)));
                    assert!(!w.deregister(), "deregister after the engine was dropped");
                }
                Some(Handle::Timer(t)) => {
                    assert!(!t.is_pending(), "a timer outlived its engine");
                    assert!(!t.cancel(), "cancel after the engine was dropped");
                }
                None => {}
            }
        }
    } else {
        let worker = Worker {
            world: &world,
            engine: &engine,
        };
        let n = world.all().len();
        for i in 0..n {
            worker.end_at(i, i % 2 == 0);
        }
        agree(&world, &engine);
        drop(engine);
    }
    for rec in world.all_records() {
        assert!(
            rec.is_dropped(),
            "a callback outlived the engine ({:?})",
            rec.kind
        );
    }
    if let Some(h) = &world.hooks {
        let st = lock(&h.0);
        assert!(
            st.fd_live.is_empty() && st.timer_live.is_empty(),
            "the loop still watches something"
        );
        assert_eq!(st.values_made, st.values_dropped, "hook values leaked");
    }
    lock(&world.entries).clear();
    assert_eq!(
        Arc::strong_count(&world),
        1,
        "a callback still holds the world"
    );
}
