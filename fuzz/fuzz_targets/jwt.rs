//! `cargo fuzz run jwt`: the body lives in `fuzz/harness/jwt.rs`, which the stable replay
//! test includes too, so both run the same code.

#![no_main]

#[path = "../harness/jwt.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::fuzz_jwt(data));
