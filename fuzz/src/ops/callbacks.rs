//! The callbacks: each records what it saw (token, fd, readiness,
//! deadline, engine) and what its re-entrant actions returned, and counts
//! its runs and its drop.

use super::fds::fds;
use super::grammar::Action;
use super::results::{other_fd, repr, Res};
use crate::common::{interest_of, lock, readiness_of, DELIBERATE};
use evnexus::{Engine, FdEvent, Occurred, TimerEvent};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What one callback run saw and did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Run {
    pub(crate) token: u64,
    pub(crate) engine: usize,
    pub(crate) what: RunKind,
    pub(crate) results: Vec<ActionResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RunKind {
    Fd { fd: RawFd, readiness: u16 },
    Timer { deadline: Instant },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ActionResult {
    Deregistered(bool),
    Reported(Res<Occurred>),
    Modified(Res<()>),
    Skipped,
}

#[derive(Default)]
pub(crate) struct CbState {
    /// Actions for the next run (taken at its start).
    pub(crate) next: Vec<Action>,
    pub(crate) runs: Vec<Run>,
}

/// Counts shared by every callback of one input. Relaxed throughout (here
/// and for `Captured::dropped`): engine_ops runs on one thread, the atomics
/// are only there because a callback must be `Send`.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) runs: AtomicUsize,
    pub(crate) drops: AtomicUsize,
}

/// What a callback captures; dropping it marks the callback dropped.
pub(crate) struct Captured {
    pub(crate) state: Arc<Mutex<CbState>>,
    pub(crate) dropped: Arc<AtomicBool>,
    pub(crate) counters: Arc<Counters>,
}

impl Drop for Captured {
    fn drop(&mut self) {
        assert!(
            !self.dropped.swap(true, Ordering::Relaxed),
            "callback dropped twice"
        );
        self.counters.drops.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) fn fd_callback(cap: Captured) -> impl FnMut(&FdEvent<'_>) + Send + 'static {
    move |ev| {
        let cap = &cap;
        cap.counters.runs.fetch_add(1, Ordering::Relaxed);
        let actions = std::mem::take(&mut lock(&cap.state).next);
        let mut results = Vec::new();
        let mut panic = false;
        for action in actions {
            let result = match action {
                Action::Deregister => ActionResult::Deregistered(ev.deregister()),
                Action::Report {
                    as_timeout: true, ..
                } => ActionResult::Reported(repr(ev.engine().occurred_timeout(ev.token()))),
                Action::Report {
                    wrong_fd, revents, ..
                } => {
                    let fd = if wrong_fd { other_fd(ev.fd()) } else { ev.fd() };
                    let r = ev
                        .engine()
                        .occurred_fd(ev.token(), fd, readiness_of(revents));
                    ActionResult::Reported(repr(r))
                }
                Action::Modify { interest } => {
                    ActionResult::Modified(repr(ev.modify(interest_of(interest))))
                }
                Action::Panic => {
                    panic = true;
                    break;
                }
            };
            results.push(result);
        }
        lock(&cap.state).runs.push(Run {
            token: ev.token().as_u64(),
            engine: ev.engine() as *const Engine as usize,
            what: RunKind::Fd {
                fd: ev.fd(),
                readiness: ev.readiness().as_poll_revents() as u16,
            },
            results,
        });
        if panic {
            std::panic::panic_any(DELIBERATE);
        }
    }
}

pub(crate) fn timer_callback(cap: Captured) -> impl FnOnce(&TimerEvent<'_>) + Send + 'static {
    move |ev| {
        let cap = cap;
        cap.counters.runs.fetch_add(1, Ordering::Relaxed);
        let actions = std::mem::take(&mut lock(&cap.state).next);
        let mut results = Vec::new();
        let mut panic = false;
        for action in actions {
            let result = match action {
                Action::Deregister | Action::Modify { .. } => ActionResult::Skipped,
                Action::Report {
                    as_timeout: true, ..
                } => ActionResult::Reported(repr(ev.engine().occurred_timeout(ev.token()))),
                Action::Report { revents, .. } => {
                    let r =
                        ev.engine()
                            .occurred_fd(ev.token(), fds().open[0], readiness_of(revents));
                    ActionResult::Reported(repr(r))
                }
                Action::Panic => {
                    panic = true;
                    break;
                }
            };
            results.push(result);
        }
        lock(&cap.state).runs.push(Run {
            token: ev.token().as_u64(),
            engine: ev.engine() as *const Engine as usize,
            what: RunKind::Timer {
                deadline: ev.deadline(),
            },
            results,
        });
        if panic {
            std::panic::panic_any(DELIBERATE);
        }
        // `cap` drops here (or while unwinding): the timer's callback is gone.
    }
}

pub(crate) fn new_captured(
    counters: &Arc<Counters>,
    next: Vec<Action>,
) -> (Captured, Arc<Mutex<CbState>>, Arc<AtomicBool>) {
    let state = Arc::new(Mutex::new(CbState {
        next,
        runs: Vec::new(),
    }));
    let dropped = Arc::new(AtomicBool::new(false));
    let cap = Captured {
        state: Arc::clone(&state),
        dropped: Arc::clone(&dropped),
        counters: Arc::clone(counters),
    };
    (cap, state, dropped)
}
