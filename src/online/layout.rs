//! Feast's online-store layout, byte for byte: entity key serialization,
//! Redis keys, hash fields. Pure functions over domain values; the store
//! back ends only move the bytes these produce.

use crate::model::{Value, ValueType};

/// Feast's entity key serialization versions larder can write. Version 3 is
/// Feast's default; version 2 omits the key count and the name lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyVersion {
    V2,
    #[default]
    V3,
}

impl TryFrom<u8> for KeyVersion {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            2 => Ok(KeyVersion::V2),
            3 => Ok(KeyVersion::V3),
            other => Err(format!(
                "entity key serialization version {other} is not supported (use 2 or 3)"
            )),
        }
    }
}

impl From<KeyVersion> for u8 {
    fn from(v: KeyVersion) -> u8 {
        match v {
            KeyVersion::V2 => 2,
            KeyVersion::V3 => 3,
        }
    }
}

/// A value that cannot be part of an entity key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{found} values cannot be serialized in an entity key")]
pub struct UnsupportedKeyValue {
    pub found: &'static str,
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends the serialized entity key for `names` (already sorted by name, as
/// Feast sorts them) and their `values` to `out`.
pub fn write_entity_key(
    out: &mut Vec<u8>,
    names: &[&str],
    values: &[&Value],
    version: KeyVersion,
) -> Result<(), UnsupportedKeyValue> {
    debug_assert_eq!(names.len(), values.len());
    if version == KeyVersion::V3 {
        put_u32(out, names.len() as u32);
    }
    for name in names {
        put_u32(out, ValueType::String as u32);
        if version == KeyVersion::V3 {
            put_u32(out, name.len() as u32);
        }
        out.extend_from_slice(name.as_bytes());
    }
    for value in values {
        let (ty, bytes): (ValueType, &[u8]) = match value {
            Value::String(s) => (ValueType::String, s.as_bytes()),
            Value::Bytes(b) => (ValueType::Bytes, b),
            Value::Int32(i) => {
                put_u32(out, ValueType::Int32 as u32);
                put_u32(out, 4);
                out.extend_from_slice(&i.to_le_bytes());
                continue;
            }
            Value::Int64(i) | Value::UnixTimestamp(i) => {
                let ty = if matches!(value, Value::Int64(_)) {
                    ValueType::Int64
                } else {
                    ValueType::UnixTimestamp
                };
                put_u32(out, ty as u32);
                put_u32(out, 8);
                out.extend_from_slice(&i.to_le_bytes());
                continue;
            }
            other => {
                return Err(UnsupportedKeyValue {
                    found: other.value_type().map_or("null", ValueType::name),
                });
            }
        };
        put_u32(out, ty as u32);
        put_u32(out, bytes.len() as u32);
        out.extend_from_slice(bytes);
    }
    Ok(())
}

/// The Redis key of an entity in a project: serialized key ++ project.
pub fn redis_key(
    names: &[&str],
    values: &[&Value],
    project: &str,
    version: KeyVersion,
) -> Result<Vec<u8>, UnsupportedKeyValue> {
    let mut out = Vec::with_capacity(64 + project.len());
    write_entity_key(&mut out, names, values, version)?;
    out.extend_from_slice(project.as_bytes());
    Ok(out)
}

/// A serialized entity key that could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed entity key: {0}")]
pub struct MalformedKey(&'static str);

/// Reads a version-3 serialized entity key (without the project suffix)
/// back into join key names and values.
pub fn read_entity_key_v3(mut bytes: &[u8]) -> Result<(Vec<String>, Vec<Value>), MalformedKey> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], MalformedKey> {
        if bytes.len() < n {
            return Err(MalformedKey("truncated"));
        }
        let (head, tail) = bytes.split_at(n);
        *bytes = tail;
        Ok(head)
    }
    fn u32_le(bytes: &mut &[u8]) -> Result<u32, MalformedKey> {
        let b = take(bytes, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    let count = u32_le(&mut bytes)? as usize;
    if count > 1024 {
        return Err(MalformedKey("implausible key count"));
    }
    let mut names = Vec::with_capacity(count);
    for _ in 0..count {
        if u32_le(&mut bytes)? != ValueType::String as u32 {
            return Err(MalformedKey("join key name is not a string"));
        }
        let len = u32_le(&mut bytes)? as usize;
        let name = std::str::from_utf8(take(&mut bytes, len)?)
            .map_err(|_| MalformedKey("join key name is not UTF-8"))?;
        names.push(name.to_owned());
    }
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        let ty = u32_le(&mut bytes)?;
        let len = u32_le(&mut bytes)? as usize;
        let raw = take(&mut bytes, len)?;
        let value = match ty {
            t if t == ValueType::String as u32 => Value::String(
                std::str::from_utf8(raw)
                    .map_err(|_| MalformedKey("string value is not UTF-8"))?
                    .to_owned(),
            ),
            t if t == ValueType::Bytes as u32 => Value::Bytes(raw.to_vec()),
            t if t == ValueType::Int32 as u32 => Value::Int32(i32::from_le_bytes(
                raw.try_into()
                    .map_err(|_| MalformedKey("INT32 is not 4 bytes"))?,
            )),
            t if t == ValueType::Int64 as u32 => Value::Int64(i64::from_le_bytes(
                raw.try_into()
                    .map_err(|_| MalformedKey("INT64 is not 8 bytes"))?,
            )),
            t if t == ValueType::UnixTimestamp as u32 => Value::UnixTimestamp(i64::from_le_bytes(
                raw.try_into()
                    .map_err(|_| MalformedKey("UNIX_TIMESTAMP is not 8 bytes"))?,
            )),
            _ => return Err(MalformedKey("unsupported value type")),
        };
        values.push(value);
    }
    if !bytes.is_empty() {
        return Err(MalformedKey("trailing bytes"));
    }
    Ok((names, values))
}

/// The hash field of a feature: MurmurHash3 x86_32 (seed 0) of
/// `"<view>:<feature>"`, little-endian.
pub fn feature_field(view: &str, feature: &str) -> [u8; 4] {
    let text = format!("{view}:{feature}");
    let hash = murmur3::murmur3_32(&mut std::io::Cursor::new(text.as_bytes()), 0);
    hash.to_le_bytes()
}

/// The hash field holding a view's event timestamp: `_ts:<view>`.
pub fn timestamp_field(view: &str) -> Vec<u8> {
    format!("_ts:{view}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_omits_count_and_name_lengths() {
        let mut out = Vec::new();
        write_entity_key(&mut out, &["id"], &[&Value::Int32(5)], KeyVersion::V2).unwrap();
        assert_eq!(
            out,
            [2, 0, 0, 0, b'i', b'd', 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0]
        );
    }

    #[test]
    fn non_key_types_are_refused() {
        let err = redis_key(&["x"], &[&Value::Double(1.0)], "p", KeyVersion::V3).unwrap_err();
        assert_eq!(err.found, "DOUBLE");
    }

    #[test]
    fn malformed_keys_are_errors_not_panics() {
        assert!(read_entity_key_v3(&[]).is_err());
        assert!(read_entity_key_v3(&[1, 0, 0, 0, 2, 0, 0, 0, 255, 255, 255, 255]).is_err());
        assert!(read_entity_key_v3(&[255, 255, 255, 255]).is_err());
    }
}
