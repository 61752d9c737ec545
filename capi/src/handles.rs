//! The handles behind C tokens.
//!
//! The Rust API hands out an owning handle per registration ([`FdWatch`],
//! [`Timer`], [`ChildWatch`]): dropping it ends the registration, and
//! modifying a watch or resetting a timer goes through it (the engine ends
//! a registration by token, `Engine::deregister`, but has no modify or
//! reset by token, nor a way to let go of a handle without ending its
//! registration). C holds only the `uint64_t` token, so the C engine keeps
//! each handle here, in a table indexed by the token's slot index (the
//! engine's arena index), one small mutex per entry: operations on
//! different registrations never contend, and the table is never larger
//! than the engine's arena. Registering takes one entry lock; reports never
//! touch the table. An entry outlives its registration (its handle is then
//! inert) until a newer generation of the slot replaces it, or
//! `evnexus_free` empties the table.

use evnexus::{ChildWatch, FdWatch, Timer, Token};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// One registration's owning handle.
pub(crate) enum Handle {
    Fd {
        watch: FdWatch,
        /// Registered edge-triggered: a modify keeps it so.
        edge: bool,
    },
    Timer(Timer),
    /// Held only so that dropping it does not end the watch early: a
    /// child watch has nothing to modify.
    Child {
        _watch: ChildWatch,
    },
}

struct Entry {
    token: Token,
    /// Shared with a modify in progress, which calls the engine without
    /// holding the entry's lock (a hook it runs may call back in).
    handle: Arc<Handle>,
}

/// Pages of 32, 64, 128, ... entries: 20 pages cover every slot index.
const PAGES: usize = 20;
const FIRST_PAGE: usize = 32;

type Cell = Mutex<Option<Entry>>;

#[derive(Default)]
pub(crate) struct Handles {
    pages: [OnceLock<Box<[Cell]>>; PAGES],
}

/// Page and offset of slot index `i`: page `p` holds indices
/// `32 * (2^p - 1) ..  32 * (2^(p+1) - 1)`.
fn place(index: u32) -> (usize, usize) {
    let i = index as usize / FIRST_PAGE + 1;
    let page = (usize::BITS - 1 - i.leading_zeros()) as usize;
    let start = FIRST_PAGE * ((1 << page) - 1);
    (page, index as usize - start)
}

fn lock(cell: &Cell) -> MutexGuard<'_, Option<Entry>> {
    // Nothing panics while holding an entry's lock; recover all the same.
    cell.lock().unwrap_or_else(|e| e.into_inner())
}

impl Handles {
    fn cell(&self, index: u32, create: bool) -> Option<&Cell> {
        let (p, offset) = place(index);
        let page = self.pages.get(p)?;
        let cells = if create {
            page.get_or_init(|| (0..FIRST_PAGE << p).map(|_| Mutex::new(None)).collect())
        } else {
            page.get()?
        };
        cells.get(offset)
    }

    /// Keeps `handle` for `token`, unless the table already holds a newer
    /// generation of the same slot (then `token` has ended and its handle
    /// is dropped).
    pub(crate) fn insert(&self, token: Token, handle: Handle) {
        let Some(cell) = self.cell(token.index(), true) else {
            return;
        };
        let new = Entry {
            token,
            handle: Arc::new(handle),
        };
        let dropped = {
            let mut entry = lock(cell);
            match &*entry {
                Some(old) if old.token.generation() > token.generation() => Some(new),
                _ => entry.replace(new),
            }
        };
        // Outside the lock: dropping an ended registration's handle is a
        // no-op deregistration, but it is still a call into the engine.
        drop(dropped);
    }

    /// The handle of `token`, if the table holds it.
    pub(crate) fn get(&self, token: Token) -> Option<Arc<Handle>> {
        let cell = self.cell(token.index(), false)?;
        let entry = lock(cell);
        entry
            .as_ref()
            .filter(|e| e.token == token)
            .map(|e| Arc::clone(&e.handle))
    }

    /// Ends every registration still held (for `evnexus_free`), one at a
    /// time, with no entry locked while its handle is dropped.
    pub(crate) fn clear(&self) {
        for page in self.pages.iter().filter_map(OnceLock::get) {
            for cell in page.iter() {
                let entry = lock(cell).take();
                drop(entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_tile_every_slot_index() {
        assert_eq!(place(0), (0, 0));
        assert_eq!(place(31), (0, 31));
        assert_eq!(place(32), (1, 0));
        assert_eq!(place(95), (1, 63));
        assert_eq!(place(96), (2, 0));
        let last = evnexus::MAX_SLOTS as u32 - 1;
        let (page, offset) = place(last);
        assert!(page < PAGES && offset < FIRST_PAGE << page);
        // Every index maps to the cell right after its predecessor's.
        let mut prev = place(0);
        for i in 1..100_000u32 {
            let p = place(i);
            assert!(p == (prev.0, prev.1 + 1) || p == (prev.0 + 1, 0), "{i}");
            assert!(p.1 < FIRST_PAGE << p.0);
            prev = p;
        }
    }
}
