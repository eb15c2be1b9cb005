//! Tests of whole renders: directory walking, ordering, errors, kustomize (real binary).

use super::*;
use serde_json::json;

fn options() -> RenderOptions {
    RenderOptions {
        app: "shop".to_string(),
        secret_key: SecretKey::new([42; 32]),
        kustomize_timeout: Duration::from_secs(60),
        yaml_expanded_bytes: crate::render::DEFAULT_YAML_EXPANDED_BYTES,
        fill_port_protocol: true,
    }
}

fn file(path: &str, text: &str) -> SourceFile {
    (path.to_string(), text.as_bytes().to_vec())
}

fn config_map(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n")
}

fn names(set: &RenderedSet) -> Vec<String> {
    set.objects.iter().map(|o| o.object.name.clone()).collect()
}

/// kustomize tests need `kustomize` or `kubectl` on PATH; a machine without either fails them
/// with this hint unless RECKON_SKIP_KUSTOMIZE_TESTS is set.
fn kustomize_available() -> bool {
    if std::env::var_os("RECKON_SKIP_KUSTOMIZE_TESTS").is_some() {
        return false;
    }
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|dir| dir.join(name).is_file()))
    };
    assert!(
        on_path("kustomize") || on_path("kubectl"),
        "kustomize tests need kubectl or kustomize on PATH (or set RECKON_SKIP_KUSTOMIZE_TESTS=1)"
    );
    true
}

#[test]
fn walks_recursively_in_path_order_and_skips_non_manifests() {
    let files = vec![
        file("z.yaml", &config_map("z")),
        file(
            "apps/b.yml",
            &format!("{}---\n{}", config_map("b1"), config_map("b2")),
        ),
        file(
            "apps/a.json",
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}"#,
        ),
        file("README.md", "# not a manifest: apiVersion: v1"),
        file("script.sh", "echo hi"),
        file(".github/workflows/ci.yaml", "on: push\njobs: {}\n"),
        file("apps/.hidden.yaml", "garbage: ["),
    ];
    let set = render(&files, &options()).unwrap();
    assert_eq!(names(&set), ["a", "b1", "b2", "z"]);
    assert_eq!(
        set.objects[2].origin,
        Origin {
            file: "apps/b.yml".into(),
            document: 1
        }
    );
}

#[test]
fn order_and_digest_do_not_depend_on_input_order() {
    let files = vec![
        file("a.yaml", &config_map("a")),
        file("b/c.yaml", &config_map("c")),
        file("b.yaml", &config_map("b")),
    ];
    let first = render(&files, &options()).unwrap();
    let mut reversed = files.clone();
    reversed.reverse();
    let second = render(&reversed, &options()).unwrap();
    assert_eq!(first, second);
    // Byte order of paths: "b.yaml" sorts before "b/c.yaml" ('.' < '/').
    assert_eq!(names(&first), ["a", "b", "c"]);
    // The set digest ignores order, but not content.
    let mut changed = files.clone();
    changed[0] = file("a.yaml", &config_map("a").replace("k: v", "k: w"));
    assert_ne!(render(&changed, &options()).unwrap().digest, first.digest);
}

#[test]
fn objects_are_normalised_labelled_and_digested() {
    let files = vec![file(
        "svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n  uid: x\nspec:\n  ports:\n  - port: 80\nstatus:\n  loadBalancer: {}\n",
    )];
    let set = render(&files, &options()).unwrap();
    let object = &set.objects[0];
    assert_eq!(
        object.object,
        ObjectRef::from_api_version("v1", "Service", Some("shop"), "web")
    );
    assert_eq!(
        object.manifest,
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "web", "namespace": "shop",
                            "labels": {"app.kubernetes.io/managed-by": "reckon", "reckon.dev/app": "shop"}},
               "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}})
    );
    assert_eq!(
        object.digest,
        object_digest(&object.manifest, &options().secret_key)
    );
    assert_eq!(set.digest, set_digest([object.digest.prefixed().as_str()]));
}

