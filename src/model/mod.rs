//! The domain model: what a feature store is about, free of any wire format
//! or database. Nothing here imports prost, tonic, axum, redis or sqlx.

mod definitions;
mod feature_ref;
mod value;

pub use definitions::{
    DUMMY_JOIN_KEY, DataSource, Entity, Feature, FeatureService, FeatureView, JoinKey,
    OnDemandFeature, OnDemandFeatureView, SourceTable, check_dns1123_label, check_object_name,
    default_project_for,
};
pub use definitions::{KafkaSource, MessageFormat, StreamKind, StreamSource};
pub use feature_ref::{FeatureRef, MalformedRef, RefParts};
pub use value::{EventTime, TypeMismatch, Value, ValueType};

/// How a feature value came back from the online store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldStatus {
    /// The stored bytes could not be decoded.
    Invalid,
    Present,
    /// A value is stored for the entity but it is empty or null.
    NullValue,
    /// Nothing is stored for the entity.
    NotFound,
    /// The stored value is older than the view's TTL.
    OutsideMaxAge,
}
