//! `reckon fetch` through the real binary: Apps from a reckon.yaml, commits recorded and exported
//! as JSON lines, a second fetch that records nothing, and an unreachable remote that fails the
//! command while its failure is recorded.

use crate::support;
use support::reckon;

use anyhow::Result;
use reckon_testenv::git::{Fixture, Person};

#[test]
fn fetch_records_commits_and_failures_in_the_store() -> Result<()> {
    let f = Fixture::new()?;
    f.commit("Add shop")
        .author(Person::new("Ada", "ada@example.com").at(1_700_000_000, 60))
        .write("apps/shop/cm.yaml", "kind: ConfigMap\n")
        .create()?;
    let head = f
        .commit("Tune shop")
        .author(Person::new("Grace", "grace@example.com").at(1_700_000_500, -240))
        .write("apps/shop/cm.yaml", "kind: ConfigMap # tuned\n")
        .create()?;
    f.push()?;
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("reckon.yaml"),
        format!(
            "apps:\n  - name: shop\n    source:\n      url: {}\n      path: apps/shop\n",
            f.file_url()
        ),
    )?;

    let out = reckon(dir.path()).arg("fetch").output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("shop: 1 event(s) recorded; head {}", &head[..12])),
        "{stdout}"
    );

    // A second commit and fetch: only the new one is recorded.
    let next = f
        .commit("Scale shop")
        .author(Person::new("Linus", "linus@example.com").at(1_700_001_000, 0))
        .write("apps/shop/cm.yaml", "kind: ConfigMap # scaled\n")
        .create()?;
    f.push()?;
    let out = reckon(dir.path()).args(["fetch", "shop"]).output()?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("shop: 1 event(s) recorded"));
    let out = reckon(dir.path()).arg("fetch").output()?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("shop: 0 event(s) recorded"));

    let export = reckon(dir.path()).args(["store", "export"]).output()?;
    assert!(export.status.success());
    let commits: Vec<serde_json::Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "CommitObserved")
        .collect();
    assert_eq!(commits.len(), 2, "{commits:?}");
    let c = &commits[1]["data"];
    assert_eq!(c["sha"], next.as_str());
    assert_eq!(c["author"]["email"], "linus@example.com");
    assert_eq!(commits[0]["data"]["author"]["offset_seconds"], -14400);

    // An unreachable remote: exit 1, the failure named, recorded, and the head kept.
    std::fs::write(
        dir.path().join("reckon.yaml"),
        "apps:\n  - name: shop\n    source:\n      url: git://127.0.0.1:1/nothing.git\n",
    )?;
    let out = reckon(dir.path()).arg("fetch").output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("shop: fetch failed, keeping {}", &next[..12])),
        "{stdout}"
    );
    let export = reckon(dir.path()).args(["store", "export"]).output()?;
    assert!(String::from_utf8_lossy(&export.stdout).contains("\"SourceFetchFailed\""));
    Ok(())
}
