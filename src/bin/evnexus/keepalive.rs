//! The domains' keepalives: periodic timers (`Engine::timer_every_at`),
//! what each run checks, and the cancel that checks its outcome.
//!
//! A toolstack pings each domain on a fixed schedule. Each keepalive has a
//! period of 10-40 ms; one in three stops itself from its callback after a
//! few runs ([`evnexus::Tick::stop`]); the churn thread cancels and
//! re-creates them, racing their runs on the loop or delivery threads.
//!
//! A run checks: its deadline is on the schedule (`first + index * period`
//! exactly: no drift); it is not early, and the `n`-th run is not before
//! `first + (n - 1) * period`; indices only grow, and the runs skipped in
//! between are the ones it says it missed; it does not run concurrently
//! with itself, nor after `cancel` returned; its token was never handed
//! out before. A cancel checks that the run in progress has returned and
//! the callback been dropped; a keepalive that has not run for
//! [`LOST_AFTER`] past its next due run is lost.

use crate::check::{Check, DropMark};
use crate::items::Kind;
use crate::rng::Rng;
use crate::shared::{callback_entered, Shared};
use evnexus::{Engine, Periodic, Tick};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long past its next due run a keepalive that has not run counts as
/// lost.
const LOST_AFTER: Duration = Duration::from_secs(2);

/// "No run yet" in [`KeepaliveReg::last_index`].
const NONE: u64 = u64::MAX;

/// One keepalive as the program sees it.
pub(crate) struct KeepaliveReg {
    first: Instant,
    period: Duration,
    /// Runs so far.
    runs: AtomicU64,
    /// Index of the last run ([`NONE`]: none yet).
    last_index: AtomicU64,
    running: AtomicBool,
    /// Set after `cancel` returned.
    cancelled: AtomicBool,
    /// The run after which the callback stops the timer itself (0: never).
    stop_after: u64,
    stopped_itself: AtomicBool,
    dropped: Arc<AtomicBool>,
}

impl KeepaliveReg {
    /// The deadline of run `index`.
    fn due(&self, index: u64) -> Instant {
        self.first + Duration::from_nanos((self.period.as_nanos() as u64).saturating_mul(index))
    }
}

/// A live keepalive with what its cancel checks.
pub(crate) struct KeepaliveHandle {
    timer: Periodic,
    reg: Arc<KeepaliveReg>,
}

/// Starts a keepalive.
pub(crate) fn start_keepalive(
    engine: &Engine,
    shared: &Arc<Shared>,
    rng: &mut Rng,
) -> evnexus::Result<KeepaliveHandle> {
    let period = Duration::from_micros(10_000 + rng.below(30_000));
    let first = Instant::now() + Duration::from_micros(rng.below(10_000));
    let reg = Arc::new(KeepaliveReg {
        first,
        period,
        runs: AtomicU64::new(0),
        last_index: AtomicU64::new(NONE),
        running: AtomicBool::new(false),
        cancelled: AtomicBool::new(false),
        stop_after: if rng.one_in(3) { 1 + rng.below(8) } else { 0 },
        stopped_itself: AtomicBool::new(false),
        dropped: Arc::new(AtomicBool::new(false)),
    });
    let callback = {
        let reg = Arc::clone(&reg);
        let shared = Arc::clone(shared);
        let mark = DropMark(Arc::clone(&reg.dropped));
        move |tick: &Tick<'_>| {
            let _mark = &mark;
            keepalive_ran(tick, &reg, &shared);
        }
    };
    let timer = engine.timer_every_at(first, period, callback)?;
    shared.keepalives.started.fetch_add(1, Ordering::SeqCst);
    Ok(KeepaliveHandle { timer, reg })
}

