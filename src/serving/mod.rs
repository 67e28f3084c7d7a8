//! The online feature server: Feast's `ServingService` over gRPC and
//! Feast's HTTP JSON API, on one port.
//!
//! Transports are thin: [`grpc`] and [`http`] convert wire shapes to an
//! [`OnlineRequest`] and back; [`online`] does the work against the current
//! [`RegistrySnapshot`] and the [`OnlineStore`].

mod coalesce;
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
pub use online::{Cell, Column, FeatureSelection, Limits, OnlineRequest, OnlineResponse};

use std::collections::HashMap;

use crate::auth::{Auth, Caller, UserInfo};
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
    /// The store read with the server's own credentials: used for every
    /// caller when no namespace has credentials of its own.
    store: OnlineStore,
    /// Stores opened with a namespace's own credentials, by namespace.
    namespace_stores: HashMap<String, OnlineStore>,
    /// The namespace each configured person acts in.
    user_namespaces: HashMap<String, String>,
    auth: Arc<Auth>,
    settings: ServingSettings,
    metrics: Metrics,
    /// Set when definitions come from the registry rather than a folder.
    registry_sync: Option<Arc<SyncState>>,
    /// Where pushed rows are logged offline; `None`: pushes to the offline
    /// store are refused.
    offline: Option<Arc<crate::config::Config>>,
}

impl FeatureServer {
    pub fn new(snapshot: RegistrySnapshot, store: OnlineStore, settings: ServingSettings) -> Self {
        FeatureServer {
            snapshot: ArcSwap::from_pointee(snapshot),
            store,
            namespace_stores: HashMap::new(),
            user_namespaces: HashMap::new(),
            auth: Arc::new(Auth::disabled()),
            settings,
            metrics: Metrics::new(),
            registry_sync: None,
            offline: None,
        }
    }

    /// Logs pushed rows to the offline store configured in `config`
    /// (`offline_store`, with `namespaces.<ns>.database` users).
    pub fn with_offline_store(mut self, config: Arc<crate::config::Config>) -> Self {
        self.offline = Some(config);
        self
    }

    /// Serves one push: authorizes `update` on every feature view the push
    /// source feeds, checks and types the rows, and writes them through
    /// [`crate::ingest::write::write_batch`] with the views' namespace's
    /// credentials.
    pub async fn push(
        &self,
        api: &'static str,
        caller: &Caller,
        request: crate::ingest::push::PushRequest,
    ) -> Result<crate::ingest::push::PushOutcome, ServingError> {
        use crate::ingest::push;
        let started = Instant::now();
        let snapshot = self.snapshot.load_full();
        let (namespace, source) = {
            let (ns, name) = push::source_of(&request, &self.settings.default_namespace);
            (ns.to_owned(), name.to_owned())
        };
        let span = tracing::info_span!(
            "push",
            api,
            namespace = %namespace,
            source = %source,
            rows = tracing::field::Empty,
        );
        let result = async {
            let views = push::target_views(&snapshot, &namespace, &source)?;
            if !self.auth.is_disabled() {
                for view in &views {
                    self.auth
                        .authorize(
                            caller,
                            "update",
                            "featureviews",
                            &namespace,
                            &view.view.name,
                        )
                        .await?;
                }
            }
            let rows = request.columns.first().map_or(0, |(_, v)| v.len());
            let max = self.settings.limits.max_entity_rows;
            if rows > max {
                return Err(ServingError::TooLarge(format!(
                    "the push holds {rows} rows; the limit is {max} (serve.max_entity_rows)"
                )));
            }
            tracing::Span::current().record("rows", rows);
            let to = request.to;
            let plan = push::plan(&snapshot, &namespace, views, request)?;
            let offline = match (&self.offline, to.offline()) {
                (Some(config), true) => Some(
                    crate::offline::OfflineStore::for_namespace(config, &namespace)
                        .map_err(|e| ServingError::Internal(e.to_string()))?,
                ),
                _ => None,
            };
            let online = self.store_of_namespace(&namespace);
            let mut outcome = push::PushOutcome {
                rows,
                views: Vec::with_capacity(plan.views.len()),
            };
            for (view, rows) in &plan.views {
                let written = crate::ingest::write::write_batch(
                    plan.defs,
                    view,
                    rows,
                    to,
                    online,
                    offline.as_ref(),
                )
                .await?;
                outcome
                    .views
                    .push((view.view.name.clone(), written.online, written.offline));
            }
            Ok(outcome)
        }
        .instrument(span.clone())
        .await;
        let code = match &result {
            Ok(_) => "ok",
            Err(e) => {
                tracing::debug!(parent: &span, error = %e, "push failed");
                e.code()
            }
        };
        self.record(api, "Push", code, started.elapsed());
        result
    }

    /// Checks every request's token and each feature view, feature service
    /// it reads with `auth`.
    pub fn with_auth(mut self, auth: Arc<Auth>) -> Self {
        self.auth = auth;
        self
    }

    /// Reads with the credentials of the caller's namespace: a service
    /// account's own namespace, or the namespace a person is listed in.
    /// Once any namespace has a store, callers without one are refused.
    pub fn with_namespace_stores(
        mut self,
        stores: HashMap<String, OnlineStore>,
        user_namespaces: HashMap<String, String>,
    ) -> Self {
        self.namespace_stores = stores;
        self.user_namespaces = user_namespaces;
        self
    }

