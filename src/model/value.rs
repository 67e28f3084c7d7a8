//! Typed feature values in Feast's type system.

use std::fmt;
use std::str::FromStr;

/// Feast's `ValueType`: the declared type of a join key or a feature.
/// The numbers are Feast's enum numbers and the `Value` oneof field numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ValueType {
    Bytes = 1,
    String = 2,
    Int32 = 3,
    Int64 = 4,
    Double = 5,
    Float = 6,
    Bool = 7,
    UnixTimestamp = 8,
    BytesList = 11,
    StringList = 12,
    Int32List = 13,
    Int64List = 14,
    DoubleList = 15,
    FloatList = 16,
    BoolList = 17,
    UnixTimestampList = 18,
}

impl ValueType {
    pub const ALL: [ValueType; 16] = [
        ValueType::Bytes,
        ValueType::String,
        ValueType::Int32,
        ValueType::Int64,
        ValueType::Double,
        ValueType::Float,
        ValueType::Bool,
        ValueType::UnixTimestamp,
        ValueType::BytesList,
        ValueType::StringList,
        ValueType::Int32List,
        ValueType::Int64List,
        ValueType::DoubleList,
        ValueType::FloatList,
        ValueType::BoolList,
        ValueType::UnixTimestampList,
    ];

    /// Feast's name for the type, as written in manifests.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Bytes => "BYTES",
            ValueType::String => "STRING",
            ValueType::Int32 => "INT32",
            ValueType::Int64 => "INT64",
            ValueType::Double => "DOUBLE",
            ValueType::Float => "FLOAT",
            ValueType::Bool => "BOOL",
            ValueType::UnixTimestamp => "UNIX_TIMESTAMP",
            ValueType::BytesList => "BYTES_LIST",
            ValueType::StringList => "STRING_LIST",
            ValueType::Int32List => "INT32_LIST",
            ValueType::Int64List => "INT64_LIST",
            ValueType::DoubleList => "DOUBLE_LIST",
            ValueType::FloatList => "FLOAT_LIST",
            ValueType::BoolList => "BOOL_LIST",
            ValueType::UnixTimestampList => "UNIX_TIMESTAMP_LIST",
        }
    }

    /// Whether Feast can serialize this type inside an entity key.
    pub fn is_entity_key_type(self) -> bool {
        matches!(
            self,
            ValueType::String
                | ValueType::Bytes
                | ValueType::Int32
                | ValueType::Int64
                | ValueType::UnixTimestamp
        )
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ValueType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ValueType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let known: Vec<&str> = ValueType::ALL.iter().map(|t| t.name()).collect();
                format!("unknown value type {s:?} (known: {})", known.join(", "))
            })
    }
}

/// One typed value. `Null` stands for both Feast's empty `Value` and its
/// explicit `null_val`: readers cannot tell them apart in meaning.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bytes(Vec<u8>),
    String(String),
    Int32(i32),
    Int64(i64),
    Double(f64),
    Float(f32),
    Bool(bool),
    /// Seconds since the Unix epoch.
    UnixTimestamp(i64),
    BytesList(Vec<Vec<u8>>),
    StringList(Vec<String>),
    Int32List(Vec<i32>),
    Int64List(Vec<i64>),
    DoubleList(Vec<f64>),
    FloatList(Vec<f32>),
    BoolList(Vec<bool>),
    UnixTimestampList(Vec<i64>),
}

