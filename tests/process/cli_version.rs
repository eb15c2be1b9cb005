//! `reckon version` through the real binary: build identity, the connected cluster's version,
//! a clear failure for an unreachable cluster, and JSON log lines with `--log-format json`.

use crate::support;

use std::process::Command;

fn reckon() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reckon"));
    c.env_remove("KUBECONFIG").env_remove("RUST_LOG");
    c
}

#[test]
fn version_reports_build_identity_as_json() {
    let out = reckon().args(["version", "-o", "json"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let commit = v["git_commit"].as_str().unwrap();
    assert!(
        commit == "unknown" || commit.len() >= 40,
        "commit should be a full SHA: {commit}"
    );
    assert_eq!(v["tested_kubernetes"][0], "v1.20.2");
    assert_eq!(v["tested_kubernetes"][1], "v1.37.2");
    assert_eq!(
        v["supported_kubernetes"],
        serde_json::json!({"oldest": "v1.20", "newest": "v1.37"})
    );
    assert!(v.get("cluster").is_none(), "no cluster was asked for: {v}");
}

#[test]
fn version_reports_the_clusters_version() {
    let kubeconfig = support::kubeconfig();
    let out = reckon()
        .args(["version", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("cluster: "))
        .unwrap_or_else(|| panic!("no cluster line in {stdout}"));
    // Both ends of the version matrix run this test, and both are in the supported range.
    assert!(line.starts_with("cluster: v1."), "{line}");
    assert!(line.ends_with(" (supported)"), "{line}");
    assert!(
        stdout.contains("supported Kubernetes: v1.20 to v1.37\n"),
        "{stdout}"
    );
}

#[test]
fn unreachable_cluster_fails_clearly_with_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    // A kubeconfig pointing at a loopback port nothing listens on.
    let port = reckon_testenv::ports::free_ports(1).unwrap()[0];
    let kc = dir.path().join("kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let out = reckon()
        .args([
            "--log-format",
            "json",
            "version",
            "-o",
            "json",
            "--kubeconfig",
        ])
        .arg(&kc)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = v["cluster"]["error"].as_str().unwrap();
    assert!(err.contains("server for its version"), "{err}");
    // Every stderr line is a JSON log record, and there is at least one at debug level.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let records: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!records.is_empty(), "RUST_LOG=debug produced no log lines");
    assert!(
        records
            .iter()
            .all(|r| r.get("level").is_some() && r.get("timestamp").is_some())
    );
}

#[test]
fn a_missing_kubeconfig_names_the_path() {
    let out = reckon()
        .args(["version", "--kubeconfig", "/nonexistent/kubeconfig"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("/nonexistent/kubeconfig"), "{stdout}");
}
