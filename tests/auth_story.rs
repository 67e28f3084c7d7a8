//! The story's tenant isolation end to end, against a real Redis with real
//! ACL users (from deploy/redis/acl.conf), real signed service-account
//! tokens and the shipped RBAC manifests:
//!
//! - Alice writes and reads her features;
//! - Bob is refused Alice's feature view by larder (403), and Redis refuses
//!   Bob's ACL user Alice's keys (NOPERM);
//! - after Alice shares the view (deploy/rbac/share-example.yaml) larder
//!   lets Bob through, but Redis still refuses until the admin grants the
//!   ACL; then Bob reads them;
//! - Charlie's view stays closed to Bob.
//!
//! And every bad token is refused on both transports, and no token is ever
//! written to the logs.

mod common;
mod feast_wire;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use common::{acl_setuser, jwt, shipped_acl};
use larder::auth::Auth;
use larder::definitions::parse_documents;
use larder::model::{EventTime, Value};
use larder::online::{OnlineStore, RedisCredentials, RedisSettings, RedisStore, ViewRow};
use larder::registry::RegistrySnapshot;
use larder::serving::{FeatureServer, ServingSettings};

const DEFINITIONS: &str = r#"
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: driver, namespace: kubeflow-alice }
spec: { joinKeys: [{ name: driver_id, valueType: INT64 }] }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_daily_stats, namespace: kubeflow-alice }
spec:
  entities: [driver]
  features:
    - { name: trips, valueType: INT64 }
    - { name: rating, valueType: DOUBLE }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_payouts, namespace: kubeflow-alice }
spec:
  entities: [driver]
  features:
    - { name: payout, valueType: DOUBLE }
---
apiVersion: features.kubeflow.org/v1
kind: OnDemandFeatureView
metadata: { name: driver_value_odfv, namespace: kubeflow-alice }
spec:
  sources: { featureViews: [driver_daily_stats, driver_payouts] }
  features:
    - name: payout_per_trip
      valueType: DOUBLE
      expression: driver_payouts.payout / double(driver_daily_stats.trips)
---
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: driver, namespace: kubeflow-charlie }
spec: { joinKeys: [{ name: driver_id, valueType: INT64 }] }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_locations, namespace: kubeflow-charlie }
spec:
  entities: [driver]
  features:
    - { name: lat, valueType: DOUBLE }
    - { name: lon, valueType: DOUBLE }
