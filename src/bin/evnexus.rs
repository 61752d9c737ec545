//! `evnexus`: the load simulation.
//!
//! A simulated hypervisor toolstack: N "domains", each a socketpair channel
//! and a heartbeat timer, registered with an [`Engine`]. `--backend` says
//! who carries the registrations:
//!
//! - **uring** (default) and **epoll**: the engine's own built-in loop,
//!   driven by a **loop thread** in [`Engine::run`] until [`Engine::stop`].
//!   Every other domain's watch is edge-triggered (a multishot poll on the
//!   ring, `EPOLLET` on epoll), the rest level-triggered, so that the
//!   ring's own operations are exercised too (`--ring-entries` shrinks it);
//! - **hooks**: *this program's own* event loop, through [`OsEventHooks`]
//!   (the libxl-in-libvirt situation). The **application loop** runs
//!   `ppoll()` over the fds its hooks were given (plus an eventfd to wake
//!   it) with a timeout from the earliest registered deadline. Each ready
//!   fd and each due timeout becomes a delivery item; the batch is shuffled
//!   and spread over the delivery threads, some items are held back (late
//!   delivery), some are delivered twice, and bad reports are mixed in.
//!
//! The other threads:
//!
//! - **delivery threads** (`--threads`) call `occurred_fd` /
//!   `occurred_timeout` and record what became of each report. With hooks
//!   they carry the genuine events. With a built-in loop the loop carries
//!   those, and an **injector thread** feeds the delivery threads a stream
//!   of reports that race the loop: replays of dead tokens, forged tokens,
//!   live fd tokens with another fd, live tokens of the wrong kind (all
//!   must be rejected), and duplicate reports of live fd watches with the
//!   right fd (legitimate: they run the callback on the delivery thread, or
//!   are folded into a rerun of the loop's run, or find the watch ended
//!   meanwhile);
//! - a **traffic thread** writes small messages to random domains at a
//!   steady rate (`--rate`); the fd callbacks drain their channel;
//! - a **churn thread** deregisters and re-registers watches on the same fd
//!   (same slot, new generation: the classic stale race), replaces whole
//!   channels (the fd number is closed and reused), changes interests,
//!   cancels, re-creates and resets heartbeat timers; heartbeat callbacks
//!   re-arm themselves from inside the callback.
//!
//! Every check is real, i.e. it can fail: a callback that runs after its
//! registration's `deregister`/`cancel` returned, or that sees another
//! registration's token, fd or deadline, or that runs concurrently with
//! itself; a timer that fires twice, fires although `cancel` said it would
//! not, or (built-in loop, any timer; hooks, a timer never reset) fires
//! before its deadline; a bad report that is dispatched; a byte written but
//! never read (lost event); the engine's statistics disagreeing with what
//! the threads saw. The last line is `misdeliveries: N`; the exit status is
//! 0 only if every check passed.

use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;
use evnexus::{
    BackendKind, Engine, FdEvent, FdWatch, Interest, Occurred, OsEventHooks, Readiness,
    StaleReason, Timer, TimerEvent, Token,
};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

// ----- command line ---------------------------------------------------------

const USAGE: &str = "\
usage: evnexus [--backend uring|epoll|hooks] [--ring-entries N] [--domains N]
               [--threads T] [--seconds S] [--rate R]

Load simulation of the evnexus engine: N domains, each a socketpair channel
and a heartbeat timer, carried by the engine's built-in loop (uring, epoll)
or by the application's own poll() loop (hooks), while a churn thread
re-registers watches and timers and T threads report occurred calls that
race the loop: replayed, forged, wrong-fd and wrong-kind tokens, duplicate
reports (and with hooks the genuine events too, late and out of order).
Checks itself and prints a summary; the last line is `misdeliveries: N`.

options:
  --backend B       who carries the registrations: uring (the built-in
                    loop on io_uring; without this option it falls back to
                    epoll where the kernel refuses io_uring, asked for
                    explicitly it does not), epoll (the built-in loop on
                    epoll), hooks (this program's poll() loop)     [uring]
  --ring-entries N  io_uring submission queue entries (uring only) [256]
  --domains N       simulated domains                               [64]
  --threads T       threads that deliver occurred calls             [4]
  --seconds S       seconds of load (fractions allowed), then a drain
                    phase and teardown checks                       [10]
  --rate R          messages per second written by the traffic thread;
                    with uring/epoll the delivery threads also get about
                    R/2 + 5000 racing reports per second           [100000]
  -h, --help        print this help

exit status: 0 every check passed; 1 a check failed (misdelivery, lost
event, accounting mismatch, engine error); 2 bad usage.";

/// Which backend the simulation asks for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SimBackend {
    /// No `--backend`: io_uring, falling back to epoll where the kernel
    /// refuses it (as `Engine::new` does).
    Default,
    Uring,
    Epoll,
    Hooks,
}

impl SimBackend {
    fn builtin(self) -> bool {
        self != SimBackend::Hooks
    }
}

#[derive(Clone, Copy, Debug)]
struct Config {
    backend: SimBackend,
    ring_entries: Option<u32>,
    domains: usize,
    threads: usize,
    seconds: f64,
    rate: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            backend: SimBackend::Default,
            ring_entries: None,
            domains: 64,
            threads: 4,
            seconds: 10.0,
            rate: 100_000,
        }
    }
}

/// `Ok(None)`: help was asked for.
fn parse_args(args: Vec<OsString>) -> Result<Option<Config>, String> {
    let mut cfg = Config::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument {a:?} is not valid UTF-8"))?;
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        const OPTIONS: [&str; 6] = [
            "--backend",
            "--ring-entries",
            "--domains",
            "--threads",
            "--seconds",
            "--rate",
        ];
        if !OPTIONS.contains(&name.as_str()) {
            return Err(format!("unknown argument '{arg}'"));
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .ok_or_else(|| format!("{name} needs a value"))?
                .into_string()
                .map_err(|a| format!("value {a:?} of {name} is not valid UTF-8"))?,
        };
        match name.as_str() {
            "--backend" => {
                cfg.backend = match value.trim() {
                    "uring" => SimBackend::Uring,
                    "epoll" => SimBackend::Epoll,
                    "hooks" => SimBackend::Hooks,
                    other => {
                        return Err(format!(
                            "--backend: unknown backend '{other}' (uring, epoll or hooks)"
                        ))
                    }
                }
            }
            "--ring-entries" => {
                cfg.ring_entries = Some(parse_count(&name, &value, 1, 32_768)? as u32);
            }
            "--domains" => cfg.domains = parse_count(&name, &value, 1, 100_000)? as usize,
            "--threads" => cfg.threads = parse_count(&name, &value, 1, 1024)? as usize,
            "--rate" => cfg.rate = parse_count(&name, &value, 0, 100_000_000)?,
            _ => {
                let s: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("{name}: '{value}' is not a number of seconds"))?;
                if !(s.is_finite() && s > 0.0 && s <= 86_400.0) {
                    return Err(format!("{name}: {value} is out of range (0 < S <= 86400)"));
                }
                cfg.seconds = s;
            }
        }
    }
    if cfg.ring_entries.is_some() && !matches!(cfg.backend, SimBackend::Default | SimBackend::Uring)
    {
        return Err("--ring-entries applies to the uring backend only".to_owned());
    }
    Ok(Some(cfg))
}

fn parse_count(name: &str, value: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = value
        .trim()
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{name}: '{value}' is not a whole number"))?;
    if n < min || n > max {
        return Err(format!("{name}: {n} is out of range ({min}..={max})"));
    }
    Ok(n)
}

/// Raises the soft fd limit so that `domains` channels fit.
fn raise_fd_limit(domains: usize) -> Result<(), String> {
    // Two fds per channel, a spare channel during a channel swap, the
    // eventfd, stdio and some slack.
    let needed = (2 * domains + 64) as libc::rlim_t;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!("getrlimit: {}", io::Error::last_os_error()));
    }
    if lim.rlim_cur >= needed {
        return Ok(());
    }
    if lim.rlim_max < needed {
        return Err(format!(
            "--domains {domains} needs about {needed} file descriptors, the hard limit is {}",
            lim.rlim_max
        ));
    }
    lim.rlim_cur = needed;
    // SAFETY: setrlimit reads one valid `rlimit`.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(format!("setrlimit: {}", io::Error::last_os_error()));
    }
    Ok(())
}

// ----- small tools ------------------------------------------------------------

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// xorshift64*: enough randomness for choosing domains and delays.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut z = t ^ SEQ
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // splitmix64 finaliser, so that close seeds diverge.
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.index(i + 1));
        }
    }
}

/// Latency histogram: 16 linear sub-buckets per power of two of
/// nanoseconds (values exact below 16 ns, within 1/16 above).
struct Hist {
    buckets: Vec<u64>,
    count: u64,
}

impl Hist {
    const SUB_BITS: u32 = 4;
    const SUB: u64 = 1 << Self::SUB_BITS;

    fn new() -> Hist {
        Hist {
            buckets: vec![0; 64 * Self::SUB as usize],
            count: 0,
        }
    }
    fn index(v: u64) -> usize {
        if v < Self::SUB {
            return v as usize;
        }
        let e = 63 - v.leading_zeros(); // >= SUB_BITS
        let sub = (v >> (e - Self::SUB_BITS)) & (Self::SUB - 1);
        ((u64::from(e - Self::SUB_BITS + 1) * Self::SUB) + sub) as usize
    }
    /// Midpoint of bucket `i`.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < Self::SUB {
            return i;
        }
        let e = i / Self::SUB + u64::from(Self::SUB_BITS) - 1;
        let sub = i % Self::SUB;
        let width = 1u64 << (e - u64::from(Self::SUB_BITS));
        (Self::SUB + sub) * width + width / 2
    }
    fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[Self::index(ns)] += 1;
        self.count += 1;
    }
    fn merge(&mut self, other: &Hist) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
    }
    /// The `p`-quantile in nanoseconds, `None` when empty.
    fn quantile(&self, p: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((p * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::value(i));
            }
        }
        None
    }
}

// ----- what the threads check -------------------------------------------------

/// The kinds of failed checks that count as misdeliveries.
#[derive(Clone, Copy)]
enum Check {
    /// A callback ran after its registration's deregister/cancel returned.
    DeadDispatch,
    /// A callback saw another registration's token, fd or deadline.
    WrongIdentity,
    /// A callback ran concurrently with itself.
    Concurrent,
    /// A timer fired twice (same registration, or same token).
    TimerTwice,
    /// `cancel()` said one thing, the callback did the other.
    CancelOutcome,
    /// A timer callback ran before its (never moved) deadline.
    FiredEarly,
    /// A replayed, forged, wrong-fd or wrong-kind report was dispatched.
    BadTokenAccepted,
    /// After deregister/cancel returned (outside callbacks), the callback
    /// was still running or not yet dropped, or deregister of a live watch
    /// said it had ended already.
    NotQuiesced,
    /// An outcome the configuration rules out (Suppressed without the fd
    /// re-check, a callback panic, an engine error).
    Unexpected,
}

const CHECK_NAMES: [&str; 9] = [
    "dispatch to a dead registration",
    "callback saw wrong token/fd/deadline",
    "callback ran concurrently with itself",
    "timer fired twice",
    "cancel() contradicted by the callback",
    "timer fired before its deadline",
    "bad token dispatched",
    "deregister/cancel returned too early",
    "unexpected outcome or engine error",
];

struct Checks {
    failed: [AtomicU64; 9],
    notes: Mutex<Vec<String>>,
}

