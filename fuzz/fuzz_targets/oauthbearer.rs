//! `cargo fuzz run oauthbearer`: the body lives in `fuzz/harness/oauthbearer.rs`, which the stable replay
//! test includes too, so both run the same code.

#![no_main]

#[path = "../harness/oauthbearer.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::fuzz_oauthbearer(data));
