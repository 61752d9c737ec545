//! The driver: runs each op on the engine and on the model, and compares
//! what each returned.

use super::callbacks::{fd_callback, new_captured, timer_callback, CbState, Counters};
use super::fds::{fds, is_open};
use super::grammar::{Action, FdChoice, Op};
use super::hooks::{HookCall, RecHooks};
use super::model::{Handle, Kind, Model, Reg, RegState};
use super::results::{repr, ErrRepr};
use super::MAX_ACTIONS;
use crate::common::{interest_of, lock, readiness_of};
use evnexus::{Engine, Error, Readiness, Token};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) struct Harness<'e> {
    pub(crate) engine: &'e Engine,
    pub(crate) hooks: RecHooks,
    pub(crate) model: Model,
    pub(crate) counters: Arc<Counters>,
}

impl Harness<'_> {
    pub(crate) fn new_reg(
        &mut self,
        token: u64,
        kind: Kind,
        cb: Arc<Mutex<CbState>>,
        dropped: Arc<AtomicBool>,
        next: Vec<Action>,
    ) -> usize {
        let r = self.model.regs.len();
        self.model.regs.push(Reg {
            token,
            kind,
            state: RegState::Live,
            fired: false,
            handle: None,
            cb,
            dropped,
            next,
            expect_runs: Vec::new(),
        });
        self.model.on_new_token(token, r);
        r
    }

    /// The token a register hook saw, from the hook log (the op failed, so
    /// there is no handle to ask).
    pub(crate) fn token_from_log(&self, timer: bool) -> Option<u64> {
        lock(&self.hooks.0).log.iter().find_map(|c| match *c {
            HookCall::FdRegister { token, .. } if !timer => Some(token),
            HookCall::TimeoutRegister { token, .. } if timer => Some(token),
            _ => None,
        })
    }

    pub(crate) fn register_fd(&mut self, choice: FdChoice, interest: u16) {
        let fds = fds();
        let fd = match choice {
            FdChoice::Pipe(k) => {
                let fd = fds.open[k as usize % fds.open.len()];
                assert!(is_open(fd), "harness: pipe fd {fd} closed");
                fd
            }
            FdChoice::Negative(n) => n.checked_abs().map_or(i32::MIN, |n| -n.max(1)),
            FdChoice::Unopened(k) => fds.unopened[k as usize % fds.unopened.len()],
            FdChoice::Any(fd) => fd,
        };
        if self.model.recheck && is_open(fd) && !fds.open.contains(&fd) {
            // Readiness of an fd we do not own may change under us.
            return;
        }
        let interest = interest_of(interest);
        let next = std::mem::take(&mut self.model.arm_new);
        let (cap, cb, dropped) = new_captured(&self.counters, next.clone());
        self.model.callbacks_made += 1;
        let expect_bad = !is_open(fd);
        let full = self.model.is_full();
        let result = self.engine.register_fd(fd, interest, fd_callback(cap));
        if expect_bad {
            assert!(
                matches!(result, Err(Error::BadFd(b)) if b == fd),
                "register_fd({fd}) of a bad fd: {result:?}"
            );
            return;
        }
        if full {
            assert!(
                matches!(result, Err(Error::Full { limit }) if limit == self.model.limit),
                "register_fd when full: {result:?}"
            );
            return;
        }
        let token = match &result {
            Ok(w) => w.token().as_u64(),
            Err(_) => self
                .token_from_log(false)
                .unwrap_or_else(|| panic!("register_fd failed without its hook: {result:?}")),
        };
        let r = self.new_reg(token, Kind::Fd { fd, interest }, cb, dropped, next);
        let expected = self.model.after_register_hook(r);
        match result {
            Ok(w) => {
                assert_eq!(expected, Ok(()), "register_fd succeeded");
                self.model.regs[r].handle = Some(Handle::Fd(w));
            }
            Err(e) => {
                assert_eq!(repr::<()>(Err(e)), expected, "register_fd failed");
                // The token the hook saw is stale from now on.
                let fd_res =
                    self.engine
                        .occurred_fd(Token::from_u64(token), fd, Readiness::READABLE);
                assert_eq!(repr(fd_res), self.model.occurred_fd(token, fd, 1));
                let t_res = self.engine.occurred_timeout(Token::from_u64(token));
                assert_eq!(repr(t_res), self.model.occurred_timeout(token));
                assert_eq!(self.model.regs[r].state, RegState::Gone);
            }
        }
    }

    pub(crate) fn register_timer(&mut self, delay_ms: u16) {
        let deadline = self.model.t0 + Duration::from_millis(delay_ms as u64);
        let next = std::mem::take(&mut self.model.arm_new);
        let (cap, cb, dropped) = new_captured(&self.counters, next.clone());
        self.model.callbacks_made += 1;
        let full = self.model.is_full();
        let result = self.engine.timer_at(deadline, timer_callback(cap));
        if full {
            assert!(
                matches!(result, Err(Error::Full { limit }) if limit == self.model.limit),
                "timer_at when full: {result:?}"
            );
            return;
        }
        let token = match &result {
            Ok(t) => t.token().as_u64(),
            Err(_) => self
                .token_from_log(true)
                .unwrap_or_else(|| panic!("timer_at failed without its hook: {result:?}")),
        };
        let r = self.new_reg(token, Kind::Timer { deadline }, cb, dropped, next);
        let expected = self.model.after_register_hook(r);
        match result {
            Ok(t) => {
                assert_eq!(expected, Ok(()), "timer_at succeeded");
                self.model.regs[r].handle = Some(Handle::Timer(t));
            }
            Err(e) => {
                assert_eq!(repr::<()>(Err(e)), expected, "timer_at failed");
                let t_res = self.engine.occurred_timeout(Token::from_u64(token));
                assert_eq!(repr(t_res), self.model.occurred_timeout(token));
                assert_eq!(self.model.regs[r].state, RegState::Gone);
            }
        }
    }

    pub(crate) fn modify_fd(&mut self, which: u8, interest: u16) {
        let Some(r) = self
            .model
            .pick(which, |r| !r.is_timer() && r.handle.is_some())
        else {
            return;
        };
        let interest = interest_of(interest);
        let Some(Handle::Fd(w)) = &self.model.regs[r].handle else {
            unreachable!()
        };
        let result = repr(w.modify(interest));
        let m = &mut self.model;
        let expected = if m.regs[r].state != RegState::Live {
            Err(ErrRepr::Gone)
        } else {
            let (token, fd) = (m.regs[r].token, m.regs[r].fd());
            let fail = m.take_fail();
            m.expect_hooks.push(HookCall::FdModify {
                token,
                fd,
                interest,
                ok: fail.is_none(),
            });
            match fail {
                None => {
                    m.regs[r].kind = Kind::Fd { fd, interest };
                    Ok(())
                }
                Some(e) => Err(e),
            }
        };
        assert_eq!(result, expected, "modify");
    }

    pub(crate) fn reset_timer(&mut self, which: u8, delay_ms: u16) {
        let Some(r) = self
            .model
            .pick(which, |r| r.is_timer() && r.handle.is_some())
        else {
            return;
        };
        let deadline = self.model.t0 + Duration::from_millis(delay_ms as u64);
        let Some(Handle::Timer(t)) = &self.model.regs[r].handle else {
            unreachable!()
        };
        let result = repr(t.reset_at(deadline));
        let m = &mut self.model;
        let expected = if m.regs[r].state != RegState::Live {
            Err(ErrRepr::Gone)
        } else {
            let token = m.regs[r].token;
            let fail = m.take_fail();
            m.expect_hooks.push(HookCall::TimeoutModify {
                token,
                deadline,
                ok: fail.is_none(),
            });
            match fail {
                None => {
                    m.regs[r].kind = Kind::Timer { deadline };
                    Ok(())
                }
                Some(e) => Err(e),
            }
        };
        assert_eq!(result, expected, "reset");
    }

    pub(crate) fn end_handle(&mut self, r: usize, by_drop: bool) {
        let handle = self.model.regs[r].handle.take().expect("a handle");
        let expected = self.model.deregister(r);
        match (handle, by_drop) {
            (h, true) => drop(h),
            (Handle::Fd(w), false) => assert_eq!(w.deregister(), expected, "deregister"),
            (Handle::Timer(t), false) => assert_eq!(t.cancel(), expected, "cancel"),
        }
    }

    pub(crate) fn op(&mut self, op: &Op) {
        match *op {
            Op::RegisterFd { fd, interest } => self.register_fd(fd, interest),
            Op::RegisterTimer { delay_ms } => self.register_timer(delay_ms),
            Op::ModifyFd { which, interest } => self.modify_fd(which, interest),
            Op::ResetTimer { which, delay_ms } => self.reset_timer(which, delay_ms),
            Op::DeregisterFd { which, by_drop } => {
                if let Some(r) = self
                    .model
                    .pick(which, |r| !r.is_timer() && r.handle.is_some())
                {
                    self.end_handle(r, by_drop);
                }
            }
            Op::CancelTimer { which, by_drop } => {
                if let Some(r) = self
                    .model
                    .pick(which, |r| r.is_timer() && r.handle.is_some())
                {
                    self.end_handle(r, by_drop);
                }
            }
            Op::OccurredFd { token, fd, revents } => {
                let t = self.model.token_of(token);
                let fd = self.model.fd_for(fd, t);
                let actual = self
                    .engine
                    .occurred_fd(Token::from_u64(t), fd, readiness_of(revents));
                let expected = self.model.occurred_fd(t, fd, revents);
                assert_eq!(repr(actual), expected, "occurred_fd({t:#x}, {fd})");
            }
            Op::OccurredTimeout { token } => {
                let t = self.model.token_of(token);
                let actual = self.engine.occurred_timeout(Token::from_u64(t));
                let expected = self.model.occurred_timeout(t);
                assert_eq!(repr(actual), expected, "occurred_timeout({t:#x})");
            }
            Op::Arm { which, ref actions } => {
                if let Some(r) = self.model.pick(which, |r| r.state == RegState::Live) {
                    let actions: Vec<Action> = actions.iter().copied().take(MAX_ACTIONS).collect();
                    lock(&self.model.regs[r].cb).next = actions.clone();
                    self.model.regs[r].next = actions;
                }
            }
            Op::ArmNew { ref actions } => {
                self.model.arm_new = actions.iter().copied().take(MAX_ACTIONS).collect();
            }
            Op::FailNextHook { panic } => {
                self.model.fail_next = Some(panic);
                lock(&self.hooks.0).fail_next = Some(panic);
            }
            Op::PanicNextDeregisterHook => {
                self.model.panic_next_deregister = true;
                lock(&self.hooks.0).panic_next_deregister = true;
            }
            Op::ReportInNextRegisterHook { revents } => {
                self.model.report_next = Some(revents);
                lock(&self.hooks.0).report_next = Some(revents);
            }
        }
    }
}
