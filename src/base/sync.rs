//! The one place that names `std::sync::atomic` or `loom`.
//!
//! Everything that takes part in a concurrency protocol (the slot state word,
//! the arena's page table and fresh-index counter, the free list, the waiter
//! condvar, the thread-local dispatch context) is imported from here, so that
//! `RUSTFLAGS="--cfg evnexus_loom"` swaps the whole crate onto loom's model-checked
//! primitives at once. Statistics counters are deliberately *not* switched:
//! they take part in no protocol, and modelling them would only multiply
//! loom's state space (see [`Counter`]).
//!
//! The cfg is `evnexus_loom`, not the customary `loom`: tokio and
//! sharded-slab (dev-dependencies, as benchmark peers) switch on `cfg(loom)`
//! themselves and do not build that way outside their own test suites; a
//! crate-specific name (as crossbeam's `crossbeam_loom`) keeps them out.

#[cfg(evnexus_loom)]
mod imp {
    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64};
    pub(crate) use loom::sync::{Arc, Condvar, Mutex};
    use std::cell::Cell;

    loom::thread_local! {
        pub(crate) static CALLBACK_DEPTH: Cell<u32> = Cell::new(0);
        pub(crate) static HOOK_DEPTH: Cell<u32> = Cell::new(0);
    }

    /// A small number distinct per model thread. loom runs its threads as
    /// coroutines on one OS thread, so a `std` thread-local would be shared
    /// by all of them. The numbers restart with every execution (loom's
    /// `lazy_static` is per execution): with a process-wide counter, the
    /// stripe or shard a model thread picks would depend on the models
    /// run before and beside it, and loom's replay of an execution could
    /// then touch other atomics than the run it replays.
    pub(crate) fn thread_ordinal() -> usize {
        use std::sync::atomic::AtomicUsize;
        loom::lazy_static! {
            static ref NEXT: AtomicUsize = AtomicUsize::new(0);
        }
        loom::thread_local! {
            static ORDINAL: Cell<usize> = Cell::new(usize::MAX);
        }
        ORDINAL.with(|o| {
            if o.get() == usize::MAX {
                // Relaxed: only distinctness of the values matters.
                o.set(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            }
            o.get()
        })
    }

    /// Under loom every thread counts in the shared, atomic stripe (the
    /// per-thread claim is a `std` thread-local, shared by loom's threads).
    #[inline]
    pub(crate) fn owned_stripe() -> Option<usize> {
        None
    }

    /// Backs off inside a spin loop. Under loom a spin must yield, or the
    /// model checker would explore the spinning thread forever.
    pub(crate) fn spin_wait(_round: u32) {
        loom::thread::yield_now();
    }

    /// `UnsafeCell` with loom's closure-based access, so loom can check
    /// that every access is ordered by the slot protocol.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(loom::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::cell::UnsafeCell::new(value))
        }
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            self.0.with_mut(f)
        }
    }

    /// A claim flag under loom: a blocking flag. A spin lock (even one that
    /// yields) makes loom's bounded scheduler spin forever once it has used
    /// up its preemptions with the holder preempted.
    #[derive(Debug)]
    pub(crate) struct ClaimFlag {
        held: Mutex<bool>,
        released: Condvar,
    }

    impl ClaimFlag {
        pub(crate) fn new() -> Self {
            Self {
                held: Mutex::new(false),
                released: Condvar::new(),
            }
        }
        pub(crate) fn acquire(&self) {
            let mut held = self.held.lock().unwrap();
            while *held {
                held = self.released.wait(held).unwrap();
            }
            *held = true;
        }
        pub(crate) fn release(&self) {
            *self.held.lock().unwrap() = false;
            self.released.notify_one();
        }
    }

    /// A lock-free queue under loom: a mutex-guarded deque, because loom
    /// cannot see the happens-before edges inside crossbeam's lock-free
    /// queue and would report false races on slot cells handed from one
    /// owner to the next through it.
    #[derive(Debug)]
    pub(crate) struct Queue<T>(Mutex<std::collections::VecDeque<T>>);

    impl<T> Default for Queue<T> {
        fn default() -> Self {
            Self(Mutex::new(std::collections::VecDeque::new()))
        }
    }

    impl<T> Queue<T> {
        pub(crate) fn push(&self, value: T) {
            self.0.lock().unwrap().push_back(value);
        }
        pub(crate) fn pop(&self) -> Option<T> {
            self.0.lock().unwrap().pop_front()
        }
        pub(crate) fn len(&self) -> usize {
            self.0.lock().unwrap().len()
        }
        pub(crate) fn is_empty(&self) -> bool {
            self.0.lock().unwrap().is_empty()
        }
    }
}

