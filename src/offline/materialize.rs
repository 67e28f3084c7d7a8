//! Materialization: the latest offline rows per entity into the online
//! store (`larder materialize`, `larder materialize-incremental`).
//!
//! For every feature view with a batch source and `online: true`, the
//! latest row per entity key with an event time in (start, end] is read
//! from the source table, as the owning namespace's database user, typed by
//! the view's declared types and written to the online store with the
//! owning namespace's credentials, newer-only. Reading the next batch
//! overlaps with writing the previous one (a reader task and a bounded
//! channel). Once a view is done, the interval is recorded in the registry,
//! so `materialize-incremental` knows where to start next time; an
//! interrupted run records nothing and can simply be run again (writes are
//! newer-only, so rewriting what was already written changes nothing).
//!
//! PostgreSQL: `SELECT DISTINCT ON (keys) ... ORDER BY keys, ts DESC,
//! created DESC NULLS LAST`. SQLite: `ROW_NUMBER() OVER (PARTITION BY keys
//! ORDER BY ts DESC, created DESC NULLS LAST)` on the event times as
//! SQLite's date functions read them (millisecond precision; within a
//! millisecond the later created time wins, then the later text).

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sqlx::postgres::{PgRow, PgValueFormat, PgValueRef, Postgres};
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{Column, Decode, Row, TypeInfo, ValueRef};
use tokio::sync::mpsc;

use super::{OfflineError, OfflineStore, quote};
use crate::config::{Config, StoreKind};
use crate::model::{DataSource, EventTime, SourceTable, Value, ValueType};
use crate::online::layout::KeyVersion;
use crate::online::{OnlineStore, RedisStore, RowWrite, StoreError, ViewRow, WriteError};
use crate::registry::store::{RegistryStore, SqlRegistryStore};
use crate::registry::{RegistrySnapshot, ServedOdfv, ServedView};

/// `larder materialize START END`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MaterializeArgs {
    /// Start of the interval (exclusive), RFC 3339.
    pub start: String,
    /// End of the interval (inclusive), RFC 3339 or `now`.
    pub end: String,
    /// Only these feature views, `view` or `namespace/view` (default: every
    /// online view with a batch source).
    #[arg(long, num_args = 1..)]
    pub views: Vec<String>,
    /// Only this namespace (default: all).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub from: DefinitionArgs,
}

/// `larder materialize-incremental END`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct IncrementalArgs {
    /// End of the interval (inclusive), RFC 3339 or `now`.
    pub end: String,
    /// Only these feature views, `view` or `namespace/view`.
    #[arg(long, num_args = 1..)]
    pub views: Vec<String>,
    /// Only this namespace (default: all).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub from: DefinitionArgs,
}

/// Where definitions come from and where intervals are recorded.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DefinitionArgs {
    /// Definitions: a manifest file or a folder (overrides
    /// serve.definitions, and the registry's when following one).
    #[arg(long, short = 'd')]
    pub definitions: Option<PathBuf>,
    /// The registry's URL: take definitions from it and record intervals
    /// through its API (default when serve.follow_registry: registry.url).
    /// Otherwise intervals go straight into registry.database.
    #[arg(long, env = "LARDER_REGISTRY")]
    pub registry: Option<String>,
}

/// What materializing one feature view did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewReport {
    pub namespace: String,
    pub view: String,
    /// The interval (start, end] that was read.
    pub start: EventTime,
    pub end: EventTime,
    /// Latest rows per entity read from the offline store.
    pub rows_read: u64,
    /// Rows the online store took (newer than what it held).
    pub rows_written: u64,
    /// Whether the interval was recorded (false when there was nothing to
    /// read: start not before end).
    pub recorded: bool,
    pub elapsed: Duration,
}

/// Runs `larder materialize`.
pub async fn run(config: &Config, args: MaterializeArgs) -> Result<(), OfflineError> {
    materialize(config, &args).await.map(|_| ())
}

/// Runs `larder materialize-incremental`.
pub async fn run_incremental(config: &Config, args: IncrementalArgs) -> Result<(), OfflineError> {
    materialize_incremental(config, &args).await.map(|_| ())
}

/// `larder materialize`, returning what each view did.
pub async fn materialize(
    config: &Config,
    args: &MaterializeArgs,
) -> Result<Vec<ViewReport>, OfflineError> {
    let start = parse_time(&args.start, "START")?;
    let end = parse_time(&args.end, "END")?;
    if start >= end {
        return Err(OfflineError::Invalid(format!(
            "START ({}) must be before END ({})",
            rfc3339(start),
            rfc3339(end)
        )));
    }
    drive(
        config,
        &args.from,
        args.namespace.as_deref(),
        &args.views,
        Window::Fixed(start, end),
    )
    .await
}

/// `larder materialize-incremental`, returning what each view did.
pub async fn materialize_incremental(
    config: &Config,
    args: &IncrementalArgs,
) -> Result<Vec<ViewReport>, OfflineError> {
    let end = parse_time(&args.end, "END")?;
    drive(
        config,
        &args.from,
        args.namespace.as_deref(),
        &args.views,
        Window::Incremental(end),
    )
    .await
}

#[derive(Debug, Clone, Copy)]
enum Window {
    Fixed(EventTime, EventTime),
    Incremental(EventTime),
}

/// A view to materialize and its source.
struct Target {
    view: Arc<ServedView>,
    source: DataSource,
}

impl Target {
    fn name(&self) -> String {
        format!("{}/{}", self.view.view.namespace, self.view.view.name)
    }
}

