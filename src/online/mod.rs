//! The online store: the latest feature values per entity, in Feast's
//! layout. Two back ends share one contract: Redis (standalone or cluster)
//! for production, and an embedded SQLite file for zero-setup runs.
//!
//! Both store, per Redis key (serialized entity key ++ project), a hash of
//! fields: one per feature (`murmur3("view:feature")`) and `_ts:<view>`.
//! Reads ask for a list of fields per key in one round trip; writes are
//! newer-only per (key, view), decided atomically by the store.

pub mod codec;
pub mod layout;
mod redis_pipe;
mod redis_store;
mod sqlite_store;

use std::time::Duration;

use bytes::Bytes;

pub use redis_store::{ReadCommand, RedisCredentials, RedisSettings, RedisStore};
pub use sqlite_store::SqliteStore;

use crate::model::{EventTime, Value};
use crate::registry::ServedView;
use layout::KeyVersion;

/// The fields to read from one stored entity key.
#[derive(Debug, Clone)]
pub struct KeyRead<'a> {
    pub key: Vec<u8>,
    pub fields: Vec<&'a [u8]>,
    /// How many fields the definitions store under this key (every view
    /// sharing it: its features and `_ts` field); 0 when not known. Lets
    /// the store choose between fetching fields and the whole hash.
    pub stored_fields: usize,
}

/// For each [`KeyRead`], the stored bytes of each requested field, in the
/// same order; `None` where nothing is stored.
///
/// The bytes stay where the store's reply put them: the Redis back end
/// hands over its reply buffers and records where each field sits in them,
/// so a read copies no stored value and allocates nothing per field.
#[derive(Debug, Default, Clone)]
pub struct ReadResult {
    /// Reply buffers the cells point into.
    chunks: Vec<Bytes>,
    /// Every key's fields, key after key.
    cells: Vec<FieldRef>,
    /// Where each key's cells begin in `cells`; one more entry than keys.
    starts: Vec<usize>,
}

/// Where one field's bytes sit in a [`ReadResult`]: a range of one of its
/// buffers (or, inside the result, nothing stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldRef {
    chunk: u32,
    start: u32,
    end: u32,
}

impl FieldRef {
    const NONE: FieldRef = FieldRef {
        chunk: u32::MAX,
        start: 0,
        end: 0,
    };
}

impl ReadResult {
    /// An empty result with room for `keys` keys of `fields` fields each.
    pub fn with_capacity(keys: usize, fields: usize) -> Self {
        let mut starts = Vec::with_capacity(keys + 1);
        starts.push(0);
        ReadResult {
            chunks: Vec::with_capacity(keys),
            cells: Vec::with_capacity(keys * fields),
            starts,
        }
    }

    /// How many keys were read.
    pub fn len(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored bytes of field `field` of key `key`, if any.
    pub fn get(&self, key: usize, field: usize) -> Option<&[u8]> {
        self.locate(key, field).map(|at| self.bytes(at))
    }

    /// Where the stored bytes of field `field` of key `key` sit, if
    /// anything is stored there.
    pub fn locate(&self, key: usize, field: usize) -> Option<FieldRef> {
        let (start, end) = (*self.starts.get(key)?, *self.starts.get(key + 1)?);
        let cell = *self.cells.get(start..end)?.get(field)?;
        (cell.chunk != FieldRef::NONE.chunk).then_some(cell)
    }

    /// The bytes `at` (from [`ReadResult::locate`] on this result) points
    /// to; empty for a reference into another result that does not fit
    /// this one.
    pub fn bytes(&self, at: FieldRef) -> &[u8] {
        self.chunks
            .get(at.chunk as usize)
            .and_then(|c| c.get(at.start as usize..at.end as usize))
            .unwrap_or_default()
    }

    /// Adds a buffer that cells of the following keys point into, and
    /// returns its index.
    pub(crate) fn push_chunk(&mut self, chunk: Bytes) -> u32 {
        self.chunks.push(chunk);
        (self.chunks.len() - 1) as u32
    }

    /// Adds a field of the current key: `range` of chunk `chunk`, or
    /// nothing stored.
    pub(crate) fn push_cell(&mut self, chunk: u32, range: Option<(usize, usize)>) {
        self.cells.push(match range {
            Some((start, end)) => FieldRef {
                chunk,
                start: start as u32,
                end: end as u32,
            },
            None => FieldRef::NONE,
        });
    }

    /// Ends the current key.
    pub(crate) fn end_key(&mut self) {
        self.starts.push(self.cells.len());
    }

    /// Adds a key whose fields are owned values.
    pub fn push_owned(&mut self, fields: Vec<Option<Vec<u8>>>) {
        for f in fields {
            match f {
                Some(bytes) => {
                    let len = bytes.len();
                    let chunk = self.push_chunk(Bytes::from(bytes));
                    self.push_cell(chunk, Some((0, len)));
                }
                None => self.push_cell(u32::MAX, None),
            }
        }
        self.end_key();
    }

    /// Copies the result out, key by key and field by field.
    pub fn to_vecs(&self) -> Vec<Vec<Option<Vec<u8>>>> {
        (0..self.len())
            .map(|k| {
                (0..self.starts[k + 1] - self.starts[k])
                    .map(|f| self.get(k, f).map(<[u8]>::to_vec))
                    .collect()
            })
            .collect()
    }
}

impl FromIterator<Vec<Option<Vec<u8>>>> for ReadResult {
    fn from_iter<I: IntoIterator<Item = Vec<Option<Vec<u8>>>>>(keys: I) -> Self {
        let mut out = ReadResult::with_capacity(0, 0);
        for k in keys {
            out.push_owned(k);
        }
        out
    }
}

/// One row of one feature view to store under one key.
#[derive(Debug, Clone)]
pub struct RowWrite {
    pub key: Vec<u8>,
    pub ts_field: Vec<u8>,
    pub event_time: EventTime,
    /// (hash field, serialized value) per feature.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the store could not do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("online store unavailable: {0}")]
    Unavailable(String),
    #[error("online store timed out after {0:?}")]
    Timeout(Duration),
    #[error("online store failed: {0}")]
    Failed(String),
    /// The store's own access control refused (Redis NOPERM): the
    /// credentials in use may not touch these keys.
    #[error("online store denied access: {0}")]
    Denied(String),
}

/// A row handed to [`OnlineStore::write_rows`] that does not fit its view.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("row {row}: {message}")]
    BadRow { row: usize, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The online store larder reads and writes.
// One per process: the size difference between back ends costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum OnlineStore {
    Redis(RedisStore),
    Sqlite(SqliteStore),
}

/// A row of a feature view in domain terms: the join key values (in the
/// view's key-column order), the event time and one value per feature.
#[derive(Debug, Clone)]
pub struct ViewRow {
    pub keys: Vec<Value>,
    pub event_time: EventTime,
    pub values: Vec<Value>,
}

impl OnlineStore {
    /// Reads the requested fields of every key in one round trip (one per
    /// cluster node in cluster mode).
    pub async fn read(&self, reads: &[KeyRead<'_>]) -> Result<ReadResult, StoreError> {
        match self {
            OnlineStore::Redis(s) => s.read(reads).await,
            OnlineStore::Sqlite(s) => s.read(reads).await,
        }
    }

    /// Writes rows newer-only: a row whose event time is not after the one
    /// stored for its (key, view) changes nothing. Returns how many rows
    /// were written.
    pub async fn write(&self, rows: &[RowWrite]) -> Result<usize, StoreError> {
        match self {
            OnlineStore::Redis(s) => s.write(rows).await,
            OnlineStore::Sqlite(s) => s.write(rows).await,
        }
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            OnlineStore::Redis(s) => s.ping().await,
            OnlineStore::Sqlite(s) => s.ping().await,
        }
    }

