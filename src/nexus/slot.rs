//! The nexus slot and its protocol: one atomic state word decides, with one
//! compare-and-swap per transition, who may run a registration's callback,
//! who may touch its backend registration, and who tears it down.
//!
//! # The state word
//!
//! ```text
//!  63                       24 23               8 7                     0
//! +---------------------------+------------------+-----------------------+
//! |    generation (40 bits)   | pending revents  | F W C D R B T L       |
//! +---------------------------+------------------+-----------------------+
//!   L LIVE    the slot holds a registration of this generation
//!   T TIMER   ... and it is a timer (else an fd watch)
//!   B BUSY    a dispatcher owns the callback and is running it
//!   R RERUN   an event arrived while BUSY; the dispatcher runs again
//!   D DEAD    deregistered, cancelled or fired: no new dispatch may start
//!   C CTRL    a control operation (register, modify, deregister) owns the
//!             backend registration (the application's per-registration value)
//!   W WAITER  a thread sleeps until this generation is torn down
//!   F FIRED   the timer ended by firing, not by cancel
//! ```
//!
//! A free slot is `generation` with no flags, where `generation` is the one
//! its next registration will carry.
//!
//! # Transitions
//!
//! ```text
//!               publish                     begin (CAS)
//!   FREE(g) ──────────────▶ LIVE|CTRL(g) ─┐ ┌──────────────▶ LIVE|BUSY(g) ──┐
//!      ▲                        │ end_ctrl│ │                   │  ▲  │ finish│
//!      │                        ▼         │ │ occurred while    │  │  │ (no   │
//!      │                    LIVE(g) ◀─────┘─┘  BUSY: CAS sets   ▼  │  │ RERUN)│
//!      │                        │              RERUN+revents  RERUN─┘  │       │
//!      │ release                │ kill (CAS sets DEAD, and CTRL if     ▼       │
//!      │ (gen+1, or retire)     │ it is free)              LIVE(g) ◀───────────┘
//!      │                        ▼
//!      └──────── last one out: DEAD and neither BUSY nor CTRL ◀── finish / end_ctrl
//! ```
//!
//! The rules that make the protocol work:
//!
//! 1. **One CAS decides a dispatch** ([`Slot::begin_fd`], [`Slot::begin_timer`]):
//!    only the thread that moves `LIVE(g)` to `LIVE|BUSY(g)` runs the
//!    callback. An fd event that finds `BUSY(g)` sets `RERUN` and ORs its
//!    revents into the word with the same CAS, so it is never lost and never
//!    run concurrently; the dispatcher picks it up in [`Slot::finish`]. A
//!    timer's begin sets `BUSY|DEAD|FIRED` at once: it is one-shot, so a
//!    second delivery, or a cancel, finds it dead.
//! 2. **`DEAD` is set once and never cleared** until the slot is released;
//!    whoever sets it ([`Slot::kill`]) has ended the registration. `finish`
//!    never honours `RERUN` on a dead slot, so no callback starts after a
//!    deregistration took effect.
//! 3. **`CTRL` guards the backend registration** (the hook value of an
//!    application loop): only its holder touches it. Register holds it
//!    across the backend's register hook; modify across the modify hook;
//!    `kill` takes it along with `DEAD` when it is free. The holder that
//!    releases it on a dead slot ([`Slot::end_ctrl`]) disposes of the hook
//!    value first. `CTRL` is held only across one backend call, never while
//!    waiting for anything else, so control operations cannot deadlock.
//! 4. **The last one out tears down**: the transition that leaves a slot
//!    `DEAD` with neither `BUSY` nor `CTRL` is made by exactly one thread,
//!    and that thread drops the callback and releases the slot
//!    ([`Slot::release`]), with the next generation or, at
//!    [`Generation::MAX`], retired for good.
//! 5. **An idle registration is torn down in two steps**: when `kill`
//!    finds no dispatch and no control operation, its CAS (`DEAD|CTRL`)
//!    already makes it the last one out ([`Kill::KilledIdle`]); it tells
//!    the backend, empties the cells, and frees the word with one swap
//!    ([`Slot::release_killed`]) instead of `end_ctrl` then `release`. The
//!    registration stays `DEAD` (not gone) until the cells are empty, so a
//!    second deregistration from outside a callback still waits for them.
//!    (An earlier version freed the word in the `kill` CAS itself; the
//!    concurrent fuzz target caught a second deregistration returning
//!    before the callback was dropped.)
//!
//! # Invariants of DESIGN.md and the tests that pin them
//!
//! | invariant | tests |
//! |---|---|
//! | 1 a token is not a pointer | `tests/stale.rs`: `random_tokens_never_dispatch`, `out_of_range_token_is_rejected_without_touching_memory` |
//! | 2 generations never wrap | `tests/stale.rs`: `slot_is_retired_at_max_generation_not_wrapped` |
//! | 3 slot memory lives as long as the engine | `tests/lifecycle.rs`: `callback_state_is_dropped_once_after_last_dispatch`, `late_reports_after_heavy_reuse_read_only_live_memory`; `tests/loom.rs` (loom checks every cell access is ordered) |
//! | 4 one CAS decides a dispatch | `tests/races.rs`: `timer_delivered_by_two_threads_at_once_runs_once`, `event_during_callback_is_rerun_not_lost`; `tests/loom.rs`; `tests/stress.rs` |
//! | 5 no start after deregister; waits for a running callback | `tests/races.rs`: `deregister_from_other_thread_waits_for_running_callback`, `cancel_vs_fire_has_exactly_one_outcome`, `callbacks_that_deregister_each_other_do_not_deadlock` |
//! | 6 no lock on an event path; callbacks may re-enter | `tests/behaviour.rs`: `callback_registers_and_deregisters_other_watches`, `timer_callback_rearms_a_new_timer_from_inside`; `tests/races.rs`: `deregister_from_inside_own_callback` |
//! | 7 fd check optional, generation check not | `tests/stale.rs`: `occurred_with_wrong_fd_is_stale`, `recheck_suppresses_condition_that_no_longer_holds` |
//! | 8 nothing registered is lost, from any thread | `tests/reliability.rs`: `timers_registered_and_reset_by_a_preempted_low_priority_thread_all_fire`, `timer_registered_while_its_registrant_holds_ctrl_fires`, `timer_reset_while_the_resetter_holds_ctrl_fires_at_the_new_deadline`, `wake_that_lands_while_a_batch_is_dispatched_is_not_swallowed`; `tests/loom_loop.rs` |
//! | 9 a kernel entry belongs to one registration | `tests/reliability.rs`: `deregistering_a_watch_whose_fd_number_was_reused_leaves_the_newer_watch_alone`, `slow_modify_racing_a_self_deregistering_callback_never_touches_a_newer_watch`, `orphaned_entry_kept_by_a_dup_is_removed_and_the_loop_sleeps_again`; `tests/loom_loop.rs` |
//!
//! # Which model checks which transition
//!
//! loom explores every interleaving (up to 3 preemptions) of the real code;
//! `tests/loom.rs` drives the slot through the public API on hooks,
//! `tests/loom_loop.rs` through the real epoll loop turned without blocking.
//!
//! | transition | raced against | loom model |
//! |---|---|---|
//! | `begin_fd` (CAS to `BUSY`, or `RERUN`) | `begin_fd` on another thread | `loom.rs`: `occurred_vs_occurred_runs_twice_never_concurrently` |
//! | `begin_fd` / `finish` | `kill` (deregister), the idle teardown (`KilledIdle`, `release_killed`) included | `loom.rs`: `occurred_vs_occurred_vs_deregister` |
//! | `kill` / `release_killed` | a second `kill` and its wait | `loom.rs`: `deregister_vs_deregister_both_return_after_the_callback_is_dropped` |
//! | `begin_timer` | `kill` (cancel); `begin_timer` | `loom.rs`: `timer_fire_vs_cancel_has_exactly_one_outcome`, `timer_fire_vs_fire_runs_once` |
//! | `release` and `publish` of the next generation | a late report | `loom.rs`: `register_vs_reuse_never_misdelivers_old_token` |
//! | `publish` .. `end_ctrl` of a timer, then the hand-over to the loop | `begin_timer_if_due` | `loom_loop.rs`: `timer_registered_from_another_thread_vs_loop_turn_fires` |
//! | `lock_ctrl` .. `end_ctrl` of a timer reset | `begin_timer_if_due` | `loom_loop.rs`: `timer_reset_from_another_thread_vs_loop_turn_fires` (not lost), `timer_reset_later_vs_due_check_never_fires_on_the_old_deadline` (never early: the reset version) |
//! | `lock_ctrl` .. `end_ctrl` of an fd modify | `begin_fd` / `finish` | `loom_loop.rs`: `fd_modify_vs_dispatch_lands_once_and_never_overlaps` |
//! | `kill` without `CTRL` (a modify holds it), `end_ctrl` disposing | a dispatch that deregisters itself | `loom_loop.rs`: `modify_vs_self_deregistering_callback_removes_once_and_the_loser_says_so` |
//! | the backend's removal under the fd number's claim | a new registration of the reused number | `loom_loop.rs`: `deregister_of_a_closed_fd_vs_register_of_its_reused_number_keeps_the_new_entry` |
//! | the wake-up drain | a `wake()` during the batch | `loom_loop.rs`: `wake_during_a_batch_is_seen_or_still_pending` |
//!
//! Covered only by real-thread stress tests (`tests/stress.rs`,
//! `tests/races.rs`, `tests/reliability.rs`): `gone_or_mark_waiter` and the
//! waiter's sleep (loom would need the condvar wake-up of a deregistration
//! that waits for a running callback on a third thread); retirement at
//! [`Generation::MAX`] under concurrency; `lock_ctrl` spinning on another
//! modify's `CTRL` (a spin, which loom's bounded scheduler cannot model:
//! see `sync::ClaimFlag`); the io_uring waiter (its ring cannot be shared
//! with loom's scheduler; it runs the same `Builtin` code as the epoll
//! waiter, which the models cover).

