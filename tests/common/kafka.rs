//! Kafka for ingestion tests: the local broker (tansu, started by
//! scripts/services.sh on 127.0.0.1:9092; `LARDER_TEST_KAFKA` overrides the
//! address), topics of each test's own that are deleted when it ends, and
//! kafka-python (a client that is not larder's) from the test venv.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn bootstrap() -> String {
    std::env::var("LARDER_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("an admin client")
}

/// Topics of this test's own (`<name>` and `<name>-dlq`), deleted when
/// dropped.
pub struct TestTopic {
    pub name: String,
    pub dead_letters: String,
}

impl TestTopic {
    pub async fn new(label: &str, partitions: i32) -> TestTopic {
        let name = format!(
            "larder-test-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dead_letters = format!("{name}-dlq");
        let topics = [
            NewTopic::new(&name, partitions, TopicReplication::Fixed(1)),
            NewTopic::new(&dead_letters, 1, TopicReplication::Fixed(1)),
        ];
        let results = admin()
            .create_topics(
                &topics,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "creating topics on the Kafka broker at {}: {e} (scripts/services.sh starts tansu)",
                    bootstrap()
                )
            });
        for r in results {
            r.unwrap_or_else(|(topic, e)| panic!("creating topic {topic}: {e}"));
        }
        TestTopic { name, dead_letters }
    }
}

impl Drop for TestTopic {
    fn drop(&mut self) {
        let names = [self.name.clone(), self.dead_letters.clone()];
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                    let _ = admin()
                        .delete_topics(
                            &refs,
                            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(5))),
                        )
                        .await;
                })
        })
        .join();
    }
}

/// The test venv's python, which has kafka-python (scripts/test.sh installs
/// it).
pub fn python() -> PathBuf {
    let venv = std::env::var("LARDER_VENV").unwrap_or_else(|_| "target/pyvenv".into());
    let venv = PathBuf::from(venv);
    let venv = if venv.is_absolute() {
        venv
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(venv)
    };
    venv.join("bin/python")
}

/// Runs a python program with kafka-python, failing the test when it fails.
pub fn run_python(program: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python().display()));
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends each payload (raw bytes, given as Python literals) to `topic`,
/// in order, with kafka-python, and waits until all are acknowledged.
pub fn produce_raw(topic: &str, payloads: &[String]) {
    let program = r#"
import sys, json
from kafka import KafkaProducer
bootstrap, topic, payloads = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
p = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all")
for payload in payloads:
    p.send(topic, payload.encode()).get(timeout=30)
p.flush()
p.close()
"#;
    let list = serde_json::to_string(payloads).unwrap();
    run_python(program, &[&bootstrap(), topic, &list]);
}

/// Every message of `topic` from the start: (payload, headers) with
/// kafka-python, reading until `count` arrived (or 30 s passed).
pub fn consume_all(topic: &str, count: usize) -> Vec<(String, serde_json::Value)> {
    let program = r#"
import sys, json
from kafka import KafkaConsumer
bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = KafkaConsumer(topic, bootstrap_servers=bootstrap.split(","), auto_offset_reset="earliest",
                  enable_auto_commit=False, consumer_timeout_ms=30000)
out = []
for m in c:
    out.append([m.value.decode("utf-8", "replace"), {k: v.decode() for k, v in (m.headers or [])}])
    if len(out) >= count:
        break
c.close()
print(json.dumps(out))
"#;
    let text = run_python(program, &[&bootstrap(), topic, &count.to_string()]);
    let values: Vec<(String, serde_json::Value)> = serde_json::from_str(text.trim()).unwrap();
    values
}
