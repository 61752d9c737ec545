//! Wake-up latency: another thread wakes a loop that sleeps with nothing
//! to do, and the time until the loop's wait has returned.
//!
//! Group `wakeup`; ids `<impl>`:
//! - `evnexus-uring`, `evnexus-epoll`: `Engine::run_once(None)` on the
//!   built-in loop (no timer, so no kernel timeout), woken by
//!   `Waker::wake`;
//! - `mio`: `Poll::poll(None)`, woken by `mio::Waker` (an eventfd in the
//!   set, edge-triggered, never read);
//! - `tokio`: `Runtime::block_on` (current thread) of a future woken
//!   through its `std::task::Waker`, which is what tokio's `Notify` and
//!   channels do (the `sync` feature is not enabled here);
//! - `raw-epoll`: a floor of system calls: `epoll_wait(-1)` on an eventfd
//!   registered level-triggered, written by the waker and read after each
//!   wake-up (the evnexus epoll loop watches its eventfd edge-triggered and
//!   does not read it, as mio does: one system call fewer than this).
//!
//! Group `wake_cycle`, same ids: the CPU cost of one wake-up without the
//! scheduler in it. One thread wakes the loop, then runs it; the wait
//! returns at once. Two system calls for evnexus and mio (the write, the
//! wait), three for `raw-epoll` (and the read).
//!
//! The harness (`fixtures::wake_latencies`): the loop thread (named
//! `wake-loop`, for `perf sched` and `strace`) announces it is about to
//! sleep; the waking thread gives it 50 µs to get there, takes the time,
//! wakes it, and parks until the loop thread has taken the time on its
//! side. Criterion reports the mean.
//!
//! # The quantiles: interleaved
//!
//! After the criterion entries, the p50, p90 and p99 come from a pass of
//! their own that interleaves the implementations: `ROUNDS` rounds of
//! `PER_ROUND` wake-ups each, the order rotated every round. On a shared,
//! loaded machine the tail of a wake-up is the time the woken thread waits
//! for a CPU (`perf sched timehist` shows the slow wake-ups are those whose
//! scheduling delay is as long), and that load drifts over seconds:
//! measured one implementation after another, as criterion does, the p99
//! of one implementation differs between runs by 4x and the order of the
//! implementations with it. Interleaved, drift hits every implementation
//! alike. The quantiles are printed and written to
//! `<criterion dir>/wakeup-latency.json`, for the implementations whose
//! criterion entry ran (criterion's filter applies).

#[path = "support/loop_fixtures.rs"]
mod fixtures;

use criterion::{criterion_group, criterion_main, Criterion};
use evnexus::{BackendKind, Engine};
use fixtures::{quantile, wake_latencies, Epoll, Signal};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

/// The interleaved pass: rounds, and wake-ups per implementation per round.
const ROUNDS: u64 = 50;
const PER_ROUND: u64 = 100;

const IMPLS: [&str; 5] = [
    "evnexus-uring",
    "evnexus-epoll",
    "mio",
    "tokio",
    "raw-epoll",
];

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

/// An epoll set with one eventfd, level-triggered.
struct RawSleeper {
    ep: Epoll,
    eventfd: Arc<OwnedFd>,
    buf: [libc::epoll_event; 8],
}

impl RawSleeper {
    fn new() -> RawSleeper {
        // SAFETY: eventfd takes no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh descriptor nothing else owns.
        let eventfd = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let ep = Epoll::new();
        ep.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32, 0);
        RawSleeper {
            ep,
            eventfd,
            buf: [libc::epoll_event { events: 0, u64: 0 }; 8],
        }
    }
}

impl Sleeper for RawSleeper {
    fn sleep(&mut self) {
        if self.ep.wait(&mut self.buf, -1) > 0 {
            let mut n = 0u64;
            // SAFETY: reads 8 bytes into the 8-byte `n`; EAGAIN is harmless.
            unsafe { libc::read(self.eventfd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
        }
    }
    fn waker(&self) -> WakeFn {
        let fd = Arc::clone(&self.eventfd);
        Box::new(move || {
            let one = 1u64;
            // SAFETY: writes the 8 bytes of `one`.
            unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        })
    }
}

fn sleeper(name: &str) -> Box<dyn Sleeper> {
    let engine = |kind| {
        let e = Engine::builder().backend(kind).build().expect("engine");
        assert_eq!(e.backend(), kind);
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
        "raw-epoll" => Box::new(RawSleeper::new()),
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
    let mut ran: Vec<(&str, Box<dyn Sleeper>, WakeFn)> = Vec::new();
    for name in IMPLS {
        let mut fixture: Option<(Box<dyn Sleeper>, WakeFn)> = None;
        group.bench_function(name, |b| {
            let (s, wake) = fixture.get_or_insert_with(|| {
                let s = sleeper(name);
                let w = s.waker();
                (s, w)
            });
            b.iter_custom(|iters| {
                let mut sleep = || s.sleep();
                wake_latencies(iters, &mut sleep, &**wake, &mut Vec::new())
            });
        });
        if let Some((s, w)) = fixture {
            ran.push((name, s, w));
        }
    }
    group.finish();
    interleaved(&mut ran);
}

/// The `wake_cycle` group (see the module doc).
fn bench_wake_cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("wake_cycle");
    for name in IMPLS {
        group.bench_function(name, |b| {
            let mut s = sleeper(name);
            let wake = s.waker();
            b.iter(|| {
                wake();
                s.sleep();
            });
        });
    }
    group.finish();
}

/// The quantiles, from rounds that take turns (see the module doc).
fn interleaved(ran: &mut [(&str, Box<dyn Sleeper>, WakeFn)]) {
    if ran.is_empty() {
        return;
    }
    let mut latencies: Vec<Vec<Duration>> = vec![Vec::new(); ran.len()];
    for round in 0..ROUNDS as usize {
        for k in 0..ran.len() {
            let i = (k + round) % ran.len();
            let (_, s, wake) = &mut ran[i];
            let mut sleep = || s.sleep();
            wake_latencies(PER_ROUND, &mut sleep, &**wake, &mut latencies[i]);
        }
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mut lines = Vec::new();
    for ((name, _, _), v) in ran.iter().zip(&mut latencies) {
        let n = v.len();
        let (p50, p90, p99) = (quantile(v, 0.50), quantile(v, 0.90), quantile(v, 0.99));
        println!(
            "wakeup/{name}: p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs ({n} wake-ups, interleaved)",
            us(p50),
            us(p90),
            us(p99)
        );
        lines.push(format!(
            "    \"{name}\": {{\"p50_ns\": {}, \"p90_ns\": {}, \"p99_ns\": {}, \"samples\": {n}}}",
            p50.as_nanos(),
            p90.as_nanos(),
            p99.as_nanos()
        ));
    }
    if let Some(dir) = fixtures::criterion_dir() {
        let _ = std::fs::create_dir_all(&dir);
        let json = format!(
            "{{\n  \"method\": \"interleaved: {ROUNDS} rounds of {PER_ROUND} wake-ups per implementation, order rotated\",\n  \"impls\": {{\n{}\n  }}\n}}\n",
            lines.join(",\n")
        );
        let _ = std::fs::write(dir.join("wakeup-latency.json"), json);
    }
}

criterion_group!(benches, bench_wakeup, bench_wake_cycle);
criterion_main!(benches);
