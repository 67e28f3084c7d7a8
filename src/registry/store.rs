//! Where the registry keeps definitions: SQL, through sqlx, on SQLite (the
//! embedded default), MySQL/MariaDB or PostgreSQL.
//!
//! Every write takes the next value of one store-wide counter, so
//! `resourceVersion`s are unique and ordered across all objects, and a
//! reader can ask for everything that changed after a version. Taking the
//! counter is the first statement of every write transaction: it locks the
//! counter row (the database on SQLite), which serializes writers, so a
//! version is never handed out twice and never committed out of order.

use std::future::Future;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// A stored object: a manifest without its server-managed metadata, plus
/// that metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    /// The manifest kind, e.g. `FeatureView`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: i64,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
    /// The manifest as JSON.
    pub body: serde_json::Value,
}

/// One change to the store, for readers that follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub resource_version: i64,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub deleted: bool,
}

/// A time range of a feature view that was materialized into the online
/// store: event times in (start, end], milliseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Interval {
    pub start_ms: i64,
    pub end_ms: i64,
    pub recorded_at_ms: i64,
}

/// What the store could not do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{kind} {namespace}/{name} has resourceVersion {current}, not {expected}: it changed since it was read"
    )]
    Conflict {
        kind: String,
        namespace: String,
        name: String,
        expected: i64,
        current: i64,
    },
    #[error("{kind} {namespace}/{name} does not exist")]
    NotFound {
        kind: String,
        namespace: String,
        name: String,
    },
    #[error("registry database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("registry database holds a body that is not JSON: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// The registry's storage contract.
pub trait RegistryStore: Send + Sync {
    /// The newest resourceVersion handed out (0 for an empty store).
    fn version(&self) -> impl Future<Output = Result<i64, StoreError>> + Send;

