//! Owns what the cluster serves: a cached discovery catalog (kind → resource, scope) and the
//! server's version, refreshed per group when an unknown kind is met.
//!
//! A full discovery is aggregated on servers that serve it (v1.26+: two requests, `/api` and
//! `/apis`, instead of one per group and version) and per group on older ones, where
//! `run_aggregated` would find no groups; an aggregated run that fails falls back to the per
//! group one. A group that fails to answer (an aggregated API whose backend is down answers
//! 503) must not hide all the others, so a failed full run falls back to one group at a time,
//! skipping the failures. Refreshes of a few groups (kinds met for the first time) ask those
//! groups alone.

use crate::plan::{GroupKind, ObjectRef, Scope};
pub use crate::version::ServerVersion;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::discovery::{ApiResource, Discovery};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Errors while discovering what the cluster serves.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("asking the API server for its version: {0}")]
    ServerVersion(#[source] kube::Error),
    #[error("listing the API groups the server serves: {0}")]
    ListGroups(#[source] kube::Error),
    #[error("discovering API group {group:?}: {source}")]
    QueryGroup {
        group: String,
        #[source]
        source: kube::Error,
    },
}

/// A served resource and its scope.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub resource: ApiResource,
    pub scope: Scope,
}

/// How the last full discovery was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiscoveryMode {
    /// Not yet run.
    #[default]
    None,
    /// Two requests, `/api` and `/apis`, with the aggregated discovery media type.
    Aggregated,
    /// One request per group and version.
    PerGroup,
    /// Per group after the full run failed, skipping groups that did not answer.
    GroupByGroup,
}

#[derive(Default)]
struct Known {
    /// Every served group/version/kind.
    by_gvk: HashMap<(String, String, String), Resolved>,
    /// Each group/kind at its most stable served version (scope lookups, watches).
    by_gk: HashMap<GroupKind, Resolved>,
    /// Groups that failed to answer at the last full discovery.
    unavailable: BTreeSet<String>,
    mode: DiscoveryMode,
    /// Kinds (at `by_gk`'s version) the server can list.
    listable: BTreeSet<GroupKind>,
}

/// Cached discovery. Lookups are synchronous (the planner's scope lookup is a plain `Fn`);
/// refreshes replace the entries of the groups they queried.
pub struct Catalog {
    client: Client,
    server: ServerVersion,
    /// Shared with the catalogs of the same cluster that act as another identity
    /// ([`Catalog::acting_as`]): one discovery serves every App of a cluster.
    known: Arc<RwLock<Known>>,
    /// Serialises refreshes: concurrent appliers meeting the same unknown kind would otherwise
    /// each re-run discovery of the same group.
    refreshing: Arc<tokio::sync::Mutex<()>>,
    /// The user this catalog's requests impersonate, if any (named in errors).
    identity: Option<String>,
    /// The user the server says the agent's own credentials are (`SelfSubjectReview`, from
    /// Kubernetes 1.28); `None` on older servers. Attribution needs it to tell reckon's writes
    /// from writes that merely name reckon's field manager.
    whoami: Option<String>,
}

/// Asks the server who the client is (`authentication.k8s.io/v1` `SelfSubjectReview`, served
/// from Kubernetes 1.28 and allowed to every authenticated user). Older servers answer 404;
/// nothing depends on the answer but attribution, so any failure is `None`.
async fn whoami(client: &Client) -> Option<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let api: kube::Api<SelfSubjectReview> = kube::Api::all(client.clone());
    match api
        .create(
            &kube::api::PostParams::default(),
            &SelfSubjectReview::default(),
        )
        .await
    {
        Ok(review) => review.status?.user_info?.username,
        Err(e) => {
            tracing::debug!(error = %e, "SelfSubjectReview: the server cannot say who we are");
            None
        }
    }
}

fn scope_of(caps: &kube::discovery::ApiCapabilities) -> Scope {
    match caps.scope {
        kube::discovery::Scope::Namespaced => Scope::Namespaced,
        kube::discovery::Scope::Cluster => Scope::Cluster,
    }
}

