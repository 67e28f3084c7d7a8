//! End to end: Feast's golden bytes in a real Redis, served over gRPC (to a
//! client built from Feast's wire contract alone) and over HTTP JSON (to a
//! client that knows only JSON).

mod common;
mod feast_wire;

use std::time::{Duration, Instant};

use common::{RedisServer, TestServer, fixture_settings, load_golden, redis_store};
use feast_wire::*;
use larder::model::{EventTime, Value};
use larder::online::ViewRow;
use serde_json::json;

const GOLDEN_TS: i64 = 1_616_095_860; // 2021-03-18T19:31:00Z

/// A Redis with the golden fixture and larder-written rows of the TTL
/// view: driver 1001 fresh (with a null note), driver 1002 two hours old.
async fn fixture_redis() -> RedisServer {
    let redis = RedisServer::start();
    load_golden(&mut redis.conn());
    let store = redis_store(&redis.url(), Duration::from_secs(1));
    let snapshot = common::fixture_snapshot();
    let hourly = snapshot.view("kubeflow-alice", "driver_hourly_fv").unwrap();
    let now = EventTime::now();
    let rows = [
        ViewRow {
            keys: vec![Value::Int64(1001)],
            event_time: now,
            values: vec![Value::Double(0.5), Value::Null],
        },
        ViewRow {
            keys: vec![Value::Int64(1002)],
            event_time: EventTime::from_seconds(now.seconds - 7200),
            values: vec![Value::Double(0.7), Value::String("old".into())],
        },
    ];
    assert_eq!(store.write_rows(hourly, &rows).await.unwrap(), 2);
    redis
}

async fn start(redis: &RedisServer) -> TestServer {
    TestServer::start(
        redis_store(&redis.url(), Duration::from_secs(1)),
        fixture_settings(),
    )
    .await
}

fn names(r: &GetOnlineFeaturesResponse) -> Vec<String> {
    r.metadata
        .as_ref()
        .unwrap()
        .feature_names
        .as_ref()
        .unwrap()
        .val
        .clone()
}

fn request(refs: &[&str], drivers: &[i64]) -> tonic::Request<GetOnlineFeaturesRequest> {
    tonic::Request::new(GetOnlineFeaturesRequest {
        kind: features(refs),
        entities: [("driver_id".to_string(), int64s(drivers))].into(),
        ..Default::default()
    })
}

fn v(val: Val) -> Value_ {
    Value_ { val: Some(val) }
}
type Value_ = feast_wire::Value;

