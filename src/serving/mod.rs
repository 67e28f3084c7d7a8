//! The online feature server: Feast's `ServingService` over gRPC and
//! Feast's HTTP JSON API, on one port.
//!
//! Transports are thin: [`grpc`] and [`http`] convert wire shapes to an
//! [`OnlineRequest`] and back; [`online`] does the work against the current
//! [`RegistrySnapshot`] and the [`OnlineStore`].

mod error;
pub mod grpc;
pub mod http;
pub mod online;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tracing::Instrument;

pub use error::ServingError;
pub use online::{Column, FeatureSelection, Limits, OnlineRequest, OnlineResponse};

use crate::online::OnlineStore;
use crate::registry::RegistrySnapshot;
use crate::registry::follower::SyncState;
use crate::telemetry::{MethodLabels, Metrics, RequestLabels};

/// The request header (HTTP header or gRPC metadata) naming the namespace
/// of unqualified feature refs.
pub const NAMESPACE_HEADER: &str = "x-larder-namespace";

/// The namespace header's value, when the request has one.
fn namespace_header<E>(value: Option<Result<&str, E>>) -> Result<Option<String>, ServingError> {
    value
        .map(|v| {
            v.map(str::to_owned).map_err(|_| {
                ServingError::InvalidArgument(format!("{NAMESPACE_HEADER} is not ASCII"))
            })
        })
        .transpose()
}

/// What the feature server needs to know besides definitions and the store.
#[derive(Debug, Clone)]
pub struct ServingSettings {
    pub default_namespace: String,
    pub limits: Limits,
    /// The most server time one request may take; a client deadline can
    /// only shorten it.
    pub request_timeout: Duration,
    /// The largest request body accepted, gRPC or HTTP.
    pub max_request_bytes: usize,
}

impl Default for ServingSettings {
    fn default() -> Self {
        ServingSettings {
            default_namespace: "default".into(),
            limits: Limits {
                max_entity_rows: 10_000,
                max_features: 1_000,
            },
            request_timeout: Duration::from_secs(5),
            max_request_bytes: 4 << 20,
        }
    }
}

/// The state every request handler shares.
pub struct FeatureServer {
    snapshot: ArcSwap<RegistrySnapshot>,
    store: OnlineStore,
    settings: ServingSettings,
    metrics: Metrics,
    /// Set when definitions come from the registry rather than a folder.
    registry_sync: Option<Arc<SyncState>>,
}

impl FeatureServer {
    pub fn new(snapshot: RegistrySnapshot, store: OnlineStore, settings: ServingSettings) -> Self {
        FeatureServer {
            snapshot: ArcSwap::from_pointee(snapshot),
            store,
            settings,
            metrics: Metrics::new(),
            registry_sync: None,
        }
    }

    /// Marks this server as following the registry: readiness and metrics
    /// then report how current its definitions are.
    pub fn following(mut self, state: Arc<SyncState>) -> Self {
        self.registry_sync = Some(state);
        self
    }

    pub fn registry_sync(&self) -> Option<&Arc<SyncState>> {
        self.registry_sync.as_ref()
    }

