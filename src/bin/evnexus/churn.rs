//! The churn thread: re-registers watches on the same fd, replaces whole
//! channels (fd numbers reused), changes interests, and cancels, re-arms
//! and resets heartbeats, while reports of the old registrations race.

use crate::channels::{channel, retire_watch, watch_channel};
use crate::check::Check;
use crate::domains::Domain;
use crate::heartbeats::{arm_heartbeat, heartbeat_delay, retire_timer};
use crate::keepalive::{retire_keepalive, start_keepalive};
use crate::lock;
use crate::rng::Rng;
use crate::shared::Shared;
use evnexus::{Engine, Interest};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// What the churn thread did. Updates that are `Relaxed` are read only once
/// the thread has been joined, which orders them before the read.
#[derive(Default)]
pub(crate) struct ChurnCounts {
    pub(crate) rewatch: AtomicU64,
    pub(crate) new_channel: AtomicU64,
    pub(crate) timer_recreate: AtomicU64,
    pub(crate) timer_reset: AtomicU64,
    /// `reset_at` calls that failed: the timer fired meanwhile (the hook
    /// may have been called before the fire ended the registration).
    pub(crate) timer_reset_failed: AtomicU64,
    pub(crate) modify: AtomicU64,
    pub(crate) keepalive_recreate: AtomicU64,
    pub(crate) orphans: AtomicU64,
    pub(crate) drained_bytes: AtomicU64,
    pub(crate) lost_timers: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// [`ChurnCounts`] once the churn thread has stopped.
#[derive(Clone, Copy)]
pub(crate) struct ChurnTotals {
    pub(crate) rewatch: u64,
    pub(crate) new_channel: u64,
    pub(crate) timer_recreate: u64,
    pub(crate) timer_reset: u64,
    pub(crate) timer_reset_failed: u64,
    pub(crate) modify: u64,
    pub(crate) keepalive_recreate: u64,
    pub(crate) orphans: u64,
    pub(crate) drained_bytes: u64,
    /// With the ones found at teardown.
    pub(crate) lost_timers: u64,
    pub(crate) errors: u64,
}

impl ChurnCounts {
    pub(crate) fn totals(&self) -> ChurnTotals {
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        ChurnTotals {
            rewatch: get(&self.rewatch),
            new_channel: get(&self.new_channel),
            timer_recreate: get(&self.timer_recreate),
            timer_reset: get(&self.timer_reset),
            timer_reset_failed: get(&self.timer_reset_failed),
            modify: get(&self.modify),
            keepalive_recreate: get(&self.keepalive_recreate),
            orphans: get(&self.orphans),
            drained_bytes: get(&self.drained_bytes),
            lost_timers: get(&self.lost_timers),
            errors: get(&self.errors),
        }
    }
}

/// Churns random domains until `stop`, about one operation per 400 µs.
pub(crate) fn churn_thread(
    engine: &Engine,
    domains: &[Domain],
    shared: &Arc<Shared>,
    stop: &AtomicBool,
    c: &ChurnCounts,
) {
    let mut rng = Rng::new();
    let checks = &shared.checks;
    // One operation per 400 µs, but each domain churned no more often than
    // every 25 ms on average, so that most heartbeats (5-50 ms) still fire.
    let pace = Duration::from_micros(400).max(Duration::from_millis(25) / domains.len() as u32);
    let error = |what: &str, e: &dyn std::fmt::Display| {
        c.errors.fetch_add(1, Ordering::SeqCst);
        checks.fail(Check::Unexpected, || format!("churn, {what}: {e}"));
    };
    while !stop.load(Ordering::SeqCst) {
        while let Some(orphan) = shared.orphans.pop() {
            c.orphans.fetch_add(1, Ordering::Relaxed);
            if retire_timer(orphan, shared) {
                c.lost_timers.fetch_add(1, Ordering::SeqCst);
            }
        }
        let d = &domains[rng.index(domains.len())];
        match rng.below(110) {
            // Same fd, new registration: likely the same slot, next
            // generation, while old reports are still on their way.
            0..=39 => {
                let old = lock(&d.watch).take();
                let Some(old) = old else { continue };
                // The engine gives the channel's end back, open.
                let Some(reader) = retire_watch(old, shared) else {
                    continue;
                };
                match watch_channel(engine, reader, d.interest, &d.stats, shared) {
                    Ok(h) => *lock(&d.watch) = Some(h),
                    Err(e) => error("re-registering a watch", &e),
                }
                c.rewatch.fetch_add(1, Ordering::Relaxed);
            }
            // A new channel: the old fd number is closed and likely reused.
            40..=54 => {
                let old = lock(&d.watch).take();
                let Some(old) = old else { continue };
                let Some(reader) = retire_watch(old, shared) else {
                    continue;
                };
                let (new_reader, new_writer) = match channel() {
                    Ok(p) => p,
                    Err(e) => {
                        error("creating a channel", &e);
                        // Keep the domain served by its old channel.
                        if let Ok(h) = watch_channel(engine, reader, d.interest, &d.stats, shared) {
                            *lock(&d.watch) = Some(h);
                        }
                        continue;
                    }
                };
                let old_writer = std::mem::replace(&mut *lock(&d.writer), new_writer);
                drop(old_writer);
                // Nothing writes to the old channel any more and no
                // callback reads it: what is left in it was never reported
                // and is accounted for here.
                let mut buf = [0u8; 4096];
                loop {
                    match (&reader).read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            c.drained_bytes.fetch_add(n as u64, Ordering::SeqCst);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                drop(reader);
                // Its write stamp may be of a byte read just now.
                d.stats.write_stamp.store(0, Ordering::SeqCst);
                match watch_channel(engine, new_reader, d.interest, &d.stats, shared) {
                    Ok(h) => *lock(&d.watch) = Some(h),
                    Err(e) => error("watching a new channel", &e),
                }
                c.new_channel.fetch_add(1, Ordering::Relaxed);
            }
            // Cancel the heartbeat and start a new one (a sentinel once
            // 1 in 4 times), unless it is a sentinel still in its time.
            55..=89 if !d.heart.guarded(shared) => {
                let old = lock(&d.heart.slot).take();
                if let Some(old) = old {
                    if retire_timer(old, shared) {
                        c.lost_timers.fetch_add(1, Ordering::SeqCst);
                    }
                }
                match arm_heartbeat(engine, &d.heart, shared, heartbeat_delay(&mut rng)) {
                    Ok(h) => {
                        h.reg.sentinel.store(rng.one_in(4), Ordering::SeqCst);
                        let displaced = lock(&d.heart.slot).replace(h);
                        if let Some(displaced) = displaced {
                            if retire_timer(displaced, shared) {
                                c.lost_timers.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    Err(e) => error("arming a heartbeat", &e),
                }
                c.timer_recreate.fetch_add(1, Ordering::Relaxed);
            }
            // Change the watch's interest (fd_modify); READABLE (and the
            // triggering mode) stays in it. A live watch that we hold must
            // accept the change.
            90..=94 => {
                let slot = lock(&d.watch);
                if let Some(h) = slot.as_ref() {
                    let interest = if rng.one_in(2) {
                        d.interest | Interest::PRIORITY
                    } else {
                        d.interest
                    };
                    match h.watch.modify(interest) {
                        Ok(()) => {
                            c.modify.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => error("modifying a live watch", &e),
                    }
                }
            }
            // Move the heartbeat's deadline (timeout_modify), unless it is
            // a sentinel; then make it one 1 in 4 times.
            95..=99 if !d.heart.is_sentinel() => {
                let slot = lock(&d.heart.slot);
                if let Some(h) = slot.as_ref() {
                    let at = Instant::now() + heartbeat_delay(&mut rng);
                    let at_ns = shared.since_base(at);
                    h.reg.resets.fetch_add(1, Ordering::SeqCst);
                    h.reg.pending_deadline.store(at_ns, Ordering::SeqCst);
                    if h.timer.reset_at(at).is_ok() {
                        h.reg.deadline.store(at_ns, Ordering::SeqCst);
                        c.timer_reset.fetch_add(1, Ordering::Relaxed);
                        if rng.one_in(4) {
                            h.reg.sentinel.store(true, Ordering::SeqCst);
                        }
                    } else {
                        c.timer_reset_failed.fetch_add(1, Ordering::Relaxed);
                    }
                    h.reg.pending_deadline.store(0, Ordering::SeqCst);
                }
            }
            // Cancel the keepalive (it may be running, or have stopped
            // itself) and start a new one: period, phase and whether it
            // stops itself drawn anew.
            100..=109 => {
                let old = lock(&d.keepalive).take();
                if let Some(old) = old {
                    if retire_keepalive(old, shared) {
                        c.lost_timers.fetch_add(1, Ordering::SeqCst);
                    }
                }
                match start_keepalive(engine, shared, &mut rng) {
                    Ok(k) => *lock(&d.keepalive) = Some(k),
                    Err(e) => error("starting a keepalive", &e),
                }
                c.keepalive_recreate.fetch_add(1, Ordering::Relaxed);
            }
            // A sentinel heartbeat in its time: left alone.
            _ => {}
        }
        thread::sleep(pace);
    }
}
