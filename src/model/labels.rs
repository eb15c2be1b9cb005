//! Owns the names reckon marks objects with and writes as: labels, annotations, field manager.

/// Label on every object reckon applies.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "reckon";
/// Label naming the owning App; a label rather than an annotation so watches can select on it.
pub const APP_LABEL: &str = "reckon.dev/app";
/// Annotation that keeps an object from being pruned when it leaves Git.
pub const PRUNE_ANNOTATION: &str = "reckon.dev/prune";
/// Value of [`PRUNE_ANNOTATION`] that disables pruning.
pub const PRUNE_DISABLED: &str = "disabled";
/// reckon's field manager name for server-side apply.
pub const FIELD_MANAGER: &str = "reckon";
