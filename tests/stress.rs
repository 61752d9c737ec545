//! Stress tests with real threads: several threads report events
//! (`occurred_fd`, `occurred_timeout`) for live, recently dead, forged and
//! malformed tokens while another thread churns registrations, and every
//! outcome is checked against a log of what was live when.
//!
//! # The logical clock
//!
//! Every event of interest takes a stamp from one `SeqCst` counter
//! (`Shared::tick`): a delivery stamps `t0` before its `occurred_*` call and
//! `t1` after it; the churn thread stamps `born` after a registration
//! returned, `dying` before its deregistration and `died` after that
//! returned; a callback stamps each run as it starts. Stamps are taken with
//! read-modify-writes of the same atomic, so `a < b` means the event stamped
//! `a` happened before the event stamped `b`. From that the checker knows,
//! for every call, whether its registration was live for the whole call
//! (`born < t0`, `t1 < dying`), dead before it started (`died < t0`), or
//! ending while it ran, and so which outcomes the engine may return.
//!
//! The mix of what is reported is chosen by a xorshift generator seeded per
//! thread; what is asserted is the same for every interleaving.
//!
//! Counts: 10^6 reports per test in release builds, fewer under
//! `debug_assertions`; `EVNEXUS_STRESS_CALLS` overrides either. Run with
//! `--nocapture` to see the outcome counts.

use evnexus::{
    Engine, FdEvent, FdWatch, Generation, Interest, Occurred, OsEventHooks, Readiness, StaleReason,
    Stats, Timer, TimerEvent, Token,
};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

// ----- parameters -------------------------------------------------------

/// Reports delivered per test, over all delivery threads.
fn total_calls() -> usize {
    if let Some(n) = std::env::var("EVNEXUS_STRESS_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    if cfg!(debug_assertions) {
        200_000
    } else {
        1_000_000
    }
}

const DELIVERY_THREADS: usize = 2;
/// Registrations the churn thread keeps live at once (table entries).
const FD_ENTRIES: usize = 16;
const TIMER_ENTRIES: usize = 8;
/// Socket pairs whose fds the fd registrations share (two fds each).
const FD_PAIRS: usize = 3;
/// The churn thread replaces one registration per this many reports, and
/// the delivery threads wait for it when they are more than
/// `PACE_SLACK` replacements ahead: the mix of live and dead tokens then
/// does not depend on how the scheduler shares the cores.
const FD_PACE: u64 = 8;
const TIMER_PACE: u64 = 8;
const PACE_SLACK: u64 = 4;
/// Delivery threads publish their progress every this many reports.
const PROGRESS_STEP: u64 = 4;

/// Token layout (public: `Generation::BITS`).
const INDEX_BITS: u32 = 64 - Generation::BITS;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
/// Indices from here up lie in arena pages this test never makes the
/// engine allocate (it never holds more than a few dozen registrations),
/// whatever the page sizes: tokens there are `OutOfRange`.
const FAR_INDEX: u64 = 1 << 20;
/// Generations from here up (and this far above a live one) are never
/// issued in a test run: a slot would need 2^30 reuses.
const FAR_GENERATION: u64 = 1 << 30;

fn token_index(t: u64) -> u64 {
    t & INDEX_MASK
}
fn token_generation(t: u64) -> u64 {
    t >> INDEX_BITS
}
fn make_token(index: u64, generation: u64) -> u64 {
    (generation << INDEX_BITS) | (index & INDEX_MASK)
}

// ----- helpers ----------------------------------------------------------

/// The two tests run one after the other: each wants the machine's cores
/// for its own three threads, so that its churn thread keeps up.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// xorshift64*: the only randomness, and it only chooses the mix.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Hooks for an application loop that carries nothing but counts what the
/// engine told it; the tests report events themselves.
#[derive(Default)]
struct CountingHooks {
    fd_registered: AtomicU64,
    fd_deregistered: AtomicU64,
    /// `fd_deregister` called with an fd other than the registered one.
    fd_deregister_wrong_fd: AtomicU64,
    timeouts_registered: AtomicU64,
    timeouts_deregistered: AtomicU64,
}

/// The hooks value the engine owns (a newtype: `Arc` is not ours to
/// implement a foreign trait on).
struct Hooks(Arc<CountingHooks>);

impl std::ops::Deref for Hooks {
    type Target = CountingHooks;
    fn deref(&self) -> &CountingHooks {
        &self.0
    }
}

impl OsEventHooks for Hooks {
    type FdReg = RawFd;
    type TimeoutReg = ();
    fn fd_register(&self, fd: RawFd, _: Interest, _: Token) -> io::Result<RawFd> {
        self.fd_registered.fetch_add(1, SeqCst);
        Ok(fd)
    }
    fn fd_modify(&self, _: RawFd, _: &mut RawFd, _: Interest) -> io::Result<()> {
        Ok(())
    }
    fn fd_deregister(&self, fd: RawFd, reg: RawFd) {
        if fd != reg {
            self.fd_deregister_wrong_fd.fetch_add(1, SeqCst);
        }
        self.fd_deregistered.fetch_add(1, SeqCst);
    }
    fn timeout_register(&self, _: Instant, _: Token) -> io::Result<()> {
        self.timeouts_registered.fetch_add(1, SeqCst);
        Ok(())
    }
    fn timeout_modify(&self, _: &mut (), _: Instant) -> io::Result<()> {
        Ok(())
    }
    fn timeout_deregister(&self, _: ()) {
        self.timeouts_deregistered.fetch_add(1, SeqCst);
    }
}

/// What a registration's callback records about itself.
#[derive(Default)]
struct Rec {
    token: AtomicU64,
    fd: AtomicI32,
    runs: AtomicU64,
    running: AtomicBool,
    /// Set by the churn thread once the registration's deregister returned.
    dead: AtomicBool,
    /// Clock stamps of the first and the last run's start (0: none).
    first_run: AtomicU64,
    last_run: AtomicU64,
}

/// State shared by the churn thread, the delivery threads and callbacks.
struct Shared {
    clock: AtomicU64,
    /// One record per registration, by registration id (in creation order).
    recs: Box<[Rec]>,
    /// Current registration of each entry: id + 1 (0: none yet).
    table: Box<[AtomicU64]>,
    /// Reports delivered so far (published every `PROGRESS_STEP`).
    delivered: AtomicU64,
    /// Replacements the churn thread has made, and its pace.
    replaced: AtomicU64,
    pace: u64,
    /// The churn thread makes no more replacements.
    churn_stopped: AtomicBool,
    /// Delivery threads still running.
    delivering: AtomicUsize,
    violations: Mutex<Vec<String>>,
    violation_count: AtomicU64,
}

