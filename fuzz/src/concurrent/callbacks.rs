//! The callbacks: each checks, as it starts, what must hold of any run
//! (never concurrent with itself, never after its deregistration returned
//! from outside, always its own token and fd, a timer once and never before
//! its deadline when the loop fires it), records the run, then does what
//! its registration was armed with.

use super::driver::{end_other, expect_modify, interest, interest_bits, register_timer, Change};
use super::entries::{Fire, Kind, Record, NEVER};
use super::grammar::Action;
use super::world::{drain_fd, in_loop, InCallback, World};
use crate::common::{lock, readiness_of, DELIBERATE};
use evnexus::{FdEvent, Occurred, StaleReason, TimerEvent};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a callback owns; dropping it marks the callback dropped.
pub(crate) struct Captured {
    pub(crate) rec: Arc<Record>,
    pub(crate) world: Arc<World>,
}

impl Drop for Captured {
    fn drop(&mut self) {
        let now = self.world.tick();
        let before = self.rec.dropped.swap(now, Ordering::SeqCst);
        assert_eq!(before, NEVER, "a callback was dropped twice");
        assert!(
            !self.rec.running.load(Ordering::SeqCst),
            "a callback was dropped while it ran"
        );
    }
}

/// One run, from its checks at the start to `running` cleared at the end
/// (also when the callback panics).
struct RunGuard<'a> {
    rec: &'a Record,
    _scope: InCallback,
}

impl<'a> RunGuard<'a> {
    fn begin(rec: &'a Record, world: &World, token: u64) -> RunGuard<'a> {
        assert!(
            !rec.running.swap(true, Ordering::SeqCst),
            "the callback of {token:#x} runs concurrently with itself"
        );
        rec.last_start.fetch_max(world.tick(), Ordering::SeqCst);
        assert_eq!(
            rec.outside_end.load(Ordering::SeqCst),
            NEVER,
            "the callback of {token:#x} runs after its deregistration returned"
        );
        assert_eq!(
            rec.end_done.load(Ordering::SeqCst),
            NEVER,
            "the callback of {token:#x} runs after its registration ended from inside"
        );
        let first = *rec.seen_token.get_or_init(|| token);
        assert_eq!(first, token, "one callback ran for two tokens");
        rec.runs.fetch_add(1, Ordering::SeqCst);
        RunGuard {
            rec,
            _scope: InCallback::enter(),
        }
    }
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.rec.running.store(false, Ordering::SeqCst);
    }
}

fn nanos_since(t0: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(t0).as_nanos() as u64
}

fn sleep(us: u8) {
    std::thread::sleep(Duration::from_micros(us as u64 * 8));
}

/// A deliberate panic: the registration's end began now.
fn panic_now(cap: &Captured) -> ! {
    cap.rec.end_begins(cap.world.tick());
    cap.rec.panics.fetch_add(1, Ordering::SeqCst);
    std::panic::panic_any(DELIBERATE);
}

