//! `larder ingest`: a Kafka consumer group that writes a Kafka source's
//! messages to the online store and logs them to the offline store.
//!
//! Two tasks share the consumer:
//!
//! - the **reader** takes messages off the consumer, decodes each against
//!   the views that name the source, and gathers a batch until it holds
//!   `ingest.batch_messages` messages or `ingest.batch_linger` has passed
//!   since its first message;
//! - the **writer** takes one batch at a time: dead letters first (when the
//!   source has a dead-letter topic), then [`super::write::write_batch`] for
//!   each view, and only then commits the batch's offsets. A batch whose
//!   writes fail with a transient error (a store or the broker away) is
//!   retried with backoff and never committed before it succeeds; any other
//!   failure stops ingestion without committing, so nothing is lost.
//!
//! While the writer writes one batch, the reader gathers the next (a channel
//! of one batch between them). Delivery is at least once: after a crash the
//! uncommitted messages are read again, and since online writes are
//! newer-only and offline appends skip rows already stored, a replay changes
//! nothing. A message that cannot be decoded is counted, logged with its
//! partition and offset, sent to the dead-letter topic when there is one,
//! and its offset is committed with its batch: it never stops the consumer.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::decode::MessageDecoder;
use super::metrics::{IngestMetrics, PartitionLabels, ResultLabels, StoreLabels};
use super::write::write_batch;
use super::{IngestError, PushTo};
use crate::model::{EventTime, KafkaSource, StreamKind};
use crate::offline::OfflineStore;
use crate::online::{OnlineStore, ViewRow};
use crate::registry::{NamespaceDefs, RegistrySnapshot, ServedView};

/// Where a consumer starts when its group has no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest message the topic still holds.
    #[default]
    Earliest,
    /// Only messages produced after the consumer joined.
    Latest,
}

/// How `larder ingest` batches and talks to the broker.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// A batch is written once it holds this many messages...
    pub batch_messages: usize,
    /// ...or this long after its first message arrived.
    pub batch_linger: Duration,
    pub start_from: StartFrom,
    /// Extra librdkafka properties (security settings, timeouts), applied
    /// last.
    pub kafka_properties: BTreeMap<String, String>,
    /// How long SIGTERM waits for the batch being written before giving up
    /// on it (it is then read again at the next start).
    pub drain_timeout: Duration,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            batch_messages: 10_000,
            batch_linger: Duration::from_millis(100),
            start_from: StartFrom::Earliest,
            kafka_properties: BTreeMap::new(),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// What a run of the consumer did, when it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub messages: u64,
    pub malformed: u64,
    pub batches: u64,
    pub online_rows: u64,
    pub offline_rows: u64,
}

/// One Kafka source and the views it feeds, resolved against a snapshot.
pub struct Plan {
    pub namespace: String,
    pub source_name: String,
    pub kafka: KafkaSource,
    pub views: Vec<Arc<ServedView>>,
    defs_snapshot: Arc<RegistrySnapshot>,
}

impl Plan {
    /// Resolves Kafka source `source` of `namespace` and the feature views
    /// that name it as their stream source.
    pub fn resolve(
        snapshot: Arc<RegistrySnapshot>,
        namespace: &str,
        source: &str,
    ) -> Result<Plan, IngestError> {
        let defs = snapshot.namespace(namespace).ok_or_else(|| {
            IngestError::NotFound(format!("namespace {namespace} has no definitions"))
        })?;
        let stream = defs.stream_sources.get(source).ok_or_else(|| {
            IngestError::NotFound(format!(
                "no push or kafka source {source:?} in namespace {namespace}"
            ))
        })?;
        let StreamKind::Kafka(kafka) = &stream.kind else {
            return Err(IngestError::Invalid(format!(
                "{namespace}/{source} is a push source: rows reach it through the feature \
                 server's push API, not larder ingest"
            )));
        };
        let mut views: Vec<Arc<ServedView>> = defs
            .views
            .values()
            .filter(|v| v.view.stream_source.as_deref() == Some(source))
            .cloned()
            .collect();
        views.sort_by(|a, b| a.view.name.cmp(&b.view.name));
        if views.is_empty() {
            return Err(IngestError::Invalid(format!(
                "no feature view of namespace {namespace} names {source:?} as its streamSource"
            )));
        }
        Ok(Plan {
            namespace: namespace.to_owned(),
            source_name: source.to_owned(),
            kafka: kafka.clone(),
            views,
            defs_snapshot: snapshot.clone(),
        })
    }

    fn defs(&self) -> &NamespaceDefs {
        self.defs_snapshot
            .namespace(&self.namespace)
            .expect("resolved against this snapshot")
    }

