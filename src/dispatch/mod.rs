//! Layer 2, the dispatch core: [`Core`] resolves a token to its slot,
//! registers, begins a dispatch, runs the callback, finishes it, and tears
//! a registration down; it counts what it does. It knows no backend: it
//! tells whichever it was given through [`Backend`], and it knows no
//! callback type: the facade (layer 4) says how to run one (`run_fd`,
//! `run_timer` in [`run`]).
//!
//! - this file: the core, registration, and looking registrations up;
//! - [`control`]: ending `CTRL`, tearing down, deregistering, modifying;
//! - [`run`]: the dispatch paths of reports and of the loops.

use crate::base::clock::Clock;
use crate::base::error::{Error, Result};
use crate::base::readiness::{pack_param, param_fd, param_interest, Interest};
use crate::base::stats::StatCounters;
use crate::base::sync::{Condvar, Mutex};
use crate::base::token::{Generation, StaleReason, Token};
use crate::nexus::arena::Arena;
use crate::nexus::slot::{Slot, State};
use std::os::fd::RawFd;
use std::time::Instant;

pub(crate) mod backend;
mod control;
mod run;

pub(crate) use backend::{Backend, BackendCounters, Dispatch, Removal, Tally};
pub use backend::{BackendKind, Occurred};

/// What the facade chose when it built the core.
pub(crate) struct Options {
    pub(crate) recheck: bool,
    pub(crate) limit: usize,
    pub(crate) first_generation: Generation,
}

/// The dispatch core of one engine, generic over the callback type `C`
/// that its slots hold.
pub(crate) struct Core<C> {
    arena: Arena<C>,
    pub(crate) backend: crate::base::sync::StdArc<dyn Backend>,
    pub(crate) stats: StatCounters,
    pub(crate) clock: Clock,
    pub(crate) recheck: bool,
    /// The backend's [`Backend::timer_register_needs_ctrl`], asked once: a
    /// fixed property of the backend, and a dynamic call fewer per timer.
    timers_need_ctrl: bool,
    limit: usize,
    /// Distinct for every engine of the process (never reused, unlike an
    /// address), so a poll set can tell which engine filled it.
    pub(crate) id: u64,
    /// Where a deregistering thread sleeps while a callback it must wait for
    /// is still running. Taken only by such a thread and by the tearer of a
    /// slot marked `WAITER`: never on an event path without a waiter.
    waiters: Mutex<()>,
    waiters_cv: Condvar,
}

