//! `cargo fuzz run scram_server`: the body lives in `fuzz/harness/scram_server.rs`, which the stable replay
//! test includes too, so both run the same code.

#![no_main]

#[path = "../harness/scram_server.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::fuzz_scram_server(data));
