//! Layer 4, the facade: [`Engine`] and its [`Builder`], the handles and
//! the events callbacks receive, nesting, and the poll loop's API. It owns
//! the dispatch core and the backend it built, and is the only layer that
//! knows the callbacks' types: it tells the core how to run a callback
//! (building the event it receives), and it is the [`Dispatch`] through
//! which the built-in loop dispatches what it found.

use crate::backend::builtin::{Builtin, BuiltinLoop, LoopBase, Signals};
use crate::backend::epoll::EpollWaiter;
use crate::backend::hooks::{HooksBackend, OsEventHooks};
use crate::backend::poll::PollBackend;
use crate::backend::uring::UringWaiter;
use crate::base::clock::Clock;
use crate::base::error::{Error, Result, Unsupported};
use crate::base::readiness::{Interest, Readiness};
use crate::base::stats::Stats;
use crate::base::sync::{Arc, StdArc};
use crate::base::token::{Generation, Token, MAX_SLOTS};
use crate::dispatch::{Backend, BackendKind, Core, Dispatch, Occurred, Options, Tally};
use std::fmt;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

pub(crate) mod callback;
pub(crate) mod child;
pub(crate) mod detached;
pub(crate) mod fd;
pub(crate) mod handle;
pub(crate) mod io_safety;
pub(crate) mod nest;
pub(crate) mod periodic;
pub(crate) mod poll;
pub(crate) mod shared;
pub(crate) mod signal;
pub(crate) mod timer;
pub(crate) mod tokens;

use callback::Callback;
use fd::{FdEvent, FdWatch};
use handle::{EngineHandle, Shadow};
use timer::{Timer, TimerEvent};

pub(crate) use shared::{CoreRef, EngineCore};

/// The backend the facade built, as it drives it (the core knows it only
/// as a [`Backend`]).
enum Driven {
    /// The application's loop carries the registrations.
    Hooks,
    /// The application's `poll()` loop, through `beforepoll`/`afterpoll`.
    Poll(StdArc<PollBackend>),
    /// The engine's own loop, through `run_once`/`run`.
    Builtin(StdArc<dyn BuiltinLoop>),
}

/// Builds an [`Engine`].
///
/// ```
/// use evnexus::{BackendKind, Engine};
/// let engine = Engine::builder().backend(BackendKind::Epoll).max_registrations(1024).build()?;
/// assert_eq!(engine.backend(), BackendKind::Epoll);
/// # Ok::<(), evnexus::Error>(())
/// ```
#[must_use]
pub struct Builder {
    hooks: Option<Hooks<'static>>,
    kind: Option<BackendKind>,
    ring_entries: u32,
    inject_uring_error: Option<i32>,
    inject_pwait2_error: Option<i32>,
    no_epoll_wait_op: bool,
    recheck: bool,
    limit: usize,
    first_generation: Generation,
}

impl Builder {
    /// Carry registrations in the application's own loop (see
    /// [`OsEventHooks`]); sets the backend to [`BackendKind::Hooks`].
    pub fn hooks<H: OsEventHooks>(mut self, hooks: H) -> Builder {
        self.hooks = Some(Hooks::Plain(StdArc::new(HooksBackend(hooks))));
        self.kind = Some(BackendKind::Hooks);
        self
    }

