//! Everything printed for people: run progress and tables. (The HTML
//! report a pipeline writes is an op, `ops::report`.)

pub mod metrics;
pub mod progress;
pub mod table;
