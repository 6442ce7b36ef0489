//! Prometheus destinations.

pub mod remote_write;