async fn drive(
    config: &Config,
    from: &DefinitionArgs,
    namespace: Option<&str>,
    views: &[String],
    window: Window,
) -> Result<Vec<ViewReport>, OfflineError> {
    let registry = registry_url(config, from);
    let snapshot = load_definitions(config, from, registry.as_deref()).await?;
    let targets = select_views(&snapshot, namespace, views)?;
    if targets.is_empty() {
        println!("no online feature views with a batch source to materialize");
        return Ok(Vec::new());
    }
    let log = IntervalLog::open(config, registry.as_deref()).await?;
    let namespaces: BTreeSet<&str> = targets
        .iter()
        .map(|t| t.view.view.namespace.as_str())
        .collect();
    let stores = Stores::open(config, &namespaces).await?;
    let multi = MultiProgress::with_draw_target(if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let now = EventTime::now();
    let mut reports = Vec::new();
    let mut failures: Vec<OfflineError> = Vec::new();
    for target in &targets {
        let outcome = async {
            let view = &target.view.view;
            let (start, end) = match window {
                Window::Fixed(start, end) => (start, end),
                Window::Incremental(end) => {
                    let start = match log.last_end_ms(&view.namespace, &view.name).await? {
                        Some(ms) => from_millis(ms),
                        None => match view.ttl {
                            Some(ttl) => minus(now, ttl),
                            None => EventTime::EPOCH,
                        },
                    };
                    (start, end)
                }
            };
            if start >= end {
                multi.suspend(|| {
                    println!(
                        "{}: up to date (materialized up to {}, END is {})",
                        target.name(),
                        rfc3339(start),
                        rfc3339(end)
                    )
                });
                return Ok(ViewReport {
                    namespace: view.namespace.clone(),
                    view: view.name.clone(),
                    start,
                    end,
                    rows_read: 0,
                    rows_written: 0,
                    recorded: false,
                    elapsed: Duration::ZERO,
                });
            }
            let offline = OfflineStore::for_namespace(config, &view.namespace)?;
            let (store, user) = stores.of(&view.namespace)?;
            let bar = multi.add(progress_bar(&target.name()));
            let began = Instant::now();
            let derived: Vec<Arc<ServedOdfv>> = snapshot
                .namespace(&view.namespace)
                .map(|defs| defs.derived_from(&view.name).cloned().collect())
                .unwrap_or_default();
            let counts = materialize_view(
                &offline,
                &target.source,
                target.view.clone(),
                &derived,
                store,
                user,
                start,
                end,
                &bar,
            )
            .await;
            bar.finish_and_clear();
            let (rows_read, rows_written) = counts?;
            let elapsed = began.elapsed();
            let (start_ms, end_ms) = (millis(start), millis(end));
            let recorded = start_ms < end_ms;
            if recorded {
                log.record(&view.namespace, &view.name, start_ms, end_ms)
                    .await?;
            }
            multi.suspend(|| {
                println!(
                    "{}: {rows_read} rows read, {rows_written} written in {:.2}s ({}, {}]",
                    target.name(),
                    elapsed.as_secs_f64(),
                    rfc3339(start),
                    rfc3339(end)
                )
            });
            Ok::<_, OfflineError>(ViewReport {
                namespace: view.namespace.clone(),
                view: view.name.clone(),
                start,
                end,
                rows_read,
                rows_written,
                recorded,
                elapsed,
            })
        }
        .await;
        match outcome {
            Ok(report) => reports.push(report),
            Err(e) => {
                let e = with_context(e, &target.name());
                multi.suspend(|| eprintln!("error: {e}"));
                failures.push(e);
            }
        }
    }
    let count = failures.len();
    match failures.into_iter().next() {
        None => Ok(reports),
        Some(first) if count == 1 => Err(first),
        Some(first) => Err(with_context(
            first,
            &format!(
                "{count} of {} feature views failed (the others are listed above); the first",
                targets.len()
            ),
        )),
    }
}

fn progress_bar(name: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {prefix}: {human_pos} rows, {per_sec} [{elapsed}]")
    {
        bar.set_style(style);
    }
    bar.set_prefix(name.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Reads (start, end] of `view`'s source as `offline`'s user and writes the
/// latest row per entity into `store`, newer-only. Returns (rows read, rows
/// written). `redis_user` names the credentials in errors.
#[allow(clippy::too_many_arguments)]
pub async fn materialize_view(
    offline: &OfflineStore,
    source: &DataSource,
    view: Arc<ServedView>,
    derived: &[Arc<ServedOdfv>],
    store: &OnlineStore,
    redis_user: Option<&str>,
    start: EventTime,
    end: EventTime,
    progress: &ProgressBar,
) -> Result<(u64, u64), OfflineError> {
    let batch_rows = offline.batch_rows.max(1);
    // Two batches in flight: one being written, one read ahead.
    let (tx, mut rx) = mpsc::channel::<Result<Batch, OfflineError>>(2);
    let reader = Reader {
        offline: offline.clone(),
        source: source.clone(),
        view: view.clone(),
        derived: derived.to_vec(),
        start,
        end,
        batch_rows,
        key_version: store.key_version(),
        tx,
    };
    let reader = tokio::spawn(reader.run());
    let as_user = match redis_user {
        Some(u) => format!(" as Redis user {u:?}"),
        None => String::new(),
    };
    let mut read = 0u64;
    let mut written = 0u64;
    let outcome: Result<(), OfflineError> = async {
        while let Some(batch) = rx.recv().await {
            let batch = batch?;
            let n = futures::stream::iter(batch.writes.chunks(WRITE_CHUNK))
                .map(|chunk| store.write(chunk))
                .buffer_unordered(WRITE_CONCURRENCY)
                .try_fold(0usize, |sum, n| async move { Ok(sum + n) })
                .await
                .map_err(|e| store_error(e, &format!("writing to the online store{as_user}")))?;
            // Views computed at write time from these rows: stored after
            // them, newer-only like them.
            futures::stream::iter(batch.derived.chunks(WRITE_CHUNK))
                .map(|chunk| store.write(chunk))
                .buffer_unordered(WRITE_CONCURRENCY)
                .try_fold(0usize, |sum, n| async move { Ok(sum + n) })
                .await
                .map_err(|e| store_error(e, &format!("writing to the online store{as_user}")))?;
            read += batch.writes.len() as u64;
            written += n as u64;
            progress.inc(batch.writes.len() as u64);
        }
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => {
            reader.await.map_err(|e| {
                OfflineError::Io(std::io::Error::other(format!("the reader stopped: {e}")))
            })?;
            Ok((read, written))
        }
        Err(e) => {
            reader.abort();
            Err(e)
        }
    }
}

/// Rows per online-store call, and how many calls run at once.
const WRITE_CHUNK: usize = 1000;
const WRITE_CONCURRENCY: usize = 4;

struct Batch {
    writes: Vec<RowWrite>,
    /// Rows of the views computed at write time from these rows.
    derived: Vec<RowWrite>,
}

/// Reads the latest row per entity and sends them in typed, encoded
/// batches.
struct Reader {
    offline: OfflineStore,
    source: DataSource,
    view: Arc<ServedView>,
    derived: Vec<Arc<ServedOdfv>>,
    start: EventTime,
    end: EventTime,
    batch_rows: usize,
    key_version: KeyVersion,
    tx: mpsc::Sender<Result<Batch, OfflineError>>,
}

impl Reader {
    async fn run(self) {
        let result = match &self.source.table {
            SourceTable::Postgres {
                database,
                schema,
                table,
            } => self.read_postgres(database, schema, table).await,
            SourceTable::Sqlite { table } => self.read_sqlite(table).await,
        };
        if let Err(e) = result {
            let _ = self.tx.send(Err(e)).await;
        }
    }

    /// Converts one batch and sends it; false when the writer is gone.
    async fn send(&self, rows: &mut Vec<ViewRow>, table: &str) -> Result<bool, OfflineError> {
        if rows.is_empty() {
            return Ok(true);
        }
        let writes = crate::online::rows_to_writes(&self.view, rows, self.key_version).map_err(
            |e| match e {
                WriteError::BadRow { row, message } => {
                    let at = rows
                        .get(row)
                        .map(|r| describe_row(&self.view, &r.keys, r.event_time))
                        .unwrap_or_default();
                    OfflineError::Invalid(format!("table {table}: row {at}: {message}"))
                }
                WriteError::Store(e) => store_error(e, "encoding rows"),
            },
        )?;
        let mut derived = Vec::new();
        for odfv in &self.derived {
            let Some(stored) = &odfv.stored else { continue };
            let (rows, _) = odfv.derive_rows(rows);
            derived.extend(
                crate::online::rows_to_writes(stored, &rows, self.key_version).map_err(|e| {
                    OfflineError::Invalid(format!(
                        "on-demand feature view {}/{}: {e}",
                        odfv.odfv.namespace, odfv.odfv.name
                    ))
                })?,
            );
        }
        rows.clear();
        Ok(self.tx.send(Ok(Batch { writes, derived })).await.is_ok())
    }

    async fn read_postgres(
        &self,
        database: &str,
        schema: &str,
        table: &str,
    ) -> Result<(), OfflineError> {
        let view = &self.view.view;
        let name = format!("{schema}.{table}");
        let context = format!("reading table {name} as {:?}", self.offline.user());
        let mut conn = self.offline.postgres(database).await?;
        // `timestamp` columns hold UTC; compare them with the bounds in UTC.
        sqlx::query("SET TIME ZONE 'UTC'")
            .execute(&mut conn)
            .await
            .map_err(|e| OfflineError::from_sqlx(e, &context))?;
        let sql = postgres_latest_sql(&self.source, view, schema, table);
        let mut stream = sqlx::query(&sql)
            .bind(rfc3339(self.start))
            .bind(rfc3339(self.end))
            .fetch(&mut conn);
        let n_keys = view.join_keys.len();
        let mut kinds: Option<Vec<PgKind>> = None;
        let mut rows: Vec<ViewRow> = Vec::with_capacity(self.batch_rows);
        while let Some(row) = stream
            .try_next()
            .await
            .map_err(|e| OfflineError::from_sqlx(e, &context))?
        {
            let kinds = kinds.get_or_insert_with(|| {
                row.columns()
                    .iter()
                    .map(|c| PgKind::of(c.type_info().name()))
                    .collect()
            });
            let decode = |i: usize| -> Result<Raw, String> {
                let kind = kinds.get(i).copied().unwrap_or(PgKind::Unsupported);
                pg_raw(&row, i, kind)
            };
            let view_row = self.typed_row(&name, n_keys, decode)?;
            rows.push(view_row);
            if rows.len() >= self.batch_rows && !self.send(&mut rows, &name).await? {
                return Ok(());
            }
        }
        self.send(&mut rows, &name).await?;
        Ok(())
    }

    async fn read_sqlite(&self, table: &str) -> Result<(), OfflineError> {
        let view = &self.view.view;
        let context = format!("reading table {table} of the SQLite offline store");
        let pool = self.offline.sqlite().await?;
        // Event times that SQLite cannot read would silently fall outside
        // every interval: refuse them instead.
        let ts = quote(&self.source.timestamp_field);
        let bad = format!(
            "SELECT quote({ts}) FROM {} WHERE {ts} IS NOT NULL AND ({}) IS NULL LIMIT 1",
            quote(table),
            sqlite_time_key(&ts)
        );
        if let Some(row) = sqlx::query(&bad)
            .fetch_optional(&pool)
            .await
            .map_err(|e| OfflineError::from_sqlx(e, &context))?
        {
            let text: String = row.try_get(0).unwrap_or_default();
            return Err(OfflineError::Invalid(format!(
                "table {table}: event time {text} in column {ts} is not ISO 8601 text (like 2024-05-01 12:00:00.5) or epoch seconds"
            )));
        }
        let sql = sqlite_latest_sql(&self.source, view, table);
        let mut stream = sqlx::query(&sql)
            .bind(epoch_seconds(self.start))
            .bind(epoch_seconds(self.end))
            .fetch(&pool);
        let n_keys = view.join_keys.len();
        let mut rows: Vec<ViewRow> = Vec::with_capacity(self.batch_rows);
        while let Some(row) = stream
            .try_next()
            .await
            .map_err(|e| OfflineError::from_sqlx(e, &context))?
        {
            let view_row = self.typed_row(table, n_keys, |i| sqlite_raw(&row, i))?;
            rows.push(view_row);
            if rows.len() >= self.batch_rows && !self.send(&mut rows, table).await? {
                return Ok(());
            }
        }
        self.send(&mut rows, table).await?;
        Ok(())
    }

    /// One row in domain terms: join keys, event time and features typed
    /// by the view. Errors name the table, the row and the column.
    fn typed_row(
        &self,
        table: &str,
        n_keys: usize,
        decode: impl Fn(usize) -> Result<Raw, String>,
    ) -> Result<ViewRow, OfflineError> {
        let view = &self.view.view;
        let mut keys = Vec::with_capacity(n_keys);
        for (i, key) in view.join_keys.iter().enumerate() {
            let column = self.source.column_of(&key.name);
            let value = decode(i)
                .and_then(|raw| fit(raw, key.value_type))
                .map_err(|e| {
                    let so_far = describe_keys(&self.view, &keys);
                    OfflineError::Invalid(format!(
                        "table {table}: row {so_far}: column {column:?} (join key {}): {e}",
                        key.name
                    ))
                })?;
            if value.is_null() {
                let so_far = describe_keys(&self.view, &keys);
                return Err(OfflineError::Invalid(format!(
                    "table {table}: row {so_far}: column {column:?} (join key {}) is null",
                    key.name
                )));
            }
            keys.push(value);
        }
        let ts_column = &self.source.timestamp_field;
        let event_time = decode(n_keys).and_then(raw_time).map_err(|e| {
            OfflineError::Invalid(format!(
                "table {table}: row {}: event time column {ts_column:?}: {e}",
                describe_keys(&self.view, &keys)
            ))
        })?;
        let mut values = Vec::with_capacity(view.features.len());
        for (j, feature) in view.features.iter().enumerate() {
            let value = decode(n_keys + 1 + j)
                .and_then(|raw| fit(raw, feature.value_type))
                .map_err(|e| {
                    OfflineError::Invalid(format!(
                        "table {table}: row {}: column {:?} (feature {}, {}): {e}",
                        describe_row(&self.view, &keys, event_time),
                        self.source.column_of(&feature.name),
                        feature.name,
                        feature.value_type
                    ))
                })?;
            values.push(value);
        }
        Ok(ViewRow {
            keys,
            event_time,
            values,
        })
    }
}

/// The latest row per entity key in (`$1`, `$2`] of a PostgreSQL source.
pub fn postgres_latest_sql(
    source: &DataSource,
    view: &crate::model::FeatureView,
    schema: &str,
    table: &str,
) -> String {
    let keys: Vec<String> = view
        .join_keys
        .iter()
        .map(|k| quote(source.column_of(&k.name)))
        .collect();
    let ts = quote(&source.timestamp_field);
    let mut select = keys.clone();
    select.push(ts.clone());
    select.extend(
        view.features
            .iter()
            .map(|f| quote(source.column_of(&f.name))),
    );
    let mut order = keys.clone();
    order.push(format!("{ts} DESC"));
    if let Some(created) = &source.created_timestamp_field {
        order.push(format!("{} DESC NULLS LAST", quote(created)));
    }
    let from = format!("{}.{}", quote(schema), quote(table));
    let filter = format!("{ts} > $1::timestamptz AND {ts} <= $2::timestamptz");
    if keys.is_empty() {
        format!(
            "SELECT {} FROM {from} WHERE {filter} ORDER BY {} LIMIT 1",
            select.join(", "),
            order.join(", ")
        )
    } else {
        format!(
            "SELECT DISTINCT ON ({}) {} FROM {from} WHERE {filter} ORDER BY {}",
            keys.join(", "),
            select.join(", "),
            order.join(", ")
        )
    }
}

/// An event time of a SQLite column as epoch seconds (SQLite's date
/// functions: millisecond precision), NULL when it is not a time. Numbers,
/// and text holding only a number, are epoch seconds.
fn sqlite_time_key(column: &str) -> String {
    format!(
        "CASE typeof({column}) WHEN 'integer' THEN {column} WHEN 'real' THEN {column} \
         WHEN 'text' THEN CASE WHEN {column} <> '' AND {column} NOT GLOB '*[^0-9.]*' \
         THEN CAST({column} AS REAL) ELSE unixepoch({column}, 'subsec') END END"
    )
}

/// The latest row per entity key in (`?1`, `?2`] (epoch seconds) of a
/// SQLite source.
pub fn sqlite_latest_sql(
    source: &DataSource,
    view: &crate::model::FeatureView,
    table: &str,
) -> String {
    let keys: Vec<String> = view
        .join_keys
        .iter()
        .map(|k| quote(source.column_of(&k.name)))
        .collect();
    let ts = quote(&source.timestamp_field);
    let mut columns = keys.clone();
    columns.push(ts.clone());
    columns.extend(
        view.features
            .iter()
            .map(|f| quote(source.column_of(&f.name))),
    );
    let inner: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} AS c{i}"))
        .collect();
    let outer: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
    let key = sqlite_time_key(&ts);
    // Same millisecond: the later created wins, then the later text.
    let mut order = vec![format!("{key} DESC")];
    if let Some(created) = &source.created_timestamp_field {
        order.push(format!(
            "{} DESC NULLS LAST",
            sqlite_time_key(&quote(created))
        ));
    }
    order.push(format!("{ts} DESC"));
    let partition = if keys.is_empty() {
        String::new()
    } else {
        format!("PARTITION BY {} ", keys.join(", "))
    };
    format!(
        "SELECT {} FROM (SELECT {}, ROW_NUMBER() OVER ({partition}ORDER BY {}) AS larder_rank \
         FROM {} WHERE {key} > ?1 AND {key} <= ?2) WHERE larder_rank = 1",
        outer.join(", "),
        inner.join(", "),
        order.join(", "),
        quote(table)
    )
}

// ---------------------------------------------------------------------------
// Values: database values -> the view's declared types.

/// A database value before it is typed by the view.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Bool(bool),
    Time(EventTime),
    Ints(Vec<i64>),
    Floats(Vec<f64>),
    Texts(Vec<String>),
    BytesList(Vec<Vec<u8>>),
    Bools(Vec<bool>),
}

impl Raw {
    fn describe(&self) -> String {
        match self {
            Raw::Null => "null".into(),
            Raw::Int(i) => format!("integer {i}"),
            Raw::Float(f) => format!("floating-point {f}"),
            Raw::Text(s) => {
                let short: String = s.chars().take(40).collect();
                if short.len() < s.len() {
                    format!("text {short:?}...")
                } else {
                    format!("text {s:?}")
                }
            }
            Raw::Bytes(b) => format!("{} bytes", b.len()),
            Raw::Bool(b) => format!("boolean {b}"),
            Raw::Time(t) => format!("timestamp {}", rfc3339(*t)),
            Raw::Ints(_) => "an integer array".into(),
            Raw::Floats(_) => "a floating-point array".into(),
            Raw::Texts(_) => "a text array".into(),
            Raw::BytesList(_) => "a bytes array".into(),
            Raw::Bools(_) => "a boolean array".into(),
        }
    }
}

const MAX_EXACT_F64: u64 = 1 << 53;
const MAX_EXACT_F32: u64 = 1 << 24;

fn int_to<T: TryFrom<i64>>(i: i64, target: ValueType) -> Result<T, String> {
    T::try_from(i).map_err(|_| format!("{i} does not fit in {target}"))
}

fn float_to_int(f: f64, target: ValueType) -> Result<i64, String> {
    // i64::MAX as f64 rounds up to 2^63, so the upper bound is exclusive.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if f.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&f) {
        Ok(f as i64)
    } else {
        Err(format!("{f} is not a whole number that fits in {target}"))
    }
}

