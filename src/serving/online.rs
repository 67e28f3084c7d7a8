//! GetOnlineFeatures in domain terms: resolve the request against the
//! snapshot, plan one read of the online store, and assemble the columnar
//! response. Transports convert to and from their wire shapes around this.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{EventTime, FeatureRef, FieldStatus, RefParts, Value, ValueType};
use crate::online::codec::Stored;
use crate::online::{FieldRef, KeyRead, OnlineStore, ReadResult, codec, layout};
use crate::registry::{FastMap, RegistrySnapshot, ServedOdfv, ServedView};
use crate::transform::{Arg, InputSource, Outcome};

use super::ServingError;

/// Which features a request asks for.
#[derive(Debug, Clone)]
pub enum FeatureSelection {
    /// Feature references, `[namespace/]view:feature`.
    Refs(Vec<String>),
    /// A feature service name, `[namespace/]name`.
    Service(String),
}

/// A GetOnlineFeatures request in domain terms.
#[derive(Debug, Clone)]
pub struct OnlineRequest {
    pub features: FeatureSelection,
    /// Entity columns: join key name and one value per entity row.
    pub entities: Vec<(String, Vec<Value>)>,
    pub full_feature_names: bool,
    /// The namespace of unqualified refs, from the request's
    /// `x-larder-namespace` header; the server's default when absent.
    pub namespace: Option<String>,
    /// Entity integers came from JSON and have no width of their own: an
    /// INT64 value may fill an INT32 join key when it fits.
    pub untyped_integers: bool,
    /// Request data for on-demand views (gRPC `request_context`, HTTP
    /// `request_context`): field name and one value per entity row. A field
    /// not found here is looked up among the entity columns, where Feast's
    /// clients also send it.
    pub request_data: Vec<(String, Vec<Value>)>,
}

/// One output column: a value, status and event time per entity row.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub values: Vec<Cell>,
    pub statuses: Vec<FieldStatus>,
    pub event_times: Vec<EventTime>,
}

/// One value of a response. A present stored value is not decoded: it is
/// served as the bytes it is stored as, which are already the wire form
/// of a `feast.types.Value` (checked to be one). Join keys and on-demand
/// results are values.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Value(Value),
    /// Stored bytes in the response's [`OnlineResponse::read`].
    Stored(FieldRef),
}

/// The columnar response: join-key columns first, then the requested
/// features in the requested order.
#[derive(Debug)]
pub struct OnlineResponse {
    pub names: Vec<Arc<str>>,
    pub columns: Vec<Column>,
    /// On-demand values whose expression failed at run time (served as
    /// NULL_VALUE), for metrics.
    pub transform_errors: usize,
    /// What the store returned: the bytes [`Cell::Stored`] values point to.
    pub read: ReadResult,
}

impl OnlineResponse {
    /// The bytes of a stored cell: an encoded `feast.types.Value`.
    pub fn stored(&self, at: FieldRef) -> &[u8] {
        self.read.bytes(at)
    }

    /// A cell as a value, decoding stored bytes.
    pub fn value<'a>(&'a self, cell: &'a Cell) -> Cow<'a, Value> {
        match cell {
            Cell::Value(v) => Cow::Borrowed(v),
            Cell::Stored(at) => Cow::Owned(decode_stored(&self.read, *at)),
        }
    }
}

/// Limits on one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entity_rows: usize,
    pub max_features: usize,
}

/// A requested feature, resolved.
struct Output {
    source: OutputSource,
    name: Arc<str>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OutputSource {
    /// Feature `feature` of planned view `view`.
    Stored { view: usize, feature: usize },
    /// Feature `feature` of planned on-demand view `odfv`.
    OnDemand { odfv: usize, feature: usize },
}

/// A requested on-demand view: where each of its inputs comes from.
struct OdfvPlan<'a> {
    served: &'a ServedOdfv,
    /// Per compiled input: a planned view's feature, or a request column.
    inputs: Vec<PlannedInput>,
}

#[derive(Clone, Copy)]
enum PlannedInput {
    Stored {
        view: usize,
        feature: usize,
    },
    /// Index into the plan's request columns.
    Request(usize),
}

