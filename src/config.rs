//! Configuration: built-in defaults, then one YAML file, then environment
//! variables `LARDER__SECTION__KEY` (e.g. `LARDER__SERVE__LISTEN`),
//! validated at start-up with messages that name the bad key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Yaml};
use serde::{Deserialize, Serialize};

use crate::online::layout::KeyVersion;
use crate::online::{ReadCommand, RedisCredentials, RedisSettings};
use crate::serving::{Limits, ServingSettings};

/// larder's whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub serve: ServeConfig,
    pub registry: RegistryConfig,
    pub online_store: OnlineStoreConfig,
    /// Where batch sources' history lives.
    pub offline_store: OfflineStoreConfig,
    /// Who may call the servers, and what they may do.
    pub auth: AuthConfig,
    /// `larder ingest`: batching, the broker, its metrics address.
    pub ingest: IngestConfig,
    /// Per-namespace settings, by namespace name.
    pub namespaces: BTreeMap<String, NamespaceConfig>,
}

/// `registry`: the registry server, and where clients find it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Where `larder registry serve` keeps definitions: `sqlite://FILE?mode=rwc`,
    /// `postgres://...` or `mysql://...`.
    pub database: String,
    /// The address `larder registry serve` listens on.
    pub listen: SocketAddr,
    /// Where clients (`larder apply/get/delete`, `larder serve` when
    /// following) reach the registry.
    pub url: String,
    /// The bearer token clients send to the registry, read fresh for every
    /// request (projected service-account tokens rotate). `$LARDER_TOKEN`
    /// or `$LARDER_TOKEN_FILE` when unset.
    pub token_file: Option<PathBuf>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            database: "sqlite://.larder/registry.db?mode=rwc".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 6570)),
            url: "http://127.0.0.1:6570".into(),
            token_file: None,
        }
    }
}

/// `serve`: the online feature server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// gRPC and HTTP share this address. Feast's clients expect port 6566.
    pub listen: SocketAddr,
    /// A manifest file or a folder of them.
    pub definitions: PathBuf,
    /// Follow the registry at `registry.url` instead of reading
    /// `definitions`.
    pub follow_registry: bool,
    /// When following: a file the last snapshot is saved to and served from
    /// at start-up until the registry answers.
    pub snapshot_cache: Option<PathBuf>,
    /// The namespace of unqualified feature refs when a request names none.
    pub default_namespace: String,
    #[serde(with = "duration_text")]
    pub request_timeout: Duration,
    pub max_entity_rows: usize,
    pub max_features: usize,
    pub max_request_bytes: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        let s = ServingSettings::default();
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 6566)),
            definitions: PathBuf::from("definitions"),
            follow_registry: false,
            snapshot_cache: None,
            default_namespace: s.default_namespace,
            request_timeout: s.request_timeout,
            max_entity_rows: s.limits.max_entity_rows,
            max_features: s.limits.max_features,
            max_request_bytes: s.max_request_bytes,
        }
    }
}

impl ServeConfig {
    pub fn serving_settings(&self) -> ServingSettings {
        ServingSettings {
            default_namespace: self.default_namespace.clone(),
            limits: Limits {
                max_entity_rows: self.max_entity_rows,
                max_features: self.max_features,
            },
            request_timeout: self.request_timeout,
            max_request_bytes: self.max_request_bytes,
        }
    }
}

/// Which online store to use.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Redis,
    /// The embedded SQLite file: no services needed.
    #[default]
    Sqlite,
}

/// `online_store`.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OnlineStoreConfig {
    #[serde(rename = "type")]
    pub kind: StoreKind,
    pub redis: RedisConfig,
    pub sqlite: SqliteConfig,
}

/// `online_store.redis`; see [`RedisSettings`].
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    pub url: String,
    pub cluster_nodes: Vec<String>,
    pub connections: usize,
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    #[serde(with = "duration_text")]
    pub connect_timeout: Duration,
    pub entity_key_serialization_version: u8,
    #[serde(with = "duration_text")]
    pub key_ttl: Duration,
    /// `auto` (chosen per key), `hmget` (the wanted fields) or `hgetall`
    /// (the whole hash).
    pub read_command: ReadCommandConfig,
}

/// `online_store.redis.read_command`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadCommandConfig {
    #[default]
    Auto,
    Hmget,
    Hgetall,
}

impl Default for RedisConfig {
    fn default() -> Self {
        let d = RedisSettings::default();
        RedisConfig {
            url: d.url,
            cluster_nodes: d.cluster_nodes,
            connections: d.connections,
            timeout: d.timeout,
            connect_timeout: d.connect_timeout,
            entity_key_serialization_version: d.entity_key_serialization_version.into(),
            key_ttl: d.key_ttl,
            read_command: ReadCommandConfig::Auto,
        }
    }
}

