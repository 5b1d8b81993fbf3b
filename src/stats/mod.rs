//! Statistical tests that more than one part of hcpipe uses, as plain functions of numbers:
//! no files, no ops, no printing. Each test follows a named reference implementation
//! (scipy's, here) and is unit-tested against numbers that implementation printed.

pub mod paired;
