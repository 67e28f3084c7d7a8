//! Resolving a request against the registry snapshot: which views, which
//! features in which output order, which sources, which store, and which
//! join keys the entity rows must carry.

use std::sync::Arc;

use crate::model::{
    DataSource, FeatureRef, FeatureView, JoinKey, RefParts, SourceTable, ValueType,
};
use crate::offline::OfflineError;
use crate::registry::{RegistrySnapshot, ServedOdfv, ServedView};
use crate::serving::FeatureSelection;
use crate::transform::InputSource;

use super::columns::ColType;

/// The entity column holding each row's point in time.
pub const EVENT_TIMESTAMP: &str = "event_timestamp";

/// Column names starting with this are larder's own, in temporary tables.
pub const RESERVED_PREFIX: &str = "__larder_";

/// Where all sources of one request live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreTarget {
    /// A PostgreSQL database (empty: the offline store's default).
    Postgres {
        database: String,
    },
    Sqlite,
}

/// One feature view read by the request, with everything owned, so that a
/// plan can move into a task of its own.
#[derive(Debug, Clone)]
pub struct ViewPlan {
    /// `namespace/view`, for messages.
    pub label: String,
    pub view: FeatureView,
    pub source: DataSource,
    /// Indexes into `view.features` of the features read, in the order they
    /// were first requested; each once.
    pub features: Vec<usize>,
}

impl ViewPlan {
    /// `schema.table` or `table`, for messages.
    pub fn table_label(&self) -> String {
        match &self.source.table {
            SourceTable::Postgres {
                database,
                schema,
                table,
            } if database.is_empty() => format!("{schema}.{table}"),
            SourceTable::Postgres {
                database,
                schema,
                table,
            } => format!("{database}.{schema}.{table}"),
            SourceTable::Sqlite { table } => table.clone(),
        }
    }

    /// The feature view and source, for messages.
    pub fn describe(&self) -> String {
        format!(
            "feature view {} (source {}, table {})",
            self.label,
            self.source.name,
            self.table_label()
        )
    }
}

/// One requested feature column of the output.
#[derive(Debug, Clone)]
pub struct FeatureOutput {
    /// `view__feature`.
    pub name: String,
    pub view: usize,
    /// Index into the view plan's `features`.
    pub slot: usize,
    pub ty: ColType,
}

/// A join key the entity rows must carry, and the first view needing it.
#[derive(Debug, Clone)]
pub struct KeyNeed {
    pub key: JoinKey,
    pub ty: ColType,
    pub needed_by: String,
}

/// A resolved request: owned, checked, independent of the snapshot.
#[derive(Debug, Clone)]
pub struct Plan {
    pub store: StoreTarget,
    pub views: Vec<ViewPlan>,
    /// The feature columns the query produces: those requested, and the
    /// hidden inputs of on-demand views (named with [`RESERVED_PREFIX`]).
    pub outputs: Vec<FeatureOutput>,
    pub keys: Vec<KeyNeed>,
    /// The on-demand views requested, computed from the query's batches.
    pub transforms: Vec<TransformPlan>,
    /// The feature columns of the training set, in request order.
    pub columns: Vec<FinalColumn>,
}

impl Plan {
    pub fn key(&self, name: &str) -> Option<&KeyNeed> {
        self.keys.iter().find(|k| k.key.name == name)
    }
}

fn not_found(parts: &RefParts<'_>, namespace: &str, what: String) -> OfflineError {
    OfflineError::NotFound(format!(
        "feature {}/{}:{}: {what}",
        namespace, parts.view, parts.feature
    ))
}

