//! The application's loop of the hooks backend, called from any thread:
//! it keeps the table of what it watches, checks that the engine touches
//! only what it registered (each token registered once, modified only while
//! registered, deregistered once, each value dropped once), and on demand
//! sleeps inside a register or modify hook (while the engine holds the
//! registration's control bit) or fails it.

use crate::common::{lock, INJECTED};
use evnexus::{Interest, OsEventHooks, Token};
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub(crate) struct HookState {
    pub(crate) fd_live: HashMap<u64, (RawFd, Interest)>,
    pub(crate) timer_live: HashMap<u64, Instant>,
    /// Every token a register hook was given.
    seen: HashSet<u64>,
    /// Register/modify hooks still to fail.
    fail_next: u32,
    /// The next register/modify hook sleeps this long.
    slow_next: Option<Duration>,
    /// Hook calls failed on purpose.
    pub(crate) injected: u64,
    pub(crate) values_made: u64,
    pub(crate) values_dropped: u64,
}

#[derive(Clone, Default)]
pub(crate) struct Hooks(pub(crate) Arc<Mutex<HookState>>);

impl Hooks {
    pub(crate) fn fail_next(&self) {
        lock(&self.0).fail_next += 1;
    }

    pub(crate) fn slow_next(&self, us: u8) {
        lock(&self.0).slow_next = Some(Duration::from_micros(us as u64 * 8));
    }

    /// A fallible hook's common part: sleeps if asked to (with the state
    /// unlocked), then fails if asked to.
    fn slow_then_maybe_fail(&self) -> io::Result<()> {
        let slow = lock(&self.0).slow_next.take();
        if let Some(d) = slow {
            std::thread::sleep(d);
        }
        let mut st = lock(&self.0);
        if st.fail_next > 0 {
            st.fail_next -= 1;
            st.injected += 1;
            return Err(io::Error::other(INJECTED));
        }
        Ok(())
    }

    fn first_registration(&self, token: Token) {
        assert!(
            lock(&self.0).seen.insert(token.as_u64()),
            "register hook: token {token:?} was handed out before"
        );
    }
}

pub(crate) struct FdReg {
    token: u64,
    fd: RawFd,
    hooks: Hooks,
}

impl Drop for FdReg {
    fn drop(&mut self) {
        lock(&self.hooks.0).values_dropped += 1;
    }
}

pub(crate) struct TimeoutReg {
    token: u64,
    hooks: Hooks,
}

impl Drop for TimeoutReg {
    fn drop(&mut self) {
        let mut st = lock(&self.hooks.0);
        st.values_dropped += 1;
        // A timeout that occurred is over for the loop without a
        // timeout_deregister: the engine just drops the value.
        st.timer_live.remove(&self.token);
    }
}

impl OsEventHooks for Hooks {
    type FdReg = FdReg;
    type TimeoutReg = TimeoutReg;

    fn fd_register(&self, fd: RawFd, interest: Interest, token: Token) -> io::Result<FdReg> {
        self.first_registration(token);
        self.slow_then_maybe_fail()?;
        let t = token.as_u64();
        let mut st = lock(&self.0);
        assert!(st.fd_live.insert(t, (fd, interest)).is_none());
        st.values_made += 1;
        Ok(FdReg {
            token: t,
            fd,
            hooks: self.clone(),
        })
    }

    fn fd_modify(&self, fd: RawFd, reg: &mut FdReg, interest: Interest) -> io::Result<()> {
        assert_eq!(fd, reg.fd, "fd_modify: fd differs from the registered one");
        assert!(
            lock(&self.0).fd_live.contains_key(&reg.token),
            "fd_modify of a watch the loop does not have"
        );
        self.slow_then_maybe_fail()?;
        let mut st = lock(&self.0);
        let entry = st
            .fd_live
            .get_mut(&reg.token)
            .expect("fd_modify: the watch went away while its modify held it");
        entry.1 = interest;
        Ok(())
    }

    fn fd_deregister(&self, fd: RawFd, reg: FdReg) {
        assert_eq!(
            fd, reg.fd,
            "fd_deregister: fd differs from the registered one"
        );
        let removed = lock(&self.0).fd_live.remove(&reg.token);
        assert!(
            removed.is_some_and(|(f, _)| f == fd),
            "fd_deregister of a watch the loop does not have"
        );
    }

    fn timeout_register(&self, deadline: Instant, token: Token) -> io::Result<TimeoutReg> {
        self.first_registration(token);
        self.slow_then_maybe_fail()?;
        let t = token.as_u64();
        let mut st = lock(&self.0);
        assert!(st.timer_live.insert(t, deadline).is_none());
        st.values_made += 1;
        Ok(TimeoutReg {
            token: t,
            hooks: self.clone(),
        })
    }

    fn timeout_modify(&self, reg: &mut TimeoutReg, deadline: Instant) -> io::Result<()> {
        assert!(
            lock(&self.0).timer_live.contains_key(&reg.token),
            "timeout_modify of a timeout the loop does not have"
        );
        self.slow_then_maybe_fail()?;
        let mut st = lock(&self.0);
        let entry = st
            .timer_live
            .get_mut(&reg.token)
            .expect("timeout_modify: the timeout went away while its modify held it");
        *entry = deadline;
        Ok(())
    }

    fn timeout_deregister(&self, reg: TimeoutReg) {
        assert!(
            lock(&self.0).timer_live.remove(&reg.token).is_some(),
            "timeout_deregister of a timeout the loop does not have"
        );
    }
}
