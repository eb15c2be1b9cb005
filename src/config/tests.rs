//! Tests of loading `reckon.yaml`: defaults, every key, and that every error names file, line
//! and key.

use super::*;

fn load_str(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("reckon.yaml"))
}

fn minimal(extra_app_keys: &str) -> String {
    format!(
        "apps:\n  - name: web\n    source:\n      url: https://example.com/repo.git\n{extra_app_keys}"
    )
}

/// Asserts a parse error and returns (line, key, message).
fn parse_error(text: &str) -> (u64, String, String) {
    match load_str(text) {
        Err(ConfigError::Parse {
            file,
            line,
            key,
            message,
            ..
        }) => {
            assert_eq!(file, Path::new("reckon.yaml"));
            (line, key, message)
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

fn invalid_error(text: &str) -> (u64, String, String) {
    match load_str(text) {
        Err(ConfigError::Invalid {
            file,
            line,
            key,
            message,
        }) => {
            assert_eq!(file, Path::new("reckon.yaml"));
            (line, key, message)
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn minimal_app_gets_the_documented_defaults() {
    let config = load_str(&minimal("")).unwrap();
    let app = &config.apps[0];
    assert_eq!(app.name, "web");
    assert_eq!(app.source.url, "https://example.com/repo.git");
    assert_eq!(app.source.reference, GitRef::Branch("main".into()));
    assert_eq!(app.source.path, ".");
    assert_eq!(app.source.interval, Duration::from_secs(60));
    assert_eq!(app.source.auth, None);
    assert_eq!(app.source.ca_file, None);
    assert_eq!(app.source.signature.mode, SignatureMode::Record);
    assert_eq!(app.target.kubeconfig, None);
    assert_eq!(app.target.context, None);
    assert_eq!(app.target.namespace, "default");
    assert!(app.prune.enabled);
    assert!(!app.prune.allow_empty);
    assert_eq!(app.drift, DriftMode::Correct);
    assert!(app.ignore.is_empty());
    assert!(!app.suspend);
    assert!(app.depends_on.is_empty());
    assert_eq!(app.conflicts, ConflictPolicy::Force);
    assert_eq!(app.health_timeout, Duration::from_secs(300));
}

#[test]
fn every_key_is_read() {
    let text = r#"
apps:
  - name: base
    source:
      url: git@github.com:example/base.git
      auth:
        ssh:
          key_file: /keys/id_ed25519
          known_hosts_file: /keys/known_hosts
  - name: web
    source:
      url: https://git.example.com/web.git
      ref: {semver: ">=1.2, <2"}
      path: deploy/prod
      interval: 30s
      auth:
        basic:
          username: bot
          password: {file: /secrets/git-password}
      ca_file: /etc/reckon/ca.pem
      signature:
        mode: require
        allowed_signers: /etc/reckon/allowed_signers
        keys: [/etc/reckon/release.asc]
    target:
      kubeconfig: /etc/reckon/kubeconfig
      context: prod
      namespace: web
    prune:
      enabled: false
      allow_empty: true
    drift: detect
    ignore:
      - select: {group: apps, kind: Deployment, namespace: web, name: frontend}
        pointers: [/spec/replicas, "/metadata/annotations/example.com~1owner"]
      - pointers: [/metadata/labels/team]
    suspend: true
    depends_on: [base]
    conflicts: report
    health_timeout: 2m30s
    shard: 3
"#;
    let config = load_str(text).unwrap();
    assert_eq!(
        config.apps[0].source.auth,
        Some(Auth::Ssh(SshAuth {
            key_file: "/keys/id_ed25519".into(),
            known_hosts_file: Some("/keys/known_hosts".into()),
        }))
    );
    let web = config.app("web").unwrap();
    assert_eq!(web.source.reference, GitRef::Semver(">=1.2, <2".into()));
    assert_eq!(web.source.path, "deploy/prod");
    assert_eq!(web.source.interval, Duration::from_secs(30));
    assert_eq!(
        web.source.auth,
        Some(Auth::Basic(BasicAuth {
            username: "bot".into(),
            password: SecretRef::File("/secrets/git-password".into()),
        }))
    );
    assert_eq!(web.source.ca_file, Some("/etc/reckon/ca.pem".into()));
    assert_eq!(
        web.source.signature,
        SignaturePolicy {
            mode: SignatureMode::Require,
            allowed_signers: Some("/etc/reckon/allowed_signers".into()),
            keys: vec!["/etc/reckon/release.asc".into()],
        }
    );
    assert_eq!(
        web.target,
        Target {
            kubeconfig: Some("/etc/reckon/kubeconfig".into()),
            context: Some("prod".into()),
            namespace: "web".into(),
            create_namespace: false,
        }
    );
    assert_eq!(
        web.prune,
        Prune {
            enabled: false,
            allow_empty: true,
            adopted: false,
            non_empty_namespaces: false,
        }
    );
    assert_eq!(web.drift, DriftMode::Detect);
    assert_eq!(
        web.ignore,
        vec![
            IgnoreRule {
                select: Selector {
                    group: Some("apps".into()),
                    kind: Some("Deployment".into()),
                    namespace: Some("web".into()),
                    name: Some("frontend".into()),
                },
                pointers: vec![
                    "/spec/replicas".into(),
                    "/metadata/annotations/example.com~1owner".into()
                ],
            },
            IgnoreRule {
                select: Selector::default(),
                pointers: vec!["/metadata/labels/team".into()],
            },
        ]
    );
    assert!(web.suspend);
    assert_eq!(web.depends_on, vec!["base".to_string()]);
    assert_eq!(web.conflicts, ConflictPolicy::Report);
    assert_eq!(web.health_timeout, Duration::from_secs(150));
    assert_eq!(web.shard, Some(3));
    assert_eq!(config.apps[0].shard, None, "hashed unless pinned");
}

#[test]
fn refs_and_token_auth() {
    let sha1 = "0123456789abcdef0123456789abcdef01234567";
    for (yaml, expected) in [
        ("{branch: release}", GitRef::Branch("release".into())),
        ("{tag: v1.0.0}", GitRef::Tag("v1.0.0".into())),
        ("{commit: X}", GitRef::Commit(sha1.into())),
    ] {
        let yaml = yaml.replace('X', sha1);
        let config = load_str(&minimal(&format!("      ref: {yaml}\n"))).unwrap();
        assert_eq!(config.apps[0].source.reference, expected);
    }
    let config = load_str(&minimal("      auth: {token: {env: GIT_TOKEN}}\n")).unwrap();
    assert_eq!(
        config.apps[0].source.auth,
        Some(Auth::Token(SecretRef::Env("GIT_TOKEN".into())))
    );
}

#[test]
fn unknown_keys_name_the_key_path_and_line() {
    let (line, key, message) = parse_error(&minimal("    prnue: {enabled: false}\n"));
    assert_eq!(line, 5);
    assert_eq!(key, "apps[0].prnue");
    assert!(message.contains("unknown field `prnue`"), "{message}");

    let (line, key, _) = parse_error(&minimal("      branch: main\n"));
    assert_eq!((line, key.as_str()), (5, "apps[0].source.branch"));

    let (line, key, _) = parse_error(&minimal("    prune: {enabled: true, dry: 1}\n"));
    assert_eq!((line, key.as_str()), (5, "apps[0].prune.dry"));

    let (line, key, _) = parse_error("apps: []\nextra: 1\n");
    assert_eq!((line, key.as_str()), (2, "extra"));

    let (_, _, message) = parse_error("{}\n");
    assert!(message.contains("missing field `apps`"), "{message}");
}

#[test]
fn invalid_values_name_the_key_path_and_line() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "    drift: sideways\n",
            "apps[0].drift",
            "unknown variant `sideways`",
        ),
        (
            "    conflicts: yolo\n",
            "apps[0].conflicts",
            "unknown variant",
        ),
        ("    suspend: maybe\n", "apps[0].suspend", ""),
        (
            "    health_timeout: 0s\n",
            "apps[0].health_timeout",
            "greater than 0s",
        ),
        (
            "    health_timeout: 5 minutes\n",
            "apps[0].health_timeout",
            "invalid duration",
        ),
        (
            "      interval: 5x\n",
            "apps[0].source.interval",
            "unknown unit",
        ),
        (
            "      interval: 500ms\n",
            "apps[0].source.interval",
            "at least 1s",
        ),
        ("      path: /abs\n", "apps[0].source.path", "relative"),
        (
            "      path: a/../../b\n",
            "apps[0].source.path",
            "without '..'",
        ),
        (
            "      ref: {semver: not-a-range}\n",
            "apps[0].source.ref",
            "invalid semver range",
        ),
        (
            "      ref: {commit: abc123}\n",
            "apps[0].source.ref",
            "full lowercase hex SHA",
        ),
        (
            "      ref: {branch: \"\"}\n",
            "apps[0].source.ref",
            "must not be empty",
        ),
        (
            "      ref: {head: main}\n",
            "apps[0].source.ref",
            "unknown field `head`",
        ),
        (
            "      auth: {token: {env: 1BAD}}\n",
            "apps[0].source.auth",
            "environment variable",
        ),
        (
            "      auth: {password: x}\n",
            "apps[0].source.auth",
            "unknown field `password`",
        ),
        (
            "      signature: {mode: always}\n",
            "apps[0].source.signature",
            "unknown variant",
        ),
        (
            "    target: {namespace: Bad_NS}\n",
            "apps[0].target.namespace",
            "DNS-1123",
        ),
        (
            "    ignore: [{pointers: []}]\n",
            "apps[0].ignore[0].pointers",
            "at least one",
        ),
        (
            "    ignore: [{pointers: [spec/replicas]}]\n",
            "apps[0].ignore[0].pointers",
            "start with '/'",
        ),
        (
            "    ignore: [{pointers: [/a~2b]}]\n",
            "apps[0].ignore[0].pointers",
            "'~' must be followed",
        ),
        (
            "    ignore: [{select: {knd: Pod}, pointers: [/x]}]\n",
            "apps[0].ignore[0].select.knd",
            "unknown field",
        ),
    ];
    for (extra, want_key, want_message) in cases {
        let text = minimal(extra);
        let (line, key, message) = parse_error(&text);
        // Every case adds one line (5) to the minimal file; the error must point into it.
        assert_eq!(line, 5, "{extra}: line {line}: {message}");
        assert!(
            key.starts_with(want_key),
            "{extra}: key {key}, want {want_key}"
        );
        assert!(message.contains(want_message), "{extra}: {message}");
    }
}

#[test]
fn invalid_names_and_urls() {
    for name in ["Web", "-web", "web-", "we_b", "", &"a".repeat(64)] {
        let text = format!("apps:\n  - name: \"{name}\"\n    source: {{url: https://x/y}}\n");
        let (line, key, message) = parse_error(&text);
        assert_eq!((line, key.as_str()), (2, "apps[0].name"), "{name}");
        assert!(message.contains("invalid App name"), "{message}");
    }
    for url in ["ftp://x/y", "https://", "just-a-word", "host:"] {
        let text = format!("apps:\n  - name: web\n    source: {{url: \"{url}\"}}\n");
        let (line, key, message) = parse_error(&text);
        assert_eq!((line, key.as_str()), (3, "apps[0].source.url"), "{url}");
        assert!(message.contains("invalid url"), "{message}");
    }
    for url in [
        "https://h/r",
        "http://h/r",
        "ssh://git@h/r",
        "git://h/r",
        "file:///srv/r",
        "git@h:r.git",
    ] {
        let text = format!("apps:\n  - name: web\n    source: {{url: \"{url}\"}}\n");
        assert!(load_str(&text).is_ok(), "{url}");
    }
}

#[test]
fn credentials_in_a_url_are_refused_and_never_echoed() {
    for url in [
        "https://alice:s3cret@git.example.com/r.git",
        "https://s3cret@git.example.com/r.git",
        "http://alice:s3cret@h/r",
        "ssh://git:s3cret@h/r",
    ] {
        let text = format!("apps:\n  - name: web\n    source: {{url: \"{url}\"}}\n");
        let (line, key, message) = parse_error(&text);
        assert_eq!((line, key.as_str()), (3, "apps[0].source.url"), "{url}");
        assert!(message.contains("source.auth"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        let shown = load_str(&text).unwrap_err().to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}

#[test]
fn error_display_names_file_line_and_key() {
    let err = load_str(&minimal("    drift: sideways\n")).unwrap_err();
    let shown = err.to_string();
    assert!(shown.starts_with("reckon.yaml:5:"), "{shown}");
    assert!(shown.contains("apps[0].drift"), "{shown}");
}

#[test]
fn duplicate_names_point_at_the_second() {
    let text = "apps:\n  - name: web\n    source: {url: https://x/a}\n  - name: web\n    source: {url: https://x/b}\n";
    let (line, key, message) = invalid_error(text);
    assert_eq!((line, key.as_str()), (4, "apps[1].name"));
    assert!(message.contains("first defined on line 2"), "{message}");
}

#[test]
fn unknown_dependency_is_named() {
    let text =
        "apps:\n  - name: web\n    source: {url: https://x/a}\n    depends_on:\n      - db\n";
    let (line, key, message) = invalid_error(text);
    assert_eq!((line, key.as_str()), (5, "apps[0].depends_on[0]"));
    assert!(message.contains("unknown App \"db\""), "{message}");
}

fn app_with_deps(name: &str, deps: &[&str]) -> String {
    format!(
        "  - name: {name}\n    source: {{url: https://x/{name}}}\n    depends_on: [{}]\n",
        deps.join(", ")
    )
}

#[test]
fn dependency_cycles_are_named() {
    let text = format!(
        "apps:\n{}{}{}{}",
        app_with_deps("a", &[]),
        app_with_deps("b", &["c"]),
        app_with_deps("c", &["d"]),
        app_with_deps("d", &["a", "b"]),
    );
    match load_str(&text) {
        Err(err @ ConfigError::DependencyCycle { .. }) => {
            let ConfigError::DependencyCycle { line, cycle, .. } = &err else {
                unreachable!()
            };
            assert_eq!(cycle, &["b", "c", "d", "b"]);
            assert_eq!(*line, 5, "line of b's name");
            assert!(err.to_string().contains("b -> c -> d -> b"), "{err}");
        }
        other => panic!("expected a cycle, got {other:?}"),
    }
    let text = format!("apps:\n{}", app_with_deps("self", &["self"]));
    match load_str(&text) {
        Err(ConfigError::DependencyCycle { cycle, .. }) => assert_eq!(cycle, ["self", "self"]),
        other => panic!("expected a cycle, got {other:?}"),
    }
}

#[test]
fn sync_order_puts_dependencies_first_and_keeps_file_order_otherwise() {
    let text = format!(
        "apps:\n{}{}{}{}{}",
        app_with_deps("web", &["db", "cache"]),
        app_with_deps("db", &["net"]),
        app_with_deps("cache", &[]),
        app_with_deps("net", &[]),
        app_with_deps("docs", &[]),
    );
    let config = load_str(&text).unwrap();
    let order: Vec<&str> = config
        .sync_order()
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(order, ["cache", "net", "db", "web", "docs"]);
    for (i, app) in config.sync_order().iter().enumerate() {
        for dep in &app.depends_on {
            let at = order.iter().position(|n| n == dep).unwrap();
            assert!(at < i, "{dep} must precede {}", app.name);
        }
    }
}

#[test]
fn a_long_dependency_chain_neither_overflows_nor_false_positives() {
    let mut text = String::from("apps:\n");
    text.push_str(&app_with_deps("a0", &[]));
    for i in 1..300 {
        text.push_str(&app_with_deps(&format!("a{i}"), &[&format!("a{}", i - 1)]));
    }
    let config = load_str(&text).unwrap();
    assert_eq!(config.sync_order().last().unwrap().name, "a299");
}

#[test]
fn auth_must_fit_the_url_scheme() {
    let text = "apps:\n  - name: web\n    source:\n      url: git@h:r.git\n      auth: {token: {env: T}}\n";
    let (line, key, message) = invalid_error(text);
    assert_eq!((line, key.as_str()), (4, "apps[0].source.auth"));
    assert!(
        message.contains("token auth needs an https://"),
        "{message}"
    );

    let text = "apps:\n  - name: web\n    source:\n      url: https://h/r\n      auth: {ssh: {key_file: /k}}\n";
    let (_, key, message) = invalid_error(text);
    assert_eq!(key, "apps[0].source.auth");
    assert!(message.contains("ssh auth needs an ssh://"), "{message}");

    let text = "apps:\n  - name: web\n    source:\n      url: ssh://h/r\n      ca_file: /ca.pem\n";
    let (_, key, _) = invalid_error(text);
    assert_eq!(key, "apps[0].source.ca_file");
}

#[test]
fn two_auth_methods_at_once_are_rejected() {
    let (line, key, _) = parse_error(&minimal(
        "      auth:\n        token: {env: T}\n        basic: {username: u, password: {env: P}}\n",
    ));
    assert!(key.starts_with("apps[0].source.auth"), "{key}");
    assert!((5..=7).contains(&line), "{line}");
}

#[test]
fn one_key_maps_say_which_keys_they_accept() {
    for (extra, key, message) in [
        (
            "      ref: {branch: main, tag: v1}\n",
            "apps[0].source.ref",
            "ref needs exactly one of branch, tag, semver, commit",
        ),
        (
            "      ref: {}\n",
            "apps[0].source.ref",
            "ref needs exactly one of",
        ),
        (
            "      auth: {}\n",
            "apps[0].source.auth",
            "auth needs exactly one of token, basic, ssh",
        ),
        (
            "      auth: {token: {env: A, file: /b}}\n",
            "apps[0].source.auth.token",
            "a secret reference needs exactly one of env, file",
        ),
    ] {
        let (line, got_key, got_message) = parse_error(&minimal(extra));
        assert_eq!(line, 5, "{extra}");
        assert_eq!(got_key, key, "{extra}");
        assert!(got_message.contains(message), "{extra}: {got_message}");
    }
}

#[test]
fn require_signatures_needs_signers() {
    let (line, key, message) = invalid_error(&minimal("      signature: {mode: require}\n"));
    assert_eq!((line, key.as_str()), (5, "apps[0].source.signature"));
    assert!(message.contains("allowed_signers or keys"), "{message}");
    let ok = load_str(&minimal("      signature: {mode: off}\n")).unwrap();
    assert_eq!(ok.apps[0].source.signature.mode, SignatureMode::Off);
}

#[test]
fn alias_bombs_are_rejected_by_the_budget() {
    // The schema stops a nested-sequence bomb at its first element, so exercise the alias
    // budget itself: more alias expansions than a configuration file can need.
    let aliases = vec!["*s"; 1_001].join(", ");
    let text =
        minimal(&format!("    depends_on: [{aliases}]\n")).replace("name: web", "name: &s web");
    let (line, _, message) = parse_error(&text);
    assert!(message.contains("budget"), "{message}");
    assert_eq!(line, 5);
    // Within the budget, the same construction loads (and fails only on the self-dependency).
    let aliases = ["*s"; 10].join(", ");
    let text =
        minimal(&format!("    depends_on: [{aliases}]\n")).replace("name: web", "name: &s web");
    assert!(matches!(
        load_str(&text),
        Err(ConfigError::DependencyCycle { .. })
    ));
}

#[test]
fn a_fleet_of_ten_thousand_apps_loads() {
    // Found by the fleet-at-scale benchmark: a node budget sized for a small file refused a
    // 10,000-App reckon.yaml (issue 22 asks for 10,000 Apps on one agent). Each App here is
    // what the benchmark writes, plus its drift setting: about 20 nodes and 210 bytes.
    let mut text = String::from("apps:\n");
    for i in 0..10_000 {
        text.push_str(&format!(
            "  - name: app{i:05}\n    drift: correct\n    source:\n      url: file:///srv/git/fleet.git\n      path: apps/app{i:05}\n      interval: 300s\n    target:\n      kubeconfig: /etc/reckon/kubeconfig\n      namespace: team-{t}\n",
            t = i % 40
        ));
    }
    assert!(
        text.len() > 2_000_000,
        "a realistic size: {} bytes",
        text.len()
    );
    let config = load_str(&text).unwrap();
    assert_eq!(config.apps.len(), 10_000);
    assert_eq!(config.apps[9_999].name, "app09999");
}

#[test]
fn several_documents_are_rejected() {
    let (line, key, message) = parse_error("apps: []\n---\napps: []\n");
    assert_eq!((line, key.as_str()), (2, "."), "{message}");
}

#[test]
fn selector_matching() {
    let any = Selector::default();
    assert!(any.matches("", "Service", Some("ns"), "a"));
    assert!(any.matches("rbac.authorization.k8s.io", "ClusterRole", None, "r"));
    let core = Selector {
        group: Some(String::new()),
        ..Selector::default()
    };
    assert!(core.matches("", "ConfigMap", Some("ns"), "a"));
    assert!(!core.matches("apps", "Deployment", Some("ns"), "a"));
    let exact = Selector {
        group: Some("apps".into()),
        kind: Some("Deployment".into()),
        namespace: Some("web".into()),
        name: Some("front".into()),
    };
    assert!(exact.matches("apps", "Deployment", Some("web"), "front"));
    assert!(!exact.matches("apps", "Deployment", Some("web"), "back"));
    assert!(!exact.matches("apps", "Deployment", Some("other"), "front"));
    assert!(!exact.matches("apps", "StatefulSet", Some("web"), "front"));
    assert!(!exact.matches("apps", "Deployment", None, "front"));
}

#[test]
fn load_reads_a_file_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reckon.yaml");
    std::fs::write(&path, minimal("    drift: nope\n")).unwrap();
    let err = load(&path).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}:5:", path.display())),
        "{err}"
    );
    let missing = load(&dir.path().join("absent.yaml")).unwrap_err();
    assert!(matches!(missing, ConfigError::Read { .. }), "{missing}");
}

#[test]
fn oversized_files_are_rejected_without_reading_them_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reckon.yaml");
    let mut text = String::from("apps: []\n");
    text.push_str(&"# padding\n".repeat(2_000_000));
    std::fs::write(&path, &text).unwrap();
    let err = load(&path).unwrap_err();
    assert!(err.to_string().contains("larger than 16 MiB"), "{err}");
    if Path::new("/dev/zero").exists() {
        let err = load(Path::new("/dev/zero")).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { .. } | ConfigError::Read { .. }),
            "{err}"
        );
    }
}

