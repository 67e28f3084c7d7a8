//! On-demand feature views end to end: a real PostgreSQL (a database per
//! test) holding the story's driver locations, a real Redis per test,
//! materialization, the feature server over HTTP and gRPC, and training
//! sets through `larder historical`'s code path. The same entities give the
//! same on-demand values online and in training (parity), write-time views
//! store what request-time ones compute, and bad definitions and requests
//! get the documented errors.

mod common;
mod feast_wire;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use common::RedisServer;
use common::db::TestDb;
use feast_wire::{GetOnlineFeaturesRequest, ServingClient, features, int64s};
use larder::config::{Config, StoreKind};
use larder::offline::historical::{self, HistoricalArgs};
use larder::offline::materialize::{MaterializeArgs, materialize};
use larder::serving::{FeatureServer, ServingSettings};
use serde_json::{Value as Json, json};
use sqlx::Connection;

const NS: &str = "kubeflow-charlie";

const DEFINITIONS: &str = r#"
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: driver, namespace: kubeflow-charlie }
spec: { joinKeys: [{ name: driver_id, valueType: INT64 }] }
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: driver_locations_src, namespace: kubeflow-charlie }
spec: { type: postgres, table: driver_locations, timestampField: event_timestamp }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_locations_fv, namespace: kubeflow-charlie }
spec:
  entities: [driver]
  source: driver_locations_src
  features:
    - { name: lat, valueType: FLOAT }
    - { name: lon, valueType: FLOAT }
---
apiVersion: features.kubeflow.org/v1
kind: OnDemandFeatureView
metadata: { name: driver_zones_odfv, namespace: kubeflow-charlie }
spec:
  sources:
    featureViews: [driver_locations_fv]
    requestFields: [{ name: fare, valueType: DOUBLE }]
  features:
    - name: zone
      valueType: INT64
      default: -1
      expression: >-
        driver_locations_fv.lat > 37.979
          ? (driver_locations_fv.lon < 23.786 ? 1 : 2)
          : (driver_locations_fv.lon >= 23.786 ? 3 : 4)
    - name: fare_per_degree
      valueType: DOUBLE
      expression: fare / (double(driver_locations_fv.lat) - 37.0)
    - name: fare_cents
      valueType: INT32
      expression: int(fare * 100.0)
---
apiVersion: features.kubeflow.org/v1
kind: OnDemandFeatureView
metadata: { name: driver_zones_stored, namespace: kubeflow-charlie }
spec:
  sources: { featureViews: [driver_locations_fv] }
  writeToOnlineStore: true
  features:
    - name: zone
      valueType: INT64
      default: -1
      expression: >-
        driver_locations_fv.lat > 37.979
          ? (driver_locations_fv.lon < 23.786 ? 1 : 2)
          : (driver_locations_fv.lon >= 23.786 ? 3 : 4)
"#;

/// Drivers in each zone, one exactly at 37.0 (a division by zero in
/// `fare_per_degree`), and 1006 with a null longitude. 1007 has no row.
const ROWS: &str = "
CREATE TABLE driver_locations (
  driver_id bigint NOT NULL, event_timestamp timestamptz NOT NULL,
  lat real, lon real);
INSERT INTO driver_locations VALUES
  (1001, '2024-05-01 09:00Z', 30.0, 20.0),
  (1001, '2024-05-01 10:00Z', 38.013, 23.695),
  (1002, '2024-05-01 10:00Z', 38.074, 23.811),
  (1003, '2024-05-01 10:00Z', 37.961, 23.790),
  (1004, '2024-05-01 10:00Z', 37.955, 23.702),
  (1005, '2024-05-01 10:00Z', 37.0, 23.0),
  (1006, '2024-05-01 10:00Z', 38.5, NULL);
";

const DRIVERS: [i64; 7] = [1001, 1002, 1003, 1004, 1005, 1006, 1007];
const FARES: [f64; 7] = [10.0, 12.5, 8.0, 30.25, 5.0, 7.0, 9.0];

