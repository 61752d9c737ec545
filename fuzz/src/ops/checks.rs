//! The checks: after every op, everything the model knows against the
//! engine, the hooks and the callbacks; at the end, that every
//! registration ended exactly once and nothing was left behind.

use super::callbacks::Counters;
use super::harness::Harness;
use super::hooks::{HookCall, RecHooks};
use super::model::{Handle, Kind, MStats, Model, RegState};
use crate::common::lock;
use evnexus::{Engine, Error, Interest};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Harness<'_> {
    /// Everything the model knows, against the engine, the hooks and the
    /// callbacks.
    pub(crate) fn check(&mut self, what: &dyn std::fmt::Debug, engine_alive: bool) {
        let m = &mut self.model;
        assert_eq!(m.busy, None);
        // Hook calls, in order.
        let log = std::mem::take(&mut lock(&self.hooks.0).log);
        let expected = std::mem::take(&mut m.expect_hooks);
        assert_eq!(log, expected, "hook calls after {what:?}");
        {
            let st = lock(&self.hooks.0);
            assert_eq!(st.fail_next, m.fail_next, "fail flag after {what:?}");
            assert_eq!(
                st.panic_next_deregister, m.panic_next_deregister,
                "deregister panic flag after {what:?}"
            );
            assert_eq!(st.report_next, m.report_next, "report flag after {what:?}");
            let mut fd_live = HashMap::new();
            let mut timer_live = HashMap::new();
            for r in &m.regs {
                assert_ne!(
                    r.state,
                    RegState::Dead,
                    "model: dead registration after an op"
                );
                if r.state != RegState::Live {
                    continue;
                }
                match r.kind {
                    Kind::Fd { fd, interest } => {
                        fd_live.insert(r.token, (fd, interest));
                    }
                    Kind::Timer { deadline } => {
                        timer_live.insert(r.token, deadline);
                    }
                }
            }
            assert_eq!(st.fd_live, fd_live, "the loop's fd watches after {what:?}");
            assert_eq!(
                st.timer_live, timer_live,
                "the loop's timeouts after {what:?}"
            );
            let live_values = fd_live.len() + timer_live.len();
            assert_eq!(
                st.values_made - st.values_dropped,
                live_values,
                "hook values alive after {what:?}"
            );
        }
        // Callback runs: none but the expected ones.
        assert_eq!(
            self.counters.runs.load(Ordering::Relaxed),
            m.runs,
            "callback runs after {what:?}"
        );
        for r in std::mem::take(&mut m.touched) {
            let reg = &mut m.regs[r];
            let runs = std::mem::take(&mut lock(&reg.cb).runs);
            let expected = std::mem::take(&mut reg.expect_runs);
            assert_eq!(runs, expected, "runs of {:#x} after {what:?}", reg.token);
            assert_eq!(
                reg.dropped.load(Ordering::Relaxed),
                reg.state == RegState::Gone,
                "callback of {:#x} dropped iff ended, after {what:?}",
                reg.token
            );
        }
        let live = m.regs.iter().filter(|r| r.state == RegState::Live).count();
        assert_eq!(
            self.counters.drops.load(Ordering::Relaxed),
            m.callbacks_made - live,
            "callbacks dropped after {what:?}"
        );
        // Handles.
        for r in &m.regs {
            let live = r.state == RegState::Live && engine_alive;
            match &r.handle {
                Some(Handle::Fd(w)) => assert_eq!(w.is_live(), live, "is_live of {:#x}", r.token),
                Some(Handle::Timer(t)) => {
                    assert_eq!(t.is_pending(), live, "is_pending of {:#x}", r.token)
                }
                None => {}
            }
        }
        if engine_alive {
            assert_eq!(MStats::of(self.engine), m.stats, "stats after {what:?}");
            assert_eq!(self.engine.stats().live(), live as u64);
        }
    }
}

/// The end of an input: every live registration is ended exactly once,
/// whichever goes first (the engine, or the handles), and everything the
/// engine held is dropped.
pub(crate) fn end_of_input(
    engine: Engine,
    hooks: RecHooks,
    mut model: Model,
    counters: Arc<Counters>,
    drop_engine_first: bool,
) {
    if drop_engine_first {
        let live: Vec<usize> = (0..model.regs.len())
            .filter(|&r| model.regs[r].state == RegState::Live)
            .collect();
        for &r in &live {
            model.deregister(r);
        }
        drop(engine);
        // Engine::drop goes by slot index: compare per token.
        let log = std::mem::take(&mut lock(&hooks.0).log);
        let expected = std::mem::take(&mut model.expect_hooks);
        let by_token = |calls: Vec<HookCall>| {
            let mut map: HashMap<u64, Vec<HookCall>> = HashMap::new();
            for c in calls {
                map.entry(c.token()).or_default().push(c);
            }
            map
        };
        assert_eq!(
            by_token(log),
            by_token(expected),
            "hook calls of Engine::drop"
        );
        for r in &model.regs {
            match &r.handle {
                Some(Handle::Fd(w)) => {
                    assert!(!w.is_live());
                    assert!(matches!(w.modify(Interest::READABLE), Err(Error::Gone)));
                }
                Some(Handle::Timer(t)) => {
                    assert!(!t.is_pending());
                    let later = Instant::now() + Duration::from_secs(1);
                    assert!(matches!(t.reset_at(later), Err(Error::Gone)));
                }
                None => {}
            }
        }
        for r in &mut model.regs {
            match r.handle.take() {
                Some(Handle::Fd(w)) => assert!(!w.deregister()),
                Some(Handle::Timer(t)) => assert!(!t.cancel()),
                None => {}
            }
        }
        assert!(
            lock(&hooks.0).log.is_empty(),
            "hook calls after the engine was dropped"
        );
    } else {
        let mut h2 = Harness {
            engine: &engine,
            hooks: hooks.clone(),
            model,
            counters: Arc::clone(&counters),
        };
        for r in 0..h2.model.regs.len() {
            if h2.model.regs[r].handle.is_some() {
                h2.end_handle(r, r % 2 == 0);
                h2.check(&"dropping the handles", true);
            }
        }
        model = h2.model;
        drop(engine);
        assert!(
            lock(&hooks.0).log.is_empty(),
            "Engine::drop with nothing live"
        );
    }
    assert_eq!(
        counters.drops.load(Ordering::Relaxed),
        model.callbacks_made,
        "callbacks leaked"
    );
    assert!(model.regs.iter().all(|r| r.dropped.load(Ordering::Relaxed)));
    let st = lock(&hooks.0);
    assert!(
        st.fd_live.is_empty() && st.timer_live.is_empty(),
        "the loop still watches something"
    );
    assert_eq!(st.values_made, st.values_dropped, "hook values leaked");
}
