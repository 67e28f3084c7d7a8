//! `larder-load`: generates the load-test data set and drives feature
//! servers with it.
//!
//! - `generate`: N drivers x V views x F features into Redis in Feast's
//!   layout, plus larder manifests and a Feast feature repo for the same.
//! - `run`: one load run against a target, open loop (constant rate;
//!   latency measured from each request's intended send time, so a stalled
//!   server cannot hide behind a waiting client) or closed loop (fixed
//!   concurrency, for maximum throughput). Targets: larder or Feast gRPC
//!   (`grpc://host:port`), any Feast-style HTTP server
//!   (`http://host:port`), and the floor: the same Redis pipeline larder
//!   would send, issued directly through larder's own Redis reader (`redis://host:port`).
//!
//! - `produce`: driver locations into a Kafka topic, for `larder ingest`.
//!
//! Output: a human-readable line and a JSON summary in ghz's shape.

#![forbid(unsafe_code)]

mod dataset;
mod produce;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use prost::Message;

use dataset::Shape;
use larder::model::Value;
use larder::online::{KeyRead, OnlineStore, ReadCommand, RedisSettings, RedisStore, layout};
use larder::proto::feast::serving as pb;
use larder::proto::feast::types as pbt;

#[derive(Parser)]
#[command(
    name = "larder-load",
    about = "Load and data generator for feature servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the data set into Redis, and its definitions for larder and Feast.
    Generate {
        #[command(flatten)]
        shape: Shape,
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis: String,
        /// Where to write larder's manifests.
        #[arg(long)]
        manifests: Option<PathBuf>,
        /// Where to write a Feast feature repository for the same data.
        #[arg(long)]
        feast_repo: Option<PathBuf>,
        /// Only write definitions, not data.
        #[arg(long)]
        no_data: bool,
    },
    /// Drive one target with one request shape.
    Run(RunArgs),
    /// Send driver locations to a Kafka topic (for `larder ingest`).
    Produce(produce::ProduceArgs),
    /// Delete Kafka topics (a benchmark's own, when it ends).
    DeleteTopics(produce::DeleteArgs),
    /// Forward TCP connections to another address byte for byte and do
    /// nothing else: a server in the middle with no work, on the same
    /// one-thread runtime as `larder serve`. The floor run through it
    /// shows what the extra hop alone costs on this machine.
    Relay {
        /// Where to listen, host:port.
        #[arg(long)]
        listen: String,
        /// Where to forward each connection, host:port.
        #[arg(long)]
        to: String,
        /// Stop after this long.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        stop_after: Duration,
    },
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// grpc://host:port, http://host:port, or the floor: redis://host:port
    /// or unix:///path/to/redis.sock.
    #[arg(long)]
    target: String,
    #[command(flatten)]
    shape: Shape,
    /// Entity rows per request.
    #[arg(long, default_value_t = 1)]
    rows: usize,
    /// Features per request, taken in view order (fv_0:f0, fv_0:f1, ...).
    #[arg(long, default_value_t = 50)]
    request_features: usize,
    /// Open loop at this many requests per second.
    #[arg(long, conflicts_with = "concurrency")]
    rate: Option<u64>,
    /// Closed loop with this many requests in flight.
    #[arg(long)]
    concurrency: Option<usize>,
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Write the ghz-shaped JSON summary here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A name for this run in the output.
    #[arg(long, default_value = "")]
    label: String,
    /// For the redis:// floor: read with `hmget` (the listed fields) or
    /// `hgetall` (the whole hash).
    #[arg(long, default_value = "hmget", value_parser = ["hmget", "hgetall", "auto"])]
    read_command: String,
    /// gRPC connections to spread requests over (HTTP uses one per request
    /// in flight).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Send the namespace header (larder); Feast ignores it.
    #[arg(long, default_value_t = true)]
    namespace_header: bool,
    /// `features`: GetOnlineFeatures. `noop`: a request the server answers
    /// without touching its store (gRPC GetFeastServingInfo, HTTP GET
    /// /health): what the transport alone costs.
    #[arg(long, default_value = "features", value_parser = ["features", "noop"])]
    request: String,
}