#[cfg(not(evnexus_loom))]
mod imp {
    use std::cell::Cell;
    pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64};
    pub(crate) use std::sync::{Arc, Condvar, Mutex};

    std::thread_local! {
        /// How many callbacks the thread is running (nested dispatch).
        pub(crate) static CALLBACK_DEPTH: Cell<u32> = const { Cell::new(0) };
        /// How many application hooks the thread is running.
        pub(crate) static HOOK_DEPTH: Cell<u32> = const { Cell::new(0) };
    }

    /// A small number distinct per thread (0 for the first thread that
    /// asks, 1 for the next, ...), for telling the loop's driver apart.
    pub(crate) fn thread_ordinal() -> usize {
        use std::sync::atomic::AtomicUsize;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        std::thread_local! {
            static ORDINAL: Cell<usize> = const { Cell::new(usize::MAX) };
        }
        ORDINAL.with(|o| {
            if o.get() == usize::MAX {
                // Relaxed: only distinctness of the values matters.
                o.set(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            }
            o.get()
        })
    }

    /// The statistics stripe the calling thread owns, if it could claim one:
    /// the first 64 threads alive at once each own one (in every engine) and
    /// count with plain stores; further threads share an atomic stripe. The
    /// claim is released when the thread exits.
    #[inline]
    pub(crate) fn owned_stripe() -> Option<usize> {
        use super::Ordering;
        static CLAIMED: AtomicU64 = AtomicU64::new(0);

        struct Claim(Option<usize>);

        impl Claim {
            fn new() -> Claim {
                // Acquire: pairs with the Release in `drop`, so the new owner
                // sees the old owner's counts.
                let mut bits = CLAIMED.load(Ordering::Acquire);
                loop {
                    if bits == u64::MAX {
                        return Claim(None);
                    }
                    let i = (!bits).trailing_zeros() as usize;
                    match CLAIMED.compare_exchange_weak(
                        bits,
                        bits | 1 << i,
                        Ordering::Acquire,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return Claim(Some(i)),
                        Err(actual) => bits = actual,
                    }
                }
            }
        }

        impl Drop for Claim {
            fn drop(&mut self) {
                if let Some(i) = self.0 {
                    // Release: see `new`.
                    CLAIMED.fetch_and(!(1 << i), Ordering::Release);
                }
            }
        }

        std::thread_local! {
            static CLAIM: Claim = Claim::new();
        }
        // During thread teardown the claim may be gone: share then.
        CLAIM.try_with(|c| c.0).ok().flatten()
    }

    /// Backs off inside a spin loop: a few rounds of `spin_loop` hints, then
    /// yields the CPU. Only control operations ever spin (a modify waiting
    /// for another control operation's hook call to return); no event path
    /// does.
    pub(crate) fn spin_wait(round: u32) {
        if round < 6 {
            for _ in 0..(1u32 << round) {
                std::hint::spin_loop();
            }
        } else {
            std::thread::yield_now();
        }
    }

    /// `UnsafeCell` with the closure-based access that loom requires, so the
    /// same code compiles against both.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }
        #[inline]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// A flag one thread at a time may hold, for at most one system call:
    /// taken with a swap, waited for by spinning with back-off.
    #[derive(Debug)]
    pub(crate) struct ClaimFlag(AtomicBool);

    impl ClaimFlag {
        pub(crate) const fn new() -> Self {
            Self(AtomicBool::new(false))
        }
        pub(crate) fn acquire(&self) {
            let mut round = 0;
            // Acquire: pairs with the Release in `release`, so the holder
            // sees what the previous holder did under the flag.
            while self.0.swap(true, super::Ordering::Acquire) {
                spin_wait(round);
                round += 1;
            }
        }
        pub(crate) fn release(&self) {
            // Release: see `acquire`.
            self.0.store(false, super::Ordering::Release);
        }
    }

    /// A lock-free unbounded MPMC FIFO: crossbeam's `SegQueue`. It carries
    /// a built-in loop's timer hand-overs from other threads.
    #[derive(Debug)]
    pub(crate) struct Queue<T>(crossbeam_queue::SegQueue<T>);

    impl<T> Default for Queue<T> {
        fn default() -> Self {
            Self(crossbeam_queue::SegQueue::new())
        }
    }

    impl<T> Queue<T> {
        #[inline]
        pub(crate) fn push(&self, value: T) {
            self.0.push(value);
        }
        #[inline]
        pub(crate) fn pop(&self) -> Option<T> {
            self.0.pop()
        }
        /// How many are queued (exact when nobody pushes or pops).
        pub(crate) fn len(&self) -> usize {
            self.0.len()
        }
        /// Nothing queued: two loads, where a `pop` on an empty queue
        /// takes several times the instructions. A push that completed
        /// before the call is seen (both index loads are `SeqCst`, like
        /// `pop`'s own emptiness check).
        #[inline]
        pub(crate) fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
    }
}

