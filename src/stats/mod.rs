//! Statistical tests the ops use, as plain functions of numbers: no files, no
//! params, nothing else of the crate (so any module may use them).
//!
//! - [`balance`]: do two parts of a population differ? Welch's t, Pearson's
//!   chi-square and Fisher's exact test (the `split`, `kfold` and
//!   `demographics` checks).

pub mod balance;
