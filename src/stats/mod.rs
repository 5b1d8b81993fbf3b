//! Statistical tests the ops and `diff` use, as plain functions of numbers: no
//! files, no params, nothing else of the crate (so any module may use them).
//! Each test follows a named reference implementation (scipy's) and is
//! unit-tested against numbers that implementation printed.
//!
//! - [`balance`]: do two parts of a population differ? Welch's t, Pearson's
//!   chi-square and Fisher's exact test (the `split`, `kfold` and
//!   `demographics` checks).
//! - [`paired`]: did a change help? Wilcoxon signed-rank and paired t over
//!   matched members (`hcpipe diff` of aggregate tables).

pub mod balance;
pub mod paired;
