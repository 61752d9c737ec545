//! Scaling: registration and live reports on 1, 2, 4, ... threads, each
//! implementation beside its peers in the same run.
//!
//! Thread counts: `EVNEXUS_BENCH_THREADS` (e.g. `1,2,4,8,16`), else powers
//! of two up to `std::thread::available_parallelism()` and that count
//! itself (`support::thread_counts`), so a bigger machine runs the file as
//! it is. A count above the machine's cores measures time-sharing, not
//! scaling.
//!
//! Group `scaling`; ids `<impl>/<op>/<K>t`, K threads each doing the
//! criterion iteration count of operations after a common barrier; the time
//! is per operation per thread (the slowest thread's, see `support`), so
//! perfect scaling keeps it flat as K grows.
//!
//! - `<op>` `register`: one registration and its deregistration, the
//!   structure holding 1,024 live entries meanwhile.
//!   - `evnexus-engine`: hooks engine with no-op hooks, `timer_at` with a
//!     small closure (an `Arc` of the thread's own and a `usize`, as a
//!     real callback captures its context), then `Timer::cancel`. The
//!     engine path a user pays, boxed callback included.
//!   - `evnexus-bare`: `bench_api::BareArena` insert and remove, the arena
//!     and slot protocol alone.
//!   - `sharded-slab`: `insert` of a `u64` and `remove` (the `arena`
//!     group's peer, the same value).
//! - `<op>` `report_own`: `occurred_fd` of a live watch on a readable
//!   socketpair end, each thread its own watch; `report_shared`: every
//!   thread reports thread 0's watch (one contended registration: the
//!   callback runs on one thread at a time, the others' events are folded
//!   into its rerun). Callbacks are no-ops.
//!   - `evnexus`: hooks engine, no fd re-check.
//!   - `libxl-model`: `support::LibxlModel` (one ctx lock, `poll(fd, 0)`
//!     re-check, callback under the lock), the design evnexus replaces.
//!   - `slab-mutex`: a `Mutex<slab::Slab>` of (generation, fd, boxed
//!     callback); a report locks, checks generation and fd, and calls the
//!     callback under the lock. The plain lock-based registry, no system
//!     call.

mod support;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use evnexus::bench_api::BareArena;
use evnexus::{Engine, FdWatch, Interest, Occurred, Readiness, Timer, TimerEvent, Token};
use std::hint::black_box;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use support::{run_threads, timed, LibxlModel, LibxlOutcome, NoHooks, FIXTURE};

/// The small closure of a registration: an `Arc` and a `usize`.
fn closure(shared: &Arc<AtomicUsize>, k: usize) -> impl FnOnce(&TimerEvent<'_>) + Send + 'static {
    let shared = Arc::clone(shared);
    move |_| {
        shared.fetch_add(k, Ordering::Relaxed);
    }
}

/// One registry under test for the `register` op.
trait Registry: Sync {
    /// Registers and deregisters once; `ctx` is the calling thread's own
    /// context, `k` the iteration.
    fn cycle(&self, ctx: &Arc<AtomicUsize>, k: usize);
}

struct EngineRegistry {
    engine: Engine,
    far: std::time::Instant,
    _live: Vec<Timer>,
}

impl EngineRegistry {
    fn new() -> EngineRegistry {
        let engine = Engine::with_hooks(NoHooks);
        let far = support::far_future();
        let live = (0..FIXTURE)
            .map(|_| engine.timer_at(far, |_| {}).expect("timer_at"))
            .collect();
        EngineRegistry {
            engine,
            far,
            _live: live,
        }
    }
}

impl Registry for EngineRegistry {
    #[inline]
    fn cycle(&self, ctx: &Arc<AtomicUsize>, k: usize) {
        let t = self
            .engine
            .timer_at(self.far, closure(ctx, k))
            .expect("timer_at");
        black_box(t.cancel());
    }
}

struct BareRegistry {
    arena: BareArena,
    _live: Vec<Token>,
}

impl BareRegistry {
    fn new() -> BareRegistry {
        let arena = BareArena::default();
        let live = (0..FIXTURE)
            .map(|_| arena.insert().expect("arena full"))
            .collect();
        BareRegistry { arena, _live: live }
    }
}

impl Registry for BareRegistry {
    #[inline]
    fn cycle(&self, _: &Arc<AtomicUsize>, _: usize) {
        let t = self.arena.insert().expect("arena full");
        black_box(self.arena.remove(black_box(t)));
    }
}

struct ShardedRegistry {
    slab: sharded_slab::Slab<u64>,
    _live: Vec<usize>,
}

impl ShardedRegistry {
    fn new() -> ShardedRegistry {
        let slab = sharded_slab::Slab::new();
        let live = (0..FIXTURE)
            .map(|_| slab.insert(7).expect("slab full"))
            .collect();
        ShardedRegistry { slab, _live: live }
    }
}

impl Registry for ShardedRegistry {
    #[inline]
    fn cycle(&self, _: &Arc<AtomicUsize>, _: usize) {
        let k = self.slab.insert(7).expect("slab full");
        black_box(self.slab.remove(black_box(k)));
    }
}

/// What a report did, the same for every implementation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    /// The callback ran (or, evnexus, will run again on its current
    /// dispatcher).
    Delivered,
    Suppressed,
    Stale,
}

