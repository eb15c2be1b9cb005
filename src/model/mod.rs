//! Owns the vocabulary every stage of a pass shares, free of I/O and of kube types: an
//! object's reference and identity ([`ObjectRef`], [`ObjectKey`]), its group-kind and scope,
//! the typed [`Digest`], the recorded [`Health`], the [`Manifest`] to apply, the labels and names reckon marks
//! objects with, and an App's `identity` (namespace and name for App objects). `render`, `plan`, `apply`, `health`, `watch`, `event` and `reconcile` build
//! on it; it depends on none of them.

pub mod digest;
mod health;
pub mod identity;
pub mod labels;
mod manifest;
mod object;
pub mod url;

pub use digest::Digest;
pub use health::Health;
pub use manifest::Manifest;
pub use object::{GroupKind, ObjectKey, ObjectRef, Scope};
