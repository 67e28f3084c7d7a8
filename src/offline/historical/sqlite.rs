//! Training sets from the embedded SQLite offline store, on one pooled
//! connection (temporary tables belong to a connection):
//!
//! 1. each source is probed (`SELECT rowid, <columns> ... LIMIT 0`);
//! 2. the entity rows go into a `TEMP` table by multi-row INSERTs in one
//!    transaction (or by `INSERT ... <query>` for `--entity-sql`);
//! 3. one query finds, per entity row and view, the rowid of the matching
//!    source row with a correlated subquery (SQLite has no LATERAL), joins
//!    the rows by rowid and is streamed into the sink.
//!
//! Source timestamps are ISO 8601 text in UTC; they are compared as
//! microseconds, `round(unixepoch(ts, 'auto', 'subsec') * 1000) * 1000`,
//! so at SQLite's resolution of milliseconds.

use futures::TryStreamExt as _;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{Column as _, Connection as _, Executor as _, Row as _, Statement as _};
use sqlx::{TypeInfo as _, ValueRef as _};

use super::columns::{BatchBuilder, Cell, ColType};
use super::input::{self, EntityColumn, EntityRows, Role};
use super::plan::{EVENT_TIMESTAMP, Plan, ViewPlan};
use super::time;
use super::{Entities, RowSink};
use crate::model::SourceTable;
use crate::offline::{OfflineError, OfflineStore, quote};

const TEMP_TABLE: &str = "temp.\"larder_entities\"";
const ROW: &str = "\"__larder_row\"";
/// The entity row's time in microseconds (for `--entity-sql`, where the
/// query's own `event_timestamp` column keeps its text).
const MICROS: &str = "\"__larder_us\"";

/// SQLite's bound on variables per statement.
const MAX_VARIABLES: usize = 32_766;

/// An expression of a timestamp column in microseconds since the epoch.
fn micros_of(column: &str) -> String {
    format!("(round(unixepoch({column}, 'auto', 'subsec') * 1000) * 1000)")
}

pub(super) async fn build<S: RowSink>(
    store: &OfflineStore,
    plan: &Plan,
    entities: Entities,
    sink: &mut S,
) -> Result<u64, OfflineError> {
    let pool = store.sqlite().await?;
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| OfflineError::from_sqlx(e, "opening the SQLite offline store"))?;
    let result = build_on(&mut conn, store.batch_rows, plan, entities, sink).await;
    let _ = conn
        .execute(format!("DROP TABLE IF EXISTS {TEMP_TABLE}").as_str())
        .await;
    drop(conn);
    pool.close().await;
    result
}

/// How one view's source is read.
struct SourceSql {
    table: String,
    /// Source timestamp in microseconds.
    timestamp: String,
    created: Option<String>,
    /// (source column, entity column), qualified and quoted.
    keys: Vec<(String, String)>,
    /// Source columns of the read features, quoted.
    features: Vec<String>,
}

async fn probe(conn: &mut SqliteConnection, view: &ViewPlan) -> Result<SourceSql, OfflineError> {
    let SourceTable::Sqlite { table } = &view.source.table else {
        return Err(OfflineError::Invalid(format!(
            "{}: not a SQLite source",
            view.describe()
        )));
    };
    let source = &view.source;
    let table = quote(table);
    let key_columns: Vec<&str> = view
        .view
        .join_keys
        .iter()
        .map(|k| source.column_of(&k.name))
        .collect();
    let feature_columns: Vec<&str> = view
        .features
        .iter()
        .map(|&i| source.column_of(&view.view.features[i].name))
        .collect();
    let mut columns: Vec<&str> = vec![&source.timestamp_field];
    columns.extend(source.created_timestamp_field.as_deref());
    columns.extend(&key_columns);
    columns.extend(&feature_columns);
    let sql = format!(
        "SELECT rowid, {} FROM {table} LIMIT 0",
        columns
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    conn.execute(sql.as_str()).await.map_err(|e| {
        let rowid = e.to_string().contains("rowid");
        let e = OfflineError::from_sqlx(e, &view.describe());
        if rowid {
            OfflineError::Invalid(format!(
                "{e} (SQLite sources must be ordinary tables, which have a rowid)"
            ))
        } else {
            e
        }
    })?;
    let column = |c: &str| format!("s.{}", quote(c));
    Ok(SourceSql {
        timestamp: micros_of(&column(&source.timestamp_field)),
        created: source
            .created_timestamp_field
            .as_deref()
            .map(|c| format!("unixepoch({}, 'auto', 'subsec')", column(c))),
        keys: view
            .view
            .join_keys
            .iter()
            .zip(&key_columns)
            .map(|(k, c)| (column(c), format!("e.{}", quote(&k.name))))
            .collect(),
        features: feature_columns.iter().map(|c| quote(c)).collect(),
        table,
    })
}

fn bind_cell<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    cell: Cell,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    match cell {
        Cell::Null => query.bind(None::<i64>),
        Cell::Int(i) | Cell::Time(i) => query.bind(i),
        Cell::Float(f) => query.bind(f),
        Cell::Bool(b) => query.bind(b),
        Cell::Text(t) => query.bind(t),
        Cell::Bytes(b) => query.bind(b),
    }
}

