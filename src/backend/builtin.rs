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
//! Edge-triggered watches are `EPOLLET` in the set (epoll backend) or
//! multishot `POLL_ADD` operations on the ring (io_uring backend).
//! Timers live in a user-space heap ([`TimerQueue`]) that bounds each wait.
//! Changes that only the driving thread may make (the heap, the ring's
//! submission queue) are made directly when the change comes from that
//! thread (a callback), and otherwise travel through a lock-free command
//! queue and a wake-up.

use crate::backend::driver::Driver;
use crate::backend::timers::TimerQueue;
use crate::backend::wake::WakeFd;
use crate::backend::{Backend, BackendKind, Tally};
use crate::engine::Engine;
use crate::error::{Error, Result, Unsupported};
use crate::fd::Interest;
use crate::slot::BackendReg;
use crate::sync::{AtomicBool, AtomicU64, Counter, Ordering, StdArc};
use crate::timer::Clock;
use crate::token::Token;
use crossbeam_queue::SegQueue;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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
    /// A watch reported readiness (poll(2) bits).
    Ready(Token, u16),
    /// An edge-triggered ring watch ended its multishot poll: arm it again
    /// if it is still live.
    Rearm(Token),
    /// The wake-up eventfd fired.
    Wake,
}

/// How a built-in loop waits.
pub(crate) trait Waiter: Send + 'static {
    const KIND: BackendKind;
    /// Edge-triggered watches are `EPOLLET` entries of the epoll set; when
    /// false, the waiter carries them (`edge_*`).
    const EDGE_IN_EPOLL: bool;
    /// Waits for the epoll set `epfd` (and whatever the waiter carries) for
    /// at most `timeout` (`None`: no limit), appending what it found.
    fn wait(
        &mut self,
        epfd: RawFd,
        timeout: Option<Duration>,
        out: &mut Vec<Event>,
    ) -> io::Result<()>;
    /// Starts watching `fd` edge-triggered under `token`.
    fn edge_add(&mut self, token: Token, fd: RawFd, interest: Interest) -> io::Result<()>;
    /// Stops the edge-triggered watch `token`; with `readd`, watch again
    /// (with the interest `readd` returns then) once the old watch is gone.
    fn edge_remove(&mut self, token: Token, readd: bool) -> io::Result<()>;
    /// Counters for [`Stats`](crate::Stats): (SQ-full retries, CQ overflows).
    fn pressure(&self) -> (u64, u64) {
        (0, 0)
    }
}

enum Command {
    Timer(Token, u64),
    EdgeAdd(Token, RawFd, Interest),
    EdgeRemove(Token, bool),
}

struct LoopState<W> {
    waiter: W,
    timers: TimerQueue,
    events: Vec<Event>,
    due: Vec<Token>,
}

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

pub(crate) struct Builtin<W: Waiter> {
    epfd: OwnedFd,
    signals: StdArc<Signals>,
    commands: SegQueue<Command>,
    driver: Driver<LoopState<W>>,
    clock: Clock,
    /// Timer entries left stale by cancel or modify since the last compact.
    stale_timers: AtomicU64,
    /// The waiter's (SQ-full retries, CQ overflows), published after each
    /// wait for `Engine::stats`.
    sq_full: Counter,
    cq_overflow: Counter,
}

/// Backend values: which mechanism carries an fd watch.
struct Level;
struct Edge;

const DEFAULT_EVENTS: usize = 256;