use crate::base::sync::{AtomicU64, Ordering, UnsafeCell};
use crate::base::token::{Generation, StaleReason};
pub(crate) use crate::nexus::state::State;
use std::any::Any;

/// What a backend keeps per registration (an application loop's hook value).
pub(crate) type BackendReg = Box<dyn Any + Send>;

/// Outcome of a begin-dispatch attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Begin {
    /// This thread owns the dispatch (`BUSY`) and must call [`Slot::finish`].
    Owned,
    /// Another thread is dispatching; the event was folded into its rerun.
    Deferred,
    Stale(StaleReason),
}

/// Outcome of [`Slot::begin_timer_if_due`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// Fired: this thread owns the dispatch, as with [`Begin::Owned`].
    Owned,
    /// Not due, or being modified: look again later.
    NotYet,
    Stale(StaleReason),
}

/// What the dispatcher must do after a callback returned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    /// Events arrived meanwhile: run again with these revents (still `BUSY`).
    Rerun(u16),
    /// The slot is idle again.
    Idle,
    /// The registration is dead and this thread was the last one out: it
    /// must tear the slot down.
    TearDown,
}

/// Outcome of [`Slot::kill`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kill {
    /// The generation is gone already (torn down, or never existed).
    Gone,
    /// The registration was already dead; someone else finishes it.
    AlreadyDead,
    /// This call ended the registration. With `took_ctrl`, the caller holds
    /// `CTRL` and must call [`Slot::end_ctrl`].
    Killed { took_ctrl: bool },
    /// The registration was idle (no dispatch, no control operation), and
    /// this call ended it and took `CTRL`: it is the last one out already.
    /// It tells the backend and empties the cells, then releases the slot
    /// with [`Slot::release_killed`], without an `end_ctrl` between. `was`
    /// is the registration's last live state (its kind).
    KilledIdle { was: State },
}