struct World {
    dir: tempfile::TempDir,
    _pg: TestDb,
    _redis: RedisServer,
    config: Config,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let pg = TestDb::new("postgres").await;
        let redis = RedisServer::start();
        let defs = dir.path().join("definitions");
        std::fs::create_dir_all(&defs).unwrap();
        std::fs::write(defs.join("features.yaml"), DEFINITIONS).unwrap();
        let mut config = Config::default();
        config.serve.definitions = defs;
        config.registry.database = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("registry.db").display()
        );
        config.online_store.kind = StoreKind::Redis;
        config.online_store.redis.url = redis.url();
        config.offline_store.postgres.database = pg.url.rsplit_once('/').unwrap().1.to_owned();
        config.offline_store.sqlite.path = dir.path().join("offline.db");
        let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
        sqlx::raw_sql(ROWS).execute(&mut conn).await.unwrap();
        materialize(
            &config,
            &MaterializeArgs {
                start: "2024-01-01T00:00:00Z".into(),
                end: "2024-06-01T00:00:00Z".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        World {
            dir,
            _pg: pg,
            _redis: redis,
            config,
        }
    }

    /// An in-process feature server; stops when the returned sender drops.
    async fn serve(&self) -> (std::net::SocketAddr, Arc<FeatureServer>, Stop) {
        let snapshot =
            larder::cli::load_snapshot(&self.config.serve.definitions, &self.config).unwrap();
        let store = larder::cli::open_store(&self.config).await.unwrap();
        let server = Arc::new(FeatureServer::new(
            snapshot,
            store,
            ServingSettings {
                default_namespace: NS.into(),
                ..Default::default()
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(larder::serving::run(listener, server.clone(), async move {
            let _ = stopped.await;
        }));
        (addr, server, Stop(Some(stop)))
    }
}

struct Stop(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            let _ = s.send(());
        }
    }
}

async fn post(addr: std::net::SocketAddr, body: Json) -> (u16, Json) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/get-online-features"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Column `i` of a Feast JSON response: values and statuses.
fn column(body: &Json, i: usize) -> (Vec<Json>, Vec<String>) {
    let c = &body["results"][i];
    (
        c["values"].as_array().unwrap().clone(),
        c["statuses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect(),
    )
}

const ODFV_REFS: [&str; 3] = [
    "driver_zones_odfv:zone",
    "driver_zones_odfv:fare_per_degree",
    "driver_zones_odfv:fare_cents",
];

#[tokio::test]
async fn served_zones_statuses_and_runtime_errors() {
    let w = World::new().await;
    let (addr, server, _stop) = w.serve().await;
    let (status, body) = post(
        addr,
        json!({
            "features": ["driver_zones_odfv:zone", "driver_zones_stored:zone",
                         "driver_zones_odfv:fare_per_degree", "driver_locations_fv:lat"],
            "entities": {"driver_id": DRIVERS},
            "request_context": {"fare": FARES},
            "full_feature_names": true,
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["metadata"]["feature_names"],
        json!([
            "driver_id",
            "driver_zones_odfv__zone",
            "driver_zones_stored__zone",
            "driver_zones_odfv__fare_per_degree",
            "driver_locations_fv__lat"
        ]),
        "{body}"
    );
    let (zones, statuses) = column(&body, 1);
    // 1001..1004 in zones 1, 2, 3, 4; 1005 south-west; 1006 has a null
    // longitude and 1007 no row: the default.
    assert_eq!(
        zones,
        json!([1, 2, 3, 4, 4, -1, -1]).as_array().unwrap().clone()
    );
    assert!(statuses.iter().all(|s| s == "PRESENT"), "{statuses:?}");
    // The write-time view stored the same zones at materialization; 1007
    // has no row, so nothing is stored for it.
    let (stored, stored_statuses) = column(&body, 2);
    assert_eq!(&stored[..6], &zones[..6]);
    assert_eq!(stored_statuses[6], "NOT_FOUND");
    // fare / (lat - 37): a float division by zero for 1005 is infinity
    // (IEEE), 1006's null longitude does not matter (not read), 1007 has
    // no latitude: NOT_FOUND.
    let (per_degree, statuses) = column(&body, 3);
    let lat = 38.013f32 as f64;
    assert_eq!(per_degree[0].as_f64().unwrap(), 10.0 / (lat - 37.0));
    assert_eq!(statuses[5], "PRESENT");
    assert_eq!(statuses[6], "NOT_FOUND");
    assert!(per_degree[6].is_null());

    // A runtime error is a NULL_VALUE for that value and a counted error,
    // not a failed request: int(fare * 100) overflows INT32 for a huge fare.
    let before = server.metrics().transform_errors.get();
    let (status, body) = post(
        addr,
        json!({
            "features": ["driver_zones_odfv:fare_cents"],
            "entities": {"driver_id": [1001, 1002]},
            "request_context": {"fare": [1e12, 2.5]},
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (cents, statuses) = column(&body, 1);
    assert_eq!(statuses, ["NULL_VALUE", "PRESENT"]);
    assert_eq!(cents[1], json!(250));
    assert_eq!(server.metrics().transform_errors.get(), before + 1);
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("on_demand_errors_total 1"), "{metrics}");
}

#[tokio::test]
async fn bad_request_fields_are_invalid_argument() {
    let w = World::new().await;
    let (addr, _server, _stop) = w.serve().await;
    // HTTP: missing, mistyped, wrong length.
    for (request_context, want) in [
        (
            json!({}),
            "missing request field \"fare\" (DOUBLE), read by on-demand feature view \"driver_zones_odfv\"",
        ),
        (
            json!({"fare": ["x", "y"]}),
            "request field \"fare\", row 0: expected DOUBLE, found STRING",
        ),
        (
            json!({"fare": [1.0]}),
            "has 1 values but the first column has 2",
        ),
    ] {
        let (status, body) = post(
            addr,
            json!({
                "features": ["driver_zones_odfv:fare_cents"],
                "entities": {"driver_id": [1001, 1002]},
                "request_context": request_context,
            }),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let text = body["error"]["message"].as_str().unwrap();
        assert!(text.contains(want), "{text} does not contain {want}");
    }
    // Feast's clients send request data among the entities: accepted.
    let (status, body) = post(
        addr,
        json!({
            "features": ["driver_zones_odfv:fare_cents"],
            "entities": {"driver_id": [1001], "fare": [1.25]},
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(column(&body, 1).0, [json!(125)]);

    // gRPC: request_context, and INVALID_ARGUMENT naming the field.
    let mut client = ServingClient::connect(addr).await;
    let mut request = GetOnlineFeaturesRequest {
        kind: features(&["driver_zones_odfv:fare_cents"]),
        entities: HashMap::from([("driver_id".to_owned(), int64s(&[1002]))]),
        ..Default::default()
    };
    let e = client
        .get_online_features(tonic::Request::new(request.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("missing request field \"fare\""),
        "{}",
        e.message()
    );
    request.request_context = HashMap::from([(
        "fare".to_owned(),
        feast_wire::RepeatedValue {
            val: vec![feast_wire::Value {
                val: Some(feast_wire::Val::DoubleVal(3.5)),
            }],
        },
    )]);
    let response = client
        .get_online_features(tonic::Request::new(request))
        .await
        .unwrap();
    assert_eq!(
        response.results[1].values[0].val,
        Some(feast_wire::Val::Int32Val(350))
    );
}

/// Entity rows as of after every location row: the training set reads the
/// same latest rows the online store holds.
fn entity_csv(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("entities.csv");
    let mut text = String::from("driver_id,event_timestamp,fare\n");
    for (d, f) in DRIVERS.iter().zip(FARES) {
        text.push_str(&format!("{d},2024-05-02T00:00:00Z,{f}\n"));
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn read_parquet(path: &std::path::Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn training_and_serving_give_identical_on_demand_values() {
    let w = World::new().await;
    let output = w.dir.path().join("training.parquet");
    let mut refs: Vec<String> = ODFV_REFS.iter().map(|s| s.to_string()).collect();
    refs.push("driver_zones_stored:zone".into());
    historical::run(
        &w.config,
        HistoricalArgs {
            features: refs.clone(),
            feature_service: None,
            entities: Some(entity_csv(w.dir.path())),
            entity_sql: None,
            output: output.clone(),
            namespace: NS.into(),
        },
    )
    .await
    .unwrap();
    let batches = read_parquet(&output);
    let schema = batches[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "driver_id",
            "event_timestamp",
            "fare",
            "driver_zones_odfv__zone",
            "driver_zones_odfv__fare_per_degree",
            "driver_zones_odfv__fare_cents",
            "driver_zones_stored__zone",
        ],
        "hidden input columns must not show"
    );
    assert_eq!(batches.len(), 1);
    let batch = &batches[0];

    // Over gRPC: doubles travel as their bits, so the comparison is exact.
    let (addr, _server, _stop) = w.serve().await;
    let mut client = ServingClient::connect(addr).await;
    let response = client
        .get_online_features(tonic::Request::new(GetOnlineFeaturesRequest {
            kind: features(&refs.iter().map(String::as_str).collect::<Vec<_>>()),
            entities: HashMap::from([("driver_id".to_owned(), int64s(&DRIVERS))]),
            full_feature_names: true,
            request_context: HashMap::from([(
                "fare".to_owned(),
                feast_wire::RepeatedValue {
                    val: FARES
                        .iter()
                        .map(|f| feast_wire::Value {
                            val: Some(feast_wire::Val::DoubleVal(*f)),
                        })
                        .collect(),
                },
            )]),
        }))
        .await
        .unwrap();

    // zone (INT64), fare_per_degree (DOUBLE), fare_cents (INT32), stored
    // zone (INT64): column by column, row by row, identical. A value the
    // server does not return (NOT_FOUND) is a null in training.
    use feast_wire::Val;
    for (i, name) in names[3..].iter().enumerate() {
        let array = batch.column_by_name(name).unwrap();
        let served = &response.results[i + 1];
        for (row, driver) in DRIVERS.iter().enumerate() {
            let trained: Option<Val> = if array.is_null(row) {
                None
            } else {
                Some(match array.data_type() {
                    arrow_schema::DataType::Int64 => {
                        Val::Int64Val(array.as_primitive::<Int64Type>().value(row))
                    }
                    arrow_schema::DataType::Int32 => Val::Int32Val(
                        array
                            .as_primitive::<arrow_array::types::Int32Type>()
                            .value(row),
                    ),
                    arrow_schema::DataType::Float64 => {
                        Val::DoubleVal(array.as_primitive::<Float64Type>().value(row))
                    }
                    other => panic!("unexpected {other}"),
                })
            };
            let value = served.values[row].val.clone();
            let value = match value {
                Some(Val::NullVal(_)) => None,
                v => v,
            };
            assert_eq!(
                value, trained,
                "{name}, driver {driver}: served (status {}) vs trained",
                served.statuses[row]
            );
        }
    }
    // Spot-check the values themselves.
    let zones = batch
        .column_by_name("driver_zones_odfv__zone")
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    assert_eq!(zones, [1, 2, 3, 4, 4, -1, -1]);
}

#[tokio::test]
async fn bad_definitions_are_refused_at_apply_with_positions() {
    let base = DEFINITIONS
        .split("---\napiVersion: features.kubeflow.org/v1\nkind: OnDemandFeatureView")
        .next()
        .unwrap();
    let odfv = |features: &str, extra: &str| {
        format!(
            "{base}---\napiVersion: features.kubeflow.org/v1\nkind: OnDemandFeatureView\n\
             metadata: {{ name: bad_odfv, namespace: kubeflow-charlie }}\nspec:\n  sources:\n    \
             featureViews: [driver_locations_fv]\n    requestFields: [{{ name: fare, valueType: DOUBLE }}]\n{extra}  features:\n{features}"
        )
    };
    let cases = [
        (
            odfv(
                "    - { name: z, valueType: INT64, expression: 'driver_locations_fv.latt > 1.0 ? 1 : 2' }\n",
                "",
            ),
            "spec.features[0].expression",
            "line 1, column 20: feature view \"driver_locations_fv\" has no feature \"latt\"",
        ),
        (
            odfv(
                "    - { name: z, valueType: DOUBLE, expression: 'fare + 1' }\n",
                "",
            ),
            "spec.features[0].expression",
            "line 1, column 6: + (operands of one type",
        ),
        (
            odfv(
                "    - { name: z, valueType: STRING, expression: 'fare * 2.0' }\n",
                "",
            ),
            "spec.features[0].expression",
            "the expression is double, but feature \"z\" is declared STRING",
        ),
        (
            odfv(
                "    - { name: z, valueType: INT64, expression: 'tip * 2' }\n",
                "",
            ),
            "spec.features[0].expression",
            "line 1, column 1: unknown name \"tip\"",
        ),
        (
            odfv(
                "    - { name: z, valueType: INT64, expression: '1 +' }\n",
                "",
            ),
            "spec.features[0].expression",
            "line 1",
        ),
        (
            odfv(
                "    - { name: z, valueType: INT64, expression: '1', default: 'x' }\n",
                "",
            ),
            "spec.features[0].default",
            "is not a whole number for INT64",
        ),
        (
            odfv(
                "    - { name: z, valueType: INT64, expression: '1' }\n",
                "  writeToOnlineStore: true\n",
            ),
            "spec.writeToOnlineStore",
            "cannot read request fields",
        ),
        (
            odfv("    - { name: z, valueType: INT64, expression: '1' }\n", "").replace(
                "featureViews: [driver_locations_fv]",
                "featureViews: [driver_nowhere_fv]",
            ),
            "spec.sources.featureViews[0]",
            "no feature view \"driver_nowhere_fv\"",
        ),
    ];
    for (text, field, want) in cases {
        let result = larder::definitions::parse_documents("defs.yaml", &text).and_then(|objects| {
            larder::registry::RegistrySnapshot::build(objects, 1, &Default::default())
        });
        let e = result.err().unwrap_or_else(|| panic!("accepted: {want}"));
        assert_eq!(
            e.location,
            "defs.yaml: OnDemandFeatureView kubeflow-charlie/bad_odfv"
        );
        assert_eq!(e.field, field, "{e}");
        assert!(e.message.contains(want), "{e} does not contain {want:?}");
    }
}
