//! Training sets from PostgreSQL, on one connection as the caller's
//! database user:
//!
//! 1. each source is probed (`SELECT <columns> ... LIMIT 0`): it exists,
//!    the user may read it, its columns hold the declared types;
//! 2. the entity rows go into a `TEMPORARY` table by `COPY` (or by
//!    `INSERT ... <query>` for `--entity-sql`), numbered in input order;
//! 3. one query joins every view with `LEFT JOIN LATERAL (... ORDER BY
//!    event time DESC, created DESC NULLS LAST LIMIT 1)`, ordered by the row
//!    number, and is streamed into the sink batch by batch.
//!
//! The user needs SELECT on the sources and the database's default TEMP
//! privilege, nothing else.

use futures::TryStreamExt as _;
use sqlx::postgres::{PgConnection, PgRow, PgValueFormat, PgValueRef};
use sqlx::{Column as _, Connection as _, Executor as _, Row as _, Statement as _};
use sqlx::{TypeInfo as _, ValueRef as _};

use super::columns::{BatchBuilder, Builder, Cell, ColType};
use super::input::{self, EntityColumn, Role};
use super::plan::{EVENT_TIMESTAMP, Plan, ViewPlan};
use super::time;
use super::{Entities, RowSink};
use crate::model::{SourceTable, ValueType};
use crate::offline::{OfflineError, OfflineStore, quote};

const TEMP_TABLE: &str = "\"larder_entities\"";
const TEMP_REF: &str = "pg_temp.\"larder_entities\"";
const ROW: &str = "\"__larder_row\"";

/// Builds the training set on a new connection, closed at the end (which
/// drops the temporary table).
pub(super) async fn build<S: RowSink>(
    store: &OfflineStore,
    database: &str,
    plan: &Plan,
    entities: Entities,
    sink: &mut S,
) -> Result<u64, OfflineError> {
    let mut conn = store.postgres(database).await?;
    let result = build_on(
        &mut conn,
        store.user(),
        store.batch_rows,
        plan,
        entities,
        sink,
    )
    .await;
    let _ = conn.close().await;
    result
}

/// How one view's source is read.
struct SourceSql {
    table: String,
    timestamp: String,
    created: Option<String>,
    /// (source column, entity column), quoted.
    keys: Vec<(String, String)>,
    /// One expression per read feature, cast to the feature's type.
    features: Vec<String>,
}

fn is_one_of(pg_type: &str, names: &[&str]) -> bool {
    names.iter().any(|n| pg_type.eq_ignore_ascii_case(n))
}

const INTEGERS: &[&str] = &["INT2", "INT4", "INT8"];
const NUMBERS: &[&str] = &["INT2", "INT4", "INT8", "FLOAT4", "FLOAT8", "NUMERIC"];
const TIMES: &[&str] = &["TIMESTAMPTZ", "TIMESTAMP", "DATE"];
const TEXTS: &[&str] = &["TEXT", "VARCHAR", "BPCHAR", "NAME", "CHAR"];

/// The expression reading source column `column` (of PostgreSQL type
/// `pg_type`) as a feature of type `declared`, or `None` when the column
/// cannot hold it without loss.
fn feature_expr(column: &str, pg_type: &str, declared: ValueType) -> Option<String> {
    let cast = |to: &str| Some(format!("{column}::{to}"));
    match declared {
        ValueType::Int32 if is_one_of(pg_type, &["INT2", "INT4"]) => cast("int4"),
        ValueType::Int64 if is_one_of(pg_type, INTEGERS) => cast("int8"),
        ValueType::Float if is_one_of(pg_type, NUMBERS) => cast("float4"),
        ValueType::Double if is_one_of(pg_type, NUMBERS) => cast("float8"),
        ValueType::Bool if is_one_of(pg_type, &["BOOL"]) => cast("bool"),
        ValueType::String => cast("text"),
        ValueType::Bytes if is_one_of(pg_type, &["BYTEA"]) => cast("bytea"),
        ValueType::Bytes if is_one_of(pg_type, TEXTS) => {
            Some(format!("convert_to({column}, 'UTF8')"))
        }
        ValueType::UnixTimestamp if is_one_of(pg_type, TIMES) => cast("timestamptz"),
        ValueType::UnixTimestamp if is_one_of(pg_type, NUMBERS) => {
            Some(format!("to_timestamp({column})"))
        }
        _ => None,
    }
}