#[tokio::test]
async fn grpc_serves_feast_written_values_in_requested_order() {
    let redis = fixture_redis().await;
    let server = start(&redis).await;
    let mut client = ServingClient::connect(server.addr).await;

    let refs = [
        "driver_daily_stats_fv:profit",
        "driver_daily_stats_fv:acc_rate",
        "driver_daily_stats_fv:city",
        "driver_daily_stats_fv:trips",
        "driver_daily_stats_fv:rating",
        "driver_daily_stats_fv:active",
        "driver_daily_stats_fv:recent",
    ];
    let resp = client
        .get_online_features(request(&refs, &[1001, 9999, 1002, 1001]))
        .await
        .unwrap();
    assert_eq!(
        names(&resp),
        [
            "driver_id",
            "profit",
            "acc_rate",
            "city",
            "trips",
            "rating",
            "active",
            "recent"
        ]
    );
    assert_eq!(resp.results.len(), 8);
    // The join-key column echoes the request.
    assert_eq!(
        resp.results[0].values,
        int64s(&[1001, 9999, 1002, 1001]).val
    );
    let expected: Vec<[Option<Val>; 2]> = vec![
        [Some(Val::DoubleVal(97.9273)), Some(Val::DoubleVal(73.886))],
        [Some(Val::FloatVal(0.21263)), Some(Val::FloatVal(0.857422))],
        [
            Some(Val::StringVal("Athens".into())),
            Some(Val::StringVal("Patras".into())),
        ],
        [Some(Val::Int64Val(12)), Some(Val::Int64Val(7))],
        [Some(Val::Int32Val(5)), Some(Val::Int32Val(4))],
        [Some(Val::BoolVal(true)), Some(Val::BoolVal(false))],
        [
            Some(Val::DoubleListVal(DoubleList {
                val: vec![1.5, 2.5],
            })),
            Some(Val::DoubleListVal(DoubleList { val: vec![0.0] })),
        ],
    ];
    for (column, [d1001, d1002]) in resp.results[1..].iter().zip(expected) {
        assert_eq!(column.values[0].val, d1001);
        assert_eq!(column.values[1].val, None, "unknown driver has no value");
        assert_eq!(column.values[2].val, d1002);
        assert_eq!(
            column.values[3].val, d1001,
            "repeated rows get the same values"
        );
        assert_eq!(column.statuses, [PRESENT, NOT_FOUND, PRESENT, PRESENT]);
        assert_eq!(column.event_timestamps[0].seconds, GOLDEN_TS);
        assert_eq!(column.event_timestamps[1].seconds, 0);
    }

    let info = client.get_feast_serving_info().await.unwrap();
    assert!(info.version.starts_with("larder "), "{}", info.version);
    let unknown = client
        .unary::<_, GetFeastServingInfoResponse>(
            "/feast.serving.ServingService/GetOnlineFeaturesRange",
            tonic::Request::new(GetFeastServingInfoRequest {}),
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::Unimplemented, "{unknown:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn grpc_full_names_two_key_views_namespaces_and_services() {
    let redis = fixture_redis().await;
    let server = start(&redis).await;
    let mut client = ServingClient::connect(server.addr).await;

    // Full feature names, two views in one hash plus a two-key view.
    let mut req = GetOnlineFeaturesRequest {
        kind: features(&[
            "driver_rider_fv:rides_together",
            "kubeflow-alice/driver_daily_stats_fv:trips",
        ]),
        entities: [
            ("driver_id".to_string(), int64s(&[1001, 1001])),
            ("rider_name".to_string(), strings(&["bob", "alice"])),
        ]
        .into(),
        full_feature_names: true,
        ..Default::default()
    };
    let resp = client
        .get_online_features(tonic::Request::new(req.clone()))
        .await
        .unwrap();
    assert_eq!(
        names(&resp),
        [
            "driver_id",
            "rider_name",
            "driver_rider_fv__rides_together",
            "driver_daily_stats_fv__trips"
        ]
    );
    assert_eq!(resp.results[1].values, strings(&["bob", "alice"]).val);
    assert_eq!(resp.results[2].values[0], v(Val::Int64Val(3)));
    assert_eq!(resp.results[2].statuses, [PRESENT, NOT_FOUND]);
    assert_eq!(resp.results[3].values[0], v(Val::Int64Val(12)));
    assert_eq!(resp.results[3].statuses, [PRESENT, PRESENT]);

    // The namespace header decides where unqualified refs live; qualified
    // refs ignore it.
    req.kind = features(&[
        "bob_scores_fv:score",
        "kubeflow-alice/driver_daily_stats_fv:trips",
    ]);
    req.entities.remove("rider_name");
    let mut with_ns = tonic::Request::new(req.clone());
    with_ns
        .metadata_mut()
        .insert("x-larder-namespace", "kubeflow-bob".parse().unwrap());
    let resp = client.get_online_features(with_ns).await.unwrap();
    assert_eq!(resp.results[1].statuses, [NOT_FOUND, NOT_FOUND]);
    assert_eq!(resp.results[2].statuses, [PRESENT, PRESENT]);
    // Without the header the default namespace (kubeflow-alice) has no
    // bob_scores_fv.
    let err = client
        .get_online_features(tonic::Request::new(req))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("bob_scores_fv"), "{}", err.message());

    // A feature service expands to its refs, in its order.
    let resp = client
        .get_online_features(tonic::Request::new(GetOnlineFeaturesRequest {
            kind: Some(Kind::FeatureService("driver_activity".into())),
            entities: [("driver_id".to_string(), int64s(&[1002]))].into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(names(&resp), ["driver_id", "profit", "city", "conv_rate"]);
    assert_eq!(resp.results[1].values[0], v(Val::DoubleVal(73.886)));
    assert_eq!(resp.results[3].statuses, [OUTSIDE_MAX_AGE]);
    server.shutdown().await;
}

#[tokio::test]
async fn grpc_statuses_for_stale_and_null_values() {
    let redis = fixture_redis().await;
    let server = start(&redis).await;
    let mut client = ServingClient::connect(server.addr).await;
    let resp = client
        .get_online_features(request(
            &["driver_hourly_fv:conv_rate", "driver_hourly_fv:note"],
            &[1001, 1002, 1003],
        ))
        .await
        .unwrap();
    let conv = &resp.results[1];
    assert_eq!(conv.statuses, [PRESENT, OUTSIDE_MAX_AGE, NOT_FOUND]);
    assert_eq!(conv.values[0], v(Val::DoubleVal(0.5)));
    assert_eq!(conv.values[1].val, None, "stale values are not served");
    let note = &resp.results[2];
    assert_eq!(note.statuses, [NULL_VALUE, OUTSIDE_MAX_AGE, NOT_FOUND]);
    assert!(
        conv.event_timestamps[1].seconds > 0,
        "stale values keep their time"
    );
    server.shutdown().await;
}

async fn post(server: &TestServer, body: serde_json::Value) -> (u16, serde_json::Value) {
    post_with(server, body, None).await
}

async fn post_with(
    server: &TestServer,
    body: serde_json::Value,
    namespace: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(server.http("/get-online-features"))
        .json(&body);
    if let Some(ns) = namespace {
        req = req.header("x-larder-namespace", ns);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn http_speaks_feasts_json() {
    let redis = fixture_redis().await;
    let server = start(&redis).await;

    let (status, body) = post(
        &server,
        json!({
            "features": ["driver_daily_stats_fv:city", "driver_daily_stats_fv:profit",
                         "driver_hourly_fv:note", "driver_hourly_fv:conv_rate",
                         "driver_daily_stats_fv:recent"],
            "entities": {"driver_id": [1001, 1002, 9999]},
            "full_feature_names": true
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["metadata"]["feature_names"],
        json!([
            "driver_id",
            "driver_daily_stats_fv__city",
            "driver_daily_stats_fv__profit",
            "driver_hourly_fv__note",
            "driver_hourly_fv__conv_rate",
            "driver_daily_stats_fv__recent"
        ])
    );
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["values"], json!([1001, 1002, 9999]));
    assert_eq!(results[1]["values"], json!(["Athens", "Patras", null]));
    assert_eq!(
        results[1]["statuses"],
        json!(["PRESENT", "PRESENT", "NOT_FOUND"])
    );
    assert_eq!(
        results[1]["event_timestamps"][0],
        json!("2021-03-18T19:31:00Z")
    );
    assert_eq!(results[2]["values"], json!([97.9273, 73.886, null]));
    assert_eq!(
        results[3]["statuses"],
        json!(["NULL_VALUE", "OUTSIDE_MAX_AGE", "NOT_FOUND"])
    );
    assert_eq!(results[4]["values"], json!([0.5, null, null]));
    assert_eq!(results[5]["values"], json!([[1.5, 2.5], [0.0], null]));

    // Short names, a two-key view, a feature service, the namespace header.
    let (status, body) = post(
        &server,
        json!({
            "features": ["driver_rider_fv:rides_together"],
            "entities": {"driver_id": [1001], "rider_name": ["bob"]}
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["metadata"]["feature_names"],
        json!(["driver_id", "rider_name", "rides_together"])
    );
    assert_eq!(body["results"][2]["values"], json!([3]));

    let (status, body) = post(
        &server,
        json!({"feature_service": "driver_activity", "entities": {"driver_id": [1001]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["metadata"]["feature_names"],
        json!(["driver_id", "profit", "city", "conv_rate"])
    );
    assert_eq!(body["results"][3]["values"], json!([0.5]));

    let (status, body) = post_with(
        &server,
        json!({"features": ["bob_scores_fv:score"], "entities": {"driver_id": [1]}}),
        Some("kubeflow-bob"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][1]["statuses"], json!(["NOT_FOUND"]));

    // Health, readiness and metrics.
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(server.http("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(server.http("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = http
        .get(server.http("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"larder_requests_total{api="http",method="GetOnlineFeatures",code="ok"} 4"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("larder_online_store_read_duration_seconds_count 4"),
        "{metrics}"
    );
    server.shutdown().await;
}

/// Every bad input of the serving contract: the status and a message that
/// names the culprit, over both transports.
#[tokio::test]
async fn bad_inputs_get_clear_errors() {
    let redis = fixture_redis().await;
    let mut settings = fixture_settings();
    settings.limits.max_entity_rows = 3;
    settings.limits.max_features = 3;
    settings.max_request_bytes = 2048;
    let server =
        TestServer::start(redis_store(&redis.url(), Duration::from_secs(1)), settings).await;
    let mut client = ServingClient::connect(server.addr).await;

    let fv = |f: &str| format!("driver_daily_stats_fv:{f}");
    // (features, entities as JSON, expected gRPC code, HTTP status, culprit)
    let cases: Vec<(serde_json::Value, serde_json::Value, tonic::Code, u16, &str)> = vec![
        (
            json!(["nope_fv:profit"]),
            json!({"driver_id": [1]}),
            tonic::Code::NotFound,
            404,
            "nope_fv",
        ),
        (
            json!([fv("nope")]),
            json!({"driver_id": [1]}),
            tonic::Code::NotFound,
            404,
            "nope",
        ),
        (
            json!(["kubeflow-zed/driver_daily_stats_fv:profit"]),
            json!({"driver_id": [1]}),
            tonic::Code::NotFound,
            404,
            "kubeflow-zed",
        ),
        (
            json!(["driver_daily_stats_fv"]),
            json!({"driver_id": [1]}),
            tonic::Code::InvalidArgument,
            400,
            "driver_daily_stats_fv",
        ),
        (
            json!(["driver_daily_stats_fv:"]),
            json!({"driver_id": [1]}),
            tonic::Code::InvalidArgument,
            400,
            "feature name is empty",
        ),
        (
            json!(["driver_rider_fv:rides_together"]),
            json!({"driver_id": [1]}),
            tonic::Code::InvalidArgument,
            400,
            "rider_name",
        ),
        (
            json!([fv("profit")]),
            json!({"driver_id": [1, 2], "rider_name": ["x"]}),
            tonic::Code::InvalidArgument,
            400,
            "rider_name",
        ),
        (
            json!([fv("profit")]),
            json!({"driver_id": ["abc"]}),
            tonic::Code::InvalidArgument,
            400,
            "driver_id",
        ),
        (
            json!([fv("profit")]),
            json!({"driver_id": [1.5]}),
            tonic::Code::InvalidArgument,
            400,
            "driver_id",
        ),
        (
            json!([]),
            json!({"driver_id": [1]}),
            tonic::Code::InvalidArgument,
            400,
            "no features",
        ),
        (
            json!([fv("profit")]),
            json!({}),
            tonic::Code::InvalidArgument,
            400,
            "no entity rows",
        ),
        (
            json!([fv("profit")]),
            json!({"driver_id": [1, 2, 3, 4]}),
            tonic::Code::ResourceExhausted,
            413,
            "entity rows",
        ),
        (
            json!([fv("profit"), fv("city"), fv("trips"), fv("rating")]),
            json!({"driver_id": [1]}),
            tonic::Code::ResourceExhausted,
            413,
            "features",
        ),
        (
            json!([fv("profit"), "driver_hourly_fv:profit"]),
            json!({"driver_id": [1]}),
            tonic::Code::NotFound,
            404,
            "profit",
        ),
        (
            json!([fv("trips"), fv("trips")]),
            json!({"driver_id": [1]}),
            tonic::Code::InvalidArgument,
            400,
            "full_feature_names",
        ),
    ];
    for (features, entities, code, http_status, culprit) in cases {
        let (status, body) =
            post(&server, json!({"features": features, "entities": entities})).await;
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(status, http_status, "HTTP {features} {entities}: {body}");
        assert!(
            message.contains(culprit),
            "HTTP {features}: {message:?} names {culprit:?}"
        );

        let to_wire = |v: &serde_json::Value| RepeatedValue {
            val: v
                .as_array()
                .unwrap()
                .iter()
                .map(|x| Value_ {
                    val: Some(match x {
                        serde_json::Value::String(s) => Val::StringVal(s.clone()),
                        n if n.is_i64() => Val::Int64Val(n.as_i64().unwrap()),
                        n => Val::DoubleVal(n.as_f64().unwrap()),
                    }),
                })
                .collect(),
        };
        let req = GetOnlineFeaturesRequest {
            kind: Some(Kind::Features(FeatureList {
                val: features
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_owned())
                    .collect(),
            })),
            entities: entities
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), to_wire(v)))
                .collect(),
            ..Default::default()
        };
        let err = client
            .get_online_features(tonic::Request::new(req))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            code,
            "gRPC {features} {entities}: {}",
            err.message()
        );
        assert!(
            err.message().contains(culprit),
            "gRPC {features}: {:?} names {culprit:?}",
            err.message()
        );
    }

    // An unknown feature service; neither features nor a service.
    let (status, body) = post(
        &server,
        json!({"feature_service": "nope_svc", "entities": {"driver_id": [1]}}),
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nope_svc")
    );
    let err = client
        .get_online_features(tonic::Request::new(GetOnlineFeaturesRequest {
            kind: Some(Kind::FeatureService("nope_svc".into())),
            entities: [("driver_id".to_string(), int64s(&[1]))].into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("nope_svc"));
    let err = client
        .get_online_features(tonic::Request::new(GetOnlineFeaturesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let (status, _) = post(&server, json!({"entities": {"driver_id": [1]}})).await;
    assert_eq!(status, 400);
    let (status, body) = post(
        &server,
        json!({"features": [fv("profit")], "entities": {"driver_id": 1}}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("driver_id")
    );

    // Lossless widening is allowed: INT32 for an INT64 join key.
    let resp = client
        .get_online_features(tonic::Request::new(GetOnlineFeaturesRequest {
            kind: features(&["driver_daily_stats_fv:trips"]),
            entities: [(
                "driver_id".to_string(),
                RepeatedValue {
                    val: vec![v(Val::Int32Val(1001))],
                },
            )]
            .into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(resp.results[1].values[0], v(Val::Int64Val(12)));

    // Request size over the limit: 413 / RESOURCE_EXHAUSTED.
    let big = "x".repeat(4096);
    let resp = reqwest::Client::new()
        .post(server.http("/get-online-features"))
        .body(format!(r#"{{"features": ["{big}"], "entities": {{}}}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "resource_exhausted", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("2048"));
    let err = client
        .get_online_features(request(&[&big], &[1]))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::ResourceExhausted,
        "{}",
        err.message()
    );
    assert!(err.message().contains("bytes"));

    // A body that is not JSON.
    let resp = reqwest::Client::new()
        .post(server.http("/get-online-features"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    server.shutdown().await;
}

/// Sends one unary GetOnlineFeatures over plain HTTP/2 with a
/// `grpc-timeout` header and returns grpc-status and grpc-message.
async fn raw_grpc(
    server: &TestServer,
    request: &GetOnlineFeaturesRequest,
    timeout: &str,
) -> (i32, String) {
    use prost::Message;
    let payload = request.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    body.extend_from_slice(&payload);
    let resp = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
        .post(server.http("/feast.serving.ServingService/GetOnlineFeatures"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(body)
        .send()
        .await
        .unwrap();
    // An error with no message body comes back "trailers-only": the status
    // is in the headers.
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    (
        header("grpc-status").parse().unwrap_or(-1),
        header("grpc-message"),
    )
}

#[tokio::test]
async fn client_deadlines_and_slow_redis() {
    let redis = fixture_redis().await;
    // Redis answers within 300 ms or the request is UNAVAILABLE.
    let server = TestServer::start(
        redis_store(&redis.url(), Duration::from_millis(300)),
        fixture_settings(),
    )
    .await;
    let mut client = ServingClient::connect(server.addr).await;
    client
        .get_online_features(request(&["driver_daily_stats_fv:trips"], &[1001]))
        .await
        .unwrap();

    // Block Redis for 1.5 s from another connection.
    let blocker = std::thread::spawn({
        let client = redis.client();
        move || {
            let mut c = client.get_connection().unwrap();
            let _: () = redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg("1.5")
                .query(&mut c)
                .unwrap();
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A client deadline shorter than the Redis timeout: DEADLINE_EXCEEDED.
    // (tonic's client cancels on its own at the deadline, so this request
    // is sent raw, to see what the server answers.)
    let started = Instant::now();
    let (code, message) = raw_grpc(
        &server,
        &GetOnlineFeaturesRequest {
            kind: features(&["driver_daily_stats_fv:trips"]),
            entities: [("driver_id".to_string(), int64s(&[1001]))].into(),
            ..Default::default()
        },
        "100m",
    )
    .await;
    assert_eq!(code, tonic::Code::DeadlineExceeded as i32, "{message}");
    // The status tells the deadline from the Redis timeout (300 ms, which
    // would answer UNAVAILABLE); the bound only shows it did not wait for
    // the blocked Redis.
    assert!(started.elapsed() < Duration::from_millis(1000));

    // No client deadline: the Redis timeout answers UNAVAILABLE.
    let started = Instant::now();
    let err = client
        .get_online_features(request(&["driver_daily_stats_fv:trips"], &[1001]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "before Redis unblocks"
    );
    blocker.join().unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn redis_killed_gives_unavailable_then_recovers() {
    let mut redis = fixture_redis().await;
    let server = TestServer::start(
        redis_store(&redis.url(), Duration::from_millis(500)),
        fixture_settings(),
    )
    .await;
    let mut client = ServingClient::connect(server.addr).await;
    let ask = || request(&["driver_daily_stats_fv:trips"], &[1001]);
    client.get_online_features(ask()).await.unwrap();

    redis.kill();
    for _ in 0..3 {
        let mut req = ask();
        req.set_timeout(Duration::from_secs(2));
        let started = Instant::now();
        let err = client.get_online_features(req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered within the deadline"
        );
    }
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(server.http("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        http.get(server.http("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, body) = post(
        &server,
        json!({"features": ["driver_daily_stats_fv:trips"], "entities": {"driver_id": [1001]}}),
    )
    .await;
    assert_eq!(status, 503, "{body}");

    // Redis comes back (empty: it keeps nothing on disk); larder reconnects
    // by itself.
    redis.restart();
    load_golden(&mut redis.conn());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match client.get_online_features(ask()).await {
            Ok(resp) => {
                assert_eq!(resp.results[1].values[0], v(Val::Int64Val(12)));
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::Unavailable);
                assert!(
                    Instant::now() < deadline,
                    "did not recover: {}",
                    e.message()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(
        http.get(server.http("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    server.shutdown().await;
}

/// grpcurl and ghz find the service by reflection (v1 and v1alpha), and
/// Kubernetes probes by the gRPC health service.
#[tokio::test]
async fn reflection_and_health() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    use tonic_reflection::pb::{v1, v1alpha};

    let redis = fixture_redis().await;
    let server = start(&redis).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut v1_client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut replies = v1_client
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("expected a service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"feast.serving.ServingService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );

    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "feast.serving.ServingService".into(),
            ),
        ),
    };
    let mut replies = alpha
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        reply.message_response
    else {
        panic!("expected file descriptors")
    };
    assert!(!files.file_descriptor_proto.is_empty());

    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: "feast.serving.ServingService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    server.shutdown().await;
}
