//! Layer 0, the base: what every layer above may use, and which names
//! nothing above it. Tokens and generations, the one std/loom switch,
//! errors, statistics counters, the handles' striped count, lazily paged tables, the clock, the poll(2) vocabulary, the
//! callback/hook context markers, and the test aids.

pub(crate) mod clock;
pub(crate) mod error;
pub(crate) mod handles;
pub(crate) mod pages;
pub(crate) mod readiness;
pub(crate) mod scope;
pub(crate) mod stats;
pub(crate) mod sync;
#[cfg(feature = "testing")]
pub mod testing;
pub(crate) mod token;
