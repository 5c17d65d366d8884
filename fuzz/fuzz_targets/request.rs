//! Arbitrary bytes as request headers (bearer, cookies, forwarding, origin)
//! and as every JSON body type.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkey::fuzzing::request(data));
