//! Owns rendering a Helm chart: writing the chart (the App's files) and its values to a private
//! temporary directory, running `helm template` under a timeout with no network, and turning
//! its output into a rendered set — hooks set aside, every object marked with what identifies
//! the render (chart, chart digest, values digest, and each values layer's source and digest).
//!
//! There is no Rust Helm, so this shells out as Argo CD does. Helm gets a cleared environment
//! whose cache, config and data homes are inside the temporary directory (no repositories, no
//! registry logins, no plugins of the machine's), proxies pointing at a closed port, and no
//! command that fetches (`dependency update`, `--repo`): dependencies are in the chart's
//! `charts/`, vendored in Git or placed there before the render by `source::chart_deps`. Values layers are merged by Helm in the order given (`-f` in order), and
//! are never kept: only their keyed digest is, so a values Secret cannot be read from the log.

use super::{Origin, RenderError, RenderOptions, RenderedSet, SecretKey, SourceFile, parse};
use crate::model::ObjectRef;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The annotation Helm marks hooks with; such objects are run by Helm around an install, never
/// kept as part of the release.
pub const HOOK_ANNOTATION: &str = "helm.sh/hook";

/// Annotations reckon writes on every object of a chart's render, so the recorded set says
/// which chart and values made it.
pub const CHART_ANNOTATION: &str = "reckon.dev/helm-chart";
pub const CHART_DIGEST_ANNOTATION: &str = "reckon.dev/helm-chart-digest";
pub const VALUES_DIGEST_ANNOTATION: &str = "reckon.dev/helm-values-digest";
/// Each values layer in merge order, its source and its own keyed digest (a JSON list of
/// [`LayerDigest`]): what lets `blame` name the layer a values change came from.
pub const VALUES_LAYERS_ANNOTATION: &str = "reckon.dev/helm-values-layers";

/// Purpose of the key the values digest is taken under (see [`SecretKey::keyed_hash`]).
const VALUES_DIGEST_PURPOSE: &str = "reckon helm values digest v1";
/// Purpose of the key each layer's digest is taken under: another purpose than the whole
/// digest's, so neither can stand for the other.
const LAYER_DIGEST_PURPOSE: &str = "reckon helm values layer digest v1";

/// Where one layer of values came from (in messages and in the values digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValuesSource {
    /// A file of the App's source, App-relative.
    File(String),
    /// The App's inline `values`.
    Inline,
    ConfigMap {
        namespace: String,
        name: String,
        key: String,
    },
    Secret {
        namespace: String,
        name: String,
        key: String,
    },
}

impl std::fmt::Display for ValuesSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValuesSource::File(path) => write!(f, "file {path}"),
            ValuesSource::Inline => f.write_str("inline values"),
            ValuesSource::ConfigMap {
                namespace,
                name,
                key,
            } => write!(f, "ConfigMap {namespace}/{name} key {key}"),
            ValuesSource::Secret {
                namespace,
                name,
                key,
            } => write!(f, "Secret {namespace}/{name} key {key}"),
        }
    }
}

/// One values document, as YAML bytes. Not `Debug`: a Secret's values are in it.
#[derive(Clone, PartialEq)]
pub struct ValuesLayer {
    pub source: ValuesSource,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for ValuesLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ValuesLayer({}, {} bytes)",
            self.source,
            self.bytes.len()
        )
    }
}

/// Settings of one chart render.
#[derive(Debug, Clone)]
pub struct HelmOptions {
    /// `.Release.Name`: the App's name unless configured.
    pub release: String,
    /// `.Release.Namespace`: the App's target namespace.
    pub namespace: String,
    /// `.Capabilities.KubeVersion`, from the target cluster (`v1.37.2`).
    pub kube_version: String,
    /// `.Capabilities.APIVersions`, from the target cluster's discovery (`apps/v1`,
    /// `apps/v1/Deployment`, ...).
    pub api_versions: Vec<String>,
    /// Files of the App's source merged first, in order (App-relative paths).
    pub values_files: Vec<String>,
    /// Layers merged after the files, in order (the cluster's, then the App's inline values).
    pub values: Vec<ValuesLayer>,
    pub timeout: Duration,
}

