//! Definitions as Kubernetes-style YAML manifests.
//!
//! One object per YAML document:
//!
//! ```yaml
//! apiVersion: features.kubeflow.org/v1
//! kind: FeatureView
//! metadata: { name: driver_daily_stats_fv, namespace: kubeflow-alice }
//! spec:
//!   entities: [driver]
//!   ttl: 1d
//!   features:
//!     - { name: profit, valueType: DOUBLE }
//! ```
//!
//! This module turns text into domain objects and checks each object on its
//! own; cross-object checks (a view's entities exist, a service's refs
//! resolve) happen when a [`crate::registry::RegistrySnapshot`] is built.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::model::{
    DataSource, Entity, Feature, FeatureRef, FeatureService, FeatureView, JoinKey, OnDemandFeature,
    OnDemandFeatureView, SourceTable, Value, ValueType, check_dns1123_label, check_object_name,
};
use crate::model::{KafkaSource, MessageFormat, StreamKind, StreamSource};

pub const API_VERSION: &str = "features.kubeflow.org/v1";

/// Where an object came from and what it is, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectId {
    pub origin: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} {}/{}",
            self.origin, self.kind, self.namespace, self.name
        )
    }
}

/// A definition that is wrong, naming the file, the object and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: field `{field}`: {message}")]
pub struct DefinitionError {
    /// `file: Kind namespace/name`, or just the file when the object could
    /// not be identified.
    pub location: String,
    pub field: String,
    pub message: String,
}

