//! Reading multi-document YAML into [`Resource`]s, with errors that name the file,
//! the document, the object, the field and the line.
//!
//! Nothing is half-loaded: [`load_sources`] returns every object or every error.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::kube::ObjectMeta;
use crate::locate::locate;
use crate::resource::{Kind, Origin, Resource, Spec};
use crate::validate::validate_resource;

/// Kinds of Istio and Kubernetes that are real but that meshbox does not implement yet.
const KNOWN_UNSUPPORTED_KINDS: &[&str] = &[
    "AuthorizationPolicy",
    "PeerAuthentication",
    "RequestAuthentication",
    "EnvoyFilter",
    "WorkloadEntry",
    "WorkloadGroup",
    "ProxyConfig",
    "Telemetry",
    "WasmPlugin",
    "Pod",
    "ConfigMap",
    "Secret",
    "ServiceAccount",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Ingress",
    "HTTPRoute",
];

/// One problem found in the input, located as precisely as the input allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The file as the user named it (`-` for standard input).
    pub file: String,
    /// 1-based document index within the file, when the problem is inside one.
    pub document: Option<usize>,
    /// `Kind/name` of the object, when known.
    pub object: Option<String>,
    /// Dotted path of the offending field, e.g. `spec.http[0].route[1].weight`.
    pub field: Option<String>,
    /// 1-based line in the file, when the parser gives one.
    pub line: Option<usize>,
    /// 1-based column, with `line`.
    pub column: Option<usize>,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if let Some(doc) = self.document {
            write!(f, ": document {doc}")?;
        }
        if let Some(obj) = &self.object {
            write!(f, " ({obj})")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one load; nothing from that load was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// How to fill in what the documents leave out.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Namespace for objects that name none (kubectl's context namespace, or `-n`).
    pub namespace: String,
    /// True when the namespace was given explicitly (`-n`): then an object that names
    /// another namespace is an error, as with kubectl.
    pub namespace_explicit: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            namespace: "default".to_string(),
            namespace_explicit: false,
        }
    }
}

/// A named piece of YAML text: a file's contents, or standard input.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Source {
    /// The name used in messages.
    pub name: String,
    /// The YAML text.
    pub text: String,
}

/// Reads the files named by `paths` (files or directories; a directory contributes its
/// `*.yaml`, `*.yml` and `*.json` files in name order, like `kubectl apply -f DIR`).
pub fn read_sources(paths: &[PathBuf]) -> Result<Vec<Source>, LoadErrors> {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let display = path.display().to_string();
        if path.is_dir() {
            match manifest_files_in(path) {
                Ok(files) => {
                    if files.is_empty() {
                        errors.push(file_error(
                            &display,
                            "directory holds no .yaml, .yml or .json file",
                        ));
                    }
                    for file in files {
                        read_one(&file, &mut sources, &mut errors);
                    }
                }
                Err(e) => errors.push(file_error(&display, &format!("cannot read directory: {e}"))),
            }
        } else {
            read_one(path, &mut sources, &mut errors);
        }
    }
    if errors.is_empty() {
        Ok(sources)
    } else {
        Err(LoadErrors(errors))
    }
}

/// The manifest files of a directory, sorted by name.
pub fn manifest_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_manifest = path.is_file()
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            );
        if is_manifest {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_one(path: &Path, sources: &mut Vec<Source>, errors: &mut Vec<LoadError>) {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => sources.push(Source { name, text }),
        Err(e) => errors.push(file_error(&name, &format!("cannot read file: {e}"))),
    }
}

fn file_error(file: &str, message: &str) -> LoadError {
    LoadError {
        file: file.to_string(),
        document: None,
        object: None,
        field: None,
        line: None,
        column: None,
        message: message.to_string(),
    }
}

