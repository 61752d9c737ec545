//! [`HandleCount`]: how many handles share one reference to an engine,
//! counted in per-thread stripes.
//!
//! Every `Timer` and `FdWatch` keeps its engine alive. With a reference
//! count on the engine itself (an `Arc` clone per handle), each
//! registration and each deregistration did a locked add on one cache line
//! that every registering thread shares: at two threads that line moved
//! between the cores on every handle, and the handle's count cost more than
//! the rest of the registration (`arena` bench, `evnexus-engine` against
//! `evnexus-engine-token`). So the handles share *one* reference, held for
//! them collectively, and count themselves here, each thread on a stripe
//! (a cache line) of its own. A stripe's count may go below zero (a handle
//! made on one thread and dropped on another); only the sum means anything.
//!
//! The sum is only needed once: when the engine goes away and no handle can
//! be made any more, [`HandleCount::close`] swaps every stripe for
//! [`CLOSED`], adds up what they held, and from then on the count lives in
//! `central`. A handle that finds its stripe closed counts there instead;
//! whoever brings `central` to zero (the closer, or the last handle out)
//! lets go of the collective reference. This is the Linux kernel's
//! `percpu_ref` (per-CPU counts until a switch to one atomic count), with
//! the closer's atomic swap in place of the RCU grace period that makes the
//! switch safe there: a count on a stripe is a read-modify-write that lands
//! either before the swap, and is in the sum, or after it, where it sees
//! the closed value it modified and counts on `central` instead.
//!
//! Handles that count down on `central` while the closer is still adding up
//! the stripes take it below zero (it starts at zero, and no handle is made
//! any more); the closer's add of the sum brings it to the number of handles
//! still out. So `central` is one, and a handle's count-down takes it to
//! zero, only after the close.

use crate::base::sync::{thread_ordinal, AtomicU64, Ordering};
use crossbeam_utils::CachePadded;

/// Stripes per count: as many as the free list's shards (threads that
/// register at once on the machines this is built for); 2 under loom.
#[cfg(not(evnexus_loom))]
const STRIPES: usize = 16;
#[cfg(evnexus_loom)]
const STRIPES: usize = 2;

/// What the closer leaves in a stripe. A live stripe's count is a sum of
/// +1s and -1s of far fewer than 2^62 handles, as a wrapping `u64`: within
/// 2^62 of zero. Counts made on a closed stripe (which nobody reads again)
/// leave it within 2^62 of this.
const CLOSED: u64 = 1 << 63;

/// Whether a stripe's value is a closed one (see [`CLOSED`]).
#[inline]
const fn closed(v: u64) -> bool {
    v.wrapping_add(1 << 62) >= 1 << 63
}

pub(crate) struct HandleCount {
    stripes: [CachePadded<AtomicU64>; STRIPES],
    /// Zero while open; once closed, the handles still out (below zero, as
    /// a wrapping `u64`, while the closer adds up the stripes).
    central: AtomicU64,
}