    fn get(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<StoredObject>, StoreError>> + Send;

    /// Objects of `kind`, in one namespace or all, ordered by namespace and
    /// name.
    fn list(
        &self,
        kind: &str,
        namespace: Option<&str>,
    ) -> impl Future<Output = Result<Vec<StoredObject>, StoreError>> + Send;

    /// Every object, ordered by kind, namespace and name.
    fn list_all(&self) -> impl Future<Output = Result<Vec<StoredObject>, StoreError>> + Send;

    /// Creates or replaces an object. With `expected`, the stored object must
    /// have exactly that resourceVersion (0: must not exist yet).
    fn put(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        body: &serde_json::Value,
        expected: Option<i64>,
    ) -> impl Future<Output = Result<StoredObject, StoreError>> + Send;

    /// Deletes an object, with the same `expected` check as `put`.
    fn delete(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        expected: Option<i64>,
    ) -> impl Future<Output = Result<StoredObject, StoreError>> + Send;

    /// Changes after `version`, oldest first.
    fn changes_since(
        &self,
        version: i64,
    ) -> impl Future<Output = Result<Vec<Change>, StoreError>> + Send;

    /// Records that (start, end] of a feature view was materialized.
    fn append_interval(
        &self,
        namespace: &str,
        view: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> impl Future<Output = Result<Interval, StoreError>> + Send;

    /// The materialized intervals of a feature view, oldest first.
    fn intervals(
        &self,
        namespace: &str,
        view: &str,
    ) -> impl Future<Output = Result<Vec<Interval>, StoreError>> + Send;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

/// The registry store on any of the three databases.
pub struct SqlRegistryStore {
    pool: AnyPool,
    dialect: Dialect,
}

impl SqlRegistryStore {
    /// Connects to `url` (`sqlite://file?mode=rwc`, `postgres://...`,
    /// `mysql://...`) and creates the tables when missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            Dialect::MySql
        } else {
            return Err(StoreError::Database(sqlx::Error::Configuration(
                format!(
                    "unsupported registry database url {url:?} (use sqlite:, postgres: or mysql:)"
                )
                .into(),
            )));
        };
        let url = url.replacen("mariadb:", "mysql:", 1);
        let pool = AnyPoolOptions::new()
            // SQLite allows one writer; a single connection also keeps
            // BEGIN's lock upgrade from ever failing with SQLITE_BUSY.
            .max_connections(if dialect == Dialect::Sqlite { 1 } else { 8 })
            .connect(&url)
            .await?;
        let store = SqlRegistryStore { pool, dialect };
        store.migrate().await?;
        Ok(store)
    }

    /// `?` placeholders as the dialect wants them.
    fn sql(&self, text: &str) -> String {
        if self.dialect != Dialect::Postgres {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len() + 8);
        let mut n = 0;
        for c in text.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let statements = [
            "CREATE TABLE IF NOT EXISTS larder_objects (
                kind VARCHAR(64) NOT NULL,
                namespace VARCHAR(63) NOT NULL,
                name VARCHAR(253) NOT NULL,
                uid VARCHAR(36) NOT NULL,
                resource_version BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                body TEXT NOT NULL,
                PRIMARY KEY (kind, namespace, name)
            )",
            "CREATE TABLE IF NOT EXISTS larder_changes (
                resource_version BIGINT NOT NULL PRIMARY KEY,
                kind VARCHAR(64) NOT NULL,
                namespace VARCHAR(63) NOT NULL,
                name VARCHAR(253) NOT NULL,
                deleted BIGINT NOT NULL
            )",
            "CREATE TABLE IF NOT EXISTS larder_materializations (
                namespace VARCHAR(63) NOT NULL,
                view_name VARCHAR(253) NOT NULL,
                seq BIGINT NOT NULL,
                start_ms BIGINT NOT NULL,
                end_ms BIGINT NOT NULL,
                recorded_at BIGINT NOT NULL,
                PRIMARY KEY (namespace, view_name, seq)
            )",
            "CREATE TABLE IF NOT EXISTS larder_version (
                id INTEGER NOT NULL PRIMARY KEY,
                version BIGINT NOT NULL
            )",
        ];
        for s in statements {
            sqlx::query(s).execute(&self.pool).await?;
        }
        let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM larder_version")
            .fetch_one(&self.pool)
            .await?;
        if exists == 0 {
            // Two starting servers may race here; the primary key lets one win.
            let _ = sqlx::query("INSERT INTO larder_version (id, version) VALUES (1, 0)")
                .execute(&self.pool)
                .await;
        }
        Ok(())
    }

    fn object(row: &AnyRow) -> Result<StoredObject, StoreError> {
        // MySQL reports TEXT columns as BLOBs through the Any driver.
        let body: String = match row.try_get("body") {
            Ok(text) => text,
            Err(_) => String::from_utf8(row.try_get::<Vec<u8>, _>("body")?)
                .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))?,
        };
        Ok(StoredObject {
            kind: row.try_get("kind")?,
            namespace: row.try_get("namespace")?,
            name: row.try_get("name")?,
            uid: row.try_get("uid")?,
            resource_version: row.try_get("resource_version")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            body: serde_json::from_str(&body)?,
        })
    }

    /// Takes the next resourceVersion inside `tx`, locking the counter.
    async fn next_version(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ) -> Result<i64, StoreError> {
        sqlx::query("UPDATE larder_version SET version = version + 1 WHERE id = 1")
            .execute(&mut **tx)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT version FROM larder_version WHERE id = 1")
                .fetch_one(&mut **tx)
                .await?,
        )
    }

    async fn current(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredObject>, StoreError> {
        let row = sqlx::query(&self.sql(
            "SELECT kind, namespace, name, uid, resource_version, created_at, updated_at, body
             FROM larder_objects WHERE kind = ? AND namespace = ? AND name = ?",
        ))
        .bind(kind)
        .bind(namespace)
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?;
        row.as_ref().map(Self::object).transpose()
    }

    async fn record_change(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        version: i64,
        kind: &str,
        namespace: &str,
        name: &str,
        deleted: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "INSERT INTO larder_changes (resource_version, kind, namespace, name, deleted)
             VALUES (?, ?, ?, ?, ?)",
        ))
        .bind(version)
        .bind(kind)
        .bind(namespace)
        .bind(name)
        .bind(i64::from(deleted))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn check_expected(
    current: Option<&StoredObject>,
    expected: Option<i64>,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<(), StoreError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let found = current.map_or(0, |c| c.resource_version);
    if found != expected {
        return Err(StoreError::Conflict {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            expected,
            current: found,
        });
    }
    Ok(())
}

