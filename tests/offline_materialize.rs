//! Materialization from the offline store into the online store, end to
//! end: a real PostgreSQL (a database per test), SQLite files in temporary
//! folders, a real Redis per test, the registry's interval log, the feature
//! server answering over HTTP, Redis ACL users per namespace, PostgreSQL
//! roles per namespace, and the `larder` binary.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::db::TestDb;
use common::{RedisServer, acl_setuser, shipped_acl};
use larder::config::{Config, NamespaceConfig, SecretUser, StoreKind};
use larder::model::{EventTime, Value};
use larder::offline::materialize::{
    DefinitionArgs, IncrementalArgs, MaterializeArgs, ViewReport, materialize,
    materialize_incremental,
};
use larder::offline::write::append_rows;
use larder::offline::{OfflineError, OfflineStore};
use larder::online::ViewRow;
use larder::registry::store::{RegistryStore, SqlRegistryStore};
use larder::serving::{FeatureServer, ServingSettings};
use serde_json::json;
use sqlx::Connection;

const NS: &str = "kubeflow-alice";
/// 2024-05-01T12:00:00Z and later ends.
const E: &str = "2024-05-01T12:00:00Z";
const E_MS: i64 = 1_714_564_800_000;
const E2: &str = "2024-05-02T00:00:00Z";
const E2_MS: i64 = 1_714_608_000_000;
const E3: &str = "2024-05-04T00:00:00Z";
const E3_MS: i64 = 1_714_780_800_000;

const PG_DEFINITIONS: &str = r#"
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: driver, namespace: kubeflow-alice }
spec: { joinKeys: [{ name: driver_id, valueType: INT64 }] }
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: driver_stats_src, namespace: kubeflow-alice }
spec:
  type: postgres
  table: driver_stats
  timestampField: event_timestamp
  createdTimestampField: created
  fieldMapping: { conv: conv_rate }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_stats, namespace: kubeflow-alice }
spec:
  entities: [driver]
  source: driver_stats_src
  features:
    - { name: conv_rate, valueType: DOUBLE }
    - { name: trips, valueType: INT64 }
    - { name: city, valueType: STRING }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_notes, namespace: kubeflow-alice }
spec:
  entities: [driver]
  features:
    - { name: note, valueType: STRING }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_archive, namespace: kubeflow-alice }
spec:
  entities: [driver]
  online: false
  source: driver_stats_src
  features:
    - { name: city, valueType: STRING }
"#;

/// Several rows per driver; 1001's latest event time has three rows, the
/// later `created` wins and a null `created` loses. 1003's only row is
/// after E and E2; 1004's is exactly at E (inclusive).
const PG_ROWS: &str = "
CREATE TABLE driver_stats (
  driver_id bigint NOT NULL, event_timestamp timestamptz NOT NULL,
  created timestamptz, conv double precision, trips integer, city text);
INSERT INTO driver_stats VALUES
  (1001, '2024-05-01 09:00Z', '2024-05-01 09:00Z', 0.1, 1, 'Athens'),
  (1001, '2024-05-01 10:00Z', '2024-05-01 10:00Z', 0.2, 2, 'Athens'),
  (1001, '2024-05-01 11:00Z', '2024-05-01 11:00Z', 0.3, 3, 'Athens'),
  (1001, '2024-05-01 11:00Z', '2024-05-01 11:30Z', 0.35, 4, 'Patras'),
  (1001, '2024-05-01 11:00Z', NULL, 0.0, 0, 'Nowhere'),
  (1002, '2024-05-01 08:00Z', '2024-05-01 08:00Z', 0.5, 5, 'Volos'),
  (1002, '2024-05-01 09:30Z', '2024-05-01 09:30Z', 0.6, NULL, 'Volos'),
  (1003, '2024-05-03 00:00Z', '2024-05-03 00:00Z', 0.9, 9, 'Corfu'),
  (1004, '2024-05-01 12:00Z', '2024-05-01 12:00Z', 0.4, 7, 'Chania');
