//! Point-in-time-correct training sets (`larder historical`).
//!
//! For every entity row (join keys and an `event_timestamp` T) and every
//! requested feature view, the training set holds the view's source row
//! with the same join keys and the latest event time at or before T (and
//! not before T - TTL when the view has one); ties go to the later created
//! time. Rows keep their input order, one output row per entity row.
//!
//! The work is split by concern:
//!
//! - [`plan`](self::plan): refs -> views, sources, output columns, store;
//! - `input`: entity rows from CSV, Parquet, Arrow or JSON columns;
//! - `postgres` / `sqlite`: loading the entity rows into a temporary table
//!   and one point-in-time query, streamed;
//! - `output`: the [`RowSink`]s (Parquet or CSV file, memory, channel).
//!
//! [`retrieve`] is the library entry point; [`record_batches`] runs it in a
//! task of its own and streams Arrow batches (for the Flight endpoint);
//! [`run`] is `larder historical`.

mod columns;
mod input;
mod output;
mod plan;
mod postgres;
mod sqlite;
mod time;
mod transform;

use std::path::PathBuf;
use std::time::Instant;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use futures::StreamExt as _;
use futures::stream::BoxStream;

use super::{OfflineError, OfflineStore};
use crate::config::Config;
use crate::registry::RegistrySnapshot;
use crate::serving::FeatureSelection;

pub use input::{ArrowBatches, json_columns};
pub use output::{ChannelSink, FileFormat, FileSink, MemorySink, RowSink, SinkMessage};
pub use plan::{EVENT_TIMESTAMP, Plan, objects_read};

use input::EntityRows;
use plan::StoreTarget;

/// `larder historical`.
#[derive(clap::Args, Debug, Clone)]
pub struct HistoricalArgs {
    /// Feature refs `[namespace/]view:feature`.
    #[arg(long, num_args = 1.., conflicts_with = "feature_service", required_unless_present = "feature_service")]
    pub features: Vec<String>,
    /// A feature service `[namespace/]name` instead of refs.
    #[arg(long)]
    pub feature_service: Option<String>,
    /// Entity rows: a .csv or .parquet file with the join keys and
    /// `event_timestamp`.
    #[arg(
        long,
        conflicts_with = "entity_sql",
        required_unless_present = "entity_sql"
    )]
    pub entities: Option<PathBuf>,
    /// Entity rows from a query against the offline store.
    #[arg(long)]
    pub entity_sql: Option<String>,
    /// Where the training set goes: .parquet or .csv.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// The namespace the caller acts in (unqualified refs, and whose
    /// database user connects).
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
}

impl HistoricalArgs {
    /// The request these arguments make.
    pub fn request(&self) -> Result<HistoricalRequest, OfflineError> {
        let features = match &self.feature_service {
            Some(service) => FeatureSelection::Service(service.clone()),
            None => FeatureSelection::Refs(self.features.clone()),
        };
        let entities = match (&self.entities, &self.entity_sql) {
            (Some(file), None) => EntityInput::File(file.clone()),
            (None, Some(sql)) => EntityInput::Sql(sql.clone()),
            _ => {
                return Err(OfflineError::Invalid(
                    "give exactly one of --entities FILE and --entity-sql QUERY".into(),
                ));
            }
        };
        Ok(HistoricalRequest {
            namespace: self.namespace.clone(),
            features,
            entities,
        })
    }
}

/// Where the entity rows come from.
pub enum EntityInput {
    /// A `.csv` (with a header row) or `.parquet` file.
    File(PathBuf),
    /// Arrow record batches (a Flight upload, JSON columns).
    Arrow(ArrowBatches),
    /// A query run in the offline store, as the caller's database user;
    /// rows in the order it returns them.
    Sql(String),
}

/// A training-set request.
pub struct HistoricalRequest {
    /// The namespace of unqualified refs and services.
    pub namespace: String,
    pub features: FeatureSelection,
    pub entities: EntityInput,
}

/// Entity rows on their way into a store.
enum Entities {
    Rows(Box<dyn EntityRows>),
    Sql(String),
}

fn open_entities(
    input: EntityInput,
    plan: &Plan,
    batch_rows: usize,
) -> Result<Entities, OfflineError> {
    Ok(match input {
        EntityInput::File(path) => Entities::Rows(input::open_file(&path, plan, batch_rows)?),
        EntityInput::Arrow(batches) => Entities::Rows(Box::new(input::ArrowEntities::new(
            batches,
            "the entity rows".into(),
            plan,
        )?)),
        EntityInput::Sql(sql) => {
            let sql = sql.trim().trim_end_matches(';').trim_end().to_owned();
            if sql.is_empty() {
                return Err(OfflineError::Invalid("the entity query is empty".into()));
            }
            Entities::Sql(sql)
        }
    })
}

/// Resolves `selection` against the snapshot: every view must exist, have
/// a source, and all sources must be in one store.
pub fn plan(
    snapshot: &RegistrySnapshot,
    namespace: &str,
    selection: &FeatureSelection,
) -> Result<Plan, OfflineError> {
    plan::resolve(snapshot, namespace, selection)
}

