//! Timers on the built-in loop beside tokio's: 10,000 and 100,000 timers
//! registered then cancelled, and registered then fired.
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
//! - `<n>`: how many timers are live at once.
//!
//! The time is per timer: a batch of n timers, divided by n (criterion's
//! iteration count is a count of timers, run in whole batches). Callbacks
//! are no-ops; tokio's `Sleep`s live in one pinned slice per batch (no box
//! per timer), and evnexus's handles in a vector allocated once.

mod support;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use evnexus::{BackendKind, Engine, Timer};
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::time::Sleep;

const SIZES: [usize; 2] = [10_000, 100_000];

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

fn timers(c: &mut Criterion) {
    bench_evnexus(c, "evnexus-uring", BackendKind::Uring);
    bench_evnexus(c, "evnexus-epoll", BackendKind::Epoll);
    bench_tokio(c);
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
