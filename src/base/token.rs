//! [`Token`]: the opaque `u64` that the application's loop (or a backend)
//! carries for each registration, and the [`Generation`] inside it.
//!
//! ```text
//!  63                                   24 23                0
//! +---------------------------------------+-------------------+
//! |          generation (40 bits)         |  slot index (24)  |
//! +---------------------------------------+-------------------+
//! ```
//!
//! Generations start at 1, so the all-zero word is never a valid token, and
//! they never wrap: a slot whose generation reaches [`Generation::MAX`] is
//! retired instead of reused. 2^40 reuses of one slot at 30 ns each take
//! more than nine hours, and the free list is FIFO, so in practice a slot is
//! retired only by a deliberately long-running churn; the cost of a
//! retirement is one slot (64 bytes) that is never handed out again.

use std::fmt;

/// Bits of a token that hold the slot index.
pub(crate) const INDEX_BITS: u32 = 24;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

/// The most registrations one engine can hold at once: 2^24 less 16 slot
/// indices that the built-in loops reserve for their own operations.
pub const MAX_SLOTS: usize = (1 << INDEX_BITS) - 16;

/// A registration's generation: how many times its slot has been handed out
/// before, plus one. Never zero, never wraps.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Generation(u64);

impl Generation {
    /// Bits of a token (and of a slot's state word) that hold the generation.
    pub const BITS: u32 = 64 - INDEX_BITS;
    /// The first generation a fresh slot hands out.
    pub const FIRST: Generation = Generation(1);
    /// The last generation a slot hands out; after it the slot is retired.
    pub const MAX: Generation = Generation((1 << Self::BITS) - 1);

    /// A generation from its number; `None` for 0 or for a number above
    /// [`Generation::MAX`].
    pub const fn new(n: u64) -> Option<Generation> {
        if n == 0 || n > Self::MAX.0 {
            None
        } else {
            Some(Generation(n))
        }
    }

    /// The generation as a number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The generation the slot hands out after this one, or `None` when this
    /// is the last: the slot must then be retired.
    pub(crate) const fn next(self) -> Option<Generation> {
        if self.0 >= Self::MAX.0 {
            None
        } else {
            Some(Generation(self.0 + 1))
        }
    }

    /// Rebuilds a generation from bits that were packed by the crate itself
    /// (a state word); those are in range by construction.
    pub(crate) const fn from_packed(bits: u64) -> Generation {
        Generation(bits & Self::MAX.0)
    }
}

/// The opaque word that names one registration: slot index plus generation.
///
/// Any `u64` can be turned into a `Token` and handed to the engine's
/// `occurred_*` entry points: a token whose index is out of range, whose
/// generation is not the slot's current one, or whose registration is gone
/// is rejected (and counted) without touching registration memory.
///
/// ```
/// use evnexus::Token;
/// let t = Token::from_u64(0xdead_beef);
/// assert_eq!(Token::from_u64(t.as_u64()), t);
/// assert!(!Token::from_u64(0).is_well_formed());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(u64);

impl Token {
    /// Bits of the token that hold the slot index (the low ones); the
    /// generation takes the rest.
    pub const INDEX_BITS: u32 = INDEX_BITS;

    /// Wraps any `u64`; no validation happens until the engine is asked.
    pub const fn from_u64(raw: u64) -> Token {
        Token(raw)
    }

    /// The raw word, for an application loop to store (libxl's `for_libxl`).
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    pub(crate) const fn new(index: u32, generation: Generation) -> Token {
        Token((generation.0 << INDEX_BITS) | index as u64)
    }

    /// The slot index part.
    pub const fn index(self) -> u32 {
        (self.0 & INDEX_MASK) as u32
    }

    /// The generation part, or `None` when it is zero (no registration ever
    /// has generation zero, so such a token is forged or corrupt).
    pub const fn generation(self) -> Option<Generation> {
        Generation::new(self.0 >> INDEX_BITS)
    }

    /// Whether the token could name a registration at all (non-zero
    /// generation). A well-formed token may still be stale.
    pub const fn is_well_formed(self) -> bool {
        self.generation().is_some()
    }
}

impl From<u64> for Token {
    fn from(raw: u64) -> Token {
        Token(raw)
    }
}

impl From<Token> for u64 {
    fn from(t: Token) -> u64 {
        t.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}:{})", self.index(), self.0 >> INDEX_BITS)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.index(), self.0 >> INDEX_BITS)
    }
}

/// Why a token was not dispatched.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum StaleReason {
    /// The slot index is beyond anything the arena ever allocated, or the
    /// token is malformed (generation zero).
    OutOfRange,
    /// The generation is not the slot's current one, or that registration
    /// has been deregistered, cancelled or has fired.
    Generation,
    /// The registration is live, but `occurred_fd` named a different fd.
    FdMismatch,
    /// The token names a timer but arrived as an fd event, or the reverse.
    WrongKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_index_and_generation() {
        let g = Generation::new(12345).unwrap();
        let t = Token::new(MAX_SLOTS as u32 - 1, g);
        assert_eq!(t.index(), MAX_SLOTS as u32 - 1);
        assert_eq!(t.generation(), Some(g));
        assert_eq!(Token::from_u64(t.as_u64()), t);
    }

    #[test]
    fn zero_token_is_never_well_formed() {
        assert!(!Token::from_u64(0).is_well_formed());
        // Any index with generation zero is malformed too.
        assert!(!Token::from_u64(42).is_well_formed());
    }

    #[test]
    fn generation_stops_at_max_instead_of_wrapping() {
        assert_eq!(Generation::MAX.next(), None);
        let before = Generation::new(Generation::MAX.get() - 1).unwrap();
        assert_eq!(before.next(), Some(Generation::MAX));
        assert_eq!(Generation::new(Generation::MAX.get() + 1), None);
        let t = Token::new(7, Generation::MAX);
        assert_eq!(t.generation(), Some(Generation::MAX));
        assert_eq!(t.as_u64(), u64::MAX - (INDEX_MASK - 7));
    }
}