    /// The consumer group: the source's, or `larder-<namespace>-<source>`.
    pub fn group(&self) -> String {
        self.kafka
            .consumer_group
            .clone()
            .unwrap_or_else(|| format!("larder-{}-{}", self.namespace, self.source_name))
    }
}

/// A message that could not be read, on its way to the dead-letter topic.
struct DeadLetter {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    error: String,
}

/// Messages read and decoded, waiting to be written and committed.
struct Batch {
    /// Rows per view, in the plan's view order.
    rows: Vec<Vec<ViewRow>>,
    dead: Vec<DeadLetter>,
    /// The next offset to commit, per partition.
    next_offsets: BTreeMap<i32, i64>,
    messages: usize,
}

impl Batch {
    fn new(views: usize) -> Batch {
        Batch {
            rows: vec![Vec::new(); views],
            dead: Vec::new(),
            next_offsets: BTreeMap::new(),
            messages: 0,
        }
    }
}

/// Runs the consumer until `shutdown` completes (then drains the batch in
/// hand and commits it) or a write fails for good.
pub async fn consume(
    plan: Plan,
    online: OnlineStore,
    offline: OfflineStore,
    settings: IngestSettings,
    metrics: Arc<IngestMetrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, IngestError> {
    let plan = Arc::new(plan);
    let consumer = Arc::new(consumer(&plan, &settings)?);
    consumer
        .subscribe(&[plan.kafka.topic.as_str()])
        .map_err(|e| {
            IngestError::Unavailable(format!("subscribing to {}: {e}", plan.kafka.topic))
        })?;
    let dead_letters = match &plan.kafka.dead_letter_topic {
        Some(_) => Some(producer(&plan, &settings)?),
        None => None,
    };
    tracing::info!(
        source = %format!("{}/{}", plan.namespace, plan.source_name),
        topic = %plan.kafka.topic,
        group = %plan.group(),
        views = %plan.views.iter().map(|v| v.view.name.as_str()).collect::<Vec<_>>().join(","),
        "ingesting"
    );
    let decoder = MessageDecoder::new(&plan.kafka, &plan.views);

    let (batches, mut queue) = mpsc::channel::<Batch>(1);
    let writer = {
        let plan = plan.clone();
        let consumer = consumer.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut summary = Summary::default();
            let mut committed = BTreeMap::new();
            while let Some(batch) = queue.recv().await {
                write_and_commit(
                    &plan,
                    &consumer,
                    dead_letters.as_ref(),
                    &online,
                    &offline,
                    &metrics,
                    batch,
                    &mut summary,
                    &mut committed,
                )
                .await?;
            }
            // Stopping: wait until the broker has the last offsets.
            if !committed.is_empty() {
                commit(&plan, &consumer, &committed, CommitMode::Sync, &metrics).await;
            }
            Ok::<Summary, IngestError>(summary)
        })
    };
    let watcher = tokio::spawn(watch_lag(plan.clone(), consumer.clone(), metrics.clone()));

    let mut shutdown = std::pin::pin!(shutdown);
    let mut batch = Batch::new(plan.views.len());
    let mut deadline: Option<tokio::time::Instant> = None;
    let (mut read, mut malformed) = (0u64, 0u64);
    let mut writer_gone = false;
    loop {
        let linger = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let full = tokio::select! {
            biased;
            () = &mut shutdown => {
                tracing::info!("stopping: writing the batch in hand, then committing");
                break;
            }
            () = linger => true,
            received = consumer.recv() => {
                match received {
                    Ok(message) => {
                        read += 1;
                        let partition = message.partition();
                        let offset = message.offset();
                        batch.next_offsets.insert(partition, offset + 1);
                        batch.messages += 1;
                        let decoded = match message.payload() {
                            Some(payload) => decoder.decode(payload).map_err(|e| e.0),
                            None => Err("the message has no payload".to_owned()),
                        };
                        match decoded {
                            Ok(rows) => {
                                metrics.messages.get_or_create(&ResultLabels { result: "ok" }).inc();
                                for (i, row) in rows.into_iter().enumerate() {
                                    batch.rows[i].push(row);
                                }
                            }
                            Err(error) => {
                                malformed += 1;
                                metrics.messages.get_or_create(&ResultLabels { result: "malformed" }).inc();
                                metrics.error("malformed");
                                tracing::warn!(
                                    topic = %plan.kafka.topic, partition, offset,
                                    error = %error,
                                    "skipping a malformed message"
                                );
                                if plan.kafka.dead_letter_topic.is_some() {
                                    batch.dead.push(DeadLetter {
                                        partition,
                                        offset,
                                        key: message.key().map(<[u8]>::to_vec),
                                        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                                        error,
                                    });
                                }
                            }
                        }
                        if deadline.is_none() {
                            deadline = Some(tokio::time::Instant::now() + settings.batch_linger);
                        }
                        batch.messages >= settings.batch_messages
                    }
                    Err(e) => {
                        metrics.error("broker");
                        tracing::warn!(error = %e, "reading from the broker failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        false
                    }
                }
            }
        };
        if full && batch.messages > 0 {
            let ready = std::mem::replace(&mut batch, Batch::new(plan.views.len()));
            deadline = None;
            if batches.send(ready).await.is_err() {
                writer_gone = true;
                break;
            }
        } else if full {
            deadline = None;
        }
    }
    if !writer_gone && batch.messages > 0 {
        let _ = batches.send(batch).await;
    }
    drop(batches);
    let result = match tokio::time::timeout(settings.drain_timeout, writer).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(IngestError::Failed(format!(
            "the writer task failed: {join}"
        ))),
        Err(_) => Err(IngestError::Unavailable(format!(
            "the batch in hand was not written within {:?}; it will be read again at the next start",
            settings.drain_timeout
        ))),
    };
    watcher.abort();
    let mut summary = result?;
    summary.messages = read;
    summary.malformed = malformed;
    Ok(summary)
}

