//! The built-in loop: what the io_uring and epoll backends share.
//!
//! Level-triggered fd watches live in an epoll set (the libxl contract:
//! the callback runs again while the condition holds). `epoll_ctl` is
//! thread-safe, so a watch registered, modified or removed from any thread
//! takes effect at once, even while the loop sleeps. How the loop waits
//! for that set is the [`Waiter`]'s business: `epoll_wait` itself, or an
//! io_uring `EPOLL_WAIT` operation. Measured on the development machine at
//! 1,024 always-ready fds: epoll level-triggered 106 ns/event, the ring's
//! `EPOLL_WAIT` 107 ns, one-shot `POLL_ADD` re-armed after each event 267
//! ns (270 with `SINGLE_ISSUER`/`DEFER_TASKRUN`, no better), and
//! `EPOLLONESHOT` with `EPOLL_CTL_MOD` 471 ns; so level-triggered watches go
//! through the epoll set on both backends.
//!
//! Every `epoll_ctl` on an fd number is made under that number's claim in
//! the [`FdTable`], by the registration that owns the number's kernel
//! entry: a watch whose fd was closed (and whose number was reused) never
//! removes or changes a newer watch's entry.
//!
//! Edge-triggered watches are `EPOLLET` entries of the same set, on both
//! backends (see `uring` for why not multishot polls). Timers live in a
//! user-space heap ([`TimerQueue`]) that bounds each wait. The heap is the
//! driving thread's alone: a timer change made on that thread (from a
//! callback) goes straight in, one made on another thread travels through
//! a lock-free command queue and a wake-up.
//!
//! # Timers and the slot's `CTRL` bit
//!
//! A timer reaches the heap only after the thread that registered or reset
//! it has released the slot's `CTRL` bit ([`Backend::timer_armed`]). The
//! loop's due check ([`Slot::begin_timer_if_due`](crate::slot::Slot)) may
//! therefore drop a heap entry that it meets under `CTRL`: whoever holds
//! `CTRL` hands the timer over again, with its current deadline, once it
//! lets go. (Handing it over *before* letting go, as an earlier version
//! did, lost timers registered or reset from other threads whenever the
//! loop looked in between.)

use crate::backend::driver::Driver;
use crate::backend::fd_table::{FdTable, Owner};
use crate::backend::orphan;
use crate::backend::timers::TimerQueue;
use crate::backend::wake::WakeFd;
use crate::backend::{Backend, BackendCounters, BackendKind, Removal, Tally};
use crate::engine::{Engine, Occurred};
use crate::error::{Error, Result, Unsupported};
use crate::fd::Interest;
use crate::slot::BackendReg;
use crate::sync::{AtomicBool, AtomicU64, Counter, Ordering, Queue, StdArc};
use crate::timer::Clock;
use crate::token::Token;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// User data the loop uses for its own operations. Tokens with generation
/// zero never name a registration, so these can never be mistaken for one.
/// Values below [`MAX_SLOTS`](crate::MAX_SLOTS) are slot indices (the
/// ring's remove operations); the indices reserved above it are these.
pub(crate) const WAKE_DATA: u64 = (1 << crate::token::INDEX_BITS) - 1;
pub(crate) const EPOLL_DATA: u64 = WAKE_DATA - 1;
pub(crate) const CANCEL_DATA: u64 = WAKE_DATA - 2;
const _: () = assert!(CANCEL_DATA >= crate::token::MAX_SLOTS as u64);

/// What a wait found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A watch in the epoll set reported readiness (poll(2) bits).
    Ready(Token, u16),
    /// The wake-up eventfd fired.
    Wake,
}

/// How a built-in loop waits.
pub(crate) trait Waiter: Send + 'static {
    const KIND: BackendKind;
    /// Waits for the epoll set `epfd` for at most `timeout` (`None`: no
    /// limit), appending what it found. `Some(Duration::ZERO)` reads the
    /// set without blocking and leaves nothing in flight (see `uring`).
    fn wait(
        &mut self,
        epfd: RawFd,
        timeout: Option<Duration>,
        out: &mut Vec<Event>,
    ) -> io::Result<()>;
    /// Counters for [`Stats`](crate::Stats): (SQ-full retries, CQ overflows).
    fn pressure(&self) -> (u64, u64) {
        (0, 0)
    }
}

