//! Owns reading manifest bytes into JSON values: YAML (multi-document) and JSON, with locations.

use super::RenderError;
use crate::model::ObjectRef;
use serde_json::Value;

/// How many bytes of scalars a YAML file may expand to once its aliases are replaced by what
/// they name, by default: far above real manifests (the largest CRDs are a few MiB, and
/// Kubernetes manifests rarely use anchors at all), far below what would hurt the agent.
pub const DEFAULT_YAML_EXPANDED_BYTES: usize = 32 << 20;

/// The documents of one file, empty documents skipped. `.json` files are one JSON document;
/// everything else is YAML.
pub(super) fn documents(file: &str, bytes: &[u8]) -> Result<Vec<Value>, RenderError> {
    documents_within(file, bytes, DEFAULT_YAML_EXPANDED_BYTES)
}

/// [`documents`], with YAML whose aliases would expand beyond `expanded_bytes` of scalars
/// refused before anything is built.
pub(super) fn documents_within(
    file: &str,
    bytes: &[u8],
    expanded_bytes: usize,
) -> Result<Vec<Value>, RenderError> {
    let text = std::str::from_utf8(bytes).map_err(|err| {
        let (line, column) = line_column(bytes, err.valid_up_to());
        RenderError::Parse {
            file: file.to_string(),
            line,
            column,
            message: "not valid UTF-8".to_string(),
        }
    })?;
    if file.to_ascii_lowercase().ends_with(".json") {
        // Editors on Windows write a byte order mark; serde_json rejects it, YAML skips it.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let value: Value = serde_json::from_str(text).map_err(|err| RenderError::Parse {
            file: file.to_string(),
            line: err.line() as u64,
            column: err.column() as u64,
            message: err.to_string(),
        })?;
        return Ok(vec![value]);
    }
    check_expansion(file, text, expanded_bytes)?;
    // Kubernetes reads YAML 1.1 (sigs.k8s.io/yaml on go-yaml): `0644` is octal 420, which
    // matters for `defaultMode`. The budgets stay generous for real manifests (CRDs are large)
    // while bounding alias bombs.
    let options = serde_saphyr::options! {
        legacy_octal_numbers: true,
        budget: serde_saphyr::budget! {
            max_documents: 10_000,
            max_depth: 128,
            max_aliases: 10_000,
        },
        with_snippet: false,
    };
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|err| {
            let location = err.location();
            let message = err.without_snippet().to_string();
            RenderError::Parse {
                file: file.to_string(),
                line: location.map_or(0, |l| l.line()),
                column: location.map_or(0, |l| l.column()),
                message: match message.rfind(" at line ") {
                    Some(at) => message[..at].to_string(),
                    None => message,
                },
            }
        })?;
    Ok(docs.into_iter().filter(|doc| !doc.is_null()).collect())
}

/// Refuses YAML whose scalars, with every alias replaced by what it names, exceed `limit`
/// bytes: one streaming pass over the parser's events that sizes each anchored node once, so
/// the check costs what reading the file costs, whatever the expansion. Syntax errors are left
/// to the real parse, which reports them with its own message.
fn check_expansion(file: &str, text: &str, limit: usize) -> Result<(), RenderError> {
    use serde_saphyr::granit_parser::{Event, Parser};
    // Without an alias (`*`) nothing expands, and the scalars are no longer than the text: most
    // manifests need no second pass.
    if text.len() <= limit && !text.contains('*') {
        return Ok(());
    }
    // Each open collection: its anchor (0: none) and the bytes of what it holds so far.
    let mut open: Vec<(usize, usize)> = Vec::new();
    let mut anchored: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    let mut total: usize = 0;
    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else {
            return Ok(());
        };
        // A node's size (collections count one byte, so empty ones are not free) and its anchor.
        let (size, anchor) = match event {
            Event::Scalar(value, _, anchor, _) => (value.len().max(1), anchor),
            Event::Alias(id) => (anchored.get(&id).copied().unwrap_or(0), 0),
            Event::SequenceStart(_, anchor, _) | Event::MappingStart(_, anchor, _) => {
                open.push((anchor, 1));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match open.pop() {
                Some((anchor, size)) => (size, anchor),
                None => continue,
            },
            _ => continue,
        };
        if anchor != 0 {
            anchored.insert(anchor, size);
        }
        // Only the outermost node adds to the file's total; a nested one adds to its parent.
        match open.last_mut() {
            Some((_, parent)) => *parent = parent.saturating_add(size),
            None => total = total.saturating_add(size),
        }
        let pending: usize = open
            .iter()
            .map(|(_, s)| *s)
            .fold(total, usize::saturating_add);
        if pending > limit {
            return Err(RenderError::Parse {
                file: file.to_string(),
                line: span.start.line() as u64,
                column: span.start.col() as u64 + 1,
                message: format!(
                    "this YAML expands to more than {limit} bytes once its aliases are \
                     replaced (limits.yaml_expanded_bytes)"
                ),
            });
        }
    }
    Ok(())
}

