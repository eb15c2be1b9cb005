//! Integration tests against the real control plane (`RECKON_TEST_KUBECONFIG`, set by
//! `reckon-testenv run`; without it the first test starts a local control plane of its own),
//! with reckon as a library in the test process: apply, plan, watch, the reconciler, ownership,
//! health, rollback, the agent, App objects, tenancy (impersonation, namespaces, policies),
//! `deploy/`, audit attribution, Helm Apps.
//!
//! `apply`, `plan`, `watch`, `kube_smoke` and `reconcile` also run on the floor of the version
//! matrix (`scripts/test.sh`).

#[path = "../support/mod.rs"]
mod support;

mod agent;
mod apply;
mod audit;
mod crd;
mod deploy;
mod helm;
mod helm_deps;
mod helm_repo;
mod kube_smoke;
mod ownership;
mod plan;
mod reconcile;
mod rollback;
mod tenancy;
mod tls_provider;
mod watch;
mod workloads;