fn int_to_float(i: i64, limit: u64, target: ValueType) -> Result<f64, String> {
    if i.unsigned_abs() <= limit {
        Ok(i as f64)
    } else {
        Err(format!("{i} cannot be held exactly by {target}"))
    }
}

fn double_to_float(f: f64) -> Result<f32, String> {
    let g = f as f32;
    if f.is_finite() && !g.is_finite() {
        Err(format!("{f} is outside the range of FLOAT"))
    } else {
        Ok(g)
    }
}

/// Seconds of a timestamp text (ISO 8601 / RFC 3339; no offset means UTC).
fn parse_timestamp_text(text: &str) -> Result<EventTime, String> {
    let t: prost_types::Timestamp = text.trim().parse().map_err(|_| {
        format!("{text:?} is not a timestamp (ISO 8601, like 2024-05-01 12:00:00 or 2024-05-01T12:00:00Z)")
    })?;
    Ok(EventTime {
        seconds: t.seconds,
        nanos: t.nanos,
    })
}

/// An event time from a database value.
fn raw_time(raw: Raw) -> Result<EventTime, String> {
    match raw {
        Raw::Time(t) => Ok(t),
        // Epoch seconds in a TEXT column (SQLite's affinity turns numbers
        // into text there).
        Raw::Text(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
            match s.parse::<i64>() {
                Ok(i) => Ok(EventTime::from_seconds(i)),
                Err(_) => s
                    .parse::<f64>()
                    .map_err(|_| format!("{s:?} is not a timestamp"))
                    .and_then(|f| raw_time(Raw::Float(f))),
            }
        }
        Raw::Text(s) => parse_timestamp_text(&s),
        Raw::Int(i) => Ok(EventTime::from_seconds(i)),
        Raw::Float(f) if f.is_finite() && f.abs() < 1e15 => {
            let seconds = f.floor();
            let nanos = ((f - seconds) * 1e9).round().clamp(0.0, 999_999_999.0);
            Ok(EventTime {
                seconds: seconds as i64,
                nanos: nanos as i32,
            })
        }
        Raw::Null => Err("is null".into()),
        other => Err(format!("{} is not a timestamp", other.describe())),
    }
}

