//! reckon: a GitOps reconciler for Kubernetes that records every observed commit, drift and apply
//! action in an embedded, hash-chained event log.
//!
//! The layout follows the data flow in `docs/architecture.md`: `source` (Git) → `render` →
//! `plan` (pure) → `apply` (Kubernetes), with every outcome appended to the `store`.
#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod apply;
pub mod audit;
pub mod cli;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod crd;
pub mod event;
pub mod fetch;
pub mod health;
pub mod lease;
pub mod listen;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod pool;
pub mod query;
pub mod reconcile;
pub mod render;
pub mod shard;
pub mod source;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod ui;
pub mod version;
pub mod watch;

#[cfg(test)]
mod golden;
