//! Owns the pure planner: desired × inventory × observed (+ policy) → actions.

mod object;

pub use object::{GroupKind, ObjectKey, ObjectRef};
