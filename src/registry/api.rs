//! The registry's REST API, in Kubernetes' shape:
//!
//! - `GET|PUT|DELETE /apis/features.kubeflow.org/v1/namespaces/{ns}/{resource}/{name}`
//! - `GET /apis/features.kubeflow.org/v1/namespaces/{ns}/{resource}` (list)
//! - `GET /apis/features.kubeflow.org/v1/{resource}` (list across namespaces)
//! - `GET /apis/features.kubeflow.org/v1/snapshot[?watch=true&resourceVersion=N]`
//! - `GET|POST .../namespaces/{ns}/featureviews/{name}/materializations`:
//!   the intervals materialized into the online store
//!
//! Writes are checked before they are stored: the manifest on its own
//! (names, types, fields), then with the rest of its namespace (references
//! resolve), so nothing invalid is ever written. Deleting an object that
//! others reference is refused with 409 naming them: delete the referrers
//! first.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::RegistrySnapshot;
use super::store::{Interval, RegistryStore, StoreError, StoredObject};
use crate::auth::{Auth, AuthError, Caller};
use crate::definitions::{self, DefinitionError, Located};
use crate::model::check_dns1123_label;

const PREFIX: &str = "/apis/features.kubeflow.org/v1";

/// The longest a watch may wait.
const MAX_WATCH_SECONDS: u64 = 60;

/// Resource names in URLs and the kinds they hold.
const RESOURCES: [(&str, &str); 5] = [
    ("entities", "Entity"),
    ("datasources", "DataSource"),
    ("featureviews", "FeatureView"),
    ("ondemandfeatureviews", "OnDemandFeatureView"),
    ("featureservices", "FeatureService"),
];

/// An API failure, answered as a Kubernetes `Status` object.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            reason,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => {
                Self::new(StatusCode::CONFLICT, "Conflict", e.to_string())
            }
            StoreError::NotFound { .. } => {
                Self::new(StatusCode::NOT_FOUND, "NotFound", e.to_string())
            }
            StoreError::Database(_) | StoreError::Corrupt(_) => {
                tracing::error!(error = %e, "registry store failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    e.to_string(),
                )
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthenticated(_) => {
                Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", e.to_string())
            }
            AuthError::Forbidden(_) => Self::new(StatusCode::FORBIDDEN, "Forbidden", e.to_string()),
            AuthError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                e.to_string(),
            ),
        }
    }
}

impl From<DefinitionError> for ApiError {
    fn from(e: DefinitionError) -> Self {
        Self::invalid(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "reason": self.reason,
            "message": self.message,
            "code": self.status.as_u16(),
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Shared state of the registry server.
pub struct Registry<S> {
    store: S,
    /// Woken on every write through this server; watchers also poll the
    /// store, for writes through other replicas.
    changed: Notify,
    /// Held from a write's checks to its commit, so that two writes through
    /// this server cannot each pass their checks against a state the other
    /// is about to change (a view created while its entity is deleted).
    writes: tokio::sync::Mutex<()>,
    /// Set at shutdown: watches answer at once instead of holding the
    /// graceful shutdown for their whole timeout.
    closing: std::sync::atomic::AtomicBool,
    max_body_bytes: usize,
    auth: Arc<Auth>,
}

impl<S: RegistryStore + 'static> Registry<S> {
    /// A registry without authentication: development only.
    pub fn new(store: S) -> Arc<Self> {
        Self::with_auth(store, Arc::new(Auth::disabled()))
    }

    /// A registry that authenticates every API request and authorizes each
    /// verb on each object with `auth`.
    pub fn with_auth(store: S, auth: Arc<Auth>) -> Arc<Self> {
        Arc::new(Registry {
            auth,
            store,
            changed: Notify::new(),
            writes: tokio::sync::Mutex::new(()),
            closing: std::sync::atomic::AtomicBool::new(false),
            max_body_bytes: 1 << 20,
        })
    }
}

/// The URL resource that holds a kind (`FeatureView` -> `featureviews`).
pub fn resource_of(kind: &str) -> Option<&'static str> {
    RESOURCES.iter().find(|(_, k)| *k == kind).map(|(r, _)| *r)
}

/// Server-managed metadata fields, which clients do not write.
pub const SERVER_FIELDS: [&str; 4] = [
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "updateTimestamp",
];

fn kind_of(resource: &str) -> Result<&'static str, ApiError> {
    RESOURCES
        .iter()
        .find(|(r, _)| *r == resource)
        .map(|(_, k)| *k)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!(
                    "unknown resource {resource:?} (known: {})",
                    RESOURCES.map(|(r, _)| r).join(", ")
                ),
            )
        })
}

