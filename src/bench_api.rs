//! The arena and slot protocol alone, without callbacks or a backend, for
//! the `arena` benchmark to set beside other slabs. Not part of the API.

use crate::base::token::{Generation, Token, MAX_SLOTS};
use crate::nexus::arena::Arena;
use crate::nexus::slot::{EndCtrl, Kill};

/// A bare nexus arena: insert hands out a token, remove ends it, and
/// `contains` is the generation check of every event.
pub struct BareArena {
    arena: Arena<()>,
}

impl Default for BareArena {
    fn default() -> Self {
        BareArena {
            arena: Arena::new(MAX_SLOTS, Generation::FIRST),
        }
    }
}

impl BareArena {
    /// Claims a slot and publishes a registration in it.
    #[inline]
    pub fn insert(&self) -> Option<Token> {
        let (index, slot) = self.arena.alloc().ok()?;
        let g = slot.load().generation();
        // SAFETY: `alloc` handed us this free slot, unpublished.
        unsafe { slot.publish(g, true) };
        let _ = slot.end_ctrl(g, |_| {});
        Some(Token::new(index, g))
    }

    /// Ends the registration `token` and frees its slot; `false` if it was
    /// not live.
    #[inline]
    pub fn remove(&self, token: Token) -> bool {
        let Some(g) = token.generation() else {
            return false;
        };
        let Some(slot) = self.arena.get(token.index()) else {
            return false;
        };
        match slot.kill(g) {
            Kill::KilledIdle { .. } => {
                if slot.release_killed(g).0.is_some() {
                    self.arena.recycle(token.index(), slot);
                }
                true
            }
            Kill::Killed { took_ctrl: true } => {
                if slot.end_ctrl(g, |_| {}) == EndCtrl::TearDown && slot.release(g).0.is_some() {
                    self.arena.recycle(token.index(), slot);
                }
                true
            }
            _ => false,
        }
    }

    /// Whether `token` names a live registration (the check every report
    /// makes before its CAS).
    #[inline]
    pub fn contains(&self, token: Token) -> bool {
        let Some(g) = token.generation() else {
            return false;
        };
        self.arena.get(token.index()).is_some_and(|slot| {
            let s = slot.load();
            s.is_live() && s.generation() == g && !s.is_dead()
        })
    }
}
