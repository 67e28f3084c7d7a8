//! Test support: real Redis servers (standalone and a 3-node cluster)
//! started per test on free ports in temporary folders, and an in-process
//! larder feature server on a free port.

#![allow(dead_code)]

pub mod db;
pub mod jwt;
pub mod kafka;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use larder::definitions::parse_documents;
use larder::online::{OnlineStore, RedisSettings, RedisStore};
use larder::registry::RegistrySnapshot;
use larder::serving::{FeatureServer, ServingSettings};

pub fn redis_bin() -> String {
    std::env::var("LARDER_TEST_REDIS_BIN").unwrap_or_else(|_| "redis-server".into())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server process of this test's own; killed when dropped.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        let mut s = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new(redis_bin())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/services.sh installs it)");
        self.child = Some(child);
        wait_for_ping(self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    pub fn conn(&self) -> redis::Connection {
        self.client().get_connection().unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_for_ping(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    loop {
        if let Ok(mut c) = client.get_connection()
            && redis::cmd("PING").query::<String>(&mut c).is_ok()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "redis-server on port {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A real 3-node Redis Cluster (masters only), torn down when dropped.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr()).collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli must be installed");
        assert!(status.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &nodes {
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut n.conn())
                    .unwrap();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster did not become ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }
}

/// The golden fixture written by Feast 0.67.
pub fn golden() -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/feast-0.67-redis-golden.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes every field of the golden fixture into Redis, byte for byte as
/// Feast wrote it.
pub fn load_golden(conn: &mut impl redis::ConnectionLike) {
    for record in golden()["records"].as_array().unwrap() {
        let key = unhex(record["redis_key_hex"].as_str().unwrap());
        for f in record["hash_fields"].as_array().unwrap() {
            let field = unhex(f["field_hex"].as_str().unwrap());
            let value = unhex(f["value_hex"].as_str().unwrap());
            redis::cmd("HSET")
                .arg(&key)
                .arg(field)
                .arg(value)
                .query::<()>(conn)
                .unwrap();
        }
    }
}

/// Definitions matching the golden fixture (namespace kubeflow-alice, Feast
/// project kubeflow_alice), plus a view with a TTL for freshness tests.
pub const FIXTURE_DEFINITIONS: &str = r#"
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: driver, namespace: kubeflow-alice }
spec: { joinKeys: [{ name: driver_id, valueType: INT64 }] }
---
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: rider, namespace: kubeflow-alice }
spec: { joinKeys: [{ name: rider_name, valueType: STRING }] }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_daily_stats_fv, namespace: kubeflow-alice }
spec:
  entities: [driver]
  features:
    - { name: acc_rate, valueType: FLOAT }
    - { name: city, valueType: STRING }
    - { name: trips, valueType: INT64 }
    - { name: rating, valueType: INT32 }
    - { name: active, valueType: BOOL }
    - { name: recent, valueType: DOUBLE_LIST }
    - { name: profit, valueType: DOUBLE }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_rider_fv, namespace: kubeflow-alice }
spec:
  entities: [driver, rider]
  features:
    - { name: rides_together, valueType: INT64 }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_hourly_fv, namespace: kubeflow-alice }
spec:
  entities: [driver]
  ttl: 1h
  features:
    - { name: conv_rate, valueType: DOUBLE }
    - { name: note, valueType: STRING }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_offline_fv, namespace: kubeflow-alice }
spec:
  entities: [driver]
  online: false
  features:
    - { name: lifetime_trips, valueType: INT64 }
---
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: legacy_driver, namespace: kubeflow-alice }
spec: { joinKeys: [{ name: driver_id, valueType: INT32 }] }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: legacy_driver_fv, namespace: kubeflow-alice }
spec:
  entities: [legacy_driver]
  features:
    - { name: legacy_score, valueType: INT32 }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureService
metadata: { name: driver_activity, namespace: kubeflow-alice }
spec:
  features:
    - driver_daily_stats_fv:profit
    - driver_daily_stats_fv:city
    - driver_hourly_fv:conv_rate
---
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: driver, namespace: kubeflow-bob }
spec: { joinKeys: [{ name: driver_id, valueType: INT64 }] }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: bob_scores_fv, namespace: kubeflow-bob }
spec:
  entities: [driver]
  features:
    - { name: score, valueType: INT32 }
"#;

pub fn fixture_snapshot() -> RegistrySnapshot {
    RegistrySnapshot::build(
        parse_documents("fixture.yaml", FIXTURE_DEFINITIONS).unwrap(),
        1,
        &Default::default(),
    )
    .unwrap()
}

pub fn redis_store(url: &str, timeout: Duration) -> OnlineStore {
    OnlineStore::Redis(
        RedisStore::new(RedisSettings {
            url: url.to_owned(),
            timeout,
            connect_timeout: timeout,
            ..Default::default()
        })
        .unwrap(),
    )
}

pub fn cluster_store(urls: Vec<String>) -> OnlineStore {
    OnlineStore::Redis(
        RedisStore::new(RedisSettings {
            cluster_nodes: urls,
            ..Default::default()
        })
        .unwrap(),
    )
}

/// An in-process feature server on a free port; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub server: Arc<FeatureServer>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(store: OnlineStore, settings: ServingSettings) -> Self {
        let server = Arc::new(FeatureServer::new(fixture_snapshot(), store, settings));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(larder::serving::run(listener, server.clone(), async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            server,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub fn fixture_settings() -> ServingSettings {
    ServingSettings {
        default_namespace: "kubeflow-alice".into(),
        ..ServingSettings::default()
    }
}

/// The rules of `user <name> ...` in deploy/redis/acl.conf, with the
/// password placeholder replaced.
pub fn shipped_acl(name: &str, password: &str) -> Vec<String> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/redis/acl.conf"),
    )
    .unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("user {name} ")))
        .unwrap_or_else(|| panic!("deploy/redis/acl.conf has no user {name}"));
    line.split_whitespace()
        .skip(2)
        .map(|r| {
            if r == ">CHANGE_ME" {
                format!(">{password}")
            } else {
                r.to_owned()
            }
        })
        .collect()
}

/// `ACL SETUSER name reset rules...`.
pub fn acl_setuser(conn: &mut redis::Connection, name: &str, rules: &[String]) {
    let mut cmd = redis::cmd("ACL");
    cmd.arg("SETUSER").arg(name).arg("reset");
    for r in rules {
        cmd.arg(r);
    }
    let _: () = cmd.query(conn).unwrap();
}