impl HandleCount {
    pub(crate) fn new() -> HandleCount {
        HandleCount {
            stripes: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))),
            central: AtomicU64::new(0),
        }
    }

    #[inline]
    fn stripe(&self) -> &AtomicU64 {
        &self.stripes[thread_ordinal() % STRIPES]
    }

    /// Counts a new handle. The caller holds a reference to the engine
    /// (that is how it makes a handle), so the collective reference cannot
    /// be let go meanwhile; and it is never called after [`close`]: once
    /// the engine is closed no handle can be made (debug builds check).
    ///
    /// [`close`]: HandleCount::close
    #[inline]
    pub(crate) fn take(&self) {
        // Relaxed: a handle is made from a reference the caller holds, so
        // nothing needs to be ordered before the increment (as in
        // `Arc::clone`). Whether it lands before the closer's swap (and is
        // in its sum) or after is decided by the two read-modify-writes'
        // order on the stripe, whatever the memory ordering.
        let old = self.stripe().fetch_add(1, Ordering::Relaxed);
        if closed(old) {
            debug_assert!(false, "a handle made after its engine closed");
            // Counted where the closer looks; see the doc above.
            self.central.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a handle gone. Returns `true` when the caller must let go of
    /// the collective reference: the engine is closed and this was the
    /// last handle.
    #[inline]
    pub(crate) fn put(&self) -> bool {
        // Release: this handle's use of the engine happens before the
        // closer's AcqRel swap of this stripe reads the count. If the swap
        // came first, the count-down lands on a closed stripe, which nobody
        // reads again, and is made on `central` instead.
        let old = self.stripe().fetch_sub(1, Ordering::Release);
        if !closed(old) {
            return false;
        }
        // AcqRel, as `Arc`'s drop: Release orders this handle's use of the
        // engine before the count; Acquire, for the one that reaches zero,
        // orders every other handle's use (counted here, or on a stripe the
        // closer acquired) before the engine may be freed.
        self.central.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Closes the count: no handle will be made any more (the engine's last
    /// owner is going away). Returns `true` when no handle is out, and the
    /// caller must let go of the collective reference itself. Called once.
    pub(crate) fn close(&self) -> bool {
        let mut sum = 0u64;
        for stripe in &self.stripes {
            // AcqRel: Acquire takes in the uses of the engine by handles
            // counted down on this stripe (their Release); Release hands
            // ours on to whoever reaches zero on `central`.
            let v = stripe.swap(CLOSED, Ordering::AcqRel);
            debug_assert!(!closed(v), "closed twice");
            sum = sum.wrapping_add(v);
        }
        // AcqRel: as in `put`. The handles that counted down on `central`
        // meanwhile left it at minus their number; this leaves the handles
        // still out.
        self.central
            .fetch_add(sum, Ordering::AcqRel)
            .wrapping_add(sum)
            == 0
    }
}

#[cfg(all(test, not(evnexus_loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_last_handle_out_after_the_close_lets_go() {
        let c = HandleCount::new();
        c.take();
        c.take();
        assert!(!c.put(), "open: nobody lets go");
        assert!(!c.close(), "one handle is still out");
        assert!(c.put(), "the last handle out lets go");
    }

    #[test]
    fn stripe_values_near_zero_are_open_and_near_closed_are_closed() {
        for v in [0u64, 1, 1 << 40, (1u64 << 40).wrapping_neg(), u64::MAX] {
            assert!(!closed(v), "{v:#x}");
        }
        for v in [CLOSED, CLOSED + (1 << 40), CLOSED - (1 << 40)] {
            assert!(closed(v), "{v:#x}");
        }
    }

    #[test]
    fn the_closer_lets_go_when_no_handle_is_out() {
        let c = HandleCount::new();
        c.take();
        assert!(!c.put());
        assert!(c.close());
    }

    #[test]
    fn handles_made_on_one_thread_and_dropped_on_others_add_up() {
        let c = HandleCount::new();
        for _ in 0..1000 {
            c.take();
        }
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        assert!(!c.put());
                    }
                });
            }
        });
        assert!(!c.close(), "200 handles are still out");
        let lets_go = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..50).filter(|_| c.put()).count()))
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .sum::<usize>()
        });
        assert_eq!(lets_go, 1, "exactly one handle lets go");
    }
}

#[cfg(all(test, evnexus_loom))]
mod loom_tests {
    use super::*;
    use crate::base::sync::{loom_check, Arc};

    /// The collective reference: a loom `Arc` that loom reports if it is
    /// let go of twice (a use after free) or never (a leak).
    struct Engine {
        handles: HandleCount,
    }

    fn let_go(engine: &Arc<Engine>) {
        // SAFETY: the count said this caller holds the collective
        // reference, taken with `into_raw` in `two_handles`; it is let go
        // of once.
        unsafe { Arc::decrement_strong_count(Arc::as_ptr(engine)) };
    }

    /// An engine with its collective reference taken and two handles out,
    /// one of them being dropped on another thread.
    fn two_handles() -> (Arc<Engine>, loom::thread::JoinHandle<()>) {
        let engine = Arc::new(Engine {
            handles: HandleCount::new(),
        });
        let _collective = Arc::into_raw(Arc::clone(&engine));
        engine.handles.take();
        engine.handles.take();
        let e = Arc::clone(&engine);
        let t = loom::thread::spawn(move || {
            if e.handles.put() {
                let_go(&e);
            }
        });
        (engine, t)
    }

    /// A handle dropped on another thread races the close: exactly one of
    /// them lets go of the collective reference, whichever order the
    /// swap and the count-downs take.
    #[test]
    fn a_handle_dropped_during_the_close_lets_go_exactly_once() {
        loom_check(|| {
            let (engine, t) = two_handles();
            if engine.handles.put() {
                let_go(&engine);
            }
            if engine.handles.close() {
                let_go(&engine);
            }
            t.join().unwrap();
            assert_eq!(Arc::strong_count(&engine), 1, "let go of exactly once");
        });
    }

    /// A handle dropped on another thread races the close while a second
    /// one is dropped after it: whichever of the two is last out lets go,
    /// the closer does not (a handle is out when it closes).
    #[test]
    fn the_last_of_two_handles_out_after_the_close_lets_go_once() {
        loom_check(|| {
            let (engine, t) = two_handles();
            assert!(!engine.handles.close(), "a handle is still out");
            if engine.handles.put() {
                let_go(&engine);
            }
            t.join().unwrap();
            assert_eq!(Arc::strong_count(&engine), 1, "let go of exactly once");
        });
    }
}
