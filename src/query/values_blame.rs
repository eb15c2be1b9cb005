//! Owns which values of a Helm render a field's change is owed to: the pure comparison of the
//! values layers recorded on two applied manifests of one object (the apply that changed the
//! field and the apply before it), and how the credit reads.
//!
//! A chart's render marks every object with each values layer's source and keyed digest
//! ([`crate::render::helm::VALUES_LAYERS_ANNOTATION`]). When an apply changed a field without a
//! new revision (the same commit or chart, rendered again), the change came from the values read
//! outside Git — inline values, a `values_from` ConfigMap or Secret — and the layers whose digest
//! differs are the ones to name, not the commit or the chart. A values file in Git changes only
//! with a commit, so across revisions it stays the commit's; the other layers changing along with
//! a new revision are named beside it.

use crate::render::helm::{LayerDigest, VALUES_DIGEST_ANNOTATION, is_file_source, recorded_layers};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The values behind a field's change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValuesChange {
    /// The layers whose keyed digest differs from the previous apply's, in merge order (then the
    /// ones no longer there). Empty when the values digest changed but the previous apply was
    /// rendered before reckon recorded layers, so which one is not known.
    pub layers: Vec<LayerChange>,
    /// The apply also brought a new revision (a commit or a chart version): the field is owed
    /// to it, to these values, or to both.
    pub with_revision: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerChange {
    /// Where the layer comes from: `inline values`, `ConfigMap team-a/web-values key
    /// values.yaml`, `Secret shop/db key values.yaml`, `file values-prod.yaml`.
    pub source: String,
    pub change: LayerChangeKind,
    /// The layer's keyed digest before and after (`None`: the layer was not there). Keyed under
    /// the agent's key: equal values give equal digests, and a Secret's cannot be guessed.
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerChangeKind {
    Changed,
    Added,
    Removed,
    /// The same bytes merged at another place in the order.
    Moved,
}

impl LayerChangeKind {
    fn word(self) -> &'static str {
        match self {
            LayerChangeKind::Changed => "changed",
            LayerChangeKind::Added => "added",
            LayerChangeKind::Removed => "removed",
            LayerChangeKind::Moved => "moved",
        }
    }
}

fn values_digest(manifest: &Value) -> Option<&str> {
    manifest
        .pointer("/metadata/annotations")?
        .get(VALUES_DIGEST_ANNOTATION)?
        .as_str()
}

/// The values `applied` (the manifest of the apply a field is credited to) changed against
/// `before` (the manifest of the object's apply before it), when they are both a chart's
/// render; `same_revision`: both applies were of the same revision. `None`: the change is the
/// revision's alone (or not a chart's render at all).
pub fn values_change(applied: &Value, before: &Value, same_revision: bool) -> Option<ValuesChange> {
    let (now, then) = (values_digest(applied)?, values_digest(before)?);
    if now == then {
        return None;
    }
    let Some((now, then)) = recorded_layers(applied).zip(recorded_layers(before)) else {
        // Which layer is not known; at the same revision it can only be the values anyway.
        return same_revision.then(|| ValuesChange {
            layers: Vec::new(),
            with_revision: false,
        });
    };
    let layers: Vec<LayerChange> = compare(&now, &then)
        .into_iter()
        // A values file is part of the revision: a new one is the commit's change.
        .filter(|c| same_revision || !is_file_source(&c.source))
        .collect();
    (!layers.is_empty()).then_some(ValuesChange {
        layers,
        with_revision: !same_revision,
    })
}

