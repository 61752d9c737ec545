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
    /// Keepalive runs that ran no callback (engine count less observed).
    pub(crate) keepalive_silent: u64,
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
    // Keepalives (periodic timers) are chains of one-shot timers that the
    // engine registers itself, one per run; the program sees their runs,
    // not their registrations. Each chain registers one timer per run,
    // plus one when a cancel stops it with a run pending: that timer is
    // deregistered, or fires without running the callback (it finds the
    // cancel begun: "silent"). So, per keepalive the cancel stopped:
    // at most one timer more than runs, at most one silent fire.
    let k = &r.keepalives;
    let observed_runs = all.callback_runs + loop_runs;
    let silent = stats.dispatched.saturating_sub(observed_runs);
    let links = stats.registered.saturating_sub(r.registrations);
    if stats.dispatched < observed_runs {
        mismatches.push(format!(
            "callback runs: stats.dispatched {} < runs on delivery and loop threads {observed_runs}",
            stats.dispatched
        ));
    }
    if stats.registered < r.registrations {
        mismatches.push(format!(
            "registrations: stats.registered {} < made by the program {}",
            stats.registered, r.registrations
        ));
    }
    if links < k.runs || links - k.runs > k.cancelled || silent > links - k.runs {
        mismatches.push(format!(
            "keepalives: {links} one-shot timers registered (stats.registered less the \
             program's) for {} runs, {} stopped by cancel, {silent} silent fires",
            k.runs, k.cancelled
        ));
    }
    if !builtin {
        // A reset that loses to a fire (the application's report of the
        // old deadline) may have called the hook before the fire ended
        // the registration: it fails all the same.
        let hooked = r.hook_calls[4];
        let resets = r.churn.timer_reset..=r.churn.timer_reset + r.churn.timer_reset_failed;
        if !resets.contains(&hooked) {
            mismatches.push(format!(
                "timeout_modify hooks {hooked} vs reset_at() calls: {} succeeded, {} failed",
                r.churn.timer_reset, r.churn.timer_reset_failed
            ));
        }
    }
    // `expect(what, a, b)`: a must equal b (engine counts first where the
    // engine is one side).
    let mut expect = |what: &str, a: u64, b: u64| {
        if a != b {
            mismatches.push(format!("{what}: {a} != {b}"));
        }
    };
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
            "timer dispatches vs heartbeats, keepalive runs and silent fires",
            all.timer_dispatches,
            r.timers_fired + k.runs + silent,
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
            "timeout_register hooks vs heartbeats armed + keepalive timers",
            hook_calls[3],
            r.timers_armed + links,
        );
        expect(
            "timeout_deregister hooks + fired vs timeout_register hooks",
            hook_calls[5] + r.timers_fired + k.runs + silent,
            hook_calls[3],
        );
    }
    Accounting {
        mismatches,
        loop_deferred,
        loop_stale,
        keepalive_silent: silent,
    }
}
