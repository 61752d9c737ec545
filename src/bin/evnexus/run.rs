//! One run: builds the engine and the domains, starts the threads, runs
//! the load (until its time is up or a SIGTERM comes), drains, tears down,
//! replays every remembered dead token, and hands the figures to the
//! accounting and the report.

use crate::accounting;
use crate::app_loop::{app_loop, AppLoop, Hooks};
use crate::check::Check;
use crate::churn::{churn_thread, ChurnCounts};
use crate::cli::{Config, SimBackend};
use crate::delivery::{deliver, delivery_thread, Tally, OUT_DEFERRED, OUT_DISPATCHED};
use crate::domains::Domain;
use crate::engine_loop::engine_loop;
use crate::heartbeats::retire_timer;
use crate::hist::Hist;
use crate::injector::injector;
use crate::items::{Dead, Item, Kind, LoopOut, Origin, Sink};
use crate::lock;
use crate::report::{group, Report};
use crate::rng::Rng;
use crate::rss;
use crate::shared::{flush_latency, Shared, CB_RUNS};
use crate::traffic::{traffic_thread, Traffic};
use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;
use evnexus::{BackendKind, Engine, SignalWatch};
use std::cell::Cell;
use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The engine `cfg` asks for; with hooks, also the application loop that
/// carries its registrations.
fn build_engine(cfg: &Config) -> Result<(Arc<Engine>, Option<Arc<AppLoop>>), String> {
    if !cfg.backend.builtin() {
        let app = Arc::new(AppLoop::new().map_err(|e| format!("eventfd: {e}"))?);
        let engine = Engine::with_hooks(Hooks(Arc::clone(&app)));
        return Ok((Arc::new(engine), Some(app)));
    }
    let builder = match cfg.backend {
        SimBackend::Uring => Engine::builder().backend(BackendKind::Uring),
        SimBackend::Epoll => Engine::builder().backend(BackendKind::Epoll),
        // io_uring, or epoll where the kernel refuses it.
        _ => Engine::builder(),
    };
    let builder = match cfg.ring_entries {
        Some(n) => builder.ring_entries(n),
        None => builder,
    };
    let engine = builder
        .build()
        .map_err(|e| format!("building the engine ({:?}): {e}", cfg.backend))?;
    Ok((Arc::new(engine), None))
}

/// The program's control loop, which the main thread turns while the
/// load runs: an engine of its own with a watch of SIGTERM (which `main`
/// blocked before any thread existed), whose callback ends the load phase
/// early. Separate from the simulated toolstack's engine, whose counts the
/// accounting checks exactly.
pub(crate) struct ControlLoop {
    engine: Engine,
    _sigterm: SignalWatch,
    terminated: Arc<AtomicBool>,
}

impl ControlLoop {
    fn new() -> Result<ControlLoop, String> {
        let engine = Engine::new().map_err(|e| format!("the control loop's engine: {e}"))?;
        let terminated = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&terminated);
        let sigterm = engine
            .watch_signal(libc::SIGTERM, move |_| flag.store(true, Ordering::SeqCst))
            .map_err(|e| format!("watching SIGTERM: {e}"))?;
        Ok(ControlLoop {
            engine,
            _sigterm: sigterm,
            terminated,
        })
    }

    /// Turns the control loop for `d` (or until a signal comes); falls
    /// back to sleeping if the loop fails, after saying so.
    fn wait(&self, d: Duration, shared: &Shared) {
        if let Err(e) = self.engine.run_once(Some(d)) {
            shared
                .checks
                .fail(Check::Unexpected, || format!("the control loop: {e}"));
            thread::sleep(d);
        }
    }

    fn terminated(&self) -> bool {
        self.terminated.load(Ordering::SeqCst)
    }
}