#[test]
fn the_shipped_example_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/reckon.yaml");
    let config = load(&path).unwrap();
    assert!(config.apps.len() >= 2);
}

#[test]
fn a_loaded_config_serialises_back_to_an_equal_config() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/reckon.yaml");
    let config = load(&path).unwrap();
    let text = serde_saphyr::to_string(&config).unwrap();
    let again =
        parse(&text, Path::new("round-trip.yaml")).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(again, config);
}

#[test]
fn limits_are_read_checked_and_default_when_absent() {
    assert_eq!(
        load_str(&minimal("")).unwrap().limits,
        InputLimits::default()
    );
    let text = format!(
        "limits:\n  yaml_expanded_bytes: 1000\n  fetch_timeout: 30s\n  changed_paths: 5\n{}",
        minimal("")
    );
    let limits = load_str(&text).unwrap().limits;
    assert_eq!(limits.yaml_expanded_bytes, 1000);
    assert_eq!(limits.fetch_timeout, Duration::from_secs(30));
    assert_eq!(limits.changed_paths, 5);
    assert_eq!(limits.tree_depth, InputLimits::default().tree_depth);
    let (line, key, message) = parse_error(&format!("limits:\n  tree_depth: 0\n{}", minimal("")));
    assert_eq!((line, key.as_str()), (2, "limits"), "{message}");
    assert!(message.contains("limits.tree_depth"), "{message}");
    let (line, key, _) = parse_error(&format!("limits:\n  tree_dpth: 3\n{}", minimal("")));
    assert_eq!((line, key.as_str()), (2, "limits.tree_dpth"));
}

