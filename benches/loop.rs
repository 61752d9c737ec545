//! The engine's own loop beside epoll by hand, mio and tokio: cost per
//! event at 1, 64 and 1,024 watched fds, and wake-up latency from another
//! thread.
//!
//! Group `loop`; ids `<impl>/<shape>/<nfds>`, one criterion iteration = one
//! event (each sample runs whole batches until it has at least that many
//! events and scales the time to the number asked for):
//!
//! - `<shape>` `ready`: eventfds with a nonzero counter that nobody reads,
//!   always readable. The callback only counts the event in a per-fd
//!   counter (a plain load and store). Pure dispatch and re-arm cost.
//! - `<shape>` `busy`: pipes that always hold one byte. The callback reads
//!   (up to 64 bytes; it gets the one) and writes one byte back into the
//!   same pipe, then counts. Every event produces the next one on the same
//!   fd, in every implementation alike: two system calls of work per
//!   event, plus whatever the loop costs. Edge-triggered readers do not
//!   read again to see `EAGAIN`: a pipe read shorter than its buffer has
//!   drained the pipe.
//! - `<impl>`:
//!   - `evnexus-uring`, `evnexus-epoll`: `Engine::run_once` on
//!     `BackendKind::Uring` / `BackendKind::Epoll`, level-triggered watches
//!     (`Interest::READABLE`).
//!   - `evnexus-uring-edge`, `evnexus-epoll-edge` (busy only):
//!     `Interest::READABLE | Interest::EDGE`.
//!   - `raw-epoll-lt`: `epoll_wait` (1,024 events at most) and a loop over
//!     the events by hand, handlers called statically (no boxed callback):
//!     the floor.
//!   - `raw-epoll-oneshot`: the same with `EPOLLONESHOT`, re-armed with
//!     `EPOLL_CTL_MOD` after each event.
//!   - `mio`: `Poll::poll` (1,024 events at most), edge-triggered, its
//!     natural mode. Busy: nothing else (the callback's write makes the
//!     next edge). Ready: an always-ready fd makes no new edge, so each
//!     event is followed by `Registry::reregister` (`EPOLL_CTL_MOD`, which
//!     reports a still-ready fd again): mio's way to get a level-triggered
//!     event, one system call per event.
//!   - `tokio`: current-thread runtime, one task per fd on
//!     `tokio::io::unix::AsyncFd`. Each task handles one event then
//!     `yield_now()`s (which tokio defers until it has polled its driver),
//!     so every fd gets one event per round, as in a loop's batch. Ready:
//!     `readable().await` then `retain_ready()`: tokio's readiness is
//!     edge-triggered and cached, so keeping it set is how a tokio program
//!     says "still ready"; the next `readable()` returns without a system
//!     call. Busy: `readable().await`, then the read through `try_io` (a
//!     `WouldBlock` clears the readiness and waits for the driver), then
//!     the write. As in any tokio reader, readiness stays set after a read
//!     that did not block, so tokio reaches epoll only when its scheduler
//!     polls the driver (every 61 tasks, or when it runs out of tasks).
//!
//! Group `wakeup`; ids `<impl>` in `evnexus-uring`, `evnexus-epoll`, `mio`,
//! `tokio`: a thread wakes a loop that sleeps (`run_once(None)`;
//! `Poll::poll(None)` woken by `mio::Waker`; `Runtime::block_on` of a
//! future woken through its `std::task::Waker`, which is what tokio's
//! `Notify` and channels do, the `sync` feature not being enabled here).
//! Criterion reports the mean of wake() to return; p50 and p99 of every
//! sample are printed and written to `<criterion dir>/wakeup-latency.json`.
//!
//! Defaults (42 `loop` entries at 1 s warm-up + 4 s, `wakeup` short) keep
//! `cargo bench --bench loop` near four minutes on a two-core machine;
//! command-line flags override them.
//!
//! Correctness, checked outside the timed loops: before measuring, every
//! fd must have been dispatched; after, the per-fd counters must add up to
//! the events each loop reported dispatching (evnexus: also its own
//! `Stats::dispatched`, with no stale event), and in the busy shape every
//! pipe must still hold exactly one byte.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use evnexus::{BackendKind, Engine, FdWatch, Interest};
use fixtures::{quantile, wake_latencies, Counts, Epoll, Fd, Fds, Shape};
use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// How long a wait may last before the benchmark calls it a hang.
const HANG: Duration = Duration::from_secs(2);
const FD_COUNTS: [usize; 3] = [1, 64, 1024];
/// Events one wait may return (raw epoll, mio).
const BATCH: usize = 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Impl {
    EvnexusUring,
    EvnexusEpoll,
    EvnexusUringEdge,
    EvnexusEpollEdge,
    RawEpollLt,
    RawEpollOneshot,
    Mio,
    Tokio,
}