/// Probes a view's source and says how to read it.
async fn probe(
    conn: &mut PgConnection,
    user: &str,
    view: &ViewPlan,
) -> Result<SourceSql, OfflineError> {
    let SourceTable::Postgres { schema, table, .. } = &view.source.table else {
        return Err(OfflineError::Invalid(format!(
            "{}: not a PostgreSQL source",
            view.describe()
        )));
    };
    let source = &view.source;
    let table = format!("{}.{}", quote(schema), quote(table));
    let mut columns: Vec<&str> = vec![&source.timestamp_field];
    if let Some(created) = &source.created_timestamp_field {
        columns.push(created);
    }
    let key_columns: Vec<&str> = view
        .view
        .join_keys
        .iter()
        .map(|k| source.column_of(&k.name))
        .collect();
    let feature_columns: Vec<(&str, &str, ValueType)> = view
        .features
        .iter()
        .map(|&i| {
            let f = &view.view.features[i];
            (f.name.as_str(), source.column_of(&f.name), f.value_type)
        })
        .collect();
    columns.extend(&key_columns);
    columns.extend(feature_columns.iter().map(|(_, c, _)| *c));
    let sql = format!(
        "SELECT {} FROM {table} LIMIT 0",
        columns
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let context = format!("{} as user {user:?}", view.describe());
    let types: Vec<String> = {
        let statement = conn
            .prepare(&sql)
            .await
            .map_err(|e| OfflineError::from_sqlx(e, &context))?;
        statement
            .columns()
            .iter()
            .map(|c| c.type_info().name().to_owned())
            .collect()
    };
    // Preparing checks names; running checks the user's privileges.
    conn.execute(sql.as_str())
        .await
        .map_err(|e| OfflineError::from_sqlx(e, &context))?;

    warn_without_index(conn, view, &table, &key_columns).await;

    let time_column = |name: &str, what: &str, pg_type: &str| {
        if is_one_of(pg_type, TIMES) {
            Ok(format!("s.{}", quote(name)))
        } else {
            Err(OfflineError::Invalid(format!(
                "{}: the {what} column {name:?} is {pg_type}; it must be timestamptz, \
                 timestamp or date",
                view.describe()
            )))
        }
    };
    let mut at = 0;
    let timestamp = time_column(&source.timestamp_field, "timestamp", &types[at])?;
    at += 1;
    let created = match &source.created_timestamp_field {
        Some(c) => {
            at += 1;
            Some(time_column(c, "created timestamp", &types[at - 1])?)
        }
        None => None,
    };
    let keys = view
        .view
        .join_keys
        .iter()
        .zip(&key_columns)
        .map(|(k, c)| (format!("s.{}", quote(c)), format!("e.{}", quote(&k.name))))
        .collect();
    at += key_columns.len();
    let mut features = Vec::new();
    for ((feature, column, declared), pg_type) in feature_columns.iter().zip(&types[at..]) {
        let expr =
            feature_expr(&format!("s.{}", quote(column)), pg_type, *declared).ok_or_else(|| {
                OfflineError::Invalid(format!(
                    "{}: column {column:?} is {pg_type}, which does not hold feature {feature}'s \
                     declared type {declared}",
                    view.describe()
                ))
            })?;
        features.push(expr);
    }
    Ok(SourceSql {
        table,
        timestamp,
        created,
        keys,
        features,
    })
}

/// Logs a warning when no index of the source starts with a join key
/// column (or, for a view without entities, the timestamp column): then
/// every entity row scans the table.
async fn warn_without_index(
    conn: &mut PgConnection,
    view: &ViewPlan,
    table: &str,
    key_columns: &[&str],
) {
    let source = &view.source;
    let leading: Vec<String> = if key_columns.is_empty() {
        vec![source.timestamp_field.clone()]
    } else {
        key_columns.iter().map(|c| (*c).to_owned()).collect()
    };
    let indexed: Result<bool, sqlx::Error> = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a \
         ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
         WHERE i.indrelid = $1::regclass AND a.attname = ANY($2))",
    )
    .bind(table)
    .bind(&leading)
    .fetch_one(&mut *conn)
    .await;
    if let Ok(false) = indexed {
        let mut columns: Vec<String> = key_columns.iter().map(|c| quote(c)).collect();
        columns.push(quote(&source.timestamp_field));
        tracing::warn!(
            "{}: no index starts with {}, so every entity row scans the table; \
             CREATE INDEX ON {table} ({}) makes each lookup an index scan",
            view.describe(),
            leading.join(" or "),
            columns.join(", ")
        );
    }
}

