//! Reporting events: `occurred_fd` and `occurred_timeout` for live and stale
//! tokens, on 1 and 2 delivering threads, against a model of libxl's design.
//!
//! Group `occurred`; ids `<impl>/<op>/<mode>` with
//! - `<impl>`: `evnexus` (hooks engine, no-op hooks, no fd re-check),
//!   `evnexus-recheck` (the same with `Builder::recheck_fds(true)`: one
//!   `poll(fd, 0)` per fd event, fd ops only), `evnexus-handle` (the
//!   `evnexus` engine built with `Engine::with_hooks_fn`, every report
//!   through `EngineHandle::occurred_*`: a weak reference upgraded and
//!   released per report), `libxl-model` (global ctx
//!   lock, never-freed nexus pool, `poll(fd, 0)` re-check, callback under
//!   the lock: see `support::LibxlModel`);
//! - `<op>`: `fd_live` (a readable socketpair end, its watch live),
//!   `fd_stale` (the watch was deregistered), `timeout_live` (the timeout
//!   is delivered once; registrations are made outside the timed region,
//!   in chunks of 512), `timeout_stale` (the timer was cancelled);
//! - `<mode>`: `1t`; `2t-shared`, two threads reporting the same token (a
//!   contended registration: for `fd_live` one thread runs the callback and
//!   the other's event is folded into a rerun; for `timeout_live` one
//!   thread fires it and the other's report is stale); `2t-own`, each
//!   thread reporting its own registration's token.
//!
//! Callbacks are no-ops. The time is per report, per thread (see
//! `support`).

mod support;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use evnexus::{
    Engine, EngineHandle, FdWatch, Interest, Occurred, Readiness, StaleReason, Timer, Token,
};
use std::hint::black_box;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{run_threads, timed, LibxlModel, LibxlOutcome, NoHooks};

/// Timeouts registered (untimed) before each timed run of deliveries.
const CHUNK: usize = 512;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Dispatched,
    Deferred,
    Suppressed,
    Stale,
}

/// One implementation: its registrations for the fd ops (one per thread,
/// live and stale) and its timeouts.
trait Reporter: Sync {
    /// What keeps a timeout registered until it is delivered.
    type Handle: Send;
    /// Live fd registration of thread `t` (0 or 1): token and fd.
    fn fd_live(&self, t: usize) -> (u64, RawFd);
    /// Deregistered fd registration of thread `t`: token and fd.
    fn fd_stale(&self, t: usize) -> (u64, RawFd);
    fn occurred_fd(&self, token: u64, fd: RawFd) -> Outcome;
    fn register_timeout(&self) -> (u64, Self::Handle);
    /// Cancelled timeout of thread `t`.
    fn timeout_stale(&self, t: usize) -> u64;
    fn occurred_timeout(&self, token: u64) -> Outcome;
}

/// Socket pairs: per thread, one for the live watch and one for the stale.
struct Fds {
    live: [(UnixStream, UnixStream); 2],
    stale: [(UnixStream, UnixStream); 2],
}

impl Fds {
    fn new() -> Fds {
        let p = support::readable_pair;
        Fds {
            live: [p(), p()],
            stale: [p(), p()],
        }
    }
}

/// How an [`Evnexus`] reporter reaches its engine. A type parameter, not a
/// branch in each report: each row times its own path and nothing else.
trait Route: Sync {
    fn occurred_fd(&self, engine: &Engine, token: Token, fd: RawFd) -> evnexus::Result<Occurred>;
    fn occurred_timeout(&self, engine: &Engine, token: Token) -> evnexus::Result<Occurred>;
}

/// Straight to `Engine::occurred_*`.
struct Direct;

impl Route for Direct {
    #[inline]
    fn occurred_fd(&self, engine: &Engine, token: Token, fd: RawFd) -> evnexus::Result<Occurred> {
        engine.occurred_fd(token, fd, Readiness::READABLE)
    }
    #[inline]
    fn occurred_timeout(&self, engine: &Engine, token: Token) -> evnexus::Result<Occurred> {
        engine.occurred_timeout(token)
    }
}

