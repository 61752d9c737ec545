//! Timers on the built-in loop beside tokio's: 10,000 and 100,000 timers
//! registered then cancelled, and registered then fired, from the loop's
//! thread and from another thread.
//!
//! Group `timers`; ids `<impl>/<op>/<n>` with
//! - `<impl>`: `evnexus-uring` and `evnexus-epoll` (`Engine::builder()
//!   .backend(..)`: `timer_at` + `Timer::cancel`, the loop driven by
//!   `run_once`), `tokio` (`tokio::time::sleep_until` futures on a
//!   current-thread runtime);
//! - `<op>`: `register_cancel` (n timers with a far deadline registered,
//!   then all cancelled; evnexus then runs the loop once, which moves the
//!   queued registrations into its timer heap and drops the cancelled
//!   entries; tokio polls each `Sleep` once, which puts it in the wheel,
//!   then drops it, which takes it out), `register_fire` (n timers already
//!   due when registered, then the loop run until all have fired: evnexus
//!   calls `run_once(Some(0))` until n callbacks ran, tokio polls the
//!   pending `Sleep`s and yields to the driver until all are ready);
//!   `remote_register_cancel` and `remote_register_fire`: the same from
//!   another thread (below);
//! - `<n>`: how many timers are live at once.
//!
//! The time is per timer: a batch of n timers, divided by n (criterion's
//! iteration count is a count of timers, run in whole batches). Callbacks
//! are no-ops; tokio's `Sleep`s live in one pinned slice per batch (no box
//! per timer), and evnexus's handles in a vector allocated once.
//!
//! # From another thread
//!
//! `remote_register_cancel` and `remote_register_fire` do the same from
//! the bench thread while the loop runs on a thread of its own:
//!
//! - evnexus: `Engine::run` on the loop thread; the bench thread calls
//!   `timer_at` and `Timer::cancel`, so every registration travels through
//!   the loop's command queue and wake-up. A fired callback counts itself
//!   in a shared counter (a capture-less closure, as in the other rows).
//! - tokio: a current-thread runtime whose thread sits in `block_on`; the
//!   bench thread enters the runtime's `Handle` and makes and polls the
//!   `Sleep`s itself, as any thread holding a handle can, with a waker
//!   that unparks it; it polls the pending ones again until all are ready
//!   (as the loop-thread rows do). That is tokio's cheapest way in from another thread: no
//!   task is spawned per timer and no task is woken on the runtime (a
//!   spawned task per timer, or a multi-thread runtime's scheduling, would
//!   add costs evnexus does not pay); the registration takes the driver's
//!   lock and unparks the driver when it is the earliest deadline, and a
//!   dropped `Sleep` leaves the wheel under the same lock. A deadline the
//!   wheel has already passed fires at once on the registering thread, so
//!   in `remote_register_fire` part of a tokio batch never reaches the
//!   runtime thread, while every evnexus timer is fired by its loop.
//!   Every choice here is in tokio's favour.
//!
//! The batch ends when the loop has caught up: `remote_register_fire`
//! waits until all n timers have fired; `remote_register_cancel`
//! ends with one more timer, already due, and waits for it to fire, so
//! that the loop has taken in everything the batch handed it (evnexus's
//! loop drops the cancelled entries from its heap lazily, on its thread).

mod support;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use evnexus::{BackendKind, Engine, Timer};
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};
use tokio::time::Sleep;

const SIZES: [usize; 2] = [10_000, 100_000];

/// How long a batch may wait for the loop thread before the benchmark
/// calls it a hang.
const HANG: Duration = Duration::from_secs(20);

/// Runs whole batches of `n` timers until at least `iters` timers have
/// been run; `batch` returns one batch's time. Returns the time for `iters`
/// timers at the measured per-timer rate.
fn per_timer(iters: u64, n: usize, mut batch: impl FnMut() -> Duration) -> Duration {
    let batches = iters.div_ceil(n as u64).max(1);
    let total: Duration = (0..batches).map(|_| batch()).sum();
    total.mul_f64(iters as f64 / (batches * n as u64) as f64)
}

