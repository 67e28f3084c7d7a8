//! Historical retrieval (`larder historical`) against the real local
//! PostgreSQL and SQLite files in temporary folders:
//!
//! 1. point-in-time correctness: random feature histories and entity rows,
//!    larder's training set against a brute-force reference, on both stores;
//! 2. the story: Bob builds a training set from Alice's tables with only the
//!    grants he has, as his own database user, through the library and the
//!    `larder` binary, and is refused (naming the table) where he has none;
//! 3. bad inputs, each refused with a message naming what was wrong.
//!
//! Every test creates its own database, roles and files and removes them,
//! even when it fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use futures::StreamExt as _;
use larder::config::Config;
use larder::definitions::parse_documents;
use larder::offline::historical::{
    self, ArrowBatches, EntityInput, FileSink, HistoricalArgs, HistoricalRequest, MemorySink,
};
use larder::offline::{OfflineError, OfflineStore};
use larder::registry::RegistrySnapshot;
use larder::serving::FeatureSelection;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

// ---------------------------------------------------------------------------
// PostgreSQL scratch databases and roles
// ---------------------------------------------------------------------------

fn admin_options() -> PgConnectOptions {
    let url = std::env::var("LARDER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    PgConnectOptions::from_str(&url).unwrap()
}

async fn admin_connect(database: Option<&str>) -> PgConnection {
    let mut options = admin_options();
    if let Some(db) = database {
        options = options.database(db);
    }
    PgConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("connecting to PostgreSQL: {e} (scripts/services.sh starts it)"))
}

async fn exec(conn: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A database of this test's own, and roles; all dropped when this is
/// dropped, even when the test fails.
struct PgScratch {
    database: String,
    roles: Vec<String>,
}

impl PgScratch {
    async fn new(tag: &str) -> PgScratch {
        let database = format!(
            "larder_t_{}_{tag}{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        exec(
            &mut admin_connect(None).await,
            &format!("CREATE DATABASE {database}"),
        )
        .await;
        PgScratch {
            database,
            roles: Vec::new(),
        }
    }

    /// Creates role `<database>_<name>`.
    async fn role(&mut self, name: &str, login: bool) -> String {
        let role = format!("{}_{name}", self.database);
        self.roles.push(role.clone());
        let kind = if login {
            "LOGIN PASSWORD 'not-checked-under-trust'"
        } else {
            "NOLOGIN"
        };
        exec(
            &mut admin_connect(None).await,
            &format!("CREATE ROLE {role} {kind}"),
        )
        .await;
        role
    }

    async fn connect(&self) -> PgConnection {
        admin_connect(Some(&self.database)).await
    }
}

impl Drop for PgScratch {
    fn drop(&mut self) {
        let mut statements = vec![format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.database
        )];
        statements.extend(
            self.roles
                .iter()
                .map(|r| format!("DROP ROLE IF EXISTS {r}")),
        );
        // From a thread of its own: the test's runtime may be gone.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let mut conn = admin_connect(None).await;
                    for s in statements {
                        let _ = sqlx::raw_sql(&s).execute(&mut conn).await;
                    }
                })
        })
        .join();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn snapshot(yaml: &str) -> RegistrySnapshot {
    RegistrySnapshot::build(
        parse_documents("test.yaml", yaml).unwrap(),
        1,
        &BTreeMap::new(),
    )
    .unwrap()
}

fn config(database: &str, sqlite: &Path, batch_rows: usize) -> Config {
    let mut config = Config::default();
    let admin = admin_options();
    config.offline_store.postgres.host = admin.get_host().to_owned();
    config.offline_store.postgres.port = admin.get_port();
    config.offline_store.postgres.database = database.to_owned();
    config.offline_store.sqlite.path = sqlite.to_owned();
    config.offline_store.batch_rows = batch_rows;
    config
}

async fn sqlite_connect(path: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true),
    )
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------
// Reading training sets back
// ---------------------------------------------------------------------------

/// Every value of column `name`, as text (None for a null).
fn column_text(batches: &[RecordBatch], name: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for batch in batches {
        let array = batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", batch.schema()));
        for i in 0..array.len() {
            if array.is_null(i) {
                out.push(None);
                continue;
            }
            out.push(Some(match array.data_type() {
                DataType::Int32 => array.as_primitive::<Int32Type>().value(i).to_string(),
                DataType::Int64 => array.as_primitive::<Int64Type>().value(i).to_string(),
                DataType::Float32 => array.as_primitive::<Float32Type>().value(i).to_string(),
                DataType::Float64 => array.as_primitive::<Float64Type>().value(i).to_string(),
                DataType::Utf8 => array.as_string::<i32>().value(i).to_owned(),
                DataType::Timestamp(TimeUnit::Microsecond, _) => array
                    .as_primitive::<TimestampMicrosecondType>()
                    .value(i)
                    .to_string(),
                other => panic!("column {name}: unexpected type {other}"),
            }));
        }
    }
    out
}

