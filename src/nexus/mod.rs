//! Layer 1, the nexus: the slot protocol (one atomic state word per
//! registration) and the arena that holds the slots for the engine's whole
//! life. Generic over the callback type `C`, which the layers above define:
//! the protocol never looks inside a callback.

pub(crate) mod arena;
pub(crate) mod free;
pub(crate) mod slot;
pub(crate) mod state;