/// A deadline that has passed (by a millisecond, so tokio's
/// millisecond-rounded wheel also sees it due).
fn already_due() -> Instant {
    Instant::now()
        .checked_sub(Duration::from_millis(1))
        .unwrap_or_else(Instant::now)
}

fn evnexus_register_cancel(engine: &Engine, n: usize, handles: &mut Vec<Timer>) -> Duration {
    let far = support::far_future();
    let start = Instant::now();
    for _ in 0..n {
        handles.push(engine.timer_at(far, |_| {}).expect("timer_at"));
    }
    for t in handles.drain(..) {
        black_box(t.cancel());
    }
    engine.run_once(Some(Duration::ZERO)).expect("run_once");
    start.elapsed()
}

fn evnexus_register_fire(engine: &Engine, n: usize, handles: &mut Vec<Timer>) -> Duration {
    let start = Instant::now();
    let deadline = already_due();
    for _ in 0..n {
        handles.push(engine.timer_at(deadline, |_| {}).expect("timer_at"));
    }
    let mut fired = 0;
    while fired < n {
        fired += engine.run_once(Some(Duration::ZERO)).expect("run_once");
    }
    handles.clear();
    let elapsed = start.elapsed();
    assert_eq!(fired, n, "every timer fired exactly once");
    elapsed
}

fn bench_evnexus(c: &mut Criterion, name: &str, kind: BackendKind) {
    let engine = match Engine::builder().backend(kind).build() {
        Ok(e) => e,
        Err(e) => {
            println!("timers: skipping {name}: {e}");
            return;
        }
    };
    assert_eq!(engine.backend(), kind);
    let mut handles = Vec::with_capacity(SIZES[1]);
    // Correctness, outside any timing: a batch fires exactly n callbacks,
    // and a cancelled batch fires none.
    evnexus_register_cancel(&engine, 1000, &mut handles);
    assert_eq!(engine.run_once(Some(Duration::ZERO)).unwrap(), 0);
    evnexus_register_fire(&engine, 1000, &mut handles);
    assert_eq!(engine.stats().live(), 0);

    let mut group = c.benchmark_group("timers");
    for n in SIZES {
        group.bench_function(
            BenchmarkId::new(name, format!("register_cancel/{n}")),
            |b| {
                b.iter_custom(|iters| {
                    per_timer(iters, n, || {
                        evnexus_register_cancel(&engine, n, &mut handles)
                    })
                })
            },
        );
        group.bench_function(BenchmarkId::new(name, format!("register_fire/{n}")), |b| {
            b.iter_custom(|iters| {
                per_timer(iters, n, || evnexus_register_fire(&engine, n, &mut handles))
            })
        });
    }
    group.finish();
}

/// `n` sleeps until `deadline`, pinned in one slice.
fn sleeps(n: usize, deadline: Instant) -> Pin<Box<[Sleep]>> {
    let deadline = tokio::time::Instant::from_std(deadline);
    Box::into_pin(
        (0..n)
            .map(|_| tokio::time::sleep_until(deadline))
            .collect::<Box<[Sleep]>>(),
    )
}

/// Polls sleep `i` of the pinned slice.
fn poll_sleep(
    sleeps: &mut Pin<Box<[Sleep]>>,
    i: usize,
    cx: &mut std::task::Context<'_>,
) -> Poll<()> {
    // SAFETY: the slice is pinned in its box: its elements are never moved
    // (the box is neither reallocated nor moved out of) until it is dropped
    // in place, so pinning an element is sound (structural pinning).
    let sleep = unsafe { sleeps.as_mut().map_unchecked_mut(|s| &mut s[i]) };
    sleep.poll(cx)
}

