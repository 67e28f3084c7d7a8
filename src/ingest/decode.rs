//! Streamed values -> typed rows of feature views.
//!
//! Kafka messages (one JSON object each) and pushed columns arrive untyped;
//! every value is typed by the view's declared type with the same rules as
//! materialization (`offline::materialize::fit`: integers widen, a value
//! that does not fit is refused, never truncated), plus base64 text for
//! BYTES. Event times are RFC 3339 text (`2024-05-01T12:00:00Z`), ISO 8601
//! text without an offset (UTC, `2024-05-01 12:00:00.250`), or epoch seconds
//! (an integer or a fraction).

use std::sync::Arc;

use base64::Engine;

use crate::model::{EventTime, KafkaSource, Value, ValueType};
use crate::offline::materialize::{Raw, fit};
use crate::online::ViewRow;
use crate::registry::ServedView;

/// Types `raw` as `target`: materialization's rules, plus base64 text for
/// BYTES and BYTES_LIST.
pub fn typed(raw: Raw, target: ValueType) -> Result<Value, String> {
    let b64 = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| format!("text {s:?} is not base64 ({e})"))
    };
    match (raw, target) {
        (Raw::Text(s), ValueType::Bytes) => Ok(Value::Bytes(b64(&s)?)),
        (Raw::Texts(v), ValueType::BytesList) => Ok(Value::BytesList(
            v.iter().map(|s| b64(s)).collect::<Result<_, _>>()?,
        )),
        (raw, target) => fit(raw, target),
    }
}

/// An event time from a streamed value.
pub fn event_time(raw: &Raw) -> Result<EventTime, String> {
    match raw {
        Raw::Time(t) => Ok(*t),
        Raw::Int(i) => Ok(EventTime::from_seconds(*i)),
        Raw::Float(f) if f.is_finite() && f.abs() < 1e15 => {
            let seconds = f.floor();
            let nanos = ((f - seconds) * 1e9).round().min(999_999_999.0);
            Ok(EventTime {
                seconds: seconds as i64,
                nanos: nanos as i32,
            })
        }
        Raw::Text(s) => {
            let t: prost_types::Timestamp = s.trim().parse().map_err(|_| {
                format!(
                    "{s:?} is not a timestamp (RFC 3339 like 2024-05-01T12:00:00Z, \
                     2024-05-01 12:00:00 in UTC, or epoch seconds)"
                )
            })?;
            Ok(EventTime {
                seconds: t.seconds,
                nanos: t.nanos,
            })
        }
        Raw::Null => Err("is null".into()),
        other => Err(format!("{other:?} is not a timestamp")),
    }
}

/// A JSON value as an untyped streamed value.
pub fn raw_of_json(v: &serde_json::Value) -> Result<Raw, String> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => Raw::Null,
        J::Bool(b) => Raw::Bool(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Raw::Int(i),
            None => Raw::Float(n.as_f64().ok_or_else(|| format!("{n} is out of range"))?),
        },
        J::String(s) => Raw::Text(s.clone()),
        J::Array(items) => {
            if items.iter().all(|i| i.as_i64().is_some()) {
                Raw::Ints(items.iter().filter_map(J::as_i64).collect())
            } else if items.iter().all(J::is_number) {
                Raw::Floats(items.iter().filter_map(J::as_f64).collect())
            } else if items.iter().all(J::is_string) {
                Raw::Texts(
                    items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_owned))
                        .collect(),
                )
            } else if items.iter().all(J::is_boolean) {
                Raw::Bools(items.iter().filter_map(J::as_bool).collect())
            } else {
                return Err(
                    "a list must hold values of one kind (numbers, text or booleans), without nulls"
                        .into(),
                );
            }
        }
        J::Object(_) => return Err("an object is not a feature value".into()),
    })
}

/// A domain value (from a Feast protobuf `Value`) as an untyped streamed
/// value.
pub fn raw_of_value(v: Value) -> Raw {
    match v {
        Value::Null => Raw::Null,
        Value::Bytes(b) => Raw::Bytes(b),
        Value::String(s) => Raw::Text(s),
        Value::Int32(i) => Raw::Int(i.into()),
        Value::Int64(i) => Raw::Int(i),
        Value::Double(f) => Raw::Float(f),
        Value::Float(f) => Raw::Float(f.into()),
        Value::Bool(b) => Raw::Bool(b),
        Value::UnixTimestamp(s) => Raw::Time(EventTime::from_seconds(s)),
        Value::BytesList(v) => Raw::BytesList(v),
        Value::StringList(v) => Raw::Texts(v),
        Value::Int32List(v) => Raw::Ints(v.into_iter().map(i64::from).collect()),
        Value::Int64List(v) | Value::UnixTimestampList(v) => Raw::Ints(v),
        Value::DoubleList(v) => Raw::Floats(v),
        Value::FloatList(v) => Raw::Floats(v.into_iter().map(f64::from).collect()),
        Value::BoolList(v) => Raw::Bools(v),
    }
}

