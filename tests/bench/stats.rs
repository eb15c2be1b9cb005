//! Shared by the store-side benchmarks (`tests/bench/store.rs`, `tests/bench/query.rs`,
//! `tests/bench/api.rs`): a deterministic generator, percentiles, and where the generated store
//! lives and whether an earlier one can be reused.
#![allow(dead_code)] // Each benchmark uses a different subset.

use reckon::store::{EventStore, OpenOptions, SledStore};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A small deterministic generator (xorshift) so runs are comparable without a rand crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The `p` quantile (nearest rank) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Events to generate: the first non-flag argument, else `RECKON_BENCH_EVENTS`, else `default`
/// (underscores allowed: `10_000_000`).
pub fn event_count(default: u64) -> u64 {
    // Not from the arguments: in a test binary those are the test harness's (filters, flags).
    std::env::var("RECKON_BENCH_EVENTS")
        .ok()
        .map(|s| s.replace('_', "").parse().expect("event count"))
        .unwrap_or(default)
}

/// `RECKON_BENCH_DIR`, else `bench-store` in `tmp`.
pub fn store_path(tmp: &Path) -> PathBuf {
    std::env::var_os("RECKON_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.join("bench-store"))
}

/// With `RECKON_BENCH_REUSE` set: whether the store at `path` holds exactly `n` events (a
/// read-side run can then skip the generation).
pub fn reusable(path: &Path, n: u64) -> bool {
    std::env::var_os("RECKON_BENCH_REUSE").is_some()
        && SledStore::open(path, OpenOptions::default())
            .ok()
            .and_then(|s| s.head())
            .is_some_and(|h| h.0 == n)
}