#[test]
fn policies_are_defined_once_and_resolved_by_apps() {
    let text = "policies:
  - name: team-a
    namespaces: [team-a, team-a-*]
    namespaced_kinds: {deny: [{group: \"\", kind: Secret}]}
    cluster_kinds: {allow: [{group: rbac.authorization.k8s.io, kind: ClusterRole}]}
    on_violation: fail_app
apps:
  - name: web
    source:
      url: https://example.com/repo.git
    target: {namespace: team-a}
    service_account: deployer
    policy: team-a
  - name: ops
    source:
      url: https://example.com/repo.git
    service_account: ops/runner
";
    let cfg = load_str(text).unwrap();
    assert_eq!(cfg.policies.len(), 1);
    let web = cfg.app("web").unwrap();
    let policy = web.boundary.policy.as_ref().unwrap();
    assert_eq!(policy.on_violation, OnViolation::FailApp);
    assert_eq!(policy.cluster_kinds.allow[0].kind, "ClusterRole");
    assert_eq!(policy.namespaced_kinds.deny[0].group, "");
    assert!(policy.app_namespaces.is_empty());
    assert_eq!(
        web.boundary.confined_to, None,
        "the file's Apps are the operator's"
    );
    assert_eq!(
        web.service_account.as_ref().unwrap().user(),
        "system:serviceaccount:team-a:deployer"
    );
    let ops = cfg.app("ops").unwrap();
    assert_eq!(
        ops.service_account.as_ref().unwrap().to_string(),
        "ops/runner"
    );
    assert!(ops.boundary.is_open());
}

#[test]
fn policy_mistakes_are_refused_with_their_key() {
    let (_, key, message) = invalid_error(&minimal("    policy: nowhere\n"));
    assert_eq!(key, "apps[0].policy");
    assert!(message.contains("unknown policy \"nowhere\""), "{message}");
    let twice =
        "policies:\n  - {name: p, namespaces: [a]}\n  - {name: p, namespaces: [b]}\napps: []\n";
    let (_, key, message) = invalid_error(twice);
    assert_eq!(key, "policies[1].name");
    assert!(message.contains("duplicate"), "{message}");
    let nowhere = "policies:\n  - {name: p, namespaces: []}\napps: []\n";
    assert_eq!(invalid_error(nowhere).1, "policies[0].namespaces");
    let (_, key, _) =
        parse_error("policies:\n  - {name: p, namespaces: [a], on_violation: ignore}\napps: []\n");
    assert!(key.starts_with("policies[0]"), "{key}");
    let (_, key, message) = invalid_error(&minimal("    service_account: a/b/c\n"));
    assert_eq!(key, "apps[0].service_account");
    assert!(message.contains("NAMESPACE/NAME"), "{message}");
}

#[test]
fn a_helm_block_is_read_with_its_defaults() {
    let text = minimal(
        "    helm:\n      release: web-prod\n      values_files: [values-prod.yaml, env/eu.yaml]\n      \
         values_from:\n        - {kind: Secret, name: db-values}\n        - {kind: ConfigMap, name: tuning, key: tune.yaml, namespace: ops, optional: true}\n      \
         values:\n        replicaCount: 2\n        image: {tag: \"1.2\"}\n",
    );
    let app = &load_str(&text).unwrap().apps[0];
    let helm = app.helm.as_ref().unwrap();
    assert_eq!(helm.release.as_deref(), Some("web-prod"));
    assert_eq!(helm.values_files, ["values-prod.yaml", "env/eu.yaml"]);
    assert_eq!(helm.values_from.len(), 2);
    assert_eq!(helm.values_from[0].kind, ValuesKind::Secret);
    assert_eq!(helm.values_from[0].key, "values.yaml", "the default key");
    assert_eq!(helm.values_from[0].namespace, None);
    assert!(!helm.values_from[0].optional);
    assert_eq!(helm.values_from[1].namespace.as_deref(), Some("ops"));
    assert!(helm.values_from[1].optional);
    // Inline values keep the user's keys as written (camelCase included).
    assert_eq!(
        helm.values,
        Some(serde_json::json!({"replicaCount": 2, "image": {"tag": "1.2"}}))
    );
    assert_eq!(load_str(&minimal("")).unwrap().apps[0].helm, None);
}

#[test]
fn bad_helm_settings_name_the_key() {
    let (_, key, message) = parse_error(&minimal("    helm:\n      release: Web_Prod\n"));
    assert_eq!(key, "apps[0].helm.release");
    assert!(message.contains("invalid release name"), "{message}");
    let (_, key, message) = parse_error(&minimal("    helm:\n      values_files: [../x.yaml]\n"));
    assert_eq!(key, "apps[0].helm.values_files");
    assert!(message.contains("without '..'"), "{message}");
    let (_, key, message) = parse_error(&minimal("    helm:\n      values: [1, 2]\n"));
    assert_eq!(key, "apps[0].helm.values");
    assert!(message.contains("must be a map"), "{message}");
    let (_, key, _) = parse_error(&minimal(
        "    helm:\n      values_from: [{kind: Pod, name: x}]\n",
    ));
    assert!(key.starts_with("apps[0].helm.values_from"), "{key}");
}

#[test]
fn helm_repositories_are_read_and_bad_ones_refused_by_key() {
    let text = minimal(
        "    helm:\n      repositories:\n        - url: https://charts.example.com/stable/\n          \
         auth: {token: {env: CHARTS_TOKEN}}\n          ca_file: /etc/ca.pem\n        \
         - {url: \"oci://localhost:5000/charts\", insecure_http: true}\n",
    );
    let app = &load_str(&text).unwrap().apps[0];
    let repositories = &app.helm.as_ref().unwrap().repositories;
    assert_eq!(repositories.len(), 2);
    assert_eq!(repositories[0].url, "https://charts.example.com/stable");
    assert!(matches!(repositories[0].auth, Some(Auth::Token(_))));
    assert_eq!(
        repositories[0].ca_file.as_deref(),
        Some("/etc/ca.pem".as_ref())
    );
    assert!(repositories[1].insecure_http);
    for (entry, says) in [
        ("{url: \"s3://bucket\"}", "oci:// URL"),
        (
            "{url: \"https://u:p@charts.example.com\"}",
            "no credentials",
        ),
        (
            "{url: \"oci://registry.example.com/charts\", insecure_http: true}",
            "loopback",
        ),
        (
            "{url: \"https://127.0.0.1/charts\", insecure_http: true}",
            "for oci://",
        ),
        (
            "{url: \"https://charts.example.com\", auth: {ssh: {key_file: /k}}}",
            "ssh auth is for Git",
        ),
        ("{url: \"https://charts.example.com\", nope: 1}", "nope"),
    ] {
        let (_, key, message) = parse_error(&minimal(&format!(
            "    helm:\n      repositories: [{entry}]\n"
        )));
        assert!(
            key.starts_with("apps[0].helm.repositories"),
            "{entry}: {key}"
        );
        assert!(message.contains(says), "{entry}: {message}");
    }
    assert!(is_loopback_host("127.0.0.1:5000"));
    assert!(is_loopback_host("[::1]:5000"));
    assert!(is_loopback_host("localhost"));
    assert!(!is_loopback_host("10.0.0.1:5000"));
    assert!(!is_loopback_host("localhost.example.com"));
}

#[test]
fn a_chart_repository_source_names_its_chart_and_version() {
    use crate::source::chart_index::Wanted;
    let cfg = load_str(
        "apps:
  - name: web
    source:
      url: https://charts.example.com/stable
      chart: {name: web, version: 1.2.0}
      auth: {token: {env: CHARTS_TOKEN}}
      interval: 30s
  - name: api
    source:
      url: http://127.0.0.1:8080/charts
      chart: {name: api, version: \">=1.2, <2\"}
  - name: any
    source:
      url: https://charts.example.com/stable
      chart: {name: db}
",
    )
    .unwrap();
    let web = cfg.apps[0].source.chart.as_ref().unwrap();
    assert_eq!(web.wanted().unwrap(), Wanted::Exact("1.2.0".into()));
    assert_eq!(cfg.apps[0].source.interval, Duration::from_secs(30));
    let api = cfg.apps[1].source.chart.as_ref().unwrap();
    assert!(matches!(api.wanted().unwrap(), Wanted::Range(_)));
    let any = cfg.apps[2].source.chart.as_ref().unwrap();
    assert_eq!(any.version, "*", "the highest release by default");
    assert_eq!(cfg.apps[0].source.chart.as_ref().unwrap().name, "web");

    let (line, key, message) = invalid_error(
        "apps:\n  - name: web\n    source:\n      url: ssh://git@h/charts\n      chart: {name: web}\n",
    );
    assert_eq!((line, key.as_str()), (4, "apps[0].source.chart"));
    assert!(message.contains("https:// or http://"), "{message}");
    for (git_key, text) in [
        ("ref", "      ref: {branch: main}\n"),
        ("path", "      path: charts/web\n"),
        ("signature", "      signature: {mode: off}\n"),
    ] {
        let (_, key, message) = invalid_error(&format!(
            "apps:\n  - name: web\n    source:\n      url: https://h/charts\n      chart: {{name: web}}\n{text}"
        ));
        assert_eq!(key, format!("apps[0].source.{git_key}"));
        assert!(message.contains("for Git sources"), "{message}");
    }
    let (line, key, message) = parse_error(
        "apps:\n  - name: web\n    source:\n      url: https://h/charts\n      chart: {name: web, version: \"not a version\"}\n",
    );
    assert_eq!(line, 5);
    assert!(key.contains("chart.version"), "{key}");
    assert!(
        message.contains("neither a version nor a semver range"),
        "{message}"
    );
    let (_, key, _) = parse_error(
        "apps:\n  - name: web\n    source:\n      url: https://h/charts\n      chart: {name: web, tag: x}\n",
    );
    assert!(key.contains("chart"), "{key}");
}

#[test]
fn an_oci_chart_source_is_named_by_its_url_and_oci_is_for_charts_only() {
    let app = |url: &str, chart: &str| {
        format!(
            "apps:\n  - name: web\n    source:\n      url: {url}\n{chart}      ca_file: /etc/ca.pem\n"
        )
    };
    let cfg = load_str(&app(
        "oci://registry.example.com/charts/web",
        "      chart: {name: web, version: \">=1, <2\"}\n",
    ))
    .unwrap();
    assert_eq!(cfg.apps[0].source.chart.as_ref().unwrap().name, "web");

    let (line, key, message) = invalid_error(&app(
        "oci://registry.example.com/charts/web",
        "      chart: {name: api}\n",
    ));
    assert_eq!((line, key.as_str()), (4, "apps[0].source.chart.name"));
    assert!(message.contains("last segment (\"web\")"), "{message}");

    let (_, key, message) = invalid_error(&app("oci://registry.example.com/charts/web", ""));
    assert_eq!(key, "apps[0].source.url");
    assert!(message.contains("is an OCI registry"), "{message}");

    let (_, key, message) = invalid_error(&app(
        "oci://registry.example.com/charts/web:1.0.0",
        "      chart: {name: web}\n",
    ));
    assert_eq!(key, "apps[0].source.url");
    assert!(
        message.contains("a tag does not go in the URL"),
        "{message}"
    );
}

#[test]
fn plain_http_to_an_oci_registry_is_an_opt_in_for_loopback_only() {
    let app = |url: &str| {
        format!(
            "apps:\n  - name: web\n    source:\n      url: {url}\n      chart: {{name: web, insecure_http: true}}\n"
        )
    };
    let cfg = load_str(&app("oci://127.0.0.1:5000/charts/web")).unwrap();
    assert!(cfg.apps[0].source.chart.as_ref().unwrap().insecure_http);
    assert!(load_str(&app("oci://localhost:5000/charts/web")).is_ok());
    let (_, key, message) = invalid_error(&app("oci://registry.example.com/charts/web"));
    assert_eq!(key, "apps[0].source.chart.insecure_http");
    assert!(
        message.contains("only for a loopback registry"),
        "{message}"
    );
    let (_, key, message) = invalid_error(&app("https://charts.example.com"));
    assert_eq!(key, "apps[0].source.chart.insecure_http");
    assert!(message.contains("for oci:// registries"), "{message}");
    let off =
        load_str(&app("oci://127.0.0.1:5000/charts/web").replace(", insecure_http: true", ""))
            .unwrap();
    assert!(!off.apps[0].source.chart.as_ref().unwrap().insecure_http);
}

#[test]
fn a_chart_signature_policy_is_for_oci_charts_and_require_names_keys() {
    let app = |url: &str, signature: &str| {
        format!(
            "apps:\n  - name: web\n    source:\n      url: {url}\n      chart: {{name: web, signature: {signature}}}\n"
        )
    };
    let cfg = load_str(&app(
        "oci://registry.example.com/charts/web",
        "{mode: require, keys: [/etc/reckon/cosign.pub]}",
    ))
    .unwrap();
    let signature = cfg.apps[0]
        .source
        .chart
        .as_ref()
        .unwrap()
        .signature
        .as_ref()
        .unwrap();
    assert_eq!(signature.mode, SignatureMode::Require);
    assert_eq!(signature.keys, [PathBuf::from("/etc/reckon/cosign.pub")]);
    let recorded = load_str(&app("oci://registry.example.com/charts/web", "{}")).unwrap();
    assert_eq!(
        recorded.apps[0]
            .source
            .chart
            .as_ref()
            .unwrap()
            .signature
            .as_ref()
            .unwrap()
            .mode,
        SignatureMode::Record,
        "a signature block without mode records"
    );

    let (_, key, message) = invalid_error(&app(
        "oci://registry.example.com/charts/web",
        "{mode: require}",
    ));
    assert_eq!(key, "apps[0].source.chart.signature.keys");
    assert!(
        message.contains("at least one cosign public key"),
        "{message}"
    );
    let (_, key, message) = invalid_error(&app("https://charts.example.com", "{mode: record}"));
    assert_eq!(key, "apps[0].source.chart.signature");
    assert!(message.contains("OCI charts"), "{message}");
}
