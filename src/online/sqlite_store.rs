//! Embedded back end: one SQLite file holding the same keys, fields and
//! bytes as Redis would, for newcomers and single-machine runs.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Connection, Row};

use super::codec;
use super::{KeyRead, ReadResult, RowWrite, StoreError};

/// Feast-layout feature storage in a SQLite file.
pub struct SqliteStore {
    pool: SqlitePool,
    key_ttl: Duration,
}

fn failed(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => StoreError::Unavailable(e.to_string()),
        other => StoreError::Failed(other.to_string()),
    }
}

fn now_secs() -> i64 {
    crate::model::EventTime::now().seconds
}

impl SqliteStore {
    /// Opens (creating when missing) the store at `path`; `key_ttl` of zero
    /// keeps keys forever.
    pub async fn open(path: &Path, key_ttl: Duration) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Failed(format!("creating {}: {e}", dir.display())))?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(failed)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(failed)?;
        for statement in [
            "CREATE TABLE IF NOT EXISTS online_fields (
                entity_key BLOB NOT NULL,
                field BLOB NOT NULL,
                value BLOB NOT NULL,
                PRIMARY KEY (entity_key, field)
            ) WITHOUT ROWID",
            "CREATE TABLE IF NOT EXISTS online_keys (
                entity_key BLOB PRIMARY KEY,
                expires_at INTEGER
            ) WITHOUT ROWID",
        ] {
            sqlx::query(statement)
                .execute(&pool)
                .await
                .map_err(failed)?;
        }
        Ok(SqliteStore { pool, key_ttl })
    }

    pub async fn read(&self, reads: &[KeyRead<'_>]) -> Result<ReadResult, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(failed)?;
        let now = now_secs();
        let mut out = ReadResult::with_capacity(reads.len(), 0);
        for r in reads {
            let rows = sqlx::query(
                "SELECT f.field, f.value FROM online_fields f
                 LEFT JOIN online_keys k ON k.entity_key = f.entity_key
                 WHERE f.entity_key = ?1 AND (k.expires_at IS NULL OR k.expires_at > ?2)",
            )
            .bind(&r.key)
            .bind(now)
            .fetch_all(&mut *conn)
            .await
            .map_err(failed)?;
            let mut values: Vec<Option<Vec<u8>>> = vec![None; r.fields.len()];
            for row in rows {
                let field: Vec<u8> = row.get(0);
                if let Some(i) = r.fields.iter().position(|f| *f == field.as_slice()) {
                    values[i] = Some(row.get(1));
                }
            }
            out.push_owned(values);
        }
        Ok(out)
    }

    pub async fn write(&self, rows: &[RowWrite]) -> Result<usize, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(failed)?;
        let now = now_secs();
        let expires_at = (!self.key_ttl.is_zero()).then(|| now + self.key_ttl.as_secs() as i64);
        // One immediate transaction for the batch: the write lock is taken
        // before the stored timestamps are read, so the compare-and-write of
        // every row is atomic with respect to other writers.
        let mut written = 0;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(failed)?;
        for row in rows {
            // Redis drops an expired key whole; do the same before writing.
            sqlx::query(
                "DELETE FROM online_fields WHERE entity_key = ?1 AND EXISTS
                   (SELECT 1 FROM online_keys WHERE entity_key = ?1 AND expires_at <= ?2)",
            )
            .bind(&row.key)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
            let stored: Option<Vec<u8>> = sqlx::query_scalar(
                "SELECT f.value FROM online_fields f
                 LEFT JOIN online_keys k ON k.entity_key = f.entity_key
                 WHERE f.entity_key = ?1 AND f.field = ?2
                   AND (k.expires_at IS NULL OR k.expires_at > ?3)",
            )
            .bind(&row.key)
            .bind(&row.ts_field)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(failed)?;
            if let Some(stored) = stored
                && let Ok(stored) = codec::decode_timestamp(&stored)
                && stored >= row.event_time
            {
                continue;
            }
            let ts = codec::encode_timestamp(row.event_time);
            for (field, value) in
                std::iter::once((&row.ts_field, &ts)).chain(row.fields.iter().map(|(f, v)| (f, v)))
            {
                sqlx::query(
                    "INSERT INTO online_fields (entity_key, field, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (entity_key, field) DO UPDATE SET value = excluded.value",
                )
                .bind(&row.key)
                .bind(field)
                .bind(value)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            }
            sqlx::query(
                "INSERT INTO online_keys (entity_key, expires_at) VALUES (?1, ?2)
                 ON CONFLICT (entity_key) DO UPDATE SET expires_at = excluded.expires_at",
            )
            .bind(&row.key)
            .bind(expires_at)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
            written += 1;
        }
        tx.commit().await.map_err(failed)?;
        Ok(written)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(failed)
    }
}