/// A keepalive's callback: checks the run, counts it, stops the timer if
/// it is its last.
fn keepalive_ran(tick: &Tick<'_>, reg: &KeepaliveReg, shared: &Shared) {
    let now = callback_entered();
    let checks = &shared.checks;
    let token = tick.token();
    if reg.running.swap(true, Ordering::SeqCst) {
        checks.fail(Check::Concurrent, || format!("keepalive run {token}"));
    }
    if reg.cancelled.load(Ordering::SeqCst) {
        checks.fail(Check::DeadDispatch, || {
            format!("keepalive run {token} after cancel() returned")
        });
    }
    // Each run is a one-shot timer of its own: a fresh token, dead once
    // it has fired (material for replays).
    if !shared.bind_token(&AtomicU64::new(0), token.as_u64()) {
        checks.fail(Check::WrongIdentity, || format!("keepalive token {token}"));
    }
    shared.bury(token.as_u64(), Kind::Timeout, -1);
    let index = tick.index();
    if tick.deadline() != reg.due(index) {
        checks.fail(Check::WrongIdentity, || {
            format!("keepalive run {index}: deadline off the schedule (drift)")
        });
    }
    let n = reg.runs.fetch_add(1, Ordering::SeqCst);
    if now < tick.deadline() || now < reg.due(n) {
        checks.fail(Check::FiredEarly, || {
            format!("keepalive run {index} (the {}th) ran early", n + 1)
        });
    }
    let last = reg.last_index.swap(index, Ordering::SeqCst);
    let expected_missed = if last == NONE {
        index
    } else if index <= last {
        checks.fail(Check::TimerTwice, || {
            format!("keepalive run {index} after run {last}")
        });
        tick.missed()
    } else {
        index - last - 1
    };
    if tick.missed() != expected_missed {
        checks.fail(Check::WrongIdentity, || {
            format!(
                "keepalive run {index}: {} missed, {expected_missed} skipped",
                tick.missed()
            )
        });
    }
    let k = &shared.keepalives;
    k.runs.fetch_add(1, Ordering::SeqCst);
    k.missed.fetch_add(tick.missed(), Ordering::SeqCst);
    k.late_ns.fetch_max(
        now.saturating_duration_since(tick.deadline()).as_nanos() as u64,
        Ordering::SeqCst,
    );
    if reg.stop_after == n + 1 {
        reg.stopped_itself.store(true, Ordering::SeqCst);
        tick.stop();
    }
    reg.running.store(false, Ordering::SeqCst);
}

/// Cancels a keepalive from outside any callback and checks the outcome.
/// Returns `true` for a lost keepalive (it stopped running).
pub(crate) fn retire_keepalive(h: KeepaliveHandle, shared: &Shared) -> bool {
    let KeepaliveHandle { timer, reg } = h;
    let checks = &shared.checks;
    let cancelled = timer.cancel();
    reg.cancelled.store(true, Ordering::SeqCst);
    let k = &shared.keepalives;
    if cancelled {
        k.cancelled.fetch_add(1, Ordering::SeqCst);
    } else if !reg.stopped_itself.load(Ordering::SeqCst) {
        // Nothing else stops a keepalive here (no panic, no deregister by
        // token, the engine still alive).
        checks.fail(Check::CancelOutcome, || {
            "keepalive cancel() returned false but it never stopped itself".to_owned()
        });
    }
    if reg.running.load(Ordering::SeqCst) || !reg.dropped.load(Ordering::SeqCst) {
        checks.fail(Check::NotQuiesced, || {
            "keepalive still running or not dropped after cancel returned".to_owned()
        });
    }
    if !cancelled {
        return false;
    }
    let last = reg.last_index.load(Ordering::SeqCst);
    let next = if last == NONE { 0 } else { last + 1 };
    Instant::now().saturating_duration_since(reg.due(next)) > LOST_AFTER
}

/// What the keepalives did, across the run.
#[derive(Default)]
pub(crate) struct KeepaliveCounts {
    started: AtomicU64,
    runs: AtomicU64,
    missed: AtomicU64,
    cancelled: AtomicU64,
    late_ns: AtomicU64,
}

/// [`KeepaliveCounts`] once every thread that runs or cancels keepalives
/// has stopped.
#[derive(Clone, Copy)]
pub(crate) struct KeepaliveTotals {
    pub(crate) started: u64,
    /// Callback runs.
    pub(crate) runs: u64,
    /// Periods skipped because a run came after they were due.
    pub(crate) missed: u64,
    /// `cancel()` returned true: it stopped the keepalive.
    pub(crate) cancelled: u64,
    /// The latest a run started after its deadline.
    pub(crate) worst_late: Duration,
}

impl KeepaliveCounts {
    pub(crate) fn totals(&self) -> KeepaliveTotals {
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        KeepaliveTotals {
            started: get(&self.started),
            runs: get(&self.runs),
            missed: get(&self.missed),
            cancelled: get(&self.cancelled),
            worst_late: Duration::from_nanos(get(&self.late_ns)),
        }
    }
}
