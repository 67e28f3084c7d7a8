//! Stream ingestion end to end: the `larder ingest` binary against the real
//! Kafka broker (tansu), a Redis of each test's own and a PostgreSQL
//! database of each test's own; messages produced by kafka-python (not
//! larder's code), including the story's producer in examples/.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::db::TestDb;
use common::kafka::{TestTopic, bootstrap, consume_all, produce_raw, python};
use common::{RedisServer, free_port};
use larder::auth::UserInfo;
use larder::model::{EventTime, Value};
use larder::serving::{FeatureSelection, FeatureServer, OnlineRequest, ServingSettings};
use sqlx::Connection;

const NS: &str = "kubeflow-charlie";

/// One test at a time, until its topics are deleted: with the tests of
/// this file running at once on tansu 0.6, kafka-python's producer in one
/// test timed out updating metadata (seen while another test's topics were
/// being deleted).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn definitions(topic: &TestTopic) -> String {
    format!(
        r#"
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: {{ name: driver, namespace: kubeflow-charlie }}
spec: {{ joinKeys: [{{ name: driver_id, valueType: INT64 }}] }}
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: {{ name: driver_locations, namespace: kubeflow-charlie }}
spec: {{ type: postgres, table: driver_locations, timestampField: event_timestamp }}
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: {{ name: driver_locations_stream, namespace: kubeflow-charlie }}
spec:
  type: kafka
  bootstrapServers: {bootstrap}
  topic: {topic}
  timestampField: event_timestamp
  deadLetterTopic: {dlq}
  consumerGroup: {topic}-group
  batchSource: driver_locations
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: {{ name: driver_locations_fv, namespace: kubeflow-charlie }}
spec:
  entities: [driver]
  streamSource: driver_locations_stream
  features:
    - {{ name: lat, valueType: DOUBLE }}
    - {{ name: lon, valueType: DOUBLE }}
"#,
        bootstrap = bootstrap(),
        topic = topic.name,
        dlq = topic.dead_letters,
    )
}

const TABLE: &str = "CREATE TABLE driver_locations (
    driver_id bigint NOT NULL, event_timestamp timestamptz NOT NULL,
    lat double precision, lon double precision,
    PRIMARY KEY (driver_id, event_timestamp))";

/// A test's world: a folder (definitions, config), a PostgreSQL database
/// with the batch source table, a Redis, topics.
struct World {
    dir: tempfile::TempDir,
    pg: TestDb,
    _redis: RedisServer,
    topic: TestTopic,
    config: PathBuf,
    metrics_port: u16,
}

impl World {
    async fn new(label: &str, partitions: i32, batch_messages: usize) -> World {
        let dir = tempfile::tempdir().unwrap();
        let pg = TestDb::new("postgres").await;
        let redis = RedisServer::start();
        let topic = TestTopic::new(label, partitions).await;
        let defs = dir.path().join("definitions.yaml");
        std::fs::write(&defs, definitions(&topic)).unwrap();
        let metrics_port = free_port();
        let config = dir.path().join("larder.yaml");
        std::fs::write(
            &config,
            format!(
                "serve: {{ definitions: {defs} }}\n\
                 online_store: {{ type: redis, redis: {{ url: {redis} }} }}\n\
                 offline_store: {{ postgres: {{ database: {db} }} }}\n\
                 ingest: {{ listen: 127.0.0.1:{metrics_port}, batch_messages: {batch_messages}, batch_linger: 50ms,\n\
                   kafka: {{ session.timeout.ms: \"6000\", heartbeat.interval.ms: \"1000\" }} }}\n",
                defs = defs.display(),
                redis = redis.url(),
                db = pg.url.rsplit_once('/').unwrap().1,
            ),
        )
        .unwrap();
        let world = World {
            dir,
            pg,
            _redis: redis,
            topic,
            config,
            metrics_port,
        };
        world.sql(TABLE).await;
        world
    }

