//! The `reckon` binary: a thin entry point; everything lives in the library's `cli` module,
//! except the allocator's settings, which must be made before the first thread starts.
// `deny`, not `forbid`: `allocator::tune` is reckon's one unsafe call (the library forbids
// unsafe code outright). Its reason is written there.
#![deny(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    allocator::tune();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the async runtime");
    runtime.block_on(async {
        match reckon::cli::run().await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

/// glibc's allocator, set for a long-running process with dozens of threads (docs/agent.md,
/// "The allocator's share of the agent's memory").
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod allocator {
    /// Blocks above 128 KiB mapped on their own, and free memory above 128 KiB at the top of
    /// the heap returned. By default glibc raises both thresholds to the largest block freed
    /// so far (up to 32 MiB), after which big transient buffers are carved from the arenas and
    /// what they leave is kept; at 1,000 Apps the defaults cost about 9 MiB (8%) of the agent's
    /// peak RSS. Capping the arenas as well (two, not eight per core) saved no more than
    /// the runs' spread (109.6 against 110.5 MiB) and took 5% more CPU in that run. An operator's own `GLIBC_TUNABLES` is left to rule.
    pub fn tune() {
        if std::env::var_os("GLIBC_TUNABLES").is_some() {
            return;
        }
        const THRESHOLD: libc::c_int = 128 << 10;
        // SAFETY: mallopt has no memory-safety preconditions: it sets allocator parameters
        // (taking the main arena's lock) and reports failure by its return value, which is ignored
        // since the defaults are a working fallback. It runs before any other thread exists.
        // Why unsafe at all: no maintained crate wraps mallopt; a deployment's environment
        // could set the same tunables, but then every way of running reckon would need it.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
        }
    }
}

/// Other platforms' allocators are left as they are.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod allocator {
    pub fn tune() {}
}