impl Shared {
    fn new(capacity: usize, entries: usize, pace: u64) -> Arc<Shared> {
        Arc::new(Shared {
            clock: AtomicU64::new(0),
            recs: (0..capacity).map(|_| Rec::default()).collect(),
            table: (0..entries).map(|_| AtomicU64::new(0)).collect(),
            delivered: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            pace,
            churn_stopped: AtomicBool::new(false),
            delivering: AtomicUsize::new(DELIVERY_THREADS),
            violations: Mutex::new(Vec::new()),
            violation_count: AtomicU64::new(0),
        })
    }

    /// A fresh stamp of the logical clock (never 0).
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, SeqCst) + 1
    }

    /// A callback saw something impossible: recorded, asserted at the end
    /// (a panic inside a callback would only end its registration).
    fn violation(&self, msg: String) {
        self.violation_count.fetch_add(1, SeqCst);
        let mut v = self.violations.lock().unwrap();
        if v.len() < 50 {
            v.push(msg);
        }
    }

    /// The current registration of entry `k`: (id, token, fd).
    fn entry(&self, k: usize) -> Option<(usize, u64, RawFd)> {
        let id = self.table[k].load(Acquire).checked_sub(1)? as usize;
        Some((
            id,
            self.recs[id].token.load(Relaxed),
            self.recs[id].fd.load(Relaxed),
        ))
    }

    /// The churn thread: blocks until the deliveries are due another
    /// replacement; `false` once they are over.
    fn churn_may_replace(&self) -> bool {
        loop {
            if self.delivering.load(SeqCst) == 0 {
                return false;
            }
            if self.delivered.load(Relaxed) >= self.replaced.load(Relaxed) * self.pace {
                return true;
            }
            std::thread::yield_now();
        }
    }

    /// The churn thread made a replacement.
    fn churn_replaced(&self) {
        self.replaced.fetch_add(1, Relaxed);
    }

    /// The churn thread makes no more replacements.
    fn churn_stop(&self) {
        self.churn_stopped.store(true, SeqCst);
    }

    /// A delivery thread made `PROGRESS_STEP` more reports: publishes that,
    /// and waits while it is too far ahead of the churn thread. (The two
    /// waits cannot block each other: for any count, one side may go on.)
    fn delivered_step(&self) {
        let delivered = self.delivered.fetch_add(PROGRESS_STEP, Relaxed) + PROGRESS_STEP;
        while !self.churn_stopped.load(SeqCst)
            && delivered >= (self.replaced.load(Relaxed) + PACE_SLACK) * self.pace
        {
            std::thread::yield_now();
        }
    }

    fn assert_no_violations(&self) {
        let n = self.violation_count.load(SeqCst);
        assert!(
            n == 0,
            "{n} callback violations, first ones:\n{}",
            self.violations.lock().unwrap().join("\n")
        );
    }
}

/// The churn thread's log of one registration.
#[derive(Clone, Debug)]
struct RegLog {
    token: u64,
    fd: RawFd,
    /// Stamped after register returned.
    born: u64,
    /// Stamped before deregister/cancel was called.
    dying: u64,
    /// Stamped after deregister/cancel returned.
    died: u64,
    /// What `deregister()` / `cancel()` returned (`None`: the handle was
    /// dropped instead).
    ended_by_call: Option<bool>,
}

impl RegLog {
    fn new(token: u64, fd: RawFd, born: u64) -> RegLog {
        RegLog {
            token,
            fd,
            born,
            dying: u64::MAX,
            died: u64::MAX,
            ended_by_call: None,
        }
    }
}

/// One report, as the delivery thread logged it.
#[derive(Clone, Copy)]
struct Call {
    token: u64,
    t0: u64,
    t1: u64,
    fd: RawFd,
    /// What the delivering thread meant to send (`Kind as u8`): only for
    /// the summary and for which entry point was called; expectations are
    /// derived from the log, not from the intent.
    kind: u8,
    outcome: u8,
}

// Outcome codes, and sets of them as bit masks.
const DISPATCHED: u8 = 0;
const DEFERRED: u8 = 1;
const SUPPRESSED: u8 = 2;
const OUT_OF_RANGE: u8 = 3;
const GENERATION: u8 = 4;
const FD_MISMATCH: u8 = 5;
const WRONG_KIND: u8 = 6;
const ERROR: u8 = 7;
const OUTCOMES: usize = 8;
const OUTCOME_NAMES: [&str; OUTCOMES] = [
    "Dispatched",
    "Deferred",
    "Suppressed",
    "Stale(OutOfRange)",
    "Stale(Generation)",
    "Stale(FdMismatch)",
    "Stale(WrongKind)",
    "Err",
];

const fn bit(code: u8) -> u16 {
    1 << code
}

fn code(result: evnexus::Result<Occurred>) -> u8 {
    match result {
        Ok(Occurred::Dispatched) => DISPATCHED,
        Ok(Occurred::Deferred) => DEFERRED,
        Ok(Occurred::Suppressed) => SUPPRESSED,
        Ok(Occurred::Stale(StaleReason::OutOfRange)) => OUT_OF_RANGE,
        Ok(Occurred::Stale(StaleReason::Generation)) => GENERATION,
        Ok(Occurred::Stale(StaleReason::FdMismatch)) => FD_MISMATCH,
        Ok(Occurred::Stale(StaleReason::WrongKind)) => WRONG_KIND,
        Err(_) => ERROR,
    }
}

fn mask_names(mask: u16) -> String {
    (0..OUTCOMES as u8)
        .filter(|c| mask & bit(*c) != 0)
        .map(|c| OUTCOME_NAMES[c as usize])
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Intervals `(start, end)` of a registration's calls, for "does some call
/// overlap this stamp / interval" in `O(log n)`.
struct Intervals {
    starts: Vec<u64>,
    ends: Vec<u64>,
    /// `max_end[i]`: the latest end among the first `i + 1` by start.
    max_end: Vec<u64>,
}

impl Intervals {
    fn new(mut v: Vec<(u64, u64)>) -> Intervals {
        v.sort_unstable();
        let mut max = 0;
        let max_end = v
            .iter()
            .map(|&(_, e)| {
                max = max.max(e);
                max
            })
            .collect();
        Intervals {
            starts: v.iter().map(|&(s, _)| s).collect(),
            ends: v.iter().map(|&(_, e)| e).collect(),
            max_end,
        }
    }
    /// The intervals `(s, e)` with `s < hi` and `e > lo`, as positions.
    fn overlapping(&self, lo: u64, hi: u64) -> Vec<usize> {
        let mut found = Vec::new();
        let mut j = self.starts.partition_point(|&s| s < hi);
        while j > 0 && self.max_end[j - 1] > lo {
            j -= 1;
            if self.ends[j] > lo {
                found.push(j);
            }
        }
        found
    }
    fn end(&self, position: usize) -> u64 {
        self.ends[position]
    }
    /// Whether some interval `(s, e)` has `s < hi` and `e > lo`.
    fn overlaps(&self, lo: u64, hi: u64) -> bool {
        let n = self.starts.partition_point(|&s| s < hi);
        n > 0 && self.max_end[n - 1] > lo
    }
}

/// Failed expectations, collected so one run reports them all at once.
#[derive(Default)]
struct Failures {
    count: u64,
    first: Vec<String>,
}

impl Failures {
    fn fail(&mut self, msg: String) {
        self.count += 1;
        if self.first.len() < 30 {
            self.first.push(msg);
        }
    }
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.fail(msg());
        }
    }
    fn assert_none(&self, what: &str) {
        assert!(
            self.count == 0,
            "{what}: {} failed expectations, first ones:\n{}",
            self.count,
            self.first.join("\n")
        );
    }
}

