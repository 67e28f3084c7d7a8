//! The registry REST API, the same suite on SQLite, a real PostgreSQL and a
//! real MariaDB, through an in-process server and a plain HTTP client.

mod common;

use std::time::{Duration, Instant};

use common::db::TestDb;
use larder::registry::api::{Registry, run};
use larder::registry::store::SqlRegistryStore;
use serde_json::{Value, json};

const V1: &str = "/apis/features.kubeflow.org/v1";

struct Api {
    base: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Api {
    async fn start(db: &TestDb) -> Api {
        let store = SqlRegistryStore::connect(&db.url).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(run(listener, Registry::new(store), async move {
            let _ = stopped.await;
        }));
        Api {
            base,
            http: reqwest::Client::new(),
            stop: Some(stop),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{V1}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value, reqwest::header::HeaderMap) {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            headers,
        )
    }

    async fn put_yaml(&self, path: &str, yaml: &str) -> (u16, Value) {
        let (s, b, _) = self
            .send(
                self.http
                    .put(self.url(path))
                    .header("content-type", "application/yaml")
                    .body(yaml.to_owned()),
            )
            .await;
        (s, b)
    }

    async fn put_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let (s, b, _) = self.send(self.http.put(self.url(path)).json(body)).await;
        (s, b)
    }

    async fn put_json_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (s, b, _) = self.send(self.http.post(self.url(path)).json(body)).await;
        (s, b)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (s, b, _) = self.send(self.http.get(self.url(path))).await;
        (s, b)
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        let (s, b, _) = self.send(self.http.delete(self.url(path))).await;
        (s, b)
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

const ENTITY: &str = r#"
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: driver, namespace: kubeflow-alice }
spec: { joinKeys: [{ name: driver_id, valueType: INT64 }] }
"#;

const VIEW: &str = r#"
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_daily_stats_fv, namespace: kubeflow-alice, labels: { team: alice } }
spec:
  entities: [driver]
  ttl: 1d
  features:
    - { name: profit, valueType: DOUBLE }
    - { name: acc_rate, valueType: FLOAT }
"#;

const ALICE: &str = "/namespaces/kubeflow-alice";