fn names(batches: &[RecordBatch]) -> Vec<String> {
    batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Point-in-time correctness against a brute-force reference
// ---------------------------------------------------------------------------

/// 2024-05-01T00:00:00Z.
const BASE: i64 = 1_714_521_600;
/// Event times are steps of 30 minutes; created times steps of 10.
const STEP: i64 = 1800;
const CREATED_STEP: i64 = 600;
const RIDERS: [&str; 3] = ["a", "b", "c"];
/// TTLs of `stats` (3h) and `pair` (2h), exact multiples of STEP, so that
/// entity times on the grid hit T - TTL exactly.
const STATS_TTL: i64 = 3 * 3600;
const PAIR_TTL: i64 = 2 * 3600;

fn definitions(kind: &str) -> String {
    format!(
        r#"
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: {{ name: driver, namespace: ns-a }}
spec: {{ joinKeys: [{{ name: driver_id, valueType: INT64 }}] }}
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: {{ name: stats_src, namespace: ns-a }}
spec: {{ type: {kind}, table: stats_src, timestampField: ts, createdTimestampField: created }}
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: {{ name: loc_src, namespace: ns-a }}
spec: {{ type: {kind}, table: loc_src, timestampField: ts }}
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: {{ name: stats, namespace: ns-a }}
spec:
  entities: [driver]
  ttl: 3h
  source: stats_src
  features: [{{ name: profit, valueType: DOUBLE }}, {{ name: trips, valueType: INT64 }}]
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: {{ name: loc, namespace: ns-a }}
spec:
  entities: [driver]
  source: loc_src
  features: [{{ name: lat, valueType: DOUBLE }}]
---
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: {{ name: driver, namespace: ns-b }}
spec: {{ joinKeys: [{{ name: driver_id, valueType: INT64 }}] }}
---
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: {{ name: rider, namespace: ns-b }}
spec: {{ joinKeys: [{{ name: rider, valueType: STRING }}] }}
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: {{ name: pair_src, namespace: ns-b }}
spec:
  type: {kind}
  table: pair_src
  timestampField: event_ts
  createdTimestampField: created
  fieldMapping: {{ driver: driver_id, rides_n: rides }}
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: {{ name: pair, namespace: ns-b }}
spec:
  entities: [rider, driver]
  ttl: 2h
  source: pair_src
  features: [{{ name: rides, valueType: INT32 }}, {{ name: note, valueType: STRING }}]
"#
    )
}

/// The refs asked for, in an order that is not the views' own.
const REFS: [&str; 5] = [
    "ns-b/pair:note",
    "stats:profit",
    "loc:lat",
    "stats:trips",
    "ns-b/pair:rides",
];
const OUTPUTS: [&str; 5] = [
    "pair__note",
    "stats__profit",
    "loc__lat",
    "stats__trips",
    "pair__rides",
];

/// One generated source row: keys, event time step, created step, whether
/// its value is null, whether it copies the previous row exactly.
#[derive(Debug, Clone)]
struct RowSpec {
    driver: i64,
    rider: usize,
    step: i64,
    created: Option<i64>,
    null_value: bool,
    duplicate: bool,
}

#[derive(Debug, Clone)]
struct EntitySpec {
    driver: i64,
    rider: usize,
    step: i64,
    /// Off the grid by 15 minutes.
    shifted: bool,
    duplicate: bool,
}

#[derive(Debug, Clone)]
struct Case {
    stats: Vec<RowSpec>,
    loc: Vec<RowSpec>,
    pair: Vec<RowSpec>,
    entities: Vec<EntitySpec>,
    /// Entity rows as Arrow batches (else as a CSV file).
    arrow: bool,
}

fn row_specs() -> impl Strategy<Value = Vec<RowSpec>> {
    prop::collection::vec(
        (
            0..4i64,
            0..3usize,
            0..12i64,
            prop::option::weighted(0.7, 0..3i64),
            prop::bool::weighted(0.15),
            prop::bool::weighted(0.15),
        )
            .prop_map(
                |(driver, rider, step, created, null_value, duplicate)| RowSpec {
                    driver,
                    rider,
                    step,
                    created,
                    null_value,
                    duplicate,
                },
            ),
        0..28,
    )
}

fn case() -> impl Strategy<Value = Case> {
    (
        row_specs(),
        row_specs(),
        row_specs(),
        prop::collection::vec(
            (
                0..5i64, // driver 4 has no rows anywhere
                0..3usize,
                0..15i64,
                prop::bool::weighted(0.2),
                prop::bool::weighted(0.15),
            )
                .prop_map(|(driver, rider, step, shifted, duplicate)| EntitySpec {
                    driver,
                    rider,
                    step,
                    shifted,
                    duplicate,
                }),
            1..24,
        ),
        any::<bool>(),
    )
        .prop_map(|(stats, loc, pair, entities, arrow)| Case {
            stats,
            loc,
            pair,
            entities,
            arrow,
        })
}

/// A source row as stored: keys, times in seconds, and its feature values
/// as text, in the view's feature order.
#[derive(Debug, Clone)]
struct Stored {
    driver: i64,
    rider: usize,
    ts: i64,
    created: Option<i64>,
    values: Vec<Option<String>>,
}

/// Turns specs into rows; `values(id, null)` gives a fresh row's values.
fn materialize(
    specs: &[RowSpec],
    values: impl Fn(i64, bool) -> Vec<Option<String>>,
) -> Vec<Stored> {
    let mut out: Vec<Stored> = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        if s.duplicate
            && let Some(last) = out.last()
        {
            out.push(last.clone());
            continue;
        }
        out.push(Stored {
            driver: s.driver,
            rider: s.rider,
            ts: BASE + s.step * STEP,
            created: s.created.map(|c| BASE + c * CREATED_STEP),
            values: values(i as i64 + 1, s.null_value),
        });
    }
    out
}

struct Histories {
    stats: Vec<Stored>,
    loc: Vec<Stored>,
    pair: Vec<Stored>,
    /// (driver, rider, time in seconds)
    entities: Vec<(i64, usize, i64)>,
}

fn histories(case: &Case) -> Histories {
    let mut entities: Vec<(i64, usize, i64)> = Vec::new();
    for e in &case.entities {
        if e.duplicate
            && let Some(last) = entities.last()
        {
            entities.push(*last);
            continue;
        }
        let shift = if e.shifted { 900 } else { 0 };
        entities.push((e.driver, e.rider, BASE + e.step * STEP + shift));
    }
    Histories {
        stats: materialize(&case.stats, |id, null| {
            vec![
                (!null).then(|| format!("{}", id as f64 + 0.25)),
                Some((id * 10).to_string()),
            ]
        }),
        // loc_src has no created column: its ties are all acceptable.
        loc: materialize(&case.loc, |id, _| {
            vec![Some(format!("{}", id as f64 + 0.5))]
        })
        .into_iter()
        .map(|r| Stored { created: None, ..r })
        .collect(),
        pair: materialize(&case.pair, |id, null| {
            vec![Some(id.to_string()), (!null).then(|| format!("n{id}"))]
        }),
        entities,
    }
}

/// A view's feature values in one row, as text.
type Tuple = Vec<Option<String>>;

/// The acceptable value tuples of a view for one entity row: those of
/// every best row (latest event time, then latest created, a null created
/// losing); a tuple of nulls when no row matches.
fn reference(
    rows: &[Stored],
    matches: impl Fn(&Stored) -> bool,
    t: i64,
    ttl: Option<i64>,
    width: usize,
) -> Vec<Vec<Option<String>>> {
    let candidates: Vec<&Stored> = rows
        .iter()
        .filter(|r| matches(r) && r.ts <= t && ttl.is_none_or(|ttl| r.ts >= t - ttl))
        .collect();
    let Some(best) = candidates.iter().map(|r| (r.ts, r.created)).max() else {
        return vec![vec![None; width]];
    };
    // Option's order puts None below every Some, as NULLS LAST wants.
    candidates
        .iter()
        .filter(|r| (r.ts, r.created) == best)
        .map(|r| r.values.clone())
        .collect()
}

fn sqlite_time(seconds: i64, form: i64) -> String {
    let micros = seconds * 1_000_000;
    let rfc = rfc3339(micros); // 2024-05-01T00:30:00Z
    match form % 3 {
        0 => rfc.replace('T', " ").replace('Z', ""),
        1 => rfc,
        // The same instant written two hours ahead with its offset.
        _ => rfc3339(micros + 7_200_000_000).replace('Z', ".000+02:00"),
    }
}

