//! Feast 0.67's own bytes (tests/fixtures) against larder's encoders and
//! decoders, and a property test of the round trip.

mod common;

use std::str::FromStr;

use common::{golden, hex, unhex};
use larder::model::FieldStatus;
use larder::model::{EventTime, Value};
use larder::online::ReadResult;
use larder::online::codec::{
    Stored, classify_value, decode_timestamp, decode_value, encode_timestamp, encode_value,
};
use larder::online::layout::{
    KeyVersion, feature_field, read_entity_key_v3, redis_key, timestamp_field,
};
use larder::serving::grpc::{EncodedResponse, to_wire};
use larder::serving::{Cell, Column, OnlineResponse};
use proptest::prelude::*;
use prost::Message;

/// A Feast `Value` in proto JSON form, as the fixture writes it.
fn value_from_json(v: &serde_json::Value) -> Value {
    let (kind, x) = v.as_object().unwrap().iter().next().unwrap();
    let list = |x: &serde_json::Value| x["val"].as_array().unwrap().clone();
    match kind.as_str() {
        "int64Val" => Value::Int64(x.as_str().unwrap().parse().unwrap()),
        "int32Val" => Value::Int32(x.as_i64().unwrap() as i32),
        "floatVal" => Value::Float(x.as_f64().unwrap() as f32),
        "doubleVal" => Value::Double(x.as_f64().unwrap()),
        "stringVal" => Value::String(x.as_str().unwrap().to_owned()),
        "boolVal" => Value::Bool(x.as_bool().unwrap()),
        "doubleListVal" => Value::DoubleList(list(x).iter().map(|d| d.as_f64().unwrap()).collect()),
        other => panic!("fixture value kind {other} not handled by this test"),
    }
}

#[test]
fn golden_keys_fields_and_values_match_feast() {
    let fixture = golden();
    let project = fixture["project"].as_str().unwrap();
    let mut checked_values = 0;
    for record in fixture["records"].as_array().unwrap() {
        // Entity key: join keys sorted by name, as Feast sorts them.
        let entity = record["entity_key"].as_object().unwrap();
        let mut pairs: Vec<(&String, Value)> = entity
            .iter()
            .map(|(k, v)| (k, value_from_json(v)))
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        let values: Vec<&Value> = pairs.iter().map(|(_, v)| v).collect();
        let key = redis_key(&names, &values, project, KeyVersion::V3).unwrap();
        assert_eq!(hex(&key), record["redis_key_hex"].as_str().unwrap());

        // And back: the key without its project suffix decodes to the same.
        let raw = &key[..key.len() - project.len()];
        let (decoded_names, decoded_values) = read_entity_key_v3(raw).unwrap();
        assert_eq!(decoded_names, names);
        assert_eq!(decoded_values.iter().collect::<Vec<_>>(), values);

        for f in record["hash_fields"].as_array().unwrap() {
            let field_hex = f["field_hex"].as_str().unwrap();
            let value_bytes = unhex(f["value_hex"].as_str().unwrap());
            if let Some(feature_ref) = f.get("feature_ref").and_then(|r| r.as_str()) {
                let (view, feature) = feature_ref.split_once(':').unwrap();
                assert_eq!(
                    hex(&feature_field(view, feature)),
                    field_hex,
                    "{feature_ref}"
                );
                let expected = value_from_json(&f["value_proto_json"]);
                assert_eq!(
                    hex(&encode_value(&expected)),
                    hex(&value_bytes),
                    "{feature_ref}"
                );
                assert_eq!(
                    decode_value(&value_bytes).unwrap(),
                    expected,
                    "{feature_ref}"
                );
                checked_values += 1;
            } else {
                let field = f["field_utf8"].as_str().unwrap();
                let view = field.strip_prefix("_ts:").unwrap();
                assert_eq!(hex(&timestamp_field(view)), field_hex);
                let ts =
                    prost_types::Timestamp::from_str(f["timestamp_proto_json"].as_str().unwrap())
                        .unwrap();
                let expected = EventTime {
                    seconds: ts.seconds,
                    nanos: ts.nanos,
                };
                assert_eq!(encode_timestamp(expected), value_bytes);
                assert_eq!(decode_timestamp(&value_bytes).unwrap(), expected);
            }
        }
    }
    assert_eq!(
        checked_values, 15,
        "every feature value of the fixture was checked"
    );
}

