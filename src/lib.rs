//! # evnexus
//!
//! A lock-free event engine for programs that must never act on a stale
//! event. An application's event loop reports "this fd is ready" or "this
//! timeout fired" back to the engine with an opaque [`Token`], from any
//! thread, arbitrarily late: by then the registration may have been
//! removed, its slot reused, its fd number closed and reopened. Each
//! registration lives in a slot with a generation counter; a report is
//! validated by one compare-and-swap on the slot's state word, so a stale
//! or forged token is rejected at any delay, with no lock and no system
//! call, and a live event is never lost.
//!
//! ## Embedding in an application's loop
//!
//! ```
//! use evnexus::{Engine, Interest, OsEventHooks, Readiness, Token};
//! use std::io;
//! use std::os::fd::{AsRawFd, RawFd};
//! use std::sync::Mutex;
//! use std::time::Instant;
//!
//! /// The application's loop: here, just a list of what to watch.
//! struct MyLoop {
//!     fds: Mutex<Vec<(RawFd, Interest, Token)>>,
//! }
//!
//! impl OsEventHooks for &'static MyLoop {
//!     type FdReg = RawFd; // what the application keeps per registration
//!     type TimeoutReg = ();
//!     fn fd_register(&self, fd: RawFd, interest: Interest, token: Token) -> io::Result<RawFd> {
//!         self.fds.lock().unwrap().push((fd, interest, token));
//!         Ok(fd)
//!     }
//!     fn fd_modify(&self, fd: RawFd, _: &mut RawFd, interest: Interest) -> io::Result<()> {
//!         for e in self.fds.lock().unwrap().iter_mut().filter(|e| e.0 == fd) {
//!             e.1 = interest;
//!         }
//!         Ok(())
//!     }
//!     fn fd_deregister(&self, fd: RawFd, _: RawFd) {
//!         self.fds.lock().unwrap().retain(|e| e.0 != fd);
//!     }
//!     fn timeout_register(&self, _: Instant, _: Token) -> io::Result<()> { Ok(()) }
//!     fn timeout_modify(&self, _: &mut (), _: Instant) -> io::Result<()> { Ok(()) }
//!     fn timeout_deregister(&self, _: ()) {}
//! }
//!
//! static MY_LOOP: MyLoop = MyLoop { fds: Mutex::new(Vec::new()) };
//! let my_loop: &'static MyLoop = &MY_LOOP;
//! let engine = Engine::with_hooks(my_loop);
//! let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
//! let watch = engine.register_fd(a.as_raw_fd(), Interest::READABLE, |ev| {
//!     println!("{} is {:?}", ev.fd(), ev.readiness());
//! })?;
//! io::Write::write_all(&mut b, b"ping").unwrap();
//!
//! // The application's loop finds the fd readable and reports it, from any
//! // thread, at any delay:
//! let (fd, _, token) = my_loop.fds.lock().unwrap()[0];
//! assert_eq!(engine.occurred_fd(token, fd, Readiness::READABLE)?, evnexus::Occurred::Dispatched);
//!
//! // After deregistration the same report is rejected, however late.
//! drop(watch);
//! assert!(matches!(engine.occurred_fd(token, fd, Readiness::READABLE)?, evnexus::Occurred::Stale(_)));
//! # Ok::<(), evnexus::Error>(())
//! ```
//!
//! The hooks above report through the engine itself. Hooks built with
//! [`Engine::with_hooks_fn`] (or [`Builder::hooks_with`]) get an
//! [`EngineHandle`] instead, which the application's own threads report
//! through ([`EngineHandle::occurred_fd`], or [`EngineHandle::engine`] once
//! per batch): no `&Engine` to pass around, and no reference cycle, since
//! the handle does not keep the engine alive (after it is dropped, a report
//! is [`Occurred::Stale`]).
//!
//! Applications whose loop is a plain `poll()` use [`Engine::beforepoll`]
//! and [`Engine::afterpoll`] instead of hooks.
//!
//! ## The built-in loop
//!
//! Programs without a loop of their own let the engine wait, on io_uring
//! (or epoll where the kernel refuses io_uring):
//!
//! ```
//! use evnexus::{Engine, Interest};
//! use std::os::fd::AsRawFd;
//! use std::time::Duration;
//!
//! let engine = Engine::new()?;
//! let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
//! let _watch = engine.register_fd(a.as_raw_fd(), Interest::READABLE, move |ev| {
//!     let mut buf = [0u8; 16];
//!     let n = std::io::Read::read(&mut &a, &mut buf).unwrap(); // the callback owns `a`
//!     assert_eq!(&buf[..n], b"hello");
//!     ev.engine().stop();
//! })?;
//! let _timer = engine.timer_after(Duration::from_secs(5), |_| panic!("too slow"))?;
//! std::io::Write::write_all(&mut b, b"hello").unwrap();
//! engine.run()?; // until the callback stops it
//! # Ok::<(), evnexus::Error>(())
//! ```
//!
//! Level-triggered watches (the default) run again while the condition
//! holds; [`Interest::EDGE`] asks for one run per edge. Registrations and
//! changes from any thread take effect while the loop waits; [`Waker`]
//! interrupts the wait.
//!
//! ## What can be watched
//!
//! - **fds, I/O-safe.** [`Engine::register`] borrows any [`AsFd`] value:
//!   the fd cannot be closed while the watch exists (the compiler says
//!   so). [`Engine::register_owned`] takes the value and closes it only
//!   after its kernel entry is gone, so "closed while registered" cannot
//!   happen; [`OwnedFdWatch::into_inner`] gives it back.
//!   [`Engine::register_fd`] takes a raw number, for hook-style and C code.
//! - **Signals.** [`Engine::watch_signal`] runs a callback per signal,
//!   through a signalfd, on every backend. Block the signal first, in the
//!   main thread before any other thread exists ([`block_signals`]).
//! - **Children.** [`Engine::watch_child`] reports a child's exit status,
//!   through its pidfd.
//!
//! ## Timers
//!
//! - **One-shot:** [`Engine::timer_at`] / [`Engine::timer_after`] return a
//!   [`Timer`], which cancels the timer when dropped.
//! - **Fire-and-forget:** [`Engine::timer_after_detached`] (or
//!   [`Timer::into_token`]) keeps no handle: the timer runs once, unless
//!   [`Engine::deregister`] cancels it by token first.
//! - **Periodic:** [`Engine::timer_every`] runs a callback every period
//!   without drift: run `k` is due at `first + k * period`, however late
//!   the runs before it were. A loop that falls behind skips the runs
//!   whose time has passed and says so ([`Tick::missed`]); the
//!   [`Periodic`] handle cancels it, [`Tick::stop`] ends it from inside,
//!   [`Periodic::detach`] lets it run on its own.
//!
//! ```
//! use evnexus::Engine;
//! use std::time::{Duration, Instant};
//!
//! let engine = Engine::new()?;
//! let start = Instant::now();
//! let period = Duration::from_millis(2);
//! let _heartbeat = engine.timer_every(period, move |tick| {
//!     // Run n (from 0) is due at start + (n + 1) * period, and never early.
//!     assert!(Instant::now() >= start + period * (tick.index() as u32 + 1));
//!     if tick.index() >= 9 {
//!         tick.engine().stop();
//!     }
//! })?;
//! engine.run()?; // until the tenth beat is due (missed beats are skipped)
//! # Ok::<(), evnexus::Error>(())
//! ```
//!
//! ## Handles and tokens
//!
//! Every registration has a handle that ends it when dropped
//! ([`FdWatch`], [`Timer`], [`Periodic`], ...) and a [`Token`]. Code that
//! keeps tokens rather than handles (a C caller, a table of its own) lets
//! go of the handle with [`FdWatch::into_token`] or [`Timer::into_token`]
//! and works by token: [`Engine::deregister`], [`Engine::modify_fd`],
//! [`Engine::reset_timer`]. Each is safe with any `u64`: a token that names
//! no live registration of the right kind touches nothing.
//!
//! ## Nesting in another loop
//!
//! An engine with a built-in loop can itself be carried by a host loop
//! (GLib, sd-event, tokio, a plain `poll()`): the host watches the engine's
//! fd (`Engine` is [`AsFd`]) for readability, sleeps at most
//! [`Engine::next_timeout`], and then calls
//! `engine.run_once(Some(Duration::ZERO))`. A host that watches fds
//! edge-triggered turns the engine until a turn dispatches nothing.
//!
//! ## Guarantees
//!
//! - **A token is not a pointer.** Any `u64` may be reported. An index past
//!   the arena, a generation that is not the slot's current one, a
//!   registration that has ended, a timer token reported as an fd (or the
//!   reverse), an fd other than the registered one: each is rejected
//!   without touching registration memory and counted in [`Engine::stats`].
//! - **Generations never wrap.** A slot whose generation reaches
//!   [`Generation::MAX`] is retired, never reused.
//! - **One dispatch at a time, nothing lost.** A callback never runs
//!   concurrently with itself. An fd event that arrives while its callback
//!   runs on another thread is folded into a rerun there ([`Occurred::Deferred`]).
//!   A timer's callback runs exactly once, or never if it was cancelled
//!   first; never both.
//! - **No lock on an event path.** Reporting an event, registering and
//!   deregistering take no lock. Callbacks run with nothing held and may
//!   call back into the engine (register, modify, deregister, their own
//!   watch included).
//! - **Panics are contained.** A panicking callback ends its registration
//!   (as if deregistered from inside it) and the report returns
//!   [`Error::CallbackPanicked`]; the slot is torn down, never left busy.
//!
//! ## Deregistration
//!
//! What is finished when [`FdWatch::deregister`], [`Timer::cancel`] or
//! [`Engine::deregister`] returns (or a handle has been dropped):
//!
//! - **Always:** the registration has ended. Its callback will not start
//!   again; every report of its token from now on is stale; a modify from
//!   now on returns [`Error::Gone`].
//! - **From outside any evnexus callback or hook,** also: a run of the
//!   callback in progress on another thread has returned, the backend has
//!   been told (the hook called, the kernel's epoll entry removed), and
//!   the callback (with everything it captured) has been dropped.
//! - **From inside a callback or hook,** it does not wait: the rule is that
//!   **a thread that is running a callback never waits for another
//!   callback**. That makes deregistering your own watch from its callback
//!   safe, and it makes two callbacks on two threads that deregister each
//!   other safe: neither waits, so neither can deadlock. The run in
//!   progress finishes on its own thread, which then drops the callback.
//!   The backend is told at once, unless another thread is modifying the
//!   registration at that moment: that thread tells it when its own
//!   backend call returns, and its modify returns [`Error::Gone`]. Either
//!   way, a late removal never touches a newer registration: on the
//!   built-in loops every kernel change is made by the registration that
//!   owns the fd number's entry.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "evnexus supports Linux only: it is built on epoll, io_uring, eventfd, signalfd and pidfd"
);

