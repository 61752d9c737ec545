//! The `engine_concurrent` target: the engine's calls from several threads
//! at once, on the hooks backend and on the built-in io_uring and epoll
//! loops, checked against the outcomes that some linearisation allows.
//!
//! # Design: real threads, checked at quiet points
//!
//! An input is a configuration and a list of rounds. In each round two or
//! three worker threads start together (a barrier) and each runs its own
//! steps: register, modify, reset, deregister, cancel (by handle, or by
//! token with `Engine::deregister`), report live, stale, wrong-kind and
//! forged tokens, arm callbacks (to deregister or modify themselves, end
//! another registration by token, report themselves, register timers,
//! sleep, drain their fd, panic), make fds readable, close an fd and put a
//! new file at its number, drive the loop, stop at a pause point of the
//! next control call, slow or fail the next hook. On a built-in loop a loop
//! thread drives `run_once` meanwhile (sleeping until woken, or spinning),
//! or the workers drive it themselves. After the round every thread has
//! joined, and the checks run on a quiet engine.
//!
//! Real threads rather than a scheduler that the input drives: the races
//! that matter are inside single calls (between one compare-and-swap of the
//! slot protocol and the next step, between a registration publishing its
//! slot and releasing its control bit), and a scheduler that orders whole
//! calls cannot reach them, and the library's pause points (its `testing`
//! feature) mark only two places of a control path. The input shapes the
//! interleaving (who runs what, spins, sleeps inside callbacks and hooks,
//! a stop at a pause point while a registration holds its control bit);
//! the threads do the rest. A finding therefore may not reproduce on every
//! replay of its input.
//!
//! # Checks
//!
//! Every call is stamped before and after with one sequence clock (SeqCst),
//! so "A returned before B began" is known, and each result is checked
//! against what a linearisation allows:
//!
//! - **Reports**: a report for a registration that had ended before it began
//!   is stale (`Generation`); one for a live registration is never stale;
//!   `Dispatched` means the callback ran on the reporting thread; a forged
//!   token (generation 0, an index past the arena, a generation far ahead)
//!   is stale with the exact reason; a token as the wrong kind is
//!   `WrongKind` until its deregistration has returned.
//! - **Callbacks** (`callbacks`): never concurrent with themselves, never
//!   started after an end of their registration returned, always their own
//!   token and fd; a timer runs at most once, never after `cancel`
//!   returned `true`, never before its deadline when the loop fires it, and
//!   with a deadline it could have had at that moment (no reset that had
//!   returned before is undone).
//! - **Ends**: when `deregister`/`cancel`/drop/`Engine::deregister`
//!   returns from outside any callback, the callback has finished and been
//!   dropped, and the application's loop no longer has the registration;
//!   from anywhere, no run starts after an end returned; `true` never for a
//!   registration that had ended, `false` only when another end began
//!   first (or the timer fired); a timer ended with `true` never fires;
//!   `ClosedWhileRegistered` only for a watch whose fd number got a new
//!   file.
//! - **Modify and reset**: `Ok` never for a registration that had ended
//!   before the call; `Gone` only if it ends; the backend's own error only
//!   when switching level/edge, or on a watch whose fd number has a new file.
//! - **Registration**: fresh tokens (the hooks see each once); `EEXIST` from
//!   the epoll set only while another watch of the same file may be in it.
//! - **At quiet points** (`checks`): on a built-in loop, every live timer
//!   whose every possible deadline has passed fires, and every live level
//!   watch on a readable fd with a readable interest runs, within 500 ms of
//!   turns of `run_once`; a report that returned `Deferred` was followed by
//!   a run (unless the registration ended); a callback is dropped exactly
//!   when its registration ended; `is_live`/`is_pending` agree; `stats`
//!   adds up (registered − deregistered = live, dispatched = runs,
//!   panicked; every stale and rerun count exactly on hooks); the hooks'
//!   table holds exactly the live registrations.
//! - **The loop thread** returns within 5 s of `Waker::wake` (a lost wake-up
//!   would leave it asleep).
//!
//! The shapes of issue #7 it reaches: timers registered and reset from a
//! worker while the loop thread runs; an fd number closed and given a new
//! file (`dup2`) while still watched, the new file registered, then the old
//! watch modified or deregistered (the new watch must still run);
//! deregistration from inside a callback, or by token from another thread,
//! while a modify on another thread holds the registration (slowed in the
//! hook, or stopped at a pause point); a registration or reset stopped
//! after its backend call while the loop thread spins.