/// RFC 3339 in UTC, computed independently of larder.
fn rfc3339(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01, by counting.
    let (mut y, mut d) = (1970i64, days);
    loop {
        let len = if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
            366
        } else {
            365
        };
        if d < len {
            break;
        }
        d -= len;
        y += 1;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let months = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut m = 0;
    while d >= months[m] {
        d -= months[m];
        m += 1;
    }
    format!(
        "{y:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        m + 1,
        d + 1,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn sql_text(v: &Option<String>) -> String {
    v.as_ref().map_or("NULL".to_owned(), |s| {
        format!("'{}'", s.replace('\'', "''"))
    })
}

async fn load_postgres(database: &str, h: &Histories) {
    let mut conn = admin_connect(Some(database)).await;
    let mut sql = String::from(
        "DROP TABLE IF EXISTS stats_src, loc_src, pair_src;
         CREATE TABLE stats_src (driver_id bigint, ts timestamptz, created timestamp,
                                 profit double precision, trips bigint);
         CREATE TABLE loc_src (driver_id bigint, ts timestamptz, lat double precision);
         CREATE TABLE pair_src (driver bigint, rider text, event_ts timestamptz,
                                created timestamptz, rides_n integer, note text);",
    );
    let ts = |s: i64| format!("'{}'", rfc3339(s * 1_000_000));
    // `created` of stats_src is a timestamp without zone: read as UTC.
    let naive = |s: Option<i64>| {
        s.map_or("NULL".to_owned(), |s| {
            format!("'{}'", rfc3339(s * 1_000_000).replace(['T', 'Z'], " "))
        })
    };
    for r in &h.stats {
        sql.push_str(&format!(
            "INSERT INTO stats_src VALUES ({}, {}, {}, {}, {});",
            r.driver,
            ts(r.ts),
            naive(r.created),
            r.values[0].as_deref().unwrap_or("NULL"),
            r.values[1].as_deref().unwrap_or("NULL"),
        ));
    }
    for r in &h.loc {
        sql.push_str(&format!(
            "INSERT INTO loc_src VALUES ({}, {}, {});",
            r.driver,
            ts(r.ts),
            r.values[0].as_deref().unwrap_or("NULL"),
        ));
    }
    for r in &h.pair {
        sql.push_str(&format!(
            "INSERT INTO pair_src VALUES ({}, '{}', {}, {}, {}, {});",
            r.driver,
            RIDERS[r.rider],
            ts(r.ts),
            r.created.map_or("NULL".to_owned(), ts),
            r.values[0].as_deref().unwrap_or("NULL"),
            sql_text(&r.values[1]),
        ));
    }
    exec(&mut conn, &sql).await;
    conn.close().await.unwrap();
}

async fn load_sqlite(path: &Path, h: &Histories) {
    let mut conn = sqlite_connect(path).await;
    let mut sql = String::from(
        "DROP TABLE IF EXISTS stats_src; DROP TABLE IF EXISTS loc_src;
         DROP TABLE IF EXISTS pair_src;
         CREATE TABLE stats_src (driver_id INTEGER, ts TEXT, created TEXT, profit REAL,
                                 trips INTEGER);
         CREATE TABLE loc_src (driver_id INTEGER, ts TEXT, lat REAL);
         CREATE TABLE pair_src (driver INTEGER, rider TEXT, event_ts TEXT, created TEXT,
                                rides_n INTEGER, note TEXT);",
    );
    let text = |s: i64, form: usize| format!("'{}'", sqlite_time(s, form as i64));
    let created = |s: Option<i64>, form: usize| s.map_or("NULL".to_owned(), |s| text(s, form + 1));
    for (i, r) in h.stats.iter().enumerate() {
        sql.push_str(&format!(
            "INSERT INTO stats_src VALUES ({}, {}, {}, {}, {});",
            r.driver,
            text(r.ts, i),
            created(r.created, i),
            r.values[0].as_deref().unwrap_or("NULL"),
            r.values[1].as_deref().unwrap_or("NULL"),
        ));
    }
    for (i, r) in h.loc.iter().enumerate() {
        sql.push_str(&format!(
            "INSERT INTO loc_src VALUES ({}, {}, {});",
            r.driver,
            text(r.ts, i),
            r.values[0].as_deref().unwrap_or("NULL"),
        ));
    }
    for (i, r) in h.pair.iter().enumerate() {
        sql.push_str(&format!(
            "INSERT INTO pair_src VALUES ({}, '{}', {}, {}, {}, {});",
            r.driver,
            RIDERS[r.rider],
            text(r.ts, i),
            created(r.created, i),
            r.values[0].as_deref().unwrap_or("NULL"),
            sql_text(&r.values[1]),
        ));
    }
    sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// The entity rows as the case asks: Arrow batches (with an INT64 label)
/// or a CSV file (timestamps in two text forms).
fn entity_input(case: &Case, h: &Histories, dir: &Path) -> EntityInput {
    if case.arrow {
        let schema = Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("label", DataType::Int64, false),
            Field::new(
                "event_timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("rider", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(h.entities.iter().map(|e| e.0))),
                Arc::new(Int64Array::from_iter_values(0..h.entities.len() as i64)),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        h.entities.iter().map(|e| e.2 * 1_000_000),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from_iter_values(
                    h.entities.iter().map(|e| RIDERS[e.1]),
                )),
            ],
        )
        .unwrap();
        // Two batches, to cross a batch boundary.
        let half = batch.num_rows() / 2;
        let parts = vec![
            Ok(batch.slice(0, half)),
            Ok(batch.slice(half, batch.num_rows() - half)),
        ];
        EntityInput::Arrow(ArrowBatches {
            schema,
            batches: Box::new(parts.into_iter()),
        })
    } else {
        let path = dir.join("entities.csv");
        let mut text = String::from("driver_id,label,event_timestamp,rider\n");
        for (i, e) in h.entities.iter().enumerate() {
            let t = rfc3339(e.2 * 1_000_000);
            let t = if i % 2 == 0 {
                t
            } else {
                t.replace('T', " ").replace('Z', "")
            };
            text.push_str(&format!("{},{i},{t},{}\n", e.0, RIDERS[e.1]));
        }
        std::fs::write(&path, text).unwrap();
        EntityInput::File(path)
    }
}

/// Runs one case and compares with the reference.
async fn check_case(
    store: &OfflineStore,
    snap: &RegistrySnapshot,
    case: &Case,
    dir: &Path,
) -> Result<(), String> {
    let h = histories(case);
    let mut sink = MemorySink::default();
    let request = HistoricalRequest {
        namespace: "ns-a".into(),
        features: FeatureSelection::Refs(REFS.iter().map(|s| s.to_string()).collect()),
        entities: entity_input(case, &h, dir),
    };
    let rows = historical::retrieve(store, snap, request, &mut sink)
        .await
        .map_err(|e| format!("retrieve: {e}"))?;
    let n = h.entities.len();
    if rows != n as u64 || sink.rows != n as u64 {
        return Err(format!(
            "{rows} rows written, {} announced, {n} entity rows",
            sink.rows
        ));
    }
    let batches = &sink.batches;
    // batch_rows is 5: the rows come in batches of 5, the last one smaller.
    let sizes: Vec<usize> = batches.iter().map(RecordBatch::num_rows).collect();
    if sizes.iter().rev().skip(1).any(|&s| s != 5) || sizes.last().is_none_or(|&s| s == 0 || s > 5)
    {
        return Err(format!("batch sizes {sizes:?}"));
    }
    let expected_names: Vec<String> = ["driver_id", "label", "event_timestamp", "rider"]
        .iter()
        .chain(OUTPUTS.iter())
        .map(|s| s.to_string())
        .collect();
    if names(batches) != expected_names {
        return Err(format!("columns {:?}", names(batches)));
    }
    let drivers = column_text(batches, "driver_id");
    let labels = column_text(batches, "label");
    let times = column_text(batches, "event_timestamp");
    let riders = column_text(batches, "rider");
    let out: Vec<Vec<Option<String>>> = OUTPUTS.iter().map(|o| column_text(batches, o)).collect();
    for (i, &(driver, rider, t)) in h.entities.iter().enumerate() {
        let context = || format!("entity row {i} (driver {driver}, rider {rider}, t {t})");
        if drivers[i] != Some(driver.to_string())
            || labels[i] != Some(i.to_string())
            || times[i] != Some((t * 1_000_000).to_string())
            || riders[i].as_deref() != Some(RIDERS[rider])
        {
            return Err(format!(
                "{}: entity columns {:?} {:?} {:?} {:?}",
                context(),
                drivers[i],
                labels[i],
                times[i],
                riders[i]
            ));
        }
        let views: [(Vec<Tuple>, Tuple, &str); 3] = [
            (
                reference(&h.stats, |r| r.driver == driver, t, Some(STATS_TTL), 2),
                vec![out[1][i].clone(), out[3][i].clone()],
                "stats",
            ),
            (
                reference(&h.loc, |r| r.driver == driver, t, None, 1),
                vec![out[2][i].clone()],
                "loc",
            ),
            (
                reference(
                    &h.pair,
                    |r| r.driver == driver && r.rider == rider,
                    t,
                    Some(PAIR_TTL),
                    2,
                ),
                vec![out[4][i].clone(), out[0][i].clone()],
                "pair",
            ),
        ];
        for (acceptable, got, view) in views {
            if !acceptable.contains(&got) {
                return Err(format!(
                    "{}: view {view} gave {got:?}, the reference allows {acceptable:?}",
                    context()
                ));
            }
        }
    }
    Ok(())
}

fn run_property(kind: &str) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("offline.db");
    let scratch = (kind == "postgres").then(|| rt.block_on(PgScratch::new("pit")));
    let database = scratch.as_ref().map_or("", |s| s.database.as_str());
    let config = config(database, &sqlite, 5);
    let store = OfflineStore::for_namespace(&config, "ns-a").unwrap();
    let snap = snapshot(&definitions(kind));
    let mut runner = TestRunner::new(PropConfig {
        cases: 28,
        failure_persistence: None,
        ..PropConfig::default()
    });
    let started = Instant::now();
    let result = runner.run(&case(), |case| {
        rt.block_on(async {
            if kind == "postgres" {
                load_postgres(database, &histories(&case)).await;
            } else {
                load_sqlite(&sqlite, &histories(&case)).await;
            }
            check_case(&store, &snap, &case, dir.path()).await
        })
        .map_err(TestCaseError::fail)
    });
    eprintln!(
        "point-in-time property on {kind}: {:.2?}",
        started.elapsed()
    );
    drop(scratch);
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn point_in_time_matches_reference_on_postgres() {
    run_property("postgres");
}

#[test]
fn point_in_time_matches_reference_on_sqlite() {
    run_property("sqlite");
}

/// The reference itself, on a hand-made history: ties, TTL edges, nulls.
#[test]
fn reference_follows_the_rules() {
    let row = |ts: i64, created: Option<i64>, v: &str| Stored {
        driver: 1,
        rider: 0,
        ts,
        created,
        values: vec![Some(v.to_owned())],
    };
    let rows = vec![
        row(100, None, "a"),
        row(100, Some(5), "b"),
        row(100, Some(3), "c"),
        row(50, Some(9), "d"),
    ];
    let any = |_: &Stored| true;
    assert_eq!(
        reference(&rows, any, 100, None, 1),
        vec![vec![Some("b".into())]]
    );
    assert_eq!(
        reference(&rows, any, 99, None, 1),
        vec![vec![Some("d".into())]]
    );
    assert_eq!(
        reference(&rows, any, 150, Some(50), 1),
        vec![vec![Some("b".into())]]
    );
    assert_eq!(reference(&rows, any, 151, Some(50), 1), vec![vec![None]]);
    assert_eq!(reference(&rows, any, 49, None, 1), vec![vec![None]]);
    assert_eq!(rfc3339(BASE * 1_000_000), "2024-05-01T00:00:00Z");
    assert_eq!(sqlite_time(BASE, 2), "2024-05-01T02:00:00.000+02:00");
}

// ---------------------------------------------------------------------------
// 2. The story: Bob, his grants, his database user
// ---------------------------------------------------------------------------

const STORY: &str = r#"
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: driver, namespace: kubeflow-alice }
spec: { joinKeys: [{ name: driver_id, valueType: INT64 }] }
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: driver_daily_stats, namespace: kubeflow-alice }
spec:
  type: postgres
  schema: feature_data
  table: driver_daily_stats
  timestampField: event_timestamp
  createdTimestampField: created
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: driver_locations, namespace: kubeflow-alice }
spec:
  type: postgres
  schema: feature_data
  table: driver_locations
  timestampField: event_timestamp
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_daily_stats_fv, namespace: kubeflow-alice }
spec:
  entities: [driver]
  ttl: 1d
  source: driver_daily_stats
  features: [{ name: profit, valueType: DOUBLE }, { name: acc_rate, valueType: FLOAT }]
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_locations_fv, namespace: kubeflow-alice }
spec:
  entities: [driver]
  source: driver_locations
  features: [{ name: lat, valueType: DOUBLE }, { name: lon, valueType: DOUBLE }]
