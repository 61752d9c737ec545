//! The summary table and its last line, `misdeliveries: N`.

use crate::app_loop::HOOK_NAMES;
use crate::check::CHECK_NAMES;
use crate::churn::ChurnTotals;
use crate::cli::{Config, SimBackend};
use crate::delivery::{
    Tally, OUT_DEFERRED, OUT_DISPATCHED, OUT_STALE_FD, OUT_STALE_GENERATION, OUT_STALE_KIND,
    OUT_STALE_RANGE, OUT_SUPPRESSED,
};
use crate::engine_loop::EngineLoopOut;
use crate::hist::Hist;
use crate::items::{LoopOut, ORIGIN_NAMES};
use crate::keepalive::KeepaliveTotals;
use crate::rss::Curve;
use crate::traffic::TrafficTotals;
use evnexus::BackendKind;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::Duration;

/// Everything a run measured, for [`print_report`].
pub(crate) struct Report {
    pub(crate) cfg: Config,
    /// What ran (`Engine::backend`).
    pub(crate) backend: BackendKind,
    pub(crate) edge_domains: usize,
    /// Built-in loop only.
    pub(crate) engine_loop: Option<EngineLoopOut>,
    /// Reruns and stale outcomes the built-in loop counted itself.
    pub(crate) loop_deferred: u64,
    pub(crate) loop_stale: u64,
    pub(crate) write_latency: Hist,
    pub(crate) timers_cancelled: u64,
    pub(crate) keepalives: KeepaliveTotals,
    /// Keepalive runs whose one-shot timer fired after a cancel had
    /// begun, so that it ran no callback (engine count less observed).
    pub(crate) keepalive_silent: u64,
    /// When a SIGTERM ended the load phase, if one did.
    pub(crate) terminated_at: Option<Duration>,
    pub(crate) load: Duration,
    pub(crate) drain: Duration,
    pub(crate) drained: bool,
    pub(crate) teardown: Duration,
    pub(crate) tally: Tally,
    pub(crate) leftovers: Tally,
    pub(crate) loop_out: LoopOut,
    pub(crate) hook_calls: [u64; 6],
    pub(crate) stats: evnexus::Stats,
    pub(crate) traffic: TrafficTotals,
    pub(crate) bytes_read: u64,
    pub(crate) churn: ChurnTotals,
    /// Successful registrations (fd watches and timers).
    pub(crate) registrations: u64,
    pub(crate) timers_fired: u64,
    /// Fires whose token had not fired recently (see `FiredWindow`).
    pub(crate) distinct_fired: u64,
    pub(crate) timers_armed: u64,
    pub(crate) silent_domains: usize,
    pub(crate) lost_reports: u64,
    pub(crate) early_after_reset: u64,
    /// Dead-token replays after teardown, and how many were dispatched.
    pub(crate) final_sweep: (u64, u64),
    /// Peak resident set (`VmHWM`), KiB.
    pub(crate) peak_rss_kib: Option<u64>,
    /// `--rss-every`: the resident set through the load phase.
    pub(crate) rss: Option<Curve>,
    /// Engine counts that disagree with the observed ones.
    pub(crate) accounting: Vec<String>,
    pub(crate) check_counts: [u64; 9],
    pub(crate) notes: Vec<String>,
}

/// `1234567` as `1,234,567`.
pub(crate) fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Nanoseconds as µs (ms from 10 ms up); `-` for none.
fn micros(ns: Option<u64>) -> String {
    match ns {
        None => "-".to_owned(),
        Some(ns) if ns >= 10_000_000 => format!("{:.1} ms", ns as f64 / 1e6),
        Some(ns) => format!("{:.1} µs", ns as f64 / 1e3),
    }
}

/// `kib` KiB as `1,234 KiB`.
fn kib(kib: u64) -> String {
    format!("{} KiB", group(kib))
}

