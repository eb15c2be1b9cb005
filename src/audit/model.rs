//! Owns the wire format reckon reads from the API server's audit webhook (`audit.k8s.io/v1`
//! `EventList`, only the fields attribution needs) and the compact [`AuditRecord`] the receiver
//! keeps of each write.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

/// What the webhook backend POSTs: a batch of audit events.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventList {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    #[serde(default)]
    pub items: Vec<AuditEvent>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub stage: String,
    #[serde(default, rename = "requestURI")]
    pub request_uri: String,
    pub verb: String,
    pub user: UserInfo,
    pub impersonated_user: Option<UserInfo>,
    #[serde(default, rename = "sourceIPs")]
    pub source_ips: Vec<String>,
    pub user_agent: Option<String>,
    pub object_ref: Option<ObjectReference>,
    pub response_status: Option<Status>,
    /// Present at audit level `Request` and above.
    pub request_object: Option<Value>,
    pub request_received_timestamp: Option<DateTime<Utc>>,
    pub stage_timestamp: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, Default)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    pub uid: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    pub resource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Empty or absent: the core group.
    pub api_group: Option<String>,
    pub api_version: Option<String>,
    pub subresource: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Status {
    pub code: Option<i32>,
}

/// The verbs that change objects; everything else is dropped on receipt.
pub const WRITE_VERBS: [&str; 4] = ["create", "update", "patch", "delete"];

/// One successful write as the receiver keeps it (a few hundred bytes plus the request body).
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    pub audit_id: String,
    pub verb: String,
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub impersonated: Option<String>,
    pub user_agent: Option<String>,
    pub source_ips: Vec<String>,
    /// API group (`""` for core), plural resource, subresource, namespace and name.
    pub group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The `fieldManager` the request named (query parameter), if any.
    pub field_manager: Option<String>,
    pub request_object: Option<Value>,
    /// `stageTimestamp` of the ResponseComplete stage (when the write took effect).
    pub time: DateTime<Utc>,
}

/// Why an audit event was not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// Not the ResponseComplete stage (RequestReceived, ResponseStarted, Panic).
    Stage,
    /// A read, or a write that failed (non-2xx).
    NotAWrite,
    /// No object reference or resource (a non-resource URL).
    NoObject,
}

