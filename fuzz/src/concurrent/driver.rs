//! The driver: each worker runs its steps on the engine and checks each
//! result against what some linearisation allows, given what the other
//! threads had finished (or not yet begun) when the call began and ended;
//! the loop thread drives a built-in loop meanwhile.

use super::callbacks::{fd_callback, timer_callback, Captured};
use super::entries::{Entry, Handle, Kind, Record};
use super::grammar::{Delay, InterestChoice, Op, Target};
use super::world::{in_callback, runs_here, InLoop, World};
use crate::common::{lock, readiness_of, INJECTED};
use evnexus::{Engine, Error, Interest, Occurred, Result, StaleReason, Token};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Most actions a callback is armed with.
const MAX_ACTIONS: usize = 4;
/// Token layout (src/token.rs).
const INDEX_BITS: u32 = Token::INDEX_BITS;

pub(crate) fn interest(choice: InterestChoice) -> Interest {
    match choice {
        InterestChoice::Readable => Interest::READABLE,
        InterestChoice::Writable => Interest::WRITABLE,
        InterestChoice::Both => Interest::READABLE | Interest::WRITABLE,
        InterestChoice::None => Interest::NONE,
        InterestChoice::ReadableEdge => Interest::READABLE | Interest::EDGE,
    }
}

/// An interest as the settings record it: the poll bits, and bit 16 for
/// [`Interest::EDGE`].
pub(crate) fn interest_bits(i: Interest) -> u64 {
    i.as_poll_events() as u16 as u64 | if i.is_edge() { 1 << 16 } else { 0 }
}

fn deadline_of(delay: Delay) -> Instant {
    let now = Instant::now();
    match delay {
        Delay::Zero => now,
        Delay::Ms(k) => now + Duration::from_millis(1 + k as u64 % 4),
        Delay::Far => now + Duration::from_secs(3600),
    }
}

fn nanos(world: &World, at: Instant) -> u64 {
    at.saturating_duration_since(world.t0).as_nanos() as u64
}

fn is_injected(e: &Error) -> bool {
    matches!(e, Error::Backend(io) if io.to_string() == INJECTED)
}

/// Registers a timer `delay` from now (from a worker, or from inside a
/// callback) and checks the result.
pub(crate) fn register_timer(world: &Arc<World>, engine: &Engine, delay: Delay) {
    let deadline = deadline_of(delay);
    let rec = world.new_record(Kind::Timer);
    let began = world.tick();
    let i = rec.attempt(nanos(world, deadline), began);
    let cb = timer_callback(Captured {
        rec: Arc::clone(&rec),
        world: Arc::clone(world),
    });
    let r = engine.timer_at(deadline, cb);
    rec.settled(i, world.tick(), r.is_ok());
    match r {
        Ok(t) => {
            world.registered.fetch_add(1, Ordering::SeqCst);
            world.add(Arc::new(Entry {
                token: t.token().as_u64(),
                rec,
                handle: RwLock::new(Some(Handle::Timer(t))),
            }));
        }
        Err(e) if is_injected(&e) => {
            world.registered.fetch_add(1, Ordering::SeqCst);
            world.injected_seen.fetch_add(1, Ordering::SeqCst);
            expect_failed_registration_gone(&rec);
        }
        Err(e) => panic!("timer_at failed: {e}"),
    }
}

/// A failed registration's callback is dropped before the call returns
/// (from outside a callback; inside one, it may be later).
fn expect_failed_registration_gone(rec: &Record) {
    if !in_callback() {
        assert!(
            rec.is_dropped(),
            "a failed registration returned before its callback was dropped"
        );
    }
}

/// One modify of an fd watch: its edge flag before, the new interest, the
/// call's stamps, and the generation of the file behind the watched number
/// during the call (held in place).
pub(crate) struct Change {
    pub(crate) was_edge: bool,
    pub(crate) new: Interest,
    pub(crate) began: u64,
    pub(crate) ended: u64,
    pub(crate) file_now: u64,
}

