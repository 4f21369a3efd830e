//! ontime-core
pub mod timer;