"#;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Everything every test in this file logs, at every level.
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Writer(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn namespace_store(redis: &common::RedisServer, user: &str) -> OnlineStore {
    OnlineStore::Redis(
        RedisStore::new(RedisSettings {
            url: redis.url(),
            credentials: Some(RedisCredentials {
                username: user.into(),
                password: format!("{user}-password"),
            }),
            ..Default::default()
        })
        .unwrap(),
    )
}

struct Story {
    redis: common::RedisServer,
    server: Arc<FeatureServer>,
    addr: std::net::SocketAddr,
    policy_dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Story {
    async fn start() -> Story {
        captured_logs();
        let redis = common::RedisServer::start();
        let mut admin = redis.conn();
        // The shipped ACL lines; Charlie's is Alice's with his names.
        for ns in ["alice", "bob"] {
            let user = format!("larder-kubeflow-{ns}");
            let rules = shipped_acl(&user, &format!("{user}-password"));
            acl_setuser(&mut admin, &user, &rules);
        }
        let charlie: Vec<String> =
            shipped_acl("larder-kubeflow-alice", "larder-kubeflow-charlie-password")
                .into_iter()
                .map(|r| r.replace("kubeflow_alice", "kubeflow_charlie"))
                .collect();
        acl_setuser(&mut admin, "larder-kubeflow-charlie", &charlie);

        // RBAC: the shipped ClusterRoles, Kubeflow's aggregating roles and
        // the profiles' bindings; the share comes later.
        let policy_dir = jwt::story_policy();
        let config = jwt::auth_config(policy_dir.path(), policy_dir.path());
        let auth = Arc::new(Auth::from_config(&config).await.unwrap());

        let snapshot = RegistrySnapshot::build(
            parse_documents("story.yaml", DEFINITIONS).unwrap(),
            1,
            &Default::default(),
        )
        .unwrap();
        let stores: HashMap<String, OnlineStore> = ["alice", "bob", "charlie"]
            .into_iter()
            .map(|n| {
                (
                    format!("kubeflow-{n}"),
                    namespace_store(&redis, &format!("larder-kubeflow-{n}")),
                )
            })
            .collect();
        let server = Arc::new(
            FeatureServer::new(
                snapshot,
                common::redis_store(&redis.url(), std::time::Duration::from_secs(1)),
                ServingSettings {
                    default_namespace: "kubeflow-alice".into(),
                    ..Default::default()
                },
            )
            .with_auth(auth)
            .with_namespace_stores(stores, HashMap::new()),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(larder::serving::run(listener, server.clone(), async move {
            let _ = stopped.await;
        }));
        Story {
            redis,
            server,
            addr,
            policy_dir,
            _stop: stop,
        }
    }

    /// Writes rows of a view with its owning namespace's credentials.
    async fn write(&self, ns: &str, view: &str, rows: Vec<(i64, Vec<Value>)>) {
        let snapshot = self.server.snapshot();
        let served = snapshot.namespace(ns).unwrap().views.get(view).unwrap();
        let rows: Vec<ViewRow> = rows
            .into_iter()
            .map(|(driver, values)| ViewRow {
                keys: vec![Value::Int64(driver)],
                event_time: EventTime::now(),
                values,
            })
            .collect();
        let written = self
            .server
            .store_of_namespace(ns)
            .write_rows(served, &rows)
            .await
            .unwrap();
        assert_eq!(written, rows.len());
    }

    /// Adds the shipped share Role and RoleBinding and reloads the policy,
    /// as SIGHUP does.
    fn share(&self) {
        std::fs::copy(
            repo("deploy/rbac/share-example.yaml"),
            self.policy_dir.path().join("share.yaml"),
        )
        .unwrap();
        let policy = larder::auth::load_policy(&[self.policy_dir.path().to_path_buf()]).unwrap();
        self.server.auth().replace_policy(policy).unwrap();
    }

    /// An HTTP read: status and body.
    async fn http(
        &self,
        token: Option<&str>,
        features: &[&str],
        drivers: &[i64],
    ) -> (u16, serde_json::Value) {
        let mut request = reqwest::Client::new()
            .post(format!("http://{}/get-online-features", self.addr))
            .json(&serde_json::json!({
                "features": features,
                "entities": {"driver_id": drivers},
                "full_feature_names": true,
            }));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    /// A gRPC read with an `authorization` header, when given.
    async fn grpc(
        &self,
        token: Option<&str>,
        features: &[&str],
    ) -> Result<feast_wire::GetOnlineFeaturesResponse, tonic::Status> {
        let mut client = feast_wire::ServingClient::connect(self.addr).await;
        let mut request = tonic::Request::new(feast_wire::GetOnlineFeaturesRequest {
            kind: feast_wire::features(features),
            entities: [("driver_id".to_owned(), feast_wire::int64s(&[1001]))].into(),
            ..Default::default()
        });
        if let Some(t) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        client.get_online_features(request).await
    }
}

fn values(body: &serde_json::Value, column: usize) -> Vec<serde_json::Value> {
    body["results"][column]["values"]
        .as_array()
        .unwrap()
        .clone()
}

fn message(body: &serde_json::Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn alice_shares_with_bob_and_both_walls_hold() {
    let story = Story::start().await;
    let alice = jwt::token("kubeflow-alice", "default-editor");
    let bob = jwt::token("kubeflow-bob", "default-editor");
    let charlie = jwt::token("kubeflow-charlie", "default-editor");
    let alice_view = ["driver_daily_stats:trips", "driver_daily_stats:rating"];
    let alice_qualified = [
        "kubeflow-alice/driver_daily_stats:trips",
        "kubeflow-alice/driver_daily_stats:rating",
    ];
    let charlie_view = ["kubeflow-charlie/driver_locations:lat"];

    // Alice and Charlie write their features with their own Redis users.
    story
        .write(
            "kubeflow-alice",
            "driver_daily_stats",
            vec![
                (1001, vec![Value::Int64(12), Value::Double(4.8)]),
                (1002, vec![Value::Int64(7), Value::Double(4.1)]),
            ],
        )
        .await;
    story
        .write(
            "kubeflow-charlie",
            "driver_locations",
            vec![(1001, vec![Value::Double(37.98), Value::Double(23.73)])],
        )
        .await;

    // Alice reads hers, over HTTP and gRPC.
    let (status, body) = story.http(Some(&alice), &alice_view, &[1001, 1002]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(values(&body, 1), [12, 7]);
    assert_eq!(values(&body, 2), [4.8, 4.1]);
    let response = story.grpc(Some(&alice), &alice_view).await.unwrap();
    assert_eq!(response.results.len(), 3);

    // Bob is refused Alice's view by larder, naming it.
    let (status, body) = story.http(Some(&bob), &alice_qualified, &[1001]).await;
    assert_eq!(status, 403, "{body}");
    assert!(message(&body).contains("driver_daily_stats"), "{body}");
    assert!(
        message(&body).contains("kubeflow-bob:default-editor"),
        "{body}"
    );
    let e = story.grpc(Some(&bob), &alice_qualified).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("driver_daily_stats"), "{e:?}");

    // ... and by Redis: Bob's ACL user may not read Alice's keys.
    let key = larder::online::layout::redis_key(
        &["driver_id"],
        &[&Value::Int64(1001)],
        "kubeflow_alice",
        larder::online::layout::KeyVersion::V3,
    )
    .unwrap();
    let bob_redis = redis::Client::open(format!(
        "redis://larder-kubeflow-bob:larder-kubeflow-bob-password@127.0.0.1:{}",
        story.redis.port
    ))
    .unwrap();
    let mut bob_conn = bob_redis.get_connection().unwrap();
    let direct: redis::RedisResult<Vec<Option<Vec<u8>>>> = redis::cmd("HMGET")
        .arg(&key)
        .arg("_ts:driver_daily_stats")
        .query(&mut bob_conn);
    let e = direct.unwrap_err();
    assert_eq!(e.code(), Some("NOPERM"), "{e}");
    // Nor write them.
    let snapshot = story.server.snapshot();
    let served = snapshot
        .namespace("kubeflow-alice")
        .unwrap()
        .views
        .get("driver_daily_stats")
        .unwrap();
    let e = story
        .server
        .store_of_namespace("kubeflow-bob")
        .write_rows(
            served,
            &[ViewRow {
                keys: vec![Value::Int64(1001)],
                event_time: EventTime::now(),
                values: vec![Value::Int64(0), Value::Double(0.0)],
            }],
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("denied"), "{e}");

    // Alice shares the view. larder now lets Bob through, but Redis is the
    // second wall: his reads are still refused until the admin grants it.
    story.share();
    let (status, body) = story.http(Some(&bob), &alice_qualified, &[1001]).await;
    assert_eq!(status, 403, "{body}");
    assert!(message(&body).contains("NOPERM"), "{body}");

    let mut admin = story.redis.conn();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("larder-kubeflow-bob")
        .arg("%R~*kubeflow_alice")
        .query(&mut admin)
        .unwrap();
    let (status, body) = story
        .http(Some(&bob), &alice_qualified, &[1001, 1002])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(values(&body, 1), [12, 7]);
    let response = story.grpc(Some(&bob), &alice_qualified).await.unwrap();
    assert_eq!(response.results.len(), 3);

    // Exactly what was shared: not Alice's other view, not Charlie's.
    let (status, body) = story
        .http(
            Some(&bob),
            &["kubeflow-alice/driver_payouts:payout"],
            &[1001],
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(message(&body).contains("driver_payouts"), "{body}");
    let (status, body) = story.http(Some(&bob), &charlie_view, &[1001]).await;
    assert_eq!(status, 403, "{body}");
    assert!(message(&body).contains("driver_locations"), "{body}");

    // Charlie reads his own.
    let (status, body) = story.http(Some(&charlie), &charlie_view, &[1001]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(values(&body, 1), [37.98]);

    for token in [&alice, &bob, &charlie] {
        assert_no_token_logged(token);
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_on_both_transports() {
    let story = Story::start().await;
    let features = ["driver_daily_stats:trips"];

    let (status, body) = story.http(None, &features, &[1001]).await;
    assert_eq!(status, 401, "no token: {body}");
    let e = story.grpc(None, &features).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "no token: {e:?}");

    for (why, token) in jwt::bad_tokens() {
        let (status, body) = story.http(Some(&token), &features, &[1001]).await;
        assert_eq!(status, 401, "{why}: {body}");
        assert!(
            message(&body).starts_with("unauthenticated"),
            "{why}: {body}"
        );
        let e = story.grpc(Some(&token), &features).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{why}: {e:?}");
        assert!(!e.message().contains(&token), "{why}: the token is echoed");
        assert_no_token_logged(&token);
    }

    // Health, readiness and metrics stay open.
    for path in ["/health", "/ready", "/metrics"] {
        let status = reqwest::get(format!("http://{}{path}", story.addr))
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{path}");
    }
}

fn assert_no_token_logged(token: &str) {
    let logs = captured_logs().lock().unwrap();
    let text = String::from_utf8_lossy(&logs);
    assert!(
        !text.is_empty(),
        "nothing was logged: the capture is broken"
    );
    // The signature part alone would already be a leak.
    let tail = token.rsplit('.').next().unwrap_or(token);
    let probe = if tail.len() >= 16 { tail } else { token };
    assert!(!text.contains(probe), "a token appears in the logs");
}

/// An on-demand view reads its sources: reading it needs `get` on it and
/// on each source view, so a transform never reveals a view the caller may
/// not read.
#[tokio::test]
async fn on_demand_reads_need_get_on_the_view_and_its_sources() {
    let story = Story::start().await;
    story.share();
    let alice = jwt::token("kubeflow-alice", "default-editor");
    let bob = jwt::token("kubeflow-bob", "default-editor");
    story
        .write(
            "kubeflow-alice",
            "driver_daily_stats",
            vec![(1001, vec![Value::Int64(8), Value::Double(4.8)])],
        )
        .await;
    story
        .write(
            "kubeflow-alice",
            "driver_payouts",
            vec![(1001, vec![Value::Double(20.0)])],
        )
        .await;
    let refs = ["kubeflow-alice/driver_value_odfv:payout_per_trip"];
    // Alice's admin has granted Bob's Redis user read access to her keys:
    // only RBAC stands between Bob and her views here.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("larder-kubeflow-bob")
        .arg("%R~*kubeflow_alice")
        .query(&mut story.redis.conn())
        .unwrap();

    let (status, body) = story.http(Some(&alice), &refs, &[1001]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(values(&body, 1), [serde_json::json!(2.5)]);

    // Bob may read driver_daily_stats (the shared example), and is given
    // the on-demand view: it still reads driver_payouts, which he may not.
    let grant = |file: &str, resource: &str, name: &str| {
        std::fs::write(
            story.policy_dir.path().join(format!("{file}.yaml")),
            format!(
                r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{ name: {file}, namespace: kubeflow-alice }}
rules:
  - {{ apiGroups: [features.kubeflow.org], resources: [{resource}], resourceNames: [{name}], verbs: [get] }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{ name: {file}, namespace: kubeflow-alice }}
roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: Role, name: {file} }}
subjects: [{{ kind: ServiceAccount, name: default-editor, namespace: kubeflow-bob }}]
"#
            ),
        )
        .unwrap();
    };
    let reload = || {
        let policy = larder::auth::load_policy(&[story.policy_dir.path().to_path_buf()]).unwrap();
        story.server.auth().replace_policy(policy).unwrap();
    };
    grant("share-odfv", "ondemandfeatureviews", "driver_value_odfv");
    reload();
    let e = story.grpc(Some(&bob), &refs).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(e.message().contains("driver_payouts"), "{}", e.message());

    // With driver_payouts shared too, he reads the on-demand feature.
    grant("share-payouts", "featureviews", "driver_payouts");
    reload();
    let (status, body) = story.http(Some(&bob), &refs, &[1001]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(values(&body, 1), [serde_json::json!(2.5)]);

    // Every source shared but not the on-demand view itself: refused.
    std::fs::remove_file(story.policy_dir.path().join("share-odfv.yaml")).unwrap();
    reload();
    let (status, body) = story.http(Some(&bob), &refs, &[1001]).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        message(&body).contains("ondemandfeatureviews \"driver_value_odfv\""),
        "{body}"
    );
}
