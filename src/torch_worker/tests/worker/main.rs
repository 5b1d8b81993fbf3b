//! Integration tests of the torch worker: one binary, one module per area.
//! All run on the CPU with tiny crops (12–16 subjects of 34×44×34 voxels).

mod cli;
mod learning;
mod parity;
mod support;