    /// Carry registrations in the application's own loop, with hooks that
    /// know their engine: `make` is called once, by [`Builder::build`],
    /// with an [`EngineHandle`] of the engine being built, and returns the
    /// hooks; sets the backend to [`BackendKind::Hooks`]. The hooks, and
    /// the application's threads they share the handle with, report events
    /// through it. [`Engine::with_hooks_fn`] does the same with the
    /// default options, and calls `make` before it returns.
    ///
    /// ```
    /// # use evnexus::{Interest, OsEventHooks, Token};
    /// # use std::{io, os::fd::RawFd, time::Instant};
    /// /// The application's hooks: they keep the handle.
    /// struct MyHooks(EngineHandle);
    /// # impl OsEventHooks for MyHooks {
    /// #     type FdReg = ();
    /// #     type TimeoutReg = ();
    /// #     fn fd_register(&self, _: RawFd, _: Interest, _: Token) -> io::Result<()> { Ok(()) }
    /// #     fn fd_modify(&self, _: RawFd, _: &mut (), _: Interest) -> io::Result<()> { Ok(()) }
    /// #     fn fd_deregister(&self, _: RawFd, _: ()) {}
    /// #     fn timeout_register(&self, _: Instant, _: Token) -> io::Result<()> { Ok(()) }
    /// #     fn timeout_modify(&self, _: &mut (), _: Instant) -> io::Result<()> { Ok(()) }
    /// #     fn timeout_deregister(&self, _: ()) {}
    /// # }
    /// use evnexus::{BackendKind, Engine, EngineHandle};
    /// let engine = Engine::builder()
    ///     .max_registrations(1000)
    ///     .recheck_fds(true)
    ///     .hooks_with(|handle: EngineHandle| MyHooks(handle))
    ///     .build()?;
    /// assert_eq!(engine.backend(), BackendKind::Hooks);
    /// # Ok::<(), evnexus::Error>(())
    /// ```
    pub fn hooks_with<H, F>(mut self, make: F) -> Builder
    where
        H: OsEventHooks,
        F: FnOnce(EngineHandle) -> H + Send + 'static,
    {
        self.hooks = Some(Hooks::with_handle(make));
        self.kind = Some(BackendKind::Hooks);
        self
    }

    /// Chooses the backend. Without this call the engine runs its own loop
    /// on io_uring, or on epoll when the kernel refuses io_uring (ENOSYS,
    /// EPERM from seccomp or `kernel.io_uring_disabled`, EACCES, a kernel
    /// without `IORING_FEAT_NODROP`) or cannot set one up (ENOMEM: the
    /// locked-memory limit of containers and older kernels; EMFILE/ENFILE:
    /// no descriptor left for the ring, though epoll's own fit); asked for
    /// explicitly, [`BackendKind::Uring`] fails instead of falling back.
    /// [`BackendKind::Hooks`] needs [`Builder::hooks`].
    pub fn backend(mut self, kind: BackendKind) -> Builder {
        self.kind = Some(kind);
        self
    }

    /// Submission-queue entries of the io_uring (default 256; the
    /// completion queue has twice as many). A small ring works, only with
    /// more system calls: a full queue is submitted and retried, an
    /// overflowing completion queue is kept by the kernel.
    pub fn ring_entries(mut self, entries: u32) -> Builder {
        self.ring_entries = entries;
        self
    }

