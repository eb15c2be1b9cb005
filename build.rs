//! Build script: records the git commit reckon was built from, for `reckon version`.
use std::process::Command;

fn main() {
    // An explicit value wins (release pipelines build from tarballs without .git).
    let commit = std::env::var("RECKON_GIT_COMMIT").ok().or_else(|| {
        let out = Command::new("git")
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let sha = String::from_utf8(out.stdout).ok()?.trim().to_string();
        let dirty = Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false);
        Some(if dirty { format!("{sha}-dirty") } else { sha })
    });
    println!(
        "cargo:rustc-env=RECKON_GIT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
    println!("cargo:rerun-if-env-changed=RECKON_GIT_COMMIT");
    // Rebuild when HEAD moves or the index changes (commit, checkout, stage).
    for p in [".git/HEAD", ".git/index"] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Ok(head) = std::fs::read_to_string(".git/HEAD")
        && let Some(r) = head.strip_prefix("ref: ")
    {
        let p = format!(".git/{}", r.trim());
        if std::path::Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