/// A requested view and where its fields sit in its group's field list.
struct ViewPlan<'a> {
    served: &'a ServedView,
    group: usize,
    ts_pos: usize,
    /// (feature index, field list position) of each feature asked for.
    feature_pos: Vec<(usize, usize)>,
}

impl ViewPlan<'_> {
    fn position_of(&self, feature: usize) -> usize {
        self.feature_pos
            .iter()
            .find(|(f, _)| *f == feature)
            .map(|(_, p)| *p)
            .expect("every output's feature is planned")
    }
}

/// Views stored under the same entity key: same project and join keys.
struct KeyGroup<'a> {
    served: &'a ServedView,
    fields: Vec<&'a [u8]>,
    /// For each entity row, its index in the list of keys read.
    row_key: Vec<usize>,
}

/// A request resolved against a snapshot: what to read, and how to turn
/// what comes back into the response. Borrows field names from the
/// snapshot, so planning copies no definitions.
pub struct Plan<'a> {
    views: Vec<ViewPlan<'a>>,
    groups: Vec<KeyGroup<'a>>,
    odfvs: Vec<OdfvPlan<'a>>,
    /// Typed request data columns the on-demand views read.
    request_columns: Vec<Vec<Value>>,
    outputs: Vec<Output>,
    key_columns: Vec<(String, Vec<Value>)>,
    rows: usize,
    /// The keys and fields to read, one entry per distinct stored key.
    pub reads: Vec<KeyRead<'a>>,
}

/// Resolves, reads and assembles one request. `on_read` is told how long
/// the store read took.
pub async fn get_online_features(
    snapshot: &RegistrySnapshot,
    store: &OnlineStore,
    default_namespace: &str,
    limits: Limits,
    request: OnlineRequest,
    deadline: Instant,
    on_read: impl FnOnce(Duration),
) -> Result<OnlineResponse, ServingError> {
    let plan = plan(
        snapshot,
        default_namespace,
        limits,
        request,
        store.key_version(),
    )?;
    let started = Instant::now();
    let left = deadline.saturating_duration_since(started);
    let read = store.read(&plan.reads);
    // One timer per request: a store that times out its reads by itself
    // within the time left needs no second one. (Every timer a request
    // arms can wake the runtime's timer driver.)
    let results = if store.read_timeout().is_some_and(|t| t <= left) {
        read.await?
    } else {
        tokio::time::timeout(left, read)
            .await
            .map_err(|_| ServingError::DeadlineExceeded(left))??
    };
    on_read(started.elapsed());
    plan.assemble(results, EventTime::now())
}