fn rfc3339(millis: i64) -> String {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
    .to_string()
}

/// The object as the API returns it: the stored manifest with its
/// server-managed metadata.
fn render(o: &StoredObject) -> serde_json::Value {
    let mut body = o.body.clone();
    if let Some(meta) = body.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.insert(
            "resourceVersion".into(),
            o.resource_version.to_string().into(),
        );
        meta.insert("uid".into(), o.uid.clone().into());
        meta.insert("creationTimestamp".into(), rfc3339(o.created_at).into());
        meta.insert("updateTimestamp".into(), rfc3339(o.updated_at).into());
    }
    body
}

/// A body as JSON, whether it came as JSON or YAML.
fn body_value(headers: &HeaderMap, body: &[u8]) -> Result<serde_json::Value, ApiError> {
    let yaml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("yaml"));
    if yaml {
        serde_yaml::from_slice(body).map_err(|e| ApiError::invalid(format!("request body: {e}")))
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("request body: {e}")))
    }
}

/// The stored manifest: what the client sent, less server-managed fields.
pub fn normalized(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        for key in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "updateTimestamp",
        ] {
            meta.remove(key);
        }
    }
    value
}

/// Every stored object of `namespace`, parsed, for cross-reference checks.
async fn namespace_objects<S: RegistryStore>(
    store: &S,
    namespace: &str,
) -> Result<Vec<(String, Located)>, ApiError> {
    let mut out = Vec::new();
    for (_, kind) in RESOURCES {
        for o in store.list(kind, Some(namespace)).await? {
            let origin = format!("stored {kind} {namespace}/{}", o.name);
            out.push((kind.to_owned(), definitions::parse_value(&origin, o.body)?));
        }
    }
    Ok(out)
}

/// Refuses a namespace that is a suffix of another or has one as a suffix:
/// Redis ACL key patterns match a namespace's keys by suffix.
async fn check_namespace_suffixes<S: RegistryStore>(
    store: &S,
    namespace: &str,
) -> Result<(), ApiError> {
    let mut known = std::collections::BTreeSet::new();
    for (_, kind) in RESOURCES {
        for o in store.list(kind, None).await? {
            known.insert(o.namespace);
        }
    }
    if known.contains(namespace) {
        return Ok(());
    }
    for other in &known {
        let (short, long) = if other.len() < namespace.len() {
            (other.as_str(), namespace)
        } else {
            (namespace, other.as_str())
        };
        if long.ends_with(short) {
            return Err(ApiError::invalid(format!(
                "namespace {namespace:?} cannot be used next to {other:?}: one ends with the \
                 other, and Redis ACL key patterns select a namespace's keys by suffix, so \
                 their online data could not be told apart"
            )));
        }
    }
    Ok(())
}