/// A JSON array held in a text column, as a list.
fn json_list(text: &str, target: ValueType) -> Result<Raw, String> {
    let bad = || format!("text {text:?} is not a JSON array for {target}");
    let items: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|_| bad())?;
    let all = |f: &dyn Fn(&serde_json::Value) -> bool| items.iter().all(f);
    Ok(match target {
        ValueType::Int32List | ValueType::Int64List => {
            if !all(&|v| v.is_i64()) {
                return Err(bad());
            }
            Raw::Ints(items.iter().filter_map(|v| v.as_i64()).collect())
        }
        ValueType::DoubleList | ValueType::FloatList => {
            if !all(&|v| v.is_number()) {
                return Err(bad());
            }
            Raw::Floats(items.iter().filter_map(|v| v.as_f64()).collect())
        }
        ValueType::BoolList => {
            if !all(&|v| v.is_boolean()) {
                return Err(bad());
            }
            Raw::Bools(items.iter().filter_map(|v| v.as_bool()).collect())
        }
        ValueType::StringList | ValueType::UnixTimestampList => {
            if target == ValueType::UnixTimestampList && all(&|v| v.is_i64()) {
                return Ok(Raw::Ints(items.iter().filter_map(|v| v.as_i64()).collect()));
            }
            if !all(&|v| v.is_string()) {
                return Err(bad());
            }
            Raw::Texts(
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            )
        }
        _ => return Err(bad()),
    })
}

