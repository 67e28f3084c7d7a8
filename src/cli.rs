//! The `larder` command line: argument parsing and wiring, nothing more.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::auth::Auth;
use crate::config::{Config, StoreKind};
use crate::definitions;
use crate::model::{EventTime, Value};
use crate::online::{OnlineStore, RedisStore, SqliteStore, ViewRow};
use crate::registry::RegistrySnapshot;
use crate::serving::{self, FeatureServer};

#[derive(Parser)]
#[command(
    name = "larder",
    version,
    about = "A feature store for Kubernetes and Kubeflow that speaks Feast's data plane"
)]
struct Cli {
    /// Configuration file (YAML). `LARDER__SECTION__KEY` variables override it.
    #[arg(long, short = 'c', global = true, env = "LARDER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve online features over gRPC and HTTP.
    Serve {
        /// Definitions: a manifest file or a folder (overrides serve.definitions).
        #[arg(long, short = 'd')]
        definitions: Option<PathBuf>,
        /// Address for gRPC and HTTP (overrides serve.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Follow the registry at this URL instead of reading definitions.
        #[arg(long)]
        registry: Option<String>,
    },
    /// The registry server.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Create or update the objects of manifest files in the registry.
    Apply {
        /// A manifest file or a folder of them.
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// Print the plan without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Also delete objects of the files' namespaces that the files no
        /// longer hold.
        #[arg(long)]
        prune: bool,
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// List objects of a resource (entities, datasources, featureviews,
    /// ondemandfeatureviews, featureservices).
    Get {
        resource: String,
        /// One namespace; all when omitted.
        #[arg(long, short = 'n', conflicts_with = "all_namespaces")]
        namespace: Option<String>,
        /// Every namespace (the default when no namespace is given).
        #[arg(long, short = 'A')]
        all_namespaces: bool,
        /// `table` (default), `wide`, `json` or `yaml`.
        #[arg(long, short = 'o', default_value = "table")]
        output: String,
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// Show one object readably.
    Describe {
        resource: String,
        name: String,
        #[arg(long, short = 'n')]
        namespace: String,
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// Delete an object from the registry.
    Delete {
        resource: String,
        name: String,
        #[arg(long, short = 'n')]
        namespace: String,
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// Build a point-in-time-correct training set from the offline store.
    Historical(crate::offline::historical::HistoricalArgs),
    /// Copy the latest offline values in (START, END] into the online store.
    Materialize(crate::offline::materialize::MaterializeArgs),
    /// Materialize from where the last run of each view ended up to END.
    MaterializeIncremental(crate::offline::materialize::IncrementalArgs),
    /// Consume a Kafka source: latest values online, every row logged to
    /// its batch source.
    Ingest(crate::ingest::kafka::IngestArgs),
    /// Authentication and authorization tools.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// The offline store's servers.
    #[command(subcommand)]
    Offline(OfflineCommand),
    /// Check definitions without serving them.
    Validate {
        /// A manifest file or a folder of them.
        definitions: PathBuf,
    },
    /// Create a demo with driver features and serve it, on the embedded
    /// store unless --redis is given.
    Quickstart {
        /// Use this Redis instead of the embedded store.
        #[arg(long)]
        redis: Option<String>,
        /// Where the demo's definitions and data go.
        #[arg(long, default_value = ".larder/quickstart")]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:6566")]
        listen: SocketAddr,
    },
}

#[derive(Subcommand)]
enum OfflineCommand {
    /// Serve training sets over Arrow Flight (DoGet with a JSON ticket).
    Serve {
        /// Address to listen on (overrides offline_store.flight_listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Whether a user may do something, answered by the configured
    /// authorizer: prints yes (exit 0) or no (exit 1). Without --as, the
    /// user is whoever the client token ($LARDER_TOKEN, $LARDER_TOKEN_FILE
    /// or registry.token_file) authenticates as.
    CanI {
        /// get, list, watch, create, update, patch, delete or *.
        verb: String,
        /// RESOURCE or RESOURCE/NAME, e.g. featureviews/driver_daily_stats.
        resource: String,
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
        /// Ask for this user instead of the token's.
        #[arg(long = "as")]
        as_user: Option<String>,
        /// A group of the --as user (repeatable).
        #[arg(long = "as-group", requires = "as_user")]
        as_group: Vec<String>,
    },
}

/// A "no" from `larder auth can-i`: exit code 1 with nothing more printed.
#[derive(Debug, thiserror::Error)]
#[error("no")]
struct AnswerNo;

#[derive(Subcommand)]
enum RegistryCommand {
    /// Serve the registry's REST API.
    Serve {
        /// `sqlite://FILE?mode=rwc`, `postgres://...` or `mysql://...`
        /// (overrides registry.database).
        #[arg(long)]
        database: Option<String>,
        /// Address to listen on (overrides registry.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
}

#[derive(clap::Args)]
struct RegistryArg {
    /// The registry's URL (overrides registry.url).
    #[arg(long, env = "LARDER_REGISTRY")]
    registry: Option<String>,
}

impl RegistryArg {
    fn url(&self, config: &Config) -> String {
        self.registry
            .clone()
            .unwrap_or_else(|| config.registry.url.clone())
            .trim_end_matches('/')
            .to_owned()
    }

    /// The registry with the caller's token (see `client_token`).
    fn remote(&self, config: &Config) -> Result<crate::registry::client::Remote> {
        let token = crate::registry::client::client_token(config.registry.token_file.as_deref())?;
        crate::registry::client::Remote::new(&self.url(config), token.as_deref())
    }
}

/// Runs the command line; the exit code says whether it worked.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init_tracing();
    let runtime = match runtime_builder(std::env::var("TOKIO_WORKER_THREADS").ok().as_deref())
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<AnswerNo>().is_some() => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The runtime for `TOKIO_WORKER_THREADS`: by default a thread per core.
/// Asked for one thread, larder runs tokio's current-thread scheduler
/// rather than a work-stealing pool of one: a task woken there waits behind
/// the tasks already ready instead of running next, so the requests that
/// arrived together reach the Redis reader and the HTTP/2 writer together
/// and leave in one write each (docs/PERFORMANCE.md, "Runtime threads").
fn runtime_builder(threads: Option<&str>) -> tokio::runtime::Builder {
    match threads.map(str::trim) {
        Some("1") => tokio::runtime::Builder::new_current_thread(),
        // Any other value is the pool's size, read by tokio itself.
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve {
            definitions,
            listen,
            registry,
        } => {
            let mut config = Config::load(cli.config.as_deref())?;
            if let Some(d) = definitions {
                config.serve.definitions = d;
            }
            if let Some(l) = listen {
                config.serve.listen = l;
            }
            if let Some(url) = registry {
                config.registry.url = url;
                config.serve.follow_registry = true;
            }
            serve(config).await
        }
        Command::Registry(RegistryCommand::Serve { database, listen }) => {
            let mut config = Config::load(cli.config.as_deref())?;
            if let Some(d) = database {
                config.registry.database = d;
            }
            if let Some(l) = listen {
                config.registry.listen = l;
            }
            registry_serve(config).await
        }
        Command::Apply {
            file,
            dry_run,
            prune,
            registry,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            crate::registry::client::apply(&registry.remote(&config)?, &file, dry_run, prune).await
        }
        Command::Get {
            resource,
            namespace,
            all_namespaces: _,
            output,
            registry,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            crate::registry::client::get(
                &registry.remote(&config)?,
                &resource,
                namespace.as_deref(),
                &output,
            )
            .await
        }
        Command::Describe {
            resource,
            name,
            namespace,
            registry,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            crate::registry::client::describe(
                &registry.remote(&config)?,
                &resource,
                &namespace,
                &name,
            )
            .await
        }
        Command::Delete {
            resource,
            name,
            namespace,
            registry,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            crate::registry::client::delete(
                &registry.remote(&config)?,
                &resource,
                &namespace,
                &name,
            )
            .await
        }
        Command::Historical(args) => {
            let config = Config::load(cli.config.as_deref())?;
            Ok(crate::offline::historical::run(&config, args).await?)
        }
        Command::Materialize(args) => {
            let config = Config::load(cli.config.as_deref())?;
            Ok(crate::offline::materialize::run(&config, args).await?)
        }
        Command::MaterializeIncremental(args) => {
            let config = Config::load(cli.config.as_deref())?;
            Ok(crate::offline::materialize::run_incremental(&config, args).await?)
        }
        Command::Ingest(args) => {
            let config = Config::load(cli.config.as_deref())?;
            Ok(crate::ingest::kafka::run(&config, args).await?)
        }
        Command::Offline(OfflineCommand::Serve { listen }) => {
            let mut config = Config::load(cli.config.as_deref())?;
            if let Some(l) = listen {
                config.offline_store.flight_listen = l;
            }
            let listen = config.offline_store.flight_listen;
            let auth = open_auth(&config, listen).await?;
            reload_policy_on_sighup(auth.clone(), &config);
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            let service = crate::offline::flight::OfflineFlight::new(Arc::new(config), auth);
            crate::offline::flight::run(listener, service, serving::shutdown_signal()).await?;
            Ok(())
        }
        Command::Auth(AuthCommand::CanI {
            verb,
            resource,
            namespace,
            as_user,
            as_group,
        }) => {
            let config = Config::load(cli.config.as_deref())?;
            can_i(&config, &verb, &resource, &namespace, as_user, as_group).await
        }
        Command::Validate { definitions } => {
            let config = Config::load(cli.config.as_deref())?;
            let snapshot = load_snapshot(&definitions, &config)?;
            let (views, services): (usize, usize) =
                snapshot.namespaces().fold((0, 0), |(v, s), ns| {
                    (v + ns.views.len(), s + ns.services.len())
                });
            println!(
                "{}: valid ({} namespaces, {views} feature views, {services} feature services)",
                definitions.display(),
                snapshot.namespaces().count()
            );
            Ok(())
        }
        Command::Quickstart { redis, dir, listen } => quickstart(redis, dir, listen).await,
    }
}

/// Reads definitions into a snapshot.
pub fn load_snapshot(path: &Path, config: &Config) -> Result<RegistrySnapshot> {
    load_snapshot_version(path, config, 1)
}

fn load_snapshot_version(path: &Path, config: &Config, version: u64) -> Result<RegistrySnapshot> {
    let objects = definitions::load_path(path)?;
    Ok(RegistrySnapshot::build(
        objects,
        version,
        &config.projects(),
    )?)
}

/// Reloads the definitions on SIGHUP. Definitions that do not load are
/// logged and the ones being served stay in place. The handler is installed
/// before this returns, so a SIGHUP after start-up never kills the server.
fn reload_on_sighup(server: Arc<FeatureServer>, config: Config) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: definitions will not be reloaded");
            return;
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let version = server.snapshot().version() + 1;
                match load_snapshot_version(&config.serve.definitions, &config, version) {
                    Ok(snapshot) => {
                        server.replace_snapshot(snapshot);
                        tracing::info!(version, "definitions reloaded");
                    }
                    Err(e) => tracing::warn!(
                        error = %format!("{e:#}"),
                        "definitions not reloaded; still serving the previous ones"
                    ),
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (server, config);
}

/// Opens the configured online store.
pub async fn open_store(config: &Config) -> Result<OnlineStore> {
    Ok(match config.online_store.kind {
        StoreKind::Redis => OnlineStore::Redis(RedisStore::new(config.redis_settings()?)?),
        StoreKind::Sqlite => {
            let s = &config.online_store.sqlite;
            OnlineStore::Sqlite(
                SqliteStore::open(&s.path, s.key_ttl)
                    .await
                    .with_context(|| format!("opening {}", s.path.display()))?,
            )
        }
    })
}

/// Authentication and authorization as configured, with the bind check.
async fn open_auth(config: &Config, listen: std::net::SocketAddr) -> Result<Arc<Auth>> {
    let auth = Auth::from_config(&config.auth)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    auth.check_bind(listen, config.auth.allow_insecure_bind)
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(Arc::new(auth))
}

/// Reloads the RBAC policy files on SIGHUP; a policy that does not load
/// leaves the one in force.
fn reload_policy_on_sighup(auth: Arc<Auth>, config: &Config) {
    if config.auth.authentication == crate::config::AuthenticationMode::None
        || config.auth.authorization != crate::config::AuthorizationMode::Rbac
    {
        return;
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        let paths = config.auth.rbac_policy.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match crate::auth::load_policy(&paths).and_then(|p| auth.replace_policy(p)) {
                    Ok(()) => tracing::info!("RBAC policy reloaded"),
                    Err(e) => {
                        tracing::warn!(error = %e, "RBAC policy not reloaded; the previous one stays in force")
                    }
                }
            }
        });
    }
}

/// `larder auth can-i`.
async fn can_i(
    config: &Config,
    verb: &str,
    resource: &str,
    namespace: &str,
    as_user: Option<String>,
    as_groups: Vec<String>,
) -> Result<()> {
    let verb = crate::auth::known_verb(verb).map_err(|e| anyhow::anyhow!(e))?;
    let (resource, name) = resource.split_once('/').unwrap_or((resource, ""));
    let resource = crate::auth::known_resource(resource).map_err(|e| anyhow::anyhow!(e))?;
    let auth = Auth::from_config(&config.auth)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    if auth.is_disabled() {
        println!("yes (auth.authentication is none: everything is allowed)");
        return Ok(());
    }
    let user = match as_user {
        Some(name) => {
            let mut groups = as_groups;
            groups.push("system:authenticated".into());
            Arc::new(crate::auth::UserInfo { name, groups })
        }
        None => {
            let token = crate::registry::client::client_token(config.registry.token_file.as_deref())?
                .context("no --as and no client token ($LARDER_TOKEN, $LARDER_TOKEN_FILE or registry.token_file)")?;
            auth.authenticate(Some(&format!("Bearer {token}")))
                .await
                .map_err(|e| anyhow::anyhow!(e))?
        }
    };
    let allowed = auth
        .allowed(&user, verb, resource, namespace, name)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    if allowed {
        println!("yes");
        Ok(())
    } else {
        println!("no");
        Err(AnswerNo.into())
    }
}

/// One store per namespace that has its own credentials.
fn open_namespace_stores(config: &Config) -> Result<HashMap<String, OnlineStore>> {
    let settings = config.namespace_redis_settings()?;
    if !settings.is_empty() && config.online_store.kind != StoreKind::Redis {
        anyhow::bail!("namespaces.<ns>.redis credentials need online_store.type: redis");
    }
    settings
        .into_iter()
        .map(|(ns, s)| Ok((ns, OnlineStore::Redis(RedisStore::new(s)?))))
        .collect()
}

async fn serve(config: Config) -> Result<()> {
    let store = open_store(&config).await?;
    let auth = open_auth(&config, config.serve.listen).await?;
    reload_policy_on_sighup(auth.clone(), &config);
    let namespace_stores = open_namespace_stores(&config)?;
    let user_namespaces: HashMap<String, String> = config.user_namespaces().into_iter().collect();
    let listener = tokio::net::TcpListener::bind(config.serve.listen)
        .await
        .with_context(|| format!("binding {}", config.serve.listen))?;
    let offline = Arc::new(config.clone());
    let server = if config.serve.follow_registry {
        // Start empty (not ready) and take definitions from the registry.
        let sync = Arc::new(crate::registry::follower::SyncState::new());
        let server = Arc::new(
            FeatureServer::new(
                RegistrySnapshot::default(),
                store,
                config.serve.serving_settings(),
            )
            .with_auth(auth)
            .with_namespace_stores(namespace_stores, user_namespaces)
            .with_offline_store(offline)
            .following(sync.clone()),
        );
        tokio::spawn(crate::registry::follower::follow(
            server.clone(),
            sync,
            config.registry.url.clone(),
            config.projects(),
            config.serve.snapshot_cache.clone(),
            config.registry.token_file.clone(),
        ));
        server
    } else {
        let snapshot = load_snapshot(&config.serve.definitions, &config).with_context(|| {
            format!(
                "loading definitions from {}",
                config.serve.definitions.display()
            )
        })?;
        let server = Arc::new(
            FeatureServer::new(snapshot, store, config.serve.serving_settings())
                .with_auth(auth)
                .with_namespace_stores(namespace_stores, user_namespaces)
                .with_offline_store(offline),
        );
        reload_on_sighup(server.clone(), config);
        server
    };
    serving::run(listener, server, serving::shutdown_signal()).await?;
    Ok(())
}

async fn registry_serve(config: Config) -> Result<()> {
    let database = &config.registry.database;
    if let Some(path) = database
        .strip_prefix("sqlite://")
        .map(|p| p.split('?').next().unwrap_or(p))
        && let Some(dir) = Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let store = crate::registry::store::SqlRegistryStore::connect(database)
        .await
        .with_context(|| "opening the registry database".to_string())?;
    let auth = open_auth(&config, config.registry.listen).await?;
    reload_policy_on_sighup(auth.clone(), &config);
    let listener = tokio::net::TcpListener::bind(config.registry.listen)
        .await
        .with_context(|| format!("binding {}", config.registry.listen))?;
    crate::registry::api::run(
        listener,
        crate::registry::api::Registry::with_auth(store, auth),
        serving::shutdown_signal(),
    )
    .await?;
    Ok(())
}

const QUICKSTART_DEFINITIONS: &str = r#"# The driver features of the Feast x Kubeflow story, owned by Alice.
apiVersion: features.kubeflow.org/v1
kind: Entity
metadata: { name: driver, namespace: kubeflow-alice }
spec:
  joinKeys: [{ name: driver_id, valueType: INT64 }]
  description: A driver of the ride-hailing service
---
apiVersion: features.kubeflow.org/v1
kind: DataSource
metadata: { name: driver_daily_stats, namespace: kubeflow-alice }
spec:
  type: sqlite
  table: driver_daily_stats
  timestampField: event_timestamp
---
apiVersion: features.kubeflow.org/v1
kind: FeatureView
metadata: { name: driver_daily_stats_fv, namespace: kubeflow-alice }
spec:
  entities: [driver]
  source: driver_daily_stats
  features:
    - { name: profit, valueType: DOUBLE }
    - { name: acc_rate, valueType: FLOAT }
    - { name: trips, valueType: INT64 }
    - { name: city, valueType: STRING }
---
apiVersion: features.kubeflow.org/v1
kind: FeatureService
metadata: { name: driver_activity, namespace: kubeflow-alice }
spec:
  features:
    - driver_daily_stats_fv:profit
    - driver_daily_stats_fv:acc_rate
---
apiVersion: features.kubeflow.org/v1
kind: OnDemandFeatureView
metadata: { name: driver_pay_odfv, namespace: kubeflow-alice }
spec:
  sources:
    featureViews: [driver_daily_stats_fv]
    requestFields: [{ name: bonus, valueType: DOUBLE }]
  features:
    - name: profit_per_trip
      valueType: DOUBLE
      expression: driver_daily_stats_fv.profit / double(driver_daily_stats_fv.trips)
    - name: profit_with_bonus
      valueType: DOUBLE
      expression: driver_daily_stats_fv.profit + bonus
"#;

async fn quickstart(redis: Option<String>, dir: PathBuf, listen: SocketAddr) -> Result<()> {
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let defs = dir.join("definitions.yaml");
    std::fs::write(&defs, QUICKSTART_DEFINITIONS)
        .with_context(|| format!("writing {}", defs.display()))?;
    let mut config = Config::default();
    config.serve.definitions = defs.clone();
    config.serve.listen = listen;
    config.serve.default_namespace = "kubeflow-alice".into();
    match &redis {
        Some(url) => {
            config.online_store.kind = StoreKind::Redis;
            config.online_store.redis.url = url.clone();
        }
        None => {
            config.online_store.kind = StoreKind::Sqlite;
            config.online_store.sqlite.path = dir.join("online.db");
        }
    }
    let snapshot = load_snapshot(&defs, &config)?;
    let store = open_store(&config).await?;
    let view = snapshot
        .view("kubeflow-alice", "driver_daily_stats_fv")
        .context("the demo view is defined")?
        .clone();
    let now = EventTime::now();
    let cities = ["Athens", "Patras", "Thessaloniki", "Heraklion", "Larissa"];
    let rows: Vec<ViewRow> = (0..5)
        .map(|i| ViewRow {
            keys: vec![Value::Int64(1001 + i)],
            event_time: now,
            values: vec![
                Value::Double(97.9 - 6.0 * i as f64),
                Value::Float(0.21 + 0.15 * i as f32),
                Value::Int64(12 - i),
                Value::String(cities[i as usize].into()),
            ],
        })
        .collect();
    store
        .write_rows(&view, &rows)
        .await
        .context("writing the demo features")?;
    let server = Arc::new(FeatureServer::new(
        snapshot,
        store,
        config.serve.serving_settings(),
    ));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    println!(
        r#"
larder quickstart: 5 drivers of kubeflow-alice/driver_daily_stats_fv on {store}.
Definitions: {defs}

Try (HTTP, Feast's JSON API):
  curl -s http://{addr}/get-online-features -H 'content-type: application/json' \
    -d '{{"features": ["driver_daily_stats_fv:profit", "driver_daily_stats_fv:city"], "entities": {{"driver_id": [1001, 1002, 9999]}}, "full_feature_names": true}}'

Try (gRPC, feast.serving.ServingService, via reflection):
  grpcurl -plaintext -d '{{"features": {{"val": ["driver_daily_stats_fv:trips"]}}, "entities": {{"driver_id": {{"val": [{{"int64_val": 1003}}]}}}}}}' \
    {addr} feast.serving.ServingService/GetOnlineFeatures

Or a feature service:
  curl -s http://{addr}/get-online-features -d '{{"feature_service": "driver_activity", "entities": {{"driver_id": [1001]}}}}'

On-demand features, computed per request from stored ones and request data:
  curl -s http://{addr}/get-online-features -d '{{"features": ["driver_pay_odfv:profit_per_trip", "driver_pay_odfv:profit_with_bonus"], "entities": {{"driver_id": [1001, 1002]}}, "request_context": {{"bonus": [5.0, 2.5]}}}}'

Ctrl-C stops the server.
"#,
        store = redis.as_deref().unwrap_or("the embedded SQLite store"),
        defs = defs.display(),
    );
    serving::run(listener, server, serving::shutdown_signal()).await?;
    Ok(())
}
