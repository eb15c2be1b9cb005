//! Owns the per-kind readiness rules: live object JSON in, [`Health`] out, no I/O.

use super::{Health, Status};
use serde_json::Value;

/// The health of one live object (as returned by the API server, with `status`).
pub fn assess(object: &Value) -> Health {
    if object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return Health::new(Status::Terminating, "deletion in progress");
    }
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let Some(kind) = object.get("kind").and_then(Value::as_str) else {
        return Health::new(Status::Unknown, "object has no kind");
    };
    // Every controller-backed kind first: a status written for an older generation says
    // nothing about the current spec.
    if let Some(pending) = generation_pending(object) {
        return pending;
    }
    match (group, kind) {
        ("apps" | "extensions", "Deployment") => deployment(object),
        ("apps" | "extensions", "ReplicaSet") => replica_set(object),
        ("apps", "StatefulSet") => stateful_set(object),
        ("apps" | "extensions", "DaemonSet") => daemon_set(object),
        ("batch", "Job") => job(object),
        ("", "Pod") => pod(object),
        ("", "Service") => service(object),
        ("", "PersistentVolumeClaim") => pvc(object),
        ("", "Namespace") => namespace(object),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(object),
        _ => generic(object),
    }
}

/// The label selector (`k=v,...`) of a workload's Pods, for kinds whose health depends on Pods
/// they own; `None` for other kinds and for selectors without `matchLabels`.
pub fn pod_selector(object: &Value) -> Option<String> {
    let api_version = object.get("apiVersion").and_then(Value::as_str)?;
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let kind = object.get("kind").and_then(Value::as_str)?;
    if !matches!(
        (group, kind),
        (
            "apps",
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet"
        ) | ("batch", "Job")
    ) {
        return None;
    }
    let labels = object.pointer("/spec/selector/matchLabels")?.as_object()?;
    let pairs: Vec<String> = labels
        .iter()
        .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
        .collect();
    (!pairs.is_empty()).then(|| pairs.join(","))
}

/// What keeps one Pod from running and ready, in the words its kubelet and scheduler wrote:
/// a container waiting (CrashLoopBackOff, ImagePullBackOff) or terminated with an error, a
/// Pod the scheduler cannot place, a Ready condition that is false. `None` for a Pod that is
/// running and ready, or done.
pub fn pod_problem(pod: &Value) -> Option<String> {
    let phase = text(pod, "/status/phase").unwrap_or_default();
    if phase == "Succeeded" {
        return None;
    }
    let statuses = ["/status/initContainerStatuses", "/status/containerStatuses"]
        .iter()
        .filter_map(|p| pod.pointer(p)?.as_array())
        .flatten();
    for c in statuses {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
        let restarts = c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        let restarted = if restarts > 0 {
            format!(", restarted {restarts} times")
        } else {
            String::new()
        };
        if let Some(waiting) = c.pointer("/state/waiting") {
            let reason = waiting
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("waiting");
            let message = waiting.get("message").and_then(Value::as_str);
            let message = message.map(|m| format!(" ({m})")).unwrap_or_default();
            return Some(format!("container {name} {reason}{message}{restarted}"));
        }
        if let Some(done) = c.pointer("/state/terminated") {
            let code = done.get("exitCode").and_then(Value::as_i64).unwrap_or(0);
            if code != 0 {
                let reason = done
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("terminated");
                return Some(format!(
                    "container {name} {reason} (exit code {code}){restarted}"
                ));
            }
        }
    }
    if let Some(c) = condition(pod, "PodScheduled")
        && c.status == "False"
    {
        return Some(format!("not scheduled: {}", c.detail()));
    }
    if phase == "Failed" {
        return Some(format!(
            "failed: {}",
            text(pod, "/status/message")
                .or(text(pod, "/status/reason"))
                .unwrap_or("no reason given")
        ));
    }
    match condition(pod, "Ready") {
        Some(c) if c.status == "True" => None,
        Some(c) => Some(format!("not ready: {}", c.detail())),
        None => Some(format!(
            "phase {}",
            if phase.is_empty() { "unknown" } else { phase }
        )),
    }
}

fn int(object: &Value, pointer: &str) -> Option<i64> {
    object.pointer(pointer).and_then(Value::as_i64)
}

fn text<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

/// `metadata.generation` ahead of `status.observedGeneration`. Objects whose status has no
/// observedGeneration (most without a controller) are not judged by it.
fn generation_pending(object: &Value) -> Option<Health> {
    let generation = int(object, "/metadata/generation")?;
    let observed = int(object, "/status/observedGeneration")?;
    (observed < generation).then(|| {
        Health::new(
            Status::InProgress,
            format!("generation {generation} not yet observed (observed {observed})"),
        )
    })
}

/// One entry of `status.conditions`.
struct Condition<'a> {
    status: &'a str,
    reason: &'a str,
    message: &'a str,
}

fn condition<'a>(object: &'a Value, kind: &str) -> Option<Condition<'a>> {
    let found = object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))?;
    let field = |name: &str| found.get(name).and_then(Value::as_str).unwrap_or_default();
    Some(Condition {
        status: field("status"),
        reason: field("reason"),
        message: field("message"),
    })
}