/// What identifies a chart's render besides the Git commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartIdentity {
    pub name: String,
    pub version: String,
    /// `sha256:` over the chart's files (paths and bytes, in path order).
    pub chart_digest: String,
    /// `hmac-sha256:` over the values layers in merge order, under the agent's key.
    pub values_digest: String,
    /// Each layer's source and keyed digest, in merge order.
    pub layers: Vec<LayerDigest>,
}

/// One values layer as recorded: where it came from and a keyed digest of it (never its bytes:
/// a Secret's values must not be readable, or guessable offline, from the record).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerDigest {
    /// As [`ValuesSource`] displays it: `file values-prod.yaml`, `inline values`,
    /// `ConfigMap team-a/web-values key values.yaml`, `Secret shop/db key values.yaml`.
    pub source: String,
    /// `hmac-sha256:` over the source and the layer's bytes, under the agent's key.
    pub digest: String,
}

impl LayerDigest {
    /// Whether the layer is a file of the App's source: it changes only with a new revision,
    /// so a change of it is owed to that revision's commit.
    pub fn is_file(&self) -> bool {
        is_file_source(&self.source)
    }
}

/// Whether a layer's source, as [`ValuesSource`] displays it, is a file of the App's source.
pub fn is_file_source(source: &str) -> bool {
    source.starts_with("file ")
}

/// A hook the chart defines, rendered but not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedHook {
    pub object: ObjectRef,
    /// The annotation's value, e.g. `pre-install,pre-upgrade`.
    pub hook: String,
    /// The template it came from, chart-relative.
    pub template: String,
}

impl SkippedHook {
    /// The note recorded for it.
    pub fn reason(&self) -> String {
        format!(
            "Helm hook {} from {}: not applied (reckon does not run Helm hooks)",
            self.hook, self.template
        )
    }
}

/// A chart rendered: the set to apply, the hooks left out, and what identifies it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartRender {
    pub set: RenderedSet,
    pub hooks: Vec<SkippedHook>,
    pub identity: ChartIdentity,
}

/// Whether the App's files are a chart (a `Chart.yaml` at the App's path).
pub fn is_chart(files: &[SourceFile]) -> bool {
    files.iter().any(|(path, _)| path == "Chart.yaml")
}

/// Renders the chart whose directory is the App's path (`files`, App-relative).
pub fn render_chart(
    files: &[SourceFile],
    options: &RenderOptions,
    helm: &HelmOptions,
) -> Result<ChartRender, RenderError> {
    for (path, _) in files {
        super::check_path(path)?;
    }
    let (name, version) = chart_metadata(files)?;
    let chart = format!("{name} {version}");
    let mut layers: Vec<ValuesLayer> = Vec::new();
    for path in &helm.values_files {
        let bytes = files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .ok_or_else(|| RenderError::Helm {
                chart: chart.clone(),
                template: Some(path.clone()),
                line: None,
                message: "values file not found in the App's source".to_string(),
            })?;
        layers.push(ValuesLayer {
            source: ValuesSource::File(path.clone()),
            bytes,
        });
    }
    layers.extend(helm.values.iter().cloned());
    let identity = ChartIdentity {
        name: name.clone(),
        version: version.clone(),
        chart_digest: chart_digest(files),
        values_digest: values_digest(&layers, &options.secret_key),
        layers: layer_digests(&layers, &options.secret_key),
    };

    let temp = tempfile::tempdir().map_err(|source| RenderError::WriteTemp {
        path: std::env::temp_dir(),
        source,
    })?;
    let chart_dir = temp.path().join("chart");
    for (path, bytes) in files {
        write(&chart_dir, path, bytes)?;
    }
    let values_dir = temp.path().join("values");
    let mut value_paths: Vec<String> = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let path = values_dir.join(format!("{i}.yaml"));
        write(&values_dir, &format!("{i}.yaml"), &layer.bytes)?;
        value_paths.push(path.display().to_string());
    }
    let home = temp.path().join("home");
    std::fs::create_dir_all(&home).map_err(|source| RenderError::WriteTemp {
        path: home.clone(),
        source,
    })?;
    let program = find_on_path("helm").ok_or_else(|| RenderError::Helm {
        chart: chart.clone(),
        template: None,
        line: None,
        message: "`helm` is not on PATH; install Helm 4 (https://helm.sh/docs/intro/install/)"
            .to_string(),
    })?;
    let args = template_args(helm, &value_paths);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cache = home.join("cache");
    let config = home.join("config");
    let data = home.join("data");
    let env: [(&str, &Path); 3] = [
        ("HELM_CACHE_HOME", &cache),
        ("HELM_CONFIG_HOME", &config),
        ("HELM_DATA_HOME", &data),
    ];
    let output = super::kustomize::run(&program, &args, &chart_dir, &home, &env, helm.timeout)
        .map_err(|stderr| {
            let failure = parse_failure(&stderr, &name);
            RenderError::Helm {
                chart: chart.clone(),
                template: failure.template,
                line: failure.line,
                message: failure.message,
            }
        })?;

    // The same for every object: serialized once.
    let layers = layers_annotation(&identity);
    let mut documents = Vec::new();
    let mut hooks = Vec::new();
    for (source, text) in split_output(&output, &name) {
        let docs = parse::documents(&source, text.as_bytes())?;
        for (document, mut value) in docs.into_iter().enumerate() {
            if let Some(hook) = hook_of(&value) {
                let object =
                    parse::object_ref(&value).map_err(|reason| RenderError::NotAnObject {
                        file: source.clone(),
                        document,
                        reason,
                    })?;
                hooks.push(SkippedHook {
                    object,
                    hook,
                    template: source.clone(),
                });
                continue;
            }
            annotate(&mut value, &identity, &layers);
            documents.push((
                Origin {
                    file: source.clone(),
                    document,
                },
                value,
            ));
        }
    }
    let set = super::objects_from(documents, options)?;
    Ok(ChartRender {
        set,
        hooks,
        identity,
    })
}

