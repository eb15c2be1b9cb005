//! Integration tests that need a temp dir and nothing else: no cluster, no Git. The event store
//! on real sled files (queries, projections, verify, retention, faults, migrations of committed
//! stores), `reckon store …` through the binary, the HTTP API and the audit receiver on a real
//! store, and the listener's bounds under load.

#[path = "../support/mod.rs"]
mod support;

mod api_http;
mod audit_receiver;
mod cli;
mod copies;
mod disk_full;
mod integrity;
mod listener_load;
mod migration;
mod migration_sealed;
mod migration_sealed_v2;
mod query;
mod revisions;
mod sled_corruption;
mod store;
