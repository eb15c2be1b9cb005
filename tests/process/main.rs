//! Integration tests that run `reckon` as processes against the real control plane: signals and
//! restarts, rollback with the agent in between, the API and the query commands after real
//! syncs, leases and shards, `reckon version` against the cluster.
//!
//! `cli_version` also runs on the floor of the version matrix (`scripts/test.sh`).

#[path = "../support/mod.rs"]
mod support;

mod agent;
mod api;
mod cli_version;
mod lease;
mod query;
mod rollback;
mod shard;
