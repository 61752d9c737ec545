//! The application's loop: hooks that record every call, keep the table
//! of what the loop watches, check that the engine only touches what it
//! registered, and inject failures, panics and in-hook reports on demand.

use super::results::{repr, Res};
use crate::common::{lock, readiness_of, HOOK_PANIC, INJECTED};
use evnexus::{Engine, Interest, Occurred, OsEventHooks, Token};
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HookCall {
    FdRegister {
        token: u64,
        fd: RawFd,
        interest: Interest,
        ok: bool,
    },
    FdModify {
        token: u64,
        fd: RawFd,
        interest: Interest,
        ok: bool,
    },
    FdDeregister {
        token: u64,
        fd: RawFd,
    },
    TimeoutRegister {
        token: u64,
        deadline: Instant,
        ok: bool,
    },
    TimeoutModify {
        token: u64,
        deadline: Instant,
        ok: bool,
    },
    TimeoutDeregister {
        token: u64,
    },
    /// The application's per-registration value was dropped.
    Dropped {
        token: u64,
    },
    /// The register hook reported its token itself, with this result.
    ReportedInHook {
        token: u64,
        result: Res<Occurred>,
    },
}

impl HookCall {
    pub(crate) fn token(&self) -> u64 {
        match *self {
            HookCall::FdRegister { token, .. }
            | HookCall::FdModify { token, .. }
            | HookCall::FdDeregister { token, .. }
            | HookCall::TimeoutRegister { token, .. }
            | HookCall::TimeoutModify { token, .. }
            | HookCall::TimeoutDeregister { token }
            | HookCall::Dropped { token }
            | HookCall::ReportedInHook { token, .. } => token,
        }
    }
}

#[derive(Default)]
pub(crate) struct HookState {
    pub(crate) log: Vec<HookCall>,
    /// The next register/modify hook fails: `Some(true)` by panicking.
    pub(crate) fail_next: Option<bool>,
    pub(crate) panic_next_deregister: bool,
    pub(crate) report_next: Option<u16>,
    /// Address of the harness's engine while it is alive, else 0.
    pub(crate) engine: usize,
    pub(crate) fd_live: HashMap<u64, (RawFd, Interest)>,
    pub(crate) timer_live: HashMap<u64, Instant>,
    /// Every token a register hook was ever given.
    pub(crate) seen: HashSet<u64>,
    pub(crate) values_made: usize,
    pub(crate) values_dropped: usize,
}

#[derive(Clone, Default)]
pub(crate) struct RecHooks(pub(crate) Arc<Mutex<HookState>>);

pub(crate) struct FdReg {
    pub(crate) token: u64,
    pub(crate) fd: RawFd,
    pub(crate) interest: Interest,
    pub(crate) hooks: Arc<Mutex<HookState>>,
}

impl Drop for FdReg {
    fn drop(&mut self) {
        let mut st = lock(&self.hooks);
        st.values_dropped += 1;
        st.log.push(HookCall::Dropped { token: self.token });
    }
}

pub(crate) struct TimeoutReg {
    pub(crate) token: u64,
    pub(crate) hooks: Arc<Mutex<HookState>>,
}

impl Drop for TimeoutReg {
    fn drop(&mut self) {
        let mut st = lock(&self.hooks);
        st.values_dropped += 1;
        // A timeout that occurred is over for the application without a
        // timeout_deregister: the engine just drops the value.
        st.timer_live.remove(&self.token);
        st.log.push(HookCall::Dropped { token: self.token });
    }
}

/// The injected failure of a register or modify hook: an error, or a panic
/// (which the engine turns into an error).
pub(crate) fn injected_failure<T>(panic: bool) -> io::Result<T> {
    if panic {
        std::panic::panic_any(HOOK_PANIC);
    }
    Err(io::Error::other(INJECTED))
}

/// A deregister hook panics, if asked to, after it has done its work.
pub(crate) fn maybe_panic_in_deregister(mut st: MutexGuard<'_, HookState>) {
    if std::mem::take(&mut st.panic_next_deregister) {
        drop(st);
        std::panic::panic_any(HOOK_PANIC);
    }
}

pub(crate) fn with_engine<R>(addr: usize, f: impl FnOnce(&Engine) -> R) -> R {
    assert_ne!(
        addr, 0,
        "a register hook was asked to report with no engine"
    );
    // SAFETY: `addr` is the address of the harness's `Engine` (a local of
    // `run`), stored right after it was built and reset to 0 before it is
    // moved or dropped. Hooks run on the harness's own thread,
    // inside a call on that very engine, so it is alive here and only ever
    // borrowed shared.
    f(unsafe { &*(addr as *const Engine) })
}