impl Condition<'_> {
    /// "Reason: message", leaving out whichever is empty.
    fn detail(&self) -> String {
        match (self.reason.is_empty(), self.message.is_empty()) {
            (false, false) => format!("{}: {}", self.reason, self.message),
            (false, true) => self.reason.to_string(),
            (true, false) => self.message.to_string(),
            (true, true) => "no reason given".to_string(),
        }
    }
}

fn has_status(object: &Value) -> bool {
    object.get("status").is_some_and(|s| !s.is_null())
}

fn deployment(object: &Value) -> Health {
    if let Some(c) = condition(object, "Progressing")
        && c.reason == "ProgressDeadlineExceeded"
    {
        return Health::new(
            Status::Failed,
            format!("progress deadline exceeded: {}", c.detail()),
        );
    }
    if !has_status(object) {
        return Health::new(Status::InProgress, "no status yet");
    }
    // The API server defaults replicas to 1; a manifest read before defaulting may lack it.
    let replicas = int(object, "/spec/replicas").unwrap_or(1);
    let updated = int(object, "/status/updatedReplicas").unwrap_or(0);
    let total = int(object, "/status/replicas").unwrap_or(0);
    let available = int(object, "/status/availableReplicas").unwrap_or(0);
    let ready = int(object, "/status/readyReplicas").unwrap_or(0);
    if updated < replicas {
        return Health::new(
            Status::InProgress,
            format!("{updated} of {replicas} replicas updated"),
        );
    }
    if total > updated {
        return Health::new(
            Status::InProgress,
            format!("{} old replicas pending termination", total - updated),
        );
    }
    if available < replicas {
        return Health::new(
            Status::InProgress,
            format!("{available} of {replicas} replicas available"),
        );
    }
    if ready < replicas {
        return Health::new(
            Status::InProgress,
            format!("{ready} of {replicas} replicas ready"),
        );
    }
    Health::new(
        Status::Current,
        format!("{replicas} replicas up to date and available"),
    )
}

fn replica_set(object: &Value) -> Health {
    if !has_status(object) {
        return Health::new(Status::InProgress, "no status yet");
    }
    let replicas = int(object, "/spec/replicas").unwrap_or(1);
    let ready = int(object, "/status/readyReplicas").unwrap_or(0);
    let available = int(object, "/status/availableReplicas").unwrap_or(0);
    if ready < replicas || available < replicas {
        return Health::new(
            Status::InProgress,
            format!("{available} of {replicas} replicas available"),
        );
    }
    Health::new(Status::Current, format!("{replicas} replicas available"))
}

fn pod(object: &Value) -> Health {
    match text(object, "/status/phase") {
        // A finished Pod (a Job's, or restartPolicy Never) is done, not stuck.
        Some("Succeeded") => Health::new(Status::Current, "completed"),
        Some("Failed") => Health::new(
            Status::Failed,
            format!(
                "pod failed: {}",
                text(object, "/status/message")
                    .or(text(object, "/status/reason"))
                    .unwrap_or("no reason given")
            ),
        ),
        Some("Running") => match condition(object, "Ready") {
            Some(c) if c.status == "True" => Health::new(Status::Current, "running and ready"),
            _ => Health::new(Status::InProgress, "running, not ready"),
        },
        Some(phase) => Health::new(Status::InProgress, format!("phase {phase}")),
        None => Health::new(Status::InProgress, "no phase yet"),
    }
}

fn stateful_set(object: &Value) -> Health {
    if !has_status(object) {
        return Health::new(Status::InProgress, "no status yet");
    }
    // With OnDelete, pods are only replaced when someone deletes them: there is no rollout to
    // wait for (kstatus treats it the same way).
    if text(object, "/spec/updateStrategy/type") == Some("OnDelete") {
        return Health::new(Status::Current, "OnDelete update strategy");
    }
    let replicas = int(object, "/spec/replicas").unwrap_or(1);
    let ready = int(object, "/status/readyReplicas").unwrap_or(0);
    let current = int(object, "/status/currentReplicas").unwrap_or(0);
    let updated = int(object, "/status/updatedReplicas").unwrap_or(0);
    if ready < replicas {
        return Health::new(
            Status::InProgress,
            format!("{ready} of {replicas} replicas ready"),
        );
    }
    if let Some(partition) = int(object, "/spec/updateStrategy/rollingUpdate/partition")
        && partition > 0
    {
        // A partitioned rollout stops at the partition: only the ordinals above it update.
        let expected = (replicas - partition).max(0);
        return if updated < expected {
            Health::new(
                Status::InProgress,
                format!("{updated} of {expected} replicas above partition {partition} updated"),
            )
        } else {
            Health::new(
                Status::Current,
                format!("partitioned rollout at {partition} done"),
            )
        };
    }
    let current_revision = text(object, "/status/currentRevision");
    let update_revision = text(object, "/status/updateRevision");
    if current_revision != update_revision {
        return Health::new(
            Status::InProgress,
            format!(
                "rolling out revision {} ({updated} of {replicas} updated)",
                update_revision.unwrap_or("?")
            ),
        );
    }
    if current < replicas && replicas > 0 {
        return Health::new(
            Status::InProgress,
            format!("{current} of {replicas} replicas at the current revision"),
        );
    }
    Health::new(Status::Current, format!("{replicas} replicas ready"))
}

