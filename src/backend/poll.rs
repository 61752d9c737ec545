//! The plain-`poll()` backend: for applications whose loop is a `poll()`
//! call, libxl's `libxl_osevent_beforepoll` / `libxl_osevent_afterpoll`.
//! This is the backend's half: it keeps nothing per registration (the loop
//! reads registrations from the arena) and wakes the loop on changes. The
//! loop's half, `PollSet` and `Engine::beforepoll`/`afterpoll`, is the
//! facade's (`engine/poll.rs`).

use crate::backend::wake::WakeFd;
use crate::base::error::Result;
use crate::base::readiness::Interest;
use crate::base::token::Token;
use crate::dispatch::{Backend, BackendKind, Removal};
use crate::nexus::slot::BackendReg;
use std::io;
use std::os::fd::RawFd;
use std::time::Instant;
pub(crate) struct PollBackend {
    wake: WakeFd,
}

impl PollBackend {
    pub(crate) fn new() -> io::Result<PollBackend> {
        Ok(PollBackend {
            wake: WakeFd::new()?,
        })
    }
}

impl Backend for PollBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Poll
    }
    // The loop reads registrations straight from the arena; nothing to keep.
    fn fd_register(&self, _: RawFd, _: Interest, _: Token) -> Result<BackendReg> {
        Ok(Box::new(()))
    }
    fn fd_modify(&self, _: RawFd, _: Token, _: &mut BackendReg, _: Interest) -> Result<()> {
        Ok(())
    }
    fn fd_deregister(&self, _: RawFd, _: Token, _: BackendReg) -> Removal {
        Removal::Done
    }
    fn timeout_register(&self, _: Instant, _: Token) -> Result<BackendReg> {
        Ok(Box::new(()))
    }
    fn timeout_modify(&self, _: Token, _: &mut BackendReg, _: Instant) -> Result<()> {
        Ok(())
    }
    fn timeout_deregister(&self, _: Token, _: BackendReg) {}
    fn timer_register_needs_ctrl(&self) -> bool {
        false
    }

    fn changed(&self) {
        self.wake.notify();
    }
}

impl PollBackend {
    /// The wake-up eventfd: readable once registrations changed since the
    /// application's loop last looked.
    /// The wake-up eventfd that a poll set carries first.
    pub(crate) fn wake(&self) -> &WakeFd {
        &self.wake
    }

    /// The nesting fd: the wake-up eventfd (see `engine/nest.rs`).
    pub(crate) fn wake_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.wake.set_nested();
        self.wake.borrow()
    }
}
