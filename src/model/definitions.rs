//! The objects users define: entities, feature views, feature services.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{FeatureRef, Value, ValueType};

/// A join key and its declared type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JoinKey {
    pub name: String,
    pub value_type: ValueType,
}

/// The join key Feast uses for feature views without entities; its value
/// is always the empty string.
pub const DUMMY_JOIN_KEY: &str = "__dummy_id";

/// Something features are about (a driver, a rider): named, with the join
/// key(s) that identify one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub name: String,
    pub namespace: String,
    pub join_keys: Vec<JoinKey>,
    pub description: String,
    pub labels: BTreeMap<String, String>,
}

/// A named, typed feature of a feature view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    pub name: String,
    pub value_type: ValueType,
}

/// A group of features stored and served together under the same entity
/// key.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureView {
    pub name: String,
    pub namespace: String,
    /// Names of the entities; empty for a view keyed by nothing.
    pub entities: Vec<String>,
    /// The join keys of all entities, sorted by name as Feast serializes
    /// them. Empty when the view has no entities.
    pub join_keys: Vec<JoinKey>,
    pub features: Vec<Feature>,
    /// Values older than this are served as OUTSIDE_MAX_AGE. `None` means
    /// values never expire.
    pub ttl: Option<Duration>,
    pub online: bool,
    pub source: Option<String>,
    /// The push or Kafka source fresh rows arrive through (`spec.streamSource`).
    pub stream_source: Option<String>,
    pub description: String,
    pub labels: BTreeMap<String, String>,
}

impl FeatureView {
    pub fn feature(&self, name: &str) -> Option<(usize, &Feature)> {
        self.features
            .iter()
            .enumerate()
            .find(|(_, f)| f.name == name)
    }
}

/// Where a batch source's rows live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceTable {
    /// A PostgreSQL table. `database` empty: the offline store's default
    /// database.
    Postgres {
        database: String,
        schema: String,
        table: String,
    },
    /// A table of the embedded SQLite offline store.
    Sqlite { table: String },
}

/// A table of timestamped rows that feature views read their history
/// from: the offline store's side of a feature view.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSource {
    pub name: String,
    pub namespace: String,
    pub table: SourceTable,
    /// The column holding each row's event time.
    pub timestamp_field: String,
    /// The column holding when the row was written; breaks ties between
    /// rows with the same event time (the later wins).
    pub created_timestamp_field: Option<String>,
    /// Column name -> feature (or join key) name, where they differ.
    pub field_mapping: BTreeMap<String, String>,
    pub description: String,
    pub labels: BTreeMap<String, String>,
}

impl DataSource {
    /// The column that holds feature or join key `name`.
    pub fn column_of<'a>(&'a self, name: &'a str) -> &'a str {
        self.field_mapping
            .iter()
            .find(|(_, feature)| *feature == name)
            .map(|(column, _)| column.as_str())
            .unwrap_or(name)
    }
}

/// A source of fresh rows for feature views: rows pushed to the feature
/// server, or messages of a Kafka topic. Every row is also logged to the
/// batch source, so training data holds what serving saw.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSource {
    pub name: String,
    pub namespace: String,
    pub kind: StreamKind,
    /// The batch source (a table) rows are appended to.
    pub batch_source: String,
    pub description: String,
    pub labels: BTreeMap<String, String>,
}

/// What kind of stream source, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamKind {
    /// Rows arrive through the feature server's push API.
    Push,
    /// Rows arrive as messages of a Kafka topic, read by `larder ingest`.
    Kafka(KafkaSource),
}

/// Where a Kafka source's messages come from and how they are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSource {
    /// `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    pub topic: String,
    pub format: MessageFormat,
    /// The message field holding each row's event time.
    pub timestamp_field: String,
    /// Message field -> feature (or join key) name, where they differ.
    pub field_mapping: BTreeMap<String, String>,
    /// Where messages that cannot be read go, when set.
    pub dead_letter_topic: Option<String>,
    /// The consumer group; `larder-<namespace>-<name>` when unset.
    pub consumer_group: Option<String>,
}

impl KafkaSource {
    /// The message field that holds feature or join key `name`.
    pub fn field_of<'a>(&'a self, name: &'a str) -> &'a str {
        self.field_mapping
            .iter()
            .find(|(_, feature)| *feature == name)
            .map(|(field, _)| field.as_str())
            .unwrap_or(name)
    }
}

/// How a message's bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageFormat {
    /// One JSON object per message.
    Json,
}

/// A named list of feature references, served as one unit.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureService {
    pub name: String,
    pub namespace: String,
    pub features: Vec<FeatureRef>,
    pub description: String,
    pub labels: BTreeMap<String, String>,
}

/// A feature computed from other features and request data by an
/// expression, rather than stored: an on-demand feature view.
#[derive(Debug, Clone, PartialEq)]
pub struct OnDemandFeatureView {
    pub name: String,
    pub namespace: String,
    /// Feature views of the same namespace whose features the expressions
    /// read, as `view.feature`.
    pub source_views: Vec<String>,
    /// Named, typed values each request supplies (Feast's request
    /// sources), read by their bare names.
    pub request_fields: Vec<Feature>,
    pub features: Vec<OnDemandFeature>,
    /// Computed when rows are written (materialized, pushed, streamed) and
    /// stored like a feature view, instead of at request time.
    pub write_to_online_store: bool,
    pub description: String,
    pub labels: BTreeMap<String, String>,
}

/// One feature of an on-demand view: its type and the CEL expression that
/// computes it.
#[derive(Debug, Clone, PartialEq)]
pub struct OnDemandFeature {
    pub name: String,
    pub value_type: ValueType,
    pub expression: String,
    /// Served (as PRESENT) when an input the expression reads is missing or
    /// null; without it such a row gets no value.
    pub default: Option<Value>,
}

/// Checks a name against Kubernetes' DNS-1123 label rule, which larder
/// applies to namespaces. Returns the reason on failure.
pub fn check_dns1123_label(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > 63 {
        return Err("must be at most 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("may contain only lowercase letters, digits and '-'");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

/// Checks an object name (entity, view, feature, service). Feast's names
/// use underscores (`driver_daily_stats_fv`), so larder accepts DNS-1123
/// labels with `_` as well as `-`; both appear in Redis fields verbatim.
pub fn check_object_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > 253 {
        return Err("must be at most 253 characters");
    }
    let first = name.as_bytes()[0];
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return Err("must start with a letter or '_'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("may contain only letters, digits, '_' and '-'");
    }
    Ok(())
}

/// The Feast project name that stands for a namespace in the online store:
/// Feast projects allow only letters, digits and `_`, so `-` becomes `_`
/// (`kubeflow-alice` is stored under project `kubeflow_alice`).
pub fn default_project_for(namespace: &str) -> String {
    namespace.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1123() {
        assert!(check_dns1123_label("kubeflow-alice").is_ok());
        assert!(check_dns1123_label("Kubeflow").is_err());
        assert!(check_dns1123_label("-a").is_err());
        assert!(check_dns1123_label(&"a".repeat(64)).is_err());
    }

    #[test]
    fn object_names() {
        assert!(check_object_name("driver_daily_stats_fv").is_ok());
        assert!(check_object_name("driver-stats").is_ok());
        assert!(check_object_name("1abc").is_err());
        assert!(check_object_name("a:b").is_err());
        assert!(check_object_name("a/b").is_err());
    }

    #[test]
    fn project_names() {
        assert_eq!(default_project_for("kubeflow-alice"), "kubeflow_alice");
    }
}
