//! What a registration costs in memory, for the `arena` benchmark (which
//! installs [`support::CountingAlloc`](crate::support::CountingAlloc)):
//! net heap bytes per live registration beside the peers, and the
//! allocations one register+deregister makes through the engine in steady
//! state. Printed, and written to
//! `<criterion dir>/bytes-per-registration.json`.

use crate::support::{self, NoHooks, FIXTURE};
use evnexus::bench_api::BareArena;
use evnexus::{Engine, FdEvent, Interest, Timer, TimerEvent, Token};
use std::future::Future;
use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------------------
// Bytes per registration

/// Registrations made for each allocation measurement.
const BYTES_N: usize = 100_000;

/// The value the peers store per registration when bytes are measured: a
/// boxed callback, as a slab-based registry holds one (a capture-less
/// closure, so the box itself allocates nothing, like evnexus's no-op
/// callbacks).
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

pub fn print_bytes_per_registration() {
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
        note: "hooks engine, no-op timer: slot pages and all the engine keeps per registration",
    });
    drop(engine);

    let engine = Engine::with_hooks(NoHooks);
    let shared = Arc::new(AtomicUsize::new(0));
    let mut k = 0;
    lines.push(BytesLine {
        name: "evnexus-engine-closure",
        heap: per_registration(|| {
            k += 1;
            engine
                .timer_at(far, timer_closure(&shared, k))
                .expect("register")
        }),
        handle: std::mem::size_of::<Timer>(),
        note: "hooks engine, timer with the small closure (an Arc and a usize)",
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
    for l in &lines {
        println!(
            "bytes-per-registration: {:<22} heap {:>7.1} B + handle {:>2} B  ({})",
            l.name, l.heap, l.handle, l.note
        );
    }
    let allocs = allocations_per_registration();
    let mut json = String::from("{\n");
    json.push_str(&format!(
        "  \"registrations\": {BYTES_N},\n  \"evnexus_slot_bytes\": {},\n  \"tokio_sleep_size\": {},\n  \"impls\": {{\n",
        Engine::slot_bytes(),
        std::mem::size_of::<tokio::time::Sleep>()
    ));
    for (i, l) in lines.iter().enumerate() {
        json.push_str(&format!(
            "    \"{}\": {{\"heap_bytes\": {:.1}, \"handle_bytes\": {}, \"note\": \"{}\"}}{}\n",
            l.name,
            l.heap,
            l.handle,
            l.note,
            if i + 1 < lines.len() { "," } else { "" }
        ));
    }
    json.push_str(&format!(
        "  }},\n  \"allocations\": {{\n    \"cycles\": {ALLOC_N},\n    \"closure_bytes\": {},\n    \"impls\": {{\n",
        std::mem::size_of_val(&timer_closure(&Arc::default(), 0))
    ));
    for (i, a) in allocs.iter().enumerate() {
        json.push_str(&format!(
            "      \"{}\": {{\"allocs\": {:.3}, \"alloc_bytes\": {:.1}, \"net_bytes\": {:.1}, \"note\": \"{}\"}}{}\n",
            a.name,
            a.allocs,
            a.alloc_bytes,
            a.net_bytes,
            a.note,
            if i + 1 < allocs.len() { "," } else { "" }
        ));
    }
    json.push_str("    }\n  }\n}\n");
    if let Some(dir) = support::criterion_dir() {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("bytes-per-registration.json"), json);
    }
}

// ---------------------------------------------------------------------------
// Allocations per registration

/// Register+deregister cycles measured for the allocation counts, after as
/// many unmeasured ones (so that pages and free lists are in steady state).
const ALLOC_N: usize = 100_000;

