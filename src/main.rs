//! The `reckon` binary: a thin entry point; everything lives in the library's `cli` module.
#![forbid(unsafe_code)]

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: the agent's work is bursts of short-lived JSON on many
/// threads (a thousand Apps' first syncs), after which glibc keeps the freed memory fragmented
/// across per-thread arenas and the resident size stays at the burst's peak.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    match reckon::cli::run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
