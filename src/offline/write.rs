//! Appending rows to a batch source, for push and stream ingestion: the
//! offline store's write path.
//!
//! A replayed batch must not be stored twice, so the source table needs a
//! unique key (a PRIMARY KEY or UNIQUE constraint or index, not partial)
//! whose columns are all among the join key columns and the event
//! timestamp column — normally exactly `(join keys..., event timestamp)`.
//! [`append_rows`] checks that such a key exists and refuses the table
//! otherwise, then inserts with `INSERT ... ON CONFLICT DO NOTHING`, so a
//! row whose (keys, event time) is already stored is skipped.
//!
//! Rows go in as multi-row INSERTs (at most `offline_store.batch_rows` and
//! 1000 rows, and the database's limit of bound values, per statement) in one
//! transaction: all of the call's rows are stored, or none. The
//! `createdTimestampField` column, when the source has one, is set to the
//! time of the call.
//!
//! Event times are written as `timestamptz` to PostgreSQL and as ISO 8601
//! UTC text (`2024-05-01 12:00:00.250`) to SQLite; in SQLite the unique
//! key compares that text, so rows written in another format by other
//! tools are not recognized as the same row. Lists go to PostgreSQL
//! arrays, and to SQLite as JSON text.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::postgres::Postgres;
use sqlx::sqlite::Sqlite;
use sqlx::{Connection, Row};

use super::materialize::rfc3339;
use super::{OfflineError, OfflineStore, quote};
use crate::model::{DataSource, EventTime, FeatureView, SourceTable, Value, ValueType};
use crate::online::ViewRow;

/// Rows per INSERT statement, at most.
const ROWS_PER_STATEMENT: usize = 1000;
/// Bound values per statement: PostgreSQL allows 65535, SQLite 32766.
const PG_MAX_BINDS: usize = 65_535;
const SQLITE_MAX_BINDS: usize = 32_766;

/// Appends `rows` of `view` to `source`'s table, skipping rows whose
/// (join keys, event time) is already stored. Returns how many rows were
/// inserted. Every row is checked against the view's declared types before
/// anything is written.
pub async fn append_rows(
    store: &OfflineStore,
    source: &DataSource,
    view: &FeatureView,
    rows: &[ViewRow],
) -> Result<u64, OfflineError> {
    let name = format!("feature view {}/{}", view.namespace, view.name);
    let typed =
        typed_rows(view, rows).map_err(|e| OfflineError::Invalid(format!("{name}: {e}")))?;
    if typed.is_empty() {
        return Ok(0);
    }
    let layout = Layout::of(source, view);
    match &source.table {
        SourceTable::Postgres {
            database,
            schema,
            table,
        } => append_postgres(store, &layout, view, database, schema, table, &typed).await,
        SourceTable::Sqlite { table } => append_sqlite(store, &layout, view, table, &typed).await,
    }
}

/// A row checked against the view: typed keys (none for a view without
/// entities), event time, typed features.
struct Typed {
    keys: Vec<Value>,
    event_time: EventTime,
    values: Vec<Value>,
}

fn typed_rows(view: &FeatureView, rows: &[ViewRow]) -> Result<Vec<Typed>, String> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            let mut keys = Vec::with_capacity(view.join_keys.len());
            if !view.join_keys.is_empty() {
                if r.keys.len() != view.join_keys.len() {
                    return Err(format!(
                        "row {i}: expected {} join key values, found {}",
                        view.join_keys.len(),
                        r.keys.len()
                    ));
                }
                for (k, v) in view.join_keys.iter().zip(&r.keys) {
                    let at = || format!("row {i} ({})", describe(view, &keys, r.event_time));
                    if v.is_null() {
                        return Err(format!("{}: join key {:?} is null", at(), k.name));
                    }
                    let typed = v
                        .clone()
                        .coerce_to(k.value_type)
                        .map_err(|e| format!("{}: join key {:?}: {e}", at(), k.name))?;
                    keys.push(typed);
                }
            }
            if r.values.len() != view.features.len() {
                return Err(format!(
                    "row {i} ({}): expected {} feature values, found {}",
                    describe(view, &keys, r.event_time),
                    view.features.len(),
                    r.values.len()
                ));
            }
            let mut values = Vec::with_capacity(r.values.len());
            for (f, v) in view.features.iter().zip(&r.values) {
                if v.is_null() {
                    values.push(Value::Null);
                    continue;
                }
                values.push(v.clone().coerce_to(f.value_type).map_err(|e| {
                    format!(
                        "row {i} ({}): feature {:?}: {e}",
                        describe(view, &keys, r.event_time),
                        f.name
                    )
                })?);
            }
            Ok(Typed {
                keys,
                event_time: r.event_time,
                values,
            })
        })
        .collect()
}