---
apiVersion: features.kubeflow.org/v1
kind: FeatureService
metadata: { name: driver_activity, namespace: kubeflow-alice }
spec: { features: ["driver_daily_stats_fv:profit", "driver_daily_stats_fv:acc_rate"] }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureService
metadata: { name: driver_everything, namespace: kubeflow-alice }
spec: { features: ["driver_daily_stats_fv:profit", "driver_locations_fv:lat"] }
"#;

/// The entity rows of the story and what Bob's training set holds for
/// them: (driver, time, trip, profit, acc_rate).
const STORY_ENTITIES: &str = "driver_id,event_timestamp,trip_id
1001,2024-05-02T10:00:00Z,t1
1002,2024-05-02 09:30:00,t2
1001,2024-04-30T00:00:00Z,t3
1003,2024-05-03T02:00:00+02:00,t4
1001,2024-05-03T00:00:01Z,t5
1001,2024-05-03T00:00:00Z,t6
1001,2024-05-02T10:00:00Z,t1
";

type StoryRow = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

const STORY_EXPECTED: [StoryRow; 7] = [
    // The later created row wins the tie at 2024-05-02.
    (
        "1001",
        "2024-05-02T10:00:00Z",
        "t1",
        Some("21"),
        Some("0.65"),
    ),
    // A created time beats a null one.
    (
        "1002",
        "2024-05-02T09:30:00Z",
        "t2",
        Some("31"),
        Some("0.75"),
    ),
    // Before any row.
    ("1001", "2024-04-30T00:00:00Z", "t3", None, None),
    // No rows for 1003.
    ("1003", "2024-05-03T00:00:00Z", "t4", None, None),
    // One second past the 1d TTL.
    ("1001", "2024-05-03T00:00:01Z", "t5", None, None),
    // Exactly at T - TTL.
    (
        "1001",
        "2024-05-03T00:00:00Z",
        "t6",
        Some("21"),
        Some("0.65"),
    ),
    (
        "1001",
        "2024-05-02T10:00:00Z",
        "t1",
        Some("21"),
        Some("0.65"),
    ),
];