const IMPLS: [Impl; 8] = [
    Impl::EvnexusUring,
    Impl::EvnexusEpoll,
    Impl::EvnexusUringEdge,
    Impl::EvnexusEpollEdge,
    Impl::RawEpollLt,
    Impl::RawEpollOneshot,
    Impl::Mio,
    Impl::Tokio,
];

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::EvnexusUring => "evnexus-uring",
            Impl::EvnexusEpoll => "evnexus-epoll",
            Impl::EvnexusUringEdge => "evnexus-uring-edge",
            Impl::EvnexusEpollEdge => "evnexus-epoll-edge",
            Impl::RawEpollLt => "raw-epoll-lt",
            Impl::RawEpollOneshot => "raw-epoll-oneshot",
            Impl::Mio => "mio",
            Impl::Tokio => "tokio",
        }
    }

    fn applies_to(self, shape: Shape) -> bool {
        let edge = matches!(self, Impl::EvnexusUringEdge | Impl::EvnexusEpollEdge);
        shape == Shape::Busy || !edge
    }

    fn build(self, shape: Shape, n: usize) -> Box<dyn EventLoop> {
        let fds = Fds::new(shape, n);
        match self {
            Impl::EvnexusUring => Box::new(Evnexus::new(fds, BackendKind::Uring, false)),
            Impl::EvnexusEpoll => Box::new(Evnexus::new(fds, BackendKind::Epoll, false)),
            Impl::EvnexusUringEdge => Box::new(Evnexus::new(fds, BackendKind::Uring, true)),
            Impl::EvnexusEpollEdge => Box::new(Evnexus::new(fds, BackendKind::Epoll, true)),
            Impl::RawEpollLt => Box::new(RawEpoll::new(fds, false)),
            Impl::RawEpollOneshot => Box::new(RawEpoll::new(fds, true)),
            Impl::Mio => Box::new(MioLoop::new(fds)),
            Impl::Tokio => Box::new(TokioLoop::new(fds)),
        }
    }
}

/// The work of one event on fd `i`, the same in every implementation.
#[inline(always)]
fn on_event(shape: Shape, r: i32, w: i32, counts: &Counts, i: usize) {
    if Fds::on_event(shape, r, w) {
        counts.bump(i);
    }
}

trait EventLoop {
    /// One wait and the dispatch of what it found; the events dispatched.
    fn batch(&mut self) -> u64;

    /// Time to dispatch `events` events: whole batches until at least that
    /// many, the time scaled to `events`.
    fn measure(&mut self, events: u64) -> Duration {
        let start = Instant::now();
        let mut done = 0;
        while done < events {
            done += self.batch();
        }
        let elapsed = start.elapsed();
        elapsed.mul_f64(events as f64 / done as f64)
    }

    fn counts(&self) -> &Counts;
    /// Events dispatched so far, by the loop's own account.
    fn dispatched(&self) -> u64;
    fn fds(&self) -> &Fds;
    /// Checks of the implementation's own (evnexus: its stats).
    fn check_more(&self, _who: &str) {}

    /// Untimed: runs a few rounds (so that buffers have grown and every
    /// fd is in its steady state) and checks that every fd was dispatched.
    fn prime(&mut self, who: &str) {
        let n = self.fds().len() as u64;
        self.measure(8 * n);
        self.counts().check(who, self.dispatched());
        self.fds().check_pipes(who);
    }

    fn check(&self, who: &str) {
        self.counts().check(who, self.dispatched());
        self.fds().check_pipes(who);
        self.check_more(who);
    }
}

struct Evnexus {
    // Dropped before the fds they watch.
    watches: Vec<FdWatch>,
    engine: Engine,
    counts: Counts,
    dispatched: u64,
    fds: Fds,
}

