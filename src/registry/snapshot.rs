//! The registry snapshot: an immutable, versioned view of all definitions
//! with the lookups the serving path needs computed once, up front.

use std::collections::{BTreeMap, HashMap};

/// Maps of the snapshot use a fast, seeded hasher: they are read on every
/// request and keyed by names.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::definitions::{DefinitionError, Located, Object, ObjectId};
use crate::model::Value;
use crate::model::{
    DUMMY_JOIN_KEY, Entity, Feature, FeatureService, FeatureView, JoinKey, OnDemandFeatureView,
    ValueType, default_project_for,
};
use crate::model::{DataSource, StreamSource};
use crate::online::{ViewRow, layout};
use crate::transform::{Arg, CompiledView, InputSource, Outcome, SourceView};

/// Everything the feature server knows about definitions, at one version.
/// Built once, shared behind an `Arc`, never mutated: a new version is a new
/// snapshot.
#[derive(Debug, Default)]
pub struct RegistrySnapshot {
    version: u64,
    namespaces: FastMap<String, NamespaceDefs>,
}

/// The definitions of one namespace (one Feast project).
#[derive(Debug)]
pub struct NamespaceDefs {
    pub name: String,
    /// The Feast project name keys are stored under.
    pub project: String,
    pub entities: BTreeMap<String, Entity>,
    pub sources: BTreeMap<String, DataSource>,
    /// Push and Kafka sources, by name.
    pub stream_sources: BTreeMap<String, StreamSource>,
    pub views: FastMap<String, Arc<ServedView>>,
    pub odfvs: FastMap<String, Arc<ServedOdfv>>,
    pub services: FastMap<String, Arc<FeatureService>>,
}

/// An on-demand feature view with its compiled expressions and its source
/// views resolved.
#[derive(Debug)]
pub struct ServedOdfv {
    pub odfv: OnDemandFeatureView,
    pub compiled: CompiledView,
    /// The source views, in the order of `odfv.source_views`.
    pub sources: Vec<Arc<ServedView>>,
    /// How a view computed at write time is stored: like a feature view
    /// with its source's entities and TTL. `None` for a view computed per
    /// request.
    pub stored: Option<Arc<ServedView>>,
    feature_index: FastMap<String, usize>,
    /// `<view>__<feature>` per feature.
    pub full_names: Vec<Arc<str>>,
    /// The feature names alone: output names without full feature names.
    pub short_names: Vec<Arc<str>>,
}

impl ServedOdfv {
    pub fn feature_index(&self, feature: &str) -> Option<usize> {
        self.feature_index.get(feature).copied()
    }

    /// For a view computed at write time: its rows computed from rows of
    /// its source view (same keys, same event time). Returns the rows and
    /// how many values failed at run time (stored as null, and logged).
    pub fn derive_rows(&self, rows: &[ViewRow]) -> (Vec<ViewRow>, usize) {
        let mut errors = 0;
        let mut out = Vec::with_capacity(rows.len());
        let mut outcomes = Vec::with_capacity(self.compiled.features.len());
        for row in rows {
            let args: Vec<Arg<'_>> = self
                .compiled
                .inputs
                .iter()
                .map(|input| match input.source {
                    InputSource::View { feature, .. } => match row.values.get(feature) {
                        Some(Value::Null) | None => Arg::Null,
                        Some(v) => Arg::Present(v),
                    },
                    InputSource::Request { .. } => Arg::Missing,
                })
                .collect();
            outcomes.clear();
            self.compiled.evaluate(&args, &mut outcomes);
            let values = outcomes
                .drain(..)
                .map(|o| match o {
                    Outcome::Value(v) => v,
                    Outcome::Failed(_) => {
                        errors += 1;
                        Value::Null
                    }
                    Outcome::Missing | Outcome::Null => Value::Null,
                })
                .collect();
            out.push(ViewRow {
                keys: row.keys.clone(),
                event_time: row.event_time,
                values,
            });
        }
        if errors > 0 {
            tracing::warn!(
                view = %self.odfv.name,
                errors,
                "on-demand expressions failed on some rows; those values are stored as null"
            );
        }
        (out, errors)
    }
}