fn daemon_set(object: &Value) -> Health {
    if !has_status(object) {
        return Health::new(Status::InProgress, "no status yet");
    }
    let desired = int(object, "/status/desiredNumberScheduled").unwrap_or(0);
    let scheduled = int(object, "/status/currentNumberScheduled").unwrap_or(0);
    let updated = int(object, "/status/updatedNumberScheduled").unwrap_or(0);
    let available = int(object, "/status/numberAvailable").unwrap_or(0);
    if scheduled < desired {
        return Health::new(
            Status::InProgress,
            format!("{scheduled} of {desired} pods scheduled"),
        );
    }
    if updated < desired {
        return Health::new(
            Status::InProgress,
            format!("{updated} of {desired} pods updated"),
        );
    }
    if available < desired {
        return Health::new(
            Status::InProgress,
            format!("{available} of {desired} pods available"),
        );
    }
    Health::new(
        Status::Current,
        format!("{desired} pods up to date and available"),
    )
}

fn job(object: &Value) -> Health {
    if let Some(c) = condition(object, "Failed")
        && c.status == "True"
    {
        return Health::new(Status::Failed, format!("job failed: {}", c.detail()));
    }
    if let Some(c) = condition(object, "Complete")
        && c.status == "True"
    {
        return Health::new(Status::Current, "job complete");
    }
    if object.pointer("/spec/suspend") == Some(&Value::Bool(true)) {
        // Nothing will run until someone resumes it; waiting for it would only time out.
        return Health::new(Status::Current, "job suspended");
    }
    let active = int(object, "/status/active").unwrap_or(0);
    let succeeded = int(object, "/status/succeeded").unwrap_or(0);
    Health::new(
        Status::InProgress,
        format!("job running: {active} active, {succeeded} succeeded"),
    )
}

fn service(object: &Value) -> Health {
    if text(object, "/spec/type") != Some("LoadBalancer") {
        return Health::new(Status::Current, "service ready");
    }
    let has_ingress = object
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .is_some_and(|i| !i.is_empty());
    if has_ingress {
        Health::new(Status::Current, "load balancer provisioned")
    } else {
        Health::new(Status::InProgress, "waiting for a load balancer address")
    }
}

fn pvc(object: &Value) -> Health {
    match text(object, "/status/phase") {
        Some("Bound") => Health::new(Status::Current, "bound"),
        Some("Lost") => Health::new(Status::Failed, "the bound volume is lost"),
        Some(phase) => Health::new(Status::InProgress, format!("phase {phase}")),
        None => Health::new(Status::InProgress, "no phase yet"),
    }
}

fn namespace(object: &Value) -> Health {
    match text(object, "/status/phase") {
        Some("Active") => Health::new(Status::Current, "active"),
        Some("Terminating") => Health::new(Status::Terminating, "terminating"),
        Some(phase) => Health::new(Status::Unknown, format!("unknown phase {phase}")),
        // A namespace read before the server defaulted its status.
        None => Health::new(Status::InProgress, "no phase yet"),
    }
}

fn crd(object: &Value) -> Health {
    if let Some(c) = condition(object, "NamesAccepted")
        && c.status == "False"
    {
        return Health::new(
            Status::Failed,
            format!("names not accepted: {}", c.detail()),
        );
    }
    match condition(object, "Established") {
        Some(c) if c.status == "True" => Health::new(Status::Current, "established"),
        Some(c) => Health::new(
            Status::InProgress,
            format!("not established yet: {}", c.detail()),
        ),
        None => Health::new(Status::InProgress, "not established yet"),
    }
}

/// Condition types that say "ready" when True and "not yet" when False, most common first.
const READY_TYPES: [&str; 3] = ["Ready", "Available", "Established"];

/// kstatus's conventions for kinds it does not know: `Stalled` is failure, `Reconciling` is
/// work in progress, and a ready-like condition decides the rest. No conditions: current.
fn generic(object: &Value) -> Health {
    if let Some(c) = condition(object, "Stalled")
        && c.status == "True"
    {
        return Health::new(Status::Failed, format!("stalled: {}", c.detail()));
    }
    if let Some(c) = condition(object, "Reconciling")
        && c.status == "True"
    {
        return Health::new(Status::InProgress, format!("reconciling: {}", c.detail()));
    }
    for kind in READY_TYPES {
        if let Some(c) = condition(object, kind) {
            return match c.status {
                "True" => Health::new(Status::Current, kind),
                "False" => Health::new(
                    Status::InProgress,
                    format!("not {}: {}", kind.to_lowercase(), c.detail()),
                ),
                other => Health::new(
                    Status::Unknown,
                    format!("{kind} condition is {other:?}: {}", c.detail()),
                ),
            };
        }
    }
    Health::new(Status::Current, "exists")
}