fn consumer(plan: &Plan, settings: &IngestSettings) -> Result<StreamConsumer, IngestError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &plan.kafka.bootstrap_servers)
        .set("group.id", plan.group())
        .set("client.id", format!("larder-ingest-{}", plan.source_name))
        // Offsets are committed by the writer, after both stores took the
        // batch.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // How long the broker may hold a fetch when it has nothing new.
        // Kafka answers as soon as data arrives anyway; tansu holds every
        // fetch this long, so librdkafka's 500 ms would be the freshness.
        .set("fetch.wait.max.ms", "50")
        .set(
            "auto.offset.reset",
            match settings.start_from {
                StartFrom::Earliest => "earliest",
                StartFrom::Latest => "latest",
            },
        );
    for (k, v) in &settings.kafka_properties {
        config.set(k, v);
    }
    config.create().map_err(|e| {
        IngestError::Invalid(format!(
            "creating the Kafka consumer for {}: {e}",
            plan.kafka.bootstrap_servers
        ))
    })
}

fn producer(plan: &Plan, settings: &IngestSettings) -> Result<FutureProducer, IngestError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &plan.kafka.bootstrap_servers)
        .set(
            "client.id",
            format!("larder-dead-letters-{}", plan.source_name),
        )
        .set("message.timeout.ms", "10000");
    for (k, v) in &settings.kafka_properties {
        // Consumer-only properties would make the producer refuse to start.
        if !k.starts_with("group.") && !k.starts_with("auto.") && !k.starts_with("enable.auto") {
            config.set(k, v);
        }
    }
    config.create().map_err(|e| {
        IngestError::Invalid(format!(
            "creating the dead-letter producer for {}: {e}",
            plan.kafka.bootstrap_servers
        ))
    })
}