/// `helm template`'s arguments before the chart directory.
fn template_args(helm: &HelmOptions, value_paths: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "template".into(),
        helm.release.clone(),
        "--namespace".into(),
        helm.namespace.clone(),
        "--kube-version".into(),
        helm.kube_version.clone(),
        // CRDs in the chart's crds/ are part of what the App applies (CRDs first, as always).
        "--include-crds".into(),
    ];
    if !helm.api_versions.is_empty() {
        args.push("--api-versions".into());
        args.push(helm.api_versions.join(","));
    }
    for path in value_paths {
        args.push("--values".into());
        args.push(path.clone());
    }
    args
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

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

/// The chart's name and version from its `Chart.yaml`.
fn chart_metadata(files: &[SourceFile]) -> Result<(String, String), RenderError> {
    let bytes = files
        .iter()
        .find(|(p, _)| p == "Chart.yaml")
        .map(|(_, b)| b.as_slice())
        .unwrap_or_default();
    let doc = parse::documents("Chart.yaml", bytes)?
        .into_iter()
        .next()
        .unwrap_or(Value::Null);
    let field = |key: &str| -> Result<String, RenderError> {
        match doc.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            // YAML reads `version: 1.0` as a number; Helm wants a string but say what it is.
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(RenderError::Helm {
                chart: "Chart.yaml".into(),
                template: Some("Chart.yaml".into()),
                line: None,
                message: format!("Chart.yaml has no {key}"),
            }),
        }
    };
    Ok((field("name")?, field("version")?))
}

/// `sha256:` over every file of the chart, path and bytes, in path order.
pub fn chart_digest(files: &[SourceFile]) -> String {
    let mut sorted: Vec<&SourceFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hash = Sha256::new();
    for (path, bytes) in sorted {
        hash.update((path.len() as u64).to_be_bytes());
        hash.update(path.as_bytes());
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    }
    format!("sha256:{}", hex::encode(hash.finalize()))
}

/// The keyed digest of the values layers in merge order: equal for equal values from equal
/// sources, and no help to anyone guessing a Secret's values offline without the agent's key.
pub fn values_digest(layers: &[ValuesLayer], key: &SecretKey) -> String {
    let mut message = Vec::new();
    for layer in layers {
        let source = layer.source.to_string();
        message.extend_from_slice(&(source.len() as u64).to_be_bytes());
        message.extend_from_slice(source.as_bytes());
        message.extend_from_slice(&(layer.bytes.len() as u64).to_be_bytes());
        message.extend_from_slice(&layer.bytes);
    }
    key.keyed_hash(VALUES_DIGEST_PURPOSE, &message)
}