fn epoll_events(interest: Interest) -> u32 {
    // poll(2) and epoll share their low 16 bits (POLLIN == EPOLLIN, ...).
    let mut events = interest.as_poll_events() as u16 as u32;
    if interest.is_edge() {
        events |= libc::EPOLLET as u32;
    }
    events
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl<W: Waiter> Builtin<W> {
    pub(crate) fn new(waiter: W, clock: Clock) -> io::Result<Builtin<W>> {
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
        Ok(Builtin {
            epfd,
            signals,
            commands: SegQueue::new(),
            driver: Driver::new(LoopState {
                waiter,
                timers: TimerQueue::default(),
                events: Vec::with_capacity(DEFAULT_EVENTS),
                due: Vec::new(),
            }),
            clock,
            stale_timers: AtomicU64::new(0),
            sq_full: Counter::default(),
            cq_overflow: Counter::default(),
        })
    }

    fn epoll_ctl(
        &self,
        op: libc::c_int,
        fd: RawFd,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: epoll_events(interest),
            u64: token.as_u64(),
        };
        // SAFETY: `ev` is a valid epoll_event; a bad fd is an error return.
        cvt(unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }

    /// Applies `command` now if this thread drives the loop (a callback's
    /// registration), else queues it and wakes the loop.
    fn command(&self, command: Command) -> io::Result<()> {
        let mut pending = Some(command);
        let applied = self.driver.with(|st| match pending.take() {
            Some(c) => Self::apply(st, c),
            None => Ok(()),
        });
        match (applied, pending) {
            (Some(r), _) => r,
            (None, Some(c)) => {
                self.commands.push(c);
                self.signals.wake.notify();
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }

    fn apply(st: &mut LoopState<W>, command: Command) -> io::Result<()> {
        match command {
            Command::Timer(token, deadline) => {
                st.timers.push(deadline, token);
                Ok(())
            }
            Command::EdgeAdd(token, fd, interest) => st.waiter.edge_add(token, fd, interest),
            Command::EdgeRemove(token, readd) => st.waiter.edge_remove(token, readd),
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
                if let Err(e) = self.apply_commands(st) {
                    tally.error(Error::Backend(e));
                }
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
                let r = st.waiter.wait(self.epfd.as_raw_fd(), wait, &mut st.events);
                let (sq_full, cq_overflow) = st.waiter.pressure();
                self.sq_full.set(sq_full);
                self.cq_overflow.set(cq_overflow);
                r
            })
            .expect("the driving thread can borrow its state");
        self.signals.wake.disarm();
        if let Err(e) = waited {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Error::Backend(e));
            }
        }
        let mut events = self
            .driver
            .with(|st| std::mem::take(&mut st.events))
            .expect("the driving thread can borrow its state");
        for event in events.drain(..) {
            match event {
                Event::Wake => self.signals.wake.drain(),
                Event::Ready(token, revents) => tally.note(engine.dispatch_ready(token, revents)),
                Event::Rearm(token) => {
                    if let Some((fd, interest)) = inner.fd_watch(token) {
                        let r = self
                            .driver
                            .with(|st| st.waiter.edge_add(token, fd, interest));
                        if let Some(Err(e)) = r {
                            tally.error(Error::Backend(e));
                        }
                    }
                }
            }
        }
        let (mut due, now) = self
            .driver
            .with(|st| {
                st.events = events; // keep the capacity
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
        self.driver.with(|st| st.due = due);
        tally.finish()
    }

    /// Applies the queued commands; the first failure (an error of the
    /// ring itself: a full queue is retried by the waiter) is returned
    /// after all the others were applied.
    fn apply_commands(&self, st: &mut LoopState<W>) -> io::Result<()> {
        let mut first = Ok(());
        while let Some(c) = self.commands.pop() {
            if let Err(e) = Self::apply(st, c) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
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

    fn timer_command(&self, token: Token, deadline: Instant) {
        // A timer command cannot fail: it only pushes to the heap.
        let _ = self.command(Command::Timer(token, self.clock.offset(deadline)));
    }
}

impl<W: Waiter> Backend for Builtin<W> {
    fn kind(&self) -> BackendKind {
        W::KIND
    }

    fn fd_register(&self, fd: RawFd, interest: Interest, token: Token) -> io::Result<BackendReg> {
        if interest.is_edge() && !W::EDGE_IN_EPOLL {
            self.command(Command::EdgeAdd(token, fd, interest))?;
            return Ok(Box::new(Edge));
        }
        self.epoll_ctl(libc::EPOLL_CTL_ADD, fd, token, interest)?;
        Ok(Box::new(Level))
    }

    fn fd_modify(
        &self,
        fd: RawFd,
        token: Token,
        reg: &mut BackendReg,
        interest: Interest,
    ) -> io::Result<()> {
        if reg.is::<Edge>() {
            // The new interest is in the slot already; the loop reads it
            // when it re-adds the watch.
            return self.command(Command::EdgeRemove(token, true));
        }
        self.epoll_ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    fn fd_deregister(&self, fd: RawFd, token: Token, reg: BackendReg) {
        if reg.is::<Edge>() {
            let _ = self.command(Command::EdgeRemove(token, false));
        } else {
            // ENOENT/EBADF: the fd was closed and epoll dropped it already.
            let _ = self.epoll_ctl(libc::EPOLL_CTL_DEL, fd, token, Interest::NONE);
        }
    }

    fn timeout_register(&self, deadline: Instant, token: Token) -> io::Result<BackendReg> {
        self.timer_command(token, deadline);
        Ok(Box::new(()))
    }

    fn timeout_modify(
        &self,
        token: Token,
        _: &mut BackendReg,
        deadline: Instant,
    ) -> io::Result<()> {
        // Relaxed: see `stale_timers`.
        self.stale_timers.fetch_add(1, Ordering::Relaxed);
        self.timer_command(token, deadline);
        Ok(())
    }

    fn timeout_deregister(&self, _: Token, _: BackendReg) {
        // Relaxed: see `stale_timers`.
        self.stale_timers.fetch_add(1, Ordering::Relaxed);
    }

    fn pressure(&self) -> (u64, u64) {
        (self.sq_full.get(), self.cq_overflow.get())
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
}