fn describe(view: &FeatureView, keys: &[Value], at: EventTime) -> String {
    let keys: Vec<String> = view
        .join_keys
        .iter()
        .zip(keys)
        .map(|(k, v)| match v {
            Value::String(s) => format!("{}={s:?}", k.name),
            Value::Int32(i) => format!("{}={i}", k.name),
            Value::Int64(i) | Value::UnixTimestamp(i) => format!("{}={i}", k.name),
            other => format!("{}={other:?}", k.name),
        })
        .collect();
    if keys.is_empty() {
        format!("at {}", rfc3339(at))
    } else {
        format!("{} at {}", keys.join(", "), rfc3339(at))
    }
}

/// The columns written, in order: join keys, event time, created time (when
/// the source has one), features.
struct Layout {
    keys: Vec<String>,
    ts: String,
    created: Option<String>,
    features: Vec<String>,
}

impl Layout {
    fn of(source: &DataSource, view: &FeatureView) -> Layout {
        Layout {
            keys: view
                .join_keys
                .iter()
                .map(|k| source.column_of(&k.name).to_owned())
                .collect(),
            ts: source.timestamp_field.clone(),
            created: source.created_timestamp_field.clone(),
            features: view
                .features
                .iter()
                .map(|f| source.column_of(&f.name).to_owned())
                .collect(),
        }
    }

    fn all(&self) -> Vec<&str> {
        self.keys
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(self.ts.as_str()))
            .chain(self.created.as_deref())
            .chain(self.features.iter().map(String::as_str))
            .collect()
    }

    /// Whether one of `unique_keys` (column lists) makes a replayed row
    /// conflict: all its columns among the join keys and event time.
    fn deduplicated_by(&self, unique_keys: &[Vec<Option<String>>]) -> bool {
        let allowed: BTreeSet<&str> = self
            .keys
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(self.ts.as_str()))
            .collect();
        unique_keys.iter().any(|columns| {
            !columns.is_empty()
                && columns
                    .iter()
                    .all(|c| c.as_deref().is_some_and(|c| allowed.contains(c)))
        })
    }

    fn missing_key_error(&self, table: &str) -> OfflineError {
        let mut wanted: Vec<String> = self.keys.iter().map(|k| quote(k)).collect();
        wanted.push(quote(&self.ts));
        OfflineError::Invalid(format!(
            "table {table} has no unique key over the join keys and event time, so a replayed \
             batch would be stored twice; add one: CREATE UNIQUE INDEX ON {table} ({})",
            wanted.join(", ")
        ))
    }

    /// Rows per INSERT: at most `batch_rows`, 1000 and the bind limit.
    fn rows_per_statement(&self, max_binds: usize, batch_rows: usize) -> usize {
        (max_binds / self.all().len().max(1))
            .min(batch_rows)
            .clamp(1, ROWS_PER_STATEMENT)
    }
}

/// SQLite's time text for an event time: `2024-05-01 12:00:00[.fff]`, UTC.
pub fn sqlite_time_text(t: EventTime) -> String {
    rfc3339(t)
        .replacen('T', " ", 1)
        .trim_end_matches('Z')
        .to_owned()
}

// ---------------------------------------------------------------------------
// PostgreSQL.