/// Resolves a request against the snapshot and plans its one read.
pub fn plan<'a>(
    snapshot: &'a RegistrySnapshot,
    default_namespace: &str,
    limits: Limits,
    request: OnlineRequest,
    key_version: layout::KeyVersion,
) -> Result<Plan<'a>, ServingError> {
    let namespace = request.namespace.as_deref().unwrap_or(default_namespace);
    let refs = expand_selection(snapshot, namespace, &request.features)?;
    if refs.is_empty() {
        return Err(ServingError::InvalidArgument(
            "the request names no features".into(),
        ));
    }
    if refs.len() > limits.max_features {
        return Err(ServingError::TooLarge(format!(
            "the request asks for {} features; the limit is {}",
            refs.len(),
            limits.max_features
        )));
    }

    // Resolve every ref to (view, feature), deduplicating views. Refs of
    // one view usually come together, so the last view is checked first.
    let mut views: Vec<ViewPlan<'a>> = Vec::new();
    let mut odfvs: Vec<OdfvPlan<'a>> = Vec::new();
    let mut outputs: Vec<Output> = Vec::with_capacity(refs.len());
    let mut last: Option<(RefParts, Resolved)> = None;
    for r in &refs {
        let resolved = match last {
            Some((l, v)) if l.view == r.view && l.namespace == r.namespace => v,
            _ => {
                let ns = r.namespace.unwrap_or(namespace);
                let Some(defs) = snapshot.namespace(ns) else {
                    return Err(ServingError::NotFound(format!(
                        "feature {r}: namespace {ns:?} has no feature definitions"
                    )));
                };
                let resolved = if let Some(served) = defs.views.get(r.view) {
                    let served: &'a ServedView = served;
                    if !served.view.online {
                        return Err(ServingError::InvalidArgument(format!(
                            "feature {r}: feature view {:?} is not served online (online: false)",
                            r.view
                        )));
                    }
                    Resolved::Stored(plan_view(&mut views, served))
                } else if let Some(odfv) = defs.odfvs.get(r.view) {
                    let odfv: &'a ServedOdfv = odfv;
                    match &odfv.stored {
                        // Computed at write time: read like a feature view.
                        Some(stored) => Resolved::Stored(plan_view(&mut views, stored)),
                        None => Resolved::OnDemand(plan_odfv(&mut odfvs, &mut views, odfv)),
                    }
                } else {
                    return Err(ServingError::NotFound(format!(
                        "feature {r}: no feature view {:?} in namespace {ns:?}",
                        r.view
                    )));
                };
                last = Some((*r, resolved));
                resolved
            }
        };
        let (source, name) = match resolved {
            Resolved::Stored(view) => {
                let served = views[view].served;
                let Some(feature) = served.feature_index(r.feature) else {
                    return Err(ServingError::NotFound(format!(
                        "feature {r}: feature view {:?} has no feature {:?}",
                        r.view, r.feature
                    )));
                };
                let name = if request.full_feature_names {
                    served.full_names[feature].clone()
                } else {
                    served.short_names[feature].clone()
                };
                (OutputSource::Stored { view, feature }, name)
            }
            Resolved::OnDemand(odfv) => {
                let served = odfvs[odfv].served;
                let Some(feature) = served.feature_index(r.feature) else {
                    return Err(ServingError::NotFound(format!(
                        "feature {r}: on-demand feature view {:?} has no feature {:?}",
                        r.view, r.feature
                    )));
                };
                let name = if request.full_feature_names {
                    served.full_names[feature].clone()
                } else {
                    served.short_names[feature].clone()
                };
                (OutputSource::OnDemand { odfv, feature }, name)
            }
        };
        outputs.push(Output { source, name });
    }
    if !request.full_feature_names {
        let mut seen = std::collections::HashSet::with_capacity(outputs.len());
        for o in &outputs {
            if !seen.insert(&*o.name) {
                return Err(ServingError::InvalidArgument(format!(
                    "feature name {:?} is requested from more than one view or more than once; \
                     set full_feature_names to tell them apart",
                    o.name
                )));
            }
        }
    }

    // Entity rows: equal lengths, within limits.
    let rows = request
        .entities
        .first()
        .or(request.request_data.first())
        .map_or(0, |(_, values)| values.len());
    for (name, values) in request.entities.iter().chain(&request.request_data) {
        if values.len() != rows {
            return Err(ServingError::InvalidArgument(format!(
                "column {name:?} has {} values but the first column has {rows}; \
                 every entity and request column needs one value per row",
                values.len(),
            )));
        }
    }
    let needs_entities = views.iter().any(|v| v.served.has_entities());
    if rows == 0 && needs_entities {
        return Err(ServingError::InvalidArgument(
            "the request has no entity rows".into(),
        ));
    }
    let rows = rows.max(1);
    if rows > limits.max_entity_rows {
        return Err(ServingError::TooLarge(format!(
            "the request has {rows} entity rows; the limit is {}",
            limits.max_entity_rows
        )));
    }

    // Group views by stored key; list each group's fields once.
    let mut groups: Vec<KeyGroup<'a>> = Vec::new();
    for (v, plan) in views.iter_mut().enumerate() {
        let served = plan.served;
        let existing = groups.iter().position(|g| {
            g.served.project == served.project && g.served.key_columns == served.key_columns
        });
        plan.group = existing.unwrap_or_else(|| {
            groups.push(KeyGroup {
                served,
                fields: Vec::new(),
                row_key: Vec::with_capacity(rows),
            });
            groups.len() - 1
        });
        let group = &mut groups[plan.group];
        plan.ts_pos = group.fields.len();
        group.fields.push(&served.ts_field);
        let stored = outputs.iter().filter_map(|o| match o.source {
            OutputSource::Stored { view, feature } if view == v => Some(feature),
            _ => None,
        });
        let inputs = odfvs
            .iter()
            .flat_map(|p| &p.inputs)
            .filter_map(|i| match *i {
                PlannedInput::Stored { view, feature } if view == v => Some(feature),
                _ => None,
            });
        for feature in stored.chain(inputs) {
            if !plan.feature_pos.iter().any(|(f, _)| *f == feature) {
                plan.feature_pos.push((feature, group.fields.len()));
                group.fields.push(&served.feature_fields[feature]);
            }
        }
    }

    // Check and convert the join-key columns each group needs, and build
    // one read per distinct stored key.
    let mut key_columns: Vec<(String, Vec<Value>)> = Vec::new();
    let mut reads: Vec<KeyRead<'a>> = Vec::new();
    let mut key_index: FastMap<Vec<u8>, usize> = FastMap::default();
    for group in &mut groups {
        let served = group.served;
        let names: Vec<&str> = served.key_columns.iter().map(|k| k.name.as_str()).collect();
        let mut columns: Vec<usize> = Vec::with_capacity(names.len());
        // A view without entities is stored under Feast's dummy key.
        let dummy = (!served.has_entities()).then(|| Value::String(String::new()));
        if served.has_entities() {
            for jk in &served.key_columns {
                let index = match key_columns.iter().position(|(n, _)| n == &jk.name) {
                    // The column was converted for another view: it must
                    // have been converted to the same type.
                    Some(i) if key_columns[i].1[0].value_type() == Some(jk.value_type) => i,
                    Some(i) => {
                        return Err(ServingError::InvalidArgument(format!(
                            "join key {:?} is {} in feature view {:?} but {} in another \
                             requested view; request them separately",
                            jk.name,
                            jk.value_type,
                            served.view.name,
                            key_columns[i].1[0]
                                .value_type()
                                .map_or("NULL", ValueType::name)
                        )));
                    }
                    None => {
                        let Some((_, given)) = request.entities.iter().find(|(n, _)| n == &jk.name)
                        else {
                            return Err(ServingError::InvalidArgument(format!(
                                "missing entity column {:?} (join key of feature view {:?})",
                                jk.name, served.view.name
                            )));
                        };
                        let typed = given
                            .iter()
                            .enumerate()
                            .map(|(row, v)| {
                                coerce_key(v, jk.value_type, request.untyped_integers).map_err(
                                    |found| {
                                        ServingError::InvalidArgument(format!(
                                            "entity column {:?}, row {row}: expected {}, found {found}",
                                            jk.name, jk.value_type
                                        ))
                                    },
                                )
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        key_columns.push((jk.name.clone(), typed));
                        key_columns.len() - 1
                    }
                };
                columns.push(index);
            }
        }
        let mut row_values: Vec<&Value> = Vec::with_capacity(names.len());
        for row in 0..rows {
            row_values.clear();
            match &dummy {
                Some(d) => row_values.push(d),
                None => row_values.extend(columns.iter().map(|c| &key_columns[*c].1[row])),
            }
            let key = layout::redis_key(&names, &row_values, &served.project, key_version)
                .map_err(|e| ServingError::InvalidArgument(e.to_string()))?;
            let index = match key_index.get(&key) {
                Some(i) => *i,
                None => {
                    key_index.insert(key.clone(), reads.len());
                    reads.push(KeyRead {
                        key,
                        fields: group.fields.clone(),
                        stored_fields: served.stored_under_key(),
                    });
                    reads.len() - 1
                }
            };
            group.row_key.push(index);
        }
    }
    key_columns.sort_by(|a, b| a.0.cmp(&b.0));

    // The request data on-demand views read, checked against its declared
    // type.
    let mut request_columns: Vec<Vec<Value>> = Vec::new();
    let mut request_names: Vec<&str> = Vec::new();
    for p in &mut odfvs {
        for (input, planned) in p.served.compiled.inputs.iter().zip(p.inputs.iter_mut()) {
            let InputSource::Request { .. } = input.source else {
                continue;
            };
            if let Some(i) = request_names.iter().position(|n| *n == input.name) {
                let same_type = request_columns[i]
                    .iter()
                    .find_map(Value::value_type)
                    .is_none_or(|t| t == input.value_type);
                if !same_type {
                    return Err(ServingError::InvalidArgument(format!(
                        "request field {:?} has different types in two requested on-demand \
                         views; request them separately",
                        input.name
                    )));
                }
                *planned = PlannedInput::Request(i);
                continue;
            }
            let given = request
                .request_data
                .iter()
                .chain(&request.entities)
                .find(|(n, _)| *n == input.name)
                .ok_or_else(|| {
                    ServingError::InvalidArgument(format!(
                        "missing request field {:?} ({}), read by on-demand feature view {:?}: \
                         send it in request_context",
                        input.name, input.value_type, p.served.odfv.name
                    ))
                })?;
            let typed = given
                .1
                .iter()
                .enumerate()
                .map(|(row, v)| {
                    coerce_request(v, input.value_type, request.untyped_integers).map_err(|found| {
                        ServingError::InvalidArgument(format!(
                            "request field {:?}, row {row}: expected {}, found {found}",
                            input.name, input.value_type
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            request_names.push(&input.name);
            request_columns.push(if typed.is_empty() {
                vec![Value::Null; rows]
            } else {
                typed
            });
            *planned = PlannedInput::Request(request_columns.len() - 1);
        }
    }
    Ok(Plan {
        views,
        groups,
        odfvs,
        request_columns,
        outputs,
        key_columns,
        rows,
        reads,
    })
}

/// What a ref's view resolved to: an index into the planned views or the
/// planned on-demand views.
#[derive(Clone, Copy)]
enum Resolved {
    Stored(usize),
    OnDemand(usize),
}

/// The index of `served` among the planned views, adding it when new.
fn plan_view<'a>(views: &mut Vec<ViewPlan<'a>>, served: &'a ServedView) -> usize {
    match views.iter().position(|v| std::ptr::eq(v.served, served)) {
        Some(i) => i,
        None => {
            views.push(ViewPlan {
                served,
                group: usize::MAX,
                ts_pos: 0,
                feature_pos: Vec::new(),
            });
            views.len() - 1
        }
    }
}

/// The index of `served` among the planned on-demand views, adding it
/// (and the source views it reads) when new.
fn plan_odfv<'a>(
    odfvs: &mut Vec<OdfvPlan<'a>>,
    views: &mut Vec<ViewPlan<'a>>,
    served: &'a ServedOdfv,
) -> usize {
    if let Some(i) = odfvs.iter().position(|p| std::ptr::eq(p.served, served)) {
        return i;
    }
    let inputs = served
        .compiled
        .inputs
        .iter()
        .map(|input| match input.source {
            InputSource::View { view, feature } => PlannedInput::Stored {
                view: plan_view(views, &served.sources[view]),
                feature,
            },
            // Filled in once the request's columns are known.
            InputSource::Request { .. } => PlannedInput::Request(usize::MAX),
        })
        .collect();
    odfvs.push(OdfvPlan { served, inputs });
    odfvs.len() - 1
}

/// Converts a request data value to its declared type. JSON numbers have no
/// type of their own: an integer may fill a DOUBLE or FLOAT field, and an
/// INT32 one when it fits.
fn coerce_request(value: &Value, target: ValueType, untyped: bool) -> Result<Value, String> {
    if untyped {
        match (value, target) {
            (Value::Int64(i), ValueType::Double) => return Ok(Value::Double(*i as f64)),
            (Value::Int64(i), ValueType::Float) => return Ok(Value::Float(*i as f32)),
            (Value::Double(d), ValueType::Float) => return Ok(Value::Float(*d as f32)),
            _ => {}
        }
    }
    if value.is_null() {
        return Ok(Value::Null);
    }
    coerce_key(value, target, untyped)
}

impl Plan<'_> {
    /// Builds the response from what the store returned for `self.reads`.
    pub fn assemble(
        mut self,
        read: ReadResult,
        now: EventTime,
    ) -> Result<OnlineResponse, ServingError> {
        let results = &read;
        if results.len() != self.reads.len() {
            return Err(ServingError::Internal(format!(
                "online store answered {} keys for {} asked",
                results.len(),
                self.reads.len()
            )));
        }
        // Event times per (view, key), decoded once.
        let mut event_times: Vec<Vec<Option<EventTime>>> = Vec::with_capacity(self.views.len());
        for plan in &self.views {
            let group = &self.groups[plan.group];
            let mut times = vec![None; results.len()];
            for &k in &group.row_key {
                if times[k].is_none() {
                    times[k] = results
                        .get(k, plan.ts_pos)
                        .map(|b| codec::decode_timestamp(b).unwrap_or(EventTime::EPOCH));
                }
            }
            event_times.push(times);
        }

        let width = self.key_columns.len() + self.outputs.len();
        let mut names = Vec::with_capacity(width);
        let mut columns = Vec::with_capacity(width);
        for (name, values) in std::mem::take(&mut self.key_columns) {
            names.push(Arc::from(name));
            columns.push(Column {
                statuses: vec![FieldStatus::Present; values.len()],
                event_times: vec![EventTime::EPOCH; values.len()],
                values: values.into_iter().map(Cell::Value).collect(),
            });
        }
        // On-demand outcomes per planned on-demand view, row and feature,
        // with the newest event time of the stored inputs of each row.
        let mut transform_errors = 0;
        let mut computed: Vec<(Vec<Vec<Outcome>>, Vec<EventTime>)> =
            Vec::with_capacity(self.odfvs.len());
        for p in &self.odfvs {
            let mut per_row = Vec::with_capacity(self.rows);
            let mut times = Vec::with_capacity(self.rows);
            let mut cells: Vec<(Value, FieldStatus)> = Vec::with_capacity(p.inputs.len());
            // Where each stored input sits in its view's field list.
            let positions: Vec<usize> = p
                .inputs
                .iter()
                .map(|i| match *i {
                    PlannedInput::Stored { view, feature } => self.views[view].position_of(feature),
                    PlannedInput::Request(_) => 0,
                })
                .collect();
            for row in 0..self.rows {
                cells.clear();
                let mut newest = EventTime::EPOCH;
                for (input, &pos) in p.inputs.iter().zip(&positions) {
                    cells.push(match *input {
                        PlannedInput::Stored { view, .. } => {
                            let (cell, status, time) =
                                self.cell(results, &event_times, view, pos, row, now);
                            if status == FieldStatus::Present {
                                newest = newest.max(time);
                            }
                            (decoded(results, cell), status)
                        }
                        PlannedInput::Request(c) => {
                            let value = self.request_columns[c][row].clone();
                            let status = if value.is_null() {
                                FieldStatus::NullValue
                            } else {
                                FieldStatus::Present
                            };
                            (value, status)
                        }
                    });
                }
                let args: Vec<Arg<'_>> = cells
                    .iter()
                    .map(|(v, status)| match status {
                        FieldStatus::Present => Arg::Present(v),
                        FieldStatus::NotFound | FieldStatus::OutsideMaxAge => Arg::Missing,
                        FieldStatus::NullValue | FieldStatus::Invalid => Arg::Null,
                    })
                    .collect();
                let mut outcomes = Vec::with_capacity(p.served.compiled.features.len());
                p.served.compiled.evaluate(&args, &mut outcomes);
                transform_errors += outcomes
                    .iter()
                    .filter(|o| matches!(o, Outcome::Failed(_)))
                    .count();
                per_row.push(outcomes);
                times.push(newest);
            }
            computed.push((per_row, times));
        }

        for o in std::mem::take(&mut self.outputs) {
            let mut column = Column {
                values: Vec::with_capacity(self.rows),
                statuses: Vec::with_capacity(self.rows),
                event_times: Vec::with_capacity(self.rows),
            };
            match o.source {
                OutputSource::Stored { view, feature } => {
                    let pos = self.views[view].position_of(feature);
                    for row in 0..self.rows {
                        let (value, status, time) =
                            self.cell(results, &event_times, view, pos, row, now);
                        column.values.push(value);
                        column.statuses.push(status);
                        column.event_times.push(time);
                    }
                }
                OutputSource::OnDemand { odfv, feature } => {
                    let (per_row, times) = &computed[odfv];
                    for (outcomes, time) in per_row.iter().zip(times) {
                        let (value, status) = match &outcomes[feature] {
                            Outcome::Value(v) => (v.clone(), FieldStatus::Present),
                            Outcome::Missing => (Value::Null, FieldStatus::NotFound),
                            Outcome::Null | Outcome::Failed(_) => {
                                (Value::Null, FieldStatus::NullValue)
                            }
                        };
                        column.values.push(Cell::Value(value));
                        column.statuses.push(status);
                        column.event_times.push(*time);
                    }
                }
            }
            names.push(o.name);
            columns.push(column);
        }
        Ok(OnlineResponse {
            names,
            columns,
            transform_errors,
            read,
        })
    }

    /// The response cell, status and event time of the field at `pos` of
    /// planned view `view`'s group for entity row `row`. A present value
    /// stays the bytes it is stored as.
    fn cell(
        &self,
        results: &ReadResult,
        event_times: &[Vec<Option<EventTime>>],
        view: usize,
        pos: usize,
        row: usize,
        now: EventTime,
    ) -> (Cell, FieldStatus, EventTime) {
        let plan = &self.views[view];
        let k = self.groups[plan.group].row_key[row];
        let null = || Cell::Value(Value::Null);
        let Some(at) = results.locate(k, pos) else {
            return (null(), FieldStatus::NotFound, EventTime::EPOCH);
        };
        let time = event_times[view][k].unwrap_or(EventTime::EPOCH);
        match codec::classify_value(results.bytes(at)) {
            Stored::Invalid => (null(), FieldStatus::Invalid, time),
            _ if plan
                .served
                .view
                .ttl
                .is_some_and(|ttl| time.older_than(ttl, now)) =>
            {
                (null(), FieldStatus::OutsideMaxAge, time)
            }
            Stored::Null => (null(), FieldStatus::NullValue, time),
            Stored::Present => (Cell::Stored(at), FieldStatus::Present, time),
        }
    }
}

/// A response cell as a value (on-demand inputs are values).
fn decoded(results: &ReadResult, cell: Cell) -> Value {
    match cell {
        Cell::Stored(at) => decode_stored(results, at),
        Cell::Value(v) => v,
    }
}

/// A stored value classified present when the response was assembled,
/// which therefore decodes.
fn decode_stored(results: &ReadResult, at: FieldRef) -> Value {
    codec::decode_value(results.bytes(at)).unwrap_or(Value::Null)
}

/// Turns a selection into borrowed feature references. A service's
/// unqualified refs belong to the service's own namespace.
fn expand_selection<'r>(
    snapshot: &'r RegistrySnapshot,
    namespace: &'r str,
    selection: &'r FeatureSelection,
) -> Result<Vec<RefParts<'r>>, ServingError> {
    match selection {
        FeatureSelection::Refs(refs) => refs
            .iter()
            .map(|r| FeatureRef::split(r).map_err(|e| ServingError::InvalidArgument(e.to_string())))
            .collect(),
        FeatureSelection::Service(name) => {
            let (ns, name) = match name.split_once('/') {
                Some((ns, name)) => (ns, name),
                None => (namespace, name.as_str()),
            };
            if name.is_empty() {
                return Err(ServingError::InvalidArgument(
                    "the feature service name is empty".into(),
                ));
            }
            let service = snapshot.service(ns, name).ok_or_else(|| {
                ServingError::NotFound(format!("no feature service {name:?} in namespace {ns:?}"))
            })?;
            Ok(service
                .features
                .iter()
                .map(|r| RefParts {
                    namespace: Some(r.namespace.as_deref().unwrap_or(ns)),
                    ..r.parts()
                })
                .collect())
        }
    }
}

/// Converts an entity value to its join key's declared type, losslessly.
fn coerce_key(value: &Value, target: ValueType, untyped_integers: bool) -> Result<Value, String> {
    if untyped_integers
        && target == ValueType::Int32
        && let Value::Int64(i) = value
    {
        return i32::try_from(*i)
            .map(Value::Int32)
            .map_err(|_| format!("{i}, which does not fit INT32"));
    }
    value.clone().coerce_to(target).map_err(|e| match e.found {
        Some(t) => t.to_string(),
        None => "a null".to_owned(),
    })
}

/// The server-side budget of one request: the client's deadline when it
/// sent one, capped by the server's own request timeout.
pub fn effective_deadline(client: Option<Duration>, server: Duration) -> Instant {
    let budget = client.map_or(server, |c| c.min(server));
    Instant::now() + budget
}
