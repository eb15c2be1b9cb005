//! Owns who an existing object belongs to: the ownership marks other Apps and other tools leave
//! on objects, and the pure decisions built on them — adopt or refuse an existing object, and
//! whether a Namespace holds objects someone else still needs.
//!
//! Why marks and not `managedFields`: field managers say who *wrote* a field (a `kubectl edit`
//! is one), not who is responsible for the object; the tools that manage objects (reckon, Argo
//! CD, Flux, Helm, kapp) all say so with a label or an annotation, and those are what a person
//! reading the object sees too.

use super::ObjectRef;
use crate::config::AdoptPolicy;
use crate::model::labels::APP_LABEL;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;

/// Something that owns an existing object, as its labels and annotations say.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Owner {
    /// Another reckon App (its `reckon.dev/app` label).
    App(String),
    /// Another tool: its name and the mark found (`key=value`).
    Tool { tool: String, mark: String },
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::App(app) => write!(f, "App {app} (label {APP_LABEL}={app})"),
            Owner::Tool { tool, mark } => write!(f, "{tool} ({mark})"),
        }
    }
}

/// Where the mark is.
#[derive(Clone, Copy)]
enum Place {
    Label,
    Annotation,
}

/// How a tool marks what it owns: a key, or every key under a prefix.
struct Mark {
    tool: &'static str,
    place: Place,
    key: &'static str,
    prefix: bool,
}

/// The marks of the GitOps and packaging tools that share clusters with reckon. Argo CD's
/// default tracking label is `app.kubernetes.io/instance`; charts set it too, so it only counts
/// when the manifest reckon applies does not set the same value (see [`owners`]).
const MARKS: [Mark; 6] = [
    Mark {
        tool: "Argo CD",
        place: Place::Annotation,
        key: "argocd.argoproj.io/tracking-id",
        prefix: false,
    },
    Mark {
        tool: "Argo CD",
        place: Place::Label,
        key: "app.kubernetes.io/instance",
        prefix: false,
    },
    Mark {
        tool: "Flux",
        place: Place::Label,
        key: "kustomize.toolkit.fluxcd.io/",
        prefix: true,
    },
    Mark {
        tool: "Flux",
        place: Place::Label,
        key: "helm.toolkit.fluxcd.io/",
        prefix: true,
    },
    Mark {
        tool: "Helm",
        place: Place::Annotation,
        key: "meta.helm.sh/release-name",
        prefix: false,
    },
    Mark {
        tool: "kapp",
        place: Place::Label,
        key: "kapp.k14s.io/app",
        prefix: false,
    },
];

fn map(manifest: &Value, place: Place) -> Option<&serde_json::Map<String, Value>> {
    let key = match place {
        Place::Label => "labels",
        Place::Annotation => "annotations",
    };
    manifest.get("metadata")?.get(key)?.as_object()
}

/// The owners an existing object's marks name, other than `app` itself. A mark the desired
/// manifest sets to the same value is not someone else's: reckon is about to write it anyway.
pub fn owners(live: &Value, desired: &Value, app: &str) -> Vec<Owner> {
    let mut found = BTreeSet::new();
    if let Some(owner) = map(live, Place::Label)
        .and_then(|l| l.get(APP_LABEL))
        .and_then(Value::as_str)
        .filter(|owner| *owner != app)
    {
        found.insert(Owner::App(owner.to_string()));
    }
    for mark in &MARKS {
        let Some(entries) = map(live, mark.place) else {
            continue;
        };
        let wanted = map(desired, mark.place);
        for (key, value) in entries {
            let matches = if mark.prefix {
                key.starts_with(mark.key)
            } else {
                key == mark.key
            };
            if !matches || wanted.and_then(|w| w.get(key)) == Some(value) {
                continue;
            }
            let place = match mark.place {
                Place::Label => "label",
                Place::Annotation => "annotation",
            };
            let value = value.as_str().unwrap_or_default();
            found.insert(Owner::Tool {
                tool: mark.tool.into(),
                mark: format!("{place} {key}={value}"),
            });
        }
    }
    found.into_iter().collect()
}

/// Why an object the App wants is not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RefuseReason {
    /// The object exists outside the inventory and the App's policy is `adopt: never`.
    AdoptionDisabled,
    /// The object exists outside the inventory and is owned by others (`adopt: unowned`).
    Owned { owners: Vec<Owner> },
    /// An object of the inventory whose live `reckon.dev/app` label now names another App: that
    /// App took it over (`adopt: always`); taking it back would make the two Apps fight.
    TakenOver { owner: String },
    /// Outside what the App may write: its App object's namespace or its policy
    /// ([`super::boundary`]); `rule` names the rule.
    OutsideBoundary { rule: String },
}

