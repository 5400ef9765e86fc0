//! Fuzz target: [`custflow_fuzz::avro_wire`] on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custflow_fuzz::avro_wire(data));
