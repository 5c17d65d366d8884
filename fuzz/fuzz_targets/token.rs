//! Arbitrary bytes as access, refresh and device tokens.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkey::fuzzing::token(data));
