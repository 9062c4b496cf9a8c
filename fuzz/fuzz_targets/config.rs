//! `cargo fuzz run config`: the body lives in `fuzz/harness/config.rs`, which the stable replay
//! test includes too, so both run the same code.

#![no_main]

#[path = "../harness/config.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::fuzz_config(data));