    pub fn settings(&self) -> &ServingSettings {
        &self.settings
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn store(&self) -> &OnlineStore {
        &self.store
    }

    /// The definitions requests are served from now.
    pub fn snapshot(&self) -> Arc<RegistrySnapshot> {
        self.snapshot.load_full()
    }

    /// Serves from `snapshot` from the next request on; requests in flight
    /// finish with the one they started with.
    pub fn replace_snapshot(&self, snapshot: RegistrySnapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    /// Serves one GetOnlineFeatures request. `api` names the transport in
    /// metrics; `client_deadline` is the time the client allows.
    pub async fn get_online_features(
        &self,
        api: &'static str,
        request: OnlineRequest,
        client_deadline: Option<Duration>,
    ) -> Result<OnlineResponse, ServingError> {
        let started = Instant::now();
        let span = tracing::info_span!(
            "get_online_features",
            api,
            namespace = request
                .namespace
                .as_deref()
                .unwrap_or(&self.settings.default_namespace),
            rows = tracing::field::Empty,
            columns = tracing::field::Empty,
        );
        let snapshot = self.snapshot.load();
        let deadline = online::effective_deadline(client_deadline, self.settings.request_timeout);
        let rows = request.entities.first().map_or(0, |(_, v)| v.len());
        let result = online::get_online_features(
            &snapshot,
            &self.store,
            &self.settings.default_namespace,
            self.settings.limits,
            request,
            deadline,
            |read| self.metrics.store_read_seconds.observe(read.as_secs_f64()),
        )
        .instrument(span.clone())
        .await;
        let elapsed = started.elapsed();
        let code = match &result {
            Ok(response) => {
                span.record("rows", rows);
                span.record("columns", response.columns.len());
                self.metrics.entity_rows.inc_by(rows as u64);
                let values: usize = response.columns.iter().map(|c| c.values.len()).sum();
                self.metrics.feature_values.inc_by(values as u64);
                let invalid = response
                    .columns
                    .iter()
                    .flat_map(|c| &c.statuses)
                    .filter(|s| **s == crate::model::FieldStatus::Invalid)
                    .count();
                if invalid > 0 {
                    self.metrics.invalid_values.inc_by(invalid as u64);
                }
                "ok"
            }
            Err(e) => {
                tracing::debug!(parent: &span, error = %e, "request failed");
                e.code()
            }
        };
        self.record(api, "GetOnlineFeatures", code, elapsed);
        result
    }

    /// Counts a request the transport refused before it reached the core.
    pub fn record_rejected(&self, api: &'static str, method: &'static str, e: &ServingError) {
        self.record(api, method, e.code(), Duration::ZERO);
    }

    fn record(&self, api: &'static str, method: &'static str, code: &'static str, d: Duration) {
        self.metrics
            .requests
            .get_or_create(&RequestLabels { api, method, code })
            .inc();
        self.metrics
            .request_seconds
            .get_or_create(&MethodLabels { api, method })
            .observe(d.as_secs_f64());
    }

    /// Ready when the online store answers and, when following the
    /// registry, a snapshot has arrived. Stale definitions keep the server
    /// ready (it keeps serving the last good snapshot); the answer says how
    /// old they are.
    pub async fn ready(&self) -> Result<String, ServingError> {
        if let Some(sync) = &self.registry_sync
            && sync.version().is_none()
        {
            return Err(ServingError::Unavailable(
                "no definitions from the registry yet".into(),
            ));
        }
        self.store.ping().await.map_err(ServingError::from)?;
        Ok(match &self.registry_sync {
            Some(sync) => match sync.seconds_since_sync() {
                Some(age) => format!(
                    "ready: serving registry resourceVersion {}; the registry last answered {age:.1}s ago",
                    sync.version().unwrap_or_default()
                ),
                None => format!(
                    "ready: serving the saved snapshot of registry resourceVersion {}; the registry has not answered since start-up",
                    sync.version().unwrap_or_default()
                ),
            },
            None => "ready".into(),
        })
    }
}

/// Serves gRPC and HTTP on `listener` until `shutdown` completes, then
/// drains requests in flight. Both protocols share the port: gRPC requests
/// are routed by their `/package.Service/Method` paths, HTTP/1.1 and h2c
/// are told apart by the connection preface.
pub async fn run(
    listener: TcpListener,
    server: Arc<FeatureServer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = grpc::routes(server.clone())
        .await
        .merge(http::routes(server.clone()));
    tracing::info!(
        address = %listener.local_addr()?,
        "serving gRPC (feast.serving.ServingService) and HTTP"
    );
    axum::serve(
        listener.tap_io(|tcp| {
            // Small responses must not wait for Nagle's algorithm.
            let _ = tcp.set_nodelay(true);
        }),
        router,
    )
    .with_graceful_shutdown(shutdown)
    .await
}

use axum::serve::ListenerExt;

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: draining requests in flight");
}