impl<C: Send + 'static> Core<C> {
    pub(crate) fn new(
        backend: crate::base::sync::StdArc<dyn Backend>,
        clock: Clock,
        options: Options,
    ) -> Core<C> {
        Core {
            arena: Arena::new(options.limit, options.first_generation),
            timers_need_ctrl: backend.timer_register_needs_ctrl(),
            backend,
            stats: StatCounters::default(),
            clock,
            recheck: options.recheck,
            limit: options.limit,
            id: crate::base::sync::next_engine_id(),
            waiters: Mutex::new(()),
            waiters_cv: Condvar::new(),
        }
    }

    /// Bytes one registration occupies in the arena (its slot).
    pub(crate) fn slot_bytes() -> usize {
        Arena::<C>::slot_bytes()
    }

    fn alloc(&self) -> Result<(u32, &Slot<C>, Generation)> {
        let (index, slot) = self
            .arena
            .alloc()
            .map_err(|_| Error::Full { limit: self.limit })?;
        self.stats.registered();
        Ok((index, slot, slot.load().generation()))
    }

    /// Registers an fd watch: the slot is published (dispatchable) before
    /// the backend is told, under `CTRL`.
    pub(crate) fn register_fd(&self, fd: RawFd, interest: Interest, callback: C) -> Result<Token> {
        let (index, slot, g) = self.alloc()?;
        slot.set_param(pack_param(fd, interest.bits()));
        // SAFETY: `alloc` handed us this free slot and we have not published
        // it yet.
        unsafe {
            slot.install(callback);
            slot.publish(g, false);
        }
        let token = Token::new(index, g);
        pause_point!(BeforeBackendCall);
        let result = self.backend.fd_register(fd, interest, token);
        self.complete_registration(slot, index, g, result, false)?;
        Ok(token)
    }

    /// Registers a one-shot timer at `deadline`; the backend's loop learns
    /// of it once `CTRL` is released ([`Backend::timer_armed`]).
    pub(crate) fn register_timer(&self, deadline: Instant, callback: C) -> Result<Token> {
        let (index, slot, g) = self.alloc()?;
        let offset = self.clock.offset(deadline);
        slot.set_param(offset);
        if !self.timers_need_ctrl {
            let token = Token::new(index, g);
            // The backend keeps nothing it must see published: its value is
            // made first, and the timer goes live without CTRL.
            let reg = match self.backend.timeout_register(deadline, token) {
                Ok(reg) => reg,
                Err(e) => {
                    // Nothing was published: hand the slot straight back.
                    self.arena.recycle(index, slot);
                    self.stats.deregistered();
                    drop(callback);
                    return Err(e);
                }
            };
            // SAFETY: `alloc` handed us this free slot, not yet published;
            // its backend value and callback are installed before it is.
            unsafe {
                slot.install(callback);
                slot.install_backend_reg(reg);
                slot.publish_settled_timer(g);
            }
            pause_point!(AfterBackendCall);
            self.backend.timer_armed(token, offset);
            self.backend.changed();
            return Ok(token);
        }
        // SAFETY: as in `register_fd`.
        unsafe {
            slot.install(callback);
            slot.publish(g, true);
        }
        let token = Token::new(index, g);
        pause_point!(BeforeBackendCall);
        let result = self.backend.timeout_register(deadline, token);
        self.complete_registration(slot, index, g, result, true)?;
        Ok(token)
    }

    /// Index, slot and generation of a token, if it could name anything.
    #[inline]
    fn resolve(&self, token: Token) -> Option<(u32, &Slot<C>, Generation)> {
        let g = token.generation()?;
        let index = token.index();
        Some((index, self.arena.get(index)?, g))
    }

    /// Counts a rejected report.
    #[inline]
    fn reject(&self, reason: StaleReason) -> Occurred {
        self.stats.stale(reason);
        Occurred::Stale(reason)
    }

    /// Whether `token` names a live registration that has not ended.
    pub(crate) fn is_live(&self, token: Token) -> bool {
        self.live_param(token).is_some()
    }

    /// State and param of the live, not ended registration `token`.
    fn live_param(&self, token: Token) -> Option<(State, u64)> {
        let (_, slot, g) = self.resolve(token)?;
        slot.live_param().filter(|(s, _)| s.generation() == g)
    }

    /// Deadline of the pending timer `token`.
    pub(crate) fn timer_deadline(&self, token: Token) -> Option<u64> {
        let (s, param) = self.live_param(token)?;
        s.is_timer().then_some(param)
    }

    /// Visits the live, not ended registrations: the token, and either the
    /// fd watch's fd and interest or the timer's deadline offset.
    pub(crate) fn scan(&self, mut visit: impl FnMut(Token, Registration)) {
        for index in 0..self.arena.claimed() {
            if let Some((s, param)) = self.arena.get(index).and_then(Slot::live_param) {
                let what = if s.is_timer() {
                    Registration::Timer { deadline: param }
                } else {
                    Registration::Fd {
                        fd: param_fd(param),
                        interest: param_interest(param),
                    }
                };
                visit(Token::new(index, s.generation()), what);
            }
        }
    }

    /// Ends every registration still live (the engine is going away).
    pub(crate) fn end_all(&self) {
        for index in 0..self.arena.claimed() {
            if let Some(slot) = self.arena.get(index) {
                let s = slot.load();
                if s.is_live() {
                    // An fd closed while registered has nobody to tell.
                    let _ = self.deregister(Token::new(index, s.generation()));
                }
            }
        }
    }
}

/// A live registration, as [`Core::scan`] sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Registration {
    Fd { fd: RawFd, interest: Interest },
    Timer { deadline: u64 },
}