impl NamespaceDefs {
    /// The views computed at write time from rows of feature view `view`.
    pub fn derived_from<'a>(&'a self, view: &'a str) -> impl Iterator<Item = &'a Arc<ServedOdfv>> {
        self.odfvs.values().filter(move |o| {
            o.stored.is_some() && o.odfv.source_views.first().is_some_and(|s| s == view)
        })
    }
}

/// A feature view with what serving needs precomputed: the Redis hash
/// fields of every feature and of the view's event timestamp.
#[derive(Debug)]
pub struct ServedView {
    pub view: FeatureView,
    pub project: String,
    /// `murmur3("<view>:<feature>")` for each feature, in feature order.
    pub feature_fields: Vec<[u8; 4]>,
    /// `_ts:<view>`.
    pub ts_field: Vec<u8>,
    /// Join keys in the order Feast serializes them (sorted by name); the
    /// dummy key for a view without entities.
    pub key_columns: Vec<JoinKey>,
    feature_index: FastMap<String, usize>,
    /// `<view>__<feature>` per feature: output names with full feature
    /// names. Shared, so that a response names its columns without copying
    /// them.
    pub full_names: Vec<Arc<str>>,
    /// The feature names alone: output names without full feature names.
    pub short_names: Vec<Arc<str>>,
    /// Fields stored under this view's keys by every view sharing them
    /// (same project and join keys): features plus one `_ts` field each.
    /// Set once the whole snapshot is built.
    stored_under_key: AtomicUsize,
}

impl ServedView {
    fn new(view: FeatureView, project: String) -> Self {
        let feature_fields = view
            .features
            .iter()
            .map(|f| layout::feature_field(&view.name, &f.name))
            .collect();
        let ts_field = layout::timestamp_field(&view.name);
        let key_columns = if view.join_keys.is_empty() {
            vec![JoinKey {
                name: DUMMY_JOIN_KEY.to_owned(),
                value_type: ValueType::String,
            }]
        } else {
            view.join_keys.clone()
        };
        let feature_index = view
            .features
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        let full_names = view
            .features
            .iter()
            .map(|f| Arc::from(format!("{}__{}", view.name, f.name)))
            .collect();
        let short_names = view.features.iter().map(|f| Arc::from(&*f.name)).collect();
        ServedView {
            full_names,
            short_names,
            view,
            project,
            feature_fields,
            ts_field,
            key_columns,
            feature_index,
            stored_under_key: AtomicUsize::new(0),
        }
    }

    /// How many fields the definitions store under one of this view's
    /// keys, counting every view that shares them.
    pub fn stored_under_key(&self) -> usize {
        self.stored_under_key.load(Ordering::Relaxed)
    }

    pub fn feature_index(&self, feature: &str) -> Option<usize> {
        self.feature_index.get(feature).copied()
    }

    pub fn has_entities(&self) -> bool {
        !self.view.join_keys.is_empty()
    }
}