impl Checks {
    fn new() -> Checks {
        Checks {
            failed: std::array::from_fn(|_| AtomicU64::new(0)),
            notes: Mutex::new(Vec::new()),
        }
    }
    fn fail(&self, check: Check, what: impl FnOnce() -> String) {
        self.failed[check as usize].fetch_add(1, Ordering::SeqCst);
        let mut notes = lock(&self.notes);
        if notes.len() < 20 {
            notes.push(format!("{}: {}", CHECK_NAMES[check as usize], what()));
        }
    }
    fn total(&self) -> u64 {
        self.failed.iter().map(|c| c.load(Ordering::SeqCst)).sum()
    }
}

thread_local! {
    /// When the first callback run of the current occurred call started.
    static CB_START: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Callback runs on this thread (compared with the engine's count).
    static CB_RUNS: Cell<u64> = const { Cell::new(0) };
    /// Timer callback runs on this thread.
    static TIMER_RUNS: Cell<u64> = const { Cell::new(0) };
    /// Traffic write -> callback start, for the callbacks run on this
    /// thread; merged into `Shared::write_latency` by `flush_latency`.
    static WRITE_LAT: RefCell<Option<Box<Hist>>> = const { RefCell::new(None) };
}

fn record_write_latency(d: Duration) {
    WRITE_LAT.with(|h| {
        h.borrow_mut()
            .get_or_insert_with(|| Box::new(Hist::new()))
            .record(d);
    });
}

/// Hands this thread's write -> callback latencies to `shared`.
fn flush_latency(shared: &Shared) {
    if let Some(h) = WRITE_LAT.with(|h| h.borrow_mut().take()) {
        lock(&shared.write_latency).merge(&h);
    }
}

fn callback_entered() -> Instant {
    let now = Instant::now();
    CB_START.with(|c| {
        if c.get().is_none() {
            c.set(Some(now));
        }
    });
    CB_RUNS.with(|c| c.set(c.get() + 1));
    now
}

/// Binds a registration's token cell: the first of (registrant, callback)
/// stores it, the other must find the same value.
fn bind_token(cell: &AtomicU64, token: u64) -> bool {
    match cell.compare_exchange(0, token, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => true,
        Err(prev) => prev == token,
    }
}

/// Sets its flag when dropped: captured by a callback, it tells whether
/// the engine has dropped the callback.
struct DropMark(Arc<AtomicBool>);

impl Drop for DropMark {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What the program shares with its callbacks (never the engine: a
/// callback gets that from its event).
struct Shared {
    base: Instant,
    /// The engine runs its own loop (uring, epoll): timers must never fire
    /// early, and dead tokens are remembered here rather than by hooks.
    builtin: bool,
    checks: Checks,
    /// Heartbeats stop re-arming.
    stopping: AtomicBool,
    /// Tokens of every timer that fired.
    fired: Mutex<HashSet<u64>>,
    /// Heartbeat timers armed by a callback whose own handle the churn
    /// thread had taken meanwhile: the churn thread cancels them.
    orphans: SegQueue<TimerHandle>,
    /// Successful registrations (fd watches and timers).
    registrations: AtomicU64,
    timers_armed: AtomicU64,
    /// Live registrations by token, so that a delivery thread can tell a
    /// rejected report of a live registration (a lost event) from a report
    /// that went stale.
    watch_regs: Mutex<HashMap<u64, Arc<WatchReg>>>,
    timer_regs: Mutex<HashMap<u64, Arc<TimerReg>>>,
    /// Genuine reports of live fd watches (not being deregistered) that
    /// the engine rejected: lost events.
    lost_reports: AtomicU64,
    /// Timers that ran before the deadline they had been reset to (the
    /// loop had reported the old deadline: allowed by the hooks contract).
    early_after_reset: AtomicU64,
    /// Timers whose `cancel()` returned true.
    timers_cancelled: AtomicU64,
    /// Built-in loop: tokens of registrations that have ended (watches
    /// after deregister returned, timers once fired or cancelled), the
    /// injector's material for replays.
    graveyard: Mutex<VecDeque<(u64, Kind, RawFd)>>,
    /// Traffic write -> callback start, merged from every thread.
    write_latency: Mutex<Hist>,
}

impl Shared {
    fn since_base(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }
    fn at(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }
    /// Remembers an ended registration's token (built-in loop only; with
    /// hooks the application loop learns of ended registrations itself).
    fn bury(&self, token: u64, kind: Kind, fd: RawFd) {
        if !self.builtin {
            return;
        }
        let mut g = lock(&self.graveyard);
        if g.len() == DEAD_HISTORY {
            g.pop_front();
        }
        g.push_back((token, kind, fd));
    }
}

// ----- registrations ----------------------------------------------------------------

/// One fd watch as the program sees it.
struct WatchReg {
    fd: RawFd,
    token: AtomicU64,
    dead: AtomicBool,
    /// Set before `deregister` is called.
    retiring: AtomicBool,
    running: AtomicBool,
    dropped: Arc<AtomicBool>,
}

struct WatchHandle {
    watch: FdWatch,
    reg: Arc<WatchReg>,
    reader: Arc<UnixStream>,
}

/// One heartbeat timer as the program sees it.
struct TimerReg {
    token: AtomicU64,
    /// Deadline, ns after `Shared::base`.
    deadline: AtomicU64,
    /// The deadline a `reset_at` in progress moves to (0: none): until it
    /// returns, the timer may fire at either.
    pending_deadline: AtomicU64,
    resets: AtomicU32,
    fired: AtomicU32,
    /// Set before `cancel` is called.
    cancel_started: AtomicBool,
    cancelled: AtomicBool,
    /// A genuine report of this timer was rejected before any cancel began.
    lost_report: AtomicBool,
    dropped: Arc<AtomicBool>,
}

struct TimerHandle {
    timer: Timer,
    reg: Arc<TimerReg>,
}

#[derive(Default)]
struct DomainStats {
    bytes_read: AtomicU64,
    beats: AtomicU64,
    /// When the oldest write that no callback has seen yet was made (ns
    /// after `Shared::base`, plus one; 0: none). The traffic thread sets
    /// it if unset, the callback takes it when it starts and clears it
    /// again once it has drained the channel.
    write_stamp: AtomicU64,
}

struct Heart {
    slot: Mutex<Option<TimerHandle>>,
    stats: Arc<DomainStats>,
}

struct Domain {
    /// Edge-triggered (built-in loop, every other domain) or level.
    interest: Interest,
    writer: Mutex<UnixStream>,
    watch: Mutex<Option<WatchHandle>>,
    heart: Arc<Heart>,
    stats: Arc<DomainStats>,
}

fn channel() -> io::Result<(Arc<UnixStream>, UnixStream)> {
    let (r, w) = UnixStream::pair()?;
    r.set_nonblocking(true)?;
    w.set_nonblocking(true)?;
    Ok((Arc::new(r), w))
}

fn watch_channel(
    engine: &Engine,
    reader: Arc<UnixStream>,
    interest: Interest,
    stats: &Arc<DomainStats>,
    shared: &Arc<Shared>,
) -> evnexus::Result<WatchHandle> {
    let reg = Arc::new(WatchReg {
        fd: reader.as_raw_fd(),
        token: AtomicU64::new(0),
        dead: AtomicBool::new(false),
        retiring: AtomicBool::new(false),
        running: AtomicBool::new(false),
        dropped: Arc::new(AtomicBool::new(false)),
    });
    let callback = {
        let reg = Arc::clone(&reg);
        let reader = Arc::clone(&reader);
        let stats = Arc::clone(stats);
        let shared = Arc::clone(shared);
        let mark = DropMark(Arc::clone(&reg.dropped));
        move |ev: &FdEvent<'_>| {
            let _mark = &mark;
            let start = callback_entered();
            let stamp = stats.write_stamp.swap(0, Ordering::SeqCst);
            if stamp != 0 {
                let written = shared.at(stamp - 1);
                record_write_latency(start.saturating_duration_since(written));
            }
            let checks = &shared.checks;
            if reg.running.swap(true, Ordering::SeqCst) {
                checks.fail(Check::Concurrent, || format!("fd watch {}", ev.token()));
            }
            if reg.dead.load(Ordering::SeqCst) {
                checks.fail(Check::DeadDispatch, || {
                    format!("fd watch {} ran after deregister returned", ev.token())
                });
            }
            if !bind_token(&reg.token, ev.token().as_u64()) {
                checks.fail(Check::WrongIdentity, || {
                    format!(
                        "callback of {} got token {}",
                        Token::from_u64(reg.token.load(Ordering::SeqCst)),
                        ev.token()
                    )
                });
            }
            if ev.fd() != reg.fd {
                checks.fail(Check::WrongIdentity, || {
                    format!("callback of fd {} got fd {}", reg.fd, ev.fd())
                });
            }
            let mut buf = [0u8; 4096];
            loop {
                match (&*reader).read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        stats.bytes_read.fetch_add(n as u64, Ordering::SeqCst);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break, // WouldBlock: drained.
                }
            }
            // Whatever was written before the last read has been seen.
            stats.write_stamp.store(0, Ordering::SeqCst);
            reg.running.store(false, Ordering::SeqCst);
        }
    };
    let watch = engine.register_fd(reg.fd, interest, callback)?;
    shared.registrations.fetch_add(1, Ordering::SeqCst);
    if !bind_token(&reg.token, watch.token().as_u64()) {
        shared.checks.fail(Check::WrongIdentity, || {
            format!(
                "register_fd returned {} but the callback saw {}",
                watch.token(),
                Token::from_u64(reg.token.load(Ordering::SeqCst))
            )
        });
    }
    lock(&shared.watch_regs).insert(watch.token().as_u64(), Arc::clone(&reg));
    Ok(WatchHandle { watch, reg, reader })
}

/// Deregisters a watch from outside any callback and checks that the
/// engine kept its promise: the callback has returned and been dropped.
fn retire_watch(h: WatchHandle, shared: &Shared) {
    let WatchHandle { watch, reg, reader } = h;
    let checks = &shared.checks;
    let token = watch.token();
    reg.retiring.store(true, Ordering::SeqCst);
    let ended = watch.deregister();
    reg.dead.store(true, Ordering::SeqCst);
    lock(&shared.watch_regs).remove(&token.as_u64());
    shared.bury(token.as_u64(), Kind::Fd, reg.fd);
    if !ended {
        checks.fail(Check::NotQuiesced, || {
            format!("deregister of live watch {token} returned false")
        });
    }
    if reg.running.load(Ordering::SeqCst) || !reg.dropped.load(Ordering::SeqCst) {
        checks.fail(Check::NotQuiesced, || {
            format!("callback of {token} still running or not dropped after deregister")
        });
    }
    drop(reader);
}

fn heartbeat_delay(rng: &mut Rng) -> Duration {
    Duration::from_micros(5_000 + rng.below(45_000))
}

fn arm_heartbeat(
    engine: &Engine,
    heart: &Arc<Heart>,
    shared: &Arc<Shared>,
    delay: Duration,
) -> evnexus::Result<TimerHandle> {
    let deadline = Instant::now() + delay;
    let reg = Arc::new(TimerReg {
        token: AtomicU64::new(0),
        deadline: AtomicU64::new(shared.since_base(deadline)),
        pending_deadline: AtomicU64::new(0),
        resets: AtomicU32::new(0),
        fired: AtomicU32::new(0),
        cancel_started: AtomicBool::new(false),
        cancelled: AtomicBool::new(false),
        lost_report: AtomicBool::new(false),
        dropped: Arc::new(AtomicBool::new(false)),
    });
    let callback = {
        let reg = Arc::clone(&reg);
        let heart = Arc::clone(heart);
        let shared = Arc::clone(shared);
        let mark = DropMark(Arc::clone(&reg.dropped));
        move |ev: &TimerEvent<'_>| {
            let _mark = mark;
            heartbeat_fired(ev, &reg, &heart, &shared);
        }
    };
    let timer = engine.timer_at(deadline, callback)?;
    shared.registrations.fetch_add(1, Ordering::SeqCst);
    shared.timers_armed.fetch_add(1, Ordering::Relaxed);
    if !bind_token(&reg.token, timer.token().as_u64()) {
        shared.checks.fail(Check::WrongIdentity, || {
            format!(
                "timer_at returned {} but the callback saw another",
                timer.token()
            )
        });
    }
    lock(&shared.timer_regs).insert(timer.token().as_u64(), Arc::clone(&reg));
    Ok(TimerHandle { timer, reg })
}