fn line_column(bytes: &[u8], offset: usize) -> (u64, u64) {
    let before = &bytes[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let column = (offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)) as u64;
    (line, column + 1)
}

/// `kind: List` (and `*List`) documents, as `kubectl get -o yaml` writes them, become their
/// items; everything else is itself.
pub(super) fn flatten_list(value: Value) -> Vec<Value> {
    let is_list = value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|kind| kind.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array)
        && value.get("metadata").and_then(|m| m.get("name")).is_none();
    if !is_list {
        return vec![value];
    }
    match value {
        Value::Object(mut map) => match map.remove("items") {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The object's identity, or why it is not a Kubernetes object.
pub(super) fn object_ref(value: &Value) -> Result<ObjectRef, String> {
    let Value::Object(map) = value else {
        return Err(format!("expected a mapping, found {}", kind_of(value)));
    };
    let text = |v: Option<&Value>, what: &str| -> Result<String, String> {
        match v {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) | None | Some(Value::Null) => Err(format!("missing {what}")),
            Some(other) => Err(format!("{what} must be a string, found {}", kind_of(other))),
        }
    };
    let api_version = text(map.get("apiVersion"), "apiVersion")?;
    let kind = text(map.get("kind"), "kind")?;
    let metadata = match map.get("metadata") {
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(format!(
                "metadata must be a mapping, found {}",
                kind_of(other)
            ));
        }
        None => return Err("missing metadata.name".to_string()),
    };
    if metadata.contains_key("generateName") && !metadata.contains_key("name") {
        return Err(
            "metadata.generateName is not supported: declarative objects need metadata.name"
                .to_string(),
        );
    }
    let name = text(metadata.get("name"), "metadata.name")?;
    let namespace = match metadata.get("namespace") {
        None | Some(Value::Null) => None,
        Some(Value::String(ns)) if ns.is_empty() => None,
        Some(v) => Some(text(Some(v), "metadata.namespace")?),
    };
    if api_version.matches('/').count() > 1 {
        return Err(format!("invalid apiVersion {api_version:?}"));
    }
    Ok(ObjectRef::from_api_version(
        &api_version,
        &kind,
        namespace.as_deref(),
        &name,
    ))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_is_multi_document_and_skips_empty_documents() {
        let docs = documents("a.yaml", b"---\na: 1\n---\n---\n# c\n---\nb: 2\n").unwrap();
        assert_eq!(docs, vec![json!({"a": 1}), json!({"b": 2})]);
    }

    #[test]
    fn windows_line_endings_and_a_byte_order_mark_are_accepted() {
        let docs = documents("a.yaml", b"\xef\xbb\xbfa: 1\r\nb: two\r\n---\r\nc: 3\r\n").unwrap();
        assert_eq!(docs, vec![json!({"a": 1, "b": "two"}), json!({"c": 3})]);
        let docs = documents("a.json", b"\xef\xbb\xbf{\"a\": 1}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(docs, vec![json!({"a": 1})]);
    }

    #[test]
    fn yaml_follows_kubernetes_yaml_1_1_octal() {
        let docs = documents("a.yaml", b"mode: 0644\nport: 8080\nflag: yes\n").unwrap();
        assert_eq!(docs[0], json!({"mode": 420, "port": 8080, "flag": true}));
    }

    #[test]
    fn yaml_errors_carry_the_line() {
        let err = documents("dir/a.yaml", b"a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        match err {
            RenderError::Parse { file, line, .. } => {
                assert_eq!(file, "dir/a.yaml");
                assert!((2..=4).contains(&line), "{line}");
            }
            other => panic!("{other:?}"),
        }
        let err = documents("a.yaml", b"a: 1\na: 2\n").unwrap_err();
        assert!(matches!(err, RenderError::Parse { line: 2, .. }), "{err}");
    }

    #[test]
    fn json_errors_carry_the_line() {
        let err = documents("x.json", b"{\n  \"a\": 1,\n  oops\n}").unwrap_err();
        assert!(matches!(err, RenderError::Parse { line: 3, .. }), "{err}");
        assert_eq!(
            documents("x.JSON", b"{\"a\": [1]}").unwrap(),
            vec![json!({"a": [1]})]
        );
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let err = documents("a.yaml", b"a: 1\nb: \xff\n").unwrap_err();
        assert!(
            matches!(
                err,
                RenderError::Parse {
                    line: 2,
                    column: 4,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn alias_bombs_hit_the_budget() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{prev}]\n"));
        }
        let started = std::time::Instant::now();
        let err = documents("bomb.yaml", text.as_bytes()).unwrap_err();
        assert!(matches!(err, RenderError::Parse { .. }), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    /// Issue 18, item 3: aliases were budgeted by count only, so a few thousand aliases of one
    /// large anchored scalar expanded to hundreds of MiB in memory.
    #[test]
    fn an_alias_expansion_over_the_byte_budget_is_refused_before_it_is_built() {
        let big = "x".repeat(64 << 10);
        let mut text = format!("big: &big {big}\nrefs:\n");
        for _ in 0..2_000 {
            text.push_str("  - *big\n");
        }
        let err = documents_within("bomb.yaml", text.as_bytes(), 32 << 20).unwrap_err();
        let RenderError::Parse { message, line, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(
            message.contains("expands to more than 33554432 bytes"),
            "{message}"
        );
        assert!(*line > 2, "{err:?}");
        // The same anchors within the budget parse as before.
        let small = "a: &a {k: v}\nb: *a\nc: *a\n";
        let docs = documents_within("ok.yaml", small.as_bytes(), 64).unwrap();
        assert_eq!(
            docs,
            vec![json!({"a": {"k": "v"}, "b": {"k": "v"}, "c": {"k": "v"}})]
        );
        let err = documents_within("ok.yaml", small.as_bytes(), 8).unwrap_err();
        assert!(
            err.to_string().contains("expands to more than 8 bytes"),
            "{err}"
        );
        // No alias, but more scalar bytes than the bound: refused all the same.
        let plain = documents_within("plain.yaml", b"a: 123456789\n", 8).unwrap_err();
        assert!(
            plain.to_string().contains("expands to more than 8 bytes"),
            "{plain}"
        );
    }

    #[test]
    fn lists_are_flattened() {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [{"a": 1}, {"b": 2}]});
        assert_eq!(flatten_list(list), vec![json!({"a": 1}), json!({"b": 2})]);
        let typed = json!({"kind": "ConfigMapList", "items": [{"a": 1}]});
        assert_eq!(flatten_list(typed), vec![json!({"a": 1})]);
        // A named object whose kind happens to end in "List" is an object, not a list.
        let named = json!({"kind": "AccessList", "metadata": {"name": "x"}, "items": []});
        assert_eq!(flatten_list(named.clone()), vec![named]);
    }

    #[test]
    fn object_refs_and_the_reasons_objects_are_rejected() {
        let ok = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "web", "namespace": "shop"}});
        assert_eq!(
            object_ref(&ok).unwrap(),
            ObjectRef::from_api_version("apps/v1", "Deployment", Some("shop"), "web")
        );
        let no_ns = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        assert_eq!(object_ref(&no_ns).unwrap().namespace, None);
        for (value, reason) in [
            (json!([1]), "expected a mapping"),
            (
                json!({"kind": "X", "metadata": {"name": "a"}}),
                "missing apiVersion",
            ),
            (
                json!({"apiVersion": "v1", "metadata": {"name": "a"}}),
                "missing kind",
            ),
            (
                json!({"apiVersion": "v1", "kind": "X"}),
                "missing metadata.name",
            ),
            (
                json!({"apiVersion": "v1", "kind": "X", "metadata": {}}),
                "missing metadata.name",
            ),
            (
                json!({"apiVersion": "v1", "kind": "X", "metadata": []}),
                "metadata must be a mapping",
            ),
            (
                json!({"apiVersion": 1, "kind": "X", "metadata": {"name": "a"}}),
                "apiVersion must be a string",
            ),
            (
                json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": ""}}),
                "missing metadata.name",
            ),
            (
                json!({"apiVersion": "v1", "kind": "X", "metadata": {"generateName": "a-"}}),
                "generateName",
            ),
            (
                json!({"apiVersion": "a/b/v1", "kind": "X", "metadata": {"name": "a"}}),
                "invalid apiVersion",
            ),
        ] {
            let err = object_ref(&value).unwrap_err();
            assert!(err.contains(reason), "{value}: {err}");
        }
    }
}
