//! Fit and scoring speed of the CLV models. Run: `cargo bench -p custflow-models`.
fn main() {}
