//! [`FdTable`]: which live registration owns the kernel's epoll entry for
//! each fd number.
//!
//! The kernel keys an epoll entry by the open file *and* the fd number, but
//! `epoll_ctl` finds it by the number alone, through whatever file that
//! number names *now*. So if a watched fd is closed and its number reused
//! by a new watch before the old watch is deregistered, the old watch's
//! `EPOLL_CTL_DEL` (or a late `EPOLL_CTL_MOD`) would hit the new watch's
//! entry. This is the stale-registration hazard one level down, and the
//! table removes it the way the slot generation removes it above: every
//! `epoll_ctl` on fd number `n` is made under `n`'s claim, by the
//! registration that owns `n`'s entry, and an `EPOLL_CTL_ADD` that
//! succeeds makes its registration the owner. A registration that is no
//! longer the owner never touches the entry again; its fd was closed while
//! still registered, and its deregistration says so
//! ([`Error::ClosedWhileRegistered`](crate::Error::ClosedWhileRegistered)).
//!
//! A claim is held across exactly one `epoll_ctl` call and never while
//! waiting for anything else, so claims cannot deadlock; a thread that
//! finds a claim taken spins (with back-off) for at most one system call.
//! Reports and dispatches never touch the table.
//!
//! Entries live in lazily allocated pages of doubling size
//! ([`Pages`], as the arena's slots do), freed with the table, so an entry
//! is found without a lock.

use crate::base::pages::Pages;
use crate::base::sync::{AtomicU64, ClaimFlag, Ordering};
use crate::base::token::Token;
use std::os::fd::RawFd;

/// The first page covers fd numbers 0..64.
const FIRST_PAGE_SHIFT: u32 = 6;
/// Enough pages for every non-negative `RawFd`.
const PAGES: usize = (u32::BITS - FIRST_PAGE_SHIFT) as usize;
type EntryPages = Pages<Entry, FIRST_PAGE_SHIFT, PAGES>;

struct Entry {
    claimed: ClaimFlag,
    /// The owning registration's token and its epoll interest bits (see
    /// [`Owner`]); 0 when no registration owns the number's entry.
    owner: AtomicU64,
    interest: AtomicU64,
}

impl Entry {
    fn new() -> Entry {
        Entry {
            claimed: ClaimFlag::new(),
            owner: AtomicU64::new(0),
            interest: AtomicU64::new(0),
        }
    }
}

pub(crate) struct FdTable {
    pages: EntryPages,
}

/// The claim on one fd number's entry; dropping it releases the claim.
pub(crate) struct Claim<'a> {
    entry: &'a Entry,
}

/// The registration that owns a number's kernel entry, and the epoll event
/// mask it asked for (kept so the entry can be re-created in a new set).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Owner {
    pub(crate) token: Token,
    pub(crate) events: u32,
}

impl Claim<'_> {
    /// The current owner, if any.
    pub(crate) fn owner(&self) -> Option<Owner> {
        // Relaxed: both words are only written under the claim, and taking
        // the claim (Acquire) ordered us after the last holder's writes.
        let token = self.entry.owner.load(Ordering::Relaxed);
        (token != 0).then(|| Owner {
            token: Token::from_u64(token),
            events: self.entry.interest.load(Ordering::Relaxed) as u32,
        })
    }

    /// Whether `token` owns the entry.
    pub(crate) fn is_owner(&self, token: Token) -> bool {
        self.owner().is_some_and(|o| o.token == token)
    }

    /// Makes `owner` the owner (`None`: nobody).
    pub(crate) fn set(&self, owner: Option<Owner>) {
        // Relaxed: under the claim; see `owner`.
        let (token, events) = owner.map_or((0, 0), |o| (o.token.as_u64(), o.events));
        self.entry.owner.store(token, Ordering::Relaxed);
        self.entry
            .interest
            .store(u64::from(events), Ordering::Relaxed);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        // Publishes the owner words (and the kernel change made under the
        // claim) to the next claimant.
        self.entry.claimed.release();
    }
}

impl FdTable {
    pub(crate) fn new() -> FdTable {
        FdTable {
            pages: Pages::new(),
        }
    }

    /// Claims fd number `fd` (spinning while another thread holds it: at
    /// most one `epoll_ctl`); `None` for a negative fd.
    pub(crate) fn claim(&self, fd: RawFd) -> Option<Claim<'_>> {
        let fd = u32::try_from(fd).ok()?;
        // Every non-negative fd number is within the pages.
        let entry = self.pages.get_or_make(fd, Entry::new)?;
        entry.claimed.acquire();
        Some(Claim { entry })
    }
}

#[cfg(all(test, not(evnexus_loom)))]
mod tests {
    use super::*;

    #[test]
    fn locate_covers_every_fd_number_in_pages_of_doubling_size() {
        let locate = EntryPages::locate;
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(63), (0, 63));
        assert_eq!(locate(64), (1, 0));
        assert_eq!(locate(191), (1, 127));
        assert!(
            EntryPages::capacity() > i32::MAX as usize,
            "every fd number has an entry"
        );
    }

    #[test]
    fn owner_is_kept_per_number_and_negative_fds_are_refused() {
        let table = FdTable::new();
        assert!(table.claim(-1).is_none());
        let t = Token::from_u64(7 << 24);
        {
            let c = table.claim(1000).unwrap();
            assert_eq!(c.owner(), None);
            c.set(Some(Owner {
                token: t,
                events: 1,
            }));
        }
        assert!(table.claim(1000).unwrap().is_owner(t));
        assert!(!table.claim(999).unwrap().is_owner(t));
    }
}
