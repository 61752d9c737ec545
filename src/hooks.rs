//! The application-loop backend: [`OsEventHooks`], the trait an application
//! implements so that its own event loop carries the engine's fd and
//! timeout registrations (libxl's `libxl_osevent_hooks`, in Rust shape).
//!
//! The engine calls a hook when a registration is made, modified or ended,
//! with the registration's [`Token`]; the application keeps a value of its
//! own per registration (whatever it needs to find the registration in its
//! loop) and later reports events with [`Engine::occurred_fd`] and
//! [`Engine::occurred_timeout`], from any thread, at any delay. A report
//! for a registration that has ended meanwhile is rejected by the engine:
//! the application need not synchronise its reports with the hooks.
//!
//! [`Engine::occurred_fd`]: crate::Engine::occurred_fd
//! [`Engine::occurred_timeout`]: crate::Engine::occurred_timeout
//!
//! # Timeouts: simpler than libxl
//!
//! libxl (Xen 4.3 on) never calls its `timeout_deregister` hook: to remove a
//! timeout it asks the application to fire it at once and throws the late
//! callback away, because it could not know when a deregistered token was
//! safe to forget. evnexus tokens carry a generation, so it calls
//! [`OsEventHooks::timeout_deregister`] and rejects an `occurred_timeout`
//! that was already on its way as stale. A timeout that has *occurred* is
//! over for the application: the engine never calls `timeout_deregister`
//! for it, and drops the application's value itself.

use crate::backend::{Backend, BackendKind, Removal};
use crate::error::Result;
use crate::fd::Interest;
use crate::slot::BackendReg;
use crate::token::Token;
use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

/// The hooks by which an application's own event loop carries the engine's
/// registrations.
///
/// Every hook may be called from any thread that uses the engine (a
/// callback's thread included), concurrently for different registrations;
/// the engine never calls two hooks for the same registration at once. No
/// engine lock is held during a hook (there is none). A hook may register,
/// deregister and report events, but must not *modify* a registration (that
/// could wait on the very registration the hook serves, so it returns
/// [`Error::Reentrant`](crate::Error::Reentrant) instead), and should not
/// block on locks that the application holds while calling into the engine.
///
/// A hook that returns an error (or panics) makes the engine operation fail
/// with [`Error::Backend`](crate::Error::Backend): a failed register leaves
/// no registration behind, a failed modify leaves the registration as it
/// was. A panic in a deregister hook is contained and ignored.
pub trait OsEventHooks: Send + Sync + 'static {
    /// The application's value for one fd registration (libxl's
    /// `for_app_registration`).
    type FdReg: Send + 'static;
    /// The application's value for one timeout registration.
    type TimeoutReg: Send + 'static;

    /// Start watching `fd` for `interest`; report events with
    /// `engine.occurred_fd(token, fd, revents)`. An event may be reported as
    /// soon as this hook has been entered, even before it returns.
    fn fd_register(&self, fd: RawFd, interest: Interest, token: Token) -> io::Result<Self::FdReg>;
    /// Watch `fd` for `interest` instead.
    fn fd_modify(&self, fd: RawFd, reg: &mut Self::FdReg, interest: Interest) -> io::Result<()>;
    /// Stop watching `fd`. Reports already on their way are harmless.
    fn fd_deregister(&self, fd: RawFd, reg: Self::FdReg);

    /// Call `engine.occurred_timeout(token)` once, at or after `deadline`.
    fn timeout_register(&self, deadline: Instant, token: Token) -> io::Result<Self::TimeoutReg>;
    /// Move the timeout to `deadline`. May race with the application's own
    /// report of the old deadline; the engine sorts that out.
    fn timeout_modify(&self, reg: &mut Self::TimeoutReg, deadline: Instant) -> io::Result<()>;
    /// Forget the timeout: it was cancelled before it occurred.
    fn timeout_deregister(&self, reg: Self::TimeoutReg);
}

pub(crate) struct HooksBackend<H>(pub(crate) H);

/// Runs a hook with the calling thread marked as inside a hook, so that a
/// re-entrant modify is refused and a re-entrant deregister does not wait
/// (see `engine::scope`). A panicking hook becomes an error: the engine's
/// state stays consistent whatever the application's code does.
fn in_hook<R>(f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
    let _hook = crate::engine::scope::Scope::enter_hook();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let message = crate::engine::panic_message(payload);
        Err(io::Error::other(format!(
            "evnexus: hook panicked: {message}"
        )))
    })
}

fn lost_value() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "evnexus: registration value of another type",
    )
}

impl<H: OsEventHooks> Backend for HooksBackend<H> {
    fn kind(&self) -> BackendKind {
        BackendKind::Hooks
    }

    fn fd_register(&self, fd: RawFd, interest: Interest, token: Token) -> Result<BackendReg> {
        let reg = in_hook(|| self.0.fd_register(fd, interest, token))?;
        Ok(Box::new(reg))
    }

    fn fd_modify(
        &self,
        fd: RawFd,
        _: Token,
        reg: &mut BackendReg,
        interest: Interest,
    ) -> Result<()> {
        let reg = reg.downcast_mut::<H::FdReg>().ok_or_else(lost_value)?;
        Ok(in_hook(|| self.0.fd_modify(fd, reg, interest))?)
    }

    fn fd_deregister(&self, fd: RawFd, _: Token, reg: BackendReg) -> Removal {
        // The value was boxed by `fd_register` above; a failed downcast is
        // impossible and would only mean there is nothing to tell.
        if let Ok(reg) = reg.downcast::<H::FdReg>() {
            // Nothing to report a failure to: the registration is over.
            let _ = in_hook(|| {
                self.0.fd_deregister(fd, *reg);
                Ok(())
            });
        }
        // The application's loop owns whatever it keeps for the fd.
        Removal::Done
    }

    fn timeout_register(&self, deadline: Instant, token: Token) -> Result<BackendReg> {
        let reg = in_hook(|| self.0.timeout_register(deadline, token))?;
        Ok(Box::new(reg))
    }

    fn timeout_modify(&self, _: Token, reg: &mut BackendReg, deadline: Instant) -> Result<()> {
        let reg = reg.downcast_mut::<H::TimeoutReg>().ok_or_else(lost_value)?;
        Ok(in_hook(|| self.0.timeout_modify(reg, deadline))?)
    }

    fn timeout_deregister(&self, _: Token, reg: BackendReg) {
        if let Ok(reg) = reg.downcast::<H::TimeoutReg>() {
            let _ = in_hook(|| {
                self.0.timeout_deregister(*reg);
                Ok(())
            });
        }
    }
}