mod callbacks;
mod checks;
mod driver;
mod entries;
pub mod grammar;
mod hooks;
mod reports;
mod world;

pub use grammar::Input;

use crate::common::install_panic_hook;
use driver::{loop_thread, Worker};
use evnexus::{BackendKind, Engine};
use grammar::{BackendChoice, Config, LoopDriver, Op, Round};
use hooks::Hooks;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};
use world::World;

/// Most rounds per input, and steps per round: keeps each run short.
const MAX_ROUNDS: usize = 8;
const MAX_STEPS: usize = 48;
/// How long the loop thread may take to return once woken.
const WAKE_LIMIT: Duration = Duration::from_secs(5);

fn build(backend: BackendChoice, hooks: Option<&Hooks>) -> Engine {
    match (backend, hooks) {
        (BackendChoice::Hooks, Some(h)) => Engine::with_hooks(h.clone()),
        (BackendChoice::Uring, _) if uring_available() => Engine::builder()
            .backend(BackendKind::Uring)
            .build()
            .expect("an io_uring engine (it was built before)"),
        _ => Engine::builder()
            .backend(BackendKind::Epoll)
            .build()
            .expect("an epoll engine"),
    }
}

/// Whether this kernel lets us build an io_uring engine (asked once; where
/// it does not, the io_uring inputs run on epoll).
fn uring_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let r = Engine::builder().backend(BackendKind::Uring).build();
        if let Err(e) = &r {
            eprintln!("engine_concurrent: no io_uring here ({e}); those inputs run on epoll");
        }
        r.is_ok()
    })
}

/// Runs one input.
pub fn run(input: &Input) {
    install_panic_hook();
    let config = &input.config;
    let hooks = (config.backend == BackendChoice::Hooks).then(Hooks::default);
    let engine = build(config.backend, hooks.as_ref());
    let world = Arc::new(World::new(engine.backend() != BackendKind::Hooks, hooks));
    checks::quiescent(&world, &engine);
    for round in input.rounds.iter().take(MAX_ROUNDS) {
        run_round(&world, &engine, config, round);
        checks::quiescent(&world, &engine);
    }
    checks::end_of_input(world, engine, config.drop_engine_first);
}

/// Runs one round: the workers' steps at once, with the loop thread
/// driving a built-in loop meanwhile if the config asks for one.
fn run_round(world: &Arc<World>, engine: &Engine, config: &Config, round: &Round) {
    let workers = 2 + config.threads as usize % 2;
    let mut steps: Vec<Vec<&Op>> = vec![Vec::new(); workers];
    for step in round.steps.iter().take(MAX_STEPS) {
        steps[step.thread as usize % workers].push(&step.op);
    }
    let with_loop = world.builtin && config.driver != LoopDriver::Steps;
    let spin = config.driver == LoopDriver::Spinning;
    let start = Barrier::new(workers + usize::from(with_loop));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let looper = with_loop.then(|| {
            s.spawn(|| {
                start.wait();
                loop_thread(world, engine, spin, &stop);
            })
        });
        let threads: Vec<_> = steps
            .into_iter()
            .map(|ops| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    let worker = Worker { world, engine };
                    for op in ops {
                        worker.op(op);
                    }
                    evnexus::testing::clear_pauses();
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a worker panicked");
        }
        if let Some(looper) = looper {
            stop.store(true, Ordering::SeqCst);
            engine.waker().wake();
            let woken = Instant::now();
            while !looper.is_finished() {
                assert!(
                    woken.elapsed() < WAKE_LIMIT,
                    "the loop thread did not return within {WAKE_LIMIT:?} of Waker::wake \
                     (a lost wake-up?)"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
}
