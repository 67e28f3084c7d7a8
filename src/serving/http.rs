//! Feast's HTTP JSON feature server API (what KServe's Feast transformer
//! calls), plus health, readiness and Prometheus metrics.

use std::cell::RefCell;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::model::{EventTime, FieldStatus, Value};
use crate::registry::FastMap;

use super::NAMESPACE_HEADER;
use super::{
    Cell, Column, FeatureSelection, FeatureServer, OnlineRequest, OnlineResponse, ServingError,
};

/// The HTTP routes of the feature server.
pub fn routes(server: Arc<FeatureServer>) -> Router {
    let max = server.settings().max_request_bytes;
    Router::new()
        .route("/get-online-features", post(get_online_features))
        .route("/push", post(push))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        // Bodies over the limit get 413 before they are read whole.
        .layer(DefaultBodyLimit::max(max))
        .with_state(server)
}

#[derive(Deserialize)]
struct GetOnlineFeaturesBody {
    #[serde(default)]
    features: Option<Vec<String>>,
    #[serde(default)]
    feature_service: Option<String>,
    #[serde(default)]
    entities: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    full_feature_names: bool,
    /// Request data of on-demand views, column by column like `entities`.
    #[serde(default)]
    request_context: serde_json::Map<String, serde_json::Value>,
}

fn json_to_value(
    what: &str,
    column: &str,
    row: usize,
    v: serde_json::Value,
) -> Result<Value, ServingError> {
    Ok(match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::String(s) => Value::String(s),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int64(i),
            None => Value::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        other => {
            return Err(ServingError::InvalidArgument(format!(
                "{what} column {column:?}, row {row}: {other} is not a scalar value"
            )));
        }
    })
}

fn parse_request(headers: &HeaderMap, body: &[u8]) -> Result<OnlineRequest, ServingError> {
    let body: GetOnlineFeaturesBody = serde_json::from_slice(body)
        .map_err(|e| ServingError::InvalidArgument(format!("request body: {e}")))?;
    let features = match (body.features, body.feature_service) {
        (Some(_), Some(_)) => {
            return Err(ServingError::InvalidArgument(
                "give either `features` or `feature_service`, not both".into(),
            ));
        }
        (Some(refs), None) => FeatureSelection::Refs(refs),
        (None, Some(service)) => FeatureSelection::Service(service),
        (None, None) => {
            return Err(ServingError::InvalidArgument(
                "the request names neither `features` nor a `feature_service`".into(),
            ));
        }
    };
    let entities = json_columns("entity", body.entities)?;
    let request_data = json_columns("request_context", body.request_context)?;
    let namespace = super::namespace_header(headers.get(NAMESPACE_HEADER).map(|v| v.to_str()))?;
    Ok(OnlineRequest {
        features,
        entities,
        full_feature_names: body.full_feature_names,
        namespace,
        untyped_integers: true,
        request_data,
    })
}