/// Loads entity rows into a new temporary table in one transaction;
/// returns the row count.
async fn insert_rows(
    conn: &mut SqliteConnection,
    rows: &mut dyn EntityRows,
    batch_rows: usize,
) -> Result<u64, OfflineError> {
    let columns = rows.columns().to_vec();
    let context = "loading the entity rows into a temporary table";
    let definitions: Vec<String> = columns
        .iter()
        .map(|c| format!("{} {}", quote(&c.name), c.ty.sqlite()))
        .collect();
    conn.execute(
        format!(
            "CREATE TEMP TABLE {TEMP_TABLE} ({ROW} INTEGER PRIMARY KEY, {})",
            definitions.join(", ")
        )
        .as_str(),
    )
    .await
    .map_err(|e| OfflineError::from_sqlx(e, context))?;
    let width = columns.len() + 1;
    let per_statement = (MAX_VARIABLES / width).clamp(1, 500);
    let names: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
    let insert = |rows: usize| {
        let one = format!("({})", vec!["?"; width].join(", "));
        format!(
            "INSERT INTO {TEMP_TABLE} ({ROW}, {}) VALUES {}",
            names.join(", "),
            vec![one; rows].join(", ")
        )
    };
    let full = insert(per_statement);
    let mut tx = conn
        .begin()
        .await
        .map_err(|e| OfflineError::from_sqlx(e, context))?;
    let mut cells = Vec::new();
    let mut count: u64 = 0;
    loop {
        cells.clear();
        if rows.next_rows(&mut cells, batch_rows.max(per_statement))? == 0 {
            break;
        }
        let mut cells = std::mem::take(&mut cells).into_iter();
        let total = cells.len() / columns.len();
        let mut done = 0;
        while done < total {
            let n = per_statement.min(total - done);
            let sql = if n == per_statement {
                full.clone()
            } else {
                insert(n)
            };
            let mut query = sqlx::query(&sql);
            for _ in 0..n {
                count += 1;
                query = query.bind(count as i64);
                for cell in cells.by_ref().take(columns.len()) {
                    query = bind_cell(query, cell);
                }
            }
            query
                .execute(&mut *tx)
                .await
                .map_err(|e| OfflineError::from_sqlx(e, context))?;
            done += n;
        }
    }
    tx.commit()
        .await
        .map_err(|e| OfflineError::from_sqlx(e, context))?;
    Ok(count)
}

/// The column type an entity-query column of SQLite type `sqlite_type` is
/// carried as, when it is not a join key or the timestamp.
fn extra_type(sqlite_type: &str) -> ColType {
    match sqlite_type.to_ascii_uppercase().as_str() {
        "INTEGER" | "INT" | "INT8" | "BIGINT" => ColType::Int64,
        "REAL" | "NUMERIC" | "FLOAT" | "DOUBLE" => ColType::Float64,
        "BOOLEAN" | "BOOL" => ColType::Bool,
        "BLOB" => ColType::Binary,
        _ => ColType::Utf8,
    }
}