/// Writes a cell in COPY's text format.
fn copy_text(cell: &Cell, out: &mut Vec<u8>) {
    use std::io::Write as _;
    match cell {
        Cell::Null => out.extend_from_slice(b"\\N"),
        Cell::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Cell::Float(f) if f.is_nan() => out.extend_from_slice(b"NaN"),
        Cell::Float(f) if f.is_infinite() => {
            out.extend_from_slice(if *f > 0.0 { b"Infinity" } else { b"-Infinity" })
        }
        Cell::Float(f) => {
            let _ = write!(out, "{f}");
        }
        Cell::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        Cell::Text(s) => {
            for b in s.bytes() {
                match b {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    _ => out.push(b),
                }
            }
        }
        Cell::Bytes(bytes) => {
            // bytea's hex form, its backslash escaped for COPY.
            out.extend_from_slice(b"\\\\x");
            for b in bytes {
                let _ = write!(out, "{b:02x}");
            }
        }
        Cell::Time(t) => time::format_postgres(*t, out),
    }
}

/// Loads entity rows by COPY into a new temporary table; returns the row
/// count.
async fn copy_rows(
    conn: &mut PgConnection,
    rows: &mut dyn input::EntityRows,
    batch_rows: usize,
) -> Result<u64, OfflineError> {
    let columns = rows.columns().to_vec();
    let definitions: Vec<String> = columns
        .iter()
        .map(|c| format!("{} {}", quote(&c.name), c.ty.postgres()))
        .collect();
    let names: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
    let context = "loading the entity rows into a temporary table";
    conn.execute(
        format!(
            "CREATE TEMPORARY TABLE {TEMP_TABLE} ({ROW} int8 NOT NULL, {})",
            definitions.join(", ")
        )
        .as_str(),
    )
    .await
    .map_err(|e| OfflineError::from_sqlx(e, context))?;
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY {TEMP_REF} ({ROW}, {}) FROM STDIN",
            names.join(", ")
        ))
        .await
        .map_err(|e| OfflineError::from_sqlx(e, context))?;
    let mut cells = Vec::new();
    let mut buffer: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut count: u64 = 0;
    loop {
        cells.clear();
        let n = match rows.next_rows(&mut cells, batch_rows) {
            Ok(n) => n,
            Err(e) => {
                let _ = copy.abort(e.to_string()).await;
                return Err(e);
            }
        };
        if n == 0 {
            break;
        }
        for row in cells.chunks(columns.len()) {
            count += 1;
            copy_text(&Cell::Int(count as i64), &mut buffer);
            for cell in row {
                buffer.push(b'\t');
                copy_text(cell, &mut buffer);
            }
            buffer.push(b'\n');
        }
        if buffer.len() >= 1 << 20 {
            copy.send(buffer.as_slice())
                .await
                .map_err(|e| OfflineError::from_sqlx(e, context))?;
            buffer.clear();
        }
    }
    if !buffer.is_empty() {
        copy.send(buffer.as_slice())
            .await
            .map_err(|e| OfflineError::from_sqlx(e, context))?;
    }
    copy.finish()
        .await
        .map_err(|e| OfflineError::from_sqlx(e, context))?;
    Ok(count)
}

/// The column type an entity-query column of PostgreSQL type `pg_type`
/// is carried as, when it is not a join key or the timestamp.
fn extra_type(pg_type: &str) -> ColType {
    if is_one_of(pg_type, &["INT2", "INT4"]) {
        ColType::Int32
    } else if is_one_of(pg_type, &["INT8"]) {
        ColType::Int64
    } else if is_one_of(pg_type, &["FLOAT4"]) {
        ColType::Float32
    } else if is_one_of(pg_type, &["FLOAT8", "NUMERIC"]) {
        ColType::Float64
    } else if is_one_of(pg_type, &["BOOL"]) {
        ColType::Bool
    } else if is_one_of(pg_type, &["BYTEA"]) {
        ColType::Binary
    } else if is_one_of(pg_type, TIMES) {
        ColType::Timestamp
    } else {
        ColType::Utf8
    }
}

