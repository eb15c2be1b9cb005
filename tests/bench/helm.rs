//! Helm benchmarks (issue 20): what reckon adds to `helm template`, and what re-polling an
//! unchanged chart repository costs.
//!
//! - `helm::render_against_helm_template`: one chart of 50 templates (Deployments with replicas,
//!   Services, ConfigMaps, ServiceAccounts and Secrets over a `_helpers.tpl`), rendered by reckon
//!   (`render::helm::render_chart`: the chart written to a private directory, `helm template`
//!   in its sandbox, the output parsed, normalised, digested, hooks sorted out, Secrets sealed)
//!   and by `helm template` itself on the same chart with the same arguments and environment, in
//!   alternation; medians over `RECKON_BENCH_ITERS` (default 20) and their ratio.
//! - `helm::unchanged_index_of_1000_versions`: a repository whose `index.yaml` lists 1,000
//!   versions of a chart; the first poll fetches and parses it and chooses a version, every later
//!   poll sends its validators and gets `304` with no body. The server's own log counts the
//!   requests; the baseline is fetching and parsing the index without validators, as a poller
//!   without them would.
//!
//! Needs `helm` on PATH (`scripts/provision-testenv.sh` builds it). Build with `--release` for
//! figures worth quoting; CI runs both at a small size.