/// One implementation under test for the report ops: a live watch per
/// thread, on `fds[t]`.
trait Reporter: Sync {
    fn token(&self, t: usize) -> u64;
    fn report(&self, token: u64, fd: RawFd) -> Outcome;
}

struct EvnexusReporter {
    engine: Engine,
    _watches: Vec<FdWatch>,
    tokens: Vec<u64>,
}

impl EvnexusReporter {
    fn new(fds: &[RawFd]) -> EvnexusReporter {
        let engine = Engine::builder()
            .hooks(NoHooks)
            .build()
            .expect("hooks engine");
        let watches: Vec<FdWatch> = fds
            .iter()
            .map(|&fd| {
                engine
                    .register_fd(fd, Interest::READABLE, |_| {})
                    .expect("register_fd")
            })
            .collect();
        let tokens = watches.iter().map(|w| w.token().as_u64()).collect();
        EvnexusReporter {
            engine,
            _watches: watches,
            tokens,
        }
    }
}

impl Reporter for EvnexusReporter {
    fn token(&self, t: usize) -> u64 {
        self.tokens[t]
    }
    #[inline]
    fn report(&self, token: u64, fd: RawFd) -> Outcome {
        match self
            .engine
            .occurred_fd(Token::from_u64(token), fd, Readiness::READABLE)
        {
            Ok(Occurred::Dispatched | Occurred::Deferred) => Outcome::Delivered,
            Ok(Occurred::Suppressed) => Outcome::Suppressed,
            Ok(Occurred::Stale(_)) => Outcome::Stale,
            Err(e) => panic!("occurred_fd: {e}"),
        }
    }
}

struct LibxlReporter {
    model: LibxlModel,
    tokens: Vec<u64>,
}

impl LibxlReporter {
    fn new(fds: &[RawFd]) -> LibxlReporter {
        let model = LibxlModel::default();
        let tokens = fds
            .iter()
            .map(|&fd| model.fd_register(fd, libc::POLLIN, Box::new(|_, _| {})))
            .collect();
        LibxlReporter { model, tokens }
    }
}

impl Reporter for LibxlReporter {
    fn token(&self, t: usize) -> u64 {
        self.tokens[t]
    }
    #[inline]
    fn report(&self, token: u64, fd: RawFd) -> Outcome {
        match self.model.occurred_fd(token, fd, libc::POLLIN) {
            LibxlOutcome::Dispatched => Outcome::Delivered,
            LibxlOutcome::Suppressed => Outcome::Suppressed,
            LibxlOutcome::Stale => Outcome::Stale,
        }
    }
}

type FdCallback = Box<dyn FnMut(RawFd) + Send>;

/// A `Mutex<Slab>` registry; a token is `index << 32 | generation`.
struct SlabReporter {
    slab: Mutex<slab::Slab<(u32, RawFd, FdCallback)>>,
    tokens: Vec<u64>,
}

impl SlabReporter {
    fn new(fds: &[RawFd]) -> SlabReporter {
        let mut slab = slab::Slab::new();
        let tokens = fds
            .iter()
            .enumerate()
            .map(|(g, &fd)| {
                let generation = g as u32 + 1;
                let cb: FdCallback = Box::new(|_| {});
                let index = slab.insert((generation, fd, cb));
                ((index as u64) << 32) | u64::from(generation)
            })
            .collect();
        SlabReporter {
            slab: Mutex::new(slab),
            tokens,
        }
    }
}

