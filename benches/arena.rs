//! The nexus arena beside other slabs: register+deregister, lookup of a live
//! token, rejection of a stale one, on 1 and 2 threads.
//!
//! Group `arena`; ids `<impl>/<op>/<threads>t` with
//! - `<impl>`: `evnexus-bare` (`bench_api::BareArena`: the arena and slot
//!   protocol alone, the fair comparison with a slab), `evnexus-engine`
//!   (hooks engine with no-op hooks: `timer_at` + `cancel`, with the boxed
//!   callback, the handle and the backend call; lookups are
//!   `Timer::is_pending` and, for a stale token, `occurred_timeout`: what a
//!   user pays), `sharded-slab`, `slab-mutex` (`Mutex<Slab>`, each value
//!   tagged with a generation so a stale key can be told), `slotmap` (1
//!   thread, no lock), `slotmap-mutex`;
//! - `<op>`: `insert_remove` (one insert and one remove), `lookup_live`,
//!   `lookup_stale` (the key's slot was since reused by a newer entry).
//!
//! Every structure holds 1,024 live entries while it is measured; lookups
//! cycle through 1,024 live or 1,024 stale keys. At start the binary prints
//! the bytes each implementation takes per registration (and writes them to
//! `<criterion dir>/bytes-per-registration.json`).

mod support;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use evnexus::bench_api::BareArena;
use evnexus::{Engine, Occurred, StaleReason, Timer, Token};
use std::future::Future;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};
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

