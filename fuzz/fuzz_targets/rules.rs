#![no_main]
//! See `fedbroker_fuzz::check_rules`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fedbroker_fuzz::check_rules(data);
});