/// Runs the entity query into a new temporary table; returns the columns
/// and the row count.
async fn insert_query(
    conn: &mut PgConnection,
    user: &str,
    query: &str,
    plan: &Plan,
) -> Result<(Vec<EntityColumn>, u64), OfflineError> {
    let context = format!("running the entity query as user {user:?}");
    let described: Vec<(String, String)> = {
        let statement = conn
            .prepare(query)
            .await
            .map_err(|e| OfflineError::from_sqlx(e, &context))?;
        statement
            .columns()
            .iter()
            .map(|c| (c.name().to_owned(), c.type_info().name().to_owned()))
            .collect()
    };
    let mut columns = Vec::new();
    for (name, pg_type) in &described {
        let (role, ty) = input::classify(name, plan, extra_type(pg_type));
        let fits = match (role, ty) {
            (Role::Timestamp, _) => is_one_of(pg_type, TIMES),
            (Role::Key, ColType::Int32) => is_one_of(pg_type, &["INT2", "INT4"]),
            (Role::Key, ColType::Int64) => is_one_of(pg_type, INTEGERS),
            (Role::Key, ColType::Utf8) => is_one_of(pg_type, TEXTS),
            (Role::Key, ColType::Binary) => is_one_of(pg_type, &["BYTEA"]),
            _ => true,
        };
        if !fits {
            return Err(OfflineError::Invalid(format!(
                "the entity query's column {name} is {pg_type}, which cannot hold {}",
                match role {
                    Role::Timestamp => "a timestamp (use timestamptz)".to_owned(),
                    _ => format!("the join key's type {}", ty.postgres()),
                }
            )));
        }
        columns.push(EntityColumn {
            name: name.clone(),
            ty,
            role,
        });
    }
    input::check_columns(&columns, plan, "the entity query")?;
    let definitions: Vec<String> = columns
        .iter()
        .map(|c| format!("{} {}", quote(&c.name), c.ty.postgres()))
        .collect();
    let names: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
    conn.execute(
        format!(
            "CREATE TEMPORARY TABLE {TEMP_TABLE} \
             ({ROW} int8 GENERATED ALWAYS AS IDENTITY, {})",
            definitions.join(", ")
        )
        .as_str(),
    )
    .await
    .map_err(|e| OfflineError::from_sqlx(e, &context))?;
    let inserted = conn
        .execute(format!("INSERT INTO {TEMP_REF} ({}) {query}", names.join(", ")).as_str())
        .await
        .map_err(|e| OfflineError::from_sqlx(e, &context))?
        .rows_affected();
    let missing: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT {ROW} FROM {TEMP_REF} WHERE {} IS NULL ORDER BY 1 LIMIT 1",
        quote(EVENT_TIMESTAMP)
    ))
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| OfflineError::from_sqlx(e, &context))?;
    if let Some(row) = missing {
        return Err(OfflineError::Invalid(format!(
            "the entity query's row {row}: column {EVENT_TIMESTAMP} is null"
        )));
    }
    Ok((columns, inserted))
}

/// The point-in-time query.
fn query(columns: &[EntityColumn], plan: &Plan, sources: &[SourceSql]) -> String {
    let mut select: Vec<String> = columns
        .iter()
        .map(|c| format!("e.{}", quote(&c.name)))
        .collect();
    select.extend(
        plan.outputs
            .iter()
            .map(|o| format!("v{}.f{}", o.view, o.slot)),
    );
    let mut sql = format!("SELECT {} FROM {TEMP_REF} AS e", select.join(", "));
    let entity_time = format!("e.{}", quote(EVENT_TIMESTAMP));
    for (i, (view, source)) in plan.views.iter().zip(sources).enumerate() {
        let features: Vec<String> = source
            .features
            .iter()
            .enumerate()
            .map(|(slot, expr)| format!("{expr} AS f{slot}"))
            .collect();
        let mut conditions: Vec<String> = source
            .keys
            .iter()
            .map(|(s, e)| format!("{s} = {e}"))
            .collect();
        conditions.push(format!("{} <= {entity_time}", source.timestamp));
        if let Some(ttl) = view.view.ttl {
            let micros = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
            conditions.push(format!(
                "{} >= {entity_time} - interval '{micros} microseconds'",
                source.timestamp
            ));
        }
        let mut order = format!("{} DESC", source.timestamp);
        if let Some(created) = &source.created {
            order.push_str(&format!(", {created} DESC NULLS LAST"));
        }
        sql.push_str(&format!(
            " LEFT JOIN LATERAL (SELECT {} FROM {} AS s WHERE {} ORDER BY {order} LIMIT 1) AS v{i} ON true",
            features.join(", "),
            source.table,
            conditions.join(" AND "),
        ));
    }
    sql.push_str(&format!(" ORDER BY e.{ROW}"));
    sql
}

