//! `cargo fuzz run decode`: the body lives in `fuzz/harness/decode.rs`, which the stable replay
//! test includes too, so both run the same code.

#![no_main]

#[path = "../harness/decode.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::fuzz_decode(data));