/// Writes one batch (retrying transient failures with backoff) and then
/// commits its offsets.
#[allow(clippy::too_many_arguments)]
async fn write_and_commit(
    plan: &Plan,
    consumer: &Arc<StreamConsumer>,
    dead_letters: Option<&FutureProducer>,
    online: &OnlineStore,
    offline: &OfflineStore,
    metrics: &IngestMetrics,
    batch: Batch,
    summary: &mut Summary,
    committed: &mut BTreeMap<i32, i64>,
) -> Result<(), IngestError> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut dead_sent = 0;
    loop {
        let attempt = async {
            if let (Some(producer), Some(topic)) = (dead_letters, &plan.kafka.dead_letter_topic) {
                for dead in &batch.dead[dead_sent..] {
                    send_dead_letter(producer, topic, &plan.kafka.topic, dead).await?;
                    dead_sent += 1;
                }
            }
            let mut written = Vec::with_capacity(plan.views.len());
            for (view, rows) in plan.views.iter().zip(&batch.rows) {
                written.push(
                    write_batch(
                        plan.defs(),
                        view,
                        rows,
                        // A view kept offline only (online: false) is
                        // logged, not served.
                        if view.view.online {
                            PushTo::OnlineAndOffline
                        } else {
                            PushTo::Offline
                        },
                        online,
                        Some(offline),
                    )
                    .await?,
                );
            }
            Ok::<_, IngestError>(written)
        };
        match attempt.await {
            Ok(written) => {
                let now = EventTime::now();
                for (w, rows) in written.iter().zip(&batch.rows) {
                    summary.online_rows += w.online as u64;
                    summary.offline_rows += w.offline;
                    metrics
                        .rows_written
                        .get_or_create(&StoreLabels { store: "online" })
                        .inc_by(w.online as u64);
                    metrics
                        .rows_written
                        .get_or_create(&StoreLabels { store: "offline" })
                        .inc_by(w.offline);
                    for row in rows {
                        metrics
                            .freshness
                            .observe(seconds_between(row.event_time, now));
                    }
                }
                break;
            }
            Err(e) if e.is_transient() => {
                metrics.error("write");
                tracing::warn!(
                    error = %e,
                    retry_in = ?backoff,
                    "writing a batch failed; retrying (its offsets stay uncommitted)"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                metrics.error("write");
                return Err(e);
            }
        }
    }
    metrics
        .batch_seconds
        .observe(started.elapsed().as_secs_f64());
    // The commit is sent without waiting for the broker's answer: the
    // writer goes on with the next batch. Commits of one consumer go out in
    // order, each covering everything before it; the last one is waited for
    // when the consumer stops (`commit_sync`). A commit that is lost only
    // means its batch is read again, and skipped by both stores.
    for (partition, next) in &batch.next_offsets {
        committed.insert(*partition, *next);
    }
    commit(
        plan,
        consumer,
        &batch.next_offsets,
        CommitMode::Async,
        metrics,
    )
    .await;
    summary.batches += 1;
    metrics.batches.inc();
    tracing::debug!(
        messages = batch.messages,
        malformed = batch.dead.len(),
        seconds = started.elapsed().as_secs_f64(),
        "batch written and committed"
    );
    Ok(())
}

/// Commits `offsets` (partition -> next offset) of the source's topic.
async fn commit(
    plan: &Plan,
    consumer: &Arc<StreamConsumer>,
    offsets: &BTreeMap<i32, i64>,
    mode: CommitMode,
    metrics: &IngestMetrics,
) {
    let mut list = TopicPartitionList::new();
    for (partition, next) in offsets {
        if let Err(e) =
            list.add_partition_offset(&plan.kafka.topic, *partition, Offset::Offset(*next))
        {
            metrics.error("commit");
            tracing::warn!(error = %e, "building the offset commit failed");
            return;
        }
    }
    let committer = consumer.clone();
    let result = tokio::task::spawn_blocking(move || committer.commit(&list, mode)).await;
    let error = match result {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    // The batch is stored; a failed commit only means it is read (and
    // skipped by both stores) again after a restart.
    metrics.error("commit");
    tracing::warn!(error = %error, "committing offsets failed; the batch may be read again");
}

async fn send_dead_letter(
    producer: &FutureProducer,
    topic: &str,
    source_topic: &str,
    dead: &DeadLetter,
) -> Result<(), IngestError> {
    let partition = dead.partition.to_string();
    let offset = dead.offset.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "larder-error",
            value: Some(dead.error.as_bytes()),
        })
        .insert(Header {
            key: "larder-topic",
            value: Some(source_topic.as_bytes()),
        })
        .insert(Header {
            key: "larder-partition",
            value: Some(partition.as_bytes()),
        })
        .insert(Header {
            key: "larder-offset",
            value: Some(offset.as_bytes()),
        });
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
        .payload(dead.payload.as_slice())
        .headers(headers);
    if let Some(key) = &dead.key {
        record = record.key(key.as_slice());
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map(|_| ())
        .map_err(|(e, _)| {
            IngestError::Unavailable(format!(
                "sending partition {} offset {} to dead-letter topic {topic}: {e}",
                dead.partition, dead.offset
            ))
        })
}

fn seconds_between(earlier: EventTime, later: EventTime) -> f64 {
    (later.seconds - earlier.seconds) as f64 + f64::from(later.nanos - earlier.nanos) / 1e9
}

