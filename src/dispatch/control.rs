//! Control: completing a registration, releasing `CTRL` (and disposing of
//! the backend's value when the registration died meanwhile), tearing a
//! registration down, deregistering and modifying.

use super::{Backend, Core, Removal};
use crate::base::error::{Error, Result};
use crate::base::readiness::{pack_param, param_fd, param_interest, Interest};
use crate::base::scope;
use crate::base::token::{Generation, Token};
use crate::nexus::arena::FreeBatch;
use crate::nexus::slot::{BackendReg, EndCtrl, Kill, Slot, State};
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

impl<C: Send + 'static> Core<C> {
    /// Second half of a registration: the registrant holds `CTRL` and has
    /// called the backend. A timer is handed to the backend's loop after
    /// `CTRL` is released ([`Backend::timer_armed`]).
    pub(super) fn complete_registration(
        &self,
        slot: &Slot<C>,
        index: u32,
        g: Generation,
        result: Result<BackendReg>,
        timer: bool,
    ) -> Result<()> {
        pause_point!(AfterBackendCall);
        match result {
            Ok(reg) => {
                // SAFETY: we hold CTRL (taken by `publish`).
                unsafe { slot.with_backend_reg(|cell| *cell = Some(reg)) };
                // Read under CTRL: nobody else may change it yet.
                let deadline = slot.param();
                let (outcome, _) = self.end_ctrl(slot, index, g);
                if timer && outcome == EndCtrl::Live {
                    self.backend.timer_armed(Token::new(index, g), deadline);
                }
                self.backend.changed();
                Ok(())
            }
            Err(e) => {
                // We hold CTRL, so this only sets DEAD (or finds it set by a
                // callback that already ended the registration).
                let _ = slot.kill(g);
                self.end_ctrl(slot, index, g);
                self.wait_gone_unless_nested(slot, g);
                Err(e)
            }
        }
    }

    /// Releases `CTRL`, disposing of the backend value first if the
    /// registration died meanwhile, and tears down if last out. Returns
    /// how `CTRL` was released and, when this call removed an fd watch
    /// from its backend, what became of its kernel entry (with the fd).
    pub(super) fn end_ctrl(
        &self,
        slot: &Slot<C>,
        index: u32,
        g: Generation,
    ) -> (EndCtrl, Option<(Removal, RawFd)>) {
        let mut removal = None;
        let outcome = slot.end_ctrl(g, |s| {
            // SAFETY: `end_ctrl` calls this with CTRL still held.
            let reg = unsafe { slot.with_backend_reg(|cell| cell.take()) };
            if let Some(reg) = reg {
                if s.fired() {
                    // A timeout that occurred is over for the backend.
                    drop(reg);
                } else {
                    removal = self.remove_from_backend(slot, Token::new(index, g), s, reg);
                }
            }
        });
        if outcome == EndCtrl::TearDown {
            self.tear_down(slot, index, g);
        }
        (outcome, removal)
    }

    /// The last one out: drop what the registration owned, release the slot
    /// (next generation, or retired), wake waiters.
    pub(super) fn tear_down(&self, slot: &Slot<C>, index: u32, g: Generation) {
        self.tear_down_into(slot, index, g, None);
    }

    /// [`tear_down`](Self::tear_down), the slot going back through `batch`
    /// if one is given (the loop's timers fired in one turn).
    pub(super) fn tear_down_into<'a>(
        &'a self,
        slot: &'a Slot<C>,
        index: u32,
        g: Generation,
        batch: Option<&mut FreeBatch<'a, C>>,
    ) {
        // SAFETY: we are the last one out of generation g (module rule 4 of
        // `slot`): nobody else touches the cells until we release.
        unsafe { self.empty_cells(slot) };
        let (next, had_waiter) = slot.release(g);
        self.released(index, slot, next, had_waiter, batch);
    }

    /// Drops what the registration owned: its callback and whatever backend
    /// value is left (only a fired timer's).
    ///
    /// # Safety
    /// The caller alone may touch the slot's cells: it is the last one out
    /// of the generation, or released the slot itself (`Kill::Released`).
    unsafe fn empty_cells(&self, slot: &Slot<C>) {
        // SAFETY: the function contract.
        let callback = unsafe { slot.with_callback(|cell| cell.take()) };
        // SAFETY: as above.
        let reg = unsafe { slot.with_backend_reg(|cell| cell.take()) };
        // Dropping user values runs user code, which may drop handles, its
        // own included: treat it as callback context so that such a
        // deregister does not wait for this very teardown. A panic in a
        // destructor is contained here.
        let _scope = scope::Scope::enter_callback();
        let _ = catch_unwind(AssertUnwindSafe(move || {
            drop(callback);
            drop(reg);
        }));
    }

    /// Puts a released slot back on the free list, or into `batch` (or
    /// counts it retired).
    fn released<'a>(
        &'a self,
        index: u32,
        slot: &'a Slot<C>,
        next: Option<Generation>,
        had_waiter: bool,
        batch: Option<&mut FreeBatch<'a, C>>,
    ) {
        match (next, batch) {
            (Some(_), Some(batch)) => batch.recycle(index, slot),
            (Some(_), None) => self.arena.recycle(index, slot),
            (None, _) => self.stats.retired(),
        }
        self.stats.deregistered();
        if had_waiter {
            let _guard = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            self.waiters_cv.notify_all();
        }
    }

    /// Tells the backend that registration `token` (in `state`, its backend
    /// value `reg` taken out under `CTRL`) is gone. For an fd watch, also
    /// what became of its kernel entry, with the fd (counted when the fd
    /// had been closed while registered).
    fn remove_from_backend(
        &self,
        slot: &Slot<C>,
        token: Token,
        state: State,
        reg: BackendReg,
    ) -> Option<(Removal, RawFd)> {
        if state.is_timer() {
            self.backend.timeout_deregister(token, reg);
            return None;
        }
        // Only the CTRL holder writes the param, and the caller holds it.
        let fd = param_fd(slot.param());
        let r = self.backend.fd_deregister(fd, token, reg);
        if r == Removal::FdClosed {
            self.stats.closed_while_registered();
        }
        Some((r, fd))
    }

    /// Finishes a registration that `kill` found idle ([`Kill::KilledIdle`]):
    /// this thread holds `CTRL` on the dead registration and nobody
    /// dispatches it, so it is the last one out already: it tells the
    /// backend, empties the cells, and releases the slot with one swap.
    fn finish_killed_idle(
        &self,
        slot: &Slot<C>,
        index: u32,
        g: Generation,
        was: State,
    ) -> Option<(Removal, RawFd)> {
        // SAFETY: we hold CTRL, and no dispatch can start on a dead slot:
        // the cells are ours (see above).
        let reg = unsafe { slot.with_backend_reg(|cell| cell.take()) };
        let removal =
            reg.and_then(|reg| self.remove_from_backend(slot, Token::new(index, g), was, reg));
        // SAFETY: as above.
        unsafe { self.empty_cells(slot) };
        let (next, had_waiter) = slot.release_killed(g);
        self.released(index, slot, next, had_waiter, None);
        removal
    }

    /// Sleeps until generation `g` of `slot` has been torn down, unless the
    /// calling thread is inside a callback or hook (where waiting could
    /// deadlock: see the crate docs, "Deregistration").
    fn wait_gone_unless_nested(&self, slot: &Slot<C>, g: Generation) {
        if scope::in_callback_or_hook() {
            return;
        }
        if !slot.load().is_live() || slot.load().generation() != g {
            return;
        }
        let mut guard = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        while !slot.gone_or_mark_waiter(g) {
            guard = self
                .waiters_cv
                .wait(guard)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Ends the registration named by `token`: `Ok(true)` if this call
    /// ended it, `Ok(false)` if it names no live registration, and
    /// [`Error::ClosedWhileRegistered`] if this call ended it but its fd had
    /// been closed while registered (`Engine::deregister` says the rest).
    pub(crate) fn deregister(&self, token: Token) -> Result<bool> {
        let Some((index, slot, g)) = self.resolve(token) else {
            return Ok(false);
        };
        let (ended, removal) = match slot.kill(g) {
            Kill::Gone => return Ok(false),
            Kill::KilledIdle { was } => {
                let removal = self.finish_killed_idle(slot, index, g, was);
                self.backend.changed();
                // Torn down already: nothing to wait for.
                return match removal {
                    Some((Removal::FdClosed, fd)) => Err(Error::ClosedWhileRegistered(fd)),
                    _ => Ok(true),
                };
            }
            Kill::AlreadyDead => (false, None),
            Kill::Killed { took_ctrl } => {
                let removal = if took_ctrl {
                    self.end_ctrl(slot, index, g).1
                } else {
                    // A control operation (a modify) holds CTRL: it removes
                    // the registration from the backend when it lets go.
                    None
                };
                self.backend.changed();
                (true, removal)
            }
        };
        self.wait_gone_unless_nested(slot, g);
        match removal {
            Some((Removal::FdClosed, fd)) => Err(Error::ClosedWhileRegistered(fd)),
            _ => Ok(ended),
        }
    }

    pub(crate) fn modify_fd(&self, token: Token, interest: Interest) -> Result<()> {
        self.modify(token, |backend, slot, reg| {
            let fd = param_fd(slot.param());
            let before = param_interest(slot.param());
            if before.is_edge() != interest.is_edge()
                || before.keeps_ready() != interest.keeps_ready()
            {
                return Err(Error::Backend(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "evnexus: modify cannot switch a watch between level, edge and kept readiness",
                )));
            }
            slot.set_param(pack_param(fd, interest.bits()));
            match reg {
                Some(reg) => backend.fd_modify(fd, token, reg, interest),
                None => Ok(()),
            }
        })
    }

    pub(crate) fn modify_timer(&self, token: Token, deadline: Instant) -> Result<()> {
        let offset = self.clock.offset(deadline);
        self.modify(token, |backend, slot, reg| {
            slot.set_param(offset);
            match reg {
                Some(reg) => backend.timeout_modify(token, reg, deadline),
                None => Ok(()),
            }
        })
    }

    /// Runs `change` under `CTRL` on the live registration `token`.
    ///
    /// If the registration ends while `change` runs (a callback
    /// deregisters it, a panic ends it, a timer fires), this modify has
    /// lost the race: it returns [`Error::Gone`], and it is this call that
    /// removes the registration from the backend, on letting go of `CTRL`.
    /// `Gone` also when the backend refused the change meanwhile: the
    /// refusal is moot for a registration that has ended (on the built-in
    /// loops it is even caused by the end: the fd number's entry has gone
    /// to a newer watch).
    fn modify(
        &self,
        token: Token,
        change: impl FnOnce(&dyn Backend, &Slot<C>, Option<&mut BackendReg>) -> Result<()>,
    ) -> Result<()> {
        if scope::in_hook() {
            return Err(Error::Reentrant);
        }
        let (index, slot, g) = self.resolve(token).ok_or(Error::Gone)?;
        if !slot.lock_ctrl(g) {
            return Err(Error::Gone);
        }
        pause_point!(BeforeBackendCall);
        // The slot holds the new value before the backend is told (a loop
        // backend reads it from there); a refusal puts the old one back.
        let before = slot.param();
        // SAFETY: we hold CTRL.
        let result =
            unsafe { slot.with_backend_reg(|cell| change(&*self.backend, slot, cell.as_mut())) };
        if result.is_err() {
            slot.set_param(before);
        }
        pause_point!(AfterBackendCall);
        // Read under CTRL: the value that stands (new, or restored), and
        // the kind (after CTRL the slot may hold another registration).
        let (param, is_timer) = (slot.param(), slot.load().is_timer());
        let (outcome, _) = self.end_ctrl(slot, index, g);
        self.backend.changed();
        if outcome != EndCtrl::Live {
            return Err(Error::Gone);
        }
        if is_timer {
            // Whether or not the change took: the loop may have passed the
            // timer over while we held CTRL.
            self.backend.timer_armed(token, param);
        }
        result
    }
}
