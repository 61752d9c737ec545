//! A table indexed by a `u32`, in lazily allocated pages of doubling size
//! that live as long as the table: the nexus arena's slots and the
//! built-in loop's per-fd-number entries.
//!
//! Page `k` holds `(1 << SHIFT) << k` entries, so the page of an index is
//! one leading-zeros count away and a small table touches a few KiB. A page
//! is allocated the first time an index in it is asked for with
//! [`Pages::get_or_make`] and freed only when the table is dropped, so a
//! reference into a page is valid for as long as the table is borrowed: no
//! guard, no reference count.

use crate::base::sync::{AtomicPtr, Ordering};
use std::marker::PhantomData;

/// `N` pages, the first of `1 << SHIFT` entries of `T`.
pub(crate) struct Pages<T, const SHIFT: u32, const N: usize> {
    pages: [AtomicPtr<T>; N],
    /// The table owns its `T`s: it is `Send`/`Sync` exactly when they are
    /// (an `AtomicPtr` alone would make it so for any `T`).
    _owns: PhantomData<T>,
}

impl<T, const SHIFT: u32, const N: usize> Pages<T, SHIFT, N> {
    const FIRST: usize = 1 << SHIFT;

    pub(crate) fn new() -> Self {
        Pages {
            pages: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            _owns: PhantomData,
        }
    }

    /// `(page, offset)` of `index`.
    #[inline]
    pub(crate) const fn locate(index: u32) -> (usize, usize) {
        let shifted = index as usize + Self::FIRST;
        let page = (usize::BITS - 1 - shifted.leading_zeros() - SHIFT) as usize;
        (page, shifted - (Self::FIRST << page))
    }

    /// Entries in page `page`.
    pub(crate) const fn page_len(page: usize) -> usize {
        Self::FIRST << page
    }

    /// How many indices the `N` pages cover (the tables' tests check that
    /// theirs cover every index they are asked for).
    #[cfg(all(test, not(evnexus_loom)))]
    pub(crate) const fn capacity() -> usize {
        (Self::FIRST << N) - Self::FIRST
    }

    /// The entry at `index`, if its page exists. Reads nothing but the page
    /// table for an index whose page was never made.
    #[inline]
    pub(crate) fn get(&self, index: u32) -> Option<&T> {
        let (page, offset) = Self::locate(index);
        // Acquire: pairs with the Release CAS in `get_or_make` that
        // installed the page, so its initialised entries are visible.
        let base = self.pages.get(page)?.load(Ordering::Acquire);
        if base.is_null() {
            return None;
        }
        // SAFETY: `base` points to a live allocation of `page_len(page)`
        // entries (installed by `get_or_make`, freed only in `Drop`, which
        // needs `&mut self`), and `offset < page_len(page)` by `locate`.
        Some(unsafe { &*base.add(offset) })
    }

    /// The entry at `index`, its page made first (every entry by `make`)
    /// if it does not exist yet. `None` only for an index beyond the `N`
    /// pages.
    pub(crate) fn get_or_make(&self, index: u32, mut make: impl FnMut() -> T) -> Option<&T> {
        let (page, _) = Self::locate(index);
        let cell = self.pages.get(page)?;
        // Acquire: as in `get`.
        if cell.load(Ordering::Acquire).is_null() {
            let fresh: Box<[T]> = (0..Self::page_len(page)).map(|_| make()).collect();
            let fresh = Box::into_raw(fresh) as *mut T;
            // Release on success: publishes the initialised entries to
            // `get`. Acquire on failure: the winner's page is then the one
            // `get` below reads.
            if cell
                .compare_exchange(
                    std::ptr::null_mut(),
                    fresh,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
            {
                // SAFETY: `fresh` came from `Box::into_raw` just above and
                // lost the race, so nobody else has seen it.
                drop(unsafe {
                    Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                        fresh,
                        Self::page_len(page),
                    ))
                });
            }
        }
        self.get(index)
    }
}

impl<T, const SHIFT: u32, const N: usize> Drop for Pages<T, SHIFT, N> {
    fn drop(&mut self) {
        for (page, cell) in self.pages.iter().enumerate() {
            // Acquire: `&mut self` already orders us after every other
            // access; the load is only how loom's atomic is read.
            let base = cell.load(Ordering::Acquire);
            if !base.is_null() {
                // SAFETY: `base` came from `Box::into_raw` of a boxed slice
                // of `page_len(page)` entries, and `&mut self` means no
                // reference into it survives.
                drop(unsafe {
                    Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                        base,
                        Self::page_len(page),
                    ))
                });
            }
        }
    }
}

#[cfg(all(test, not(evnexus_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    type Small = Pages<u32, 2, 4>;

    #[test]
    fn locate_walks_pages_of_doubling_size() {
        assert_eq!(Small::locate(0), (0, 0));
        assert_eq!(Small::locate(3), (0, 3));
        assert_eq!(Small::locate(4), (1, 0));
        assert_eq!(Small::locate(11), (1, 7));
        assert_eq!(Small::locate(12), (2, 0));
        assert_eq!(Small::capacity(), 4 + 8 + 16 + 32);
        let (page, offset) = Small::locate(Small::capacity() as u32 - 1);
        assert_eq!((page, offset), (3, 31));
        assert_eq!(
            Small::locate(Small::capacity() as u32).0,
            4,
            "past the last page"
        );
    }

    #[test]
    fn pages_are_made_once_on_first_use_and_indices_past_the_end_are_none() {
        let t = Small::new();
        assert!(t.get(5).is_none(), "no page yet");
        let made = AtomicUsize::new(0);
        let make = || {
            made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            7
        };
        assert_eq!(t.get_or_make(5, make), Some(&7));
        assert_eq!(
            made.load(std::sync::atomic::Ordering::Relaxed),
            8,
            "page 1 has 8"
        );
        assert_eq!(t.get(4), Some(&7));
        assert!(t.get(3).is_none(), "page 0 was not made");
        assert_eq!(t.get_or_make(6, || 9), Some(&7), "page 1 is not made again");
        let past = Small::capacity() as u32;
        assert!(t.get(past).is_none());
        assert!(t.get_or_make(past, || 1).is_none());
        assert!(t.get(u32::MAX).is_none());
    }

    #[test]
    fn every_page_made_is_dropped_with_the_table() {
        struct Counted<'a>(&'a AtomicUsize);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let dropped = AtomicUsize::new(0);
        {
            let t: Pages<Counted<'_>, 2, 4> = Pages::new();
            t.get_or_make(0, || Counted(&dropped));
            t.get_or_make(20, || Counted(&dropped));
            assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
        }
        assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 4 + 16);
    }
}