/// Reads the messages of one Kafka source into rows of the views that name
/// it: the fields each view needs, found once per view.
pub struct MessageDecoder {
    timestamp_field: String,
    views: Vec<ViewFields>,
}

struct ViewFields {
    view: Arc<ServedView>,
    /// (message field, join key name, type), in the view's key order.
    keys: Vec<(String, String, ValueType)>,
    /// (message field, feature name, type), in feature order.
    features: Vec<(String, String, ValueType)>,
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

impl MessageDecoder {
    pub fn new(source: &KafkaSource, views: &[Arc<ServedView>]) -> MessageDecoder {
        let views = views
            .iter()
            .map(|view| ViewFields {
                view: view.clone(),
                keys: view
                    .view
                    .join_keys
                    .iter()
                    .map(|k| {
                        (
                            source.field_of(&k.name).to_owned(),
                            k.name.clone(),
                            k.value_type,
                        )
                    })
                    .collect(),
                features: view
                    .view
                    .features
                    .iter()
                    .map(|f| {
                        (
                            source.field_of(&f.name).to_owned(),
                            f.name.clone(),
                            f.value_type,
                        )
                    })
                    .collect(),
            })
            .collect();
        MessageDecoder {
            timestamp_field: source.timestamp_field.clone(),
            views,
        }
    }

    pub fn views(&self) -> impl Iterator<Item = &Arc<ServedView>> {
        self.views.iter().map(|v| &v.view)
    }

    /// One row per view from a JSON message, in the order of the views
    /// given to [`MessageDecoder::new`]. A missing field, a value that does
    /// not fit its declared type, or a null join key or event time makes
    /// the message malformed; the error names the field. Fields nobody
    /// reads are ignored.
    pub fn decode(&self, payload: &[u8]) -> Result<Vec<ViewRow>, Malformed> {
        let message: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(payload)
                .map_err(|e| Malformed(format!("not a JSON object: {e}")))?;
        let field = |name: &str| {
            message
                .get(name)
                .ok_or_else(|| Malformed(format!("field {name:?} is missing")))
        };
        let ts = field(&self.timestamp_field)?;
        let event_time = raw_of_json(ts)
            .and_then(|raw| event_time(&raw))
            .map_err(|e| Malformed(format!("field {:?}: {e}", self.timestamp_field)))?;
        let mut rows = Vec::with_capacity(self.views.len());
        for v in &self.views {
            let mut keys = Vec::with_capacity(v.keys.len());
            for (name, key, ty) in &v.keys {
                let value = raw_of_json(field(name)?)
                    .and_then(|raw| typed(raw, *ty))
                    .map_err(|e| Malformed(format!("field {name:?} (join key {key}): {e}")))?;
                if value.is_null() {
                    return Err(Malformed(format!(
                        "field {name:?} (join key {key}) is null"
                    )));
                }
                keys.push(value);
            }
            let mut values = Vec::with_capacity(v.features.len());
            for (name, feature, ty) in &v.features {
                let value = raw_of_json(field(name)?)
                    .and_then(|raw| typed(raw, *ty))
                    .map_err(|e| {
                        Malformed(format!(
                            "field {name:?} (feature {}:{feature}): {e}",
                            v.view.view.name
                        ))
                    })?;
                values.push(value);
            }
            rows.push(ViewRow {
                keys,
                event_time,
                values,
            });
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definitions::parse_documents;
    use crate::model::StreamKind;
    use crate::registry::RegistrySnapshot;

    const DEFS: &str = r#"
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: driver, namespace: kubeflow-charlie }
spec: { joinKeys: [{ name: driver_id, valueType: INT64 }] }
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: driver_locations, namespace: kubeflow-charlie }
spec: { type: postgres, table: driver_locations, timestampField: event_timestamp }
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: driver_locations_stream, namespace: kubeflow-charlie }
spec:
  type: kafka
  bootstrapServers: 127.0.0.1:9092
  topic: driver-locations
  timestampField: ts
  fieldMapping: { latitude: lat }
  batchSource: driver_locations
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_locations_fv, namespace: kubeflow-charlie }
spec:
  entities: [driver]
  streamSource: driver_locations_stream
  features:
    - { name: lat, valueType: DOUBLE }
    - { name: lon, valueType: DOUBLE }
    - { name: zone, valueType: INT32 }
