//! Errors of the models crate.

/// What can go wrong fitting or applying a model.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// There is nothing (or too little) to fit on.
    #[error("not enough data: {0}")]
    NotEnoughData(String),
    /// The optimiser ended without a finite likelihood.
    #[error("fit did not converge: {0}")]
    NoConvergence(String),
    /// An input is outside the model's domain.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
