//! Tests of the closure a kustomize unit reads and the references it refuses (no kustomize).

use super::*;

const K: &str = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n";

fn file(path: &str, text: &str) -> SourceFile {
    (path.to_string(), text.as_bytes().to_vec())
}

/// A repository with an overlay over a base, a component and a shared patch.
fn layout(overlay: &str) -> Vec<SourceFile> {
    vec![
        file("README.md", "# repo"),
        file(
            "apps/web/base/kustomization.yaml",
            &format!("{K}resources:\n- deploy.yaml\n"),
        ),
        file("apps/web/base/deploy.yaml", "kind: Deployment\n"),
        file("apps/web/base/.notes/x.yaml", "hidden"),
        file(
            "apps/web/overlays/prod/kustomization.yaml",
            &format!("{K}{overlay}"),
        ),
        file("apps/web/overlays/prod/replicas.yaml", "kind: Deployment\n"),
        file("apps/web/overlays/dev/kustomization.yaml", K),
        file(
            "components/monitoring/kustomization.yaml",
            "kind: Component\n",
        ),
        file("components/monitoring/sm.yaml", "kind: ServiceMonitor\n"),
        file("shared/patches/labels.yaml", "kind: Deployment\n"),
        file("shared/patches/other.yaml", "kind: Deployment\n"),
    ]
}

const PROD: &str = "apps/web/overlays/prod";

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn an_overlay_reaches_its_base_components_and_shared_patches() {
    let repo = layout(
        "resources:\n- ../../base\ncomponents:\n- ../../../../components/monitoring\n\
         patches:\n- path: ../../../../shared/patches/labels.yaml\n- path: replicas.yaml\n",
    );
    let tree = FilesTree::at(&repo, PROD);
    let got = closure(&tree, PROD).unwrap();
    assert_eq!(
        got.dirs,
        set(&["apps/web/base", "components/monitoring", PROD])
    );
    assert_eq!(got.files, set(&["shared/patches/labels.yaml"]));
    assert_eq!(
        files(&tree, &got).unwrap(),
        [
            "apps/web/base/deploy.yaml",
            "apps/web/base/kustomization.yaml",
            "apps/web/overlays/prod/kustomization.yaml",
            "apps/web/overlays/prod/replicas.yaml",
            "components/monitoring/kustomization.yaml",
            "components/monitoring/sm.yaml",
            "shared/patches/labels.yaml",
        ],
        "the closure only: no sibling overlay, no unused patch, no README, no hidden files"
    );
}

#[test]
fn a_reference_that_leaves_the_repository_is_refused_by_name() {
    let repo = layout("resources:\n- ../../../../../secrets\n");
    let err = closure(&FilesTree::at(&repo, PROD), PROD).unwrap_err();
    assert_eq!(
        err,
        ReferenceError::EscapesRepository {
            file: format!("{PROD}/kustomization.yaml"),
            reference: "../../../../../secrets".into(),
        }
    );
    assert!(
        err.to_string()
            .contains("\"../../../../../secrets\" points outside the repository")
    );
}

#[test]
fn every_kind_of_path_field_is_bounded() {
    for overlay in [
        "patches:\n- path: ../../../../../etc/passwd\n",
        "patchesStrategicMerge:\n- ../../../../../p.yaml\n",
        "configMapGenerator:\n- name: c\n  files:\n  - key=../../../../../etc/passwd\n",
        "secretGenerator:\n- name: s\n  envs:\n  - ../../../../../.env\n",
        "openapi:\n  path: ../../../../../schema.json\n",
        "transformers:\n- ../../../../../t.yaml\n",
        // A field the list does not know: any string that climbs is checked too.
        "somethingNew:\n  deep:\n  - ../../../../../x\n",
    ] {
        let repo = layout(overlay);
        let err = closure(&FilesTree::at(&repo, PROD), PROD).unwrap_err();
        assert!(
            matches!(err, ReferenceError::EscapesRepository { .. }),
            "{overlay}: {err}"
        );
    }
}

#[test]
fn absolute_paths_are_refused() {
    let repo = layout("resources:\n- /etc/kubernetes\n");
    let err = closure(&FilesTree::at(&repo, PROD), PROD).unwrap_err();
    assert!(matches!(err, ReferenceError::Absolute { .. }), "{err}");
}

#[test]
fn remote_bases_are_refused_before_any_fetch() {
    for remote in [
        "https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v3.3.1",
        "github.com/kubernetes-sigs/kustomize/examples/helloWorld?ref=v3.3.1",
        "git@github.com:org/repo.git//base",
        "ssh://git@example.com/org/repo.git",
    ] {
        let repo = layout(&format!("resources:\n- {remote}\n"));
        let err = closure(&FilesTree::at(&repo, PROD), PROD).unwrap_err();
        assert_eq!(
            err,
            ReferenceError::Remote {
                file: format!("{PROD}/kustomization.yaml"),
                reference: remote.into()
            }
        );
    }
}

#[test]
fn inline_patches_and_missing_files_are_left_to_kustomize() {
    let repo = layout(
        "resources:\n- missing.yaml\n- v1.2\n\
         patches:\n- patch: |-\n    - op: replace\n      path: /spec/replicas\n      value: 3\n",
    );
    let got = closure(&FilesTree::at(&repo, PROD), PROD).unwrap();
    assert_eq!(got.dirs, set(&[PROD]));
    assert!(got.files.is_empty());
}

#[test]
fn a_base_inside_the_unit_still_has_its_references_followed() {
    // The App is the whole `apps/web`: base is inside the unit, its patch outside.
    let mut repo = layout("resources:\n- ../../base\n");
    repo[1] = file(
        "apps/web/base/kustomization.yaml",
        &format!(
            "{K}resources:\n- deploy.yaml\npatches:\n- path: ../../../shared/patches/other.yaml\n"
        ),
    );
    repo.push(file(
        "apps/web/kustomization.yaml",
        &format!("{K}resources:\n- overlays/prod\n"),
    ));
    let got = closure(&FilesTree::at(&repo, "apps/web"), "apps/web").unwrap();
    assert_eq!(got.dirs, set(&["apps/web"]));
    assert_eq!(got.files, set(&["shared/patches/other.yaml"]));
}

#[test]
fn normalize_stays_under_the_root() {
    assert_eq!(normalize("a/b", "../c").as_deref(), Some("a/c"));
    assert_eq!(normalize("a/b", "./x/../y").as_deref(), Some("a/b/y"));
    assert_eq!(normalize("a/b", "../..").as_deref(), Some(""));
    assert_eq!(normalize("a/b", "../../.."), None);
    assert_eq!(normalize("", ".."), None);
}

#[test]
fn references_read_generator_files_after_the_key() {
    let text = format!(
        "{K}configMapGenerator:\n- name: c\n  files:\n  - app.properties\n  - key=conf/x.ini\n"
    );
    let refs = references("k.yaml", text.as_bytes()).unwrap();
    assert_eq!(
        refs,
        [
            ("configMapGenerator.files", "app.properties".to_string()),
            ("configMapGenerator.files", "conf/x.ini".to_string())
        ]
    );
}

#[test]
fn the_files_tree_lists_directories_and_files() {
    let repo = layout("");
    let tree = FilesTree::new(&repo);
    let root = tree.list("").unwrap().unwrap();
    assert!(root.contains(&("apps".into(), EntryKind::Dir)));
    assert!(root.contains(&("README.md".into(), EntryKind::File)));
    assert_eq!(tree.list("nope").unwrap(), None);
    assert_eq!(tree.read("README.md").unwrap(), b"# repo");
}
