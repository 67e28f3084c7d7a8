//! `larder-load produce`: driver locations into a Kafka topic, as fast as
//! the broker takes them or at a constant rate, for `larder ingest`'s
//! benchmark (loadtest/ingest-bench.sh).
//!
//! Each message is a JSON object of five fields, `driver_id`, `lat`, `lon`,
//! `speed` and `event_timestamp` (the send time, RFC 3339 with
//! microseconds), keyed by the driver id. Drivers take turns, so with D
//! drivers every D-th message is the same driver's next location.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

#[derive(clap::Args, Clone)]
pub struct ProduceArgs {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long)]
    topic: String,
    /// Messages to send.
    #[arg(long)]
    messages: u64,
    /// Messages per second; 0: as fast as the broker takes them.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Distinct drivers.
    #[arg(long, default_value_t = 10_000)]
    drivers: u64,
    /// Create the topic with this many partitions first (an existing
    /// topic is left as it is).
    #[arg(long)]
    partitions: Option<i32>,
}

/// `larder-load delete-topics`: removes topics a benchmark made.
#[derive(clap::Args, Clone)]
pub struct DeleteArgs {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    topics: Vec<String>,
}

/// Deletes the topics; ones that do not exist are skipped.
pub async fn delete_topics(args: DeleteArgs) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    if args.topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .create()
        .context("creating the Kafka admin client")?;
    let names: Vec<&str> = args.topics.iter().map(String::as_str).collect();
    for r in admin
        .delete_topics(
            &names,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .context("deleting topics")?
    {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((t, e)) => eprintln!("deleting topic {t}: {e}"),
        }
    }
    Ok(())
}

/// Creates `topic` unless it exists.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating the Kafka admin client")?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .context("creating the topic")?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("creating topic {t}: {e}"),
        }
    }
    Ok(())
}

pub async fn run(args: ProduceArgs) -> Result<()> {
    if let Some(p) = args.partitions {
        create_topic(&args.bootstrap, &args.topic, p).await?;
    }
    tokio::task::spawn_blocking(move || produce(args)).await?
}

fn produce(args: ProduceArgs) -> Result<()> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("acks", "all")
        .create()
        .context("creating the Kafka producer")?;
    let started = Instant::now();
    let mut payload = String::with_capacity(160);
    for i in 0..args.messages {
        if args.rate > 0 {
            // Open loop: message i is due at i / rate seconds.
            let due = started + Duration::from_secs_f64(i as f64 / args.rate as f64);
            let now = Instant::now();
            if due > now {
                producer.poll(Duration::ZERO);
                std::thread::sleep(due - now);
            }
        }
        let driver = i % args.drivers;
        let tick = i / args.drivers;
        let now = time_text();
        payload.clear();
        use std::fmt::Write;
        let _ = write!(
            payload,
            r#"{{"driver_id": {driver}, "lat": {:.6}, "lon": {:.6}, "speed": {:.2}, "event_timestamp": "{now}"}}"#,
            37.9 + (driver % 100) as f64 * 0.001 + tick as f64 * 0.000_01,
            23.7 + (driver / 100 % 100) as f64 * 0.001,
            (tick % 90) as f64 + 0.5,
        );
        let key = driver.to_string();
        loop {
            match producer.send(BaseRecord::to(&args.topic).key(&key).payload(&payload)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e).context("producing"),
            }
        }
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flushing the producer")?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "produced {} messages to {} in {seconds:.2}s ({:.0} msgs/s)",
        args.messages,
        args.topic,
        args.messages as f64 / seconds
    );
    Ok(())
}

/// Now as RFC 3339 UTC with microseconds.
fn time_text() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let secs = d.as_secs() as i64;
    let micros = d.subsec_micros();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