async fn tokio_register_cancel(n: usize) -> Duration {
    let far = support::far_future();
    let start = Instant::now();
    let mut sleeps = sleeps(n, far);
    std::future::poll_fn(|cx| {
        for i in 0..n {
            // Polled once: registered in the wheel, pending.
            black_box(poll_sleep(&mut sleeps, i, cx).is_pending());
        }
        Poll::Ready(())
    })
    .await;
    drop(sleeps);
    start.elapsed()
}

async fn tokio_register_fire(n: usize, done: &mut Vec<bool>) -> Duration {
    let start = Instant::now();
    let mut sleeps = sleeps(n, already_due());
    done.clear();
    done.resize(n, false);
    let mut pending = n;
    loop {
        std::future::poll_fn(|cx| {
            for (i, d) in done.iter_mut().enumerate() {
                if !*d && poll_sleep(&mut sleeps, i, cx).is_ready() {
                    *d = true;
                    pending -= 1;
                }
            }
            Poll::Ready(())
        })
        .await;
        if pending == 0 {
            break;
        }
        // Let the driver turn: it fires what is due.
        tokio::task::yield_now().await;
    }
    drop(sleeps);
    start.elapsed()
}

fn bench_tokio(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let mut done = Vec::with_capacity(SIZES[1]);
    // Outside the timing: a batch of due sleeps does complete. (The budget
    // of tokio's cooperative scheduling is lifted: a batch polls thousands
    // of sleeps in one task poll, as a loop with that many timers would.)
    rt.block_on(tokio::task::unconstrained(tokio_register_fire(
        1000, &mut done,
    )));
    assert!(done.iter().all(|d| *d));

    let mut group = c.benchmark_group("timers");
    for n in SIZES {
        group.bench_function(
            BenchmarkId::new("tokio", format!("register_cancel/{n}")),
            |b| {
                b.iter_custom(|iters| {
                    per_timer(iters, n, || {
                        rt.block_on(tokio::task::unconstrained(tokio_register_cancel(n)))
                    })
                })
            },
        );
        group.bench_function(
            BenchmarkId::new("tokio", format!("register_fire/{n}")),
            |b| {
                b.iter_custom(|iters| {
                    per_timer(iters, n, || {
                        rt.block_on(tokio::task::unconstrained(tokio_register_fire(
                            n, &mut done,
                        )))
                    })
                })
            },
        );
    }
    group.finish();
}

// ---------------------------------------------------------------------------
// From another thread

/// The fired evnexus callbacks of the current batch, and the thread that
/// waits for them. SeqCst throughout: per timer one `fetch_add` and one
/// load, the same instructions on x86 as with AcqRel and Acquire, and no
/// weaker ordering to argue for.
struct Completion {
    fired: AtomicUsize,
    target: AtomicUsize,
    waiter: Mutex<Option<Thread>>,
}

static DONE: Completion = Completion {
    fired: AtomicUsize::new(0),
    target: AtomicUsize::new(usize::MAX),
    waiter: Mutex::new(None),
};

impl Completion {
    /// A batch of `target` begins; the calling thread will wait for it.
    fn start(&self, target: usize) {
        *self.waiter.lock().unwrap() = Some(std::thread::current());
        self.fired.store(0, Ordering::SeqCst);
        self.target.store(target, Ordering::SeqCst);
    }

    /// `k` more fired; the one that completes the batch unparks the waiter.
    fn hit(&self, k: usize) {
        if self.fired.fetch_add(k, Ordering::SeqCst) + k == self.target.load(Ordering::SeqCst) {
            if let Some(t) = &*self.waiter.lock().unwrap() {
                t.unpark();
            }
        }
    }

    /// Waits until `target` fired; panics after [`HANG`].
    fn wait(&self, who: &str) {
        let target = self.target.load(Ordering::SeqCst);
        let deadline = Instant::now() + HANG;
        loop {
            let fired = self.fired.load(Ordering::SeqCst);
            if fired >= target {
                assert_eq!(fired, target, "{who}: more fired than registered");
                return;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "{who}: {fired} of {target} timers fired in {HANG:?}"
            );
            std::thread::park_timeout(deadline - now);
        }
    }
}