    /// The longest a read may take before the store gives up on it by
    /// itself, if it does.
    pub fn read_timeout(&self) -> Option<Duration> {
        match self {
            OnlineStore::Redis(s) => Some(s.read_timeout()),
            OnlineStore::Sqlite(_) => None,
        }
    }

    pub fn key_version(&self) -> KeyVersion {
        match self {
            OnlineStore::Redis(s) => s.key_version(),
            OnlineStore::Sqlite(_) => KeyVersion::V3,
        }
    }

    /// Checks typed rows against `view` and writes them newer-only.
    pub async fn write_rows(
        &self,
        view: &ServedView,
        rows: &[ViewRow],
    ) -> Result<usize, WriteError> {
        let writes = rows_to_writes(view, rows, self.key_version())?;
        Ok(self.write(&writes).await?)
    }
}

/// Turns typed rows of a view into the bytes the store keeps, checking
/// every key and value against the view's declared types.
pub fn rows_to_writes(
    view: &ServedView,
    rows: &[ViewRow],
    version: KeyVersion,
) -> Result<Vec<RowWrite>, WriteError> {
    let names: Vec<&str> = view.key_columns.iter().map(|k| k.name.as_str()).collect();
    let dummy = Value::String(String::new());
    rows.iter()
        .enumerate()
        .map(|(row, r)| {
            let bad = |message: String| WriteError::BadRow { row, message };
            let mut keys = Vec::with_capacity(names.len());
            if view.has_entities() {
                if r.keys.len() != names.len() {
                    return Err(bad(format!(
                        "expected {} join key values ({}), found {}",
                        names.len(),
                        names.join(", "),
                        r.keys.len()
                    )));
                }
                for (k, v) in view.key_columns.iter().zip(&r.keys) {
                    keys.push(
                        v.clone()
                            .coerce_to(k.value_type)
                            .map_err(|e| bad(format!("join key {:?}: {e}", k.name)))?,
                    );
                }
            } else {
                keys.push(dummy.clone());
            }
            if r.values.len() != view.view.features.len() {
                return Err(bad(format!(
                    "expected {} feature values, found {}",
                    view.view.features.len(),
                    r.values.len()
                )));
            }
            let key_refs: Vec<&Value> = keys.iter().collect();
            let key = layout::redis_key(&names, &key_refs, &view.project, version)
                .map_err(|e| bad(e.to_string()))?;
            let mut fields = Vec::with_capacity(r.values.len());
            for ((feature, field), value) in view
                .view
                .features
                .iter()
                .zip(&view.feature_fields)
                .zip(&r.values)
            {
                if !value.is_null() {
                    let typed = value
                        .clone()
                        .coerce_to(feature.value_type)
                        .map_err(|e| bad(format!("feature {:?}: {e}", feature.name)))?;
                    fields.push((field.to_vec(), codec::encode_value(&typed)));
                } else {
                    fields.push((field.to_vec(), codec::encode_value(&Value::Null)));
                }
            }
            Ok(RowWrite {
                key,
                ts_field: view.ts_field.clone(),
                event_time: r.event_time,
                fields,
            })
        })
        .collect()
}
