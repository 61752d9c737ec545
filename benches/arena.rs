//! The nexus arena beside other slabs: register+deregister, lookup of a live
//! token, rejection of a stale one, on 1 and 2 threads.
//!
//! Group `arena`; ids `<impl>/<op>/<threads>t` with
//! - `<impl>`: `evnexus-bare` (`bench_api::BareArena`: the arena and slot
//!   protocol alone, the fair comparison with a slab), `evnexus-engine`
//!   (hooks engine with no-op hooks: `timer_at` + `cancel`, with the boxed
//!   callback, the handle and the backend call; lookups are
//!   `Timer::is_pending` and, for a stale token, `occurred_timeout`: what a
//!   user pays), `evnexus-engine-token` (register+deregister alone, the
//!   same engine without a handle: `timer_at_detached` and
//!   `Engine::deregister` by token), `sharded-slab`, `slab-mutex`
//!   (`Mutex<Slab>`, each value tagged with a generation so a stale key
//!   can be told), `slotmap` (1 thread, no lock), `slotmap-mutex`;
//! - `<op>`: `insert_remove` (one insert and one remove), `lookup_live`,
//!   `lookup_stale` (the key's slot was since reused by a newer entry).
//!
//! One design alternative rather than a peer: `evnexus-bare-epoch-pin`
//! makes the `evnexus-bare` lookups under a `crossbeam_epoch` guard
//! (`pin()`, the same slot check, unpin), the reclamation scheme the arena
//! does without (README, Design, "No crossbeam-epoch"). `perf/report.py`
//! sets it against `evnexus-bare`, so its ratio is the guard's cost.
//!
//! Every structure holds 1,024 live entries while it is measured; lookups
//! cycle through 1,024 live or 1,024 stale keys. At start the binary prints
//! the bytes each implementation takes per registration, and the
//! allocations one register+deregister makes in steady state (a small
//! closure: an `Arc` and a `usize`), and writes both to
//! `<criterion dir>/bytes-per-registration.json`.

#[path = "support/footprint.rs"]
mod footprint;
mod support;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use evnexus::bench_api::BareArena;
use evnexus::{Engine, Occurred, StaleReason, Timer, Token};
use std::hint::black_box;
use std::sync::Mutex;
use std::time::Instant;
use support::{run_threads, timed, NoHooks, FIXTURE};

#[global_allocator]
static ALLOC: support::CountingAlloc = support::CountingAlloc;

const MASK: usize = FIXTURE - 1;
const _: () = assert!(FIXTURE.is_power_of_two());

/// One implementation under test, holding its fixture: `FIXTURE` live
/// entries and `FIXTURE` stale keys (removed, their slots reused since).
trait Subject: Sync {
    /// Inserts an entry and removes it again.
    fn insert_remove(&self);
    /// Looks up live key `i`: true.
    fn lookup_live(&self, i: usize) -> bool;
    /// Looks up stale key `i`: false.
    fn lookup_stale(&self, i: usize) -> bool;

    /// Checks the fixture outside any timing.
    fn check(&self) {
        for i in 0..FIXTURE {
            assert!(self.lookup_live(i), "live key {i} not found");
            assert!(!self.lookup_stale(i), "stale key {i} found");
        }
    }
}

/// Builds a fixture: `stale` keys inserted then removed, then `live` keys
/// inserted (reusing the removed slots).
fn fixture<K>(mut insert: impl FnMut() -> K, mut remove: impl FnMut(&K)) -> (Vec<K>, Vec<K>) {
    let stale: Vec<K> = (0..FIXTURE).map(|_| insert()).collect();
    for k in &stale {
        remove(k);
    }
    let live = (0..FIXTURE).map(|_| insert()).collect();
    (live, stale)
}

struct Bare {
    arena: BareArena,
    live: Vec<Token>,
    stale: Vec<Token>,
}

