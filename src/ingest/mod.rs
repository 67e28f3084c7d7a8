//! Stream ingestion: fresh rows into the online store, every row logged to
//! the offline store.
//!
//! Rows arrive two ways, and both end in [`write::write_batch`], the one
//! function that writes a batch of a feature view's rows:
//!
//! - [`kafka`]: `larder ingest --source NAME -n NS`, a consumer group reading
//!   a Kafka source's topic. Messages are decoded and checked against the
//!   views that name the source ([`decode`]), batched by size and time,
//!   written, and only then are their offsets committed (at least once;
//!   both writes are idempotent, so a replay changes nothing). Malformed
//!   messages are counted, logged and sent to the dead-letter topic when one
//!   is configured; they never stop the consumer.
//! - [`push`]: Feast's push API on the feature server (HTTP `POST /push`,
//!   gRPC `larder.v1.PushService/Push`), in domain terms; the transports
//!   convert and call `FeatureServer::push`.
//!
//! Online writes are newer-only (`OnlineStore::write_rows`); offline writes
//! are idempotent appends (`offline::write::append_rows`), which need a
//! unique key over the join keys and the event time of the batch source.

pub mod decode;
pub mod kafka;
pub mod metrics;
pub mod push;
pub mod write;

use crate::offline::OfflineError;
use crate::online::{StoreError, WriteError};

/// Where pushed or ingested rows go (Feast's `to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushTo {
    Online,
    Offline,
    OnlineAndOffline,
}

impl PushTo {
    pub fn online(self) -> bool {
        matches!(self, PushTo::Online | PushTo::OnlineAndOffline)
    }

    pub fn offline(self) -> bool {
        matches!(self, PushTo::Offline | PushTo::OnlineAndOffline)
    }

    /// Feast's names: `online`, `offline`, `online_and_offline`.
    pub fn parse(text: &str) -> Result<PushTo, String> {
        match text {
            "online" => Ok(PushTo::Online),
            "offline" => Ok(PushTo::Offline),
            "online_and_offline" => Ok(PushTo::OnlineAndOffline),
            other => Err(format!(
                "{other:?} is not a push target (online, offline or online_and_offline)"
            )),
        }
    }
}

/// What went wrong writing or reading streamed rows.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    /// Bad input: rows that do not fit the view, a missing column, a
    /// definition that cannot take rows.
    #[error("{0}")]
    Invalid(String),
    /// An unknown namespace, source, view or table.
    #[error("{0}")]
    NotFound(String),
    /// A store's own access control refused the writer's credentials.
    #[error("{0}")]
    PermissionDenied(String),
    /// A store (or the broker) is unreachable or timing out: worth retrying.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else a store reported.
    #[error("{0}")]
    Failed(String),
}

impl IngestError {
    /// Whether retrying the same write may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, IngestError::Unavailable(_))
    }

    /// A short, stable label for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::Invalid(_) => "invalid",
            IngestError::NotFound(_) => "not_found",
            IngestError::PermissionDenied(_) => "permission_denied",
            IngestError::Unavailable(_) => "unavailable",
            IngestError::Failed(_) => "failed",
        }
    }

    fn online(e: WriteError, context: &str) -> IngestError {
        match e {
            WriteError::BadRow { .. } => IngestError::Invalid(format!("{context}: {e}")),
            WriteError::Store(s) => match s {
                StoreError::Unavailable(_) | StoreError::Timeout(_) => {
                    IngestError::Unavailable(format!("{context}: {s}"))
                }
                StoreError::Denied(_) => IngestError::PermissionDenied(format!("{context}: {s}")),
                StoreError::Failed(_) => IngestError::Failed(format!("{context}: {s}")),
            },
        }
    }

    fn offline(e: OfflineError, context: &str) -> IngestError {
        match e {
            OfflineError::PermissionDenied(m) => {
                IngestError::PermissionDenied(format!("{context}: permission denied: {m}"))
            }
            OfflineError::NotFound(m) => IngestError::NotFound(format!("{context}: {m}")),
            OfflineError::Invalid(m) => IngestError::Invalid(format!("{context}: {m}")),
            // Connection failures and database errors other than the ones
            // classified above: retried by the consumer.
            OfflineError::Database(m) | OfflineError::Online(m) => {
                IngestError::Unavailable(format!("{context}: offline store: {m}"))
            }
            OfflineError::Io(e) => IngestError::Unavailable(format!("{context}: {e}")),
        }
    }
}