/// Through the `EngineHandle` the hooks were given.
struct ViaHandle(EngineHandle);

impl Route for ViaHandle {
    #[inline]
    fn occurred_fd(&self, _: &Engine, token: Token, fd: RawFd) -> evnexus::Result<Occurred> {
        self.0.occurred_fd(token, fd, Readiness::READABLE)
    }
    #[inline]
    fn occurred_timeout(&self, _: &Engine, token: Token) -> evnexus::Result<Occurred> {
        self.0.occurred_timeout(token)
    }
}

struct Evnexus<R> {
    engine: Engine,
    route: R,
    fds: Fds,
    _watches: Vec<FdWatch>,
    live: [u64; 2],
    stale: [u64; 2],
    stale_timers: [u64; 2],
    far: Instant,
}

impl Evnexus<Direct> {
    fn new(recheck: bool) -> Evnexus<Direct> {
        let engine = Engine::builder()
            .hooks(NoHooks)
            .recheck_fds(recheck)
            .build()
            .expect("hooks engine");
        Evnexus::with(engine, Direct)
    }
}

impl Evnexus<ViaHandle> {
    /// Hooks that get a handle; every report goes through it.
    fn via_handle() -> Evnexus<ViaHandle> {
        let (tx, rx) = std::sync::mpsc::channel();
        let engine = Engine::builder()
            .hooks_with(move |handle| {
                tx.send(handle).expect("the handle");
                NoHooks
            })
            .build()
            .expect("hooks engine");
        Evnexus::with(engine, ViaHandle(rx.recv().expect("the handle")))
    }
}

impl<R: Route> Evnexus<R> {
    fn with(engine: Engine, route: R) -> Evnexus<R> {
        let fds = Fds::new();
        let far = support::far_future();
        let watch = |fd: RawFd| {
            engine
                .register_fd(fd, Interest::READABLE, |_| {})
                .expect("register_fd")
        };
        let watches: Vec<FdWatch> = fds.live.iter().map(|p| watch(p.0.as_raw_fd())).collect();
        let live = [watches[0].token().as_u64(), watches[1].token().as_u64()];
        // Registered after the live watches, then ended: their slots are
        // free (at the next generation), not reused.
        let stale = fds.stale.each_ref().map(|p| {
            let w = watch(p.0.as_raw_fd());
            let token = w.token().as_u64();
            assert!(w.deregister());
            token
        });
        let stale_timers = [0, 1].map(|_| {
            let t = engine.timer_at(far, |_| {}).expect("timer_at");
            let token = t.token().as_u64();
            assert!(t.cancel());
            token
        });
        Evnexus {
            engine,
            route,
            fds,
            _watches: watches,
            live,
            stale,
            stale_timers,
            far,
        }
    }
}

fn outcome(r: evnexus::Result<Occurred>) -> Outcome {
    match r {
        Ok(Occurred::Dispatched) => Outcome::Dispatched,
        Ok(Occurred::Deferred) => Outcome::Deferred,
        Ok(Occurred::Suppressed) => Outcome::Suppressed,
        Ok(Occurred::Stale(_)) => Outcome::Stale,
        Err(e) => panic!("occurred: {e}"),
    }
}

impl<R: Route> Reporter for Evnexus<R> {
    type Handle = Timer;
    fn fd_live(&self, t: usize) -> (u64, RawFd) {
        (self.live[t], self.fds.live[t].0.as_raw_fd())
    }
    fn fd_stale(&self, t: usize) -> (u64, RawFd) {
        (self.stale[t], self.fds.stale[t].0.as_raw_fd())
    }
    #[inline]
    fn occurred_fd(&self, token: u64, fd: RawFd) -> Outcome {
        outcome(
            self.route
                .occurred_fd(&self.engine, Token::from_u64(token), fd),
        )
    }
    fn register_timeout(&self) -> (u64, Timer) {
        let t = self.engine.timer_at(self.far, |_| {}).expect("timer_at");
        (t.token().as_u64(), t)
    }
    fn timeout_stale(&self, t: usize) -> u64 {
        self.stale_timers[t]
    }
    #[inline]
    fn occurred_timeout(&self, token: u64) -> Outcome {
        outcome(
            self.route
                .occurred_timeout(&self.engine, Token::from_u64(token)),
        )
    }
}

