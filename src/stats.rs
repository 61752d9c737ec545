//! Engine statistics: counters striped over cache lines so that threads
//! delivering events in parallel do not contend on one counter line.

use crate::slot::StaleReason;
use crate::sync::{thread_ordinal, Counter};
use crossbeam_utils::CachePadded;

const STRIPES: usize = 8;

#[derive(Debug, Default)]
struct Stripe {
    dispatched: Counter,
    reruns: Counter,
    stale_generation: Counter,
    stale_fd_mismatch: Counter,
    stale_out_of_range: Counter,
    stale_wrong_kind: Counter,
    recheck_suppressed: Counter,
    panicked: Counter,
    registered: Counter,
    deregistered: Counter,
}

#[derive(Debug, Default)]
pub(crate) struct StatCounters {
    stripes: [CachePadded<Stripe>; STRIPES],
    retired: Counter,
}

impl StatCounters {
    #[inline]
    fn mine(&self) -> &Stripe {
        &self.stripes[thread_ordinal() % STRIPES]
    }
    pub(crate) fn dispatched(&self) {
        self.mine().dispatched.add(1);
    }
    pub(crate) fn rerun(&self) {
        self.mine().reruns.add(1);
    }
    pub(crate) fn stale(&self, reason: StaleReason) {
        let s = self.mine();
        match reason {
            StaleReason::Generation => s.stale_generation.add(1),
            StaleReason::FdMismatch => s.stale_fd_mismatch.add(1),
            StaleReason::OutOfRange => s.stale_out_of_range.add(1),
            StaleReason::WrongKind => s.stale_wrong_kind.add(1),
        }
    }
    pub(crate) fn recheck_suppressed(&self) {
        self.mine().recheck_suppressed.add(1);
    }
    pub(crate) fn panicked(&self) {
        self.mine().panicked.add(1);
    }
    pub(crate) fn registered(&self) {
        self.mine().registered.add(1);
    }
    pub(crate) fn deregistered(&self) {
        self.mine().deregistered.add(1);
    }
    pub(crate) fn retired(&self) {
        self.retired.add(1);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let mut s = Stats::default();
        for st in &self.stripes {
            s.dispatched += st.dispatched.get();
            s.reruns += st.reruns.get();
            s.stale.generation += st.stale_generation.get();
            s.stale.fd_mismatch += st.stale_fd_mismatch.get();
            s.stale.out_of_range += st.stale_out_of_range.get();
            s.stale.wrong_kind += st.stale_wrong_kind.get();
            s.recheck_suppressed += st.recheck_suppressed.get();
            s.panicked += st.panicked.get();
            s.registered += st.registered.get();
            s.deregistered += st.deregistered.get();
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
    /// submitted to make room (nothing is dropped).
    pub ring_sq_full: u64,
    /// io_uring loop: times the completion queue overflowed into the
    /// kernel's backlog and was drained from there (nothing is lost).
    pub ring_cq_overflow: u64,
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