";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A test's own world: a temporary folder (definitions, registry and
/// SQLite files), a PostgreSQL database, a Redis, and a config for them.
struct World {
    dir: tempfile::TempDir,
    pg: TestDb,
    redis: RedisServer,
    config: Config,
}

impl World {
    async fn new(definitions: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let pg = TestDb::new("postgres").await;
        let redis = RedisServer::start();
        let defs = dir.path().join("definitions");
        std::fs::create_dir_all(&defs).unwrap();
        std::fs::write(defs.join("features.yaml"), definitions).unwrap();
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
        // Small batches: several batches in flight even for a few rows.
        config.offline_store.batch_rows = 2;
        World {
            dir,
            pg,
            redis,
            config,
        }
    }

    async fn pg(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.pg.url).await.unwrap()
    }

    async fn pg_exec(&self, sql: &str) {
        sqlx::raw_sql(sql)
            .execute(&mut self.pg().await)
            .await
            .unwrap();
    }

    async fn sqlite_exec(&self, sql: &str) {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&self.config.offline_store.sqlite.path)
            .create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    }

    async fn intervals(&self, view: &str) -> Vec<(i64, i64)> {
        let store = SqlRegistryStore::connect(&self.config.registry.database)
            .await
            .unwrap();
        store
            .intervals(NS, view)
            .await
            .unwrap()
            .iter()
            .map(|i| (i.start_ms, i.end_ms))
            .collect()
    }

    fn snapshot(&self) -> larder::registry::RegistrySnapshot {
        larder::cli::load_snapshot(&self.config.serve.definitions, &self.config).unwrap()
    }

    /// Asks an in-process feature server, over HTTP, for `features` of
    /// drivers; returns Feast's JSON response.
    async fn serve(&self, features: &[&str], drivers: &[i64]) -> serde_json::Value {
        let store = larder::cli::open_store(&self.config).await.unwrap();
        let server = Arc::new(FeatureServer::new(
            self.snapshot(),
            store,
            ServingSettings {
                default_namespace: NS.into(),
                ..Default::default()
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(larder::serving::run(listener, server, async move {
            let _ = stopped.await;
        }));
        let response = reqwest::Client::new()
            .post(format!("http://{addr}/get-online-features"))
            .json(&json!({"features": features, "entities": {"driver_id": drivers}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        let _ = stop.send(());
        let _ = task.await;
        body
    }

    fn redis_keys(&self) -> usize {
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg("*")
            .query(&mut self.redis.conn())
            .unwrap();
        keys.len()
    }
}

fn incremental(end: &str) -> IncrementalArgs {
    IncrementalArgs {
        end: end.into(),
        ..Default::default()
    }
}

fn range(start: &str, end: &str) -> MaterializeArgs {
    MaterializeArgs {
        start: start.into(),
        end: end.into(),
        ..Default::default()
    }
}

fn only<'a>(reports: &'a [ViewReport], view: &str) -> &'a ViewReport {
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].view, view);
    &reports[0]
}

fn ms(report: &ViewReport) -> (i64, i64) {
    let m = |t: EventTime| t.seconds * 1000 + i64::from(t.nanos / 1_000_000);
    (m(report.start), m(report.end))
}

#[tokio::test]
async fn postgres_latest_values_are_served_and_reruns_never_go_back() {
    let w = World::new(PG_DEFINITIONS).await;
    w.pg_exec(PG_ROWS).await;

    // First incremental run: no interval yet and no TTL, so from the epoch.
    // Only the online view with a source is materialized.
    let reports = materialize_incremental(&w.config, &incremental(E))
        .await
        .unwrap();
    let r = only(&reports, "driver_stats");
    assert_eq!((r.rows_read, r.rows_written), (3, 3), "{r:?}");
    assert_eq!(ms(r), (0, E_MS));
    assert_eq!(w.redis_keys(), 3);

    let refs = [
        "driver_stats:conv_rate",
        "driver_stats:trips",
        "driver_stats:city",
    ];
    let body = w.serve(&refs, &[1001, 1002, 1003, 1004]).await;
    let results = body["results"].as_array().unwrap();
    assert_eq!(
        results[1]["values"],
        json!([0.35, 0.6, null, 0.4]),
        "{body}"
    );
    assert_eq!(results[2]["values"], json!([4, null, null, 7]), "{body}");
    assert_eq!(
        results[3]["values"],
        json!(["Patras", "Volos", null, "Chania"]),
        "{body}"
    );
    assert_eq!(
        results[2]["statuses"],
        json!(["PRESENT", "NULL_VALUE", "NOT_FOUND", "PRESENT"]),
        "{body}"
    );
    assert_eq!(results[1]["event_timestamps"][0], "2024-05-01T11:00:00Z");
    assert_eq!(results[1]["event_timestamps"][3], "2024-05-01T12:00:00Z");

    // The same END again: up to date, nothing read, nothing recorded.
    let reports = materialize_incremental(&w.config, &incremental(E))
        .await
        .unwrap();
    let r = only(&reports, "driver_stats");
    assert_eq!((r.rows_read, r.rows_written, r.recorded), (0, 0, false));

    // A later END starts where the last run ended; no rows in (E, E2].
    let reports = materialize_incremental(&w.config, &incremental(E2))
        .await
        .unwrap();
    let r = only(&reports, "driver_stats");
    assert_eq!(ms(r), (E_MS, E2_MS));
    assert_eq!((r.rows_read, r.rows_written), (0, 0));

    // Everything again: the same rows are read, none is newer, so the
    // online store takes nothing.
    let reports = materialize(&w.config, &range("1970-01-01T00:00:00Z", E2))
        .await
        .unwrap();
    let r = only(&reports, "driver_stats");
    assert_eq!((r.rows_read, r.rows_written), (3, 0), "{r:?}");

    // An older row arriving late never replaces the newer value; a new
    // driver in the same interval is written.
    w.pg_exec(
        "INSERT INTO driver_stats VALUES
           (1001, '2024-05-01 07:00Z', now(), 9.9, 99, 'Late'),
           (1007, '2024-05-01 07:00Z', now(), 0.7, 70, 'Sparta')",
    )
    .await;
    let reports = materialize(
        &w.config,
        &range("2024-05-01T06:59:59Z", "2024-05-01T07:00:00Z"),
    )
    .await
    .unwrap();
    let r = only(&reports, "driver_stats");
    assert_eq!((r.rows_read, r.rows_written), (2, 1), "{r:?}");
    let body = w.serve(&refs, &[1001, 1007]).await;
    assert_eq!(body["results"][1]["values"], json!([0.35, 0.7]), "{body}");
    assert_eq!(body["results"][3]["values"], json!(["Patras", "Sparta"]));

    // Incremental starts at the latest end recorded (E2), not at the end of
    // the last interval appended (07:00).
    let reports = materialize_incremental(&w.config, &incremental(E3))
        .await
        .unwrap();
    let r = only(&reports, "driver_stats");
    assert_eq!(ms(r), (E2_MS, E3_MS));
    assert_eq!((r.rows_read, r.rows_written), (1, 1));
    let body = w.serve(&refs, &[1003]).await;
    assert_eq!(body["results"][3]["values"], json!(["Corfu"]));

    let seven = 1_714_546_800_000;
    assert_eq!(
        w.intervals("driver_stats").await,
        vec![
            (0, E_MS),
            (E_MS, E2_MS),
            (0, E2_MS),
            (seven - 1000, seven),
            (E2_MS, E3_MS)
        ]
    );
}

#[tokio::test]
async fn bad_arguments_and_views_are_refused_by_name() {
    let w = World::new(PG_DEFINITIONS).await;
    w.pg_exec(PG_ROWS).await;
    let e = materialize(&w.config, &range(E2, E)).await.unwrap_err();
    assert!(e.to_string().contains("must be before END"), "{e}");
    let e = materialize_incremental(&w.config, &incremental("tomorrow"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("\"tomorrow\""), "{e}");
    let mut args = incremental(E);
    args.views = vec!["driver_notes".into()];
    let e = materialize_incremental(&w.config, &args).await.unwrap_err();
    assert!(
        e.to_string().contains("driver_notes has no batch source"),
        "{e}"
    );
    args.views = vec!["kubeflow-alice/nope".into()];
    let e = materialize_incremental(&w.config, &args).await.unwrap_err();
    assert!(matches!(e, OfflineError::NotFound(_)), "{e}");
    args.views = vec!["driver_archive".into()];
    let e = materialize_incremental(&w.config, &args).await.unwrap_err();
    assert!(e.to_string().contains("not online"), "{e}");

    // A value that does not fit the declared type names view, column, row.
    w.pg_exec("ALTER TABLE driver_stats ALTER COLUMN city TYPE bigint USING 5")
        .await;
    let e = materialize_incremental(&w.config, &incremental(E))
        .await
        .unwrap_err();
    let text = e.to_string();
    for part in [
        "kubeflow-alice/driver_stats",
        "\"city\"",
        "driver_id=1001",
        "cannot be STRING",
    ] {
        assert!(text.contains(part), "{part} not in {text}");
    }
    assert!(matches!(e, OfflineError::Invalid(_)), "{e:?}");
    // Nothing recorded for a failed run.
    assert!(w.intervals("driver_stats").await.is_empty());
}

const SQLITE_DEFINITIONS: &str = r#"
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: driver, namespace: kubeflow-alice }
spec: { joinKeys: [{ name: driver_id, valueType: INT64 }] }
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: lite_src, namespace: kubeflow-alice }
spec:
  type: sqlite
  table: driver_stats
  timestampField: event_timestamp
  createdTimestampField: created
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: lite_stats, namespace: kubeflow-alice }
spec:
  entities: [driver]
  source: lite_src
  features:
    - { name: conv_rate, valueType: DOUBLE }
    - { name: trips, valueType: INT32 }
    - { name: city, valueType: STRING }
    - { name: tags, valueType: STRING_LIST }
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: big_src, namespace: kubeflow-alice }
spec: { type: sqlite, table: big_values, timestampField: ts }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: big_fv, namespace: kubeflow-alice }
spec:
  entities: [driver]
  source: big_src
  features:
    - { name: trips, valueType: INT32 }
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: bad_time_src, namespace: kubeflow-alice }
spec: { type: sqlite, table: bad_times, timestampField: ts }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: bad_time_fv, namespace: kubeflow-alice }
spec:
  entities: [driver]
  source: bad_time_src
  features:
    - { name: trips, valueType: INT32 }
