//! The traffic thread: small messages written to random domains at a
//! steady rate, each stamped for the write -> callback latency.

use crate::domains::Domain;
use crate::lock;
use crate::rng::Rng;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// What the traffic thread wrote. Updates that are `Relaxed` are read only
/// once the thread has been joined, which orders them before the read.
#[derive(Default)]
pub(crate) struct Traffic {
    pub(crate) written: AtomicU64,
    pub(crate) messages: AtomicU64,
    pub(crate) would_block: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// [`Traffic`] once the traffic thread has stopped.
#[derive(Clone, Copy)]
pub(crate) struct TrafficTotals {
    /// Bytes.
    pub(crate) written: u64,
    pub(crate) messages: u64,
    /// Writes refused: the channel's buffer was full.
    pub(crate) would_block: u64,
    pub(crate) errors: u64,
}

impl Traffic {
    pub(crate) fn totals(&self) -> TrafficTotals {
        TrafficTotals {
            written: self.written.load(Ordering::SeqCst),
            messages: self.messages.load(Ordering::SeqCst),
            would_block: self.would_block.load(Ordering::SeqCst),
            errors: self.errors.load(Ordering::SeqCst),
        }
    }
}

/// Writes 8-64 byte messages to random domains, `rate` a second, until
/// `stop`; stamps each domain's oldest unseen write (`base`-relative).
pub(crate) fn traffic_thread(
    domains: &[Domain],
    rate: u64,
    base: Instant,
    stop: &AtomicBool,
    t: &Traffic,
) {
    let mut rng = Rng::new();
    let mut msg = [0u8; 64];
    for (i, b) in msg.iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    let start = Instant::now();
    let mut sent = 0u64;
    let burst = (rate / 20).max(1); // at most 50 ms worth at once
    while !stop.load(Ordering::SeqCst) {
        let target = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        if target > sent + burst {
            sent = target - burst; // fell behind (descheduled): do not flood
        }
        let mut written = 0u64;
        let mut messages = 0u64;
        while sent < target {
            sent += 1;
            let d = &domains[rng.index(domains.len())];
            let len = 8 + rng.index(57);
            let r = {
                let mut writer = lock(&d.writer);
                let at = Instant::now();
                let r = writer.write(&msg[..len]);
                if r.is_ok() {
                    // Stamped under the writer's lock, so that a channel
                    // swap (which clears the stamp) comes before or after.
                    let ns = u64::try_from(at.saturating_duration_since(base).as_nanos())
                        .unwrap_or(u64::MAX - 1);
                    let _ = d.stats.write_stamp.compare_exchange(
                        0,
                        ns + 1,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                }
                r
            };
            match r {
                Ok(n) => {
                    written += n as u64;
                    messages += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    t.would_block.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    t.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            if messages % 256 == 255 && stop.load(Ordering::SeqCst) {
                break;
            }
        }
        t.written.fetch_add(written, Ordering::SeqCst);
        t.messages.fetch_add(messages, Ordering::Relaxed);
        thread::sleep(Duration::from_micros(500));
    }
}