/// Checks what a modify of an fd watch returned (from a worker, or from
/// inside the watch's callback).
pub(crate) fn expect_modify(world: &World, rec: &Record, c: Change, r: Result<()>) {
    let Kind::Fd { file, .. } = rec.kind else {
        unreachable!("modify of a timer")
    };
    let (was_edge, new_edge, began, ended) = (c.was_edge, c.new.is_edge(), c.began, c.ended);
    if rec.ended_before(began) {
        assert!(
            matches!(r, Err(Error::Gone)),
            "modify of a watch that had ended: {r:?}"
        );
    }
    match r {
        Ok(()) => assert_eq!(
            was_edge, new_edge,
            "modify switched a watch between level and edge"
        ),
        Err(Error::Gone) => {
            rec.gone_seen.fetch_min(ended, Ordering::SeqCst);
        }
        Err(e) if is_injected(&e) => {
            world.injected_seen.fetch_add(1, Ordering::SeqCst);
        }
        Err(Error::Backend(_)) if was_edge != new_edge => {}
        // The watched number has a new file: the old watch's kernel entry
        // went with the old file.
        Err(Error::Backend(_)) if world.builtin && c.file_now != file => {}
        Err(e) => panic!("modify failed: {e}"),
    }
}

/// Checks what a `run_once` returned.
fn expect_run_once(world: &World, r: Result<usize>) {
    match r {
        Ok(_) | Err(Error::Unsupported(evnexus::Unsupported::LoopBusy)) => {}
        Err(Error::CallbackPanicked(p)) => {
            if let Some(e) = world.by_token(p.token.as_u64()) {
                assert!(
                    e.rec.panics.load(Ordering::SeqCst) > 0,
                    "run_once reported a panic of {:?}, which did not panic",
                    p.token
                );
                e.rec.end_done.fetch_min(world.tick(), Ordering::SeqCst);
            }
        }
        Err(e) => panic!("run_once failed: {e}"),
    }
}

/// Drives a built-in loop once on this thread.
pub(crate) fn run_once(world: &World, engine: &Engine, timeout: Option<Duration>) {
    let _in_loop = InLoop::enter(world.tick());
    let r = engine.run_once(timeout);
    drop(_in_loop);
    if world.builtin {
        expect_run_once(world, r);
    } else {
        assert!(
            matches!(
                r,
                Err(Error::Unsupported(evnexus::Unsupported::NoBuiltinLoop))
            ),
            "run_once on a hooks engine: {r:?}"
        );
    }
}

/// The loop thread: drives the loop until `stop`.
pub(crate) fn loop_thread(world: &World, engine: &Engine, spin: bool, stop: &AtomicBool) {
    let timeout = spin.then_some(Duration::ZERO);
    while !stop.load(Ordering::SeqCst) {
        run_once(world, engine, timeout);
    }
}

/// One worker thread's view.
pub(crate) struct Worker<'a> {
    pub(crate) world: &'a Arc<World>,
    pub(crate) engine: &'a Engine,
}

