//! Sequential orderings of every public call on a hooks engine against a
//! reference model: see `evnexus_fuzz::ops` (fuzz/src/ops/).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: evnexus_fuzz::ops::Input| {
    evnexus_fuzz::ops::run(&input);
});