impl Evnexus {
    fn new(fds: Fds, kind: BackendKind, edge: bool) -> Evnexus {
        let engine = Engine::builder().backend(kind).build().expect("engine");
        assert_eq!(engine.backend(), kind);
        let counts = Counts::new(fds.len());
        let interest = if edge {
            Interest::READABLE | Interest::EDGE
        } else {
            Interest::READABLE
        };
        let shape = fds.shape;
        let watches = (0..fds.len())
            .map(|i| {
                let (r, w) = (fds.read[i], fds.write[i]);
                let counts = counts.clone();
                engine
                    .register_fd(r, interest, move |_| on_event(shape, r, w, &counts, i))
                    .expect("register_fd")
            })
            .collect();
        Evnexus {
            watches,
            engine,
            counts,
            dispatched: 0,
            fds,
        }
    }
}

impl EventLoop for Evnexus {
    #[inline]
    fn batch(&mut self) -> u64 {
        let n = self.engine.run_once(Some(HANG)).expect("run_once") as u64;
        assert!(n > 0, "run_once dispatched nothing in {HANG:?}");
        self.dispatched += n;
        n
    }
    fn counts(&self) -> &Counts {
        &self.counts
    }
    fn dispatched(&self) -> u64 {
        self.dispatched
    }
    fn fds(&self) -> &Fds {
        &self.fds
    }
    fn check_more(&self, who: &str) {
        let stats = self.engine.stats();
        assert_eq!(
            stats.dispatched, self.dispatched,
            "{who}: Stats::dispatched"
        );
        assert_eq!(
            stats.stale.total(),
            0,
            "{who}: stale events {:?}",
            stats.stale
        );
        assert_eq!(stats.panicked, 0, "{who}: panicked callbacks");
        assert!(
            self.watches.iter().all(FdWatch::is_live),
            "{who}: a watch ended"
        );
        if stats.ring_sq_full + stats.ring_cq_overflow > 0 {
            println!(
                "note: {who}: {} SQ-full retries, {} CQ overflows over {} events",
                stats.ring_sq_full, stats.ring_cq_overflow, stats.dispatched
            );
        }
    }
}

struct RawEpoll {
    ep: Epoll,
    buf: Vec<libc::epoll_event>,
    oneshot: bool,
    counts: Counts,
    dispatched: u64,
    fds: Fds,
}

impl RawEpoll {
    fn new(fds: Fds, oneshot: bool) -> RawEpoll {
        let ep = Epoll::new();
        let events = Self::events(oneshot);
        for (i, &r) in fds.read.iter().enumerate() {
            ep.ctl(libc::EPOLL_CTL_ADD, r, events, i as u64);
        }
        RawEpoll {
            ep,
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; BATCH],
            oneshot,
            counts: Counts::new(fds.len()),
            dispatched: 0,
            fds,
        }
    }

    fn events(oneshot: bool) -> u32 {
        let mut e = libc::EPOLLIN as u32;
        if oneshot {
            e |= libc::EPOLLONESHOT as u32;
        }
        e
    }
}

impl EventLoop for RawEpoll {
    #[inline]
    fn batch(&mut self) -> u64 {
        let n = self.ep.wait(&mut self.buf, HANG.as_millis() as libc::c_int);
        assert!(n > 0, "epoll_wait found nothing in {HANG:?}");
        let shape = self.fds.shape;
        for e in &self.buf[..n] {
            let i = e.u64 as usize;
            let r = self.fds.read[i];
            on_event(shape, r, self.fds.write[i], &self.counts, i);
            if self.oneshot {
                self.ep
                    .ctl(libc::EPOLL_CTL_MOD, r, Self::events(true), i as u64);
            }
        }
        self.dispatched += n as u64;
        n as u64
    }
    fn counts(&self) -> &Counts {
        &self.counts
    }
    fn dispatched(&self) -> u64 {
        self.dispatched
    }
    fn fds(&self) -> &Fds {
        &self.fds
    }
}

struct MioLoop {
    poll: mio::Poll,
    events: mio::Events,
    /// Ready shape: re-register after each event (see the module docs).
    reregister: bool,
    counts: Counts,
    dispatched: u64,
    fds: Fds,
}

