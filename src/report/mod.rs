//! Everything printed for people: run progress, tables, errors.

pub mod progress;
pub mod table;