impl RegistryStore for SqlRegistryStore {
    async fn version(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT version FROM larder_version WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn get(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredObject>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let found = self.current(&mut tx, kind, namespace, name).await?;
        tx.commit().await?;
        Ok(found)
    }

    async fn list(
        &self,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<StoredObject>, StoreError> {
        let columns = "SELECT kind, namespace, name, uid, resource_version, created_at, updated_at, body FROM larder_objects";
        let rows = match namespace {
            Some(ns) => {
                sqlx::query(&self.sql(&format!(
                    "{columns} WHERE kind = ? AND namespace = ? ORDER BY namespace, name"
                )))
                .bind(kind)
                .bind(ns)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&self.sql(&format!(
                    "{columns} WHERE kind = ? ORDER BY namespace, name"
                )))
                .bind(kind)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(Self::object).collect()
    }

    async fn list_all(&self) -> Result<Vec<StoredObject>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, namespace, name, uid, resource_version, created_at, updated_at, body
             FROM larder_objects ORDER BY kind, namespace, name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::object).collect()
    }

    async fn put(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        body: &serde_json::Value,
        expected: Option<i64>,
    ) -> Result<StoredObject, StoreError> {
        let text = serde_json::to_string(body)?;
        let mut tx = self.pool.begin().await?;
        let version = self.next_version(&mut tx).await?;
        let current = self.current(&mut tx, kind, namespace, name).await?;
        check_expected(current.as_ref(), expected, kind, namespace, name)?;
        let now = now_millis();
        let stored = match current {
            Some(c) => {
                sqlx::query(&self.sql(
                    "UPDATE larder_objects SET resource_version = ?, updated_at = ?, body = ?
                     WHERE kind = ? AND namespace = ? AND name = ?",
                ))
                .bind(version)
                .bind(now)
                .bind(&text)
                .bind(kind)
                .bind(namespace)
                .bind(name)
                .execute(&mut *tx)
                .await?;
                StoredObject {
                    resource_version: version,
                    updated_at: now,
                    body: body.clone(),
                    ..c
                }
            }
            None => {
                let uid = new_uid();
                sqlx::query(&self.sql(
                    "INSERT INTO larder_objects
                       (kind, namespace, name, uid, resource_version, created_at, updated_at, body)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ))
                .bind(kind)
                .bind(namespace)
                .bind(name)
                .bind(&uid)
                .bind(version)
                .bind(now)
                .bind(now)
                .bind(&text)
                .execute(&mut *tx)
                .await?;
                StoredObject {
                    kind: kind.to_owned(),
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    uid,
                    resource_version: version,
                    created_at: now,
                    updated_at: now,
                    body: body.clone(),
                }
            }
        };
        self.record_change(&mut tx, version, kind, namespace, name, false)
            .await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn delete(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        expected: Option<i64>,
    ) -> Result<StoredObject, StoreError> {
        let mut tx = self.pool.begin().await?;
        let version = self.next_version(&mut tx).await?;
        let current = self.current(&mut tx, kind, namespace, name).await?;
        check_expected(current.as_ref(), expected, kind, namespace, name)?;
        let Some(current) = current else {
            return Err(StoreError::NotFound {
                kind: kind.to_owned(),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            });
        };
        sqlx::query(
            &self.sql("DELETE FROM larder_objects WHERE kind = ? AND namespace = ? AND name = ?"),
        )
        .bind(kind)
        .bind(namespace)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        self.record_change(&mut tx, version, kind, namespace, name, true)
            .await?;
        tx.commit().await?;
        Ok(current)
    }

    async fn changes_since(&self, version: i64) -> Result<Vec<Change>, StoreError> {
        let rows = sqlx::query(&self.sql(
            "SELECT resource_version, kind, namespace, name, deleted FROM larder_changes
             WHERE resource_version > ? ORDER BY resource_version",
        ))
        .bind(version)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let deleted: i64 = row.try_get("deleted")?;
                Ok(Change {
                    resource_version: row.try_get("resource_version")?,
                    kind: row.try_get("kind")?,
                    namespace: row.try_get("namespace")?,
                    name: row.try_get("name")?,
                    deleted: deleted != 0,
                })
            })
            .collect()
    }

    async fn append_interval(
        &self,
        namespace: &str,
        view: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Interval, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The store-wide counter orders appends, as it orders writes.
        let seq = self.next_version(&mut tx).await?;
        let now = now_millis();
        sqlx::query(&self.sql(
            "INSERT INTO larder_materializations
               (namespace, view_name, seq, start_ms, end_ms, recorded_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        ))
        .bind(namespace)
        .bind(view)
        .bind(seq)
        .bind(start_ms)
        .bind(end_ms)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // In the change log too, so versions stay gapless there.
        self.record_change(
            &mut tx,
            seq,
            "MaterializationInterval",
            namespace,
            view,
            false,
        )
        .await?;
        tx.commit().await?;
        Ok(Interval {
            start_ms,
            end_ms,
            recorded_at_ms: now,
        })
    }

    async fn intervals(&self, namespace: &str, view: &str) -> Result<Vec<Interval>, StoreError> {
        let rows = sqlx::query(&self.sql(
            "SELECT start_ms, end_ms, recorded_at FROM larder_materializations
             WHERE namespace = ? AND view_name = ? ORDER BY seq",
        ))
        .bind(namespace)
        .bind(view)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Interval {
                    start_ms: row.try_get("start_ms")?,
                    end_ms: row.try_get("end_ms")?,
                    recorded_at_ms: row.try_get("recorded_at")?,
                })
            })
            .collect()
    }
}