impl MioLoop {
    fn new(fds: Fds) -> MioLoop {
        let poll = mio::Poll::new().expect("mio::Poll");
        for (i, r) in fds.read.iter().enumerate() {
            poll.registry()
                .register(
                    &mut mio::unix::SourceFd(r),
                    mio::Token(i),
                    mio::Interest::READABLE,
                )
                .expect("mio register");
        }
        MioLoop {
            poll,
            events: mio::Events::with_capacity(BATCH),
            reregister: fds.shape == Shape::Ready,
            counts: Counts::new(fds.len()),
            dispatched: 0,
            fds,
        }
    }
}

impl EventLoop for MioLoop {
    #[inline]
    fn batch(&mut self) -> u64 {
        self.poll
            .poll(&mut self.events, Some(HANG))
            .expect("mio poll");
        let shape = self.fds.shape;
        let mut n = 0;
        for ev in self.events.iter() {
            let i = ev.token().0;
            let r = self.fds.read[i];
            on_event(shape, r, self.fds.write[i], &self.counts, i);
            if self.reregister {
                self.poll
                    .registry()
                    .reregister(
                        &mut mio::unix::SourceFd(&r),
                        ev.token(),
                        mio::Interest::READABLE,
                    )
                    .expect("mio reregister");
            }
            n += 1;
        }
        assert!(n > 0, "mio found nothing in {HANG:?}");
        self.dispatched += n;
        n
    }
    fn counts(&self) -> &Counts {
        &self.counts
    }
    fn dispatched(&self) -> u64 {
        self.dispatched
    }
    fn fds(&self) -> &Fds {
        &self.fds
    }
}

/// A one-shot signal to a future from any thread: the flag, and the waker
/// to call (what `tokio::sync::Notify` does, without its `sync` feature).
#[derive(Default)]
struct Signal {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Signal {
    fn fire(&self) {
        // Release: what the firer did before is visible to the waiter.
        self.fired.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }

    /// Resolves once fired, and re-arms.
    fn wait(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            // Acquire: pairs with the Release in `fire`.
            if self.fired.swap(false, Ordering::Acquire) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.fired.swap(false, Ordering::Acquire) {
                return Poll::Ready(());
            }
            Poll::Pending
        })
    }
}

/// What the tokio tasks share with the measuring thread.
#[derive(Default)]
struct TokioShared {
    /// Events handled (only the runtime's one thread writes it).
    hits: AtomicU64,
    /// The hit that ends the current sample.
    target: AtomicU64,
    end: Mutex<Option<Instant>>,
    done: Signal,
}

impl TokioShared {
    #[inline(always)]
    fn hit(&self) {
        // Relaxed load and store: one thread runs every task.
        let h = self.hits.load(Ordering::Relaxed) + 1;
        self.hits.store(h, Ordering::Relaxed);
        if h == self.target.load(Ordering::Relaxed) {
            *self.end.lock().unwrap() = Some(Instant::now());
            self.done.fire();
        }
    }
}

struct TokioLoop {
    // Dropped first: its tasks own the `AsyncFd`s, which deregister.
    rt: tokio::runtime::Runtime,
    shared: Arc<TokioShared>,
    counts: Counts,
    fds: Fds,
}

impl TokioLoop {
    fn new(fds: Fds) -> TokioLoop {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let shared = Arc::new(TokioShared::default());
        let counts = Counts::new(fds.len());
        let shape = fds.shape;
        // Spawned from inside the runtime, the tasks start in its local run
        // queue; spawned from outside they would wait in the inject queue,
        // which the scheduler takes one task from every 31 while tasks
        // that yield keep the local queue busy.
        rt.block_on(async {
            for i in 0..fds.len() {
                let (r, w) = (fds.read[i], fds.write[i]);
                // SAFETY: `r` stays open, the same pipe or eventfd, until
                // `fds` is dropped, after `rt` and the tasks that own the
                // `AsyncFd` (field order of `TokioLoop`); `Fd` always
                // returns it.
                let afd = unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        Fd(r),
                        tokio::io::Interest::READABLE,
                    )
                }
                .expect("AsyncFd");
                let (shared, counts) = (Arc::clone(&shared), counts.clone());
                tokio::spawn(tokio_task(afd, shape, w, counts, i, shared));
            }
        });
        TokioLoop {
            rt,
            shared,
            counts,
            fds,
        }
    }
}

