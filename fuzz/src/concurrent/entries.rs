//! One registration as the harness sees it: its handle (shared by the
//! threads), and the record its callback and the threads keep of what
//! happened to it, each step stamped with the sequence clock. From the
//! stamps the checks tell what a linearisation allows: an operation that
//! ended before another began comes first.

use super::grammar::Action;
use crate::common::lock;
use evnexus::{FdWatch, Timer};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};

/// "Never", for the stamps of events that have not happened.
pub(crate) const NEVER: u64 = u64::MAX;

pub(crate) enum Handle {
    Fd(FdWatch),
    Timer(Timer),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A watch on pair `pair`'s number `fd`, on the pair's `file`-th file.
    Fd {
        pair: usize,
        fd: RawFd,
        file: u64,
        edge: bool,
    },
    Timer,
}

/// One attempt to set a registration's interest or deadline (the
/// registration itself included): the value (interest bits, or the
/// deadline in nanoseconds after `World::t0`), when it began and ended
/// (`NEVER` while in flight), and whether it took effect.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Setting {
    pub(crate) value: u64,
    pub(crate) began: u64,
    pub(crate) ended: u64,
    pub(crate) ok: bool,
}

/// A timer's one run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fire {
    /// `ev.deadline()`, in nanoseconds after `World::t0`.
    pub(crate) deadline: u64,
    /// When the callback began, in nanoseconds after `World::t0`.
    pub(crate) at: u64,
    pub(crate) seq: u64,
    /// Dispatched by the engine's own loop (not by a report).
    pub(crate) by_loop: bool,
}

/// What a registration's callback and the threads record about it.
pub(crate) struct Record {
    pub(crate) kind: Kind,
    /// The token its callbacks saw first; every run must see the same.
    pub(crate) seen_token: OnceLock<u64>,
    pub(crate) running: AtomicBool,
    pub(crate) runs: AtomicU64,
    /// When the latest run began (0: never).
    pub(crate) last_start: AtomicU64,
    /// When the latest report that returned `Deferred` began (0: none): a
    /// run must begin after it, unless the registration ends.
    pub(crate) rerun_owed: AtomicU64,
    pub(crate) panics: AtomicU64,
    /// When the callback was dropped (`NEVER`: not yet).
    pub(crate) dropped: AtomicU64,
    /// What the next run does.
    pub(crate) next: Mutex<Vec<Action>>,
    /// When each attempt to end the registration began (from inside a
    /// callback or from outside, whatever it returned): the registration
    /// may be dead from then on.
    ends: Mutex<Vec<u64>>,
    /// The earliest moment an end from inside a callback was known done
    /// (it returned `true`, or the callback's panic was reported).
    pub(crate) end_done: AtomicU64,
    /// The earliest moment an end from outside any callback returned
    /// (deregister, cancel, drop, `Engine::deregister`): torn down by then.
    pub(crate) outside_end: AtomicU64,
    /// `cancel()` or `deregister()` from outside returned `true`.
    pub(crate) ended_by_call: AtomicBool,
    pub(crate) settings: Mutex<Vec<Setting>>,
    pub(crate) fire: Mutex<Option<Fire>>,
    /// The earliest moment a modify or reset returned `Gone`: by then the
    /// registration must have ended (checked once everything is quiet).
    pub(crate) gone_seen: AtomicU64,
}

impl Record {
    pub(crate) fn new(kind: Kind) -> Record {
        Record {
            kind,
            seen_token: OnceLock::new(),
            running: AtomicBool::new(false),
            runs: AtomicU64::new(0),
            last_start: AtomicU64::new(0),
            rerun_owed: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            dropped: AtomicU64::new(NEVER),
            next: Mutex::new(Vec::new()),
            ends: Mutex::new(Vec::new()),
            end_done: AtomicU64::new(NEVER),
            outside_end: AtomicU64::new(NEVER),
            ended_by_call: AtomicBool::new(false),
            settings: Mutex::new(Vec::new()),
            fire: Mutex::new(None),
            gone_seen: AtomicU64::new(NEVER),
        }
    }

    pub(crate) fn is_timer(&self) -> bool {
        self.kind == Kind::Timer
    }

    pub(crate) fn is_dropped(&self) -> bool {
        self.dropped.load(Ordering::SeqCst) != NEVER
    }

    /// Records an attempt to set `value`, begun at `began`; returns its
    /// index for [`Record::settled`].
    pub(crate) fn attempt(&self, value: u64, began: u64) -> usize {
        let mut s = lock(&self.settings);
        s.push(Setting {
            value,
            began,
            ended: NEVER,
            ok: false,
        });
        s.len() - 1
    }

    pub(crate) fn settled(&self, i: usize, ended: u64, ok: bool) {
        let mut s = lock(&self.settings);
        s[i].ended = ended;
        s[i].ok = ok;
    }

    /// The values the registration may hold once everything is quiet: each
    /// setting that took effect and that no other effective setting began
    /// after it had ended.
    pub(crate) fn final_values(&self) -> Vec<u64> {
        let s = lock(&self.settings);
        let ok: Vec<&Setting> = s.iter().filter(|x| x.ok).collect();
        ok.iter()
            .filter(|x| !ok.iter().any(|y| y.began > x.ended))
            .map(|x| x.value)
            .collect()
    }

    /// The values the registration may hold at moment `at`: each setting
    /// begun before `at` (in flight or failed ones too: the slot holds a
    /// new value while the backend is told) that no effective setting
    /// ended before `at` has superseded.
    pub(crate) fn values_at(&self, at: u64) -> Vec<u64> {
        let s = lock(&self.settings);
        s.iter()
            .filter(|x| x.began < at)
            .filter(|x| !s.iter().any(|y| y.ok && y.ended < at && y.began > x.ended))
            .map(|x| x.value)
            .collect()
    }

    /// Notes an attempt to end the registration, begun at `began`; returns
    /// its number, for [`Record::other_end_began_before`].
    pub(crate) fn end_begins(&self, began: u64) -> usize {
        let mut ends = lock(&self.ends);
        ends.push(began);
        ends.len() - 1
    }

    /// Whether an attempt to end the registration other than `me` began
    /// before `at`.
    pub(crate) fn other_end_began_before(&self, me: Option<usize>, at: u64) -> bool {
        lock(&self.ends)
            .iter()
            .enumerate()
            .any(|(i, &began)| Some(i) != me && began < at)
    }

    /// Whether some end of the registration may have taken effect by `at`
    /// (for a timer, its fire is checked later: see `gone_seen`).
    pub(crate) fn may_have_ended_by(&self, at: u64) -> bool {
        self.other_end_began_before(None, at)
    }

    /// Whether the registration had certainly ended before `at`.
    pub(crate) fn ended_before(&self, at: u64) -> bool {
        self.end_done.load(Ordering::SeqCst) < at
            || self.outside_end.load(Ordering::SeqCst) < at
            || lock(&self.fire).is_some_and(|f| f.seq < at)
    }
}

/// A registration the harness made (its register call returned `Ok`).
pub(crate) struct Entry {
    pub(crate) token: u64,
    pub(crate) rec: std::sync::Arc<Record>,
    /// Read-held by a modify or reset (the handle is shared, as `&FdWatch`
    /// may be); write-held only to take it out for an end.
    pub(crate) handle: RwLock<Option<Handle>>,
}

impl Entry {
    pub(crate) fn is_timer(&self) -> bool {
        self.rec.is_timer()
    }
}
