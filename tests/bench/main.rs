//! Every benchmark, each an ignored test that prints its table (`--run-ignored only
//! --no-capture`; build with `--release` for figures worth quoting). The store-side ones need a
//! temp dir, `git_poll` real Git servers, `agent` and `apply` the control plane:
//!
//! - `store::run`, `query::run`: the event store and the query layer on a generated store,
//! - `store::revisions_at_scale`: the memory of `reckon revisions` and `reckon status` on a
//!   store of a million revisions (1,000 Apps × 1,000),
//! - `git_poll::run`: polling and fetching against `git fetch` of the same remote,
//! - `api::*`: the HTTP API's pages against the same queries on the store (`scripts/bench-api.sh`),
//! - `agent::*`: `reckon run`/`reckon sync` against `kubectl apply` (`scripts/bench-agent.sh`),
//! - `apply::*`: the executor against `kubectl apply --server-side`,
//! - `helm::*`: a chart's render through reckon against `helm template`, and re-polling an
//!   unchanged chart repository index,
//! - `ui::*`: the web UI's page timings in a real browser on the API benchmark's store
//!   (`scripts/ui-timings.sh`).

#[path = "../support/mod.rs"]
mod support;

mod agent;
mod api;
mod apply;
mod git_poll;
mod helm;
mod query;
mod stats;
mod store;
mod ui;
