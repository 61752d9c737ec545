//! [`State`]: the slot's atomic word as a typed value, one accessor per
//! field, so that no bare shift or mask appears in the protocol's logic.
//!
//! ```text
//!  63                       24 23               8 7                     0
//! +---------------------------+------------------+-----------------------+
//! |    generation (40 bits)   | pending revents  | F W C D R B T L       |
//! +---------------------------+------------------+-----------------------+
//! ```
//!
//! The flags' meanings and the transitions between them are the slot
//! protocol's (`slot.rs`).

use crate::base::token::Generation;

/// A state word, with a typed accessor for each field (no bare masks outside
/// this impl).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct State(pub(super) u64);

impl State {
    pub(super) const LIVE: u64 = 1 << 0;
    pub(super) const TIMER: u64 = 1 << 1;
    pub(super) const BUSY: u64 = 1 << 2;
    pub(super) const RERUN: u64 = 1 << 3;
    pub(super) const DEAD: u64 = 1 << 4;
    pub(super) const CTRL: u64 = 1 << 5;
    pub(super) const WAITER: u64 = 1 << 6;
    pub(super) const FIRED: u64 = 1 << 7;

    const PENDING_SHIFT: u32 = 8;
    const PENDING_MASK: u64 = 0xffff << Self::PENDING_SHIFT;
    const GEN_SHIFT: u32 = crate::base::token::INDEX_BITS;

    /// A free slot that will hand out `generation` next.
    pub(super) const fn free(generation: Generation) -> State {
        State(generation.get() << Self::GEN_SHIFT)
    }

    pub(crate) const fn generation(self) -> Generation {
        Generation::from_packed(self.0 >> Self::GEN_SHIFT)
    }
    /// Whether this word holds the live (not yet torn down) registration of
    /// generation `g`, dead or not.
    pub(super) const fn holds(self, g: Generation) -> bool {
        self.is_live() && self.generation().get() == g.get()
    }
    pub(crate) const fn is_live(self) -> bool {
        self.0 & Self::LIVE != 0
    }
    pub(crate) const fn is_timer(self) -> bool {
        self.0 & Self::TIMER != 0
    }
    pub(crate) const fn is_busy(self) -> bool {
        self.0 & Self::BUSY != 0
    }
    pub(crate) const fn is_dead(self) -> bool {
        self.0 & Self::DEAD != 0
    }
    pub(super) const fn rerun(self) -> bool {
        self.0 & Self::RERUN != 0
    }
    pub(super) const fn ctrl(self) -> bool {
        self.0 & Self::CTRL != 0
    }
    pub(super) const fn waiter(self) -> bool {
        self.0 & Self::WAITER != 0
    }
    pub(crate) const fn fired(self) -> bool {
        self.0 & Self::FIRED != 0
    }
    pub(super) const fn pending(self) -> u16 {
        ((self.0 & Self::PENDING_MASK) >> Self::PENDING_SHIFT) as u16
    }
    pub(super) const fn with(self, flags: u64) -> State {
        State(self.0 | flags)
    }
    pub(super) const fn without(self, flags: u64) -> State {
        State(self.0 & !flags)
    }
    pub(super) const fn with_pending(self, revents: u16) -> State {
        State(self.0 | ((revents as u64) << Self::PENDING_SHIFT))
    }
    pub(super) const fn without_pending(self) -> State {
        State(self.0 & !Self::PENDING_MASK)
    }
    /// Live and idle: no flag but `LIVE` (and `TIMER`) set, so nobody is
    /// dispatching, controlling, waiting for or ending the registration.
    /// (The pending field does not matter: an fd watch's is empty without
    /// `RERUN`, a timer's holds its reset version.)
    pub(super) const fn is_idle(self) -> bool {
        self.0 & !(Self::LIVE | Self::TIMER) & ((1 << Self::PENDING_SHIFT) - 1) == 0
            && self.is_live()
    }

    /// A timer's word with its reset version (kept in the pending field,
    /// which timers do not otherwise use) advanced by one, wrapping.
    pub(super) const fn with_next_version(self) -> State {
        let version = (self.pending() as u64 + 1) & 0xffff;
        State((self.0 & !Self::PENDING_MASK) | (version << Self::PENDING_SHIFT))
    }

    /// The slot may be torn down: dead, and nobody dispatching or
    /// controlling it.
    pub(super) const fn is_abandoned(self) -> bool {
        self.is_dead() && !self.is_busy() && !self.ctrl()
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            (Self::LIVE, "LIVE"),
            (Self::TIMER, "TIMER"),
            (Self::BUSY, "BUSY"),
            (Self::RERUN, "RERUN"),
            (Self::DEAD, "DEAD"),
            (Self::CTRL, "CTRL"),
            (Self::WAITER, "WAITER"),
            (Self::FIRED, "FIRED"),
        ];
        write!(f, "State(gen {}", self.generation().get())?;
        for (bit, name) in names {
            if self.0 & bit != 0 {
                write!(f, "|{name}")?;
            }
        }
        write!(f, ", pending {:#x})", self.pending())
    }
}
