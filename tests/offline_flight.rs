//! The Arrow Flight endpoint as a notebook uses it: the shipped example
//! (examples/flight_training_set.py, pyarrow from the test venv) fetches a
//! training set with a real service-account token and gets exactly the
//! rows `larder historical` writes; no token and an unshared view are
//! refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::jwt;

const DEFINITIONS: &str = r#"
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: driver, namespace: kubeflow-alice }
spec: { joinKeys: [{ name: driver_id, valueType: INT64 }] }
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: driver_daily_stats, namespace: kubeflow-alice }
spec:
  type: sqlite
  table: driver_daily_stats
  timestampField: event_timestamp
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_daily_stats, namespace: kubeflow-alice }
spec:
  entities: [driver]
  source: driver_daily_stats
  features:
    - { name: acc_rate, valueType: DOUBLE }
    - { name: trips, valueType: INT64 }
"#;

fn python() -> PathBuf {
    std::env::var_os("LARDER_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python"))
}

fn larder() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_larder"));
    cmd.env("RUST_LOG", "warn");
    cmd
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the example; returns (success, stdout, stderr).
fn example(
    port: u16,
    token: Option<&str>,
    features: &str,
    entities: &Path,
    out: &Path,
) -> (bool, String, String) {
    let mut cmd = Command::new(python());
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/flight_training_set.py"))
        .args(["--location", &format!("grpc://127.0.0.1:{port}")])
        .args(["--features", features])
        .arg("--entities")
        .arg(entities)
        .arg("--out")
        .arg(out)
        .env_remove("LARDER_TOKEN_FILE");
    match token {
        Some(t) => cmd.env("LARDER_TOKEN", t),
        None => cmd.env_remove("LARDER_TOKEN"),
    };
    let output = cmd
        .output()
        .expect("the test venv's python (scripts/test.sh installs pyarrow and pandas)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_notebook_example_gets_what_the_cli_writes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Alice's history in the embedded offline store.
    let offline = root.join("offline.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", offline.display()))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE driver_daily_stats (driver_id INTEGER, event_timestamp TEXT, acc_rate REAL, trips INTEGER)",
    )
    .execute(&pool)
    .await
    .unwrap();
    for (driver, ts, acc, trips) in [
        (1001, "2024-05-01 00:00:00", 0.5, 10),
        (1001, "2024-05-02 00:00:00", 0.6, 11),
        (1001, "2024-05-03 00:00:00", 0.7, 12),
        (1002, "2024-05-01 12:00:00", 0.9, 3),
    ] {
        sqlx::query("INSERT INTO driver_daily_stats VALUES (?, ?, ?, ?)")
            .bind(driver)
            .bind(ts)
            .bind(acc)
            .bind(trips)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    std::fs::create_dir(root.join("definitions")).unwrap();
    std::fs::write(root.join("definitions/alice.yaml"), DEFINITIONS).unwrap();
    let entities = root.join("entities.csv");
    std::fs::write(
        &entities,
        "driver_id,event_timestamp\n1001,2024-05-02T12:00:00Z\n1002,2024-05-02T06:00:00Z\n1001,2024-05-04T00:00:00Z\n1003,2024-05-04T00:00:00Z\n",
    )
    .unwrap();

    let policy = jwt::story_policy();
    let auth = jwt::auth_config(root, policy.path());
    let config = root.join("larder.yaml");
    std::fs::write(
        &config,
        format!(
            "serve: {{ definitions: {defs} }}\n\
             offline_store: {{ sqlite: {{ path: {offline} }} }}\n\
             auth:\n  authentication: jwks\n  rbac_policy: [{policy}]\n  jwks: {{ file: {jwks}, issuer: {issuer} }}\n",
            defs = root.join("definitions").display(),
            offline = offline.display(),
            policy = policy.path().display(),
            jwks = auth.jwks.file.unwrap().display(),
            issuer = jwt::ISSUER,
        ),
    )
    .unwrap();

    let port = common::free_port();
    let mut server = Killed(
        larder()
            .args(["-c", config.to_str().unwrap(), "offline", "serve"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("larder offline serve exited: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the Flight endpoint did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let features = "kubeflow-alice/driver_daily_stats:acc_rate";
    let from_cli = root.join("cli.parquet");
    let cli = larder()
        .args(["-c", config.to_str().unwrap(), "historical"])
        .args(["--features", features, "driver_daily_stats:trips"])
        .arg("--entities")
        .arg(&entities)
        .arg("-o")
        .arg(&from_cli)
        .args(["-n", "kubeflow-alice"])
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );

    // Alice's notebook asks for the same over Flight.
    let from_flight = root.join("flight.parquet");
    let alice = jwt::token("kubeflow-alice", "default-editor");
    let mut cmd = Command::new(python());
    let out = cmd
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/flight_training_set.py"))
        .args(["--location", &format!("grpc://127.0.0.1:{port}")])
        .args([
            "--features",
            features,
            "kubeflow-alice/driver_daily_stats:trips",
        ])
        .arg("--entities")
        .arg(&entities)
        .arg("--out")
        .arg(&from_flight)
        .env("LARDER_TOKEN", &alice)
        .output()
        .expect("the test venv's python (scripts/test.sh installs pyarrow and pandas)");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // pandas printed the frame: the point-in-time values are there.
    assert!(said.contains("driver_daily_stats__acc_rate"), "{said}");

    // Row for row the same as the CLI's file, and point-in-time correct.
    let compare = Command::new(python())
        .arg("-c")
        .arg(
            "import sys, json, pyarrow.parquet as pq\n\
             a = pq.read_table(sys.argv[1]).to_pydict()\n\
             b = pq.read_table(sys.argv[2]).to_pydict()\n\
             print(json.dumps({k: [str(v) for v in vs] for k, vs in b.items()}))\n\
             sys.exit(0 if a == b else 1)",
        )
        .arg(&from_cli)
        .arg(&from_flight)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&compare.stdout).into_owned();
    assert!(
        compare.status.success(),
        "the Flight rows differ from the CLI's: {table}"
    );
    let table: serde_json::Value = serde_json::from_str(&table).unwrap();
    assert_eq!(
        table["driver_daily_stats__acc_rate"],
        serde_json::json!(["0.6", "0.9", "0.7", "None"]),
        "{table}"
    );
    assert_eq!(
        table["driver_id"],
        serde_json::json!(["1001", "1002", "1001", "1003"])
    );

    // No token, and a view Bob was not given.
    let (ok, _, err) = example(port, None, features, &entities, &root.join("x.parquet"));
    assert!(!ok);
    assert!(err.contains("nauthenticated"), "{err}");
    let bob = jwt::token("kubeflow-bob", "default-editor");
    let (ok, _, err) = example(
        port,
        Some(&bob),
        features,
        &entities,
        &root.join("y.parquet"),
    );
    assert!(!ok);
    assert!(
        err.contains("driver_daily_stats") && err.contains("kubeflow-bob"),
        "{err}"
    );
    let _ = server.0.kill();
}