/// The feature references a selection stands for, each with its namespace.
/// A service's unqualified refs belong to the service's namespace.
pub fn expand(
    snapshot: &RegistrySnapshot,
    namespace: &str,
    selection: &FeatureSelection,
) -> Result<Vec<(String, FeatureRef)>, OfflineError> {
    match selection {
        FeatureSelection::Refs(refs) => {
            if refs.is_empty() {
                return Err(OfflineError::Invalid("no features requested".into()));
            }
            refs.iter()
                .map(|r| {
                    let parsed =
                        FeatureRef::parse(r).map_err(|e| OfflineError::Invalid(e.to_string()))?;
                    let ns = parsed.namespace.clone().unwrap_or_else(|| namespace.into());
                    Ok((ns, parsed))
                })
                .collect()
        }
        FeatureSelection::Service(name) => {
            let (ns, name) = name.split_once('/').unwrap_or((namespace, name));
            if name.is_empty() {
                return Err(OfflineError::Invalid(
                    "the feature service name is empty".into(),
                ));
            }
            let service = snapshot.service(ns, name).ok_or_else(|| {
                OfflineError::NotFound(format!("no feature service {name:?} in namespace {ns}"))
            })?;
            Ok(service
                .features
                .iter()
                .map(|r| (r.namespace.clone().unwrap_or_else(|| ns.into()), r.clone()))
                .collect())
        }
    }
}

/// An on-demand view of the request: its compiled program and where each
/// of its inputs is in the batches the query produces.
#[derive(Debug, Clone)]
pub struct TransformPlan {
    pub odfv: Arc<ServedOdfv>,
    pub inputs: Vec<TransformInput>,
}

/// Where an on-demand input comes from.
#[derive(Debug, Clone)]
pub enum TransformInput {
    /// A (hidden) feature column of the query's output.
    Column(String),
    /// A column of the entity rows (a request field), by name.
    Entity(String),
}

/// A feature column of the final training set, in request order.
#[derive(Debug, Clone)]
pub enum FinalColumn {
    /// A column the query produces, by name.
    Query(String),
    /// Feature `feature` of transform `transform`, with its output name.
    Computed {
        transform: usize,
        feature: usize,
        name: String,
        ty: ColType,
    },
}

/// Everything resolving collects.
#[derive(Default)]
struct Resolving {
    views: Vec<ViewPlan>,
    outputs: Vec<FeatureOutput>,
    keys: Vec<KeyNeed>,
    store: Option<(StoreTarget, String)>,
    transforms: Vec<TransformPlan>,
    columns: Vec<FinalColumn>,
}

impl Resolving {
    /// Adds feature `feature_index` of `served` (in namespace `ns`) as an
    /// output column named `name`.
    fn feature(
        &mut self,
        snapshot: &RegistrySnapshot,
        ns: &str,
        served: &ServedView,
        feature_index: usize,
        name: String,
    ) -> Result<(), OfflineError> {
        let view = &served.view;
        let feature = &view.features[feature_index];
        let label = format!("{ns}/{}", view.name);
        let ty = ColType::of(feature.value_type).ok_or_else(|| {
            OfflineError::Invalid(format!(
                "feature {label}:{} is {}: list features are not supported in training sets yet",
                feature.name, feature.value_type
            ))
        })?;
        let view_index = match self.views.iter().position(|v| v.label == label) {
            Some(i) => i,
            None => self.view(snapshot, ns, view, label.clone())?,
        };
        if self.outputs.iter().any(|o| o.name == name) {
            return Err(OfflineError::Invalid(format!(
                "feature {label}:{} is requested twice, or two requested views share the name \
                 {:?}: output column {name} would appear twice",
                feature.name, view.name
            )));
        }
        let plan = &mut self.views[view_index];
        let slot = match plan.features.iter().position(|f| *f == feature_index) {
            Some(s) => s,
            None => {
                plan.features.push(feature_index);
                plan.features.len() - 1
            }
        };
        self.outputs.push(FeatureOutput {
            name,
            view: view_index,
            slot,
            ty,
        });
        Ok(())
    }

