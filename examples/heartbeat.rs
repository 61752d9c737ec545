//! `heartbeat`: a periodic heartbeat without drift, on the built-in loop.
//!
//! One periodic timer ([`Engine::timer_every_at`]): beat `k` is due at
//! `start + (k + 1) * period`, computed from the start, not from when the
//! beat before it ran, so a late beat does not push the later ones back.
//! A loop that falls behind (a busy machine, a slow callback) skips the
//! beats whose time has passed, and the next beat says how many
//! ([`evnexus::Tick::missed`]); the schedule keeps its phase.
//!
//! Run: `cargo run --release --example heartbeat -- [beats] [period-ms]`.

use evnexus::Engine;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One beat: which period of the schedule, how many were skipped before
/// it, when it was due, and when its callback ran.
#[derive(Clone, Copy, Debug)]
pub struct Beat {
    pub index: u64,
    pub missed: u64,
    pub deadline: Instant,
    pub ran_at: Instant,
}

/// Beats every `period` from now on `engine`'s loop until `count` periods
/// have passed; returns the start instant and the beats.
pub fn heartbeat(
    engine: &Engine,
    period: Duration,
    count: u64,
) -> evnexus::Result<(Instant, Vec<Beat>)> {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    if count > 0 {
        let _beat = engine.timer_every_at(start + period, period, move |tick| {
            let _ = tx.send(Beat {
                index: tick.index(),
                missed: tick.missed(),
                deadline: tick.deadline(),
                ran_at: Instant::now(),
            });
            if tick.index() + 1 >= count {
                tick.stop();
                tick.engine().stop();
            }
        })?;
        engine.run()?;
    }
    Ok((start, rx.try_iter().collect()))
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let period = Duration::from_millis(args.next().and_then(|a| a.parse().ok()).unwrap_or(100));
    let run = Engine::new().and_then(|engine| heartbeat(&engine, period, count));
    let (start, beats) = match run {
        Ok(r) => r,
        Err(e) => {
            eprintln!("heartbeat: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut worst = Duration::ZERO;
    let mut early = 0;
    for beat in &beats {
        let late = beat.ran_at.saturating_duration_since(beat.deadline);
        if beat.ran_at < beat.deadline {
            early += 1;
        }
        worst = worst.max(late);
        println!(
            "beat {:>3}: due at +{:?}, ran {:?} late{}",
            beat.index + 1,
            beat.deadline - start,
            late,
            if beat.missed > 0 {
                format!(" ({} skipped before it)", beat.missed)
            } else {
                String::new()
            }
        );
    }
    let drift_free = beats
        .iter()
        .all(|b| b.deadline == start + period * (b.index as u32 + 1));
    let periods: u64 = beats.iter().map(|b| b.missed + 1).sum();
    println!(
        "{} beats for {periods} periods of {period:?}: {early} early, worst lateness {worst:?}, \
         deadlines {}",
        beats.len(),
        if drift_free {
            "exactly start + n * period (no drift)"
        } else {
            "DRIFTED"
        }
    );
    if periods >= count && early == 0 && drift_free {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
