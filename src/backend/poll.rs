//! The plain-`poll()` backend: for applications whose loop is a `poll()`
//! call, libxl's `libxl_osevent_beforepoll` / `libxl_osevent_afterpoll`.
//!
//! The application keeps a [`PollSet`]; [`Engine::beforepoll`] fills it with
//! the engine's fds (and an eventfd that other threads use to wake the
//! loop) and returns how long `poll()` may sleep before the next timer;
//! the application may append fds of its own; after `poll()`,
//! [`Engine::afterpoll`] dispatches what is ready and what is due.
//! [`Engine::poll_once`] does all three for an application that has no fds
//! of its own.
//!
//! Registrations change from any thread while the loop sleeps in `poll()`:
//! every change is visible in the arena, and a change made while a loop is
//! between `beforepoll` and `afterpoll` also writes the eventfd, so the loop
//! wakes and picks it up on its next `beforepoll`.

use crate::backend::wake::WakeFd;
use crate::backend::{Backend, BackendKind, Removal, Tally};
use crate::engine::Engine;
use crate::error::{Error, Result, Unsupported};
use crate::fd::{param_fd, param_interest, Interest};
use crate::slot::BackendReg;
use crate::token::Token;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

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

    fn changed(&self) {
        self.wake.notify();
    }

    fn as_poll(&self) -> Option<&PollBackend> {
        Some(self)
    }
}

impl PollBackend {
    /// The wake-up eventfd: readable once registrations changed since the
    /// application's loop last looked.
    pub(crate) fn wake_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.wake.set_nested();
        self.wake.borrow()
    }
}

/// The application's side of a `poll()` loop: the pollfd array and what
/// the engine needs to read the results back. Reuse one across iterations.
///
/// ```
/// use evnexus::{BackendKind, Engine, PollSet};
/// use std::time::Duration;
/// # fn main() -> evnexus::Result<()> {
/// let engine = Engine::builder().backend(BackendKind::Poll).build()?;
/// let _t = engine.timer_after(Duration::ZERO, |_| println!("fired"))?;
/// let mut set = PollSet::new();
/// let timeout = engine.beforepoll(&mut set)?;
/// assert_eq!(timeout, Some(Duration::ZERO));
/// // The application may add its own fds here with `set.push_fd(..)`.
/// let fds = set.fds_mut();
/// // SAFETY: `fds` is a valid slice of pollfds.
/// let _ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
/// assert_eq!(engine.afterpoll(&mut set)?, 1);
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct PollSet {
    fds: Vec<libc::pollfd>,
    /// Tokens of `fds[1..engine_len]`.
    tokens: Vec<Token>,
    /// Timers seen by `beforepoll`: (deadline offset, token).
    timers: Vec<(u64, Token)>,
    engine_len: usize,
    /// Between beforepoll and afterpoll.
    armed: bool,
    /// Id of the engine that filled the set (0: none).
    owner: u64,
}

impl PollSet {
    /// An empty set.
    pub fn new() -> PollSet {
        PollSet::default()
    }
    /// All entries: the engine's first, then the application's.
    pub fn fds(&self) -> &[libc::pollfd] {
        &self.fds
    }
    /// All entries, to hand to `poll()`.
    pub fn fds_mut(&mut self) -> &mut [libc::pollfd] {
        &mut self.fds
    }
    /// Appends an fd of the application's own after the engine's entries
    /// (after `beforepoll`, which clears them); returns its index in
    /// [`PollSet::fds`].
    pub fn push_fd(&mut self, fd: RawFd, events: libc::c_short) -> usize {
        self.fds.push(libc::pollfd {
            fd,
            events,
            revents: 0,
        });
        self.fds.len() - 1
    }
    /// How many leading entries are the engine's.
    pub fn engine_len(&self) -> usize {
        self.engine_len
    }
}

/// `d` in whole milliseconds for `poll()`, rounded up so a timer is never
/// woken for early; `None` (no timer) is -1, sleep without limit.
pub fn poll_timeout_ms(d: Option<Duration>) -> libc::c_int {
    match d {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
        }
    }
}