    /// Testing aid: io_uring setup fails with this errno, as on a kernel
    /// that refuses io_uring.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn inject_uring_setup_error(mut self, errno: i32) -> Builder {
        self.inject_uring_error = Some(errno);
        self
    }

    /// Testing aid: `epoll_pwait2` fails with this errno in the epoll loop
    /// (asked for, or fallen back to), as on a kernel without it (ENOSYS)
    /// or under a seccomp profile that refuses it (EPERM).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn inject_epoll_pwait2_error(mut self, errno: i32) -> Builder {
        self.inject_pwait2_error = Some(errno);
        self
    }

    /// Testing aid: the io_uring loop behaves as on a kernel without the
    /// `EPOLL_WAIT` operation (before 6.15).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn without_uring_epoll_wait(mut self) -> Builder {
        self.no_epoll_wait_op = true;
        self
    }

    /// Re-check every fd event with `poll(fd, 0)` before running the
    /// callback, and skip the run when the condition no longer holds (libxl
    /// does this on every event). Off by default: stale tokens are rejected
    /// without it; it only helps an application loop that may report
    /// conditions which have since gone away. Costs one system call per
    /// event.
    pub fn recheck_fds(mut self, on: bool) -> Builder {
        self.recheck = on;
        self
    }

    /// The most registrations the engine holds at once (at most
    /// [`MAX_SLOTS`], the default). Slots retired at the maximum
    /// generation count against it.
    pub fn max_registrations(mut self, limit: usize) -> Builder {
        self.limit = limit.clamp(1, MAX_SLOTS);
        self
    }

    /// Testing aid: fresh slots start at generation `first` instead of 1,
    /// so that a test can reach [`Generation::MAX`] and see the slot
    /// retired. Not for production use.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn first_generation(mut self, first: Generation) -> Builder {
        self.first_generation = first;
        self
    }

    /// Builds the engine. Fails if the chosen backend cannot be set up (an
    /// epoll or eventfd descriptor cannot be created, io_uring was asked
    /// for explicitly and refused, hooks were asked for without hooks).
    pub fn build(mut self) -> Result<Engine> {
        let hooks = self.hooks.take();
        self.build_with(hooks)
    }

    /// [`Builder::build`] with `hooks` in place of the builder's own.
    fn build_with(self, hooks: Option<Hooks<'_>>) -> Result<Engine> {
        let clock = Clock::new();
        let builtin = |b: StdArc<dyn BuiltinLoop>, c: StdArc<dyn Backend>| (c, Driven::Builtin(b));
        let uring = |strict: bool| -> Result<(StdArc<dyn Backend>, Driven)> {
            // The epoll set and the wake-up eventfd first: where epoll alone
            // fits, a ring refused for want of a descriptor falls back.
            let base = LoopBase::new()?;
            match UringWaiter::new(self.ring_entries, self.inject_uring_error) {
                Ok(w) => {
                    let w = if self.no_epoll_wait_op {
                        w.without_epoll_wait_op()
                    } else {
                        w
                    };
                    let b = StdArc::new(Builtin::new(base, w, clock));
                    Ok(builtin(b.clone(), b))
                }
                Err(e) if !strict && refuses_io_uring(&e) => {
                    let waiter = EpollWaiter::new(self.inject_pwait2_error);
                    let b = StdArc::new(Builtin::new(base, waiter, clock));
                    Ok(builtin(b.clone(), b))
                }
                Err(e) => Err(Error::Backend(e)),
            }
        };
        let options = Options {
            recheck: self.recheck,
            limit: self.limit,
            first_generation: self.first_generation,
        };
        let (backend, driven): (StdArc<dyn Backend>, Driven) = match (self.kind, hooks) {
            (Some(BackendKind::Hooks), Some(Hooks::Plain(hooks))) => (hooks, Driven::Hooks),
            (Some(BackendKind::Hooks), Some(Hooks::WithHandle(make))) => {
                return Ok(Shadow::build(|handle| {
                    EngineCore::new_arc(Core::new(make(handle), clock, options))
                }));
            }
            (Some(BackendKind::Hooks), None) => {
                return Err(Error::Unsupported(Unsupported::HooksMissing))
            }
            (None, _) => uring(false)?,
            (Some(BackendKind::Uring), _) => uring(true)?,
            (Some(BackendKind::Epoll), _) => {
                let waiter = EpollWaiter::new(self.inject_pwait2_error);
                let b = StdArc::new(Builtin::new(LoopBase::new()?, waiter, clock));
                builtin(b.clone(), b)
            }
            (Some(BackendKind::Poll), _) => {
                let p = StdArc::new(PollBackend::new()?);
                (p.clone(), Driven::Poll(p))
            }
        };
        Ok(Engine {
            core: EngineCore::new_arc(Core::new(backend, clock, options)),
            driven,
            life: Life::Owner,
        })
    }
}

/// The hooks a [`Builder`] was given.
enum Hooks<'a> {
    /// Built already ([`Builder::hooks`]).
    Plain(StdArc<dyn Backend>),
    /// Built by the engine, with a handle of it ([`Builder::hooks_with`]).
    WithHandle(Box<dyn FnOnce(EngineHandle) -> StdArc<dyn Backend> + Send + 'a>),
}

impl<'a> Hooks<'a> {
    fn with_handle<H, F>(make: F) -> Hooks<'a>
    where
        H: OsEventHooks,
        F: FnOnce(EngineHandle) -> H + Send + 'a,
    {
        Hooks::WithHandle(Box::new(move |handle| {
            StdArc::new(HooksBackend(make(handle))) as StdArc<dyn Backend>
        }))
    }
}

/// Who ends an engine's registrations, and when.
enum Life {
    /// The engine the application built: dropping it ends them.
    Owner,
    /// The engine the application built, whose hooks hold an
    /// [`EngineHandle`]: the [`Shadow`] ends them when the last of this
    /// engine and the handles' reports in progress lets go of it.
    Shared(StdArc<Shadow>),
    /// The shadow engine that an [`EngineHandle`] lends: dropping it ends
    /// nothing.
    Shadow,
}