async fn put_object<S: RegistryStore>(
    State(registry): State<Arc<Registry<S>>>,
    Extension(caller): Extension<Caller>,
    Path((namespace, resource, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let kind = kind_of(&resource)?;
    let resource = kind_resource(kind);
    // Updating an object needs `update` on it; creating one needs
    // `create`, which names no object (so resourceNames cannot grant it).
    // A refusal does not say which, so it tells nothing of existence.
    let exists = registry.store.get(kind, &namespace, &name).await?.is_some();
    let (verb, object) = if exists {
        ("update", name.as_str())
    } else {
        ("create", "")
    };
    if !registry
        .auth
        .allowed(&caller, verb, resource, &namespace, object)
        .await?
    {
        return Err(AuthError::Forbidden(format!(
            "{} may not create or update {resource} {name:?} in namespace {namespace:?}",
            caller.name
        ))
        .into());
    }
    check_dns1123_label(&namespace)
        .map_err(|why| ApiError::invalid(format!("namespace {namespace:?}: {why}")))?;
    let value = body_value(&headers, &body)?;
    let expected = match value.pointer("/metadata/resourceVersion") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(
            v.as_str()
                .and_then(|s| s.parse::<i64>().ok())
                .or_else(|| v.as_i64())
                .ok_or_else(|| {
                    ApiError::invalid(format!("metadata.resourceVersion: {v} is not a version"))
                })?,
        ),
    };
    let value = normalized(value);
    let origin = format!("{kind} {namespace}/{name}");
    let located = definitions::parse_value(&origin, value.clone())?;
    if located.id.kind != kind {
        return Err(ApiError::invalid(format!(
            "{origin}: field `kind`: {:?} does not belong under /{resource}",
            located.id.kind
        )));
    }
    if located.id.namespace != namespace || located.id.name != name {
        return Err(ApiError::invalid(format!(
            "{origin}: field `metadata`: the manifest names {}/{}, the URL {namespace}/{name}",
            located.id.namespace, located.id.name
        )));
    }
    let _write = registry.writes.lock().await;
    check_namespace_suffixes(&registry.store, &namespace).await?;
    // The namespace as it would be after this write must hold together.
    let mut objects: Vec<Located> = namespace_objects(&registry.store, &namespace)
        .await?
        .into_iter()
        .filter(|(k, l)| !(k == kind && l.id.name == name))
        .map(|(_, l)| l)
        .collect();
    objects.push(located);
    RegistrySnapshot::build(objects, 0, &Default::default())?;

    let stored = registry
        .store
        .put(kind, &namespace, &name, &value, expected)
        .await?;
    registry.changed.notify_waiters();
    let status = if stored.created_at == stored.updated_at {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(render(&stored))).into_response())
}

#[derive(Deserialize)]
struct DeleteQuery {
    #[serde(rename = "resourceVersion")]
    resource_version: Option<i64>,
}

async fn delete_object<S: RegistryStore>(
    State(registry): State<Arc<Registry<S>>>,
    Extension(caller): Extension<Caller>,
    Path((namespace, resource, name)): Path<(String, String, String)>,
    Query(query): Query<DeleteQuery>,
) -> Result<Response, ApiError> {
    let kind = kind_of(&resource)?;
    registry
        .auth
        .authorize(&caller, "delete", kind_resource(kind), &namespace, &name)
        .await?;
    let _write = registry.writes.lock().await;
    let all = namespace_objects(&registry.store, &namespace).await?;
    if !all.iter().any(|(k, l)| k == kind && l.id.name == name) {
        return Err(StoreError::NotFound {
            kind: kind.to_owned(),
            namespace,
            name,
        }
        .into());
    }
    let rest: Vec<Located> = all
        .into_iter()
        .filter(|(k, l)| !(k == kind && l.id.name == name))
        .map(|(_, l)| l)
        .collect();
    if let Err(e) = RegistrySnapshot::build(rest, 0, &Default::default()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "{kind} {namespace}/{name} is still referenced: {e}; delete or change the \
                 referring object first"
            ),
        ));
    }
    let deleted = registry
        .store
        .delete(kind, &namespace, &name, query.resource_version)
        .await?;
    registry.changed.notify_waiters();
    Ok(axum::Json(render(&deleted)).into_response())
}