/// Outcome of releasing `CTRL`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum EndCtrl {
    Live,
    /// The registration is dead but a dispatcher still runs; it tears down.
    Dead,
    /// Dead, and this thread was the last one out.
    TearDown,
}

/// One arena cell, holding a callback of type `C` (the facade's; the
/// protocol never looks inside it). Its memory lives as long as the engine; only the state
/// word's current owner touches the cells (see the module doc for who owns
/// what, when). One cache line each: 56 bytes of fields would otherwise let
/// two registrations share a line, and two threads reporting for
/// neighbouring slots would contend on it (measured: 20 ns per report
/// alone, 43-55 ns beside a neighbour).
#[repr(align(64))]
pub(crate) struct Slot<C> {
    state: AtomicU64,
    /// fd watch: the fd in the low 32 bits, the interest above. Timer: the
    /// deadline in nanoseconds after the engine's base instant. Written only
    /// by the registrant (slot free) or the `CTRL` holder; read by anyone who
    /// has validated the generation, with the CAS that follows confirming it.
    param: AtomicU64,
    /// Touched only by: the registrant (before publish), the dispatcher
    /// (while `BUSY`), the tearer (after the last one out).
    callback: UnsafeCell<Option<C>>,
    /// Touched only by the `CTRL` holder, or by the tearer.
    backend_reg: UnsafeCell<Option<BackendReg>>,
}

// SAFETY: the cells are only touched by the thread that owns them under the
// state-word protocol (see the fields' docs and the module doc); everything
// else is atomic. The cells' contents are `Send`, which is what moving
// ownership between threads needs.
unsafe impl<C: Send> Sync for Slot<C> {}