#[allow(clippy::too_many_arguments)]
async fn append_postgres(
    store: &OfflineStore,
    layout: &Layout,
    view: &FeatureView,
    database: &str,
    schema: &str,
    table: &str,
    rows: &[Typed],
) -> Result<u64, OfflineError> {
    let name = format!("{schema}.{table}");
    let qualified = format!("{}.{}", quote(schema), quote(table));
    let context = format!("appending to table {name} as {:?}", store.user());
    let db = |e: sqlx::Error| OfflineError::from_sqlx(e, &context);
    let mut conn = store.postgres(database).await?;
    sqlx::query("SET TIME ZONE 'UTC'")
        .execute(&mut conn)
        .await
        .map_err(db)?;

    // The table's column types (timestamps are bound as text and cast).
    let types: BTreeMap<String, String> = sqlx::query(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
         WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
    )
    .bind(&qualified)
    .fetch_all(&mut conn)
    .await
    .map_err(db)?
    .iter()
    .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
    .collect::<Result<_, sqlx::Error>>()
    .map_err(db)?;
    if types.is_empty() {
        return Err(OfflineError::NotFound(format!(
            "{context}: table {name} does not exist (or {:?} may not see it)",
            store.user()
        )));
    }
    for column in layout.all() {
        if !types.contains_key(column) {
            return Err(OfflineError::NotFound(format!(
                "{context}: table {name} has no column {column:?}"
            )));
        }
    }
    let unique: Vec<Vec<Option<String>>> = sqlx::query(
        "SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL \
           AND NOT (0 = ANY(i.indkey::int2[])) \
         GROUP BY i.indexrelid",
    )
    .bind(&qualified)
    .fetch_all(&mut conn)
    .await
    .map_err(db)?
    .iter()
    .map(|r| {
        r.try_get::<Vec<String>, _>(0)
            .map(|v| v.into_iter().map(Some).collect())
    })
    .collect::<Result<_, _>>()
    .map_err(db)?;
    if !layout.deduplicated_by(&unique) {
        return Err(layout.missing_key_error(&name));
    }

    let is_time = |column: &str| {
        types
            .get(column)
            .is_some_and(|t| t.starts_with("timestamp"))
    };
    let columns = layout.all();
    let column_list: Vec<String> = columns.iter().map(|c| quote(c)).collect();
    let created = rfc3339(crate::model::EventTime::now());
    let per_statement = layout.rows_per_statement(PG_MAX_BINDS, store.batch_rows);
    let mut tx = conn.begin().await.map_err(db)?;
    let mut inserted = 0u64;
    for chunk in rows.chunks(per_statement) {
        let mut sql = format!(
            "INSERT INTO {qualified} ({}) VALUES ",
            column_list.join(", ")
        );
        let mut n = 0usize;
        let mut placeholder = |cast: &str| {
            n += 1;
            format!("${n}{cast}")
        };
        for (r, row) in chunk.iter().enumerate() {
            if r > 0 {
                sql.push_str(", ");
            }
            let mut items = Vec::with_capacity(columns.len());
            for _ in &row.keys {
                items.push(placeholder(""));
            }
            items.push(placeholder("::timestamptz"));
            if layout.created.is_some() {
                items.push(placeholder("::timestamptz"));
            }
            for (feature, column) in view.features.iter().zip(&layout.features) {
                let cast = match feature.value_type {
                    ValueType::UnixTimestamp if is_time(column) => "::timestamptz",
                    ValueType::UnixTimestampList if is_time(column) => "::timestamptz[]",
                    _ => "",
                };
                items.push(placeholder(cast));
            }
            sql.push('(');
            sql.push_str(&items.join(", "));
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT DO NOTHING");
        let mut query = sqlx::query::<Postgres>(&sql);
        for row in chunk {
            for key in &row.keys {
                query = bind_pg(
                    query,
                    key,
                    key.value_type().unwrap_or(ValueType::String),
                    false,
                );
            }
            query = query.bind(rfc3339(row.event_time));
            if layout.created.is_some() {
                query = query.bind(created.clone());
            }
            for ((feature, column), value) in
                view.features.iter().zip(&layout.features).zip(&row.values)
            {
                query = bind_pg(query, value, feature.value_type, is_time(column));
            }
        }
        inserted += query.execute(&mut *tx).await.map_err(db)?.rows_affected();
    }
    tx.commit().await.map_err(db)?;
    Ok(inserted)
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Binds one value as `declared`; timestamps into time columns as RFC 3339
/// text (the placeholder casts it).
fn bind_pg<'q>(
    query: PgQuery<'q>,
    value: &Value,
    declared: ValueType,
    time_column: bool,
) -> PgQuery<'q> {
    let secs = |s: i64| rfc3339(EventTime::from_seconds(s));
    match value.clone() {
        Value::Null => match declared {
            ValueType::Bytes => query.bind(None::<Vec<u8>>),
            ValueType::String => query.bind(None::<String>),
            ValueType::Int32 => query.bind(None::<i32>),
            ValueType::Int64 => query.bind(None::<i64>),
            ValueType::Double => query.bind(None::<f64>),
            ValueType::Float => query.bind(None::<f32>),
            ValueType::Bool => query.bind(None::<bool>),
            ValueType::UnixTimestamp if time_column => query.bind(None::<String>),
            ValueType::UnixTimestamp => query.bind(None::<i64>),
            ValueType::BytesList => query.bind(None::<Vec<Vec<u8>>>),
            ValueType::StringList => query.bind(None::<Vec<String>>),
            ValueType::Int32List => query.bind(None::<Vec<i32>>),
            ValueType::Int64List => query.bind(None::<Vec<i64>>),
            ValueType::DoubleList => query.bind(None::<Vec<f64>>),
            ValueType::FloatList => query.bind(None::<Vec<f32>>),
            ValueType::BoolList => query.bind(None::<Vec<bool>>),
            ValueType::UnixTimestampList if time_column => query.bind(None::<Vec<String>>),
            ValueType::UnixTimestampList => query.bind(None::<Vec<i64>>),
        },
        Value::Bytes(v) => query.bind(v),
        Value::String(v) => query.bind(v),
        Value::Int32(v) => query.bind(v),
        Value::Int64(v) => query.bind(v),
        Value::Double(v) => query.bind(v),
        Value::Float(v) => query.bind(v),
        Value::Bool(v) => query.bind(v),
        Value::UnixTimestamp(v) if time_column => query.bind(secs(v)),
        Value::UnixTimestamp(v) => query.bind(v),
        Value::BytesList(v) => query.bind(v),
        Value::StringList(v) => query.bind(v),
        Value::Int32List(v) => query.bind(v),
        Value::Int64List(v) => query.bind(v),
        Value::DoubleList(v) => query.bind(v),
        Value::FloatList(v) => query.bind(v),
        Value::BoolList(v) => query.bind(v),
        Value::UnixTimestampList(v) if time_column => {
            query.bind(v.into_iter().map(secs).collect::<Vec<String>>())
        }
        Value::UnixTimestampList(v) => query.bind(v),
    }
}

