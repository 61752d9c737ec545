//! [`Engine`]: registration, modification, deregistration, and the one
//! dispatch path that every event takes, whichever backend reported it.

use crate::arena::Arena;
use crate::backend::builtin::{Builtin, BuiltinLoop, LoopBase};
use crate::backend::epoll::EpollWaiter;
use crate::backend::poll::PollBackend;
use crate::backend::uring::UringWaiter;
use crate::backend::{Backend, BackendKind, Removal};
use crate::error::{CallbackPanic, Error, Result, Unsupported};
use crate::fd::{pack_param, param_fd, param_interest, FdEvent, FdWatch, Interest, Readiness};
use crate::hooks::{HooksBackend, OsEventHooks};
use crate::slot::{Begin, Callback, Due, EndCtrl, Finish, Kill, Slot, StaleReason, State};
use crate::stats::{StatCounters, Stats};
use crate::sync::{Arc, Condvar, Mutex};
use crate::timer::{Clock, Timer, TimerEvent};
use crate::token::{Generation, Token, MAX_SLOTS};
use std::fmt;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// What became of one reported event.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[must_use]
pub enum Occurred {
    /// The callback ran on this thread: once for this event, and again for
    /// every batch of events that arrived while it ran.
    Dispatched,
    /// The callback was running on another thread; this event was folded
    /// into a rerun there. Nothing is lost.
    Deferred,
    /// The fd re-check option found nothing ready: the callback did not run.
    Suppressed,
    /// Rejected: the token names no live registration of this kind (see
    /// [`StaleReason`]). Nothing was run, nothing was touched.
    Stale(StaleReason),
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
    hooks: Option<Box<dyn Backend>>,
    kind: Option<BackendKind>,
    ring_entries: u32,
    inject_uring_error: Option<i32>,
    no_epoll_wait_op: bool,
    recheck: bool,
    limit: usize,
    first_generation: Generation,
}

impl Builder {
    /// Carry registrations in the application's own loop (see
    /// [`OsEventHooks`]); sets the backend to [`BackendKind::Hooks`].
    pub fn hooks<H: OsEventHooks>(mut self, hooks: H) -> Builder {
        self.hooks = Some(Box::new(HooksBackend(hooks)));
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
    pub fn build(self) -> Result<Engine> {
        let clock = Clock::new();
        let uring = |strict: bool| -> Result<Box<dyn Backend>> {
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
                    Ok(Box::new(Builtin::new(base, w, clock)))
                }
                Err(e) if !strict && refuses_io_uring(&e) => {
                    Ok(Box::new(Builtin::new(base, EpollWaiter::new(), clock)))
                }
                Err(e) => Err(Error::Backend(e)),
            }
        };
        let backend: Box<dyn Backend> = match (self.kind, self.hooks) {
            (Some(BackendKind::Hooks), Some(hooks)) => hooks,
            (Some(BackendKind::Hooks), None) => {
                return Err(Error::Unsupported(Unsupported::HooksMissing))
            }
            (None, _) => uring(false)?,
            (Some(BackendKind::Uring), _) => uring(true)?,
            (Some(BackendKind::Epoll), _) => {
                Box::new(Builtin::new(LoopBase::new()?, EpollWaiter::new(), clock))
            }
            (Some(BackendKind::Poll), _) => Box::new(PollBackend::new()?),
        };
        Ok(Engine {
            inner: Arc::new(Inner {
                arena: Arena::new(self.limit, self.first_generation),
                backend,
                stats: StatCounters::default(),
                clock,
                recheck: self.recheck,
                limit: self.limit,
                id: crate::sync::next_engine_id(),
                waiters: Mutex::new(()),
                waiters_cv: Condvar::new(),
            }),
        })
    }
}

/// The event engine: `Send + Sync`, every method takes `&self`.
///
/// Dropping the engine ends every registration still live (telling the
/// backend, dropping the callbacks); handles that outlive it find their
/// registrations gone.
pub struct Engine {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    arena: Arena,
    pub(crate) backend: Box<dyn Backend>,
    pub(crate) stats: StatCounters,
    pub(crate) clock: Clock,
    recheck: bool,
    limit: usize,
    /// Distinct for every engine of the process (never reused, unlike an
    /// address), so a poll set can tell which engine filled it.
    pub(crate) id: u64,
    /// Where a deregistering thread sleeps while a callback it must wait for
    /// is still running. Taken only by such a thread and by the tearer of a
    /// slot marked `WAITER`: never on an event path without a waiter.
    waiters: Mutex<()>,
    waiters_cv: Condvar,
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

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Which backend carries the registrations.
    pub fn backend(&self) -> BackendKind {
        self.inner.backend.kind()
    }

