//! The engine's own loop beside epoll by hand, mio and tokio: cost per
//! event at 1, 64 and 1,024 watched fds. (Wake-up latency from another
//! thread: `benches/wakeup.rs`.)
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
//!   - `evnexus-uring-keep`, `evnexus-epoll-keep`: readiness kept in user
//!     space, `Interest::READABLE | Interest::KEEP_READY`, the callback
//!     written as tokio's is: it calls `FdEvent::clear_ready` only when a
//!     read finds the fd drained (never, in these shapes: a `ready` fd is
//!     never read, a `busy` pipe always holds its byte), so a watch still
//!     ready is dispatched again on the next turn without a system call.
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
//! Defaults (54 `loop` entries at 1 s warm-up + 4 s) keep
//! `cargo bench --bench loop` near five minutes on a two-core machine;
//! command-line flags override them.
//!
//! Correctness, checked outside the timed loops: before measuring, every
//! fd must have been dispatched; after, the per-fd counters must add up to
//! the events each loop reported dispatching (evnexus: also its own
//! `Stats::dispatched`, with no stale event), and in the busy shape every
//! pipe must still hold exactly one byte.

#[path = "support/loop_fixtures.rs"]
mod fixtures;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use evnexus::{BackendKind, Engine, FdWatch, Interest};
use fixtures::{Counts, Epoll, Fd, Fds, Shape, Signal};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    EvnexusUringKeep,
    EvnexusEpollKeep,
    RawEpollLt,
    RawEpollOneshot,
    Mio,
    Tokio,
}

const IMPLS: [Impl; 10] = [
    Impl::EvnexusUring,
    Impl::EvnexusEpoll,
    Impl::EvnexusUringEdge,
    Impl::EvnexusEpollEdge,
    Impl::EvnexusUringKeep,
    Impl::EvnexusEpollKeep,
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
            Impl::EvnexusUringKeep => "evnexus-uring-keep",
            Impl::EvnexusEpollKeep => "evnexus-epoll-keep",
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
            Impl::EvnexusUring => Box::new(Evnexus::new(fds, BackendKind::Uring, Mode::Level)),
            Impl::EvnexusEpoll => Box::new(Evnexus::new(fds, BackendKind::Epoll, Mode::Level)),
            Impl::EvnexusUringEdge => Box::new(Evnexus::new(fds, BackendKind::Uring, Mode::Edge)),
            Impl::EvnexusEpollEdge => Box::new(Evnexus::new(fds, BackendKind::Epoll, Mode::Edge)),
            Impl::EvnexusUringKeep => Box::new(Evnexus::new(fds, BackendKind::Uring, Mode::Keep)),
            Impl::EvnexusEpollKeep => Box::new(Evnexus::new(fds, BackendKind::Epoll, Mode::Keep)),
            Impl::RawEpollLt => Box::new(RawEpoll::new(fds, false)),
            Impl::RawEpollOneshot => Box::new(RawEpoll::new(fds, true)),
            Impl::Mio => Box::new(MioLoop::new(fds)),
            Impl::Tokio => Box::new(TokioLoop::new(fds)),
        }
    }
}

/// The work of one event on fd `i`, the same in every implementation.
#[inline(always)]
fn on_event(shape: Shape, r: i32, w: i32, counts: &Counts, i: usize) -> bool {
    let handled = Fds::on_event(shape, r, w);
    if handled {
        counts.bump(i);
    }
    handled
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

/// How an evnexus watch asks for its events.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Level,
    Edge,
    Keep,
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
    fn new(fds: Fds, kind: BackendKind, mode: Mode) -> Evnexus {
        let engine = Engine::builder().backend(kind).build().expect("engine");
        assert_eq!(engine.backend(), kind);
        let counts = Counts::new(fds.len());
        let interest = match mode {
            Mode::Level => Interest::READABLE,
            Mode::Edge => Interest::READABLE | Interest::EDGE,
            Mode::Keep => Interest::READABLE | Interest::KEEP_READY,
        };
        let shape = fds.shape;
        let watches = (0..fds.len())
            .map(|i| {
                let (r, w) = (fds.read[i], fds.write[i]);
                let counts = counts.clone();
                let watch = if mode == Mode::Keep {
                    engine.register_fd(r, interest, move |ev| {
                        if !on_event(shape, r, w, &counts, i) {
                            ev.clear_ready();
                        }
                    })
                } else {
                    engine.register_fd(r, interest, move |_| {
                        on_event(shape, r, w, &counts, i);
                    })
                };
                watch.expect("register_fd")
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

criterion_group!(benches, bench_loop);
criterion_main!(benches);