impl RegistrySnapshot {
    /// Builds a snapshot, checking every reference between objects.
    /// `projects` overrides the Feast project name of a namespace.
    pub fn build(
        objects: Vec<Located>,
        version: u64,
        projects: &BTreeMap<String, String>,
    ) -> Result<Self, DefinitionError> {
        let mut namespaces: FastMap<String, NamespaceDefs> = FastMap::default();
        let mut views: Vec<(ObjectId, FeatureView)> = Vec::new();
        let mut services: Vec<(ObjectId, FeatureService)> = Vec::new();
        let mut odfvs: Vec<(ObjectId, OnDemandFeatureView)> = Vec::new();
        let mut stream_sources: Vec<(ObjectId, StreamSource)> = Vec::new();
        let mut seen: HashMap<(String, String, String), ObjectId> = HashMap::new();

        for Located { id, object } in objects {
            let key = (id.kind.clone(), id.namespace.clone(), id.name.clone());
            if let Some(first) = seen.get(&key) {
                return Err(DefinitionError::new(
                    &id,
                    "metadata.name",
                    format!("defined twice (first in {})", first.origin),
                ));
            }
            seen.insert(key, id.clone());
            let ns = namespaces
                .entry(id.namespace.clone())
                .or_insert_with(|| NamespaceDefs {
                    name: id.namespace.clone(),
                    project: projects
                        .get(&id.namespace)
                        .cloned()
                        .unwrap_or_else(|| default_project_for(&id.namespace)),
                    entities: BTreeMap::new(),
                    sources: BTreeMap::new(),
                    stream_sources: BTreeMap::new(),
                    views: FastMap::default(),
                    odfvs: FastMap::default(),
                    services: FastMap::default(),
                });
            match object {
                Object::Entity(e) => {
                    ns.entities.insert(e.name.clone(), e);
                }
                Object::DataSource(s) => {
                    ns.sources.insert(s.name.clone(), s);
                }
                Object::StreamSource(s) => stream_sources.push((id, s)),
                Object::FeatureView(v) => views.push((id, v)),
                Object::FeatureService(s) => services.push((id, s)),
                Object::OnDemandFeatureView(v) => odfvs.push((id, v)),
            }
        }

        for (id, stream) in stream_sources {
            let ns = namespaces
                .get_mut(&id.namespace)
                .expect("namespace inserted above");
            if !ns.sources.contains_key(&stream.batch_source) {
                return Err(DefinitionError::new(
                    &id,
                    "spec.batchSource",
                    format!(
                        "no batch data source {:?} (type postgres or sqlite) in namespace {}",
                        stream.batch_source, id.namespace
                    ),
                ));
            }
            ns.stream_sources.insert(stream.name.clone(), stream);
        }

        for (id, mut view) in views {
            let ns = namespaces
                .get_mut(&id.namespace)
                .expect("namespace inserted above");
            let mut join_keys: Vec<JoinKey> = Vec::new();
            for (i, entity_name) in view.entities.iter().enumerate() {
                let entity = ns.entities.get(entity_name).ok_or_else(|| {
                    DefinitionError::new(
                        &id,
                        &format!("spec.entities[{i}]"),
                        format!("no entity {entity_name:?} in namespace {}", id.namespace),
                    )
                })?;
                for jk in &entity.join_keys {
                    if join_keys.iter().any(|k| k.name == jk.name) {
                        return Err(DefinitionError::new(
                            &id,
                            &format!("spec.entities[{i}]"),
                            format!("join key {:?} appears in two entities", jk.name),
                        ));
                    }
                    join_keys.push(jk.clone());
                }
            }
            join_keys.sort_by(|a, b| a.name.cmp(&b.name));
            view.join_keys = join_keys;
            if let Some(name) = &view.stream_source {
                let stream = ns.stream_sources.get(name).ok_or_else(|| {
                    DefinitionError::new(
                        &id,
                        "spec.streamSource",
                        format!(
                            "no push or kafka source {name:?} in namespace {}",
                            id.namespace
                        ),
                    )
                })?;
                // The view's history is the stream's batch source: rows
                // logged there are what training reads and materialization
                // copies.
                match &view.source {
                    None => view.source = Some(stream.batch_source.clone()),
                    Some(source) if *source == stream.batch_source => {}
                    Some(source) => {
                        return Err(DefinitionError::new(
                            &id,
                            "spec.source",
                            format!(
                                "{source:?} differs from the batch source {:?} of stream source {name:?}; \
                                 omit spec.source or make them the same",
                                stream.batch_source
                            ),
                        ));
                    }
                }
            }
            if let Some(source) = &view.source
                && !ns.sources.contains_key(source)
            {
                return Err(DefinitionError::new(
                    &id,
                    "spec.source",
                    format!("no data source {source:?} in namespace {}", id.namespace),
                ));
            }
            let served = ServedView::new(view, ns.project.clone());
            ns.views.insert(served.view.name.clone(), Arc::new(served));
        }

        for (id, odfv) in odfvs {
            let ns = namespaces
                .get_mut(&id.namespace)
                .expect("namespace inserted above");
            let served = ServedOdfv::build(&id, odfv, ns)?;
            ns.odfvs.insert(served.odfv.name.clone(), Arc::new(served));
        }

        for (id, service) in services {
            for (i, r) in service.features.iter().enumerate() {
                let field = format!("spec.features[{i}]");
                let ns_name = r.namespace.as_deref().unwrap_or(&id.namespace);
                let defs = namespaces.get(ns_name);
                let known = match (
                    defs.and_then(|ns| ns.views.get(&r.view)),
                    defs.and_then(|ns| ns.odfvs.get(&r.view)),
                ) {
                    (Some(view), _) => view.feature_index(&r.feature).is_some(),
                    (None, Some(odfv)) => odfv.feature_index(&r.feature).is_some(),
                    (None, None) => {
                        return Err(DefinitionError::new(
                            &id,
                            &field,
                            format!("no feature view {:?} in namespace {ns_name}", r.view),
                        ));
                    }
                };
                if !known {
                    return Err(DefinitionError::new(
                        &id,
                        &field,
                        format!("feature view {:?} has no feature {:?}", r.view, r.feature),
                    ));
                }
            }
            let ns = namespaces
                .get_mut(&id.namespace)
                .expect("namespace inserted above");
            ns.services.insert(service.name.clone(), Arc::new(service));
        }

        count_stored_fields(&namespaces);
        Ok(RegistrySnapshot {
            version,
            namespaces,
        })
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn namespace(&self, name: &str) -> Option<&NamespaceDefs> {
        self.namespaces.get(name)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &NamespaceDefs> {
        self.namespaces.values()
    }

    pub fn view(&self, namespace: &str, name: &str) -> Option<&Arc<ServedView>> {
        self.namespaces.get(namespace)?.views.get(name)
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&Arc<FeatureService>> {
        self.namespaces.get(namespace)?.services.get(name)
    }

    pub fn odfv(&self, namespace: &str, name: &str) -> Option<&Arc<ServedOdfv>> {
        self.namespaces.get(namespace)?.odfvs.get(name)
    }
}

impl ServedOdfv {
    /// Resolves the sources of `odfv` in `ns` and compiles its expressions.
    fn build(
        id: &ObjectId,
        odfv: OnDemandFeatureView,
        ns: &NamespaceDefs,
    ) -> Result<ServedOdfv, DefinitionError> {
        if ns.views.contains_key(&odfv.name) {
            return Err(DefinitionError::new(
                id,
                "metadata.name",
                format!(
                    "a feature view named {:?} exists in namespace {}: feature refs could not \
                     tell them apart",
                    odfv.name, id.namespace
                ),
            ));
        }
        let mut sources = Vec::with_capacity(odfv.source_views.len());
        for (i, name) in odfv.source_views.iter().enumerate() {
            let view = ns.views.get(name).ok_or_else(|| {
                DefinitionError::new(
                    id,
                    &format!("spec.sources.featureViews[{i}]"),
                    format!("no feature view {name:?} in namespace {}", id.namespace),
                )
            })?;
            sources.push(Arc::clone(view));
        }
        let source_views: Vec<SourceView<'_>> = sources
            .iter()
            .map(|v| SourceView {
                name: &v.view.name,
                features: &v.view.features,
            })
            .collect();
        let compiled = CompiledView::compile(&odfv, &source_views)
            .map_err(|e| DefinitionError::new(id, &e.field, e.message))?;
        let stored = odfv.write_to_online_store.then(|| {
            let source = &sources[0].view;
            Arc::new(ServedView::new(
                FeatureView {
                    name: odfv.name.clone(),
                    namespace: odfv.namespace.clone(),
                    entities: source.entities.clone(),
                    join_keys: source.join_keys.clone(),
                    features: odfv
                        .features
                        .iter()
                        .map(|f| Feature {
                            name: f.name.clone(),
                            value_type: f.value_type,
                        })
                        .collect(),
                    ttl: source.ttl,
                    online: true,
                    source: None,
                    stream_source: None,
                    description: odfv.description.clone(),
                    labels: odfv.labels.clone(),
                },
                ns.project.clone(),
            ))
        });
        let feature_index = odfv
            .features
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        let full_names = odfv
            .features
            .iter()
            .map(|f| Arc::from(format!("{}__{}", odfv.name, f.name)))
            .collect();
        let short_names = odfv.features.iter().map(|f| Arc::from(&*f.name)).collect();
        Ok(ServedOdfv {
            odfv,
            compiled,
            sources,
            stored,
            feature_index,
            full_names,
            short_names,
        })
    }
}

/// Records in every served view how many fields all the views sharing its
/// keys (same project, same join keys) store under one key.
fn count_stored_fields(namespaces: &FastMap<String, NamespaceDefs>) {
    let stored = || {
        namespaces.values().flat_map(|ns| {
            ns.views
                .values()
                .chain(ns.odfvs.values().filter_map(|o| o.stored.as_ref()))
        })
    };
    let mut per_key: FastMap<(&str, &[JoinKey]), usize> = FastMap::default();
    for v in stored() {
        *per_key
            .entry((v.project.as_str(), v.key_columns.as_slice()))
            .or_default() += v.view.features.len() + 1;
    }
    for v in stored() {
        let n = per_key[&(v.project.as_str(), v.key_columns.as_slice())];
        v.stored_under_key.store(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definitions::parse_documents;

    fn build(text: &str) -> Result<RegistrySnapshot, DefinitionError> {
        RegistrySnapshot::build(parse_documents("t.yaml", text)?, 1, &BTreeMap::new())
    }

    const BASE: &str = r#"
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: driver, namespace: kubeflow-alice }
spec: { joinKeys: [{ name: driver_id, valueType: INT64 }] }
---
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: rider, namespace: kubeflow-alice }
spec: { joinKeys: [{ name: rider_name, valueType: STRING }] }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_rider_fv, namespace: kubeflow-alice }
spec:
  entities: [rider, driver]
  features: [{ name: rides_together, valueType: INT64 }]
"#;

    #[test]
    fn resolves_join_keys_sorted() {
        let snap = build(BASE).unwrap();
        let v = snap.view("kubeflow-alice", "driver_rider_fv").unwrap();
        let names: Vec<_> = v.key_columns.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["driver_id", "rider_name"]);
        assert_eq!(v.project, "kubeflow_alice");
        assert_eq!(v.ts_field, b"_ts:driver_rider_fv");
    }

    #[test]
    fn views_sharing_keys_count_each_others_fields() {
        let more = format!(
            "{BASE}---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: {{ name: a_fv, namespace: kubeflow-alice }}
spec:
  entities: [driver]
  features: [{{ name: x, valueType: INT64 }}, {{ name: y, valueType: INT64 }}]
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: {{ name: b_fv, namespace: kubeflow-alice }}
spec:
  entities: [driver]
  features: [{{ name: z, valueType: INT64 }}]
"
        );
        let snap = build(&more).unwrap();
        let n = |v: &str| snap.view("kubeflow-alice", v).unwrap().stored_under_key();
        // a_fv and b_fv share driver_id keys: 2 + 1 features, 2 `_ts`.
        assert_eq!(n("a_fv"), 5);
        assert_eq!(n("b_fv"), 5);
        // The two-key view has its keys to itself.
        assert_eq!(n("driver_rider_fv"), 2);
    }

    #[test]
    fn unknown_entity_is_named() {
        let err = build(&BASE.replace("[rider, driver]", "[rider, drivr]")).unwrap_err();
        assert_eq!(err.field, "spec.entities[1]");
        assert!(err.message.contains("drivr"));
    }

    #[test]
    fn service_refs_must_resolve() {
        let svc = r#"
---
apiVersion: features.kubeflow.org/v1
kind: FeatureService
metadata: { name: svc, namespace: kubeflow-alice }
spec: { features: ["driver_rider_fv:nope"] }
"#;
        let err = build(&format!("{BASE}{svc}")).unwrap_err();
        assert_eq!(err.field, "spec.features[0]");
        assert!(err.message.contains("nope"));
    }

    const STREAM: &str = r#"
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: rides, namespace: kubeflow-alice }
spec: { type: postgres, table: rides, timestampField: event_timestamp }
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: rides_push, namespace: kubeflow-alice }
spec: { type: push, batchSource: rides }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: rides_fv, namespace: kubeflow-alice }
spec:
  entities: [driver]
  streamSource: rides_push
  features: [{ name: rides, valueType: INT64 }]
