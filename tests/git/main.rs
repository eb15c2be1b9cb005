//! Integration tests that need real Git repositories and real Git servers (daemon, smart HTTP,
//! SSH on loopback), but no cluster: the fixture builders, the Git source over every transport,
//! signatures, the webhook receiver and poller, Helm chart sources and a Git chart's locked
//! dependencies (real chart repository and OCI registry), observations recorded in a real store, and
//! `reckon fetch` through the binary.

#[path = "../support/mod.rs"]
mod support;

mod chart_deps;
mod chart_source;
mod charts;
mod cli_fetch;
mod fixtures;
mod oci;
mod signatures;
mod source;
mod source_env;
mod source_events;
mod transports;
mod webhook_poll;
