//! [`FreeSlots`]: the arena's free slot indices, in per-thread-shard
//! lock-free stacks threaded through the free slots themselves.
//!
//! A free slot's param word (unused while it is free) holds the index of
//! the next free slot of its stack, plus one (0 ends the stack). Each
//! stack's head is one word: the top index plus one in the low 32 bits and
//! a tag in the high 32 that every push and pop increments, so a pop that
//! read a head, was preempted while the slot was popped, reused and pushed
//! again, fails its CAS instead of installing a stale `next` (the ABA
//! problem; it would take 2^32 operations on one stack during that
//! preemption to defeat the tag).
//!
//! A thread pushes and pops its own shard (`thread_ordinal` modulo the
//! shard count), so threads on different shards never touch the same head:
//! registering and deregistering on several threads at once does not bounce
//! a shared cache line (the global queue it replaces was 35% of a
//! registration's profile, and bounced at two threads). A thread whose shard
//! is empty takes from the others before the arena claims a fresh slot.
//! Nothing allocates: the links live in the slots.
//!
//! A thread that frees many slots in a row (the built-in loop firing a
//! turn's timers) links them into a chain first and pushes the chain with
//! one CAS (`Arena::batch`). The loop's shard is the stack a thread that
//! hands timers to the loop pops from, so one CAS per slot moved its head
//! between the two cores twice per timer: a third of the CPU samples of
//! the `timers` bench's `remote_register_fire` row were on that head and
//! the link beside it.
//!
//! Reuse is LIFO within a shard: a slot freed is the next one handed out
//! on that thread, so its generation advances as fast as that thread
//! churns. Generations never wrap; a slot reused 2^40 times (nine hours of
//! back-to-back register and deregister on one thread) is retired, at the
//! cost of its 64 bytes.

use crate::base::sync::{prefetch_write, thread_ordinal, AtomicU64, Ordering};
use crate::nexus::slot::Slot;
use crossbeam_utils::CachePadded;

/// Stacks per arena: at least as many as the threads that register at once
/// on the machines this is built for; a power of two.
const SHARDS: usize = 16;

pub(crate) struct FreeSlots {
    heads: [CachePadded<AtomicU64>; SHARDS],
}

const INDEX_MASK: u64 = 0xffff_ffff;

/// A head word: tag above, top index plus one below (0: empty).
const fn head(tag: u64, top: Option<u32>) -> u64 {
    (tag << 32)
        | match top {
            Some(i) => i as u64 + 1,
            None => 0,
        }
}

const fn top_of(head: u64) -> Option<u32> {
    match head & INDEX_MASK {
        0 => None,
        n => Some((n - 1) as u32),
    }
}

const fn tag_of(head: u64) -> u64 {
    head >> 32
}

impl Default for FreeSlots {
    fn default() -> Self {
        FreeSlots {
            heads: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))),
        }
    }
}

impl FreeSlots {
    #[inline]
    fn home() -> usize {
        thread_ordinal() % SHARDS
    }

    /// Pushes free slot `index` (whose slot is `slot`) on this thread's
    /// stack. The caller owns the released slot.
    pub(crate) fn push<C>(&self, index: u32, slot: &Slot<C>) {
        self.push_chain(index, slot);
    }

    /// Links free slot `slot` in front of a chain whose top is `next`
    /// (`None`: the slot starts one), for [`push_chain`](Self::push_chain).
    /// The caller owns the slot, and the chain is its own until pushed.
    pub(crate) fn link<C>(slot: &Slot<C>, next: Option<u32>) {
        slot.set_param(next.map_or(0, |i| i as u64 + 1));
    }