/// Types a database value as `target`, refusing what does not fit.
pub fn fit(raw: Raw, target: ValueType) -> Result<Value, String> {
    use ValueType as T;
    Ok(match (raw, target) {
        (Raw::Null, _) => Value::Null,
        (Raw::Int(i), T::Int32) => Value::Int32(int_to(i, target)?),
        (Raw::Int(i), T::Int64) => Value::Int64(i),
        (Raw::Int(i), T::UnixTimestamp) => Value::UnixTimestamp(i),
        (Raw::Int(i), T::Double) => Value::Double(int_to_float(i, MAX_EXACT_F64, target)?),
        (Raw::Int(i), T::Float) => Value::Float(int_to_float(i, MAX_EXACT_F32, target)? as f32),
        (Raw::Int(0), T::Bool) => Value::Bool(false),
        (Raw::Int(1), T::Bool) => Value::Bool(true),
        (Raw::Float(f), T::Double) => Value::Double(f),
        (Raw::Float(f), T::Float) => Value::Float(double_to_float(f)?),
        (Raw::Float(f), T::Int32) => Value::Int32(int_to(float_to_int(f, target)?, target)?),
        (Raw::Float(f), T::Int64) => Value::Int64(float_to_int(f, target)?),
        (Raw::Text(s), T::String) => Value::String(s),
        (Raw::Text(s), T::UnixTimestamp) => Value::UnixTimestamp(parse_timestamp_text(&s)?.seconds),
        (Raw::Text(s), t)
            if matches!(
                t,
                T::Int32List
                    | T::Int64List
                    | T::DoubleList
                    | T::FloatList
                    | T::BoolList
                    | T::StringList
                    | T::UnixTimestampList
            ) =>
        {
            return fit(json_list(&s, t)?, t);
        }
        (Raw::Bytes(b), T::Bytes) => Value::Bytes(b),
        (Raw::Bool(b), T::Bool) => Value::Bool(b),
        (Raw::Time(t), T::UnixTimestamp) => Value::UnixTimestamp(t.seconds),
        (Raw::Ints(v), T::Int32List) => Value::Int32List(
            v.into_iter()
                .map(|i| int_to(i, T::Int32))
                .collect::<Result<_, _>>()?,
        ),
        (Raw::Ints(v), T::Int64List) => Value::Int64List(v),
        (Raw::Ints(v), T::UnixTimestampList) => Value::UnixTimestampList(v),
        (Raw::Ints(v), T::DoubleList) => Value::DoubleList(
            v.into_iter()
                .map(|i| int_to_float(i, MAX_EXACT_F64, T::Double))
                .collect::<Result<_, _>>()?,
        ),
        (Raw::Ints(v), T::FloatList) => Value::FloatList(
            v.into_iter()
                .map(|i| int_to_float(i, MAX_EXACT_F32, T::Float).map(|f| f as f32))
                .collect::<Result<_, _>>()?,
        ),
        (Raw::Floats(v), T::DoubleList) => Value::DoubleList(v),
        (Raw::Floats(v), T::FloatList) => Value::FloatList(
            v.into_iter()
                .map(double_to_float)
                .collect::<Result<_, _>>()?,
        ),
        (Raw::Texts(v), T::StringList) => Value::StringList(v),
        (Raw::Texts(v), T::UnixTimestampList) => Value::UnixTimestampList(
            v.iter()
                .map(|s| parse_timestamp_text(s).map(|t| t.seconds))
                .collect::<Result<_, _>>()?,
        ),
        (Raw::BytesList(v), T::BytesList) => Value::BytesList(v),
        (Raw::Bools(v), T::BoolList) => Value::BoolList(v),
        (raw, t) => return Err(format!("{} cannot be {t}", raw.describe())),
    })
}

/// The PostgreSQL column types larder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PgKind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Bytea,
    Timestamp,
    Date,
    BoolArray,
    Int2Array,
    Int4Array,
    Int8Array,
    Float4Array,
    Float8Array,
    TextArray,
    ByteaArray,
    Unsupported,
}

impl PgKind {
    fn of(type_name: &str) -> PgKind {
        match type_name.to_ascii_uppercase().as_str() {
            "BOOL" => PgKind::Bool,
            "INT2" => PgKind::Int2,
            "INT4" => PgKind::Int4,
            "INT8" => PgKind::Int8,
            "FLOAT4" => PgKind::Float4,
            "FLOAT8" => PgKind::Float8,
            "NUMERIC" => PgKind::Numeric,
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CITEXT" => PgKind::Text,
            "BYTEA" => PgKind::Bytea,
            "TIMESTAMP" | "TIMESTAMPTZ" => PgKind::Timestamp,
            "DATE" => PgKind::Date,
            "BOOL[]" => PgKind::BoolArray,
            "INT2[]" => PgKind::Int2Array,
            "INT4[]" => PgKind::Int4Array,
            "INT8[]" => PgKind::Int8Array,
            "FLOAT4[]" => PgKind::Float4Array,
            "FLOAT8[]" => PgKind::Float8Array,
            "TEXT[]" | "VARCHAR[]" | "BPCHAR[]" | "NAME[]" => PgKind::TextArray,
            "BYTEA[]" => PgKind::ByteaArray,
            _ => PgKind::Unsupported,
        }
    }
}

fn dec<'r, T: Decode<'r, Postgres>>(v: PgValueRef<'r>) -> Result<T, String> {
    T::decode(v).map_err(|e| e.to_string())
}

/// Seconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH: i64 = 946_684_800;

fn pg_timestamp(v: PgValueRef<'_>) -> Result<EventTime, String> {
    if v.format() == PgValueFormat::Text {
        return parse_timestamp_text(v.as_str().map_err(|e| e.to_string())?);
    }
    let bytes: [u8; 8] = v
        .as_bytes()
        .map_err(|e| e.to_string())?
        .try_into()
        .map_err(|_| "a timestamp of unexpected size".to_string())?;
    let micros = i64::from_be_bytes(bytes);
    if micros == i64::MAX || micros == i64::MIN {
        return Err("an infinite timestamp".into());
    }
    Ok(EventTime {
        seconds: PG_EPOCH + micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    })
}

fn pg_date(v: PgValueRef<'_>) -> Result<EventTime, String> {
    if v.format() == PgValueFormat::Text {
        return parse_timestamp_text(v.as_str().map_err(|e| e.to_string())?);
    }
    let bytes: [u8; 4] = v
        .as_bytes()
        .map_err(|e| e.to_string())?
        .try_into()
        .map_err(|_| "a date of unexpected size".to_string())?;
    let days = i32::from_be_bytes(bytes);
    if days == i32::MAX || days == i32::MIN {
        return Err("an infinite date".into());
    }
    Ok(EventTime::from_seconds(PG_EPOCH + i64::from(days) * 86_400))
}

