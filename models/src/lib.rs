//! Pure maths of custflow, no I/O: BG/NBD, Pareto/NBD, Gamma-Gamma, CLV, RFM, value tiers
//! and k-means.
