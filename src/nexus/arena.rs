//! The nexus arena: slots in lazily allocated pages that live as long as the
//! engine, and a lock-free free list of slot indices.
//!
//! The slots live in a [`Pages`] table: page `k` holds `32 << k` slots, so
//! the page of an index is one leading-zeros count away, a small engine
//! touches a few KiB, and 20 pages cover all 2^24 indices a token can
//! name. Pages are allocated the
//! first time an index in them is claimed and freed only when the arena is
//! dropped, so any index below the claimed count names valid memory for the
//! whole life of the engine: a token can be checked against its slot
//! without any guard or reference count.

use crate::base::pages::Pages;
use crate::base::sync::{AtomicU32, Ordering};
use crate::base::token::{Generation, MAX_SLOTS};
use crate::nexus::free::FreeSlots;
use crate::nexus::slot::Slot;

/// The first page holds 32 slots (2 KiB); under loom, 2, to keep the
/// model's object count small.
#[cfg(not(evnexus_loom))]
const FIRST_PAGE_SHIFT: u32 = 5;
#[cfg(evnexus_loom)]
const FIRST_PAGE_SHIFT: u32 = 1;
/// Enough pages that their slots cover every index a token can hold.
const PAGES: usize = pages_for(MAX_SLOTS);

const fn pages_for(slots: usize) -> usize {
    let mut pages = 0;
    let mut covered = 0;
    while covered < slots {
        covered += (1 << FIRST_PAGE_SHIFT) << pages;
        pages += 1;
    }
    pages
}

type SlotPages<C> = Pages<Slot<C>, FIRST_PAGE_SHIFT, PAGES>;

pub(crate) struct Arena<C> {
    /// `Send`/`Sync` exactly when the slots are.
    pages: SlotPages<C>,
    /// How many indices have ever been handed out fresh (`0..claimed`).
    claimed: AtomicU32,
    /// The most indices this arena hands out.
    limit: u32,
    free: FreeSlots,
    /// The generation a fresh slot starts at (1, or near the maximum in
    /// tests of retirement).
    first_generation: Generation,
}

/// The arena has no free slot and may claim no fresh one.
#[derive(Debug)]
pub(crate) struct Full;

impl<C> Arena<C> {
    pub(crate) fn new(limit: usize, first_generation: Generation) -> Arena<C> {
        Arena {
            pages: Pages::new(),
            claimed: AtomicU32::new(0),
            limit: limit.min(MAX_SLOTS) as u32,
            free: FreeSlots::default(),
            first_generation,
        }
    }

    /// The slot at `index`, if its page exists. Never dereferences anything
    /// but the page table for an index that was never claimed.
    #[inline]
    pub(crate) fn get(&self, index: u32) -> Option<&Slot<C>> {
        if index >= self.limit {
            return None;
        }
        self.pages.get(index)
    }

    /// Hands out a free slot index: a released one first, else a fresh one.
    /// The caller owns the returned slot until it publishes it.
    pub(crate) fn alloc(&self) -> Result<(u32, &Slot<C>), Full> {
        match self.free.pop(|i| self.get(i)) {
            Some(free) => Ok(free),
            None => self.claim_fresh(),
        }
    }

    fn claim_fresh(&self) -> Result<(u32, &Slot<C>), Full> {
        // Relaxed: the counter only hands out distinct indices; the slot
        // memory is published by the page CAS in `Pages::get_or_make`.
        let mut n = self.claimed.load(Ordering::Relaxed);
        loop {
            if n >= self.limit {
                return Err(Full);
            }
            match self
                .claimed
                .compare_exchange_weak(n, n + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => n = actual,
            }
        }
        let first_generation = self.first_generation;
        // The limit is at most MAX_SLOTS, which the pages cover: `None`
        // cannot happen, and would be a full arena if it did.
        let slot = self
            .pages
            .get_or_make(n, || Slot::new(first_generation))
            .ok_or(Full)?;
        Ok((n, slot))
    }

    /// Puts released slot `index`, which is `slot` (the caller found it
    /// by that index, so it need not be looked up again), back for reuse.
    pub(crate) fn recycle(&self, index: u32, slot: &Slot<C>) {
        debug_assert!(
            self.get(index).is_some_and(|s| std::ptr::eq(s, slot)),
            "recycle: slot {index} is not the slot at that index"
        );
        self.free.push(index, slot);
    }

    /// A batch of slots to put back together: see [`FreeBatch`].
    pub(crate) fn batch(&self) -> FreeBatch<'_, C> {
        FreeBatch {
            arena: self,
            top: None,
            bottom: None,
            len: 0,
        }
    }

    /// How many indices have been claimed (`0..claimed` may hold
    /// registrations).
    pub(crate) fn claimed(&self) -> u32 {
        // Acquire: a scan that sees index n claimed must see its page.
        self.claimed.load(Ordering::Acquire).min(self.limit)
    }

    /// Bytes of one slot, for the memory figures.
    pub(crate) const fn slot_bytes() -> usize {
        std::mem::size_of::<Slot<C>>()
    }
}