/// Layer by layer, matched by source (the n-th layer of a source with the n-th of the same
/// source before): changed, added and removed ones; when none is, the ones that moved.
fn compare(now: &[LayerDigest], then: &[LayerDigest]) -> Vec<LayerChange> {
    let mut used = vec![false; then.len()];
    let mut changes = Vec::new();
    let mut moved = Vec::new();
    for (i, layer) in now.iter().enumerate() {
        let matched = then
            .iter()
            .enumerate()
            .position(|(j, old)| !used[j] && old.source == layer.source);
        match matched {
            Some(j) => {
                used[j] = true;
                if then[j].digest != layer.digest {
                    changes.push(LayerChange {
                        source: layer.source.clone(),
                        change: LayerChangeKind::Changed,
                        from: Some(then[j].digest.clone()),
                        to: Some(layer.digest.clone()),
                    });
                } else if i != j {
                    moved.push(LayerChange {
                        source: layer.source.clone(),
                        change: LayerChangeKind::Moved,
                        from: Some(then[j].digest.clone()),
                        to: Some(layer.digest.clone()),
                    });
                }
            }
            None => changes.push(LayerChange {
                source: layer.source.clone(),
                change: LayerChangeKind::Added,
                from: None,
                to: Some(layer.digest.clone()),
            }),
        }
    }
    for (j, old) in then.iter().enumerate() {
        if !used[j] {
            changes.push(LayerChange {
                source: old.source.clone(),
                change: LayerChangeKind::Removed,
                from: Some(old.digest.clone()),
                to: None,
            });
        }
    }
    if changes.is_empty() { moved } else { changes }
}

