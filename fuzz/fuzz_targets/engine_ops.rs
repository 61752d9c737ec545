//! Fuzz target: arbitrary sequences of register / modify / deregister /
//! occurred calls, with live, stale and forged tokens, against an evnexus
//! [`Engine`] in hooks mode, each result checked against a small reference
//! model after every operation.
//!
//! The engine is built with `Engine::with_hooks` or the builder
//! (`first_generation` near `Generation::MAX` so slots retire,
//! `max_registrations` so `Error::Full` happens, `recheck_fds`). The ops
//! (see [`Op`]): register an fd (open socket pair, negative, closed or any
//! fd) or a timer; modify / reset, deregister / cancel / drop a handle;
//! `occurred_fd` and `occurred_timeout` with live, dead (history), forged
//! and wrong-kind tokens and right or wrong fds; arm a callback to report
//! itself again, modify or deregister itself, or panic on its next run;
//! make the next register/modify hook fail (error or panic), the next
//! deregister hook panic, or the next register hook report its own token
//! before returning.
//!
//! What is checked after every op:
//! - the op's return value (`Occurred::*`, `Error::*`, `bool`s of
//!   deregister/cancel) and, for stale or forged tokens, the exact
//!   [`StaleReason`] (the model mirrors `Engine::resolve`, `Slot::begin_fd`
//!   and `Slot::begin_timer`, arena geometry included);
//! - every callback run: which callback, how often (never for a stale
//!   token; a timer at most once), `ev.token()`, `ev.fd()`,
//!   `ev.readiness()`, `ev.deadline()`, `ev.engine()`, and what the
//!   callback's own re-entrant calls returned;
//! - the exact sequence of hook calls (fd_register/fd_deregister pairing,
//!   timeout_deregister only for cancelled timers, none for a failed or
//!   refused registration, hook values dropped exactly once), and the
//!   application loop's own table of what it watches;
//! - `engine.stats()` against the model's totals;
//! - `is_live()`/`is_pending()` of every handle; callbacks dropped exactly
//!   when their registration ends; tokens never handed out twice; a slot
//!   retired at `Generation::MAX` never reused; `Error::Full` exactly when
//!   live plus retired slots reach the limit.
#![no_main]

use arbitrary::Arbitrary;
use evnexus::{
    BackendKind, Engine, Error, FdEvent, FdWatch, Generation, Interest, Occurred, OsEventHooks,
    Readiness, StaleReason, Timer, TimerEvent, Token, MAX_SLOTS,
};
use libfuzzer_sys::fuzz_target;
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock};
use std::time::{Duration, Instant};

/// Most ops run per input: keeps each run small and fast.
const MAX_OPS: usize = 256;
/// Most re-entrant actions a callback performs in one run.
const MAX_ACTIONS: usize = 4;

/// Token layout, mirrored from src/token.rs.
const INDEX_BITS: u32 = 24;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
const _: () = assert!(Token::INDEX_BITS == INDEX_BITS);
/// Arena geometry, mirrored from src/arena.rs: page k holds 32 << k slots,
/// allocated when an index in it is first claimed. An index whose page
/// does not exist resolves to nothing (`StaleReason::OutOfRange`).
const FIRST_PAGE_SHIFT: u32 = 5;

const INJECTED: &str = "evnexus-fuzz: injected hook failure";
const DELIBERATE: &str = "evnexus-fuzz: deliberate callback panic";
const HOOK_PANIC: &str = "evnexus-fuzz: deliberate hook panic";

// ----- input ---------------------------------------------------------------