"#;

    #[test]
    fn a_stream_view_takes_its_batch_source() {
        let snap = build(&format!("{BASE}{STREAM}")).unwrap();
        let ns = snap.namespace("kubeflow-alice").unwrap();
        assert_eq!(
            ns.views["rides_fv"].view.source.as_deref(),
            Some("rides"),
            "the stream's batch source"
        );
        assert!(ns.stream_sources.contains_key("rides_push"));
    }

    #[test]
    fn stream_references_must_resolve() {
        let err = build(&format!(
            "{BASE}{}",
            STREAM.replace("batchSource: rides", "batchSource: ridez")
        ))
        .unwrap_err();
        assert_eq!(err.field, "spec.batchSource");
        assert!(err.message.contains("ridez"));

        let err = build(&format!(
            "{BASE}{}",
            STREAM.replace("streamSource: rides_push", "streamSource: nope")
        ))
        .unwrap_err();
        assert_eq!(err.field, "spec.streamSource");

        let other = STREAM.replace(
            "streamSource: rides_push",
            "streamSource: rides_push\n  source: rides_push",
        );
        let err = build(&format!("{BASE}{other}")).unwrap_err();
        assert_eq!(err.field, "spec.source");
        assert!(err.message.contains("differs"), "{err}");
    }

    #[test]
    fn stream_sources_are_checked_by_field() {
        let push_with_topic = STREAM.replace(
            "{ type: push, batchSource: rides }",
            "{ type: push, batchSource: rides, topic: t }",
        );
        let err = build(&format!("{BASE}{push_with_topic}")).unwrap_err();
        assert_eq!(err.field, "spec.topic");
        let kafka = |extra: &str| {
            STREAM.replace(
                "{ type: push, batchSource: rides }",
                &format!(
                    "{{ type: kafka, batchSource: rides, bootstrapServers: 'k:9092', {extra} }}"
                ),
            )
        };
        for (extra, field) in [
            ("topic: 'bad topic'", "spec.topic"),
            ("topic: t, format: avro", "spec.format"),
            ("topic: t, deadLetterTopic: t", "spec.deadLetterTopic"),
            ("format: json", "spec.topic"),
        ] {
            let err = build(&format!("{BASE}{}", kafka(extra))).unwrap_err();
            assert_eq!(err.field, field, "{extra}: {err}");
        }
        let no_port = kafka("topic: t").replace("'k:9092'", "k");
        let err = build(&format!("{BASE}{no_port}")).unwrap_err();
        assert_eq!(err.field, "spec.bootstrapServers");
        assert!(build(&format!("{BASE}{}", kafka("topic: t"))).is_ok());
    }

    #[test]
    fn duplicates_are_refused() {
        let dup = BASE.split("---").next().unwrap();
        let err = build(&format!("{BASE}---{dup}")).unwrap_err();
        assert!(err.message.contains("defined twice"));
    }
}