/// Outcome counts per category of call, printed for the record.
#[derive(Default)]
struct Summary(HashMap<&'static str, [u64; OUTCOMES]>);

impl Summary {
    fn add(&mut self, category: &'static str, outcome: u8) {
        self.0.entry(category).or_default()[outcome as usize] += 1;
    }
    fn get(&self, category: &str, outcome: u8) -> u64 {
        self.0.get(category).map_or(0, |c| c[outcome as usize])
    }
    fn total(&self, category: &str) -> u64 {
        self.0.get(category).map_or(0, |c| c.iter().sum())
    }
    fn print(&self, title: &str) {
        let mut cats: Vec<_> = self.0.iter().collect();
        cats.sort_by_key(|(k, _)| *k);
        eprintln!("{title}");
        for (cat, counts) in cats {
            let parts: Vec<String> = counts
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(c, n)| format!("{}={n}", OUTCOME_NAMES[c]))
                .collect();
            eprintln!("  {cat:<34} {}", parts.join(" "));
        }
    }
}

/// Stats the engine must report, from the log.
fn assert_stats(stats: &Stats, runs: u64, outcomes: &[u64; OUTCOMES], registrations: u64) {
    let expected = (
        runs,
        outcomes[DEFERRED as usize],
        outcomes[GENERATION as usize],
        outcomes[FD_MISMATCH as usize],
        outcomes[OUT_OF_RANGE as usize],
        outcomes[WRONG_KIND as usize],
        0,
        0,
        registrations,
        registrations,
    );
    let got = (
        stats.dispatched,
        stats.reruns,
        stats.stale.generation,
        stats.stale.fd_mismatch,
        stats.stale.out_of_range,
        stats.stale.wrong_kind,
        stats.recheck_suppressed,
        stats.panicked,
        stats.registered,
        stats.deregistered,
    );
    assert_eq!(
        got, expected,
        "engine stats (dispatched, reruns, stale generation, fd_mismatch, out_of_range, \
         wrong_kind, recheck_suppressed, panicked, registered, deregistered) disagree with \
         the log; stats: {stats:?}"
    );
    assert_eq!(
        stats.stale.total(),
        outcomes[OUT_OF_RANGE as usize]
            + outcomes[GENERATION as usize]
            + outcomes[FD_MISMATCH as usize]
            + outcomes[WRONG_KIND as usize]
    );
}

/// Outcome of a token that no registration ever had: one that cannot
/// resolve to a slot is `OutOfRange`, one whose slot exists `Generation`.
/// `known_slot_at`: for each index, when a registration on it was first
/// born (its arena page existed from then on).
fn unissued_expectation(
    token: u64,
    t0: u64,
    known_slot_at: &HashMap<u64, u64>,
) -> (&'static str, u16) {
    let index = token_index(token);
    if token_generation(token) == 0 {
        ("unissued: generation 0", bit(OUT_OF_RANGE))
    } else if known_slot_at.get(&index).is_some_and(|&born| born < t0) {
        ("unissued: slot in use", bit(GENERATION))
    } else if index >= FAR_INDEX {
        ("unissued: index far out", bit(OUT_OF_RANGE))
    } else {
        // An index the engine may or may not have a page for (arena page
        // granularity is the engine's business).
        (
            "unissued: index near arena",
            bit(OUT_OF_RANGE) | bit(GENERATION),
        )
    }
}

/// For each slot index, when the first registration on it was born.
fn slots_known(regs: &[RegLog]) -> HashMap<u64, u64> {
    let mut known: HashMap<u64, u64> = HashMap::new();
    for r in regs {
        let e = known.entry(token_index(r.token)).or_insert(u64::MAX);
        *e = (*e).min(r.born);
    }
    known
}

fn readiness(rng: &mut Rng) -> Readiness {
    match rng.below(3) {
        0 => Readiness::READABLE,
        1 => Readiness::WRITABLE,
        _ => Readiness::READABLE | Readiness::WRITABLE,
    }
}

/// Spins or yields inside a callback, so that other threads' reports find
/// it busy (fd: folded into a rerun; timer: already fired).
fn linger(n: u64) {
    if n % 16 == 15 {
        for _ in 0..3 {
            std::thread::yield_now();
        }
    } else {
        for _ in 0..(n % 8) * 32 {
            std::hint::spin_loop();
        }
    }
}

// ===== fd watches ========================================================

/// What a delivery thread meant to report.
#[derive(Clone, Copy)]
#[repr(u8)]
enum FdKind {
    /// The current registration of an entry, its fd.
    Live,
    /// The current registration of the hot entry everyone hammers.
    Hot,
    /// The current registration of an entry, another fd.
    WrongFd,
    /// A registration this thread saw earlier (likely dead by now).
    Old,
    /// The current index with an earlier generation.
    EarlierGeneration,
    /// The current index with a generation never issued.
    FutureGeneration,
    /// Any `u64`.
    Forged,
    /// A small index (live slots among them) with a random generation
    /// that is never issued (a small one could, rarely, name a real
    /// registration and make the expectation a guess).
    ForgedNear,
    /// Generation 0 (a live index, or any).
    GenerationZero,
    /// An index far past the arena.
    FarIndex,
}