/// Builds the training set of a planned request into `sink`, as `store`'s
/// database user. Returns the number of rows written.
pub async fn execute<S: RowSink>(
    store: &OfflineStore,
    plan: &Plan,
    entities: EntityInput,
    sink: &mut S,
) -> Result<u64, OfflineError> {
    if plan.transforms.is_empty() {
        return query(store, plan, entities, sink).await;
    }
    let mut sink = transform::TransformSink {
        inner: sink,
        plan,
        errors: 0,
    };
    let rows = query(store, plan, entities, &mut sink).await?;
    if sink.errors > 0 {
        tracing::warn!(
            errors = sink.errors,
            "on-demand expressions failed on some training rows; those values are null"
        );
    }
    Ok(rows)
}

/// Runs the point-in-time query of `plan` into `sink`.
async fn query<S: RowSink>(
    store: &OfflineStore,
    plan: &Plan,
    entities: EntityInput,
    sink: &mut S,
) -> Result<u64, OfflineError> {
    let entities = open_entities(entities, plan, store.batch_rows)?;
    match &plan.store {
        StoreTarget::Postgres { database } => {
            postgres::build(store, database, plan, entities, sink).await
        }
        StoreTarget::Sqlite => sqlite::build(store, plan, entities, sink).await,
    }
}

/// Plans and builds a training set into `sink`. Returns the number of rows.
pub async fn retrieve<S: RowSink>(
    store: &OfflineStore,
    snapshot: &RegistrySnapshot,
    request: HistoricalRequest,
    sink: &mut S,
) -> Result<u64, OfflineError> {
    let plan = plan::resolve(snapshot, &request.namespace, &request.features)?;
    execute(store, &plan, request.entities, sink).await
}

/// A training set being built in a task of its own.
pub struct TrainingSet {
    pub schema: SchemaRef,
    /// The number of rows the batches will hold.
    pub rows: u64,
    pub batches: BoxStream<'static, Result<RecordBatch, OfflineError>>,
}

/// Plans the request, then builds it in a spawned task, and returns once
/// the schema is known (the sources were checked and the entity rows
/// loaded): errors up to there are returned here, later ones end the
/// stream. At most `buffer` batches wait in memory; dropping the stream
/// stops the query.
pub async fn record_batches(
    store: OfflineStore,
    snapshot: &RegistrySnapshot,
    request: HistoricalRequest,
    buffer: usize,
) -> Result<TrainingSet, OfflineError> {
    let plan = plan::resolve(snapshot, &request.namespace, &request.features)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(buffer.max(1));
    let entities = request.entities;
    tokio::spawn(async move {
        let mut sink = ChannelSink(tx.clone());
        if let Err(e) = execute(&store, &plan, entities, &mut sink).await {
            let _ = tx.send(SinkMessage::Failed(e)).await;
        }
    });
    let (schema, rows) = match rx.recv().await {
        Some(SinkMessage::Begin { schema, rows }) => (schema, rows),
        Some(SinkMessage::Failed(e)) => return Err(e),
        Some(SinkMessage::Batch(_)) | None => {
            return Err(OfflineError::Database(
                "the training set ended before it began".into(),
            ));
        }
    };
    let batches = futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await? {
            SinkMessage::Batch(b) => Some((Ok(b), rx)),
            SinkMessage::Failed(e) => Some((Err(e), rx)),
            SinkMessage::Begin { .. } => Some((
                Err(OfflineError::Database(
                    "the training set began twice".into(),
                )),
                rx,
            )),
        }
    })
    .boxed();
    Ok(TrainingSet {
        schema,
        rows,
        batches,
    })
}

/// Shows rows done and rows per second on stderr (hidden when stderr is
/// not a terminal).
struct Progress<'a, S> {
    inner: &'a mut S,
    bar: Option<indicatif::ProgressBar>,
}

impl<S: RowSink> RowSink for Progress<'_, S> {
    async fn begin(&mut self, schema: SchemaRef, rows: u64) -> Result<(), OfflineError> {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(rows),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows, {per_sec}, eta {eta}",
        ) {
            bar.set_style(style);
        }
        self.bar = Some(bar);
        self.inner.begin(schema, rows).await
    }

    async fn write(&mut self, batch: RecordBatch) -> Result<(), OfflineError> {
        let rows = batch.num_rows() as u64;
        self.inner.write(batch).await?;
        if let Some(bar) = &self.bar {
            bar.inc(rows);
        }
        Ok(())
    }
}

/// Runs `larder historical`.
pub async fn run(config: &Config, args: HistoricalArgs) -> Result<(), OfflineError> {
    let started = Instant::now();
    // Refuse a bad output name before any work.
    let mut file = FileSink::new(&args.output, config.offline_store.batch_rows.max(65_536))?;
    let request = args.request()?;
    let snapshot = crate::cli::load_snapshot(&config.serve.definitions, config)
        .map_err(|e| OfflineError::Invalid(format!("{e:#}")))?;
    let store = OfflineStore::for_namespace(config, &args.namespace)?;
    let mut progress = Progress {
        inner: &mut file,
        bar: None,
    };
    let result = retrieve(&store, &snapshot, request, &mut progress).await;
    if let Some(bar) = progress.bar.take() {
        bar.finish_and_clear();
    }
    match result {
        Ok(rows) => {
            file.finish()?;
            eprintln!(
                "wrote {rows} rows to {} in {:.1}s",
                args.output.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(e) => {
            file.abandon();
            Err(e)
        }
    }
}
