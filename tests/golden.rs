//! Feast 0.67's own bytes (tests/fixtures) against larder's encoders and
//! decoders, and a property test of the round trip.

mod common;

use std::str::FromStr;

use common::{golden, hex, unhex};
use larder::model::{EventTime, Value};
use larder::online::codec::{decode_timestamp, decode_value, encode_timestamp, encode_value};
use larder::online::layout::{
    KeyVersion, feature_field, read_entity_key_v3, redis_key, timestamp_field,
};
use proptest::prelude::*;

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