/// The event engine: `Send + Sync`, every method takes `&self`.
///
/// Dropping the engine ends every registration still live (telling the
/// backend, dropping the callbacks); handles that outlive it find their
/// registrations gone. (With hooks that hold an [`EngineHandle`], a
/// report through the handle in progress on another thread at that
/// moment defers this until it returns.)
pub struct Engine {
    core: Arc<EngineCore>,
    driven: Driven,
    life: Life,
}

impl Engine {
    /// An engine with its own loop, on io_uring, or on epoll where the
    /// kernel refuses io_uring ([`Engine::backend`] says which). Drive it
    /// with [`Engine::run_once`] or [`Engine::run`].
    pub fn new() -> Result<Engine> {
        Engine::builder().build()
    }

    /// A builder, to choose the backend and options.
    pub fn builder() -> Builder {
        Builder {
            hooks: None,
            kind: None,
            ring_entries: 256,
            inject_uring_error: None,
            inject_pwait2_error: None,
            no_epoll_wait_op: false,
            recheck: false,
            limit: MAX_SLOTS,
            first_generation: Generation::FIRST,
        }
    }

    /// An engine whose registrations the application's own loop carries.
    pub fn with_hooks<H: OsEventHooks>(hooks: H) -> Engine {
        Engine::builder()
            .hooks(hooks)
            .build()
            .expect("building a hooks engine performs no fallible step")
    }

    /// An engine whose registrations the application's own loop carries,
    /// with hooks that know their engine: `make` is called once, before
    /// this returns, with an [`EngineHandle`] of the new engine, and
    /// returns the hooks. The handle reports events from the application's
    /// threads without a reference to the engine and without keeping it
    /// alive (see [`EngineHandle`]). [`Builder::hooks_with`] does the same
    /// with other options.
    ///
    /// ```
    /// use evnexus::{Engine, EngineHandle, Interest, Occurred, OsEventHooks, Readiness, Token};
    /// use std::io;
    /// use std::os::fd::{AsRawFd, RawFd};
    /// use std::sync::mpsc;
    /// use std::time::Instant;
    ///
    /// /// Hooks that hand each fd registration to the application's loop
    /// /// thread, which reports through the handle.
    /// struct Hooks {
    ///     handle: EngineHandle,
    ///     to_loop: mpsc::Sender<(EngineHandle, Token, RawFd)>,
    /// }
    ///
    /// impl OsEventHooks for Hooks {
    ///     type FdReg = ();
    ///     type TimeoutReg = ();
    ///     fn fd_register(&self, fd: RawFd, _: Interest, token: Token) -> io::Result<()> {
    ///         let _ = self.to_loop.send((self.handle.clone(), token, fd));
    ///         Ok(())
    ///     }
    ///     fn fd_modify(&self, _: RawFd, _: &mut (), _: Interest) -> io::Result<()> { Ok(()) }
    ///     fn fd_deregister(&self, _: RawFd, _: ()) {}
    ///     fn timeout_register(&self, _: Instant, _: Token) -> io::Result<()> { Ok(()) }
    ///     fn timeout_modify(&self, _: &mut (), _: Instant) -> io::Result<()> { Ok(()) }
    ///     fn timeout_deregister(&self, _: ()) {}
    /// }
    ///
    /// let (to_loop, from_hooks) = mpsc::channel();
    /// let engine = Engine::with_hooks_fn(|handle| Hooks { handle, to_loop });
    /// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let _watch = engine.register_fd(a.as_raw_fd(), Interest::WRITABLE, |ev| {
    ///     println!("{} is writable", ev.fd());
    /// })?;
    /// // The application's loop thread: no `&Engine` in sight.
    /// let reporter = std::thread::spawn(move || {
    ///     let (handle, token, fd) = from_hooks.recv().unwrap();
    ///     handle.occurred_fd(token, fd, Readiness::WRITABLE)
    /// });
    /// assert_eq!(reporter.join().unwrap()?, Occurred::Dispatched);
    /// # Ok::<(), evnexus::Error>(())
    /// ```
    pub fn with_hooks_fn<H, F>(make: F) -> Engine
    where
        H: OsEventHooks,
        F: FnOnce(EngineHandle) -> H + Send,
    {
        Engine::builder()
            .backend(BackendKind::Hooks)
            .build_with(Some(Hooks::with_handle(make)))
            .expect("building a hooks engine performs no fallible step")
    }