/// NUMERIC in PostgreSQL's binary form: an integer when it has no
/// fractional digits and fits, else the nearest double.
fn pg_numeric(v: PgValueRef<'_>) -> Result<Raw, String> {
    if v.format() == PgValueFormat::Text {
        let s = v.as_str().map_err(|e| e.to_string())?;
        return s
            .parse::<i64>()
            .map(Raw::Int)
            .or_else(|_| s.parse::<f64>().map(Raw::Float))
            .map_err(|_| format!("numeric {s:?} is not a number"));
    }
    let b = v.as_bytes().map_err(|e| e.to_string())?;
    let word = |i: usize| -> Result<u16, String> {
        match b.get(i * 2..i * 2 + 2) {
            Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
            _ => Err("a truncated numeric".to_string()),
        }
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = word(3)?;
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok(Raw::Float(f64::NAN)),
        0xD000 => return Ok(Raw::Float(f64::INFINITY)),
        0xF000 => return Ok(Raw::Float(f64::NEG_INFINITY)),
        _ => return Err("a numeric with an unknown sign".into()),
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        let d = word(4 + i)?;
        if d >= 10_000 {
            return Err("a numeric with a bad digit".into());
        }
        digits.push(d);
    }
    let negative = sign == 0x4000;
    // Base-10000 digits d0 d1 ... with d0 at 10000^weight.
    let exponent = 4 * (weight - ndigits as i64 + 1);
    if dscale == 0 && exponent >= 0 {
        let mut acc: Option<i128> = Some(0);
        for d in &digits {
            acc = acc.and_then(|a| a.checked_mul(10_000)?.checked_add(i128::from(*d)));
        }
        for _ in 0..exponent {
            acc = acc.and_then(|a| a.checked_mul(10));
        }
        if let Some(i) = acc
            .map(|a| if negative { -a } else { a })
            .and_then(|a| i64::try_from(a).ok())
        {
            return Ok(Raw::Int(i));
        }
    }
    let mut text = String::with_capacity(ndigits * 4 + 8);
    if negative {
        text.push('-');
    }
    text.push('0');
    for d in &digits {
        text.push_str(&format!("{d:04}"));
    }
    text.push_str(&format!("e{exponent}"));
    text.parse::<f64>()
        .map(Raw::Float)
        .map_err(|_| "a numeric that is not a number".to_string())
}

fn pg_raw(row: &PgRow, i: usize, kind: PgKind) -> Result<Raw, String> {
    let v = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if v.is_null() {
        return Ok(Raw::Null);
    }
    let widen = |v: Vec<i32>| v.into_iter().map(i64::from).collect();
    Ok(match kind {
        PgKind::Bool => Raw::Bool(dec(v)?),
        PgKind::Int2 => Raw::Int(i64::from(dec::<i16>(v)?)),
        PgKind::Int4 => Raw::Int(i64::from(dec::<i32>(v)?)),
        PgKind::Int8 => Raw::Int(dec(v)?),
        PgKind::Float4 => Raw::Float(f64::from(dec::<f32>(v)?)),
        PgKind::Float8 => Raw::Float(dec(v)?),
        PgKind::Numeric => pg_numeric(v)?,
        PgKind::Text => Raw::Text(dec(v)?),
        PgKind::Bytea => Raw::Bytes(dec(v)?),
        PgKind::Timestamp => Raw::Time(pg_timestamp(v)?),
        PgKind::Date => Raw::Time(pg_date(v)?),
        PgKind::BoolArray => Raw::Bools(dec(v).map_err(no_null_items)?),
        PgKind::Int2Array => Raw::Ints(
            dec::<Vec<i16>>(v)
                .map_err(no_null_items)?
                .into_iter()
                .map(i64::from)
                .collect(),
        ),
        PgKind::Int4Array => Raw::Ints(widen(dec(v).map_err(no_null_items)?)),
        PgKind::Int8Array => Raw::Ints(dec(v).map_err(no_null_items)?),
        PgKind::Float4Array => Raw::Floats(
            dec::<Vec<f32>>(v)
                .map_err(no_null_items)?
                .into_iter()
                .map(f64::from)
                .collect(),
        ),
        PgKind::Float8Array => Raw::Floats(dec(v).map_err(no_null_items)?),
        PgKind::TextArray => Raw::Texts(dec(v).map_err(no_null_items)?),
        PgKind::ByteaArray => Raw::BytesList(dec(v).map_err(no_null_items)?),
        PgKind::Unsupported => {
            let name = row
                .columns()
                .get(i)
                .map(|c| c.type_info().name().to_owned())
                .unwrap_or_default();
            return Err(format!(
                "PostgreSQL type {name} is not supported (cast it in a view of the table)"
            ));
        }
    })
}

fn no_null_items(e: String) -> String {
    format!("an array larder cannot read (lists may not hold nulls): {e}")
}

fn sqlite_raw(row: &SqliteRow, i: usize) -> Result<Raw, String> {
    let v = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if v.is_null() {
        return Ok(Raw::Null);
    }
    #[derive(Clone, Copy)]
    enum K {
        Int,
        Real,
        Text,
        Blob,
    }
    let kind = match v.type_info().name() {
        "INTEGER" | "BOOLEAN" => K::Int,
        "REAL" => K::Real,
        "BLOB" => K::Blob,
        _ => K::Text,
    };
    let d = |e: sqlx::error::BoxDynError| e.to_string();
    Ok(match kind {
        K::Int => Raw::Int(<i64 as Decode<Sqlite>>::decode(v).map_err(d)?),
        K::Real => Raw::Float(<f64 as Decode<Sqlite>>::decode(v).map_err(d)?),
        K::Text => Raw::Text(<String as Decode<Sqlite>>::decode(v).map_err(d)?),
        K::Blob => Raw::Bytes(<Vec<u8> as Decode<Sqlite>>::decode(v).map_err(d)?),
    })
}

// ---------------------------------------------------------------------------
// Rows in messages.

fn describe_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Int32(i) => i.to_string(),
        Value::Int64(i) | Value::UnixTimestamp(i) => i.to_string(),
        Value::Bytes(b) => format!(
            "0x{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
        other => format!("{other:?}"),
    }
}