/// `online_store.sqlite`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteConfig {
    pub path: PathBuf,
    #[serde(with = "duration_text")]
    pub key_ttl: Duration,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            path: PathBuf::from(".larder/online.db"),
            key_ttl: Duration::ZERO,
        }
    }
}

/// `offline_store`: PostgreSQL for `type: postgres` sources, an embedded
/// SQLite file for `type: sqlite` ones.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OfflineStoreConfig {
    pub postgres: PostgresConfig,
    pub sqlite: SqliteOfflineConfig,
    /// Rows per batch when materializing and streaming results.
    pub batch_rows: usize,
    /// Where `larder offline serve` serves training sets over Arrow Flight.
    pub flight_listen: SocketAddr,
}

impl Default for OfflineStoreConfig {
    fn default() -> Self {
        OfflineStoreConfig {
            postgres: PostgresConfig::default(),
            sqlite: SqliteOfflineConfig::default(),
            batch_rows: 10_000,
            flight_listen: SocketAddr::from(([127, 0, 0, 1], 6571)),
        }
    }
}

/// `offline_store.postgres`: where the server is, and the user to connect
/// as when the caller's namespace has no `namespaces.<ns>.database` user.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    pub host: String,
    pub port: u16,
    /// The database of sources that name none.
    pub database: String,
    /// The fallback user; its password from `password_file` or
    /// `password_env` (none: trust or peer authentication).
    pub user: String,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    #[serde(with = "duration_text")]
    pub connect_timeout: Duration,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            host: "127.0.0.1".into(),
            port: 5432,
            database: "postgres".into(),
            user: "postgres".into(),
            password_file: None,
            password_env: None,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// `offline_store.sqlite`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteOfflineConfig {
    /// The database file holding `type: sqlite` source tables.
    pub path: PathBuf,
}

impl Default for SqliteOfflineConfig {
    fn default() -> Self {
        SqliteOfflineConfig {
            path: PathBuf::from(".larder/offline.db"),
        }
    }
}

/// `ingest`: how `larder ingest` batches and talks to the broker.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// `/health` and `/metrics` of `larder ingest`.
    pub listen: SocketAddr,
    /// A batch is written once it holds this many messages...
    pub batch_messages: usize,
    /// ...or this long after its first message arrived.
    #[serde(with = "duration_text")]
    pub batch_linger: Duration,
    /// Where a new consumer group starts: `earliest` or `latest`.
    pub start_from: crate::ingest::kafka::StartFrom,
    /// How long SIGTERM waits for the batch being written.
    #[serde(with = "duration_text")]
    pub drain_timeout: Duration,
    /// Extra librdkafka properties (e.g. `security.protocol`), applied last.
    pub kafka: BTreeMap<String, String>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let d = crate::ingest::kafka::IngestSettings::default();
        IngestConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 6572)),
            batch_messages: d.batch_messages,
            batch_linger: d.batch_linger,
            start_from: d.start_from,
            drain_timeout: d.drain_timeout,
            kafka: d.kafka_properties,
        }
    }
}

impl IngestConfig {
    pub fn settings(&self) -> crate::ingest::kafka::IngestSettings {
        crate::ingest::kafka::IngestSettings {
            batch_messages: self.batch_messages,
            batch_linger: self.batch_linger,
            start_from: self.start_from,
            kafka_properties: self.kafka.clone(),
            drain_timeout: self.drain_timeout,
        }
    }
}

/// `namespaces.<name>`.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceConfig {
    /// The Feast project name of the namespace in the online store;
    /// default: the namespace with `-` replaced by `_`.
    pub project: Option<String>,
    /// People (callers that are not service accounts) who act in this
    /// namespace: their reads use its store credentials. A service account
    /// acts in its own namespace.
    pub users: Vec<String>,
    /// The namespace's Redis ACL user: reads of callers acting in this
    /// namespace and writes to its views use it.
    pub redis: Option<SecretUser>,
    /// The namespace's database user for the offline store.
    pub database: Option<SecretUser>,
}

/// A user name and where its password comes from: a file (a mounted
/// Kubernetes Secret) or an environment variable. Never the password itself.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SecretUser {
    pub username: String,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
}

impl SecretUser {
    /// Reads the password; `key` names this entry in errors.
    pub fn password(&self, key: &str) -> Result<String, ConfigError> {
        match (&self.password_file, &self.password_env) {
            (Some(file), None) => std::fs::read_to_string(file)
                .map(|p| p.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| ConfigError(format!("`{key}.password_file` {}: {e}", file.display()))),
            (None, Some(var)) => std::env::var(var)
                .map_err(|_| ConfigError(format!("`{key}.password_env`: ${var} is not set"))),
            _ => Err(ConfigError(format!(
                "`{key}`: set exactly one of password_file and password_env"
            ))),
        }
    }
}