impl<C> Slot<C> {
    pub(crate) fn new(first: Generation) -> Slot<C> {
        Slot {
            state: AtomicU64::new(State::free(first).0),
            param: AtomicU64::new(0),
            callback: UnsafeCell::new(None),
            backend_reg: UnsafeCell::new(None),
        }
    }

    #[inline]
    pub(crate) fn load(&self) -> State {
        // Acquire: pairs with the Release of `publish` and `end_ctrl` (which
        // store `param`) so that a reader who sees generation g also sees
        // g's param, or a later one that the following CAS will reject.
        State(self.state.load(Ordering::Acquire))
    }

    #[inline]
    fn cas(&self, current: State, new: State) -> Result<State, State> {
        // AcqRel on success: Acquire to see what the previous owner wrote to
        // the cells (callback state, backend value), Release to publish our
        // own writes to the next owner. Acquire on failure: the loop that
        // retries reads the fresh word's param again.
        self.state
            .compare_exchange(current.0, new.0, Ordering::AcqRel, Ordering::Acquire)
            .map(State)
            .map_err(State)
    }

    /// The param word. Acquire: pairs with the Release store in
    /// [`Slot::set_param`], so a reader that sees a later registration's
    /// param also sees that registration's state, and its CAS on the old
    /// generation fails (see `begin_fd`).
    #[inline]
    pub(crate) fn param(&self) -> u64 {
        self.param.load(Ordering::Acquire)
    }

    /// The state and param of the registration this slot holds, if it is
    /// live and not ended, read consistently: `None` also when the slot moved
    /// to another generation while the param was read.
    pub(crate) fn live_param(&self) -> Option<(State, u64)> {
        let s = self.load();
        if !s.is_live() || s.is_dead() {
            return None;
        }
        let param = self.param();
        (self.load().generation() == s.generation()).then_some((s, param))
    }

    /// Sets the param word. Only the registrant (before publish) or the
    /// `CTRL` holder may call this.
    pub(crate) fn set_param(&self, value: u64) {
        // Release: see `param`.
        self.param.store(value, Ordering::Release);
    }

    // ----- registration ---------------------------------------------------

    /// Stores the callback of a registration about to be published.
    ///
    /// # Safety
    /// The caller owns the free slot (popped it from the free list or claimed
    /// it fresh) and has not published it yet.
    pub(crate) unsafe fn install(&self, callback: C) {
        self.callback.with_mut(|cb| {
            // SAFETY: the caller owns the unpublished free slot, so nobody
            // else can reach the cell (function contract).
            unsafe { *cb = Some(callback) }
        });
    }

    /// `FREE(g)` -> `LIVE(g)`: a timer whose backend needs no register call
    /// (the built-in and poll loops keep no per-timer value: the caller
    /// installed it already) becomes live without `CTRL`, saving the
    /// `end_ctrl` of [`Slot::publish`].
    ///
    /// # Safety
    /// As [`Slot::install`]; `g` is the slot's current (free) generation,
    /// and the backend value is installed.
    pub(crate) unsafe fn publish_settled_timer(&self, g: Generation) {
        let s = State::free(g).with(State::LIVE | State::TIMER);
        // Release: as in `publish`.
        self.state.store(s.0, Ordering::Release);
    }

    /// Installs the backend's value of a registration not yet published.
    ///
    /// # Safety
    /// As [`Slot::install`].
    pub(crate) unsafe fn install_backend_reg(&self, reg: BackendReg) {
        self.backend_reg.with_mut(|cell| {
            // SAFETY: the caller owns the unpublished free slot.
            unsafe { *cell = Some(reg) }
        });
    }

    /// `FREE(g)` -> `LIVE|CTRL(g)`: the registration becomes dispatchable
    /// while the registrant keeps `CTRL` for the backend's register call.
    ///
    /// # Safety
    /// As [`Slot::install`]; `g` is the slot's current (free) generation.
    pub(crate) unsafe fn publish(&self, g: Generation, timer: bool) {
        let kind = if timer { State::TIMER } else { 0 };
        let s = State::free(g).with(State::LIVE | State::CTRL | kind);
        // Release: publishes param and callback to every thread that
        // Acquire-loads the word and sees generation g live.
        self.state.store(s.0, Ordering::Release);
    }

    // ----- dispatch -------------------------------------------------------