use super::stats::percentile;
use reckon::render::helm::{HelmOptions, ValuesLayer, ValuesSource, render_chart};
use reckon::render::{RenderOptions, SecretKey, SourceFile};
use reckon::source::chart_index::{self, Wanted};
use reckon::source::chart_repo::{ChartLimits, ChartRepo, IndexFetch, RepoAuth};
use reckon_testenv::git::ChartRepoServer;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn iterations() -> usize {
    std::env::var("RECKON_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
        .max(1)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    percentile(&samples, 0.5)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Ten of each kind of template: 50 files besides `_helpers.tpl`, about what a mid-sized
/// application chart holds.
fn fifty_template_chart() -> Vec<SourceFile> {
    let mut files: Vec<SourceFile> = vec![
        (
            "Chart.yaml".into(),
            b"apiVersion: v2\nname: shop\nversion: 1.4.0\nappVersion: \"2.1\"\n".to_vec(),
        ),
        (
            "values.yaml".into(),
            b"image: registry.example/shop:2.1\nreplicas: 2\nport: 8080\nlabels:\n  team: payments\n  tier: backend\n".to_vec(),
        ),
        (
            "templates/_helpers.tpl".into(),
            br#"{{- define "shop.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- range $k, $v := .Values.labels }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end -}}
"#
            .to_vec(),
        ),
    ];
    for i in 0..10 {
        let t = |kind: &str| format!("templates/{kind}-{i}.yaml");
        files.push((t("deployment"), deployment(i).into_bytes()));
        files.push((t("service"), format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{{{ .Release.Name }}}}-svc-{i}\n  labels:\n    {{{{- include \"shop.labels\" . | nindent 4 }}}}\nspec:\n  selector:\n    app: part-{i}\n  ports:\n    - port: 80\n      targetPort: {{{{ .Values.port }}}}\n"
        ).into_bytes()));
        files.push((t("configmap"), format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ .Release.Name }}}}-config-{i}\n  labels:\n    {{{{- include \"shop.labels\" . | nindent 4 }}}}\ndata:\n  part: \"{i}\"\n  image: {{{{ .Values.image | quote }}}}\n{{{{- range $k, $v := .Values.labels }}}}\n  {{{{ $k }}}}: {{{{ $v | quote }}}}\n{{{{- end }}}}\n"
        ).into_bytes()));
        files.push((t("serviceaccount"), format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {{{{ .Release.Name }}}}-sa-{i}\n  labels:\n    {{{{- include \"shop.labels\" . | nindent 4 }}}}\n"
        ).into_bytes()));
        files.push((t("secret"), format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{{{ .Release.Name }}}}-secret-{i}\ntype: Opaque\nstringData:\n  password: {{{{ printf \"pw-%d-%s\" {i} .Release.Name | quote }}}}\n"
        ).into_bytes()));
    }
    files
}

fn deployment(i: usize) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{{{ .Release.Name }}}}-part-{i}
  labels:
    {{{{- include "shop.labels" . | nindent 4 }}}}
spec:
  replicas: {{{{ .Values.replicas }}}}
  selector:
    matchLabels:
      app: part-{i}
  template:
    metadata:
      labels:
        app: part-{i}
    spec:
      serviceAccountName: {{{{ .Release.Name }}}}-sa-{i}
      containers:
        - name: app
          image: {{{{ .Values.image }}}}
          ports:
            - containerPort: {{{{ .Values.port }}}}
          envFrom:
            - configMapRef:
                name: {{{{ .Release.Name }}}}-config-{i}
          resources:
            requests:
              cpu: 10m
              memory: 16Mi
"#
    )
}

fn helm_options() -> HelmOptions {
    HelmOptions {
        release: "shop".into(),
        namespace: "bench".into(),
        kube_version: "v1.37.2".into(),
        api_versions: vec!["apps/v1".into(), "apps/v1/Deployment".into(), "v1".into()],
        values_files: vec![],
        values: vec![ValuesLayer {
            source: ValuesSource::Inline,
            bytes: b"replicas: 3\n".to_vec(),
        }],
        timeout: Duration::from_secs(60),
    }
}

/// `helm template` run as reckon runs it (same arguments, a cleared environment with Helm's
/// homes in a temporary directory), on a chart directory written once beforehand.
fn plain_helm_template(chart: &Path, values: &Path, home: &Path) -> Duration {
    let helm = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("helm"))
        .find(|candidate| candidate.is_file())
        .expect("helm on PATH");
    let t = Instant::now();
    let out = Command::new(helm)
        .args([
            "template",
            "shop",
            "--namespace",
            "bench",
            "--kube-version",
            "v1.37.2",
            "--include-crds",
            "--api-versions",
            "apps/v1,apps/v1/Deployment,v1",
            "--values",
        ])
        .arg(values)
        .arg(chart)
        .env_clear()
        .env("HOME", home)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("helm runs");
    let elapsed = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.len() > 10_000, "helm printed the 50 objects");
    elapsed
}

#[test]
#[ignore = "benchmark: run with --ignored --exact helm::render_against_helm_template --nocapture"]
fn render_against_helm_template() {
    let iterations = iterations();
    let files = fifty_template_chart();
    let options = RenderOptions {
        app: "shop".into(),
        secret_key: SecretKey::new([7; 32]),
        kustomize_timeout: Duration::from_secs(60),
        yaml_expanded_bytes: reckon::render::DEFAULT_YAML_EXPANDED_BYTES,
        fill_port_protocol: false,
    };
    let helm = helm_options();

    let work = tempfile::tempdir().unwrap();
    let chart = work.path().join("chart");
    for (path, bytes) in &files {
        let target = chart.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
    let values = work.path().join("values.yaml");
    std::fs::write(&values, &helm.values[0].bytes).unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();

    // One of each first: helm's first start pays for the page cache, not for either side.
    let rendered = render_chart(&files, &options, &helm).expect("the chart renders");
    assert_eq!(
        rendered.set.objects.len(),
        50,
        "every template is one object"
    );
    plain_helm_template(&chart, &values, &home);

    let (mut reckon, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        let t = Instant::now();
        let again = render_chart(&files, &options, &helm).expect("the chart renders");
        reckon.push(t.elapsed());
        assert_eq!(again.set.objects.len(), 50);
        plain.push(plain_helm_template(&chart, &values, &home));
    }
    let (r, p) = (median(reckon), median(plain));
    let overhead = r.as_secs_f64() / p.as_secs_f64() - 1.0;
    println!("\nHelm render, a chart of 50 templates, median of {iterations} (ms):\n");
    println!("| render | reckon | helm template | reckon's overhead | target |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| 50 templates, 1 values layer | {:.1} | {:.1} | {:+.1}% | ≤ +10% |",
        ms(r),
        ms(p),
        overhead * 100.0
    );
}

/// An `index.yaml` listing `n` versions of `web`, newest first, as `helm repo index` writes it.
fn index_of(n: usize) -> String {
    let mut index = String::from("apiVersion: v1\nentries:\n  web:\n");
    for i in (0..n).rev() {
        let (minor, patch) = (i / 100, i % 100);
        index.push_str(&format!(
            "  - apiVersion: v2\n    appVersion: \"1.{minor}.{patch}\"\n    created: \"2026-12-07T08:00:00Z\"\n    description: A web server\n    digest: {:064x}\n    name: web\n    type: application\n    urls:\n    - web-1.{minor}.{patch}.tgz\n    version: 1.{minor}.{patch}\n",
            i + 1
        ));
    }
    index.push_str("generated: \"2026-12-07T08:00:00Z\"\n");
    index
}

#[test]
#[ignore = "benchmark: run with --ignored --exact helm::unchanged_index_of_1000_versions --nocapture"]
fn unchanged_index_of_1000_versions() {
    let polls = iterations();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("index.yaml"), index_of(1000)).unwrap();
    let server = ChartRepoServer::start(work.path(), false, None).unwrap();
    let repo = ChartRepo::new(
        &server.url(),
        RepoAuth::None,
        None,
        ChartLimits::default(),
        Duration::from_secs(10),
    )
    .unwrap();
    let wanted = Wanted::Range(">=1.0.0, <2".parse().unwrap());
    let choose = |body: &[u8]| {
        let versions = chart_index::parse(repo.base(), body, "web").unwrap();
        chart_index::select(repo.base(), "web", &versions, &wanted).unwrap()
    };

    let t = Instant::now();
    let IndexFetch::Fetched { body, validators } = repo.index(None).unwrap() else {
        panic!("the first poll fetches the index");
    };
    let chosen = choose(&body);
    let first = t.elapsed();
    assert_eq!(chosen.version, "1.9.99", "the highest of the range");

    let (mut unchanged, mut without_validators) = (Vec::new(), Vec::new());
    for _ in 0..polls {
        let t = Instant::now();
        assert_eq!(
            repo.index(Some(&validators)).unwrap(),
            IndexFetch::NotModified,
            "an unchanged index is not sent again"
        );
        unchanged.push(t.elapsed());
    }
    let answered = server.requests();
    assert_eq!(
        answered.len(),
        1 + polls,
        "one request per poll: {answered:?}"
    );
    assert!(
        answered[1..]
            .iter()
            .all(|(path, status)| path == "/index.yaml" && *status == 304),
        "{answered:?}"
    );
    for _ in 0..polls {
        let t = Instant::now();
        let IndexFetch::Fetched { body, .. } = repo.index(None).unwrap() else {
            panic!("without validators the index is sent");
        };
        choose(&body);
        without_validators.push(t.elapsed());
    }
    let (u, w) = (median(unchanged), median(without_validators));
    println!(
        "\nRe-polling an unchanged index of 1,000 versions ({} KiB), median of {polls} (ms):\n",
        body.len() / 1024
    );
    println!("| poll | time | requests per poll | body |");
    println!("|---|---:|---:|---:|");
    println!(
        "| first (fetch, parse, choose) | {:.2} | 1 | {} KiB |",
        ms(first),
        body.len() / 1024
    );
    println!(
        "| unchanged, with validators (304) | {:.2} | 1 | 0 |",
        ms(u)
    );
    println!(
        "| baseline: fetch and parse again | {:.2} | 1 | {} KiB |",
        ms(w),
        body.len() / 1024
    );
    println!(
        "\nratio unchanged / baseline: {:.3}",
        u.as_secs_f64() / w.as_secs_f64()
    );
}
