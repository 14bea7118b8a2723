#![no_main]
//! See `fedbroker_fuzz::check_aws4_request`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fedbroker_fuzz::check_aws4_request(data);
});
