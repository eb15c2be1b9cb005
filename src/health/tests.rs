//! Readiness rules, kind by kind, over object JSON shaped like what v1.20 returns.

use super::*;
use serde_json::{Value, json};

fn status_of(object: Value) -> Status {
    assess(&object).status
}

fn deploy(replicas: Option<i64>, generation: i64, status: Value) -> Value {
    let mut spec = json!({"selector": {"matchLabels": {"app": "x"}}});
    if let Some(r) = replicas {
        spec["replicas"] = json!(r);
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "x", "generation": generation}, "spec": spec, "status": status})
}

#[test]
fn deployment_with_zero_replicas_is_current_once_observed() {
    // What kube-controller-manager writes for replicas: 0 on the test cluster.
    let status = json!({"observedGeneration": 1, "conditions": [
        {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
        {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]});
    assert_eq!(
        status_of(deploy(Some(0), 1, status.clone())),
        Status::Current
    );
    // Not observed yet: the status describes generation 1, the spec is generation 2.
    let health = assess(&deploy(Some(0), 2, status));
    assert_eq!(health.status, Status::InProgress);
    assert!(
        health.message.contains("generation 2"),
        "{}",
        health.message
    );
    // Just created: no status at all.
    assert_eq!(
        status_of(deploy(Some(0), 1, Value::Null)),
        Status::InProgress
    );
}

#[test]
fn deployment_rollout_steps_are_in_progress_until_all_available() {
    let full = json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 3,
        "readyReplicas": 3, "availableReplicas": 3});
    assert_eq!(status_of(deploy(Some(3), 3, full.clone())), Status::Current);
    for (field, value, needle) in [
        ("updatedReplicas", 2, "2 of 3 replicas updated"),
        ("replicas", 4, "1 old replicas pending termination"),
        ("availableReplicas", 1, "1 of 3 replicas available"),
        ("readyReplicas", 2, "2 of 3 replicas ready"),
    ] {
        let mut status = full.clone();
        status[field] = json!(value);
        let health = assess(&deploy(Some(3), 3, status));
        assert_eq!(health.status, Status::InProgress, "{field}");
        assert_eq!(health.message, needle);
    }
    // spec.replicas defaults to 1.
    let one = json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
        "readyReplicas": 1, "availableReplicas": 1});
    assert_eq!(status_of(deploy(None, 1, one)), Status::Current);
    let none = json!({"observedGeneration": 1});
    assert_eq!(status_of(deploy(None, 1, none)), Status::InProgress);
}

#[test]
fn deployment_past_its_progress_deadline_failed() {
    let status = json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
        "conditions": [{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"x-1\" has timed out progressing."}]});
    let health = assess(&deploy(Some(1), 1, status));
    assert_eq!(health.status, Status::Failed);
    assert!(
        health.message.contains("timed out progressing"),
        "{}",
        health.message
    );
}

fn sts(spec: Value, status: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "generation": 1}, "spec": spec, "status": status})
}

#[test]
fn statefulset_rules() {
    // replicas: 0 on v1.20, as the controller writes it.
    let zero = json!({"observedGeneration": 1, "replicas": 0,
        "currentRevision": "db-1", "updateRevision": "db-1", "collisionCount": 0});
    assert_eq!(
        status_of(sts(json!({"replicas": 0}), zero)),
        Status::Current
    );
    let ready = json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 2,
        "currentReplicas": 2, "updatedReplicas": 2, "currentRevision": "db-1", "updateRevision": "db-1"});
    assert_eq!(
        status_of(sts(json!({"replicas": 2}), ready.clone())),
        Status::Current
    );
    let mut not_ready = ready.clone();
    not_ready["readyReplicas"] = json!(1);
    assert_eq!(
        status_of(sts(json!({"replicas": 2}), not_ready)),
        Status::InProgress
    );
    let mut rolling = ready.clone();
    rolling["updateRevision"] = json!("db-2");
    rolling["updatedReplicas"] = json!(1);
    let health = assess(&sts(json!({"replicas": 2}), rolling.clone()));
    assert_eq!(health.status, Status::InProgress);
    assert!(health.message.contains("db-2"), "{}", health.message);
    // A partition of 1 with one updated replica above it is a finished (partial) rollout.
    let partitioned = json!({"replicas": 2, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}});
    assert_eq!(
        status_of(sts(partitioned.clone(), rolling.clone())),
        Status::Current
    );
    let mut none_updated = rolling.clone();
    none_updated["updatedReplicas"] = json!(0);
    assert_eq!(
        status_of(sts(partitioned, none_updated)),
        Status::InProgress
    );
    // OnDelete: no rollout to wait for.
    let on_delete = json!({"replicas": 2, "updateStrategy": {"type": "OnDelete"}});
    assert_eq!(status_of(sts(on_delete, rolling)), Status::Current);
    let mut behind = ready;
    behind["currentReplicas"] = json!(1);
    assert_eq!(
        status_of(sts(json!({"replicas": 2}), behind)),
        Status::InProgress
    );
    assert_eq!(
        status_of(sts(json!({"replicas": 2}), Value::Null)),
        Status::InProgress
    );
}

