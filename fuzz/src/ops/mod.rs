//! The `engine_ops` target: arbitrary sequences of register / modify / deregister /
//! occurred calls, with live, stale and forged tokens, against an evnexus
//! `Engine` in hooks mode, each result checked against a small reference
//! model after every operation.
//!
//! The engine is built with `Engine::with_hooks` or the builder
//! (`first_generation` near `Generation::MAX` so slots retire,
//! `max_registrations` so `Error::Full` happens, `recheck_fds`). The ops
//! (see [`grammar::Op`]): register an fd (open socket pair, negative, closed or any
//! fd) or a timer; modify / reset, deregister / cancel / drop a handle;
//! `occurred_fd` and `occurred_timeout` with live, dead (history), forged
//! and wrong-kind tokens and right or wrong fds; arm a callback to report
//! itself again, modify or deregister itself, or panic on its next run;
//! make the next register/modify hook fail (error or panic), the next
//! deregister hook panic, or the next register hook report its own token
//! before returning.
//!
//! What is checked after every op:
//! - the op's return value (`Occurred::*`, `Error::*`, `bool`s of
//!   deregister/cancel) and, for stale or forged tokens, the exact
//!   `StaleReason` (the model mirrors `Engine::resolve`, `Slot::begin_fd`
//!   and `Slot::begin_timer`, arena geometry included);
//! - every callback run: which callback, how often (never for a stale
//!   token; a timer at most once), `ev.token()`, `ev.fd()`,
//!   `ev.readiness()`, `ev.deadline()`, `ev.engine()`, and what the
//!   callback's own re-entrant calls returned;
//! - the exact sequence of hook calls (fd_register/fd_deregister pairing,
//!   timeout_deregister only for cancelled timers, none for a failed or
//!   refused registration, hook values dropped exactly once), and the
//!   application loop's own table of what it watches;
//! - `engine.stats()` against the model's totals;
//! - `is_live()`/`is_pending()` of every handle; callbacks dropped exactly
//!   when their registration ends; tokens never handed out twice; a slot
//!   retired at `Generation::MAX` never reused; `Error::Full` exactly when
//!   live plus retired slots reach the limit.
//!
//! The modules, in the order a run uses them: [`grammar`] (what an input
//! decodes into), `fds` (the real descriptors it registers), `hooks`
//! (the application's loop, recording every hook call), `callbacks`
//! (recording every callback run), `model` (what the engine should do),
//! `harness` (runs each op on the engine and the model), `checks`
//! (compares them after every op and at the end).

mod callbacks;
mod checks;
mod fds;
pub mod grammar;
mod harness;
mod hooks;
mod model;
mod results;

pub use grammar::Input;

use crate::common::{install_panic_hook, lock};
use evnexus::{BackendKind, Engine, Generation};
use grammar::FirstGen;
use harness::Harness;
use hooks::RecHooks;
use model::Model;
use std::sync::Arc;

/// Most ops run per input: keeps each run small and fast.
const MAX_OPS: usize = 256;
/// Most re-entrant actions a callback performs in one run.
const MAX_ACTIONS: usize = 4;

/// Runs one input: builds a hooks engine as the input's config says, runs
/// its ops against the engine and the model, checking after each, then ends
/// everything and checks that nothing was left behind.
pub fn run(input: &Input) {
    install_panic_hook();
    let config = &input.config;
    let hooks = RecHooks::default();
    let first = match config.first_gen {
        FirstGen::Default => None,
        FirstGen::NearMax(k) => Generation::new(Generation::MAX.get() - (k % 4) as u64),
        FirstGen::Any(x) => Generation::new(x % Generation::MAX.get() + 1),
    };
    let engine = match (first, config.limit) {
        (None, None) if !config.recheck => Engine::with_hooks(hooks.clone()),
        (first, limit) => {
            let mut b = Engine::builder().hooks(hooks.clone());
            if let Some(g) = first {
                b = b.first_generation(g);
            }
            if let Some(l) = limit {
                b = b.max_registrations(l as usize);
            }
            if config.recheck {
                b = b.recheck_fds(true);
            }
            b.build().expect("building a hooks engine")
        }
    };
    assert_eq!(engine.backend(), BackendKind::Hooks);
    let addr = &engine as *const Engine as usize;
    lock(&hooks.0).engine = addr;
    let model = Model::new(addr, config, first);
    let mut h = Harness {
        engine: &engine,
        hooks: hooks.clone(),
        model,
        counters: Arc::default(),
    };
    h.check(&"start", true);
    for op in input.ops.iter().take(MAX_OPS) {
        h.op(op);
        h.check(op, true);
    }
    let Harness {
        hooks,
        model,
        counters,
        ..
    } = h;
    // The engine moves from here on: no hook may reach it by address.
    lock(&hooks.0).engine = 0;
    checks::end_of_input(engine, hooks, model, counters, config.drop_engine_first);
}