    /// Adds `view` to the views read: checks its source, its store and its
    /// join keys.
    fn view(
        &mut self,
        snapshot: &RegistrySnapshot,
        ns: &str,
        view: &FeatureView,
        label: String,
    ) -> Result<usize, OfflineError> {
        let source_name = view.source.as_deref().ok_or_else(|| {
            OfflineError::Invalid(format!(
                "feature view {label} has no source (spec.source): training sets \
                 are read from a view's batch source"
            ))
        })?;
        let source = snapshot
            .namespace(ns)
            .and_then(|defs| defs.sources.get(source_name))
            .ok_or_else(|| {
                OfflineError::NotFound(format!(
                    "feature view {label}: no data source {source_name:?} in namespace {ns}"
                ))
            })?;
        let target = match &source.table {
            SourceTable::Postgres { database, .. } => StoreTarget::Postgres {
                database: database.clone(),
            },
            SourceTable::Sqlite { .. } => StoreTarget::Sqlite,
        };
        let here = format!("{ns}/{} (source {})", view.name, source.name);
        match &self.store {
            None => self.store = Some((target, here)),
            Some((first, first_view)) if *first != target => {
                let name = |t: &StoreTarget| match t {
                    StoreTarget::Postgres { database } if database.is_empty() => {
                        "the default PostgreSQL database".to_owned()
                    }
                    StoreTarget::Postgres { database } => {
                        format!("PostgreSQL database {database:?}")
                    }
                    StoreTarget::Sqlite => "the SQLite offline store".to_owned(),
                };
                return Err(OfflineError::Invalid(format!(
                    "feature views {first_view} and {here} are in different stores \
                     ({} and {}): one training set reads one store",
                    name(first),
                    name(&target)
                )));
            }
            Some(_) => {}
        }
        for jk in &view.join_keys {
            let ty = match jk.value_type {
                ValueType::Int32 => ColType::Int32,
                ValueType::Int64 => ColType::Int64,
                ValueType::String => ColType::Utf8,
                ValueType::Bytes => ColType::Binary,
                other => {
                    return Err(OfflineError::Invalid(format!(
                        "feature view {label}: join key {} is {other}, which training \
                         sets do not support as a key",
                        jk.name
                    )));
                }
            };
            match self.keys.iter().find(|k| k.key.name == jk.name) {
                Some(k) if k.key.value_type != jk.value_type => {
                    return Err(OfflineError::Invalid(format!(
                        "join key {} is {} in feature view {} but {} in {label}",
                        jk.name, k.key.value_type, k.needed_by, jk.value_type
                    )));
                }
                Some(_) => {}
                None => self.keys.push(KeyNeed {
                    key: jk.clone(),
                    ty,
                    needed_by: label.clone(),
                }),
            }
        }
        self.views.push(ViewPlan {
            label,
            view: view.clone(),
            source: source.clone(),
            features: Vec::new(),
        });
        Ok(self.views.len() - 1)
    }

    /// Adds on-demand view `odfv` (once) and the hidden columns of its
    /// inputs; returns its index among the transforms.
    fn transform(
        &mut self,
        snapshot: &RegistrySnapshot,
        ns: &str,
        odfv: &Arc<ServedOdfv>,
    ) -> Result<usize, OfflineError> {
        if let Some(i) = self
            .transforms
            .iter()
            .position(|t| Arc::ptr_eq(&t.odfv, odfv))
        {
            return Ok(i);
        }
        let t = self.transforms.len();
        let mut inputs = Vec::with_capacity(odfv.compiled.inputs.len());
        for (i, input) in odfv.compiled.inputs.iter().enumerate() {
            inputs.push(match input.source {
                InputSource::View { view, feature } => {
                    let name = format!("{RESERVED_PREFIX}in{t}_{i}");
                    self.feature(snapshot, ns, &odfv.sources[view], feature, name.clone())?;
                    TransformInput::Column(name)
                }
                InputSource::Request { .. } => TransformInput::Entity(input.name.clone()),
            });
        }
        self.transforms.push(TransformPlan {
            odfv: Arc::clone(odfv),
            inputs,
        });
        Ok(t)
    }
}