    /// Pushes a chain of free slots on this thread's stack with one CAS:
    /// `top` is the first slot's index, `bottom` the last slot (a chain of
    /// one: the same slot), each slot above it linked to the next with
    /// [`link`](Self::link). The caller owns every slot of the chain.
    pub(crate) fn push_chain<C>(&self, top: u32, bottom: &Slot<C>) {
        let head_word = &self.heads[Self::home()];
        // Relaxed: the CAS below validates whatever was read.
        let mut h = head_word.load(Ordering::Relaxed);
        loop {
            Self::link(bottom, top_of(h));
            // Release: the links (the chain's and the one above) and the
            // released, emptied slots are visible to whoever pops any of
            // them (Acquire in `pop`; a pop of a slot below the top reads
            // a head written by the pops before it, read-modify-writes that
            // continue this store's release sequence).
            match head_word.compare_exchange_weak(
                h,
                head(tag_of(h).wrapping_add(1) & INDEX_MASK, Some(top)),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => h = actual,
            }
        }
    }

    /// Pops a free slot, from this thread's stack first, then from the
    /// others: its index and the slot, which `get` finds by index (found
    /// once, to read the link, and handed back so the caller need not look
    /// it up again).
    #[inline]
    pub(crate) fn pop<'a, C: 'a>(
        &self,
        get: impl Fn(u32) -> Option<&'a Slot<C>>,
    ) -> Option<(u32, &'a Slot<C>)> {
        let home = Self::home();
        (0..SHARDS).find_map(|k| self.pop_from(&self.heads[(home + k) % SHARDS], &get))
    }

    #[inline]
    fn pop_from<'a, C: 'a>(
        &self,
        head_word: &AtomicU64,
        get: &impl Fn(u32) -> Option<&'a Slot<C>>,
    ) -> Option<(u32, &'a Slot<C>)> {
        // Acquire: pairs with the Release of `push`, so the top slot's link
        // is the one written before it was pushed.
        let mut h = head_word.load(Ordering::Acquire);
        loop {
            let top = top_of(h)?;
            // Every pushed index has its slot (`push` was handed it), so
            // `None` cannot happen; it would be an empty stack if it did.
            let slot = get(top)?;
            // The link may be stale if the slot was popped meanwhile (then
            // the tag has moved on and the CAS fails).
            let next = slot.param() & INDEX_MASK;
            let next = (next != 0).then(|| (next - 1) as u32);
            // Acquire on success: this thread now owns the slot, and sees
            // what its last owner did before pushing it.
            match head_word.compare_exchange_weak(
                h,
                head(tag_of(h).wrapping_add(1) & INDEX_MASK, next),
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // The next pop on this thread most likely takes the
                    // slot below; when another thread freed it (the loop,
                    // for timers this thread hands it), its line is on that
                    // thread's core: ask for it now.
                    if let Some(below) = next.and_then(get) {
                        prefetch_write(below);
                    }
                    return Some((top, slot));
                }
                Err(actual) => h = actual,
            }
        }
    }
}

#[cfg(all(test, not(evnexus_loom)))]
mod tests {
    use super::*;
    use crate::base::token::Generation;

    #[test]
    fn head_words_pack_tag_and_top() {
        assert_eq!(top_of(head(5, Some(7))), Some(7));
        assert_eq!(top_of(head(5, None)), None);
        assert_eq!(tag_of(head(5, Some(0))), 5);
        assert_eq!(top_of(head(1, Some(u32::MAX - 1))), Some(u32::MAX - 1));
    }

    #[test]
    fn a_thread_gets_back_what_it_freed_last_first_and_then_from_other_shards() {
        let slots: Vec<Slot<()>> = (0..4).map(|_| Slot::new(Generation::FIRST)).collect();
        let get = |i: u32| slots.get(i as usize);
        let free = FreeSlots::default();
        let pop = || free.pop(get).map(|(i, slot)| (i, slot as *const Slot<()>));
        let at = |i: u32| Some((i, &slots[i as usize] as *const Slot<()>));
        assert_eq!(pop(), None);
        free.push(0, &slots[0]);
        free.push(2, &slots[2]);
        assert_eq!(pop(), at(2), "the index with its own slot");
        // Another thread's frees are found when this thread's stack is empty.
        std::thread::scope(|s| {
            s.spawn(|| free.push(3, &slots[3]));
        });
        assert_eq!(pop(), at(0));
        assert_eq!(pop(), at(3));
        assert_eq!(pop(), None);
    }
}

