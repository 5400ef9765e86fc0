//! Pure maths of custflow, no I/O: BG/NBD, Pareto/NBD, Gamma-Gamma, CLV, RFM scores and
//! segments, value tiers, k-means, the supervised churn classifier and the versioned model
//! artefact.
//!
//! Time is measured in an arbitrary unit chosen by the caller (days in the processors,
//! weeks for the published CDNOW results); parameters are only meaningful in the unit
//! they were fitted in.

pub mod artefact;
pub mod bgnbd;
pub mod churn;
pub mod clv;
pub mod drift;
pub mod error;
pub mod fit;
pub mod gamma_gamma;
pub mod input;
pub mod kmeans;
pub mod optimize;
pub mod pareto;
pub mod promotion;
pub mod rfm;
pub mod special;
pub mod summary;

pub use error::{Error, Result};
pub use summary::{Summary, SummaryRow};