"#;

    fn decoder() -> MessageDecoder {
        let snapshot = RegistrySnapshot::build(
            parse_documents("t.yaml", DEFS).unwrap(),
            1,
            &Default::default(),
        )
        .unwrap();
        let ns = snapshot.namespace("kubeflow-charlie").unwrap();
        let StreamKind::Kafka(kafka) = &ns.stream_sources["driver_locations_stream"].kind else {
            panic!("a kafka source")
        };
        let view = ns.views["driver_locations_fv"].clone();
        assert_eq!(view.view.source.as_deref(), Some("driver_locations"));
        MessageDecoder::new(kafka, &[view])
    }

    #[test]
    fn a_good_message_becomes_a_typed_row() {
        let rows = decoder()
            .decode(br#"{"driver_id": 1001, "latitude": 37.9, "lon": 23, "zone": 4, "ts": "2024-05-01T12:00:00.5Z", "extra": [1]}"#)
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].keys, vec![Value::Int64(1001)]);
        assert_eq!(
            rows[0].values,
            vec![Value::Double(37.9), Value::Double(23.0), Value::Int32(4)]
        );
        assert_eq!(
            rows[0].event_time,
            EventTime {
                seconds: 1_714_564_800,
                nanos: 500_000_000
            }
        );
    }

    #[test]
    fn timestamps_in_every_accepted_form() {
        for (text, seconds, nanos) in [
            ("\"2024-05-01 12:00:00\"", 1_714_564_800, 0),
            ("\"2024-05-01T14:00:00+02:00\"", 1_714_564_800, 0),
            ("1714564800", 1_714_564_800, 0),
            ("1714564800.25", 1_714_564_800, 250_000_000),
        ] {
            let msg = format!(
                r#"{{"driver_id": 1, "latitude": 1.0, "lon": 2.0, "zone": null, "ts": {text}}}"#
            );
            let rows = decoder().decode(msg.as_bytes()).unwrap();
            assert_eq!(rows[0].event_time, EventTime { seconds, nanos }, "{text}");
            assert_eq!(rows[0].values[2], Value::Null);
        }
    }

    #[test]
    fn malformed_messages_name_the_field() {
        let d = decoder();
        let cases = [
            (&b"not json"[..], "not a JSON object"),
            (br#"[1, 2]"#, "not a JSON object"),
            (
                br#"{"latitude": 1.0, "lon": 2.0, "zone": 1, "ts": 1}"#,
                "\"driver_id\" is missing",
            ),
            (
                br#"{"driver_id": null, "latitude": 1.0, "lon": 2.0, "zone": 1, "ts": 1}"#,
                "join key driver_id) is null",
            ),
            (
                br#"{"driver_id": "x", "latitude": 1.0, "lon": 2.0, "zone": 1, "ts": 1}"#,
                "\"driver_id\"",
            ),
            (
                br#"{"driver_id": 1, "latitude": "north", "lon": 2.0, "zone": 1, "ts": 1}"#,
                "\"latitude\" (feature driver_locations_fv:lat)",
            ),
            (
                br#"{"driver_id": 1, "latitude": 1.0, "lon": 2.0, "zone": 5000000000, "ts": 1}"#,
                "\"zone\"",
            ),
            (
                br#"{"driver_id": 1, "latitude": 1.0, "lon": 2.0, "zone": 1, "ts": "yesterday"}"#,
                "field \"ts\"",
            ),
            (
                br#"{"driver_id": 1, "latitude": 1.0, "lon": 2.0, "zone": 1}"#,
                "\"ts\" is missing",
            ),
        ];
        for (payload, expected) in cases {
            let err = d.decode(payload).unwrap_err();
            assert!(
                err.0.contains(expected),
                "{}: {err}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn bytes_are_base64() {
        assert_eq!(
            typed(Raw::Text("AAE=".into()), ValueType::Bytes).unwrap(),
            Value::Bytes(vec![0, 1])
        );
        assert!(typed(Raw::Text("%%".into()), ValueType::Bytes).is_err());
    }
}
