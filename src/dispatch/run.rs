//! The dispatch paths: a report from the application (`occurred_*`), an
//! event the built-in loop observed (`dispatch_ready`), the timers the loop
//! found due (`fire_due`). Each resolves the token, begins the dispatch
//! with one CAS, runs the callback (as the facade says, with `run_fd` or
//! `run_timer`), finishes, and tears down if it was the last one out.

use super::{Core, Occurred, Tally};
use crate::base::error::{CallbackPanic, Error, Result};
use crate::base::readiness::{param_fd, param_interest, Readiness};
use crate::base::scope::{self, panic_message};
use crate::base::sync::prefetch_write;
use crate::base::token::{Generation, StaleReason, Token};
use crate::nexus::arena::FreeBatch;
use crate::nexus::slot::{Begin, Due, Finish, Kill, Slot};
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};

impl<C: Send + 'static> Core<C> {
    /// A report of `revents` on `fd` for fd watch `token`: rejected as
    /// stale in one load (the common case) or dispatched with `run_fd`.
    ///
    /// Always inlined, as is `occurred_timeout` and the facade's callers:
    /// a stale report must be a few instructions in the reporting loop.
    /// Left to LLVM, this function stayed out of line in the bench crate
    /// (a call, a prologue, the result through memory): `occurred`
    /// `fd_stale/1t` went from 2.4 to 4.8 ns against the code before the
    /// layering.
    #[inline(always)]
    pub(crate) fn occurred_fd(
        &self,
        token: Token,
        fd: RawFd,
        revents: Readiness,
        run_fd: impl FnMut(&mut C, Token, RawFd, Readiness) -> bool,
    ) -> Result<Occurred> {
        let Some((index, slot, g)) = self.resolve(token) else {
            return Ok(self.reject(StaleReason::OutOfRange));
        };
        // The common stale case in one load, before the dispatch machinery.
        if let Some(reason) = slot.quick_stale(g, false) {
            return Ok(self.reject(reason));
        }
        // Nothing keeps readiness for an application's report.
        let mut kept = false;
        self.occurred_fd_at(slot, index, g, fd, revents, &mut kept, run_fd)
    }

    /// Readiness that the engine's own loop observed for `token` (the fd is
    /// the registered one: no fd check). Sets `kept` when the watch keeps
    /// its readiness (see [`Dispatch`]).
    ///
    /// [`Dispatch`]: super::Dispatch
    pub(crate) fn dispatch_ready(
        &self,
        token: Token,
        revents: u16,
        kept: &mut bool,
        run_fd: impl FnMut(&mut C, Token, RawFd, Readiness) -> bool,
    ) -> Result<Occurred> {
        let Some((index, slot, g)) = self.resolve(token) else {
            return Ok(self.reject(StaleReason::OutOfRange));
        };
        let readiness = Readiness::from_bits(revents);
        self.begin_fd_dispatch::<true>(slot, index, g, -1, readiness, kept, run_fd)
    }

    /// A watch whose readiness the loop kept, dispatched again; `None`
    /// (and nothing counted) when it has ended since. Sets `kept` as
    /// `dispatch_ready` does.
    pub(crate) fn redispatch(
        &self,
        token: Token,
        revents: u16,
        kept: &mut bool,
        run_fd: impl FnMut(&mut C, Token, RawFd, Readiness) -> bool,
    ) -> Option<Result<Occurred>> {
        let (index, slot, g) = self.resolve(token)?;
        if slot.quick_stale(g, false).is_some() {
            return None;
        }
        let readiness = Readiness::from_bits(revents);
        Some(self.begin_fd_dispatch::<true>(slot, index, g, -1, readiness, kept, run_fd))
    }

    /// An application's report on `fd` for fd watch `g` in `slot`: begins
    /// the dispatch and runs it, defers it or rejects it. Out of line, so
    /// that the stale path of `occurred_fd` stays a few instructions in
    /// the reporting loop; the dispatch is in line in it (with it out of
    /// line, a live report made one call more: `perf/instructions.sh`
    /// `report:fd_live` 237 instructions against 213 now, while a report
    /// deferred to a running callback costs 5 more in line).
    #[inline(never)]
    #[allow(clippy::too_many_arguments)] // the dispatch's state, passed down once
    fn occurred_fd_at(
        &self,
        slot: &Slot<C>,
        index: u32,
        g: Generation,
        fd: RawFd,
        revents: Readiness,
        kept: &mut bool,
        run_fd: impl FnMut(&mut C, Token, RawFd, Readiness) -> bool,
    ) -> Result<Occurred> {
        self.begin_fd_dispatch::<false>(slot, index, g, fd, revents, kept, run_fd)
    }

    /// Begins the dispatch of fd watch `g` in `slot` and runs it, defers it
    /// or rejects it. Out of line for an application's report (through
    /// `occurred_fd_at`), in line in the loop's `dispatch_ready` and
    /// `redispatch`, which run it for every event of a batch: two call
    /// levels fewer per event (this and `dispatch_fd` in line took 52 of
    /// 276 instructions per event off `perf/instructions.sh`
    /// `epoll:ready:1024`).
    ///
    /// `FROM_LOOP`: the engine's own loop saw the event on the registered
    /// fd (no fd check; `fd` is ignored), and `kept` is set when the watch
    /// keeps its readiness. Otherwise it is an application's report on
    /// `fd`, which keeps nothing. Only a `KEEP_READY` watch seen by the loop
    /// is dispatched with the readiness bookkeeping; every other dispatch
    /// is compiled without it and leaves `kept` as the caller passed it,
    /// `false` (the contract of `Dispatch`). (`kept` is an
    /// out-parameter, not a `(Result, bool)` returned: that pair went
    /// through a stack temporary written in bytes and read back in 16, a
    /// store-forwarding stall on every live report; `occurred` `fd_live/1t`
    /// measured 31 ns with the pair, 26 without.)
    #[inline(always)]
    #[allow(clippy::too_many_arguments)] // the dispatch's state, passed down once
    fn begin_fd_dispatch<const FROM_LOOP: bool>(
        &self,
        slot: &Slot<C>,
        index: u32,
        g: Generation,
        fd: RawFd,
        revents: Readiness,
        kept: &mut bool,
        run_fd: impl FnMut(&mut C, Token, RawFd, Readiness) -> bool,
    ) -> Result<Occurred> {
        match slot.begin_fd(g, (!FROM_LOOP).then_some(fd), revents.bits()) {
            Begin::Owned => {
                // Read while we own the dispatch: the fd and whether the
                // watch keeps its readiness cannot change under us (modify
                // refuses to switch the latter).
                let param = slot.param();
                if FROM_LOOP && param_interest(param).keeps_ready() {
                    let fd = param_fd(param);
                    self.dispatch_fd::<true>(slot, index, g, fd, revents, kept, run_fd)
                } else {
                    // A plain watch (or an application's report): the same
                    // dispatch as an application's report, without the
                    // bookkeeping of kept readiness (`kept` stays the
                    // caller's `false`).
                    let fd = if FROM_LOOP { param_fd(param) } else { fd };
                    self.dispatch_fd::<false>(slot, index, g, fd, revents, kept, run_fd)
                }
            }
            Begin::Deferred => {
                self.stats.rerun();
                Ok(Occurred::Deferred)
            }
            Begin::Stale(reason) => Ok(self.reject(reason)),
        }
    }

    /// A report that timer `token` occurred: the callback runs at most once
    /// per registration, however often or concurrently this is called.
    /// Always inlined: see `occurred_fd`.
    #[inline(always)]
    pub(crate) fn occurred_timeout(
        &self,
        token: Token,
        run_timer: impl FnOnce(C, Token, u64),
    ) -> Result<Occurred> {
        let Some((index, slot, g)) = self.resolve(token) else {
            return Ok(self.reject(StaleReason::OutOfRange));
        };
        if let Some(reason) = slot.quick_stale(g, true) {
            return Ok(self.reject(reason));
        }
        match slot.begin_timer(g) {
            Ok(()) => self.dispatch_timer(slot, index, g, Token::new(index, g), run_timer, None),
            Err(reason) => Ok(self.reject(reason)),
        }
    }

    /// The engine's own loop fires each of `tokens` that is due at `now`
    /// (an offset on the engine's clock), in order, and notes each outcome
    /// in `tally`. A token not due, being changed or gone is skipped (the
    /// loop drops its queue entry: whoever changes it hands it over again).
    /// The slots of the fired timers go back to the free list in batches
    /// ([`FreeBatch`]): when timers come from another thread, that thread
    /// takes the slots from this one's free stack.
    pub(crate) fn fire_due(
        &self,
        tokens: impl IntoIterator<Item = Token>,
        now: u64,
        tally: &mut Tally,
        run_timer: impl Fn(C, Token, u64),
    ) {
        let mut batch = self.arena.batch();
        let mut tokens = tokens.into_iter().map(|token| (token, self.resolve(token)));
        let mut next = tokens.next();
        while let Some((token, resolved)) = next {
            // The next timer's slot line was written last by the thread
            // that registered it: ask for it while this one fires.
            next = tokens.next();
            if let Some((_, Some((_, slot, _)))) = next {
                prefetch_write(slot);
            }
            let Some((index, slot, g)) = resolved else {
                continue;
            };
            match slot.begin_timer_if_due(g, now) {
                Due::Owned => tally.note(self.dispatch_timer(
                    slot,
                    index,
                    g,
                    token,
                    &run_timer,
                    Some(&mut batch),
                )),
                Due::NotYet | Due::Stale(_) => {}
            }
        }
    }

    /// Runs an fd watch's callback, and again for every rerun, then
    /// finishes the dispatch. In line in its two callers: the out-of-line
    /// `occurred_fd_at` of the application's reports, and the loop's
    /// per-event path. Sets `kept` when the last run did not clear the
    /// readiness and the watch is still live, if `KEEP` (see
    /// `begin_fd_dispatch`'s `FROM_LOOP`).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)] // the dispatch's state, passed down once
    fn dispatch_fd<const KEEP: bool>(
        &self,
        slot: &Slot<C>,
        index: u32,
        g: Generation,
        fd: RawFd,
        revents: Readiness,
        kept_out: &mut bool,
        mut run_fd: impl FnMut(&mut C, Token, RawFd, Readiness) -> bool,
    ) -> Result<Occurred> {
        let _scope = scope::Scope::enter_callback();
        let token = Token::new(index, g);
        let mut readiness = revents;
        let mut outcome = Ok(Occurred::Suppressed);
        let mut kept = false;
        loop {
            let run = if self.recheck {
                self.recheck(slot, readiness)
            } else {
                Some(readiness)
            };
            match run {
                Some(readiness) => {
                    // SAFETY: we own the dispatch (BUSY) until `finish`.
                    let ran = unsafe {
                        slot.with_callback(|cell| match cell {
                            // `&& KEEP` inside the closure: without `KEEP`
                            // the answer is a constant before it is stored
                            // in the unwind's result.
                            Some(cb) => catch_unwind(AssertUnwindSafe(|| {
                                run_fd(cb, token, fd, readiness) && KEEP
                            })),
                            None => Ok(false),
                        })
                    };
                    self.stats.dispatched();
                    match ran {
                        Ok(keep) => {
                            kept = keep;
                            if outcome.is_ok() {
                                outcome = Ok(Occurred::Dispatched);
                            }
                        }
                        Err(payload) => {
                            self.stats.panicked();
                            // Policy: a watch whose callback panicked is
                            // ended, as if deregistered from inside it.
                            if let Kill::Killed { took_ctrl: true } = slot.kill(g) {
                                let _ = self.end_ctrl(slot, index, g);
                            }
                            self.backend.changed();
                            outcome = Err(Error::CallbackPanicked(Box::new(CallbackPanic {
                                token,
                                message: panic_message(payload),
                            })));
                        }
                    }
                }
                None => self.stats.recheck_suppressed(),
            }
            match slot.finish(g) {
                Finish::Rerun(pending) => readiness = Readiness::from_bits(pending),
                Finish::Idle => {
                    if KEEP {
                        *kept_out = kept && outcome.is_ok();
                    }
                    return outcome;
                }
                Finish::TearDown => {
                    self.tear_down(slot, index, g);
                    if KEEP {
                        *kept_out = false;
                    }
                    return outcome;
                }
            }
        }
    }

    /// libxl's `poll(fd, 0)` re-check: what of the watch's interest holds
    /// now, or `None` if nothing does.
    fn recheck(&self, slot: &Slot<C>, reported: Readiness) -> Option<Readiness> {
        let param = slot.param();
        let interest = param_interest(param);
        let mut pfd = libc::pollfd {
            fd: param_fd(param),
            events: interest.as_poll_events(),
            revents: 0,
        };
        loop {
            // SAFETY: `pfd` is one valid pollfd and the timeout is zero.
            let n = unsafe { libc::poll(&mut pfd, 1, 0) };
            if n >= 0 {
                let now = Readiness::from_poll_revents(pfd.revents).relevant_to(interest);
                return (n > 0 && !now.is_empty()).then_some(now);
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                // The re-check could not be made: deliver what was reported
                // rather than lose it.
                return Some(reported);
            }
        }
    }

    #[inline(never)]
    fn dispatch_timer<'a>(
        &'a self,
        slot: &'a Slot<C>,
        index: u32,
        g: Generation,
        token: Token,
        run_timer: impl FnOnce(C, Token, u64),
        batch: Option<&mut FreeBatch<'a, C>>,
    ) -> Result<Occurred> {
        let _scope = scope::Scope::enter_callback();
        // A fired timer is DEAD: no modify can change the param any more.
        // The offset, not an `Instant`: the event converts it only if the
        // callback asks for its deadline.
        let deadline = slot.param();
        // SAFETY: we own the dispatch (BUSY).
        let callback = unsafe { slot.with_callback(|cell| cell.take()) };
        let mut outcome = Ok(Occurred::Dispatched);
        if let Some(cb) = callback {
            self.stats.dispatched();
            if let Err(payload) =
                catch_unwind(AssertUnwindSafe(move || run_timer(cb, token, deadline)))
            {
                self.stats.panicked();
                outcome = Err(Error::CallbackPanicked(Box::new(CallbackPanic {
                    token,
                    message: panic_message(payload),
                })));
            }
        }
        match slot.finish(g) {
            Finish::TearDown => self.tear_down_into(slot, index, g, batch),
            // A control operation still holds CTRL; it tears down.
            Finish::Idle => {}
            Finish::Rerun(_) => unreachable!("a fired timer is dead and never reruns"),
        }
        outcome
    }
}