    /// The reason a report for `g` (a timer report if `timer`) is stale, as
    /// far as one load of the word can tell; `None` means "try to begin".
    #[inline]
    pub(crate) fn quick_stale(&self, g: Generation, timer: bool) -> Option<StaleReason> {
        // Same order of checks as `begin_fd` and `begin_timer`.
        let s = self.load();
        if !s.holds(g) {
            Some(StaleReason::Generation)
        } else if s.is_timer() != timer {
            Some(StaleReason::WrongKind)
        } else if s.is_dead() {
            Some(StaleReason::Generation)
        } else {
            None
        }
    }

    /// Tries to take the dispatch of fd watch `g` for an event with
    /// `revents` on `fd` (`None`: the engine's own loop observed it on the
    /// registered fd, no check needed).
    pub(crate) fn begin_fd(&self, g: Generation, fd: Option<i32>, revents: u16) -> Begin {
        let mut s = self.load();
        if !s.holds(g) {
            return Begin::Stale(StaleReason::Generation);
        }
        if s.is_timer() {
            return Begin::Stale(StaleReason::WrongKind);
        }
        // The fd is read after the Acquire load that showed g live. If the
        // slot has been reused since, the param may be the new one; then the
        // state left `LIVE(g)` before that param was written (release
        // chain: kill -> free list -> registrant -> set_param), and the CAS
        // below, ordered after our Acquire of that param, fails.
        if fd.is_some_and(|fd| crate::base::readiness::param_fd(self.param()) != fd) {
            // The param may be a later registration's (see above): then the
            // word has moved on too, and the right reason is the generation.
            let now = self.load();
            if !now.holds(g) || now.is_dead() {
                return Begin::Stale(StaleReason::Generation);
            }
            return Begin::Stale(StaleReason::FdMismatch);
        }
        loop {
            if !s.holds(g) || s.is_dead() {
                return Begin::Stale(StaleReason::Generation);
            }
            let (new, outcome) = if s.is_busy() {
                (s.with(State::RERUN).with_pending(revents), Begin::Deferred)
            } else {
                (s.with(State::BUSY), Begin::Owned)
            };
            match self.cas(s, new) {
                Ok(_) => return outcome,
                Err(actual) => s = actual,
            }
        }
    }

    /// Tries to take the (one and only) dispatch of timer `g`; `Ok` means
    /// this thread owns it, as with [`Begin::Owned`].
    pub(crate) fn begin_timer(&self, g: Generation) -> Result<(), StaleReason> {
        let mut s = self.load();
        loop {
            if !s.holds(g) {
                return Err(StaleReason::Generation);
            }
            if !s.is_timer() {
                return Err(StaleReason::WrongKind);
            }
            if s.is_dead() {
                // Fired or cancelled already: this delivery is a duplicate.
                // (A timer is BUSY only once fired: DEAD.)
                return Err(StaleReason::Generation);
            }
            let new = s.with(State::BUSY | State::DEAD | State::FIRED);
            match self.cas(s, new) {
                Ok(_) => return Ok(()),
                Err(actual) => s = actual,
            }
        }
    }

    /// Fires timer `g` if its deadline is at or before `now` (an offset on
    /// the engine's clock): the engine's own loop uses this, so that a
    /// concurrent `reset` can never make it fire early.
    ///
    /// One CAS, and none for a timer that is not due: the deadline is read
    /// after the word, and the fire is a CAS from exactly that word. A
    /// reset between the two changes the word (`CTRL` while it runs, and a
    /// new reset version when it ends: every `end_ctrl` of a live timer
    /// advances it), so the CAS fails and the loop looks again; a deadline
    /// read with the word it belongs to is the current one.
    pub(crate) fn begin_timer_if_due(&self, g: Generation, now: u64) -> Due {
        let mut s = self.load();
        loop {
            if !s.holds(g) || s.is_dead() {
                return Due::Stale(StaleReason::Generation);
            }
            if !s.is_timer() {
                return Due::Stale(StaleReason::WrongKind);
            }
            if s.ctrl() {
                // A registration or modify is under way (or, with two
                // poll-loop threads, the other's due check). Passing the
                // timer over is safe: whoever holds CTRL hands it to the
                // backend again, with its deadline then, after letting go
                // (`Backend::timer_armed`); a poll loop rescans every timer
                // on its next `beforepoll`.
                return Due::NotYet;
            }
            // Acquire (in `param`): the deadline written before the word we
            // loaded was published, or a later one (then the CAS fails).
            if self.param() > now {
                return Due::NotYet;
            }
            match self.cas(s, s.with(State::BUSY | State::DEAD | State::FIRED)) {
                Ok(_) => return Due::Owned,
                Err(actual) => s = actual,
            }
        }
    }

