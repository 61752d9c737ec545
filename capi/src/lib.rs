//! # libevnexus: the C ABI of evnexus
//!
//! `libevnexus.so` / `libevnexus.a` and `include/evnexus.h` (generated from
//! this crate by cbindgen; `tests/header.rs` fails when it is stale). The
//! shape follows the C APIs toolstacks already know: an opaque engine,
//! libxl's `libxl_osevent_hooks` for an application's own loop, libvirt's
//! `virFreeCallback` contract for registrations, sd-event's negative errno
//! returns, libxl's `beforepoll`/`afterpoll` for a plain `poll()` loop.
//!
//! Rules that hold for every function (the header repeats them):
//!
//! - **Errors** are negative errno values; `evnexus_strerror` describes
//!   them. A NULL pointer where an object is needed, or an argument out of
//!   range, is `-EINVAL`.
//! - **Panics** never cross the boundary: every exported function runs its
//!   body in `boundary::ffi_boundary!`; a contained panic is
//!   `-ENOTRECOVERABLE`.
//! - **Threads**: every function may be called from any thread, callbacks
//!   and hooks included, except `evnexus_free`, which must be the last call
//!   on its engine with no other call in progress.
//! - **Tokens** are `uint64_t`, never pointers: any value may be passed to
//!   any function taking one.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
// The exported functions take raw pointers from C and are not `unsafe fn`:
// no Rust code can call them (the crate builds no rlib), and what C must
// guarantee about each pointer is stated in the header, per function.
// Every dereference sits in an `unsafe` block that names that contract.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod boundary;
mod clock;
mod engine;
mod handles;
mod hooks;
mod info;
mod poll;
mod register;
mod report;

pub use engine::*;
pub use hooks::evnexus_hooks;
pub use info::*;
pub use poll::*;
pub use register::*;
pub use report::*;

use handles::Handles;
use std::sync::Mutex;

/// An engine (opaque to C).
pub struct Evnexus {
    engine: ::evnexus::Engine,
    clock: clock::MonoClock,
    handles: Handles,
    poll: Mutex<poll::PollState>,
}

impl Evnexus {
    fn new(engine: ::evnexus::Engine, clock: clock::MonoClock) -> Evnexus {
        Evnexus {
            engine,
            clock,
            handles: Handles::default(),
            poll: Mutex::new(poll::PollState::default()),
        }
    }
}

/// The engine behind a C pointer, or `None` for NULL.
///
/// # Safety
/// `ev` is NULL or a pointer returned by `evnexus_new*` and not yet passed
/// to `evnexus_free` (the header's contract for every function).
unsafe fn borrow<'a>(ev: *mut Evnexus) -> Option<&'a Evnexus> {
    // SAFETY: the caller's promise; every use is a shared borrow, and only
    // `evnexus_free` (exclusive by contract) takes the box back.
    unsafe { ev.cast_const().as_ref() }
}

#[cfg(test)]
mod tests {
    /// Every exported function contains panics: its body is one
    /// `ffi_boundary!`.
    #[test]
    fn every_exported_function_runs_inside_the_panic_boundary() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut exported = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let mut rest = text.as_str();
            while let Some(at) = rest.find("pub extern \"C\" fn ") {
                let after = &rest[at..];
                let name: String = after["pub extern \"C\" fn ".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let body_start = after.find('{').unwrap();
                let first = after[body_start + 1..].trim_start();
                assert!(
                    first.starts_with("ffi_boundary! {"),
                    "{} has an exported function `{name}` outside the boundary",
                    path.display()
                );
                assert!(
                    text[..text.len() - rest.len() + at].ends_with("#[no_mangle]\n"),
                    "`{name}` is not #[no_mangle]"
                );
                exported += 1;
                rest = &after[body_start..];
            }
        }
        assert!(exported > 20, "found only {exported} exported functions");
    }
}