/// Microseconds since the epoch of a timestamptz value.
fn timestamp_micros(value: PgValueRef<'_>) -> Result<i64, String> {
    match value.format() {
        PgValueFormat::Binary => {
            let bytes: [u8; 8] = value
                .as_bytes()
                .map_err(|e| e.to_string())?
                .try_into()
                .map_err(|_| "a timestamp is not 8 bytes".to_owned())?;
            let since_2000 = i64::from_be_bytes(bytes);
            if since_2000 == i64::MAX || since_2000 == i64::MIN {
                return Err("the timestamp is infinite".into());
            }
            since_2000
                .checked_add(time::PG_EPOCH_OFFSET_MICROS)
                .ok_or_else(|| "the timestamp is out of range".into())
        }
        PgValueFormat::Text => time::parse_timestamp(value.as_str().map_err(|e| e.to_string())?),
    }
}

/// Appends column `i` of `row` to its builder; the query casts every
/// column to its builder's type.
fn append(row: &PgRow, i: usize, builder: &mut Builder) -> Result<(), String> {
    let e = |e: sqlx::Error| e.to_string();
    match builder {
        Builder::Int32(b) => b.append_option(row.try_get::<Option<i32>, _>(i).map_err(e)?),
        Builder::Int64(b) => b.append_option(row.try_get::<Option<i64>, _>(i).map_err(e)?),
        Builder::Float32(b) => b.append_option(row.try_get::<Option<f32>, _>(i).map_err(e)?),
        Builder::Float64(b) => b.append_option(row.try_get::<Option<f64>, _>(i).map_err(e)?),
        Builder::Bool(b) => b.append_option(row.try_get::<Option<bool>, _>(i).map_err(e)?),
        Builder::Utf8(b) => b.append_option(row.try_get::<Option<&str>, _>(i).map_err(e)?),
        Builder::Binary(b) => b.append_option(row.try_get::<Option<&[u8]>, _>(i).map_err(e)?),
        Builder::Timestamp(b) => {
            let value = row.try_get_raw(i).map_err(e)?;
            if value.is_null() {
                b.append_null();
            } else {
                b.append_value(timestamp_micros(value)?);
            }
        }
    }
    Ok(())
}

async fn build_on<S: RowSink>(
    conn: &mut PgConnection,
    user: &str,
    batch_rows: usize,
    plan: &Plan,
    entities: Entities,
    sink: &mut S,
) -> Result<u64, OfflineError> {
    // `timestamp` columns are read as UTC.
    conn.execute("SET TimeZone TO 'UTC'")
        .await
        .map_err(|e| OfflineError::from_sqlx(e, "setting the session's time zone"))?;
    let mut sources = Vec::with_capacity(plan.views.len());
    for view in &plan.views {
        sources.push(probe(conn, user, view).await?);
    }
    let (columns, rows) = match entities {
        Entities::Rows(mut rows) => {
            let columns = rows.columns().to_vec();
            let count = copy_rows(conn, rows.as_mut(), batch_rows).await?;
            (columns, count)
        }
        Entities::Sql(query) => insert_query(conn, user, &query, plan).await?,
    };
    let out_columns = input::output_columns(&columns, plan)?;
    conn.execute(format!("ANALYZE {TEMP_REF}").as_str())
        .await
        .map_err(|e| OfflineError::from_sqlx(e, "analyzing the entity rows"))?;

    let mut batch = BatchBuilder::new(&out_columns, batch_rows);
    sink.begin(batch.schema().clone(), rows).await?;
    let sql = query(&columns, plan, &sources);
    let context = format!(
        "reading {} as user {user:?}",
        plan.views
            .iter()
            .map(ViewPlan::describe)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut written: u64 = 0;
    let mut stream = sqlx::query(&sql).fetch(&mut *conn);
    while let Some(row) = stream
        .try_next()
        .await
        .map_err(|e| OfflineError::from_sqlx(e, &context))?
    {
        for (i, builder) in batch.columns.iter_mut().enumerate() {
            append(&row, i, builder).map_err(|why| {
                OfflineError::Database(format!(
                    "output row {}, column {}: {why}",
                    written + 1,
                    out_columns[i].name
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