impl Catalog {
    /// Reads the server version and discovers every group.
    pub async fn new(client: Client) -> Result<Self, DiscoveryError> {
        let info = client
            .apiserver_version()
            .await
            .map_err(DiscoveryError::ServerVersion)?;
        let server = ServerVersion::parse(&info.major, &info.minor, &info.git_version);
        let support = server.support();
        if support != crate::version::Support::Supported {
            tracing::warn!(
                server = %server.git_version,
                supported = %crate::version::SUPPORTED_KUBERNETES,
                "the cluster's Kubernetes release is {support}"
            );
        }
        let catalog = Self {
            client,
            server,
            known: Arc::new(RwLock::new(Known::default())),
            refreshing: Arc::new(tokio::sync::Mutex::new(())),
            identity: None,
            whoami: None,
        };
        catalog.refresh_all().await?;
        let whoami = whoami(&catalog.client).await;
        Ok(Self { whoami, ..catalog })
    }

    /// The user the agent's own credentials authenticate as, when the server can say.
    pub fn whoami(&self) -> Option<&str> {
        self.whoami.as_deref()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// This cluster's catalog making every request with `client`, which acts as `identity`
    /// (an impersonating client): the discovery already made is shared, not repeated, and a
    /// refresh by either is seen by both.
    pub fn acting_as(&self, client: Client, identity: &str) -> Catalog {
        Catalog {
            client,
            server: self.server.clone(),
            known: self.known.clone(),
            refreshing: self.refreshing.clone(),
            identity: Some(identity.to_string()),
            whoami: self.whoami.clone(),
        }
    }

    /// The user this catalog impersonates; `None`: the agent's own credentials.
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    pub fn server(&self) -> &ServerVersion {
        &self.server
    }

    /// Every served group/version and group/version/kind (`apps/v1`, `apps/v1/Deployment`,
    /// `v1` for the core group), sorted: what Helm's `.Capabilities.APIVersions` holds.
    pub fn api_versions(&self) -> Vec<String> {
        let known = self.read();
        let mut out = std::collections::BTreeSet::new();
        for (group, version, kind) in known.by_gvk.keys() {
            let gv = if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            };
            out.insert(format!("{gv}/{kind}"));
            out.insert(gv);
        }
        out.into_iter().collect()
    }

    /// How the last full discovery was made.
    pub fn discovery_mode(&self) -> DiscoveryMode {
        self.read().mode
    }