impl AuditRecord {
    /// The record of a completed, successful write to a resource; why not otherwise.
    pub fn from_event(e: AuditEvent) -> Result<AuditRecord, Skipped> {
        if e.stage != "ResponseComplete" {
            return Err(Skipped::Stage);
        }
        if !WRITE_VERBS.contains(&e.verb.as_str()) {
            return Err(Skipped::NotAWrite);
        }
        // The status is always there at ResponseComplete; a missing one is not proof of success.
        let code = e.response_status.as_ref().and_then(|s| s.code);
        if !code.is_some_and(|c| (200..300).contains(&c)) {
            return Err(Skipped::NotAWrite);
        }
        let Some(object) = e.object_ref else {
            return Err(Skipped::NoObject);
        };
        let Some(resource) = object.resource.filter(|r| !r.is_empty()) else {
            return Err(Skipped::NoObject);
        };
        let time = e
            .stage_timestamp
            .or(e.request_received_timestamp)
            .ok_or(Skipped::Stage)?;
        // A create names no object in the URL; its name is in the body.
        let name = object.name.filter(|n| !n.is_empty()).or_else(|| {
            e.request_object
                .as_ref()
                .and_then(|b| b.pointer("/metadata/name"))
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        Ok(AuditRecord {
            field_manager: query_param(&e.request_uri, "fieldManager"),
            audit_id: e.audit_id,
            verb: e.verb,
            username: e.user.username,
            uid: e.user.uid.filter(|u| !u.is_empty()),
            groups: e.user.groups,
            impersonated: e.impersonated_user.map(|u| u.username),
            user_agent: e.user_agent,
            source_ips: e.source_ips,
            group: object.api_group.unwrap_or_default(),
            api_version: object.api_version.unwrap_or_default(),
            resource,
            subresource: object.subresource.filter(|s| !s.is_empty()),
            namespace: object.namespace.filter(|n| !n.is_empty()),
            name,
            request_object: e.request_object,
            time,
        })
    }

    /// Roughly how many bytes the record holds (the receiver's memory bound counts these).
    pub fn weight(&self) -> usize {
        let body = self
            .request_object
            .as_ref()
            .map_or(0, |v| v.to_string().len());
        256 + body
    }
}

/// One query parameter of a request URI, percent-decoding nothing (field managers are plain).
fn query_param(uri: &str, key: &str) -> Option<String> {
    let (_, query) = uri.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The first write of [`SCALE`], as `user`.
    pub(crate) fn record(user: &str) -> AuditRecord {
        let list: EventList = serde_json::from_str(SCALE).unwrap();
        let first = list.items.into_iter().next().unwrap();
        let mut r = AuditRecord::from_event(first).unwrap();
        r.username = user.to_string();
        r
    }

    /// A real batch as kube-apiserver v1.20's webhook backend sent it (`kubectl scale`, level
    /// Request), trimmed of annotations.
    pub(crate) const SCALE: &str = r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[
      {"level":"Request","auditID":"4bd6a2a5-47b7-4d51-8f3e-4cf0a5b08b71","stage":"ResponseComplete",
       "requestURI":"/apis/apps/v1/namespaces/shop/deployments/web/scale","verb":"patch",
       "user":{"username":"alice","uid":"2001","groups":["editors","system:authenticated"]},
       "sourceIPs":["127.0.0.1"],"userAgent":"kubectl/v1.32.4 (linux/amd64) kubernetes/59526cd",
       "objectRef":{"resource":"deployments","namespace":"shop","name":"web","apiGroup":"apps","apiVersion":"v1","subresource":"scale"},
       "responseStatus":{"metadata":{},"code":200},
       "requestObject":{"spec":{"replicas":3}},
       "requestReceivedTimestamp":"2026-11-27T16:40:01.100000Z","stageTimestamp":"2026-11-27T16:40:01.120000Z"},
      {"level":"Request","auditID":"x2","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/shop/configmaps/c","verb":"get",
       "user":{"username":"bob"},"objectRef":{"resource":"configmaps","namespace":"shop","name":"c","apiVersion":"v1"},
       "responseStatus":{"code":200},"stageTimestamp":"2026-11-27T16:40:01.120000Z"},
      {"level":"Request","auditID":"x3","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/shop/configmaps?fieldManager=kubectl-create","verb":"create",
       "user":{"username":"bob"},"objectRef":{"resource":"configmaps","namespace":"shop","apiVersion":"v1"},
       "responseStatus":{"code":201},"requestObject":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"extra"}},
       "stageTimestamp":"2026-11-27T16:40:02Z"},
      {"level":"Request","auditID":"x4","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/shop/configmaps/c","verb":"delete",
       "user":{"username":"bob"},"objectRef":{"resource":"configmaps","namespace":"shop","name":"c","apiVersion":"v1"},
       "responseStatus":{"code":404},"stageTimestamp":"2026-11-27T16:40:02Z"}
    ]}"#;

    #[test]
    fn a_v1_event_list_yields_its_successful_writes() {
        let list: EventList = serde_json::from_str(SCALE).unwrap();
        assert_eq!(list.kind.as_deref(), Some("EventList"));
        let kept: Vec<Result<AuditRecord, Skipped>> = list
            .items
            .into_iter()
            .map(AuditRecord::from_event)
            .collect();
        let scale = kept[0].as_ref().unwrap();
        assert_eq!(scale.username, "alice");
        assert_eq!(scale.uid.as_deref(), Some("2001"));
        assert_eq!(scale.groups, vec!["editors", "system:authenticated"]);
        assert_eq!(
            (scale.group.as_str(), scale.resource.as_str()),
            ("apps", "deployments")
        );
        assert_eq!(scale.subresource.as_deref(), Some("scale"));
        assert_eq!(scale.name.as_deref(), Some("web"));
        assert_eq!(scale.time.to_rfc3339(), "2026-11-27T16:40:01.120+00:00");
        assert_eq!(kept[1], Err(Skipped::NotAWrite), "a get");
        let create = kept[2].as_ref().unwrap();
        assert_eq!(
            create.name.as_deref(),
            Some("extra"),
            "the name of a create"
        );
        assert_eq!(create.field_manager.as_deref(), Some("kubectl-create"));
        assert_eq!(create.group, "");
        assert_eq!(kept[3], Err(Skipped::NotAWrite), "a failed delete");
    }

    #[test]
    fn other_stages_are_skipped() {
        let e: AuditEvent = serde_json::from_str(
            r#"{"auditID":"a","stage":"RequestReceived","verb":"patch","user":{"username":"u"},
                "objectRef":{"resource":"deployments","name":"w"}}"#,
        )
        .unwrap();
        assert_eq!(AuditRecord::from_event(e), Err(Skipped::Stage));
    }
}