fn heartbeat_fired(
    ev: &TimerEvent<'_>,
    reg: &Arc<TimerReg>,
    heart: &Arc<Heart>,
    shared: &Arc<Shared>,
) {
    let now = callback_entered();
    TIMER_RUNS.with(|c| c.set(c.get() + 1));
    let checks = &shared.checks;
    let token = ev.token();
    // Fired: the token is dead from now on.
    shared.bury(token.as_u64(), Kind::Timeout, -1);
    if reg.fired.fetch_add(1, Ordering::SeqCst) != 0 {
        checks.fail(Check::TimerTwice, || {
            format!("timer {token} callback ran twice")
        });
    }
    if reg.cancelled.load(Ordering::SeqCst) {
        checks.fail(Check::CancelOutcome, || {
            format!("timer {token} fired after cancel() returned true")
        });
    }
    if !bind_token(&reg.token, token.as_u64()) {
        checks.fail(Check::WrongIdentity, || {
            format!(
                "callback of timer {} got token {token}",
                Token::from_u64(reg.token.load(Ordering::SeqCst))
            )
        });
    }
    if !lock(&shared.fired).insert(token.as_u64()) {
        checks.fail(Check::TimerTwice, || format!("token {token} fired twice"));
    }
    if shared.builtin {
        // The built-in loop fires a timer only once its current deadline
        // has passed, even while a reset races the fire (the fire claims
        // the timer first, so the deadline it reads is the current one):
        // the event's deadline is the registered one or the one a reset in
        // progress moves to, and it has passed. The pending one is read
        // first: the churn thread stores the registered one before it
        // clears the pending one.
        let known = [
            reg.pending_deadline.load(Ordering::SeqCst),
            reg.deadline.load(Ordering::SeqCst),
        ];
        if !known
            .iter()
            .any(|&d| d != 0 && shared.at(d) == ev.deadline())
        {
            checks.fail(Check::WrongIdentity, || {
                format!("timer {token}: event deadline is neither the registered one nor a reset's")
            });
        }
        if now < ev.deadline() {
            checks.fail(Check::FiredEarly, || {
                format!("timer {token} ran {:?} early", ev.deadline() - now)
            });
        }
    } else if reg.resets.load(Ordering::SeqCst) == 0 {
        // Only a timer never reset has a deadline that cannot race with
        // the loop's report of an earlier one (the hooks contract allows
        // that).
        let deadline = shared.at(reg.deadline.load(Ordering::SeqCst));
        if ev.deadline() != deadline {
            checks.fail(Check::WrongIdentity, || {
                format!("timer {token}: event deadline differs from the registered one")
            });
        }
        if now < deadline {
            checks.fail(Check::FiredEarly, || {
                format!("timer {token} ran {:?} early", deadline - now)
            });
        }
    } else if now < ev.deadline() {
        shared.early_after_reset.fetch_add(1, Ordering::SeqCst);
    }
    heart.stats.beats.fetch_add(1, Ordering::SeqCst);
    if shared.stopping.load(Ordering::SeqCst) {
        return;
    }
    // Re-arm from inside the callback, through the event's engine.
    let mut rng = Rng::new();
    let next = match arm_heartbeat(ev.engine(), heart, shared, heartbeat_delay(&mut rng)) {
        Ok(next) => next,
        Err(e) => {
            checks.fail(Check::Unexpected, || format!("re-arming a heartbeat: {e}"));
            return;
        }
    };
    let mut slot = lock(&heart.slot);
    if slot.as_ref().is_some_and(|h| Arc::ptr_eq(&h.reg, reg)) {
        let own = slot.replace(next);
        drop(slot);
        // Our own, fired handle: dropping it inside the callback does not
        // wait and has no effect.
        drop(own);
    } else {
        // The churn thread took our handle and is cancelling it.
        drop(slot);
        shared.orphans.push(next);
    }
}

/// Cancels a heartbeat from outside any callback and checks the outcome
/// against what the callback did. Returns `true` for a lost timer event:
/// the timer never fired although a genuine report of it was rejected
/// before the cancel began, or although it was more than two seconds
/// overdue.
fn retire_timer(h: TimerHandle, shared: &Shared) -> bool {
    let TimerHandle { timer, reg } = h;
    let token = timer.token();
    reg.cancel_started.store(true, Ordering::SeqCst);
    let cancelled = timer.cancel();
    lock(&shared.timer_regs).remove(&token.as_u64());
    let checks = &shared.checks;
    let mut lost = false;
    if cancelled {
        reg.cancelled.store(true, Ordering::SeqCst);
        shared.timers_cancelled.fetch_add(1, Ordering::SeqCst);
        shared.bury(token.as_u64(), Kind::Timeout, -1);
        if reg.fired.load(Ordering::SeqCst) != 0 {
            checks.fail(Check::CancelOutcome, || {
                format!("cancel() of {token} returned true but the callback ran")
            });
        }
        let deadline = shared.at(reg.deadline.load(Ordering::SeqCst));
        lost = reg.lost_report.load(Ordering::SeqCst)
            || Instant::now().saturating_duration_since(deadline) > Duration::from_secs(2);
    } else if reg.fired.load(Ordering::SeqCst) != 1 {
        checks.fail(Check::CancelOutcome, || {
            format!(
                "cancel() of {token} returned false but the callback ran {} times",
                reg.fired.load(Ordering::SeqCst)
            )
        });
    }
    if !reg.dropped.load(Ordering::SeqCst) {
        checks.fail(Check::NotQuiesced, || {
            format!("callback of timer {token} not dropped after cancel returned")
        });
    }
    lost
}

// ----- the application's own loop ----------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Fd,
    Timeout,
}

struct FdEntry {
    fd: RawFd,
    interest: Interest,
    /// Reports of this registration not yet handed to the engine: the loop
    /// does not report the fd again until they are (one-shot semantics).
    inflight: Arc<AtomicU32>,
}

#[derive(Default)]
struct Registry {
    fds: HashMap<u64, FdEntry>,
    timeouts: BTreeSet<(Instant, u64)>,
    /// Tokens of registrations that have ended: material for replays.
    dead: VecDeque<(u64, Kind, RawFd)>,
    hook_calls: [u64; 6],
}

const DEAD_HISTORY: usize = 4096;

impl Registry {
    fn bury(&mut self, token: u64, kind: Kind, fd: RawFd) {
        if self.dead.len() == DEAD_HISTORY {
            self.dead.pop_front();
        }
        self.dead.push_back((token, kind, fd));
    }
}

const HOOK_NAMES: [&str; 6] = [
    "fd_register",
    "fd_modify",
    "fd_deregister",
    "timeout_register",
    "timeout_modify",
    "timeout_deregister",
];

struct AppLoop {
    reg: Mutex<Registry>,
    wake_fd: OwnedFd,
    wake_pending: AtomicBool,
}