/// Runs the entity query into a new temporary table; returns the columns
/// and the row count.
async fn insert_query(
    conn: &mut SqliteConnection,
    query: &str,
    plan: &Plan,
) -> Result<(Vec<EntityColumn>, u64), OfflineError> {
    let context = "running the entity query";
    let described: Vec<(String, String)> = {
        let statement = conn
            .prepare(query)
            .await
            .map_err(|e| OfflineError::from_sqlx(e, context))?;
        statement
            .columns()
            .iter()
            .map(|c| (c.name().to_owned(), c.type_info().name().to_owned()))
            .collect()
    };
    let columns: Vec<EntityColumn> = described
        .iter()
        .map(|(name, t)| {
            let (role, ty) = input::classify(name, plan, extra_type(t));
            EntityColumn {
                name: name.clone(),
                ty,
                role,
            }
        })
        .collect();
    input::check_columns(&columns, plan, "the entity query")?;
    let definitions: Vec<String> = columns
        .iter()
        .map(|c| match c.role {
            // The query's text as it is; its microseconds go to MICROS.
            Role::Timestamp => quote(&c.name),
            _ => format!("{} {}", quote(&c.name), c.ty.sqlite()),
        })
        .collect();
    let names: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
    conn.execute(
        format!(
            "CREATE TEMP TABLE {TEMP_TABLE} ({ROW} INTEGER PRIMARY KEY, {MICROS} INTEGER, {})",
            definitions.join(", ")
        )
        .as_str(),
    )
    .await
    .map_err(|e| OfflineError::from_sqlx(e, context))?;
    let inserted = conn
        .execute(format!("INSERT INTO {TEMP_TABLE} ({}) {query}", names.join(", ")).as_str())
        .await
        .map_err(|e| OfflineError::from_sqlx(e, context))?
        .rows_affected();
    let timestamp = quote(EVENT_TIMESTAMP);
    conn.execute(
        format!(
            "UPDATE {TEMP_TABLE} SET {MICROS} = {}",
            micros_of(&timestamp)
        )
        .as_str(),
    )
    .await
    .map_err(|e| OfflineError::from_sqlx(e, context))?;
    let bad: Option<(i64, Option<String>)> = sqlx::query_as(&format!(
        "SELECT {ROW}, CAST({timestamp} AS TEXT) FROM {TEMP_TABLE} WHERE {MICROS} IS NULL \
         ORDER BY {ROW} LIMIT 1"
    ))
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| OfflineError::from_sqlx(e, context))?;
    if let Some((row, value)) = bad {
        return Err(OfflineError::Invalid(match value {
            None => format!("the entity query's row {row}: column {EVENT_TIMESTAMP} is null"),
            Some(v) => format!(
                "the entity query's row {row}, column {EVENT_TIMESTAMP}: {v:?} is not a \
                 timestamp ({})",
                time::TIMESTAMP_FORMS
            ),
        }));
    }
    Ok((columns, inserted))
}

/// The point-in-time query. `entity_time` is the entity rows' time in
/// microseconds.
fn query(
    columns: &[EntityColumn],
    plan: &Plan,
    sources: &[SourceSql],
    entity_time: &str,
) -> String {
    let mut select: Vec<String> = columns
        .iter()
        .map(|c| match c.role {
            Role::Timestamp => format!("e.{entity_time}"),
            _ => format!("e.{}", quote(&c.name)),
        })
        .collect();
    select.extend(
        plan.outputs
            .iter()
            .map(|o| format!("v{}.{}", o.view, sources[o.view].features[o.slot])),
    );
    let mut lookups = Vec::new();
    for (i, (view, source)) in plan.views.iter().zip(sources).enumerate() {
        let mut conditions: Vec<String> = source
            .keys
            .iter()
            .map(|(s, e)| format!("{s} = {e}"))
            .collect();
        conditions.push(format!("{} <= e.{entity_time}", source.timestamp));
        if let Some(ttl) = view.view.ttl {
            let micros = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
            conditions.push(format!(
                "{} >= e.{entity_time} - {micros}",
                source.timestamp
            ));
        }
        let mut order = format!("{} DESC", source.timestamp);
        if let Some(created) = &source.created {
            order.push_str(&format!(", {created} DESC NULLS LAST"));
        }
        lookups.push(format!(
            "(SELECT s.rowid FROM {} AS s WHERE {} ORDER BY {order} LIMIT 1) AS \"__larder_r{i}\"",
            source.table,
            conditions.join(" AND ")
        ));
    }
    let mut sql = format!(
        "SELECT {} FROM (SELECT e.*, {} FROM {TEMP_TABLE} AS e) AS e",
        select.join(", "),
        lookups.join(", ")
    );
    for (i, source) in sources.iter().enumerate() {
        sql.push_str(&format!(
            " LEFT JOIN {} AS v{i} ON v{i}.rowid = e.\"__larder_r{i}\"",
            source.table
        ));
    }
    sql.push_str(&format!(" ORDER BY e.{ROW}"));
    sql
}

