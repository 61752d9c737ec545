//! `reports`: the application's reports (`occurred_fd`, `occurred_timeout`)
//! in a loop of one shape, for `perf/instructions.sh` and the other
//! scripts in `perf/`: the path that libxl's users take, with nothing else
//! in the process's loop.
//!
//! The engine runs on hooks that accept every registration and do nothing
//! (an application loop that is never run), so a report costs only the
//! engine's own work. Shapes (`--shape`):
//!
//! - `fd_live`: one fd watch, reported ready `--reports` times; each report
//!   runs its (empty) callback.
//! - `fd_stale`: the same watch deregistered first; every report is stale.
//! - `timeout_stale`: a timer dropped first; every report is stale.
//! - `timeout_live`: `--reports` times a timer is registered (an hour out),
//!   reported fired, and dropped: one live delivery each, with its
//!   registration and teardown in the count.
//! - `register`: no report, `--reports` registrations: a timer an hour
//!   out (`timer_at`) and its `cancel`, the `arena` bench's
//!   `evnexus-engine` `insert_remove` row. (Not the handle-less
//!   `timer_at_detached`: the drivers must build against older commits
//!   for `perf/instructions.sh --rev`, and that call is newer.)
//!
//! Two shapes time the built-in loop's timers instead (an engine on the
//! epoll loop, driven by `run_once` on this thread, as the `timers`
//! bench's loop-thread rows), in batches of [`BATCH`] timers registered
//! outside `run_once`, so each is handed over to the loop:
//!
//! - `loop_fire`: a batch already due, then `run_once` until every one has
//!   fired: registration, hand-over, the loop's intake, its due pop and
//!   the firing, per timer.
//! - `loop_cancel`: a batch an hour out, each cancelled, then one
//!   `run_once`: registration, hand-over, cancel, and the loop's intake and
//!   compaction of the cancelled entries, per timer.
//!
//! One shape times a hand-over between two threads, for `perf/record.sh`
//! and for timing (its instruction count moves with the threads'
//! interleaving, so `perf/instructions.sh` leaves it out):
//!
//! - `remote_fire`: the `timers` bench's `remote_register_fire` row without
//!   criterion: the epoll loop runs (`Engine::run`) on a thread of its own,
//!   this thread registers batches of timers already due and waits for
//!   each batch to fire. With two or more CPUs the two threads are pinned
//!   to CPUs 0 and 1, so the scheduler's moves stay out of the figure. The
//!   result line adds `ns_per_timer`, the wall time per timer.
//!
//! Run: `cargo run --release --example reports -- --shape fd_stale`.

use evnexus::{BackendKind, Engine, Interest, Occurred, Readiness, StaleReason, Timer};
use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[path = "support/cli.rs"]
mod cli;
// The tests' hooks that take every registration and keep nothing: an
// application loop that is never run.
#[path = "../tests/common/no_hooks.rs"]
mod no_hooks;
use no_hooks::NoHooks;

const USAGE: &str = "\
usage: reports [--shape fd_live|fd_stale|timeout_live|timeout_stale|register|
                        loop_fire|loop_cancel|remote_fire] [--reports N]

Makes --reports reports of one shape to an engine on hooks that do
nothing, then prints one `result ...` line of key=value pairs for scripts:
the shape, the reports made, how many dispatched and how many were stale.
Exits 1 if a report's outcome is not the shape's.

options:
  --shape S     fd_live: reports on a live fd watch (each dispatches);
                fd_stale: reports on a deregistered fd watch;
                timeout_stale: reports on a dropped timer;
                timeout_live: register a timer, report it, drop it;
                register: register a timer and cancel it (no
                report);
                loop_fire: on the epoll loop, a batch of timers
                already due registered, then fired by run_once;
                loop_cancel: on the epoll loop, a batch of timers
                registered and cancelled, then one run_once;
                remote_fire: batches of timers already due handed to
                the epoll loop running on another thread, each batch
                waited for (prints ns_per_timer)                [fd_stale]
  --reports N   reports to make                                 [1000000]
  -h, --help    print this help

exit status: 0 done; 1 an outcome other than the shape's, or an engine
error; 2 bad usage.";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Shape {
    FdLive,
    FdStale,
    TimeoutLive,
    TimeoutStale,
    Register,
    LoopFire,
    LoopCancel,
    RemoteFire,
}