/// Each layer's source and keyed digest, in merge order. The source is in the keyed message so
/// that two layers with equal bytes (a Secret's and a ConfigMap's) do not show it by equal
/// digests.
pub fn layer_digests(layers: &[ValuesLayer], key: &SecretKey) -> Vec<LayerDigest> {
    layers
        .iter()
        .map(|layer| {
            let source = layer.source.to_string();
            let mut message = Vec::with_capacity(16 + source.len() + layer.bytes.len());
            message.extend_from_slice(&(source.len() as u64).to_be_bytes());
            message.extend_from_slice(source.as_bytes());
            message.extend_from_slice(&(layer.bytes.len() as u64).to_be_bytes());
            message.extend_from_slice(&layer.bytes);
            LayerDigest {
                digest: key.keyed_hash(LAYER_DIGEST_PURPOSE, &message),
                source,
            }
        })
        .collect()
}

/// The values layers recorded on a rendered object ([`VALUES_LAYERS_ANNOTATION`]); `None` when
/// it has none (not a chart's render, or rendered before reckon recorded layers) or it does
/// not read.
pub fn recorded_layers(manifest: &Value) -> Option<Vec<LayerDigest>> {
    let text = manifest
        .pointer("/metadata/annotations")?
        .get(VALUES_LAYERS_ANNOTATION)?
        .as_str()?;
    serde_json::from_str(text).ok()
}

/// The value of an object's `helm.sh/hook` annotation, if it is a hook.
fn hook_of(value: &Value) -> Option<String> {
    value
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(HOOK_ANNOTATION))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The value of [`VALUES_LAYERS_ANNOTATION`] for a render.
fn layers_annotation(identity: &ChartIdentity) -> String {
    serde_json::to_string(&identity.layers).expect("strings serialize")
}

/// Marks a rendered object with what made it; `layers` is [`layers_annotation`] of `identity`.
fn annotate(value: &mut Value, identity: &ChartIdentity, layers: &str) {
    let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    if !annotations.is_object() {
        *annotations = Value::Object(Default::default());
    }
    let map = annotations.as_object_mut().expect("an object");
    map.insert(
        CHART_ANNOTATION.into(),
        Value::String(format!("{}-{}", identity.name, identity.version)),
    );
    map.insert(
        CHART_DIGEST_ANNOTATION.into(),
        Value::String(identity.chart_digest.clone()),
    );
    map.insert(
        VALUES_DIGEST_ANNOTATION.into(),
        Value::String(identity.values_digest.clone()),
    );
    map.insert(
        VALUES_LAYERS_ANNOTATION.into(),
        Value::String(layers.to_string()),
    );
}

/// `helm template`'s output cut at its `# Source: <chart>/<template>` headers: each piece with
/// its template (chart-relative) so errors and hooks name it.
fn split_output(output: &str, chart: &str) -> Vec<(String, String)> {
    let mut pieces: Vec<(String, String)> = Vec::new();
    let mut source = String::from("helm template");
    let mut text = String::new();
    for line in output.lines() {
        if let Some(path) = line.strip_prefix("# Source: ") {
            if !is_blank(&text) {
                pieces.push((source.clone(), std::mem::take(&mut text)));
            }
            text.clear();
            source = chart_relative(path.trim(), chart).to_string();
            continue;
        }
        text.push_str(line);
        text.push('\n');
    }
    if !is_blank(&text) {
        pieces.push((source, text));
    }
    pieces
}

/// Nothing but document separators and blank lines.
fn is_blank(text: &str) -> bool {
    text.lines().all(|l| matches!(l.trim(), "" | "---"))
}

/// `web/templates/x.yaml` as `templates/x.yaml` (Helm names templates under the chart's name).
fn chart_relative<'a>(path: &'a str, chart: &str) -> &'a str {
    path.strip_prefix(chart)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(path)
}

/// A failed `helm template` as the chart's template and line, where Helm's message names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelmFailure {
    pub template: Option<String>,
    pub line: Option<u64>,
    pub message: String,
}