/// One fd's task: one event, then yield (see the module docs).
async fn tokio_task(
    afd: tokio::io::unix::AsyncFd<Fd>,
    shape: Shape,
    w: i32,
    counts: Counts,
    i: usize,
    shared: Arc<TokioShared>,
) {
    loop {
        let mut guard = afd.readable().await.expect("readable");
        let done = match shape {
            Shape::Ready => {
                guard.retain_ready();
                true
            }
            Shape::Busy => match guard.try_io(|fd| fixtures::read_some(fd.get_ref().0)) {
                Ok(Ok(1)) => {
                    fixtures::write_one(w);
                    true
                }
                // Not counted: the checks catch it.
                Ok(_) => false,
                // WouldBlock: readiness cleared, wait for the driver.
                Err(_) => continue,
            },
        };
        drop(guard);
        if done {
            counts.bump(i);
            shared.hit();
        }
        tokio::task::yield_now().await;
    }
}

impl EventLoop for TokioLoop {
    fn batch(&mut self) -> u64 {
        // One round: as many events as fds.
        let n = self.fds.len() as u64;
        self.measure(n);
        n
    }

    fn measure(&mut self, events: u64) -> Duration {
        let shared = &*self.shared;
        // Relaxed: the tasks run on this thread, inside `block_on`.
        let target = shared.hits.load(Ordering::Relaxed) + events;
        shared.target.store(target, Ordering::Relaxed);
        let start = Instant::now();
        self.rt.block_on(async {
            // With events flowing, a sample is far shorter than HANG.
            let waited = tokio::time::timeout(HANG, shared.done.wait()).await;
            assert!(waited.is_ok(), "tokio did not finish a sample in {HANG:?}");
        });
        let end = shared.end.lock().unwrap().take().expect("end of sample");
        end - start
    }

    fn counts(&self) -> &Counts {
        &self.counts
    }
    fn dispatched(&self) -> u64 {
        self.shared.hits.load(Ordering::Relaxed)
    }
    fn fds(&self) -> &Fds {
        &self.fds
    }
}

fn bench_loop(c: &mut Criterion) {
    let mut group = c.benchmark_group("loop");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(40);
    for shape in [Shape::Ready, Shape::Busy] {
        for n in FD_COUNTS {
            for imp in IMPLS.into_iter().filter(|i| i.applies_to(shape)) {
                let who = format!("{}/{}/{n}", imp.name(), shape.name());
                let id = BenchmarkId::new(imp.name(), format!("{}/{n}", shape.name()));
                let mut fixture: Option<Box<dyn EventLoop>> = None;
                group.bench_function(id, |b| {
                    let lp = fixture.get_or_insert_with(|| {
                        let mut lp = imp.build(shape, n);
                        lp.prime(&who);
                        lp
                    });
                    b.iter_custom(|events| lp.measure(events));
                });
                if let Some(lp) = fixture {
                    lp.check(&who);
                }
            }
        }
    }
    group.finish();
}

/// Wakes a [`Sleeper`] from any thread.
type WakeFn = Box<dyn Fn() + Send + Sync>;

/// A loop that sleeps until woken, and the way to wake it.
trait Sleeper: Send {
    fn sleep(&mut self);
    fn waker(&self) -> WakeFn;
}

struct EvnexusSleeper(Engine);

impl Sleeper for EvnexusSleeper {
    fn sleep(&mut self) {
        self.0.run_once(None).expect("run_once");
    }
    fn waker(&self) -> WakeFn {
        let w = self.0.waker();
        Box::new(move || w.wake())
    }
}

struct MioSleeper {
    poll: mio::Poll,
    events: mio::Events,
    waker: Arc<mio::Waker>,
}

impl Sleeper for MioSleeper {
    fn sleep(&mut self) {
        self.poll.poll(&mut self.events, None).expect("mio poll");
    }
    fn waker(&self) -> WakeFn {
        let w = Arc::clone(&self.waker);
        Box::new(move || w.wake().expect("mio wake"))
    }
}

struct TokioSleeper {
    rt: tokio::runtime::Runtime,
    signal: Arc<Signal>,
}

