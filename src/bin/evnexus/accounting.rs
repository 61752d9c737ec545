//! The engine's statistics against what the threads saw: every count the
//! engine keeps must match what this program observed, and every report
//! the feeders made must have been handed to the engine exactly once.

use crate::delivery::{
    Tally, OUT_DEFERRED, OUT_STALE_FD, OUT_STALE_GENERATION, OUT_STALE_KIND, OUT_STALE_RANGE,
};
use crate::items::ORIGIN_NAMES;
use crate::report::Report;

/// What the comparison found.
pub(crate) struct Accounting {
    /// One line per count that disagrees (none: the engine and the threads
    /// agree).
    pub(crate) mismatches: Vec<String>,
    /// Built-in loop: reruns and stale generations that the loop counted
    /// itself (engine count less what the delivery threads observed).
    pub(crate) loop_deferred: u64,
    pub(crate) loop_stale: u64,
}

/// Compares the engine's counts in `r` with the observed ones.
pub(crate) fn compare(r: &Report) -> Accounting {
    let stats = &r.stats;
    let builtin = r.engine_loop.is_some();
    let mut all = Tally::new();
    all.merge(&r.tally);
    all.merge(&r.leftovers);
    let mut mismatches = Vec::new();
    let loop_runs = r.engine_loop.as_ref().map_or(0, |l| l.callback_runs);
    // What the built-in loop's own dispatch counted and no thread of ours
    // could observe (`run` does not say what became of each event):
    // - reruns: an event the loop found while a delivery thread ran the
    //   callback (a duplicate report) was folded into a rerun there;
    // - stale (generation only): an event the loop had collected for a
    //   watch that the churn thread deregistered before the loop got to
    //   dispatch it (a level-triggered fd stays ready until the epoll
    //   entry is deleted, which happens just after the slot dies, so a
    //   busy loop can collect it more than once). The loop's events carry
    //   real tokens on their own fd, so it never counts fd mismatches,
    //   out-of-range or wrong-kind tokens: those must match exactly.
    // With hooks, every outcome is observed: all must match exactly.
    let observed_deferred = all.outcome(OUT_DEFERRED);
    let observed_generation = all.outcome(OUT_STALE_GENERATION);
    let (loop_deferred, loop_stale) = if builtin {
        if stats.reruns < observed_deferred {
            mismatches.push(format!(
                "reruns: stats.reruns {} < Deferred outcomes observed {observed_deferred}",
                stats.reruns
            ));
        }
        if stats.stale.generation < observed_generation {
            mismatches.push(format!(
                "stale: generation: stats {} < observed {observed_generation}",
                stats.stale.generation
            ));
        }
        (
            stats.reruns.saturating_sub(observed_deferred),
            stats.stale.generation.saturating_sub(observed_generation),
        )
    } else {
        (0, 0)
    };
    // `expect(what, a, b)`: a must equal b (engine counts first where the
    // engine is one side).
    let mut expect = |what: &str, a: u64, b: u64| {
        if a != b {
            mismatches.push(format!("{what}: {a} != {b}"));
        }
    };
    expect(
        "callback runs (stats.dispatched vs runs on delivery and loop threads)",
        stats.dispatched,
        all.callback_runs + loop_runs,
    );
    expect(
        "reruns (stats.reruns vs Deferred, less the loop's)",
        stats.reruns,
        observed_deferred + loop_deferred,
    );
    expect(
        "stale: generation (less the loop's)",
        stats.stale.generation,
        observed_generation + loop_stale,
    );
    expect(
        "stale: fd mismatch",
        stats.stale.fd_mismatch,
        all.outcome(OUT_STALE_FD),
    );
    expect(
        "stale: out of range",
        stats.stale.out_of_range,
        all.outcome(OUT_STALE_RANGE),
    );
    expect(
        "stale: wrong kind",
        stats.stale.wrong_kind,
        all.outcome(OUT_STALE_KIND),
    );
    expect("registrations", stats.registered, r.registrations);
    expect("live registrations after teardown", stats.live(), 0);
    expect("callback panics", stats.panicked, 0);
    match &r.engine_loop {
        Some(l) => {
            expect(
                "timer callbacks on the loop thread vs heartbeats counted",
                l.timer_runs,
                r.timers_fired,
            );
            expect(
                "timers fired by occurred_timeout (none is reported live)",
                all.timer_dispatches,
                0,
            );
        }
        None => expect(
            "timer dispatches vs heartbeats counted",
            all.timer_dispatches,
            r.timers_fired,
        ),
    }
    expect(
        "timers fired + cancelled before firing vs armed",
        r.timers_fired + r.timers_cancelled,
        r.timers_armed,
    );
    // Fires whose token was not among the recent fires: all of them when
    // no token fired twice (see `FiredWindow`).
    expect(
        "distinct fired timer tokens",
        r.distinct_fired,
        r.timers_fired,
    );
    // Every item the loop made was handed to the engine exactly once: by
    // a delivery thread, or after teardown if the loop still held it back.
    let loop_out = &r.loop_out;
    for (o, name) in ORIGIN_NAMES.iter().enumerate() {
        let held = loop_out
            .held_back
            .iter()
            .filter(|i| i.origin as usize == o)
            .count() as u64;
        expect(
            &format!("{name} reports: delivered vs made by the loop"),
            r.tally.outcomes[o].iter().sum::<u64>() + held,
            loop_out.generated[o],
        );
    }
    expect(
        "late reports: delivered late vs held back",
        r.tally.late_delivered + loop_out.held_back.len() as u64,
        loop_out.late,
    );
    // Every fd watch ended by deregistration; every timer either fired or
    // was deregistered, never both.
    if !builtin {
        let hook_calls = &r.hook_calls;
        expect(
            "fd_deregister vs fd_register hooks",
            hook_calls[2],
            hook_calls[0],
        );
        expect(
            "fd_modify hooks vs successful modify()",
            hook_calls[1],
            r.churn.modify,
        );
        expect(
            "timeout_modify hooks vs successful reset_at()",
            hook_calls[4],
            r.churn.timer_reset,
        );
        expect(
            "timeout_deregister hooks + fired vs timeout_register hooks",
            hook_calls[5] + r.timers_fired,
            hook_calls[3],
        );
    }
    Accounting {
        mismatches,
        loop_deferred,
        loop_stale,
    }
}