/// Waits out the load phase, with a progress line on a terminal; returns
/// when a SIGTERM ended it early, if one did.
fn wait_for_load(
    cfg: &Config,
    start: Instant,
    shared: &Shared,
    counters: &[CachePadded<AtomicU64>],
    control: &ControlLoop,
) -> Option<Duration> {
    let load_for = Duration::from_secs_f64(cfg.seconds);
    let progress = cfg.seconds > 3.0 && io::stdout().is_terminal();
    // Relaxed: a progress figure; the exact counts come from the joined
    // threads' tallies.
    let occurred_so_far = || {
        counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let mut terminated_at = None;
    loop {
        let elapsed = start.elapsed();
        if control.terminated() {
            terminated_at = Some(elapsed);
            break;
        }
        if elapsed >= load_for {
            break;
        }
        control.wait((load_for - elapsed).min(Duration::from_secs(1)), shared);
        if progress {
            let e = start.elapsed().as_secs_f64().min(cfg.seconds);
            let mut out = io::stdout().lock();
            let _ = write!(
                out,
                "\r  {e:5.1} s / {:.1} s   {} occurred calls   misdeliveries so far: {}   ",
                cfg.seconds,
                group(occurred_so_far()),
                shared.checks.total()
            );
            let _ = out.flush();
        }
    }
    if progress {
        let mut out = io::stdout().lock();
        let _ = write!(out, "\r{:78}\r", "");
        let _ = out.flush();
    }
    terminated_at
}

/// Runs the simulation `cfg` describes and gathers its figures.
pub(crate) fn run(cfg: Config) -> Result<Report, String> {
    let builtin = cfg.backend.builtin();
    let control = ControlLoop::new()?;
    let shared = Arc::new(Shared::new(builtin));
    let (engine, app) = build_engine(&cfg)?;
    let backend = engine.backend();

    let mut rng = Rng::new();
    let domains = (0..cfg.domains)
        .map(|i| Domain::new(i, &engine, &shared, &mut rng))
        .collect::<Result<Vec<_>, _>>()?;
    let domains = Arc::new(domains);

    let sink = Arc::new(Sink {
        queues: (0..cfg.threads)
            .map(|_| CachePadded::new(SegQueue::new()))
            .collect(),
        threads: Mutex::new(Vec::new()),
    });
    let counters: Arc<Vec<CachePadded<AtomicU64>>> = Arc::new(
        (0..cfg.threads)
            .map(|_| CachePadded::new(AtomicU64::new(0)))
            .collect(),
    );
    let stop_delivery = Arc::new(AtomicBool::new(false));
    let stop_loop = Arc::new(AtomicBool::new(false));
    let stop_load = Arc::new(AtomicBool::new(false));
    let traffic = Arc::new(Traffic::default());
    let churn = Arc::new(ChurnCounts::default());

    let spawn_err = |e: io::Error| format!("spawning a thread: {e}");
    let mut deliverers = Vec::new();
    for k in 0..cfg.threads {
        let (engine, app, shared, sink2, stop, counters) = (
            Arc::clone(&engine),
            app.clone(),
            Arc::clone(&shared),
            Arc::clone(&sink),
            Arc::clone(&stop_delivery),
            Arc::clone(&counters),
        );
        let h = thread::Builder::new()
            .name(format!("deliver-{k}"))
            .spawn(move || {
                delivery_thread(
                    k,
                    &engine,
                    app.as_deref(),
                    &shared,
                    &sink2,
                    &stop,
                    &counters[k],
                )
            })
            .map_err(spawn_err)?;
        lock(&sink.threads).push(h.thread().clone());
        deliverers.push(h);
    }
    // Hooks: the application loop finds the events and hands them to the
    // delivery threads. Built-in loop: the loop thread runs the engine's
    // loop, and the injector hands the delivery threads reports that race
    // it.
    let feeder = match &app {
        Some(app) => {
            let (app, sink, stop) = (Arc::clone(app), Arc::clone(&sink), Arc::clone(&stop_loop));
            thread::Builder::new()
                .name("app-loop".into())
                .spawn(move || app_loop(&app, &sink, &stop))
                .map_err(spawn_err)?
        }
        None => {
            let (shared, sink, stop) = (
                Arc::clone(&shared),
                Arc::clone(&sink),
                Arc::clone(&stop_loop),
            );
            let per_sec = cfg.rate / 2 + 5_000;
            thread::Builder::new()
                .name("injector".into())
                .spawn(move || injector(&shared, &sink, per_sec, &stop))
                .map_err(spawn_err)?
        }
    };
    let loop_thread = if builtin {
        let (engine, shared) = (Arc::clone(&engine), Arc::clone(&shared));
        Some(
            thread::Builder::new()
                .name("engine-loop".into())
                .spawn(move || engine_loop(&engine, &shared))
                .map_err(spawn_err)?,
        )
    } else {
        None
    };
    let traffic_handle = {
        let (domains, stop, traffic) = (
            Arc::clone(&domains),
            Arc::clone(&stop_load),
            Arc::clone(&traffic),
        );
        let rate = cfg.rate;
        let base = shared.base;
        thread::Builder::new()
            .name("traffic".into())
            .spawn(move || traffic_thread(&domains, rate, base, &stop, &traffic))
            .map_err(spawn_err)?
    };
    let churn_handle = {
        let (engine, domains, shared, stop, churn) = (
            Arc::clone(&engine),
            Arc::clone(&domains),
            Arc::clone(&shared),
            Arc::clone(&stop_load),
            Arc::clone(&churn),
        );
        thread::Builder::new()
            .name("churn".into())
            .spawn(move || churn_thread(&engine, &domains, &shared, &stop, &churn))
            .map_err(spawn_err)?
    };

    // ---- load phase, its RSS sampled if asked
    let sampler = match cfg.rss_every {
        Some(every) => Some(
            rss::Sampler::start(Duration::from_secs_f64(every), cfg.rss_warmup())
                .map_err(spawn_err)?,
        ),
        None => None,
    };
    let start = Instant::now();
    let terminated_at = wait_for_load(&cfg, start, &shared, &counters, &control);
    stop_load.store(true, Ordering::SeqCst);
    let rss_curve = sampler.and_then(rss::Sampler::finish);
    let join_err = |what: &str| format!("the {what} thread panicked");
    traffic_handle.join().map_err(|_| join_err("traffic"))?;
    churn_handle.join().map_err(|_| join_err("churn"))?;
    let load = start.elapsed();

    // Stops the application loop or the injector, then the deliverers once
    // they have handed the engine everything queued.
    let stop_feeding = || -> Result<(LoopOut, Tally), String> {
        stop_loop.store(true, Ordering::SeqCst);
        if let Some(app) = &app {
            app.wake();
        }
        let loop_out = feeder.join().map_err(|_| join_err("app-loop/injector"))?;
        stop_delivery.store(true, Ordering::SeqCst);
        for t in lock(&sink.threads).iter() {
            t.unpark();
        }
        let mut tally = Tally::new();
        for h in deliverers {
            tally.merge(&h.join().map_err(|_| join_err("delivery"))?);
        }
        Ok((loop_out, tally))
    };

    // ---- drain: every byte written must be read by a callback
    let bytes_read = || {
        domains
            .iter()
            .map(|d| d.stats.bytes_read.load(Ordering::SeqCst))
            .sum::<u64>()
            + churn.drained_bytes.load(Ordering::SeqCst)
    };
    let written = traffic.written.load(Ordering::SeqCst);
    let drain = || {
        let drain_start = Instant::now();
        let mut drained = bytes_read() == written;
        while !drained && drain_start.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(1));
            drained = bytes_read() == written;
        }
        (drained, drain_start.elapsed())
    };
    let (drained, drain, teardown_start, (loop_out, tally)) = if builtin {
        // The racing reports stop first: a duplicate report runs the
        // callback too, and could read what the loop failed to report.
        // What is left in the channels now only the loop's events read.
        let fed = stop_feeding()?;
        let (drained, drain) = drain();
        let teardown_start = Instant::now();
        shared.stopping.store(true, Ordering::SeqCst);
        (drained, drain, teardown_start, fed)
    } else {
        // The application loop and the deliverers carry the events.
        let (drained, drain) = drain();
        // ---- teardown: stop heartbeats, the application loop, the
        // deliverers
        let teardown_start = Instant::now();
        shared.stopping.store(true, Ordering::SeqCst);
        (drained, drain, teardown_start, stop_feeding()?)
    };

    // Nothing reports events any more, but a built-in loop still runs (its
    // callbacks race these deregistrations): end every registration from
    // outside any callback and check each outcome.
    let mut churn_totals = churn.totals();
    for d in domains.iter() {
        churn_totals.lost_timers += d.retire(&shared);
    }
    while let Some(orphan) = shared.orphans.pop() {
        churn_totals.lost_timers += u64::from(retire_timer(orphan, &shared));
    }
    // Then stop the built-in loop.
    let engine_loop_out = match loop_thread {
        Some(h) => {
            engine.stop();
            Some(h.join().map_err(|_| join_err("engine-loop"))?)
        }
        None => None,
    };

    // Late reports still held back by the loop, and a replay of every
    // remembered dead token as both kinds: all must be rejected now.
    let mut leftovers = Tally::new();
    let runs_before = CB_RUNS.with(Cell::get);
    for item in loop_out.held_back.iter() {
        let item = Item {
            inflight: None,
            ..*item
        };
        deliver(&engine, app.as_deref(), &shared, item, &mut leftovers);
    }
    let dead: Vec<Dead> = match &app {
        Some(app) => lock(&app.reg).dead.iter().copied().collect(),
        None => lock(&shared.graveyard).iter().copied().collect(),
    };
    let mut sweep = (0u64, 0u64);
    for &(token, was, fd) in &dead {
        for kind in [Kind::Fd, Kind::Timeout] {
            let fd = if was == Kind::Fd { fd } else { 0 };
            let item = Item::injected(kind, Origin::Replay, token, fd, Instant::now());
            let before = leftovers.outcome(OUT_DISPATCHED) + leftovers.outcome(OUT_DEFERRED);
            deliver(&engine, app.as_deref(), &shared, item, &mut leftovers);
            let after = leftovers.outcome(OUT_DISPATCHED) + leftovers.outcome(OUT_DEFERRED);
            sweep.0 += 1;
            sweep.1 += after - before;
        }
    }
    leftovers.callback_runs = CB_RUNS.with(Cell::get) - runs_before;
    flush_latency(&shared);
    let teardown = teardown_start.elapsed();

    let mut report = Report {
        cfg,
        backend,
        edge_domains: domains.iter().filter(|d| d.interest.is_edge()).count(),
        engine_loop: engine_loop_out,
        loop_deferred: 0,
        loop_stale: 0,
        write_latency: std::mem::replace(&mut *lock(&shared.write_latency), Hist::new()),
        timers_cancelled: shared.timers_cancelled.load(Ordering::SeqCst),
        keepalives: shared.keepalives.totals(),
        keepalive_silent: 0,
        terminated_at,
        load,
        drain,
        drained,
        teardown,
        tally,
        leftovers,
        loop_out,
        hook_calls: app.as_ref().map_or([0; 6], |app| lock(&app.reg).hook_calls),
        stats: engine.stats(),
        traffic: traffic.totals(),
        bytes_read: bytes_read(),
        churn: churn_totals,
        registrations: shared.registrations.load(Ordering::SeqCst),
        timers_fired: domains.iter().map(|d| d.beats()).sum(),
        distinct_fired: lock(&shared.fired).distinct(),
        timers_armed: shared.timers_armed.load(Ordering::SeqCst),
        silent_domains: domains.iter().filter(|d| d.beats() == 0).count(),
        lost_reports: shared.lost_reports.load(Ordering::SeqCst),
        early_after_reset: shared.early_after_reset.load(Ordering::SeqCst),
        final_sweep: sweep,
        peak_rss_kib: rss::status_kib("VmHWM"),
        rss: rss_curve,
        accounting: Vec::new(),
        check_counts: std::array::from_fn(|i| shared.checks.failed[i].load(Ordering::SeqCst)),
        notes: lock(&shared.checks.notes).clone(),
    };
    let found = accounting::compare(&report);
    report.accounting = found.mismatches;
    report.loop_deferred = found.loop_deferred;
    report.loop_stale = found.loop_stale;
    report.keepalive_silent = found.keepalive_silent;

    // ---- shut down: handles are gone; drop the domains, then the engine.
    drop(domains);
    drop(engine);
    Ok(report)
}