impl DefinitionError {
    pub fn new(location: impl fmt::Display, field: &str, message: impl Into<String>) -> Self {
        DefinitionError {
            location: location.to_string(),
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// One parsed definition.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Entity(Entity),
    DataSource(DataSource),
    /// A DataSource of `type: push` or `type: kafka`.
    StreamSource(StreamSource),
    FeatureView(FeatureView),
    FeatureService(FeatureService),
    OnDemandFeatureView(OnDemandFeatureView),
}

/// A parsed definition with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub id: ObjectId,
    pub object: Object,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Manifest {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<Metadata>,
    #[serde(default)]
    spec: serde_json::Value,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    // Server-managed fields are accepted so that what the registry returns
    // can be applied again.
    #[serde(default)]
    #[allow(dead_code)]
    resource_version: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    uid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EntitySpec {
    join_keys: Vec<JoinKeySpec>,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DataSourceSpec {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    database: String,
    #[serde(default)]
    schema: Option<String>,
    table: String,
    timestamp_field: String,
    #[serde(default)]
    created_timestamp_field: Option<String>,
    #[serde(default)]
    field_mapping: BTreeMap<String, String>,
    #[serde(default)]
    description: String,
}

/// The spec of a DataSource of `type: push` or `type: kafka`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StreamSourceSpec {
    #[serde(rename = "type")]
    kind: String,
    batch_source: String,
    #[serde(default)]
    bootstrap_servers: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    timestamp_field: Option<String>,
    #[serde(default)]
    field_mapping: Option<BTreeMap<String, String>>,
    #[serde(default)]
    dead_letter_topic: Option<String>,
    #[serde(default)]
    consumer_group: Option<String>,
    #[serde(default)]
    description: String,
}

/// A Kafka topic name: 1 to 249 of `[A-Za-z0-9._-]`.
fn check_topic(id: &ObjectId, field: &str, topic: &str) -> Result<(), DefinitionError> {
    if topic.is_empty()
        || topic.len() > 249
        || !topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(DefinitionError::new(
            id,
            field,
            format!(
                "{topic:?} is not a Kafka topic name (1 to 249 letters, digits, '.', '_', '-')"
            ),
        ));
    }
    Ok(())
}

fn parse_stream_source(
    id: &ObjectId,
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    spec: StreamSourceSpec,
) -> Result<StreamSource, DefinitionError> {
    check_object_name(&spec.batch_source)
        .map_err(|why| DefinitionError::new(id, "spec.batchSource", why))?;
    let kind = match spec.kind.as_str() {
        "push" => {
            let kafka_only = [
                ("spec.bootstrapServers", spec.bootstrap_servers.is_some()),
                ("spec.topic", spec.topic.is_some()),
                ("spec.format", spec.format.is_some()),
                ("spec.timestampField", spec.timestamp_field.is_some()),
                ("spec.fieldMapping", spec.field_mapping.is_some()),
                ("spec.deadLetterTopic", spec.dead_letter_topic.is_some()),
                ("spec.consumerGroup", spec.consumer_group.is_some()),
            ];
            if let Some((field, _)) = kafka_only.iter().find(|(_, set)| *set) {
                return Err(DefinitionError::new(
                    id,
                    field,
                    "only a kafka source has this field (a push source has batchSource and description)",
                ));
            }
            StreamKind::Push
        }
        "kafka" => {
            let servers = spec.bootstrap_servers.unwrap_or_default();
            if servers.trim().is_empty()
                || servers
                    .split(',')
                    .any(|s| s.trim().is_empty() || !s.contains(':'))
            {
                return Err(DefinitionError::new(
                    id,
                    "spec.bootstrapServers",
                    format!("{servers:?} is not a list of host:port, comma-separated"),
                ));
            }
            let topic = spec
                .topic
                .ok_or_else(|| DefinitionError::new(id, "spec.topic", "missing"))?;
            check_topic(id, "spec.topic", &topic)?;
            if let Some(dlq) = &spec.dead_letter_topic {
                check_topic(id, "spec.deadLetterTopic", dlq)?;
                if *dlq == topic {
                    return Err(DefinitionError::new(
                        id,
                        "spec.deadLetterTopic",
                        "must not be the topic read",
                    ));
                }
            }
            let format = match spec.format.as_deref() {
                None | Some("json") => MessageFormat::Json,
                Some(other) => {
                    return Err(DefinitionError::new(
                        id,
                        "spec.format",
                        format!("unknown message format {other:?} (known: json)"),
                    ));
                }
            };
            let timestamp_field = spec
                .timestamp_field
                .unwrap_or_else(|| "event_timestamp".into());
            if timestamp_field.is_empty() {
                return Err(DefinitionError::new(
                    id,
                    "spec.timestampField",
                    "must not be empty",
                ));
            }
            let field_mapping = spec.field_mapping.unwrap_or_default();
            for (field, feature) in &field_mapping {
                check_object_name(feature).map_err(|why| {
                    DefinitionError::new(id, &format!("spec.fieldMapping.{field}"), why)
                })?;
            }
            if let Some(group) = &spec.consumer_group
                && group.trim().is_empty()
            {
                return Err(DefinitionError::new(
                    id,
                    "spec.consumerGroup",
                    "must not be empty",
                ));
            }
            StreamKind::Kafka(KafkaSource {
                bootstrap_servers: servers,
                topic,
                format,
                timestamp_field,
                field_mapping,
                dead_letter_topic: spec.dead_letter_topic,
                consumer_group: spec.consumer_group,
            })
        }
        other => {
            return Err(DefinitionError::new(
                id,
                "spec.type",
                format!("unknown source type {other:?} (known: postgres, sqlite, push, kafka)"),
            ));
        }
    };
    Ok(StreamSource {
        name,
        namespace,
        kind,
        batch_source: spec.batch_source,
        description: spec.description,
        labels,
    })
}

/// A SQL identifier larder will quote: non-empty, printable, no quotes.
fn check_identifier(id: &ObjectId, field: &str, name: &str) -> Result<(), DefinitionError> {
    if name.is_empty()
        || name.len() > 63
        || name.chars().any(|c| c == '"' || c == '`' || c.is_control())
    {
        return Err(DefinitionError::new(
            id,
            field,
            format!(
                "{name:?} is not a usable column or table name (1 to 63 characters, no quotes)"
            ),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JoinKeySpec {
    name: String,
    value_type: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FeatureViewSpec {
    #[serde(default)]
    entities: Vec<String>,
    features: Vec<JoinKeySpec>,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default = "default_true")]
    online: bool,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    stream_source: Option<String>,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OnDemandSpec {
    sources: OnDemandSourcesSpec,
    features: Vec<OnDemandFeatureSpec>,
    #[serde(default)]
    write_to_online_store: bool,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OnDemandSourcesSpec {
    #[serde(default)]
    feature_views: Vec<String>,
    #[serde(default)]
    request_fields: Vec<JoinKeySpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OnDemandFeatureSpec {
    name: String,
    value_type: String,
    expression: String,
    #[serde(default)]
    default: Option<serde_json::Value>,
}

/// The longest expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 4096;

/// A manifest literal as a value of `target`: numbers for the numeric types
/// (whole numbers for the integer ones), `true`/`false`, strings, base64
/// strings for bytes, and arrays of those for lists.
pub fn literal_value(json: &serde_json::Value, target: ValueType) -> Result<Value, String> {
    use serde_json::Value as J;
    let int = |j: &J| -> Result<i64, String> {
        j.as_i64()
            .ok_or_else(|| format!("{j} is not a whole number for {target}"))
    };
    let float = |j: &J| -> Result<f64, String> {
        j.as_f64()
            .ok_or_else(|| format!("{j} is not a number for {target}"))
    };
    let text = |j: &J| -> Result<String, String> {
        j.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{j} is not a string for {target}"))
    };
    let bytes = |j: &J| -> Result<Vec<u8>, String> {
        use base64::Engine;
        let t = text(j)?;
        base64::engine::general_purpose::STANDARD
            .decode(t.as_bytes())
            .map_err(|e| format!("{t:?} is not base64 for {target}: {e}"))
    };
    let boolean = |j: &J| -> Result<bool, String> {
        j.as_bool()
            .ok_or_else(|| format!("{j} is not true or false for {target}"))
    };
    let i32_of = |j: &J| -> Result<i32, String> {
        i32::try_from(int(j)?).map_err(|_| format!("{j} does not fit {target}"))
    };
    let list = |j: &J| -> Result<Vec<J>, String> {
        j.as_array()
            .cloned()
            .ok_or_else(|| format!("{j} is not a list for {target}"))
    };
    fn each<T>(
        items: Vec<serde_json::Value>,
        f: impl Fn(&serde_json::Value) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        items.iter().map(f).collect()
    }
    Ok(match target {
        ValueType::Bytes => Value::Bytes(bytes(json)?),
        ValueType::String => Value::String(text(json)?),
        ValueType::Int32 => Value::Int32(i32_of(json)?),
        ValueType::Int64 => Value::Int64(int(json)?),
        ValueType::UnixTimestamp => Value::UnixTimestamp(int(json)?),
        ValueType::Double => Value::Double(float(json)?),
        ValueType::Float => Value::Float(float(json)? as f32),
        ValueType::Bool => Value::Bool(boolean(json)?),
        ValueType::BytesList => Value::BytesList(each(list(json)?, bytes)?),
        ValueType::StringList => Value::StringList(each(list(json)?, text)?),
        ValueType::Int32List => Value::Int32List(each(list(json)?, i32_of)?),
        ValueType::Int64List => Value::Int64List(each(list(json)?, int)?),
        ValueType::UnixTimestampList => Value::UnixTimestampList(each(list(json)?, int)?),
        ValueType::DoubleList => Value::DoubleList(each(list(json)?, float)?),
        ValueType::FloatList => {
            Value::FloatList(each(list(json)?, |j| float(j).map(|f| f as f32))?)
        }
        ValueType::BoolList => Value::BoolList(each(list(json)?, boolean)?),
    })
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FeatureServiceSpec {
    features: Vec<String>,
    #[serde(default)]
    description: String,
}

/// Reads every `.yaml`/`.yml` file under `path` (or `path` itself when it is
/// a file), in name order.
pub fn load_path(path: &Path) -> Result<Vec<Located>, DefinitionError> {
    let mut files = Vec::new();
    collect_files(path, &mut files)
        .map_err(|e| DefinitionError::new(path.display(), "-", e.to_string()))?;
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| DefinitionError::new(file.display(), "-", e.to_string()))?;
        out.extend(parse_documents(&file.display().to_string(), &text)?);
    }
    Ok(out)
}

fn collect_files(path: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for entry in entries {
            if entry.is_dir() {
                collect_files(&entry, out)?;
            } else if matches!(
                entry.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(entry);
            }
        }
        Ok(())
    } else {
        std::fs::metadata(path)?;
        out.push(path.to_owned());
        Ok(())
    }
}

/// Parses a multi-document YAML text; `origin` names it in errors.
pub fn parse_documents(origin: &str, text: &str) -> Result<Vec<Located>, DefinitionError> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc_origin = format!("{origin} (document {})", index + 1);
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|e| DefinitionError::new(&doc_origin, "-", e.to_string()))?;
        if value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
        }
        let manifest: Manifest = serde_yaml::from_value(value)
            .map_err(|e| DefinitionError::new(&doc_origin, "-", e.to_string()))?;
        out.push(parse_manifest(origin, &doc_origin, manifest)?);
    }
    Ok(out)
}

/// Parses one manifest given as JSON (a registry request body); `origin`
/// names it in errors.
pub fn parse_value(origin: &str, value: serde_json::Value) -> Result<Located, DefinitionError> {
    let manifest: Manifest = serde_json::from_value(value)
        .map_err(|e| DefinitionError::new(origin, "-", e.to_string()))?;
    parse_manifest(origin, origin, manifest)
}

fn parse_manifest(
    origin: &str,
    doc_origin: &str,
    manifest: Manifest,
) -> Result<Located, DefinitionError> {
    match manifest.api_version.as_deref() {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(DefinitionError::new(
                doc_origin,
                "apiVersion",
                format!("expected {API_VERSION:?}, found {other:?}"),
            ));
        }
        None => return Err(DefinitionError::new(doc_origin, "apiVersion", "missing")),
    }
    let kind = manifest
        .kind
        .ok_or_else(|| DefinitionError::new(doc_origin, "kind", "missing"))?;
    let metadata = manifest
        .metadata
        .ok_or_else(|| DefinitionError::new(doc_origin, "metadata", "missing"))?;
    let name = metadata
        .name
        .ok_or_else(|| DefinitionError::new(doc_origin, "metadata.name", "missing"))?;
    let namespace = metadata
        .namespace
        .ok_or_else(|| DefinitionError::new(doc_origin, "metadata.namespace", "missing"))?;
    let id = ObjectId {
        origin: origin.to_owned(),
        kind: kind.clone(),
        namespace: namespace.clone(),
        name: name.clone(),
    };
    check_dns1123_label(&namespace)
        .map_err(|why| DefinitionError::new(&id, "metadata.namespace", why))?;
    check_object_name(&name).map_err(|why| DefinitionError::new(&id, "metadata.name", why))?;
    let spec = manifest.spec;
    let labels = metadata.labels;
    let object = match kind.as_str() {
        "Entity" => {
            let spec: EntitySpec = from_spec(&id, spec)?;
            if spec.join_keys.is_empty() {
                return Err(DefinitionError::new(
                    &id,
                    "spec.joinKeys",
                    "an entity needs at least one join key",
                ));
            }
            let mut join_keys = Vec::new();
            for (i, k) in spec.join_keys.into_iter().enumerate() {
                let field = format!("spec.joinKeys[{i}]");
                let jk = typed(&id, &field, k)?;
                if !jk.value_type.is_entity_key_type() {
                    return Err(DefinitionError::new(
                        &id,
                        &format!("{field}.valueType"),
                        format!(
                            "{} cannot be a join key type (use STRING, BYTES, INT32, INT64 or UNIX_TIMESTAMP)",
                            jk.value_type
                        ),
                    ));
                }
                if join_keys.iter().any(|o: &JoinKey| o.name == jk.name) {
                    return Err(DefinitionError::new(
                        &id,
                        &format!("{field}.name"),
                        format!("duplicate join key {:?}", jk.name),
                    ));
                }
                join_keys.push(jk);
            }
            Object::Entity(Entity {
                name,
                namespace,
                join_keys,
                description: spec.description,
                labels,
            })
        }
        "DataSource"
            if matches!(
                spec.get("type").and_then(|t| t.as_str()),
                Some("push" | "kafka")
            ) =>
        {
            let spec: StreamSourceSpec = from_spec(&id, spec)?;
            Object::StreamSource(parse_stream_source(&id, name, namespace, labels, spec)?)
        }
        "DataSource" => {
            let spec: DataSourceSpec = from_spec(&id, spec)?;
            let table = match spec.kind.as_str() {
                "postgres" => SourceTable::Postgres {
                    database: spec.database,
                    schema: spec.schema.unwrap_or_else(|| "public".into()),
                    table: spec.table,
                },
                "sqlite" => {
                    if !spec.database.is_empty() || spec.schema.is_some() {
                        return Err(DefinitionError::new(
                            &id,
                            "spec.database",
                            "a sqlite source has no database or schema: its table is in the embedded offline store",
                        ));
                    }
                    SourceTable::Sqlite { table: spec.table }
                }
                other => {
                    return Err(DefinitionError::new(
                        &id,
                        "spec.type",
                        format!(
                            "unknown source type {other:?} (known: postgres, sqlite, push, kafka)"
                        ),
                    ));
                }
            };
            match &table {
                SourceTable::Postgres { schema, table, .. } => {
                    check_identifier(&id, "spec.schema", schema)?;
                    check_identifier(&id, "spec.table", table)?;
                }
                SourceTable::Sqlite { table } => check_identifier(&id, "spec.table", table)?,
            }
            check_identifier(&id, "spec.timestampField", &spec.timestamp_field)?;
            if let Some(c) = &spec.created_timestamp_field {
                check_identifier(&id, "spec.createdTimestampField", c)?;
            }
            for (column, feature) in &spec.field_mapping {
                check_identifier(&id, &format!("spec.fieldMapping.{column}"), column)?;
                check_identifier(&id, &format!("spec.fieldMapping.{column}"), feature)?;
            }
            Object::DataSource(DataSource {
                name,
                namespace,
                table,
                timestamp_field: spec.timestamp_field,
                created_timestamp_field: spec.created_timestamp_field,
                field_mapping: spec.field_mapping,
                description: spec.description,
                labels,
            })
        }
        "FeatureView" => {
            let spec: FeatureViewSpec = from_spec(&id, spec)?;
            if spec.features.is_empty() {
                return Err(DefinitionError::new(
                    &id,
                    "spec.features",
                    "a feature view needs at least one feature",
                ));
            }
            let mut features: Vec<Feature> = Vec::new();
            for (i, f) in spec.features.into_iter().enumerate() {
                let field = format!("spec.features[{i}]");
                let jk = typed(&id, &field, f)?;
                if features.iter().any(|o| o.name == jk.name) {
                    return Err(DefinitionError::new(
                        &id,
                        &format!("{field}.name"),
                        format!("duplicate feature {:?}", jk.name),
                    ));
                }
                features.push(Feature {
                    name: jk.name,
                    value_type: jk.value_type,
                });
            }
            let ttl = match spec.ttl.as_deref() {
                None | Some("0" | "0s" | "") => None,
                Some(text) => {
                    let d = humantime::parse_duration(text).map_err(|e| {
                        DefinitionError::new(
                            &id,
                            "spec.ttl",
                            format!("{text:?} is not a duration like 86400s or 1d: {e}"),
                        )
                    })?;
                    (!d.is_zero()).then_some(d)
                }
            };
            for (i, e) in spec.entities.iter().enumerate() {
                check_object_name(e).map_err(|why| {
                    DefinitionError::new(&id, &format!("spec.entities[{i}]"), why)
                })?;
            }
            if let Some(s) = &spec.stream_source {
                check_object_name(s)
                    .map_err(|why| DefinitionError::new(&id, "spec.streamSource", why))?;
            }
            Object::FeatureView(FeatureView {
                name,
                namespace,
                entities: spec.entities,
                join_keys: Vec::new(), // filled in from the entities when resolved
                features,
                ttl,
                online: spec.online,
                source: spec.source,
                stream_source: spec.stream_source,
                description: spec.description,
                labels,
            })
        }
        "FeatureService" => {
            let spec: FeatureServiceSpec = from_spec(&id, spec)?;
            if spec.features.is_empty() {
                return Err(DefinitionError::new(
                    &id,
                    "spec.features",
                    "a feature service needs at least one feature",
                ));
            }
            let features = spec
                .features
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    FeatureRef::parse(r).map_err(|e| {
                        DefinitionError::new(&id, &format!("spec.features[{i}]"), e.to_string())
                    })
                })
                .collect::<Result<_, _>>()?;
            Object::FeatureService(FeatureService {
                name,
                namespace,
                features,
                description: spec.description,
                labels,
            })
        }
        "OnDemandFeatureView" => {
            let spec: OnDemandSpec = from_spec(&id, spec)?;
            if spec.features.is_empty() {
                return Err(DefinitionError::new(
                    &id,
                    "spec.features",
                    "an on-demand feature view needs at least one feature",
                ));
            }
            if spec.sources.feature_views.is_empty() && spec.sources.request_fields.is_empty() {
                return Err(DefinitionError::new(
                    &id,
                    "spec.sources",
                    "an on-demand feature view needs at least one source: \
                     featureViews or requestFields",
                ));
            }
            for (i, v) in spec.sources.feature_views.iter().enumerate() {
                check_object_name(v).map_err(|why| {
                    DefinitionError::new(&id, &format!("spec.sources.featureViews[{i}]"), why)
                })?;
                if spec.sources.feature_views[..i].contains(v) {
                    return Err(DefinitionError::new(
                        &id,
                        &format!("spec.sources.featureViews[{i}]"),
                        format!("feature view {v:?} is listed twice"),
                    ));
                }
            }
            let mut request_fields: Vec<Feature> = Vec::new();
            for (i, f) in spec.sources.request_fields.into_iter().enumerate() {
                let field = format!("spec.sources.requestFields[{i}]");
                let jk = typed(&id, &field, f)?;
                if request_fields.iter().any(|o| o.name == jk.name) {
                    return Err(DefinitionError::new(
                        &id,
                        &format!("{field}.name"),
                        format!("duplicate request field {:?}", jk.name),
                    ));
                }
                request_fields.push(Feature {
                    name: jk.name,
                    value_type: jk.value_type,
                });
            }
            let mut features: Vec<OnDemandFeature> = Vec::new();
            for (i, f) in spec.features.into_iter().enumerate() {
                let field = format!("spec.features[{i}]");
                let jk = typed(
                    &id,
                    &field,
                    JoinKeySpec {
                        name: f.name,
                        value_type: f.value_type,
                    },
                )?;
                if features.iter().any(|o| o.name == jk.name) {
                    return Err(DefinitionError::new(
                        &id,
                        &format!("{field}.name"),
                        format!("duplicate feature {:?}", jk.name),
                    ));
                }
                if f.expression.trim().is_empty() {
                    return Err(DefinitionError::new(
                        &id,
                        &format!("{field}.expression"),
                        "the expression is empty",
                    ));
                }
                if f.expression.len() > MAX_EXPRESSION_BYTES {
                    return Err(DefinitionError::new(
                        &id,
                        &format!("{field}.expression"),
                        format!(
                            "the expression is {} bytes long; the limit is {MAX_EXPRESSION_BYTES}",
                            f.expression.len()
                        ),
                    ));
                }
                let default = match &f.default {
                    None | Some(serde_json::Value::Null) => None,
                    Some(json) => Some(literal_value(json, jk.value_type).map_err(|why| {
                        DefinitionError::new(&id, &format!("{field}.default"), why)
                    })?),
                };
                features.push(OnDemandFeature {
                    name: jk.name,
                    value_type: jk.value_type,
                    expression: f.expression,
                    default,
                });
            }
            if spec.write_to_online_store {
                if !request_fields.is_empty() {
                    return Err(DefinitionError::new(
                        &id,
                        "spec.writeToOnlineStore",
                        "a view computed at write time cannot read request fields: \
                         no request exists when rows are written",
                    ));
                }
                if spec.sources.feature_views.len() != 1 {
                    return Err(DefinitionError::new(
                        &id,
                        "spec.writeToOnlineStore",
                        "a view computed at write time reads exactly one feature view, \
                         whose rows it is computed from",
                    ));
                }
            }
            Object::OnDemandFeatureView(OnDemandFeatureView {
                name,
                namespace,
                source_views: spec.sources.feature_views,
                request_fields,
                features,
                write_to_online_store: spec.write_to_online_store,
                description: spec.description,
                labels,
            })
        }
        other => {
            return Err(DefinitionError::new(
                &id,
                "kind",
                format!(
                    "unknown kind {other:?} (known: Entity, DataSource, FeatureView, \
                     OnDemandFeatureView, FeatureService)"
                ),
            ));
        }
    };
    Ok(Located { id, object })
}

