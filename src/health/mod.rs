//! Owns readiness: kstatus-style health of live objects, as pure functions over their JSON,
//! with no I/O (waiting for them is [`crate::apply::wait`]'s, next to the executor).
//!
//! The rules follow kstatus (the library behind `kubectl wait`-like checks in Flux) where it has
//! one: an object whose controller has not observed its latest generation is in progress
//! whatever its status says, and an object with a deletion timestamp is terminating. Kinds with
//! no status at all (ConfigMap, Secret, RBAC, ...) are current as soon as they exist.

mod rules;

pub use rules::{assess, pod_problem, pod_selector};

use serde::Serialize;

/// How far an object is from the state its spec asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Status {
    /// Reconciled: the controller caught up with the spec and the object is ready.
    Current,
    /// The controller is working on it (rollout, binding, establishing, ...).
    InProgress,
    /// It will not get there without a change (deadline exceeded, job failed, name clash).
    Failed,
    /// Being deleted.
    Terminating,
    /// The status cannot be read (missing object, unexpected shape).
    Unknown,
}

/// A status and a message saying why, for people and for `HealthChanged` events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    pub status: Status,
    pub message: String,
}

/// The health reckon records for a readiness status (a missing object is told apart by the
/// caller, who knows it looked).
impl From<Status> for crate::model::Health {
    fn from(status: Status) -> Self {
        use crate::model::Health as H;
        match status {
            Status::Current => H::Healthy,
            Status::InProgress | Status::Terminating => H::Progressing,
            Status::Failed => H::Degraded,
            Status::Unknown => H::Unknown,
        }
    }
}

impl Health {
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn is_current(&self) -> bool {
        self.status == Status::Current
    }
}

#[cfg(test)]
mod tests;
