//! The push API end to end: an in-process feature server with real signed
//! tokens and the shipped RBAC manifests, a Redis and a PostgreSQL database
//! of the test's own; pushes over HTTP (Feast's body) and gRPC
//! (`larder.v1.PushService`) to the online store, the offline store and
//! both.

mod common;

use std::sync::Arc;

use common::db::TestDb;
use common::{RedisServer, jwt};
use larder::auth::{Auth, UserInfo};
use larder::config::{Config, StoreKind};
use larder::definitions::parse_documents;
use larder::model::Value;
use larder::proto::feast::types as pbt;
use larder::proto::larder::v1 as lpb;
use larder::registry::RegistrySnapshot;
use larder::serving::{FeatureSelection, FeatureServer, OnlineRequest, ServingSettings};
use serde_json::json;
use sqlx::Connection;

const DEFINITIONS: &str = r#"
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
metadata: { name: driver_locations_push, namespace: kubeflow-charlie }
spec: { type: push, batchSource: driver_locations }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_locations_fv, namespace: kubeflow-charlie }
spec:
  entities: [driver]
  streamSource: driver_locations_push
  features:
    - { name: lat, valueType: DOUBLE }
    - { name: lon, valueType: DOUBLE }
---
apiVersion: features.kubeflow.org/v1
kind: OnDemandFeatureView
metadata: { name: driver_lat_x10, namespace: kubeflow-charlie }
spec:
  sources: { featureViews: [driver_locations_fv] }
  writeToOnlineStore: true
  features:
    - { name: lat_x10, valueType: DOUBLE, expression: "driver_locations_fv.lat * 10.0" }
"#;

const TABLE: &str = "CREATE TABLE driver_locations (
    driver_id bigint NOT NULL, event_timestamp timestamptz NOT NULL,
    lat double precision, lon double precision,
    PRIMARY KEY (driver_id, event_timestamp))";

