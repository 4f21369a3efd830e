//! The synchronisation types the core uses: std's, or loom's when the
//! crate is built with `--cfg loom` to model-check [`Remote`](crate::Remote).

#[cfg(not(loom))]
pub(crate) use std::sync::{atomic, Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::sync::{atomic, Mutex, MutexGuard};