/// A timer handed over from another thread: (token, deadline offset).
struct TimerCommand(Token, u64);

struct LoopState<W> {
    waiter: W,
    timers: TimerQueue,
    events: Vec<Event>,
    due: Vec<Token>,
    /// Waits made so far.
    waits: u64,
    /// Tokens the epoll set reported for registrations that had ended, with
    /// the wait that reported them (see [`Builtin::watch_for_orphans`]).
    stale: HashMap<Token, u64>,
    /// Orphans that could not be removed: not looked for again.
    unremovable: HashMap<Token, ()>,
}

/// Tokens reported stale by the epoll set are remembered for this many
/// waits; a correctly removed entry is reported at most once after its
/// removal (from a batch collected before it), so two sightings within the
/// window mean the entry is still in the set.
const STALE_WINDOW: u64 = 64;

/// What a [`Waker`](crate::Waker) shares with the loop: the wake-up eventfd
/// and the stop flag. Kept apart from the engine so a waker does not keep
/// the engine alive.
pub(crate) struct Signals {
    wake: WakeFd,
    stop: AtomicBool,
}

impl Signals {
    pub(crate) fn stop(&self) {
        // Release: whatever the stopper did before is visible to `run`.
        self.stop.store(true, Ordering::Release);
        self.wake.write();
    }

    pub(crate) fn wake(&self) {
        self.wake.write();
    }
}

/// The descriptors every built-in loop needs: its epoll set, with the
/// wake-up eventfd in it. Made before the io_uring (which may be refused),
/// so that the fallback to epoll needs no descriptor more than epoll alone.
pub(crate) struct LoopBase {
    epfd: OwnedFd,
    signals: StdArc<Signals>,
}

impl LoopBase {
    pub(crate) fn new() -> io::Result<LoopBase> {
        // SAFETY: epoll_create1 takes no pointers.
        let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: a fresh descriptor nothing else owns.
        let epfd = unsafe { OwnedFd::from_raw_fd(ep) };
        let signals = StdArc::new(Signals {
            wake: WakeFd::new()?,
            stop: AtomicBool::new(false),
        });
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: WAKE_DATA,
        };
        // SAFETY: both fds are open; `ev` is a valid epoll_event.
        cvt(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, signals.wake.raw(), &mut ev) })?;
        Ok(LoopBase { epfd, signals })
    }
}

pub(crate) struct Builtin<W: Waiter> {
    epfd: OwnedFd,
    signals: StdArc<Signals>,
    commands: Queue<TimerCommand>,
    driver: Driver<LoopState<W>>,
    clock: Clock,
    fds: FdTable,
    /// Timer entries left stale by cancel or modify since the last compact.
    stale_timers: AtomicU64,
    /// The waiter's (SQ-full retries, CQ overflows), published after each
    /// wait for `Engine::stats`.
    sq_full: Counter,
    cq_overflow: Counter,
    orphans_removed: Counter,
    orphans_left: Counter,
    /// The earliest queued deadline after the loop's last turn
    /// ([`Clock::NEVER`]: none), for `next_timeout` while the loop runs.
    next_deadline: AtomicU64,
}

const DEFAULT_EVENTS: usize = 256;

fn epoll_events(interest: Interest) -> u32 {
    // poll(2) and epoll share their low 16 bits (POLLIN == EPOLLIN, ...).
    let mut events = interest.as_poll_events() as u16 as u32;
    if interest.is_edge() {
        events |= libc::EPOLLET as u32;
    }
    events
}

pub(crate) fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_closed() -> Error {
    Error::Backend(io::Error::from_raw_os_error(libc::EBADF))
}

impl<W: Waiter> Builtin<W> {
    pub(crate) fn new(base: LoopBase, waiter: W, clock: Clock) -> Builtin<W> {
        Builtin {
            epfd: base.epfd,
            signals: base.signals,
            commands: Queue::default(),
            driver: Driver::new(LoopState {
                waiter,
                timers: TimerQueue::default(),
                events: Vec::with_capacity(DEFAULT_EVENTS),
                due: Vec::new(),
                waits: 0,
                stale: HashMap::new(),
                unremovable: HashMap::new(),
            }),
            clock,
            fds: FdTable::new(),
            stale_timers: AtomicU64::new(0),
            sq_full: Counter::default(),
            cq_overflow: Counter::default(),
            orphans_removed: Counter::default(),
            orphans_left: Counter::default(),
            next_deadline: AtomicU64::new(Clock::NEVER),
        }
    }

