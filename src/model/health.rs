//! Owns [`Health`], the word reckon records for an object's and an App's health
//! (`HealthChanged`, status, history). Stored: its variants keep their order.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// Not read yet, or unreadable.
    Unknown,
    /// On its way (a rollout, a controller that has not caught up, being deleted).
    Progressing,
    Healthy,
    /// It will not get there without a change.
    Degraded,
    /// The object does not exist.
    Missing,
}
