//! The application's side of a plain `poll()` loop: [`PollSet`] and
//! [`Engine::beforepoll`] / [`Engine::afterpoll`] / [`Engine::poll_once`]
//! (libxl's `libxl_osevent_beforepoll` / `libxl_osevent_afterpoll`).
//!
//! The application keeps a [`PollSet`]; `beforepoll` fills it with the
//! engine's fds (and an eventfd that other threads use to wake the loop)
//! and returns how long `poll()` may sleep before the next timer; the
//! application may append fds of its own; after `poll()`, `afterpoll`
//! dispatches what is ready and what is due. `poll_once` does all three for
//! an application that has no fds of its own.
//!
//! Registrations change from any thread while the loop sleeps in `poll()`:
//! every change is visible in the arena, and a change made while a loop is
//! between `beforepoll` and `afterpoll` also writes the eventfd, so the loop
//! wakes and picks it up on its next `beforepoll`.

use crate::base::clock::poll_timeout_ms;
use crate::base::error::{Error, Result, Unsupported};
use crate::base::readiness::Readiness;
use crate::base::token::Token;
use crate::dispatch::{Registration, Tally};
use crate::engine::Engine;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

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

impl Engine {
    /// Fills `set` with the engine's fds and returns how long `poll()` may
    /// sleep: until the earliest timer, `None` for no limit. Errors with
    /// [`Error::Unsupported`] on an engine with hooks.
    pub fn beforepoll(&self, set: &mut PollSet) -> Result<Option<Duration>> {
        let backend = self.poll_backend()?;
        set.owner = self.core().id;
        if !set.armed {
            backend.wake().arm();
            set.armed = true;
        }
        set.fds.clear();
        set.tokens.clear();
        set.timers.clear();
        set.fds.push(libc::pollfd {
            fd: backend.wake().raw(),
            events: libc::POLLIN,
            revents: 0,
        });
        let mut earliest = u64::MAX;
        self.core().scan(|token, what| match what {
            Registration::Timer { deadline } => {
                earliest = earliest.min(deadline);
                set.timers.push((deadline, token));
            }
            Registration::Fd { fd, interest } => {
                set.fds.push(libc::pollfd {
                    fd,
                    events: interest.as_poll_events(),
                    revents: 0,
                });
                set.tokens.push(token);
            }
        });
        set.engine_len = set.fds.len();
        if earliest == u64::MAX {
            return Ok(None);
        }
        let clock = &self.core().clock;
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
        if set.owner != self.core().id || set.engine_len == 0 {
            return Err(Error::Unsupported(Unsupported::ForeignPollSet));
        }
        if std::mem::take(&mut set.armed) {
            backend.wake().disarm();
        }
        if set.fds[0].revents != 0 {
            backend.wake().drain();
        }
        let mut tally = Tally::default();
        for (pfd, &token) in set.fds[1..set.engine_len].iter().zip(&set.tokens) {
            if pfd.revents != 0 {
                let revents = Readiness::from_poll_revents(pfd.revents);
                tally.note(self.occurred_fd(token, pfd.fd, revents));
            }
        }
        let now = self.core().clock.offset(Instant::now());
        set.timers.retain(|&(deadline, _)| deadline <= now);
        // Stable: equal deadlines fire in slot order.
        set.timers.sort_by_key(|&(deadline, _)| deadline);
        self.core().fire_due(
            set.timers.iter().map(|&(_, token)| token),
            now,
            &mut tally,
            |cb, token, deadline| self.run_timer(cb, token, deadline),
        );
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