/// The memory rows: peak RSS always, the sampled curve with `--rss-every`.
fn rss_rows(s: &mut String, r: &Report) {
    let row = |s: &mut String, label: &str, value: String| {
        let _ = writeln!(s, "  {label:<40} {value}");
    };
    row(
        s,
        "peak RSS (VmHWM)",
        r.peak_rss_kib.map_or_else(|| "unavailable".to_owned(), kib),
    );
    let Some(c) = &r.rss else {
        return;
    };
    if c.samples == 0 {
        row(
            s,
            "RSS curve",
            "unavailable (no VmRSS in /proc/self/status)".to_owned(),
        );
        return;
    }
    row(
        s,
        &format!(
            "RSS every {} s, {} samples",
            c.every.as_secs_f64(),
            c.samples
        ),
        format!(
            "first {} / min {} / max {} / last {}",
            group(c.first),
            group(c.min),
            group(c.max),
            kib(c.last)
        ),
    );
    let warmup = format!("  after {} s warm-up", c.warmup.as_secs_f64());
    match &c.settled {
        Some(w) => row(
            s,
            &format!("{warmup}, {} samples", w.samples),
            format!(
                "min {} / max {}   max/min {:.3}",
                group(w.min),
                kib(w.max),
                w.ratio()
            ),
        ),
        None => row(s, &warmup, "no sample (run longer)".to_owned()),
    }
}

