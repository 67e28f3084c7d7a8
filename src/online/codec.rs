//! Stored bytes <-> domain values: feature values are serialized
//! `feast.types.Value` messages, event times serialized
//! `google.protobuf.Timestamp` messages, exactly as Feast writes them.

use prost::Message;

use crate::model::{EventTime, Value};
use crate::proto::feast::types as wire;

/// Stored bytes that are not the message they should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored {what} could not be decoded: {reason}")]
pub struct CorruptValue {
    pub what: &'static str,
    pub reason: String,
}

pub fn encode_value(value: &Value) -> Vec<u8> {
    wire::Value::from(value.clone()).encode_to_vec()
}

pub fn decode_value(bytes: &[u8]) -> Result<Value, CorruptValue> {
    wire::Value::decode(bytes)
        .map(Value::from)
        .map_err(|e| CorruptValue {
            what: "feature value",
            reason: e.to_string(),
        })
}

pub fn encode_timestamp(t: EventTime) -> Vec<u8> {
    prost_types::Timestamp::from(t).encode_to_vec()
}

pub fn decode_timestamp(bytes: &[u8]) -> Result<EventTime, CorruptValue> {
    prost_types::Timestamp::decode(bytes)
        .map(EventTime::from)
        .map_err(|e| CorruptValue {
            what: "event timestamp",
            reason: e.to_string(),
        })
}