struct Libxl {
    model: LibxlModel,
    fds: Fds,
    live: [u64; 2],
    stale: [u64; 2],
    stale_timers: [u64; 2],
    far: Instant,
}

impl Libxl {
    fn new() -> Libxl {
        let model = LibxlModel::default();
        let fds = Fds::new();
        let far = support::far_future();
        let register = |fd: RawFd| model.fd_register(fd, libc::POLLIN, Box::new(|_, _| {}));
        let live = fds.live.each_ref().map(|p| register(p.0.as_raw_fd()));
        let stale = fds.stale.each_ref().map(|p| {
            let token = register(p.0.as_raw_fd());
            model.fd_deregister(token);
            token
        });
        let stale_timers = [0, 1].map(|_| {
            let token = model.timeout_register(far, Box::new(|| {}));
            model.timeout_deregister(token);
            token
        });
        Libxl {
            model,
            fds,
            live,
            stale,
            stale_timers,
            far,
        }
    }
}

fn libxl_outcome(o: LibxlOutcome) -> Outcome {
    match o {
        LibxlOutcome::Dispatched => Outcome::Dispatched,
        LibxlOutcome::Suppressed => Outcome::Suppressed,
        LibxlOutcome::Stale => Outcome::Stale,
    }
}

impl Reporter for Libxl {
    type Handle = ();
    fn fd_live(&self, t: usize) -> (u64, RawFd) {
        (self.live[t], self.fds.live[t].0.as_raw_fd())
    }
    fn fd_stale(&self, t: usize) -> (u64, RawFd) {
        (self.stale[t], self.fds.stale[t].0.as_raw_fd())
    }
    #[inline]
    fn occurred_fd(&self, token: u64, fd: RawFd) -> Outcome {
        libxl_outcome(self.model.occurred_fd(token, fd, libc::POLLIN))
    }
    fn register_timeout(&self) -> (u64, ()) {
        (self.model.timeout_register(self.far, Box::new(|| {})), ())
    }
    fn timeout_stale(&self, t: usize) -> u64 {
        self.stale_timers[t]
    }
    #[inline]
    fn occurred_timeout(&self, token: u64) -> Outcome {
        libxl_outcome(self.model.occurred_timeout(token))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    One,
    Shared,
    Own,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::One, Mode::Shared, Mode::Own];
    fn name(self) -> &'static str {
        match self {
            Mode::One => "1t",
            Mode::Shared => "2t-shared",
            Mode::Own => "2t-own",
        }
    }
    fn threads(self) -> usize {
        match self {
            Mode::One => 1,
            _ => 2,
        }
    }
    /// Whose registration thread `t` reports.
    fn owner(self, t: usize) -> usize {
        match self {
            Mode::Own => t,
            _ => 0,
        }
    }
}

/// Delivers `iters` fresh timeouts per thread, registering them (untimed)
/// in chunks; in `Shared` mode thread 0 registers and both deliver.
fn timeout_live<R: Reporter>(r: &R, mode: Mode, iters: u64) -> Duration {
    let shared: Vec<AtomicU64> = (0..CHUNK).map(|_| AtomicU64::new(0)).collect();
    run_threads(mode.threads(), iters, |t, iters, barrier| {
        let mut handles = Vec::with_capacity(CHUNK);
        let mut tokens = Vec::with_capacity(CHUNK);
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            // Both threads are done with the previous chunk.
            barrier.wait();
            handles.clear();
            tokens.clear();
            if mode != Mode::Shared || t == 0 {
                for slot in &shared[..n] {
                    let (token, h) = r.register_timeout();
                    handles.push(h);
                    tokens.push(token);
                    // Relaxed: the barrier below orders it for the reader.
                    slot.store(token, Ordering::Relaxed);
                }
            }
            barrier.wait();
            if mode == Mode::Shared && t != 0 {
                tokens.extend(shared[..n].iter().map(|a| a.load(Ordering::Relaxed)));
            }
            let start = Instant::now();
            for &token in &tokens {
                black_box(r.occurred_timeout(black_box(token)));
            }
            total += start.elapsed();
            left -= n as u64;
        }
        total
    })
}

