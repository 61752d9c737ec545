//! Gives `libevnexus.so` its soname.
//!
//! What the library exports needs no version script of ours: rustc links
//! every cdylib with one of its own that exports exactly the
//! `#[no_mangle] pub extern "C"` functions (all named `evnexus_*`), and GNU
//! ld merges a second script into it rather than narrowing it (checked:
//! a script of ours exporting one function left all of them exported).
//! `tests/c.rs` checks the exported list with `nm -D`.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libevnexus.so.0");
}