    /// Runs `f` on the callback cell.
    ///
    /// # Safety
    /// The caller owns the dispatch of the slot's current generation (its
    /// `begin_*` returned [`Begin::Owned`] and it has not finished), or is
    /// the tearer.
    pub(crate) unsafe fn with_callback<R>(&self, f: impl FnOnce(&mut Option<C>) -> R) -> R {
        self.callback.with_mut(|cb| {
            // SAFETY: BUSY (or being the tearer) gives exclusive access to
            // the callback cell (module rule 1 and 4; function contract).
            f(unsafe { &mut *cb })
        })
    }

    /// Ends one run of the callback of generation `g` (the caller owns the
    /// dispatch).
    pub(crate) fn finish(&self, g: Generation) -> Finish {
        let mut s = self.load();
        loop {
            debug_assert!(s.holds(g) && s.is_busy(), "finish without BUSY: {s:?}");
            if s.rerun() && !s.is_dead() {
                match self.cas(s, s.without(State::RERUN).without_pending()) {
                    Ok(_) => return Finish::Rerun(s.pending()),
                    Err(actual) => {
                        s = actual;
                        continue;
                    }
                }
            }
            let new = s.without(State::BUSY | State::RERUN).without_pending();
            match self.cas(s, new) {
                Ok(_) if new.is_abandoned() => return Finish::TearDown,
                Ok(_) => return Finish::Idle,
                Err(actual) => s = actual,
            }
        }
    }

    // ----- control --------------------------------------------------------

    /// Takes `CTRL` on live registration `g` for a modify; spins while
    /// another control operation holds it (for at most one backend call).
    /// `false` when `g` is dead or gone.
    pub(crate) fn lock_ctrl(&self, g: Generation) -> bool {
        let mut s = self.load();
        let mut round = 0;
        loop {
            if !s.holds(g) || s.is_dead() {
                return false;
            }
            if s.ctrl() {
                crate::base::sync::spin_wait(round);
                round += 1;
                s = self.load();
                continue;
            }
            match self.cas(s, s.with(State::CTRL)) {
                Ok(_) => return true,
                Err(actual) => s = actual,
            }
        }
    }

    /// Runs `f` on the backend registration cell.
    ///
    /// # Safety
    /// The caller holds `CTRL` on the slot's current generation, or is the
    /// tearer.
    pub(crate) unsafe fn with_backend_reg<R>(
        &self,
        f: impl FnOnce(&mut Option<BackendReg>) -> R,
    ) -> R {
        self.backend_reg.with_mut(|reg| {
            // SAFETY: CTRL (or being the tearer) gives exclusive access to
            // the backend cell (module rule 3; function contract).
            f(unsafe { &mut *reg })
        })
    }

    /// Releases `CTRL` on generation `g`. If the registration died while we
    /// held it, `dispose` runs first, still under `CTRL`, with the state
    /// word seen (so it can tell a fired timer from a cancelled one).
    /// `dispose` runs at most once.
    pub(crate) fn end_ctrl(&self, g: Generation, mut dispose: impl FnMut(State)) -> EndCtrl {
        let mut s = self.load();
        let mut disposed = false;
        loop {
            debug_assert!(s.holds(g) && s.ctrl(), "end_ctrl without CTRL: {s:?}");
            if s.is_dead() && !disposed {
                dispose(s);
                disposed = true;
                s = self.load();
                continue;
            }
            let mut new = s.without(State::CTRL);
            if new.is_timer() && !new.is_dead() {
                // The deadline may have changed under CTRL: a new reset
                // version, so a due check that read the old deadline with
                // the old word cannot fire on it (`begin_timer_if_due`).
                new = new.with_next_version();
            }
            match self.cas(s, new) {
                Ok(_) if new.is_abandoned() => return EndCtrl::TearDown,
                Ok(_) if new.is_dead() => return EndCtrl::Dead,
                Ok(_) => return EndCtrl::Live,
                Err(actual) => s = actual,
            }
        }
    }

    /// Ends registration `g`: sets `DEAD`, and takes `CTRL` too when nobody
    /// holds it. When the registration was idle (the common case: no
    /// dispatch, no control operation), that makes this thread the last one
    /// out at once ([`Kill::KilledIdle`]).
    pub(crate) fn kill(&self, g: Generation) -> Kill {
        let mut s = self.load();
        loop {
            if !s.holds(g) {
                return Kill::Gone;
            }
            if s.is_dead() {
                return Kill::AlreadyDead;
            }
            let took_ctrl = !s.ctrl();
            let new = s.with(State::DEAD | if took_ctrl { State::CTRL } else { 0 });
            match self.cas(s, new) {
                Ok(_) if s.is_idle() => return Kill::KilledIdle { was: s },
                Ok(_) => return Kill::Killed { took_ctrl },
                Err(actual) => s = actual,
            }
        }
    }

