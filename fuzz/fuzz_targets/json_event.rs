//! Fuzz target: [`custflow_fuzz::json_event`] on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custflow_fuzz::json_event(data));
