//! `daemon`: a service that stops cleanly on SIGTERM (or SIGINT) and
//! reloads on SIGHUP, through [`Engine::watch_signal`].
//!
//! The order matters: the signals are blocked first, in the main thread,
//! before anything spawns a thread (threads inherit the mask). A thread
//! that did not block SIGTERM could take it, and its default action would
//! kill the process without a clean stop. Then the signals are watched,
//! each through its signalfd in the engine's loop, and the loop runs until
//! the SIGTERM callback stops it; everything is then dropped in order and
//! the process exits 0.
//!
//! Its work, here, is a tick every 50 ms. It prints `ready` once it is
//! watching its signals. Try it:
//! `cargo run --release --example daemon & sleep 1; kill -HUP $!; kill $!`.

use evnexus::{Engine, SignalEvent, TimerEvent};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(50);

/// The daemon's work: a tick every [`TICK`], each arming the next.
fn tick(engine: &Engine, at: Instant, ticks: Arc<AtomicU64>) -> evnexus::Result<()> {
    engine.timer_at_detached(at, move |ev: &TimerEvent<'_>| {
        // Relaxed: a plain count, read after the loop has stopped.
        ticks.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = tick(ev.engine(), ev.deadline() + TICK, ticks) {
            eprintln!("daemon: cannot arm the next tick: {e}");
            ev.engine().stop();
        }
    })?;
    Ok(())
}

/// Runs the daemon until SIGTERM or SIGINT; returns the ticks it did. The
/// signals must be blocked already.
fn run() -> evnexus::Result<u64> {
    let engine = Engine::new()?;
    let ticks = Arc::new(AtomicU64::new(0));
    tick(&engine, Instant::now() + TICK, Arc::clone(&ticks))?;

    let _hup = engine.watch_signal(libc::SIGHUP, |ev| {
        println!("SIGHUP from pid {}: reloading", ev.pid());
    })?;
    let stop = |ev: &SignalEvent<'_>| {
        let name = if ev.signal() == libc::SIGTERM {
            "SIGTERM"
        } else {
            "SIGINT"
        };
        println!("{name} from pid {} (uid {}): stopping", ev.pid(), ev.uid());
        ev.engine().stop();
    };
    let _term = engine.watch_signal(libc::SIGTERM, stop)?;
    let _int = engine.watch_signal(libc::SIGINT, stop)?;

    println!("ready: pid {}", std::process::id());
    engine.run()?;
    // The watches, then the engine (with the pending tick) are dropped here.
    Ok(ticks.load(Ordering::Relaxed))
}

pub fn main() -> ExitCode {
    // First of all, before any thread exists.
    if let Err(e) = evnexus::block_signals(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]) {
        eprintln!("daemon: cannot block its signals: {e}");
        return ExitCode::FAILURE;
    }
    match run() {
        Ok(ticks) => {
            println!("stopped cleanly after {ticks} ticks");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("daemon: {e}");
            ExitCode::FAILURE
        }
    }
}