    /// Releases the torn-down slot of generation `g`: the word becomes free
    /// with the next generation. Returns `(next generation, had a waiter)`;
    /// with `None`, the slot is retired and must not go back on the free
    /// list.
    ///
    /// The caller is the last one out (module rule 4) and has emptied the
    /// cells.
    pub(crate) fn release(&self, g: Generation) -> (Option<Generation>, bool) {
        let next = g.next();
        // A retired slot keeps its last generation with no flags: every
        // token still fails `holds`, and nothing ever publishes it again.
        let free = State::free(next.unwrap_or(g));
        // AcqRel swap rather than store: nobody else writes a dead slot
        // except a waiter adding WAITER, and the swap tells us whether one
        // did. Release publishes the emptied cells to the next registrant
        // (which also synchronises through the free list).
        let old = State(self.state.swap(free.0, Ordering::AcqRel));
        debug_assert!(old.holds(g) && old.is_abandoned(), "release of {old:?}");
        (next, old.waiter())
    }

    /// Releases generation `g` after [`Kill::KilledIdle`]: the caller holds
    /// `CTRL` on the dead registration, nobody dispatches it, and the cells
    /// are empty. The word becomes free with the next generation (or the
    /// slot is retired: `None`); the `bool` says a waiter must be woken.
    /// One swap stands for `end_ctrl` and `release`: nobody else writes a
    /// dead slot that no dispatch holds except a waiter adding `WAITER`,
    /// and the swap tells us whether one did.
    pub(crate) fn release_killed(&self, g: Generation) -> (Option<Generation>, bool) {
        let next = g.next();
        let free = State::free(next.unwrap_or(g));
        // AcqRel: as in `release`.
        let old = State(self.state.swap(free.0, Ordering::AcqRel));
        debug_assert!(
            old.holds(g) && old.is_dead() && old.ctrl() && !old.is_busy(),
            "release_killed of {old:?}"
        );
        (next, old.waiter())
    }

    /// Whether a thread waiting for generation `g` to be torn down may stop
    /// waiting; if not, marks `WAITER` so the tearer wakes it. Called with
    /// the engine's waiter mutex held.
    pub(crate) fn gone_or_mark_waiter(&self, g: Generation) -> bool {
        let mut s = self.load();
        loop {
            if !s.holds(g) {
                return true;
            }
            if s.waiter() {
                return false;
            }
            match self.cas(s, s.with(State::WAITER)) {
                Ok(_) => return false,
                Err(actual) => s = actual,
            }
        }
    }
}

#[cfg(all(test, not(evnexus_loom)))]
mod tests {
    use super::*;

    fn g(n: u64) -> Generation {
        Generation::new(n).unwrap()
    }

    fn published(gen: Generation, timer: bool) -> Slot<()> {
        let slot = Slot::new(gen);
        slot.set_param(crate::base::readiness::pack_param(5, 1));
        // SAFETY: the slot is fresh and local to this test.
        unsafe { slot.publish(gen, timer) };
        assert_eq!(slot.end_ctrl(gen, |_| panic!("not dead")), EndCtrl::Live);
        slot
    }

    #[test]
    fn only_one_begin_owns_the_dispatch_and_the_second_is_folded_into_rerun() {
        let slot = published(g(3), false);
        assert_eq!(slot.begin_fd(g(3), Some(5), 1), Begin::Owned);
        assert_eq!(slot.begin_fd(g(3), Some(5), 4), Begin::Deferred);
        assert_eq!(slot.begin_fd(g(3), Some(5), 1), Begin::Deferred);
        assert_eq!(slot.finish(g(3)), Finish::Rerun(5));
        assert_eq!(slot.finish(g(3)), Finish::Idle);
        assert_eq!(slot.begin_fd(g(3), Some(5), 1), Begin::Owned);
    }

    #[test]
    fn wrong_generation_kind_or_fd_is_stale() {
        let slot = published(g(3), false);
        assert_eq!(
            slot.begin_fd(g(2), Some(5), 1),
            Begin::Stale(StaleReason::Generation)
        );
        assert_eq!(
            slot.begin_fd(g(3), Some(6), 1),
            Begin::Stale(StaleReason::FdMismatch)
        );
        assert_eq!(slot.begin_timer(g(3)), Err(StaleReason::WrongKind));
    }