#[derive(Arbitrary, Debug)]
struct Input {
    config: Config,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
struct Config {
    first_gen: FirstGen,
    /// `Builder::max_registrations`, when set.
    limit: Option<u8>,
    /// At the end: drop the engine while handles are still alive (else drop
    /// the handles first).
    drop_engine_first: bool,
    /// `Builder::recheck_fds(true)`: each fd event is re-checked with
    /// `poll(fd, 0)` against the watch's interest, which makes the interest
    /// the engine holds observable. Only the target's own socket pairs are
    /// registered then (their readiness does not change by itself).
    recheck: bool,
}

#[derive(Arbitrary, Debug)]
enum FirstGen {
    /// `Engine::with_hooks` (or the builder without `first_generation`).
    Default,
    /// `Generation::MAX - (k % 4)`: slots retire after a few reuses.
    NearMax(u8),
    Any(u64),
}

#[derive(Arbitrary, Debug)]
enum Op {
    RegisterFd {
        fd: FdChoice,
        interest: u16,
    },
    RegisterTimer {
        delay_ms: u16,
    },
    ModifyFd {
        which: u8,
        interest: u16,
    },
    ResetTimer {
        which: u8,
        delay_ms: u16,
    },
    DeregisterFd {
        which: u8,
        by_drop: bool,
    },
    CancelTimer {
        which: u8,
        by_drop: bool,
    },
    OccurredFd {
        token: TokenChoice,
        fd: FdSel,
        revents: u16,
    },
    OccurredTimeout {
        token: TokenChoice,
    },
    /// What a live registration's callback does on its next run.
    Arm {
        which: u8,
        actions: Vec<Action>,
    },
    /// What the next registration's callback does on its first run (which
    /// may come from inside its register hook).
    ArmNew {
        actions: Vec<Action>,
    },
    /// The next fallible hook call (register, modify) returns an error, or
    /// panics.
    FailNextHook {
        panic: bool,
    },
    /// The next deregister hook panics (after doing its work).
    PanicNextDeregisterHook,
    /// The next register hook reports its token before returning (an event
    /// "may be reported as soon as this hook has been entered").
    ReportInNextRegisterHook {
        revents: u16,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum FdChoice {
    /// One of the open pipe ends.
    Pipe(u8),
    Negative(i32),
    /// A closed or never-opened fd number.
    Unopened(u8),
    Any(i32),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum TokenChoice {
    LiveFd(u8),
    LiveTimer(u8),
    /// Any token ever handed out (live, ended, failed registration).
    History(u8),
    Forged(Forge),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Forge {
    Raw(u64),
    Slot {
        index: u16,
        gen: GenChoice,
    },
    /// A token from history with index and generation nudged.
    Near {
        which: u8,
        dindex: i8,
        dgen: i8,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum GenChoice {
    Zero,
    First,
    Configured(u8),
    Max(u8),
    Any(u64),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum FdSel {
    /// The registration's own fd.
    Right,
    Pipe(u8),
    Any(i32),
}

/// One thing a callback does from inside its run.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Action {
    /// `ev.deregister()` (fd watches only; timers skip it).
    Deregister,
    /// Report its own token again: `occurred_fd` (with its fd or another)
    /// or `occurred_timeout`.
    Report {
        as_timeout: bool,
        wrong_fd: bool,
        revents: u16,
    },
    /// `ev.modify(interest)` (fd watches only).
    Modify { interest: u16 },
    /// Panic (ends the run).
    Panic,
}

// ----- comparable results ----------------------------------------------------

type Res<T> = Result<T, ErrRepr>;

#[derive(Debug, Clone, PartialEq)]
enum ErrRepr {
    BadFd(RawFd),
    Gone,
    Full(usize),
    /// `Error::Backend` from the injected hook error.
    Injected,
    /// `Error::Backend` from the injected hook panic.
    HookPanicked,
    Backend(String),
    Reentrant,
    Panicked(u64, String),
    Other(String),
}

fn repr<T>(r: evnexus::Result<T>) -> Res<T> {
    r.map_err(|e| match e {
        Error::BadFd(fd) => ErrRepr::BadFd(fd),
        Error::Gone => ErrRepr::Gone,
        Error::Full { limit } => ErrRepr::Full(limit),
        Error::Backend(e) => {
            let message = e.to_string();
            if message == INJECTED {
                ErrRepr::Injected
            } else if message.contains(HOOK_PANIC) {
                ErrRepr::HookPanicked
            } else {
                ErrRepr::Backend(message)
            }
        }
        Error::Reentrant => ErrRepr::Reentrant,
        Error::CallbackPanicked(p) => ErrRepr::Panicked(p.token.as_u64(), p.message),
        other => ErrRepr::Other(other.to_string()),
    })
}

fn interest_of(bits: u16) -> Interest {
    Interest::from_poll_events(bits as i16)
}

fn readiness_of(bits: u16) -> Readiness {
    Readiness::from_poll_revents(bits as i16)
}

/// An fd that is not `fd`.
fn other_fd(fd: RawFd) -> RawFd {
    fd.wrapping_add(1)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn token_index(t: u64) -> u32 {
    (t & INDEX_MASK) as u32
}

fn token_gen(t: u64) -> u64 {
    t >> INDEX_BITS
}

fn make_token(index: u64, gen: u64) -> u64 {
    ((gen & Generation::MAX.get()) << INDEX_BITS) | (index & INDEX_MASK)
}

fn page_of(index: u32) -> u32 {
    let shifted = index as u64 + (1 << FIRST_PAGE_SHIFT);
    63 - shifted.leading_zeros() - FIRST_PAGE_SHIFT
}

// ----- real fds ----------------------------------------------------------------

struct Fds {
    open: Vec<RawFd>,
    unopened: Vec<RawFd>,
}

fn fds() -> &'static Fds {
    static FDS: OnceLock<Fds> = OnceLock::new();
    FDS.get_or_init(|| {
        let mut open = Vec::new();
        for _ in 0..2 {
            let (a, b) = UnixStream::pair().expect("socketpair");
            // Leaked on purpose: open for the whole process.
            open.push(a.into_raw_fd());
            open.push(b.into_raw_fd());
        }
        let (a, b) = UnixStream::pair().expect("socketpair");
        // Closed now; the number may be reused later (libFuzzer opens
        // files), which is why the model asks fcntl at each use.
        let closed = vec![a.into_raw_fd(), b.into_raw_fd()];
        for &fd in &closed {
            // SAFETY: `fd` came from `into_raw_fd` just above and nothing
            // else owns it; it is closed exactly once.
            unsafe { libc::close(fd) };
        }
        let mut unopened = closed;
        unopened.extend([i32::MAX, i32::MAX - 1, 1 << 30, 1 << 20]);
        Fds { open, unopened }
    })
}

/// What `poll(fd, 0)` finds of `interest` now (plus the conditions poll
/// always reports), or `None` if nothing: the engine's re-check.
fn poll_now(fd: RawFd, interest: Interest) -> Option<u16> {
    let always = (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) as u16;
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: interest.as_poll_events(),
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd and the timeout is zero.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        if n >= 0 {
            let relevant = pfd.revents as u16 & (interest.as_poll_events() as u16 | always);
            return (n > 0 && relevant != 0).then_some(relevant);
        }
        assert_eq!(
            io::Error::last_os_error().kind(),
            io::ErrorKind::Interrupted
        );
    }
}

fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor flags; any int is a valid
    // argument and an unopened one yields EBADF.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1
}

// ----- the application's loop: recording hooks -------------------------------

#[derive(Debug, Clone, PartialEq)]
enum HookCall {
    FdRegister {
        token: u64,
        fd: RawFd,
        interest: Interest,
        ok: bool,
    },
    FdModify {
        token: u64,
        fd: RawFd,
        interest: Interest,
        ok: bool,
    },
    FdDeregister {
        token: u64,
        fd: RawFd,
    },
    TimeoutRegister {
        token: u64,
        deadline: Instant,
        ok: bool,
    },
    TimeoutModify {
        token: u64,
        deadline: Instant,
        ok: bool,
    },
    TimeoutDeregister {
        token: u64,
    },
    /// The application's per-registration value was dropped.
    Dropped {
        token: u64,
    },
    /// The register hook reported its token itself, with this result.
    ReportedInHook {
        token: u64,
        result: Res<Occurred>,
    },
}

impl HookCall {
    fn token(&self) -> u64 {
        match *self {
            HookCall::FdRegister { token, .. }
            | HookCall::FdModify { token, .. }
            | HookCall::FdDeregister { token, .. }
            | HookCall::TimeoutRegister { token, .. }
            | HookCall::TimeoutModify { token, .. }
            | HookCall::TimeoutDeregister { token }
            | HookCall::Dropped { token }
            | HookCall::ReportedInHook { token, .. } => token,
        }
    }
}

#[derive(Default)]
struct HookState {
    log: Vec<HookCall>,
    /// The next register/modify hook fails: `Some(true)` by panicking.
    fail_next: Option<bool>,
    panic_next_deregister: bool,
    report_next: Option<u16>,
    /// Address of the harness's engine while it is alive, else 0.
    engine: usize,
    fd_live: HashMap<u64, (RawFd, Interest)>,
    timer_live: HashMap<u64, Instant>,
    /// Every token a register hook was ever given.
    seen: HashSet<u64>,
    values_made: usize,
    values_dropped: usize,
}

#[derive(Clone, Default)]
struct RecHooks(Arc<Mutex<HookState>>);

struct FdReg {
    token: u64,
    fd: RawFd,
    interest: Interest,
    hooks: Arc<Mutex<HookState>>,
}

impl Drop for FdReg {
    fn drop(&mut self) {
        let mut st = lock(&self.hooks);
        st.values_dropped += 1;
        st.log.push(HookCall::Dropped { token: self.token });
    }
}

struct TimeoutReg {
    token: u64,
    hooks: Arc<Mutex<HookState>>,
}

impl Drop for TimeoutReg {
    fn drop(&mut self) {
        let mut st = lock(&self.hooks);
        st.values_dropped += 1;
        // A timeout that occurred is over for the application without a
        // timeout_deregister: the engine just drops the value.
        st.timer_live.remove(&self.token);
        st.log.push(HookCall::Dropped { token: self.token });
    }
}

/// The injected failure of a register or modify hook: an error, or a panic
/// (which the engine turns into an error).
fn injected_failure<T>(panic: bool) -> io::Result<T> {
    if panic {
        std::panic::panic_any(HOOK_PANIC);
    }
    Err(io::Error::other(INJECTED))
}

/// A deregister hook panics, if asked to, after it has done its work.
fn maybe_panic_in_deregister(mut st: MutexGuard<'_, HookState>) {
    if std::mem::take(&mut st.panic_next_deregister) {
        drop(st);
        std::panic::panic_any(HOOK_PANIC);
    }
}

fn with_engine<R>(addr: usize, f: impl FnOnce(&Engine) -> R) -> R {
    assert_ne!(
        addr, 0,
        "a register hook was asked to report with no engine"
    );
    // SAFETY: `addr` is the address of the harness's `Engine` (a local of
    // `run` that is never moved), stored right after it was built and reset
    // to 0 before it is dropped. Hooks run on the harness's own thread,
    // inside a call on that very engine, so it is alive here and only ever
    // borrowed shared.
    f(unsafe { &*(addr as *const Engine) })
}

impl RecHooks {
    /// Takes the in-hook report request and checks the token is fresh.
    fn begin_register(&self, token: Token) -> (Option<u16>, usize) {
        let mut st = lock(&self.0);
        assert!(
            st.seen.insert(token.as_u64()),
            "register hook: token {token:?} was handed out before"
        );
        (st.report_next.take(), st.engine)
    }
}

impl OsEventHooks for RecHooks {
    type FdReg = FdReg;
    type TimeoutReg = TimeoutReg;

    fn fd_register(&self, fd: RawFd, interest: Interest, token: Token) -> io::Result<FdReg> {
        let t = token.as_u64();
        assert!(fd >= 0, "fd_register with fd {fd}");
        let (report, engine) = self.begin_register(token);
        if let Some(revents) = report {
            let result = with_engine(engine, |e| e.occurred_fd(token, fd, readiness_of(revents)));
            let result = repr(result);
            lock(&self.0)
                .log
                .push(HookCall::ReportedInHook { token: t, result });
        }
        let mut st = lock(&self.0);
        let fail = st.fail_next.take();
        let ok = fail.is_none();
        st.log.push(HookCall::FdRegister {
            token: t,
            fd,
            interest,
            ok,
        });
        if let Some(panic) = fail {
            drop(st);
            return injected_failure(panic);
        }
        assert!(st.fd_live.insert(t, (fd, interest)).is_none());
        st.values_made += 1;
        Ok(FdReg {
            token: t,
            fd,
            interest,
            hooks: Arc::clone(&self.0),
        })
    }

    fn fd_modify(&self, fd: RawFd, reg: &mut FdReg, interest: Interest) -> io::Result<()> {
        let mut st = lock(&self.0);
        assert_eq!(fd, reg.fd, "fd_modify: fd differs from the registered one");
        assert_eq!(
            st.fd_live.get(&reg.token),
            Some(&(reg.fd, reg.interest)),
            "fd_modify of a watch the loop does not have"
        );
        let fail = st.fail_next.take();
        let ok = fail.is_none();
        st.log.push(HookCall::FdModify {
            token: reg.token,
            fd,
            interest,
            ok,
        });
        if let Some(panic) = fail {
            drop(st);
            return injected_failure(panic);
        }
        reg.interest = interest;
        st.fd_live.insert(reg.token, (fd, interest));
        Ok(())
    }

    fn fd_deregister(&self, fd: RawFd, reg: FdReg) {
        {
            let mut st = lock(&self.0);
            assert_eq!(
                fd, reg.fd,
                "fd_deregister: fd differs from the registered one"
            );
            assert_eq!(
                st.fd_live.remove(&reg.token),
                Some((reg.fd, reg.interest)),
                "fd_deregister of a watch the loop does not have"
            );
            st.log.push(HookCall::FdDeregister {
                token: reg.token,
                fd,
            });
            maybe_panic_in_deregister(st);
        }
        drop(reg);
    }

    fn timeout_register(&self, deadline: Instant, token: Token) -> io::Result<TimeoutReg> {
        let t = token.as_u64();
        let (report, engine) = self.begin_register(token);
        if let Some(_revents) = report {
            let result = repr(with_engine(engine, |e| e.occurred_timeout(token)));
            lock(&self.0)
                .log
                .push(HookCall::ReportedInHook { token: t, result });
        }
        let mut st = lock(&self.0);
        let fail = st.fail_next.take();
        let ok = fail.is_none();
        st.log.push(HookCall::TimeoutRegister {
            token: t,
            deadline,
            ok,
        });
        if let Some(panic) = fail {
            drop(st);
            return injected_failure(panic);
        }
        assert!(st.timer_live.insert(t, deadline).is_none());
        st.values_made += 1;
        Ok(TimeoutReg {
            token: t,
            hooks: Arc::clone(&self.0),
        })
    }

    fn timeout_modify(&self, reg: &mut TimeoutReg, deadline: Instant) -> io::Result<()> {
        let mut st = lock(&self.0);
        assert!(
            st.timer_live.contains_key(&reg.token),
            "timeout_modify of a timeout the loop does not have"
        );
        let fail = st.fail_next.take();
        let ok = fail.is_none();
        st.log.push(HookCall::TimeoutModify {
            token: reg.token,
            deadline,
            ok,
        });
        if let Some(panic) = fail {
            drop(st);
            return injected_failure(panic);
        }
        st.timer_live.insert(reg.token, deadline);
        Ok(())
    }

    fn timeout_deregister(&self, reg: TimeoutReg) {
        {
            let mut st = lock(&self.0);
            assert!(
                st.timer_live.remove(&reg.token).is_some(),
                "timeout_deregister of a timeout the loop does not have"
            );
            st.log
                .push(HookCall::TimeoutDeregister { token: reg.token });
            maybe_panic_in_deregister(st);
        }
        drop(reg);
    }
}

// ----- callbacks ----------------------------------------------------------------

/// What one callback run saw and did.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    token: u64,
    engine: usize,
    what: RunKind,
    results: Vec<ActionResult>,
}

#[derive(Debug, Clone, PartialEq)]
enum RunKind {
    Fd { fd: RawFd, readiness: u16 },
    Timer { deadline: Instant },
}

#[derive(Debug, Clone, PartialEq)]
enum ActionResult {
    Deregistered(bool),
    Reported(Res<Occurred>),
    Modified(Res<()>),
    Skipped,
}

#[derive(Default)]
struct CbState {
    /// Actions for the next run (taken at its start).
    next: Vec<Action>,
    runs: Vec<Run>,
}

/// Counts shared by every callback of one input.
#[derive(Default)]
struct Counters {
    runs: AtomicUsize,
    drops: AtomicUsize,
}

/// What a callback captures; dropping it marks the callback dropped.
struct Captured {
    state: Arc<Mutex<CbState>>,
    dropped: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

impl Drop for Captured {
    fn drop(&mut self) {
        assert!(
            !self.dropped.swap(true, Ordering::Relaxed),
            "callback dropped twice"
        );
        self.counters.drops.fetch_add(1, Ordering::Relaxed);
    }
}

fn fd_callback(cap: Captured) -> impl FnMut(&FdEvent<'_>) + Send + 'static {
    move |ev| {
        let cap = &cap;
        cap.counters.runs.fetch_add(1, Ordering::Relaxed);
        let actions = std::mem::take(&mut lock(&cap.state).next);
        let mut results = Vec::new();
        let mut panic = false;
        for action in actions {
            let result = match action {
                Action::Deregister => ActionResult::Deregistered(ev.deregister()),
                Action::Report {
                    as_timeout: true, ..
                } => ActionResult::Reported(repr(ev.engine().occurred_timeout(ev.token()))),
                Action::Report {
                    wrong_fd, revents, ..
                } => {
                    let fd = if wrong_fd { other_fd(ev.fd()) } else { ev.fd() };
                    let r = ev
                        .engine()
                        .occurred_fd(ev.token(), fd, readiness_of(revents));
                    ActionResult::Reported(repr(r))
                }
                Action::Modify { interest } => {
                    ActionResult::Modified(repr(ev.modify(interest_of(interest))))
                }
                Action::Panic => {
                    panic = true;
                    break;
                }
            };
            results.push(result);
        }
        lock(&cap.state).runs.push(Run {
            token: ev.token().as_u64(),
            engine: ev.engine() as *const Engine as usize,
            what: RunKind::Fd {
                fd: ev.fd(),
                readiness: ev.readiness().as_poll_revents() as u16,
            },
            results,
        });
        if panic {
            std::panic::panic_any(DELIBERATE);
        }
    }
}

fn timer_callback(cap: Captured) -> impl FnOnce(&TimerEvent<'_>) + Send + 'static {
    move |ev| {
        let cap = cap;
        cap.counters.runs.fetch_add(1, Ordering::Relaxed);
        let actions = std::mem::take(&mut lock(&cap.state).next);
        let mut results = Vec::new();
        let mut panic = false;
        for action in actions {
            let result = match action {
                Action::Deregister | Action::Modify { .. } => ActionResult::Skipped,
                Action::Report {
                    as_timeout: true, ..
                } => ActionResult::Reported(repr(ev.engine().occurred_timeout(ev.token()))),
                Action::Report { revents, .. } => {
                    let r =
                        ev.engine()
                            .occurred_fd(ev.token(), fds().open[0], readiness_of(revents));
                    ActionResult::Reported(repr(r))
                }
                Action::Panic => {
                    panic = true;
                    break;
                }
            };
            results.push(result);
        }
        lock(&cap.state).runs.push(Run {
            token: ev.token().as_u64(),
            engine: ev.engine() as *const Engine as usize,
            what: RunKind::Timer {
                deadline: ev.deadline(),
            },
            results,
        });
        if panic {
            std::panic::panic_any(DELIBERATE);
        }
        // `cap` drops here (or while unwinding): the timer's callback is gone.
    }
}

// ----- the model ------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Kind {
    Fd { fd: RawFd, interest: Interest },
    Timer { deadline: Instant },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RegState {
    Live,
    /// Ended, slot not yet torn down (only inside an op).
    Dead,
    /// Torn down (or never made it).
    Gone,
}

enum Handle {
    Fd(FdWatch),
    Timer(Timer),
}

struct Reg {
    token: u64,
    kind: Kind,
    state: RegState,
    fired: bool,
    handle: Option<Handle>,
    cb: Arc<Mutex<CbState>>,
    dropped: Arc<AtomicBool>,
    /// Mirror of `cb.next`.
    next: Vec<Action>,
    expect_runs: Vec<Run>,
}

impl Reg {
    fn fd(&self) -> RawFd {
        match self.kind {
            Kind::Fd { fd, .. } => fd,
            Kind::Timer { .. } => panic!("model: fd of a timer"),
        }
    }
    fn is_timer(&self) -> bool {
        matches!(self.kind, Kind::Timer { .. })
    }
}

#[derive(Default, Debug, PartialEq, Eq, Clone, Copy)]
struct MStats {
    dispatched: u64,
    reruns: u64,
    stale_generation: u64,
    stale_fd_mismatch: u64,
    stale_out_of_range: u64,
    stale_wrong_kind: u64,
    recheck_suppressed: u64,
    panicked: u64,
    registered: u64,
    deregistered: u64,
    retired: u64,
}

impl MStats {
    fn of(engine: &Engine) -> MStats {
        let s = engine.stats();
        MStats {
            dispatched: s.dispatched,
            reruns: s.reruns,
            stale_generation: s.stale.generation,
            stale_fd_mismatch: s.stale.fd_mismatch,
            stale_out_of_range: s.stale.out_of_range,
            stale_wrong_kind: s.stale.wrong_kind,
            recheck_suppressed: s.recheck_suppressed,
            panicked: s.panicked,
            registered: s.registered,
            deregistered: s.deregistered,
            retired: s.retired_slots,
        }
    }
    fn stale(&mut self, reason: StaleReason) {
        match reason {
            StaleReason::Generation => self.stale_generation += 1,
            StaleReason::FdMismatch => self.stale_fd_mismatch += 1,
            StaleReason::OutOfRange => self.stale_out_of_range += 1,
            StaleReason::WrongKind => self.stale_wrong_kind += 1,
        }
    }
}

/// What the engine resolves a token to.
enum View {
    OutOfRange,
    /// The slot exists but does not hold this token's registration.
    NotHeld,
    Held {
        reg: usize,
        dead: bool,
        busy: bool,
    },
}

/// What an `occurred_*` call should do.
enum Expect {
    Stale(StaleReason),
    Deferred,
    Dispatch(usize),
}

struct Model {
    engine: usize,
    limit: usize,
    first_gen: u64,
    /// Fresh indices handed out: `0..claimed`.
    claimed: u32,
    last_gen: HashMap<u32, u64>,
    /// Index -> registration whose slot it is (until torn down).
    slot_of: HashMap<u32, usize>,
    retired: u64,
    issued: HashSet<u64>,
    regs: Vec<Reg>,
    stats: MStats,
    /// Mirror of the hooks' flags.
    fail_next: Option<bool>,
    panic_next_deregister: bool,
    report_next: Option<u16>,
    recheck: bool,
    /// Actions for the callback of the next registration.
    arm_new: Vec<Action>,
    /// The registration whose callback runs now (inside an op).
    busy: Option<usize>,
    expect_hooks: Vec<HookCall>,
    callbacks_made: usize,
    runs: usize,
    /// Registrations whose runs are to be compared after this op.
    touched: Vec<usize>,
    t0: Instant,
}

impl Model {
    fn live_slots(&self) -> usize {
        self.slot_of.len()
    }

    fn is_full(&self) -> bool {
        self.live_slots() as u64 + self.retired >= self.limit as u64
    }

    fn page_exists(&self, index: u32) -> bool {
        self.claimed > 0 && page_of(index) <= page_of(self.claimed - 1)
    }

    fn view(&self, t: u64) -> View {
        let index = token_index(t);
        if token_gen(t) == 0 || index as usize >= self.limit || !self.page_exists(index) {
            return View::OutOfRange;
        }
        match self.slot_of.get(&index) {
            Some(&r) if self.regs[r].token == t => View::Held {
                reg: r,
                dead: self.regs[r].state == RegState::Dead,
                busy: self.busy == Some(r),
            },
            _ => View::NotHeld,
        }
    }

    /// `occurred_fd`: `Engine::resolve`, then `Slot::begin_fd`'s order of
    /// checks (holds, kind, fd, dead, busy); a wrong fd on a registration
    /// that has ended (but whose callback still runs) is `Generation`.
    fn expect_fd(&self, t: u64, fd: RawFd) -> Expect {
        match self.view(t) {
            View::OutOfRange => Expect::Stale(StaleReason::OutOfRange),
            View::NotHeld => Expect::Stale(StaleReason::Generation),
            View::Held { reg, dead, busy } => {
                let r = &self.regs[reg];
                if r.is_timer() {
                    Expect::Stale(StaleReason::WrongKind)
                } else if r.fd() != fd && !dead {
                    Expect::Stale(StaleReason::FdMismatch)
                } else if dead {
                    Expect::Stale(StaleReason::Generation)
                } else if busy {
                    Expect::Deferred
                } else {
                    Expect::Dispatch(reg)
                }
            }
        }
    }

    /// `occurred_timeout`: `Slot::begin_timer`'s order (holds, kind, dead).
    fn expect_timeout(&self, t: u64) -> Expect {
        match self.view(t) {
            View::OutOfRange => Expect::Stale(StaleReason::OutOfRange),
            View::NotHeld => Expect::Stale(StaleReason::Generation),
            View::Held { reg, dead, busy } => {
                if !self.regs[reg].is_timer() {
                    Expect::Stale(StaleReason::WrongKind)
                } else if dead {
                    Expect::Stale(StaleReason::Generation)
                } else {
                    assert!(!busy, "model: a busy timer is always dead in hooks mode");
                    Expect::Dispatch(reg)
                }
            }
        }
    }

    /// A registration got token `t` from the arena: check it is a token
    /// never handed out, from a free or fresh slot, with the right
    /// generation, and record it.
    fn on_new_token(&mut self, t: u64, reg: usize) {
        let index = token_index(t);
        let gen = token_gen(t);
        assert!(
            (index as usize) < self.limit,
            "token {t:#x}: index beyond the limit"
        );
        assert!(self.issued.insert(t), "token {t:#x} handed out twice");
        let free_released = self.claimed as u64 - self.live_slots() as u64 - self.retired;
        match self.last_gen.get(&index) {
            Some(&last) => {
                assert!(
                    !self.slot_of.contains_key(&index),
                    "token {t:#x}: slot in use"
                );
                assert_ne!(
                    last,
                    Generation::MAX.get(),
                    "token {t:#x}: a retired slot was reused"
                );
                assert_eq!(
                    gen,
                    last + 1,
                    "token {t:#x}: generation is not the next one"
                );
            }
            None => {
                assert_eq!(
                    index, self.claimed,
                    "token {t:#x}: fresh slots are claimed in order"
                );
                assert_eq!(
                    free_released, 0,
                    "token {t:#x}: fresh slot claimed while a released one was free"
                );
                assert_eq!(gen, self.first_gen, "token {t:#x}: fresh slot generation");
                self.claimed += 1;
            }
        }
        self.last_gen.insert(index, gen);
        self.slot_of.insert(index, reg);
        self.stats.registered += 1;
    }

    /// The next register/modify hook call consumes the injected failure:
    /// what the engine then returns.
    fn take_fail(&mut self) -> Option<ErrRepr> {
        self.fail_next.take().map(|panic| {
            if panic {
                ErrRepr::HookPanicked
            } else {
                ErrRepr::Injected
            }
        })
    }

    /// Expected hook calls when the engine disposes of the application's
    /// value of an ended registration. A deregister hook that panics has
    /// done its work first, and the engine ignores the panic.
    fn dispose(&mut self, r: usize) {
        let reg = &self.regs[r];
        let token = reg.token;
        match reg.kind {
            Kind::Fd { fd, .. } => self.expect_hooks.push(HookCall::FdDeregister { token, fd }),
            Kind::Timer { .. } if !reg.fired => self
                .expect_hooks
                .push(HookCall::TimeoutDeregister { token }),
            Kind::Timer { .. } => {
                // A fired timer's value is just dropped: no hook call.
                self.expect_hooks.push(HookCall::Dropped { token });
                return;
            }
        }
        self.panic_next_deregister = false;
        self.expect_hooks.push(HookCall::Dropped { token });
    }

    fn tear_down(&mut self, r: usize) {
        let token = self.regs[r].token;
        self.regs[r].state = RegState::Gone;
        assert_eq!(self.slot_of.remove(&token_index(token)), Some(r));
        self.stats.deregistered += 1;
        if token_gen(token) == Generation::MAX.get() {
            self.retired += 1;
            self.stats.retired += 1;
        }
        self.touched.push(r);
    }

    /// The registration ends from inside its own dispatch; with `ctrl_held`
    /// (inside its register hook) the registrant disposes of it later.
    fn end_in_dispatch(&mut self, r: usize, ctrl_held: bool) {
        self.regs[r].state = RegState::Dead;
        if !ctrl_held {
            self.dispose(r);
        }
    }

    /// One `occurred_fd` that owns the dispatch of fd watch `r`.
    fn dispatch_fd(&mut self, r: usize, revents: u16, in_register_hook: bool) -> Res<Occurred> {
        self.busy = Some(r);
        self.touched.push(r);
        let token = self.regs[r].token;
        let fd = self.regs[r].fd();
        let mut readiness = revents;
        let mut outcome = Ok(Occurred::Suppressed);
        loop {
            if self.recheck {
                let Kind::Fd { interest, .. } = self.regs[r].kind else {
                    unreachable!()
                };
                match poll_now(fd, interest) {
                    Some(now) => readiness = now,
                    None => {
                        // Nothing of the interest holds: no run, no rerun.
                        self.stats.recheck_suppressed += 1;
                        break;
                    }
                }
            }
            let actions = std::mem::take(&mut self.regs[r].next);
            let mut results = Vec::new();
            let mut pending: Option<u16> = None;
            let mut panicked = false;
            for action in actions {
                let live = self.regs[r].state == RegState::Live;
                let result = match action {
                    Action::Deregister => {
                        if live {
                            self.end_in_dispatch(r, in_register_hook);
                        }
                        ActionResult::Deregistered(live)
                    }
                    Action::Report {
                        as_timeout,
                        wrong_fd,
                        revents,
                    } => {
                        let e = if as_timeout {
                            self.expect_timeout(token)
                        } else {
                            let arg = if wrong_fd { other_fd(fd) } else { fd };
                            self.expect_fd(token, arg)
                        };
                        ActionResult::Reported(match e {
                            Expect::Stale(reason) => {
                                self.stats.stale(reason);
                                Ok(Occurred::Stale(reason))
                            }
                            Expect::Deferred => {
                                self.stats.reruns += 1;
                                pending = Some(pending.unwrap_or(0) | revents);
                                Ok(Occurred::Deferred)
                            }
                            Expect::Dispatch(_) => panic!("model: dispatch while busy"),
                        })
                    }
                    Action::Modify { interest } => {
                        let interest = interest_of(interest);
                        ActionResult::Modified(if in_register_hook {
                            Err(ErrRepr::Reentrant)
                        } else if !live {
                            Err(ErrRepr::Gone)
                        } else {
                            let fail = self.take_fail();
                            self.expect_hooks.push(HookCall::FdModify {
                                token,
                                fd,
                                interest,
                                ok: fail.is_none(),
                            });
                            match fail {
                                None => {
                                    self.regs[r].kind = Kind::Fd { fd, interest };
                                    Ok(())
                                }
                                Some(e) => Err(e),
                            }
                        })
                    }
                    Action::Panic => {
                        panicked = true;
                        break;
                    }
                };
                results.push(result);
            }
            self.regs[r].expect_runs.push(Run {
                token,
                engine: self.engine,
                what: RunKind::Fd { fd, readiness },
                results,
            });
            self.runs += 1;
            self.stats.dispatched += 1;
            if outcome.is_ok() {
                outcome = Ok(Occurred::Dispatched);
            }
            if panicked {
                self.stats.panicked += 1;
                if self.regs[r].state == RegState::Live {
                    self.end_in_dispatch(r, in_register_hook);
                }
                outcome = Err(ErrRepr::Panicked(token, DELIBERATE.into()));
            }
            match pending {
                Some(p) if self.regs[r].state == RegState::Live => readiness = p,
                _ => break,
            }
        }
        self.busy = None;
        if self.regs[r].state == RegState::Dead && !in_register_hook {
            self.tear_down(r);
        }
        outcome
    }

    /// One `occurred_timeout` that owns (fires) timer `r`.
    fn dispatch_timer(&mut self, r: usize, in_register_hook: bool) -> Res<Occurred> {
        self.busy = Some(r);
        self.touched.push(r);
        self.regs[r].state = RegState::Dead;
        self.regs[r].fired = true;
        let token = self.regs[r].token;
        let Kind::Timer { deadline } = self.regs[r].kind else {
            panic!("model: timer dispatch of an fd watch")
        };
        let actions = std::mem::take(&mut self.regs[r].next);
        let mut results = Vec::new();
        let mut panicked = false;
        for action in actions {
            let result = match action {
                Action::Deregister | Action::Modify { .. } => ActionResult::Skipped,
                Action::Report { as_timeout, .. } => {
                    let e = if as_timeout {
                        self.expect_timeout(token)
                    } else {
                        self.expect_fd(token, fds().open[0])
                    };
                    let Expect::Stale(reason) = e else {
                        panic!("model: a firing timer reported again must be stale")
                    };
                    self.stats.stale(reason);
                    ActionResult::Reported(Ok(Occurred::Stale(reason)))
                }
                Action::Panic => {
                    panicked = true;
                    break;
                }
            };
            results.push(result);
        }
        self.regs[r].expect_runs.push(Run {
            token,
            engine: self.engine,
            what: RunKind::Timer { deadline },
            results,
        });
        self.runs += 1;
        self.stats.dispatched += 1;
        self.busy = None;
        let outcome = if panicked {
            self.stats.panicked += 1;
            Err(ErrRepr::Panicked(token, DELIBERATE.into()))
        } else {
            Ok(Occurred::Dispatched)
        };
        if !in_register_hook {
            // The last one out drops the callback, then the hook value.
            self.dispose(r);
            self.tear_down(r);
        }
        outcome
    }

    fn occurred_fd(&mut self, t: u64, fd: RawFd, revents: u16) -> Res<Occurred> {
        match self.expect_fd(t, fd) {
            Expect::Stale(reason) => {
                self.stats.stale(reason);
                Ok(Occurred::Stale(reason))
            }
            Expect::Dispatch(r) => self.dispatch_fd(r, revents, false),
            Expect::Deferred => panic!("model: deferred outside any callback"),
        }
    }

    fn occurred_timeout(&mut self, t: u64) -> Res<Occurred> {
        match self.expect_timeout(t) {
            Expect::Stale(reason) => {
                self.stats.stale(reason);
                Ok(Occurred::Stale(reason))
            }
            Expect::Dispatch(r) => self.dispatch_timer(r, false),
            Expect::Deferred => panic!("model: deferred timer"),
        }
    }

    /// After a register hook ran for registration `r` (whose token the
    /// hook saw): the in-hook report, the hook's own call, and how the
    /// registration completes. Returns what `register_*`/`timer_at` should
    /// return.
    fn after_register_hook(&mut self, r: usize) -> Res<()> {
        let token = self.regs[r].token;
        if let Some(revents) = self.report_next.take() {
            let result = if self.regs[r].is_timer() {
                match self.expect_timeout(token) {
                    Expect::Dispatch(d) => self.dispatch_timer(d, true),
                    _ => panic!("model: a registering timer is dispatchable"),
                }
            } else {
                match self.expect_fd(token, self.regs[r].fd()) {
                    Expect::Dispatch(d) => self.dispatch_fd(d, revents, true),
                    _ => panic!("model: a registering watch is dispatchable"),
                }
            };
            self.expect_hooks
                .push(HookCall::ReportedInHook { token, result });
        }
        let fail = self.take_fail();
        let ok = fail.is_none();
        self.expect_hooks.push(match self.regs[r].kind {
            Kind::Fd { fd, interest } => HookCall::FdRegister {
                token,
                fd,
                interest,
                ok,
            },
            Kind::Timer { deadline } => HookCall::TimeoutRegister {
                token,
                deadline,
                ok,
            },
        });
        if let Some(e) = fail {
            // No value was made, so none is disposed of; the slot goes.
            if self.regs[r].state == RegState::Live {
                self.regs[r].state = RegState::Dead;
            }
            self.tear_down(r);
            return Err(e);
        }
        if self.regs[r].state == RegState::Dead {
            // Ended (or fired) inside the hook: the registrant, holding
            // CTRL, disposes of the value and tears down.
            self.dispose(r);
            self.tear_down(r);
        }
        Ok(())
    }

    /// Deregister / cancel from outside any callback; `true` if it ended
    /// the registration.
    fn deregister(&mut self, r: usize) -> bool {
        if self.regs[r].state != RegState::Live {
            return false;
        }
        self.regs[r].state = RegState::Dead;
        self.dispose(r);
        self.tear_down(r);
        true
    }

    fn pick(&self, which: u8, filter: impl Fn(&Reg) -> bool) -> Option<usize> {
        let ids: Vec<usize> = (0..self.regs.len())
            .filter(|&i| filter(&self.regs[i]))
            .collect();
        (!ids.is_empty()).then(|| ids[which as usize % ids.len()])
    }

    fn gen_of(&self, g: GenChoice) -> u64 {
        match g {
            GenChoice::Zero => 0,
            GenChoice::First => self.first_gen,
            GenChoice::Configured(k) => {
                (self.first_gen + (k % 8) as u64).min(Generation::MAX.get())
            }
            GenChoice::Max(k) => Generation::MAX.get() - (k % 8) as u64,
            GenChoice::Any(x) => x & Generation::MAX.get(),
        }
    }

    fn token_of(&self, choice: TokenChoice) -> u64 {
        let history = |which: u8| self.pick(which, |_| true).map_or(0, |r| self.regs[r].token);
        match choice {
            TokenChoice::LiveFd(w) => self
                .pick(w, |r| r.state == RegState::Live && !r.is_timer())
                .map_or_else(|| history(w), |r| self.regs[r].token),
            TokenChoice::LiveTimer(w) => self
                .pick(w, |r| r.state == RegState::Live && r.is_timer())
                .map_or_else(|| history(w), |r| self.regs[r].token),
            TokenChoice::History(w) => history(w),
            TokenChoice::Forged(Forge::Raw(x)) => x,
            TokenChoice::Forged(Forge::Slot { index, gen }) => {
                make_token(index as u64, self.gen_of(gen))
            }
            TokenChoice::Forged(Forge::Near {
                which,
                dindex,
                dgen,
            }) => {
                let base = history(which);
                make_token(
                    (token_index(base) as i64 + dindex as i64) as u64,
                    (token_gen(base) as i64 + dgen as i64) as u64,
                )
            }
        }
    }

    fn fd_for(&self, sel: FdSel, t: u64) -> RawFd {
        let fds = fds();
        match sel {
            FdSel::Right => self
                .regs
                .iter()
                .find(|r| r.token == t && !r.is_timer())
                .map_or(fds.open[0], |r| r.fd()),
            FdSel::Pipe(k) => fds.open[k as usize % fds.open.len()],
            FdSel::Any(fd) => fd,
        }
    }
}

fn new_captured(
    counters: &Arc<Counters>,
    next: Vec<Action>,
) -> (Captured, Arc<Mutex<CbState>>, Arc<AtomicBool>) {
    let state = Arc::new(Mutex::new(CbState {
        next,
        runs: Vec::new(),
    }));
    let dropped = Arc::new(AtomicBool::new(false));
    let cap = Captured {
        state: Arc::clone(&state),
        dropped: Arc::clone(&dropped),
        counters: Arc::clone(counters),
    };
    (cap, state, dropped)
}

// ----- the harness -------------------------------------------------------------------

struct Harness<'e> {
    engine: &'e Engine,
    hooks: RecHooks,
    model: Model,
    counters: Arc<Counters>,
}

impl Harness<'_> {
    fn new_reg(
        &mut self,
        token: u64,
        kind: Kind,
        cb: Arc<Mutex<CbState>>,
        dropped: Arc<AtomicBool>,
        next: Vec<Action>,
    ) -> usize {
        let r = self.model.regs.len();
        self.model.regs.push(Reg {
            token,
            kind,
            state: RegState::Live,
            fired: false,
            handle: None,
            cb,
            dropped,
            next,
            expect_runs: Vec::new(),
        });
        self.model.on_new_token(token, r);
        r
    }

    /// The token a register hook saw, from the hook log (the op failed, so
    /// there is no handle to ask).
    fn token_from_log(&self, timer: bool) -> Option<u64> {
        lock(&self.hooks.0).log.iter().find_map(|c| match *c {
            HookCall::FdRegister { token, .. } if !timer => Some(token),
            HookCall::TimeoutRegister { token, .. } if timer => Some(token),
            _ => None,
        })
    }

    fn register_fd(&mut self, choice: FdChoice, interest: u16) {
        let fds = fds();
        let fd = match choice {
            FdChoice::Pipe(k) => {
                let fd = fds.open[k as usize % fds.open.len()];
                assert!(is_open(fd), "harness: pipe fd {fd} closed");
                fd
            }
            FdChoice::Negative(n) => n.checked_abs().map_or(i32::MIN, |n| -n.max(1)),
            FdChoice::Unopened(k) => fds.unopened[k as usize % fds.unopened.len()],
            FdChoice::Any(fd) => fd,
        };
        if self.model.recheck && is_open(fd) && !fds.open.contains(&fd) {
            // Readiness of an fd we do not own may change under us.
            return;
        }
        let interest = interest_of(interest);
        let next = std::mem::take(&mut self.model.arm_new);
        let (cap, cb, dropped) = new_captured(&self.counters, next.clone());
        self.model.callbacks_made += 1;
        let expect_bad = !is_open(fd);
        let full = self.model.is_full();
        let result = self.engine.register_fd(fd, interest, fd_callback(cap));
        if expect_bad {
            assert!(
                matches!(result, Err(Error::BadFd(b)) if b == fd),
                "register_fd({fd}) of a bad fd: {result:?}"
            );
            return;
        }
        if full {
            assert!(
                matches!(result, Err(Error::Full { limit }) if limit == self.model.limit),
                "register_fd when full: {result:?}"
            );
            return;
        }
        let token = match &result {
            Ok(w) => w.token().as_u64(),
            Err(_) => self
                .token_from_log(false)
                .unwrap_or_else(|| panic!("register_fd failed without its hook: {result:?}")),
        };
        let r = self.new_reg(token, Kind::Fd { fd, interest }, cb, dropped, next);
        let expected = self.model.after_register_hook(r);
        match result {
            Ok(w) => {
                assert_eq!(expected, Ok(()), "register_fd succeeded");
                self.model.regs[r].handle = Some(Handle::Fd(w));
            }
            Err(e) => {
                assert_eq!(repr::<()>(Err(e)), expected, "register_fd failed");
                // The token the hook saw is stale from now on.
                let fd_res =
                    self.engine
                        .occurred_fd(Token::from_u64(token), fd, Readiness::READABLE);
                assert_eq!(repr(fd_res), self.model.occurred_fd(token, fd, 1));
                let t_res = self.engine.occurred_timeout(Token::from_u64(token));
                assert_eq!(repr(t_res), self.model.occurred_timeout(token));
                assert_eq!(self.model.regs[r].state, RegState::Gone);
            }
        }
    }

    fn register_timer(&mut self, delay_ms: u16) {
        let deadline = self.model.t0 + Duration::from_millis(delay_ms as u64);
        let next = std::mem::take(&mut self.model.arm_new);
        let (cap, cb, dropped) = new_captured(&self.counters, next.clone());
        self.model.callbacks_made += 1;
        let full = self.model.is_full();
        let result = self.engine.timer_at(deadline, timer_callback(cap));
        if full {
            assert!(
                matches!(result, Err(Error::Full { limit }) if limit == self.model.limit),
                "timer_at when full: {result:?}"
            );
            return;
        }
        let token = match &result {
            Ok(t) => t.token().as_u64(),
            Err(_) => self
                .token_from_log(true)
                .unwrap_or_else(|| panic!("timer_at failed without its hook: {result:?}")),
        };
        let r = self.new_reg(token, Kind::Timer { deadline }, cb, dropped, next);
        let expected = self.model.after_register_hook(r);
        match result {
            Ok(t) => {
                assert_eq!(expected, Ok(()), "timer_at succeeded");
                self.model.regs[r].handle = Some(Handle::Timer(t));
            }
            Err(e) => {
                assert_eq!(repr::<()>(Err(e)), expected, "timer_at failed");
                let t_res = self.engine.occurred_timeout(Token::from_u64(token));
                assert_eq!(repr(t_res), self.model.occurred_timeout(token));
                assert_eq!(self.model.regs[r].state, RegState::Gone);
            }
        }
    }

    fn modify_fd(&mut self, which: u8, interest: u16) {
        let Some(r) = self
            .model
            .pick(which, |r| !r.is_timer() && r.handle.is_some())
        else {
            return;
        };
        let interest = interest_of(interest);
        let Some(Handle::Fd(w)) = &self.model.regs[r].handle else {
            unreachable!()
        };
        let result = repr(w.modify(interest));
        let m = &mut self.model;
        let expected = if m.regs[r].state != RegState::Live {
            Err(ErrRepr::Gone)
        } else {
            let (token, fd) = (m.regs[r].token, m.regs[r].fd());
            let fail = m.take_fail();
            m.expect_hooks.push(HookCall::FdModify {
                token,
                fd,
                interest,
                ok: fail.is_none(),
            });
            match fail {
                None => {
                    m.regs[r].kind = Kind::Fd { fd, interest };
                    Ok(())
                }
                Some(e) => Err(e),
            }
        };
        assert_eq!(result, expected, "modify");
    }

    fn reset_timer(&mut self, which: u8, delay_ms: u16) {
        let Some(r) = self
            .model
            .pick(which, |r| r.is_timer() && r.handle.is_some())
        else {
            return;
        };
        let deadline = self.model.t0 + Duration::from_millis(delay_ms as u64);
        let Some(Handle::Timer(t)) = &self.model.regs[r].handle else {
            unreachable!()
        };
        let result = repr(t.reset_at(deadline));
        let m = &mut self.model;
        let expected = if m.regs[r].state != RegState::Live {
            Err(ErrRepr::Gone)
        } else {
            let token = m.regs[r].token;
            let fail = m.take_fail();
            m.expect_hooks.push(HookCall::TimeoutModify {
                token,
                deadline,
                ok: fail.is_none(),
            });
            match fail {
                None => {
                    m.regs[r].kind = Kind::Timer { deadline };
                    Ok(())
                }
                Some(e) => Err(e),
            }
        };
        assert_eq!(result, expected, "reset");
    }

    fn end_handle(&mut self, r: usize, by_drop: bool) {
        let handle = self.model.regs[r].handle.take().expect("a handle");
        let expected = self.model.deregister(r);
        match (handle, by_drop) {
            (h, true) => drop(h),
            (Handle::Fd(w), false) => assert_eq!(w.deregister(), expected, "deregister"),
            (Handle::Timer(t), false) => assert_eq!(t.cancel(), expected, "cancel"),
        }
    }

    fn op(&mut self, op: &Op) {
        match *op {
            Op::RegisterFd { fd, interest } => self.register_fd(fd, interest),
            Op::RegisterTimer { delay_ms } => self.register_timer(delay_ms),
            Op::ModifyFd { which, interest } => self.modify_fd(which, interest),
            Op::ResetTimer { which, delay_ms } => self.reset_timer(which, delay_ms),
            Op::DeregisterFd { which, by_drop } => {
                if let Some(r) = self
                    .model
                    .pick(which, |r| !r.is_timer() && r.handle.is_some())
                {
                    self.end_handle(r, by_drop);
                }
            }
            Op::CancelTimer { which, by_drop } => {
                if let Some(r) = self
                    .model
                    .pick(which, |r| r.is_timer() && r.handle.is_some())
                {
                    self.end_handle(r, by_drop);
                }
            }
            Op::OccurredFd { token, fd, revents } => {
                let t = self.model.token_of(token);
                let fd = self.model.fd_for(fd, t);
                let actual = self
                    .engine
                    .occurred_fd(Token::from_u64(t), fd, readiness_of(revents));
                let expected = self.model.occurred_fd(t, fd, revents);
                assert_eq!(repr(actual), expected, "occurred_fd({t:#x}, {fd})");
            }
            Op::OccurredTimeout { token } => {
                let t = self.model.token_of(token);
                let actual = self.engine.occurred_timeout(Token::from_u64(t));
                let expected = self.model.occurred_timeout(t);
                assert_eq!(repr(actual), expected, "occurred_timeout({t:#x})");
            }
            Op::Arm { which, ref actions } => {
                if let Some(r) = self.model.pick(which, |r| r.state == RegState::Live) {
                    let actions: Vec<Action> = actions.iter().copied().take(MAX_ACTIONS).collect();
                    lock(&self.model.regs[r].cb).next = actions.clone();
                    self.model.regs[r].next = actions;
                }
            }
            Op::ArmNew { ref actions } => {
                self.model.arm_new = actions.iter().copied().take(MAX_ACTIONS).collect();
            }
            Op::FailNextHook { panic } => {
                self.model.fail_next = Some(panic);
                lock(&self.hooks.0).fail_next = Some(panic);
            }
            Op::PanicNextDeregisterHook => {
                self.model.panic_next_deregister = true;
                lock(&self.hooks.0).panic_next_deregister = true;
            }
            Op::ReportInNextRegisterHook { revents } => {
                self.model.report_next = Some(revents);
                lock(&self.hooks.0).report_next = Some(revents);
            }
        }
    }

    /// Everything the model knows, against the engine, the hooks and the
    /// callbacks.
    fn check(&mut self, what: &dyn std::fmt::Debug, engine_alive: bool) {
        let m = &mut self.model;
        assert_eq!(m.busy, None);
        // Hook calls, in order.
        let log = std::mem::take(&mut lock(&self.hooks.0).log);
        let expected = std::mem::take(&mut m.expect_hooks);
        assert_eq!(log, expected, "hook calls after {what:?}");
        {
            let st = lock(&self.hooks.0);
            assert_eq!(st.fail_next, m.fail_next, "fail flag after {what:?}");
            assert_eq!(
                st.panic_next_deregister, m.panic_next_deregister,
                "deregister panic flag after {what:?}"
            );
            assert_eq!(st.report_next, m.report_next, "report flag after {what:?}");
            let mut fd_live = HashMap::new();
            let mut timer_live = HashMap::new();
            for r in &m.regs {
                assert_ne!(
                    r.state,
                    RegState::Dead,
                    "model: dead registration after an op"
                );
                if r.state != RegState::Live {
                    continue;
                }
                match r.kind {
                    Kind::Fd { fd, interest } => {
                        fd_live.insert(r.token, (fd, interest));
                    }
                    Kind::Timer { deadline } => {
                        timer_live.insert(r.token, deadline);
                    }
                }
            }
            assert_eq!(st.fd_live, fd_live, "the loop's fd watches after {what:?}");
            assert_eq!(
                st.timer_live, timer_live,
                "the loop's timeouts after {what:?}"
            );
            let live_values = fd_live.len() + timer_live.len();
            assert_eq!(
                st.values_made - st.values_dropped,
                live_values,
                "hook values alive after {what:?}"
            );
        }
        // Callback runs: none but the expected ones.
        assert_eq!(
            self.counters.runs.load(Ordering::Relaxed),
            m.runs,
            "callback runs after {what:?}"
        );
        for r in std::mem::take(&mut m.touched) {
            let reg = &mut m.regs[r];
            let runs = std::mem::take(&mut lock(&reg.cb).runs);
            let expected = std::mem::take(&mut reg.expect_runs);
            assert_eq!(runs, expected, "runs of {:#x} after {what:?}", reg.token);
            assert_eq!(
                reg.dropped.load(Ordering::Relaxed),
                reg.state == RegState::Gone,
                "callback of {:#x} dropped iff ended, after {what:?}",
                reg.token
            );
        }
        let live = m.regs.iter().filter(|r| r.state == RegState::Live).count();
        assert_eq!(
            self.counters.drops.load(Ordering::Relaxed),
            m.callbacks_made - live,
            "callbacks dropped after {what:?}"
        );
        // Handles.
        for r in &m.regs {
            let live = r.state == RegState::Live && engine_alive;
            match &r.handle {
                Some(Handle::Fd(w)) => assert_eq!(w.is_live(), live, "is_live of {:#x}", r.token),
                Some(Handle::Timer(t)) => {
                    assert_eq!(t.is_pending(), live, "is_pending of {:#x}", r.token)
                }
                None => {}
            }
        }
        if engine_alive {
            assert_eq!(MStats::of(self.engine), m.stats, "stats after {what:?}");
            assert_eq!(self.engine.stats().live(), live as u64);
        }
    }
}

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // libfuzzer-sys aborts on any panic, from its own hook, before
        // unwinding; the engine must see our deliberate callback panics
        // unwind, so those (and only those) skip it.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            let deliberate = message == Some(DELIBERATE) || message == Some(HOOK_PANIC);
            if !deliberate {
                previous(info);
            }
        }));
    });
}