fn ds(status: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "generation": 1}, "spec": {}, "status": status})
}

#[test]
fn daemonset_rules() {
    // No nodes on the test cluster: nothing to schedule is done.
    let none = json!({"observedGeneration": 1, "desiredNumberScheduled": 0,
        "currentNumberScheduled": 0, "numberReady": 0, "numberMisscheduled": 0});
    assert_eq!(status_of(ds(none)), Status::Current);
    let full = json!({"observedGeneration": 1, "desiredNumberScheduled": 3,
        "currentNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3});
    assert_eq!(status_of(ds(full.clone())), Status::Current);
    for field in [
        "currentNumberScheduled",
        "updatedNumberScheduled",
        "numberAvailable",
    ] {
        let mut status = full.clone();
        status[field] = json!(2);
        assert_eq!(status_of(ds(status)), Status::InProgress, "{field}");
    }
    let mut stale = ds(full);
    stale["metadata"]["generation"] = json!(2);
    assert_eq!(status_of(stale), Status::InProgress);
}

fn job(spec: Value, status: Value) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
        "spec": spec, "status": status})
}

#[test]
fn job_rules() {
    let complete = json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]});
    assert_eq!(status_of(job(json!({}), complete)), Status::Current);
    let failed = json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True",
        "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]});
    let health = assess(&job(json!({}), failed));
    assert_eq!(health.status, Status::Failed);
    assert_eq!(
        health.message,
        "job failed: BackoffLimitExceeded: Job has reached the specified backoff limit"
    );
    let running = json!({"active": 1, "startTime": "2026-01-01T00:00:00Z"});
    let health = assess(&job(json!({}), running));
    assert_eq!(health.status, Status::InProgress);
    assert_eq!(health.message, "job running: 1 active, 0 succeeded");
    assert_eq!(status_of(job(json!({}), json!({}))), Status::InProgress);
    assert_eq!(
        status_of(job(json!({"suspend": true}), json!({}))),
        Status::Current
    );
    // A condition present but not True decides nothing.
    let not_yet = json!({"conditions": [{"type": "Complete", "status": "False"}]});
    assert_eq!(status_of(job(json!({}), not_yet)), Status::InProgress);
}

#[test]
fn service_waits_for_a_load_balancer_only_when_it_asks_for_one() {
    let svc = |spec: Value, status: Value| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": spec, "status": status})
    };
    assert_eq!(
        status_of(svc(
            json!({"type": "ClusterIP"}),
            json!({"loadBalancer": {}})
        )),
        Status::Current
    );
    assert_eq!(status_of(svc(json!({}), Value::Null)), Status::Current);
    assert_eq!(
        status_of(svc(
            json!({"type": "LoadBalancer"}),
            json!({"loadBalancer": {}})
        )),
        Status::InProgress
    );
    assert_eq!(
        status_of(svc(
            json!({"type": "LoadBalancer"}),
            json!({"loadBalancer": {"ingress": []}})
        )),
        Status::InProgress
    );
    assert_eq!(
        status_of(svc(
            json!({"type": "LoadBalancer"}),
            json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}})
        )),
        Status::Current
    );
}