/// `auth.authentication`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthenticationMode {
    /// Development only: no tokens, everything allowed, loopback binds only
    /// unless `allow_insecure_bind`.
    #[default]
    None,
    /// A Kubernetes static token file.
    Static,
    /// Service-account JWTs verified offline against a JWKS.
    Jwks,
    /// TokenReview against the Kubernetes API server.
    Kubernetes,
}

/// `auth.authorization`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizationMode {
    /// Kubernetes RBAC manifests evaluated in-process.
    #[default]
    Rbac,
    /// SubjectAccessReview against the Kubernetes API server.
    Kubernetes,
}

/// `auth.jwks`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwksConfig {
    /// The issuer's keys in a file...
    pub file: Option<PathBuf>,
    /// ...or at a URL (e.g. `https://kubernetes.default.svc/openid/v1/jwks`).
    pub url: Option<String>,
    /// The `iss` tokens must carry.
    pub issuer: Option<String>,
    /// A CA bundle for `url`.
    pub ca_file: Option<PathBuf>,
    /// A bearer token file sent to `url`.
    pub token_file: Option<PathBuf>,
    /// How often the keys are reloaded; `0s` never.
    #[serde(with = "duration_text")]
    pub refresh: Duration,
}

impl Default for JwksConfig {
    fn default() -> Self {
        JwksConfig {
            file: None,
            url: None,
            issuer: None,
            ca_file: None,
            token_file: None,
            refresh: Duration::from_secs(300),
        }
    }
}

/// `auth`: the same for the registry and the feature server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub authentication: AuthenticationMode,
    pub authorization: AuthorizationMode,
    /// Audiences a token must be issued for.
    pub audiences: Vec<String>,
    pub static_token_file: Option<PathBuf>,
    pub jwks: JwksConfig,
    /// For the `kubernetes` modes: a kubeconfig; in-cluster config when
    /// unset and running in a pod, else `$KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    pub kube_context: Option<String>,
    /// For `rbac`: files or folders of Role, ClusterRole, RoleBinding and
    /// ClusterRoleBinding manifests. Reloaded on SIGHUP.
    pub rbac_policy: Vec<PathBuf>,
    /// How long a verified identity is remembered (never past the token's
    /// expiry).
    #[serde(with = "duration_text")]
    pub identity_ttl: Duration,
    /// How long an allow is remembered.
    #[serde(with = "duration_text")]
    pub allow_ttl: Duration,
    /// How long a deny is remembered.
    #[serde(with = "duration_text")]
    pub deny_ttl: Duration,
    /// The longest a TokenReview or SubjectAccessReview may take; slower
    /// answers are refusals.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Let authentication `none` listen beyond loopback.
    pub allow_insecure_bind: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            authentication: AuthenticationMode::None,
            authorization: AuthorizationMode::Rbac,
            audiences: vec![crate::auth::API_GROUP.into()],
            static_token_file: None,
            jwks: JwksConfig::default(),
            kubeconfig: None,
            kube_context: None,
            rbac_policy: Vec::new(),
            identity_ttl: Duration::from_secs(60),
            allow_ttl: Duration::from_secs(10),
            deny_ttl: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            allow_insecure_bind: false,
        }
    }
}

