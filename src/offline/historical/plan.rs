//! Resolving a request against the registry snapshot: which views, which
//! features in which output order, which sources, which store, and which
//! join keys the entity rows must carry.

use crate::model::{
    DataSource, FeatureRef, FeatureView, JoinKey, RefParts, SourceTable, ValueType,
};
use crate::offline::OfflineError;
use crate::registry::RegistrySnapshot;
use crate::serving::FeatureSelection;

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
    pub outputs: Vec<FeatureOutput>,
    pub keys: Vec<KeyNeed>,
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

/// Resolves a selection into a plan.
pub fn resolve(
    snapshot: &RegistrySnapshot,
    namespace: &str,
    selection: &FeatureSelection,
) -> Result<Plan, OfflineError> {
    let refs = expand(snapshot, namespace, selection)?;
    let mut views: Vec<ViewPlan> = Vec::new();
    let mut outputs: Vec<FeatureOutput> = Vec::new();
    let mut keys: Vec<KeyNeed> = Vec::new();
    let mut store: Option<(StoreTarget, String)> = None;

    for (ns, r) in &refs {
        let parts = r.parts();
        let served = snapshot.view(ns, &r.view).ok_or_else(|| {
            not_found(
                &parts,
                ns,
                format!("no feature view {:?} in namespace {ns}", r.view),
            )
        })?;
        let view = &served.view;
        let Some((feature_index, feature)) = view.feature(&r.feature) else {
            return Err(not_found(
                &parts,
                ns,
                format!(
                    "feature view {ns}/{} has no feature {:?}",
                    r.view, r.feature
                ),
            ));
        };
        let label = format!("{ns}/{}", view.name);
        let ty = ColType::of(feature.value_type).ok_or_else(|| {
            OfflineError::Invalid(format!(
                "feature {label}:{} is {}: list features are not supported in training sets yet",
                feature.name, feature.value_type
            ))
        })?;
        let view_index = match views.iter().position(|v| v.label == label) {
            Some(i) => i,
            None => {
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
                match &store {
                    None => store = Some((target, here)),
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
                    match keys.iter().find(|k| k.key.name == jk.name) {
                        Some(k) if k.key.value_type != jk.value_type => {
                            return Err(OfflineError::Invalid(format!(
                                "join key {} is {} in feature view {} but {} in {label}",
                                jk.name, k.key.value_type, k.needed_by, jk.value_type
                            )));
                        }
                        Some(_) => {}
                        None => keys.push(KeyNeed {
                            key: jk.clone(),
                            ty,
                            needed_by: label.clone(),
                        }),
                    }
                }
                views.push(ViewPlan {
                    label: label.clone(),
                    view: view.clone(),
                    source: source.clone(),
                    features: Vec::new(),
                });
                views.len() - 1
            }
        };
        let name = served.full_names[feature_index].clone();
        if outputs.iter().any(|o| o.name == name) {
            return Err(OfflineError::Invalid(format!(
                "feature {label}:{} is requested twice, or two requested views share the name \
                 {:?}: output column {name} would appear twice",
                r.feature, view.name
            )));
        }
        let plan = &mut views[view_index];
        let slot = match plan.features.iter().position(|f| *f == feature_index) {
            Some(s) => s,
            None => {
                plan.features.push(feature_index);
                plan.features.len() - 1
            }
        };
        outputs.push(FeatureOutput {
            name,
            view: view_index,
            slot,
            ty,
        });
    }
    let Some((store, _)) = store else {
        return Err(OfflineError::Invalid("no features requested".into()));
    };
    Ok(Plan {
        store,
        views,
        outputs,
        keys,
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
        let object = ("featureviews", ns, r.view);
        if !out.contains(&object) {
            out.push(object);
        }
    }
    Ok(out)
}