/// Parses every source; returns all objects, or every error found (and no objects).
pub fn load_sources(sources: &[Source], opts: &LoadOptions) -> Result<Vec<Resource>, LoadErrors> {
    // Every document with where it comes from, in order.
    let documents: Vec<(Origin, &str)> = sources
        .iter()
        .flat_map(|source| {
            split_documents(&source.text)
                .into_iter()
                .enumerate()
                .map(|(index, doc)| {
                    let origin = Origin {
                        file: source.name.clone(),
                        document: index + 1,
                        line: doc.first_line,
                    };
                    (origin, doc.text)
                })
        })
        .collect();
    let (resources, mut errors) = load_documents(documents, opts);
    // The same object twice in one apply is ambiguous; kubectl would apply both in
    // order, silently keeping the last. Say so instead.
    // One pass with an index of first occurrences (a scan per object made loading N
    // objects quadratic: 20k objects took about 20 s).
    let mut first_of: std::collections::HashMap<crate::resource::ObjectKey, usize> =
        std::collections::HashMap::with_capacity(resources.len());
    for (i, a) in resources.iter().enumerate() {
        let first = *first_of.entry(a.key()).or_insert(i);
        if first != i {
            let b = &resources[first];
            errors.push(LoadError {
                file: a.origin.file.clone(),
                document: Some(a.origin.document),
                object: Some(format!("{}/{}", a.kind, a.metadata.name)),
                field: None,
                line: Some(a.origin.line),
                column: None,
                message: format!("the same object is also defined at {}", b.origin),
            });
        }
    }
    if errors.is_empty() {
        Ok(resources)
    } else {
        Err(LoadErrors(errors))
    }
}

/// Documents from this many on are parsed on several threads.
const PARALLEL_DOCUMENTS: usize = 1024;