fn describe_keys(view: &ServedView, keys: &[Value]) -> String {
    if !view.has_entities() {
        return "(no entities)".into();
    }
    if keys.is_empty() {
        return "(join keys not read yet)".into();
    }
    view.view
        .join_keys
        .iter()
        .zip(keys)
        .map(|(k, v)| format!("{}={}", k.name, describe_value(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_row(view: &ServedView, keys: &[Value], time: EventTime) -> String {
    format!("{} at {}", describe_keys(view, keys), rfc3339(time))
}

// ---------------------------------------------------------------------------
// Times.

/// RFC 3339 text of a time (UTC, `Z`).
pub fn rfc3339(t: EventTime) -> String {
    prost_types::Timestamp {
        seconds: t.seconds,
        nanos: t.nanos,
    }
    .to_string()
}

/// An RFC 3339 time, or `now`.
fn parse_time(text: &str, what: &str) -> Result<EventTime, OfflineError> {
    if text.eq_ignore_ascii_case("now") {
        return Ok(EventTime::now());
    }
    let t: prost_types::Timestamp = text.parse().map_err(|_| {
        OfflineError::Invalid(format!(
            "{what} {text:?} is not an RFC 3339 time (like 2024-05-01T12:00:00Z) or `now`"
        ))
    })?;
    Ok(EventTime {
        seconds: t.seconds,
        nanos: t.nanos,
    })
}

fn millis(t: EventTime) -> i64 {
    t.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(t.nanos / 1_000_000))
}

fn from_millis(ms: i64) -> EventTime {
    EventTime {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn epoch_seconds(t: EventTime) -> f64 {
    t.seconds as f64 + f64::from(t.nanos) / 1e9
}

fn minus(t: EventTime, d: Duration) -> EventTime {
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let mut seconds = t.seconds.saturating_sub(secs);
    let mut nanos = t.nanos - d.subsec_nanos() as i32;
    if nanos < 0 {
        nanos += 1_000_000_000;
        seconds = seconds.saturating_sub(1);
    }
    EventTime { seconds, nanos }
}

// ---------------------------------------------------------------------------
// Errors.

/// `e` with `context` in front, keeping its class.
fn with_context(e: OfflineError, context: &str) -> OfflineError {
    match e {
        OfflineError::PermissionDenied(m) => {
            OfflineError::PermissionDenied(format!("{context}: {m}"))
        }
        OfflineError::NotFound(m) => OfflineError::NotFound(format!("{context}: {m}")),
        OfflineError::Invalid(m) => OfflineError::Invalid(format!("{context}: {m}")),
        OfflineError::Database(m) => OfflineError::Database(format!("{context}: {m}")),
        OfflineError::Online(m) => OfflineError::Online(format!("{context}: {m}")),
        OfflineError::Io(e) => {
            OfflineError::Io(std::io::Error::new(e.kind(), format!("{context}: {e}")))
        }
    }
}

fn store_error(e: StoreError, context: &str) -> OfflineError {
    match e {
        StoreError::Denied(m) => OfflineError::PermissionDenied(format!("{context}: {m}")),
        other => OfflineError::Online(format!("{context}: {other}")),
    }
}

fn unavailable(message: String) -> OfflineError {
    OfflineError::Io(std::io::Error::other(message))
}

// ---------------------------------------------------------------------------
// Definitions, views, stores, intervals.

pub(crate) fn registry_url(config: &Config, from: &DefinitionArgs) -> Option<String> {
    from.registry
        .clone()
        .filter(|u| !u.trim().is_empty())
        .or_else(|| {
            config
                .serve
                .follow_registry
                .then(|| config.registry.url.clone())
        })
        .map(|u| u.trim_end_matches('/').to_owned())
}

const API: &str = "/apis/features.kubeflow.org/v1";

fn client_token(config: &Config) -> Result<Option<String>, OfflineError> {
    crate::registry::client::client_token(config.registry.token_file.as_deref())
        .map_err(|e| OfflineError::Invalid(format!("{e:#}")))
}

pub(crate) async fn load_definitions(
    config: &Config,
    from: &DefinitionArgs,
    registry: Option<&str>,
) -> Result<RegistrySnapshot, OfflineError> {
    let folder = match (&from.definitions, registry) {
        (Some(d), _) => d.clone(),
        (None, Some(url)) => {
            let mut request = reqwest::Client::new()
                .get(format!("{url}{API}/snapshot"))
                .timeout(Duration::from_secs(30));
            if let Some(token) = client_token(config)? {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.map_err(|e| {
                unavailable(format!(
                    "reading definitions from the registry at {url}: {e}"
                ))
            })?;
            let status = response.status();
            let body: serde_json::Value = response.json().await.map_err(|e| {
                unavailable(format!(
                    "reading definitions from the registry at {url}: {e}"
                ))
            })?;
            if !status.is_success() {
                return Err(api_error(
                    status,
                    &body,
                    &format!("reading definitions from the registry at {url}"),
                ));
            }
            return crate::registry::follower::snapshot_from_document(body, &config.projects())
                .map(|(_, snapshot)| snapshot)
                .map_err(|e| OfflineError::Invalid(format!("the registry at {url}: {e}")));
        }
        (None, None) => config.serve.definitions.clone(),
    };
    crate::cli::load_snapshot(&folder, config).map_err(|e| OfflineError::Invalid(format!("{e:#}")))
}

fn api_error(status: reqwest::StatusCode, body: &serde_json::Value, context: &str) -> OfflineError {
    let message = body["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string());
    let text = format!("{context}: {} {message}", status.as_u16());
    match status.as_u16() {
        401 | 403 => OfflineError::PermissionDenied(text),
        404 => OfflineError::NotFound(text),
        400 | 409 | 422 => OfflineError::Invalid(text),
        _ => unavailable(text),
    }
}

/// The views to materialize, by namespace and name. Views named
/// explicitly must exist, have a source and be online; otherwise views
/// without a source or with `online: false` are skipped.
fn select_views(
    snapshot: &RegistrySnapshot,
    namespace: Option<&str>,
    names: &[String],
) -> Result<Vec<Target>, OfflineError> {
    if let Some(ns) = namespace
        && snapshot.namespace(ns).is_none()
    {
        return Err(OfflineError::NotFound(format!(
            "namespace {ns} has no definitions"
        )));
    }
    let mut all: Vec<&Arc<ServedView>> = snapshot
        .namespaces()
        .filter(|ns| namespace.is_none_or(|n| n == ns.name))
        .flat_map(|ns| ns.views.values())
        .collect();
    all.sort_by(|a, b| (&a.view.namespace, &a.view.name).cmp(&(&b.view.namespace, &b.view.name)));
    let source_of = |view: &ServedView| -> Option<DataSource> {
        let name = view.view.source.as_ref()?;
        snapshot
            .namespace(&view.view.namespace)?
            .sources
            .get(name)
            .cloned()
    };
    let mut targets = Vec::new();
    if names.is_empty() {
        for view in all {
            if !view.view.online {
                continue;
            }
            if let Some(source) = source_of(view) {
                targets.push(Target {
                    view: view.clone(),
                    source,
                });
            }
        }
        return Ok(targets);
    }
    let mut chosen = BTreeSet::new();
    for wanted in names {
        let (ns, name) = match wanted.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (namespace, wanted.as_str()),
        };
        let matches: Vec<&&Arc<ServedView>> = all
            .iter()
            .filter(|v| v.view.name == name && ns.is_none_or(|n| n == v.view.namespace))
            .collect();
        if matches.is_empty() {
            return Err(OfflineError::NotFound(match ns {
                Some(ns) => format!("no feature view {name:?} in namespace {ns}"),
                None => format!("no feature view {name:?} in any namespace"),
            }));
        }
        for view in matches {
            let full = format!("{}/{}", view.view.namespace, view.view.name);
            if !view.view.online {
                return Err(OfflineError::Invalid(format!(
                    "feature view {full} is not online (online: false)"
                )));
            }
            let source = source_of(view).ok_or_else(|| {
                OfflineError::Invalid(format!("feature view {full} has no batch source"))
            })?;
            if chosen.insert(full) {
                targets.push(Target {
                    view: (*view).clone(),
                    source,
                });
            }
        }
    }
    Ok(targets)
}

/// The online stores writes go to: a namespace's own (its Redis ACL user)
/// when it has credentials, else the shared one.
struct Stores {
    shared: Option<OnlineStore>,
    own: BTreeMap<String, (String, OnlineStore)>,
}

impl Stores {
    async fn open(config: &Config, namespaces: &BTreeSet<&str>) -> Result<Stores, OfflineError> {
        let settings = config
            .namespace_redis_settings()
            .map_err(|e| OfflineError::Invalid(e.to_string()))?;
        let mut own = BTreeMap::new();
        for (ns, s) in settings {
            if !namespaces.contains(ns.as_str()) {
                continue;
            }
            if config.online_store.kind != StoreKind::Redis {
                return Err(OfflineError::Invalid(format!(
                    "namespaces.{ns}.redis credentials need online_store.type: redis"
                )));
            }
            let user = s
                .credentials
                .as_ref()
                .map(|c| c.username.clone())
                .unwrap_or_default();
            let store = RedisStore::new(s)
                .map_err(|e| store_error(e, &format!("opening the online store for {ns}")))?;
            own.insert(ns, (user, OnlineStore::Redis(store)));
        }
        let shared = if namespaces.iter().any(|ns| !own.contains_key(*ns)) {
            Some(
                crate::cli::open_store(config)
                    .await
                    .map_err(|e| unavailable(format!("opening the online store: {e:#}")))?,
            )
        } else {
            None
        };
        Ok(Stores { shared, own })
    }

    /// The store of `namespace` and the Redis user it writes as.
    fn of(&self, namespace: &str) -> Result<(&OnlineStore, Option<&str>), OfflineError> {
        if let Some((user, store)) = self.own.get(namespace) {
            return Ok((store, Some(user.as_str())));
        }
        self.shared
            .as_ref()
            .map(|s| (s, None))
            .ok_or_else(|| unavailable("no online store is open".into()))
    }
}

/// Where materialized intervals are recorded and read back.
enum IntervalLog {
    Store(SqlRegistryStore),
    Api {
        url: String,
        http: reqwest::Client,
        config: Box<Config>,
    },
}

impl IntervalLog {
    async fn open(config: &Config, registry: Option<&str>) -> Result<IntervalLog, OfflineError> {
        if let Some(url) = registry {
            return Ok(IntervalLog::Api {
                url: url.to_owned(),
                http: reqwest::Client::new(),
                config: Box::new(config.clone()),
            });
        }
        let database = &config.registry.database;
        if let Some(path) = database
            .strip_prefix("sqlite://")
            .map(|p| p.split('?').next().unwrap_or(p))
            && let Some(dir) = std::path::Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)?;
        }
        SqlRegistryStore::connect(database)
            .await
            .map(IntervalLog::Store)
            .map_err(|e| OfflineError::Database(format!("opening the registry database: {e}")))
    }

    fn path(url: &str, namespace: &str, view: &str) -> String {
        format!("{url}{API}/namespaces/{namespace}/featureviews/{view}/materializations")
    }

    /// `request` with a timeout and the client token.
    fn authorized(
        config: &Config,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, OfflineError> {
        let request = request.timeout(Duration::from_secs(30));
        Ok(match client_token(config)? {
            Some(token) => request.bearer_auth(token),
            None => request,
        })
    }

    /// The latest end of the recorded intervals of a view, in ms.
    async fn last_end_ms(&self, namespace: &str, view: &str) -> Result<Option<i64>, OfflineError> {
        match self {
            IntervalLog::Store(store) => store
                .intervals(namespace, view)
                .await
                .map(|list| list.iter().map(|i| i.end_ms).max())
                .map_err(|e| {
                    OfflineError::Database(format!("reading materialized intervals: {e}"))
                }),
            IntervalLog::Api { url, http, config } => {
                let context = "reading materialized intervals from the registry";
                let request = Self::authorized(config, http.get(Self::path(url, namespace, view)))?;
                let response = request
                    .send()
                    .await
                    .map_err(|e| unavailable(format!("{context}: {e}")))?;
                let status = response.status();
                let body: serde_json::Value = response
                    .json()
                    .await
                    .map_err(|e| unavailable(format!("{context}: {e}")))?;
                if !status.is_success() {
                    return Err(api_error(status, &body, context));
                }
                let mut latest: Option<i64> = None;
                for item in body["items"].as_array().into_iter().flatten() {
                    let text = item["end"].as_str().unwrap_or_default();
                    let end = parse_time(text, "the recorded end").map_err(|_| {
                        OfflineError::Invalid(format!(
                            "{context}: the registry answered an end {text:?} that is not RFC 3339"
                        ))
                    })?;
                    latest = latest.max(Some(millis(end)));
                }
                Ok(latest)
            }
        }
    }

    async fn record(
        &self,
        namespace: &str,
        view: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<(), OfflineError> {
        match self {
            IntervalLog::Store(store) => store
                .append_interval(namespace, view, start_ms, end_ms)
                .await
                .map(|_| ())
                .map_err(|e| {
                    OfflineError::Database(format!("recording the materialized interval: {e}"))
                }),
            IntervalLog::Api { url, http, config } => {
                let context = "recording the materialized interval in the registry";
                let body = serde_json::json!({
                    "start": rfc3339(from_millis(start_ms)),
                    "end": rfc3339(from_millis(end_ms)),
                });
                let request = Self::authorized(
                    config,
                    http.post(Self::path(url, namespace, view)).json(&body),
                )?;
                let response = request
                    .send()
                    .await
                    .map_err(|e| unavailable(format!("{context}: {e}")))?;
                let status = response.status();
                if status.is_success() {
                    return Ok(());
                }
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                Err(api_error(status, &body, context))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fit_or_say_why() {
        assert_eq!(fit(Raw::Int(7), ValueType::Int32), Ok(Value::Int32(7)));
        let e = fit(Raw::Int(5_000_000_000), ValueType::Int32).unwrap_err();
        assert!(e.contains("5000000000") && e.contains("INT32"), "{e}");
        assert_eq!(fit(Raw::Float(2.0), ValueType::Int64), Ok(Value::Int64(2)));
        assert!(fit(Raw::Float(2.5), ValueType::Int64).is_err());
        assert!(fit(Raw::Float(1e300), ValueType::Float).is_err());
        assert!(fit(Raw::Text("x".into()), ValueType::Int64).is_err());
        assert_eq!(
            fit(Raw::Text("[1, 2]".into()), ValueType::Int32List),
            Ok(Value::Int32List(vec![1, 2]))
        );
        assert_eq!(
            fit(
                Raw::Text("2024-05-01 00:00:01".into()),
                ValueType::UnixTimestamp
            ),
            Ok(Value::UnixTimestamp(1_714_521_601))
        );
        assert!(fit(Raw::Int((1 << 53) + 1), ValueType::Double).is_err());
        assert_eq!(fit(Raw::Null, ValueType::Int64), Ok(Value::Null));
    }

    #[test]
    fn times_round_trip_through_millis_and_text() {
        let t = parse_time("2024-05-01T12:00:00.250Z", "END").unwrap();
        assert_eq!(from_millis(millis(t)), t);
        assert_eq!(rfc3339(t), "2024-05-01T12:00:00.250Z");
        assert_eq!(
            raw_time(Raw::Text("2024-05-01 12:00:00".into())).unwrap(),
            EventTime::from_seconds(1_714_564_800)
        );
        assert!(parse_time("yesterday", "START").is_err());
        let m = minus(
            EventTime {
                seconds: 10,
                nanos: 100,
            },
            Duration::new(1, 200),
        );
        assert_eq!(
            m,
            EventTime {
                seconds: 8,
                nanos: 999_999_900
            }
        );
    }
}
