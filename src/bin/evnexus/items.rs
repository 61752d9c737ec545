//! Delivery items: the reports the application loop or the injector hands
//! the delivery threads (genuine, duplicated, replayed, forged, wrong fd,
//! wrong kind), and where they go.

use crate::rng::Rng;
use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;
use evnexus::{Readiness, Token};
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::Instant;

/// What a report says happened: an fd is ready, or a timeout is due.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Fd,
    Timeout,
}

/// How many ended registrations' tokens [`DeadTokens`] keeps.
pub(crate) const DEAD_HISTORY: usize = 4096;

/// A dead token: the token of an ended registration, its kind, and its fd
/// (watches; -1 for timers).
pub(crate) type Dead = (u64, Kind, RawFd);

/// The tokens of the last [`DEAD_HISTORY`] ended registrations: material
/// for replays, which must all be rejected. A ring: when it is full, the
/// oldest goes, so its size never grows with the run time.
#[derive(Default)]
pub(crate) struct DeadTokens(VecDeque<Dead>);

impl DeadTokens {
    pub(crate) fn bury(&mut self, token: u64, kind: Kind, fd: RawFd) {
        if self.0.len() == DEAD_HISTORY {
            self.0.pop_front();
        }
        self.0.push_back((token, kind, fd));
    }
    pub(crate) fn pick(&self, rng: &mut Rng) -> Option<Dead> {
        (!self.0.is_empty()).then(|| self.0[rng.index(self.0.len())])
    }
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Dead> {
        self.0.iter()
    }
}

/// Where a report came from, and so what the engine must make of it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// What the loop found: a ready fd, a due timeout.
    Genuine,
    /// The same report, handed to a second thread.
    Duplicate,
    /// A token whose registration has ended.
    Replay,
    /// A made-up token.
    Forged,
    /// A live fd token with another fd.
    WrongFd,
    /// A live token reported as the other kind.
    WrongKind,
}

pub(crate) const ORIGINS: usize = 6;
pub(crate) const ORIGIN_NAMES: [&str; ORIGINS] = [
    "genuine",
    "duplicated",
    "replayed dead token",
    "forged token",
    "live token, wrong fd",
    "live token, wrong kind",
];

/// One report for a delivery thread to hand to `occurred_*`.
pub(crate) struct Item {
    pub(crate) kind: Kind,
    pub(crate) origin: Origin,
    pub(crate) token: u64,
    pub(crate) fd: RawFd,
    pub(crate) revents: Readiness,
    pub(crate) detected: Instant,
    pub(crate) late: bool,
    pub(crate) inflight: Option<Arc<AtomicU32>>,
}

impl Item {
    /// The same report again, for another thread (one more in flight).
    pub(crate) fn duplicate(&self) -> Item {
        if let Some(c) = &self.inflight {
            c.fetch_add(1, Ordering::SeqCst);
        }
        Item {
            origin: Origin::Duplicate,
            inflight: self.inflight.clone(),
            ..*self
        }
    }
    /// A report that no loop found: made up by the application loop or
    /// the injector.
    pub(crate) fn injected(
        kind: Kind,
        origin: Origin,
        token: u64,
        fd: RawFd,
        now: Instant,
    ) -> Item {
        Item {
            kind,
            origin,
            token,
            fd,
            revents: Readiness::READABLE,
            detected: now,
            late: false,
            inflight: None,
        }
    }
}

/// Where the loop puts delivery items: one queue per delivery thread.
pub(crate) struct Sink {
    pub(crate) queues: Vec<CachePadded<SegQueue<Item>>>,
    pub(crate) threads: Mutex<Vec<Thread>>,
}

/// What the application loop or the injector made.
#[derive(Default)]
pub(crate) struct LoopOut {
    pub(crate) held_back: Vec<Item>,
    pub(crate) iterations: u64,
    pub(crate) generated: [u64; ORIGINS],
    pub(crate) late: u64,
    pub(crate) errors: u64,
    /// Injector only: reports not made because every delivery queue they
    /// could go to was full (the delivery threads fell behind).
    pub(crate) skipped: u64,
}

/// A replay of a dead token: mostly as reported when it was live (an fd
/// token with its own fd, which is likely watched again by now under a new
/// generation), sometimes as the other kind.
pub(crate) fn replay(rng: &mut Rng, dead: Dead, live_fds: &[(u64, RawFd)], now: Instant) -> Item {
    let (token, kind, fd) = dead;
    let (kind, fd) = match (kind, rng.one_in(8)) {
        (Kind::Fd, false) => (Kind::Fd, fd),
        (Kind::Timeout, true) => {
            let fd = live_fds
                .get(rng.index(live_fds.len().max(1)))
                .map_or(3, |e| e.1);
            (Kind::Fd, fd)
        }
        _ => (Kind::Timeout, -1),
    };
    Item::injected(kind, Origin::Replay, token, fd, now)
}

/// A token that names nothing: generation zero, an index past anything
/// claimed, or a generation far beyond any this run can reach.
pub(crate) fn forge(rng: &mut Rng, live_fds: &[(u64, RawFd)], now: Instant) -> Item {
    const INDEX_BITS: u32 = Token::INDEX_BITS;
    // The upper half of the generation range: no slot gets there in a run.
    let half = 1u64 << (evnexus::Generation::BITS - 1);
    let far_generation = half | rng.below(half);
    let token = match rng.below(3) {
        0 => rng.below(1 << INDEX_BITS), // generation zero: malformed
        1 => (far_generation << INDEX_BITS) | rng.below(1 << INDEX_BITS),
        _ => (far_generation << INDEX_BITS) | rng.below(256),
    };
    if rng.one_in(2) {
        let fd = live_fds
            .get(rng.index(live_fds.len().max(1)))
            .map_or(3, |e| e.1);
        Item::injected(Kind::Fd, Origin::Forged, token, fd, now)
    } else {
        Item::injected(Kind::Timeout, Origin::Forged, token, -1, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_tokens_keep_the_last_dead_history_only() {
        let mut dead = DeadTokens::default();
        assert_eq!(dead.pick(&mut Rng::new()), None);
        for t in 0..(DEAD_HISTORY as u64 + 10) {
            dead.bury(t, Kind::Timeout, -1);
        }
        assert_eq!(dead.iter().count(), DEAD_HISTORY);
        assert_eq!(dead.iter().next().map(|d| d.0), Some(10));
        let (token, kind, fd) = dead.pick(&mut Rng::new()).unwrap();
        assert!(token >= 10 && kind == Kind::Timeout && fd == -1);
    }
}