/// Parses and checks each document on its own: the objects and the errors, each in
/// document order. Many documents (a large apply) are split among up to four
/// threads, in contiguous runs, which changes nothing but the time taken.
fn load_documents(
    documents: Vec<(Origin, &str)>,
    opts: &LoadOptions,
) -> (Vec<Resource>, Vec<LoadError>) {
    // Sized once: a Resource is large, and growing a Vec copies every one.
    let load_run = |run: Vec<(Origin, &str)>| {
        let mut resources = Vec::with_capacity(run.len());
        let mut errors = Vec::new();
        for (origin, text) in run {
            match load_document(text, &origin, opts) {
                Ok(Some(resource)) => resources.push(resource),
                Ok(None) => {}
                Err(mut errs) => errors.append(&mut errs),
            }
        }
        (resources, errors)
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(4);
    if threads < 2 || documents.len() < PARALLEL_DOCUMENTS {
        return load_run(documents);
    }
    let total = documents.len();
    let per_thread = total.div_ceil(threads);
    let mut runs: Vec<Vec<(Origin, &str)>> = Vec::with_capacity(threads);
    let mut rest = documents.into_iter();
    loop {
        let run: Vec<(Origin, &str)> = rest.by_ref().take(per_thread).collect();
        if run.is_empty() {
            break;
        }
        runs.push(run);
    }
    let mut resources = Vec::with_capacity(total);
    let mut errors = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .into_iter()
            .map(|run| scope.spawn(move || load_run(run)))
            .collect();
        for handle in handles {
            match handle.join() {
                Ok((mut part, mut part_errors)) => {
                    resources.append(&mut part);
                    errors.append(&mut part_errors);
                }
                // A panic while loading is a bug: let it surface as it would have
                // without threads.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    (resources, errors)
}

/// Convenience: parse one YAML text.
pub fn load_str(name: &str, text: &str, opts: &LoadOptions) -> Result<Vec<Resource>, LoadErrors> {
    load_sources(
        &[Source {
            name: name.to_string(),
            text: text.to_string(),
        }],
        opts,
    )
}

/// One document of a YAML stream and the line of the file where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentText<'a> {
    /// The document's text, without its `---` marker.
    pub text: &'a str,
    /// 1-based line of the file where the document starts.
    pub first_line: usize,
}

/// Splits a YAML stream at its `---` document markers, keeping each document's first
/// line so that errors point at lines of the whole file. Each document is then parsed
/// by the YAML library on its own.
pub fn split_documents(text: &str) -> Vec<DocumentText<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    for (line_index, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end_matches(['\n', '\r']);
        let is_marker = trimmed == "---"
            || trimmed.starts_with("--- ")
            || trimmed.starts_with("---\t")
            || trimmed == "...";
        if is_marker {
            docs.push(DocumentText {
                text: &text[start..offset],
                first_line: start_line,
            });
            // A `--- value` line starts the next document with content on the marker
            // line; keep it (without the marker) by starting inside the line.
            let after = if trimmed.starts_with("--- ") || trimmed.starts_with("---\t") {
                offset + 4
            } else {
                offset + line.len()
            };
            start = after;
            start_line = if after == offset + line.len() {
                line_index + 2
            } else {
                line_index + 1
            };
        }
        offset += line.len();
    }
    docs.push(DocumentText {
        text: &text[start..],
        first_line: start_line,
    });
    docs
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Document<S> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<S>,
    #[allow(dead_code)]
    #[serde(default)]
    status: Option<Value>,
}

fn load_document(
    text: &str,
    origin: &Origin,
    opts: &LoadOptions,
) -> Result<Option<Resource>, Vec<LoadError>> {
    let error = |object: Option<String>,
                 field: Option<String>,
                 line: Option<usize>,
                 column: Option<usize>,
                 message: String| LoadError {
        file: origin.file.clone(),
        document: Some(origin.document),
        object,
        field,
        line: Some(line.unwrap_or(origin.line)),
        column,
        message,
    };
    let value: serde_norway::Value = match serde_norway::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let (line, column) = location_in_file(&e, origin);
            return Err(vec![error(
                None,
                None,
                line,
                column,
                yaml_message(&e, origin),
            )]);
        }
    };
    let map = match value {
        serde_norway::Value::Null => return Ok(None),
        serde_norway::Value::Mapping(m) => m,
        _ => {
            return Err(vec![error(
                None,
                None,
                None,
                None,
                "a document must be a mapping with apiVersion, kind, metadata and spec".into(),
            )])
        }
    };
    let get_str = |key: &str| map.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let Some(kind_name) = get_str("kind") else {
        return Err(vec![error(
            None,
            Some("kind".into()),
            None,
            None,
            "required field is missing".into(),
        )]);
    };
    let Some(api_version) = get_str("apiVersion") else {
        return Err(vec![error(
            None,
            Some("apiVersion".into()),
            None,
            None,
            "required field is missing".into(),
        )]);
    };
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("")
        .to_string();
    let object = Some(format!("{kind_name}/{name}"));
    let Some(kind) = Kind::from_kind_field(&kind_name) else {
        let message = if KNOWN_UNSUPPORTED_KINDS.contains(&kind_name.as_str()) {
            format!("kind {kind_name} is not supported by meshbox yet")
        } else {
            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            format!(
                "unknown kind {kind_name:?}; meshbox understands {}",
                known.join(", ")
            )
        };
        let (line, column) = locate_in_file(text, "kind", origin);
        return Err(vec![error(
            object,
            Some("kind".into()),
            line,
            column,
            message,
        )]);
    };
    if !kind.api_versions().contains(&api_version.as_str()) {
        let (line, column) = locate_in_file(text, "apiVersion", origin);
        return Err(vec![error(
            object,
            Some("apiVersion".into()),
            line,
            column,
            format!(
                "{kind} is not served at apiVersion {api_version:?}; use one of {}",
                kind.api_versions().join(", ")
            ),
        )]);
    }
    // The document was parsed once into `map`; the typed object is read from it.
    let value = serde_norway::Value::Mapping(map);
    let typed = match kind {
        Kind::Namespace => typed(value, text, origin, Spec::Namespace),
        Kind::Service => typed(value, text, origin, Spec::Service),
        Kind::Deployment => typed(value, text, origin, Spec::Deployment),
        Kind::Gateway => typed(value, text, origin, Spec::Gateway),
        Kind::VirtualService => typed(value, text, origin, Spec::VirtualService),
        Kind::DestinationRule => typed(value, text, origin, |s| Spec::DestinationRule(Box::new(s))),
        Kind::ServiceEntry => typed(value, text, origin, Spec::ServiceEntry),
        Kind::Sidecar => typed(value, text, origin, Spec::Sidecar),
        Kind::IstioOperator => typed(value, text, origin, Spec::IstioOperator),
    };
    let (mut metadata, spec) = match typed {
        Ok(v) => v,
        Err((field, line, column, message)) => {
            return Err(vec![error(object, field, line, column, message)]);
        }
    };
    let mut errors = Vec::new();
    if metadata.name.is_empty() {
        let (line, column) = locate_in_file(text, "metadata.name", origin);
        errors.push(error(
            object.clone(),
            Some("metadata.name".into()),
            line,
            column,
            "required field is missing".into(),
        ));
    } else if !is_dns1123_subdomain(&metadata.name) {
        let (line, column) = locate_in_file(text, "metadata.name", origin);
        errors.push(error(
            object.clone(),
            Some("metadata.name".into()),
            line,
            column,
            format!("{:?} is not a valid name: use lower case letters, digits, '-' and '.', starting and ending with a letter or digit", metadata.name),
        ));
    }
    if kind.namespaced() {
        match &metadata.namespace {
            Some(ns) if opts.namespace_explicit && ns != &opts.namespace => {
                // Located only when reported: locating parses the document again.
                let (ns_line, ns_column) = locate_in_file(text, "metadata.namespace", origin);
                errors.push(error(
                    object.clone(),
                    Some("metadata.namespace".into()),
                    ns_line,
                    ns_column,
                    format!(
                        "the namespace from the provided object {ns:?} does not match the namespace {:?}; pass -n {ns} to apply it",
                        opts.namespace
                    ),
                ));
            }
            Some(_) => {}
            None => metadata.namespace = Some(opts.namespace.clone()),
        }
    } else {
        metadata.namespace = None;
    }
    let resource = Resource {
        api_version,
        kind,
        metadata,
        spec,
        origin: origin.clone(),
    };
    let mut problems: Vec<LoadError> = validate_resource(&resource)
        .into_iter()
        .map(|problem| {
            let (line, column) = locate_in_file(text, &problem.field, origin);
            error(
                object.clone(),
                Some(problem.field),
                line,
                column,
                problem.message,
            )
        })
        .collect();
    // In the order of the document.
    problems.sort_by_key(|e| (e.line, e.column));
    errors.append(&mut problems);
    if errors.is_empty() {
        Ok(Some(resource))
    } else {
        Err(errors)
    }
}