"#;

#[tokio::test]
async fn sqlite_latest_values_are_served() {
    let w = World::new(SQLITE_DEFINITIONS).await;
    // ISO 8601 text in several spellings, and epoch seconds.
    w.sqlite_exec(
        r#"
        CREATE TABLE driver_stats (driver_id INTEGER, event_timestamp TEXT, created TEXT,
                                   conv_rate REAL, trips INTEGER, city TEXT, tags TEXT);
        INSERT INTO driver_stats VALUES
          (1001, '2024-05-01 09:00:00', '2024-05-01 09:00:00', 0.1, 1, 'Athens', '["a"]'),
          (1001, '2024-05-01T11:00:00Z', '2024-05-01 11:00:00', 0.3, 3, 'Athens', '["b"]'),
          (1001, '2024-05-01 11:00:00+00:00', '2024-05-01 11:30:00', 0.35, 4, 'Patras', '["x","y"]'),
          (1001, '2024-05-01 11:00:00', NULL, 0.0, 0, 'Nowhere', NULL),
          (1002, '2024-05-01 08:00:00', NULL, 0.5, 5, 'Volos', NULL),
          (1002, '2024-05-01 10:00:00.250', NULL, 0.6, NULL, 'Volos', NULL),
          (1003, '2024-05-02 00:00:00', NULL, 0.9, 9, 'Corfu', NULL),
          (1004, 1714564800, NULL, 0.4, 7, 'Chania', '[]');
        CREATE TABLE big_values (driver_id INTEGER, ts TEXT, trips INTEGER);
        INSERT INTO big_values VALUES (1001, '2024-05-01 09:00:00', 1),
                                      (1002, '2024-05-01 09:00:00', 5000000000);
        CREATE TABLE bad_times (driver_id INTEGER, ts TEXT, trips INTEGER);
        INSERT INTO bad_times VALUES (1001, 'yesterday', 1);
        "#,
    )
    .await;

    let mut args = incremental(E);
    args.views = vec!["lite_stats".into()];
    let reports = materialize_incremental(&w.config, &args).await.unwrap();
    let r = only(&reports, "lite_stats");
    assert_eq!((r.rows_read, r.rows_written), (3, 3), "{r:?}");

    let refs = [
        "lite_stats:conv_rate",
        "lite_stats:trips",
        "lite_stats:city",
        "lite_stats:tags",
    ];
    let body = w.serve(&refs, &[1001, 1002, 1003, 1004]).await;
    let results = body["results"].as_array().unwrap();
    assert_eq!(
        results[1]["values"],
        json!([0.35, 0.6, null, 0.4]),
        "{body}"
    );
    assert_eq!(results[2]["values"], json!([4, null, null, 7]), "{body}");
    assert_eq!(
        results[3]["values"],
        json!(["Patras", "Volos", null, "Chania"])
    );
    assert_eq!(results[4]["values"], json!([["x", "y"], null, null, []]));
    assert_eq!(
        results[1]["event_timestamps"],
        json!([
            "2024-05-01T11:00:00Z",
            "2024-05-01T10:00:00.250Z",
            "1970-01-01T00:00:00Z",
            "2024-05-01T12:00:00Z"
        ])
    );
    assert_eq!(w.intervals("lite_stats").await, vec![(0, E_MS)]);

    // Rerun over everything: nothing newer.
    let mut args = range("1970-01-01T00:00:00Z", E2);
    args.views = vec!["lite_stats".into()];
    let r = materialize(&w.config, &args).await.unwrap();
    assert_eq!((r[0].rows_read, r[0].rows_written), (4, 1), "{r:?}");

    // A value that does not fit INT32, named by view, column and row.
    args.views = vec!["big_fv".into()];
    let e = materialize(&w.config, &args).await.unwrap_err().to_string();
    for part in [
        "kubeflow-alice/big_fv",
        "\"trips\"",
        "driver_id=1002",
        "5000000000 does not fit in INT32",
    ] {
        assert!(e.contains(part), "{part} not in {e}");
    }
    // Event times SQLite cannot read are refused, not skipped.
    args.views = vec!["bad_time_fv".into()];
    let e = materialize(&w.config, &args).await.unwrap_err().to_string();
    assert!(e.contains("'yesterday'") && e.contains("bad_times"), "{e}");
}

