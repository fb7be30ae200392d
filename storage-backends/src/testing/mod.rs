//! Fixtures for tests of this crate and of the crates above it (real backing services); never used by the server.
pub mod etcd;
pub mod faults;
pub mod s3;