fn main() -> Result<()> {
    // One runtime thread unless told otherwise: the load generator shares
    // the machine with the server under test and should take as little of
    // it as it can. The current-thread scheduler also queues a woken task
    // behind the ones already ready, so requests leave in batches.
    let threads: usize = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1);
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(cli_main())
}

async fn cli_main() -> Result<()> {
    match Cli::parse().command {
        Command::Generate {
            shape,
            redis,
            manifests,
            feast_repo,
            no_data,
        } => {
            if let Some(path) = manifests {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&path, shape.manifests())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if let Some(dir) = feast_repo {
                shape.write_feast_repo(&dir, &redis)?;
            }
            if !no_data {
                shape.load(&redis).await?;
            }
            Ok(())
        }
        Command::Run(args) => run(args).await,
        Command::Produce(args) => produce::run(args).await,
        Command::DeleteTopics(args) => produce::delete_topics(args).await,
        Command::Relay {
            listen,
            to,
            stop_after,
        } => match tokio::time::timeout(stop_after, relay(&listen, &to)).await {
            Ok(result) => result,
            Err(_) => Ok(()),
        },
    }
}

/// Accept connections on `listen` and copy bytes both ways between each
/// and a new connection to `to`, with Nagle off on both.
async fn relay(listen: &str, to: &str) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    eprintln!("relaying {} to {to}", listener.local_addr()?);
    loop {
        let (mut inbound, _) = listener.accept().await?;
        let to = to.to_owned();
        tokio::spawn(async move {
            let mut outbound = match tokio::net::TcpStream::connect(&to).await {
                Ok(outbound) => outbound,
                Err(e) => {
                    eprintln!("connecting to {to}: {e}");
                    return;
                }
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}

/// One request sender.
#[derive(Clone)]
enum Target {
    Grpc(h2::client::SendRequest<Bytes>, Arc<GrpcPaths>),
    Http(reqwest::Client, String),
    /// The floor: larder's own Redis reader, without a server around it.
    Redis(Arc<OnlineStore>, Arc<Vec<Vec<u8>>>),
}

/// What a request came back as: a status name, or an error message.
type Outcome = Result<&'static str, String>;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        // xorshift64*: fast, good enough to spread entity ids.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

struct Request {
    refs: Arc<Vec<String>>,
    /// The encoded `features` field (2) of a GetOnlineFeaturesRequest: the
    /// same for every request, so encoded once.
    features_field: Vec<u8>,
    args: Arc<RunArgs>,
}

impl Request {
    async fn send(&self, target: &mut Target, rng: &mut Rng) -> Outcome {
        let ids: Vec<i64> = (0..self.args.rows)
            .map(|_| rng.below(self.args.shape.entities) as i64)
            .collect();
        if self.args.request == "noop" {
            return noop(target).await;
        }
        match target {
            Target::Grpc(send, paths) => {
                let mut message = pb::GetOnlineFeaturesRequest {
                    kind: None,
                    entities: [(
                        "driver_id".to_string(),
                        pbt::RepeatedValue {
                            val: ids
                                .iter()
                                .map(|i| pbt::Value {
                                    val: Some(pbt::value::Val::Int64Val(*i)),
                                })
                                .collect(),
                        },
                    )]
                    .into(),
                    full_feature_names: true,
                    request_context: Default::default(),
                }
                .encode_to_vec();
                message.extend_from_slice(&self.features_field);
                grpc_unary(send, &paths.features, paths.namespace.as_ref(), &message).await
            }
            Target::Http(client, url) => {
                let body = serde_json::json!({
                    "features": self.refs.as_ref(),
                    "entities": {"driver_id": ids},
                    "full_feature_names": true,
                });
                let mut req = client
                    .post(url.as_str())
                    .header("content-type", "application/json")
                    .body(body.to_string());
                if self.args.namespace_header {
                    req = req.header("x-larder-namespace", &self.args.shape.namespace);
                }
                match req.send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        let _ = resp.bytes().await;
                        if status.is_success() {
                            Ok("200")
                        } else {
                            Err(format!("HTTP {status}"))
                        }
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Target::Redis(store, fields) => {
                // The pipeline larder sends, one read per distinct key,
                // through larder's own Redis reader.
                let project = self.args.shape.project();
                let field_refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
                let mut reads: Vec<KeyRead<'_>> = Vec::with_capacity(ids.len());
                let mut seen = Vec::with_capacity(ids.len());
                for id in ids {
                    if seen.contains(&id) {
                        continue;
                    }
                    seen.push(id);
                    let key = layout::redis_key(
                        &["driver_id"],
                        &[&Value::Int64(id)],
                        &project,
                        layout::KeyVersion::V3,
                    )
                    .map_err(|e| e.to_string())?;
                    reads.push(KeyRead {
                        key,
                        fields: field_refs.clone(),
                        // Every view of the data set is stored under the key.
                        stored_fields: self.args.shape.views * (self.args.shape.features + 1),
                    });
                }
                match store.read(&reads).await {
                    Ok(_) => Ok("OK"),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }
}

/// Where a target's gRPC requests go, and the namespace header they carry.
struct GrpcPaths {
    features: http::Uri,
    noop: http::Uri,
    namespace: Option<http::HeaderValue>,
}

/// One unary gRPC call written on the `h2` crate directly. The request's
/// HEADERS and its one DATA frame (with END_STREAM) are queued before the
/// connection task runs, so they leave in one write; tonic's client wrote
/// three (HEADERS, DATA, an empty END_STREAM DATA), and the server under
/// test could be woken for each. The response is counted, not decoded.
async fn grpc_unary(
    send: &h2::client::SendRequest<Bytes>,
    uri: &http::Uri,
    namespace: Option<&http::HeaderValue>,
    message: &[u8],
) -> Outcome {
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(uri.clone())
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers");
    if let Some(ns) = namespace {
        request = request.header("x-larder-namespace", ns.clone());
    }
    let request = request.body(()).map_err(|e| e.to_string())?;
    let mut send = send.clone().ready().await.map_err(|e| e.to_string())?;
    let (response, mut stream) = send
        .send_request(request, false)
        .map_err(|e| e.to_string())?;
    stream
        .send_data(Bytes::from(framed), true)
        .map_err(|e| e.to_string())?;
    let response = response.await.map_err(|e| e.to_string())?;
    let (head, mut body) = response.into_parts();
    if head.status != http::StatusCode::OK {
        return Err(format!("HTTP {}", head.status));
    }
    // A trailers-only answer carries the gRPC status in its headers.
    let mut status = grpc_status(&head.headers);
    if status.is_none() {
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let trailers = body.trailers().await.map_err(|e| e.to_string())?;
        status = trailers.as_ref().and_then(grpc_status);
    }
    match status {
        Some((0, _)) => Ok("OK"),
        Some((code, message)) => Err(format!("grpc-status {code}: {message}")),
        None => Err("the response carries no grpc-status".into()),
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<(u32, String)> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Some((code, message))
}

/// A request the server answers without its store.
async fn noop(target: &mut Target) -> Outcome {
    match target {
        Target::Grpc(send, paths) => grpc_unary(send, &paths.noop, None, &[]).await,
        Target::Http(client, url) => {
            let health = url.replace("/get-online-features", "/health");
            match client.get(health).send().await {
                Ok(resp) if resp.status().is_success() => {
                    let _ = resp.bytes().await;
                    Ok("200")
                }
                Ok(resp) => Err(format!("HTTP {}", resp.status())),
                Err(e) => Err(e.to_string()),
            }
        }
        Target::Redis(store, _) => match store.ping().await {
            Ok(()) => Ok("OK"),
            Err(e) => Err(e.to_string()),
        },
    }
}

/// The hash fields larder reads for the first `count` features: per view,
/// `_ts:<view>` then the view's features.
fn floor_fields(shape: &Shape, count: usize) -> Vec<Vec<u8>> {
    let mut fields = Vec::new();
    let mut left = count;
    for v in 0..shape.views {
        if left == 0 {
            break;
        }
        let view = format!("fv_{v}");
        fields.push(layout::timestamp_field(&view));
        for f in 0..shape.features.min(left) {
            fields.push(layout::feature_field(&view, &format!("f{f}")).to_vec());
        }
        left = left.saturating_sub(shape.features);
    }
    fields
}

/// One sender per connection; workers take them round-robin.
async fn connect(args: &RunArgs) -> Result<Vec<Target>> {
    let t = &args.target;
    if let Some(addr) = t.strip_prefix("grpc://") {
        let namespace = if args.namespace_header {
            Some(
                http::HeaderValue::from_str(&args.shape.namespace)
                    .context("the namespace is not a valid header value")?,
            )
        } else {
            None
        };
        let paths = Arc::new(GrpcPaths {
            features: format!("http://{addr}/feast.serving.ServingService/GetOnlineFeatures")
                .parse()?,
            noop: format!("http://{addr}/feast.serving.ServingService/GetFeastServingInfo")
                .parse()?,
            namespace,
        });
        let mut targets = Vec::new();
        for _ in 0..args.connections.max(1) {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to {t}"))?;
            tcp.set_nodelay(true)?;
            let (send, connection) = h2::client::Builder::new()
                .initial_window_size(4 << 20)
                .initial_connection_window_size(16 << 20)
                .handshake::<_, Bytes>(tcp)
                .await
                .with_context(|| format!("HTTP/2 handshake with {t}"))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            targets.push(Target::Grpc(send, paths.clone()));
        }
        return Ok(targets);
    }
    Ok(vec![if t.starts_with("http://") {
        let url = format!("{}/get-online-features", t.trim_end_matches('/'));
        Target::Http(
            reqwest::Client::builder()
                .pool_max_idle_per_host(4096)
                .build()?,
            url,
        )
    } else if t.starts_with("redis://") || t.starts_with("unix://") {
        let store = RedisStore::new(RedisSettings {
            url: t.clone(),
            read_command: match args.read_command.as_str() {
                "hgetall" => ReadCommand::Hgetall,
                "auto" => ReadCommand::Auto,
                _ => ReadCommand::Hmget,
            },
            timeout: Duration::from_secs(10),
            ..Default::default()
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        Target::Redis(
            Arc::new(OnlineStore::Redis(store)),
            Arc::new(floor_fields(&args.shape, args.request_features)),
        )
    } else {
        bail!("--target must start with grpc://, http://, redis:// or unix://");
    }])
}

/// Results of one run, shared by the workers.
struct Tally {
    latencies: Histogram<u64>,
    codes: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            latencies: Histogram::new_with_bounds(1_000, 120_000_000_000, 3)
                .expect("valid histogram bounds"),
            codes: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }

    fn record(&mut self, latency: Duration, outcome: Outcome) {
        let _ = self
            .latencies
            .record((latency.as_nanos() as u64).clamp(1_000, 120_000_000_000));
        match outcome {
            Ok(code) => *self.codes.entry(code.to_owned()).or_default() += 1,
            Err(e) => {
                let code = e.split(':').next().unwrap_or("error").to_owned();
                *self.codes.entry(code).or_default() += 1;
                *self.errors.entry(e).or_default() += 1;
            }
        }
    }
}

async fn run(args: RunArgs) -> Result<()> {
    if args.rate.is_none() && args.concurrency.is_none() {
        bail!("give --rate (open loop) or --concurrency (closed loop)");
    }
    let targets = connect(&args).await?;
    let args = Arc::new(args);
    let refs = args.shape.refs(args.request_features);
    let features_field = pb::GetOnlineFeaturesRequest {
        kind: Some(pb::get_online_features_request::Kind::Features(
            pb::FeatureList { val: refs.clone() },
        )),
        ..Default::default()
    }
    .encode_to_vec();
    let request = Arc::new(Request {
        refs: Arc::new(refs),
        features_field,
        args: args.clone(),
    });
    let tally = Arc::new(Mutex::new(Tally::new()));
    let started = Instant::now();
    let measure_from = started + args.warmup;
    let end = measure_from + args.duration;

    if let Some(rate) = args.rate {
        // Open loop: a pacing thread releases requests at their intended
        // times; each is timed from that intended time.
        let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        std::thread::spawn(move || {
            let mut next = Instant::now();
            while next < end {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                if tx.send(next).is_err() {
                    break;
                }
                next += interval;
            }
        });
        let mut tasks = tokio::task::JoinSet::new();
        let mut seed = 1u64;
        while let Some(intended) = rx.recv().await {
            let mut target = targets[seed as usize % targets.len()].clone();
            let (request, tally) = (request.clone(), tally.clone());
            seed += 1;
            tasks.spawn(async move {
                let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
                let outcome = request.send(&mut target, &mut rng).await;
                if intended >= measure_from {
                    tally.lock().unwrap().record(intended.elapsed(), outcome);
                }
            });
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    } else if let Some(concurrency) = args.concurrency {
        let mut tasks = Vec::new();
        for w in 0..concurrency {
            let mut target = targets[w % targets.len()].clone();
            let (request, tally) = (request.clone(), tally.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng((w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let outcome = request.send(&mut target, &mut rng).await;
                    if sent >= measure_from {
                        tally.lock().unwrap().record(sent.elapsed(), outcome);
                    }
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
    }

    let tally = tally.lock().unwrap();
    report(&args, &tally, args.duration)
}

fn report(args: &RunArgs, tally: &Tally, measured: Duration) -> Result<()> {
    let h = &tally.latencies;
    let count = h.len();
    let rps = count as f64 / measured.as_secs_f64();
    let us = |ns: u64| ns as f64 / 1000.0;
    let mode = match (args.rate, args.concurrency) {
        (Some(r), _) => format!("rate {r}/s"),
        (_, Some(c)) => format!("concurrency {c}"),
        _ => String::new(),
    };
    let errors: u64 = tally.errors.values().sum();
    println!(
        "{label:<24} {target:<28} {rows}x{features:<4} {mode:<16} n={count:<8} rps={rps:<9.0} p50={p50:.0}us p90={p90:.0}us p99={p99:.0}us p99.9={p999:.0}us max={max:.0}us errors={errors}",
        label = args.label,
        target = args.target,
        rows = args.rows,
        features = args.request_features,
        p50 = us(h.value_at_quantile(0.5)),
        p90 = us(h.value_at_quantile(0.9)),
        p99 = us(h.value_at_quantile(0.99)),
        p999 = us(h.value_at_quantile(0.999)),
        max = us(h.max()),
    );
    for (e, n) in tally.errors.iter().take(5) {
        println!("    error x{n}: {e}");
    }
    if let Some(path) = &args.json {
        let distribution: Vec<serde_json::Value> = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9]
            .iter()
            .map(|p| {
                serde_json::json!({
                    "percentage": p,
                    "latency": h.value_at_quantile(p / 100.0),
                })
            })
            .collect();
        let summary = serde_json::json!({
            "name": args.label,
            "target": args.target,
            "shape": format!("{}x{}", args.rows, args.request_features),
            "mode": mode,
            "count": count,
            "total": measured.as_nanos() as u64,
            "average": h.mean() as u64,
            "fastest": h.min(),
            "slowest": h.max(),
            "rps": rps,
            "latencyDistribution": distribution,
            "statusCodeDistribution": tally.codes,
            "errorDistribution": tally.errors,
        });
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