struct Story {
    scratch: PgScratch,
    bob: String,
    dir: tempfile::TempDir,
}

impl Story {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A configuration file: Bob's namespace connects as Bob's role, its
    /// password from a file or, for `env`, a variable.
    fn config_file(&self, name: &str, env: bool) -> PathBuf {
        let admin = admin_options();
        let password = if env {
            "password_env: LARDER_T_BOB_PASSWORD".to_owned()
        } else {
            format!("password_file: {}", self.path("bob-password").display())
        };
        let text = format!(
            "serve:
  definitions: {defs}
offline_store:
  postgres:
    host: {host}
    port: {port}
    database: {db}
    user: postgres
  sqlite:
    path: {sqlite}
  batch_rows: 2
namespaces:
  kubeflow-bob:
    database:
      username: {bob}
      {password}
",
            defs = self.path("definitions").display(),
            host = admin.get_host(),
            port = admin.get_port(),
            db = self.scratch.database,
            sqlite = self.path("offline.db").display(),
            bob = self.bob,
        );
        let file = self.path(name);
        std::fs::write(&file, text).unwrap();
        file
    }
}

/// Alice's tables in schema feature_data, owned by an admin role; Bob may
/// use the schema and read driver_daily_stats, and create nothing.
async fn story() -> Story {
    let mut scratch = PgScratch::new("story").await;
    let admin = scratch.role("admin", false).await;
    let bob = scratch.role("bob", true).await;
    let mut conn = scratch.connect().await;
    exec(
        &mut conn,
        &format!(
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC;
             CREATE SCHEMA feature_data AUTHORIZATION {admin};
             REVOKE ALL ON SCHEMA feature_data FROM PUBLIC;
             GRANT USAGE ON SCHEMA feature_data TO {bob};
             SET ROLE {admin};
             CREATE TABLE feature_data.driver_daily_stats (
                 event_timestamp timestamptz NOT NULL, driver_id bigint NOT NULL,
                 profit double precision, acc_rate real, created timestamptz);
             CREATE TABLE feature_data.driver_locations (
                 driver_id bigint NOT NULL, lat double precision, lon double precision,
                 event_timestamp timestamptz NOT NULL);
             REVOKE ALL ON feature_data.driver_daily_stats, feature_data.driver_locations
                 FROM PUBLIC;
             INSERT INTO feature_data.driver_daily_stats VALUES
                 ('2024-05-01T00:00:00Z', 1001, 10, 0.5, '2024-05-01T01:00:00Z'),
                 ('2024-05-02T00:00:00Z', 1001, 20, 0.6, '2024-05-02T01:00:00Z'),
                 ('2024-05-02T00:00:00Z', 1001, 21, 0.65, '2024-05-02T02:00:00Z'),
                 ('2024-05-02T00:00:00Z', 1002, 30, 0.7, NULL),
                 ('2024-05-02T00:00:00Z', 1002, 31, 0.75, '2024-05-02T00:30:00Z'),
                 ('2024-05-03T12:00:00Z', 1001, 40, 0.8, '2024-05-03T12:00:00Z');
             INSERT INTO feature_data.driver_locations VALUES
                 (1001, 52.1, 4.3, '2024-05-02T08:00:00Z'),
                 (1002, 48.8, 2.3, '2024-05-01T08:00:00Z');
             CREATE INDEX ON feature_data.driver_daily_stats (driver_id, event_timestamp);
             GRANT SELECT ON feature_data.driver_daily_stats TO {bob};
             RESET ROLE;"
        ),
    )
    .await;
    // Bob creates nothing anywhere; TEMP is the database's default.
    let (create_db, create_public, create_data, temp): (bool, bool, bool, bool) =
        sqlx::query_as(&format!(
            "SELECT has_database_privilege('{bob}', current_database(), 'CREATE'),
                    has_schema_privilege('{bob}', 'public', 'CREATE'),
                    has_schema_privilege('{bob}', 'feature_data', 'CREATE'),
                    has_database_privilege('{bob}', current_database(), 'TEMP')"
        ))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!create_db && !create_public && !create_data && temp);
    conn.close().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("definitions")).unwrap();
    std::fs::write(dir.path().join("definitions/story.yaml"), STORY).unwrap();
    std::fs::write(dir.path().join("entities.csv"), STORY_ENTITIES).unwrap();
    std::fs::write(dir.path().join("bob-password"), "bob's secret\n").unwrap();
    Story { scratch, bob, dir }
}

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(path).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap()
    .collect::<Result<Vec<_>, _>>()
    .unwrap()
}