    pub(crate) fn core(&self) -> &Arc<EngineCore> {
        &self.core
    }

    /// Chooses the backend. Without this call the engine runs its own loop
    /// on io_uring, or on epoll when the kernel refuses io_uring (ENOSYS,
    /// EPERM from seccomp or `kernel.io_uring_disabled`, EACCES, a kernel
    /// without `IORING_FEAT_NODROP`) or cannot set one up (ENOMEM: the
    /// locked-memory limit of containers and older kernels; EMFILE/ENFILE:
    /// no descriptor left for the ring, though epoll's own fit); asked for
    /// explicitly, [`BackendKind::Uring`] fails instead of falling back.
    /// [`BackendKind::Hooks`] needs [`Builder::hooks`].
    pub fn backend(&self) -> BackendKind {
        self.core.backend.kind()
    }

    /// Counts of what the engine has done.
    pub fn stats(&self) -> Stats {
        let mut s = self.core.stats.snapshot();
        let c = self.core.backend.counters();
        s.ring_sq_full = c.ring_sq_full;
        s.ring_cq_overflow = c.ring_cq_overflow;
        s.orphans_removed = c.orphans_removed;
        s.orphans_left = c.orphans_left;
        s
    }

    /// Bytes one registration occupies in the arena (its slot), not
    /// counting the boxed callback and whatever the callback captures.
    pub fn slot_bytes() -> usize {
        Core::<Callback>::slot_bytes()
    }

