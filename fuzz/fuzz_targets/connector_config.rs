//! Fuzz target: [`custflow_fuzz::connector_config`] on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custflow_fuzz::connector_config(data));
