//! The engine's calls from several threads at once, on the hooks backend
//! and the built-in loops, against the outcomes a linearisation allows:
//! see `evnexus_fuzz::concurrent` (fuzz/src/concurrent/).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: evnexus_fuzz::concurrent::Input| {
    evnexus_fuzz::concurrent::run(&input);
});