/// A configuration that cannot be used, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads defaults, then `file` when given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError(format!("{} does not exist", file.display())));
            }
            figment = figment.merge(Yaml::file(file));
        }
        figment = figment.merge(Env::prefixed("LARDER__").split("__").lowercase(true));
        let config: Config = figment.extract().map_err(|e| {
            let errors: Vec<String> = e
                .into_iter()
                .map(|e| {
                    let key = e.path.join(".");
                    if key.is_empty() {
                        e.to_string()
                    } else {
                        format!("`{key}`: {}", e.kind)
                    }
                })
                .collect();
            ConfigError(errors.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.serve;
        for (key, value) in [
            ("serve.max_entity_rows", s.max_entity_rows),
            ("serve.max_features", s.max_features),
            ("serve.max_request_bytes", s.max_request_bytes),
            (
                "online_store.redis.connections",
                self.online_store.redis.connections,
            ),
            ("ingest.batch_messages", self.ingest.batch_messages),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("`{key}` must be greater than 0")));
            }
        }
        if self.ingest.batch_linger.is_zero() {
            return Err(ConfigError(
                "`ingest.batch_linger` must be greater than 0".into(),
            ));
        }
        if s.request_timeout.is_zero() {
            return Err(ConfigError(
                "`serve.request_timeout` must be greater than 0".into(),
            ));
        }
        crate::model::check_dns1123_label(&s.default_namespace)
            .map_err(|why| ConfigError(format!("`serve.default_namespace`: {why}")))?;
        self.redis_settings()?;
        for (ns, c) in &self.namespaces {
            crate::model::check_dns1123_label(ns)
                .map_err(|why| ConfigError(format!("`namespaces.{ns}`: {why}")))?;
            if let Some(p) = &c.project
                && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            {
                return Err(ConfigError(format!(
                    "`namespaces.{ns}.project`: {p:?} may contain only letters, digits and '_'"
                )));
            }
        }
        let mut seen = BTreeMap::new();
        for (ns, c) in &self.namespaces {
            for user in &c.users {
                if let Some(other) = seen.insert(user, ns) {
                    return Err(ConfigError(format!(
                        "`namespaces.{ns}.users`: {user:?} is already listed in namespaces.{other}; \
                         a person acts in one namespace"
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn redis_settings(&self) -> Result<RedisSettings, ConfigError> {
        let r = &self.online_store.redis;
        Ok(RedisSettings {
            url: r.url.clone(),
            cluster_nodes: r.cluster_nodes.clone(),
            connections: r.connections,
            timeout: r.timeout,
            connect_timeout: r.connect_timeout,
            entity_key_serialization_version: KeyVersion::try_from(
                r.entity_key_serialization_version,
            )
            .map_err(|why| {
                ConfigError(format!(
                    "`online_store.redis.entity_key_serialization_version`: {why}"
                ))
            })?,
            key_ttl: r.key_ttl,
            read_command: match r.read_command {
                ReadCommandConfig::Auto => ReadCommand::Auto,
                ReadCommandConfig::Hmget => ReadCommand::Hmget,
                ReadCommandConfig::Hgetall => ReadCommand::Hgetall,
            },
            credentials: None,
        })
    }

    /// The Redis settings of each namespace that has its own ACL user.
    pub fn namespace_redis_settings(&self) -> Result<BTreeMap<String, RedisSettings>, ConfigError> {
        let base = self.redis_settings()?;
        let mut out = BTreeMap::new();
        for (ns, c) in &self.namespaces {
            if let Some(user) = &c.redis {
                let key = format!("namespaces.{ns}.redis");
                if user.username.is_empty() {
                    return Err(ConfigError(format!("`{key}.username` is empty")));
                }
                let credentials = RedisCredentials {
                    username: user.username.clone(),
                    password: user.password(&key)?,
                };
                out.insert(
                    ns.clone(),
                    RedisSettings {
                        credentials: Some(credentials),
                        ..base.clone()
                    },
                );
            }
        }
        Ok(out)
    }

    /// The database user (and password, when one is configured) that acts
    /// for `namespace` in the offline store: its `namespaces.<ns>.database`
    /// user, else `offline_store.postgres.user`.
    pub fn database_user(&self, namespace: &str) -> Result<(String, Option<String>), ConfigError> {
        if let Some(user) = self
            .namespaces
            .get(namespace)
            .and_then(|c| c.database.as_ref())
        {
            let key = format!("namespaces.{namespace}.database");
            return Ok((user.username.clone(), Some(user.password(&key)?)));
        }
        let pg = &self.offline_store.postgres;
        let password = match (&pg.password_file, &pg.password_env) {
            (None, None) => None,
            (file, env) => Some(
                SecretUser {
                    username: pg.user.clone(),
                    password_file: file.clone(),
                    password_env: env.clone(),
                }
                .password("offline_store.postgres")?,
            ),
        };
        Ok((pg.user.clone(), password))
    }

    /// The namespace each configured person acts in.
    pub fn user_namespaces(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (ns, c) in &self.namespaces {
            for user in &c.users {
                out.entry(user.clone()).or_insert_with(|| ns.clone());
            }
        }
        out
    }

    /// Project-name overrides by namespace.
    pub fn projects(&self) -> BTreeMap<String, String> {
        self.namespaces
            .iter()
            .filter_map(|(ns, c)| c.project.clone().map(|p| (ns.clone(), p)))
            .collect()
    }
}

/// Durations written as text: `250ms`, `5s`, `1d`.
mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a duration like 250ms or 5s: {e}"))
        })
    }

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*v).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.serve.listen.port(), 6566);
    }

    #[test]
    fn the_example_config_loads() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/larder.yaml");
        let c = Config::load(Some(&file)).unwrap();
        assert_eq!(c.serve.listen.port(), 6566);
        assert_eq!(c.online_store.redis.read_command, ReadCommandConfig::Auto);
    }

    #[test]
    fn bad_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("larder.yaml");
        std::fs::write(&file, "serve:\n  listen: 127.0.0.1:1\n  bogus: 1\n").unwrap();
        let err = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");

        std::fs::write(&file, "serve:\n  request_timeout: soon\n").unwrap();
        let err = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("serve.request_timeout"), "{err}");

        std::fs::write(
            &file,
            "online_store:\n  redis:\n    entity_key_serialization_version: 4\n",
        )
        .unwrap();
        let err = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("entity_key_serialization_version"), "{err}");
    }
}
