//! Child processes: libxl's `ev_child`, without SIGCHLD. The engine watches
//! a child's pidfd like any other fd; when it becomes readable the child
//! has exited, and the engine reaps it (`waitid(P_PIDFD)`) and hands the
//! exit status to the callback, once.

use crate::base::error::{Error, Result};
use crate::base::readiness::Interest;
use crate::base::token::Token;
use crate::engine::fd::FdWatch;
use crate::engine::Engine;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// `P_PIDFD` for `waitid` (Linux 5.4); not every libc names it.
const P_PIDFD: libc::idtype_t = 3;

/// What a child watch's callback receives.
pub struct ChildEvent<'a> {
    engine: &'a Engine,
    pid: u32,
    status: io::Result<ExitStatus>,
}

impl<'a> ChildEvent<'a> {
    /// The engine, to register or deregister from the callback.
    pub fn engine(&self) -> &'a Engine {
        self.engine
    }
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }
    /// How the child ended; an error if it could not be reaped (it was not
    /// a child of this process, or something else reaped it first).
    pub fn status(&self) -> &io::Result<ExitStatus> {
        &self.status
    }
}

impl fmt::Debug for ChildEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildEvent")
            .field("pid", &self.pid)
            .field("status", &self.status)
            .finish()
    }
}

/// The owning handle of a child watch; dropping it stops watching (the
/// child is then not reaped by the engine).
#[derive(Debug)]
pub struct ChildWatch {
    watch: FdWatch,
}

impl ChildWatch {
    /// The token of the underlying pidfd watch.
    pub fn token(&self) -> Token {
        self.watch.token()
    }
    /// Whether the child has not been reported yet.
    pub fn is_pending(&self) -> bool {
        self.watch.is_live()
    }
}

/// Reaps the exited child behind `pidfd` without blocking; `None` if it
/// has not exited after all.
fn reap(pidfd: &OwnedFd) -> Option<io::Result<ExitStatus>> {
    // SAFETY: an all-zero siginfo_t is a valid value (plain C struct).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid siginfo_t to fill; `pidfd` is open.
    let r = unsafe {
        libc::waitid(
            P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    if r < 0 {
        return Some(Err(io::Error::last_os_error()));
    }
    // SAFETY: waitid filled `info` for a SIGCHLD (or left si_pid 0 when
    // nothing has exited under WNOHANG).
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return None;
    }
    let raw = match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => status | 0x80,
        _ => status, // CLD_KILLED
    };
    Some(Ok(ExitStatus::from_raw(raw)))
}

impl Engine {
    /// Watches child process `pid`: when it exits, the engine reaps it and
    /// `callback` runs once with its exit status. Do not `wait` for the
    /// child yourself. Works with every backend (the pidfd is watched like
    /// any fd). Errors with [`Error::Backend`] if `pid` names no process
    /// (`pidfd_open` fails).
    ///
    /// ```
    /// # fn main() -> evnexus::Result<()> {
    /// let engine = evnexus::Engine::new()?;
    /// let child = std::process::Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let _watch = engine.watch_child(child.id(), move |ev| {
    ///     tx.send(ev.status().as_ref().unwrap().code()).unwrap();
    /// })?;
    /// while rx.try_recv().map(|code| assert_eq!(code, Some(7))).is_err() {
    ///     engine.run_once(None)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn watch_child<F>(&self, pid: u32, callback: F) -> Result<ChildWatch>
    where
        F: FnOnce(&ChildEvent<'_>) + Send + 'static,
    {
        // SAFETY: pidfd_open takes two integers and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(Error::Backend(io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor that nothing else owns; the callback
        // owns it from here and closes it when the watch ends.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        let raw = pidfd.as_raw_fd();
        let mut callback = Some(callback);
        let watch = self.register_fd(raw, Interest::READABLE, move |ev| {
            let Some(status) = reap(&pidfd) else { return };
            if let Some(callback) = callback.take() {
                callback(&ChildEvent {
                    engine: ev.engine(),
                    pid,
                    status,
                });
            }
            ev.deregister();
        })?;
        Ok(ChildWatch { watch })
    }
}