type TypedError = (Option<String>, Option<usize>, Option<usize>, String);

/// Reads the typed object from the document's already parsed `value`, with the
/// result of reading it from the text. Reading from the value is stricter (a plain
/// scalar such as `123` is a number in the value, while the text reader takes it as
/// a string where a string is expected) and its errors carry no position: whenever
/// it fails, and whenever the document holds what the two readers read differently
/// (see [`plain_numbers_and_no_tags`] and [`same_from_value_and_text`]), the
/// document is read from its text, which gives the result and the located error
/// message of reading from the text alone.
fn typed<S: DeserializeOwned + Default>(
    value: serde_norway::Value,
    text: &str,
    origin: &Origin,
    wrap: fn(S) -> Spec,
) -> Result<(ObjectMeta, Spec), TypedError> {
    if !plain_numbers_and_no_tags(text) || !same_from_value_and_text(&value) {
        return typed_from_text(text, origin, wrap);
    }
    match Document::<S>::deserialize(value) {
        Ok(doc) => Ok((doc.metadata, wrap(doc.spec.unwrap_or_default()))),
        Err(_) => typed_from_text(text, origin, wrap),
    }
}

/// Whether reading a typed object from `value` can only succeed where reading it
/// from the text succeeds, with the same result: true when the value holds no null
/// (the value reader takes `~` and `null` as an empty list or mapping, the text
/// reader only an empty scalar) and no tag (which the text reader handles per type).
fn same_from_value_and_text(value: &serde_norway::Value) -> bool {
    use serde_norway::Value as V;
    match value {
        V::Null | V::Tagged(_) => false,
        V::Bool(_) | V::Number(_) | V::String(_) => true,
        V::Sequence(items) => items.iter().all(same_from_value_and_text),
        V::Mapping(map) => map
            .iter()
            .all(|(k, v)| same_from_value_and_text(k) && same_from_value_and_text(v)),
    }
}