#[test]
fn pvc_rules() {
    let pvc = |status: Value| {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "d"},
            "status": status})
    };
    assert_eq!(status_of(pvc(json!({"phase": "Bound"}))), Status::Current);
    assert_eq!(
        status_of(pvc(json!({"phase": "Pending"}))),
        Status::InProgress
    );
    assert_eq!(status_of(pvc(json!({"phase": "Lost"}))), Status::Failed);
    assert_eq!(status_of(pvc(json!({}))), Status::InProgress);
}

#[test]
fn crd_rules() {
    let crd = |conditions: Value| {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com", "generation": 1},
            "status": {"conditions": conditions}})
    };
    let established = json!([
        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}]);
    assert_eq!(status_of(crd(established)), Status::Current);
    let pending = json!([
        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
        {"type": "Established", "status": "False", "reason": "Installing"}]);
    let health = assess(&crd(pending));
    assert_eq!(health.status, Status::InProgress);
    assert_eq!(health.message, "not established yet: Installing");
    assert_eq!(status_of(crd(json!([]))), Status::InProgress);
    let clash = json!([
        {"type": "NamesAccepted", "status": "False", "reason": "PluralConflict",
            "message": "\"widgets\" is already in use"},
        {"type": "Established", "status": "False", "reason": "NotAccepted"}]);
    let health = assess(&crd(clash));
    assert_eq!(health.status, Status::Failed);
    assert!(
        health.message.contains("already in use"),
        "{}",
        health.message
    );
}

#[test]
fn namespace_rules() {
    let ns = |status: Value| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}, "status": status});
    assert_eq!(status_of(ns(json!({"phase": "Active"}))), Status::Current);
    assert_eq!(
        status_of(ns(json!({"phase": "Terminating"}))),
        Status::Terminating
    );
    assert_eq!(status_of(ns(json!({"phase": "Odd"}))), Status::Unknown);
    assert_eq!(status_of(ns(Value::Null)), Status::InProgress);
}

#[test]
fn a_deletion_timestamp_means_terminating_for_every_kind() {
    for (api_version, kind) in [
        ("v1", "ConfigMap"),
        ("apps/v1", "Deployment"),
        ("v1", "Namespace"),
        ("example.com/v1", "Widget"),
    ] {
        let object = json!({"apiVersion": api_version, "kind": kind,
            "metadata": {"name": "x", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Active"}});
        assert_eq!(status_of(object), Status::Terminating, "{kind}");
    }
}

fn custom(generation: i64, status: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "generation": generation}, "status": status})
}

#[test]
fn generic_conditions_decide_other_kinds() {
    // Kinds without status are current as soon as they exist.
    assert_eq!(
        status_of(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})),
        Status::Current
    );
    assert_eq!(status_of(custom(1, json!({}))), Status::Current);
    let ready = |s: &str| json!({"conditions": [{"type": "Ready", "status": s, "reason": "R"}]});
    assert_eq!(status_of(custom(1, ready("True"))), Status::Current);
    assert_eq!(status_of(custom(1, ready("False"))), Status::InProgress);
    assert_eq!(status_of(custom(1, ready("Unknown"))), Status::Unknown);
    let available = json!({"conditions": [{"type": "Available", "status": "False"}]});
    assert_eq!(status_of(custom(1, available)), Status::InProgress);
    let stalled = json!({"conditions": [{"type": "Stalled", "status": "True", "message": "bad spec"},
        {"type": "Ready", "status": "False"}]});
    let health = assess(&custom(1, stalled));
    assert_eq!(health.status, Status::Failed);
    assert_eq!(health.message, "stalled: bad spec");
    let reconciling = json!({"conditions": [{"type": "Reconciling", "status": "True"},
        {"type": "Ready", "status": "True"}]});
    assert_eq!(status_of(custom(1, reconciling)), Status::InProgress);
    // A Ready status written for an older generation is not trusted.
    let old = json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]});
    assert_eq!(status_of(custom(2, old.clone())), Status::InProgress);
    assert_eq!(status_of(custom(1, old)), Status::Current);
}