    /// Watches `fd` for `interest`; `callback` runs for each event, on the
    /// thread that delivers it, never concurrently with itself.
    ///
    /// The engine does not own `fd`: keep it open until the watch has been
    /// deregistered (libxl has the same rule). What happens if you do not:
    /// on the built-in loops the kernel drops its epoll entry when the last
    /// descriptor of the file closes, and the watch falls silent; its fd
    /// number may be reused by a new watch at once, and nothing the old
    /// watch does afterwards (modify, deregister) touches the new watch's
    /// entry (the old watch's deregistration returns
    /// [`Error::ClosedWhileRegistered`] through [`Engine::deregister`]). If
    /// another descriptor (a `dup`, a child's copy) keeps the file open,
    /// the entry outlives the watch; the loop detects such an orphan when
    /// it keeps reporting, and removes it if this process holds another
    /// descriptor of the file ([`Stats::orphans_removed`]); one kept open
    /// only by another process stays until that process closes it
    /// ([`Stats::orphans_left`]).
    ///
    /// Errors: [`Error::BadFd`] for a negative or closed fd,
    /// [`Error::Full`], or [`Error::Backend`] when the backend refuses (no
    /// registration is left behind; two live watches of one file at one
    /// fd number are refused by epoll with EEXIST).
    ///
    /// The registration can be dispatched as soon as the backend has been
    /// told, before this returns; if the callback ends it right away (it
    /// deregisters itself or panics), the returned handle is already ended
    /// ([`FdWatch::is_live`] is `false`). The same holds for timers.
    pub fn register_fd<F>(&self, fd: RawFd, interest: Interest, callback: F) -> Result<FdWatch>
    where
        F: FnMut(&FdEvent<'_>) + Send + 'static,
    {
        check_fd(fd)?;
        if !matches!(self.driven, Driven::Builtin(_)) {
            if interest.is_edge() {
                return Err(Error::Unsupported(Unsupported::EdgeNeedsBuiltinLoop));
            }
            if interest.keeps_ready() {
                return Err(Error::Unsupported(Unsupported::KeepReadyNeedsBuiltinLoop));
            }
        }
        let token = self
            .core
            .register_fd(fd, interest, Callback::fd(callback))?;
        Ok(FdWatch {
            core: CoreRef::new(&self.core),
            token,
        })
    }

    /// A one-shot timer at `deadline`; `callback` runs once, at or after it,
    /// unless the timer is cancelled first. Callable from any thread, also
    /// while the loop runs.
    ///
    /// Any `Instant` is accepted: one in the past makes the timer due at
    /// once; one more than 584 years after the engine was built means
    /// "never" (the timer stays pending until cancelled).
    pub fn timer_at<F>(&self, deadline: Instant, callback: F) -> Result<Timer>
    where
        F: FnOnce(&TimerEvent<'_>) + Send + 'static,
    {
        let token = self
            .core
            .register_timer(deadline, Callback::timer(callback))?;
        Ok(Timer {
            core: CoreRef::new(&self.core),
            token,
        })
    }

    /// A one-shot timer `delay` from now. Any `Duration` is accepted; a
    /// delay beyond 584 years (`Duration::MAX` included) means "never".
    pub fn timer_after<F>(&self, delay: Duration, callback: F) -> Result<Timer>
    where
        F: FnOnce(&TimerEvent<'_>) + Send + 'static,
    {
        self.timer_at(self.core.clock.after(delay), callback)
    }

    /// Reports that `fd`, watched under `token`, has `revents`: libxl's
    /// `libxl_osevent_occurred_fd`. Callable from any thread, at any delay,
    /// with any `u64`: a token that names no live fd watch, or names one on
    /// another fd, is rejected as [`Occurred::Stale`] by one load (or one
    /// CAS) of its slot's state word, with no lock and no system call.
    ///
    /// Errors only with [`Error::CallbackPanicked`].
    #[inline(always)] // a stale report stays in the caller's loop (see `Core::occurred_fd`)
    pub fn occurred_fd(&self, token: Token, fd: RawFd, revents: Readiness) -> Result<Occurred> {
        self.core
            .occurred_fd(token, fd, revents, |cb, token, fd, readiness| {
                self.run_fd(cb, token, fd, readiness)
            })
    }

    /// Reports that the timeout registered under `token` has occurred:
    /// libxl's `libxl_osevent_occurred_timeout`. The callback runs at most
    /// once per registration, however often or concurrently this is called.
    ///
    /// Errors only with [`Error::CallbackPanicked`].
    #[inline(always)] // a stale report stays in the caller's loop (see `Core::occurred_fd`)
    pub fn occurred_timeout(&self, token: Token) -> Result<Occurred> {
        self.core.occurred_timeout(token, |cb, token, deadline| {
            self.run_timer(cb, token, deadline)
        })
    }

    /// Runs an fd watch's callback with its event; `false` when the
    /// callback said the fd is drained ([`FdEvent::clear_ready`]).
    #[inline]
    fn run_fd(&self, cb: &mut Callback, token: Token, fd: RawFd, readiness: Readiness) -> bool {
        let ev = FdEvent {
            engine: self,
            token,
            fd,
            readiness,
            cleared: std::sync::atomic::AtomicBool::new(false),
        };
        cb.call_fd(&ev);
        // Relaxed: set on this thread, by the callback just returned.
        !ev.cleared.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs a timer's callback with its event.
    #[inline]
    fn run_timer(&self, cb: Callback, token: Token, deadline: u64) {
        cb.call_timer(&TimerEvent {
            engine: self,
            token,
            deadline,
        });
    }

    fn builtin(&self) -> Result<&dyn BuiltinLoop> {
        match &self.driven {
            Driven::Builtin(b) => Ok(&**b),
            _ => Err(Error::Unsupported(Unsupported::NoBuiltinLoop)),
        }
    }

    pub(crate) fn poll_backend(&self) -> Result<&PollBackend> {
        match &self.driven {
            Driven::Poll(p) => Ok(p),
            _ => Err(Error::Unsupported(Unsupported::NotPollLoop)),
        }
    }

    /// The built-in loop, if this engine has one (for nesting).
    pub(crate) fn builtin_loop(&self) -> Option<&dyn BuiltinLoop> {
        self.builtin().ok()
    }

    /// Waits until something is ready, a timer is due, the engine is woken
    /// (see [`Waker`]) or `timeout` passes (`None`: no limit), then
    /// dispatches everything ready and due; returns how many callbacks ran.
    ///
    /// One thread at a time drives the loop: a second caller, or a callback
    /// of this loop, gets [`Error::Unsupported`]. Registrations, changes
    /// and reports from any other thread take effect while it waits. A
    /// panicking callback does not stop the batch; the first panic is
    /// returned as [`Error::CallbackPanicked`] after it.
    pub fn run_once(&self, timeout: Option<Duration>) -> Result<usize> {
        self.builtin()?.run_once(self, timeout)
    }

    /// Runs the loop until [`Engine::stop`] or [`Waker::stop`]. Returns the
    /// first error of a `run_once`.
    pub fn run(&self) -> Result<()> {
        self.builtin()?.run(self)
    }

    /// Makes [`Engine::run`] return after the batch it is dispatching (from
    /// a callback, or any thread).
    pub fn stop(&self) {
        if let Driven::Builtin(b) = &self.driven {
            b.signals().stop();
        }
    }

    /// A handle that wakes (or stops) the loop from any thread, without
    /// keeping the engine alive. On an engine without a built-in loop it
    /// does nothing.
    pub fn waker(&self) -> Waker {
        Waker {
            signals: self.builtin_loop().map(|b| b.signals()),
        }
    }
}

/// The built-in loop dispatches through the facade, which builds the
/// callbacks' events.
impl Dispatch for Engine {
    fn dispatch_ready(&self, token: Token, revents: u16, kept: &mut bool) -> Result<Occurred> {
        self.core
            .dispatch_ready(token, revents, kept, |cb, token, fd, readiness| {
                self.run_fd(cb, token, fd, readiness)
            })
    }

    fn redispatch(&self, token: Token, revents: u16, kept: &mut bool) -> Option<Result<Occurred>> {
        self.core
            .redispatch(token, revents, kept, |cb, token, fd, readiness| {
                self.run_fd(cb, token, fd, readiness)
            })
    }

    fn fire_due(&self, tokens: &[Token], now: u64, tally: &mut Tally) {
        self.core
            .fire_due(tokens.iter().copied(), now, tally, |cb, token, deadline| {
                self.run_timer(cb, token, deadline)
            })
    }

    fn timer_deadline(&self, token: Token) -> Option<u64> {
        self.core.timer_deadline(token)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.life, Life::Shadow) {
            // End every registration still live: the backend is told, the
            // callbacks (and anything they hold, handles included) are
            // dropped. No callback can be running: running one needs
            // `&Engine`, this one or a shadow's.
            // Then no handle can be made: the handles' count closes.
            Life::Owner => {
                self.core.end_all();
                EngineCore::close(&self.core);
            }
            // The shadow does it when the last of us lets go of it: here,
            // or when a report through a handle in progress returns.
            Life::Shared(shadow) => drop(shadow),
            Life::Shadow => {}
        }
    }
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("backend", &self.backend())
            .field("recheck_fds", &self.core.recheck)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Setup errors after which the default backend falls back to epoll: the
/// kernel refuses io_uring (ENOSYS, EPERM, EACCES, EINVAL, EOPNOTSUPP), or
/// cannot give this process a ring (ENOMEM: locked memory; EMFILE/ENFILE:
/// descriptors).
fn refuses_io_uring(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENOSYS
                | libc::EPERM
                | libc::EACCES
                | libc::EINVAL
                | libc::EOPNOTSUPP
                | libc::ENOMEM
                | libc::EMFILE
                | libc::ENFILE
        )
    )
}

/// Wakes an engine's built-in loop from any thread: a `run_once` that
/// waits returns (a `run_once` that is not waiting returns at once next
/// time). It does not keep the engine alive; once the engine is gone, it
/// does nothing.
#[derive(Clone)]
pub struct Waker {
    signals: Option<StdArc<Signals>>,
}

impl Waker {
    /// Interrupts the loop's wait.
    pub fn wake(&self) {
        if let Some(s) = &self.signals {
            s.wake();
        }
    }

    /// Makes [`Engine::run`] return.
    pub fn stop(&self) {
        if let Some(s) = &self.signals {
            s.stop();
        }
    }
}

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Waker")
    }
}

/// Negative fds are refused outright; others must be open (one `fcntl`).
fn check_fd(fd: RawFd) -> Result<()> {
    if fd < 0 {
        return Err(Error::BadFd(fd));
    }
    // SAFETY: F_GETFD only reads the descriptor flags of `fd`; any int is a
    // valid argument and an unopened one yields EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(Error::BadFd(fd));
    }
    Ok(())
}
