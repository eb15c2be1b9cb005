//! A chart in Git whose dependencies are locked in `Chart.lock` and not vendored: one in a chart
//! repository over HTTPS with basic auth, one in an OCI registry over TLS with basic auth (under
//! an alias with a condition), one a `file://` directory of the same repository. Charts are
//! packaged by the real `helm package`, indexed by `helm repo index` and pushed by `helm push`;
//! the render is the real `helm template`, with no network. What is proven: the render has every
//! subchart's objects and keeps Helm's meaning of alias and condition; a second render takes the
//! archives from the cache by digest; an archive re-pushed under the same version changes the
//! chart digest every object carries; a repository gone or refusing the password, and a lock
//! that does not match Chart.yaml, are errors naming the dependency and what to do.

use anyhow::Result;
use reckon::render::helm::{self, HelmOptions, ValuesLayer, ValuesSource};
use reckon::render::repo::RepoTree;
use reckon::render::{RenderOptions, SecretKey, SourceFile};
use reckon::source::GitSource;
use reckon::source::chart_deps::{ChartDepsError, Dependency, Fetcher, lock_digest};
use reckon_testenv::git::charts::package;
use reckon_testenv::git::{ChartRepoServer, Fixture, HttpAuth, OciRegistry};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn credentials() -> HttpAuth {
    HttpAuth {
        username: "charts".into(),
        password: "s3cret-password".into(),
    }
}

/// A subchart `name` `version` whose one ConfigMap is named after the release and the chart's
/// name as Helm sees it (an alias shows there), holding `data`.
fn subchart(dir: &Path, name: &str, version: &str, data: &str) -> PathBuf {
    let chart = dir.join(format!("{name}-{version}-{data}"));
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: {version}\n"),
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/cm.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ .Release.Name }}}}-{{{{ .Chart.Name }}}}\ndata:\n  from: {data}\n"
        ),
    )
    .unwrap();
    chart
}

fn dependency(name: &str, version: &str, repository: &str) -> Dependency {
    Dependency {
        name: name.into(),
        version: version.into(),
        repository: repository.into(),
        ..Dependency::default()
    }
}

/// `Chart.yaml` of `web` with `requested`, and the `Chart.lock` that `helm dependency update`
/// writes for them at `locked` (its digest computed as Helm's, which the unit tests check
/// against a lock the real Helm wrote).
fn chart_files(requested: &[(Dependency, &str)], locked: &[Dependency]) -> (String, String) {
    let mut chart = String::from("apiVersion: v2\nname: web\nversion: 0.1.0\ndependencies:\n");
    for (d, extra) in requested {
        chart.push_str(&format!(
            "  - name: {}\n    version: \"{}\"\n    repository: \"{}\"\n{extra}",
            d.name, d.version, d.repository
        ));
    }
    let requested: Vec<Dependency> = requested
        .iter()
        .map(|(d, extra)| {
            let mut d = d.clone();
            if extra.contains("alias: redis") {
                d.alias = "redis".into();
                d.condition = "redis.enabled".into();
            }
            d
        })
        .collect();
    let mut lock = String::from("dependencies:\n");
    for d in locked {
        lock.push_str(&format!(
            "- name: {}\n  repository: \"{}\"\n  version: {}\n",
            d.name, d.repository, d.version
        ));
    }
    lock.push_str(&format!(
        "digest: {}\ngenerated: \"2026-12-07T10:00:00Z\"\n",
        lock_digest(&requested, locked)
    ));
    (chart, lock)
}

struct World {
    work: tempfile::TempDir,
    repo: ChartRepoServer,
    registry: OciRegistry,
    git: Fixture,
    cache: PathBuf,
    password: PathBuf,
}

impl World {
    fn start() -> World {
        reckon::tls::install_crypto_provider();
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("repo");
        std::fs::create_dir_all(&root).unwrap();
        let repo = ChartRepoServer::start(&root, true, Some(credentials())).unwrap();
        let registry = OciRegistry::start(true, Some(credentials())).unwrap();
        let password = work.path().join("password");
        std::fs::write(&password, "s3cret-password\n").unwrap();
        World {
            cache: work.path().join("cache"),
            work,
            repo,
            registry,
            git: Fixture::new().unwrap(),
            password,
        }
    }

    /// Publishes `db` 1.0.0 to the chart repository and pushes `cache` 1.0.0 to the registry.
    fn publish(&self, cache_data: &str) -> String {
        self.repo
            .publish(&subchart(self.work.path(), "db", "1.0.0", "repository"))
            .unwrap();
        let archives = self.work.path().join("archives");
        std::fs::create_dir_all(&archives).unwrap();
        let archive = package(
            &subchart(self.work.path(), "cache", "1.0.0", cache_data),
            &archives,
        )
        .unwrap();
        self.registry.push(&archive, "charts").unwrap()
    }