    /// Groups that did not answer at the last full discovery.
    pub fn unavailable_groups(&self) -> Vec<String> {
        self.read().unavailable.iter().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        // A panic while holding the lock leaves whole maps behind (inserts are single calls),
        // so a poisoned lock still holds usable data.
        self.known.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Known> {
        self.known.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The scope of a kind, for [`crate::plan::plan`]'s scope lookup.
    pub fn scope(&self, gk: &GroupKind) -> Option<Scope> {
        self.read().by_gk.get(gk).map(|r| r.scope)
    }

    /// The resource serving exactly this object's group, version and kind.
    pub fn resolve(&self, object: &ObjectRef) -> Option<Resolved> {
        let key = (
            object.group.clone(),
            object.version.clone(),
            object.kind.clone(),
        );
        self.read().by_gvk.get(&key).cloned()
    }

    /// The resource serving a kind at its most stable version.
    pub fn resolve_kind(&self, gk: &GroupKind) -> Option<Resolved> {
        self.read().by_gk.get(gk).cloned()
    }

    /// Every namespaced kind the server can list, at its most stable version: what a
    /// Namespace may hold.
    pub fn namespaced_listable(&self) -> Vec<Resolved> {
        let known = self.read();
        known
            .listable
            .iter()
            .filter_map(|gk| known.by_gk.get(gk))
            .filter(|r| r.scope == Scope::Namespaced)
            .cloned()
            .collect()
    }

    /// An API handle for one object (namespaced when it has a namespace and its kind is).
    pub fn api(&self, resolved: &Resolved, namespace: Option<&str>) -> Api<DynamicObject> {
        match (resolved.scope, namespace) {
            (Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(self.client.clone(), ns, &resolved.resource)
            }
            _ => Api::all_with(self.client.clone(), &resolved.resource),
        }
    }

    fn absorb(known: &mut Known, discovery: &Discovery) {
        for group in discovery.groups() {
            known
                .by_gvk
                .retain(|(g, _, _), _| g.as_str() != group.name());
            known.by_gk.retain(|gk, _| gk.group != group.name());
            known.listable.retain(|gk| gk.group != group.name());
            for version in group.versions() {
                for (ar, caps) in group.versioned_resources(version) {
                    let key = (ar.group.clone(), ar.version.clone(), ar.kind.clone());
                    known.by_gvk.insert(
                        key,
                        Resolved {
                            resource: ar,
                            scope: scope_of(&caps),
                        },
                    );
                }
            }
            for (ar, caps) in group.resources_by_stability() {
                let gk = GroupKind::new(&ar.group, &ar.kind);
                if caps.supports_operation(kube::discovery::verbs::LIST) {
                    known.listable.insert(gk.clone());
                }
                known.by_gk.insert(
                    gk,
                    Resolved {
                        resource: ar,
                        scope: scope_of(&caps),
                    },
                );
            }
        }
    }

    /// Re-discovers every group.
    pub async fn refresh_all(&self) -> Result<(), DiscoveryError> {
        let _one_at_a_time = self.refreshing.lock().await;
        match self.run_full().await {
            Ok((discovery, mode, unavailable)) => {
                for group in &unavailable {
                    tracing::warn!(%group, "API group unavailable (stale in aggregated discovery); skipped");
                }
                let mut known = self.write();
                Self::absorb(&mut known, &discovery);
                known.unavailable = unavailable;
                known.mode = mode;
                Ok(())
            }
            Err(full_error) => {
                tracing::warn!(error = %full_error, "full discovery failed; discovering group by group");
                let groups = self
                    .client
                    .list_api_groups()
                    .await
                    .map_err(DiscoveryError::ListGroups)?;
                let mut names: Vec<String> = vec![String::new()];
                names.extend(groups.groups.into_iter().map(|g| g.name));
                let mut unavailable = BTreeSet::new();
                for name in names {
                    match Discovery::new(self.client.clone())
                        .filter(&[&name])
                        .run()
                        .await
                    {
                        Ok(discovery) => Self::absorb(&mut self.write(), &discovery),
                        Err(error) => {
                            tracing::warn!(group = %name, %error, "API group unavailable; skipped");
                            unavailable.insert(name);
                        }
                    }
                }
                let mut known = self.write();
                known.unavailable = unavailable;
                known.mode = DiscoveryMode::GroupByGroup;
                Ok(())
            }
        }
    }

    /// One full discovery: aggregated where the server serves it, else (or when that fails)
    /// per group. Returns the groups left out as unavailable.
    async fn run_full(&self) -> Result<(Discovery, DiscoveryMode, BTreeSet<String>), kube::Error> {
        if self.server.supports_aggregated_discovery() {
            match self.run_aggregated().await {
                Ok((discovery, stale)) => return Ok((discovery, DiscoveryMode::Aggregated, stale)),
                Err(error) => {
                    tracing::debug!(%error, "aggregated discovery failed; discovering per group");
                }
            }
        }
        let discovery = Discovery::new(self.client.clone()).run().await?;
        Ok((discovery, DiscoveryMode::PerGroup, BTreeSet::new()))
    }

    /// Aggregated discovery without the groups the server marks stale: an aggregated API
    /// whose backend is down is listed there with the last document it had, or none, and its
    /// kinds must read as unavailable rather than as served. kube's `run_aggregated` does not
    /// say which groups are stale, so the group list is read first to find them (three
    /// requests in all, against one per group and version otherwise).
    async fn run_aggregated(&self) -> Result<(Discovery, BTreeSet<String>), kube::Error> {
        let groups = self.client.list_api_groups_aggregated().await?;
        let stale = stale_groups(&groups);
        let excluded: Vec<&str> = stale.iter().map(String::as_str).collect();
        let discovery = Discovery::new(self.client.clone())
            .exclude(&excluded)
            .run_aggregated()
            .await?;
        Ok((discovery, stale))
    }

    /// Re-discovers some groups (CRDs just created, kinds met for the first time).
    pub async fn refresh_groups(&self, groups: &[&str]) -> Result<(), DiscoveryError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let discovery = Discovery::new(self.client.clone())
            .filter(groups)
            .run()
            .await
            .map_err(|source| DiscoveryError::QueryGroup {
                group: groups.join(","),
                source,
            })?;
        Self::absorb(&mut self.write(), &discovery);
        Ok(())
    }

    /// Waits until every kind is known, refreshing the groups that lack one, until `timeout`;
    /// returns the kinds still unknown. Call it before planning with the kinds of the desired
    /// set that no CRD in the set defines: right after an API server starts, discovery can
    /// list the core group alone until the other groups' registrations catch up, and a plan
    /// made then would reject every Deployment as an unknown kind.
    pub async fn wait_for_kinds(&self, kinds: &[GroupKind], timeout: Duration) -> Vec<GroupKind> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let missing: Vec<GroupKind> = kinds
                .iter()
                .filter(|gk| self.scope(gk).is_none())
                .cloned()
                .collect();
            if missing.is_empty() || started.elapsed() >= timeout {
                return missing;
            }
            let groups: BTreeSet<&str> = missing.iter().map(|gk| gk.group.as_str()).collect();
            let groups: Vec<&str> = groups.into_iter().collect();
            if let Err(error) = self.refresh_groups(&groups).await {
                tracing::debug!(%error, "discovery refresh failed; retrying");
            }
            if missing.iter().all(|gk| self.scope(gk).is_some()) {
                return Vec::new();
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Waits until every object's group/version/kind is served, refreshing the groups that
    /// lack one, until `timeout`. A server registers a new CRD's group some time after the CRD
    /// reports Established, and an aggregated API some time after start. Returns the objects
    /// still unresolved; refresh errors count as "not yet".
    pub async fn wait_until_served(
        &self,
        objects: &[ObjectRef],
        timeout: Duration,
    ) -> Vec<ObjectRef> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let missing: Vec<ObjectRef> = objects
                .iter()
                .filter(|o| self.resolve(o).is_none())
                .cloned()
                .collect();
            if missing.is_empty() {
                return missing;
            }
            let groups: BTreeSet<&str> = missing.iter().map(|o| o.group.as_str()).collect();
            let groups: Vec<&str> = groups.into_iter().collect();
            if let Err(error) = self.refresh_groups(&groups).await {
                tracing::debug!(%error, "discovery refresh failed; retrying");
            }
            let still: Vec<ObjectRef> = missing
                .into_iter()
                .filter(|o| self.resolve(o).is_none())
                .collect();
            if still.is_empty() || started.elapsed() >= timeout {
                return still;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

/// The groups aggregated discovery marks stale in any of their versions.
fn stale_groups(list: &kube::core::discovery::v2::APIGroupDiscoveryList) -> BTreeSet<String> {
    list.items
        .iter()
        .filter(|g| {
            g.versions
                .iter()
                .any(|v| v.freshness.as_deref() == Some("Stale"))
        })
        .filter_map(|g| g.metadata.as_ref()?.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_groups_are_read_from_each_versions_freshness() {
        let list: kube::core::discovery::v2::APIGroupDiscoveryList =
            serde_json::from_value(serde_json::json!({
                "kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
                "metadata": {},
                "items": [
                    {"metadata": {"name": "apps"}, "versions": [
                        {"version": "v1", "freshness": "Current", "resources": []}]},
                    {"metadata": {"name": "metrics.k8s.io"}, "versions": [
                        {"version": "v1beta1", "freshness": "Stale"}]},
                    {"metadata": {"name": "mixed.example"}, "versions": [
                        {"version": "v2", "freshness": "Current"},
                        {"version": "v1", "freshness": "Stale"}]},
                    {"metadata": {"name": "unmarked.example"}, "versions": [{"version": "v1"}]}
                ]
            }))
            .unwrap();
        assert_eq!(
            stale_groups(&list).into_iter().collect::<Vec<_>>(),
            ["metrics.k8s.io", "mixed.example"]
        );
    }
}
