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

/// What a stored feature value holds, as far as serving needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A value: it can be served as the bytes it is stored as.
    Present,
    /// An empty message or `null_val`.
    Null,
    /// Bytes that do not decode as a `feast.types.Value`.
    Invalid,
}

/// Classifies stored value bytes without decoding them into a value, so
/// that a present value can be served as the bytes it was stored as. It
/// agrees with [`decode_value`] on every input: the common encodings (one
/// scalar field, as Feast and larder write them) are checked by a scan
/// that allocates nothing, anything else by decoding.
pub fn classify_value(bytes: &[u8]) -> Stored {
    match scan_scalar_value(bytes) {
        Some(stored) => stored,
        None => match decode_value(bytes) {
            Ok(Value::Null) => Stored::Null,
            Ok(_) => Stored::Present,
            Err(_) => Stored::Invalid,
        },
    }
}

/// A varint starting at `pos`: its value and the position after it, with
/// the decoder's rules (at most ten bytes, the tenth at most 1). `None`
/// where the decoder would fail: the caller then decodes to be sure.
fn varint_at(bytes: &[u8], mut pos: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for i in 0..10 {
        let b = *bytes.get(pos)?;
        pos += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return (i < 9 || b < 2).then_some((value, pos));
        }
    }
    None
}

/// The scan behind [`classify_value`]: `Some` when every field is one of
/// `Value`'s scalar or null fields with its own wire type and the message
/// is well formed; `None` (decode to be sure) for anything else, lists
/// included. As in protobuf, the last field of the oneof wins.
fn scan_scalar_value(bytes: &[u8]) -> Option<Stored> {
    let mut pos = 0;
    let mut last = Stored::Null;
    while pos < bytes.len() {
        let (key, next) = varint_at(bytes, pos)?;
        pos = next;
        last = match (key >> 3, key & 7) {
            // bytes_val, string_val: length-delimited.
            (field @ (1 | 2), 2) => {
                let (len, next) = varint_at(bytes, pos)?;
                let end = next.checked_add(usize::try_from(len).ok()?)?;
                let body = bytes.get(next..end)?;
                if field == 2 && std::str::from_utf8(body).is_err() {
                    return None;
                }
                pos = end;
                Stored::Present
            }
            // int32, int64, bool, unix_timestamp; null_val.
            (field @ (3 | 4 | 7 | 8 | 19), 0) => {
                pos = varint_at(bytes, pos)?.1;
                if field == 19 {
                    Stored::Null
                } else {
                    Stored::Present
                }
            }
            // double_val: 64-bit.
            (5, 1) => {
                pos = pos.checked_add(8).filter(|end| *end <= bytes.len())?;
                Stored::Present
            }
            // float_val: 32-bit.
            (6, 5) => {
                pos = pos.checked_add(4).filter(|end| *end <= bytes.len())?;
                Stored::Present
            }
            _ => return None,
        };
    }
    Some(last)
}
