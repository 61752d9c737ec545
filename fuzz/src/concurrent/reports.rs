//! The workers' reports: `occurred_fd` and `occurred_timeout` with live,
//! ended, wrong-kind and forged tokens, each result checked against what a
//! linearisation allows given when the registration's ends began and
//! returned.

use super::driver::Worker;
use super::entries::{Entry, Kind};
use super::grammar::Target;
use super::world::runs_here;
use crate::common::readiness_of;
use evnexus::{Error, Occurred, StaleReason, Token};
use std::sync::atomic::Ordering;

/// Token layout (src/token.rs).
const INDEX_BITS: u32 = Token::INDEX_BITS;

impl Worker<'_> {
    pub(crate) fn report(&self, target: Target, revents: u16) {
        match target {
            Target::Fd { which, right_fd } => {
                if let Some(e) = self.world.pick(which, |e| !e.is_timer()) {
                    self.report_fd(&e, right_fd, revents);
                }
            }
            Target::Timer { which } => {
                if let Some(e) = self.world.pick(which, |e| e.is_timer()) {
                    self.report_timer(&e);
                }
            }
            Target::WrongKind { which } => {
                if let Some(e) = self.world.pick(which, |_| true) {
                    self.report_wrong_kind(&e, revents);
                }
            }
            Target::Forged { which, how } => self.report_forged(which, how, revents),
        }
    }

    fn report_fd(&self, e: &Entry, right_fd: bool, revents: u16) {
        let world = self.world;
        let Kind::Fd { fd, .. } = e.rec.kind else {
            unreachable!()
        };
        let fd = if right_fd { fd } else { fd + 1 };
        let before = runs_here();
        let began = world.tick();
        let r = self
            .engine
            .occurred_fd(Token::from_u64(e.token), fd, readiness_of(revents));
        let ended = world.tick();
        let ran = runs_here() > before;
        let token = e.token;
        if e.rec.ended_before(began) {
            assert!(
                matches!(r, Ok(Occurred::Stale(StaleReason::Generation))),
                "a report for {token:#x}, which had ended: {r:?}"
            );
        }
        match r {
            Ok(Occurred::Dispatched) => {
                assert!(right_fd && ran, "Dispatched {token:#x}: {right_fd} {ran}")
            }
            Ok(Occurred::Deferred) => {
                assert!(right_fd, "a report on another fd was deferred");
                e.rec.rerun_owed.fetch_max(began, Ordering::SeqCst);
                // Relaxed: see `ReportTally`.
                world.reports.deferred.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Occurred::Stale(StaleReason::FdMismatch)) if !right_fd => {
                world.reports.stale(StaleReason::FdMismatch);
            }
            Ok(Occurred::Stale(StaleReason::Generation)) => {
                assert!(
                    e.rec.may_have_ended_by(ended),
                    "a report for the live watch {token:#x} was stale"
                );
                world.reports.stale(StaleReason::Generation);
            }
            Err(Error::CallbackPanicked(p)) => {
                assert!(right_fd && ran && p.token.as_u64() == token, "panic {p:?}");
                e.rec.end_done.fetch_min(world.tick(), Ordering::SeqCst);
            }
            other => panic!("occurred_fd({token:#x}, right fd: {right_fd}): {other:?}"),
        }
    }

    fn report_timer(&self, e: &Entry) {
        let world = self.world;
        let before = runs_here();
        let began = world.tick();
        let r = self.engine.occurred_timeout(Token::from_u64(e.token));
        let ended = world.tick();
        let ran = runs_here() > before;
        let token = e.token;
        if e.rec.ended_before(began) {
            assert!(
                matches!(r, Ok(Occurred::Stale(StaleReason::Generation))),
                "a report for {token:#x}, which had ended: {r:?}"
            );
        }
        match r {
            Ok(Occurred::Dispatched) => assert!(ran, "Dispatched {token:#x} but nothing ran here"),
            Ok(Occurred::Stale(StaleReason::Generation)) => {
                e.rec.gone_seen.fetch_min(ended, Ordering::SeqCst);
                world.reports.stale(StaleReason::Generation);
            }
            Err(Error::CallbackPanicked(p)) => {
                assert!(ran && p.token.as_u64() == token, "panic {p:?}");
            }
            other => panic!("occurred_timeout({token:#x}): {other:?}"),
        }
    }

    fn report_wrong_kind(&self, e: &Entry, revents: u16) {
        let world = self.world;
        let began = world.tick();
        let t = Token::from_u64(e.token);
        let r = if e.is_timer() {
            self.engine.occurred_fd(t, 0, readiness_of(revents))
        } else {
            self.engine.occurred_timeout(t)
        };
        let ended = world.tick();
        let token = e.token;
        match r {
            Ok(Occurred::Stale(StaleReason::WrongKind)) => {
                assert!(
                    e.rec.outside_end.load(Ordering::SeqCst) > began,
                    "{token:#x} as the wrong kind after its deregistration returned"
                );
                world.reports.stale(StaleReason::WrongKind);
            }
            Ok(Occurred::Stale(StaleReason::Generation)) => {
                e.rec.gone_seen.fetch_min(ended, Ordering::SeqCst);
                world.reports.stale(StaleReason::Generation);
            }
            other => panic!("{token:#x} reported as the wrong kind: {other:?}"),
        }
    }

    /// Reports a token that no registration can hold.
    fn report_forged(&self, which: u8, how: u8, revents: u16) {
        let world = self.world;
        let base = world.pick(which, |_| true).map(|e| e.token);
        let index_of = |t: u64| t & ((1 << INDEX_BITS) - 1);
        let (raw, expect) = match how % 3 {
            0 => (base.map_or(0, index_of), Some(StaleReason::OutOfRange)),
            1 => (
                (1 << INDEX_BITS) | ((1 << INDEX_BITS) - 1),
                Some(StaleReason::OutOfRange),
            ),
            // A generation no slot reaches within one input.
            _ => match base {
                Some(t) => (t + (1 << 50), Some(StaleReason::Generation)),
                // No registration yet: the arena may have no page at all.
                None => (1 << 50, None),
            },
        };
        let t = Token::from_u64(raw);
        let r = if how < 128 {
            self.engine.occurred_fd(t, 0, readiness_of(revents))
        } else {
            self.engine.occurred_timeout(t)
        };
        match r {
            Ok(Occurred::Stale(reason)) => {
                if let Some(want) = expect {
                    assert_eq!(reason, want, "forged token {raw:#x}");
                }
                world.reports.stale(reason);
            }
            other => panic!("forged token {raw:#x}: {other:?}"),
        }
    }
}