    fn oci(&self) -> String {
        self.registry.url("charts")
    }

    /// The App as `reckon.yaml` writes it: the chart at `apps/web` of the Git fixture, both
    /// dependency repositories listed with their CA and the password file.
    fn app(&self) -> reckon::config::App {
        // Kept beside the test's files: the CA outlives a server the test stops.
        let repo_ca = self.work.path().join("repo-ca.pem");
        std::fs::copy(self.repo.ca().unwrap().bundle_path(), &repo_ca).unwrap();
        let text = format!(
            "apps:
  - name: web
    source: {{url: \"{git}\", path: apps/web}}
    helm:
      repositories:
        - url: \"{repo}\"
          ca_file: {repo_ca}
          auth: {{basic: {{username: charts, password: {{file: {pw}}}}}}}
        - url: \"{oci}\"
          ca_file: {oci_ca}
          auth: {{basic: {{username: charts, password: {{file: {pw}}}}}}}
",
            git = self.git.file_url(),
            repo = self.repo.url(),
            repo_ca = repo_ca.display(),
            oci = self.oci(),
            oci_ca = self.registry.ca().unwrap().bundle_path().display(),
            pw = self.password.display(),
        );
        reckon::config::parse(&text, Path::new("reckon.yaml"))
            .unwrap()
            .apps
            .remove(0)
    }

    fn source(&self, app: &reckon::config::App) -> GitSource {
        reckon::source::config::source_for(app, &self.cache).unwrap()
    }

    fn fetcher(&self, app: &reckon::config::App) -> Fetcher {
        reckon::source::config::dependency_fetcher(app, &self.cache, Duration::from_secs(10))
    }

    /// Commits the chart with the three dependencies and a lock for them (or `lock` instead).
    fn commit_chart(&self, lock_override: Option<&str>) -> String {
        let requested = [
            (dependency("db", "^1.0.0", &self.repo.url()), ""),
            (
                dependency("cache", "1.0.0", &self.oci()),
                "    alias: redis\n    condition: redis.enabled\n",
            ),
            (dependency("common", "0.3.0", "file://../../lib/common"), ""),
        ];
        let locked = [
            dependency("db", "1.0.0", &self.repo.url()),
            dependency("cache", "1.0.0", &self.oci()),
            dependency("common", "0.3.0", "file://../../lib/common"),
        ];
        let (chart, lock) = chart_files(&requested, &locked);
        let sha = self
            .git
            .commit("web with locked dependencies")
            .write("apps/web/Chart.yaml", chart)
            .write(
                "apps/web/Chart.lock",
                lock_override.map_or(lock, str::to_string),
            )
            .write("apps/web/values.yaml", "redis:\n  enabled: true\n")
            .write(
                "apps/web/templates/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  from: parent\n",
            )
            .write(
                "lib/common/Chart.yaml",
                "apiVersion: v2\nname: common\nversion: 0.3.0\n",
            )
            .write(
                "lib/common/templates/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-common\ndata:\n  from: git\n",
            )
            .create()
            .unwrap();
        self.git.push().unwrap();
        sha
    }
}

fn options() -> RenderOptions {
    RenderOptions {
        app: "web".into(),
        secret_key: SecretKey::new([7; 32]),
        kustomize_timeout: Duration::from_secs(60),
        yaml_expanded_bytes: reckon::render::DEFAULT_YAML_EXPANDED_BYTES,
        fill_port_protocol: false,
    }
}

fn helm_options(values: Option<&str>) -> HelmOptions {
    HelmOptions {
        release: "web".into(),
        namespace: "shop".into(),
        kube_version: "v1.37.2".into(),
        api_versions: vec![],
        values_files: vec![],
        values: values
            .map(|v| ValuesLayer {
                source: ValuesSource::Inline,
                bytes: v.as_bytes().to_vec(),
            })
            .into_iter()
            .collect(),
        timeout: Duration::from_secs(60),
    }
}

/// The chart at `sha` with its dependencies made ready, as a pass prepares it (blocking: an
/// OCI registry is spoken to on this runtime).
async fn vendored(
    source: &GitSource,
    fetcher: &Fetcher,
    sha: &str,
) -> Result<Vec<SourceFile>, ChartDepsError> {
    let (source, fetcher, sha) = (source.clone(), fetcher.clone(), sha.to_string());
    tokio::task::spawn_blocking(move || {
        let files = source.read_tree(&sha).unwrap();
        let tree = || -> Result<Box<dyn RepoTree>, String> {
            Ok(Box::new(source.tree_at(&sha).map_err(|e| e.to_string())?))
        };
        fetcher
            .vendor(files, tree, &source.spec().path)
            .map(|(files, _)| files)
    })
    .await
    .unwrap()
}

/// ConfigMap name → its `data.from`, as rendered.
fn rendered(files: &[SourceFile], values: Option<&str>) -> (Vec<(String, String)>, String) {
    let chart = helm::render_chart(files, &options(), &helm_options(values)).unwrap();
    let mut objects: Vec<(String, String)> = chart
        .set
        .objects
        .iter()
        .map(|o| {
            (
                o.object.name.clone(),
                o.manifest["data"]["from"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    objects.sort();
    (objects, chart.identity.chart_digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_dependencies_from_a_repository_a_registry_and_git_render_offline() -> Result<()> {
    let w = World::start();
    w.publish("registry");
    let sha = w.commit_chart(None);
    let app = w.app();
    let source = w.source(&app);
    source.fetch(None)?;
    let fetcher = w.fetcher(&app);

    let files = vendored(&source, &fetcher, &sha).await?;
    let names: Vec<&str> = files
        .iter()
        .map(|(p, _)| p.as_str())
        .filter(|p| p.starts_with("charts/"))
        .collect();
    assert_eq!(
        names,
        [
            "charts/db-1.0.0.tgz",
            "charts/cache-1.0.0.tgz",
            "charts/common/Chart.yaml",
            "charts/common/templates/cm.yaml",
        ],
        "in Chart.yaml's order"
    );
    let (objects, digest) = rendered(&files, None);
    assert_eq!(
        objects,
        [
            ("web".to_string(), "parent".to_string()),
            ("web-common".into(), "git".into()),
            ("web-db".into(), "repository".into()),
            ("web-redis".into(), "registry".into()),
        ],
        "every subchart, the OCI one under its alias"
    );
    // The condition keeps Helm's meaning: switched off by the values, the subchart is left out.
    let (objects, _) = rendered(&files, Some("redis:\n  enabled: false\n"));
    assert!(
        !objects.iter().any(|(name, _)| name == "web-redis"),
        "{objects:?}"
    );

    // A second render takes both archives from the cache: the index is read, no archive is.
    let before = w.repo.requests().len();
    let again = vendored(&source, &fetcher, &sha).await?;
    assert_eq!(rendered(&again, None).1, digest, "the same chart");
    let paths: Vec<String> = w.repo.requests()[before..]
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(paths, ["/index.yaml"]);

    // cache 1.0.0 pushed again with other content: the same version, another archive, so
    // another chart digest on every object (a revision rendered with it is another render).
    w.publish("registry-again");
    let repushed = vendored(&source, &fetcher, &sha).await?;
    let (objects, changed) = rendered(&repushed, None);
    assert_ne!(changed, digest);
    assert!(
        objects.contains(&("web-redis".to_string(), "registry-again".to_string())),
        "{objects:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_gone_a_wrong_password_and_a_stale_lock_are_named() -> Result<()> {
    let w = World::start();
    w.publish("registry");
    let sha = w.commit_chart(None);
    let app = w.app();
    let source = w.source(&app);
    source.fetch(None)?;
    let fetcher = w.fetcher(&app);

    // A wrong password: the dependency and the repository's credentials are named, not the
    // password.
    std::fs::write(&w.password, "wrong\n")?;
    let err = vendored(&source, &fetcher, &sha).await.unwrap_err();
    assert_eq!(err.fetch_reason(), Some("AuthFailed"), "{err}");
    let text = err.to_string();
    assert!(text.starts_with("dependency db 1.0.0: "), "{text}");
    assert!(
        text.contains("check the repository's credentials"),
        "{text}"
    );
    assert!(
        !text.contains("wrong") && !text.contains("s3cret"),
        "{text}"
    );
    std::fs::write(&w.password, "s3cret-password\n")?;

    // A lock that does not match Chart.yaml: refused before anything is fetched.
    let stale = w.commit_chart(Some(
        "dependencies:\n- name: db\n  repository: x\n  version: 1.0.0\ndigest: sha256:00\n",
    ));
    source.fetch(None)?;
    let before = w.repo.requests().len();
    let err = vendored(&source, &fetcher, &stale).await.unwrap_err();
    assert!(matches!(err, ChartDepsError::OutOfSync { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("run `helm dependency update` and commit Chart.lock"),
        "{err}"
    );
    assert_eq!(w.repo.requests().len(), before, "nothing fetched");

    // The chart repository gone: unreachable, naming the dependency.
    let World { repo, .. } = w;
    drop(repo);
    let err = vendored(&source, &fetcher, &sha).await.unwrap_err();
    assert_eq!(err.fetch_reason(), Some("Unreachable"), "{err}");
    assert!(
        err.to_string().starts_with("dependency db 1.0.0: "),
        "{err}"
    );
    Ok(())
}