impl Bare {
    fn new() -> Bare {
        let arena = BareArena::default();
        let (live, stale) = fixture(
            || arena.insert().expect("arena full"),
            |t| assert!(arena.remove(*t)),
        );
        Bare { arena, live, stale }
    }
}

impl Subject for Bare {
    fn insert_remove(&self) {
        let t = self.arena.insert().expect("arena full");
        black_box(self.arena.remove(black_box(t)));
    }
    fn lookup_live(&self, i: usize) -> bool {
        self.arena.contains(self.live[i])
    }
    fn lookup_stale(&self, i: usize) -> bool {
        self.arena.contains(self.stale[i])
    }
}

struct EngineSubject {
    engine: Engine,
    far: Instant,
    live: Vec<Timer>,
    stale: Vec<Token>,
}

impl EngineSubject {
    fn new() -> EngineSubject {
        let engine = Engine::with_hooks(NoHooks);
        let far = support::far_future();
        let stale: Vec<Token> = (0..FIXTURE)
            .map(|_| engine.timer_at(far, |_| {}).expect("register"))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| {
                let token = t.token();
                assert!(t.cancel());
                token
            })
            .collect();
        let live = (0..FIXTURE)
            .map(|_| engine.timer_at(far, |_| {}).expect("register"))
            .collect();
        EngineSubject {
            engine,
            far,
            live,
            stale,
        }
    }
}

impl Subject for EngineSubject {
    fn insert_remove(&self) {
        let t = self.engine.timer_at(self.far, |_| {}).expect("register");
        black_box(t.cancel());
    }
    fn lookup_live(&self, i: usize) -> bool {
        self.live[i].is_pending()
    }
    fn lookup_stale(&self, i: usize) -> bool {
        !matches!(
            self.engine.occurred_timeout(self.stale[i]),
            Ok(Occurred::Stale(_))
        )
    }
}

/// The engine's registration without a handle: `timer_at_detached` and
/// `Engine::deregister` by token. A handle keeps its engine alive, counted
/// on a stripe of the calling thread (one atomic add to make it, one
/// subtract to drop it); this row shows what the handle costs (lookups:
/// `evnexus-engine`'s).
struct EngineTokenSubject(EngineSubject);

impl Subject for EngineTokenSubject {
    fn insert_remove(&self) {
        let engine = &self.0.engine;
        let token = engine
            .timer_at_detached(self.0.far, |_| {})
            .expect("register");
        black_box(engine.deregister(token).expect("deregister"));
    }
    fn lookup_live(&self, i: usize) -> bool {
        self.0.lookup_live(i)
    }
    fn lookup_stale(&self, i: usize) -> bool {
        self.0.lookup_stale(i)
    }
}

struct Sharded {
    slab: sharded_slab::Slab<u64>,
    live: Vec<usize>,
    stale: Vec<usize>,
}

impl Sharded {
    fn new() -> Sharded {
        let slab = sharded_slab::Slab::new();
        let (live, stale) = fixture(
            || slab.insert(7).expect("slab full"),
            |k| assert!(slab.remove(*k)),
        );
        Sharded { slab, live, stale }
    }
}

impl Subject for Sharded {
    fn insert_remove(&self) {
        let k = self.slab.insert(7).expect("slab full");
        black_box(self.slab.remove(black_box(k)));
    }
    fn lookup_live(&self, i: usize) -> bool {
        self.slab.get(self.live[i]).is_some()
    }
    fn lookup_stale(&self, i: usize) -> bool {
        self.slab.get(self.stale[i]).is_some()
    }
}

/// `slab` has no generations: each value carries one, and a key is
/// `(index, generation)`, the usual way to detect stale keys with it.
struct SlabMutex {
    inner: Mutex<(slab::Slab<(u64, u64)>, u64)>,
    live: Vec<(usize, u64)>,
    stale: Vec<(usize, u64)>,
}