fn fd_callback(sh: Arc<Shared>, id: usize) -> impl FnMut(&FdEvent<'_>) + Send + 'static {
    move |ev| {
        let stamp = sh.tick();
        let rec = &sh.recs[id];
        if rec.running.swap(true, SeqCst) {
            sh.violation(format!("fd reg {id}: callback entered while running"));
        }
        if rec.dead.load(SeqCst) {
            sh.violation(format!(
                "fd reg {id}: callback started after deregister returned"
            ));
        }
        let token = rec.token.load(SeqCst);
        if ev.token().as_u64() != token {
            sh.violation(format!(
                "fd reg {id}: callback got token {:?}, registered {:?}",
                ev.token(),
                Token::from_u64(token)
            ));
        }
        if ev.fd() != rec.fd.load(SeqCst) {
            sh.violation(format!(
                "fd reg {id}: callback got fd {}, registered {}",
                ev.fd(),
                rec.fd.load(SeqCst)
            ));
        }
        let r = ev.readiness().as_poll_revents();
        if r == 0 || r & !(libc_pollin() | libc_pollout()) != 0 {
            sh.violation(format!(
                "fd reg {id}: readiness {:?} is none of what was reported",
                ev.readiness()
            ));
        }
        let n = rec.runs.fetch_add(1, SeqCst);
        let _ = rec.first_run.compare_exchange(0, stamp, SeqCst, SeqCst);
        rec.last_run.store(stamp, SeqCst);
        linger(n);
        if rec.dead.load(SeqCst) {
            sh.violation(format!(
                "fd reg {id}: callback still running after deregister returned"
            ));
        }
        rec.running.store(false, SeqCst);
    }
}

fn libc_pollin() -> i16 {
    Readiness::READABLE.as_poll_revents()
}
fn libc_pollout() -> i16 {
    Readiness::WRITABLE.as_poll_revents()
}

/// The churn thread: fills the table, then replaces registrations until
/// the deliveries are over, then deregisters what is left. Registrations
/// share a few fds; now and then every watch on one socket pair is ended,
/// the pair closed and a new one opened, which the kernel gives the lowest
/// free numbers: usually the same ones (the classic stale case: a late
/// report for an old registration names an fd number that is open again).
/// Returns the log, and how many pairs were reopened (on the same numbers).
fn fd_churn(
    engine: &Engine,
    sh: &Arc<Shared>,
    start: &Barrier,
    seed: u64,
) -> (Vec<RegLog>, (u64, u64)) {
    let mut rng = Rng::new(seed);
    let mut pairs: Vec<(UnixStream, UnixStream)> = (0..FD_PAIRS)
        .map(|_| UnixStream::pair().expect("socketpair"))
        .collect();
    // Per entry: the handle, the registration id, the pair it watches.
    let mut current: Vec<Option<(FdWatch, usize, usize)>> = (0..FD_ENTRIES).map(|_| None).collect();
    let mut regs: Vec<RegLog> = Vec::new();
    let (mut reopened, mut same_numbers) = (0, 0);

    let register = |k: usize,
                    pairs: &[(UnixStream, UnixStream)],
                    regs: &mut Vec<RegLog>,
                    rng: &mut Rng|
     -> (FdWatch, usize, usize) {
        let p = rng.below(FD_PAIRS as u64) as usize;
        let fd = if rng.below(2) == 0 {
            pairs[p].0.as_raw_fd()
        } else {
            pairs[p].1.as_raw_fd()
        };
        let id = regs.len();
        sh.recs[id].fd.store(fd, SeqCst);
        let watch = engine
            .register_fd(fd, Interest::READABLE, fd_callback(Arc::clone(sh), id))
            .expect("register_fd");
        let token = watch.token().as_u64();
        sh.recs[id].token.store(token, SeqCst);
        regs.push(RegLog::new(token, fd, sh.tick()));
        sh.table[k].store(id as u64 + 1, Release);
        (watch, id, p)
    };
    let deregister =
        |(watch, id, _): (FdWatch, usize, usize), regs: &mut [RegLog], rng: &mut Rng| {
            regs[id].dying = sh.tick();
            if rng.below(2) == 0 {
                regs[id].ended_by_call = Some(watch.deregister());
            } else {
                drop(watch);
            }
            sh.recs[id].dead.store(true, SeqCst);
            regs[id].died = sh.tick();
        };

    for (k, slot) in current.iter_mut().enumerate() {
        *slot = Some(register(k, &pairs, &mut regs, &mut rng));
    }
    start.wait();
    // Room for a replacement and a reopen (which ends up to every entry).
    while regs.len() + 2 * FD_ENTRIES <= sh.recs.len() && sh.churn_may_replace() {
        let k = rng.below(FD_ENTRIES as u64) as usize;
        deregister(
            current[k].take().expect("entry filled"),
            &mut regs,
            &mut rng,
        );
        let mut emptied = vec![k];
        if rng.below(32) == 0 {
            let p = rng.below(FD_PAIRS as u64) as usize;
            for (j, slot) in current.iter_mut().enumerate() {
                if slot.as_ref().is_some_and(|&(_, _, q)| q == p) {
                    deregister(slot.take().expect("checked"), &mut regs, &mut rng);
                    emptied.push(j);
                }
            }
            let numbers = |(a, b): &(UnixStream, UnixStream)| (a.as_raw_fd(), b.as_raw_fd());
            let before = numbers(&pairs[p]);
            // Close the old pair first, so its numbers are free again.
            drop(pairs.swap_remove(p));
            pairs.push(UnixStream::pair().expect("socketpair"));
            let last = pairs.len() - 1;
            pairs.swap(p, last);
            reopened += 1;
            if numbers(&pairs[p]) == before {
                same_numbers += 1;
            }
        }
        for j in emptied {
            current[j] = Some(register(j, &pairs, &mut regs, &mut rng));
        }
        sh.churn_replaced();
    }
    sh.churn_stop();
    for slot in current.iter_mut() {
        deregister(slot.take().expect("entry filled"), &mut regs, &mut rng);
    }
    (regs, (reopened, same_numbers))
}

/// A delivery thread: `calls` reports of the mix, logged.
fn fd_delivery(
    engine: &Engine,
    sh: &Shared,
    start: &Barrier,
    seed: u64,
    calls: usize,
) -> Vec<Call> {
    let mut rng = Rng::new(seed);
    let mut log = Vec::with_capacity(calls);
    let mut recent = [0usize; 64];
    let mut seen = 0usize;
    start.wait();
    for i in 0..calls {
        let pick = rng.below(100);
        let kind = match pick {
            0..=29 => FdKind::Live,
            30..=44 => FdKind::Hot,
            45..=54 => FdKind::WrongFd,
            55..=66 => FdKind::Old,
            67..=72 => FdKind::EarlierGeneration,
            73..=77 => FdKind::FutureGeneration,
            78..=84 => FdKind::Forged,
            85..=91 => FdKind::ForgedNear,
            92..=95 => FdKind::GenerationZero,
            _ => FdKind::FarIndex,
        };
        let entry = match kind {
            FdKind::Hot => sh.entry(0),
            _ => sh.entry(rng.below(FD_ENTRIES as u64) as usize),
        };
        let (id, live_token, live_fd) = entry.expect("the table is filled before deliveries");
        recent[seen % recent.len()] = id;
        seen += 1;
        let (token, fd) = match kind {
            FdKind::Live | FdKind::Hot => (live_token, live_fd),
            FdKind::WrongFd => (live_token, live_fd + 1 + rng.below(5) as RawFd),
            FdKind::Old => {
                let old = recent[rng.below(seen.min(recent.len()) as u64) as usize];
                (
                    sh.recs[old].token.load(Relaxed),
                    sh.recs[old].fd.load(Relaxed),
                )
            }
            FdKind::EarlierGeneration => {
                let g = token_generation(live_token);
                let back = 1 + rng.below(3);
                (
                    make_token(token_index(live_token), g.saturating_sub(back)),
                    live_fd,
                )
            }
            FdKind::FutureGeneration => {
                let g = token_generation(live_token) + FAR_GENERATION + rng.below(1000);
                (make_token(token_index(live_token), g), live_fd)
            }
            FdKind::Forged => (rng.next(), live_fd),
            FdKind::ForgedNear => (
                make_token(
                    rng.below(64),
                    FAR_GENERATION + rng.below(Generation::MAX.get() - FAR_GENERATION),
                ),
                live_fd,
            ),
            FdKind::GenerationZero => (token_index(live_token) | (rng.below(2) << 23), live_fd),
            FdKind::FarIndex => (
                make_token(
                    FAR_INDEX + rng.below(INDEX_MASK + 1 - FAR_INDEX),
                    1 + rng.below(Generation::MAX.get()),
                ),
                live_fd,
            ),
        };
        let revents = readiness(&mut rng);
        let t0 = sh.tick();
        let outcome = code(engine.occurred_fd(Token::from_u64(token), fd, revents));
        let t1 = sh.tick();
        log.push(Call {
            token,
            t0,
            t1,
            fd,
            kind: kind as u8,
            outcome,
        });
        if (i as u64 + 1) % PROGRESS_STEP == 0 {
            sh.delivered_step();
        }
    }
    sh.delivering.fetch_sub(1, SeqCst);
    log
}

#[derive(Default)]
struct FdAcc {
    dispatched: Vec<(u64, u64)>,
    deferred: Vec<(u64, u64)>,
}

/// Checks every call and every registration against the log.
fn check_fd_log(
    regs: &[RegLog],
    calls: &[Call],
    sh: &Shared,
    stats: &Stats,
    hooks: &CountingHooks,
) {
    let mut f = Failures::default();
    let mut summary = Summary::default();
    let by_token: HashMap<u64, usize> =
        regs.iter().enumerate().map(|(i, r)| (r.token, i)).collect();
    assert_eq!(by_token.len(), regs.len(), "a token was issued twice");
    let known = slots_known(regs);
    let mut acc: Vec<FdAcc> = regs.iter().map(|_| FdAcc::default()).collect();
    let mut outcomes = [0u64; OUTCOMES];

    for (i, r) in regs.iter().enumerate() {
        f.check(r.born < r.dying && r.dying < r.died, || {
            format!("reg {i}: bad life {r:?}")
        });
        f.check(token_index(r.token) < FAR_INDEX, || {
            format!("reg {i}: index {}", token_index(r.token))
        });
        // Nothing but the churn thread ends a watch here.
        f.check(r.ended_by_call != Some(false), || {
            format!("reg {i}: deregister() returned false for a live watch")
        });
    }

    for c in calls {
        outcomes[c.outcome as usize] += 1;
        let (category, allowed) = match by_token.get(&c.token) {
            None => unissued_expectation(c.token, c.t0, &known),
            Some(&i) => {
                let r = &regs[i];
                match c.outcome {
                    DISPATCHED => acc[i].dispatched.push((c.t0, c.t1)),
                    DEFERRED => acc[i].deferred.push((c.t0, c.t1)),
                    _ => {}
                }
                // A token reaches a delivery thread only after the
                // registration was published: a harness invariant.
                assert!(r.born < c.t0, "call before its registration was born");
                let right_fd = c.fd == r.fd;
                if c.t1 < r.dying {
                    if right_fd {
                        (
                            "live for the whole call, its fd",
                            bit(DISPATCHED) | bit(DEFERRED),
                        )
                    } else {
                        ("live for the whole call, other fd", bit(FD_MISMATCH))
                    }
                } else if r.died < c.t0 {
                    if right_fd {
                        ("dead before the call, its fd", bit(GENERATION))
                    } else {
                        ("dead before the call, other fd", bit(GENERATION))
                    }
                } else if right_fd {
                    // Deregistration raced the call. Never FdMismatch: if the
                    // slot was reused for another fd between the call's
                    // state load and its param read, the engine re-reads the
                    // state and reports the generation.
                    (
                        "ending during the call, its fd",
                        bit(DISPATCHED) | bit(DEFERRED) | bit(GENERATION),
                    )
                } else {
                    (
                        "ending during the call, other fd",
                        bit(GENERATION) | bit(FD_MISMATCH),
                    )
                }
            }
        };
        summary.add(category, c.outcome);
        f.check(allowed & bit(c.outcome) != 0, || {
            format!(
                "call {:?} fd {} (kind {}) in [{}, {}]: {category}: got {}, expected {} ({:?})",
                Token::from_u64(c.token),
                c.fd,
                c.kind,
                c.t0,
                c.t1,
                OUTCOME_NAMES[c.outcome as usize],
                mask_names(allowed),
                by_token.get(&c.token).map(|&i| &regs[i]),
            )
        });
    }

    let mut total_runs = 0;
    let mut rerun_bound_used = 0;
    for (i, (r, a)) in regs.iter().zip(acc).enumerate() {
        let rec = &sh.recs[i];
        let runs = rec.runs.load(SeqCst);
        total_runs += runs;
        let d = a.dispatched.len() as u64;
        let def = a.deferred.len() as u64;
        f.check(runs >= d, || {
            format!("reg {i}: {runs} runs < {d} Dispatched")
        });
        f.check(runs <= d + def, || {
            format!("reg {i}: {runs} runs > {d} Dispatched + {def} Deferred")
        });
        // A deferred event is never lost: the dispatcher that was busy
        // runs the callback again after it, unless the registration is
        // killed first. When every Dispatched call that overlaps the
        // Deferred one ended before the deregistration began, that rerun
        // certainly happened; when there is exactly one such call, it is
        // the dispatcher, and distinct dispatchers make distinct reruns.
        let dispatched = Intervals::new(a.dispatched);
        let mut certain_rerun = false;
        let mut rerunning_dispatchers = std::collections::BTreeSet::new();
        for &(t0, t1) in &a.deferred {
            let over = dispatched.overlapping(t0, t1);
            f.check(!over.is_empty(), || {
                format!("reg {i}: Deferred in [{t0}, {t1}] with no Dispatched call running")
            });
            if !over.is_empty() && over.iter().all(|&p| dispatched.end(p) < r.dying) {
                certain_rerun = true;
                if let [only] = over[..] {
                    rerunning_dispatchers.insert(only);
                }
            }
        }
        let reruns_due = (rerunning_dispatchers.len() as u64).max(u64::from(certain_rerun));
        if reruns_due > 0 {
            rerun_bound_used += 1;
        }
        f.check(runs >= d + reruns_due, || {
            format!(
                "reg {i}: {runs} runs for {d} Dispatched and {def} Deferred, at least {reruns_due} \
                 of which certainly needed a rerun: a deferred event was lost"
            )
        });
        if runs > 0 {
            for (what, stamp) in [
                ("first", rec.first_run.load(SeqCst)),
                ("last", rec.last_run.load(SeqCst)),
            ] {
                f.check(r.born < stamp && stamp < r.died, || {
                    format!("reg {i}: {what} run at {stamp} outside its life {r:?}")
                });
                f.check(dispatched.overlaps(stamp, stamp), || {
                    format!("reg {i}: {what} run at {stamp} inside no Dispatched call")
                });
            }
        }
    }

    let n = regs.len() as u64;
    eprintln!(
        "fd stress: {} calls, {} registrations, {} callback runs ({} reruns executed), \
         {} registrations with a rerun certainly due; outcomes: {}",
        calls.len(),
        n,
        total_runs,
        total_runs - outcomes[DISPATCHED as usize],
        rerun_bound_used,
        (0..OUTCOMES)
            .filter(|&o| outcomes[o] > 0)
            .map(|o| format!("{}={}", OUTCOME_NAMES[o], outcomes[o]))
            .collect::<Vec<_>>()
            .join(" ")
    );
    summary.print("fd stress, outcomes by category:");
    f.assert_none("fd stress");
    sh.assert_no_violations();
    assert_stats(stats, total_runs, &outcomes, n);
    assert_eq!(
        hooks.fd_registered.load(SeqCst),
        n,
        "fd_register hook calls"
    );
    assert_eq!(
        hooks.fd_deregistered.load(SeqCst),
        n,
        "fd_deregister hook calls"
    );
    assert_eq!(
        hooks.fd_deregister_wrong_fd.load(SeqCst),
        0,
        "fd_deregister with another fd"
    );

    // The mix covered the deterministic cases (each is a large share of the
    // reports, so these hold for any scheduling).
    for category in [
        "live for the whole call, its fd",
        "live for the whole call, other fd",
        "dead before the call, its fd",
        "unissued: slot in use",
        "unissued: generation 0",
        "unissued: index far out",
    ] {
        assert!(summary.total(category) > 0, "no call was {category}");
    }
    assert!(summary.get("live for the whole call, its fd", DISPATCHED) > 0);
}

#[test]
fn stale_and_forged_reports_never_dispatch_while_registrations_churn() {
    let _serial = serial();
    let calls = total_calls();
    let hooks = Arc::new(CountingHooks::default());
    let engine = Engine::with_hooks(Hooks(Arc::clone(&hooks)));
    // A reopen ends about a third of the entries: room for those too.
    let capacity = calls / FD_PACE as usize * 5 / 4 + 4 * FD_ENTRIES;
    let sh = Shared::new(capacity, FD_ENTRIES, FD_PACE);
    let start = Barrier::new(DELIVERY_THREADS + 1);
    let began = Instant::now();
    let ((regs, (reopened, same_numbers)), logs) = std::thread::scope(|s| {
        let churn = s.spawn(|| fd_churn(&engine, &sh, &start, 0x5eed_c0de));
        let deliveries: Vec<_> = (0..DELIVERY_THREADS)
            .map(|t| {
                let (engine, sh, start) = (&engine, &sh, &start);
                s.spawn(move || {
                    fd_delivery(
                        engine,
                        sh,
                        start,
                        0xdead_beef + t as u64,
                        calls / DELIVERY_THREADS,
                    )
                })
            })
            .collect();
        let logs: Vec<Vec<Call>> = deliveries.into_iter().map(|d| d.join().unwrap()).collect();
        (churn.join().unwrap(), logs)
    });
    let ran = began.elapsed();
    let calls: Vec<Call> = logs.into_iter().flatten().collect();
    eprintln!("fd stress: {reopened} socket pairs reopened, {same_numbers} on the same numbers");
    check_fd_log(&regs, &calls, &sh, &engine.stats(), &hooks);
    eprintln!(
        "fd stress: threads ran {ran:?}, checked in {:?}",
        began.elapsed() - ran
    );
}

// ===== timers ============================================================

#[derive(Clone, Copy)]
#[repr(u8)]
enum TimerKind {
    /// `occurred_timeout` for the current timer of an entry.
    Live,
    /// `occurred_timeout` for the current timer of a hot entry.
    Hot,
    /// `occurred_timeout` for a timer this thread saw earlier.
    Old,
    /// `occurred_timeout` for any `u64`.
    Forged,
    /// `occurred_timeout` for an index far past the arena, or generation 0.
    OutOfRange,
    /// `occurred_fd` for the current timer of an entry.
    TimerAsFd,
    /// `occurred_timeout` for the engine's one fd watch.
    FdAsTimer,
}

const HOT_TIMERS: u64 = 2;

fn timer_callback(sh: Arc<Shared>, id: usize) -> impl FnOnce(&TimerEvent<'_>) + Send + 'static {
    move |ev| {
        let stamp = sh.tick();
        let rec = &sh.recs[id];
        if rec.dead.load(SeqCst) {
            sh.violation(format!("timer {id}: fired after cancel returned"));
        }
        let token = rec.token.load(SeqCst);
        if ev.token().as_u64() != token {
            sh.violation(format!(
                "timer {id}: callback got token {:?}, registered {:?}",
                ev.token(),
                Token::from_u64(token)
            ));
        }
        let n = rec.runs.fetch_add(1, SeqCst);
        if n != 0 {
            sh.violation(format!("timer {id}: callback ran {} times", n + 1));
        }
        rec.first_run.store(stamp, SeqCst);
        rec.last_run.store(stamp, SeqCst);
        linger(id as u64);
        if rec.dead.load(SeqCst) {
            sh.violation(format!(
                "timer {id}: callback still running after cancel returned"
            ));
        }
    }
}

/// The timer churn thread: replaces timers (cancelling them, fired or not)
/// until the deliveries are over, then cancels what is left.
fn timer_churn(engine: &Engine, sh: &Arc<Shared>, start: &Barrier, seed: u64) -> Vec<RegLog> {
    let mut rng = Rng::new(seed);
    let mut regs: Vec<RegLog> = Vec::new();
    let capacity = sh.recs.len();
    let create = |k: usize, regs: &mut Vec<RegLog>| -> (Timer, usize) {
        let id = regs.len();
        // Far in the future: only reports fire it.
        let timer = engine
            .timer_after(
                Duration::from_secs(3600),
                timer_callback(Arc::clone(sh), id),
            )
            .expect("timer_after");
        let token = timer.token().as_u64();
        sh.recs[id].token.store(token, SeqCst);
        regs.push(RegLog::new(token, -1, sh.tick()));
        sh.table[k].store(id as u64 + 1, Release);
        (timer, id)
    };
    let cancel = |(timer, id): (Timer, usize), regs: &mut [RegLog], rng: &mut Rng| {
        regs[id].dying = sh.tick();
        if rng.below(4) == 0 {
            drop(timer);
        } else {
            regs[id].ended_by_call = Some(timer.cancel());
        }
        sh.recs[id].dead.store(true, SeqCst);
        regs[id].died = sh.tick();
    };
    let mut current: Vec<Option<(Timer, usize)>> = (0..TIMER_ENTRIES)
        .map(|k| Some(create(k, &mut regs)))
        .collect();
    start.wait();
    while regs.len() < capacity && sh.churn_may_replace() {
        let k = rng.below(TIMER_ENTRIES as u64) as usize;
        let old = current[k].take().expect("entry filled");
        cancel(old, &mut regs, &mut rng);
        current[k] = Some(create(k, &mut regs));
        sh.churn_replaced();
    }
    sh.churn_stop();
    for slot in current.iter_mut() {
        let old = slot.take().expect("entry filled");
        cancel(old, &mut regs, &mut rng);
    }
    regs
}

fn timer_delivery(
    engine: &Engine,
    sh: &Shared,
    start: &Barrier,
    (watch_token, watch_fd): (u64, RawFd),
    seed: u64,
    calls: usize,
) -> Vec<Call> {
    let mut rng = Rng::new(seed);
    let mut log = Vec::with_capacity(calls);
    let mut recent = [0usize; 32];
    let mut seen = 0usize;
    start.wait();
    for i in 0..calls {
        let kind = match rng.below(100) {
            0..=29 => TimerKind::Live,
            30..=59 => TimerKind::Hot,
            60..=74 => TimerKind::Old,
            75..=81 => TimerKind::Forged,
            82..=87 => TimerKind::OutOfRange,
            88..=95 => TimerKind::TimerAsFd,
            _ => TimerKind::FdAsTimer,
        };
        let k = match kind {
            TimerKind::Hot => rng.below(HOT_TIMERS),
            _ => rng.below(TIMER_ENTRIES as u64),
        };
        let (id, live_token, _) = sh.entry(k as usize).expect("table filled");
        recent[seen % recent.len()] = id;
        seen += 1;
        let token = match kind {
            TimerKind::Live | TimerKind::Hot | TimerKind::TimerAsFd => live_token,
            TimerKind::Old => sh.recs[recent[rng.below(seen.min(recent.len()) as u64) as usize]]
                .token
                .load(Relaxed),
            TimerKind::Forged => rng.next(),
            TimerKind::OutOfRange => {
                if rng.below(2) == 0 {
                    token_index(live_token)
                } else {
                    make_token(
                        FAR_INDEX + rng.below(INDEX_MASK + 1 - FAR_INDEX),
                        1 + rng.below(Generation::MAX.get()),
                    )
                }
            }
            TimerKind::FdAsTimer => watch_token,
        };
        let t0 = sh.tick();
        let result = match kind {
            TimerKind::TimerAsFd => {
                engine.occurred_fd(Token::from_u64(token), watch_fd, Readiness::READABLE)
            }
            _ => engine.occurred_timeout(Token::from_u64(token)),
        };
        let outcome = code(result);
        let t1 = sh.tick();
        log.push(Call {
            token,
            t0,
            t1,
            fd: watch_fd,
            kind: kind as u8,
            outcome,
        });
        if (i as u64 + 1) % PROGRESS_STEP == 0 {
            sh.delivered_step();
        }
    }
    sh.delivering.fetch_sub(1, SeqCst);
    log
}

fn check_timer_log(
    regs: &[RegLog],
    calls: &[Call],
    sh: &Shared,
    watch: (u64, u64),
    stats: &Stats,
    hooks: &CountingHooks,
) {
    let (watch_token, watch_runs) = watch;
    let mut f = Failures::default();
    let mut summary = Summary::default();
    let by_token: HashMap<u64, usize> =
        regs.iter().enumerate().map(|(i, r)| (r.token, i)).collect();
    assert_eq!(by_token.len(), regs.len(), "a token was issued twice");
    let mut known = slots_known(regs);
    known.insert(token_index(watch_token), 0);
    let mut outcomes = [0u64; OUTCOMES];
    let is_fd_call = |c: &Call| c.kind == TimerKind::TimerAsFd as u8;

    // First pass: the report that fired each timer.
    let mut fires: Vec<Vec<(u64, u64)>> = vec![Vec::new(); regs.len()];
    for c in calls {
        if c.outcome == DISPATCHED {
            if let Some(&i) = by_token.get(&c.token) {
                fires[i].push((c.t0, c.t1));
            }
        }
    }

    for c in calls {
        outcomes[c.outcome as usize] += 1;
        if c.token == watch_token {
            let (category, allowed) = ("fd watch reported as timeout", bit(WRONG_KIND));
            summary.add(category, c.outcome);
            f.check(c.outcome == WRONG_KIND, || {
                format!(
                    "{category} at [{}, {}]: got {}, expected {}",
                    c.t0,
                    c.t1,
                    OUTCOME_NAMES[c.outcome as usize],
                    mask_names(allowed)
                )
            });
            continue;
        }
        let (category, allowed) = match by_token.get(&c.token) {
            None => unissued_expectation(c.token, c.t0, &known),
            Some(&i) => {
                let r = &regs[i];
                assert!(r.born < c.t0, "call before its timer was born");
                // Some report other than this one began firing the timer
                // before this one ended.
                let fire_began = fires[i].iter().any(|&(f0, _)| f0 != c.t0 && f0 < c.t1);
                // Gone: the cancel returned, or the firing report returned
                // (it tears the timer down on its way out), before this
                // report began.
                let gone = r.died < c.t0 || fires[i].iter().any(|&(_, f1)| f1 < c.t0);
                // Armed: nobody began to fire or cancel it before this
                // report ended.
                let armed = c.t1 < r.dying && !fire_began;
                if is_fd_call(c) {
                    if gone {
                        ("timer as fd, timer gone", bit(GENERATION))
                    } else if armed {
                        ("timer as fd, timer armed", bit(WRONG_KIND))
                    } else {
                        (
                            "timer as fd, timer ending",
                            bit(WRONG_KIND) | bit(GENERATION),
                        )
                    }
                } else if gone {
                    ("timeout, timer gone", bit(GENERATION))
                } else if armed {
                    // Armed for the whole report: this report fires it.
                    ("timeout, timer armed throughout", bit(DISPATCHED))
                } else {
                    (
                        "timeout, racing fire or cancel",
                        bit(DISPATCHED) | bit(GENERATION),
                    )
                }
            }
        };
        summary.add(category, c.outcome);
        f.check(allowed & bit(c.outcome) != 0, || {
            format!(
                "call {:?} (kind {}) at [{}, {}]: {category}: got {}, expected {} {:?}",
                Token::from_u64(c.token),
                c.kind,
                c.t0,
                c.t1,
                OUTCOME_NAMES[c.outcome as usize],
                mask_names(allowed),
                by_token.get(&c.token).map(|&i| (&regs[i], &fires[i])),
            )
        });
    }

    let mut total_runs = 0;
    let mut cancelled_before_firing = 0;
    let mut fired = 0;
    for (i, (r, fire)) in regs.iter().zip(&fires).enumerate() {
        let rec = &sh.recs[i];
        let runs = rec.runs.load(SeqCst);
        total_runs += runs;
        f.check(r.born < r.dying && r.dying < r.died, || {
            format!("timer {i}: bad life {r:?}")
        });
        f.check(fire.len() <= 1, || {
            format!("timer {i}: fired by {} reports: {fire:?}", fire.len())
        });
        f.check(runs == fire.len() as u64, || {
            format!(
                "timer {i}: {runs} runs for {} Dispatched reports",
                fire.len()
            )
        });
        if let Some(cancelled) = r.ended_by_call {
            f.check(cancelled == fire.is_empty(), || {
                format!(
                    "timer {i}: cancel() returned {cancelled} but {} reports fired it",
                    fire.len()
                )
            });
        }
        if fire.is_empty() {
            cancelled_before_firing += 1;
        } else {
            fired += 1;
            let (f0, f1) = fire[0];
            let stamp = rec.first_run.load(SeqCst);
            f.check(f0 < stamp && stamp < f1, || {
                format!("timer {i}: ran at {stamp}, outside the report that fired it [{f0}, {f1}]")
            });
            f.check(f0 < r.died, || {
                format!("timer {i}: fired at {f0} after cancel returned {r:?}")
            });
        }
    }

    let n = regs.len() as u64;
    eprintln!(
        "timer stress: {} calls, {} timers ({fired} fired, {cancelled_before_firing} cancelled \
         before firing); outcomes: {}",
        calls.len(),
        n,
        (0..OUTCOMES)
            .filter(|&o| outcomes[o] > 0)
            .map(|o| format!("{}={}", OUTCOME_NAMES[o], outcomes[o]))
            .collect::<Vec<_>>()
            .join(" ")
    );
    summary.print("timer stress, outcomes by category:");
    f.assert_none("timer stress");
    sh.assert_no_violations();
    assert_eq!(
        watch_runs, 0,
        "the fd watch was dispatched by a timeout report"
    );
    assert_eq!(
        outcomes[DEFERRED as usize], 0,
        "a timer report was Deferred"
    );
    assert_stats(stats, total_runs, &outcomes, n + 1);
    assert_eq!(total_runs, fired);
    assert_eq!(
        hooks.timeouts_registered.load(SeqCst),
        n,
        "timeout_register hook calls"
    );
    assert_eq!(
        hooks.timeouts_deregistered.load(SeqCst),
        cancelled_before_firing,
        "timeout_deregister must be called exactly for the timers cancelled before firing"
    );
    assert_eq!(
        (
            hooks.fd_registered.load(SeqCst),
            hooks.fd_deregistered.load(SeqCst)
        ),
        (1, 1)
    );
    // Coverage that holds for any scheduling: the first reports find the
    // first timers armed, and the later ones find them gone.
    for category in [
        "timeout, timer armed throughout",
        "timeout, timer gone",
        "fd watch reported as timeout",
        "unissued: index far out",
    ] {
        assert!(summary.total(category) > 0, "no call was {category}");
    }
}

#[test]
fn concurrent_timer_reports_fire_each_timer_once_under_churn() {
    let _serial = serial();
    let calls = total_calls();
    let hooks = Arc::new(CountingHooks::default());
    let engine = Engine::with_hooks(Hooks(Arc::clone(&hooks)));
    let (a, _b) = UnixStream::pair().expect("socketpair");
    let watch_runs = Arc::new(AtomicU64::new(0));
    let watch = {
        let runs = Arc::clone(&watch_runs);
        engine
            .register_fd(a.as_raw_fd(), Interest::READABLE, move |_| {
                runs.fetch_add(1, SeqCst);
            })
            .expect("register_fd")
    };
    let watch_token = watch.token().as_u64();
    let capacity = calls / TIMER_PACE as usize + TIMER_ENTRIES + 16;
    let sh = Shared::new(capacity, TIMER_ENTRIES, TIMER_PACE);
    let start = Barrier::new(DELIVERY_THREADS + 1);
    let began = Instant::now();
    let (regs, logs) = std::thread::scope(|s| {
        let churn = s.spawn(|| timer_churn(&engine, &sh, &start, 0x7133_0001));
        let deliveries: Vec<_> = (0..DELIVERY_THREADS)
            .map(|t| {
                let (engine, sh, start) = (&engine, &sh, &start);
                let w = (watch_token, a.as_raw_fd());
                s.spawn(move || {
                    timer_delivery(
                        engine,
                        sh,
                        start,
                        w,
                        0xfeed_f00d + t as u64,
                        calls / DELIVERY_THREADS,
                    )
                })
            })
            .collect();
        let logs: Vec<Vec<Call>> = deliveries.into_iter().map(|d| d.join().unwrap()).collect();
        (churn.join().unwrap(), logs)
    });
    let ran = began.elapsed();
    assert!(watch.deregister(), "the fd watch was live");
    let calls: Vec<Call> = logs.into_iter().flatten().collect();
    check_timer_log(
        &regs,
        &calls,
        &sh,
        (watch_token, watch_runs.load(SeqCst)),
        &engine.stats(),
        &hooks,
    );
    eprintln!(
        "timer stress: threads ran {ran:?}, checked in {:?}",
        began.elapsed() - ran
    );
}