pub(crate) fn fd_callback(cap: Captured) -> impl FnMut(&FdEvent<'_>) + Send + 'static {
    move |ev| {
        let (rec, world) = (&*cap.rec, &*cap.world);
        let token = ev.token().as_u64();
        let _run = RunGuard::begin(rec, world, token);
        let Kind::Fd { pair, fd, edge, .. } = rec.kind else {
            panic!("an fd event for the timer {token:#x}")
        };
        assert_eq!(ev.fd(), fd, "the callback of {token:#x} got another fd");
        let actions = std::mem::take(&mut *lock(&rec.next));
        for action in actions {
            match action {
                Action::Deregister => {
                    let me = rec.end_begins(world.tick());
                    let ended_it = ev.deregister();
                    let ended = world.tick();
                    if ended_it {
                        rec.end_done.fetch_min(ended, Ordering::SeqCst);
                    } else {
                        assert!(
                            rec.other_end_began_before(Some(me), ended),
                            "ev.deregister() of {token:#x} returned false on a live watch"
                        );
                    }
                }
                Action::Modify(choice) => {
                    let new = interest(choice);
                    let file = world.pairs[pair].hold();
                    let began = world.tick();
                    let i = rec.attempt(interest_bits(new), began);
                    let r = ev.modify(new);
                    let ended = world.tick();
                    rec.settled(i, ended, r.is_ok());
                    let change = Change {
                        was_edge: edge,
                        new,
                        began,
                        ended,
                        file_now: file.file,
                    };
                    expect_modify(world, rec, change, r);
                }
                Action::ReportSelf(revents) => {
                    let began = world.tick();
                    let r = ev
                        .engine()
                        .occurred_fd(ev.token(), fd, readiness_of(revents));
                    match r {
                        Ok(Occurred::Deferred) => {
                            rec.rerun_owed.fetch_max(began, Ordering::SeqCst);
                            // Relaxed: see `ReportTally`.
                            world.reports.deferred.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Occurred::Stale(StaleReason::Generation)) => {
                            world.reports.stale(StaleReason::Generation);
                            assert!(
                                rec.may_have_ended_by(world.tick()),
                                "a running watch reported itself and was stale, not ended"
                            );
                        }
                        other => panic!("a running watch reported itself: {other:?}"),
                    }
                }
                Action::RegisterTimer(delay) => register_timer(&cap.world, ev.engine(), delay),
                Action::Sleep(us) => sleep(us),
                Action::Drain => drain_fd(fd),
                Action::Panic => panic_now(&cap),
                Action::EndOther(which) => end_other(world, ev.engine(), which),
            }
        }
    }
}

pub(crate) fn timer_callback(cap: Captured) -> impl FnOnce(&TimerEvent<'_>) + Send + 'static {
    move |ev| {
        let cap = cap;
        let (rec, world) = (&*cap.rec, &*cap.world);
        let token = ev.token().as_u64();
        let run = RunGuard::begin(rec, world, token);
        let at = nanos_since(world.t0, Instant::now());
        let seq = world.tick();
        let fire = Fire {
            deadline: nanos_since(world.t0, ev.deadline()),
            at,
            seq,
            by_loop: in_loop(),
        };
        assert_eq!(
            rec.runs.load(Ordering::SeqCst),
            1,
            "the timer {token:#x} fired twice"
        );
        assert!(
            !rec.ended_by_call.load(Ordering::SeqCst),
            "the timer {token:#x} fired after cancel() said it never would"
        );
        if fire.by_loop {
            assert!(
                fire.at >= fire.deadline,
                "the loop fired {token:#x} {} ns before its deadline",
                fire.deadline - fire.at
            );
        }
        let could = rec.values_at(seq);
        assert!(
            could.contains(&fire.deadline),
            "the timer {token:#x} fired with deadline {} ns, not one it could have \
             then: {could:?}",
            fire.deadline
        );
        *lock(&rec.fire) = Some(fire);
        let actions = std::mem::take(&mut *lock(&rec.next));
        for action in actions {
            match action {
                Action::Deregister | Action::Modify(_) | Action::Drain => {}
                Action::ReportSelf(_) => {
                    let r = ev.engine().occurred_timeout(ev.token());
                    assert!(
                        matches!(r, Ok(Occurred::Stale(StaleReason::Generation))),
                        "a firing timer reported itself: {r:?}"
                    );
                    world.reports.stale(StaleReason::Generation);
                }
                Action::RegisterTimer(delay) => register_timer(&cap.world, ev.engine(), delay),
                Action::Sleep(us) => sleep(us),
                Action::Panic => {
                    drop(run);
                    panic_now(&cap);
                }
                Action::EndOther(which) => end_other(world, ev.engine(), which),
            }
        }
        drop(run);
        // `cap` drops here (or while unwinding): the timer's callback is gone.
    }
}
