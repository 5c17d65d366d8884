//! Arbitrary text as emails, usernames, passwords, roles and rates.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkey::fuzzing::identifiers(data));