    fn publish_next(&self, deadline: u64) {
        // Relaxed: see `next_timeout`.
        self.next_deadline.store(deadline, Ordering::Relaxed);
    }

    fn epoll_ctl(&self, op: libc::c_int, fd: RawFd, token: Token, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events,
            u64: token.as_u64(),
        };
        // SAFETY: `ev` is a valid epoll_event; a bad fd is an error return.
        cvt(unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }

    /// Puts timer `token` in the heap now if this thread drives the loop (a
    /// callback's registration), else queues it and wakes the loop.
    fn queue_timer(&self, token: Token, deadline: u64) {
        if self
            .driver
            .with(|st| st.timers.push(deadline, token))
            .is_none()
        {
            self.commands.push(TimerCommand(token, deadline));
            self.signals.wake.notify();
        }
    }

    /// The loop: one wait, then every event and due timer dispatched.
    pub(crate) fn run_once(&self, engine: &Engine, timeout: Option<Duration>) -> Result<usize> {
        let Some(_guard) = self.driver.enter() else {
            return Err(Error::Unsupported(Unsupported::LoopBusy));
        };
        let inner = engine.inner();
        self.signals.wake.arm();
        let mut tally = Tally::default();
        let waited = self
            .driver
            .with(|st| {
                self.apply_commands(st);
                if self.stale_timers.load(Ordering::Relaxed) as usize > st.timers.len() / 2
                    && st.timers.len() > 64
                {
                    // Relaxed: an estimate that only schedules a clean-up.
                    self.stale_timers.store(0, Ordering::Relaxed);
                    st.timers.compact(|t, d| inner.timer_deadline(t) == Some(d));
                }
                // No timers, no clock read (a `clock_gettime` per wait).
                let until_timer = st
                    .timers
                    .next_deadline()
                    .map(|d| Duration::from_nanos(d.saturating_sub(self.clock.now())));
                // (A stop request wrote the wake-up eventfd: this wait
                // returns at once, and `run` then sees the flag.)
                let wait = match (timeout, until_timer) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let r = self.wait(st, wait);
                st.waits += 1;
                let (sq_full, cq_overflow) = st.waiter.pressure();
                self.sq_full.set(sq_full);
                self.cq_overflow.set(cq_overflow);
                r
            })
            .expect("the driving thread can borrow its state");
        self.signals.wake.disarm();
        waited.map_err(Error::Backend)?;
        let mut events = self
            .driver
            .with(|st| std::mem::take(&mut st.events))
            .expect("the driving thread can borrow its state");
        // The wake-up is consumed before anything of this batch runs: a
        // `wake()` that lands after this point writes the eventfd again (so
        // the next wait returns at once), and one that landed before it is
        // seen by everything this batch dispatches. Draining it in batch
        // order, after callbacks that came earlier in the batch, lost the
        // wake-ups that landed in between.
        if events.contains(&Event::Wake) {
            self.signals.wake.drain();
        }
        let mut stale = Vec::new();
        for event in events.drain(..) {
            match event {
                Event::Wake => {}
                Event::Ready(token, revents) => {
                    let r = engine.dispatch_ready(token, revents);
                    if matches!(r, Ok(Occurred::Stale(_))) {
                        stale.push(token);
                    }
                    tally.note(r);
                }
            }
        }
        let (mut due, now) = self
            .driver
            .with(|st| {
                st.events = events; // keep the capacity
                if !stale.is_empty() || !st.stale.is_empty() {
                    self.watch_for_orphans(st, &stale);
                }
                let mut due = std::mem::take(&mut st.due);
                let mut now = 0;
                if st.timers.next_deadline().is_some() {
                    now = self.clock.now();
                    st.timers.pop_due(now, &mut due);
                }
                (due, now)
            })
            .expect("the driving thread can borrow its state");
        for token in due.drain(..) {
            if let Some(r) = engine.fire_if_due(token, now) {
                tally.note(r);
            }
        }
        self.driver.with(|st| {
            st.due = due;
            self.publish_next(st.timers.next_deadline().unwrap_or(Clock::NEVER));
        });
        tally.finish()
    }

