//! Fixtures shared by the tests of one run: built once, then each test reads its own copy.
//!
//! nextest runs every test in a process of its own, so a fixture held in a static would be
//! rebuilt by every test. [`shared`] builds it once per run into a directory keyed by the run
//! (`NEXTEST_RUN_ID`; under `cargo test`, whose tests are threads of one process, the process
//! id), under a file lock: the first test to arrive builds, the others wait and then find it
//! built. A fixture that failed to build leaves no mark, so the next test builds it again (and
//! fails the same way, naming the cause). Tests never open the shared directory itself — a sled
//! store admits one process at a time — but a private copy of it ([`copy_dir`]); tests that
//! change what they are given build their own.

use serde::{Serialize, de::DeserializeOwned};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Fixtures of runs that ended longer ago than this are removed when a new one is built.
const STALE: Duration = Duration::from_secs(24 * 3600);

/// Where this run's fixtures live: under the target directory's scratch space.
fn run_dir() -> PathBuf {
    let run =
        std::env::var("NEXTEST_RUN_ID").unwrap_or_else(|_| format!("pid-{}", std::process::id()));
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fixtures")
        .join(run)
}

/// A private copy of fixture `name`, built by `build` into the directory it is given (once per
/// run), with the facts `build` returned about it.
pub fn shared<T: Serialize + DeserializeOwned>(
    name: &str,
    build: impl FnOnce(&Path) -> T,
) -> (tempfile::TempDir, T) {
    let root = run_dir();
    fs::create_dir_all(&root).unwrap();
    let lock = File::create(root.join(format!("{name}.lock"))).unwrap();
    lock.lock().unwrap();
    let dir = root.join(name);
    let facts = root.join(format!("{name}.json"));
    if !facts.exists() {
        remove_stale(root.parent().unwrap(), &root);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let built = build(&dir);
        // Written last: its presence says the directory is complete.
        fs::write(&facts, serde_json::to_vec(&built).unwrap()).unwrap();
    }
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&dir, copy.path());
    let facts: T = serde_json::from_slice(&fs::read(&facts).unwrap()).unwrap();
    drop(lock);
    (copy, facts)
}

/// Copies the tree at `from` into `to` (which exists); symbolic links are copied as links.
pub fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else if kind.is_file() {
            fs::copy(entry.path(), &target).unwrap();
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path()).unwrap(), &target).unwrap();
        }
    }
}

/// Removes the fixtures of other runs last touched more than [`STALE`] ago.
fn remove_stale(all: &Path, ours: &Path) {
    let Ok(runs) = fs::read_dir(all) else { return };
    for run in runs.flatten() {
        let old = run
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > STALE);
        if run.path() != ours && old {
            let _ = fs::remove_dir_all(run.path());
        }
    }
}