fn from_spec<T: serde::de::DeserializeOwned>(
    id: &ObjectId,
    spec: serde_json::Value,
) -> Result<T, DefinitionError> {
    serde_json::from_value(spec).map_err(|e| DefinitionError::new(id, "spec", e.to_string()))
}

fn typed(id: &ObjectId, field: &str, spec: JoinKeySpec) -> Result<JoinKey, DefinitionError> {
    check_object_name(&spec.name)
        .map_err(|why| DefinitionError::new(id, &format!("{field}.name"), why))?;
    let value_type: ValueType = spec
        .value_type
        .parse()
        .map_err(|why: String| DefinitionError::new(id, &format!("{field}.valueType"), why))?;
    Ok(JoinKey {
        name: spec.name,
        value_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: driver, namespace: kubeflow-alice }
spec:
  joinKeys: [{ name: driver_id, valueType: INT64 }]
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_daily_stats_fv, namespace: kubeflow-alice }
spec:
  entities: [driver]
  ttl: 1d
  features:
    - { name: profit, valueType: DOUBLE }
---
"#;

    #[test]
    fn parses_good_documents() {
        let objs = parse_documents("defs.yaml", GOOD).unwrap();
        assert_eq!(objs.len(), 2);
        let Object::FeatureView(fv) = &objs[1].object else {
            panic!("expected a feature view")
        };
        assert_eq!(fv.ttl, Some(std::time::Duration::from_secs(86400)));
        assert!(fv.online);
    }

    #[test]
    fn errors_name_file_object_and_field() {
        let bad = GOOD.replace("DOUBLE", "DUBBLE");
        let err = parse_documents("defs.yaml", &bad).unwrap_err();
        assert_eq!(
            err.location,
            "defs.yaml: FeatureView kubeflow-alice/driver_daily_stats_fv"
        );
        assert_eq!(err.field, "spec.features[0].valueType");
        assert!(err.message.contains("DUBBLE"));

        let bad = GOOD.replace("ttl: 1d", "ttl: soon");
        let err = parse_documents("defs.yaml", &bad).unwrap_err();
        assert_eq!(err.field, "spec.ttl");

        let bad = GOOD.replace(
            "namespace: kubeflow-alice }\nspec:\n  entities",
            "namespace: Alice }\nspec:\n  entities",
        );
        let err = parse_documents("defs.yaml", &bad).unwrap_err();
        assert_eq!(err.field, "metadata.namespace");

        let bad = GOOD.replace("kind: Entity", "kind: Entiti");
        let err = parse_documents("defs.yaml", &bad).unwrap_err();
        assert_eq!(err.field, "kind");

        let bad = GOOD.replace("ttl: 1d", "ttl: 1d\n  extra: 1");
        let err = parse_documents("defs.yaml", &bad).unwrap_err();
        assert!(err.message.contains("extra"), "{err}");
    }

    #[test]
    fn duplicate_features_are_refused() {
        let bad = GOOD.replace(
            "- { name: profit, valueType: DOUBLE }",
            "- { name: profit, valueType: DOUBLE }\n    - { name: profit, valueType: FLOAT }",
        );
        let err = parse_documents("defs.yaml", &bad).unwrap_err();
        assert_eq!(err.field, "spec.features[1].name");
    }
}
