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
//! user-space queue ([`TimerQueue`]: runs of non-decreasing deadlines
//! beside a heap) that bounds each wait. The queue is the driving thread's
//! alone: a timer change made on that thread (from a callback) goes
//! straight in, one made on another thread travels through a lock-free
//! command queue, and wakes the loop only if the loop would otherwise
//! sleep past its deadline ([`WakeFd::notify_due`](crate::backend::wake::WakeFd)).
//!
//! # Timers and the slot's `CTRL` bit
//!
//! A timer reaches the heap only after the thread that registered or reset
//! it has released the slot's `CTRL` bit ([`Backend::timer_armed`]). The
//! loop's due check ([`Slot::begin_timer_if_due`](crate::nexus::slot::Slot)) may
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
use crate::base::clock::Clock;
use crate::base::error::{Error, Result, Unsupported};
use crate::base::readiness::Interest;
use crate::base::sync::{AtomicBool, AtomicU64, Counter, Ordering, Queue, StdArc};
use crate::base::token::Token;
use crate::dispatch::{Backend, BackendCounters, BackendKind, Dispatch, Occurred, Removal, Tally};
use crate::nexus::slot::BackendReg;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// User data the loop uses for its own operations. Tokens with generation
/// zero never name a registration, so these can never be mistaken for one.
/// Values below [`MAX_SLOTS`](crate::MAX_SLOTS) are slot indices (the
/// ring's remove operations); the indices reserved above it are these.
pub(crate) const WAKE_DATA: u64 = (1 << crate::base::token::INDEX_BITS) - 1;
pub(crate) const EPOLL_DATA: u64 = WAKE_DATA - 1;
pub(crate) const CANCEL_DATA: u64 = WAKE_DATA - 2;
const _: () = assert!(CANCEL_DATA >= crate::base::token::MAX_SLOTS as u64);

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
    /// Looks at the epoll set `epfd` without blocking, appending what is
    /// ready: the first step of a turn that may then block. One system
    /// call at most, no clock read, no timeout to set up; it may leave a
    /// wait operation armed (io_uring) for the blocking wait that follows.
    fn probe(&mut self, epfd: RawFd, out: &mut Vec<Event>) -> io::Result<()>;
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