/// The tokio waker of the bench thread: it unparks it, which then polls
/// its pending `Sleep`s again. (Counting the wake-ups instead would not
/// do: a `Sleep` may be woken and also be ready at its next poll.)
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Stops an engine's `run` when dropped (also when the bench panics, so
/// the scope that joins the loop thread does not hang).
struct StopOnDrop<'a>(&'a Engine);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

fn evnexus_sentinel(engine: &Engine, who: &str) {
    DONE.start(1);
    let t = engine
        .timer_at(already_due(), |_| DONE.hit(1))
        .expect("timer_at");
    DONE.wait(who);
    drop(t);
}

fn evnexus_remote_cancel(engine: &Engine, n: usize, handles: &mut Vec<Timer>) -> Duration {
    let far = support::far_future();
    let start = Instant::now();
    for _ in 0..n {
        handles.push(engine.timer_at(far, |_| {}).expect("timer_at"));
    }
    for t in handles.drain(..) {
        black_box(t.cancel());
    }
    evnexus_sentinel(engine, "evnexus remote_register_cancel");
    start.elapsed()
}

fn evnexus_remote_fire(engine: &Engine, n: usize, handles: &mut Vec<Timer>) -> Duration {
    DONE.start(n);
    let start = Instant::now();
    let deadline = already_due();
    for _ in 0..n {
        handles.push(
            engine
                .timer_at(deadline, |_| DONE.hit(1))
                .expect("timer_at"),
        );
    }
    DONE.wait("evnexus remote_register_fire");
    handles.clear();
    start.elapsed()
}

fn bench_evnexus_remote(c: &mut Criterion, name: &str, kind: BackendKind) {
    let engine = match Engine::builder().backend(kind).build() {
        Ok(e) => e,
        Err(e) => {
            println!("timers: skipping remote {name}: {e}");
            return;
        }
    };
    let mut handles = Vec::with_capacity(SIZES[1]);
    std::thread::scope(|s| {
        let looper = s.spawn(|| engine.run());
        {
            let _stop = StopOnDrop(&engine);
            // Correctness, outside any timing: a cancelled batch fires
            // nothing (only the sentinel), a due batch fires exactly n.
            let before = engine.stats().dispatched;
            evnexus_remote_cancel(&engine, 1000, &mut handles);
            assert_eq!(engine.stats().dispatched, before + 1);
            evnexus_remote_fire(&engine, 1000, &mut handles);
            assert_eq!(engine.stats().dispatched, before + 1001);

            let mut group = c.benchmark_group("timers");
            for n in SIZES {
                group.bench_function(
                    BenchmarkId::new(name, format!("remote_register_cancel/{n}")),
                    |b| {
                        b.iter_custom(|iters| {
                            per_timer(iters, n, || evnexus_remote_cancel(&engine, n, &mut handles))
                        })
                    },
                );
                group.bench_function(
                    BenchmarkId::new(name, format!("remote_register_fire/{n}")),
                    |b| {
                        b.iter_custom(|iters| {
                            per_timer(iters, n, || evnexus_remote_fire(&engine, n, &mut handles))
                        })
                    },
                );
            }
            group.finish();
        }
        looper.join().expect("loop thread").expect("Engine::run");
    });
    assert_eq!(engine.stats().live(), 0);
}

/// Resolves once [`TokioLoop::stop`] was called: what the runtime thread's
/// `block_on` waits for.
#[derive(Default)]
struct StopSignal {
    stopped: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl StopSignal {
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }

