//! The built-in loops' injector: a steady stream of reports that race the
//! engine's own loop (replays, duplicates, forged, wrong fd, wrong kind).

use crate::items::{forge, replay, Dead, Item, Kind, LoopOut, Origin, Sink};
use crate::lock;
use crate::rng::Rng;
use crate::shared::Shared;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Reports one delivery queue may hold before the injector skips it: about
/// 40 ms of reports at the default rate (late reports come from the dead
/// tokens replayed, not from queueing). The first soak had 16,384 here:
/// the four queues' backlog (up to 3.7 MB of `Item`s) rose and fell with
/// the delivery threads' scheduling, and the program's RSS with it, by 23%
/// on a 4 MB process, hiding any trend of the engine's own memory.
const QUEUE_LIMIT: usize = 512;

/// Built-in loop: what the delivery threads hammer `occurred_*` with while
/// the loop carries the genuine events. About `per_sec` reports a second:
/// replays of dead tokens (40 %), duplicate reports of live fd watches
/// with their own fd (25 %), forged tokens (12 %), live fd tokens with
/// another fd (12 %), live tokens of the wrong kind (11 %). A live timer
/// token is never reported as a timeout: that would be the application
/// saying the timer is due, and fire it early.
///
/// A report goes to a random delivery queue, unless that queue holds
/// [`QUEUE_LIMIT`] reports already: then it is not made (and counted), so
/// that delivery threads that fall behind cannot make the queues, and this
/// program's memory, grow with the run time.
pub(crate) fn injector(shared: &Shared, sink: &Sink, per_sec: u64, stop: &AtomicBool) -> LoopOut {
    let threads = lock(&sink.threads).clone();
    let mut rng = Rng::new();
    let mut out = LoopOut::default();
    let mut live_fds: Vec<(u64, RawFd)> = Vec::new();
    let mut live_timers: Vec<u64> = Vec::new();
    let mut dead: Vec<Dead> = Vec::new();
    let mut refreshed: Option<Instant> = None;
    let mut woken = vec![false; threads.len()];
    let start = Instant::now();
    let burst = (per_sec / 20).max(1); // at most 50 ms worth at once
    let mut made = 0u64;
    while !stop.load(Ordering::SeqCst) {
        out.iterations += 1;
        let now = Instant::now();
        // Snapshots of what is live and dead, refreshed every few ms: a
        // token live in the snapshot may have ended by the time it is
        // reported, as with any late report.
        let every = Duration::from_millis(5) + Duration::from_nanos(200 * live_fds.len() as u64);
        if refreshed.map_or(true, |r| now.saturating_duration_since(r) >= every) {
            live_fds.clear();
            live_fds.extend(lock(&shared.watch_regs).iter().map(|(&t, r)| (t, r.fd)));
            live_timers.clear();
            live_timers.extend(lock(&shared.timer_regs).keys().copied());
            dead.clear();
            dead.extend(lock(&shared.graveyard).iter().copied());
            refreshed = Some(now);
        }
        let target = (start.elapsed().as_secs_f64() * per_sec as f64) as u64;
        if target > made + burst {
            made = target - burst; // fell behind (descheduled): do not flood
        }
        for _ in made..target {
            let k = rng.index(sink.queues.len());
            if sink.queues[k].len() >= QUEUE_LIMIT {
                out.skipped += 1;
                continue;
            }
            let item = match rng.below(100) {
                0..=39 if !dead.is_empty() => {
                    let victim = dead[rng.index(dead.len())];
                    replay(&mut rng, victim, &live_fds, now)
                }
                40..=64 if !live_fds.is_empty() => {
                    let (token, fd) = live_fds[rng.index(live_fds.len())];
                    Item::injected(Kind::Fd, Origin::Duplicate, token, fd, now)
                }
                77..=88 if !live_fds.is_empty() => {
                    let (token, fd) = live_fds[rng.index(live_fds.len())];
                    let other = live_fds[rng.index(live_fds.len())].1;
                    let wrong = if other == fd { fd + 1 } else { other };
                    Item::injected(Kind::Fd, Origin::WrongFd, token, wrong, now)
                }
                89..=99 if !live_fds.is_empty() => {
                    if rng.one_in(2) && !live_timers.is_empty() {
                        let token = live_timers[rng.index(live_timers.len())];
                        let fd = live_fds[rng.index(live_fds.len())].1;
                        Item::injected(Kind::Fd, Origin::WrongKind, token, fd, now)
                    } else {
                        let (token, fd) = live_fds[rng.index(live_fds.len())];
                        Item::injected(Kind::Timeout, Origin::WrongKind, token, fd, now)
                    }
                }
                _ => forge(&mut rng, &live_fds, now),
            };
            out.generated[item.origin as usize] += 1;
            sink.queues[k].push(item);
            woken[k] = true;
        }
        made = target;
        for (k, w) in woken.iter_mut().enumerate() {
            if std::mem::take(w) {
                threads[k].unpark();
            }
        }
        thread::sleep(Duration::from_micros(250));
    }
    out
}