/// JSON columns (`{"name": [v, ...]}`) as typed columns, sorted by name so
/// that errors are deterministic.
fn json_columns(
    what: &str,
    columns: serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<(String, Vec<Value>)>, ServingError> {
    let mut out = Vec::with_capacity(columns.len());
    for (name, column) in columns {
        let serde_json::Value::Array(values) = column else {
            return Err(ServingError::InvalidArgument(format!(
                "{what} column {name:?} must be a list of values, one per row"
            )));
        };
        let values = values
            .into_iter()
            .enumerate()
            .map(|(row, v)| json_to_value(what, &name, row, v))
            .collect::<Result<Vec<_>, _>>()?;
        out.push((name, values));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

async fn get_online_features(
    State(server): State<Arc<FeatureServer>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let authorization = bearer(&headers);
    let caller = match server.authenticate("http", authorization).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let parsed = body
        .map_err(|rejection| body_error(&server, &rejection))
        .and_then(|body| parse_request(&headers, &body));
    let request = match parsed {
        Ok(r) => r,
        Err(e) => {
            server.record_rejected("http", "GetOnlineFeatures", &e);
            return e.into_response();
        }
    };
    match server
        .get_online_features("http", &caller, request, None)
        .await
    {
        Ok(response) => {
            let body = serde_json::to_vec(&JsonResponse(&response))
                .map_err(|e| ServingError::Internal(e.to_string()));
            match body {
                Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
                Err(e) => e.into_response(),
            }
        }
        Err(e) => e.into_response(),
    }
}

/// Feast's push body: `df` is columns by name, one value per row.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushBody {
    push_source_name: String,
    df: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    to: Option<String>,
    // Feast's clients send these; larder always reads its current snapshot
    // and has no write-time transforms to switch off.
    #[serde(default)]
    #[allow(dead_code)]
    allow_registry_cache: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    transform_on_write: Option<bool>,
}

fn parse_push(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<crate::ingest::push::PushRequest, ServingError> {
    use crate::ingest::decode::raw_of_json;
    let body: PushBody = serde_json::from_slice(body)
        .map_err(|e| ServingError::InvalidArgument(format!("request body: {e}")))?;
    let to = match body.to.as_deref() {
        None => crate::ingest::PushTo::Online,
        Some(text) => crate::ingest::PushTo::parse(text)
            .map_err(|e| ServingError::InvalidArgument(format!("to: {e}")))?,
    };
    let mut columns = Vec::with_capacity(body.df.len());
    for (name, column) in body.df {
        let serde_json::Value::Array(values) = column else {
            return Err(ServingError::InvalidArgument(format!(
                "df: column {name:?} must be a list of values, one per row"
            )));
        };
        let values = values
            .iter()
            .enumerate()
            .map(|(row, v)| {
                raw_of_json(v).map_err(|e| {
                    ServingError::InvalidArgument(format!("df: column {name:?}, row {row}: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        columns.push((name, values));
    }
    let namespace = super::namespace_header(headers.get(NAMESPACE_HEADER).map(|v| v.to_str()))?;
    Ok(crate::ingest::push::PushRequest {
        push_source: body.push_source_name,
        namespace,
        columns,
        to,
    })
}

/// `POST /push`: Feast's push API.
async fn push(
    State(server): State<Arc<FeatureServer>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let authorization = bearer(&headers);
    let caller = match server.authenticate_for("http", "Push", authorization).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let parsed = body
        .map_err(|rejection| body_error(&server, &rejection))
        .and_then(|body| parse_push(&headers, &body));
    let request = match parsed {
        Ok(r) => r,
        Err(e) => {
            server.record_rejected("http", "Push", &e);
            return e.into_response();
        }
    };
    match server.push("http", &caller, request).await {
        Ok(outcome) => {
            let views: Vec<serde_json::Value> = outcome
                .views
                .iter()
                .map(|(name, online, offline)| {
                    serde_json::json!({
                        "feature_view": name,
                        "online_rows": online,
                        "offline_rows": offline,
                    })
                })
                .collect();
            axum::Json(serde_json::json!({ "rows": outcome.rows, "views": views })).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// The `Authorization` header's value, when it is text.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// Why a request body could not be read: too large (413), or otherwise bad.
fn body_error(server: &FeatureServer, rejection: &BytesRejection) -> ServingError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ServingError::TooLarge(format!(
            "the request body is larger than the limit of {} bytes",
            server.settings().max_request_bytes
        ))
    } else {
        ServingError::InvalidArgument(format!("request body: {rejection}"))
    }
}

async fn ready(State(server): State<Arc<FeatureServer>>) -> Response {
    match server.ready().await {
        Ok(status) => (StatusCode::OK, status).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn metrics(State(server): State<Arc<FeatureServer>>) -> Response {
    if let Some(sync) = server.registry_sync() {
        server.metrics().observe_registry(sync);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        server.metrics().encode(),
    )
        .into_response()
}

/// Feast's JSON response shape, written straight from the domain response.
pub struct JsonResponse<'a>(pub &'a OnlineResponse);

struct Metadata<'a>(&'a [Arc<str>]);
struct Results<'a>(&'a OnlineResponse);
struct JsonColumn<'a>(&'a Column, &'a TimeTexts, &'a OnlineResponse);
struct Values<'a>(&'a [Cell], &'a OnlineResponse);
struct Statuses<'a>(&'a [FieldStatus]);
struct Times<'a>(&'a [EventTime], &'a TimeTexts);

/// RFC 3339 texts of the event times of one response, formatted once each:
/// the features of a view share their row's time.
type TimeTexts = RefCell<FastMap<EventTime, String>>;
struct JsonValue<'a>(&'a Value);
struct Base64List<'a>(&'a [Vec<u8>]);

impl Serialize for JsonResponse<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("metadata", &Metadata(&self.0.names))?;
        m.serialize_entry("results", &Results(self.0))?;
        m.end()
    }
}

impl Serialize for Metadata<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("feature_names", self.0)?;
        m.end()
    }
}

impl Serialize for Results<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let texts = TimeTexts::default();
        s.collect_seq(self.0.columns.iter().map(|c| JsonColumn(c, &texts, self.0)))
    }
}

impl Serialize for JsonColumn<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("values", &Values(&self.0.values, self.2))?;
        m.serialize_entry("statuses", &Statuses(&self.0.statuses))?;
        m.serialize_entry("event_timestamps", &Times(&self.0.event_times, self.1))?;
        m.end()
    }
}

impl Serialize for Values<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for cell in self.0 {
            seq.serialize_element(&JsonValue(&self.1.value(cell)))?;
        }
        seq.end()
    }
}

impl Serialize for Statuses<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|st| match st {
            FieldStatus::Invalid => "INVALID",
            FieldStatus::Present => "PRESENT",
            FieldStatus::NullValue => "NULL_VALUE",
            FieldStatus::NotFound => "NOT_FOUND",
            FieldStatus::OutsideMaxAge => "OUTSIDE_MAX_AGE",
        }))
    }
}

impl Serialize for Times<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        let mut texts = self.1.borrow_mut();
        for t in self.0 {
            let text = texts
                .entry(*t)
                .or_insert_with(|| prost_types::Timestamp::from(*t).to_string());
            seq.serialize_element(text.as_str())?;
        }
        seq.end()
    }
}

impl Serialize for Base64List<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for b in self.0 {
            seq.serialize_element(&base64::engine::general_purpose::STANDARD.encode(b))?;
        }
        seq.end()
    }
}

/// Plain JSON values; bytes as base64, timestamps as epoch seconds,
/// non-finite floats as null (JSON has no NaN).
impl Serialize for JsonValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_none(),
            Value::Bytes(b) => {
                s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
            }
            Value::String(v) => s.serialize_str(v),
            Value::Int32(v) => s.serialize_i32(*v),
            Value::Int64(v) | Value::UnixTimestamp(v) => s.serialize_i64(*v),
            Value::Double(v) => s.serialize_f64(*v),
            Value::Float(v) => s.serialize_f32(*v),
            Value::Bool(v) => s.serialize_bool(*v),
            Value::BytesList(v) => Base64List(v).serialize(s),
            Value::StringList(v) => v.serialize(s),
            Value::Int32List(v) => v.serialize(s),
            Value::Int64List(v) | Value::UnixTimestampList(v) => v.serialize(s),
            Value::DoubleList(v) => v.serialize(s),
            Value::FloatList(v) => v.serialize(s),
            Value::BoolList(v) => v.serialize(s),
        }
    }
}