    /// Waits at most `timeout`. A wait interrupted before it found anything
    /// is made again with what is left of the timeout: io_uring's task work
    /// interrupts blocking system calls of the thread that owns a ring (one
    /// being torn down included) with EINTR, and a `run_once` must not
    /// return early for that. (A signal that should end the wait can call
    /// [`Waker::wake`](crate::Waker::wake), which is async-signal-safe.)
    fn wait(&self, st: &mut LoopState<W>, timeout: Option<Duration>) -> io::Result<()> {
        let epfd = self.epfd.as_raw_fd();
        let deadline = timeout.and_then(|d| Instant::now().checked_add(d));
        let mut timeout = timeout;
        loop {
            match st.waiter.wait(epfd, timeout, &mut st.events) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if !st.events.is_empty() || timeout == Some(Duration::ZERO) {
                        return Ok(());
                    }
                    if let Some(deadline) = deadline {
                        timeout = Some(deadline.saturating_duration_since(Instant::now()));
                    }
                }
                r => return r,
            }
        }
    }

    /// Finds kernel entries that outlived their registration and removes
    /// them. An entry outlives its registration when the fd was closed
    /// while registered and another descriptor (a `dup`, a child's copy)
    /// keeps its file open: `EPOLL_CTL_DEL` then cannot reach it, and a
    /// level-triggered one that is ready wakes the loop on every wait for a
    /// token that is long gone. A correctly removed entry is reported at
    /// most once after its removal, so a stale token reported in two waits
    /// marks such an orphan; [`orphan::remove`] then takes it out of the
    /// set if this process holds another descriptor of its file.
    fn watch_for_orphans(&self, st: &mut LoopState<W>, stale: &[Token]) {
        let now = st.waits;
        st.stale.retain(|_, seen| now - *seen <= STALE_WINDOW);
        for &token in stale {
            match st.stale.insert(token, now) {
                Some(seen) if seen < now && !st.unremovable.contains_key(&token) => {
                    st.stale.remove(&token);
                    match orphan::remove(self.epfd.as_fd(), token) {
                        orphan::Outcome::Removed => self.orphans_removed.add(1),
                        orphan::Outcome::Left => {
                            self.orphans_left.add(1);
                            st.unremovable.insert(token, ());
                        }
                        orphan::Outcome::NotFound => {}
                    }
                }
                _ => {}
            }
        }
    }

    /// Puts the timers handed over from other threads in the heap.
    fn apply_commands(&self, st: &mut LoopState<W>) {
        while let Some(TimerCommand(token, deadline)) = self.commands.pop() {
            st.timers.push(deadline, token);
        }
    }

    /// Runs the loop until [`Signals::stop`] is called.
    pub(crate) fn run(&self, engine: &Engine) -> Result<()> {
        loop {
            // Acquire: pairs with the Release in `stop`.
            if self.signals.stop.swap(false, Ordering::Acquire) {
                return Ok(());
            }
            self.run_once(engine, None)?;
        }
    }
}

impl<W: Waiter> Backend for Builtin<W> {
    fn kind(&self) -> BackendKind {
        W::KIND
    }

    fn fd_register(&self, fd: RawFd, interest: Interest, token: Token) -> Result<BackendReg> {
        let claim = self.fds.claim(fd).ok_or(Error::BadFd(fd))?;
        let events = epoll_events(interest);
        self.epoll_ctl(libc::EPOLL_CTL_ADD, fd, token, events)?;
        // The add succeeded, so no live entry had this file at this number:
        // a previous owner's fd was closed, and its entry is not ours to
        // touch (it is gone, or held open by a duplicate of the fd).
        claim.set(Some(Owner { token, events }));
        // Nothing to keep: the fd table knows the entry's owner.
        Ok(Box::new(()))
    }

    fn fd_modify(
        &self,
        fd: RawFd,
        token: Token,
        _: &mut BackendReg,
        interest: Interest,
    ) -> Result<()> {
        let claim = self.fds.claim(fd).ok_or(Error::BadFd(fd))?;
        if !claim.is_owner(token) {
            // The fd was closed and its number taken by a newer watch.
            return Err(fd_closed());
        }
        let events = epoll_events(interest);
        self.epoll_ctl(libc::EPOLL_CTL_MOD, fd, token, events)?;
        claim.set(Some(Owner { token, events }));
        Ok(())
    }

