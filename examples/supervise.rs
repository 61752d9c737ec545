//! `supervise`: child supervision with exit statuses, on the built-in loop.
//!
//! A toolstack starts helper processes (device models, consoles) and must
//! know how each ended. [`Engine::watch_child`] watches a child's pidfd,
//! reaps it when it exits and hands the callback its exit status; nothing
//! here touches `SIGCHLD` or calls `wait`. Children that fail (a non-zero
//! exit, or killed by a signal) are restarted while they have restarts
//! left; the supervisor ends when every child has ended for good.
//!
//! Run: `cargo run --release --example supervise`.

use evnexus::{ChildWatch, Engine};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child to supervise: a shell script, and how often it may be restarted
/// after a failure.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: &'static str,
    pub script: &'static str,
    pub restarts: u32,
}

/// How a supervised child ended for good.
#[derive(Debug)]
pub struct Outcome {
    pub name: &'static str,
    /// Runs, the first included.
    pub runs: u32,
    pub status: ExitStatus,
}

/// The children of the demo: one that succeeds, one that keeps failing,
/// one that is killed by a signal, one that takes its time.
pub fn demo_specs() -> Vec<Spec> {
    vec![
        Spec {
            name: "ok",
            script: "exit 0",
            restarts: 2,
        },
        Spec {
            name: "flaky",
            script: "exit 3",
            restarts: 2,
        },
        Spec {
            name: "killed",
            script: "kill -KILL $$",
            restarts: 1,
        },
        Spec {
            name: "slow",
            script: "sleep 0.2",
            restarts: 0,
        },
    ]
}

/// Describes an exit status as a person would.
pub fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("ended with raw status {}", status.into_raw()),
    }
}

/// Starts child `index` and watches it: its exit is sent on `exits`.
fn start(
    engine: &Engine,
    spec: &Spec,
    index: usize,
    exits: &mpsc::Sender<(usize, u32, io::Result<ExitStatus>)>,
) -> io::Result<ChildWatch> {
    let child = Command::new("sh").args(["-c", spec.script]).spawn()?;
    let pid = child.id();
    println!("[{}] started, pid {pid}", spec.name);
    let exits = exits.clone();
    // `child` is dropped here without waiting: the engine reaps it.
    engine
        .watch_child(pid, move |ev| {
            let status = match ev.status() {
                Ok(s) => Ok(*s),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            let _ = exits.send((index, ev.pid(), status));
        })
        .map_err(io::Error::other)
}

/// Supervises `specs` on `engine`'s loop until every child has ended for
/// good (or `limit` passes); returns how each ended, in `specs` order.
pub fn supervise(engine: &Engine, specs: &[Spec], limit: Duration) -> io::Result<Vec<Outcome>> {
    let (tx, rx) = mpsc::channel();
    let mut watches: Vec<ChildWatch> = Vec::new();
    let mut runs = vec![1u32; specs.len()];
    let mut outcomes: Vec<Option<Outcome>> = specs.iter().map(|_| None).collect();
    for (i, spec) in specs.iter().enumerate() {
        watches.push(start(engine, spec, i, &tx)?);
    }
    let end = Instant::now() + limit;
    while outcomes.iter().any(Option::is_none) {
        if Instant::now() >= end {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "children still running",
            ));
        }
        engine
            .run_once(Some(Duration::from_millis(100)))
            .map_err(io::Error::other)?;
        for (i, pid, status) in rx.try_iter() {
            let spec = &specs[i];
            let status = status?;
            let failed = !status.success();
            let left = spec.restarts + 1 - runs[i];
            if failed && left > 0 {
                println!(
                    "[{}] pid {pid} {}; restarting ({left} restart{} left)",
                    spec.name,
                    describe(&status),
                    if left == 1 { "" } else { "s" }
                );
                runs[i] += 1;
                watches.push(start(engine, spec, i, &tx)?);
            } else {
                println!("[{}] pid {pid} {}; done", spec.name, describe(&status));
                outcomes[i] = Some(Outcome {
                    name: spec.name,
                    runs: runs[i],
                    status,
                });
            }
        }
        // Watches whose child has been reported are over; keep the rest.
        watches.retain(ChildWatch::is_pending);
    }
    Ok(outcomes.into_iter().flatten().collect())
}

fn main() -> ExitCode {
    let run = Engine::new()
        .map_err(io::Error::other)
        .and_then(|engine| supervise(&engine, &demo_specs(), Duration::from_secs(30)));
    match run {
        Ok(outcomes) => {
            for o in &outcomes {
                println!(
                    "{}: {} after {} run(s)",
                    o.name,
                    describe(&o.status),
                    o.runs
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("supervise: {e}");
            ExitCode::FAILURE
        }
    }
}
