//! Fuzz target: [`custflow_fuzz::ndjson_body`] on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custflow_fuzz::ndjson_body(data));