impl RecHooks {
    /// Takes the in-hook report request and checks the token is fresh.
    fn begin_register(&self, token: Token) -> (Option<u16>, usize) {
        let mut st = lock(&self.0);
        assert!(
            st.seen.insert(token.as_u64()),
            "register hook: token {token:?} was handed out before"
        );
        (st.report_next.take(), st.engine)
    }
}

impl OsEventHooks for RecHooks {
    type FdReg = FdReg;
    type TimeoutReg = TimeoutReg;

    fn fd_register(&self, fd: RawFd, interest: Interest, token: Token) -> io::Result<FdReg> {
        let t = token.as_u64();
        assert!(fd >= 0, "fd_register with fd {fd}");
        let (report, engine) = self.begin_register(token);
        if let Some(revents) = report {
            let result = with_engine(engine, |e| e.occurred_fd(token, fd, readiness_of(revents)));
            let result = repr(result);
            lock(&self.0)
                .log
                .push(HookCall::ReportedInHook { token: t, result });
        }
        let mut st = lock(&self.0);
        let fail = st.fail_next.take();
        let ok = fail.is_none();
        st.log.push(HookCall::FdRegister {
            token: t,
            fd,
            interest,
            ok,
        });
        if let Some(panic) = fail {
            drop(st);
            return injected_failure(panic);
        }
        assert!(st.fd_live.insert(t, (fd, interest)).is_none());
        st.values_made += 1;
        Ok(FdReg {
            token: t,
            fd,
            interest,
            hooks: Arc::clone(&self.0),
        })
    }

    fn fd_modify(&self, fd: RawFd, reg: &mut FdReg, interest: Interest) -> io::Result<()> {
        let mut st = lock(&self.0);
        assert_eq!(fd, reg.fd, "fd_modify: fd differs from the registered one");
        assert_eq!(
            st.fd_live.get(&reg.token),
            Some(&(reg.fd, reg.interest)),
            "fd_modify of a watch the loop does not have"
        );
        let fail = st.fail_next.take();
        let ok = fail.is_none();
        st.log.push(HookCall::FdModify {
            token: reg.token,
            fd,
            interest,
            ok,
        });
        if let Some(panic) = fail {
            drop(st);
            return injected_failure(panic);
        }
        reg.interest = interest;
        st.fd_live.insert(reg.token, (fd, interest));
        Ok(())
    }

    fn fd_deregister(&self, fd: RawFd, reg: FdReg) {
        {
            let mut st = lock(&self.0);
            assert_eq!(
                fd, reg.fd,
                "fd_deregister: fd differs from the registered one"
            );
            assert_eq!(
                st.fd_live.remove(&reg.token),
                Some((reg.fd, reg.interest)),
                "fd_deregister of a watch the loop does not have"
            );
            st.log.push(HookCall::FdDeregister {
                token: reg.token,
                fd,
            });
            maybe_panic_in_deregister(st);
        }
        drop(reg);
    }

    fn timeout_register(&self, deadline: Instant, token: Token) -> io::Result<TimeoutReg> {
        let t = token.as_u64();
        let (report, engine) = self.begin_register(token);
        if let Some(_revents) = report {
            let result = repr(with_engine(engine, |e| e.occurred_timeout(token)));
            lock(&self.0)
                .log
                .push(HookCall::ReportedInHook { token: t, result });
        }
        let mut st = lock(&self.0);
        let fail = st.fail_next.take();
        let ok = fail.is_none();
        st.log.push(HookCall::TimeoutRegister {
            token: t,
            deadline,
            ok,
        });
        if let Some(panic) = fail {
            drop(st);
            return injected_failure(panic);
        }
        assert!(st.timer_live.insert(t, deadline).is_none());
        st.values_made += 1;
        Ok(TimeoutReg {
            token: t,
            hooks: Arc::clone(&self.0),
        })
    }

    fn timeout_modify(&self, reg: &mut TimeoutReg, deadline: Instant) -> io::Result<()> {
        let mut st = lock(&self.0);
        assert!(
            st.timer_live.contains_key(&reg.token),
            "timeout_modify of a timeout the loop does not have"
        );
        let fail = st.fail_next.take();
        let ok = fail.is_none();
        st.log.push(HookCall::TimeoutModify {
            token: reg.token,
            deadline,
            ok,
        });
        if let Some(panic) = fail {
            drop(st);
            return injected_failure(panic);
        }
        st.timer_live.insert(reg.token, deadline);
        Ok(())
    }

    fn timeout_deregister(&self, reg: TimeoutReg) {
        {
            let mut st = lock(&self.0);
            assert!(
                st.timer_live.remove(&reg.token).is_some(),
                "timeout_deregister of a timeout the loop does not have"
            );
            st.log
                .push(HookCall::TimeoutDeregister { token: reg.token });
            maybe_panic_in_deregister(st);
        }
        drop(reg);
    }
}
