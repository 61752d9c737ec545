//! The simulated domains: each a channel (see [`crate::channels`]), a
//! heartbeat (see [`crate::heartbeats`]) and a keepalive (see
//! [`crate::keepalive`]), with its counts.

use crate::channels::{channel, retire_watch, watch_channel, WatchHandle};
use crate::heartbeats::{arm_heartbeat, heartbeat_delay, retire_timer, Heart};
use crate::keepalive::{retire_keepalive, start_keepalive, KeepaliveHandle};
use crate::lock;
use crate::rng::Rng;
use crate::shared::Shared;
use evnexus::{Engine, Interest};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One domain's counts, shared by its callbacks and the traffic thread.
#[derive(Default)]
pub(crate) struct DomainStats {
    pub(crate) bytes_read: AtomicU64,
    pub(crate) beats: AtomicU64,
    /// When the oldest write that no callback has seen yet was made (ns
    /// after `Shared::base`, plus one; 0: none). The traffic thread sets
    /// it if unset, the callback takes it when it starts and clears it
    /// again once it has drained the channel.
    pub(crate) write_stamp: AtomicU64,
}

/// A simulated domain.
pub(crate) struct Domain {
    /// Edge-triggered (built-in loop, every other domain) or level.
    pub(crate) interest: Interest,
    pub(crate) writer: Mutex<UnixStream>,
    /// The channel's watch; taken by whoever deregisters or replaces it.
    pub(crate) watch: Mutex<Option<WatchHandle>>,
    pub(crate) heart: Arc<Heart>,
    /// The keepalive; taken by whoever cancels or replaces it.
    pub(crate) keepalive: Mutex<Option<KeepaliveHandle>>,
    pub(crate) stats: Arc<DomainStats>,
}

impl Domain {
    /// Domain `i`: a new channel, watched, and a heartbeat, armed.
    pub(crate) fn new(
        i: usize,
        engine: &Engine,
        shared: &Arc<Shared>,
        rng: &mut Rng,
    ) -> Result<Domain, String> {
        // Hooks carry level-triggered watches only (the libxl contract).
        let interest = if shared.builtin && i % 2 == 1 {
            Interest::READABLE | Interest::EDGE
        } else {
            Interest::READABLE
        };
        let (reader, writer) = channel().map_err(|e| format!("socketpair: {e}"))?;
        let stats = Arc::new(DomainStats::default());
        let heart = Arc::new(Heart {
            slot: Mutex::new(None),
            stats: Arc::clone(&stats),
        });
        let watch = watch_channel(engine, reader, interest, &stats, shared)
            .map_err(|e| format!("register_fd: {e}"))?;
        let beat = arm_heartbeat(engine, &heart, shared, heartbeat_delay(rng))
            .map_err(|e| format!("timer_at: {e}"))?;
        *lock(&heart.slot) = Some(beat);
        let keepalive =
            start_keepalive(engine, shared, rng).map_err(|e| format!("timer_every_at: {e}"))?;
        Ok(Domain {
            interest,
            writer: Mutex::new(writer),
            watch: Mutex::new(Some(watch)),
            heart,
            keepalive: Mutex::new(Some(keepalive)),
            stats,
        })
    }

    /// Ends the domain's watch, heartbeat and keepalive from outside any
    /// callback, checking each outcome (the channel's end is closed);
    /// returns the lost timer events (0 to 2).
    pub(crate) fn retire(&self, shared: &Shared) -> u64 {
        let watch = lock(&self.watch).take();
        if let Some(w) = watch {
            drop(retire_watch(w, shared));
        }
        let beat = lock(&self.heart.slot).take();
        let lost = beat.map_or(0, |b| u64::from(retire_timer(b, shared)));
        let keepalive = lock(&self.keepalive).take();
        lost + keepalive.map_or(0, |k| u64::from(retire_keepalive(k, shared)))
    }

    pub(crate) fn beats(&self) -> u64 {
        self.stats.beats.load(Ordering::SeqCst)
    }
}