impl RefuseReason {
    /// The reason as the `ApplyFailed` event says it, `object` named.
    pub fn describe(&self, object: &ObjectRef) -> String {
        match self {
            RefuseReason::AdoptionDisabled => format!(
                "{object} already exists and is not this App's; adopt: never refuses existing \
                 objects (set adopt: unowned or always to take it over)"
            ),
            RefuseReason::Owned { owners } => {
                let owners: Vec<String> = owners.iter().map(Owner::to_string).collect();
                format!(
                    "{object} already exists and belongs to {}; adopt: unowned takes only \
                     objects nobody owns (set adopt: always to take it over)",
                    owners.join(", ")
                )
            }
            RefuseReason::TakenOver { owner } => format!(
                "{object} was taken over by App {owner} (label {APP_LABEL}={owner}); this App \
                 no longer applies it"
            ),
            RefuseReason::OutsideBoundary { rule } => format!("{object} is not applied: {rule}"),
        }
    }
}

/// Whether the App may adopt an existing object with these owners (`None`: it may).
pub fn adoption(policy: AdoptPolicy, owners: &[Owner]) -> Option<RefuseReason> {
    match policy {
        AdoptPolicy::Never => Some(RefuseReason::AdoptionDisabled),
        AdoptPolicy::Unowned if !owners.is_empty() => Some(RefuseReason::Owned {
            owners: owners.to_vec(),
        }),
        AdoptPolicy::Unowned | AdoptPolicy::Always => None,
    }
}

/// One object found in a Namespace: its identity and its live manifest (metadata and, for
/// Secrets, `type`).
#[derive(Debug, Clone, PartialEq)]
pub struct Resident {
    pub object: ObjectRef,
    pub manifest: Value,
}

/// Whether a resident of a Namespace comes with the Namespace or with something else in it,
/// rather than being someone's object: what Kubernetes creates in every Namespace, dependents
/// (anything with an owner reference goes with its owner), Events, and the Endpoints of a
/// Service (`services` holds the names of the Namespace's Services).
fn incidental(resident: &Resident, services: &BTreeSet<&str>) -> bool {
    let o = &resident.object;
    let core = o.group.is_empty();
    let has_owner = resident
        .manifest
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| !refs.is_empty());
    has_owner
        || o.kind == "Event" && (core || o.group == "events.k8s.io")
        || core && o.kind == "ServiceAccount" && o.name == "default"
        || core && o.kind == "ConfigMap" && o.name == "kube-root-ca.crt"
        || core
            && o.kind == "Secret"
            && resident.manifest.get("type").and_then(Value::as_str)
                == Some("kubernetes.io/service-account-token")
        || core && o.kind == "Endpoints" && services.contains(o.name.as_str())
}