fn assert_story_batches(batches: &[RecordBatch]) {
    let schema = batches[0].schema();
    let types: Vec<(String, DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    assert_eq!(
        types,
        vec![
            ("driver_id".into(), DataType::Int64),
            (
                "event_timestamp".into(),
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            ),
            ("trip_id".into(), DataType::Utf8),
            ("driver_daily_stats_fv__profit".into(), DataType::Float64),
            ("driver_daily_stats_fv__acc_rate".into(), DataType::Float32),
        ]
    );
    let drivers = column_text(batches, "driver_id");
    let times = column_text(batches, "event_timestamp");
    let trips = column_text(batches, "trip_id");
    let profit = column_text(batches, "driver_daily_stats_fv__profit");
    let acc = column_text(batches, "driver_daily_stats_fv__acc_rate");
    assert_eq!(drivers.len(), STORY_EXPECTED.len());
    for (i, (driver, time, trip, p, a)) in STORY_EXPECTED.iter().enumerate() {
        assert_eq!(drivers[i].as_deref(), Some(*driver), "row {i}");
        let micros: i64 = times[i].as_deref().unwrap().parse().unwrap();
        assert_eq!(rfc3339(micros), *time, "row {i}");
        assert_eq!(trips[i].as_deref(), Some(*trip), "row {i}");
        assert_eq!(profit[i].as_deref(), *p, "row {i}");
        assert_eq!(acc[i].as_deref(), *a, "row {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_builds_a_training_set_with_his_own_grants() {
    let started = Instant::now();
    let story = story().await;
    let config = Config::load(Some(&story.config_file("larder.yaml", false))).unwrap();
    let snap = larder::cli::load_snapshot(&config.serve.definitions, &config).unwrap();
    let store = OfflineStore::for_namespace(&config, "kubeflow-bob").unwrap();
    assert_eq!(store.user(), story.bob);

    // Parquet, through the library, from a feature service of Alice's.
    let parquet_out = story.path("training.parquet");
    let mut sink = FileSink::new(&parquet_out, 1024).unwrap();
    let rows = historical::retrieve(
        &store,
        &snap,
        HistoricalRequest {
            namespace: "kubeflow-bob".into(),
            features: FeatureSelection::Service("kubeflow-alice/driver_activity".into()),
            entities: EntityInput::File(story.path("entities.csv")),
        },
        &mut sink,
    )
    .await
    .unwrap();
    sink.finish().unwrap();
    assert_eq!(rows, 7);
    let batches = read_parquet(&parquet_out);
    assert_story_batches(&batches);

    // CSV, through `larder historical`'s code path, from refs.
    let csv_out = story.path("training.csv");
    historical::run(
        &config,
        HistoricalArgs {
            features: vec![
                "kubeflow-alice/driver_daily_stats_fv:profit".into(),
                "kubeflow-alice/driver_daily_stats_fv:acc_rate".into(),
            ],
            feature_service: None,
            entities: Some(story.path("entities.csv")),
            entity_sql: None,
            output: csv_out.clone(),
            namespace: "kubeflow-bob".into(),
        },
    )
    .await
    .unwrap();
    let mut reader = csv::Reader::from_path(&csv_out).unwrap();
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "driver_id",
            "event_timestamp",
            "trip_id",
            "driver_daily_stats_fv__profit",
            "driver_daily_stats_fv__acc_rate"
        ]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), STORY_EXPECTED.len());
    for (record, (driver, time, trip, p, a)) in records.iter().zip(STORY_EXPECTED) {
        assert_eq!(
            record.iter().collect::<Vec<_>>(),
            [driver, time, trip, p.unwrap_or(""), a.unwrap_or("")]
        );
    }

    // Without a grant on driver_locations, Bob is refused, by name.
    let refused_out = story.path("refused.parquet");
    let err = historical::run(
        &config,
        HistoricalArgs {
            features: vec![
                "kubeflow-alice/driver_daily_stats_fv:profit".into(),
                "kubeflow-alice/driver_locations_fv:lat".into(),
            ],
            feature_service: None,
            entities: Some(story.path("entities.csv")),
            entity_sql: None,
            output: refused_out.clone(),
            namespace: "kubeflow-bob".into(),
        },
    )
    .await
    .unwrap_err();
    match &err {
        OfflineError::PermissionDenied(message) => {
            eprintln!("refused: {err}");
            assert!(message.contains("driver_locations"), "{message}");
            assert!(message.contains(&story.bob), "{message}");
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    let leftovers: Vec<_> = std::fs::read_dir(story.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("refused"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Entity rows from a query Bob may run, streamed as Arrow batches from
    // a task of its own (as the Flight endpoint does).
    fn assert_send<T: Send>(t: T) -> T {
        t
    }
    let set = assert_send(historical::record_batches(
        store.clone(),
        &snap,
        HistoricalRequest {
            namespace: "kubeflow-alice".into(),
            features: FeatureSelection::Refs(vec!["driver_daily_stats_fv:profit".into()]),
            entities: EntityInput::Sql(
                "SELECT driver_id, event_timestamp + interval '1 hour' AS event_timestamp, \
                 created FROM feature_data.driver_daily_stats \
                 WHERE created IS NOT NULL ORDER BY profit DESC;"
                    .into(),
            ),
        },
        2,
    ))
    .await
    .unwrap();
    assert_eq!(set.rows, 5);
    let batches: Vec<RecordBatch> = set
        .batches
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        names(&batches),
        [
            "driver_id",
            "event_timestamp",
            "created",
            "driver_daily_stats_fv__profit"
        ]
    );
    assert_eq!(
        column_text(&batches, "driver_daily_stats_fv__profit"),
        // Rows by profit, descending: 40, 31, 21, 20, 10 at their own
        // time plus an hour: each sees itself, except 20, which loses its
        // tie to 21 (created later).
        ["40", "31", "21", "21", "10"].map(|s| Some(s.to_owned()))
    );

    // The binary, end to end, with the password from a variable: refused
    // first, then Alice grants driver_locations and Bob reads it.
    let binary_config = story.config_file("larder-env.yaml", true);
    let everything_out = story.path("everything.parquet");
    let larder = |out: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_larder"))
            .arg("-c")
            .arg(&binary_config)
            .args([
                "historical",
                "--feature-service",
                "kubeflow-alice/driver_everything",
                "-n",
                "kubeflow-bob",
                "--entities",
            ])
            .arg(story.path("entities.csv"))
            .arg("-o")
            .arg(out)
            .env("LARDER_T_BOB_PASSWORD", "bob's secret")
            .output()
            .unwrap()
    };
    let refused = larder(&everything_out);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(stderr.contains("driver_locations"), "{stderr}");
    assert!(!everything_out.exists());

    let mut conn = story.scratch.connect().await;
    exec(
        &mut conn,
        &format!(
            "GRANT SELECT ON feature_data.driver_locations TO {}",
            story.bob
        ),
    )
    .await;
    conn.close().await.unwrap();
    let granted = larder(&everything_out);
    assert!(
        granted.status.success(),
        "{}",
        String::from_utf8_lossy(&granted.stderr)
    );
    // A warning (logs go to stderr) names the source without an index,
    // and only that one.
    let stderr = String::from_utf8_lossy(&granted.stderr);
    assert!(
        stderr.contains("driver_locations_fv") && stderr.contains("no index starts with"),
        "{stderr}"
    );
    assert!(!stderr.contains("driver_daily_stats_fv"), "{stderr}");
    let batches = read_parquet(&everything_out);
    assert_eq!(
        names(&batches),
        [
            "driver_id",
            "event_timestamp",
            "trip_id",
            "driver_daily_stats_fv__profit",
            "driver_locations_fv__lat"
        ]
    );
    assert_eq!(
        column_text(&batches, "driver_locations_fv__lat"),
        [
            Some("52.1"),
            Some("48.8"),
            None,
            None,
            Some("52.1"),
            Some("52.1"),
            Some("52.1")
        ]
        .map(|v| v.map(str::to_owned))
    );
    eprintln!("story: {:.2?}", started.elapsed());
}

// ---------------------------------------------------------------------------
// 3. Entity inputs on SQLite, and bad inputs
// ---------------------------------------------------------------------------

const SMALL: &str = r#"
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: driver, namespace: ns-a }
spec: { joinKeys: [{ name: driver_id, valueType: INT64 }] }
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: stats_src, namespace: ns-a }
spec: { type: sqlite, table: stats_src, timestampField: ts }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: stats, namespace: ns-a }
spec:
  entities: [driver]
  source: stats_src
  features: [{ name: profit, valueType: DOUBLE }, { name: seen, valueType: UNIX_TIMESTAMP }]
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: nosource, namespace: ns-a }
spec:
  entities: [driver]
  features: [{ name: x, valueType: DOUBLE }]
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: pg_src, namespace: ns-a }
spec: { type: postgres, table: t, timestampField: ts }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: pgview, namespace: ns-a }
spec:
  entities: [driver]
  source: pg_src
  features: [{ name: y, valueType: DOUBLE }]