/// Slots a thread releases one after another (the built-in loop's timers
/// fired in one turn), put back on its free stack together: one CAS on the
/// stack's head per [`BATCH`] slots rather than one per slot (see
/// [`FreeSlots::push_chain`]). A released slot waits here until the batch
/// is full or dropped: the drop puts back what is left, so a slot is never
/// lost, and at most `BATCH - 1` wait unseen by the other threads' `alloc`
/// (which claims a fresh slot meanwhile if it finds none).
pub(crate) struct FreeBatch<'a, C> {
    arena: &'a Arena<C>,
    /// The chain's first slot.
    top: Option<u32>,
    /// The chain's last slot, which `push_chain` links to the stack.
    bottom: Option<&'a Slot<C>>,
    len: u32,
}

/// Slots per batch: enough that the head's trips between the cores are a
/// small share of a timer's cost, few enough that they are no memory.
const BATCH: u32 = 64;

impl<'a, C> FreeBatch<'a, C> {
    /// Puts released slot `index`, which is `slot`, into the batch (see
    /// [`Arena::recycle`]); the batch goes back on the free stack when it
    /// is full.
    pub(crate) fn recycle(&mut self, index: u32, slot: &'a Slot<C>) {
        debug_assert!(
            self.arena.get(index).is_some_and(|s| std::ptr::eq(s, slot)),
            "recycle: slot {index} is not the slot at that index"
        );
        FreeSlots::link(slot, self.top);
        self.top = Some(index);
        self.bottom.get_or_insert(slot);
        self.len += 1;
        if self.len == BATCH {
            self.put_back();
        }
    }

    fn put_back(&mut self) {
        if let (Some(top), Some(bottom)) = (self.top.take(), self.bottom.take()) {
            self.arena.free.push_chain(top, bottom);
        }
        self.len = 0;
    }
}

impl<C> Drop for FreeBatch<'_, C> {
    fn drop(&mut self) {
        self.put_back();
    }
}

#[cfg(all(test, not(evnexus_loom)))]
mod tests {
    use super::*;

    #[test]
    fn locate_walks_pages_of_doubling_size() {
        let locate = SlotPages::<()>::locate;
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(31), (0, 31));
        assert_eq!(locate(32), (1, 0));
        assert_eq!(locate(95), (1, 63));
        assert_eq!(locate(96), (2, 0));
        assert!(
            SlotPages::<()>::capacity() >= MAX_SLOTS,
            "every token index has a slot"
        );
    }

    #[test]
    fn unclaimed_index_has_no_slot_and_claims_are_distinct() {
        let arena = Arena::<()>::new(100, Generation::FIRST);
        assert!(arena.get(0).is_none());
        let (a, _) = arena.alloc().unwrap();
        let (b, _) = arena.alloc().unwrap();
        assert_ne!(a, b);
        assert!(arena.get(a).is_some());
        assert!(arena.get(5000).is_none());
        assert!(arena.get(u32::MAX).is_none());
    }

    #[test]
    fn a_batch_puts_its_slots_back_when_full_and_when_dropped_last_freed_first() {
        let arena = Arena::<()>::new(1000, Generation::FIRST);
        let n = BATCH as usize + 3;
        let got: Vec<u32> = (0..n).map(|_| arena.alloc().unwrap().0).collect();
        let mut batch = arena.batch();
        for &i in &got[..BATCH as usize - 1] {
            batch.recycle(i, arena.get(i).unwrap());
        }
        // Not full yet: nothing is back, the next alloc is a fresh slot.
        let fresh = arena.alloc().unwrap().0;
        assert!(
            !got.contains(&fresh),
            "slot {fresh} handed out while batched"
        );
        for &i in &got[BATCH as usize - 1..] {
            batch.recycle(i, arena.get(i).unwrap());
        }
        // The full batch went back: the BATCH slots freed first.
        let back: Vec<u32> = (0..BATCH).map(|_| arena.alloc().unwrap().0).collect();
        let mut want: Vec<u32> = got[..BATCH as usize].to_vec();
        want.reverse();
        assert_eq!(back, want, "the last freed comes back first");
        // The other three come back with the drop, last freed first.
        drop(batch);
        let tail: Vec<u32> = (0..3).map(|_| arena.alloc().unwrap().0).collect();
        assert_eq!(tail, vec![got[n - 1], got[n - 2], got[n - 3]]);
        assert!(
            !got.contains(&arena.alloc().unwrap().0),
            "every batched slot came back once: the stack is empty again"
        );
    }

    #[test]
    fn arena_reports_full_at_its_limit_and_reuses_recycled_slots() {
        let arena = Arena::<()>::new(3, Generation::FIRST);
        let got: Vec<u32> = (0..3).map(|_| arena.alloc().unwrap().0).collect();
        assert!(arena.alloc().is_err());
        arena.recycle(got[1], arena.get(got[1]).unwrap());
        assert_eq!(arena.alloc().unwrap().0, got[1]);
    }
}
