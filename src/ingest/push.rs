//! Feast's push API in domain terms: columns of rows pushed to a push
//! source, written to every feature view that names the source as its
//! stream source. The transports (`serving::http` `POST /push`,
//! `serving::grpc` `larder.v1.PushService/Push`) convert to a
//! [`PushRequest`]; `FeatureServer::push` authorizes and calls [`plan`] and
//! [`super::write::write_batch`].

use std::sync::Arc;

use crate::model::StreamKind;
use crate::offline::materialize::Raw;
use crate::online::ViewRow;
use crate::registry::{NamespaceDefs, RegistrySnapshot, ServedView};

use super::decode::{event_time, typed};
use super::{IngestError, PushTo};

/// Rows pushed to a push source: one column per name, one value per row.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// `name`, or `namespace/name`.
    pub push_source: String,
    /// The namespace of an unqualified source (the request header's, or
    /// the server's default).
    pub namespace: Option<String>,
    pub columns: Vec<(String, Vec<Raw>)>,
    pub to: PushTo,
}

/// What a push wrote, per feature view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    pub rows: usize,
    /// (view, rows taken online, rows appended offline).
    pub views: Vec<(String, usize, u64)>,
}

/// A push resolved against a snapshot: the views to write and their rows.
pub struct PushPlan<'s> {
    pub defs: &'s NamespaceDefs,
    pub views: Vec<(Arc<ServedView>, Vec<ViewRow>)>,
}

/// The namespace and name of the push source a request names.
pub fn source_of<'r>(request: &'r PushRequest, default_namespace: &'r str) -> (&'r str, &'r str) {
    match request.push_source.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => (
            request.namespace.as_deref().unwrap_or(default_namespace),
            &request.push_source,
        ),
    }
}

/// The feature views a push writes to: every view of the source's
/// namespace that names it as its stream source, sorted by name. These are
/// what a caller needs `update` on.
pub fn target_views(
    snapshot: &RegistrySnapshot,
    namespace: &str,
    source: &str,
) -> Result<Vec<Arc<ServedView>>, IngestError> {
    let defs = snapshot.namespace(namespace).ok_or_else(|| {
        IngestError::NotFound(format!("namespace {namespace} has no definitions"))
    })?;
    let stream = defs.stream_sources.get(source).ok_or_else(|| {
        IngestError::NotFound(format!(
            "no push source {source:?} in namespace {namespace}"
        ))
    })?;
    if !matches!(stream.kind, StreamKind::Push) {
        return Err(IngestError::Invalid(format!(
            "push_source_name: {namespace}/{source} is a kafka source; rows can be pushed only to a push source"
        )));
    }
    let mut views: Vec<Arc<ServedView>> = defs
        .views
        .values()
        .filter(|v| v.view.stream_source.as_deref() == Some(source))
        .cloned()
        .collect();
    if views.is_empty() {
        return Err(IngestError::NotFound(format!(
            "no feature view of namespace {namespace} names push source {source:?} as its streamSource"
        )));
    }
    views.sort_by(|a, b| a.view.name.cmp(&b.view.name));
    Ok(views)
}

/// Checks the columns against each view and builds its typed rows. Every
/// view needs its join keys, its features and the event timestamp column
/// (its batch source's `timestampField`); other columns are ignored. All
/// columns must have the same length. Errors name the column and row.
pub fn plan<'s>(
    snapshot: &'s RegistrySnapshot,
    namespace: &str,
    views: Vec<Arc<ServedView>>,
    request: PushRequest,
) -> Result<PushPlan<'s>, IngestError> {
    let defs = snapshot.namespace(namespace).ok_or_else(|| {
        IngestError::NotFound(format!("namespace {namespace} has no definitions"))
    })?;
    let invalid = |m: String| IngestError::Invalid(m);
    let rows = request.columns.first().map_or(0, |(_, v)| v.len());
    if rows == 0 {
        return Err(invalid("df: no rows to push".into()));
    }
    for (name, values) in &request.columns {
        if values.len() != rows {
            return Err(invalid(format!(
                "df: column {name:?} has {} values, but column {:?} has {rows}",
                values.len(),
                request.columns[0].0
            )));
        }
    }
    let column = |name: &str| {
        request
            .columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    };
    let mut out = Vec::with_capacity(views.len());
    for view in views {
        let v = &view.view;
        let ts_name = v
            .source
            .as_ref()
            .and_then(|s| defs.sources.get(s))
            .map_or("event_timestamp", |s| s.timestamp_field.as_str());
        let missing = |name: &str, what: &str| {
            invalid(format!(
                "df: column {name:?} ({what} of feature view {}) is missing",
                v.name
            ))
        };
        let times = column(ts_name).ok_or_else(|| missing(ts_name, "the event timestamp"))?;
        let keys: Vec<(&str, _, &Vec<Raw>)> = v
            .join_keys
            .iter()
            .map(|k| {
                column(&k.name)
                    .map(|c| (k.name.as_str(), k.value_type, c))
                    .ok_or_else(|| missing(&k.name, "a join key"))
            })
            .collect::<Result<_, _>>()?;
        let features: Vec<(&str, _, &Vec<Raw>)> = v
            .features
            .iter()
            .map(|f| {
                column(&f.name)
                    .map(|c| (f.name.as_str(), f.value_type, c))
                    .ok_or_else(|| missing(&f.name, "a feature"))
            })
            .collect::<Result<_, _>>()?;
        let mut view_rows = Vec::with_capacity(rows);
        for row in 0..rows {
            let at =
                |name: &str, e: String| invalid(format!("df: column {name:?}, row {row}: {e}"));
            let event_time = event_time(&times[row]).map_err(|e| at(ts_name, e))?;
            let mut key_values = Vec::with_capacity(keys.len());
            for (name, ty, values) in &keys {
                let value = typed(values[row].clone(), *ty).map_err(|e| at(name, e))?;
                if value.is_null() {
                    return Err(at(name, "a join key must not be null".into()));
                }
                key_values.push(value);
            }
            let mut feature_values = Vec::with_capacity(features.len());
            for (name, ty, values) in &features {
                feature_values.push(typed(values[row].clone(), *ty).map_err(|e| at(name, e))?);
            }
            view_rows.push(ViewRow {
                keys: key_values,
                event_time,
                values: feature_values,
            });
        }
        out.push((view, view_rows));
    }
    Ok(PushPlan { defs, views: out })
}