async fn get_object<S: RegistryStore>(
    State(registry): State<Arc<Registry<S>>>,
    Extension(caller): Extension<Caller>,
    Path((namespace, resource, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let kind = kind_of(&resource)?;
    registry
        .auth
        .authorize(&caller, "get", kind_resource(kind), &namespace, &name)
        .await?;
    match registry.store.get(kind, &namespace, &name).await? {
        Some(o) => Ok(axum::Json(render(&o)).into_response()),
        None => Err(StoreError::NotFound {
            kind: kind.to_owned(),
            namespace,
            name,
        }
        .into()),
    }
}

/// `labelSelector`, `limit` and `continue` of a list request.
#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(rename = "labelSelector")]
    label_selector: Option<String>,
    limit: Option<usize>,
    #[serde(rename = "continue")]
    continue_after: Option<String>,
}

/// One requirement of an equality-based label selector.
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

/// Parses Kubernetes' equality-based selectors: `k=v`, `k==v`, `k!=v`,
/// `k`, `!k`, joined by commas.
fn parse_selector(text: &str) -> Result<Vec<Requirement>, ApiError> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let req = if let Some((k, v)) = t.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = t.strip_prefix('!') {
                Requirement::Absent(k.trim().into())
            } else {
                Requirement::Exists(t.into())
            };
            let key = match &req {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::Exists(k)
                | Requirement::Absent(k) => k,
            };
            if key.is_empty() {
                return Err(ApiError::invalid(format!(
                    "labelSelector: {t:?} has no label key"
                )));
            }
            Ok(req)
        })
        .collect()
}

fn selected(o: &StoredObject, requirements: &[Requirement]) -> bool {
    let labels = o.body.pointer("/metadata/labels");
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(|v| v.as_str());
    requirements.iter().all(|r| match r {
        Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
        Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
        Requirement::Exists(k) => label(k).is_some(),
        Requirement::Absent(k) => label(k).is_none(),
    })
}

async fn list<S: RegistryStore>(
    registry: &Registry<S>,
    caller: &Caller,
    resource: &str,
    namespace: Option<&str>,
    query: ListQuery,
) -> Result<Response, ApiError> {
    let kind = kind_of(resource)?;
    let requirements = parse_selector(query.label_selector.as_deref().unwrap_or(""))?;
    let version = registry.store.version().await?;
    let objects = registry.store.list(kind, namespace).await?;
    let visible = registry.visible(caller, objects).await?;
    // Nothing visible: an empty list for who may list here, else 403, so
    // that an empty namespace and a closed one look alike to outsiders.
    let scope = namespace.unwrap_or("");
    if visible.is_empty()
        && !registry
            .auth
            .allowed(caller, "list", kind_resource(kind), scope, "")
            .await?
    {
        return Err(AuthError::Forbidden(format!(
            "{} may not list {} {}",
            caller.name,
            kind_resource(kind),
            match namespace {
                Some(ns) => format!("in namespace {ns:?}"),
                None => "across namespaces".into(),
            }
        ))
        .into());
    }
    let mut matching = visible
        .into_iter()
        .filter(|o| selected(o, &requirements))
        // Continue after the object the previous page ended with.
        .filter(|o| {
            query
                .continue_after
                .as_deref()
                .is_none_or(|after| format!("{}/{}", o.namespace, o.name).as_str() > after)
        })
        .peekable();
    let limit = query.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
    let page: Vec<StoredObject> = matching.by_ref().take(limit).collect();
    let more = matching.peek().is_some();
    let mut metadata = serde_json::json!({"resourceVersion": version.to_string()});
    if more && let Some(last) = page.last() {
        metadata["continue"] = format!("{}/{}", last.namespace, last.name).into();
    }
    Ok(axum::Json(serde_json::json!({
        "apiVersion": "features.kubeflow.org/v1",
        "kind": format!("{kind}List"),
        "metadata": metadata,
        "items": page.iter().map(render).collect::<Vec<_>>(),
    }))
    .into_response())
}

async fn list_namespaced<S: RegistryStore>(
    State(registry): State<Arc<Registry<S>>>,
    Extension(caller): Extension<Caller>,
    Path((namespace, resource)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    list(&registry, &caller, &resource, Some(&namespace), query).await
}

async fn list_everywhere<S: RegistryStore>(
    State(registry): State<Arc<Registry<S>>>,
    Extension(caller): Extension<Caller>,
    Path(resource): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    if resource == "snapshot" {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "use GET /snapshot",
        ));
    }
    list(&registry, &caller, &resource, None, query).await
}

