//! Issue 21's page timings: the web UI on a large store. The store is the API benchmark's
//! (`api::generate`: the sample stream of 1000 Apps with real manifests, 10M events by default),
//! served by the agent's router (`/api/v1` and `/ui/`, as `reckon run --listen` serves them); the
//! system's headless Chromium loads every view several times (`ui/tests/timings.mjs`) and reports,
//! per view, the API's answer and the time from that answer to the first screen. The test fails
//! when a view's worst render after its API answer exceeds 300 ms (`UI_RENDER_BUDGET_MS`).
//!
//! Ignored by default; `scripts/ui-timings.sh` builds in release and runs it. The sizes and the
//! store's directory are the API benchmark's (`RECKON_BENCH_EVENTS`, `RECKON_BENCH_APPS`,
//! `RECKON_BENCH_DIR`, `RECKON_BENCH_REUSE`): both can measure one store.

use reckon::store::{EventStore, OpenOptions, SledStore};
use std::time::Instant;

const TOKEN: &str = "ui-timings-token-0123456789";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|s| s.replace('_', "").parse().expect(name))
        .unwrap_or(default)
}

#[test]
#[ignore = "benchmark: scripts/ui-timings.sh"]
fn ui_page_timings() {
    let mut n = env_u64("RECKON_BENCH_EVENTS", 10_000_000);
    let apps = env_u64("RECKON_BENCH_APPS", 1000);
    let tmp = tempfile::tempdir().unwrap();
    let path = std::env::var_os("RECKON_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("store"));
    let head = SledStore::open(&path, OpenOptions::default())
        .ok()
        .and_then(|s| s.head())
        .map(|h| h.0);
    if std::env::var_os("RECKON_BENCH_REUSE").is_some()
        && let Some(h) = head
    {
        n = h;
    }
    if head != Some(n) {
        let _ = std::fs::remove_dir_all(&path);
        crate::api::generate(&path, n, apps);
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let opened = Instant::now();
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    eprintln!(
        "ui_timings: {n} events, {apps} Apps; store opened in {:.1}s",
        opened.elapsed().as_secs_f64()
    );
    let (base, handle) = crate::api::serve(&rt, store, TOKEN, "timings");

    // The server runs on the runtime's workers while this thread waits for the browser.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("RECKON_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let status = std::process::Command::new("node")
        .arg(root.join("ui/tests/timings.mjs"))
        .current_dir(root.join("ui"))
        .env("UI_BASE", &base)
        .env("UI_TOKEN", TOKEN)
        // An App in the middle of the fleet: every App has the same shape of history.
        .env("UI_APP", format!("app-{}", apps / 2))
        .env("UI_CHROMIUM", chromium)
        .status()
        .expect("node (scripts/ui-timings.sh installs the UI's packages first)");
    rt.block_on(handle.close()).unwrap();
    assert!(
        status.success(),
        "ui/tests/timings.mjs failed (a view over budget, or an error above)"
    );
}