/// Timers per batch of the `loop_*` shapes: `--reports` is rounded up to
/// whole batches.
const BATCH: u64 = 1_000;

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::FdLive => "fd_live",
            Shape::FdStale => "fd_stale",
            Shape::TimeoutLive => "timeout_live",
            Shape::TimeoutStale => "timeout_stale",
            Shape::Register => "register",
            Shape::LoopFire => "loop_fire",
            Shape::LoopCancel => "loop_cancel",
            Shape::RemoteFire => "remote_fire",
        }
    }

    /// What every report of this shape must return (`register`,
    /// `loop_cancel`: what `cancel` returning `true` stands for;
    /// `loop_fire`: a timer fired).
    fn expected(self) -> Occurred {
        match self {
            Shape::FdLive
            | Shape::TimeoutLive
            | Shape::Register
            | Shape::LoopFire
            | Shape::LoopCancel
            | Shape::RemoteFire => Occurred::Dispatched,
            Shape::FdStale | Shape::TimeoutStale => Occurred::Stale(StaleReason::Generation),
        }
    }
}

fn parse_args() -> Result<(Shape, u64), String> {
    let mut shape = Shape::FdStale;
    let mut reports = 1_000_000u64;
    let mut flags = cli::Flags::new(USAGE);
    while let Some((flag, inline)) = flags.next_flag() {
        match flag.as_str() {
            "--shape" => {
                shape = match flags.value("--shape", inline)?.as_str() {
                    "fd_live" => Shape::FdLive,
                    "fd_stale" => Shape::FdStale,
                    "timeout_live" => Shape::TimeoutLive,
                    "timeout_stale" => Shape::TimeoutStale,
                    "register" => Shape::Register,
                    "loop_fire" => Shape::LoopFire,
                    "loop_cancel" => Shape::LoopCancel,
                    "remote_fire" => Shape::RemoteFire,
                    other => return Err(format!("unknown shape {other:?}")),
                }
            }
            "--reports" => reports = cli::number(&flags.value("--reports", inline)?)?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((shape, reports))
}

/// Makes the reports; returns how many came back as the shape expects
/// (and the count made, rounded up to whole batches for `loop_*`).
fn run(shape: Shape, reports: u64) -> Result<(u64, u64), String> {
    let engine = Engine::with_hooks(NoHooks);
    let err = |e: evnexus::Error| e.to_string();
    let want = shape.expected();
    let mut as_expected = 0u64;
    let mut tally = |o: Occurred| as_expected += u64::from(o == want);
    match shape {
        Shape::LoopFire | Shape::LoopCancel => return run_loop_timers(shape, reports),
        Shape::RemoteFire => return run_remote_fire(reports),
        Shape::FdLive | Shape::FdStale => {
            let (sock, _peer) =
                std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
            let fd = sock.as_raw_fd();
            let watch = engine
                .register_fd(fd, Interest::READABLE, |_| {})
                .map_err(err)?;
            let token = watch.token();
            if shape == Shape::FdStale {
                drop(watch);
            }
            for _ in 0..reports {
                tally(
                    engine
                        .occurred_fd(black_box(token), fd, Readiness::READABLE)
                        .map_err(err)?,
                );
            }
        }
        Shape::TimeoutStale => {
            let far = Instant::now() + Duration::from_secs(3600);
            let token = engine.timer_at(far, |_| {}).map_err(err)?.token();
            for _ in 0..reports {
                tally(engine.occurred_timeout(black_box(token)).map_err(err)?);
            }
        }
        Shape::TimeoutLive => {
            let far = Instant::now() + Duration::from_secs(3600);
            for _ in 0..reports {
                let timer = engine.timer_at(far, |_| {}).map_err(err)?;
                tally(
                    engine
                        .occurred_timeout(black_box(timer.token()))
                        .map_err(err)?,
                );
            }
        }
        Shape::Register => {
            let far = Instant::now() + Duration::from_secs(3600);
            for _ in 0..reports {
                let timer = engine.timer_at(far, |_| {}).map_err(err)?;
                if black_box(timer).cancel() {
                    tally(Occurred::Dispatched);
                }
            }
        }
    }
    let stats = engine.stats();
    println!(
        "result shape={} reports={reports} as_expected={as_expected} dispatched={} stale={}",
        shape.name(),
        stats.dispatched,
        stats.stale.total()
    );
    Ok((as_expected, reports))
}

/// An engine on the built-in epoll loop, for the `loop_*` and `remote_*`
/// shapes.
fn epoll_engine() -> Result<Engine, String> {
    Engine::builder()
        .backend(BackendKind::Epoll)
        .build()
        .map_err(|e| e.to_string())
}

/// The `loop_*` shapes: batches of timers on the epoll loop.
fn run_loop_timers(shape: Shape, reports: u64) -> Result<(u64, u64), String> {
    let err = |e: evnexus::Error| e.to_string();
    let engine = epoll_engine()?;
    let batches = reports.div_ceil(BATCH);
    let mut timers: Vec<Timer> = Vec::with_capacity(BATCH as usize);
    let mut as_expected = 0u64;
    for _ in 0..batches {
        if shape == Shape::LoopFire {
            let target = engine.stats().dispatched + BATCH;
            let due = Instant::now();
            for _ in 0..BATCH {
                timers.push(engine.timer_at(due, |_| {}).map_err(err)?);
            }
            // The handles of fired timers are dropped after the batch. Due
            // timers all fire in the first turn; a few more turns are
            // slack, a thousand a bug.
            let mut turns = 0;
            while engine.stats().dispatched < target {
                turns += 1;
                if turns > 1_000 {
                    return Err("due timers did not fire in 1,000 turns".into());
                }
                engine.run_once(Some(Duration::ZERO)).map_err(err)?;
            }
            as_expected += BATCH;
            timers.clear();
        } else {
            let far = Instant::now() + Duration::from_secs(3600);
            for _ in 0..BATCH {
                timers.push(engine.timer_at(far, |_| {}).map_err(err)?);
            }
            for timer in timers.drain(..) {
                as_expected += u64::from(black_box(timer).cancel());
            }
            engine.run_once(Some(Duration::ZERO)).map_err(err)?;
        }
    }
    let stats = engine.stats();
    let made = batches * BATCH;
    println!(
        "result shape={} reports={made} as_expected={as_expected} dispatched={} stale={}",
        shape.name(),
        stats.dispatched,
        stats.stale.total()
    );
    Ok((as_expected, made))
}

/// Pins the calling thread to `cpu` when the machine has more than one
/// (best effort: a refused pin leaves the thread where it is).
fn pin_to(cpu: usize) {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return;
    }
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it
    // (cpu < 2 < CPU_SETSIZE); sched_setaffinity reads that many bytes.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The `remote_fire` shape: batches of due timers from this thread to the
/// epoll loop running on another.
fn run_remote_fire(reports: u64) -> Result<(u64, u64), String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static BATCHES_FIRED: AtomicU64 = AtomicU64::new(0);
    let err = |e: evnexus::Error| e.to_string();
    let engine = epoll_engine()?;
    let batches = reports.div_ceil(BATCH);
    let made = batches * BATCH;
    let (elapsed, looped) = std::thread::scope(|s| {
        let looper = s.spawn(|| {
            pin_to(1);
            engine.run()
        });
        pin_to(0);
        let start = Instant::now();
        let r = (|| {
            let mut timers: Vec<Timer> = Vec::with_capacity(BATCH as usize);
            for b in 1..=batches {
                let due = Instant::now();
                for _ in 1..BATCH {
                    timers.push(engine.timer_at(due, |_| {}).map_err(err)?);
                }
                // Ties fire in registration order: the batch's last timer
                // fires last, and alone writes the line this thread polls.
                timers.push(
                    engine
                        .timer_at(due, move |_| BATCHES_FIRED.store(b, Ordering::Release))
                        .map_err(err)?,
                );
                let waited = Instant::now();
                while BATCHES_FIRED.load(Ordering::Acquire) < b {
                    if waited.elapsed() > Duration::from_secs(10) {
                        return Err("a batch did not fire in 10 s".to_string());
                    }
                    std::hint::spin_loop();
                }
                timers.clear();
            }
            Ok(())
        })();
        let elapsed = start.elapsed();
        engine.stop();
        (r.map(|()| elapsed), looper.join())
    });
    let elapsed = elapsed?;
    match looped {
        Ok(r) => r.map_err(err)?,
        Err(_) => return Err("the loop thread panicked".into()),
    }
    let stats = engine.stats();
    println!(
        "result shape=remote_fire reports={made} as_expected={} dispatched={} stale={} \
         ns_per_timer={:.1}",
        stats.dispatched,
        stats.dispatched,
        stats.stale.total(),
        elapsed.as_nanos() as f64 / made as f64
    );
    Ok((stats.dispatched, made))
}

fn main() -> ExitCode {
    let (shape, reports) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("reports: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(shape, reports) {
        Ok((n, made)) if n == made => ExitCode::SUCCESS,
        Ok((n, reports)) => {
            eprintln!(
                "reports: FAILED: {n} of {reports} reports returned {:?}",
                shape.expected()
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("reports: {e}");
            ExitCode::from(1)
        }
    }
}
