//! The delivery threads: each hands its queue's reports to `occurred_*` and
//! records what became of each, checking that only genuine and duplicated
//! reports are dispatched and that no live registration loses its event.

use crate::app_loop::AppLoop;
use crate::check::Check;
use crate::hist::Hist;
use crate::items::{Item, Kind, Origin, Sink, ORIGINS, ORIGIN_NAMES};
use crate::lock;
use crate::shared::{flush_latency, Shared, CB_RUNS, CB_START};
use evnexus::{Engine, Occurred, StaleReason, Token};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

/// What became of a report: the index of an `occurred_*` outcome.
const OUTCOMES: usize = 8;
pub(crate) const OUT_DISPATCHED: usize = 0;
pub(crate) const OUT_DEFERRED: usize = 1;
pub(crate) const OUT_SUPPRESSED: usize = 2;
pub(crate) const OUT_STALE_GENERATION: usize = 3;
pub(crate) const OUT_STALE_FD: usize = 4;
pub(crate) const OUT_STALE_RANGE: usize = 5;
pub(crate) const OUT_STALE_KIND: usize = 6;
const OUT_ERROR: usize = 7;

/// The outcome index of `r`.
fn classify(r: &evnexus::Result<Occurred>) -> usize {
    match r {
        Ok(Occurred::Dispatched) => OUT_DISPATCHED,
        Ok(Occurred::Deferred) => OUT_DEFERRED,
        Ok(Occurred::Suppressed) => OUT_SUPPRESSED,
        Ok(Occurred::Stale(StaleReason::Generation)) => OUT_STALE_GENERATION,
        Ok(Occurred::Stale(StaleReason::FdMismatch)) => OUT_STALE_FD,
        Ok(Occurred::Stale(StaleReason::OutOfRange)) => OUT_STALE_RANGE,
        Ok(Occurred::Stale(StaleReason::WrongKind)) => OUT_STALE_KIND,
        Err(_) => OUT_ERROR,
    }
}

/// What one delivery thread (or the teardown sweep) handed the engine and
/// what became of it.
pub(crate) struct Tally {
    pub(crate) outcomes: [[u64; OUTCOMES]; ORIGINS],
    pub(crate) timer_dispatches: u64,
    pub(crate) late_delivered: u64,
    pub(crate) on_time: Hist,
    pub(crate) late: Hist,
    pub(crate) callback_runs: u64,
}

impl Tally {
    pub(crate) fn new() -> Tally {
        Tally {
            outcomes: [[0; OUTCOMES]; ORIGINS],
            timer_dispatches: 0,
            late_delivered: 0,
            on_time: Hist::new(),
            late: Hist::new(),
            callback_runs: 0,
        }
    }
    pub(crate) fn merge(&mut self, o: &Tally) {
        for (a, b) in self.outcomes.iter_mut().zip(&o.outcomes) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        self.timer_dispatches += o.timer_dispatches;
        self.late_delivered += o.late_delivered;
        self.on_time.merge(&o.on_time);
        self.late.merge(&o.late);
        self.callback_runs += o.callback_runs;
    }
    pub(crate) fn calls(&self) -> u64 {
        self.outcomes.iter().flatten().sum()
    }
    pub(crate) fn outcome(&self, o: usize) -> u64 {
        self.outcomes.iter().map(|row| row[o]).sum()
    }
}

/// Hands one report to the engine and records what became of it. `app`
/// is the application loop (hooks backend only).
pub(crate) fn deliver(
    engine: &Engine,
    app: Option<&AppLoop>,
    shared: &Shared,
    item: Item,
    tally: &mut Tally,
) {
    CB_START.with(|c| c.set(None));
    let token = Token::from_u64(item.token);
    let r = match item.kind {
        Kind::Fd => engine.occurred_fd(token, item.fd, item.revents),
        Kind::Timeout => engine.occurred_timeout(token),
    };
    let o = classify(&r);
    tally.outcomes[item.origin as usize][o] += 1;
    if item.late {
        tally.late_delivered += 1;
    }
    let started = CB_START.with(Cell::take);
    // With hooks, the latency from the loop's detection to the callback;
    // a built-in loop's racing reports were never detected by anyone.
    if let Some(start) = started.filter(|_| app.is_some()) {
        let hist = if item.late {
            &mut tally.late
        } else {
            &mut tally.on_time
        };
        hist.record(start.saturating_duration_since(item.detected));
    }
    let checks = &shared.checks;
    match o {
        OUT_DISPATCHED | OUT_DEFERRED => {
            if !matches!(item.origin, Origin::Genuine | Origin::Duplicate) {
                checks.fail(Check::BadTokenAccepted, || {
                    format!(
                        "{} ({token}, {:?}, fd {}) was {r:?}",
                        ORIGIN_NAMES[item.origin as usize], item.kind, item.fd
                    )
                });
            }
            if item.kind == Kind::Timeout && o == OUT_DISPATCHED {
                tally.timer_dispatches += 1;
                // Fired (its callback took it out of `timer_regs`): the
                // token is dead now, material for replays.
                if let Some(app) = app {
                    lock(&app.reg).dead.bury(item.token, Kind::Timeout, -1);
                }
            }
        }
        OUT_SUPPRESSED | OUT_ERROR => {
            checks.fail(Check::Unexpected, || format!("occurred for {token}: {r:?}"));
        }
        // Stale. For a genuine report that is right only if the
        // registration has ended (or is being ended) meanwhile.
        _ if matches!(item.origin, Origin::Genuine | Origin::Duplicate) => match item.kind {
            Kind::Fd => {
                let reg = lock(&shared.watch_regs).get(&item.token).cloned();
                if reg.is_some_and(|reg| !reg.retiring.load(Ordering::SeqCst)) {
                    shared.lost_reports.fetch_add(1, Ordering::SeqCst);
                }
            }
            Kind::Timeout => {
                // Judged when the timer is cancelled: only a timer that
                // then turns out never to have fired lost its event.
                let reg = lock(&shared.timer_regs).get(&item.token).cloned();
                if let Some(reg) = reg {
                    if !reg.cancel_started.load(Ordering::SeqCst) {
                        reg.lost_report.store(true, Ordering::SeqCst);
                    }
                }
            }
        },
        _ => {}
    }
    if let (Some(inflight), Some(app)) = (item.inflight, app) {
        if inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            app.wake();
        }
    }
}

pub(crate) fn delivery_thread(
    k: usize,
    engine: &Engine,
    app: Option<&AppLoop>,
    shared: &Shared,
    sink: &Sink,
    stop: &AtomicBool,
    counter: &AtomicU64,
) -> Tally {
    let mut tally = Tally::new();
    let queue = &sink.queues[k];
    let mut n = 0u64;
    let runs_before = CB_RUNS.with(Cell::get);
    loop {
        if let Some(item) = queue.pop() {
            deliver(engine, app, shared, item, &mut tally);
            n += 1;
            // Relaxed: read only for the progress line.
            counter.store(n, Ordering::Relaxed);
            continue;
        }
        if stop.load(Ordering::SeqCst) {
            if queue.is_empty() {
                break;
            }
            continue;
        }
        thread::park_timeout(Duration::from_millis(20));
    }
    tally.callback_runs = CB_RUNS.with(Cell::get) - runs_before;
    flush_latency(shared);
    tally
}