pub(crate) use imp::*;

/// Runs a loom model of the crate's own unit tests, with a preemption
/// bound of 3 unless `LOOM_MAX_PREEMPTIONS` sets one.
#[cfg(all(test, evnexus_loom))]
pub(crate) fn loom_check(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

pub(crate) use std::sync::atomic::Ordering;

/// Asks the CPU to bring `value`'s cache line into this core's cache, to be
/// written, ahead of its use: a line another core wrote last (a slot that
/// another thread registered or freed) then arrives while this thread is
/// still busy with the one before. A hint: it changes nothing the program
/// computes, and is nothing on other architectures.
#[inline(always)]
pub(crate) fn prefetch_write<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing into the program and never faults,
    // whatever the address; this one is a live reference's anyway.
    // (`_MM_HINT_ET0` is `prefetchw`, a plain prefetch where the CPU lacks it.)
    #[allow(unused_unsafe)] // safe to call on newer compilers, not on the MSRV's
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(
            (value as *const T).cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// A plain `std` `Arc`, under loom too, for what no protocol shares (a
/// waker's handle on the wake-up eventfd).
pub(crate) use std::sync::Arc as StdArc;

/// A statistics counter. Always a plain `std` atomic, under loom too: no
/// protocol reads it, so `Relaxed` is enough for every access (a snapshot is
/// a sum of independent counts, never used to decide anything).
#[derive(Debug, Default)]
pub(crate) struct Counter(std::sync::atomic::AtomicU64);

impl Counter {
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        // Relaxed: a pure event count; see the type's doc.
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        // Relaxed: see the type's doc.
        self.0.load(Ordering::Relaxed)
    }
    /// Adds one to a counter that only the calling thread writes (a stripe
    /// it owns, see [`owned_stripe`]): a plain load and store, no locked
    /// instruction.
    #[inline]
    pub(crate) fn bump_owned(&self) {
        // Relaxed: a single writer (the stripe's owner), so load+store loses
        // nothing; readers only sum. A stripe changes owner through the
        // Release/Acquire pair on the claim bitmap, which orders the old
        // owner's last store before the new owner's first load.
        self.0
            .store(self.0.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    /// Publishes a count kept elsewhere by one thread.
    pub(crate) fn set(&self, n: u64) {
        // Relaxed: see the type's doc.
        self.0.store(n, Ordering::Relaxed);
    }
}

/// A number never handed out twice in this process (1, 2, ...), naming an
/// engine. Plain `std` under loom too, like [`Counter`].
pub(crate) fn next_engine_id() -> u64 {
    // `std`'s, not `imp`'s (loom's under the model).
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    // Relaxed: only uniqueness matters.
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A process-wide flag that is only ever raised: plain `std` under loom
/// too, like [`Counter`]. For a test aid's "has anyone asked yet" check.
#[cfg(feature = "testing")]
#[derive(Debug)]
pub(crate) struct Raised(std::sync::atomic::AtomicBool);

#[cfg(feature = "testing")]
impl Raised {
    pub(crate) const fn new() -> Raised {
        Raised(std::sync::atomic::AtomicBool::new(false))
    }
    pub(crate) fn raise(&self) {
        // Relaxed: see `is_raised`.
        self.0.store(true, Ordering::Relaxed);
    }
    /// Whether `raise` was called. Relaxed is enough for a reader that
    /// only needs its own thread's `raise` (program order); another
    /// thread's may be seen late, which such a reader does not mind.
    #[inline]
    pub(crate) fn is_raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Statistics stripes that threads can own exclusively.
pub(crate) const OWNED_STRIPES: usize = 64;