struct World {
    pg: TestDb,
    _redis: RedisServer,
    _policy: tempfile::TempDir,
    server: Arc<FeatureServer>,
    addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl World {
    async fn new() -> World {
        let pg = TestDb::new("postgres").await;
        let redis = RedisServer::start();
        let mut c = sqlx::PgConnection::connect(&pg.url).await.unwrap();
        sqlx::raw_sql(TABLE).execute(&mut c).await.unwrap();
        let policy = jwt::story_policy();
        let auth = Arc::new(
            Auth::from_config(&jwt::auth_config(policy.path(), policy.path()))
                .await
                .unwrap(),
        );
        let mut config = Config::default();
        config.online_store.kind = StoreKind::Redis;
        config.online_store.redis.url = redis.url();
        config.offline_store.postgres.database = pg.url.rsplit_once('/').unwrap().1.to_owned();
        let snapshot = RegistrySnapshot::build(
            parse_documents("push.yaml", DEFINITIONS).unwrap(),
            1,
            &Default::default(),
        )
        .unwrap();
        let store = larder::cli::open_store(&config).await.unwrap();
        let server = Arc::new(
            FeatureServer::new(
                snapshot,
                store,
                ServingSettings {
                    default_namespace: "kubeflow-charlie".into(),
                    ..Default::default()
                },
            )
            .with_auth(auth)
            .with_offline_store(Arc::new(config)),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(larder::serving::run(listener, server.clone(), async move {
            let _ = stopped.await;
        }));
        World {
            pg,
            _redis: redis,
            _policy: policy,
            server,
            addr,
            _stop: stop,
        }
    }

    async fn push(&self, token: Option<&str>, body: serde_json::Value) -> (u16, serde_json::Value) {
        let mut request = reqwest::Client::new()
            .post(format!("http://{}/push", self.addr))
            .json(&body);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    /// Offline rows: (driver, lat, epoch seconds), ordered.
    async fn offline(&self) -> Vec<(i64, f64, i64)> {
        let mut c = sqlx::PgConnection::connect(&self.pg.url).await.unwrap();
        sqlx::query_as(
            "SELECT driver_id, lat, extract(epoch FROM event_timestamp)::int8 \
             FROM driver_locations ORDER BY driver_id, event_timestamp",
        )
        .fetch_all(&mut c)
        .await
        .unwrap()
    }

    /// Online lat and its event time (seconds) per driver.
    async fn online(&self, drivers: &[i64]) -> Vec<(Value, i64)> {
        self.online_feature("driver_locations_fv:lat", drivers)
            .await
    }

    /// One online feature and its event time (seconds) per driver.
    async fn online_feature(&self, feature: &str, drivers: &[i64]) -> Vec<(Value, i64)> {
        let caller = Arc::new(UserInfo {
            name: "system:serviceaccount:kubeflow-charlie:default-editor".into(),
            groups: vec!["system:authenticated".into()],
        });
        let response = self
            .server
            .get_online_features(
                "test",
                &caller,
                OnlineRequest {
                    features: FeatureSelection::Refs(vec![feature.into()]),
                    entities: vec![(
                        "driver_id".into(),
                        drivers.iter().map(|d| Value::Int64(*d)).collect(),
                    )],
                    full_feature_names: false,
                    namespace: None,
                    untyped_integers: false,
                    request_data: Vec::new(),
                },
                None,
            )
            .await
            .unwrap();
        let lat = &response.columns[1];
        (0..drivers.len())
            .map(|i| {
                (
                    response.value(&lat.values[i]).into_owned(),
                    lat.event_times[i].seconds,
                )
            })
            .collect()
    }
}

fn charlie() -> String {
    jwt::token("kubeflow-charlie", "default-editor")
}

fn bob() -> String {
    jwt::token("kubeflow-bob", "default-editor")
}

fn body(to: &str, drivers: &[i64], lats: &[f64], times: &[&str]) -> serde_json::Value {
    json!({
        "push_source_name": "driver_locations_push",
        "df": {
            "driver_id": drivers,
            "lat": lats,
            "lon": vec![23.7; drivers.len()],
            "event_timestamp": times,
            "created": vec!["ignored"; drivers.len()],
        },
        "to": to,
    })
}

const T1: &str = "2024-05-01T12:00:00Z";
const T1_S: i64 = 1_714_564_800;
const T2: &str = "2024-05-01 12:00:10";
const T2_S: i64 = 1_714_564_810;
const T3: i64 = 1_714_564_820;

#[tokio::test]
async fn push_online_offline_and_both_over_http() {
    let w = World::new().await;
    let token = charlie();

    // Online only: served, nothing logged.
    let (status, reply) = w
        .push(
            Some(&token),
            body("online", &[1, 2], &[1.0, 2.0], &[T1, T1]),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["rows"], 2);
    assert_eq!(reply["views"][0]["feature_view"], "driver_locations_fv");
    assert_eq!(reply["views"][0]["online_rows"], 2);
    assert_eq!(reply["views"][0]["offline_rows"], 0);
    assert_eq!(
        w.online(&[1, 2]).await,
        vec![(Value::Double(1.0), T1_S), (Value::Double(2.0), T1_S)]
    );
    assert!(w.offline().await.is_empty());

    // Offline only: logged, online unchanged even though it is newer.
    let (status, reply) = w
        .push(Some(&token), body("offline", &[1], &[5.0], &[T2]))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["views"][0]["online_rows"], 0);
    assert_eq!(reply["views"][0]["offline_rows"], 1);
    assert_eq!(w.offline().await, vec![(1, 5.0, T2_S)]);
    assert_eq!(w.online(&[1]).await, vec![(Value::Double(1.0), T1_S)]);

    // Both; the default target is online (Feast's).
    let (status, reply) = w
        .push(
            Some(&token),
            body("online_and_offline", &[1, 2], &[7.0, 8.0], &[T2, T2]),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["views"][0]["online_rows"], 2);
    // Driver 1 at T2 was already logged: appended once.
    assert_eq!(reply["views"][0]["offline_rows"], 1);
    assert_eq!(
        w.offline().await,
        vec![(1, 5.0, T2_S), (2, 8.0, T2_S)],
        "a row already stored is not stored twice"
    );
    assert_eq!(
        w.online(&[1, 2]).await,
        vec![(Value::Double(7.0), T2_S), (Value::Double(8.0), T2_S)]
    );

    // A late row (older than what is online) is logged but not served.
    let (status, reply) = w
        .push(
            Some(&token),
            body("online_and_offline", &[1], &[0.5], &[T1]),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["views"][0]["online_rows"], 0);
    assert_eq!(reply["views"][0]["offline_rows"], 1);
    assert_eq!(w.online(&[1]).await, vec![(Value::Double(7.0), T2_S)]);

    // Epoch seconds work as event times too, and no `to` means online.
    let mut b = body("online", &[2], &[9.0], &[T1]);
    b["df"]["event_timestamp"] = json!([T3]);
    b.as_object_mut().unwrap().remove("to");
    let (status, reply) = w.push(Some(&token), b).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(w.online(&[2]).await, vec![(Value::Double(9.0), T3)]);
    assert_eq!(w.offline().await.len(), 3);
}

#[tokio::test]
async fn push_needs_update_on_the_views_and_a_valid_token() {
    let w = World::new().await;
    // Bob may not update Charlie's view: 403 naming it, nothing written.
    let (status, reply) = w
        .push(
            Some(&bob()),
            body("online_and_offline", &[1], &[1.0], &[T1]),
        )
        .await;
    assert_eq!(status, 403, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("driver_locations_fv"), "{message}");
    assert_eq!(w.online(&[1]).await[0].0, Value::Null);
    assert!(w.offline().await.is_empty());

    // No token, a bad token: 401.
    let (status, _) = w.push(None, body("online", &[1], &[1.0], &[T1])).await;
    assert_eq!(status, 401);
    for (what, token) in jwt::bad_tokens() {
        let (status, _) = w
            .push(Some(&token), body("online", &[1], &[1.0], &[T1]))
            .await;
        assert_eq!(status, 401, "{what}");
    }
    assert_eq!(w.online(&[1]).await[0].0, Value::Null);
}

#[tokio::test]
async fn bad_pushes_are_refused_naming_the_field() {
    let w = World::new().await;
    let token = charlie();
    let cases: Vec<(serde_json::Value, u16, &str)> = vec![
        (
            {
                let mut b = body("online", &[1], &[1.0], &[T1]);
                b["df"].as_object_mut().unwrap().remove("lon");
                b
            },
            400,
            "column \"lon\"",
        ),
        (
            {
                let mut b = body("online", &[1], &[1.0], &[T1]);
                b["df"]["lat"] = json!(["north"]);
                b
            },
            400,
            "column \"lat\", row 0",
        ),
        (
            {
                let mut b = body("online", &[1], &[1.0], &[T1]);
                b["df"]["event_timestamp"] = json!(["yesterday"]);
                b
            },
            400,
            "column \"event_timestamp\", row 0",
        ),
        (
            {
                let mut b = body("online", &[1, 2], &[1.0, 2.0], &[T1, T1]);
                b["df"]["lon"] = json!([1.0]);
                b
            },
            400,
            "column \"lon\" has 1 values",
        ),
        (body("sideways", &[1], &[1.0], &[T1]), 400, "to:"),
        (
            {
                let mut b = body("online", &[1], &[1.0], &[T1]);
                b["push_source_name"] = json!("nope");
                b
            },
            404,
            "no push source \"nope\"",
        ),
        (
            {
                let mut b = body("online", &[1], &[1.0], &[T1]);
                b["df"]["driver_id"] = json!([null]);
                b
            },
            400,
            "column \"driver_id\", row 0",
        ),
    ];
    for (b, expected_status, expected) in cases {
        let (status, reply) = w.push(Some(&token), b.clone()).await;
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, expected_status, "{b}: {reply}");
        assert!(message.contains(expected), "{b}: {message}");
    }
    assert!(w.offline().await.is_empty());
    assert_eq!(w.online(&[1]).await[0].0, Value::Null);
}

#[tokio::test]
async fn push_over_grpc() {
    let w = World::new().await;
    let mut client =
        lpb::push_service_client::PushServiceClient::connect(format!("http://{}", w.addr))
            .await
            .unwrap();
    let request = |token: String, to: lpb::PushTo| {
        let double = |v: f64| pbt::Value {
            val: Some(pbt::value::Val::DoubleVal(v)),
        };
        let mut r = tonic::Request::new(lpb::PushRequest {
            push_source_name: "kubeflow-charlie/driver_locations_push".into(),
            columns: [
                (
                    "driver_id".to_owned(),
                    pbt::RepeatedValue {
                        val: vec![pbt::Value {
                            val: Some(pbt::value::Val::Int64Val(1)),
                        }],
                    },
                ),
                (
                    "lat".to_owned(),
                    pbt::RepeatedValue {
                        val: vec![double(4.5)],
                    },
                ),
                (
                    "lon".to_owned(),
                    pbt::RepeatedValue {
                        val: vec![double(23.7)],
                    },
                ),
                (
                    "event_timestamp".to_owned(),
                    pbt::RepeatedValue {
                        val: vec![pbt::Value {
                            val: Some(pbt::value::Val::UnixTimestampVal(T1_S)),
                        }],
                    },
                ),
            ]
            .into(),
            to: to as i32,
        });
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    };
    let denied = client
        .push(request(bob(), lpb::PushTo::OnlineAndOffline))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(w.offline().await.is_empty());

    let reply = client
        .push(request(charlie(), lpb::PushTo::OnlineAndOffline))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.rows, 1);
    assert_eq!(reply.views[0].feature_view, "driver_locations_fv");
    assert_eq!(
        (reply.views[0].online_rows, reply.views[0].offline_rows),
        (1, 1)
    );
    assert_eq!(w.online(&[1]).await, vec![(Value::Double(4.5), T1_S)]);
    assert_eq!(w.offline().await, vec![(1, 4.5, T1_S)]);