/// Resolves a selection into a plan.
pub fn resolve(
    snapshot: &RegistrySnapshot,
    namespace: &str,
    selection: &FeatureSelection,
) -> Result<Plan, OfflineError> {
    let refs = expand(snapshot, namespace, selection)?;
    let mut state = Resolving::default();
    for (ns, r) in &refs {
        let parts = r.parts();
        if let Some(served) = snapshot.view(ns, &r.view) {
            let Some(feature_index) = served.feature_index(&r.feature) else {
                return Err(not_found(
                    &parts,
                    ns,
                    format!(
                        "feature view {ns}/{} has no feature {:?}",
                        r.view, r.feature
                    ),
                ));
            };
            let name = served.full_names[feature_index].to_string();
            state.feature(snapshot, ns, served, feature_index, name.clone())?;
            state.columns.push(FinalColumn::Query(name));
            continue;
        }
        // An on-demand view, computed per row from its inputs with the
        // same program the feature server runs. A view computed at write
        // time is computed the same way here, from its source's history.
        let odfv = snapshot.odfv(ns, &r.view).ok_or_else(|| {
            not_found(
                &parts,
                ns,
                format!("no feature view {:?} in namespace {ns}", r.view),
            )
        })?;
        let Some(feature) = odfv.feature_index(&r.feature) else {
            return Err(not_found(
                &parts,
                ns,
                format!(
                    "on-demand feature view {ns}/{} has no feature {:?}",
                    r.view, r.feature
                ),
            ));
        };
        let value_type = odfv.odfv.features[feature].value_type;
        let ty = ColType::of(value_type).ok_or_else(|| {
            OfflineError::Invalid(format!(
                "feature {ns}/{}:{} is {value_type}: list features are not supported in \
                 training sets yet",
                r.view, r.feature
            ))
        })?;
        let name = odfv.full_names[feature].to_string();
        let taken = state.columns.iter().any(|c| match c {
            FinalColumn::Query(n) | FinalColumn::Computed { name: n, .. } => *n == name,
        });
        if taken {
            return Err(OfflineError::Invalid(format!(
                "feature {ns}/{}:{} is requested twice: output column {name} would appear twice",
                r.view, r.feature
            )));
        }
        let transform = state.transform(snapshot, ns, odfv)?;
        state.columns.push(FinalColumn::Computed {
            transform,
            feature,
            name,
            ty,
        });
    }
    let Some((store, _)) = state.store else {
        return Err(OfflineError::Invalid(
            "no features requested, or only on-demand features that read no feature view: \
             a training set reads at least one feature view"
                .into(),
        ));
    };
    Ok(Plan {
        store,
        views: state.views,
        outputs: state.outputs,
        keys: state.keys,
        transforms: state.transforms,
        columns: state.columns,
    })
}

/// The registry objects a request reads, as (resource, namespace, name):
/// every feature view, and the feature service when one is named. A
/// server authorizes `get` on each before building the training set.
pub fn objects_read(
    snapshot: &RegistrySnapshot,
    namespace: &str,
    selection: &FeatureSelection,
) -> Result<Vec<(&'static str, String, String)>, OfflineError> {
    let mut out: Vec<(&'static str, String, String)> = Vec::new();
    if let FeatureSelection::Service(name) = selection {
        let (ns, name) = name.split_once('/').unwrap_or((namespace, name));
        out.push(("featureservices", ns.to_owned(), name.to_owned()));
        // An unknown service is authorized (and refused) like a known one,
        // so that a refusal reveals nothing; retrieval reports it missing.
        if snapshot.service(ns, name).is_none() {
            return Ok(out);
        }
    }
    for (ns, r) in expand(snapshot, namespace, selection)? {
        let mut objects = Vec::new();
        match snapshot.odfv(&ns, &r.view) {
            // An on-demand view reads its source views: `get` on each too.
            Some(odfv) => {
                objects.push(("ondemandfeatureviews", ns.clone(), r.view.clone()));
                for source in &odfv.odfv.source_views {
                    objects.push(("featureviews", ns.clone(), source.clone()));
                }
            }
            None => objects.push(("featureviews", ns, r.view)),
        }
        for object in objects {
            if !out.contains(&object) {
                out.push(object);
            }
        }
    }
    Ok(out)
}