impl Reporter for SlabReporter {
    fn token(&self, t: usize) -> u64 {
        self.tokens[t]
    }
    #[inline]
    fn report(&self, token: u64, fd: RawFd) -> Outcome {
        let mut slab = self.slab.lock().unwrap_or_else(|e| e.into_inner());
        match slab.get_mut((token >> 32) as usize) {
            Some((generation, f, cb))
                if u64::from(*generation) == token & 0xffff_ffff && *f == fd =>
            {
                cb(fd);
                Outcome::Delivered
            }
            _ => Outcome::Stale,
        }
    }
}

/// Every thread's watch delivers, outside any timing.
fn check_reporter(r: &dyn Reporter, fds: &[RawFd], name: &str) {
    for (t, &fd) in fds.iter().enumerate() {
        assert_eq!(
            r.report(r.token(t), fd),
            Outcome::Delivered,
            "{name}: thread {t}'s watch"
        );
    }
    // A token of another thread's watch, reported with this thread's fd,
    // is rejected (the fd check), where there are two.
    if fds.len() > 1 {
        assert_eq!(
            r.report(r.token(1), fds[0]),
            Outcome::Stale,
            "{name}: fd mismatch"
        );
    }
}

fn bench_register(c: &mut Criterion, counts: &[usize]) {
    let registries: [(&str, Box<dyn Registry>); 3] = [
        ("evnexus-engine", Box::new(EngineRegistry::new())),
        ("evnexus-bare", Box::new(BareRegistry::new())),
        ("sharded-slab", Box::new(ShardedRegistry::new())),
    ];
    let mut group = c.benchmark_group("scaling");
    for &threads in counts {
        for (name, registry) in &registries {
            let registry = &**registry;
            group.bench_function(
                BenchmarkId::new(*name, format!("register/{threads}t")),
                |b| {
                    b.iter_custom(|iters| {
                        run_threads(threads, iters, |_, iters, barrier| {
                            let ctx = Arc::new(AtomicUsize::new(0));
                            timed(barrier, iters, |i| registry.cycle(&ctx, i as usize))
                        })
                    })
                },
            );
        }
    }
    group.finish();
}

fn bench_report(c: &mut Criterion, counts: &[usize]) {
    let max = counts.iter().copied().max().unwrap_or(1);
    let pairs: Vec<(UnixStream, UnixStream)> = (0..max).map(|_| support::readable_pair()).collect();
    let fds: Vec<RawFd> = pairs.iter().map(|p| p.0.as_raw_fd()).collect();
    let reporters: [(&str, Box<dyn Reporter>); 3] = [
        ("evnexus", Box::new(EvnexusReporter::new(&fds))),
        ("libxl-model", Box::new(LibxlReporter::new(&fds))),
        ("slab-mutex", Box::new(SlabReporter::new(&fds))),
    ];
    for (name, r) in &reporters {
        check_reporter(&**r, &fds, name);
    }
    let mut group = c.benchmark_group("scaling");
    for &threads in counts {
        for (op, shared) in [("report_own", false), ("report_shared", true)] {
            for (name, r) in &reporters {
                let (r, fds) = (&**r, &fds);
                group.bench_function(BenchmarkId::new(*name, format!("{op}/{threads}t")), |b| {
                    b.iter_custom(|iters| {
                        run_threads(threads, iters, |t, iters, barrier| {
                            let owner = if shared { 0 } else { t };
                            let (token, fd) = (r.token(owner), fds[owner]);
                            timed(barrier, iters, |_| {
                                black_box(r.report(black_box(token), fd));
                            })
                        })
                    })
                });
            }
        }
    }
    group.finish();
    for (name, r) in &reporters {
        check_reporter(&**r, &fds, name);
    }
}

/// The thread-count parsing does what the module doc says.
fn check_thread_counts() {
    use support::{default_thread_counts as default, parse_thread_counts as parse};
    assert_eq!(parse("1, 2,4,8,16"), Ok(vec![1, 2, 4, 8, 16]));
    assert_eq!(parse("4,2,4"), Ok(vec![4, 2]));
    for bad in ["", ",", "0", "1,two", "-1", "1025"] {
        assert!(parse(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(default(1), [1]);
    assert_eq!(default(2), [1, 2]);
    assert_eq!(default(6), [1, 2, 4, 6]);
    assert_eq!(default(16), [1, 2, 4, 8, 16]);
}

fn scaling(c: &mut Criterion) {
    check_thread_counts();
    let counts = match support::thread_counts() {
        Ok(counts) => counts,
        Err(e) => {
            eprintln!("scaling: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "scaling: thread counts {counts:?} (set {} to change)",
        support::THREADS_VAR
    );
    bench_register(c, &counts);
    bench_report(c, &counts);
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = scaling
}
criterion_main!(benches);