    async fn stopped(&self) {
        std::future::poll_fn(|cx| {
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.stopped.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// Stops the runtime thread's `block_on` when dropped.
struct SignalOnDrop<'a>(&'a StopSignal);

impl Drop for SignalOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Polls the sleeps not yet `done` until all are ready, parking in
/// between (the waker unparks this thread).
fn tokio_poll_all(
    sleeps: &mut Pin<Box<[Sleep]>>,
    done: &mut [bool],
    cx: &mut Context<'_>,
    who: &str,
) {
    let deadline = Instant::now() + HANG;
    let mut left = done.iter().filter(|d| !**d).count();
    loop {
        for (i, d) in done.iter_mut().enumerate() {
            if !*d && poll_sleep(sleeps, i, cx).is_ready() {
                *d = true;
                left -= 1;
            }
        }
        if left == 0 {
            return;
        }
        let now = Instant::now();
        assert!(
            now < deadline,
            "{who}: {left} sleeps pending after {HANG:?}"
        );
        std::thread::park_timeout(deadline - now);
    }
}

/// Runs on the bench thread, inside the runtime's `Handle::enter`.
fn tokio_remote_cancel(n: usize, cx: &mut Context<'_>) -> Duration {
    let far = support::far_future();
    let start = Instant::now();
    let mut batch = sleeps(n, far);
    for i in 0..n {
        // Polled once: registered in the wheel, pending.
        black_box(poll_sleep(&mut batch, i, cx).is_pending());
    }
    drop(batch);
    // The sentinel: one more, already due, polled until it is ready.
    let mut sentinel = sleeps(1, already_due());
    tokio_poll_all(
        &mut sentinel,
        &mut [false],
        cx,
        "tokio remote_register_cancel",
    );
    start.elapsed()
}

/// Runs on the bench thread, inside the runtime's `Handle::enter`. A sleep
/// is ready at its first poll when the wheel had passed its deadline (it
/// was fired inline); the others are fired by the driver on the runtime's
/// thread, whose wake-up unparks this one.
fn tokio_remote_fire(n: usize, done: &mut Vec<bool>, cx: &mut Context<'_>) -> Duration {
    let start = Instant::now();
    let mut batch = sleeps(n, already_due());
    done.clear();
    done.resize(n, false);
    tokio_poll_all(&mut batch, done, cx, "tokio remote_register_fire");
    drop(batch);
    start.elapsed()
}

fn bench_tokio_remote(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let handle = rt.handle().clone();
    let signal = StopSignal::default();
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut done = Vec::with_capacity(SIZES[1]);
    std::thread::scope(|s| {
        let looper = s.spawn(|| rt.block_on(signal.stopped()));
        {
            let _stop = SignalOnDrop(&signal);
            let _entered = handle.enter();
            // Correctness, outside any timing: a batch of due sleeps
            // completes.
            tokio_remote_cancel(1000, &mut cx);
            tokio_remote_fire(1000, &mut done, &mut cx);
            assert!(done.iter().all(|d| *d));

            let mut group = c.benchmark_group("timers");
            for n in SIZES {
                group.bench_function(
                    BenchmarkId::new("tokio", format!("remote_register_cancel/{n}")),
                    |b| {
                        b.iter_custom(|iters| {
                            per_timer(iters, n, || tokio_remote_cancel(n, &mut cx))
                        })
                    },
                );
                group.bench_function(
                    BenchmarkId::new("tokio", format!("remote_register_fire/{n}")),
                    |b| {
                        b.iter_custom(|iters| {
                            per_timer(iters, n, || tokio_remote_fire(n, &mut done, &mut cx))
                        })
                    },
                );
            }
            group.finish();
        }
        looper.join().expect("runtime thread");
    });
}

fn timers(c: &mut Criterion) {
    bench_evnexus(c, "evnexus-uring", BackendKind::Uring);
    bench_evnexus(c, "evnexus-epoll", BackendKind::Epoll);
    bench_tokio(c);
    bench_evnexus_remote(c, "evnexus-uring", BackendKind::Uring);
    bench_evnexus_remote(c, "evnexus-epoll", BackendKind::Epoll);
    bench_tokio_remote(c);
}

criterion_group! {
    name = benches;
    config = support::criterion()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    targets = timers
}
criterion_main!(benches);
