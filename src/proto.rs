//! The Feast wire types (and larder's own, `larder.v1`) generated from `proto/`, and their conversions to
//! and from the domain model. This is the only module that knows both.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod feast {
    pub mod types {
        tonic::include_proto!("feast.types");
    }
    pub mod serving {
        tonic::include_proto!("feast.serving");
    }
}

/// larder's own services (`larder.v1.PushService`).
pub mod larder {
    pub mod v1 {
        tonic::include_proto!("larder.v1");
    }
}

/// The encoded descriptors of every larder proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("larder_descriptor");

use crate::model::{EventTime, Value};
use feast::types::value::Val;

impl From<Value> for feast::types::Value {
    fn from(v: Value) -> Self {
        use feast::types as t;
        let val = match v {
            Value::Null => None,
            Value::Bytes(b) => Some(Val::BytesVal(b)),
            Value::String(s) => Some(Val::StringVal(s)),
            Value::Int32(i) => Some(Val::Int32Val(i)),
            Value::Int64(i) => Some(Val::Int64Val(i)),
            Value::Double(d) => Some(Val::DoubleVal(d)),
            Value::Float(f) => Some(Val::FloatVal(f)),
            Value::Bool(b) => Some(Val::BoolVal(b)),
            Value::UnixTimestamp(i) => Some(Val::UnixTimestampVal(i)),
            Value::BytesList(val) => Some(Val::BytesListVal(t::BytesList { val })),
            Value::StringList(val) => Some(Val::StringListVal(t::StringList { val })),
            Value::Int32List(val) => Some(Val::Int32ListVal(t::Int32List { val })),
            Value::Int64List(val) => Some(Val::Int64ListVal(t::Int64List { val })),
            Value::DoubleList(val) => Some(Val::DoubleListVal(t::DoubleList { val })),
            Value::FloatList(val) => Some(Val::FloatListVal(t::FloatList { val })),
            Value::BoolList(val) => Some(Val::BoolListVal(t::BoolList { val })),
            Value::UnixTimestampList(val) => Some(Val::UnixTimestampListVal(t::Int64List { val })),
        };
        feast::types::Value { val }
    }
}

impl From<feast::types::Value> for Value {
    fn from(v: feast::types::Value) -> Self {
        match v.val {
            None | Some(Val::NullVal(_)) => Value::Null,
            Some(Val::BytesVal(b)) => Value::Bytes(b),
            Some(Val::StringVal(s)) => Value::String(s),
            Some(Val::Int32Val(i)) => Value::Int32(i),
            Some(Val::Int64Val(i)) => Value::Int64(i),
            Some(Val::DoubleVal(d)) => Value::Double(d),
            Some(Val::FloatVal(f)) => Value::Float(f),
            Some(Val::BoolVal(b)) => Value::Bool(b),
            Some(Val::UnixTimestampVal(i)) => Value::UnixTimestamp(i),
            Some(Val::BytesListVal(l)) => Value::BytesList(l.val),
            Some(Val::StringListVal(l)) => Value::StringList(l.val),
            Some(Val::Int32ListVal(l)) => Value::Int32List(l.val),
            Some(Val::Int64ListVal(l)) => Value::Int64List(l.val),
            Some(Val::DoubleListVal(l)) => Value::DoubleList(l.val),
            Some(Val::FloatListVal(l)) => Value::FloatList(l.val),
            Some(Val::BoolListVal(l)) => Value::BoolList(l.val),
            Some(Val::UnixTimestampListVal(l)) => Value::UnixTimestampList(l.val),
        }
    }
}

impl From<EventTime> for prost_types::Timestamp {
    fn from(t: EventTime) -> Self {
        prost_types::Timestamp {
            seconds: t.seconds,
            nanos: t.nanos,
        }
    }
}

impl From<prost_types::Timestamp> for EventTime {
    fn from(t: prost_types::Timestamp) -> Self {
        EventTime {
            seconds: t.seconds,
            nanos: t.nanos,
        }
    }
}
