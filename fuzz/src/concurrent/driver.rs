//! The driver: each worker runs its steps on the engine and checks each
//! result against what some linearisation allows, given what the other
//! threads had finished (or not yet begun) when the call began and ended
//! (registrations, modifies, resets and ends here; reports in `reports`);
//! the loop thread drives a built-in loop meanwhile.

use super::callbacks::{fd_callback, timer_callback, Captured};
use super::entries::{Entry, Handle, Kind, Record};
use super::grammar::{Delay, InterestChoice, Op};
use super::world::{in_callback, InLoop, World};
use crate::common::{lock, INJECTED};
use evnexus::testing::{self, PausePoint};
use evnexus::{Engine, Error, Interest, Result, Token};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Most actions a callback is armed with.
const MAX_ACTIONS: usize = 4;

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
            world.changes_gone.fetch_add(1, Ordering::SeqCst);
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

/// One call that ends a registration: its end stamp (see
/// [`Record::end_begins`]), when it began and returned, and whether it was
/// made from outside any callback.
pub(crate) struct EndCall {
    pub(crate) me: usize,
    pub(crate) began: u64,
    pub(crate) ended: u64,
    pub(crate) outside: bool,
}

/// Checks what an end of registration `token` returned: `None` when the
/// handle was dropped, else whether the call ended it (`deregister`,
/// `cancel`, `ev.deregister`) or `Engine::deregister`'s result.
pub(crate) fn expect_end(
    world: &World,
    rec: &Record,
    token: u64,
    call: EndCall,
    r: Option<Result<bool>>,
) {
    if call.outside {
        rec.outside_end.fetch_min(call.ended, Ordering::SeqCst);
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
    }
    let ended_it = match r {
        None => return,
        Some(Ok(b)) => b,
        Some(Err(Error::ClosedWhileRegistered(fd))) => {
            let Kind::Fd {
                pair,
                fd: ours,
                file,
                ..
            } = rec.kind
            else {
                panic!("ClosedWhileRegistered({fd}) for the timer {token:#x}")
            };
            assert!(
                fd == ours && world.builtin && world.pairs[pair].hold().file != file,
                "ClosedWhileRegistered({fd}) for {token:#x} on fd {ours}, never closed"
            );
            true
        }
        Some(Err(e)) => panic!("deregister of {token:#x}: {e}"),
    };
    if ended_it {
        assert!(
            !rec.ended_before(call.began),
            "deregister of {token:#x} returned true after it had ended"
        );
        if !call.outside {
            rec.end_done.fetch_min(call.ended, Ordering::SeqCst);
        }
        if rec.is_timer() {
            rec.ended_by_call.store(true, Ordering::SeqCst);
            assert_eq!(
                rec.runs.load(Ordering::SeqCst),
                0,
                "cancel of {token:#x} returned true after the timer fired"
            );
        }
    } else if rec.is_timer() && !call.outside {
        // Fired, or firing on another thread (its run may not have begun):
        // it must be over once everything is quiet.
        rec.gone_seen.fetch_min(call.ended, Ordering::SeqCst);
    } else {
        assert!(
            rec.other_end_began_before(Some(call.me), call.ended)
                || rec.is_timer() && rec.runs.load(Ordering::SeqCst) == 1,
            "deregister of {token:#x} returned false on a live registration"
        );
    }
}

/// `Engine::deregister` of some registration's token from inside a
/// callback (possibly its own): it does not wait.
pub(crate) fn end_other(world: &World, engine: &Engine, which: u8) {
    let Some(e) = world.pick(which, |_| true) else {
        return;
    };
    let began = world.tick();
    let me = e.rec.end_begins(began);
    let r = engine.deregister(Token::from_u64(e.token));
    let call = EndCall {
        me,
        began,
        ended: world.tick(),
        outside: false,
    };
    expect_end(world, &e.rec, e.token, call, Some(r));
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

/// Makes this thread's next registration or modify stop once, `us * 8`
/// microseconds, at a pause point (after its backend call, or before it),
/// while it holds the registration's control bit.
fn pause_next(after: bool, us: u8) {
    let at = if after {
        PausePoint::AfterBackendCall
    } else {
        PausePoint::BeforeBackendCall
    };
    let mut armed = true;
    testing::pause_at(move |point| {
        if armed && point == at {
            armed = false;
            std::thread::sleep(Duration::from_micros(us as u64 * 8));
        }
    });
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
            Op::EndByToken { which } => self.end_by_token(which),
            Op::PauseNext { after, us } => pause_next(after, us),
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
                world.changes_gone.fetch_add(1, Ordering::SeqCst);
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
        let began = world.tick();
        let me = e.rec.end_begins(began);
        let r = match (handle, by_drop) {
            (h, true) => {
                drop(h);
                None
            }
            (Handle::Fd(w), false) => Some(Ok(w.deregister())),
            (Handle::Timer(t), false) => Some(Ok(t.cancel())),
        };
        let span = EndCall {
            me,
            began,
            ended: world.tick(),
            outside: true,
        };
        expect_end(world, &e.rec, e.token, span, r);
    }

    /// `Engine::deregister` of a registration's token from outside any
    /// callback (the handle stays in the table, and finds it ended).
    fn end_by_token(&self, which: u8) {
        let world = self.world;
        let Some(e) = world.pick(which, |_| true) else {
            return;
        };
        let began = world.tick();
        let me = e.rec.end_begins(began);
        let r = self.engine.deregister(Token::from_u64(e.token));
        let span = EndCall {
            me,
            began,
            ended: world.tick(),
            outside: true,
        };
        expect_end(world, &e.rec, e.token, span, Some(r));
    }
}
