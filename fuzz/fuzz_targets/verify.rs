#![no_main]
//! See `fedbroker_fuzz::check_verify` for the input format and the invariants checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fedbroker_fuzz::check_verify(data);
});
