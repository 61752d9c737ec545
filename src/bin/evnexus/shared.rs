//! What the program shares with its callbacks, and the per-thread counts
//! that callbacks keep (runs, write latency).

use crate::channels::WatchReg;
use crate::check::{Checks, TokenLedger};
use crate::heartbeats::{FiredWindow, TimerHandle, TimerReg};
use crate::hist::Hist;
use crate::items::{DeadTokens, Kind};
use crate::keepalive::KeepaliveCounts;
use crate::lock;
use crossbeam_queue::SegQueue;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

thread_local! {
    /// When the first callback run of the current occurred call started.
    pub(crate) static CB_START: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Callback runs on this thread (compared with the engine's count).
    pub(crate) static CB_RUNS: Cell<u64> = const { Cell::new(0) };
    /// Timer callback runs on this thread.
    pub(crate) static TIMER_RUNS: Cell<u64> = const { Cell::new(0) };
    /// Traffic write -> callback start, for the callbacks run on this
    /// thread; merged into `Shared::write_latency` by `flush_latency`.
    static WRITE_LAT: RefCell<Option<Box<Hist>>> = const { RefCell::new(None) };
}

pub(crate) fn record_write_latency(d: Duration) {
    WRITE_LAT.with(|h| {
        h.borrow_mut()
            .get_or_insert_with(|| Box::new(Hist::new()))
            .record(d);
    });
}

/// Hands this thread's write -> callback latencies to `shared`.
pub(crate) fn flush_latency(shared: &Shared) {
    if let Some(h) = WRITE_LAT.with(|h| h.borrow_mut().take()) {
        lock(&shared.write_latency).merge(&h);
    }
}

/// Counts a callback run on this thread; returns when it started.
pub(crate) fn callback_entered() -> Instant {
    let now = Instant::now();
    CB_START.with(|c| {
        if c.get().is_none() {
            c.set(Some(now));
        }
    });
    CB_RUNS.with(|c| c.set(c.get() + 1));
    now
}

/// What the program shares with its callbacks (never the engine: a
/// callback gets that from its event).
///
/// Every collection here is bounded by the live registrations or by a
/// fixed window, never by the run time: a soak of hours measures the
/// engine, not this bookkeeping.
pub(crate) struct Shared {
    pub(crate) base: Instant,
    /// The engine runs its own loop (uring, epoll): timers must never fire
    /// early, and dead tokens are remembered here rather than by hooks.
    pub(crate) builtin: bool,
    pub(crate) checks: Checks,
    /// Every token handed out, by slot index: catches a token handed out
    /// twice however far apart.
    pub(crate) ledger: TokenLedger,
    /// Heartbeats stop re-arming.
    pub(crate) stopping: AtomicBool,
    /// Tokens of the most recent timer fires (a bounded window).
    pub(crate) fired: Mutex<FiredWindow>,
    /// Heartbeat timers armed by a callback whose own handle the churn
    /// thread had taken meanwhile: the churn thread cancels them.
    pub(crate) orphans: SegQueue<TimerHandle>,
    /// Successful registrations (fd watches and timers).
    pub(crate) registrations: AtomicU64,
    pub(crate) timers_armed: AtomicU64,
    /// Live registrations by token, so that a delivery thread can tell a
    /// rejected report of a live registration (a lost event) from a report
    /// that went stale. A watch leaves its map when it is deregistered, a
    /// timer when it fires or is cancelled.
    pub(crate) watch_regs: Mutex<HashMap<u64, Arc<WatchReg>>>,
    pub(crate) timer_regs: Mutex<HashMap<u64, Arc<TimerReg>>>,
    /// Genuine reports of live fd watches (not being deregistered) that
    /// the engine rejected: lost events.
    pub(crate) lost_reports: AtomicU64,
    /// Timers that ran before the deadline they had been reset to (the
    /// loop had reported the old deadline: allowed by the hooks contract).
    pub(crate) early_after_reset: AtomicU64,
    /// Timers whose `cancel()` returned true.
    pub(crate) timers_cancelled: AtomicU64,
    /// What the keepalives (periodic timers) did.
    pub(crate) keepalives: KeepaliveCounts,
    /// Built-in loop: tokens of registrations that have ended (watches
    /// after deregister returned, timers once fired or cancelled), the
    /// injector's material for replays.
    pub(crate) graveyard: Mutex<DeadTokens>,
    /// Traffic write -> callback start, merged from every thread.
    pub(crate) write_latency: Mutex<Hist>,
}

impl Shared {
    pub(crate) fn new(builtin: bool) -> Shared {
        Shared {
            base: Instant::now(),
            builtin,
            checks: Checks::new(),
            ledger: TokenLedger::default(),
            stopping: AtomicBool::new(false),
            fired: Mutex::new(FiredWindow::default()),
            orphans: SegQueue::new(),
            registrations: AtomicU64::new(0),
            timers_armed: AtomicU64::new(0),
            watch_regs: Mutex::new(HashMap::new()),
            timer_regs: Mutex::new(HashMap::new()),
            lost_reports: AtomicU64::new(0),
            early_after_reset: AtomicU64::new(0),
            timers_cancelled: AtomicU64::new(0),
            keepalives: KeepaliveCounts::default(),
            graveyard: Mutex::new(DeadTokens::default()),
            write_latency: Mutex::new(Hist::new()),
        }
    }
    /// `at` as nanoseconds after `base`.
    pub(crate) fn since_base(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }
    /// The instant `ns` nanoseconds after `base`.
    pub(crate) fn at(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }
    /// Binds a registration's token cell (see [`TokenLedger::bind`]).
    pub(crate) fn bind_token(&self, cell: &AtomicU64, token: u64) -> bool {
        self.ledger.bind(cell, token, &self.checks)
    }
    /// Remembers an ended registration's token (built-in loop only; with
    /// hooks the application loop learns of ended registrations itself).
    pub(crate) fn bury(&self, token: u64, kind: Kind, fd: RawFd) {
        if self.builtin {
            lock(&self.graveyard).bury(token, kind, fd);
        }
    }
}