#[test]
fn list_documents_are_expanded() {
    let list = format!(
        "apiVersion: v1\nkind: List\nitems:\n- {}\n- {}\n",
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "one"}}"#,
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "two"}}"#
    );
    let set = render(&[file("list.yaml", &list)], &options()).unwrap();
    assert_eq!(names(&set), ["one", "two"]);
}

#[test]
fn parse_errors_name_file_and_line() {
    let files = vec![
        file("ok.yaml", &config_map("ok")),
        file(
            "deploy/bad.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n",
        ),
    ];
    let err = render(&files, &options()).unwrap_err();
    match &err {
        RenderError::Parse { file, line, .. } => {
            assert_eq!(file, "deploy/bad.yaml");
            assert!((4..=5).contains(line), "{err}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().starts_with("deploy/bad.yaml:"), "{err}");
}

#[test]
fn non_objects_name_file_and_document_index() {
    let text = format!(
        "{}---\nkind: ConfigMap\nmetadata:\n  name: x\n",
        config_map("fine")
    );
    let err = render(&[file("a/b.yaml", &text)], &options()).unwrap_err();
    match &err {
        RenderError::NotAnObject {
            file,
            document,
            reason,
        } => {
            assert_eq!((file.as_str(), *document), ("a/b.yaml", 1));
            assert_eq!(reason, "missing apiVersion");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.to_string(), "a/b.yaml: document 1: missing apiVersion");
}

#[test]
fn duplicates_name_both_files() {
    let files = vec![
        file("one.yaml", &config_map("same")),
        file(
            "two.yaml",
            &format!("{}---\n{}", config_map("other"), config_map("same")),
        ),
    ];
    let err = render(&files, &options()).unwrap_err();
    match &err {
        RenderError::Duplicate {
            key,
            first_file,
            first_document,
            second_file,
            second_document,
        } => {
            assert_eq!(key.to_string(), "ConfigMap/same");
            assert_eq!((first_file.as_str(), *first_document), ("one.yaml", 0));
            assert_eq!((second_file.as_str(), *second_document), ("two.yaml", 1));
        }
        other => panic!("{other:?}"),
    }
    // Same name in another namespace or another kind is not a duplicate; another apiVersion is.
    let ns = config_map("same").replace("name: same", "name: same\n  namespace: other");
    let secret = config_map("same").replace("ConfigMap", "Secret");
    assert!(
        render(
            &[
                file("a.yaml", &config_map("same")),
                file("b.yaml", &ns),
                file("c.yaml", &secret)
            ],
            &options()
        )
        .is_ok()
    );
    let v2 = config_map("same").replace("apiVersion: v1", "apiVersion: v2");
    assert!(matches!(
        render(
            &[file("a.yaml", &config_map("same")), file("b.yaml", &v2)],
            &options()
        ),
        Err(RenderError::Duplicate { .. })
    ));
}

#[test]
fn unsafe_paths_are_rejected() {
    for path in [
        "../x.yaml",
        "/etc/x.yaml",
        "a/../../x.yaml",
        "a//b.yaml",
        "./a.yaml",
        "",
    ] {
        let err = render(&[file(path, &config_map("a"))], &options()).unwrap_err();
        assert!(
            matches!(err, RenderError::UnsafePath { .. }),
            "{path}: {err}"
        );
    }
}

#[test]
fn an_empty_source_renders_an_empty_set() {
    let set = render(&[file("README.md", "nothing")], &options()).unwrap();
    assert!(set.objects.is_empty());
    assert_eq!(set.digest, set_digest([]));
}

#[test]
fn storable_form_of_a_rendered_set_hides_secret_values() {
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: correct-horse\ndata:\n  user: YWRtaW4=\n";
    let files = vec![
        file("cm.yaml", &config_map("c")),
        file("secret.yaml", secret),
    ];
    let opts = options();
    let set = render(&files, &opts).unwrap();
    // The manifest to apply keeps the values (stringData folded into data).
    assert_eq!(
        set.objects[1].manifest["data"]["password"],
        "Y29ycmVjdC1ob3JzZQ=="
    );
    let stored = storable(&set, &opts.secret_key);
    let text = serde_json::to_string(&stored).unwrap();
    for needle in ["correct-horse", "Y29ycmVjdC1ob3JzZQ", "YWRtaW4", "admin"] {
        assert!(!text.contains(needle), "{needle} leaked: {text}");
    }
    assert_eq!(stored[0], set.objects[0].manifest);
    // A different agent key gives a different Secret digest but the same ConfigMap digest.
    let other = RenderOptions {
        secret_key: SecretKey::new([1; 32]),
        ..options()
    };
    let set2 = render(&files, &other).unwrap();
    assert_eq!(set.objects[0].digest, set2.objects[0].digest);
    assert_ne!(set.objects[1].digest, set2.objects[1].digest);
}

#[test]
fn render_dir_reads_a_real_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("nested/deeper")).unwrap();
    std::fs::write(dir.path().join("nested/deeper/c.yaml"), config_map("c")).unwrap();
    std::fs::write(dir.path().join("a.yaml"), config_map("a")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "skip").unwrap();
    let set = render_dir(dir.path(), &options()).unwrap();
    assert_eq!(names(&set), ["a", "c"]);
    assert_eq!(set.objects[1].origin.file, "nested/deeper/c.yaml");
    let missing = render_dir(&dir.path().join("absent"), &options()).unwrap_err();
    assert!(matches!(missing, RenderError::ReadDir { .. }), "{missing}");
}

const KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n";

#[test]
fn a_root_kustomization_is_built_with_kustomize() {
    if !kustomize_available() {
        return;
    }
    let files = vec![
        file(
            "kustomization.yaml",
            &format!("{KUSTOMIZATION}namespace: shop\nnamePrefix: prod-\nresources:\n- base\n"),
        ),
        file(
            "base/kustomization.yaml",
            &format!("{KUSTOMIZATION}resources:\n- cm.yaml\n- svc.yaml\n"),
        ),
        file("base/cm.yaml", &config_map("settings")),
        file(
            "base/svc.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n",
        ),
        // Not referenced by any kustomization: kustomize decides, so it must not appear.
        file("base/unused.yaml", &config_map("unused")),
    ];
    let set = render(&files, &options()).unwrap();
    let mut got: Vec<(String, Option<String>)> = set
        .objects
        .iter()
        .map(|o| (o.object.name.clone(), o.object.namespace.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("prod-settings".to_string(), Some("shop".to_string())),
            ("prod-web".to_string(), Some("shop".to_string())),
        ]
    );
    let svc = set
        .objects
        .iter()
        .find(|o| o.object.kind == "Service")
        .unwrap();
    assert_eq!(svc.manifest["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(svc.manifest["metadata"]["labels"]["reckon.dev/app"], "shop");
    assert_eq!(svc.origin.file, "kustomize build .");
}

#[test]
fn a_kustomization_in_a_subdirectory_is_one_unit_beside_plain_files() {
    if !kustomize_available() {
        return;
    }
    let files = vec![
        file("a-plain.yaml", &config_map("plain-a")),
        file(
            "k/kustomization.yml",
            &format!("{KUSTOMIZATION}nameSuffix: -k\nresources:\n- cm.yaml\n"),
        ),
        file("k/cm.yaml", &config_map("inner")),
        file("z-plain.yaml", &config_map("plain-z")),
    ];
    let set = render(&files, &options()).unwrap();
    assert_eq!(names(&set), ["plain-a", "inner-k", "plain-z"]);
}

#[test]
fn kustomize_failures_name_the_directory_and_cause() {
    if !kustomize_available() {
        return;
    }
    let files = vec![file(
        "app/kustomization.yaml",
        &format!("{KUSTOMIZATION}resources:\n- missing.yaml\n"),
    )];
    let err = render(&files, &options()).unwrap_err();
    match &err {
        RenderError::Kustomize { dir, message } => {
            assert_eq!(dir, "app");
            assert!(message.contains("missing.yaml"), "{message}");
            assert!(!message.contains("/tmp/"), "temp path leaked: {message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn kustomize_cannot_fetch_remote_bases() {
    if !kustomize_available() {
        return;
    }
    let files = vec![file(
        "kustomization.yaml",
        &format!(
            "{KUSTOMIZATION}resources:\n- https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v3.3.1\n"
        ),
    )];
    let started = std::time::Instant::now();
    let err = render(
        &files,
        &RenderOptions {
            kustomize_timeout: Duration::from_secs(30),
            fill_port_protocol: true,
            ..options()
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            &err,
            RenderError::Reference {
                source: repo::ReferenceError::Remote { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("is a remote base"),
        "refused before kustomize runs: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "should fail fast, not time out"
    );
}

/// The App at `app_dir` of a repository whose files are `repo` (repository-relative), rendered
/// as the agent renders a Git revision: the App's own files plus the repository to reach.
fn render_app_of(repo: &[SourceFile], app_dir: &str) -> Result<RenderedSet, RenderError> {
    let app: Vec<SourceFile> = repo
        .iter()
        .filter_map(|(path, bytes)| {
            let rest = path.strip_prefix(app_dir)?.strip_prefix('/')?;
            Some((rest.to_string(), bytes.clone()))
        })
        .collect();
    render_in(&app, &repo::FilesTree::at(repo, app_dir), &options())
}

fn deployment(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  \
         selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    \
         spec:\n      containers:\n      - name: {name}\n        image: nginx:1.27\n"
    )
}

/// An overlay over `../../base` with a component and a patch kept outside the App's path.
fn overlay_repo(overlay: &str) -> Vec<SourceFile> {
    vec![
        file(
            "apps/web/base/kustomization.yaml",
            &format!("{KUSTOMIZATION}resources:\n- deploy.yaml\n"),
        ),
        file("apps/web/base/deploy.yaml", &deployment("web")),
        file(
            "apps/web/overlays/prod/kustomization.yaml",
            &format!("{KUSTOMIZATION}{overlay}"),
        ),
        file(
            "components/settings/kustomization.yaml",
            "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources:\n- cm.yaml\n",
        ),
        file("components/settings/cm.yaml", &config_map("settings")),
        file(
            "shared/patches/replicas.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n",
        ),
    ]
}

#[test]
fn an_overlay_builds_over_its_base_outside_the_app_path() {
    if !kustomize_available() {
        return;
    }
    let repo = overlay_repo("namePrefix: prod-\nresources:\n- ../../base\n");
    let set = render_app_of(&repo, "apps/web/overlays/prod").unwrap();
    assert_eq!(names(&set), ["prod-web"]);
    assert_eq!(set.objects[0].origin.file, "kustomize build .");
}

#[test]
fn an_overlay_uses_components_and_a_shared_patch_outside_the_app_path() {
    if !kustomize_available() {
        return;
    }
    let repo = overlay_repo(
        "resources:\n- ../../base\ncomponents:\n- ../../../../components/settings\n\
         patches:\n- path: ../../../../shared/patches/replicas.yaml\n",
    );
    let set = render_app_of(&repo, "apps/web/overlays/prod").unwrap();
    let mut got = names(&set);
    got.sort();
    assert_eq!(got, ["settings", "web"]);
    let web = set.objects.iter().find(|o| o.object.name == "web").unwrap();
    assert_eq!(
        web.manifest["spec"]["replicas"], 3,
        "the shared patch applied"
    );
}

#[test]
fn a_unit_reaching_outside_the_repository_is_refused_naming_the_path() {
    if !kustomize_available() {
        return;
    }
    let repo = overlay_repo("resources:\n- ../../base\n- ../../../../../../etc\n");
    let err = render_app_of(&repo, "apps/web/overlays/prod").unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            &err,
            RenderError::Reference {
                source: repo::ReferenceError::EscapesRepository { .. },
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "apps/web/overlays/prod/kustomization.yaml: \"../../../../../../etc\" points outside \
             the repository"
        ),
        "{text}"
    );
}

#[test]
fn without_a_repository_an_overlay_cannot_reach_beyond_the_app() {
    if !kustomize_available() {
        return;
    }
    // The App's files alone (a local directory): the base is not there to read.
    let repo = overlay_repo("resources:\n- ../../base\n");
    let app: Vec<SourceFile> = repo
        .iter()
        .filter_map(|(p, b)| {
            Some((
                p.strip_prefix("apps/web/overlays/prod/")?.to_string(),
                b.clone(),
            ))
        })
        .collect();
    let err = render(&app, &options()).unwrap_err();
    assert!(
        matches!(
            &err,
            RenderError::Reference {
                source: repo::ReferenceError::EscapesRepository { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_helm_chart_directory_is_named_not_parsed() {
    let files = vec![
        file(
            "chart/Chart.yaml",
            "apiVersion: v2\nname: web\nversion: 0.1.0\n",
        ),
        file("chart/values.yaml", "replicas: 1\n"),
        file(
            "chart/templates/deploy.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\n",
        ),
        file("plain.yaml", &config_map("plain")),
    ];
    let err = render(&files, &options()).unwrap_err();
    assert!(
        matches!(&err, RenderError::HelmChart { dir } if dir == "chart"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "chart is a Helm chart (Chart.yaml); a chart is rendered by Helm only when it is the \
         App's path: point the App's path at it"
    );
    // At the App's own root.
    let root: Vec<SourceFile> = files
        .iter()
        .filter_map(|(p, b)| Some((p.strip_prefix("chart/")?.to_string(), b.clone())))
        .collect();
    let err = render(&root, &options()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(". is a Helm chart (Chart.yaml)"),
        "{err}"
    );
}

#[test]
fn a_recorded_set_reads_back_as_the_render_it_was_with_secrets_opened() {
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: correct-horse\n";
    let files = vec![
        file("cm.yaml", &config_map("c")),
        file("secret.yaml", secret),
    ];
    let opts = options();
    let set = render(&files, &opts).unwrap();
    let sealed: Vec<serde_json::Value> = set
        .objects
        .iter()
        .map(|o| sealed_object(o.manifest.as_value(), &opts.secret_key))
        .collect();
    let blob = crate::store::blob::canonical(&sealed);
    let text = String::from_utf8(blob.clone()).unwrap();
    for needle in ["correct-horse", "Y29ycmVjdC1ob3JzZQ"] {
        assert!(!text.contains(needle), "{needle} leaked: {text}");
    }
    let back = from_recorded(&blob, &opts.secret_key).unwrap();
    assert_eq!(back.digest, set.digest, "same objects, same digests");
    let by_name = |s: &RenderedSet, n: &str| {
        s.objects
            .iter()
            .find(|o| o.object.name == n)
            .unwrap()
            .clone()
    };
    for name in ["c", "creds"] {
        let (a, b) = (by_name(&set, name), by_name(&back, name));
        assert_eq!(
            (&a.object, &a.manifest, &a.digest),
            (&b.object, &b.manifest, &b.digest)
        );
    }
    // A set recorded by an older reckon (keyed hashes) names the Secret it cannot restore.
    let hashed = crate::store::blob::canonical(&storable(&set, &opts.secret_key));
    let err = from_recorded(&hashed, &opts.secret_key).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "recorded Secret Secret/creds: data.password is stored as a keyed hash only"
        ),
        "{err}"
    );
    let err = from_recorded(b"{not json", &opts.secret_key).unwrap_err();
    assert!(
        err.to_string().starts_with("recorded manifests, object 0:"),
        "{err}"
    );
}

/// Helm for kustomize's `helmCharts`: on PATH like kustomize (the test environment builds it).
fn helm_available() -> bool {
    if !kustomize_available() {
        return false;
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|dir| dir.join("helm").is_file()));
    assert!(
        on_path,
        "helmCharts tests need helm on PATH (scripts/provision-testenv.sh builds it), \
         or set RECKON_SKIP_KUSTOMIZE_TESTS=1"
    );
    true
}

/// A vendored chart `web` under `home` whose ConfigMap takes `color` and `size` from values and
/// whose optional hook is a pre-install Job.
fn vendored_chart(home: &str, with_hook: bool) -> Vec<SourceFile> {
    let mut files = vec![
        file(
            &format!("{home}/web/Chart.yaml"),
            "apiVersion: v2\nname: web\nversion: 1.2.0\n",
        ),
        file(
            &format!("{home}/web/values.yaml"),
            "color: blue\nsize: small\n",
        ),
        file(
            &format!("{home}/web/templates/cm.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-web\ndata:\n  color: {{ .Values.color }}\n  size: {{ .Values.size }}\n",
        ),
    ];
    if with_hook {
        files.push(file(
            &format!("{home}/web/templates/migrate.yaml"),
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\n  annotations:\n    helm.sh/hook: pre-install\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: m\n        image: busybox\n",
        ));
    }
    files
}

#[test]
fn a_kustomization_inflates_a_vendored_chart_with_its_values_files_and_inline_values() {
    if !helm_available() {
        return;
    }
    let mut files = vec![
        file(
            "kustomization.yaml",
            &format!(
                "{KUSTOMIZATION}helmGlobals:\n  chartHome: vendor\nhelmCharts:\n- name: web\n  releaseName: shop\n  valuesFile: values/prod.yaml\n  valuesInline:\n    color: green\nresources:\n- cm.yaml\n"
            ),
        ),
        file("values/prod.yaml", "size: large\n"),
        file("cm.yaml", &config_map("plain")),
    ];
    files.extend(vendored_chart("vendor", false));
    let set = render(&files, &options()).unwrap();
    let mut got = names(&set);
    got.sort();
    assert_eq!(got, ["plain", "shop-web"]);
    let web = set
        .objects
        .iter()
        .find(|o| o.object.name == "shop-web")
        .unwrap();
    assert_eq!(web.manifest["data"]["color"], "green", "inline values last");
    assert_eq!(
        web.manifest["data"]["size"], "large",
        "the values file over the chart's"
    );
    assert_eq!(web.manifest["metadata"]["labels"]["reckon.dev/app"], "shop");
}

#[test]
fn a_helm_chart_from_a_chart_repository_in_a_kustomization_is_refused_before_kustomize_runs() {
    let files = vec![file(
        "kustomization.yaml",
        &format!(
            "{KUSTOMIZATION}helmCharts:\n- name: redis\n  repo: https://charts.example.com\n  version: 1.0.0\n"
        ),
    )];
    let err = render(&files, &options()).unwrap_err();
    let RenderError::Reference {
        source: repo::ReferenceError::RemoteChart { chart, repo, .. },
        ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(
        (chart.as_str(), repo.as_str()),
        ("redis", "https://charts.example.com")
    );
    assert!(err.to_string().contains("vendor the chart"), "{err}");
}

#[test]
fn a_helm_hook_inflated_by_a_kustomization_fails_the_render_unless_hooks_are_skipped() {
    if !helm_available() {
        return;
    }
    let kustomization = |skip: bool| {
        file(
            "kustomization.yaml",
            &format!(
                "{KUSTOMIZATION}helmCharts:\n- name: web\n  releaseName: shop\n  skipHooks: {skip}\n"
            ),
        )
    };
    let mut files = vec![kustomization(false)];
    files.extend(vendored_chart("charts", true));
    let err = render(&files, &options()).unwrap_err();
    let RenderError::Kustomize { message, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(message.contains("Job/migrate (pre-install)"), "{message}");
    assert!(message.contains("skipHooks: true"), "{message}");

    files[0] = kustomization(true);
    let set = render(&files, &options()).unwrap();
    assert_eq!(names(&set), ["shop-web"], "the hook is left out");
}