#[derive(Deserialize)]
struct SnapshotQuery {
    #[serde(default)]
    watch: bool,
    #[serde(rename = "resourceVersion")]
    resource_version: Option<i64>,
    #[serde(rename = "timeoutSeconds")]
    timeout_seconds: Option<u64>,
}

/// Everything at one resourceVersion. With `watch=true`, waits until the
/// store is newer than `resourceVersion` (or the timeout passes: 304).
async fn snapshot<S: RegistryStore>(
    State(registry): State<Arc<Registry<S>>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<SnapshotQuery>,
) -> Result<Response, ApiError> {
    if query.watch {
        let since = query.resource_version.unwrap_or(0);
        let seconds = query.timeout_seconds.unwrap_or(30);
        if seconds > MAX_WATCH_SECONDS {
            return Err(ApiError::invalid(format!(
                "timeoutSeconds: {seconds} is over the limit of {MAX_WATCH_SECONDS}"
            )));
        }
        let timeout = Duration::from_secs(seconds);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = registry.changed.notified();
            if registry.store.version().await? > since {
                break;
            }
            if tokio::time::Instant::now() >= deadline
                || registry.closing.load(std::sync::atomic::Ordering::Relaxed)
            {
                return Ok(StatusCode::NOT_MODIFIED.into_response());
            }
            // Woken by writes here; the poll catches writes elsewhere.
            let _ = tokio::time::timeout(Duration::from_millis(250), notified).await;
        }
    }
    // Read the version on both sides of the listing: equal means the
    // listing is exactly that version.
    for _ in 0..10 {
        let before = registry.store.version().await?;
        let objects = registry.store.list_all().await?;
        let after = registry.store.version().await?;
        if before == after {
            // Only what the caller may get; an empty list when nothing.
            let objects = registry.visible(&caller, objects).await?;
            let items: Vec<serde_json::Value> = objects.iter().map(render).collect();
            let body = serde_json::json!({
                "apiVersion": "features.kubeflow.org/v1",
                "kind": "Snapshot",
                "metadata": {"resourceVersion": before.to_string()},
                "items": items,
            });
            return Ok(
                ([(header::ETAG, format!("\"{before}\""))], axum::Json(body)).into_response(),
            );
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        "the registry changed too quickly to take a consistent snapshot; retry",
    ))
}

fn render_interval(i: &Interval) -> serde_json::Value {
    serde_json::json!({
        "start": rfc3339(i.start_ms),
        "end": rfc3339(i.end_ms),
        "recordedAt": rfc3339(i.recorded_at_ms),
    })
}

async fn view_must_exist<S: RegistryStore>(
    registry: &Registry<S>,
    namespace: &str,
    name: &str,
) -> Result<(), ApiError> {
    match registry.store.get("FeatureView", namespace, name).await? {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound {
            kind: "FeatureView".into(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
        .into()),
    }
}

/// The materialized intervals of a feature view.
async fn list_intervals<S: RegistryStore>(
    State(registry): State<Arc<Registry<S>>>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    registry
        .auth
        .authorize(&caller, "get", "materializations", &namespace, &name)
        .await?;
    view_must_exist(&registry, &namespace, &name).await?;
    let items: Vec<_> = registry
        .store
        .intervals(&namespace, &name)
        .await?
        .iter()
        .map(render_interval)
        .collect();
    Ok(
        axum::Json(serde_json::json!({"kind": "MaterializationIntervalList", "items": items}))
            .into_response(),
    )
}

/// Records a materialized interval: `{"start": RFC 3339, "end": RFC 3339}`.
async fn append_interval<S: RegistryStore>(
    State(registry): State<Arc<Registry<S>>>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    registry
        .auth
        .authorize(&caller, "create", "materializations", &namespace, "")
        .await?;
    let value = body_value(&headers, &body)?;
    let time = |field: &str| -> Result<i64, ApiError> {
        let text = value[field].as_str().ok_or_else(|| {
            ApiError::invalid(format!("field `{field}`: missing (an RFC 3339 time)"))
        })?;
        let t: prost_types::Timestamp = text.parse().map_err(|_| {
            ApiError::invalid(format!("field `{field}`: {text:?} is not an RFC 3339 time"))
        })?;
        Ok(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
    };
    let (start, end) = (time("start")?, time("end")?);
    if start >= end {
        return Err(ApiError::invalid("field `end`: must be after `start`"));
    }
    view_must_exist(&registry, &namespace, &name).await?;
    let interval = registry
        .store
        .append_interval(&namespace, &name, start, end)
        .await?;
    registry.changed.notify_waiters();
    Ok((StatusCode::CREATED, axum::Json(render_interval(&interval))).into_response())
}

/// The OpenAPI document of this API, checked in at docs/openapi.json.
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../docs/openapi.json"),
    )
        .into_response()
}