impl SlabMutex {
    fn insert(inner: &Mutex<(slab::Slab<(u64, u64)>, u64)>) -> (usize, u64) {
        let mut g = inner.lock().unwrap();
        g.1 += 1;
        let generation = g.1;
        (g.0.insert((generation, 7)), generation)
    }
    fn remove(
        inner: &Mutex<(slab::Slab<(u64, u64)>, u64)>,
        (index, generation): (usize, u64),
    ) -> bool {
        let mut g = inner.lock().unwrap();
        match g.0.get(index) {
            Some(&(gen, _)) if gen == generation => {
                g.0.remove(index);
                true
            }
            _ => false,
        }
    }
    fn new() -> SlabMutex {
        let inner = Mutex::new((slab::Slab::new(), 0));
        let (live, stale) = fixture(
            || Self::insert(&inner),
            |k| assert!(Self::remove(&inner, *k)),
        );
        SlabMutex { inner, live, stale }
    }
    fn lookup(&self, (index, generation): (usize, u64)) -> bool {
        let g = self.inner.lock().unwrap();
        g.0.get(index).is_some_and(|&(gen, _)| gen == generation)
    }
}

impl Subject for SlabMutex {
    fn insert_remove(&self) {
        let k = Self::insert(&self.inner);
        black_box(Self::remove(&self.inner, black_box(k)));
    }
    fn lookup_live(&self, i: usize) -> bool {
        self.lookup(self.live[i])
    }
    fn lookup_stale(&self, i: usize) -> bool {
        self.lookup(self.stale[i])
    }
}

type Map = slotmap::SlotMap<slotmap::DefaultKey, u64>;

struct SlotmapMutex {
    map: Mutex<Map>,
    live: Vec<slotmap::DefaultKey>,
    stale: Vec<slotmap::DefaultKey>,
}

fn slotmap_fixture() -> (Map, Vec<slotmap::DefaultKey>, Vec<slotmap::DefaultKey>) {
    let map = std::cell::RefCell::new(Map::new());
    let (live, stale) = fixture(
        || map.borrow_mut().insert(7),
        |k| assert!(map.borrow_mut().remove(*k).is_some()),
    );
    (map.into_inner(), live, stale)
}

impl SlotmapMutex {
    fn new() -> SlotmapMutex {
        let (map, live, stale) = slotmap_fixture();
        SlotmapMutex {
            map: Mutex::new(map),
            live,
            stale,
        }
    }
}

impl Subject for SlotmapMutex {
    fn insert_remove(&self) {
        let k = self.map.lock().unwrap().insert(7);
        black_box(self.map.lock().unwrap().remove(black_box(k)));
    }
    fn lookup_live(&self, i: usize) -> bool {
        self.map.lock().unwrap().contains_key(self.live[i])
    }
    fn lookup_stale(&self, i: usize) -> bool {
        self.map.lock().unwrap().contains_key(self.stale[i])
    }
}

/// The lookups of `evnexus-bare` under a `crossbeam_epoch` guard: what
/// every report would pay if the arena reclaimed through epochs.
struct BareEpoch(Bare);

impl Subject for BareEpoch {
    fn insert_remove(&self) {
        self.0.insert_remove()
    }
    #[inline]
    fn lookup_live(&self, i: usize) -> bool {
        let guard = crossbeam_epoch::pin();
        let live = self.0.lookup_live(i);
        drop(guard);
        live
    }
    #[inline]
    fn lookup_stale(&self, i: usize) -> bool {
        let guard = crossbeam_epoch::pin();
        let found = self.0.lookup_stale(i);
        drop(guard);
        found
    }
}

/// Which operations of a subject are measured.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ops {
    /// Register+deregister and both lookups.
    All,
    /// The lookups alone (a design alternative of the lookup path).
    Lookups,
    /// Register+deregister alone (a variant of the registration path whose
    /// lookups are another subject's).
    InsertRemove,
}

