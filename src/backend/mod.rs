//! Layer 3, the backends: what waits for the OS on the engine's behalf.
//!
//! Each implements [`Backend`](crate::dispatch::Backend), the one small
//! trait by which the dispatch core tells a backend that a registration was
//! made, modified or ended. Events come back down the one dispatch path of
//! the core: the application's loop through `occurred_*`, the built-in loop
//! through [`Dispatch`](crate::dispatch::Dispatch), which the facade hands
//! it. No backend names anything above the core.

pub(crate) mod builtin;
pub(crate) mod driver;
pub(crate) mod epoll;
pub(crate) mod fd_table;
pub(crate) mod hooks;
pub(crate) mod orphan;
pub(crate) mod poll;
pub(crate) mod timers;
pub(crate) mod uring;
pub(crate) mod wake;