/// Reads Helm's stderr (`exit status: N: Error: ...`, as [`super::kustomize::run`] reports it).
/// Helm 4 locates errors in these shapes (the first three from `required`/`fail`, template
/// syntax and output that is not YAML; the fourth from any other execution error; the last
/// from `values.schema.json`):
/// - `execution error at (web/templates/x.yaml:6:10): image is required`
/// - `parse error at (web/templates/x.yaml:3): function "nope" not defined`
/// - `YAML parse error on web/templates/x.yaml: ... yaml: line 4: ...`
/// - `web/templates/x.yaml:1:13` then, indented, `executing ... at <...>:` and the cause
/// - `values don't meet the specifications of the schema(s) ...` then `- at '/x': ...` lines
///
/// Helm 3's `template: web/templates/x.yaml:7:20: executing ...` is read too.
pub fn parse_failure(stderr: &str, chart: &str) -> HelmFailure {
    let text = match stderr.find("Error: ") {
        Some(at) => &stderr[at + "Error: ".len()..],
        None => stderr,
    };
    // Helm's advice to the command-line user means nothing to a reckon user.
    let text = match text.find("Use --debug flag") {
        Some(at) => &text[..at],
        None => text,
    };
    let text = text.trim();
    let mut failure = HelmFailure {
        template: None,
        line: None,
        message: text.to_string(),
    };
    let mut locate = |location: &str| {
        // `chart/templates/x.yaml:6:10` or `chart/templates/x.yaml:3`
        let mut parts = location.trim().split(':');
        if let Some(path) = parts.next() {
            failure.template = Some(chart_relative(path, chart).to_string());
            failure.line = parts.next().and_then(|line| line.trim().parse().ok());
        }
    };
    let first_line = text.lines().next().unwrap_or_default().trim();
    if let Some(rest) =
        after(text, "execution error at (").or_else(|| after(text, "parse error at ("))
    {
        if let Some((location, message)) = rest.split_once("):") {
            locate(location);
            failure.message = message.trim().to_string();
        }
    } else if let Some(rest) = after(text, "YAML parse error on ") {
        if let Some((path, message)) = rest.split_once(':') {
            locate(path);
            failure.line = after(message, "line ")
                .and_then(|l| l.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|l| l.parse().ok());
            failure.message = message.trim().to_string();
        }
    } else if let Some(rest) = after(text, "template: ") {
        let mut parts = rest.splitn(4, ':');
        if let (Some(path), Some(line), Some(_column), Some(message)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        {
            locate(&format!("{path}:{line}"));
            failure.message = message.trim().to_string();
        }
    } else if is_location(first_line) {
        locate(first_line);
        // The cause is the last line; the `executing ... at <...>` line before it names the
        // expression, which helps: keep both, on one line.
        let rest: Vec<&str> = text
            .lines()
            .skip(1)
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        failure.message = rest.join(" ");
    } else if text.contains("schema") {
        failure.template = Some("values.schema.json".into());
        let violations: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("- "))
            .collect();
        if !violations.is_empty() {
            failure.message = format!("the values do not match: {}", violations.join("; "));
        }
    }
    failure
}

