#![no_main]
//! See `fedbroker_fuzz::check_jwks` for the input format and the invariants checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fedbroker_fuzz::check_jwks(data);
});
