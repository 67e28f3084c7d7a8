//! The Prometheus metrics of `larder ingest` (prefix `larder_ingest`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `malformed`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `malformed`, `dead_letter`, `write`, `commit`, `broker`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// `online` or `offline`.
    pub store: &'static str,
}

/// Buckets for freshness: 1 ms to about 70 s, 25% apart, fine enough to
/// read medians and 99th percentiles from.
fn freshness_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 1.25, 51))
}

/// What `larder ingest` counts.
pub struct IngestMetrics {
    registry: Registry,
    /// Messages read, by whether they could be decoded.
    pub messages: Family<ResultLabels, Counter>,
    /// Batches written and committed.
    pub batches: Counter,
    /// Rows taken by each store (online: newer than what it held;
    /// offline: not already stored).
    pub rows_written: Family<StoreLabels, Counter>,
    /// Errors by kind; malformed messages count here too.
    pub errors: Family<ErrorLabels, Counter>,
    /// Messages of each assigned partition not yet committed: the high
    /// watermark minus the next offset to process.
    pub lag: Family<PartitionLabels, Gauge>,
    /// Seconds from a row's event time to its online write.
    pub freshness: Histogram,
    /// Seconds per batch write (online and offline, concurrently).
    pub batch_seconds: Histogram,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl IngestMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("larder_ingest");
        let messages = Family::<ResultLabels, Counter>::default();
        registry.register(
            "messages",
            "Messages read, by result (ok, malformed)",
            messages.clone(),
        );
        let batches = Counter::default();
        registry.register(
            "batches",
            "Batches written to the stores and committed",
            batches.clone(),
        );
        let rows_written = Family::<StoreLabels, Counter>::default();
        registry.register(
            "rows_written",
            "Rows the stores took: online (newer than stored), offline (not already stored)",
            rows_written.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "errors",
            "Errors by kind (malformed, dead_letter, write, commit, broker)",
            errors.clone(),
        );
        let lag = Family::<PartitionLabels, Gauge>::default();
        registry.register(
            "consumer_lag",
            "Messages of a partition not yet processed (high watermark - next offset)",
            lag.clone(),
        );
        let freshness = freshness_histogram();
        registry.register(
            "freshness_seconds",
            "Seconds from a row's event time to its online write",
            freshness.clone(),
        );
        let batch_seconds = Histogram::new(exponential_buckets(0.000_5, 2.0, 16));
        registry.register(
            "batch_write_duration_seconds",
            "Time to write one batch to the stores",
            batch_seconds.clone(),
        );
        IngestMetrics {
            registry,
            messages,
            batches,
            rows_written,
            errors,
            lag,
            freshness,
            batch_seconds,
        }
    }

    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