fn driver_row(driver: i64, seconds: i64, conv: f64, city: &str) -> ViewRow {
    ViewRow {
        keys: vec![Value::Int64(driver)],
        event_time: EventTime {
            seconds,
            nanos: 250_000_000,
        },
        values: vec![
            Value::Double(conv),
            Value::Int32(driver as i32 % 100),
            Value::String(city.into()),
        ],
    }
}

const PUSH_DEFINITIONS: &str = r#"
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: driver, namespace: kubeflow-alice }
spec: { joinKeys: [{ name: driver_id, valueType: INT64 }] }
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: pushed_pg, namespace: kubeflow-alice }
spec:
  type: postgres
  table: pushed
  timestampField: event_timestamp
  createdTimestampField: created
  fieldMapping: { conv: conv_rate }
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: unkeyed_pg, namespace: kubeflow-alice }
spec: { type: postgres, table: unkeyed, timestampField: event_timestamp }
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: pushed_lite, namespace: kubeflow-alice }
spec: { type: sqlite, table: pushed, timestampField: event_timestamp, createdTimestampField: created }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: pushed_pg_fv, namespace: kubeflow-alice }
spec:
  entities: [driver]
  source: pushed_pg
  features:
    - { name: conv_rate, valueType: DOUBLE }
    - { name: trips, valueType: INT64 }
    - { name: city, valueType: STRING }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: pushed_lite_fv, namespace: kubeflow-alice }
