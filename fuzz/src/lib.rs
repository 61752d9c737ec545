//! The fuzz targets of evnexus, as a library: each target in
//! `fuzz_targets/` is a few lines that hand the decoded input to one of
//! these modules.
//!
//! - [`ops`] (target `engine_ops`): sequential orderings of every public
//!   call on a hooks engine, each result checked exactly against a
//!   reference model after every op.
//! - [`concurrent`] (target `engine_concurrent`): the same calls from
//!   several threads at once, on the hooks backend and on the built-in
//!   io_uring and epoll loops, checked against the outcomes that some
//!   linearisation allows.

mod common;
pub mod concurrent;
pub mod ops;