    #[test]
    fn kill_during_dispatch_suppresses_rerun_and_leaves_teardown_to_dispatcher() {
        let slot = published(g(1), false);
        assert_eq!(slot.begin_fd(g(1), Some(5), 1), Begin::Owned);
        assert_eq!(slot.begin_fd(g(1), Some(5), 1), Begin::Deferred);
        assert_eq!(slot.kill(g(1)), Kill::Killed { took_ctrl: true });
        let mut disposed = 0;
        assert_eq!(slot.end_ctrl(g(1), |_| disposed += 1), EndCtrl::Dead);
        assert_eq!(disposed, 1);
        assert_eq!(
            slot.begin_fd(g(1), Some(5), 1),
            Begin::Stale(StaleReason::Generation)
        );
        assert_eq!(slot.finish(g(1)), Finish::TearDown);
        assert_eq!(slot.release(g(1)), (Some(g(2)), false));
        assert_eq!(slot.kill(g(1)), Kill::Gone);
    }

    #[test]
    fn timer_fires_once_and_a_later_kill_finds_it_dead() {
        let slot = published(g(9), true);
        assert_eq!(slot.begin_timer(g(9)), Ok(()));
        assert_eq!(slot.begin_timer(g(9)), Err(StaleReason::Generation));
        assert_eq!(slot.kill(g(9)), Kill::AlreadyDead);
        assert!(slot.load().fired());
        assert_eq!(slot.finish(g(9)), Finish::TearDown);
    }

    #[test]
    fn loop_fires_a_timer_only_when_due_and_not_while_modified() {
        let slot = Slot::<()>::new(g(4));
        slot.set_param(100);
        // SAFETY: the slot is fresh and local to this test.
        unsafe { slot.publish(g(4), true) };
        // The registrant still holds CTRL: not now.
        assert_eq!(slot.begin_timer_if_due(g(4), 1000), Due::NotYet);
        assert_eq!(slot.end_ctrl(g(4), |_| panic!("not dead")), EndCtrl::Live);
        assert_eq!(slot.begin_timer_if_due(g(4), 99), Due::NotYet);
        assert!(
            slot.lock_ctrl(g(4)),
            "a NotYet due check leaves the timer modifiable"
        );
        slot.set_param(200);
        assert_eq!(slot.end_ctrl(g(4), |_| panic!("not dead")), EndCtrl::Live);
        assert_eq!(slot.begin_timer_if_due(g(4), 150), Due::NotYet);
        assert_eq!(slot.begin_timer_if_due(g(4), 200), Due::Owned);
        assert_eq!(slot.begin_timer(g(4)), Err(StaleReason::Generation));
        assert!(!slot.lock_ctrl(g(4)), "a fired timer cannot be modified");
    }

    #[test]
    fn killing_an_idle_registration_releases_the_slot_in_one_step() {
        let slot = published(g(7), true);
        assert!(matches!(slot.kill(g(7)), Kill::KilledIdle { was } if was.is_timer()));
        // Dead but not gone: a second deregistration waits for the release.
        assert_eq!(slot.kill(g(7)), Kill::AlreadyDead);
        assert_eq!(slot.begin_timer(g(7)), Err(StaleReason::Generation));
        assert!(!slot.gone_or_mark_waiter(g(7)));
        assert_eq!(slot.release_killed(g(7)), (Some(g(8)), true));
        let s = slot.load();
        assert!(!s.is_live() && s.generation() == g(8), "{s:?}");
        assert_eq!(slot.kill(g(7)), Kill::Gone);
        let last = published(Generation::MAX, false);
        assert!(matches!(
            last.kill(Generation::MAX),
            Kill::KilledIdle { .. }
        ));
        assert_eq!(last.release_killed(Generation::MAX), (None, false));
        assert!(!last.load().is_live(), "retired, not reused");
        assert_eq!(last.kill(Generation::MAX), Kill::Gone);
    }

    #[test]
    fn release_at_max_generation_retires() {
        let slot = published(Generation::MAX, false);
        // A modify holds CTRL: the kill cannot release the slot itself.
        assert!(slot.lock_ctrl(Generation::MAX));
        assert_eq!(
            slot.kill(Generation::MAX),
            Kill::Killed { took_ctrl: false }
        );
        assert_eq!(slot.end_ctrl(Generation::MAX, |_| {}), EndCtrl::TearDown);
        assert_eq!(slot.release(Generation::MAX), (None, false));
        assert!(!slot.load().is_live());
        assert_eq!(
            slot.begin_fd(Generation::MAX, Some(5), 1),
            Begin::Stale(StaleReason::Generation)
        );
    }
}
