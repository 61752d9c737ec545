//! The loop thread of the built-in backends (uring, epoll): [`Engine::run`]
//! until [`Engine::stop`], counting the callbacks it ran.

use crate::check::Check;
use crate::shared::{flush_latency, Shared, CB_RUNS, TIMER_RUNS};
use evnexus::Engine;
use std::cell::Cell;

/// What the loop thread saw.
#[derive(Default)]
pub(crate) struct EngineLoopOut {
    /// Callback runs on the loop thread.
    pub(crate) callback_runs: u64,
    /// Of which timer callbacks.
    pub(crate) timer_runs: u64,
    /// Errors `run` returned (a callback panic, a backend error).
    pub(crate) errors: u64,
}

/// The loop thread: [`Engine::run`] until [`Engine::stop`].
pub(crate) fn engine_loop(engine: &Engine, shared: &Shared) -> EngineLoopOut {
    let mut out = EngineLoopOut::default();
    let runs_before = CB_RUNS.with(Cell::get);
    let timers_before = TIMER_RUNS.with(Cell::get);
    loop {
        match engine.run() {
            Ok(()) => break,
            Err(e) => {
                out.errors += 1;
                shared
                    .checks
                    .fail(Check::Unexpected, || format!("the engine's loop: {e}"));
                if out.errors >= 100 {
                    break;
                }
            }
        }
    }
    out.callback_runs = CB_RUNS.with(Cell::get) - runs_before;
    out.timer_runs = TIMER_RUNS.with(Cell::get) - timers_before;
    flush_latency(shared);
    out
}