    async fn connect(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.pg.url).await.unwrap()
    }

    async fn sql(&self, sql: &str) {
        let mut c = self.connect().await;
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    }

    async fn offline_count(&self) -> (i64, i64) {
        let mut c = self.connect().await;
        sqlx::query_as(
            "SELECT count(*), count(DISTINCT (driver_id, event_timestamp)) FROM driver_locations",
        )
        .fetch_one(&mut c)
        .await
        .unwrap()
    }

    /// The latest offline row per driver: (driver, lat, lon, event time).
    async fn offline_latest(&self) -> Vec<(i64, f64, f64, EventTime)> {
        let mut c = self.connect().await;
        let rows: Vec<(i64, f64, f64, f64)> = sqlx::query_as(
            "SELECT DISTINCT ON (driver_id) driver_id, lat, lon, \
             extract(epoch FROM event_timestamp)::float8 \
             FROM driver_locations ORDER BY driver_id, event_timestamp DESC",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        rows.into_iter()
            .map(|(d, lat, lon, ts)| {
                let seconds = ts.floor();
                (
                    d,
                    lat,
                    lon,
                    EventTime {
                        seconds: seconds as i64,
                        nanos: ((ts - seconds) * 1e6).round() as i32 * 1000,
                    },
                )
            })
            .collect()
    }

    /// What the feature server serves for `drivers`: (lat, lon, event time).
    async fn online(&self, drivers: &[i64]) -> Vec<(Value, Value, EventTime)> {
        let mut config = larder::config::Config::load(Some(&self.config)).unwrap();
        config.serve.default_namespace = NS.into();
        let snapshot = larder::cli::load_snapshot(&config.serve.definitions, &config).unwrap();
        let store = larder::cli::open_store(&config).await.unwrap();
        let server = FeatureServer::new(snapshot, store, ServingSettings::default());
        let caller = Arc::new(UserInfo {
            name: "test".into(),
            groups: vec![],
        });
        let response = server
            .get_online_features(
                "test",
                &caller,
                OnlineRequest {
                    features: FeatureSelection::Refs(vec![
                        "driver_locations_fv:lat".into(),
                        "driver_locations_fv:lon".into(),
                    ]),
                    entities: vec![(
                        "driver_id".into(),
                        drivers.iter().map(|d| Value::Int64(*d)).collect(),
                    )],
                    full_feature_names: false,
                    namespace: Some(NS.into()),
                    untyped_integers: false,
                    request_data: Vec::new(),
                },
                None,
            )
            .await
            .unwrap();
        let (lat, lon) = (&response.columns[1], &response.columns[2]);
        (0..drivers.len())
            .map(|i| {
                (
                    response.value(&lat.values[i]).into_owned(),
                    response.value(&lon.values[i]).into_owned(),
                    lat.event_times[i],
                )
            })
            .collect()
    }

    /// Starts `larder ingest` for the Kafka source; its stdout and stderr
    /// go to files in the test folder.
    fn start_ingest(&self, run: usize) -> Ingest {
        let out = self.dir.path().join(format!("ingest-{run}.out"));
        let err = self.dir.path().join(format!("ingest-{run}.err"));
        let child = Command::new(env!("CARGO_BIN_EXE_larder"))
            .args(["-c"])
            .arg(&self.config)
            .args(["ingest", "--source", "driver_locations_stream", "-n", NS])
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let ingest = Ingest {
            child: Some(child),
            out,
            err,
            metrics: format!("http://127.0.0.1:{}/metrics", self.metrics_port),
        };
        ingest.wait_healthy(self.metrics_port);
        ingest
    }

    async fn wait_offline(&self, rows: i64, within: Duration, ingest: &mut Ingest) {
        let deadline = Instant::now() + within;
        loop {
            let (count, _) = self.offline_count().await;
            if count >= rows {
                assert_eq!(count, rows, "more rows offline than produced");
                return;
            }
            ingest.assert_running();
            assert!(
                Instant::now() < deadline,
                "only {count} of {rows} rows offline after {within:?}; ingest log:\n{}",
                ingest.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

struct Ingest {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
    metrics: String,
}

impl Ingest {
    fn wait_healthy(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "larder ingest did not serve /health; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        let mut s = String::new();
        for p in [&self.out, &self.err] {
            let _ = std::fs::File::open(p).and_then(|mut f| f.read_to_string(&mut s));
        }
        s
    }

    fn assert_running(&mut self) {
        if let Some(c) = &mut self.child
            && let Some(status) = c.try_wait().unwrap()
        {
            panic!("larder ingest exited ({status}); log:\n{}", self.log());
        }
    }

    async fn metrics(&self) -> String {
        reqwest::get(&self.metrics)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// SIGKILL: no draining, no commit.
    fn kill_9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then the exit status and stdout.
    fn terminate(&mut self) -> (std::process::ExitStatus, String) {
        let mut c = self.child.take().expect("running");
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return (
                    status,
                    std::fs::read_to_string(&self.out).unwrap_or_default(),
                );
            }
            assert!(Instant::now() < deadline, "larder ingest ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// A value of a Prometheus counter or gauge line (`name{labels} value`).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The `q` quantile of a Prometheus histogram, as the upper bound of the
/// bucket it falls in.
fn histogram_quantile(text: &str, name: &str, q: f64) -> f64 {
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    assert!(total > 0.0, "no observations of {name}");
    buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map(|b| b.0)
        .unwrap()
}

/// The story's producer (examples/produce_driver_locations.py, on
/// kafka-python) sends `ticks` locations for drivers 1001..=1005.
fn run_story_producer(topic: &str, ticks: u32, interval: f64) -> Child {
    Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/produce_driver_locations.py"))
        .args(["--bootstrap", &bootstrap(), "--topic", topic])
        .args(["--drivers", "5", "--ticks", &ticks.to_string()])
        .args(["--interval", &interval.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test venv's python (scripts/test.sh makes it)")
}

fn wait_producer(mut producer: Child) {
    let status = producer.wait().unwrap();
    let mut err = String::new();
    if let Some(mut e) = producer.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "the producer failed: {err}");
}

/// Online values equal the latest offline row of each driver.
async fn assert_online_is_latest_offline(world: &World) {
    let latest = world.offline_latest().await;
    assert_eq!(latest.len(), 5, "five drivers offline");
    let drivers: Vec<i64> = latest.iter().map(|l| l.0).collect();
    let online = world.online(&drivers).await;
    for ((driver, lat, lon, ts), (olat, olon, ots)) in latest.iter().zip(&online) {
        assert_eq!(*olat, Value::Double(*lat), "driver {driver}");
        assert_eq!(*olon, Value::Double(*lon), "driver {driver}");
        assert_eq!(*ots, *ts, "driver {driver}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_story_stream_is_online_within_a_second_and_logged_offline_once() {
    let _serial = SERIAL.lock().await;
    let world = World::new("story", 2, 1000).await;
    let mut ingest = world.start_ingest(1);
    // 5 drivers x 60 ticks, 50 ms apart: 300 messages over 3 s.
    let producer = run_story_producer(&world.topic.name, 60, 0.05);
    wait_producer(producer);
    world
        .wait_offline(300, Duration::from_secs(60), &mut ingest)
        .await;
    let (rows, distinct) = world.offline_count().await;
    assert_eq!((rows, distinct), (300, 300), "every message offline once");
    assert_online_is_latest_offline(&world).await;

    let metrics = ingest.metrics().await;
    assert_eq!(
        metric(&metrics, "larder_ingest_messages_total{result=\"ok\"}"),
        300.0,
        "{metrics}"
    );
    let median = histogram_quantile(&metrics, "larder_ingest_freshness_seconds", 0.5);
    assert!(
        median <= 1.0,
        "median freshness (event time to online write) is {median}s"
    );
    assert!(metric(&metrics, "larder_ingest_batches_total") >= 1.0);

    let (status, out) = ingest.terminate();
    assert!(status.success(), "exit {status}; log:\n{}", ingest.log());
    assert!(out.contains("300 messages (0 malformed)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_mid_stream_resumes_without_loss_or_duplicates() {
    let _serial = SERIAL.lock().await;
    let world = World::new("crash", 2, 100).await;
    let mut ingest = world.start_ingest(1);
    // 5 drivers x 400 ticks, 10 ms apart: 2000 messages over 4+ s.
    let producer = run_story_producer(&world.topic.name, 400, 0.01);
    // Kill as soon as some batches are stored and committed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_kill = loop {
        let (count, _) = world.offline_count().await;
        if count >= 200 {
            break count;
        }
        ingest.assert_running();
        assert!(
            Instant::now() < deadline,
            "nothing ingested; log:\n{}",
            ingest.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    ingest.kill_9();
    let killed_at = Instant::now();
    assert!(at_kill < 2000, "the kill came after the stream ended");
    wait_producer(producer);
    let (after_kill, _) = world.offline_count().await;
    assert!(after_kill < 2000);
    // The killed member stays in the group until its session times out
    // (session.timeout.ms, 6 s here). tansu 0.6 gives a member that joins
    // before then no partitions and does not rebalance when the dead one
    // is dropped, so restart after the timeout, as a restarted pod would.
    tokio::time::sleep(
        (killed_at + Duration::from_secs(8)).saturating_duration_since(Instant::now()),
    )
    .await;

    let mut again = world.start_ingest(2);
    world
        .wait_offline(2000, Duration::from_secs(90), &mut again)
        .await;
    let (rows, distinct) = world.offline_count().await;
    assert_eq!(
        (rows, distinct),
        (2000, 2000),
        "every message offline exactly once"
    );
    assert_online_is_latest_offline(&world).await;
    let (status, _) = again.terminate();
    assert!(status.success(), "{}", again.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_never_overwrite_and_malformed_messages_are_skipped() {
    let _serial = SERIAL.lock().await;
    let world = World::new("late", 1, 1000).await;
    let mut ingest = world.start_ingest(1);
    let msg = |driver: i64, lat: f64, ts: &str| {
        format!(
            r#"{{"driver_id": {driver}, "lat": {lat}, "lon": 23.7, "event_timestamp": "{ts}"}}"#
        )
    };
    let payloads = vec![
        msg(1, 1.0, "2024-05-01T12:00:10Z"),
        // Older than what is online: logged offline, not served.
        msg(1, 2.0, "2024-05-01T12:00:05Z"),
        "not json at all".to_owned(),
        r#"{"driver_id": 1, "lat": "north", "lon": 23.7, "event_timestamp": "2024-05-01T12:00:20Z"}"#.to_owned(),
        r#"{"lat": 1.5, "lon": 23.7, "event_timestamp": "2024-05-01T12:00:20Z"}"#.to_owned(),
        msg(2, 3.0, "2024-05-01T12:00:00Z"),
    ];
    produce_raw(&world.topic.name, &payloads);
    world
        .wait_offline(3, Duration::from_secs(60), &mut ingest)
        .await;

    let online = world.online(&[1, 2]).await;
    assert_eq!(online[0].0, Value::Double(1.0), "the newer value stays");
    assert_eq!(online[0].2.seconds, 1_714_564_810);
    assert_eq!(
        online[1].0,
        Value::Double(3.0),
        "read past the malformed ones"
    );

    // A late event is still logged offline: training data is complete.
    let mut c = world.connect().await;
    let lats: Vec<(f64,)> = sqlx::query_as(
        "SELECT lat FROM driver_locations WHERE driver_id = 1 ORDER BY event_timestamp",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(lats, vec![(2.0,), (1.0,)]);

    let metrics = ingest.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "larder_ingest_messages_total{result=\"malformed\"}"
        ),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "larder_ingest_errors_total{kind=\"malformed\"}"),
        3.0
    );
    ingest.assert_running();
    let log = ingest.log();
    assert!(
        log.contains("partition=0 offset=2") && log.contains("not a JSON object"),
        "{log}"
    );
    assert!(log.contains("offset=3") && log.contains("\"lat\""), "{log}");
    assert!(
        log.contains("offset=4") && log.contains("\"driver_id\" is missing"),
        "{log}"
    );

    // The malformed messages went to the dead-letter topic, with where
    // they came from and why.
    let dead = consume_all(&world.topic.dead_letters, 3);
    assert_eq!(dead.len(), 3);
    assert_eq!(dead[0].0, "not json at all");
    assert_eq!(dead[0].1["larder-offset"], "2");
    assert_eq!(dead[0].1["larder-partition"], "0");
    assert_eq!(dead[0].1["larder-topic"], world.topic.name.as_str());
    assert!(
        dead[1].1["larder-error"]
            .as_str()
            .unwrap()
            .contains("\"lat\"")
    );
    assert_eq!(dead[2].1["larder-offset"], "4");

    let (status, out) = ingest.terminate();
    assert!(status.success(), "{}", ingest.log());
    assert!(out.contains("6 messages (3 malformed)"), "{out}");
}
