//! The committed OpenAPI document (`docs/openapi.yaml`, embedded in reckon as `api::OPENAPI`)
//! read as JSON, and a small validator for the parts of JSON Schema it uses (type, nullable,
//! required, properties, items, enum, $ref), so tests can check real responses against it.

use serde_json::Value;
use std::collections::BTreeSet;

pub struct Spec(pub Value);

impl Spec {
    pub fn load() -> Spec {
        Spec(serde_saphyr::from_str(reckon::api::OPENAPI).expect("docs/openapi.yaml parses"))
    }

    /// Every (METHOD, path) the document describes.
    pub fn operations(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in self.0["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "post", "put", "patch", "delete", "head"].contains(&method.as_str()) {
                    out.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let pointer = r.strip_prefix('#').expect("local $ref");
                self.resolve(
                    self.0
                        .pointer(pointer)
                        .unwrap_or_else(|| panic!("{r} resolves")),
                )
            }
            None => v,
        }
    }

    /// The JSON schema of the response `status` of `method path`.
    pub fn response_schema(&self, method: &str, path: &str, status: u16) -> &Value {
        let op = &self.0["paths"][path][method.to_lowercase()];
        assert!(!op.is_null(), "{method} {path} is documented");
        let resp = self.resolve(&op["responses"][status.to_string()]);
        assert!(!resp.is_null(), "{method} {path} documents status {status}");
        self.resolve(&resp["content"]["application/json"]["schema"])
    }

    /// Checks `value` against `schema`; the error names the JSON path that does not fit.
    pub fn validate(&self, schema: &Value, value: &Value) -> Result<(), String> {
        self.check(schema, value, "$")
    }

    fn check(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let schema = self.resolve(schema);
        if value.is_null() {
            return if schema["nullable"].as_bool() == Some(true) || schema.get("type").is_none() {
                Ok(())
            } else {
                Err(format!("{at}: null but not nullable"))
            };
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            return Err(format!("{at}: {value} not in {allowed:?}"));
        }
        let ok = match schema["type"].as_str() {
            None => true,
            Some("object") => value.is_object(),
            Some("array") => value.is_array(),
            Some("string") => value.is_string(),
            Some("integer") => value.is_u64() || value.is_i64(),
            Some("number") => value.is_number(),
            Some("boolean") => value.is_boolean(),
            Some(t) => return Err(format!("{at}: unsupported schema type {t}")),
        };
        if !ok {
            return Err(format!("{at}: expected {}, got {value}", schema["type"]));
        }
        if let Some(required) = schema["required"].as_array() {
            for r in required {
                let r = r.as_str().expect("required names");
                if value.get(r).is_none() {
                    return Err(format!("{at}: missing required field {r}"));
                }
            }
        }
        if let (Some(props), Some(obj)) = (schema["properties"].as_object(), value.as_object()) {
            for (name, sub) in props {
                if let Some(v) = obj.get(name) {
                    self.check(sub, v, &format!("{at}.{name}"))?;
                }
            }
        }
        if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
            for (i, v) in arr.iter().enumerate() {
                self.check(items, v, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }
}