impl Sleeper for TokioSleeper {
    fn sleep(&mut self) {
        self.rt.block_on(self.signal.wait());
    }
    fn waker(&self) -> WakeFn {
        let s = Arc::clone(&self.signal);
        Box::new(move || s.fire())
    }
}

fn sleeper(name: &str) -> Box<dyn Sleeper> {
    let engine = |kind| {
        let e = Engine::builder().backend(kind).build().expect("engine");
        Box::new(EvnexusSleeper(e)) as Box<dyn Sleeper>
    };
    match name {
        "evnexus-uring" => engine(BackendKind::Uring),
        "evnexus-epoll" => engine(BackendKind::Epoll),
        "mio" => {
            let poll = mio::Poll::new().expect("mio::Poll");
            let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker"));
            Box::new(MioSleeper {
                poll,
                events: mio::Events::with_capacity(16),
                waker,
            })
        }
        "tokio" => Box::new(TokioSleeper {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime"),
            signal: Arc::default(),
        }),
        _ => unreachable!("{name}"),
    }
}

fn bench_wakeup(c: &mut Criterion) {
    let mut group = c.benchmark_group("wakeup");
    // Each wake-up also costs a 50 µs pause that criterion does not see:
    // keep the measured time short.
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(30);
    let mut lines = Vec::new();
    for name in ["evnexus-uring", "evnexus-epoll", "mio", "tokio"] {
        let mut latencies = Vec::new();
        let mut fixture: Option<(Box<dyn Sleeper>, WakeFn)> = None;
        group.bench_function(name, |b| {
            let (s, wake) = fixture.get_or_insert_with(|| {
                let s = sleeper(name);
                let w = s.waker();
                (s, w)
            });
            b.iter_custom(|iters| {
                let mut sleep = || s.sleep();
                wake_latencies(iters, &mut sleep, &**wake, &mut latencies)
            });
        });
        if latencies.len() >= 100 {
            let n = latencies.len();
            let p50 = quantile(&mut latencies, 0.50);
            let p99 = quantile(&mut latencies, 0.99);
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            println!(
                "wakeup/{name}: p50 {:.1} µs, p99 {:.1} µs ({n} wake-ups)",
                us(p50),
                us(p99)
            );
            lines.push(format!(
                "  \"{name}\": {{\"p50_ns\": {}, \"p99_ns\": {}, \"samples\": {n}}}",
                p50.as_nanos(),
                p99.as_nanos()
            ));
        }
    }
    group.finish();
    if !lines.is_empty() {
        if let Some(dir) = fixtures::criterion_dir() {
            let _ = std::fs::create_dir_all(&dir);
            let json = format!("{{\n{}\n}}\n", lines.join(",\n"));
            let _ = std::fs::write(dir.join("wakeup-latency.json"), json);
        }
    }
}

criterion_group!(benches, bench_loop, bench_wakeup);
criterion_main!(benches);