"#;

/// A SQLite offline store with a few rows of stats_src.
async fn small_store() -> (tempfile::TempDir, Config, OfflineStore, RegistrySnapshot) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("offline.db");
    let mut conn = sqlite_connect(&db).await;
    sqlx::raw_sql(
        "CREATE TABLE stats_src (driver_id INTEGER, ts TEXT, profit REAL, seen TEXT);
         INSERT INTO stats_src VALUES
             (1, '2024-05-01 00:00:00', 1.5, '2024-04-30T12:00:00Z'),
             (1, '2024-05-02 00:00:00', 2.5, NULL),
             (2, '2024-05-01T06:00:00Z', 3.5, '2024-05-01 06:00:00');",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    std::fs::create_dir(dir.path().join("definitions")).unwrap();
    std::fs::write(dir.path().join("definitions/small.yaml"), SMALL).unwrap();
    let mut config = config("", &db, 10);
    config.serve.definitions = dir.path().join("definitions");
    let store = OfflineStore::for_namespace(&config, "ns-a").unwrap();
    (dir, config, store, snapshot(SMALL))
}

fn refs(refs: &[&str]) -> FeatureSelection {
    FeatureSelection::Refs(refs.iter().map(|s| s.to_string()).collect())
}

async fn build(
    store: &OfflineStore,
    snap: &RegistrySnapshot,
    features: FeatureSelection,
    entities: EntityInput,
) -> Result<Vec<RecordBatch>, OfflineError> {
    let mut sink = MemorySink::default();
    historical::retrieve(
        store,
        snap,
        HistoricalRequest {
            namespace: "ns-a".into(),
            features,
            entities,
        },
        &mut sink,
    )
    .await?;
    Ok(sink.batches)
}

