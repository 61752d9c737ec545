//! The nexus arena: slots in lazily allocated pages that live as long as the
//! engine, and a lock-free free list of slot indices.
//!
//! Page `k` holds `FIRST_PAGE << k` slots, so the page of an index is one
//! leading-zeros count away, a small engine touches a few KiB, and twenty
//! pages cover all 2^24 indices a token can name. Pages are allocated the
//! first time an index in them is claimed and freed only when the arena is
//! dropped, so any index below the claimed count names valid memory for the
//! whole life of the engine: a token can be checked against its slot
//! without any guard or reference count.

use crate::base::sync::{AtomicPtr, AtomicU32, Ordering};
use crate::base::token::{Generation, MAX_SLOTS};
use crate::nexus::free::FreeSlots;
use crate::nexus::slot::Slot;

/// The first page holds 32 slots (2 KiB); under loom, 2, to keep the
/// model's object count small.
#[cfg(not(evnexus_loom))]
const FIRST_PAGE_SHIFT: u32 = 5;
#[cfg(evnexus_loom)]
const FIRST_PAGE_SHIFT: u32 = 1;
const FIRST_PAGE: usize = 1 << FIRST_PAGE_SHIFT;
/// Enough pages that their slots cover every index a token can hold.
const PAGES: usize = pages_for(MAX_SLOTS);

const fn pages_for(slots: usize) -> usize {
    let mut pages = 0;
    let mut covered = 0;
    while covered < slots {
        covered += FIRST_PAGE << pages;
        pages += 1;
    }
    pages
}

/// `(page, offset)` of a slot index.
#[inline]
const fn locate(index: u32) -> (usize, usize) {
    let shifted = index as usize + FIRST_PAGE;
    let page = (usize::BITS - 1 - shifted.leading_zeros() - FIRST_PAGE_SHIFT) as usize;
    (page, shifted - (FIRST_PAGE << page))
}

const fn page_len(page: usize) -> usize {
    FIRST_PAGE << page
}

pub(crate) struct Arena<C> {
    pages: [AtomicPtr<Slot<C>>; PAGES],
    /// The arena owns slots of `C`: it is `Send`/`Sync` exactly when they
    /// are (an `AtomicPtr` alone would make it so for any `C`).
    _slots: std::marker::PhantomData<Slot<C>>,
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
            pages: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            _slots: std::marker::PhantomData,
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
        let (page, offset) = locate(index);
        // Acquire: pairs with the Release CAS that installed the page, so
        // its slots' initial state words are visible.
        let base = self.pages[page].load(Ordering::Acquire);
        if base.is_null() {
            return None;
        }
        // SAFETY: `base` points to a live allocation of `page_len(page)`
        // slots (installed by `page`, freed only in `Drop`, which needs
        // `&mut self`), and `offset < page_len(page)` by `locate`.
        Some(unsafe { &*base.add(offset) })
    }

    /// Hands out a free slot index: a released one first, else a fresh one.
    /// The caller owns the returned slot until it publishes it.
    pub(crate) fn alloc(&self) -> Result<(u32, &Slot<C>), Full> {
        let index = match self.free.pop(|i| self.get(i)) {
            Some(index) => index,
            None => self.claim_fresh()?,
        };
        let slot = self
            .get(index)
            .expect("an index from the free list or a fresh claim has its page");
        Ok((index, slot))
    }

    fn claim_fresh(&self) -> Result<u32, Full> {
        // Relaxed: the counter only hands out distinct indices; the slot
        // memory is published by the page CAS in `page`.
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
        self.page(locate(n).0);
        Ok(n)
    }

    /// Makes sure page `page` exists.
    fn page(&self, page: usize) {
        // Acquire: as in `get`.
        if !self.pages[page].load(Ordering::Acquire).is_null() {
            return;
        }
        let slots: Box<[Slot<C>]> = (0..page_len(page))
            .map(|_| Slot::new(self.first_generation))
            .collect();
        let fresh = Box::into_raw(slots) as *mut Slot<C>;
        // Release: publishes the initialised slots to `get`. Acquire on
        // failure: the winner's page is then the one we use.
        if self.pages[page]
            .compare_exchange(
                std::ptr::null_mut(),
                fresh,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            // SAFETY: `fresh` came from `Box::into_raw` just above and lost
            // the race, so nobody else has seen it.
            drop(unsafe {
                Box::from_raw(std::ptr::slice_from_raw_parts_mut(fresh, page_len(page)))
            });
        }
    }

    /// Puts a released slot back for reuse.
    pub(crate) fn recycle(&self, index: u32) {
        if let Some(slot) = self.get(index) {
            self.free.push(index, slot);
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

impl<C> Drop for Arena<C> {
    fn drop(&mut self) {
        for (page, ptr) in self.pages.iter().enumerate() {
            // Acquire: `&mut self` already orders us after every other
            // access; the load is only how loom's atomic is read.
            let base = ptr.load(Ordering::Acquire);
            if !base.is_null() {
                // SAFETY: `base` came from `Box::into_raw` of a boxed slice
                // of `page_len(page)` slots in `page`, and `&mut self` means
                // no reference into it survives.
                drop(unsafe {
                    Box::from_raw(std::ptr::slice_from_raw_parts_mut(base, page_len(page)))
                });
            }
        }
    }
}

#[cfg(all(test, not(evnexus_loom)))]
mod tests {
    use super::*;

    #[test]
    fn locate_walks_pages_of_doubling_size() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(31), (0, 31));
        assert_eq!(locate(32), (1, 0));
        assert_eq!(locate(95), (1, 63));
        assert_eq!(locate(96), (2, 0));
        let (last_page, last_offset) = locate(MAX_SLOTS as u32 - 1);
        assert!(last_page < PAGES);
        assert!(last_offset < page_len(last_page));
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
    fn arena_reports_full_at_its_limit_and_reuses_recycled_slots() {
        let arena = Arena::<()>::new(3, Generation::FIRST);
        let got: Vec<u32> = (0..3).map(|_| arena.alloc().unwrap().0).collect();
        assert!(arena.alloc().is_err());
        arena.recycle(got[1]);
        assert_eq!(arena.alloc().unwrap().0, got[1]);
    }
}