/// Fixtures of the `loop` benchmark: the watched fds, the per-event work
/// every implementation does, the counters that prove it was done, and the
/// wake-up latency harness.
mod fixtures {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// What the watched fds do.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum Shape {
        /// eventfds with a nonzero counter, never read: always readable. The
        /// callback only counts the event.
        Ready,
        /// Pipes that always hold one byte: the callback reads it and writes
        /// one byte back into the same pipe, so every event makes the next one.
        Busy,
    }

    impl Shape {
        pub fn name(self) -> &'static str {
            match self {
                Shape::Ready => "ready",
                Shape::Busy => "busy",
            }
        }
    }

    fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    /// The watched fds of one fixture: `read[i]` is watched for readability;
    /// `write[i]` is the pipe's other end (busy shape; -1 for ready).
    pub struct Fds {
        pub shape: Shape,
        pub read: Vec<RawFd>,
        pub write: Vec<RawFd>,
        _owned: Vec<OwnedFd>,
    }

    impl Fds {
        pub fn new(shape: Shape, n: usize) -> Fds {
            let mut fds = Fds {
                shape,
                read: Vec::with_capacity(n),
                write: Vec::with_capacity(n),
                _owned: Vec::with_capacity(2 * n),
            };
            for _ in 0..n {
                match shape {
                    Shape::Ready => {
                        // SAFETY: eventfd takes no pointers.
                        let fd = cvt(unsafe {
                            libc::eventfd(1, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
                        })
                        .expect("eventfd");
                        // SAFETY: a fresh descriptor nothing else owns.
                        fds._owned.push(unsafe { OwnedFd::from_raw_fd(fd) });
                        fds.read.push(fd);
                        fds.write.push(-1);
                    }
                    Shape::Busy => {
                        let mut p = [0 as libc::c_int; 2];
                        // SAFETY: `p` has room for the two descriptors.
                        cvt(unsafe {
                            libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC)
                        })
                        .expect("pipe2");
                        for fd in p {
                            // SAFETY: fresh descriptors nothing else owns.
                            fds._owned.push(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                        write_one(p[1]);
                        fds.read.push(p[0]);
                        fds.write.push(p[1]);
                    }
                }
            }
            fds
        }

        pub fn len(&self) -> usize {
            self.read.len()
        }

        /// The work of one event on fd `i`; `true` if it was done (the busy
        /// shape moved its byte).
        #[inline(always)]
        pub fn on_event(shape: Shape, r: RawFd, w: RawFd) -> bool {
            match shape {
                Shape::Ready => true,
                Shape::Busy => {
                    if read_some(r).ok() == Some(1) {
                        write_one(w);
                        true
                    } else {
                        false
                    }
                }
            }
        }

        /// Busy shape: every pipe still holds exactly one byte, so no event was
        /// lost (a pipe left empty) or handled without its read (two bytes).
        pub fn check_pipes(&self, who: &str) {
            for (i, &r) in self.read.iter().enumerate() {
                if self.shape != Shape::Busy {
                    break;
                }
                let mut n: libc::c_int = 0;
                // SAFETY: FIONREAD writes one int into `n`.
                cvt(unsafe { libc::ioctl(r, libc::FIONREAD, &mut n) }).expect("FIONREAD");
                assert_eq!(n, 1, "{who}: pipe {i} holds {n} bytes, not 1");
            }
        }
    }

    /// Reads what the pipe (or eventfd) holds, up to 64 bytes: a short read
    /// from a pipe means it is drained, so an edge-triggered reader need not
    /// read again to see `EAGAIN`.
    #[inline(always)]
    pub fn read_some(fd: RawFd) -> io::Result<usize> {
        let mut buf = [0u8; 64];
        // SAFETY: reads at most 64 bytes into the 64-byte `buf`.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    #[inline(always)]
    pub fn write_one(fd: RawFd) {
        // SAFETY: writes the one byte of a static buffer.
        let n = unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
        assert_eq!(n, 1, "write to pipe {fd}: {}", io::Error::last_os_error());
    }

    /// Per-fd event counts, bumped by every implementation's callback. One
    /// thread bumps them, so a plain load and store (no locked instruction).
    #[derive(Clone)]
    pub struct Counts(Arc<[AtomicU64]>);

    impl Counts {
        pub fn new(n: usize) -> Counts {
            Counts((0..n).map(|_| AtomicU64::new(0)).collect())
        }

        #[inline(always)]
        pub fn bump(&self, i: usize) {
            let c = &self.0[i];
            // Relaxed load and store: only the loop's thread writes.
            c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }

        /// Every fd got events, and they add up to what the loop said it
        /// dispatched.
        pub fn check(&self, who: &str, dispatched: u64) {
            let counts: Vec<u64> = self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect();
            let never = counts.iter().filter(|&&c| c == 0).count();
            assert!(
                never == 0,
                "{who}: {never} of {} fds never dispatched (first: fd {}; most events on one fd: {})",
                counts.len(),
                counts.iter().position(|&c| c == 0).unwrap_or(0),
                counts.iter().max().unwrap_or(&0),
            );
            let sum: u64 = counts.iter().sum();
            assert_eq!(sum, dispatched, "{who}: callbacks that did their work");
        }
    }

    /// A wrapper that lends a raw fd to mio or tokio without owning it.
    pub struct Fd(pub RawFd);

    impl AsRawFd for Fd {
        fn as_raw_fd(&self) -> RawFd {
            self.0
        }
    }

    /// A raw epoll set.
    pub struct Epoll(OwnedFd);

    impl Epoll {
        pub fn new() -> Epoll {
            // SAFETY: epoll_create1 takes no pointers.
            let fd =
                cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }).expect("epoll_create1");
            // SAFETY: a fresh descriptor nothing else owns.
            Epoll(unsafe { OwnedFd::from_raw_fd(fd) })
        }

        #[inline(always)]
        pub fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, data: u64) {
            let mut ev = libc::epoll_event { events, u64: data };
            // SAFETY: `ev` is a valid epoll_event; errors are returned.
            let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) };
            assert_eq!(r, 0, "epoll_ctl: {}", io::Error::last_os_error());
        }

        /// Waits at most `ms`; the number of events written to `buf`.
        #[inline(always)]
        pub fn wait(&self, buf: &mut [libc::epoll_event], ms: libc::c_int) -> usize {
            // SAFETY: `buf` has room for `buf.len()` events.
            let n = unsafe {
                libc::epoll_wait(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr(),
                    buf.len() as libc::c_int,
                    ms,
                )
            };
            assert!(n >= 0, "epoll_wait: {}", io::Error::last_os_error());
            n as usize
        }
    }

    /// Wake-up latency: a loop thread calls `sleep` (which blocks until woken)
    /// `iters` times; for each, this thread waits until the loop thread is
    /// about to sleep, gives it 50 µs to get there, takes the time and calls
    /// `wake`, then parks until the loop thread is back. Each latency (from
    /// just before `wake` to just after `sleep` returned) is appended to
    /// `out`; returns their sum. A `sleep` that returns before its `wake`
    /// (spuriously) is simply called again.
    pub fn wake_latencies(
        iters: u64,
        sleep: &mut (dyn FnMut() + Send),
        wake: &(dyn Fn() + Sync),
        out: &mut Vec<Duration>,
    ) -> Duration {
        let armed = AtomicU64::new(0);
        let sent = AtomicU64::new(0);
        let woke = AtomicU64::new(0);
        let mut starts = Vec::with_capacity(iters as usize);
        let waker_thread = std::thread::current();
        let ends = std::thread::scope(|s| {
            let looper = s.spawn(|| {
                let mut ends = Vec::with_capacity(iters as usize);
                for i in 1..=iters {
                    // Release/Acquire: hand-offs between the two threads.
                    armed.store(i, Ordering::Release);
                    loop {
                        sleep();
                        if sent.load(Ordering::Acquire) >= i {
                            break;
                        }
                    }
                    ends.push(Instant::now());
                    woke.store(i, Ordering::Release);
                    waker_thread.unpark();
                }
                ends
            });
            for i in 1..=iters {
                while armed.load(Ordering::Acquire) < i {
                    std::hint::spin_loop();
                }
                std::thread::sleep(Duration::from_micros(50));
                starts.push(Instant::now());
                sent.store(i, Ordering::Release);
                wake();
                // Parked, not spinning: a spinning waker could hold the
                // very CPU the woken loop thread is queued on.
                while woke.load(Ordering::Acquire) < i {
                    std::thread::park();
                }
            }
            looper.join().expect("loop thread")
        });
        let mut sum = Duration::ZERO;
        for (s, e) in starts.iter().zip(&ends) {
            let d = e.duration_since(*s);
            out.push(d);
            sum += d;
        }
        sum
    }

    /// The `q` quantile (0..=1) of `v`, which it sorts.
    pub fn quantile(v: &mut [Duration], q: f64) -> Duration {
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i.min(v.len() - 1)]
    }

    /// Where criterion keeps its results: `$CRITERION_HOME`, else
    /// `<target dir>/criterion` (`$CARGO_TARGET_DIR`, else three levels above
    /// the bench binary, `target/<profile>/deps/`).
    pub fn criterion_dir() -> Option<std::path::PathBuf> {
        if let Some(home) = std::env::var_os("CRITERION_HOME") {
            return Some(home.into());
        }
        if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
            let target = std::path::PathBuf::from(target);
            if target.is_relative() {
                return Some(std::env::current_dir().ok()?.join(target).join("criterion"));
            }
            return Some(target.join("criterion"));
        }
        let exe = std::env::current_exe().ok()?;
        Some(exe.parent()?.parent()?.parent()?.join("criterion"))
    }
}