    fn fd_deregister(&self, fd: RawFd, token: Token, _: BackendReg) -> Removal {
        let Some(claim) = self.fds.claim(fd) else {
            return Removal::FdClosed;
        };
        if !claim.is_owner(token) {
            return Removal::FdClosed;
        }
        let r = self.epoll_ctl(libc::EPOLL_CTL_DEL, fd, token, 0);
        claim.set(None);
        match r {
            Ok(()) => Removal::Done,
            // EBADF: the number is closed; ENOENT: it names another file.
            // Either way this watch's fd was closed while registered: its
            // entry went with the file, or a duplicate of the fd keeps it
            // (then the loop finds it as an orphan).
            Err(_) => Removal::FdClosed,
        }
    }

    fn timeout_register(&self, _: Instant, _: Token) -> Result<BackendReg> {
        // The loop learns of the timer from `timer_armed`, once the
        // registrant has let go of its slot.
        Ok(Box::new(()))
    }

    fn timeout_modify(&self, _: Token, _: &mut BackendReg, _: Instant) -> Result<()> {
        // Relaxed: see `stale_timers`.
        self.stale_timers.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn timeout_deregister(&self, _: Token, _: BackendReg) {
        // Relaxed: see `stale_timers`.
        self.stale_timers.fetch_add(1, Ordering::Relaxed);
    }

    fn timer_armed(&self, token: Token, deadline: u64) {
        self.queue_timer(token, deadline);
    }

    fn counters(&self) -> BackendCounters {
        BackendCounters {
            ring_sq_full: self.sq_full.get(),
            ring_cq_overflow: self.cq_overflow.get(),
            orphans_removed: self.orphans_removed.get(),
            orphans_left: self.orphans_left.get(),
        }
    }

    fn as_builtin(&self) -> Option<&dyn BuiltinLoop> {
        Some(self)
    }
}

/// The engine's view of a built-in loop.
pub(crate) trait BuiltinLoop: Send + Sync {
    fn run_once(&self, engine: &Engine, timeout: Option<Duration>) -> Result<usize>;
    fn run(&self, engine: &Engine) -> Result<()>;
    fn signals(&self) -> StdArc<Signals>;
    /// The epoll set: readable whenever a wait would return at once.
    fn epoll_fd(&self) -> BorrowedFd<'_>;
    /// Time until the earliest queued timer (a cancelled one may still be
    /// queued: never later than the true answer).
    fn next_timeout(&self) -> Option<Duration>;
}

impl<W: Waiter> BuiltinLoop for Builtin<W> {
    fn run_once(&self, engine: &Engine, timeout: Option<Duration>) -> Result<usize> {
        Builtin::run_once(self, engine, timeout)
    }
    fn run(&self, engine: &Engine) -> Result<()> {
        Builtin::run(self, engine)
    }
    fn signals(&self) -> StdArc<Signals> {
        StdArc::clone(&self.signals)
    }
    fn epoll_fd(&self) -> BorrowedFd<'_> {
        self.signals.wake.set_nested();
        self.epfd.as_fd()
    }
    fn next_timeout(&self) -> Option<Duration> {
        self.signals.wake.set_nested();
        let deadline = match self.driver.enter() {
            // Nobody runs the loop (a host between two `run_once` calls):
            // take in the timers other threads handed over, and look.
            Some(_guard) => self
                .driver
                .with(|st| {
                    self.apply_commands(st);
                    let next = st.timers.next_deadline().unwrap_or(Clock::NEVER);
                    self.publish_next(next);
                    next
                })
                .unwrap_or(Clock::NEVER),
            // The loop is running (on another thread, or this call comes
            // from one of its callbacks): what its last turn left.
            // Relaxed: a hint; the loop's own wait is what fires timers.
            None => self.next_deadline.load(Ordering::Relaxed),
        };
        (deadline != Clock::NEVER)
            .then(|| Duration::from_nanos(deadline.saturating_sub(self.clock.now())))
    }
}