spec:
  entities: [driver]
  source: pushed_lite
  features:
    - { name: conv_rate, valueType: DOUBLE }
    - { name: trips, valueType: INT64 }
    - { name: city, valueType: STRING }
"#;

#[tokio::test]
async fn append_rows_stores_a_replayed_batch_once() {
    let w = World::new(PUSH_DEFINITIONS).await;
    w.pg_exec(
        "CREATE TABLE pushed (driver_id bigint, event_timestamp timestamptz, created timestamptz,
                              conv double precision, trips bigint, city text,
                              PRIMARY KEY (driver_id, event_timestamp));
         CREATE TABLE unkeyed (driver_id bigint, event_timestamp timestamptz,
                               conv_rate double precision, trips bigint, city text);",
    )
    .await;
    w.sqlite_exec(
        "CREATE TABLE pushed (driver_id INTEGER, event_timestamp TEXT, created TEXT,
                              conv_rate REAL, trips INTEGER, city TEXT,
                              UNIQUE (driver_id, event_timestamp));",
    )
    .await;
    let snapshot = w.snapshot();
    let ns = snapshot.namespace(NS).unwrap();
    let store = OfflineStore::for_namespace(&w.config, NS).unwrap();
    let t = 1_714_550_400; // 2024-05-01T08:00:00Z
    let batch = vec![
        driver_row(1001, t, 0.1, "Athens"),
        driver_row(1002, t, 0.2, "Volos"),
        driver_row(1001, t + 60, 0.3, "Patras"),
    ];

    for (view, source, count_sql) in [
        ("pushed_pg_fv", "pushed_pg", "pg"),
        ("pushed_lite_fv", "pushed_lite", "sqlite"),
    ] {
        let view = &ns.views[view].view;
        let source = &ns.sources[source];
        assert_eq!(append_rows(&store, source, view, &batch).await.unwrap(), 3);
        // The replay inserts nothing; a batch with one new row inserts one.
        assert_eq!(append_rows(&store, source, view, &batch).await.unwrap(), 0);
        let mut more = batch.clone();
        more.push(driver_row(1003, t, 0.4, "Corfu"));
        assert_eq!(append_rows(&store, source, view, &more).await.unwrap(), 1);
        let count: i64 = if count_sql == "pg" {
            sqlx::query_scalar("SELECT count(*) FROM pushed")
                .fetch_one(&mut w.pg().await)
                .await
                .unwrap()
        } else {
            let pool = store.sqlite().await.unwrap();
            sqlx::query_scalar("SELECT count(*) FROM pushed")
                .fetch_one(&pool)
                .await
                .unwrap()
        };
        assert_eq!(count, 4, "{count_sql}");
        // A row of the wrong type is refused before anything is written.
        let mut bad = vec![driver_row(1009, t, 0.9, "X")];
        bad[0].values[2] = Value::Int64(5);
        let e = append_rows(&store, source, view, &bad)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("driver_id=1009") && e.contains("\"city\""),
            "{e}"
        );
    }

    // What was appended materializes: latest per driver, sub-second times
    // intact.
    let reports = materialize(&w.config, &range("2024-05-01T00:00:00Z", E))
        .await
        .unwrap();
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert_eq!((r.rows_read, r.rows_written), (3, 3), "{r:?}");
    }
    let body = w
        .serve(&["pushed_lite_fv:conv_rate", "pushed_pg_fv:city"], &[1001])
        .await;
    assert_eq!(body["results"][1]["values"], json!([0.3]));
    assert_eq!(body["results"][2]["values"], json!(["Patras"]));
    assert_eq!(
        body["results"][1]["event_timestamps"],
        json!(["2024-05-01T08:01:00.250Z"])
    );

    // A table without a unique key over (keys, event time) is refused.
    let unkeyed = &ns.sources["unkeyed_pg"];
    let e = append_rows(&store, unkeyed, &ns.views["pushed_pg_fv"].view, &batch)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no unique key"), "{e}");
}

