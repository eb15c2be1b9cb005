//! Owns running kustomize: writing a unit's closure of repository files to a private temporary
//! directory and running `kustomize build` (preferred when on PATH) or `kubectl kustomize`
//! under a timeout.
//!
//! There is no Rust kustomize, so this shells out as Argo CD and Flux do. Remote bases are
//! refused before kustomize runs ([`repo::closure`]); as a second line the environment is
//! cleared and proxies point at a closed port, which stops fetches over HTTP(S) and by git, and
//! prompts are disabled. No flag enables exec or container plugins (`--enable-alpha-plugins`,
//! `--enable-exec`), so kustomize runs none. Helm (`--enable-helm`) is enabled only for a unit
//! whose kustomizations inflate `helmCharts`, all vendored (one naming a chart repository is
//! refused before kustomize runs), with Helm's homes inside the temporary directory; a Helm hook
//! in the output fails the render, since reckon runs no hooks (`skipHooks: true` leaves them out).

use super::RenderError;
use super::repo::{self, RepoTree};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bytes of stderr kept for the error message; kustomize's useful line is at the end.
const STDERR_TAIL: usize = 4_000;

/// The kustomize binary to run and the arguments before the directory.
fn tool() -> Option<(PathBuf, Vec<&'static str>)> {
    if let Some(path) = find_on_path("kustomize") {
        return Some((path, vec!["build"]));
    }
    find_on_path("kubectl").map(|path| (path, vec!["kustomize"]))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Builds the kustomization root `unit` (a repository directory) of `repo`; `shown_dir` names
/// it in errors (App-relative, "" for the App's root). Only the unit's closure (see
/// [`repo::closure`]) is written out for kustomize, file by file, so a large repository is
/// neither held in memory nor copied whole. Returns the YAML kustomize wrote.
pub fn build(
    repo: &dyn RepoTree,
    unit: &str,
    shown_dir: &str,
    timeout: Duration,
) -> Result<String, RenderError> {
    let shown_dir = if shown_dir.is_empty() { "." } else { shown_dir };
    let fail = |message: String| RenderError::Kustomize {
        dir: shown_dir.to_string(),
        message,
    };
    let refused = |source: repo::ReferenceError| RenderError::Reference {
        dir: shown_dir.to_string(),
        source,
    };
    let closure = repo::closure(repo, unit).map_err(refused)?;
    let paths = repo::files(repo, &closure).map_err(refused)?;
    let temp = tempfile::tempdir().map_err(|source| RenderError::WriteTemp {
        path: std::env::temp_dir(),
        source,
    })?;
    for path in &paths {
        super::check_path(path)?;
        let bytes = repo::read(repo, path).map_err(refused)?;
        write(temp.path(), path, &bytes)?;
    }
    // The unit's directory exists even when it holds nothing kustomize reads.
    let build_dir = temp.path().join(unit);
    std::fs::create_dir_all(&build_dir).map_err(|source| RenderError::WriteTemp {
        path: build_dir.clone(),
        source,
    })?;
    let (program, mut args) = tool().ok_or_else(|| {
        fail(
            "neither `kustomize` nor `kubectl` is on PATH; install kubectl \
             (https://kubernetes.io/docs/tasks/tools/) or kustomize"
                .to_string(),
        )
    })?;
    // Files outside a kustomization's own directory (a shared patch) may be loaded: the
    // repository bound was checked above, and the temp dir holds nothing else.
    args.extend(["--load-restrictor", "LoadRestrictionsNone"]);
    if !closure.helm {
        return run(&program, &args, &build_dir, temp.path(), &[], timeout).map_err(fail);
    }
    let helm = find_on_path("helm").ok_or_else(|| {
        fail(
            "the kustomization inflates helmCharts and `helm` is not on PATH; install Helm 4 \
             (https://helm.sh/docs/intro/install/)"
                .to_string(),
        )
    })?;
    let helm = helm.display().to_string();
    args.extend(["--enable-helm", "--helm-command", &helm]);
    let home = temp.path().join(".helm-home");
    let (cache, config, data) = (home.join("cache"), home.join("config"), home.join("data"));
    let env: [(&str, &Path); 3] = [
        ("HELM_CACHE_HOME", &cache),
        ("HELM_CONFIG_HOME", &config),
        ("HELM_DATA_HOME", &data),
    ];
    let output = run(&program, &args, &build_dir, temp.path(), &env, timeout).map_err(fail)?;
    refuse_hooks(&output).map_err(fail)?;
    Ok(output)
}

/// A Helm hook inflated by `helmCharts` would be applied as an ordinary object at every change
/// (a `pre-upgrade` Job run again and again): refused, naming it, never applied silently.
fn refuse_hooks(output: &str) -> Result<(), String> {
    let docs =
        super::parse::documents("kustomize build", output.as_bytes()).map_err(|e| e.to_string())?;
    for doc in docs {
        let hook = doc
            .pointer("/metadata/annotations")
            .and_then(|a| a.get("helm.sh/hook"))
            .and_then(serde_json::Value::as_str);
        if let Some(hook) = hook {
            let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
            let name = doc
                .pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .unwrap_or("?");
            return Err(format!(
                "helmCharts rendered the Helm hook {kind}/{name} ({hook}); reckon does not run \
                 Helm hooks: set skipHooks: true on the helmCharts entry"
            ));
        }
    }
    Ok(())
}

/// Writes one file of the closure under `root` (its path was checked: relative, no `..`).
fn write(root: &Path, path: &str, bytes: &[u8]) -> Result<(), RenderError> {
    let target = root.join(path);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|source| RenderError::WriteTemp {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(&target, bytes).map_err(|source| RenderError::WriteTemp {
        path: target.clone(),
        source,
    })
}

/// Most bytes a renderer may write: a set beyond it is not a set anyone means to apply, and
/// holding it would cost the agent its memory.
pub(super) const MAX_OUTPUT: u64 = 64 * 1024 * 1024;

/// Runs a renderer with `args` then `dir`, in a cleared environment (plus `env`) whose HOME is
/// `home`, killed at `timeout`; returns its stdout, at most [`MAX_OUTPUT`] bytes.
pub(super) fn run(
    program: &Path,
    args: &[&str],
    dir: &Path,
    home: &Path,
    env: &[(&str, &Path)],
    timeout: Duration,
) -> Result<String, String> {
    // A closed port on loopback: connections fail at once instead of hanging until timeout.
    const NO_PROXY_TARGET: &str = "http://127.0.0.1:9";
    let mut child = Command::new(program)
        .args(args)
        .arg(dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("HTTP_PROXY", NO_PROXY_TARGET)
        .env("HTTPS_PROXY", NO_PROXY_TARGET)
        .env("http_proxy", NO_PROXY_TARGET)
        .env("https_proxy", NO_PROXY_TARGET)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSH_COMMAND", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("starting {}: {err}", program.display()))?;
    // Drain both pipes on threads: a child blocked on a full pipe would never exit.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    // Reading stops one byte past the bound; the pipe is then closed and the tool dies of it.
    // The reader says when the output ended (the child closed it, normally by exiting): the
    // wait below sleeps on that instead of polling the child, whose 20 ms poll was a third of
    // reckon's time over `helm template` (the Helm benchmark).
    let (ended, output_ended) = std::sync::mpsc::channel::<()>();
    let out_reader = std::thread::spawn(move || {
        let _ended = ended;
        let mut buf = Vec::new();
        (&mut stdout)
            .take(MAX_OUTPUT + 1)
            .read_to_end(&mut buf)
            .map(|_| buf)
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stderr.read_to_end(&mut buf).map(|_| buf)
    });
    let deadline = Instant::now() + timeout;
    let timed_out = |child: &mut std::process::Child| {
        // Kill by the child's own handle (its pid), never by name.
        let _ = child.kill();
        let _ = child.wait();
        Err(format!(
            "timed out after {}",
            crate::config::duration::format(timeout)
        ))
    };
    // The reader drops its sender when the output ends (or if it panicked: the join says so).
    if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = output_ended.recv_timeout(timeout) {
        return timed_out(&mut child);
    }
    // Normally the child has exited with its output; one that closed it and goes on is
    // waited for until the deadline.
    let mut pause = Duration::from_micros(50);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => return timed_out(&mut child),
            Ok(None) => {
                // Its exit follows the end of its output within microseconds as a rule.
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(5));
            }
            Err(err) => return Err(format!("waiting for {}: {err}", program.display())),
        }
    };
    let stdout = out_reader
        .join()
        .map_err(|_| "stdout reader panicked".to_string())?
        .map_err(|err| format!("reading output: {err}"))?;
    let stderr = err_reader
        .join()
        .map_err(|_| "stderr reader panicked".to_string())?
        .unwrap_or_default();
    if stdout.len() as u64 > MAX_OUTPUT {
        return Err(format!(
            "the output is larger than {} MiB; reckon refuses a render this large",
            MAX_OUTPUT / (1024 * 1024)
        ));
    }
    if !status.success() {
        let text = String::from_utf8_lossy(&stderr);
        let text = text.trim();
        let start = text.len().saturating_sub(STDERR_TAIL);
        let start = (start..=text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        // Paths in messages refer to the private temp dir; show them source-relative.
        let shown = text[start..].replace(&format!("{}/", home.display()), "");
        return Err(format!("{status}: {shown}"));
    }
    String::from_utf8(stdout).map_err(|_| "output is not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `script` run as a renderer with a 300 ms timeout: it must be killed at it.
    fn killed_at_the_timeout(script: &str) {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let err = run(
            Path::new("/bin/sh"),
            &["-c", script],
            dir.path(),
            dir.path(),
            &[],
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(err.contains("timed out after 300ms"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_hanging_tool_is_killed_at_the_timeout() {
        // `exec` so the killed process is the sleeper itself, not a shell that leaves it behind.
        killed_at_the_timeout("exec sleep 30");
    }

    #[test]
    fn a_tool_that_closes_its_output_and_hangs_is_killed_at_the_timeout() {
        killed_at_the_timeout("exec >&- && exec sleep 30");
    }

    #[test]
    fn a_failing_tool_reports_its_stderr_without_the_temp_path() {
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            "echo \"error: {}/base/x.yaml is bad\" >&2; exit 3",
            dir.path().display()
        );
        let err = run(
            Path::new("/bin/sh"),
            &["-c", &script],
            dir.path(),
            dir.path(),
            &[],
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(err.contains("error: base/x.yaml is bad"), "{err}");
        assert!(err.contains("exit status: 3"), "{err}");
    }

    #[test]
    fn output_beyond_the_bound_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let script = format!("head -c {} /dev/zero", MAX_OUTPUT + 1);
        let err = run(
            Path::new("/bin/sh"),
            &["-c", &script],
            dir.path(),
            dir.path(),
            &[],
            Duration::from_secs(60),
        )
        .unwrap_err();
        assert!(err.contains("larger than 64 MiB"), "{err}");
    }

    #[test]
    fn the_given_environment_is_all_the_tool_sees_besides_path_home_and_proxies() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let out = run(
            Path::new("/bin/sh"),
            &[
                "-c",
                "echo \"$HELM_CACHE_HOME|$HTTPS_PROXY|${CARGO:-unset}\"",
            ],
            dir.path(),
            dir.path(),
            &[("HELM_CACHE_HOME", &cache)],
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(
            out.trim(),
            format!("{}|http://127.0.0.1:9|unset", cache.display())
        );
    }

    #[test]
    fn large_output_does_not_deadlock() {
        let dir = tempfile::tempdir().unwrap();
        // 1 MiB on stdout and 256 KiB on stderr, beyond any pipe buffer.
        let script = "head -c 1048576 /dev/zero | tr '\\0' 'a'; head -c 262144 /dev/zero >&2";
        let out = run(
            Path::new("/bin/sh"),
            &["-c", script],
            dir.path(),
            dir.path(),
            &[],
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(out.len(), 1_048_576);
    }
}
