//! The offline store: the timestamped history of batch sources, in
//! PostgreSQL (`type: postgres` sources) or an embedded SQLite file
//! (`type: sqlite`). From it come point-in-time-correct training sets
//! ([`historical`]) and the latest values materialized into the online
//! store ([`materialize`]); [`write`] appends rows to it idempotently.
//!
//! Every PostgreSQL connection is made as a database user that acts for
//! the caller (`Config::database_user`), so PostgreSQL's own GRANTs decide
//! what each may read.
//!
//! Timestamps: PostgreSQL columns are `timestamptz` (or `timestamp`, read as
//! UTC). SQLite columns hold ISO 8601 text in UTC (`2024-05-01 12:00:00`,
//! optionally with `T`, fractional seconds and `Z`), as Python's sqlite3 and
//! pandas write them.

pub mod flight;
pub mod historical;
pub mod materialize;
pub mod write;

use std::path::PathBuf;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use crate::config::Config;

/// What went wrong in the offline store, in terms a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// The database refused the user (a missing GRANT): the message names
    /// the table and the user.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A table, column, view or source that does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Bad input: entity rows, references, arguments.
    #[error("{0}")]
    Invalid(String),
    /// The database failed or could not be reached.
    #[error("offline store: {0}")]
    Database(String),
    /// The online store failed or could not be reached (materialization).
    #[error("online store: {0}")]
    Online(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl OfflineError {
    /// Classifies a database error; `context` says what was being done
    /// ("reading kubeflow-alice/driver_daily_stats as bob").
    pub fn from_sqlx(e: sqlx::Error, context: &str) -> Self {
        if let sqlx::Error::Database(db) = &e {
            match db.code().as_deref() {
                // insufficient_privilege; PostgreSQL's message names the
                // table ("permission denied for table driver_daily_stats").
                Some("42501") => {
                    return OfflineError::PermissionDenied(format!("{context}: {}", db.message()));
                }
                // undefined_table, undefined_column
                Some("42P01") | Some("42703") => {
                    return OfflineError::NotFound(format!("{context}: {}", db.message()));
                }
                _ => {}
            }
            let message = db.message();
            if message.contains("no such table") || message.contains("no such column") {
                return OfflineError::NotFound(format!("{context}: {message}"));
            }
        }
        OfflineError::Database(format!("{context}: {e}"))
    }
}

/// How to reach the offline stores, and as whom.
#[derive(Debug, Clone)]
pub struct OfflineStore {
    host: String,
    port: u16,
    default_database: String,
    user: String,
    password: Option<String>,
    connect_timeout: Duration,
    sqlite_path: PathBuf,
    /// Rows per batch when streaming.
    pub batch_rows: usize,
}

impl OfflineStore {
    /// The offline store as the database user acting for `namespace`.
    pub fn for_namespace(config: &Config, namespace: &str) -> Result<Self, OfflineError> {
        let (user, password) = config
            .database_user(namespace)
            .map_err(|e| OfflineError::Invalid(e.to_string()))?;
        let pg = &config.offline_store.postgres;
        Ok(OfflineStore {
            host: pg.host.clone(),
            port: pg.port,
            default_database: pg.database.clone(),
            user,
            password,
            connect_timeout: pg.connect_timeout,
            sqlite_path: config.offline_store.sqlite.path.clone(),
            batch_rows: config.offline_store.batch_rows.max(1),
        })
    }

    /// The database user connections are made as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// A new connection to PostgreSQL database `database` (empty: the
    /// default), as this store's user. One connection per operation, so
    /// that TEMPORARY tables live exactly as long as it.
    pub async fn postgres(&self, database: &str) -> Result<PgConnection, OfflineError> {
        let database = if database.is_empty() {
            &self.default_database
        } else {
            database
        };
        let mut options = PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .database(database)
            .username(&self.user)
            .application_name("larder")
            .disable_statement_logging();
        if let Some(p) = &self.password {
            options = options.password(p);
        }
        tokio::time::timeout(self.connect_timeout, options.connect())
            .await
            .map_err(|_| {
                OfflineError::Database(format!(
                    "connecting to PostgreSQL at {}:{} took longer than {:?}",
                    self.host, self.port, self.connect_timeout
                ))
            })?
            .map_err(|e| {
                OfflineError::from_sqlx(
                    e,
                    &format!(
                        "connecting to PostgreSQL database {database:?} as {:?}",
                        self.user
                    ),
                )
            })
    }

    /// The embedded SQLite offline store (created when missing).
    pub async fn sqlite(&self) -> Result<SqlitePool, OfflineError> {
        if let Some(dir) = self
            .sqlite_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)?;
        }
        let options = SqliteConnectOptions::new()
            .filename(&self.sqlite_path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| {
                OfflineError::from_sqlx(
                    e,
                    &format!("opening the offline store {}", self.sqlite_path.display()),
                )
            })
    }
}

/// `"name"` with embedded quotes doubled: a safe SQL identifier for both
/// PostgreSQL and SQLite. Definitions already refuse names with quotes.
pub fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}