    /// Counts of what the engine has done.
    pub fn stats(&self) -> Stats {
        let mut s = self.inner.stats.snapshot();
        let c = self.inner.backend.counters();
        s.ring_sq_full = c.ring_sq_full;
        s.ring_cq_overflow = c.ring_cq_overflow;
        s.orphans_removed = c.orphans_removed;
        s.orphans_left = c.orphans_left;
        s
    }

    /// Bytes one registration occupies in the arena (its slot), not
    /// counting the boxed callback and whatever the callback captures.
    pub fn slot_bytes() -> usize {
        Arena::slot_bytes()
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
        let inner = &self.inner;
        if interest.is_edge() && inner.backend.as_builtin().is_none() {
            return Err(Error::Unsupported(Unsupported::EdgeNeedsBuiltinLoop));
        }
        let (index, slot, g) = inner.alloc()?;
        slot.set_param(pack_param(fd, interest.bits()));
        // SAFETY: `alloc` handed us this free slot and we have not published
        // it yet.
        unsafe {
            slot.install(Callback::Fd(Box::new(callback)));
            slot.publish(g, false);
        }
        let token = Token::new(index, g);
        pause_point!(BeforeBackendCall);
        let result = inner.backend.fd_register(fd, interest, token);
        inner.complete_registration(slot, index, g, result, false)?;
        Ok(FdWatch {
            inner: Arc::clone(inner),
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
        let inner = &self.inner;
        let (index, slot, g) = inner.alloc()?;
        slot.set_param(inner.clock.offset(deadline));
        // SAFETY: as in `register_fd`.
        unsafe {
            slot.install(Callback::Timer(Box::new(callback)));
            slot.publish(g, true);
        }
        let token = Token::new(index, g);
        pause_point!(BeforeBackendCall);
        let result = inner.backend.timeout_register(deadline, token);
        inner.complete_registration(slot, index, g, result, true)?;
        Ok(Timer {
            inner: Arc::clone(inner),
            token,
        })
    }

    /// A one-shot timer `delay` from now. Any `Duration` is accepted; a
    /// delay beyond 584 years (`Duration::MAX` included) means "never".
    pub fn timer_after<F>(&self, delay: Duration, callback: F) -> Result<Timer>
    where
        F: FnOnce(&TimerEvent<'_>) + Send + 'static,
    {
        self.timer_at(self.inner.clock.after(delay), callback)
    }

    /// Reports that `fd`, watched under `token`, has `revents`: libxl's
    /// `libxl_osevent_occurred_fd`. Callable from any thread, at any delay,
    /// with any `u64`: a token that names no live fd watch, or names one on
    /// another fd, is rejected as [`Occurred::Stale`] by one load (or one
    /// CAS) of its slot's state word, with no lock and no system call.
    ///
    /// Errors only with [`Error::CallbackPanicked`].
    #[inline]
    pub fn occurred_fd(&self, token: Token, fd: RawFd, revents: Readiness) -> Result<Occurred> {
        let inner = &*self.inner;
        let Some((index, slot, g)) = inner.resolve(token) else {
            return Ok(inner.reject(StaleReason::OutOfRange));
        };
        // The common stale case in one load, before the dispatch machinery.
        if let Some(reason) = slot.quick_stale(g, false) {
            return Ok(inner.reject(reason));
        }
        self.occurred_fd_at(slot, index, g, token, Some(fd), revents)
    }

    /// Begins the dispatch of fd watch `g` in `slot` and runs it, defers it
    /// or rejects it. `fd: None`: the engine's own loop saw the event on the
    /// registered fd, no fd check.
    #[inline(never)]
    fn occurred_fd_at(
        &self,
        slot: &Slot,
        index: u32,
        g: Generation,
        token: Token,
        fd: Option<RawFd>,
        revents: Readiness,
    ) -> Result<Occurred> {
        let inner = &*self.inner;
        match slot.begin_fd(g, fd, revents.bits()) {
            Begin::Owned => {
                let fd = fd.unwrap_or_else(|| param_fd(slot.param()));
                inner.dispatch_fd(self, slot, index, g, token, fd, revents)
            }
            Begin::Deferred => {
                inner.stats.rerun();
                Ok(Occurred::Deferred)
            }
            Begin::Stale(reason) => Ok(inner.reject(reason)),
        }
    }

    /// Reports that the timeout registered under `token` has occurred:
    /// libxl's `libxl_osevent_occurred_timeout`. The callback runs at most
    /// once per registration, however often or concurrently this is called.
    ///
    /// Errors only with [`Error::CallbackPanicked`].
    #[inline]
    pub fn occurred_timeout(&self, token: Token) -> Result<Occurred> {
        let inner = &*self.inner;
        let Some((index, slot, g)) = inner.resolve(token) else {
            return Ok(inner.reject(StaleReason::OutOfRange));
        };
        if let Some(reason) = slot.quick_stale(g, true) {
            return Ok(inner.reject(reason));
        }
        match slot.begin_timer(g) {
            Ok(()) => inner.dispatch_timer(self, slot, index, g, token),
            Err(reason) => Ok(inner.reject(reason)),
        }
    }

    /// Ends the registration named by `token`, whatever its kind (fd
    /// watch, timer, child watch): the handle's `deregister`/`cancel` by
    /// token, for code that keeps tokens rather than handles (a C caller,
    /// an application loop). Safe with any `u64`: a token that names no
    /// live registration (ended already, stale, forged, out of range) is
    /// `Ok(false)` and touches nothing.
    ///
    /// - `Ok(true)`: this call ended the registration. Its callback will
    ///   not start again. From outside any evnexus callback, the call has
    ///   also waited for a run in progress on another thread to return,
    ///   the backend has been told (the hook called, the kernel entry
    ///   removed) and the callback dropped. From inside a callback or hook
    ///   it does not wait (see the crate docs, "Deregistration"); if another
    ///   thread is modifying the registration at that moment, that thread
    ///   tells the backend when its modify's backend call returns (and the
    ///   modify returns [`Error::Gone`]).
    /// - `Err(`[`Error::ClosedWhileRegistered`]`)`: this call ended the
    ///   registration as above, but its fd had been closed while still
    ///   registered, so its kernel entry could not be removed: it was gone
    ///   already, or it belongs to a newer watch of the same fd number
    ///   (and was left alone), or another descriptor keeps it (see
    ///   [`Engine::register_fd`]). Counted in
    ///   [`Stats::closed_while_registered`].
    ///
    /// ```
    /// use evnexus::{Engine, Token};
    /// use std::time::Duration;
    /// # fn main() -> evnexus::Result<()> {
    /// let engine = Engine::new()?;
    /// let token = engine.timer_after(Duration::from_secs(60), |_| {})?.token();
    /// // (Dropping the handle above cancelled that timer already.)
    /// assert_eq!(engine.deregister(token)?, false);
    /// let timer = engine.timer_after(Duration::from_secs(60), |_| {})?;
    /// assert_eq!(engine.deregister(timer.token())?, true);
    /// assert!(!timer.is_pending());
    /// assert_eq!(engine.deregister(Token::from_u64(u64::MAX))?, false);
    /// # Ok(()) }
    /// ```
    pub fn deregister(&self, token: Token) -> Result<bool> {
        self.inner.deregister(token)
    }

    fn builtin(&self) -> Result<&dyn BuiltinLoop> {
        self.inner
            .backend
            .as_builtin()
            .ok_or(Error::Unsupported(Unsupported::NoBuiltinLoop))
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
        if let Some(b) = self.inner.backend.as_builtin() {
            b.signals().stop();
        }
    }

    /// A handle that wakes (or stops) the loop from any thread, without
    /// keeping the engine alive. On an engine without a built-in loop it
    /// does nothing.
    pub fn waker(&self) -> Waker {
        Waker {
            signals: self.inner.backend.as_builtin().map(|b| b.signals()),
        }
    }

    /// Dispatches readiness that the engine's own loop observed for `token`
    /// (the fd is the registered one: no fd check).
    pub(crate) fn dispatch_ready(&self, token: Token, revents: u16) -> Result<Occurred> {
        let inner = &*self.inner;
        let Some((index, slot, g)) = inner.resolve(token) else {
            return Ok(inner.reject(StaleReason::OutOfRange));
        };
        let readiness = Readiness::from_bits(revents);
        self.occurred_fd_at(slot, index, g, token, None, readiness)
    }

    /// The engine's own loop fires `token` if it is due at `now` (an offset
    /// on the engine's clock); `None` when it is not due or is being
    /// modified (the loop will look again).
    pub(crate) fn fire_if_due(&self, token: Token, now: u64) -> Option<Result<Occurred>> {
        let inner = &*self.inner;
        let (index, slot, g) = inner.resolve(token)?;
        match slot.begin_timer_if_due(g, now) {
            Due::Owned => Some(inner.dispatch_timer(self, slot, index, g, token)),
            Due::NotYet => None,
            Due::Stale(_) => None,
            Due::Cancelled { teardown } => {
                if teardown {
                    inner.tear_down(slot, index, g);
                }
                None
            }
        }
    }

    /// Visits the live, not ended registrations: `(token, state, param)`.
    pub(crate) fn scan(&self, mut visit: impl FnMut(Token, State, u64)) {
        let arena = &self.inner.arena;
        for index in 0..arena.claimed() {
            if let Some((s, param)) = arena.get(index).and_then(Slot::live_param) {
                visit(Token::new(index, s.generation()), s, param);
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // End every registration still live: the backend is told, the
        // callbacks (and anything they hold, handles included) are dropped.
        // No callback can be running: running one needs `&Engine`.
        let arena = &self.inner.arena;
        for index in 0..arena.claimed() {
            if let Some(slot) = arena.get(index) {
                let s = slot.load();
                if s.is_live() {
                    // An fd closed while registered has nobody to tell.
                    let _ = self.inner.deregister(Token::new(index, s.generation()));
                }
            }
        }
    }
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("backend", &self.backend())
            .field("recheck_fds", &self.inner.recheck)
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
    signals: Option<crate::sync::StdArc<crate::backend::builtin::Signals>>,
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

impl Inner {
    fn alloc(&self) -> Result<(u32, &Slot, Generation)> {
        let (index, slot) = self
            .arena
            .alloc()
            .map_err(|_| Error::Full { limit: self.limit })?;
        self.stats.registered();
        Ok((index, slot, slot.load().generation()))
    }

    /// Index, slot and generation of a token, if it could name anything.
    #[inline]
    fn resolve(&self, token: Token) -> Option<(u32, &Slot, Generation)> {
        let g = token.generation()?;
        let index = token.index();
        Some((index, self.arena.get(index)?, g))
    }

    /// Counts a rejected report.
    #[inline]
    fn reject(&self, reason: StaleReason) -> Occurred {
        self.stats.stale(reason);
        Occurred::Stale(reason)
    }

    pub(crate) fn is_live(&self, token: Token) -> bool {
        self.live_param(token).is_some()
    }

    /// State and param of the live, not ended registration `token`.
    fn live_param(&self, token: Token) -> Option<(State, u64)> {
        let (_, slot, g) = self.resolve(token)?;
        slot.live_param().filter(|(s, _)| s.generation() == g)
    }

    /// Deadline of the pending timer `token`.
    pub(crate) fn timer_deadline(&self, token: Token) -> Option<u64> {
        let (s, param) = self.live_param(token)?;
        s.is_timer().then_some(param)
    }

    /// Second half of a registration: the registrant holds `CTRL` and has
    /// called the backend. A timer is handed to the backend's loop after
    /// `CTRL` is released ([`Backend::timer_armed`]).
    fn complete_registration(
        &self,
        slot: &Slot,
        index: u32,
        g: Generation,
        result: Result<crate::slot::BackendReg>,
        timer: bool,
    ) -> Result<()> {
        pause_point!(AfterBackendCall);
        match result {
            Ok(reg) => {
                // SAFETY: we hold CTRL (taken by `publish`).
                unsafe { slot.with_backend_reg(|cell| *cell = Some(reg)) };
                // Read under CTRL: nobody else may change it yet.
                let deadline = slot.param();
                let (outcome, _) = self.end_ctrl(slot, index, g);
                if timer && outcome == EndCtrl::Live {
                    self.backend.timer_armed(Token::new(index, g), deadline);
                }
                self.backend.changed();
                Ok(())
            }
            Err(e) => {
                // We hold CTRL, so this only sets DEAD (or finds it set by a
                // callback that already ended the registration).
                let _ = slot.kill(g);
                self.end_ctrl(slot, index, g);
                self.wait_gone_unless_nested(slot, g);
                Err(e)
            }
        }
    }

    /// Releases `CTRL`, disposing of the backend value first if the
    /// registration died meanwhile, and tears down if last out. Returns
    /// how `CTRL` was released and, when this call removed an fd watch
    /// from its backend, what became of its kernel entry (with the fd).
    fn end_ctrl(
        &self,
        slot: &Slot,
        index: u32,
        g: Generation,
    ) -> (EndCtrl, Option<(Removal, RawFd)>) {
        let mut removal = None;
        let outcome = slot.end_ctrl(g, |s| {
            // SAFETY: `end_ctrl` calls this with CTRL still held.
            let reg = unsafe { slot.with_backend_reg(|cell| cell.take()) };
            if let Some(reg) = reg {
                let token = Token::new(index, g);
                if s.fired() {
                    // A timeout that occurred is over for the backend.
                    drop(reg);
                } else if s.is_timer() {
                    self.backend.timeout_deregister(token, reg);
                } else {
                    let fd = param_fd(slot.param());
                    let r = self.backend.fd_deregister(fd, token, reg);
                    if r == Removal::FdClosed {
                        self.stats.closed_while_registered();
                    }
                    removal = Some((r, fd));
                }
            }
        });
        if outcome == EndCtrl::TearDown {
            self.tear_down(slot, index, g);
        }
        (outcome, removal)
    }

    /// The last one out: drop what the registration owned, release the slot
    /// (next generation, or retired), wake waiters.
    fn tear_down(&self, slot: &Slot, index: u32, g: Generation) {
        // SAFETY: we are the last one out of generation g (module rule 4 of
        // `slot`): nobody else touches the cells until we release.
        let callback = unsafe { slot.with_callback(|cell| cell.take()) };
        // SAFETY: as above. Only a fired timer's value can still be here.
        let reg = unsafe { slot.with_backend_reg(|cell| cell.take()) };
        {
            // Dropping user values runs user code, which may drop handles,
            // its own included: treat it as callback context so that such a
            // deregister does not wait for this very teardown. A panic in a
            // destructor is contained here.
            let _scope = scope::Scope::enter_callback();
            let _ = catch_unwind(AssertUnwindSafe(move || {
                drop(callback);
                drop(reg);
            }));
        }
        let (next, had_waiter) = slot.release(g);
        match next {
            Some(_) => self.arena.recycle(index),
            None => self.stats.retired(),
        }
        self.stats.deregistered();
        if had_waiter {
            let _guard = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            self.waiters_cv.notify_all();
        }
    }

    /// Sleeps until generation `g` of `slot` has been torn down, unless the
    /// calling thread is inside a callback or hook (where waiting could
    /// deadlock: see the crate docs, "Deregistration").
    fn wait_gone_unless_nested(&self, slot: &Slot, g: Generation) {
        if scope::in_callback_or_hook() {
            return;
        }
        if !slot.load().is_live() || slot.load().generation() != g {
            return;
        }
        let mut guard = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        while !slot.gone_or_mark_waiter(g) {
            guard = self
                .waiters_cv
                .wait(guard)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Ends the registration named by `token`: `Ok(true)` if this call
    /// ended it, `Ok(false)` if it names no live registration. See
    /// [`Engine::deregister`].
    pub(crate) fn deregister(&self, token: Token) -> Result<bool> {
        let Some((index, slot, g)) = self.resolve(token) else {
            return Ok(false);
        };
        let (ended, removal) = match slot.kill(g) {
            Kill::Gone => return Ok(false),
            Kill::AlreadyDead => (false, None),
            Kill::Killed { took_ctrl } => {
                let removal = if took_ctrl {
                    self.end_ctrl(slot, index, g).1
                } else {
                    // A control operation (a modify) holds CTRL: it removes
                    // the registration from the backend when it lets go.
                    None
                };
                self.backend.changed();
                (true, removal)
            }
        };
        self.wait_gone_unless_nested(slot, g);
        match removal {
            Some((Removal::FdClosed, fd)) => Err(Error::ClosedWhileRegistered(fd)),
            _ => Ok(ended),
        }
    }

    pub(crate) fn modify_fd(&self, token: Token, interest: Interest) -> Result<()> {
        self.modify(token, |backend, slot, reg| {
            let fd = param_fd(slot.param());
            if param_interest(slot.param()).is_edge() != interest.is_edge() {
                return Err(Error::Backend(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "evnexus: modify cannot switch a watch between level and edge triggering",
                )));
            }
            slot.set_param(pack_param(fd, interest.bits()));
            match reg {
                Some(reg) => backend.fd_modify(fd, token, reg, interest),
                None => Ok(()),
            }
        })
    }

    pub(crate) fn modify_timer(&self, token: Token, deadline: Instant) -> Result<()> {
        let offset = self.clock.offset(deadline);
        self.modify(token, |backend, slot, reg| {
            slot.set_param(offset);
            match reg {
                Some(reg) => backend.timeout_modify(token, reg, deadline),
                None => Ok(()),
            }
        })
    }

    /// Runs `change` under `CTRL` on the live registration `token`.
    ///
    /// If the registration ends while `change` runs (a callback
    /// deregisters it, a panic ends it, a timer fires), this modify has
    /// lost the race: it returns [`Error::Gone`], and it is this call that
    /// removes the registration from the backend, on letting go of `CTRL`.
    fn modify(
        &self,
        token: Token,
        change: impl FnOnce(&dyn Backend, &Slot, Option<&mut crate::slot::BackendReg>) -> Result<()>,
    ) -> Result<()> {
        if scope::in_hook() {
            return Err(Error::Reentrant);
        }
        let (index, slot, g) = self.resolve(token).ok_or(Error::Gone)?;
        if !slot.lock_ctrl(g) {
            return Err(Error::Gone);
        }
        pause_point!(BeforeBackendCall);
        // The slot holds the new value before the backend is told (a loop
        // backend reads it from there); a refusal puts the old one back.
        let before = slot.param();
        // SAFETY: we hold CTRL.
        let result =
            unsafe { slot.with_backend_reg(|cell| change(&*self.backend, slot, cell.as_mut())) };
        if result.is_err() {
            slot.set_param(before);
        }
        pause_point!(AfterBackendCall);
        // Read under CTRL: the value that stands (new, or restored), and
        // the kind (after CTRL the slot may hold another registration).
        let (param, is_timer) = (slot.param(), slot.load().is_timer());
        let (outcome, _) = self.end_ctrl(slot, index, g);
        self.backend.changed();
        if outcome != EndCtrl::Live {
            return Err(Error::Gone);
        }
        if is_timer {
            // Whether or not the change took: the loop may have passed the
            // timer over while we held CTRL.
            self.backend.timer_armed(token, param);
        }
        result
    }

    /// Runs an fd watch's callback, and again for every rerun, then
    /// finishes the dispatch. Out of line, so that the report paths that
    /// end without a dispatch (stale, deferred) stay small.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn dispatch_fd(
        &self,
        engine: &Engine,
        slot: &Slot,
        index: u32,
        g: Generation,
        token: Token,
        fd: RawFd,
        revents: Readiness,
    ) -> Result<Occurred> {
        let _scope = scope::Scope::enter_callback();
        let mut readiness = revents;
        let mut outcome = Ok(Occurred::Suppressed);
        loop {
            let run = if self.recheck {
                self.recheck(slot, readiness)
            } else {
                Some(readiness)
            };
            match run {
                Some(readiness) => {
                    let ev = FdEvent {
                        engine,
                        token,
                        fd,
                        readiness,
                    };
                    // SAFETY: we own the dispatch (BUSY) until `finish`.
                    let ran = unsafe {
                        slot.with_callback(|cell| match cell {
                            Some(Callback::Fd(f)) => catch_unwind(AssertUnwindSafe(|| f(&ev))),
                            _ => Ok(()),
                        })
                    };
                    self.stats.dispatched();
                    match ran {
                        Ok(()) => {
                            if outcome.is_ok() {
                                outcome = Ok(Occurred::Dispatched);
                            }
                        }
                        Err(payload) => {
                            self.stats.panicked();
                            // Policy: a watch whose callback panicked is
                            // ended, as if deregistered from inside it.
                            if let Kill::Killed { took_ctrl: true } = slot.kill(g) {
                                let _ = self.end_ctrl(slot, index, g);
                            }
                            self.backend.changed();
                            outcome = Err(Error::CallbackPanicked(Box::new(CallbackPanic {
                                token,
                                message: panic_message(payload),
                            })));
                        }
                    }
                }
                None => self.stats.recheck_suppressed(),
            }
            match slot.finish(g) {
                Finish::Rerun(pending) => readiness = Readiness::from_bits(pending),
                Finish::Idle => return outcome,
                Finish::TearDown => {
                    self.tear_down(slot, index, g);
                    return outcome;
                }
            }
        }
    }

    /// libxl's `poll(fd, 0)` re-check: what of the watch's interest holds
    /// now, or `None` if nothing does.
    fn recheck(&self, slot: &Slot, reported: Readiness) -> Option<Readiness> {
        let param = slot.param();
        let interest = param_interest(param);
        let mut pfd = libc::pollfd {
            fd: param_fd(param),
            events: interest.as_poll_events(),
            revents: 0,
        };
        loop {
            // SAFETY: `pfd` is one valid pollfd and the timeout is zero.
            let n = unsafe { libc::poll(&mut pfd, 1, 0) };
            if n >= 0 {
                let now = Readiness::from_poll_revents(pfd.revents).relevant_to(interest);
                return (n > 0 && !now.is_empty()).then_some(now);
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                // The re-check could not be made: deliver what was reported
                // rather than lose it.
                return Some(reported);
            }
        }
    }

    #[inline(never)]
    fn dispatch_timer(
        &self,
        engine: &Engine,
        slot: &Slot,
        index: u32,
        g: Generation,
        token: Token,
    ) -> Result<Occurred> {
        let _scope = scope::Scope::enter_callback();
        // A fired timer is DEAD: no modify can change the param any more.
        let deadline = self.clock.instant(slot.param());
        // SAFETY: we own the dispatch (BUSY).
        let callback = unsafe { slot.with_callback(|cell| cell.take()) };
        let mut outcome = Ok(Occurred::Dispatched);
        if let Some(Callback::Timer(f)) = callback {
            let ev = TimerEvent {
                engine,
                token,
                deadline,
            };
            self.stats.dispatched();
            if let Err(payload) = catch_unwind(AssertUnwindSafe(move || f(&ev))) {
                self.stats.panicked();
                outcome = Err(Error::CallbackPanicked(Box::new(CallbackPanic {
                    token,
                    message: panic_message(payload),
                })));
            }
        }
        match slot.finish(g) {
            Finish::TearDown => self.tear_down(slot, index, g),
            // A control operation still holds CTRL; it tears down.
            Finish::Idle => {}
            Finish::Rerun(_) => unreachable!("a fired timer is dead and never reruns"),
        }
        outcome
    }
}

pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    };
    // The payload is user data; its destructor could panic too.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
    message
}

/// What the current thread is doing inside the engine: running callbacks,
/// running hooks. A thread inside either must not wait for a callback to
/// return (it could be waiting for itself, or for a thread waiting for it).
pub(crate) mod scope {
    use crate::sync::{CALLBACK_DEPTH as CALLBACKS, HOOK_DEPTH as HOOKS};

    /// Marks the current thread as inside a callback (or hook) until dropped.
    pub(crate) struct Scope {
        hook: bool,
    }

    impl Scope {
        pub(crate) fn enter_callback() -> Scope {
            CALLBACKS.with(|c| c.set(c.get() + 1));
            Scope { hook: false }
        }
        pub(crate) fn enter_hook() -> Scope {
            HOOKS.with(|c| c.set(c.get() + 1));
            Scope { hook: true }
        }
    }

    impl Drop for Scope {
        fn drop(&mut self) {
            let counter = if self.hook { &HOOKS } else { &CALLBACKS };
            counter.with(|c| c.set(c.get() - 1));
        }
    }

    pub(crate) fn in_callback_or_hook() -> bool {
        CALLBACKS.with(|c| c.get() > 0) || in_hook()
    }

    pub(crate) fn in_hook() -> bool {
        HOOKS.with(|c| c.get() > 0)
    }
}
