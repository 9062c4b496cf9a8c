//! `cargo fuzz run startup_proxy`: the body lives in `fuzz/harness/startup_proxy.rs`, which the stable replay
//! test includes too, so both run the same code.

#![no_main]

#[path = "../harness/startup_proxy.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::fuzz_startup_proxy(data));