fn run(input: &Input) {
    install_panic_hook();
    let config = &input.config;
    let hooks = RecHooks::default();
    let first = match config.first_gen {
        FirstGen::Default => None,
        FirstGen::NearMax(k) => Generation::new(Generation::MAX.get() - (k % 4) as u64),
        FirstGen::Any(x) => Generation::new(x % Generation::MAX.get() + 1),
    };
    let engine = match (first, config.limit) {
        (None, None) if !config.recheck => Engine::with_hooks(hooks.clone()),
        (first, limit) => {
            let mut b = Engine::builder().hooks(hooks.clone());
            if let Some(g) = first {
                b = b.first_generation(g);
            }
            if let Some(l) = limit {
                b = b.max_registrations(l as usize);
            }
            if config.recheck {
                b = b.recheck_fds(true);
            }
            b.build().expect("building a hooks engine")
        }
    };
    assert_eq!(engine.backend(), BackendKind::Hooks);
    let addr = &engine as *const Engine as usize;
    lock(&hooks.0).engine = addr;
    let model = Model {
        engine: addr,
        limit: config
            .limit
            .map_or(MAX_SLOTS, |l| (l as usize).clamp(1, MAX_SLOTS)),
        first_gen: first.unwrap_or(Generation::FIRST).get(),
        claimed: 0,
        last_gen: HashMap::new(),
        slot_of: HashMap::new(),
        retired: 0,
        issued: HashSet::new(),
        regs: Vec::new(),
        stats: MStats::default(),
        fail_next: None,
        panic_next_deregister: false,
        report_next: None,
        recheck: config.recheck,
        arm_new: Vec::new(),
        busy: None,
        expect_hooks: Vec::new(),
        callbacks_made: 0,
        runs: 0,
        touched: Vec::new(),
        t0: Instant::now(),
    };
    let mut h = Harness {
        engine: &engine,
        hooks: hooks.clone(),
        model,
        counters: Arc::default(),
    };
    h.check(&"start", true);
    for op in input.ops.iter().take(MAX_OPS) {
        h.op(op);
        h.check(op, true);
    }

    // The end: every live registration is ended exactly once, whichever
    // goes first, and everything the engine held is dropped.
    let Harness {
        hooks,
        mut model,
        counters,
        ..
    } = h;
    if config.drop_engine_first {
        let live: Vec<usize> = (0..model.regs.len())
            .filter(|&r| model.regs[r].state == RegState::Live)
            .collect();
        for &r in &live {
            model.deregister(r);
        }
        lock(&hooks.0).engine = 0;
        drop(engine);
        // Engine::drop goes by slot index: compare per token.
        let log = std::mem::take(&mut lock(&hooks.0).log);
        let expected = std::mem::take(&mut model.expect_hooks);
        let by_token = |calls: Vec<HookCall>| {
            let mut map: HashMap<u64, Vec<HookCall>> = HashMap::new();
            for c in calls {
                map.entry(c.token()).or_default().push(c);
            }
            map
        };
        assert_eq!(
            by_token(log),
            by_token(expected),
            "hook calls of Engine::drop"
        );
        for r in &model.regs {
            match &r.handle {
                Some(Handle::Fd(w)) => {
                    assert!(!w.is_live());
                    assert!(matches!(w.modify(Interest::READABLE), Err(Error::Gone)));
                }
                Some(Handle::Timer(t)) => {
                    assert!(!t.is_pending());
                    let later = Instant::now() + Duration::from_secs(1);
                    assert!(matches!(t.reset_at(later), Err(Error::Gone)));
                }
                None => {}
            }
        }
        for r in &mut model.regs {
            match r.handle.take() {
                Some(Handle::Fd(w)) => assert!(!w.deregister()),
                Some(Handle::Timer(t)) => assert!(!t.cancel()),
                None => {}
            }
        }
        assert!(
            lock(&hooks.0).log.is_empty(),
            "hook calls after the engine was dropped"
        );
    } else {
        let mut h2 = Harness {
            engine: &engine,
            hooks: hooks.clone(),
            model,
            counters: Arc::clone(&counters),
        };
        for r in 0..h2.model.regs.len() {
            if h2.model.regs[r].handle.is_some() {
                h2.end_handle(r, r % 2 == 0);
                h2.check(&"dropping the handles", true);
            }
        }
        model = h2.model;
        lock(&hooks.0).engine = 0;
        drop(engine);
        assert!(
            lock(&hooks.0).log.is_empty(),
            "Engine::drop with nothing live"
        );
    }
    assert_eq!(
        counters.drops.load(Ordering::Relaxed),
        model.callbacks_made,
        "callbacks leaked"
    );
    assert!(model.regs.iter().all(|r| r.dropped.load(Ordering::Relaxed)));
    let st = lock(&hooks.0);
    assert!(
        st.fd_live.is_empty() && st.timer_live.is_empty(),
        "the loop still watches something"
    );
    assert_eq!(st.values_made, st.values_dropped, "hook values leaked");
}

fuzz_target!(|input: Input| {
    run(&input);
});