/// The registry's routes.
pub fn routes<S: RegistryStore + 'static>(registry: Arc<Registry<S>>) -> Router {
    let max = registry.max_body_bytes;
    let api = Router::new()
        .route(&format!("{PREFIX}/snapshot"), get(snapshot::<S>))
        .route(&format!("{PREFIX}/{{resource}}"), get(list_everywhere::<S>))
        .route(
            &format!("{PREFIX}/namespaces/{{namespace}}/{{resource}}"),
            get(list_namespaced::<S>),
        )
        .route(
            &format!("{PREFIX}/namespaces/{{namespace}}/{{resource}}/{{name}}"),
            get(get_object::<S>)
                .put(put_object::<S>)
                .delete(delete_object::<S>),
        )
        .route(
            &format!("{PREFIX}/namespaces/{{namespace}}/featureviews/{{name}}/materializations"),
            get(list_intervals::<S>).post(append_interval::<S>),
        )
        .route_layer(middleware::from_fn_with_state(
            registry.auth.clone(),
            authenticate,
        ));
    Router::new()
        .merge(api)
        .route("/openapi.json", get(openapi))
        .route("/health", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(max))
        .with_state(registry)
}

/// Authenticates every API request before its handler runs; the caller
/// goes to the handler as an extension. The health check and the OpenAPI
/// document stay open.
async fn authenticate(
    State(auth): State<Arc<Auth>>,
    mut request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth.authenticate(header).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The resource name authorization uses for a kind.
fn kind_resource(kind: &str) -> &'static str {
    resource_of(kind).unwrap_or("unknown")
}

impl<S: RegistryStore> Registry<S> {
    /// The objects of `objects` the caller may see: all of a namespace and
    /// resource when it may `list` them there (or across namespaces), else
    /// those it may `get` one by one: a list allowed only by name-restricted
    /// Roles shows exactly the objects they name.
    async fn visible(
        &self,
        caller: &Caller,
        objects: Vec<StoredObject>,
    ) -> Result<Vec<StoredObject>, AuthError> {
        let mut listable: Vec<(&'static str, String, bool)> = Vec::new();
        let mut out = Vec::with_capacity(objects.len());
        for o in objects {
            let resource = kind_resource(&o.kind);
            let may_list = match listable
                .iter()
                .find(|(r, ns, _)| *r == resource && *ns == o.namespace)
            {
                Some((_, _, allowed)) => *allowed,
                None => {
                    let allowed = self.auth.allowed(caller, "list", resource, "", "").await?
                        || self
                            .auth
                            .allowed(caller, "list", resource, &o.namespace, "")
                            .await?;
                    listable.push((resource, o.namespace.clone(), allowed));
                    allowed
                }
            };
            if may_list
                || self
                    .auth
                    .allowed(caller, "get", resource, &o.namespace, &o.name)
                    .await?
            {
                out.push(o);
            }
        }
        Ok(out)
    }
}

/// Serves the registry API on `listener` until `shutdown` completes.
pub async fn run<S: RegistryStore + 'static>(
    listener: TcpListener,
    registry: Arc<Registry<S>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "serving the registry API");
    let closing = registry.clone();
    axum::serve(listener, routes(registry))
        .with_graceful_shutdown(async move {
            shutdown.await;
            closing
                .closing
                .store(true, std::sync::atomic::Ordering::Relaxed);
            closing.changed.notify_waiters();
        })
        .await
}