/// The three operations of `subject` on 1 and 2 threads.
fn bench_subject(c: &mut Criterion, name: &str, subject: &dyn Subject, thread_counts: &[usize]) {
    subject.check();
    let mut group = c.benchmark_group("arena");
    for &threads in thread_counts {
        // Thread `t` starts its lookups half the fixture away from thread 0.
        let start = |t: usize| t * FIXTURE / 2;
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
    print_bytes_per_registration();
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
    bench_subject(c, "evnexus-bare", &Bare::new(), &[1, 2]);
    bench_subject(c, "evnexus-engine", &EngineSubject::new(), &[1, 2]);
    bench_subject(c, "sharded-slab", &Sharded::new(), &[1, 2]);
    bench_subject(c, "slab-mutex", &SlabMutex::new(), &[1, 2]);
    bench_slotmap_unlocked(c);
    bench_subject(c, "slotmap-mutex", &SlotmapMutex::new(), &[1, 2]);
}

// ---------------------------------------------------------------------------
// Bytes per registration

/// Registrations made for each allocation measurement.
const BYTES_N: usize = 100_000;

/// The value the peers store per registration when bytes are measured: a
/// boxed callback, as an evnexus slot holds (a capture-less closure, so the
/// box itself allocates nothing, as with evnexus's no-op callbacks).
type Callback = Box<dyn FnMut() + Send>;

fn noop_callback() -> Callback {
    Box::new(|| {})
}

struct BytesLine {
    name: &'static str,
    /// Net heap bytes per registration (allocation-measured), if measured.
    heap: f64,
    /// Bytes of what the caller keeps per registration (key or handle).
    handle: usize,
    note: &'static str,
}

/// Net heap bytes per registration of `BYTES_N` registrations made by
/// `register` (the keys go into a vector allocated before the measurement).
fn per_registration<K>(mut register: impl FnMut() -> K) -> f64 {
    let mut keys: Vec<K> = Vec::with_capacity(BYTES_N);
    let (bytes, keys) = support::measure_bytes(move || {
        for _ in 0..BYTES_N {
            keys.push(register());
        }
        keys
    });
    drop(keys);
    bytes as f64 / BYTES_N as f64
}

fn print_bytes_per_registration() {
    let far = support::far_future();
    let mut lines = Vec::new();

    let arena = BareArena::default();
    lines.push(BytesLine {
        name: "evnexus-bare",
        heap: per_registration(|| arena.insert().expect("arena full")),
        handle: std::mem::size_of::<Token>(),
        note: "arena pages (slots of Engine::slot_bytes(), pages doubling)",
    });
    drop(arena);

    let engine = Engine::with_hooks(NoHooks);
    lines.push(BytesLine {
        name: "evnexus-engine",
        heap: per_registration(|| engine.timer_at(far, |_| {}).expect("register")),
        handle: std::mem::size_of::<Timer>(),
        note: "hooks engine, no-op timer: slot pages + boxed callback + backend value + Arc clone in the handle",
    });
    drop(engine);

    let engine = Engine::builder()
        .backend(evnexus::BackendKind::Epoll)
        .build()
        .expect("epoll engine");
    lines.push(BytesLine {
        name: "evnexus-epoll",
        heap: {
            let mut keys: Vec<Timer> = Vec::with_capacity(BYTES_N);
            let (bytes, keys) = support::measure_bytes(|| {
                for _ in 0..BYTES_N {
                    keys.push(engine.timer_at(far, |_| {}).expect("register"));
                }
                // The loop moves the queued registrations into its heap.
                engine.run_once(Some(Duration::ZERO)).expect("run_once");
                keys
            });
            drop(keys);
            bytes as f64 / BYTES_N as f64
        },
        handle: std::mem::size_of::<Timer>(),
        note: "built-in loop (epoll), no-op timer: as evnexus-engine plus the loop's timer heap entry",
    });
    drop(engine);

    let slab = sharded_slab::Slab::<Callback>::new();
    lines.push(BytesLine {
        name: "sharded-slab",
        heap: per_registration(|| slab.insert(noop_callback()).expect("slab full")),
        handle: std::mem::size_of::<usize>(),
        note: "Slab<Box<dyn FnMut>>: pages of slots (slot type private; measured by allocation)",
    });
    drop(slab);

    let mut slab = slab::Slab::<(u64, Callback)>::new();
    lines.push(BytesLine {
        name: "slab-mutex",
        heap: per_registration(|| slab.insert((1, noop_callback()))),
        handle: std::mem::size_of::<(usize, u64)>(),
        note: "Slab<(generation, Box<dyn FnMut>)>: one Vec, doubling",
    });
    drop(slab);

    let mut map = slotmap::SlotMap::<slotmap::DefaultKey, Callback>::new();
    lines.push(BytesLine {
        name: "slotmap",
        heap: per_registration(|| map.insert(noop_callback())),
        handle: std::mem::size_of::<slotmap::DefaultKey>(),
        note: "SlotMap<_, Box<dyn FnMut>>: one Vec, doubling",
    });
    drop(map);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let tokio_heap = rt.block_on(tokio::task::unconstrained(async {
        let mut sleeps: Vec<std::pin::Pin<Box<tokio::time::Sleep>>> = Vec::with_capacity(BYTES_N);
        let (bytes, sleeps) = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(support::measure_bytes(|| {
                for _ in 0..BYTES_N {
                    let mut s = Box::pin(tokio::time::sleep_until(far.into()));
                    // Polled once: now it holds its timer entry, in the wheel.
                    assert!(s.as_mut().poll(cx).is_pending());
                    sleeps.push(s);
                }
                std::mem::take(&mut sleeps)
            }))
        })
        .await;
        drop(sleeps);
        bytes as f64 / BYTES_N as f64
    }));
    lines.push(BytesLine {
        name: "tokio",
        heap: tokio_heap,
        handle: std::mem::size_of::<std::pin::Pin<Box<tokio::time::Sleep>>>(),
        note: "Box::pin(sleep_until) polled once; size_of::<Sleep>() holds the timer entry",
    });
    drop(rt);

    println!(
        "bytes-per-registration: evnexus::Engine::slot_bytes() = {}, size_of::<tokio::time::Sleep>() = {}, \
         size_of::<evnexus::Timer>() = {} ({} registrations each, net heap bytes from a counting allocator)",
        Engine::slot_bytes(),
        std::mem::size_of::<tokio::time::Sleep>(),
        std::mem::size_of::<Timer>(),
        BYTES_N
    );
    let mut json = String::from("{\n");
    json.push_str(&format!(
        "  \"registrations\": {BYTES_N},\n  \"evnexus_slot_bytes\": {},\n  \"tokio_sleep_size\": {},\n  \"impls\": {{\n",
        Engine::slot_bytes(),
        std::mem::size_of::<tokio::time::Sleep>()
    ));
    for (i, l) in lines.iter().enumerate() {
        println!(
            "bytes-per-registration: {:<15} heap {:>7.1} B + handle {:>2} B  ({})",
            l.name, l.heap, l.handle, l.note
        );
        json.push_str(&format!(
            "    \"{}\": {{\"heap_bytes\": {:.1}, \"handle_bytes\": {}, \"note\": \"{}\"}}{}\n",
            l.name,
            l.heap,
            l.handle,
            l.note,
            if i + 1 < lines.len() { "," } else { "" }
        ));
    }
    json.push_str("  }\n}\n");
    if let Some(dir) = support::criterion_dir() {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("bytes-per-registration.json"), json);
    }
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = arena
}
criterion_main!(benches);
