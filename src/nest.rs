//! Nesting: the engine carried by a host's event loop (GLib, sd-event,
//! libuv, tokio, a plain `poll()`), as `sd_event_get_fd` or
//! `uv_backend_fd` + `uv_backend_timeout` offer it.
//!
//! A host watches the engine's fd ([`AsFd`]) for readability and sleeps at
//! most [`Engine::next_timeout`]; when the fd is readable or the time has
//! come, it calls `engine.run_once(Some(Duration::ZERO))`, which dispatches
//! what is ready and due without blocking, and asks `next_timeout` again.
//!
//! The fd of a built-in loop is its epoll set, which holds every fd watch
//! (level- and edge-triggered) and the wake-up eventfd: it is readable
//! exactly when a non-blocking `run_once` finds something to dispatch,
//! apart from timers (those are what `next_timeout` is for). A change made
//! on another thread while the host sleeps (a timer registered or reset,
//! [`Waker::wake`](crate::Waker::wake)) writes the wake-up eventfd, so the
//! host wakes and the next `run_once` takes the change in.

use crate::engine::Engine;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;
use std::time::Duration;

/// An eventfd that is never written: the nesting fd of engines with no
/// loop to nest (hooks). One per process, made when first asked for.
static NEVER_READY: OnceLock<OwnedFd> = OnceLock::new();

fn never_ready() -> BorrowedFd<'static> {
    NEVER_READY
        .get_or_init(|| {
            // SAFETY: eventfd takes no pointers; it returns a new fd or -1.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            assert!(
                fd >= 0,
                "evnexus: no file descriptor left for the nesting fd of a hooks engine: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: a fresh descriptor that nothing else owns.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .as_fd()
}

/// The fd a host loop watches to drive this engine (see the module docs of
/// nesting in the crate docs, "Nesting in another loop").
///
/// - Built-in loops (io_uring, epoll): the loop's epoll set. It is readable
///   whenever `run_once(Some(Duration::ZERO))` has an fd event to dispatch
///   or was woken; timers are not reflected (ask [`Engine::next_timeout`]).
/// - Poll-loop engines: the wake-up eventfd, readable once registrations
///   have changed since the last `beforepoll`.
/// - Engines with hooks have no loop to nest: a shared eventfd that is
///   never readable.
///
/// # Panics
///
/// Only on an engine with hooks, the first time any such engine of the
/// process is asked, if the process has no file descriptor left for that
/// shared eventfd.
///
/// ```
/// use evnexus::Engine;
/// use std::os::fd::{AsFd, AsRawFd};
/// use std::time::Duration;
/// # fn main() -> evnexus::Result<()> {
/// let engine = Engine::new()?;
/// let fired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
/// let f = fired.clone();
/// let _t = engine.timer_after(Duration::from_millis(5), move |_| {
///     f.store(true, std::sync::atomic::Ordering::SeqCst)
/// })?;
/// // A host loop: poll the engine's fd, at most until the next timer.
/// while !fired.load(std::sync::atomic::Ordering::SeqCst) {
///     let mut pfd = libc::pollfd { fd: engine.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 };
///     let ms = evnexus::poll_timeout_ms(engine.next_timeout());
///     // SAFETY: one valid pollfd.
///     unsafe { libc::poll(&mut pfd, 1, ms) };
///     engine.run_once(Some(Duration::ZERO))?;
/// }
/// # Ok(()) }
/// ```
impl AsFd for Engine {
    fn as_fd(&self) -> BorrowedFd<'_> {
        let backend = &self.inner().backend;
        if let Some(builtin) = backend.as_builtin() {
            builtin.epoll_fd()
        } else if let Some(poll) = backend.as_poll() {
            poll.wake_fd()
        } else {
            never_ready()
        }
    }
}

impl Engine {
    /// How long a host loop may sleep before this engine has a timer due:
    /// `None` when no timer is pending, `Some(Duration::ZERO)` when one is
    /// due now. Never later than the true answer (a cancelled timer can
    /// make it earlier: the host then wakes for nothing once). For a
    /// poll-loop engine, the same as `beforepoll`'s answer; `None` for an
    /// engine with hooks (the application's loop keeps the timeouts).
    ///
    /// Called between two `run_once` calls (the nesting recipe), it also
    /// takes in timers that other threads registered meanwhile.
    pub fn next_timeout(&self) -> Option<Duration> {
        let backend = &self.inner().backend;
        if let Some(builtin) = backend.as_builtin() {
            builtin.next_timeout()
        } else if backend.as_poll().is_some() {
            let clock = &self.inner().clock;
            let mut earliest = None::<u64>;
            self.scan(|_, state, param| {
                if state.is_timer() {
                    earliest = Some(earliest.map_or(param, |e| e.min(param)));
                }
            });
            earliest.map(|d| Duration::from_nanos(d.saturating_sub(clock.now())))
        } else {
            None
        }
    }
}