impl Value {
    /// The type of this value, `None` for a null.
    pub fn value_type(&self) -> Option<ValueType> {
        Some(match self {
            Value::Null => return None,
            Value::Bytes(_) => ValueType::Bytes,
            Value::String(_) => ValueType::String,
            Value::Int32(_) => ValueType::Int32,
            Value::Int64(_) => ValueType::Int64,
            Value::Double(_) => ValueType::Double,
            Value::Float(_) => ValueType::Float,
            Value::Bool(_) => ValueType::Bool,
            Value::UnixTimestamp(_) => ValueType::UnixTimestamp,
            Value::BytesList(_) => ValueType::BytesList,
            Value::StringList(_) => ValueType::StringList,
            Value::Int32List(_) => ValueType::Int32List,
            Value::Int64List(_) => ValueType::Int64List,
            Value::DoubleList(_) => ValueType::DoubleList,
            Value::FloatList(_) => ValueType::FloatList,
            Value::BoolList(_) => ValueType::BoolList,
            Value::UnixTimestampList(_) => ValueType::UnixTimestampList,
        })
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Converts this value to `target` when no information is lost: the same
    /// type, or a widening between integer types (INT32 into INT64 or
    /// UNIX_TIMESTAMP). Anything else is refused with the type found.
    pub fn coerce_to(self, target: ValueType) -> Result<Value, TypeMismatch> {
        match (self, target) {
            (v, t) if v.value_type() == Some(t) => Ok(v),
            (Value::Int32(i), ValueType::Int64) => Ok(Value::Int64(i64::from(i))),
            (Value::Int32(i), ValueType::UnixTimestamp) => Ok(Value::UnixTimestamp(i64::from(i))),
            (Value::Int64(i), ValueType::UnixTimestamp) => Ok(Value::UnixTimestamp(i)),
            (Value::UnixTimestamp(i), ValueType::Int64) => Ok(Value::Int64(i)),
            (v, t) => Err(TypeMismatch {
                expected: t,
                found: v.value_type(),
            }),
        }
    }
}

/// A value whose type does not match what was declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMismatch {
    pub expected: ValueType,
    pub found: Option<ValueType>,
}

impl fmt::Display for TypeMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.found {
            Some(found) => write!(f, "expected {}, found {}", self.expected, found),
            None => write!(f, "expected {}, found a null", self.expected),
        }
    }
}

/// A point in time with nanosecond precision, as Feast stores event times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventTime {
    pub seconds: i64,
    pub nanos: i32,
}

impl EventTime {
    pub const EPOCH: EventTime = EventTime {
        seconds: 0,
        nanos: 0,
    };

    pub fn from_seconds(seconds: i64) -> Self {
        EventTime { seconds, nanos: 0 }
    }

    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        EventTime {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        }
    }

    /// Whether `self` lies more than `max_age` before `now`.
    pub fn older_than(self, max_age: std::time::Duration, now: EventTime) -> bool {
        let age_nanos = (i128::from(now.seconds) - i128::from(self.seconds)) * 1_000_000_000
            + i128::from(now.nanos - self.nanos);
        age_nanos > max_age.as_nanos() as i128
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_round_trip() {
        for t in ValueType::ALL {
            assert_eq!(t.name().parse::<ValueType>().unwrap(), t);
        }
        assert!(
            "DECIMAL"
                .parse::<ValueType>()
                .unwrap_err()
                .contains("DECIMAL")
        );
    }

    #[test]
    fn widening_is_lossless_only() {
        assert_eq!(
            Value::Int32(7).coerce_to(ValueType::Int64),
            Ok(Value::Int64(7))
        );
        assert_eq!(
            Value::Int64(7).coerce_to(ValueType::Int32),
            Err(TypeMismatch {
                expected: ValueType::Int32,
                found: Some(ValueType::Int64)
            })
        );
        assert!(Value::Float(1.0).coerce_to(ValueType::Double).is_err());
        assert!(Value::Null.coerce_to(ValueType::String).is_err());
    }

    #[test]
    fn age_compares_with_nanos() {
        let now = EventTime {
            seconds: 100,
            nanos: 500,
        };
        let ts = EventTime {
            seconds: 90,
            nanos: 400,
        };
        assert!(ts.older_than(std::time::Duration::from_secs(10), now));
        assert!(!ts.older_than(std::time::Duration::new(10, 100), now));
    }
}