// ---------------------------------------------------------------------------
// SQLite.

async fn append_sqlite(
    store: &OfflineStore,
    layout: &Layout,
    view: &FeatureView,
    table: &str,
    rows: &[Typed],
) -> Result<u64, OfflineError> {
    let context = format!("appending to table {table} of the SQLite offline store");
    let db = |e: sqlx::Error| OfflineError::from_sqlx(e, &context);
    let pool = store.sqlite().await?;
    let existing: BTreeSet<String> = sqlx::query("SELECT name FROM pragma_table_info(?1)")
        .bind(table)
        .fetch_all(&pool)
        .await
        .map_err(db)?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()
        .map_err(db)?;
    if existing.is_empty() {
        return Err(OfflineError::NotFound(format!(
            "{context}: table {table} does not exist"
        )));
    }
    for column in layout.all() {
        if !existing.contains(column) {
            return Err(OfflineError::NotFound(format!(
                "{context}: table {table} has no column {column:?}"
            )));
        }
    }
    let mut unique: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for row in sqlx::query(
        "SELECT il.name, ii.name FROM pragma_index_list(?1) AS il \
         JOIN pragma_index_info(il.name) AS ii \
         WHERE il.\"unique\" = 1 AND il.partial = 0",
    )
    .bind(table)
    .fetch_all(&pool)
    .await
    .map_err(db)?
    {
        let index: String = row.try_get(0).map_err(db)?;
        let column: Option<String> = row.try_get(1).map_err(db)?;
        unique.entry(index).or_default().push(column);
    }
    let unique: Vec<Vec<Option<String>>> = unique.into_values().collect();
    if !layout.deduplicated_by(&unique) {
        return Err(layout.missing_key_error(table));
    }

    let columns = layout.all();
    let column_list: Vec<String> = columns.iter().map(|c| quote(c)).collect();
    let one_row = format!("({})", vec!["?"; columns.len()].join(", "));
    let created = sqlite_time_text(EventTime::now());
    let per_statement = layout.rows_per_statement(SQLITE_MAX_BINDS, store.batch_rows);
    let mut tx = pool.begin().await.map_err(db)?;
    let mut inserted = 0u64;
    for chunk in rows.chunks(per_statement) {
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {} ON CONFLICT DO NOTHING",
            quote(table),
            column_list.join(", "),
            vec![one_row.as_str(); chunk.len()].join(", ")
        );
        let mut query = sqlx::query::<Sqlite>(&sql);
        for (r, row) in chunk.iter().enumerate() {
            for key in &row.keys {
                query = bind_sqlite(query, key)
                    .map_err(|e| OfflineError::Invalid(format!("{context}: row {r}: {e}")))?;
            }
            query = query.bind(sqlite_time_text(row.event_time));
            if layout.created.is_some() {
                query = query.bind(created.clone());
            }
            for (feature, value) in view.features.iter().zip(&row.values) {
                query = bind_sqlite(query, value).map_err(|e| {
                    OfflineError::Invalid(format!(
                        "{context}: row {} ({}): feature {:?}: {e}",
                        r,
                        describe(view, &row.keys, row.event_time),
                        feature.name
                    ))
                })?;
            }
        }
        inserted += query.execute(&mut *tx).await.map_err(db)?.rows_affected();
    }
    tx.commit().await.map_err(db)?;
    Ok(inserted)
}

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Binds one value as SQLite stores it: integers, reals, text, blobs;
/// timestamps as UTC text; lists as JSON text.
fn bind_sqlite<'q>(query: SqliteQuery<'q>, value: &Value) -> Result<SqliteQuery<'q>, String> {
    let time = |s: i64| sqlite_time_text(EventTime::from_seconds(s));
    let json = |v: serde_json::Value| v.to_string();
    Ok(match value.clone() {
        Value::Null => query.bind(None::<i64>),
        Value::Bytes(v) => query.bind(v),
        Value::String(v) => query.bind(v),
        Value::Int32(v) => query.bind(i64::from(v)),
        Value::Int64(v) => query.bind(v),
        Value::Double(v) => query.bind(v),
        Value::Float(v) => query.bind(f64::from(v)),
        Value::Bool(v) => query.bind(v),
        Value::UnixTimestamp(v) => query.bind(time(v)),
        Value::StringList(v) => query.bind(json(v.into())),
        Value::Int32List(v) => query.bind(json(v.into())),
        Value::Int64List(v) => query.bind(json(v.into())),
        Value::DoubleList(v) => query.bind(json(v.into())),
        Value::FloatList(v) => query.bind(json(v.into())),
        Value::BoolList(v) => query.bind(json(v.into())),
        Value::UnixTimestampList(v) => {
            query.bind(json(v.into_iter().map(time).collect::<Vec<_>>().into()))
        }
        Value::BytesList(_) => {
            return Err("BYTES_LIST values cannot be stored in a SQLite source".into());
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_time_text_is_utc_without_zone() {
        assert_eq!(
            sqlite_time_text(EventTime {
                seconds: 1_714_564_800,
                nanos: 250_000_000
            }),
            "2024-05-01 12:00:00.250"
        );
        assert_eq!(
            sqlite_time_text(EventTime::from_seconds(1_714_564_800)),
            "2024-05-01 12:00:00"
        );
    }

    #[test]
    fn a_unique_key_must_lie_within_keys_and_time() {
        let layout = Layout {
            keys: vec!["driver_id".into()],
            ts: "event_timestamp".into(),
            created: Some("created".into()),
            features: vec!["conv_rate".into()],
        };
        let s = |v: &[&str]| v.iter().map(|c| Some(c.to_string())).collect::<Vec<_>>();
        assert!(layout.deduplicated_by(&[s(&["driver_id", "event_timestamp"])]));
        assert!(layout.deduplicated_by(&[s(&["conv_rate"]), s(&["driver_id"])]));
        assert!(!layout.deduplicated_by(&[s(&["driver_id", "created"])]));
        assert!(!layout.deduplicated_by(&[vec![None]]));
        assert!(!layout.deduplicated_by(&[]));
    }
}