/// Timers handed over and not yet taken in that make a sleeping loop wake
/// even when none of them is due before it would wake anyway: bounds the
/// queue while the loop sleeps (16 bytes an entry).
const COMMAND_BACKLOG: usize = 1024;

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
    /// Watches with `KEEP_READY` whose callback did not clear their
    /// readiness: dispatched again next turn without asking the kernel.
    kept: Vec<(Token, u16)>,
    /// The list being built this turn (swapped with `kept`, so neither is
    /// allocated anew).
    kept_next: Vec<(Token, u16)>,
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
            wake: WakeFd::new_edge()?,
            stop: AtomicBool::new(false),
        });
        // Edge-triggered: each write is one event, consumed by the wait
        // that reports it (see `WakeFd`).
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
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
    if interest.edge_in_kernel() {
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
                kept: Vec::new(),
                kept_next: Vec::new(),
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

    /// Drops stale entries from the front of the timer queue (a timer
    /// reset away, cancelled or fired leaves its entry behind) and
    /// publishes the earliest live deadline for `next_timeout`.
    fn publish_next(&self, st: &mut LoopState<W>, d: &dyn Dispatch) -> u64 {
        st.timers
            .drop_stale_front(|token, deadline| d.timer_deadline(token) == Some(deadline));
        let next = if st.kept.is_empty() {
            st.timers.next_deadline().unwrap_or(Clock::NEVER)
        } else {
            // Watches that kept their readiness want the next turn now; the
            // kernel will not make the epoll fd readable for them.
            0
        };
        // Relaxed: see `next_timeout`.
        self.next_deadline.store(next, Ordering::Relaxed);
        next
    }

    fn epoll_ctl(&self, op: libc::c_int, fd: RawFd, token: Token, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events,
            u64: token.as_u64(),
        };
        // SAFETY: `ev` is a valid epoll_event; a bad fd is an error return.
        cvt(unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }

    /// One more stale entry in the timer heap, for the compaction estimate.
    /// A plain load and store, no locked instruction: concurrent cancels may
    /// lose an increment, which only delays a compaction a little.
    fn count_stale_timer(&self) {
        // Relaxed: an estimate (see `stale_timers`).
        let n = self.stale_timers.load(Ordering::Relaxed);
        self.stale_timers.store(n + 1, Ordering::Relaxed);
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
            // A loop asleep until its earliest timer, no later than this
            // one, takes it in when it wakes; a sleeping loop is woken
            // anyway once hand-overs pile up.
            self.signals
                .wake
                .notify_due(deadline, || self.commands.len() >= COMMAND_BACKLOG);
        }
    }

    /// The loop: one wait, then every event and due timer dispatched.
    pub(crate) fn run_once(&self, d: &dyn Dispatch, timeout: Option<Duration>) -> Result<usize> {
        let Some(_guard) = self.driver.enter() else {
            return Err(Error::Unsupported(Unsupported::LoopBusy));
        };
        let mut tally = Tally::default();
        // The state is borrowed twice a turn when no timer is due (three
        // times when one is): before the callbacks, to wait and take the
        // batch, and after them, to put the buffers back and take the due
        // timers. A callback may borrow it in between (a timer registered
        // from a callback goes straight into the queue), so no borrow spans
        // user code. (It was five borrows, each a thread-local read and the
        // borrow flag's load and store.)
        let (mut events, kept, mut kept_next) = self
            .driver
            .with(|st| {
                let r = self.wait_for_events(st, d, timeout);
                st.waits += 1;
                let (sq_full, cq_overflow) = st.waiter.pressure();
                self.sq_full.set(sq_full);
                self.cq_overflow.set(cq_overflow);
                r.map(|()| {
                    (
                        std::mem::take(&mut st.events),
                        std::mem::take(&mut st.kept),
                        std::mem::take(&mut st.kept_next),
                    )
                })
            })
            .expect("the driving thread can borrow its state")
            .map_err(Error::Backend)?;
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
                    let mut keep = false;
                    let r = d.dispatch_ready(token, revents, &mut keep);
                    if matches!(r, Ok(Occurred::Stale(_))) {
                        stale.push(token);
                    }
                    if keep {
                        kept_next.push((token, revents));
                    }
                    tally.note(r);
                }
            }
        }
        // Watches that kept their readiness last turn run again, without the
        // kernel (a watch that also had a new edge above runs twice: it was
        // ready both times). One that ended meanwhile is skipped, uncounted.
        let mut kept = kept;
        for (token, revents) in kept.drain(..) {
            let mut keep = false;
            if let Some(r) = d.redispatch(token, revents, &mut keep) {
                if keep {
                    kept_next.push((token, revents));
                }
                tally.note(r);
            }
        }
        let due = self
            .driver
            .with(|st| {
                st.events = events; // keep the capacity
                st.kept = kept_next;
                st.kept_next = kept;
                if !stale.is_empty() || !st.stale.is_empty() {
                    self.watch_for_orphans(st, &stale);
                }
                // No timers, no clock read.
                if let Some(next) = st.timers.next_deadline() {
                    let now = self.clock.now();
                    if next <= now {
                        let mut due = std::mem::take(&mut st.due);
                        st.timers.pop_due(now, &mut due);
                        return Some((due, now));
                    }
                }
                // No timer callback runs this turn: the queue's front is
                // final, publish it now (without a third borrow).
                self.publish_next(st, d);
                None
            })
            .expect("the driving thread can borrow its state");
        if let Some((mut due, now)) = due {
            d.fire_due(&due, now, &mut tally);
            due.clear();
            self.driver.with(|st| {
                st.due = due; // keep the capacity
                self.publish_next(st, d);
            });
        }
        tally.finish()
    }

    /// The waiting half of a turn. First a look that does not block: when
    /// something is ready (a busy loop) that is the whole of it, one system
    /// call with no clock read, no kernel timeout to set up and no wake-up
    /// handshake (measured: those were a fifth of a one-fd turn). Only when
    /// nothing is ready does the loop arm the wake-up, take in the timers
    /// handed over meanwhile, read the clock for the next deadline, and
    /// block. A `Some(Duration::ZERO)` turn (a nesting host's) reads the set
    /// once and leaves nothing in flight.
    fn wait_for_events(
        &self,
        st: &mut LoopState<W>,
        d: &dyn Dispatch,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        let epfd = self.epfd.as_raw_fd();
        self.apply_commands(st);
        if st.timers.len() > 64
            && self.stale_timers.load(Ordering::Relaxed) as usize > st.timers.len() / 2
        {
            // Relaxed: an estimate that only schedules a clean-up.
            self.stale_timers.store(0, Ordering::Relaxed);
            st.timers
                .compact(|t, deadline| d.timer_deadline(t) == Some(deadline));
        }
        if timeout == Some(Duration::ZERO) {
            return st.waiter.wait(epfd, timeout, &mut st.events);
        }
        st.waiter.probe(epfd, &mut st.events)?;
        if !st.events.is_empty() || !st.kept.is_empty() {
            // Events to dispatch, or watches that kept their readiness:
            // this turn does not sleep.
            return Ok(());
        }
        // Nothing ready: this turn may sleep. Arm the wake-up first, so a
        // change made from now on writes the eventfd; then look again at
        // what other threads handed over (see `WakeFd::arm`).
        // It wakes on its own by the earliest timer queued now (taking in
        // more below can only make that earlier).
        let until = st.timers.next_deadline().unwrap_or(Clock::NEVER);
        self.signals.wake.arm_until(until);
        self.apply_commands(st);
        // No timers, no clock read.
        let until_timer = st
            .timers
            .next_deadline()
            .map(|d| Duration::from_nanos(d.saturating_sub(self.clock.now())));
        // (A stop request wrote the wake-up eventfd: this wait returns at
        // once, and `run` then sees the flag.)
        let wait = match (timeout, until_timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let r = if wait == Some(Duration::ZERO) {
            Ok(())
        } else {
            self.block(st, wait)
        };
        self.signals.wake.disarm();
        r
    }

    /// Blocks at most `timeout`. A wait interrupted before it found anything
    /// is made again with what is left of the timeout: io_uring's task work
    /// interrupts blocking system calls of the thread that owns a ring (one
    /// being torn down included) with EINTR, and a `run_once` must not
    /// return early for that. (A signal that should end the wait can call
    /// [`Waker::wake`](crate::Waker::wake), which is async-signal-safe.)
    fn block(&self, st: &mut LoopState<W>, timeout: Option<Duration>) -> io::Result<()> {
        let epfd = self.epfd.as_raw_fd();
        // About to sleep: a clock read costs nothing that matters here.
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
        // The common case, nothing handed over, in two loads.
        if self.commands.is_empty() {
            return;
        }
        while let Some(TimerCommand(token, deadline)) = self.commands.pop() {
            st.timers.push(deadline, token);
        }
    }

    /// Runs the loop until [`Signals::stop`] is called.
    pub(crate) fn run(&self, d: &dyn Dispatch) -> Result<()> {
        loop {
            // Acquire: pairs with the Release in `stop`. The load first: a
            // swap on every turn would be a locked instruction for a flag
            // that is almost always clear; only a set flag is consumed.
            if self.signals.stop.load(Ordering::Acquire)
                && self.signals.stop.swap(false, Ordering::Acquire)
            {
                return Ok(());
            }
            self.run_once(d, None)?;
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
        self.count_stale_timer();
        Ok(())
    }

    fn timeout_deregister(&self, _: Token, _: BackendReg) {
        self.count_stale_timer();
    }

    fn timer_register_needs_ctrl(&self) -> bool {
        false
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
}

/// The engine's view of a built-in loop.
pub(crate) trait BuiltinLoop: Send + Sync {
    fn run_once(&self, d: &dyn Dispatch, timeout: Option<Duration>) -> Result<usize>;
    fn run(&self, d: &dyn Dispatch) -> Result<()>;
    fn signals(&self) -> StdArc<Signals>;
    /// The epoll set: readable whenever a wait would return at once.
    fn epoll_fd(&self) -> BorrowedFd<'_>;
    /// Time until the earliest live timer (never later than the true
    /// answer: a timer being changed right now may make it earlier).
    fn next_timeout(&self, d: &dyn Dispatch) -> Option<Duration>;
}

impl<W: Waiter> BuiltinLoop for Builtin<W> {
    fn run_once(&self, d: &dyn Dispatch, timeout: Option<Duration>) -> Result<usize> {
        Builtin::run_once(self, d, timeout)
    }
    fn run(&self, d: &dyn Dispatch) -> Result<()> {
        Builtin::run(self, d)
    }
    fn signals(&self) -> StdArc<Signals> {
        StdArc::clone(&self.signals)
    }
    fn epoll_fd(&self) -> BorrowedFd<'_> {
        self.signals.wake.set_nested();
        self.epfd.as_fd()
    }
    fn next_timeout(&self, d: &dyn Dispatch) -> Option<Duration> {
        self.signals.wake.set_nested();
        let deadline = match self.driver.enter() {
            // Nobody runs the loop (a host between two `run_once` calls):
            // take in the timers other threads handed over, and look.
            Some(_guard) => self
                .driver
                .with(|st| {
                    self.apply_commands(st);
                    self.publish_next(st, d)
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
