//! The fuzz targets of evnexus, as a library: each target in
//! `fuzz_targets/` is a few lines that hand the decoded input to one of
//! these modules.
//!
//! - [`ops`] (target `engine_ops`): sequential orderings of every public
//!   call on a hooks engine, each result checked exactly against a
//!   reference model after every op.

mod common;
pub mod ops;