/// A PostgreSQL role of the test's own, dropped at the end (after the
/// database that holds its grants).
struct Role(String);

impl Role {
    async fn create() -> Role {
        let name = format!(
            "larder_test_role_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        admin(&format!("CREATE ROLE {name} LOGIN")).await;
        Role(name)
    }
}

async fn admin(sql: &str) {
    let url = std::env::var("LARDER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
}

impl Drop for Role {
    fn drop(&mut self) {
        let sql = format!("DROP ROLE IF EXISTS {}", self.0);
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(admin(&sql));
        })
        .join();
    }
}

fn secret(dir: &Path, user: &str, password: &str) -> SecretUser {
    let file = dir.join(format!("{user}.password"));
    std::fs::write(&file, password).unwrap();
    SecretUser {
        username: user.into(),
        password_file: Some(file),
        password_env: None,
    }
}

#[tokio::test]
async fn reads_as_the_namespace_database_user() {
    let mut w = World::new(PG_DEFINITIONS).await;
    w.pg_exec(PG_ROWS).await;
    let role = Role::create().await;
    let user = secret(w.dir.path(), &role.0, "unused-with-trust");
    w.config.namespaces.insert(
        NS.into(),
        NamespaceConfig {
            database: Some(user),
            ..Default::default()
        },
    );
    let e = materialize_incremental(&w.config, &incremental(E))
        .await
        .unwrap_err();
    assert!(matches!(e, OfflineError::PermissionDenied(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("driver_stats") && text.contains(&role.0),
        "{text}"
    );
    w.pg_exec(&format!("GRANT SELECT ON driver_stats TO {}", role.0))
        .await;
    let reports = materialize_incremental(&w.config, &incremental(E))
        .await
        .unwrap();
    assert_eq!(only(&reports, "driver_stats").rows_written, 3);
    drop(w); // the database first, then the role
    drop(role);
}

#[tokio::test]
async fn writes_with_the_owning_namespace_redis_user() {
    let mut w = World::new(PG_DEFINITIONS).await;
    w.pg_exec(PG_ROWS).await;
    {
        let mut conn = w.redis.conn();
        for user in ["larder-kubeflow-alice", "larder-kubeflow-bob"] {
            acl_setuser(&mut conn, user, &shipped_acl(user, &format!("{user}-pw")));
        }
        acl_setuser(
            &mut conn,
            "larder-admin",
            &shipped_acl("larder-admin", "admin-pw"),
        );
        // The shared store (no credentials) can no longer get in: a write
        // that works went through Alice's user.
        acl_setuser(&mut conn, "default", &["off".into()]);
    }
    let admin_conn = || {
        redis::Client::open(format!(
            "redis://larder-admin:admin-pw@127.0.0.1:{}",
            w.redis.port
        ))
        .unwrap()
        .get_connection()
        .unwrap()
    };
    let dir = w.dir.path().to_path_buf();
    let as_user = |user: &str| NamespaceConfig {
        redis: Some(secret(&dir, user, &format!("{user}-pw"))),
        ..Default::default()
    };

    // Bob's user for Alice's namespace: Redis refuses (NOPERM).
    w.config
        .namespaces
        .insert(NS.into(), as_user("larder-kubeflow-bob"));
    let e = materialize_incremental(&w.config, &incremental(E))
        .await
        .unwrap_err();
    assert!(matches!(e, OfflineError::PermissionDenied(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("NOPERM") && text.contains("larder-kubeflow-bob"),
        "{text}"
    );
    assert!(w.intervals("driver_stats").await.is_empty());
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut admin_conn())
        .unwrap();
    assert!(keys.is_empty());

    // Alice's own user.
    w.config
        .namespaces
        .insert(NS.into(), as_user("larder-kubeflow-alice"));
    let reports = materialize_incremental(&w.config, &incremental(E))
        .await
        .unwrap();
    assert_eq!(only(&reports, "driver_stats").rows_written, 3);
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut admin_conn())
        .unwrap();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k.ends_with(b"kubeflow_alice")));

    // Without namespace credentials the shared store is used, and it
    // cannot get in.
    w.config.namespaces.clear();
    let e = materialize(&w.config, &range("1970-01-01T00:00:00Z", E))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("writing to the online store"), "{e}");
}