#[tokio::test]
async fn sqlite_reads_parquet_and_query_entities() {
    let (dir, _config, store, snap) = small_store().await;

    // Parquet as pandas writes it: INT32 ids, text timestamps, a float
    // label, and the index as __index_level_0__ (skipped).
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int32, true),
        Field::new("event_timestamp", DataType::Utf8, true),
        Field::new("label", DataType::Float64, true),
        Field::new("__index_level_0__", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(arrow_array::Int32Array::from(vec![1, 2, 1, 9])),
            Arc::new(StringArray::from(vec![
                "2024-05-01T12:00:00Z",
                "2024-05-01 06:00:00",
                "2024-05-03T00:00:00+00:00",
                "2024-05-03T00:00:00Z",
            ])),
            Arc::new(arrow_array::Float64Array::from(vec![
                Some(0.5),
                None,
                Some(1.0),
                Some(2.0),
            ])),
            Arc::new(Int64Array::from(vec![0, 1, 2, 3])),
        ],
    )
    .unwrap();
    let path = dir.path().join("entities.parquet");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None)
            .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let batches = build(
        &store,
        &snap,
        refs(&["stats:seen", "stats:profit"]),
        EntityInput::File(path),
    )
    .await
    .unwrap();
    assert_eq!(
        names(&batches),
        [
            "driver_id",
            "event_timestamp",
            "label",
            "stats__seen",
            "stats__profit"
        ]
    );
    assert_eq!(batches[0].schema().field(0).data_type(), &DataType::Int64);
    assert_eq!(batches[0].schema().field(2).data_type(), &DataType::Float64);
    let seen: Vec<Option<String>> = column_text(&batches, "stats__seen");
    assert_eq!(
        seen,
        [
            Some(((BASE - 12 * 3600) * 1_000_000).to_string()),
            Some(((BASE + 6 * 3600) * 1_000_000).to_string()),
            None,
            None
        ]
    );
    assert_eq!(
        column_text(&batches, "stats__profit"),
        [Some("1.5"), Some("3.5"), Some("2.5"), None].map(|v| v.map(str::to_owned))
    );
    assert_eq!(
        column_text(&batches, "label"),
        [Some("0.5"), None, Some("1"), Some("2")].map(|v| v.map(str::to_owned))
    );

    // Entity rows as JSON columns (a Flight ticket's), as Arrow batches.
    let json: serde_json::Value = serde_json::json!({
        "driver_id": [2, 1],
        "event_timestamp": ["2024-05-01T07:00:00Z", "2024-05-01 00:00:00"],
        "weight": [0.5, 1],
    });
    let batches = build(
        &store,
        &snap,
        refs(&["stats:profit"]),
        EntityInput::Arrow(historical::json_columns(json.as_object().unwrap()).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(
        column_text(&batches, "stats__profit"),
        [Some("3.5"), Some("1.5")].map(|v| v.map(str::to_owned))
    );
    assert_eq!(
        column_text(&batches, "weight"),
        [Some("0.5"), Some("1")].map(|v| v.map(str::to_owned))
    );

    // Entity rows from a query, in its order.
    let batches = build(
        &store,
        &snap,
        refs(&["stats:profit"]),
        EntityInput::Sql(
            "SELECT driver_id, ts AS event_timestamp, 'k' || rowid AS key \
             FROM stats_src ORDER BY rowid DESC"
                .into(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        names(&batches),
        ["driver_id", "event_timestamp", "key", "stats__profit"]
    );
    assert_eq!(
        column_text(&batches, "key"),
        [Some("k3"), Some("k2"), Some("k1")].map(|v| v.map(str::to_owned))
    );
    assert_eq!(
        column_text(&batches, "stats__profit"),
        [Some("3.5"), Some("2.5"), Some("1.5")].map(|v| v.map(str::to_owned))
    );
    assert_eq!(
        column_text(&batches, "event_timestamp"),
        [BASE + 6 * 3600, BASE + 86_400, BASE].map(|s| Some((s * 1_000_000).to_string()))
    );
}

fn invalid(result: Result<Vec<RecordBatch>, OfflineError>) -> String {
    match result {
        Err(OfflineError::Invalid(m)) => {
            eprintln!("invalid: {m}");
            m
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn not_found(result: Result<Vec<RecordBatch>, OfflineError>) -> String {
    match result {
        Err(OfflineError::NotFound(m)) => {
            eprintln!("not found: {m}");
            m
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_inputs_are_refused_by_name() {
    let (dir, config, store, snap) = small_store().await;
    let csv = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        EntityInput::File(path)
    };
    let good = || {
        csv(
            "good.csv",
            "driver_id,event_timestamp\n1,2024-05-02T00:00:00Z\n",
        )
    };
    // The good input works, so the failures below are the inputs' own.
    build(&store, &snap, refs(&["stats:profit"]), good())
        .await
        .unwrap();

    let m = not_found(build(&store, &snap, refs(&["nope:profit"]), good()).await);
    assert!(m.contains("\"nope\"") && m.contains("ns-a"), "{m}");
    let m = not_found(build(&store, &snap, refs(&["stats:nope"]), good()).await);
    assert!(m.contains("\"nope\"") && m.contains("ns-a/stats"), "{m}");
    let m = not_found(
        build(
            &store,
            &snap,
            FeatureSelection::Service("nosuch".into()),
            good(),
        )
        .await,
    );
    assert!(m.contains("nosuch"), "{m}");
    let m = invalid(build(&store, &snap, refs(&["nosource:x"]), good()).await);
    assert!(
        m.contains("ns-a/nosource") && m.contains("no source"),
        "{m}"
    );
    let m = invalid(build(&store, &snap, refs(&["stats:profit", "pgview:y"]), good()).await);
    assert!(
        m.contains("different stores") && m.contains("pgview"),
        "{m}"
    );
    let m = invalid(
        build(
            &store,
            &snap,
            refs(&["stats:profit", "stats:profit"]),
            good(),
        )
        .await,
    );
    assert!(m.contains("twice"), "{m}");

    let m = invalid(
        build(
            &store,
            &snap,
            refs(&["stats:profit"]),
            csv(
                "nokey.csv",
                "event_timestamp,label\n2024-05-02T00:00:00Z,1\n",
            ),
        )
        .await,
    );
    assert!(m.contains("nokey.csv") && m.contains("driver_id"), "{m}");
    let m = invalid(
        build(
            &store,
            &snap,
            refs(&["stats:profit"]),
            csv("notime.csv", "driver_id\n1\n"),
        )
        .await,
    );
    assert!(m.contains("event_timestamp"), "{m}");
    let m = invalid(
        build(
            &store,
            &snap,
            refs(&["stats:profit"]),
            csv(
                "badtime.csv",
                "driver_id,event_timestamp\n1,2024-05-01T00:00:00Z\n2,2024-05-01 00:00:00\n\
                 1,2024-13-45 00:00:00\n",
            ),
        )
        .await,
    );
    assert!(
        m.contains("badtime.csv row 3")
            && m.contains("event_timestamp")
            && m.contains("2024-13-45"),
        "{m}"
    );
    let m = invalid(
        build(
            &store,
            &snap,
            refs(&["stats:profit"]),
            csv(
                "badkey.csv",
                "driver_id,event_timestamp\n1,2024-05-01T00:00:00Z\nabc,2024-05-01T00:00:00Z\n",
            ),
        )
        .await,
    );
    assert!(
        m.contains("row 2") && m.contains("driver_id") && m.contains("abc"),
        "{m}"
    );
    let m = invalid(build(&store, &snap, refs(&["stats:profit"]), csv("e.json", "{}")).await);
    assert!(
        m.contains("e.json") && m.contains("unsupported extension"),
        "{m}"
    );
    let m = invalid(
        build(
            &store,
            &snap,
            refs(&["stats:profit"]),
            EntityInput::Sql("SELECT 1 AS driver_id".into()),
        )
        .await,
    );
    assert!(
        m.contains("entity query") && m.contains("event_timestamp"),
        "{m}"
    );
    let m = invalid(
        build(
            &store,
            &snap,
            refs(&["stats:profit"]),
            EntityInput::Sql(
                "SELECT 1 AS driver_id, '2024-05-01' AS event_timestamp \
                 UNION ALL SELECT 2, 'soon'"
                    .into(),
            ),
        )
        .await,
    );
    assert!(m.contains("row 2") && m.contains("\"soon\""), "{m}");

    // `larder historical`: a bad output extension is refused before any
    // work (the definitions folder here does not even exist), and a failed
    // run leaves no output behind.
    let args = |output: &str, entities: &str| HistoricalArgs {
        features: vec!["stats:profit".into()],
        feature_service: None,
        entities: Some(dir.path().join(entities)),
        entity_sql: None,
        output: dir.path().join(output),
        namespace: "ns-a".into(),
    };
    let mut elsewhere = config.clone();
    elsewhere.serve.definitions = dir.path().join("missing");
    match historical::run(&elsewhere, args("out.xlsx", "good.csv")).await {
        Err(OfflineError::Invalid(m)) => {
            assert!(
                m.contains("out.xlsx") && m.contains(".parquet or .csv"),
                "{m}"
            )
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    match historical::run(&config, args("out.parquet", "badtime.csv")).await {
        Err(OfflineError::Invalid(m)) => assert!(m.contains("row 3"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    let outputs: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("out."))
        .collect();
    assert!(outputs.is_empty(), "{outputs:?}");
    historical::run(&config, args("out.parquet", "good.csv"))
        .await
        .unwrap();
    assert!(dir.path().join("out.parquet").exists());
}