/// Checks, outside any timing, that each op does what its name says.
fn check<R: Reporter>(r: &R, fd_live: Outcome) {
    for t in 0..2 {
        let (token, fd) = r.fd_live(t);
        assert_eq!(r.occurred_fd(token, fd), fd_live);
        let (token, fd) = r.fd_stale(t);
        assert_eq!(r.occurred_fd(token, fd), Outcome::Stale);
        assert_eq!(r.occurred_timeout(r.timeout_stale(t)), Outcome::Stale);
        let (token, h) = r.register_timeout();
        assert_eq!(r.occurred_timeout(token), Outcome::Dispatched);
        assert_eq!(r.occurred_timeout(token), Outcome::Stale);
        drop(h);
    }
}

fn bench_reporter<R: Reporter>(c: &mut Criterion, name: &str, r: &R, timeouts: bool) {
    check(r, Outcome::Dispatched);
    let mut group = c.benchmark_group("occurred");
    for mode in Mode::ALL {
        let id = |op: &str| BenchmarkId::new(name, format!("{op}/{}", mode.name()));
        group.bench_function(id("fd_live"), |b| {
            b.iter_custom(|iters| {
                run_threads(mode.threads(), iters, |t, iters, barrier| {
                    let (token, fd) = r.fd_live(mode.owner(t));
                    timed(barrier, iters, |_| {
                        black_box(r.occurred_fd(black_box(token), fd));
                    })
                })
            })
        });
        group.bench_function(id("fd_stale"), |b| {
            b.iter_custom(|iters| {
                run_threads(mode.threads(), iters, |t, iters, barrier| {
                    let (token, fd) = r.fd_stale(mode.owner(t));
                    timed(barrier, iters, |_| {
                        black_box(r.occurred_fd(black_box(token), fd));
                    })
                })
            })
        });
        if !timeouts {
            continue;
        }
        group.bench_function(id("timeout_live"), |b| {
            b.iter_custom(|iters| timeout_live(r, mode, iters))
        });
        group.bench_function(id("timeout_stale"), |b| {
            b.iter_custom(|iters| {
                run_threads(mode.threads(), iters, |t, iters, barrier| {
                    let token = r.timeout_stale(mode.owner(t));
                    timed(barrier, iters, |_| {
                        black_box(r.occurred_timeout(black_box(token)));
                    })
                })
            })
        });
    }
    group.finish();
    check(r, Outcome::Dispatched);
}

fn occurred(c: &mut Criterion) {
    let evnexus = Evnexus::new(false);
    {
        // Stale reports are counted by reason and never dispatched.
        let before = evnexus.engine.stats();
        let (token, fd) = evnexus.fd_stale(0);
        assert_eq!(
            evnexus
                .engine
                .occurred_fd(Token::from_u64(token), fd, Readiness::READABLE)
                .unwrap(),
            Occurred::Stale(StaleReason::Generation)
        );
        let after = evnexus.engine.stats();
        assert_eq!(after.stale.generation, before.stale.generation + 1);
        assert_eq!(after.dispatched, before.dispatched);
    }
    bench_reporter(c, "evnexus", &evnexus, true);
    drop(evnexus);
    bench_reporter(c, "evnexus-recheck", &Evnexus::new(true), false);
    bench_reporter(c, "evnexus-handle", &Evnexus::via_handle(), true);
    bench_reporter(c, "libxl-model", &Libxl::new(), true);
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = occurred
}
criterion_main!(benches);
