//! Owns [`Manifest`], the plain-text form of an object to apply, kept out of logs: its `Debug`
//! hides Secret values and it does not implement `Serialize`, so neither `tracing::debug!(?x)`
//! nor serialising an action or a rendered set can write a Secret value anywhere. What may be
//! stored is [`crate::render::digest::storable_object`] of it.

use serde_json::Value;
use std::fmt;
use std::ops::{Deref, DerefMut};

/// A manifest to apply, Secret values in plain text.
#[derive(Clone, PartialEq)]
pub struct Manifest(Value);

impl Manifest {
    pub fn new(value: Value) -> Self {
        Self(value)
    }

    pub fn as_value(&self) -> &Value {
        &self.0
    }

    /// Mutable access, for the planner's namespace defaulting.
    pub fn as_value_mut(&mut self) -> &mut Value {
        &mut self.0
    }

    pub fn into_value(self) -> Value {
        self.0
    }
}

impl Deref for Manifest {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.0
    }
}

impl DerefMut for Manifest {
    fn deref_mut(&mut self) -> &mut Value {
        &mut self.0
    }
}

impl PartialEq<Manifest> for Value {
    fn eq(&self, other: &Manifest) -> bool {
        *self == other.0
    }
}

impl PartialEq<Value> for Manifest {
    fn eq(&self, other: &Value) -> bool {
        self.0 == *other
    }
}

const REDACTED: &str = "<redacted>";

impl fmt::Debug for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let is_secret = self.0.get("kind").and_then(Value::as_str) == Some("Secret")
            && self.0.get("apiVersion").and_then(Value::as_str) == Some("v1");
        if !is_secret {
            return write!(f, "Manifest({})", self.0);
        }
        let mut shown = self.0.clone();
        for field in ["data", "stringData"] {
            if let Some(Value::Object(values)) = shown.get_mut(field) {
                for value in values.values_mut() {
                    *value = Value::String(REDACTED.to_string());
                }
            }
        }
        if let Some(Value::Object(annotations)) = shown.pointer_mut("/metadata/annotations")
            && annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration")
        {
            annotations.insert(
                "kubectl.kubernetes.io/last-applied-configuration".into(),
                Value::String(REDACTED.to_string()),
            );
        }
        write!(f, "Manifest({shown})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn debug_hides_secret_values_only() {
        let secret = Manifest::new(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"stringData\":{\"p\":\"hunter2\"}}"}},
            "data": {"p": "aHVudGVyMg=="}, "stringData": {"q": "hunter3"}}));
        let shown = format!("{secret:?}");
        for needle in ["hunter2", "hunter3", "aHVudGVyMg"] {
            assert!(!shown.contains(needle), "{needle} in {shown}");
        }
        assert!(shown.contains("\"p\":\"<redacted>\""), "{shown}");
        assert!(shown.contains("\"name\":\"s\""), "{shown}");
        let config_map = Manifest::new(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"p": "visible"}}),
        );
        assert!(format!("{config_map:?}").contains("visible"));
    }

    #[test]
    fn reads_like_a_value() {
        let m = Manifest::new(json!({"kind": "ConfigMap", "data": {"a": 1}}));
        assert_eq!(m["data"]["a"], 1);
        assert_eq!(m, json!({"kind": "ConfigMap", "data": {"a": 1}}));
        assert_eq!(m.clone().into_value(), *m.as_value());
    }
}