impl Worker<'_> {
    pub(crate) fn op(&self, op: &Op) {
        let world = self.world;
        match *op {
            Op::RegisterFd { pair, interest } => self.register_fd(pair, interest),
            Op::RegisterBadFd => {
                let r = self.engine.register_fd(-1, Interest::READABLE, |_| {});
                assert!(matches!(r, Err(Error::BadFd(-1))), "register_fd(-1): {r:?}");
            }
            Op::RegisterTimer { delay } => register_timer(world, self.engine, delay),
            Op::ModifyFd { which, interest } => self.modify(which, interest),
            Op::ResetTimer { which, delay } => self.reset(which, delay),
            Op::End { which, by_drop } => self.end(which, by_drop),
            Op::Report { target, revents } => self.report(target, revents),
            Op::Arm { which, ref actions } => {
                if let Some(e) = world.pick(which, |_| true) {
                    *lock(&e.rec.next) = actions.iter().copied().take(MAX_ACTIONS).collect();
                }
            }
            Op::Ready { pair } => world.pair(pair).1.make_ready(),
            Op::Drain { pair } => world.pair(pair).1.drain(),
            Op::ReuseFd { pair } => world.pair(pair).1.reuse(),
            Op::RunOnce => run_once(world, self.engine, Some(Duration::ZERO)),
            Op::Spin { n } => {
                for _ in 0..n as u32 * 64 {
                    std::hint::spin_loop();
                }
            }
            Op::SlowNextHook { us } => {
                if let Some(h) = &world.hooks {
                    h.slow_next(us);
                }
            }
            Op::FailNextHook => {
                if let Some(h) = &world.hooks {
                    h.fail_next();
                }
            }
        }
    }

    fn register_fd(&self, k: u8, choice: InterestChoice) {
        let world = self.world;
        let (p, pair) = world.pair(k);
        let new = interest(choice);
        let held = pair.hold();
        let kind = Kind::Fd {
            pair: p,
            fd: pair.fd(),
            file: held.file,
            edge: new.is_edge(),
        };
        let rec = world.new_record(kind);
        let began = world.tick();
        let i = rec.attempt(interest_bits(new), began);
        let cb = fd_callback(Captured {
            rec: Arc::clone(&rec),
            world: Arc::clone(world),
        });
        let r = self.engine.register_fd(pair.fd(), new, cb);
        rec.settled(i, world.tick(), r.is_ok());
        drop(held);
        match r {
            Ok(w) => {
                world.registered.fetch_add(1, Ordering::SeqCst);
                world.add(Arc::new(Entry {
                    token: w.token().as_u64(),
                    rec,
                    handle: RwLock::new(Some(Handle::Fd(w))),
                }));
            }
            Err(Error::Unsupported(evnexus::Unsupported::EdgeNeedsBuiltinLoop)) => {
                assert!(
                    new.is_edge() && !world.builtin,
                    "edge refused on a built-in loop"
                );
                assert!(rec.is_dropped(), "a refused callback was kept");
            }
            Err(e) => {
                world.registered.fetch_add(1, Ordering::SeqCst);
                expect_failed_registration_gone(&rec);
                if is_injected(&e) {
                    world.injected_seen.fetch_add(1, Ordering::SeqCst);
                } else {
                    let exists =
                        matches!(&e, Error::Backend(io) if io.raw_os_error() == Some(libc::EEXIST));
                    assert!(
                        exists && self.same_file_watched(&rec, began),
                        "register_fd failed: {e}"
                    );
                }
            }
        }
    }

    /// Whether another watch in the epoll set (level or edge: both loops
    /// keep every watch there) may still have held the file of `rec` when
    /// its registration began at `began` (then `EEXIST` is the kernel's
    /// right answer).
    fn same_file_watched(&self, rec: &Record, began: u64) -> bool {
        let Kind::Fd { pair, file, .. } = rec.kind else {
            return false;
        };
        self.world.all_records().iter().any(|o| {
            !std::ptr::eq(&**o, rec)
                && matches!(o.kind, Kind::Fd { pair: p, file: f, .. } if p == pair && f == file)
                && o.dropped.load(Ordering::SeqCst) > began
        })
    }

    fn modify(&self, which: u8, choice: InterestChoice) {
        let world = self.world;
        let Some(e) = world.pick(which, |e| !e.is_timer()) else {
            return;
        };
        let handle = e.handle.read().unwrap_or_else(|p| p.into_inner());
        let Some(Handle::Fd(w)) = &*handle else {
            return;
        };
        let Kind::Fd { pair, edge, .. } = e.rec.kind else {
            unreachable!()
        };
        let new = interest(choice);
        let file = world.pairs[pair].hold();
        let began = world.tick();
        let i = e.rec.attempt(interest_bits(new), began);
        let r = w.modify(new);
        let ended = world.tick();
        e.rec.settled(i, ended, r.is_ok());
        let change = Change {
            was_edge: edge,
            new,
            began,
            ended,
            file_now: file.file,
        };
        expect_modify(world, &e.rec, change, r);
    }

    fn reset(&self, which: u8, delay: Delay) {
        let world = self.world;
        let Some(e) = world.pick(which, |e| e.is_timer()) else {
            return;
        };
        let handle = e.handle.read().unwrap_or_else(|p| p.into_inner());
        let Some(Handle::Timer(t)) = &*handle else {
            return;
        };
        let deadline = deadline_of(delay);
        let began = world.tick();
        let i = e.rec.attempt(nanos(world, deadline), began);
        let r = t.reset_at(deadline);
        let ended = world.tick();
        e.rec.settled(i, ended, r.is_ok());
        if e.rec.ended_before(began) {
            assert!(
                matches!(r, Err(Error::Gone)),
                "reset of a timer that had ended: {r:?}"
            );
        }
        match r {
            Ok(()) => {}
            Err(Error::Gone) => {
                e.rec.gone_seen.fetch_min(ended, Ordering::SeqCst);
            }
            Err(err) if is_injected(&err) => {
                world.injected_seen.fetch_add(1, Ordering::SeqCst);
            }
            Err(err) => panic!("reset failed: {err}"),
        }
    }

    /// Ends a registration from outside any callback, and checks that by the
    /// time the call returned its callback had finished and been dropped,
    /// and the application's loop no longer had it.
    fn end(&self, which: u8, by_drop: bool) {
        let has_handle = |e: &Entry| e.handle.try_read().map_or(true, |h| h.is_some());
        if let Some(e) = self.world.pick(which, has_handle) {
            self.end_entry(&e, by_drop);
        }
    }

    /// Ends the `i`-th registration made (the end of an input).
    pub(crate) fn end_at(&self, i: usize, by_drop: bool) {
        let e = Arc::clone(&lock(&self.world.entries)[i]);
        self.end_entry(&e, by_drop);
    }

    fn end_entry(&self, e: &Entry, by_drop: bool) {
        let world = self.world;
        let Some(handle) = e.handle.write().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let rec = &e.rec;
        let began = world.tick();
        rec.outside_began.fetch_min(began, Ordering::SeqCst);
        let ended_it = match (handle, by_drop) {
            (h, true) => {
                drop(h);
                None
            }
            (Handle::Fd(w), false) => Some(w.deregister()),
            (Handle::Timer(t), false) => Some(t.cancel()),
        };
        let ended = world.tick();
        rec.outside_end.fetch_min(ended, Ordering::SeqCst);
        let token = e.token;
        assert!(
            rec.is_dropped() && !rec.running.load(Ordering::SeqCst),
            "deregister of {token:#x} returned before its callback finished and was dropped"
        );
        if let Some(h) = &world.hooks {
            let st = lock(&h.0);
            assert!(
                !st.fd_live.contains_key(&token) && !st.timer_live.contains_key(&token),
                "deregister of {token:#x} returned while the loop still had it"
            );
        }
        match ended_it {
            Some(true) if e.is_timer() => {
                rec.ended_by_call.store(true, Ordering::SeqCst);
                assert_eq!(
                    rec.runs.load(Ordering::SeqCst),
                    0,
                    "cancel of {token:#x} returned true after the timer fired"
                );
            }
            Some(true) => {
                rec.ended_by_call.store(true, Ordering::SeqCst);
                assert!(
                    rec.end_done.load(Ordering::SeqCst) > began,
                    "deregister of {token:#x} returned true after it had ended"
                );
            }
            Some(false) if e.is_timer() => assert_eq!(
                rec.runs.load(Ordering::SeqCst),
                1,
                "cancel of {token:#x} returned false, and the timer never fired"
            ),
            Some(false) => assert!(
                rec.end_began.load(Ordering::SeqCst) < ended,
                "deregister of {token:#x} returned false on a live watch"
            ),
            None => {}
        }
    }

    fn report(&self, target: Target, revents: u16) {
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