async fn suite(kind: &str) {
    let db = TestDb::new(kind).await;
    let api = Api::start(&db).await;

    // Create, read back with server-managed metadata.
    let (s, entity) = api
        .put_yaml(&format!("{ALICE}/entities/driver"), ENTITY)
        .await;
    assert_eq!(s, 201, "{entity}");
    assert_eq!(entity["metadata"]["resourceVersion"], "1");
    let (s, view) = api
        .put_yaml(&format!("{ALICE}/featureviews/driver_daily_stats_fv"), VIEW)
        .await;
    assert_eq!(s, 201, "{view}");
    let (s, got) = api
        .get(&format!("{ALICE}/featureviews/driver_daily_stats_fv"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(got["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert_eq!(got["metadata"]["labels"]["team"], "alice");
    assert!(
        got["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(got["spec"]["features"][1]["name"], "acc_rate");

    // What GET returns can be PUT back (its resourceVersion checked);
    // a stale version is a conflict.
    let mut replaced = got.clone();
    replaced["spec"]["ttl"] = json!("2d");
    let (s, body) = api
        .put_json(
            &format!("{ALICE}/featureviews/driver_daily_stats_fv"),
            &replaced,
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = api
        .put_json(
            &format!("{ALICE}/featureviews/driver_daily_stats_fv"),
            &replaced,
        )
        .await;
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["reason"], "Conflict");

    // Bad manifests: 4xx naming the culprit, nothing written.
    let before = api.get("/snapshot").await.1["metadata"]["resourceVersion"].clone();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "featureviews/bad_fv",
            VIEW.replace("driver_daily_stats_fv", "bad_fv")
                .replace("[driver]", "[rider]"),
            422,
            "spec.entities[0]",
        ),
        (
            "featureviews/bad_fv",
            VIEW.replace("driver_daily_stats_fv", "bad_fv")
                .replace("DOUBLE", "DUBBLE"),
            422,
            "spec.features[0].valueType",
        ),
        (
            "featureviews/bad_fv",
            VIEW.replace("driver_daily_stats_fv", "Bad FV"),
            422,
            "metadata.name",
        ),
        ("featureviews/other_name", VIEW.to_owned(), 422, "metadata"),
        (
            "entities/driver2",
            "kind: [unclosed".to_owned(),
            422,
            "request body",
        ),
        (
            "featureviews/driver2",
            ENTITY.replace("name: driver,", "name: driver2,"),
            422,
            "kind",
        ),
        ("widgets/x", ENTITY.to_owned(), 404, "widgets"),
    ];
    for (path, body, status, culprit) in cases {
        let (s, b) = api.put_yaml(&format!("{ALICE}/{path}"), &body).await;
        assert_eq!(s, status, "{path}: {b}");
        let message = b["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(culprit),
            "{path}: {message:?} names {culprit:?}"
        );
    }
    // On a connection of its own: the server answers 413 without reading
    // the body and closes that connection.
    let (s, _, _) = api
        .send(
            reqwest::Client::new()
                .put(api.url(&format!("{ALICE}/entities/big")))
                .header("content-type", "application/yaml")
                .body("x".repeat((1 << 20) + 1024)),
        )
        .await;
    assert_eq!(s, 413);
    let after = api.get("/snapshot").await.1["metadata"]["resourceVersion"].clone();
    assert_eq!(before, after, "refused writes change nothing");

    // A namespace that is a suffix of another is refused.
    let (s, b) = api
        .put_yaml(
            "/namespaces/alice/entities/driver",
            &ENTITY.replace("kubeflow-alice", "alice"),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert!(b["message"].as_str().unwrap().contains("suffix"), "{b}");

    // Lists, in one namespace and across namespaces.
    let bob_entity = ENTITY.replace("kubeflow-alice", "kubeflow-bob");
    assert_eq!(
        api.put_yaml("/namespaces/kubeflow-bob/entities/driver", &bob_entity)
            .await
            .0,
        201
    );
    let (s, list) = api.get(&format!("{ALICE}/entities")).await;
    assert_eq!(s, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, list) = api.get("/entities").await;
    let namespaces: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["kubeflow-alice", "kubeflow-bob"]);

    // Deleting a referenced entity is refused, naming the referrer.
    let (s, b) = api.delete(&format!("{ALICE}/entities/driver")).await;
    assert_eq!(s, 409, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("driver_daily_stats_fv"),
        "{b}"
    );
    assert_eq!(
        api.delete(&format!("{ALICE}/featureviews/driver_daily_stats_fv"))
            .await
            .0,
        200
    );
    assert_eq!(api.delete(&format!("{ALICE}/entities/driver")).await.0, 200);
    assert_eq!(api.get(&format!("{ALICE}/entities/driver")).await.0, 404);

    // Snapshot and watch.
    let (s, snap, headers) = api.send(api.http.get(api.url("/snapshot"))).await;
    assert_eq!(s, 200);
    let version: i64 = snap["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(headers["etag"], format!("\"{version}\""));
    assert_eq!(snap["items"].as_array().unwrap().len(), 1);
    let started = Instant::now();
    let (s, _, _) = api
        .send(api.http.get(api.url(&format!(
            "/snapshot?watch=true&resourceVersion={version}&timeoutSeconds=1"
        ))))
        .await;
    assert_eq!(s, 304);
    assert!(started.elapsed() >= Duration::from_millis(900));
    let watcher = tokio::spawn({
        let url = api.url(&format!(
            "/snapshot?watch=true&resourceVersion={version}&timeoutSeconds=10"
        ));
        async move {
            let started = Instant::now();
            let resp = reqwest::get(url).await.unwrap();
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.unwrap(),
                started.elapsed(),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        api.put_yaml(&format!("{ALICE}/entities/driver"), ENTITY)
            .await
            .0,
        201
    );
    let (s, snap, waited) = watcher.await.unwrap();
    assert_eq!(s, 200);
    let newer: i64 = snap["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(newer > version);
    assert!(
        waited < Duration::from_secs(2),
        "the watch answered within a second of the write"
    );

    // Parallel applies from several clients: all land, versions unique.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let url = api.url(&format!("/namespaces/kubeflow-bob/entities/e{i}"));
        let body = ENTITY
            .replace("kubeflow-alice", "kubeflow-bob")
            .replace("name: driver,", &format!("name: e{i},"));
        tasks.push(tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .put(url)
                .header("content-type", "application/yaml")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 201);
            resp.json::<Value>().await.unwrap()["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .unwrap()
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort();
    versions.dedup();
    assert_eq!(versions.len(), 12);

    // Paging: pages of 5 cover every entity of kubeflow-bob once, in order.
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let query = match &next {
            Some(c) => format!("?limit=5&continue={c}"),
            None => "?limit=5".to_owned(),
        };
        let (s, page) = api
            .get(&format!("/namespaces/kubeflow-bob/entities{query}"))
            .await;
        assert_eq!(s, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 5);
        seen.extend(
            items
                .iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned()),
        );
        match page["metadata"]["continue"].as_str() {
            Some(c) => next = Some(c.to_owned()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "ordered, no duplicates");
    assert_eq!(seen.len(), 13, "{seen:?}");

    // The OpenAPI document is served and names every route.
    let openapi: Value = reqwest::get(format!("{}/openapi.json", api.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(openapi["openapi"], "3.0.3");
    for path in [
        "/namespaces/{namespace}/{resource}/{name}",
        "/snapshot",
        "/{resource}",
    ] {
        assert!(
            openapi["paths"].get(format!("{V1}{path}")).is_some(),
            "{path}"
        );
    }
    assert_eq!(
        api.get("/snapshot?watch=true&timeoutSeconds=61").await.0,
        422
    );

    // Materialization bookkeeping per feature view.
    let view_path = format!("{ALICE}/featureviews/driver_daily_stats_fv");
    assert_eq!(api.put_yaml(&view_path, VIEW).await.0, 201);
    let intervals = format!("{view_path}/materializations");
    for (start, end) in [
        ("2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"),
        ("2026-11-02T00:00:00Z", "2026-11-03T12:30:00Z"),
    ] {
        let (s, b) = api
            .put_json_post(&intervals, &json!({"start": start, "end": end}))
            .await;
        assert_eq!(s, 201, "{b}");
    }
    for (selector, count) in [
        ("team=alice", 1),
        ("team%3D%3Dalice", 1),
        ("team!=alice", 0),
        ("team", 1),
        ("!team", 0),
        ("team=bob", 0),
    ] {
        let (s, list) = api
            .get(&format!("{ALICE}/featureviews?labelSelector={selector}"))
            .await;
        assert_eq!(s, 200, "{list}");
        assert_eq!(list["items"].as_array().unwrap().len(), count, "{selector}");
    }
    assert_eq!(
        api.get(&format!("{ALICE}/featureviews?labelSelector=%3Dx"))
            .await
            .0,
        422
    );
    let (s, list) = api.get(&intervals).await;
    assert_eq!(s, 200);
    assert_eq!(list["items"][1]["end"], "2026-11-03T12:30:00Z", "{list}");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let (s, b) = api
        .put_json_post(
            &intervals,
            &json!({"start": "2026-11-03T00:00:00Z", "end": "2026-11-02T00:00:00Z"}),
        )
        .await;
    assert_eq!(s, 422);
    assert!(b["message"].as_str().unwrap().contains("end"), "{b}");
    let (s, b) = api
        .put_json_post(
            &intervals,
            &json!({"start": "yesterday", "end": "2026-11-02T00:00:00Z"}),
        )
        .await;
    assert_eq!(s, 422);
    assert!(b["message"].as_str().unwrap().contains("start"), "{b}");
    let (s, _) = api
        .put_json_post(
            &format!("{ALICE}/featureviews/nope_fv/materializations"),
            &json!({"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z"}),
        )
        .await;
    assert_eq!(s, 404);

    drop(api);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_api_on_sqlite() {
    suite("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_api_on_postgres() {
    suite("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_api_on_mariadb() {
    suite("mysql").await;
}

const ZONES: &str = r#"
apiVersion: features.kubeflow.org/v1
kind: OnDemandFeatureView
metadata: { name: driver_zones_odfv, namespace: kubeflow-alice }
spec:
  sources: { featureViews: [driver_daily_stats_fv] }
  features:
    - name: zone
      valueType: INT64
      expression: "driver_daily_stats_fv.profit > 10.0 ? 1 : 2"
"#;

/// The registry compiles and type-checks on-demand expressions when they
/// are applied, and keeps their source views from being deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_views_are_checked_when_applied() {
    let db = TestDb::new("sqlite").await;
    let api = Api::start(&db).await;
    let path = format!("{ALICE}/ondemandfeatureviews/driver_zones_odfv");
    assert_eq!(
        api.put_yaml(&format!("{ALICE}/entities/driver"), ENTITY)
            .await
            .0,
        201
    );
    assert_eq!(
        api.put_yaml(&format!("{ALICE}/featureviews/driver_daily_stats_fv"), VIEW)
            .await
            .0,
        201
    );
    for (bad, want) in [
        (
            ZONES.replace("profit >", "proft >"),
            "has no feature \"proft\"",
        ),
        (
            ZONES.replace("? 1 : 2", "? 1 : 'two'"),
            "both branches of ?:",
        ),
        (
            ZONES.replace("valueType: INT64", "valueType: BOOL"),
            "declared BOOL",
        ),
    ] {
        let (s, body) = api.put_yaml(&path, &bad).await;
        assert_eq!(s, 422, "{body}");
        let message = body["message"].as_str().unwrap_or_default().to_owned() + &body.to_string();
        assert!(
            message.contains("OnDemandFeatureView kubeflow-alice/driver_zones_odfv")
                && message.contains(want),
            "{message} does not name the view and {want:?}"
        );
    }
    // The mixed comparison int/double is fine; the arithmetic one names
    // its position.
    let (s, body) = api
        .put_yaml(
            &path,
            &ZONES.replace("profit > 10.0 ? 1 : 2", "profit + 1 > 10.0 ? 1 : 2"),
        )
        .await;
    assert_eq!(s, 422);
    assert!(body.to_string().contains("line 1, column 30"), "{body}");

    let (s, body) = api.put_yaml(&path, ZONES).await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = api.get(&format!("{ALICE}/ondemandfeatureviews")).await;
    assert_eq!(s, 200);
    assert_eq!(
        body["items"][0]["metadata"]["name"], "driver_zones_odfv",
        "{body}"
    );
    // Its source cannot go while it reads it.
    let (s, body) = api
        .delete(&format!("{ALICE}/featureviews/driver_daily_stats_fv"))
        .await;
    assert_eq!(s, 409, "{body}");
    assert!(body.to_string().contains("driver_zones_odfv"), "{body}");
    assert_eq!(api.delete(&path).await.0, 200);
}