#[test]
fn corrupt_bytes_are_errors() {
    assert!(decode_value(&[0x12, 0x05, b'a']).is_err());
    assert!(decode_timestamp(&[0x08]).is_err());
}

fn key_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<String>().prop_map(Value::String),
        proptest::collection::vec(any::<u8>(), 0..32).prop_map(Value::Bytes),
        any::<i32>().prop_map(Value::Int32),
        any::<i64>().prop_map(Value::Int64),
        any::<i64>().prop_map(Value::UnixTimestamp),
    ]
}

fn feature_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        key_value(),
        any::<f64>()
            .prop_filter("NaN never equals itself", |d| !d.is_nan())
            .prop_map(Value::Double),
        any::<f32>()
            .prop_filter("NaN never equals itself", |d| !d.is_nan())
            .prop_map(Value::Float),
        any::<bool>().prop_map(Value::Bool),
        proptest::collection::vec(any::<String>(), 0..4).prop_map(Value::StringList),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..4)
            .prop_map(Value::BytesList),
        proptest::collection::vec(any::<i32>(), 0..8).prop_map(Value::Int32List),
        proptest::collection::vec(any::<i64>(), 0..8).prop_map(Value::Int64List),
        proptest::collection::vec(any::<i64>(), 0..8).prop_map(Value::UnixTimestampList),
        proptest::collection::vec(-1e9f64..1e9, 0..8).prop_map(Value::DoubleList),
        proptest::collection::vec(-1e9f32..1e9, 0..8).prop_map(Value::FloatList),
        proptest::collection::vec(any::<bool>(), 0..8).prop_map(Value::BoolList),
    ]
}

proptest! {
    #[test]
    fn entity_keys_round_trip(
        pairs in proptest::collection::btree_map("[a-z_][a-z0-9_]{0,12}", key_value(), 1..4)
    ) {
        let names: Vec<&str> = pairs.keys().map(String::as_str).collect();
        let values: Vec<&Value> = pairs.values().collect();
        let key = redis_key(&names, &values, "", KeyVersion::V3).unwrap();
        let (n, v) = read_entity_key_v3(&key).unwrap();
        prop_assert_eq!(n, names);
        prop_assert_eq!(v.iter().collect::<Vec<_>>(), values);
    }

    #[test]
    fn feature_values_round_trip(value in feature_value()) {
        prop_assert_eq!(decode_value(&encode_value(&value)).unwrap(), value);
    }

    #[test]
    fn timestamps_round_trip(seconds in -62_135_596_800i64..253_402_300_799, nanos in 0i32..1_000_000_000) {
        let t = EventTime { seconds, nanos };
        prop_assert_eq!(decode_timestamp(&encode_timestamp(t)).unwrap(), t);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_value(&bytes);
        let _ = decode_timestamp(&bytes);
        let _ = read_entity_key_v3(&bytes);
    }
}