/// Prints the table; `true` if every check passed.
pub(crate) fn print_report(r: &Report) -> bool {
    let t = &r.tally;
    let active = (r.load + r.drain).as_secs_f64();
    let calls = t.calls();
    let misdeliveries: u64 = r.check_counts.iter().sum();
    let lost_bytes = r.traffic.written.abs_diff(r.bytes_read);
    let lost_timers = r.churn.lost_timers;
    let builtin = r.engine_loop.is_some();
    let mut s = String::new();
    let row = |s: &mut String, label: &str, value: String| {
        let _ = writeln!(s, "  {label:<40} {value}");
    };
    let ring_entries = r.cfg.ring_entries.unwrap_or(256);
    let (name, what) = match r.backend {
        BackendKind::Uring => (
            "uring",
            format!("the engine's built-in loop on io_uring, {ring_entries}-entry ring"),
        ),
        BackendKind::Epoll if r.cfg.backend == SimBackend::Default => (
            "epoll",
            "the engine's built-in loop on epoll: the kernel refused io_uring".to_owned(),
        ),
        BackendKind::Epoll => ("epoll", "the engine's built-in loop on epoll".to_owned()),
        BackendKind::Hooks => ("hooks", "application poll() loop".to_owned()),
        _ => ("other", "unexpected backend".to_owned()),
    };
    let _ = writeln!(
        s,
        "evnexus load simulation: {name} backend ({what}), {} domains, {} delivery threads",
        r.cfg.domains, r.cfg.threads
    );
    row(
        &mut s,
        "backend (Engine::backend)",
        format!("{:?}", r.backend),
    );
    if r.backend == BackendKind::Uring {
        row(
            &mut s,
            "  ring: entries / SQ full / CQ overflow",
            format!(
                "{ring_entries} / {} / {}   (stats.ring_sq_full, ring_cq_overflow)",
                group(r.stats.ring_sq_full),
                group(r.stats.ring_cq_overflow)
            ),
        );
    }
    row(
        &mut s,
        "duration",
        format!(
            "{:.2} s load + {:.3} s drain + {:.3} s teardown",
            r.load.as_secs_f64(),
            r.drain.as_secs_f64(),
            r.teardown.as_secs_f64()
        ),
    );
    if let Some(at) = r.terminated_at {
        row(
            &mut s,
            "ended early by SIGTERM",
            format!(
                "after {:.2} s of load: drain, teardown and every check as usual",
                at.as_secs_f64()
            ),
        );
    }
    row(
        &mut s,
        "domains / delivery threads",
        format!(
            "{} / {}   ({} watches level-triggered, {} edge-triggered)",
            r.cfg.domains,
            r.cfg.threads,
            r.cfg.domains - r.edge_domains,
            r.edge_domains
        ),
    );
    row(
        &mut s,
        if builtin {
            "occurred calls racing the loop"
        } else {
            "occurred calls delivered"
        },
        format!(
            "{}   ({} events/s)",
            group(calls),
            group((calls as f64 / active) as u64)
        ),
    );
    for (i, name) in ORIGIN_NAMES.iter().enumerate() {
        let n: u64 = t.outcomes[i].iter().sum();
        let (name, extra) = match (i, builtin) {
            // The loop carries the genuine events.
            (0, true) => continue,
            (0, false) => (
                *name,
                format!(
                    "   ({} of them late, held 1-20 ms)",
                    group(t.late_delivered)
                ),
            ),
            (1, true) => ("live fd token, right fd", String::new()),
            _ => (*name, String::new()),
        };
        row(&mut s, &format!("  {name}"), format!("{}{extra}", group(n)));
    }
    match &r.engine_loop {
        Some(l) => row(
            &mut s,
            "callback runs: loop / delivery threads",
            format!(
                "{} / {}   (engine: dispatched {}; {} timer runs on the loop, {} loop errors)",
                group(l.callback_runs),
                group(t.callback_runs),
                group(r.stats.dispatched),
                group(l.timer_runs),
                l.errors
            ),
        ),
        None => row(
            &mut s,
            "callback runs (engine: dispatched)",
            format!(
                "{}   ({})",
                group(t.callback_runs),
                group(r.stats.dispatched)
            ),
        ),
    }
    row(
        &mut s,
        "  Dispatched outcomes",
        group(t.outcome(OUT_DISPATCHED)),
    );
    row(
        &mut s,
        "  Deferred (folded into reruns)",
        if builtin {
            format!(
                "{}   (and {} of the loop's events folded into a delivery thread's run)",
                group(t.outcome(OUT_DEFERRED)),
                group(r.loop_deferred)
            )
        } else {
            group(t.outcome(OUT_DEFERRED))
        },
    );
    row(&mut s, "  Suppressed", group(t.outcome(OUT_SUPPRESSED)));
    let stale: u64 = (OUT_STALE_GENERATION..=OUT_STALE_KIND)
        .map(|o| t.outcome(o))
        .sum();
    row(&mut s, "stale rejected", group(stale));
    for (o, name) in [
        (OUT_STALE_GENERATION, "generation"),
        (OUT_STALE_FD, "fd mismatch"),
        (OUT_STALE_RANGE, "out of range"),
        (OUT_STALE_KIND, "wrong kind"),
    ] {
        row(&mut s, &format!("  {name}"), group(t.outcome(o)));
    }
    row(
        &mut s,
        if builtin {
            "  of live-token reports (watch ended)"
        } else {
            "  of genuine/duplicated reports"
        },
        group(
            (OUT_STALE_GENERATION..=OUT_STALE_KIND)
                .map(|o| t.outcomes[0][o] + t.outcomes[1][o])
                .sum(),
        ),
    );
    if builtin {
        row(
            &mut s,
            "  by the loop (engine count - observed)",
            format!(
                "{}   (events of watches ended before the loop dispatched them)",
                group(r.loop_stale)
            ),
        );
    }
    row(
        &mut s,
        "timers fired / cancelled / armed",
        if builtin {
            format!(
                "{} / {} / {}   ({} domains never beat; every fire checked against its current deadline)",
                group(r.timers_fired),
                group(r.timers_cancelled),
                group(r.timers_armed),
                r.silent_domains
            )
        } else {
            format!(
                "{} / {} / {}   ({} domains never beat; {} ran before a deadline moved by a racing reset)",
                group(r.timers_fired),
                group(r.timers_cancelled),
                group(r.timers_armed),
                r.silent_domains,
                r.early_after_reset
            )
        },
    );
    let k = &r.keepalives;
    row(
        &mut s,
        "keepalives (periodic timers)",
        format!(
            "{} started, {} runs, {} periods skipped, {} stopped by cancel \
             ({} of those fired silently), worst lateness {}",
            group(k.started),
            group(k.runs),
            group(k.missed),
            group(k.cancelled),
            group(r.keepalive_silent),
            micros(Some(k.worst_late.as_nanos() as u64))
        ),
    );
    row(
        &mut s,
        "churn: re-registrations",
        format!(
            "{} same fd, {} new channel (fd reused); {} interest changes",
            group(r.churn.rewatch),
            group(r.churn.new_channel),
            group(r.churn.modify)
        ),
    );
    row(
        &mut s,
        "churn: timers",
        format!(
            "{} cancelled+re-armed, {} reset, {} orphans cancelled; {} keepalives replaced",
            group(r.churn.timer_recreate),
            group(r.churn.timer_reset),
            group(r.churn.orphans),
            group(r.churn.keepalive_recreate)
        ),
    );
    if builtin {
        row(
            &mut s,
            "injector",
            if r.loop_out.skipped == 0 {
                format!("{} batches", group(r.loop_out.iterations))
            } else {
                format!(
                    "{} batches   ({} reports not made: delivery queues full)",
                    group(r.loop_out.iterations),
                    group(r.loop_out.skipped)
                )
            },
        );
    } else {
        row(
            &mut s,
            "hook calls",
            HOOK_NAMES
                .iter()
                .zip(r.hook_calls)
                .map(|(n, c)| format!("{n} {}", group(c)))
                .collect::<Vec<_>>()
                .join(", "),
        );
        row(
            &mut s,
            "app loop",
            format!(
                "{} iterations, {} poll errors",
                group(r.loop_out.iterations),
                r.loop_out.errors
            ),
        );
    }
    row(
        &mut s,
        "bytes written / read",
        format!(
            "{} / {}   ({} messages, {} read at channel swaps, {} writes refused: buffer full)",
            group(r.traffic.written),
            group(r.bytes_read),
            group(r.traffic.messages),
            group(r.churn.drained_bytes),
            group(r.traffic.would_block)
        ),
    );
    let w = &r.write_latency;
    let write_latency = |what: &str| {
        format!(
            "{} / {}   (traffic write -> callback start{what}, {} samples)",
            micros(w.quantile(0.50)),
            micros(w.quantile(0.99)),
            group(w.count)
        )
    };
    if builtin {
        row(&mut s, "dispatch latency p50 / p99", write_latency(""));
    } else {
        row(
            &mut s,
            "dispatch latency p50 / p99",
            format!(
                "{} / {}   (loop detection -> callback start, on-time reports, {} samples)",
                micros(t.on_time.quantile(0.50)),
                micros(t.on_time.quantile(0.99)),
                group(t.on_time.count)
            ),
        );
        row(
            &mut s,
            "  late reports p50 / p99",
            format!(
                "{} / {}   ({} samples)",
                micros(t.late.quantile(0.50)),
                micros(t.late.quantile(0.99)),
                group(t.late.count)
            ),
        );
        row(
            &mut s,
            "  write -> callback p50 / p99",
            write_latency(", late reports included"),
        );
    }
    row(
        &mut s,
        "after teardown",
        format!(
            "{} held-back reports and {} dead-token replays: {} dispatched",
            r.loop_out.held_back.len(),
            group(r.final_sweep.0),
            r.leftovers.outcome(OUT_DISPATCHED) + r.leftovers.outcome(OUT_DEFERRED)
        ),
    );
    rss_rows(&mut s, r);
    let _ = writeln!(s, "checks");
    for (name, n) in CHECK_NAMES.iter().zip(r.check_counts) {
        row(&mut s, &format!("  {name}"), n.to_string());
    }
    row(
        &mut s,
        "  lost events: bytes never read",
        if r.drained {
            lost_bytes.to_string()
        } else {
            format!("{lost_bytes} (drain timed out)")
        },
    );
    row(
        &mut s,
        "  lost events: live fd reports rejected",
        r.lost_reports.to_string(),
    );
    row(
        &mut s,
        "  lost events: timers never fired",
        format!("{lost_timers}   (live report rejected, or >2 s overdue)"),
    );
    row(
        &mut s,
        "  engine stats vs observed",
        if r.accounting.is_empty() {
            "agree".to_owned()
        } else {
            format!("{} mismatches", r.accounting.len())
        },
    );
    if r.traffic.errors != 0 || r.churn.errors != 0 {
        row(
            &mut s,
            "  i/o errors",
            format!("{} writes, {} churn", r.traffic.errors, r.churn.errors),
        );
    }
    let _ = writeln!(s, "misdeliveries: {misdeliveries}");
    print!("{s}");
    let _ = io::stdout().flush();
    for note in &r.notes {
        eprintln!("evnexus: {note}");
    }
    for a in &r.accounting {
        eprintln!("evnexus: accounting mismatch: {a}");
    }
    if lost_bytes != 0 {
        eprintln!("evnexus: {lost_bytes} bytes written were never read (lost events)");
    }
    if lost_timers != 0 {
        eprintln!(
            "evnexus: {lost_timers} timers never fired although a live report of them was rejected or they were over 2 s overdue (lost events)"
        );
    }
    if r.lost_reports != 0 {
        eprintln!(
            "evnexus: {} genuine reports of live fd watches were rejected (lost events)",
            r.lost_reports
        );
    }
    misdeliveries == 0
        && lost_bytes == 0
        && lost_timers == 0
        && r.lost_reports == 0
        && r.accounting.is_empty()
}