/// `path:line` or `path:line:column`, a path without spaces.
fn is_location(text: &str) -> bool {
    let mut parts = text.split(':');
    let path = parts.next().unwrap_or_default();
    let numbers: Vec<&str> = parts.collect();
    !path.is_empty()
        && !path.contains(char::is_whitespace)
        && (1..=2).contains(&numbers.len())
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    text.find(marker).map(|at| &text[at + marker.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(source: ValuesSource, text: &str) -> ValuesLayer {
        ValuesLayer {
            source,
            bytes: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_required_value_names_template_line_and_message() {
        // As Helm 4.3 writes it (run through `run`, which prefixes the exit status).
        let stderr = "exit status: 1: Error: execution error at (web/templates/cm.yaml:6:10): \
            image is required\n\nUse --debug flag to render out invalid YAML";
        let f = parse_failure(stderr, "web");
        assert_eq!(f.template.as_deref(), Some("templates/cm.yaml"));
        assert_eq!(f.line, Some(6));
        assert_eq!(f.message, "image is required");
        // Helm 3's shape.
        let stderr = "exit status: 1: Error: template: web/templates/deployment.yaml:7:20: \
            executing \"web/templates/deployment.yaml\" at <.Values.x>: boom";
        let f = parse_failure(stderr, "web");
        assert_eq!(f.template.as_deref(), Some("templates/deployment.yaml"));
        assert_eq!(f.line, Some(7));
    }

    #[test]
    fn another_execution_error_names_template_line_and_cause() {
        let stderr = "exit status: 1: Error: web/templates/bad.yaml:1:13\n  executing \
            \"web/templates/bad.yaml\" at <.Values.a.b.c>:\n    nil pointer evaluating \
            interface {}.b\n\nUse --debug flag to render out invalid YAML";
        let f = parse_failure(stderr, "web");
        assert_eq!(f.template.as_deref(), Some("templates/bad.yaml"));
        assert_eq!(f.line, Some(1));
        assert!(
            f.message.ends_with("nil pointer evaluating interface {}.b"),
            "{}",
            f.message
        );
        assert!(!f.message.contains("--debug"), "{}", f.message);
    }

    #[test]
    fn a_template_syntax_error_names_template_and_line() {
        let stderr = "exit status: 1: Error: parse error at (web/templates/cm.yaml:3): \
            function \"nope\" not defined";
        let f = parse_failure(stderr, "web");
        assert_eq!(f.template.as_deref(), Some("templates/cm.yaml"));
        assert_eq!(f.line, Some(3));
        assert_eq!(f.message, "function \"nope\" not defined");
    }

    #[test]
    fn output_that_is_not_yaml_names_the_template() {
        let stderr = "exit status: 1: Error: YAML parse error on web/templates/cm.yaml: error \
            converting YAML to JSON: yaml: line 4: mapping values are not allowed in this \
            context\n\nUse --debug flag to render out invalid YAML";
        let f = parse_failure(stderr, "web");
        assert_eq!(f.template.as_deref(), Some("templates/cm.yaml"));
        assert_eq!(f.line, Some(4));
    }

    #[test]
    fn a_schema_violation_names_the_schema_and_each_violation() {
        let stderr = "exit status: 1: Error: values don't meet the specifications of the \
            schema(s) in the following chart(s):\nweb:\n- at '/replicaCount': got string, want integer\n";
        let f = parse_failure(stderr, "web");
        assert_eq!(f.template.as_deref(), Some("values.schema.json"));
        assert_eq!(f.line, None);
        assert!(
            f.message
                .contains("'/replicaCount': got string, want integer"),
            "{}",
            f.message
        );
    }

    #[test]
    fn an_unknown_message_is_kept_whole() {
        let f = parse_failure("exit status: 1: Error: something else broke", "web");
        assert_eq!(f.template, None);
        assert_eq!(f.message, "something else broke");
    }

    #[test]
    fn the_output_is_cut_at_source_headers_and_templates_named_chart_relative() {
        let output = "---\n# Source: web/templates/a.yaml\nkind: A\n---\n# Source: web/charts/db/templates/b.yaml\nkind: B\n";
        let pieces = split_output(output, "web");
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0].0, "templates/a.yaml");
        assert!(pieces[0].1.contains("kind: A") && !pieces[0].1.contains("kind: B"));
        assert_eq!(pieces[1].0, "charts/db/templates/b.yaml");
    }

    #[test]
    fn hooks_are_found_by_their_annotation() {
        let hook =
            serde_json::json!({"metadata": {"annotations": {"helm.sh/hook": "pre-install"}}});
        let plain = serde_json::json!({"metadata": {"annotations": {"x": "y"}}});
        assert_eq!(hook_of(&hook).as_deref(), Some("pre-install"));
        assert_eq!(hook_of(&plain), None);
        assert_eq!(hook_of(&serde_json::json!({"metadata": {}})), None);
    }

    #[test]
    fn values_files_come_first_in_order_then_the_given_layers() {
        let helm = HelmOptions {
            release: "web".into(),
            namespace: "shop".into(),
            kube_version: "v1.37.2".into(),
            api_versions: vec!["v1".into(), "apps/v1/Deployment".into()],
            values_files: vec![],
            values: vec![],
            timeout: Duration::from_secs(1),
        };
        let args = template_args(&helm, &["/t/0.yaml".into(), "/t/1.yaml".into()]);
        let values: Vec<&str> = args
            .windows(2)
            .filter(|w| w[0] == "--values")
            .map(|w| w[1].as_str())
            .collect();
        assert_eq!(values, ["/t/0.yaml", "/t/1.yaml"]);
        assert!(
            args.windows(2)
                .any(|w| w[0] == "--api-versions" && w[1] == "v1,apps/v1/Deployment")
        );
        assert!(
            args.windows(2)
                .any(|w| w[0] == "--kube-version" && w[1] == "v1.37.2")
        );
        assert!(
            args.windows(2)
                .any(|w| w[0] == "--namespace" && w[1] == "shop")
        );
        assert_eq!(&args[..2], ["template", "web"]);
    }

    #[test]
    fn the_values_digest_follows_content_order_and_key_and_hides_the_values() {
        let key = SecretKey::new([1; 32]);
        let a = layer(ValuesSource::File("values.yaml".into()), "replicas: 1\n");
        let b = layer(ValuesSource::Inline, "replicas: 2\n");
        let secret = layer(
            ValuesSource::Secret {
                namespace: "shop".into(),
                name: "db".into(),
                key: "values.yaml".into(),
            },
            "password: hunter2\n",
        );
        let d = values_digest(&[a.clone(), b.clone(), secret.clone()], &key);
        assert!(d.starts_with("hmac-sha256:"), "{d}");
        assert!(!d.contains("hunter2"));
        assert_eq!(
            d,
            values_digest(&[a.clone(), b.clone(), secret.clone()], &key)
        );
        assert_ne!(
            d,
            values_digest(&[b.clone(), a.clone(), secret.clone()], &key),
            "order"
        );
        assert_ne!(
            d,
            values_digest(&[a.clone(), b.clone()], &key),
            "a layer less"
        );
        assert_ne!(
            d,
            values_digest(&[a, b, secret], &SecretKey::new([2; 32])),
            "another key"
        );
        assert!(
            !format!("{:?}", layer(ValuesSource::Inline, "password: hunter2")).contains("hunter2")
        );
    }

    #[test]
    fn each_layer_has_its_own_digest_naming_its_source_and_hiding_its_values() {
        let key = SecretKey::new([1; 32]);
        let secret = |password: &str| {
            layer(
                ValuesSource::Secret {
                    namespace: "shop".into(),
                    name: "db".into(),
                    key: "values.yaml".into(),
                },
                &format!("password: {password}\n"),
            )
        };
        let config = layer(
            ValuesSource::ConfigMap {
                namespace: "shop".into(),
                name: "web".into(),
                key: "values.yaml".into(),
            },
            "password: hunter2\n",
        );
        let inline = layer(ValuesSource::Inline, "replicas: 2\n");
        let before = layer_digests(&[config.clone(), secret("hunter2"), inline.clone()], &key);
        let after = layer_digests(&[config, secret("hunter3"), inline], &key);
        let sources: Vec<&str> = before.iter().map(|l| l.source.as_str()).collect();
        assert_eq!(
            sources,
            [
                "ConfigMap shop/web key values.yaml",
                "Secret shop/db key values.yaml",
                "inline values"
            ]
        );
        assert_eq!(before[0], after[0]);
        assert_ne!(before[1], after[1], "the Secret's layer changed");
        assert_eq!(before[2], after[2]);
        assert_ne!(
            before[0].digest, before[1].digest,
            "equal bytes from two sources do not show as equal digests"
        );
        assert_ne!(
            before[1].digest,
            layer_digests(&[secret("hunter2")], &SecretKey::new([2; 32]))[0].digest,
            "another key"
        );
        let text = serde_json::to_string(&before).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(before.iter().all(|l| l.digest.starts_with("hmac-sha256:")));
        assert!(!before[2].is_file());
        assert!(
            layer_digests(&[layer(ValuesSource::File("v.yaml".into()), "a: 1")], &key)[0].is_file()
        );

        // Written on every rendered object, read back by blame.
        let identity = ChartIdentity {
            name: "web".into(),
            version: "1.0.0".into(),
            chart_digest: "sha256:00".into(),
            values_digest: "hmac-sha256:00".into(),
            layers: before.clone(),
        };
        let mut object = serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "web"}});
        annotate(&mut object, &identity, &layers_annotation(&identity));
        assert_eq!(recorded_layers(&object), Some(before));
        assert_eq!(recorded_layers(&serde_json::json!({"metadata": {}})), None);
    }

    #[test]
    fn the_chart_digest_depends_on_paths_and_bytes_not_order() {
        let f = |p: &str, b: &str| (p.to_string(), b.as_bytes().to_vec());
        let one = vec![f("Chart.yaml", "name: web"), f("values.yaml", "a: 1")];
        let two = vec![f("values.yaml", "a: 1"), f("Chart.yaml", "name: web")];
        assert_eq!(chart_digest(&one), chart_digest(&two));
        let changed = vec![f("Chart.yaml", "name: web"), f("values.yaml", "a: 2")];
        assert_ne!(chart_digest(&one), chart_digest(&changed));
        assert!(chart_digest(&one).starts_with("sha256:"));
    }
}