#[test]
fn objects_without_a_kind_are_unknown() {
    assert_eq!(
        status_of(json!({"metadata": {"name": "x"}})),
        Status::Unknown
    );
    assert_eq!(status_of(json!("not an object")), Status::Unknown);
}

#[test]
fn replicaset_rules() {
    let rs = |replicas: i64, status: Value| {
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-1", "generation": 1}, "spec": {"replicas": replicas},
            "status": status})
    };
    let zero = json!({"observedGeneration": 1, "replicas": 0});
    assert_eq!(status_of(rs(0, zero)), Status::Current);
    let ready =
        json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "availableReplicas": 2});
    assert_eq!(status_of(rs(2, ready)), Status::Current);
    let partly =
        json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "availableReplicas": 1});
    let health = assess(&rs(2, partly));
    assert_eq!(health.status, Status::InProgress);
    assert_eq!(health.message, "1 of 2 replicas available");
    assert_eq!(status_of(rs(1, Value::Null)), Status::InProgress);
}

#[test]
fn pod_rules() {
    let pod = |status: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "status": status});
    // What the test cluster shows: no scheduler, so Pending forever.
    let pending =
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]});
    assert_eq!(status_of(pod(pending)), Status::InProgress);
    let ready = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
    assert_eq!(status_of(pod(ready)), Status::Current);
    let not_ready =
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]});
    assert_eq!(status_of(pod(not_ready)), Status::InProgress);
    // A completed Pod has Ready=False, and is still done.
    let done = json!({"phase": "Succeeded", "conditions": [{"type": "Ready", "status": "False"}]});
    assert_eq!(status_of(pod(done)), Status::Current);
    let failed = json!({"phase": "Failed", "reason": "Evicted", "message": "low on memory"});
    let health = assess(&pod(failed));
    assert_eq!(health.status, Status::Failed);
    assert_eq!(health.message, "pod failed: low on memory");
    assert_eq!(status_of(pod(json!({}))), Status::InProgress);
}

#[test]
fn workloads_name_the_selector_of_their_pods() {
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "spec": {"selector": {"matchLabels": {"app": "web", "tier": "front"}}}});
    assert_eq!(
        super::pod_selector(&deploy).as_deref(),
        Some("app=web,tier=front")
    );
    let job = json!({"apiVersion": "batch/v1", "kind": "Job",
        "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}}}});
    assert_eq!(
        super::pod_selector(&job).as_deref(),
        Some("batch.kubernetes.io/controller-uid=u")
    );
    let service =
        json!({"apiVersion": "v1", "kind": "Service", "spec": {"selector": {"app": "web"}}});
    assert_eq!(super::pod_selector(&service), None);
    let expressions = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}}});
    assert_eq!(super::pod_selector(&expressions), None);
}

#[test]
fn a_pods_problem_is_told_in_the_kubelets_and_schedulers_words() {
    let problem = |status: Value| super::pod_problem(&json!({"status": status}));
    assert_eq!(
        problem(
            json!({"phase": "Running", "containerStatuses": [{"name": "main", "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}}]})
        ),
        Some("container main CrashLoopBackOff (back-off 40s), restarted 3 times".into())
    );
    assert_eq!(
        problem(
            json!({"phase": "Failed", "containerStatuses": [{"name": "run",
            "state": {"terminated": {"reason": "Error", "exitCode": 1}}}]})
        ),
        Some("container run Error (exit code 1)".into())
    );
    assert_eq!(
        problem(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available"}]})
        ),
        Some("not scheduled: Unschedulable: 0/3 nodes are available".into())
    );
    assert_eq!(
        problem(
            json!({"phase": "Running", "containerStatuses": [{"name": "main", "ready": false,
            "state": {"running": {}}}], "conditions": [{"type": "Ready", "status": "False",
            "reason": "ContainersNotReady", "message": "containers with unready status: [main]"}]})
        ),
        Some("not ready: ContainersNotReady: containers with unready status: [main]".into())
    );
    // Running and ready, or finished: nothing to tell.
    assert_eq!(
        problem(json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})),
        None
    );
    assert_eq!(
        problem(
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "run",
            "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]})
        ),
        None
    );
    assert_eq!(problem(json!({})), Some("phase unknown".into()));
}