/// How the credit reads: `values: ConfigMap shop/web key values.yaml changed`, after the
/// revision's own summary when the revision changed too.
pub fn summary(change: &ValuesChange, revision_summary: Option<&str>) -> String {
    let values = if change.layers.is_empty() {
        "values changed (which layer is not recorded: the previous render predates per-layer \
         digests)"
            .to_string()
    } else {
        let each: Vec<String> = change
            .layers
            .iter()
            .map(|l| format!("{} {}", l.source, l.change.word()))
            .collect();
        format!("values: {}", each.join(", "))
    };
    match revision_summary {
        Some(s) if change.with_revision => format!("{s}; and {values}"),
        _ => values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::helm::VALUES_LAYERS_ANNOTATION;
    use serde_json::json;

    /// A rendered object with these layers (source, digest), its values digest made of them.
    fn rendered(layers: &[(&str, &str)]) -> Value {
        let layers: Vec<LayerDigest> = layers
            .iter()
            .map(|(s, d)| LayerDigest {
                source: s.to_string(),
                digest: format!("hmac-sha256:{d}"),
            })
            .collect();
        let whole = layers
            .iter()
            .map(|l| format!("{}={}", l.source, l.digest))
            .collect::<Vec<_>>()
            .join(";");
        json!({"metadata": {"annotations": {
            VALUES_DIGEST_ANNOTATION: whole,
            VALUES_LAYERS_ANNOTATION: serde_json::to_string(&layers).unwrap(),
        }}})
    }

    const FILE: &str = "file values-prod.yaml";
    const CM: &str = "ConfigMap shop/web-values key values.yaml";
    const SECRET: &str = "Secret shop/db key values.yaml";
    const INLINE: &str = "inline values";

    fn named(c: &ValuesChange) -> Vec<(&str, LayerChangeKind)> {
        c.layers
            .iter()
            .map(|l| (l.source.as_str(), l.change))
            .collect()
    }

    #[test]
    fn a_values_change_at_the_same_revision_names_the_layers_that_changed() {
        let before = rendered(&[(FILE, "f1"), (CM, "c1"), (SECRET, "s1"), (INLINE, "i1")]);
        let cm = rendered(&[(FILE, "f1"), (CM, "c2"), (SECRET, "s1"), (INLINE, "i1")]);
        let c = values_change(&cm, &before, true).unwrap();
        assert_eq!(named(&c), [(CM, LayerChangeKind::Changed)]);
        assert!(!c.with_revision);
        assert_eq!(c.layers[0].from.as_deref(), Some("hmac-sha256:c1"));
        assert_eq!(c.layers[0].to.as_deref(), Some("hmac-sha256:c2"));
        assert_eq!(
            summary(&c, Some("Chart 0.1.0")),
            "values: ConfigMap shop/web-values key values.yaml changed",
            "not the commit's summary"
        );

        let both = rendered(&[(FILE, "f1"), (CM, "c1"), (SECRET, "s2"), (INLINE, "i2")]);
        let c = values_change(&both, &before, true).unwrap();
        assert_eq!(
            named(&c),
            [
                (SECRET, LayerChangeKind::Changed),
                (INLINE, LayerChangeKind::Changed)
            ]
        );
    }

    #[test]
    fn layers_added_and_removed_are_named() {
        let before = rendered(&[(CM, "c1"), (INLINE, "i1")]);
        let after = rendered(&[(SECRET, "s1"), (INLINE, "i1")]);
        let c = values_change(&after, &before, true).unwrap();
        assert_eq!(
            named(&c),
            [
                (SECRET, LayerChangeKind::Added),
                (CM, LayerChangeKind::Removed)
            ]
        );
        assert_eq!(c.layers[0].from, None);
        assert_eq!(c.layers[1].to, None);
        assert_eq!(
            summary(&c, None),
            "values: Secret shop/db key values.yaml added, ConfigMap shop/web-values key \
             values.yaml removed"
        );
    }

    #[test]
    fn the_same_layers_in_another_order_are_named_as_moved() {
        let before = rendered(&[(CM, "c1"), (INLINE, "i1")]);
        let after = rendered(&[(INLINE, "i1"), (CM, "c1")]);
        let c = values_change(&after, &before, true).unwrap();
        assert_eq!(
            named(&c),
            [
                (INLINE, LayerChangeKind::Moved),
                (CM, LayerChangeKind::Moved)
            ]
        );
    }

    #[test]
    fn a_new_revision_alone_keeps_the_credit() {
        // A chart bump (or a commit) with the same values: the revision's.
        let values = rendered(&[(FILE, "f1"), (INLINE, "i1")]);
        assert_eq!(values_change(&values, &values, false), None);
        assert_eq!(values_change(&values, &values, true), None);
        // A values file in Git changed with its commit: the commit's.
        let file = rendered(&[(FILE, "f2"), (INLINE, "i1")]);
        assert_eq!(values_change(&file, &values, false), None);
    }

    #[test]
    fn a_new_revision_and_new_values_in_one_apply_name_both() {
        let before = rendered(&[(FILE, "f1"), (INLINE, "i1")]);
        let after = rendered(&[(FILE, "f2"), (INLINE, "i2")]);
        let c = values_change(&after, &before, false).unwrap();
        assert_eq!(
            named(&c),
            [(INLINE, LayerChangeKind::Changed)],
            "the file is the commit's, the inline values are named beside it"
        );
        assert!(c.with_revision);
        assert_eq!(
            summary(&c, Some("chart web 1.1.0 from https://charts.example")),
            "chart web 1.1.0 from https://charts.example; and values: inline values changed"
        );
    }

    #[test]
    fn objects_that_are_not_a_charts_render_have_no_values_credit() {
        let plain = json!({"metadata": {"name": "web"}});
        let chart = rendered(&[(INLINE, "i1")]);
        assert_eq!(values_change(&plain, &plain, true), None);
        assert_eq!(values_change(&chart, &plain, true), None);
        assert_eq!(values_change(&plain, &chart, true), None);
    }

    #[test]
    fn a_previous_render_without_layers_still_says_the_values_changed() {
        let mut old = json!({"metadata": {"annotations": {
            VALUES_DIGEST_ANNOTATION: "hmac-sha256:old",
        }}});
        let now = rendered(&[(INLINE, "i2")]);
        let c = values_change(&now, &old, true).unwrap();
        assert!(c.layers.is_empty() && !c.with_revision);
        assert!(summary(&c, Some("commit")).starts_with("values changed"));
        // Across revisions it cannot tell a values file from the rest: the commit's.
        assert_eq!(values_change(&now, &old, false), None);
        // The same values digest: nothing changed in the values.
        old["metadata"]["annotations"][VALUES_DIGEST_ANNOTATION] =
            now["metadata"]["annotations"][VALUES_DIGEST_ANNOTATION].clone();
        assert_eq!(values_change(&now, &old, true), None);
    }
}