impl Engine {
    fn poll_backend(&self) -> Result<&PollBackend> {
        self.inner()
            .backend
            .as_poll()
            .ok_or(Error::Unsupported(Unsupported::NotPollLoop))
    }

    /// Fills `set` with the engine's fds and returns how long `poll()` may
    /// sleep: until the earliest timer, `None` for no limit. Errors with
    /// [`Error::Unsupported`] on an engine with hooks.
    pub fn beforepoll(&self, set: &mut PollSet) -> Result<Option<Duration>> {
        let backend = self.poll_backend()?;
        set.owner = self.inner().id;
        if !set.armed {
            backend.wake.arm();
            set.armed = true;
        }
        set.fds.clear();
        set.tokens.clear();
        set.timers.clear();
        set.fds.push(libc::pollfd {
            fd: backend.wake.raw(),
            events: libc::POLLIN,
            revents: 0,
        });
        let mut earliest = u64::MAX;
        self.scan(|token, state, param| {
            if state.is_timer() {
                earliest = earliest.min(param);
                set.timers.push((param, token));
            } else {
                set.fds.push(libc::pollfd {
                    fd: param_fd(param),
                    events: param_interest(param).as_poll_events(),
                    revents: 0,
                });
                set.tokens.push(token);
            }
        });
        set.engine_len = set.fds.len();
        if earliest == u64::MAX {
            return Ok(None);
        }
        let clock = &self.inner().clock;
        Ok(Some(
            clock
                .instant(earliest)
                .saturating_duration_since(Instant::now()),
        ))
    }

    /// Dispatches what `poll()` found ready in `set`, then every timer that
    /// is due; returns how many callbacks ran. Every event is dispatched
    /// even if a callback panics; the first panic is then returned as
    /// [`Error::CallbackPanicked`].
    pub fn afterpoll(&self, set: &mut PollSet) -> Result<usize> {
        let backend = self.poll_backend()?;
        if set.owner != self.inner().id || set.engine_len == 0 {
            return Err(Error::Unsupported(Unsupported::ForeignPollSet));
        }
        if std::mem::take(&mut set.armed) {
            backend.wake.disarm();
        }
        if set.fds[0].revents != 0 {
            backend.wake.drain();
        }
        let mut tally = Tally::default();
        for (pfd, &token) in set.fds[1..set.engine_len].iter().zip(&set.tokens) {
            if pfd.revents != 0 {
                let revents = crate::fd::Readiness::from_poll_revents(pfd.revents);
                tally.note(self.occurred_fd(token, pfd.fd, revents));
            }
        }
        let now = self.inner().clock.offset(Instant::now());
        set.timers.retain(|&(deadline, _)| deadline <= now);
        // Stable: equal deadlines fire in slot order.
        set.timers.sort_by_key(|&(deadline, _)| deadline);
        for &(_, token) in &set.timers {
            if let Some(r) = self.fire_if_due(token, now) {
                tally.note(r);
            }
        }
        tally.finish()
    }

    /// One iteration of a `poll()` loop over the engine's fds alone:
    /// `beforepoll`, `poll()` for at most `max_wait` (`None`: until an event
    /// or the next timer), `afterpoll`. Returns how many callbacks ran.
    pub fn poll_once(&self, set: &mut PollSet, max_wait: Option<Duration>) -> Result<usize> {
        let until_timer = self.beforepoll(set)?;
        let wait = match (until_timer, max_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let fds = set.fds_mut();
        // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfds.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                poll_timeout_ms(wait),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                // Disarm the set before reporting; nothing was ready.
                for pfd in set.fds_mut() {
                    pfd.revents = 0;
                }
                let _ = self.afterpoll(set);
                return Err(Error::Backend(e));
            }
            for pfd in set.fds_mut() {
                pfd.revents = 0;
            }
        }
        self.afterpoll(set)
    }
}