/// The small closure of a registration: an `Arc` and a `usize` (16 bytes
/// on 64-bit targets), as a real callback captures its context.
fn timer_closure(
    shared: &Arc<AtomicUsize>,
    k: usize,
) -> impl FnOnce(&TimerEvent<'_>) + Send + 'static {
    let shared = Arc::clone(shared);
    move |_| {
        shared.fetch_add(k, Ordering::Relaxed);
    }
}

/// [`timer_closure`] for an fd watch.
fn fd_closure(shared: &Arc<AtomicUsize>, k: usize) -> impl FnMut(&FdEvent<'_>) + Send + 'static {
    let shared = Arc::clone(shared);
    move |_| {
        shared.fetch_add(k, Ordering::Relaxed);
    }
}

struct AllocLine {
    name: &'static str,
    /// Allocations per cycle.
    allocs: f64,
    /// Bytes those allocations asked for, per cycle.
    alloc_bytes: f64,
    /// Bytes left allocated, per cycle (0 in steady state).
    net_bytes: f64,
    note: &'static str,
}

/// Counts the allocations of `ALLOC_N` calls of `cycle` (one register and
/// one deregister each), after `ALLOC_N` unmeasured ones.
fn per_cycle(name: &'static str, note: &'static str, mut cycle: impl FnMut(usize)) -> AllocLine {
    for k in 0..ALLOC_N {
        cycle(k);
    }
    let (counted, ()) = support::measure(|| {
        for k in 0..ALLOC_N {
            cycle(k);
        }
    });
    let n = ALLOC_N as f64;
    AllocLine {
        name,
        allocs: counted.allocs as f64 / n,
        alloc_bytes: counted.alloc_bytes as f64 / n,
        net_bytes: counted.net_bytes as f64 / n,
        note,
    }
}

/// Allocations (count and bytes) one registration makes through the engine
/// in steady state, register then deregister, printed and returned.
fn allocations_per_registration() -> Vec<AllocLine> {
    let far = support::far_future();
    let shared = Arc::new(AtomicUsize::new(0));
    let mut lines = Vec::new();

    // FIXTURE live registrations meanwhile, as in the timed rows.
    let engine = Engine::with_hooks(NoHooks);
    let live: Vec<Timer> = (0..FIXTURE)
        .map(|_| engine.timer_at(far, |_| {}).expect("register"))
        .collect();
    lines.push(per_cycle(
        "evnexus-engine",
        "hooks engine: timer_at + cancel, the small closure",
        |k| {
            let t = engine
                .timer_at(far, timer_closure(&shared, k))
                .expect("register");
            black_box(t.cancel());
        },
    ));
    lines.push(per_cycle(
        "evnexus-engine-noop",
        "hooks engine: timer_at + cancel, a capture-less closure",
        |_| {
            let t = engine.timer_at(far, |_| {}).expect("register");
            black_box(t.cancel());
        },
    ));
    let wide = [1usize; 3];
    lines.push(per_cycle(
        "evnexus-engine-32b",
        "hooks engine: timer_at + cancel, a 32-byte closure (an Arc and three usizes: above three words)",
        |k| {
            let shared = Arc::clone(&shared);
            let t = engine
                .timer_at(far, move |_| {
                    shared.fetch_add(k + wide[0] + wide[1] + wide[2], Ordering::Relaxed);
                })
                .expect("register");
            black_box(t.cancel());
        },
    ));
    let (a, _b) = support::readable_pair();
    let fd = a.as_raw_fd();
    lines.push(per_cycle(
        "evnexus-engine-fd",
        "hooks engine: register_fd + deregister, the small closure",
        |k| {
            let w = engine
                .register_fd(fd, Interest::READABLE, fd_closure(&shared, k))
                .expect("register_fd");
            black_box(w.deregister());
        },
    ));
    drop(live);
    drop(engine);

    let engine = Engine::builder()
        .backend(evnexus::BackendKind::Epoll)
        .build()
        .expect("epoll engine");
    lines.push(per_cycle(
        "evnexus-epoll-fd",
        "built-in loop (epoll): register_fd + deregister, the small closure",
        |k| {
            let w = engine
                .register_fd(fd, Interest::READABLE, fd_closure(&shared, k))
                .expect("register_fd");
            black_box(w.deregister());
        },
    ));
    drop(engine);

    let slab = sharded_slab::Slab::new();
    let live: Vec<usize> = (0..FIXTURE)
        .map(|_| slab.insert(7u64).expect("slab full"))
        .collect();
    lines.push(per_cycle(
        "sharded-slab",
        "insert + remove of a u64 (the arena rows' value)",
        |_| {
            let k = slab.insert(7).expect("slab full");
            black_box(slab.remove(black_box(k)));
        },
    ));
    drop(live);
    drop(slab);

    println!(
        "allocations-per-registration: closure {} B (an Arc and a usize), {ALLOC_N} register+deregister cycles in steady state",
        std::mem::size_of_val(&timer_closure(&shared, 0))
    );
    for l in &lines {
        println!(
            "allocations-per-registration: {:<20} {:>6.3} allocations, {:>6.1} B allocated, {:>5.1} B net per registration  ({})",
            l.name, l.allocs, l.alloc_bytes, l.net_bytes, l.note
        );
    }
    lines
}