/// The value of column `i`, as SQLite stored it.
fn stored(row: &SqliteRow, i: usize) -> Result<Cell, sqlx::Error> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Cell::Null);
    }
    let kind = raw.type_info().name().to_owned();
    Ok(match kind.as_str() {
        "INTEGER" => Cell::Int(row.try_get_unchecked::<i64, _>(i)?),
        "REAL" => Cell::Float(row.try_get_unchecked::<f64, _>(i)?),
        "BLOB" => Cell::Bytes(row.try_get_unchecked::<Vec<u8>, _>(i)?),
        _ => Cell::Text(row.try_get_unchecked::<String, _>(i)?),
    })
}

/// Converts a stored value to an output column's type. Entity timestamps
/// are stored as microseconds; feature timestamps are ISO text or epoch
/// seconds.
fn to_column(cell: Cell, ty: ColType, entity: bool) -> Result<Cell, String> {
    Ok(match (ty, cell) {
        (ColType::Timestamp, Cell::Int(i)) if entity => Cell::Time(i),
        (ColType::Timestamp, Cell::Int(seconds)) => Cell::Time(
            seconds
                .checked_mul(1_000_000)
                .ok_or_else(|| format!("{seconds} seconds is out of range"))?,
        ),
        (ColType::Timestamp, Cell::Float(seconds)) => Cell::Time((seconds * 1e6).round() as i64),
        (ColType::Timestamp, Cell::Text(t)) => Cell::Time(time::parse_timestamp(&t)?),
        (ColType::Utf8, Cell::Int(i)) => Cell::Text(i.to_string()),
        (ColType::Utf8, Cell::Float(f)) => Cell::Text(f.to_string()),
        (ColType::Int32 | ColType::Int64, Cell::Float(f))
            if f.fract() == 0.0 && f.abs() < 9.0e15 =>
        {
            Cell::Int(f as i64)
        }
        (_, cell) => cell,
    })
}

async fn build_on<S: RowSink>(
    conn: &mut SqliteConnection,
    batch_rows: usize,
    plan: &Plan,
    entities: Entities,
    sink: &mut S,
) -> Result<u64, OfflineError> {
    let mut sources = Vec::with_capacity(plan.views.len());
    for view in &plan.views {
        sources.push(probe(conn, view).await?);
    }
    conn.execute(format!("DROP TABLE IF EXISTS {TEMP_TABLE}").as_str())
        .await
        .map_err(|e| OfflineError::from_sqlx(e, "dropping an old temporary table"))?;
    let (columns, rows, entity_time) = match entities {
        Entities::Rows(mut rows) => {
            let columns = rows.columns().to_vec();
            let count = insert_rows(conn, rows.as_mut(), batch_rows).await?;
            (columns, count, quote(EVENT_TIMESTAMP))
        }
        Entities::Sql(query) => {
            let (columns, count) = insert_query(conn, &query, plan).await?;
            (columns, count, MICROS.to_owned())
        }
    };
    let out_columns = input::output_columns(&columns, plan)?;
    let mut batch = BatchBuilder::new(&out_columns, batch_rows);
    sink.begin(batch.schema().clone(), rows).await?;
    let sql = query(&columns, plan, &sources, &entity_time);
    let context = format!(
        "reading {}",
        plan.views
            .iter()
            .map(ViewPlan::describe)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let entity_columns = columns.len();
    let mut written: u64 = 0;
    let mut stream = sqlx::query(&sql).fetch(&mut *conn);
    while let Some(row) = stream
        .try_next()
        .await
        .map_err(|e| OfflineError::from_sqlx(e, &context))?
    {
        for (i, builder) in batch.columns.iter_mut().enumerate() {
            let column = &out_columns[i];
            stored(&row, i)
                .map_err(|e| e.to_string())
                .and_then(|cell| to_column(cell, column.ty, i < entity_columns))
                .and_then(|cell| builder.append(cell))
                .map_err(|why| {
                    OfflineError::Invalid(format!(
                        "output row {}, column {}: {why}",
                        written + 1,
                        column.name
                    ))
                })?;
        }
        batch.row_done();
        written += 1;
        if batch.is_full() {
            sink.write(batch.take()?).await?;
        }
    }
    if batch.rows() > 0 {
        sink.write(batch.take()?).await?;
    }
    Ok(written)
}