#[tokio::test]
async fn through_the_registry_api() {
    let w = World::new(PG_DEFINITIONS).await;
    w.pg_exec(PG_ROWS).await;
    let db = TestDb::new("sqlite").await;
    let store = SqlRegistryStore::connect(&db.url).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(larder::registry::api::run(
        listener,
        larder::registry::api::Registry::new(store),
        async move {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::new();
    let v1 = format!("{base}/apis/features.kubeflow.org/v1/namespaces/{NS}");
    for doc in PG_DEFINITIONS.split("\n---\n") {
        let value: serde_json::Value = serde_yaml::from_str(doc).unwrap();
        let resource = match value["kind"].as_str().unwrap() {
            "Entity" => "entities",
            "DataSource" => "datasources",
            _ => "featureviews",
        };
        let name = value["metadata"]["name"].as_str().unwrap();
        let status = http
            .put(format!("{v1}/{resource}/{name}"))
            .json(&value)
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "{resource}/{name}: {status}");
    }

    // Following the registry: definitions and intervals come from its API
    // (the definitions folder does not exist).
    let mut config = w.config.clone();
    config.serve.follow_registry = true;
    config.registry.url = base.clone();
    config.serve.definitions = w.dir.path().join("no-such-folder");
    config.registry.database = "sqlite:///nonexistent/never.db".into();
    let r = materialize_incremental(&config, &incremental(E))
        .await
        .unwrap();
    assert_eq!(only(&r, "driver_stats").rows_written, 3);
    let list: serde_json::Value = http
        .get(format!("{v1}/featureviews/driver_stats/materializations"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0]["start"], "1970-01-01T00:00:00Z", "{list}");
    assert_eq!(list["items"][0]["end"], E, "{list}");
    // --registry instead of following: the same, and it starts where the
    // interval recorded through the API ended.
    config.serve.follow_registry = false;
    let mut args = incremental(E2);
    args.from = DefinitionArgs {
        definitions: None,
        registry: Some(base.clone()),
    };
    let r = materialize_incremental(&config, &args).await.unwrap();
    assert_eq!(ms(only(&r, "driver_stats")), (E_MS, E2_MS));
    let _ = stop.send(());
}

#[tokio::test]
async fn the_binary_materializes_incrementally() {
    let w = World::new(PG_DEFINITIONS).await;
    w.pg_exec(PG_ROWS).await;
    let config_file = w.dir.path().join("config.yaml");
    std::fs::write(
        &config_file,
        format!(
            "serve:\n  definitions: {}\nregistry:\n  database: \"{}\"\nonline_store:\n  type: redis\n  redis:\n    url: {}\noffline_store:\n  postgres:\n    database: {}\n  batch_rows: 2\n",
            w.config.serve.definitions.display(),
            w.config.registry.database,
            w.config.online_store.redis.url,
            w.config.offline_store.postgres.database,
        ),
    )
    .unwrap();
    let now =
        larder::offline::materialize::rfc3339(EventTime::from_seconds(EventTime::now().seconds));
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_larder"))
            .arg("-c")
            .arg(&config_file)
            .args(["materialize-incremental", &now])
            .env_remove("LARDER_REGISTRY")
            .env_remove("LARDER_TOKEN")
            .env_remove("LARDER_TOKEN_FILE")
            .env_remove("LARDER_CONFIG")
            .output()
            .unwrap()
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 1003's row (2024-05-03) is before now as well.
    assert!(
        stdout.contains("kubeflow-alice/driver_stats: 4 rows read, 4 written"),
        "{stdout}"
    );
    assert_eq!(w.redis_keys(), 4);
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.contains("kubeflow-alice/driver_stats: up to date"),
        "{stdout}"
    );
    assert_eq!(w.intervals("driver_stats").await.len(), 1);
}
