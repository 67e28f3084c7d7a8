//! Prometheus metrics and tracing set-up.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `grpc` or `http`.
    pub api: &'static str,
    pub method: &'static str,
    /// `ok` or the error code.
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub api: &'static str,
    pub method: &'static str,
}

fn latency_histogram() -> Histogram {
    // 25 µs to ~0.8 s.
    Histogram::new(exponential_buckets(0.000_025, 2.0, 16))
}

/// The feature server's metrics.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
    pub store_read_seconds: Histogram,
    pub entity_rows: Counter,
    pub feature_values: Counter,
    pub invalid_values: Counter,
    pub transform_errors: Counter,
    registry_version: Gauge,
    registry_sync_age: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("larder");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests served, by API, method and outcome",
            requests.clone(),
        );
        let request_seconds =
            Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "request_duration_seconds",
            "Server time per request, by API and method",
            request_seconds.clone(),
        );
        let store_read_seconds = latency_histogram();
        registry.register(
            "online_store_read_duration_seconds",
            "Time of one online-store read (one Redis round trip)",
            store_read_seconds.clone(),
        );
        let entity_rows = Counter::default();
        registry.register("entity_rows", "Entity rows requested", entity_rows.clone());
        let feature_values = Counter::default();
        registry.register(
            "feature_values",
            "Feature values returned",
            feature_values.clone(),
        );
        let invalid_values = Counter::default();
        registry.register(
            "invalid_stored_values",
            "Stored values that could not be decoded (served as INVALID)",
            invalid_values.clone(),
        );
        let transform_errors = Counter::default();
        registry.register(
            "on_demand_errors",
            "On-demand values whose expression failed at run time (served as NULL_VALUE)",
            transform_errors.clone(),
        );
        let registry_version = Gauge::default();
        registry.register(
            "registry_resource_version",
            "The registry resourceVersion of the definitions served (-1: none yet)",
            registry_version.clone(),
        );
        let registry_sync_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "registry_seconds_since_sync",
            "Seconds since the registry last answered (-1: never)",
            registry_sync_age.clone(),
        );
        Metrics {
            registry_version,
            registry_sync_age,
            registry,
            requests,
            request_seconds,
            store_read_seconds,
            entity_rows,
            feature_values,
            invalid_values,
            transform_errors,
        }
    }

    /// Updates the registry gauges from the follower's state.
    pub fn observe_registry(&self, sync: &crate::registry::follower::SyncState) {
        self.registry_version.set(sync.version().unwrap_or(-1));
        self.registry_sync_age
            .set(sync.seconds_since_sync().unwrap_or(-1.0));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Installs the tracing subscriber: human-readable lines, filtered by
/// `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr: stdout is for what commands print (tables, yes/no).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colour only for a terminal: logs collected from files or pods stay
        // plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
