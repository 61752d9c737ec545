//! Engine statistics, counted where the events happen without a locked
//! instruction: each thread owns a stripe of counters (one cache line of
//! its own) and adds with a plain load and store; a snapshot sums the
//! stripes. Threads beyond [`OWNED_STRIPES`] share one stripe and add
//! atomically.

use crate::base::sync::{owned_stripe, Counter, OWNED_STRIPES};
use crate::base::token::StaleReason;
use crossbeam_utils::CachePadded;

#[derive(Debug, Default)]
struct Stripe {
    dispatched: Counter,
    reruns: Counter,
    /// By [`StaleReason`] as index.
    stale: [Counter; 4],
    recheck_suppressed: Counter,
    panicked: Counter,
    registered: Counter,
    deregistered: Counter,
    closed_while_registered: Counter,
}

pub(crate) struct StatCounters {
    owned: Box<[CachePadded<Stripe>; OWNED_STRIPES]>,
    shared: CachePadded<Stripe>,
    retired: Counter,
}

impl Default for StatCounters {
    fn default() -> Self {
        StatCounters {
            owned: Box::new(std::array::from_fn(|_| CachePadded::default())),
            shared: CachePadded::default(),
            retired: Counter::default(),
        }
    }
}

impl StatCounters {
    /// Adds one to the counter `field` picks, in this thread's stripe.
    #[inline(always)]
    fn bump(&self, field: impl Fn(&Stripe) -> &Counter) {
        match owned_stripe() {
            Some(i) => field(&self.owned[i]).bump_owned(),
            None => field(&self.shared).add(1),
        }
    }
    #[inline]
    pub(crate) fn dispatched(&self) {
        self.bump(|s| &s.dispatched);
    }
    #[inline]
    pub(crate) fn rerun(&self) {
        self.bump(|s| &s.reruns);
    }
    #[inline]
    pub(crate) fn stale(&self, reason: StaleReason) {
        self.bump(|s| &s.stale[reason as usize]);
    }
    #[inline]
    pub(crate) fn recheck_suppressed(&self) {
        self.bump(|s| &s.recheck_suppressed);
    }
    #[inline]
    pub(crate) fn panicked(&self) {
        self.bump(|s| &s.panicked);
    }
    #[inline]
    pub(crate) fn registered(&self) {
        self.bump(|s| &s.registered);
    }
    #[inline]
    pub(crate) fn deregistered(&self) {
        self.bump(|s| &s.deregistered);
    }
    #[inline]
    pub(crate) fn closed_while_registered(&self) {
        self.bump(|s| &s.closed_while_registered);
    }
    #[inline]
    pub(crate) fn retired(&self) {
        self.retired.add(1);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let mut s = Stats::default();
        for st in self.owned.iter().chain(std::iter::once(&self.shared)) {
            s.dispatched += st.dispatched.get();
            s.reruns += st.reruns.get();
            s.stale.generation += st.stale[StaleReason::Generation as usize].get();
            s.stale.fd_mismatch += st.stale[StaleReason::FdMismatch as usize].get();
            s.stale.out_of_range += st.stale[StaleReason::OutOfRange as usize].get();
            s.stale.wrong_kind += st.stale[StaleReason::WrongKind as usize].get();
            s.recheck_suppressed += st.recheck_suppressed.get();
            s.panicked += st.panicked.get();
            s.registered += st.registered.get();
            s.deregistered += st.deregistered.get();
            s.closed_while_registered += st.closed_while_registered.get();
        }
        s.retired_slots = self.retired.get();
        s
    }
}

/// Counts of what an engine has done, from [`Engine::stats`](crate::Engine::stats).
///
/// Each field is exact once the threads that update it are quiet; a
/// snapshot taken while events flow sums counters read at slightly
/// different moments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Callback runs (a rerun counts as a run).
    pub dispatched: u64,
    /// Events that arrived while their callback was running and were folded
    /// into a rerun instead of running concurrently.
    pub reruns: u64,
    /// Events rejected, by reason.
    pub stale: StaleCounts,
    /// Runs skipped because the fd re-check found the condition gone.
    pub recheck_suppressed: u64,
    /// Callbacks that panicked.
    pub panicked: u64,
    /// Registrations made (a registration whose backend hook then failed
    /// counts here and in `deregistered`).
    pub registered: u64,
    /// Registrations ended (deregistered, cancelled, fired, failed).
    pub deregistered: u64,
    /// Slots retired at the maximum generation.
    pub retired_slots: u64,
    /// io_uring loop: times the submission queue was full and was
    /// submitted to make room (nothing is dropped). The ring carries one
    /// wait operation (and its cancel), so this stays 0 unless the kernel
    /// misbehaves.
    pub ring_sq_full: u64,
    /// io_uring loop: times the completion queue overflowed into the
    /// kernel's backlog and was drained from there (nothing is lost); 0 in
    /// practice, as above.
    pub ring_cq_overflow: u64,
    /// Deregistrations that found the watch's fd closed while it was still
    /// registered (the kernel entry could not be removed; see
    /// [`Error::ClosedWhileRegistered`](crate::Error::ClosedWhileRegistered)).
    pub closed_while_registered: u64,
    /// Built-in loops: kernel entries that outlived their watch (fd closed
    /// while registered, file kept open by a duplicate) that the loop found
    /// reporting and removed.
    pub orphans_removed: u64,
    /// Built-in loops: such entries found that could not be removed (the
    /// file is kept open only by another process, or `/proc` or `unshare`
    /// is unavailable); the loop keeps waking for them until the last copy
    /// of the file is closed.
    pub orphans_left: u64,
}

/// Rejected events by reason; see [`StaleReason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StaleCounts {
    /// Old generation, or the registration has ended.
    pub generation: u64,
    /// Live generation, different fd.
    pub fd_mismatch: u64,
    /// Index beyond the arena, or malformed token.
    pub out_of_range: u64,
    /// A timer token as an fd event or the reverse.
    pub wrong_kind: u64,
}

impl StaleCounts {
    /// All rejected events.
    pub fn total(&self) -> u64 {
        self.generation + self.fd_mismatch + self.out_of_range + self.wrong_kind
    }
}

impl Stats {
    /// Registrations live now: made minus ended.
    pub fn live(&self) -> u64 {
        self.registered.saturating_sub(self.deregistered)
    }
}
