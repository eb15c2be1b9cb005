//! The benchmarks' workload, one definition for all of them so their figures compare: an App of
//! four small objects (ServiceAccount, Service, Deployment, Ingress), the shape of the kubectl
//! baseline in TESTENV.md. The Deployment has `replicas` Pods: one on a cluster with nodes (the
//! newest control plane's simulated ones), so time to production includes Pods becoming Ready;
//! zero on the floor, where no Pod is ever scheduled.

/// The four objects of one App named `name`, as `(file name, YAML document)`.
pub fn app_objects(name: &str, replicas: u32) -> [(&'static str, String); 4] {
    [
        (
            "serviceaccount.yaml",
            format!(
                r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: {name}
"#
            ),
        ),
        (
            "service.yaml",
            format!(
                r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {name}}}
  ports:
  - port: 80
    targetPort: 8080
    protocol: TCP
"#
            ),
        ),
        (
            "deployment.yaml",
            format!(
                r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      serviceAccountName: {name}
      containers:
      - name: app
        image: nginx:1.27
        ports:
        - containerPort: 8080
          protocol: TCP
"#
            ),
        ),
        (
            "ingress.yaml",
            format!(
                r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
spec:
  rules:
  - host: {name}.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: {name}
            port: {{number: 80}}
"#
            ),
        ),
    ]
}

/// `apps` Apps named `app0` … as one multi-document YAML stream, with Deployments of
/// `replicas` Pods.
pub fn manifests(apps: usize, replicas: u32) -> String {
    let mut out = String::new();
    for i in 0..apps {
        for (_, doc) in app_objects(&format!("app{i}"), replicas) {
            out.push_str("---\n");
            out.push_str(&doc);
        }
    }
    out
}

/// A ConfigMap `name` with one key, `color`.
pub fn config_map(name: &str, color: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  color: {color}\n")
}