/// The operations `ops` of `subject` on each of `thread_counts` threads.
fn bench_subject(
    c: &mut Criterion,
    name: &str,
    subject: &dyn Subject,
    thread_counts: &[usize],
    ops: Ops,
) {
    subject.check();
    let mut group = c.benchmark_group("arena");
    for &threads in thread_counts {
        // Thread `t` starts its lookups half the fixture away from thread 0.
        let start = |t: usize| t * FIXTURE / 2;
        if ops != Ops::Lookups {
            group.bench_function(
                BenchmarkId::new(name, format!("insert_remove/{threads}t")),
                |b| {
                    b.iter_custom(|iters| {
                        run_threads(threads, iters, |_, iters, barrier| {
                            timed(barrier, iters, |_| subject.insert_remove())
                        })
                    })
                },
            );
        }
        if ops == Ops::InsertRemove {
            continue;
        }
        group.bench_function(
            BenchmarkId::new(name, format!("lookup_live/{threads}t")),
            |b| {
                b.iter_custom(|iters| {
                    run_threads(threads, iters, |t, iters, barrier| {
                        let s = start(t);
                        timed(barrier, iters, |i| {
                            black_box(subject.lookup_live((s + i as usize) & MASK));
                        })
                    })
                })
            },
        );
        group.bench_function(
            BenchmarkId::new(name, format!("lookup_stale/{threads}t")),
            |b| {
                b.iter_custom(|iters| {
                    run_threads(threads, iters, |t, iters, barrier| {
                        let s = start(t);
                        timed(barrier, iters, |i| {
                            black_box(subject.lookup_stale((s + i as usize) & MASK));
                        })
                    })
                })
            },
        );
    }
    group.finish();
    subject.check();
}

/// `slotmap` owned by one thread: no lock at all.
fn bench_slotmap_unlocked(c: &mut Criterion) {
    let (mut map, live, stale) = slotmap_fixture();
    for i in 0..FIXTURE {
        assert!(map.contains_key(live[i]) && !map.contains_key(stale[i]));
    }
    let mut group = c.benchmark_group("arena");
    group.bench_function(BenchmarkId::new("slotmap", "insert_remove/1t"), |b| {
        b.iter(|| {
            let k = map.insert(7);
            black_box(map.remove(black_box(k)))
        })
    });
    group.bench_function(BenchmarkId::new("slotmap", "lookup_live/1t"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters as usize {
                black_box(map.contains_key(live[i & MASK]));
            }
            start.elapsed()
        })
    });
    group.bench_function(BenchmarkId::new("slotmap", "lookup_stale/1t"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters as usize {
                black_box(map.contains_key(stale[i & MASK]));
            }
            start.elapsed()
        })
    });
    group.finish();
}

fn arena(c: &mut Criterion) {
    footprint::print_bytes_per_registration();
    {
        // The engine's stale path must count, not dispatch.
        let s = EngineSubject::new();
        let before = s.engine.stats().stale.generation;
        assert_eq!(
            s.engine.occurred_timeout(s.stale[0]).unwrap(),
            Occurred::Stale(StaleReason::Generation)
        );
        assert_eq!(s.engine.stats().stale.generation, before + 1);
    }
    bench_subject(c, "evnexus-bare", &Bare::new(), &[1, 2], Ops::All);
    bench_subject(
        c,
        "evnexus-bare-epoch-pin",
        &BareEpoch(Bare::new()),
        &[1, 2],
        Ops::Lookups,
    );
    bench_subject(
        c,
        "evnexus-engine",
        &EngineSubject::new(),
        &[1, 2],
        Ops::All,
    );
    bench_subject(
        c,
        "evnexus-engine-token",
        &EngineTokenSubject(EngineSubject::new()),
        &[1, 2],
        Ops::InsertRemove,
    );
    bench_subject(c, "sharded-slab", &Sharded::new(), &[1, 2], Ops::All);
    bench_subject(c, "slab-mutex", &SlabMutex::new(), &[1, 2], Ops::All);
    bench_slotmap_unlocked(c);
    bench_subject(c, "slotmap-mutex", &SlotmapMutex::new(), &[1, 2], Ops::All);
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = arena
}
criterion_main!(benches);