/// What decoding says of stored bytes, in `classify_value`'s terms.
fn decoded_class(bytes: &[u8]) -> Stored {
    match decode_value(bytes) {
        Ok(Value::Null) => Stored::Null,
        Ok(_) => Stored::Present,
        Err(_) => Stored::Invalid,
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Byte strings shaped like `Value` messages: a few fields, each a tag of
/// the message's or near one, any wire type and a body that may be cut
/// short, too long, or not what the wire type says.
fn value_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let field = (
        0u64..24,
        0u64..8,
        proptest::collection::vec(any::<u8>(), 0..12),
        any::<bool>(),
    )
        .prop_map(|(tag, wire_type, body, prefixed)| {
            let mut out = Vec::new();
            put_varint(&mut out, (tag << 3) | wire_type);
            if wire_type == 2 && prefixed {
                put_varint(&mut out, body.len() as u64);
            }
            out.extend_from_slice(&body);
            out
        });
    proptest::collection::vec(field, 0..4).prop_map(|fields| fields.concat())
}

#[test]
fn classifying_stored_values_agrees_with_decoding_them() {
    let cases: &[&[u8]] = &[
        &[],
        // int64 -1: a ten-byte varint.
        &[
            0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ],
        // A tenth byte over 1 overflows 64 bits.
        &[
            0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ],
        // Eleven bytes.
        &[
            0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x80, 0x01,
        ],
        // null_val, then a value after it, then null_val after a value.
        &[0x98, 0x01, 0x00],
        &[0x98, 0x01, 0x00, 0x20, 0x05],
        &[0x20, 0x05, 0x98, 0x01, 0x00],
        // string_val that is not UTF-8, bytes_val with the same body.
        &[0x12, 0x02, 0xc3, 0x28],
        &[0x0a, 0x02, 0xc3, 0x28],
        // A length past the end; a double cut short.
        &[0x12, 0x05, b'a'],
        &[0x29, 0, 0, 0, 0, 0, 0, 0xf0],
        // A double list (decoded, not scanned).
        &[0x7a, 0x09, 0x0a, 0x08, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f],
        // An unknown field only.
        &[0xa0, 0x01, 0x07],
    ];
    for bytes in cases {
        assert_eq!(classify_value(bytes), decoded_class(bytes), "{bytes:02x?}");
    }
    assert_eq!(classify_value(cases[1]), Stored::Present);
    assert_eq!(classify_value(cases[2]), Stored::Invalid);
    assert_eq!(classify_value(cases[4]), Stored::Null);
    assert_eq!(classify_value(cases[6]), Stored::Null);
    assert_eq!(classify_value(cases[7]), Stored::Invalid);
    assert_eq!(classify_value(cases[8]), Stored::Present);
}

/// One response cell in the making: a value, whether it is served as
/// stored bytes, a status and an event time.
fn response_cell() -> impl Strategy<Value = (Value, bool, usize, EventTime)> {
    (
        feature_value(),
        any::<bool>(),
        0usize..5,
        // Often equal across columns, as a view's features share a time.
        prop_oneof![any::<i64>(), 0i64..3],
        prop_oneof![any::<i32>(), 0i32..2],
    )
        .prop_map(|(v, stored, status, seconds, nanos)| {
            (v, stored, status, EventTime { seconds, nanos })
        })
}

proptest! {
    #[test]
    fn classifying_value_like_bytes_agrees_with_decoding_them(bytes in value_like_bytes()) {
        prop_assert_eq!(classify_value(&bytes), decoded_class(&bytes));
    }

    #[test]
    fn classifying_any_bytes_agrees_with_decoding_them(
        bytes in proptest::collection::vec(any::<u8>(), 0..48)
    ) {
        prop_assert_eq!(classify_value(&bytes), decoded_class(&bytes));
    }

    #[test]
    fn stored_values_classify_as_what_they_hold(value in feature_value()) {
        let want = if value.is_null() { Stored::Null } else { Stored::Present };
        prop_assert_eq!(classify_value(&encode_value(&value)), want);
    }

    #[test]
    fn grpc_responses_are_the_bytes_prost_writes(
        names in proptest::collection::vec("[a-z_:]{0,20}", 0..4),
        columns in proptest::collection::vec(proptest::collection::vec(response_cell(), 0..5), 0..4),
    ) {
        const STATUSES: [FieldStatus; 5] = [
            FieldStatus::Invalid,
            FieldStatus::Present,
            FieldStatus::NullValue,
            FieldStatus::NotFound,
            FieldStatus::OutsideMaxAge,
        ];
        // One stored key per column, holding the column's stored cells.
        let read: ReadResult = columns
            .iter()
            .map(|c| {
                c.iter()
                    .filter(|(_, stored, ..)| *stored)
                    .map(|(v, ..)| Some(encode_value(v)))
                    .collect()
            })
            .collect();
        let columns = columns
            .iter()
            .enumerate()
            .map(|(k, cells)| {
                let mut field = 0;
                let values = cells
                    .iter()
                    .map(|(v, stored, ..)| {
                        if *stored {
                            field += 1;
                            Cell::Stored(read.locate(k, field - 1).unwrap())
                        } else {
                            Cell::Value(v.clone())
                        }
                    })
                    .collect();
                Column {
                    values,
                    statuses: cells.iter().map(|c| STATUSES[c.2]).collect(),
                    event_times: cells.iter().map(|c| c.3).collect(),
                }
            })
            .collect();
        let response = OnlineResponse { names: names.into_iter().map(Into::into).collect(), columns, transform_errors: 0, read };
        let want = to_wire(&response).encode_to_vec();
        let got = EncodedResponse::new(response).encode_to_vec();
        prop_assert_eq!(got, want);
    }
}