/// The residents of a Namespace that deleting it would take with it and that this plan does
/// not prune: objects outside the App's inventory (another App's, someone's by hand) and the
/// App's own objects it keeps or orphans. `pruned` holds the identities the plan deletes.
pub fn foreign_residents<'a>(
    residents: &'a [Resident],
    pruned: &BTreeSet<super::ObjectKey>,
) -> Vec<&'a ObjectRef> {
    let services: BTreeSet<&str> = residents
        .iter()
        .filter(|r| r.object.group.is_empty() && r.object.kind == "Service")
        .map(|r| r.object.name.as_str())
        .collect();
    residents
        .iter()
        .filter(|r| !incidental(r, &services) && !pruned.contains(&r.object.key()))
        .map(|r| &r.object)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with(labels: Value, annotations: Value) -> Value {
        json!({"metadata": {"name": "x", "labels": labels, "annotations": annotations}})
    }

    #[test]
    fn an_unmarked_object_has_no_owner() {
        let live = with(json!({"team": "a"}), json!({"note": "x"}));
        assert!(owners(&live, &json!({}), "shop").is_empty());
        // The App's own label is not another owner (an apply whose event was lost).
        let own = with(json!({APP_LABEL: "shop"}), json!({}));
        assert!(owners(&own, &json!({}), "shop").is_empty());
    }

    #[test]
    fn other_apps_and_tools_are_named_by_their_marks() {
        let live = with(
            json!({
                APP_LABEL: "billing",
                "kustomize.toolkit.fluxcd.io/name": "infra",
                "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
                "helm.toolkit.fluxcd.io/name": "redis",
                "kapp.k14s.io/app": "1234",
                "app.kubernetes.io/instance": "guestbook",
            }),
            json!({
                "argocd.argoproj.io/tracking-id": "guestbook:apps/Deployment:web/api",
                "meta.helm.sh/release-name": "redis",
            }),
        );
        let names: Vec<String> = owners(&live, &json!({}), "shop")
            .iter()
            .map(Owner::to_string)
            .collect();
        assert_eq!(
            names,
            [
                "App billing (label reckon.dev/app=billing)",
                "Argo CD (annotation argocd.argoproj.io/tracking-id=guestbook:apps/Deployment:web/api)",
                "Argo CD (label app.kubernetes.io/instance=guestbook)",
                "Flux (label helm.toolkit.fluxcd.io/name=redis)",
                "Flux (label kustomize.toolkit.fluxcd.io/name=infra)",
                "Flux (label kustomize.toolkit.fluxcd.io/namespace=flux-system)",
                "Helm (annotation meta.helm.sh/release-name=redis)",
                "kapp (label kapp.k14s.io/app=1234)",
            ]
        );
    }

    #[test]
    fn a_mark_the_manifest_sets_to_the_same_value_is_not_an_owner() {
        let live = with(json!({"app.kubernetes.io/instance": "shop"}), json!({}));
        let desired = with(json!({"app.kubernetes.io/instance": "shop"}), json!({}));
        assert!(owners(&live, &desired, "shop").is_empty());
        let other = with(json!({"app.kubernetes.io/instance": "other"}), json!({}));
        assert_eq!(owners(&live, &other, "shop").len(), 1);
    }

    #[test]
    fn the_policy_decides_adoption() {
        let owned = [Owner::App("billing".into())];
        assert_eq!(adoption(AdoptPolicy::Unowned, &[]), None);
        assert_eq!(
            adoption(AdoptPolicy::Unowned, &owned),
            Some(RefuseReason::Owned {
                owners: owned.to_vec()
            })
        );
        assert_eq!(adoption(AdoptPolicy::Always, &owned), None);
        assert_eq!(
            adoption(AdoptPolicy::Never, &[]),
            Some(RefuseReason::AdoptionDisabled)
        );
        let object = ObjectRef::from_api_version("v1", "ConfigMap", Some("shop"), "a");
        let text = adoption(AdoptPolicy::Unowned, &owned)
            .unwrap()
            .describe(&object);
        assert!(text.contains("belongs to App billing"), "{text}");
        assert!(text.contains("adopt: always"), "{text}");
    }

    fn resident(kind: &str, name: &str, manifest: Value) -> Resident {
        let api = if kind == "Deployment" {
            "apps/v1"
        } else {
            "v1"
        };
        Resident {
            object: ObjectRef::from_api_version(api, kind, Some("shop"), name),
            manifest,
        }
    }

    #[test]
    fn what_comes_with_a_namespace_is_not_foreign() {
        let residents = vec![
            resident("ServiceAccount", "default", json!({})),
            resident("ConfigMap", "kube-root-ca.crt", json!({})),
            resident("Event", "web.1", json!({})),
            resident(
                "Secret",
                "default-token-x",
                json!({"type": "kubernetes.io/service-account-token"}),
            ),
            resident(
                "Pod",
                "web-1",
                json!({"metadata": {"ownerReferences": [{"kind": "ReplicaSet"}]}}),
            ),
            resident("Service", "web", json!({})),
            resident("Endpoints", "web", json!({})),
            resident("Endpoints", "manual", json!({})),
            resident("ConfigMap", "theirs", json!({})),
            resident("Deployment", "web", json!({})),
        ];
        let pruned: BTreeSet<_> = [
            residents[5].object.key(), // the App's Service
            residents[9].object.key(), // the App's Deployment
        ]
        .into();
        let foreign: Vec<String> = foreign_residents(&residents, &pruned)
            .iter()
            .map(|o| o.to_string())
            .collect();
        assert_eq!(foreign, ["Endpoints/shop/manual", "ConfigMap/shop/theirs"]);
        // Everything pruned and nothing else: nothing foreign.
        assert!(foreign_residents(&residents[..6], &pruned).is_empty());
    }
}