    pub fn auth(&self) -> &Arc<Auth> {
        &self.auth
    }

    /// The namespace a caller acts in, when it has one.
    pub fn caller_namespace<'c>(&'c self, caller: &'c UserInfo) -> Option<&'c str> {
        crate::auth::caller_namespace(caller, &self.user_namespaces)
    }

    /// The store a caller reads with.
    pub fn store_for(&self, caller: &UserInfo) -> Result<&OnlineStore, ServingError> {
        if self.namespace_stores.is_empty() || self.auth.is_disabled() {
            return Ok(&self.store);
        }
        let Some(ns) = self.caller_namespace(caller) else {
            return Err(ServingError::PermissionDenied(format!(
                "{} acts in no namespace with online-store credentials \
                 (a service account acts in its own namespace; people are listed in namespaces.<ns>.users)",
                caller.name
            )));
        };
        self.namespace_stores.get(ns).ok_or_else(|| {
            ServingError::PermissionDenied(format!(
                "namespace {ns:?} of {} has no online-store credentials (namespaces.{ns}.redis)",
                caller.name
            ))
        })
    }

    /// The store writers of `namespace`'s views use: its own credentials
    /// when configured, else the server's.
    pub fn store_of_namespace(&self, namespace: &str) -> &OnlineStore {
        self.namespace_stores.get(namespace).unwrap_or(&self.store)
    }

    /// Who sends a request with this `Authorization` header value.
    pub async fn authenticate(
        &self,
        api: &'static str,
        header: Option<&str>,
    ) -> Result<Caller, ServingError> {
        self.authenticate_for(api, "GetOnlineFeatures", header)
            .await
    }

    /// [`FeatureServer::authenticate`] for another method, which names it
    /// in the metrics of refused requests.
    pub async fn authenticate_for(
        &self,
        api: &'static str,
        method: &'static str,
        header: Option<&str>,
    ) -> Result<Caller, ServingError> {
        self.auth.authenticate(header).await.map_err(|e| {
            let e = ServingError::from(e);
            self.record_rejected(api, method, &e);
            e
        })
    }

    /// Requires `get` on every feature view the request reads, and on the
    /// feature service when it names one, before anything is looked up:
    /// a caller learns nothing of what it may not read.
    async fn authorize_reads(
        &self,
        caller: &Caller,
        snapshot: &RegistrySnapshot,
        request: &OnlineRequest,
    ) -> Result<(), ServingError> {
        if self.auth.is_disabled() {
            return Ok(());
        }
        let namespace = request
            .namespace
            .as_deref()
            .unwrap_or(&self.settings.default_namespace);
        // (resource, namespace, name) of every object read, each once. An
        // on-demand view reads its source views too: the caller needs `get`
        // on those as well, or a transform would reveal what it may not read.
        let mut objects: Vec<(&'static str, &str, &str)> = Vec::new();
        fn view<'a>(
            snapshot: &'a RegistrySnapshot,
            ns: &'a str,
            name: &'a str,
            objects: &mut Vec<(&'static str, &'a str, &'a str)>,
        ) {
            match snapshot.odfv(ns, name) {
                Some(odfv) => {
                    objects.push(("ondemandfeatureviews", ns, name));
                    for source in &odfv.odfv.source_views {
                        objects.push(("featureviews", ns, source));
                    }
                }
                None => objects.push(("featureviews", ns, name)),
            }
        }
        match &request.features {
            FeatureSelection::Refs(refs) => {
                for r in refs {
                    // Malformed refs are refused by planning.
                    if let Ok(parts) = crate::model::FeatureRef::split(r) {
                        view(
                            snapshot,
                            parts.namespace.unwrap_or(namespace),
                            parts.view,
                            &mut objects,
                        );
                    }
                }
            }
            FeatureSelection::Service(name) => {
                let (ns, name) = name.split_once('/').unwrap_or((namespace, name.as_str()));
                objects.push(("featureservices", ns, name));
                if let Some(service) = snapshot.service(ns, name) {
                    for r in &service.features {
                        view(
                            snapshot,
                            r.namespace.as_deref().unwrap_or(ns),
                            &r.view,
                            &mut objects,
                        );
                    }
                }
            }
        }
        objects.sort_unstable();
        objects.dedup();
        for (resource, ns, name) in objects {
            self.auth
                .authorize(caller, "get", resource, ns, name)
                .await?;
        }
        Ok(())
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
        caller: &Caller,
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
        let result = async {
            self.authorize_reads(caller, &snapshot, &request).await?;
            let store = self.store_for(caller)?;
            online::get_online_features(
                &snapshot,
                store,
                &self.settings.default_namespace,
                self.settings.limits,
                request,
                deadline,
                |read| self.metrics.store_read_seconds.observe(read.as_secs_f64()),
            )
            .await
        }
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
                if response.transform_errors > 0 {
                    self.metrics
                        .transform_errors
                        .inc_by(response.transform_errors as u64);
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
        runtime = ?tokio::runtime::Handle::current().runtime_flavor(),
        "serving gRPC (feast.serving.ServingService) and HTTP"
    );
    axum::serve(
        coalesce::CoalescingListener(listener.tap_io(|tcp| {
            // Small responses must not wait for Nagle's algorithm.
            let _ = tcp.set_nodelay(true);
        })),
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
