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
    // Rebuild when HEAD moves or the index changes (commit, checkout, stage). Ask git where
    // those files are: in a worktree `.git` is a file and they live elsewhere.
    let git_path = |name: &str| -> Option<String> {
        let out = Command::new("git")
            .args(["rev-parse", "--git-path", name])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let mut watched: Vec<String> = ["HEAD", "index"]
        .iter()
        .filter_map(|n| git_path(n))
        .collect();
    if let Some(head) = git_path("HEAD").and_then(|p| std::fs::read_to_string(p).ok())
        && let Some(r) = head.strip_prefix("ref: ")
        && let Some(p) = git_path(r.trim())
    {
        watched.push(p);
    }
    for p in watched {
        if std::path::Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