impl AppLoop {
    fn new() -> io::Result<AppLoop> {
        // SAFETY: eventfd takes no pointers; it returns a new fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(AppLoop {
            reg: Mutex::new(Registry::default()),
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            wake_fd: unsafe { OwnedFd::from_raw_fd(fd) },
            wake_pending: AtomicBool::new(false),
        })
    }

    /// Wakes the loop thread (one eventfd write per sleep).
    fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            let one = 1u64;
            // SAFETY: writes the 8 bytes of `one` to our eventfd. EAGAIN
            // (counter full) means the loop is woken already.
            unsafe { libc::write(self.wake_fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    fn consume_wake(&self) {
        self.wake_pending.store(false, Ordering::SeqCst);
        let mut buf = 0u64;
        // SAFETY: reads at most 8 bytes into `buf`, which is 8 bytes long;
        // EAGAIN leaves nothing to do.
        unsafe { libc::read(self.wake_fd.as_raw_fd(), (&mut buf as *mut u64).cast(), 8) };
    }
}

/// The hooks the engine calls: this program's loop keeps the registration.
struct Hooks(Arc<AppLoop>);

impl OsEventHooks for Hooks {
    type FdReg = u64;
    type TimeoutReg = (Instant, u64);

    fn fd_register(&self, fd: RawFd, interest: Interest, token: Token) -> io::Result<u64> {
        let t = token.as_u64();
        {
            let mut r = lock(&self.0.reg);
            r.hook_calls[0] += 1;
            r.fds.insert(
                t,
                FdEntry {
                    fd,
                    interest,
                    inflight: Arc::new(AtomicU32::new(0)),
                },
            );
        }
        self.0.wake();
        Ok(t)
    }

    fn fd_modify(&self, _fd: RawFd, reg: &mut u64, interest: Interest) -> io::Result<()> {
        let mut r = lock(&self.0.reg);
        r.hook_calls[1] += 1;
        if let Some(e) = r.fds.get_mut(reg) {
            e.interest = interest;
        }
        drop(r);
        self.0.wake();
        Ok(())
    }

    fn fd_deregister(&self, fd: RawFd, reg: u64) {
        let mut r = lock(&self.0.reg);
        r.hook_calls[2] += 1;
        r.fds.remove(&reg);
        r.bury(reg, Kind::Fd, fd);
    }

    fn timeout_register(&self, deadline: Instant, token: Token) -> io::Result<(Instant, u64)> {
        let key = (deadline, token.as_u64());
        {
            let mut r = lock(&self.0.reg);
            r.hook_calls[3] += 1;
            r.timeouts.insert(key);
        }
        self.0.wake();
        Ok(key)
    }

    fn timeout_modify(&self, reg: &mut (Instant, u64), deadline: Instant) -> io::Result<()> {
        let mut r = lock(&self.0.reg);
        r.hook_calls[4] += 1;
        // Absent: the loop has reported the old deadline already; the
        // engine sorts that out.
        if r.timeouts.remove(reg) {
            reg.0 = deadline;
            r.timeouts.insert(*reg);
        }
        drop(r);
        self.0.wake();
        Ok(())
    }

    fn timeout_deregister(&self, reg: (Instant, u64)) {
        let mut r = lock(&self.0.reg);
        r.hook_calls[5] += 1;
        r.timeouts.remove(&reg);
        r.bury(reg.1, Kind::Timeout, -1);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// What the loop found: a ready fd, a due timeout.
    Genuine,
    /// The same report, handed to a second thread.
    Duplicate,
    /// A token whose registration has ended.
    Replay,
    /// A made-up token.
    Forged,
    /// A live fd token with another fd.
    WrongFd,
    /// A live token reported as the other kind.
    WrongKind,
}

const ORIGINS: usize = 6;
const ORIGIN_NAMES: [&str; ORIGINS] = [
    "genuine",
    "duplicated",
    "replayed dead token",
    "forged token",
    "live token, wrong fd",
    "live token, wrong kind",
];

struct Item {
    kind: Kind,
    origin: Origin,
    token: u64,
    fd: RawFd,
    revents: Readiness,
    detected: Instant,
    late: bool,
    inflight: Option<Arc<AtomicU32>>,
}

impl Item {
    fn duplicate(&self) -> Item {
        if let Some(c) = &self.inflight {
            c.fetch_add(1, Ordering::SeqCst);
        }
        Item {
            origin: Origin::Duplicate,
            inflight: self.inflight.clone(),
            ..*self
        }
    }
    fn injected(kind: Kind, origin: Origin, token: u64, fd: RawFd, now: Instant) -> Item {
        Item {
            kind,
            origin,
            token,
            fd,
            revents: Readiness::READABLE,
            detected: now,
            late: false,
            inflight: None,
        }
    }
}

/// Where the loop puts delivery items: one queue per delivery thread.
struct Sink {
    queues: Vec<CachePadded<SegQueue<Item>>>,
    threads: Mutex<Vec<Thread>>,
}

#[derive(Default)]
struct LoopOut {
    held_back: Vec<Item>,
    iterations: u64,
    generated: [u64; ORIGINS],
    late: u64,
    errors: u64,
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

fn app_loop(app: &AppLoop, sink: &Sink, stop: &AtomicBool) -> LoopOut {
    let threads = lock(&sink.threads).clone();
    let mut rng = Rng::new();
    let mut out = LoopOut::default();
    let mut pfds: Vec<libc::pollfd> = Vec::new();
    let mut meta: Vec<(u64, Arc<AtomicU32>)> = Vec::new();
    let mut live_fds: Vec<(u64, RawFd)> = Vec::new();
    let mut live_timers: Vec<u64> = Vec::new();
    let mut held: Vec<(Instant, Item)> = Vec::new();
    let mut batch: Vec<Item> = Vec::new();
    let mut woken = vec![false; threads.len()];
    while !stop.load(Ordering::SeqCst) {
        out.iterations += 1;
        pfds.clear();
        meta.clear();
        live_fds.clear();
        live_timers.clear();
        pfds.push(pollfd(app.wake_fd.as_raw_fd(), libc::POLLIN));
        let mut wake_at = {
            let r = lock(&app.reg);
            for (&token, e) in &r.fds {
                live_fds.push((token, e.fd));
                if e.inflight.load(Ordering::SeqCst) == 0 {
                    pfds.push(pollfd(e.fd, e.interest.as_poll_events()));
                    meta.push((token, Arc::clone(&e.inflight)));
                }
            }
            live_timers.extend(r.timeouts.iter().map(|&(_, t)| t));
            r.timeouts.first().map(|&(d, _)| d)
        };
        if let Some(release) = held.iter().map(|(at, _)| *at).min() {
            wake_at = Some(wake_at.map_or(release, |w| w.min(release)));
        }
        // Never sleep long, so that the stop flag is seen.
        let sleep = wake_at
            .map_or(Duration::from_millis(100), |at| {
                at.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(100));
        let ts = libc::timespec {
            tv_sec: sleep.as_secs() as libc::time_t,
            tv_nsec: sleep.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `pfds` is a valid, exclusively borrowed array of
        // `pfds.len()` pollfds; `ts` is a valid timespec; a null sigmask
        // means "leave the mask alone".
        let n = unsafe {
            libc::ppoll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if n < 0 {
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                out.errors += 1;
                thread::sleep(Duration::from_millis(1));
            }
            continue;
        }
        let now = Instant::now();
        if pfds[0].revents != 0 {
            app.consume_wake();
        }
        for (pfd, (token, inflight)) in pfds[1..].iter().zip(&meta) {
            if pfd.revents == 0 {
                continue;
            }
            inflight.fetch_add(1, Ordering::SeqCst);
            batch.push(Item {
                kind: Kind::Fd,
                origin: Origin::Genuine,
                token: *token,
                fd: pfd.fd,
                revents: Readiness::from_poll_revents(pfd.revents),
                detected: now,
                late: false,
                inflight: Some(Arc::clone(inflight)),
            });
        }
        {
            let mut r = lock(&app.reg);
            while let Some(&(deadline, token)) = r.timeouts.first() {
                if deadline > now {
                    break;
                }
                r.timeouts.pop_first();
                batch.push(Item {
                    kind: Kind::Timeout,
                    origin: Origin::Genuine,
                    token,
                    fd: -1,
                    revents: Readiness::EMPTY,
                    detected: now,
                    late: false,
                    inflight: None,
                });
            }
            // Replays of dead tokens: about one per six genuine reports,
            // now and then one even when nothing happened.
            let replays =
                (0..batch.len()).filter(|_| rng.one_in(6)).count() + usize::from(rng.one_in(8));
            for _ in 0..replays {
                if r.dead.is_empty() {
                    break;
                }
                // Mostly as reported when it was live (an fd token with
                // its own fd, which is likely watched again by now under
                // a new generation), sometimes as the other kind.
                let (token, kind, fd) = r.dead[rng.index(r.dead.len())];
                let (kind, fd) = match (kind, rng.one_in(8)) {
                    (Kind::Fd, false) => (Kind::Fd, fd),
                    (Kind::Timeout, true) => {
                        let fd = live_fds
                            .get(rng.index(live_fds.len().max(1)))
                            .map_or(3, |e| e.1);
                        (Kind::Fd, fd)
                    }
                    _ => (Kind::Timeout, -1),
                };
                batch.push(Item::injected(kind, Origin::Replay, token, fd, now));
            }
        }
        let genuine = batch.len();
        for i in 0..genuine {
            if rng.one_in(30) {
                let dup = batch[i].duplicate();
                batch.push(dup);
            }
            if rng.one_in(40) {
                batch.push(forge(&mut rng, &live_fds, now));
            }
            if rng.one_in(40) && !live_fds.is_empty() {
                let (token, fd) = live_fds[rng.index(live_fds.len())];
                let other = live_fds[rng.index(live_fds.len())].1;
                let wrong = if other == fd { fd + 1 } else { other };
                batch.push(Item::injected(Kind::Fd, Origin::WrongFd, token, wrong, now));
            }
            if rng.one_in(60) {
                let item = if rng.one_in(2) && !live_timers.is_empty() {
                    let token = live_timers[rng.index(live_timers.len())];
                    let fd = live_fds.first().map_or(3, |e| e.1);
                    Item::injected(Kind::Fd, Origin::WrongKind, token, fd, now)
                } else if let Some(&(token, fd)) = live_fds.get(rng.index(live_fds.len().max(1))) {
                    Item::injected(Kind::Timeout, Origin::WrongKind, token, fd, now)
                } else {
                    continue;
                };
                batch.push(item);
            }
        }
        for item in &batch {
            out.generated[item.origin as usize] += 1;
        }
        // Late delivery: hold some genuine reports back for 1-20 ms.
        let mut i = 0;
        while i < batch.len() {
            if batch[i].origin == Origin::Genuine && rng.one_in(25) {
                let mut item = batch.swap_remove(i);
                item.late = true;
                out.late += 1;
                let release = now + Duration::from_micros(1_000 + rng.below(19_000));
                held.push((release, item));
            } else {
                i += 1;
            }
        }
        let mut j = 0;
        while j < held.len() {
            if held[j].0 <= now {
                batch.push(held.swap_remove(j).1);
            } else {
                j += 1;
            }
        }
        rng.shuffle(&mut batch);
        for item in batch.drain(..) {
            let k = rng.index(sink.queues.len());
            sink.queues[k].push(item);
            woken[k] = true;
        }
        for (k, w) in woken.iter_mut().enumerate() {
            if std::mem::take(w) {
                threads[k].unpark();
            }
        }
    }
    out.held_back = held.into_iter().map(|(_, item)| item).collect();
    out
}

/// A token that names nothing: generation zero, an index past anything
/// claimed, or a generation far beyond any this run can reach.
fn forge(rng: &mut Rng, live_fds: &[(u64, RawFd)], now: Instant) -> Item {
    const INDEX_BITS: u32 = Token::INDEX_BITS;
    // The upper half of the generation range: no slot gets there in a run.
    let half = 1u64 << (evnexus::Generation::BITS - 1);
    let far_generation = half | rng.below(half);
    let token = match rng.below(3) {
        0 => rng.below(1 << INDEX_BITS), // generation zero: malformed
        1 => (far_generation << INDEX_BITS) | rng.below(1 << INDEX_BITS),
        _ => (far_generation << INDEX_BITS) | rng.below(256),
    };
    if rng.one_in(2) {
        let fd = live_fds
            .get(rng.index(live_fds.len().max(1)))
            .map_or(3, |e| e.1);
        Item::injected(Kind::Fd, Origin::Forged, token, fd, now)
    } else {
        Item::injected(Kind::Timeout, Origin::Forged, token, -1, now)
    }
}

// ----- the engine's own loop (uring, epoll) -----------------------------------------

/// Built-in loop: what the delivery threads hammer `occurred_*` with while
/// the loop carries the genuine events. About `per_sec` reports a second:
/// replays of dead tokens (40 %), duplicate reports of live fd watches
/// with their own fd (25 %), forged tokens (12 %), live fd tokens with
/// another fd (12 %), live tokens of the wrong kind (11 %). A live timer
/// token is never reported as a timeout: that would be the application
/// saying the timer is due, and fire it early.
fn injector(shared: &Shared, sink: &Sink, per_sec: u64, stop: &AtomicBool) -> LoopOut {
    let threads = lock(&sink.threads).clone();
    let mut rng = Rng::new();
    let mut out = LoopOut::default();
    let mut live_fds: Vec<(u64, RawFd)> = Vec::new();
    let mut live_timers: Vec<u64> = Vec::new();
    let mut dead: Vec<(u64, Kind, RawFd)> = Vec::new();
    let mut refreshed: Option<Instant> = None;
    let mut woken = vec![false; threads.len()];
    let start = Instant::now();
    let burst = (per_sec / 20).max(1); // at most 50 ms worth at once
    let mut made = 0u64;
    while !stop.load(Ordering::SeqCst) {
        out.iterations += 1;
        let now = Instant::now();
        // Snapshots of what is live and dead, refreshed every few ms: a
        // token live in the snapshot may have ended by the time it is
        // reported, as with any late report.
        let every = Duration::from_millis(5) + Duration::from_nanos(200 * live_fds.len() as u64);
        if refreshed.map_or(true, |r| now.saturating_duration_since(r) >= every) {
            live_fds.clear();
            live_fds.extend(lock(&shared.watch_regs).iter().map(|(&t, r)| (t, r.fd)));
            live_timers.clear();
            live_timers.extend(lock(&shared.timer_regs).keys().copied());
            dead.clear();
            dead.extend(lock(&shared.graveyard).iter().copied());
            refreshed = Some(now);
        }
        let target = (start.elapsed().as_secs_f64() * per_sec as f64) as u64;
        if target > made + burst {
            made = target - burst; // fell behind (descheduled): do not flood
        }
        for _ in made..target {
            let item = match rng.below(100) {
                0..=39 if !dead.is_empty() => {
                    // Mostly as reported when it was live (an fd token with
                    // its own fd, which is likely watched again by now under
                    // a new generation), sometimes as the other kind.
                    let (token, kind, fd) = dead[rng.index(dead.len())];
                    let (kind, fd) = match (kind, rng.one_in(8)) {
                        (Kind::Fd, false) => (Kind::Fd, fd),
                        (Kind::Timeout, true) => {
                            let fd = live_fds
                                .get(rng.index(live_fds.len().max(1)))
                                .map_or(3, |e| e.1);
                            (Kind::Fd, fd)
                        }
                        _ => (Kind::Timeout, -1),
                    };
                    Item::injected(kind, Origin::Replay, token, fd, now)
                }
                40..=64 if !live_fds.is_empty() => {
                    let (token, fd) = live_fds[rng.index(live_fds.len())];
                    Item::injected(Kind::Fd, Origin::Duplicate, token, fd, now)
                }
                77..=88 if !live_fds.is_empty() => {
                    let (token, fd) = live_fds[rng.index(live_fds.len())];
                    let other = live_fds[rng.index(live_fds.len())].1;
                    let wrong = if other == fd { fd + 1 } else { other };
                    Item::injected(Kind::Fd, Origin::WrongFd, token, wrong, now)
                }
                89..=99 if !live_fds.is_empty() => {
                    if rng.one_in(2) && !live_timers.is_empty() {
                        let token = live_timers[rng.index(live_timers.len())];
                        let fd = live_fds[rng.index(live_fds.len())].1;
                        Item::injected(Kind::Fd, Origin::WrongKind, token, fd, now)
                    } else {
                        let (token, fd) = live_fds[rng.index(live_fds.len())];
                        Item::injected(Kind::Timeout, Origin::WrongKind, token, fd, now)
                    }
                }
                _ => forge(&mut rng, &live_fds, now),
            };
            out.generated[item.origin as usize] += 1;
            let k = rng.index(sink.queues.len());
            sink.queues[k].push(item);
            woken[k] = true;
        }
        made = target;
        for (k, w) in woken.iter_mut().enumerate() {
            if std::mem::take(w) {
                threads[k].unpark();
            }
        }
        thread::sleep(Duration::from_micros(250));
    }
    out
}

/// What the loop thread saw.
#[derive(Default)]
struct EngineLoopOut {
    /// Callback runs on the loop thread.
    callback_runs: u64,
    /// Of which timer callbacks.
    timer_runs: u64,
    /// Errors `run` returned (a callback panic, a backend error).
    errors: u64,
}

/// The loop thread: [`Engine::run`] until [`Engine::stop`].
fn engine_loop(engine: &Engine, shared: &Shared) -> EngineLoopOut {
    let mut out = EngineLoopOut::default();
    let runs_before = CB_RUNS.with(Cell::get);
    let timers_before = TIMER_RUNS.with(Cell::get);
    loop {
        match engine.run() {
            Ok(()) => break,
            Err(e) => {
                out.errors += 1;
                shared
                    .checks
                    .fail(Check::Unexpected, || format!("the engine's loop: {e}"));
                if out.errors >= 100 {
                    break;
                }
            }
        }
    }
    out.callback_runs = CB_RUNS.with(Cell::get) - runs_before;
    out.timer_runs = TIMER_RUNS.with(Cell::get) - timers_before;
    flush_latency(shared);
    out
}

// ----- delivery --------------------------------------------------------------------

const OUTCOMES: usize = 8;
const OUT_DISPATCHED: usize = 0;
const OUT_DEFERRED: usize = 1;
const OUT_SUPPRESSED: usize = 2;
const OUT_STALE_GENERATION: usize = 3;
const OUT_STALE_FD: usize = 4;
const OUT_STALE_RANGE: usize = 5;
const OUT_STALE_KIND: usize = 6;
const OUT_ERROR: usize = 7;

fn classify(r: &evnexus::Result<Occurred>) -> usize {
    match r {
        Ok(Occurred::Dispatched) => OUT_DISPATCHED,
        Ok(Occurred::Deferred) => OUT_DEFERRED,
        Ok(Occurred::Suppressed) => OUT_SUPPRESSED,
        Ok(Occurred::Stale(StaleReason::Generation)) => OUT_STALE_GENERATION,
        Ok(Occurred::Stale(StaleReason::FdMismatch)) => OUT_STALE_FD,
        Ok(Occurred::Stale(StaleReason::OutOfRange)) => OUT_STALE_RANGE,
        Ok(Occurred::Stale(StaleReason::WrongKind)) => OUT_STALE_KIND,
        Err(_) => OUT_ERROR,
    }
}

struct Tally {
    outcomes: [[u64; OUTCOMES]; ORIGINS],
    timer_dispatches: u64,
    late_delivered: u64,
    on_time: Hist,
    late: Hist,
    callback_runs: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            outcomes: [[0; OUTCOMES]; ORIGINS],
            timer_dispatches: 0,
            late_delivered: 0,
            on_time: Hist::new(),
            late: Hist::new(),
            callback_runs: 0,
        }
    }
    fn merge(&mut self, o: &Tally) {
        for (a, b) in self.outcomes.iter_mut().zip(&o.outcomes) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        self.timer_dispatches += o.timer_dispatches;
        self.late_delivered += o.late_delivered;
        self.on_time.merge(&o.on_time);
        self.late.merge(&o.late);
        self.callback_runs += o.callback_runs;
    }
    fn calls(&self) -> u64 {
        self.outcomes.iter().flatten().sum()
    }
    fn outcome(&self, o: usize) -> u64 {
        self.outcomes.iter().map(|row| row[o]).sum()
    }
}

/// Hands one report to the engine and records what became of it. `app`
/// is the application loop (hooks backend only).
fn deliver(engine: &Engine, app: Option<&AppLoop>, shared: &Shared, item: Item, tally: &mut Tally) {
    CB_START.with(|c| c.set(None));
    let token = Token::from_u64(item.token);
    let r = match item.kind {
        Kind::Fd => engine.occurred_fd(token, item.fd, item.revents),
        Kind::Timeout => engine.occurred_timeout(token),
    };
    let o = classify(&r);
    tally.outcomes[item.origin as usize][o] += 1;
    if item.late {
        tally.late_delivered += 1;
    }
    let started = CB_START.with(Cell::take);
    // With hooks, the latency from the loop's detection to the callback;
    // a built-in loop's racing reports were never detected by anyone.
    if let Some(start) = started.filter(|_| app.is_some()) {
        let hist = if item.late {
            &mut tally.late
        } else {
            &mut tally.on_time
        };
        hist.record(start.saturating_duration_since(item.detected));
    }
    let checks = &shared.checks;
    match o {
        OUT_DISPATCHED | OUT_DEFERRED => {
            if !matches!(item.origin, Origin::Genuine | Origin::Duplicate) {
                checks.fail(Check::BadTokenAccepted, || {
                    format!(
                        "{} ({token}, {:?}, fd {}) was {r:?}",
                        ORIGIN_NAMES[item.origin as usize], item.kind, item.fd
                    )
                });
            }
            if item.kind == Kind::Timeout && o == OUT_DISPATCHED {
                tally.timer_dispatches += 1;
                lock(&shared.timer_regs).remove(&item.token);
                // Fired: the token is dead now, material for replays.
                if let Some(app) = app {
                    lock(&app.reg).bury(item.token, Kind::Timeout, -1);
                }
            }
        }
        OUT_SUPPRESSED | OUT_ERROR => {
            checks.fail(Check::Unexpected, || format!("occurred for {token}: {r:?}"));
        }
        // Stale. For a genuine report that is right only if the
        // registration has ended (or is being ended) meanwhile.
        _ if matches!(item.origin, Origin::Genuine | Origin::Duplicate) => match item.kind {
            Kind::Fd => {
                let reg = lock(&shared.watch_regs).get(&item.token).cloned();
                if reg.is_some_and(|reg| !reg.retiring.load(Ordering::SeqCst)) {
                    shared.lost_reports.fetch_add(1, Ordering::SeqCst);
                }
            }
            Kind::Timeout => {
                // Judged when the timer is cancelled: only a timer that
                // then turns out never to have fired lost its event.
                let reg = lock(&shared.timer_regs).get(&item.token).cloned();
                if let Some(reg) = reg {
                    if !reg.cancel_started.load(Ordering::SeqCst) {
                        reg.lost_report.store(true, Ordering::SeqCst);
                    }
                }
            }
        },
        _ => {}
    }
    if let (Some(inflight), Some(app)) = (item.inflight, app) {
        if inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            app.wake();
        }
    }
}

fn delivery_thread(
    k: usize,
    engine: &Engine,
    app: Option<&AppLoop>,
    shared: &Shared,
    sink: &Sink,
    stop: &AtomicBool,
    counter: &AtomicU64,
) -> Tally {
    let mut tally = Tally::new();
    let queue = &sink.queues[k];
    let mut n = 0u64;
    let runs_before = CB_RUNS.with(Cell::get);
    loop {
        if let Some(item) = queue.pop() {
            deliver(engine, app, shared, item, &mut tally);
            n += 1;
            counter.store(n, Ordering::Relaxed);
            continue;
        }
        if stop.load(Ordering::SeqCst) {
            if queue.is_empty() {
                break;
            }
            continue;
        }
        thread::park_timeout(Duration::from_millis(20));
    }
    tally.callback_runs = CB_RUNS.with(Cell::get) - runs_before;
    flush_latency(shared);
    tally
}

// ----- traffic and churn ------------------------------------------------------------

#[derive(Default)]
struct Traffic {
    written: AtomicU64,
    messages: AtomicU64,
    would_block: AtomicU64,
    errors: AtomicU64,
}

fn traffic_thread(domains: &[Domain], rate: u64, base: Instant, stop: &AtomicBool, t: &Traffic) {
    let mut rng = Rng::new();
    let mut msg = [0u8; 64];
    for (i, b) in msg.iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    let start = Instant::now();
    let mut sent = 0u64;
    let burst = (rate / 20).max(1); // at most 50 ms worth at once
    while !stop.load(Ordering::SeqCst) {
        let target = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        if target > sent + burst {
            sent = target - burst; // fell behind (descheduled): do not flood
        }
        let mut written = 0u64;
        let mut messages = 0u64;
        while sent < target {
            sent += 1;
            let d = &domains[rng.index(domains.len())];
            let len = 8 + rng.index(57);
            let r = {
                let mut writer = lock(&d.writer);
                let at = Instant::now();
                let r = writer.write(&msg[..len]);
                if r.is_ok() {
                    // Stamped under the writer's lock, so that a channel
                    // swap (which clears the stamp) comes before or after.
                    let ns = u64::try_from(at.saturating_duration_since(base).as_nanos())
                        .unwrap_or(u64::MAX - 1);
                    let _ = d.stats.write_stamp.compare_exchange(
                        0,
                        ns + 1,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                }
                r
            };
            match r {
                Ok(n) => {
                    written += n as u64;
                    messages += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    t.would_block.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    t.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            if messages % 256 == 255 && stop.load(Ordering::SeqCst) {
                break;
            }
        }
        t.written.fetch_add(written, Ordering::SeqCst);
        t.messages.fetch_add(messages, Ordering::Relaxed);
        thread::sleep(Duration::from_micros(500));
    }
}

#[derive(Default)]
struct ChurnCounts {
    rewatch: AtomicU64,
    new_channel: AtomicU64,
    timer_recreate: AtomicU64,
    timer_reset: AtomicU64,
    modify: AtomicU64,
    orphans: AtomicU64,
    drained_bytes: AtomicU64,
    lost_timers: AtomicU64,
    errors: AtomicU64,
}

fn churn_thread(
    engine: &Engine,
    domains: &[Domain],
    shared: &Arc<Shared>,
    stop: &AtomicBool,
    c: &ChurnCounts,
) {
    let mut rng = Rng::new();
    let checks = &shared.checks;
    // One operation per 400 µs, but each domain churned no more often than
    // every 25 ms on average, so that most heartbeats (5-50 ms) still fire.
    let pace = Duration::from_micros(400).max(Duration::from_millis(25) / domains.len() as u32);
    let error = |what: &str, e: &dyn std::fmt::Display| {
        c.errors.fetch_add(1, Ordering::SeqCst);
        checks.fail(Check::Unexpected, || format!("churn, {what}: {e}"));
    };
    while !stop.load(Ordering::SeqCst) {
        while let Some(orphan) = shared.orphans.pop() {
            c.orphans.fetch_add(1, Ordering::Relaxed);
            if retire_timer(orphan, shared) {
                c.lost_timers.fetch_add(1, Ordering::SeqCst);
            }
        }
        let d = &domains[rng.index(domains.len())];
        match rng.below(100) {
            // Same fd, new registration: likely the same slot, next
            // generation, while old reports are still on their way.
            0..=39 => {
                let old = lock(&d.watch).take();
                let Some(old) = old else { continue };
                let reader = Arc::clone(&old.reader);
                retire_watch(old, shared);
                match watch_channel(engine, reader, d.interest, &d.stats, shared) {
                    Ok(h) => *lock(&d.watch) = Some(h),
                    Err(e) => error("re-registering a watch", &e),
                }
                c.rewatch.fetch_add(1, Ordering::Relaxed);
            }
            // A new channel: the old fd number is closed and likely reused.
            40..=54 => {
                let old = lock(&d.watch).take();
                let Some(old) = old else { continue };
                let reader = Arc::clone(&old.reader);
                retire_watch(old, shared);
                let (new_reader, new_writer) = match channel() {
                    Ok(p) => p,
                    Err(e) => {
                        error("creating a channel", &e);
                        // Keep the domain served by its old channel.
                        if let Ok(h) = watch_channel(engine, reader, d.interest, &d.stats, shared) {
                            *lock(&d.watch) = Some(h);
                        }
                        continue;
                    }
                };
                let old_writer = std::mem::replace(&mut *lock(&d.writer), new_writer);
                drop(old_writer);
                // Nothing writes to the old channel any more and no
                // callback reads it: what is left in it was never reported
                // and is accounted for here.
                let mut buf = [0u8; 4096];
                loop {
                    match (&*reader).read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            c.drained_bytes.fetch_add(n as u64, Ordering::SeqCst);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                drop(reader);
                // Its write stamp may be of a byte read just now.
                d.stats.write_stamp.store(0, Ordering::SeqCst);
                match watch_channel(engine, new_reader, d.interest, &d.stats, shared) {
                    Ok(h) => *lock(&d.watch) = Some(h),
                    Err(e) => error("watching a new channel", &e),
                }
                c.new_channel.fetch_add(1, Ordering::Relaxed);
            }
            // Cancel the heartbeat and start a new one.
            55..=89 => {
                let old = lock(&d.heart.slot).take();
                if let Some(old) = old {
                    if retire_timer(old, shared) {
                        c.lost_timers.fetch_add(1, Ordering::SeqCst);
                    }
                }
                match arm_heartbeat(engine, &d.heart, shared, heartbeat_delay(&mut rng)) {
                    Ok(h) => {
                        let displaced = lock(&d.heart.slot).replace(h);
                        if let Some(displaced) = displaced {
                            if retire_timer(displaced, shared) {
                                c.lost_timers.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    Err(e) => error("arming a heartbeat", &e),
                }
                c.timer_recreate.fetch_add(1, Ordering::Relaxed);
            }
            // Change the watch's interest (fd_modify); READABLE (and the
            // triggering mode) stays in it. A live watch that we hold must
            // accept the change.
            90..=94 => {
                let slot = lock(&d.watch);
                if let Some(h) = slot.as_ref() {
                    let interest = if rng.one_in(2) {
                        d.interest | Interest::PRIORITY
                    } else {
                        d.interest
                    };
                    match h.watch.modify(interest) {
                        Ok(()) => {
                            c.modify.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => error("modifying a live watch", &e),
                    }
                }
            }
            // Move the heartbeat's deadline (timeout_modify).
            _ => {
                let slot = lock(&d.heart.slot);
                if let Some(h) = slot.as_ref() {
                    let at = Instant::now() + heartbeat_delay(&mut rng);
                    let at_ns = shared.since_base(at);
                    h.reg.resets.fetch_add(1, Ordering::SeqCst);
                    h.reg.pending_deadline.store(at_ns, Ordering::SeqCst);
                    if h.timer.reset_at(at).is_ok() {
                        h.reg.deadline.store(at_ns, Ordering::SeqCst);
                        c.timer_reset.fetch_add(1, Ordering::Relaxed);
                    }
                    h.reg.pending_deadline.store(0, Ordering::SeqCst);
                }
            }
        }
        thread::sleep(pace);
    }
}

// ----- the run -------------------------------------------------------------------------

struct Report {
    cfg: Config,
    /// What ran (`Engine::backend`).
    backend: BackendKind,
    edge_domains: usize,
    /// Built-in loop only.
    engine_loop: Option<EngineLoopOut>,
    /// Reruns and stale outcomes the built-in loop counted itself.
    loop_deferred: u64,
    loop_stale: u64,
    write_latency: Hist,
    timers_cancelled: u64,
    load: Duration,
    drain: Duration,
    drained: bool,
    teardown: Duration,
    tally: Tally,
    leftovers: Tally,
    loop_out: LoopOut,
    hook_calls: [u64; 6],
    stats: evnexus::Stats,
    traffic: (u64, u64, u64, u64),
    bytes_read: u64,
    churn: [u64; 9],
    timers_fired: u64,
    timers_armed: u64,
    silent_domains: usize,
    lost_reports: u64,
    early_after_reset: u64,
    final_sweep: (u64, u64),
    accounting: Vec<String>,
    check_counts: [u64; 9],
    notes: Vec<String>,
}

fn main() -> ExitCode {
    let cfg = match parse_args(std::env::args_os().skip(1).collect()) {
        Ok(Some(cfg)) => cfg,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("evnexus: {msg}\n(try --help)");
            return ExitCode::from(2);
        }
    };
    if let Err(msg) = raise_fd_limit(cfg.domains) {
        eprintln!("evnexus: {msg}");
        return ExitCode::from(2);
    }
    match run(cfg) {
        Ok(report) => {
            let ok = print_report(&report);
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("evnexus: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cfg: Config) -> Result<Report, String> {
    let builtin = cfg.backend.builtin();
    let shared = Arc::new(Shared {
        base: Instant::now(),
        builtin,
        checks: Checks::new(),
        stopping: AtomicBool::new(false),
        fired: Mutex::new(HashSet::new()),
        orphans: SegQueue::new(),
        registrations: AtomicU64::new(0),
        timers_armed: AtomicU64::new(0),
        watch_regs: Mutex::new(HashMap::new()),
        timer_regs: Mutex::new(HashMap::new()),
        lost_reports: AtomicU64::new(0),
        early_after_reset: AtomicU64::new(0),
        timers_cancelled: AtomicU64::new(0),
        graveyard: Mutex::new(VecDeque::new()),
        write_latency: Mutex::new(Hist::new()),
    });
    let (engine, app) = if builtin {
        let builder = match cfg.backend {
            SimBackend::Uring => Engine::builder().backend(BackendKind::Uring),
            SimBackend::Epoll => Engine::builder().backend(BackendKind::Epoll),
            // io_uring, or epoll where the kernel refuses it.
            _ => Engine::builder(),
        };
        let builder = match cfg.ring_entries {
            Some(n) => builder.ring_entries(n),
            None => builder,
        };
        let engine = builder
            .build()
            .map_err(|e| format!("building the engine ({:?}): {e}", cfg.backend))?;
        (Arc::new(engine), None)
    } else {
        let app = Arc::new(AppLoop::new().map_err(|e| format!("eventfd: {e}"))?);
        let engine = Engine::with_hooks(Hooks(Arc::clone(&app)));
        (Arc::new(engine), Some(app))
    };
    let backend = engine.backend();

    let mut rng = Rng::new();
    let mut domains = Vec::with_capacity(cfg.domains);
    for i in 0..cfg.domains {
        // Hooks carry level-triggered watches only (the libxl contract).
        let interest = if builtin && i % 2 == 1 {
            Interest::READABLE | Interest::EDGE
        } else {
            Interest::READABLE
        };
        let (reader, writer) = channel().map_err(|e| format!("socketpair: {e}"))?;
        let stats = Arc::new(DomainStats::default());
        let heart = Arc::new(Heart {
            slot: Mutex::new(None),
            stats: Arc::clone(&stats),
        });
        let watch = watch_channel(&engine, reader, interest, &stats, &shared)
            .map_err(|e| format!("register_fd: {e}"))?;
        let beat = arm_heartbeat(&engine, &heart, &shared, heartbeat_delay(&mut rng))
            .map_err(|e| format!("timer_at: {e}"))?;
        *lock(&heart.slot) = Some(beat);
        domains.push(Domain {
            interest,
            writer: Mutex::new(writer),
            watch: Mutex::new(Some(watch)),
            heart,
            stats,
        });
    }
    let domains = Arc::new(domains);

    let sink = Arc::new(Sink {
        queues: (0..cfg.threads)
            .map(|_| CachePadded::new(SegQueue::new()))
            .collect(),
        threads: Mutex::new(Vec::new()),
    });
    let counters: Arc<Vec<CachePadded<AtomicU64>>> = Arc::new(
        (0..cfg.threads)
            .map(|_| CachePadded::new(AtomicU64::new(0)))
            .collect(),
    );
    let stop_delivery = Arc::new(AtomicBool::new(false));
    let stop_loop = Arc::new(AtomicBool::new(false));
    let stop_load = Arc::new(AtomicBool::new(false));
    let traffic = Arc::new(Traffic::default());
    let churn = Arc::new(ChurnCounts::default());

    let spawn_err = |e: io::Error| format!("spawning a thread: {e}");
    let mut deliverers = Vec::new();
    for k in 0..cfg.threads {
        let (engine, app, shared, sink2, stop, counters) = (
            Arc::clone(&engine),
            app.clone(),
            Arc::clone(&shared),
            Arc::clone(&sink),
            Arc::clone(&stop_delivery),
            Arc::clone(&counters),
        );
        let h = thread::Builder::new()
            .name(format!("deliver-{k}"))
            .spawn(move || {
                delivery_thread(
                    k,
                    &engine,
                    app.as_deref(),
                    &shared,
                    &sink2,
                    &stop,
                    &counters[k],
                )
            })
            .map_err(spawn_err)?;
        lock(&sink.threads).push(h.thread().clone());
        deliverers.push(h);
    }
    // Hooks: the application loop finds the events and hands them to the
    // delivery threads. Built-in loop: the loop thread runs the engine's
    // loop, and the injector hands the delivery threads reports that race
    // it.
    let feeder = match &app {
        Some(app) => {
            let (app, sink, stop) = (Arc::clone(app), Arc::clone(&sink), Arc::clone(&stop_loop));
            thread::Builder::new()
                .name("app-loop".into())
                .spawn(move || app_loop(&app, &sink, &stop))
                .map_err(spawn_err)?
        }
        None => {
            let (shared, sink, stop) = (
                Arc::clone(&shared),
                Arc::clone(&sink),
                Arc::clone(&stop_loop),
            );
            let per_sec = cfg.rate / 2 + 5_000;
            thread::Builder::new()
                .name("injector".into())
                .spawn(move || injector(&shared, &sink, per_sec, &stop))
                .map_err(spawn_err)?
        }
    };
    let loop_thread = if builtin {
        let (engine, shared) = (Arc::clone(&engine), Arc::clone(&shared));
        Some(
            thread::Builder::new()
                .name("engine-loop".into())
                .spawn(move || engine_loop(&engine, &shared))
                .map_err(spawn_err)?,
        )
    } else {
        None
    };
    let traffic_handle = {
        let (domains, stop, traffic) = (
            Arc::clone(&domains),
            Arc::clone(&stop_load),
            Arc::clone(&traffic),
        );
        let rate = cfg.rate;
        let base = shared.base;
        thread::Builder::new()
            .name("traffic".into())
            .spawn(move || traffic_thread(&domains, rate, base, &stop, &traffic))
            .map_err(spawn_err)?
    };
    let churn_handle = {
        let (engine, domains, shared, stop, churn) = (
            Arc::clone(&engine),
            Arc::clone(&domains),
            Arc::clone(&shared),
            Arc::clone(&stop_load),
            Arc::clone(&churn),
        );
        thread::Builder::new()
            .name("churn".into())
            .spawn(move || churn_thread(&engine, &domains, &shared, &stop, &churn))
            .map_err(spawn_err)?
    };

    // ---- load phase, with a progress line on a terminal
    let start = Instant::now();
    let load_for = Duration::from_secs_f64(cfg.seconds);
    let progress = cfg.seconds > 3.0 && io::stdout().is_terminal();
    let occurred_so_far = || {
        counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    loop {
        let elapsed = start.elapsed();
        if elapsed >= load_for {
            break;
        }
        thread::sleep((load_for - elapsed).min(Duration::from_secs(1)));
        if progress {
            let e = start.elapsed().as_secs_f64().min(cfg.seconds);
            let mut out = io::stdout().lock();
            let _ = write!(
                out,
                "\r  {e:5.1} s / {:.1} s   {} occurred calls   misdeliveries so far: {}   ",
                cfg.seconds,
                group(occurred_so_far()),
                shared.checks.total()
            );
            let _ = out.flush();
        }
    }
    if progress {
        let mut out = io::stdout().lock();
        let _ = write!(out, "\r{:78}\r", "");
        let _ = out.flush();
    }
    stop_load.store(true, Ordering::SeqCst);
    let join_err = |what: &str| format!("the {what} thread panicked");
    traffic_handle.join().map_err(|_| join_err("traffic"))?;
    churn_handle.join().map_err(|_| join_err("churn"))?;
    let load = start.elapsed();

    // Stops the application loop or the injector, then the deliverers once
    // they have handed the engine everything queued.
    let stop_feeding = || -> Result<(LoopOut, Tally), String> {
        stop_loop.store(true, Ordering::SeqCst);
        if let Some(app) = &app {
            app.wake();
        }
        let loop_out = feeder.join().map_err(|_| join_err("app-loop/injector"))?;
        stop_delivery.store(true, Ordering::SeqCst);
        for t in lock(&sink.threads).iter() {
            t.unpark();
        }
        let mut tally = Tally::new();
        for h in deliverers {
            tally.merge(&h.join().map_err(|_| join_err("delivery"))?);
        }
        Ok((loop_out, tally))
    };

    // ---- drain: every byte written must be read by a callback
    let bytes_read = || {
        domains
            .iter()
            .map(|d| d.stats.bytes_read.load(Ordering::SeqCst))
            .sum::<u64>()
            + churn.drained_bytes.load(Ordering::SeqCst)
    };
    let written = traffic.written.load(Ordering::SeqCst);
    let drain = || {
        let drain_start = Instant::now();
        let mut drained = bytes_read() == written;
        while !drained && drain_start.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(1));
            drained = bytes_read() == written;
        }
        (drained, drain_start.elapsed())
    };
    let (drained, drain, teardown_start, (loop_out, tally)) = if builtin {
        // The racing reports stop first: a duplicate report runs the
        // callback too, and could read what the loop failed to report.
        // What is left in the channels now only the loop's events read.
        let fed = stop_feeding()?;
        let (drained, drain) = drain();
        let teardown_start = Instant::now();
        shared.stopping.store(true, Ordering::SeqCst);
        (drained, drain, teardown_start, fed)
    } else {
        // The application loop and the deliverers carry the events.
        let (drained, drain) = drain();
        // ---- teardown: stop heartbeats, the application loop, the
        // deliverers
        let teardown_start = Instant::now();
        shared.stopping.store(true, Ordering::SeqCst);
        (drained, drain, teardown_start, stop_feeding()?)
    };

    // Nothing reports events any more, but a built-in loop still runs (its
    // callbacks race these deregistrations): end every registration from
    // outside any callback and check each outcome.
    let mut lost_timers = churn.lost_timers.load(Ordering::SeqCst);
    for d in domains.iter() {
        let watch = lock(&d.watch).take();
        if let Some(w) = watch {
            retire_watch(w, &shared);
        }
        let beat = lock(&d.heart.slot).take();
        if let Some(b) = beat {
            lost_timers += u64::from(retire_timer(b, &shared));
        }
    }
    while let Some(orphan) = shared.orphans.pop() {
        lost_timers += u64::from(retire_timer(orphan, &shared));
    }
    // Then stop the built-in loop.
    let engine_loop_out = match loop_thread {
        Some(h) => {
            engine.stop();
            Some(h.join().map_err(|_| join_err("engine-loop"))?)
        }
        None => None,
    };

    // Late reports still held back by the loop, and a replay of every
    // remembered dead token as both kinds: all must be rejected now.
    let mut leftovers = Tally::new();
    let runs_before = CB_RUNS.with(Cell::get);
    for item in loop_out.held_back.iter() {
        let item = Item {
            inflight: None,
            ..*item
        };
        deliver(&engine, app.as_deref(), &shared, item, &mut leftovers);
    }
    let dead: Vec<(u64, Kind, RawFd)> = match &app {
        Some(app) => lock(&app.reg).dead.iter().copied().collect(),
        None => lock(&shared.graveyard).iter().copied().collect(),
    };
    let mut sweep = (0u64, 0u64);
    for &(token, was, fd) in &dead {
        for kind in [Kind::Fd, Kind::Timeout] {
            let fd = if was == Kind::Fd { fd } else { 0 };
            let item = Item::injected(kind, Origin::Replay, token, fd, Instant::now());
            let before = leftovers.outcome(OUT_DISPATCHED) + leftovers.outcome(OUT_DEFERRED);
            deliver(&engine, app.as_deref(), &shared, item, &mut leftovers);
            let after = leftovers.outcome(OUT_DISPATCHED) + leftovers.outcome(OUT_DEFERRED);
            sweep.0 += 1;
            sweep.1 += after - before;
        }
    }
    leftovers.callback_runs = CB_RUNS.with(Cell::get) - runs_before;
    flush_latency(&shared);
    let teardown = teardown_start.elapsed();

    // ---- accounting: the engine's counts against what the threads saw
    let stats = engine.stats();
    let mut all = Tally::new();
    all.merge(&tally);
    all.merge(&leftovers);
    let timers_fired: u64 = domains
        .iter()
        .map(|d| d.stats.beats.load(Ordering::SeqCst))
        .sum();
    let silent_domains = domains
        .iter()
        .filter(|d| d.stats.beats.load(Ordering::SeqCst) == 0)
        .count();
    let mut accounting = Vec::new();
    let loop_runs = engine_loop_out.as_ref().map_or(0, |l| l.callback_runs);
    // What the built-in loop's own dispatch counted and no thread of ours
    // could observe (`run` does not say what became of each event):
    // - reruns: an event the loop found while a delivery thread ran the
    //   callback (a duplicate report) was folded into a rerun there;
    // - stale (generation only): an event the loop had collected for a
    //   watch that the churn thread deregistered before the loop got to
    //   dispatch it (a level-triggered fd stays ready until the epoll
    //   entry is deleted, which happens just after the slot dies, so a
    //   busy loop can collect it more than once). The loop's events carry
    //   real tokens on their own fd, so it never counts fd mismatches,
    //   out-of-range or wrong-kind tokens: those must match exactly.
    // With hooks, every outcome is observed: all must match exactly.
    let observed_deferred = all.outcome(OUT_DEFERRED);
    let observed_generation = all.outcome(OUT_STALE_GENERATION);
    let (loop_deferred, loop_stale) = if builtin {
        if stats.reruns < observed_deferred {
            accounting.push(format!(
                "reruns: stats.reruns {} < Deferred outcomes observed {observed_deferred}",
                stats.reruns
            ));
        }
        if stats.stale.generation < observed_generation {
            accounting.push(format!(
                "stale: generation: stats {} < observed {observed_generation}",
                stats.stale.generation
            ));
        }
        (
            stats.reruns.saturating_sub(observed_deferred),
            stats.stale.generation.saturating_sub(observed_generation),
        )
    } else {
        (0, 0)
    };
    // `expect(what, a, b)`: a must equal b (engine counts first where the
    // engine is one side).
    let mut expect = |what: &str, a: u64, b: u64| {
        if a != b {
            accounting.push(format!("{what}: {a} != {b}"));
        }
    };
    expect(
        "callback runs (stats.dispatched vs runs on delivery and loop threads)",
        stats.dispatched,
        all.callback_runs + loop_runs,
    );
    expect(
        "reruns (stats.reruns vs Deferred, less the loop's)",
        stats.reruns,
        observed_deferred + loop_deferred,
    );
    expect(
        "stale: generation (less the loop's)",
        stats.stale.generation,
        observed_generation + loop_stale,
    );
    expect(
        "stale: fd mismatch",
        stats.stale.fd_mismatch,
        all.outcome(OUT_STALE_FD),
    );
    expect(
        "stale: out of range",
        stats.stale.out_of_range,
        all.outcome(OUT_STALE_RANGE),
    );
    expect(
        "stale: wrong kind",
        stats.stale.wrong_kind,
        all.outcome(OUT_STALE_KIND),
    );
    expect(
        "registrations",
        stats.registered,
        shared.registrations.load(Ordering::SeqCst),
    );
    expect("live registrations after teardown", stats.live(), 0);
    expect("callback panics", stats.panicked, 0);
    match &engine_loop_out {
        Some(l) => {
            expect(
                "timer callbacks on the loop thread vs heartbeats counted",
                l.timer_runs,
                timers_fired,
            );
            expect(
                "timers fired by occurred_timeout (none is reported live)",
                all.timer_dispatches,
                0,
            );
        }
        None => expect(
            "timer dispatches vs heartbeats counted",
            all.timer_dispatches,
            timers_fired,
        ),
    }
    let timers_cancelled = shared.timers_cancelled.load(Ordering::SeqCst);
    expect(
        "timers fired + cancelled before firing vs armed",
        timers_fired + timers_cancelled,
        shared.timers_armed.load(Ordering::SeqCst),
    );
    expect(
        "distinct fired timer tokens",
        lock(&shared.fired).len() as u64,
        timers_fired,
    );
    // Every item the loop made was handed to the engine exactly once: by
    // a delivery thread, or after teardown if the loop still held it back.
    for (o, name) in ORIGIN_NAMES.iter().enumerate() {
        let held = loop_out
            .held_back
            .iter()
            .filter(|i| i.origin as usize == o)
            .count() as u64;
        expect(
            &format!("{name} reports: delivered vs made by the loop"),
            tally.outcomes[o].iter().sum::<u64>() + held,
            loop_out.generated[o],
        );
    }
    expect(
        "late reports: delivered late vs held back",
        tally.late_delivered + loop_out.held_back.len() as u64,
        loop_out.late,
    );
    let hook_calls = app.as_ref().map_or([0; 6], |app| lock(&app.reg).hook_calls);
    // Every fd watch ended by deregistration; every timer either fired or
    // was deregistered, never both.
    if !builtin {
        expect(
            "fd_deregister vs fd_register hooks",
            hook_calls[2],
            hook_calls[0],
        );
        expect(
            "fd_modify hooks vs successful modify()",
            hook_calls[1],
            churn.modify.load(Ordering::SeqCst),
        );
        expect(
            "timeout_modify hooks vs successful reset_at()",
            hook_calls[4],
            churn.timer_reset.load(Ordering::SeqCst),
        );
        expect(
            "timeout_deregister hooks + fired vs timeout_register hooks",
            hook_calls[5] + timers_fired,
            hook_calls[3],
        );
    }

    let bytes_read = bytes_read();
    let report = Report {
        cfg,
        backend,
        edge_domains: domains.iter().filter(|d| d.interest.is_edge()).count(),
        engine_loop: engine_loop_out,
        loop_deferred,
        loop_stale,
        write_latency: std::mem::replace(&mut *lock(&shared.write_latency), Hist::new()),
        timers_cancelled,
        load,
        drain,
        drained,
        teardown,
        tally,
        leftovers,
        loop_out,
        hook_calls,
        stats,
        traffic: (
            written,
            traffic.messages.load(Ordering::SeqCst),
            traffic.would_block.load(Ordering::SeqCst),
            traffic.errors.load(Ordering::SeqCst),
        ),
        bytes_read,
        churn: [
            churn.rewatch.load(Ordering::SeqCst),
            churn.new_channel.load(Ordering::SeqCst),
            churn.timer_recreate.load(Ordering::SeqCst),
            churn.timer_reset.load(Ordering::SeqCst),
            churn.orphans.load(Ordering::SeqCst),
            churn.drained_bytes.load(Ordering::SeqCst),
            lost_timers,
            churn.errors.load(Ordering::SeqCst),
            churn.modify.load(Ordering::SeqCst),
        ],
        timers_fired,
        timers_armed: shared.timers_armed.load(Ordering::SeqCst),
        silent_domains,
        lost_reports: shared.lost_reports.load(Ordering::SeqCst),
        early_after_reset: shared.early_after_reset.load(Ordering::SeqCst),
        final_sweep: sweep,
        accounting,
        check_counts: std::array::from_fn(|i| shared.checks.failed[i].load(Ordering::SeqCst)),
        notes: lock(&shared.checks.notes).clone(),
    };

    // ---- shut down: handles are gone; drop the domains, then the engine.
    drop(domains);
    drop(engine);
    Ok(report)
}

// ----- the summary ------------------------------------------------------------------------

/// `1234567` as `1,234,567`.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn micros(ns: Option<u64>) -> String {
    match ns {
        None => "-".to_owned(),
        Some(ns) if ns >= 10_000_000 => format!("{:.1} ms", ns as f64 / 1e6),
        Some(ns) => format!("{:.1} µs", ns as f64 / 1e3),
    }
}

/// Prints the table; `true` if every check passed.
fn print_report(r: &Report) -> bool {
    let t = &r.tally;
    let active = (r.load + r.drain).as_secs_f64();
    let calls = t.calls();
    let misdeliveries: u64 = r.check_counts.iter().sum();
    let lost_bytes = r.traffic.0.abs_diff(r.bytes_read);
    let lost_timers = r.churn[6];
    let builtin = r.engine_loop.is_some();
    let mut s = String::new();
    let row = |s: &mut String, label: &str, value: String| {
        let _ = writeln!(s, "  {label:<40} {value}");
    };
    let ring_entries = r.cfg.ring_entries.unwrap_or(256);
    let (name, what) = match r.backend {
        BackendKind::Uring => (
            "uring",
            format!("the engine's built-in loop on io_uring, {ring_entries}-entry ring"),
        ),
        BackendKind::Epoll if r.cfg.backend == SimBackend::Default => (
            "epoll",
            "the engine's built-in loop on epoll: the kernel refused io_uring".to_owned(),
        ),
        BackendKind::Epoll => ("epoll", "the engine's built-in loop on epoll".to_owned()),
        BackendKind::Hooks => ("hooks", "application poll() loop".to_owned()),
        _ => ("other", "unexpected backend".to_owned()),
    };
    let _ = writeln!(
        s,
        "evnexus load simulation: {name} backend ({what}), {} domains, {} delivery threads",
        r.cfg.domains, r.cfg.threads
    );
    row(
        &mut s,
        "backend (Engine::backend)",
        format!("{:?}", r.backend),
    );
    if r.backend == BackendKind::Uring {
        row(
            &mut s,
            "  ring: entries / SQ full / CQ overflow",
            format!(
                "{ring_entries} / {} / {}   (stats.ring_sq_full, ring_cq_overflow)",
                group(r.stats.ring_sq_full),
                group(r.stats.ring_cq_overflow)
            ),
        );
    }
    row(
        &mut s,
        "duration",
        format!(
            "{:.2} s load + {:.3} s drain + {:.3} s teardown",
            r.load.as_secs_f64(),
            r.drain.as_secs_f64(),
            r.teardown.as_secs_f64()
        ),
    );
    row(
        &mut s,
        "domains / delivery threads",
        format!(
            "{} / {}   ({} watches level-triggered, {} edge-triggered)",
            r.cfg.domains,
            r.cfg.threads,
            r.cfg.domains - r.edge_domains,
            r.edge_domains
        ),
    );
    row(
        &mut s,
        if builtin {
            "occurred calls racing the loop"
        } else {
            "occurred calls delivered"
        },
        format!(
            "{}   ({} events/s)",
            group(calls),
            group((calls as f64 / active) as u64)
        ),
    );
    for (i, name) in ORIGIN_NAMES.iter().enumerate() {
        let n: u64 = t.outcomes[i].iter().sum();
        let (name, extra) = match (i, builtin) {
            // The loop carries the genuine events.
            (0, true) => continue,
            (0, false) => (
                *name,
                format!(
                    "   ({} of them late, held 1-20 ms)",
                    group(t.late_delivered)
                ),
            ),
            (1, true) => ("live fd token, right fd", String::new()),
            _ => (*name, String::new()),
        };
        row(&mut s, &format!("  {name}"), format!("{}{extra}", group(n)));
    }
    match &r.engine_loop {
        Some(l) => row(
            &mut s,
            "callback runs: loop / delivery threads",
            format!(
                "{} / {}   (engine: dispatched {}; {} timer runs on the loop, {} loop errors)",
                group(l.callback_runs),
                group(t.callback_runs),
                group(r.stats.dispatched),
                group(l.timer_runs),
                l.errors
            ),
        ),
        None => row(
            &mut s,
            "callback runs (engine: dispatched)",
            format!(
                "{}   ({})",
                group(t.callback_runs),
                group(r.stats.dispatched)
            ),
        ),
    }
    row(
        &mut s,
        "  Dispatched outcomes",
        group(t.outcome(OUT_DISPATCHED)),
    );
    row(
        &mut s,
        "  Deferred (folded into reruns)",
        if builtin {
            format!(
                "{}   (and {} of the loop's events folded into a delivery thread's run)",
                group(t.outcome(OUT_DEFERRED)),
                group(r.loop_deferred)
            )
        } else {
            group(t.outcome(OUT_DEFERRED))
        },
    );
    row(&mut s, "  Suppressed", group(t.outcome(OUT_SUPPRESSED)));
    let stale: u64 = (OUT_STALE_GENERATION..=OUT_STALE_KIND)
        .map(|o| t.outcome(o))
        .sum();
    row(&mut s, "stale rejected", group(stale));
    for (o, name) in [
        (OUT_STALE_GENERATION, "generation"),
        (OUT_STALE_FD, "fd mismatch"),
        (OUT_STALE_RANGE, "out of range"),
        (OUT_STALE_KIND, "wrong kind"),
    ] {
        row(&mut s, &format!("  {name}"), group(t.outcome(o)));
    }
    row(
        &mut s,
        if builtin {
            "  of live-token reports (watch ended)"
        } else {
            "  of genuine/duplicated reports"
        },
        group(
            (OUT_STALE_GENERATION..=OUT_STALE_KIND)
                .map(|o| t.outcomes[0][o] + t.outcomes[1][o])
                .sum(),
        ),
    );
    if builtin {
        row(
            &mut s,
            "  by the loop (engine count - observed)",
            format!(
                "{}   (events of watches ended before the loop dispatched them)",
                group(r.loop_stale)
            ),
        );
    }
    row(
        &mut s,
        "timers fired / cancelled / armed",
        if builtin {
            format!(
                "{} / {} / {}   ({} domains never beat; every fire checked against its current deadline)",
                group(r.timers_fired),
                group(r.timers_cancelled),
                group(r.timers_armed),
                r.silent_domains
            )
        } else {
            format!(
                "{} / {} / {}   ({} domains never beat; {} ran before a deadline moved by a racing reset)",
                group(r.timers_fired),
                group(r.timers_cancelled),
                group(r.timers_armed),
                r.silent_domains,
                r.early_after_reset
            )
        },
    );
    row(
        &mut s,
        "churn: re-registrations",
        format!(
            "{} same fd, {} new channel (fd reused); {} interest changes",
            group(r.churn[0]),
            group(r.churn[1]),
            group(r.churn[8])
        ),
    );
    row(
        &mut s,
        "churn: timers",
        format!(
            "{} cancelled+re-armed, {} reset, {} orphans cancelled",
            group(r.churn[2]),
            group(r.churn[3]),
            group(r.churn[4])
        ),
    );
    if builtin {
        row(
            &mut s,
            "injector",
            format!("{} batches", group(r.loop_out.iterations)),
        );
    } else {
        row(
            &mut s,
            "hook calls",
            HOOK_NAMES
                .iter()
                .zip(r.hook_calls)
                .map(|(n, c)| format!("{n} {}", group(c)))
                .collect::<Vec<_>>()
                .join(", "),
        );
        row(
            &mut s,
            "app loop",
            format!(
                "{} iterations, {} poll errors",
                group(r.loop_out.iterations),
                r.loop_out.errors
            ),
        );
    }
    row(
        &mut s,
        "bytes written / read",
        format!(
            "{} / {}   ({} messages, {} read at channel swaps, {} writes refused: buffer full)",
            group(r.traffic.0),
            group(r.bytes_read),
            group(r.traffic.1),
            group(r.churn[5]),
            group(r.traffic.2)
        ),
    );
    let w = &r.write_latency;
    let write_latency = |what: &str| {
        format!(
            "{} / {}   (traffic write -> callback start{what}, {} samples)",
            micros(w.quantile(0.50)),
            micros(w.quantile(0.99)),
            group(w.count)
        )
    };
    if builtin {
        row(&mut s, "dispatch latency p50 / p99", write_latency(""));
    } else {
        row(
            &mut s,
            "dispatch latency p50 / p99",
            format!(
                "{} / {}   (loop detection -> callback start, on-time reports, {} samples)",
                micros(t.on_time.quantile(0.50)),
                micros(t.on_time.quantile(0.99)),
                group(t.on_time.count)
            ),
        );
        row(
            &mut s,
            "  late reports p50 / p99",
            format!(
                "{} / {}   ({} samples)",
                micros(t.late.quantile(0.50)),
                micros(t.late.quantile(0.99)),
                group(t.late.count)
            ),
        );
        row(
            &mut s,
            "  write -> callback p50 / p99",
            write_latency(", late reports included"),
        );
    }
    row(
        &mut s,
        "after teardown",
        format!(
            "{} held-back reports and {} dead-token replays: {} dispatched",
            r.loop_out.held_back.len(),
            group(r.final_sweep.0),
            r.leftovers.outcome(OUT_DISPATCHED) + r.leftovers.outcome(OUT_DEFERRED)
        ),
    );
    let _ = writeln!(s, "checks");
    for (name, n) in CHECK_NAMES.iter().zip(r.check_counts) {
        row(&mut s, &format!("  {name}"), n.to_string());
    }
    row(
        &mut s,
        "  lost events: bytes never read",
        if r.drained {
            lost_bytes.to_string()
        } else {
            format!("{lost_bytes} (drain timed out)")
        },
    );
    row(
        &mut s,
        "  lost events: live fd reports rejected",
        r.lost_reports.to_string(),
    );
    row(
        &mut s,
        "  lost events: timers never fired",
        format!("{lost_timers}   (live report rejected, or >2 s overdue)"),
    );
    row(
        &mut s,
        "  engine stats vs observed",
        if r.accounting.is_empty() {
            "agree".to_owned()
        } else {
            format!("{} mismatches", r.accounting.len())
        },
    );
    if r.traffic.3 != 0 || r.churn[7] != 0 {
        row(
            &mut s,
            "  i/o errors",
            format!("{} writes, {} churn", r.traffic.3, r.churn[7]),
        );
    }
    let _ = writeln!(s, "misdeliveries: {misdeliveries}");
    print!("{s}");
    let _ = io::stdout().flush();
    for note in &r.notes {
        eprintln!("evnexus: {note}");
    }
    for a in &r.accounting {
        eprintln!("evnexus: accounting mismatch: {a}");
    }
    if lost_bytes != 0 {
        eprintln!("evnexus: {lost_bytes} bytes written were never read (lost events)");
    }
    if lost_timers != 0 {
        eprintln!(
            "evnexus: {lost_timers} timers never fired although a live report of them was rejected or they were over 2 s overdue (lost events)"
        );
    }
    if r.lost_reports != 0 {
        eprintln!(
            "evnexus: {} genuine reports of live fd watches were rejected (lost events)",
            r.lost_reports
        );
    }
    misdeliveries == 0
        && lost_bytes == 0
        && lost_timers == 0
        && r.lost_reports == 0
        && r.accounting.is_empty()
}