/// loom model of the stacks: two threads pop and push at once (one of them
/// twice, the ABA shape: pop a, pop b, push a), and no slot is ever owned
/// by both. Run with the loom cfg: `cargo test --release --lib` (see
/// `tests/loom.rs` for the flags).
#[cfg(all(test, evnexus_loom))]
mod loom_tests {
    use super::*;
    use crate::base::token::Generation;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;

    struct Fixture {
        slots: Vec<Slot<()>>,
        owned: Vec<AtomicBool>,
        free: FreeSlots,
    }

    impl Fixture {
        /// Three slots, all on the free stacks.
        fn with_three_free() -> Arc<Fixture> {
            let f = Arc::new(Fixture {
                slots: (0..3).map(|_| Slot::new(Generation::FIRST)).collect(),
                owned: (0..3).map(|_| AtomicBool::new(false)).collect(),
                free: FreeSlots::default(),
            });
            for i in 0..3 {
                f.free.push(i, &f.slots[i as usize]);
            }
            f
        }
        fn take(&self) -> Option<u32> {
            let (i, _) = self.free.pop(|i| self.slots.get(i as usize))?;
            assert!(
                !self.owned[i as usize].swap(true, Ordering::SeqCst),
                "slot {i} handed out twice"
            );
            Some(i)
        }
        fn give(&self, i: u32) {
            self.owned[i as usize].store(false, Ordering::SeqCst);
            self.free.push(i, &self.slots[i as usize]);
        }
        /// Gives `top` and `bottom` back as one chain (`FreeBatch`'s push).
        fn give_chain(&self, top: u32, bottom: u32) {
            self.owned[top as usize].store(false, Ordering::SeqCst);
            self.owned[bottom as usize].store(false, Ordering::SeqCst);
            FreeSlots::link(&self.slots[bottom as usize], None);
            FreeSlots::link(&self.slots[top as usize], Some(bottom));
            self.free.push_chain(top, &self.slots[bottom as usize]);
        }
        fn take_all(&self) -> Vec<u32> {
            let mut all: Vec<u32> = std::iter::from_fn(|| self.take()).collect();
            all.sort_unstable();
            all
        }
    }

    /// A chain pushed with one CAS while another thread pops and pushes
    /// single slots: every slot of the chain comes back exactly once, and
    /// none is owned by two threads (the pops below the chain's top read
    /// links written before the chain's push).
    #[test]
    fn a_chain_pushed_while_another_thread_pops_and_pushes_loses_and_duplicates_nothing() {
        crate::base::sync::loom_check(|| {
            let f = Fixture::with_three_free();
            let a = f.take().expect("three free slots");
            let b = f.take().expect("two free slots");
            let g = f.clone();
            let other = loom::thread::spawn(move || {
                let x = g.take();
                let y = g.take();
                for i in [x, y].into_iter().flatten() {
                    g.give(i);
                }
            });
            f.give_chain(b, a);
            other.join().unwrap();
            assert_eq!(f.take_all(), vec![0, 1, 2], "a slot was lost or duplicated");
        });
    }

    #[test]
    fn concurrent_pops_and_pushes_never_hand_a_slot_out_twice() {
        crate::base::sync::loom_check(|| {
            let f = Fixture::with_three_free();
            let g = f.clone();
            let other = loom::thread::spawn(move || {
                if let Some(x) = g.take() {
                    g.give(x);
                }
            });
            let a = f.take();
            let b = f.take();
            if let Some(a) = a {
                f.give(a);
            }
            other.join().unwrap();
            if let Some(b) = b {
                f.give(b);
            }
            assert_eq!(f.take_all(), vec![0, 1, 2], "a slot was lost or duplicated");
        });
    }
}
