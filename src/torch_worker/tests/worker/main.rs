//! Integration tests of the torch worker: one binary, one module per area.
//! All run on the CPU with tiny crops (12–16 subjects of 34×44×34 voxels),
//! except `gpu`'s, which are ignored unless asked for on a CUDA machine:
//! `cargo test --release -p hcpipe-torch -- --ignored gpu::`.

mod cli;
mod gpu;
mod learning;
mod parity;
mod served;
mod subjects;
mod support;