/// Every few seconds: the lag of each assigned partition (its high
/// watermark minus the consumer's position), and a progress line.
async fn watch_lag(plan: Arc<Plan>, consumer: Arc<StreamConsumer>, metrics: Arc<IngestMetrics>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = (Instant::now(), 0u64);
    loop {
        tick.tick().await;
        let c = consumer.clone();
        let topic = plan.kafka.topic.clone();
        let lags = tokio::task::spawn_blocking(move || {
            let Ok(positions) = c.position() else {
                return Vec::new();
            };
            positions
                .elements()
                .iter()
                .filter(|e| e.topic() == topic)
                .filter_map(|e| {
                    let (_, high) = c
                        .fetch_watermarks(&topic, e.partition(), Duration::from_secs(2))
                        .ok()?;
                    let lag = match e.offset() {
                        Offset::Offset(position) => (high - position).max(0),
                        // Nothing read yet from this partition.
                        _ => return None,
                    };
                    Some((e.partition(), lag))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut total = 0;
        for (partition, lag) in &lags {
            total += lag;
            metrics
                .lag
                .get_or_create(&PartitionLabels {
                    topic: plan.kafka.topic.clone(),
                    partition: *partition,
                })
                .set(*lag);
        }
        let messages: u64 = ["ok", "malformed"]
            .iter()
            .map(|r| {
                metrics
                    .messages
                    .get_or_create(&ResultLabels { result: r })
                    .get()
            })
            .sum();
        let elapsed = last.0.elapsed().as_secs_f64();
        let rate = (messages - last.1) as f64 / elapsed.max(0.001);
        last = (Instant::now(), messages);
        if rate > 0.0 || total > 0 {
            tracing::info!(
                messages,
                per_second = rate.round() as u64,
                batches = metrics.batches.get(),
                lag = total,
                "progress"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The command.

/// `larder ingest --source NAME -n NS`.
#[derive(clap::Args, Debug, Clone)]
pub struct IngestArgs {
    /// The Kafka source (a DataSource of `type: kafka`) to consume.
    #[arg(long)]
    pub source: String,
    /// Its namespace.
    #[arg(long, short = 'n')]
    pub namespace: String,
    /// `/health` and `/metrics` on this address (overrides ingest.listen).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub from: crate::offline::materialize::DefinitionArgs,
}

/// Runs `larder ingest` until SIGTERM or Ctrl-C (then drains and commits)
/// or a write fails for good.
pub async fn run(config: &crate::config::Config, args: IngestArgs) -> Result<(), IngestError> {
    use crate::offline::materialize::{load_definitions, registry_url};
    let registry = registry_url(config, &args.from);
    let snapshot = load_definitions(config, &args.from, registry.as_deref())
        .await
        .map_err(|e| IngestError::Invalid(format!("loading definitions: {e}")))?;
    let plan = Plan::resolve(Arc::new(snapshot), &args.namespace, &args.source)?;
    let online = open_online_store(config, &args.namespace).await?;
    let offline = OfflineStore::for_namespace(config, &args.namespace)
        .map_err(|e| IngestError::Invalid(e.to_string()))?;
    let metrics = Arc::new(IngestMetrics::new());
    let listen = args.listen.unwrap_or(config.ingest.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| IngestError::Invalid(format!("binding {listen}: {e}")))?;
    tracing::info!(address = %listen, "serving /health and /metrics");
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(
        axum::serve(listener, routes(metrics.clone()))
            .with_graceful_shutdown(async {
                let _ = http_stopped.await;
            })
            .into_future(),
    );
    let started = Instant::now();
    let result = consume(
        plan,
        online,
        offline,
        config.ingest.settings(),
        metrics,
        crate::serving::shutdown_signal(),
    )
    .await;
    let _ = stop_http.send(());
    let _ = http.await;
    let summary = result?;
    println!(
        "{}/{}: {} messages ({} malformed) in {} batches, {} rows written online, {} logged offline, in {:.1}s",
        args.namespace,
        args.source,
        summary.messages,
        summary.malformed,
        summary.batches,
        summary.online_rows,
        summary.offline_rows,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The online store `namespace`'s views are written with: its own Redis
/// user when configured, else the shared store.
pub async fn open_online_store(
    config: &crate::config::Config,
    namespace: &str,
) -> Result<OnlineStore, IngestError> {
    let mut settings = config
        .namespace_redis_settings()
        .map_err(|e| IngestError::Invalid(e.to_string()))?;
    if let Some(s) = settings.remove(namespace) {
        if config.online_store.kind != crate::config::StoreKind::Redis {
            return Err(IngestError::Invalid(format!(
                "namespaces.{namespace}.redis credentials need online_store.type: redis"
            )));
        }
        return crate::online::RedisStore::new(s)
            .map(OnlineStore::Redis)
            .map_err(|e| IngestError::Invalid(format!("opening the online store: {e}")));
    }
    crate::cli::open_store(config)
        .await
        .map_err(|e| IngestError::Unavailable(format!("opening the online store: {e:#}")))
}

/// `/health` and `/metrics` of `larder ingest`.
pub fn routes(metrics: Arc<IngestMetrics>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
}