/// Marks a pause point of a control path (see `testing`); nothing at all
/// without the `testing` feature.
macro_rules! pause_point {
    ($point:ident) => {
        #[cfg(feature = "testing")]
        $crate::testing::pause($crate::testing::PausePoint::$point);
    };
}

// Lets the crate's unit tests share fixtures written against the public API
// (`tests/common/no_hooks.rs`) with the integration tests.
#[cfg(test)]
extern crate self as evnexus;

// The layers, bottom up; each names only the layers below it (checked by
// `tests/architecture.rs`; see ARCHITECTURE.md).
mod backend;
mod base;
pub(crate) mod dispatch;
mod engine;
mod nexus;

#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod bench_api;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub use base::testing;

pub use backend::hooks::OsEventHooks;
pub use base::clock::poll_timeout_ms;
pub use base::error::{CallbackPanic, Error, Result, Unsupported};
pub use base::readiness::{Interest, Readiness};
pub use base::stats::{StaleCounts, Stats};
pub use base::token::{Generation, StaleReason, Token, MAX_SLOTS};
pub use dispatch::{BackendKind, Occurred};
pub use engine::child::{ChildEvent, ChildWatch};
pub use engine::fd::{FdEvent, FdWatch};
pub use engine::handle::{EngineHandle, EngineRef};
pub use engine::io_safety::{BorrowedFdWatch, OwnedFdWatch};
pub use engine::periodic::{Periodic, Tick};
pub use engine::poll::PollSet;
pub use engine::signal::{block_signals, SignalEvent, SignalWatch};
pub use engine::timer::{Timer, TimerEvent};
pub use engine::{Builder, Engine, Waker};

#[cfg(doc)]
use std::os::fd::AsFd;
