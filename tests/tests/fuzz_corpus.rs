//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz targets'
//! bodies as an ordinary test, on stable Rust: every input that once found a crash, or
//! new coverage, must still be answered without a panic.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

#[allow(unreachable_pub)] // the bodies are public in the fuzz crate
#[path = "../../fuzz/src/lib.rs"]
mod bodies;

use std::path::PathBuf;

#[test]
fn every_corpus_input_is_answered_without_a_panic() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (name, body) in bodies::TARGETS {
        let dir = root.join(name);
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "no corpus for {name}");
        for input in &inputs {
            let data = std::fs::read(input).unwrap();
            if let Err(panic) = std::panic::catch_unwind(|| body(&data)) {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                panic!("{name} panics on {}: {why}", input.display());
            }
        }
        eprintln!("{name}: {} inputs", inputs.len());
    }
}