    // Replayed: nothing changes.
    let reply = client
        .push(request(charlie(), lpb::PushTo::OnlineAndOffline))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (reply.views[0].online_rows, reply.views[0].offline_rows),
        (0, 0)
    );
    assert_eq!(w.offline().await.len(), 1);
}

/// A view computed at write time is derived from every pushed row and
/// stored newer-only like the row itself.
#[tokio::test]
async fn pushed_rows_update_write_time_on_demand_views() {
    let w = World::new().await;
    let token = charlie();
    let (status, reply) = w
        .push(
            Some(&token),
            body("online", &[1, 2], &[1.5, 2.0], &[T1, T1]),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        w.online_feature("driver_lat_x10:lat_x10", &[1, 2, 3]).await,
        vec![
            (Value::Double(15.0), T1_S),
            (Value::Double(20.0), T1_S),
            (Value::Null, 0)
        ]
    );
    // Newer: replaced; older: ignored, for the derived row too.
    let (status, _) = w
        .push(Some(&token), body("online", &[1], &[3.0], &[T2]))
        .await;
    assert_eq!(status, 200);
    let (status, _) = w
        .push(Some(&token), body("online", &[1], &[9.0], &[T1]))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        w.online_feature("driver_lat_x10:lat_x10", &[1]).await,
        vec![(Value::Double(30.0), T2_S)]
    );
}
