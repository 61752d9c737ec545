//! `heartbeat`: a periodic heartbeat without drift, on the built-in loop.
//!
//! Each beat is a fire-and-forget one-shot timer
//! ([`Engine::timer_at_detached`]) whose callback arms the next one at *its
//! own deadline plus the period*, not at "now plus the period": a late beat
//! does not push the later ones back, so the n-th beat is due at exactly
//! `start + n * period` however late the ones before it ran. (evnexus will
//! get a periodic timer of its own; this example then becomes a one-liner.)
//!
//! Run: `cargo run --release --example heartbeat -- [beats] [period-ms]`.

use evnexus::{Engine, TimerEvent};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One beat: when it was due, and when its callback ran.
#[derive(Clone, Copy, Debug)]
pub struct Beat {
    pub deadline: Instant,
    pub ran_at: Instant,
}

/// Arms beat `n` of `count` at `deadline`; its callback reports it and arms
/// the next at `deadline + period`, or stops the loop after the last.
fn arm(
    engine: &Engine,
    deadline: Instant,
    period: Duration,
    (n, count): (u32, u32),
    beats: mpsc::Sender<Beat>,
) -> evnexus::Result<()> {
    engine.timer_at_detached(deadline, move |ev: &TimerEvent<'_>| {
        let ran_at = Instant::now();
        let _ = beats.send(Beat {
            deadline: ev.deadline(),
            ran_at,
        });
        if n == count {
            ev.engine().stop();
            return;
        }
        // The next deadline follows from this one, not from the clock.
        let next = ev.deadline() + period;
        if let Err(e) = arm(ev.engine(), next, period, (n + 1, count), beats) {
            eprintln!("heartbeat: cannot arm beat {}: {e}", n + 1);
            ev.engine().stop();
        }
    })?;
    Ok(())
}

/// Runs `count` beats, one every `period` from now, on `engine`'s loop;
/// returns them with the start instant.
pub fn heartbeat(
    engine: &Engine,
    period: Duration,
    count: u32,
) -> evnexus::Result<(Instant, Vec<Beat>)> {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    if count > 0 {
        arm(engine, start + period, period, (1, count), tx)?;
        engine.run()?;
    }
    Ok((start, rx.try_iter().collect()))
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let count: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
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
    for (i, beat) in beats.iter().enumerate() {
        let late = beat.ran_at.saturating_duration_since(beat.deadline);
        if beat.ran_at < beat.deadline {
            early += 1;
        }
        worst = worst.max(late);
        println!(
            "beat {:>3}: due at +{:?}, ran {:?} late",
            i + 1,
            beat.deadline - start,
            late
        );
    }
    let drift_free = beats
        .iter()
        .zip(1u32..)
        .all(|(b, n)| b.deadline == start + period * n);
    println!(
        "{} beats every {period:?}: {early} early, worst lateness {worst:?}, deadlines {}",
        beats.len(),
        if drift_free {
            "exactly start + n * period (no drift)"
        } else {
            "DRIFTED"
        }
    );
    if beats.len() == count as usize && early == 0 && drift_free {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
