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

impl Status {
    /// The health reckon records for this readiness status. `health` is the one place a
    /// reading becomes the recorded word: `Terminating` is recorded as progressing, and
    /// `Missing` is never a reading (see [`recorded_health`]).
    pub fn recorded(self) -> crate::model::Health {
        use crate::model::Health as H;
        match self {
            Status::Current => H::Healthy,
            Status::InProgress | Status::Terminating => H::Progressing,
            Status::Failed => H::Degraded,
            Status::Unknown => H::Unknown,
        }
    }
}

/// What a health reading from the API server is recorded as: an object not found is missing.
pub fn recorded_health(h: &Health) -> crate::model::Health {
    if h.status == Status::Unknown && h.message.ends_with("not found") {
        crate::model::Health::Missing
    } else {
        h.status.recorded()
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
