//! Fuzz target: [`custflow_fuzz::csv_presets`] on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custflow_fuzz::csv_presets(data));