/// Whether the document has no tag (`!`, which the value resolves before the typed
/// reader could see it: `!!int "80"` is a number in the value but an error for the
/// text reader) and no number whose reading depends on the field it fills (`0x10`,
/// `0o17`, `0b1` are numbers only where an integer is expected, `-0` is not an
/// unsigned integer): for those the text reader alone decides. Conservative: it may
/// also see such a pattern inside a string, which only costs the second reading.
fn plain_numbers_and_no_tags(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.contains(&b'!') {
        return false;
    }
    // Where a plain scalar (or its sign) can start.
    let starts_scalar = |i: usize| {
        i == 0
            || matches!(
                bytes[i - 1],
                b' ' | b'\t' | b'\n' | b'\r' | b'[' | b'{' | b',' | b':' | b'?'
            )
    };
    for (i, pair) in bytes.windows(2).enumerate() {
        match pair {
            [b'0', b'x' | b'o' | b'b'] => {
                let signed = i > 0 && matches!(bytes[i - 1], b'+' | b'-');
                if starts_scalar(i) || (signed && starts_scalar(i - 1)) {
                    return false;
                }
            }
            [b'-', b'0'] if starts_scalar(i) => return false,
            _ => {}
        }
    }
    true
}

/// Reads the typed object from the document's text, with the path and position of
/// the first problem.
fn typed_from_text<S: DeserializeOwned + Default>(
    text: &str,
    origin: &Origin,
    wrap: fn(S) -> Spec,
) -> Result<(ObjectMeta, Spec), TypedError> {
    let de = serde_norway::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, Document<S>>(de) {
        Ok(doc) => Ok((doc.metadata, wrap(doc.spec.unwrap_or_default()))),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let (line, column) = location_in_file(&inner, origin);
            let field = if path == "." || path.is_empty() {
                None
            } else {
                Some(path)
            };
            Err((
                field,
                line,
                column,
                without_path_prefix(yaml_message(&inner, origin)),
            ))
        }
    }
}

/// The YAML library's message without its own "at line L column C" for the problem
/// (we print the location ourselves, counted from the start of the file); any further
/// position, such as where the enclosing block began, is counted from the start of
/// the file too.
fn yaml_message(e: &serde_norway::Error, origin: &Origin) -> String {
    let message = e.to_string();
    let mut out = String::with_capacity(message.len());
    let mut rest = message.as_str();
    let mut first = true;
    while let Some(i) = rest.find(" at line ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " at line ".len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let Ok(line) = after[..digits].parse::<usize>() else {
            out.push_str(" at line ");
            rest = after;
            continue;
        };
        let tail = &after[digits..];
        let column_len = tail
            .strip_prefix(" column ")
            .map(|c| " column ".len() + c.bytes().take_while(u8::is_ascii_digit).count())
            .unwrap_or(0);
        if !first {
            out.push_str(&format!(" at line {}", origin.line + line - 1));
            out.push_str(&tail[..column_len]);
        }
        first = false;
        rest = &tail[column_len..];
    }
    out.push_str(rest);
    out
}

/// serde_norway starts a message with the path of the value it was reading
/// (`spec.http[0]: unknown field ...`); the error names the field already.
fn without_path_prefix(message: String) -> String {
    match message.split_once(": ") {
        Some((prefix, rest))
            if !prefix.is_empty()
                && !prefix.contains(char::is_whitespace)
                && !prefix.contains('`') =>
        {
            rest.to_string()
        }
        _ => message,
    }
}

/// Where `path` is written in the document, as file line and column.
fn locate_in_file(text: &str, path: &str, origin: &Origin) -> (Option<usize>, Option<usize>) {
    match locate(text, path) {
        Some((line, column)) => (Some(origin.line + line - 1), Some(column)),
        None => (None, None),
    }
}

fn location_in_file(e: &serde_norway::Error, origin: &Origin) -> (Option<usize>, Option<usize>) {
    match e.location() {
        Some(loc) => (Some(origin.line + loc.line() - 1), Some(loc.column())),
        None => (None, None),
    }
}

/// Kubernetes' DNS-1123 subdomain rule for object names.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_keeps_lines() {
        let text = "a: 1\n---\nb: 2\nc: 3\n---\n\nd: 4\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].first_line, 1);
        assert_eq!(docs[1].first_line, 3);
        assert_eq!(docs[1].text, "b: 2\nc: 3\n");
        assert_eq!(docs[2].first_line, 6);
    }
}
