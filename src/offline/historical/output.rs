//! Where a training set goes: the [`RowSink`] trait and its sinks (a
//! Parquet or CSV file, memory, a channel).

use std::fs::File;
use std::future::Future;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use base64::Engine as _;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::time;
use crate::offline::OfflineError;

/// Receives a training set as Arrow record batches: `begin` once with the
/// schema and the number of entity rows, then `write` per batch, in order.
/// Every entity row becomes exactly one output row.
pub trait RowSink: Send {
    fn begin(
        &mut self,
        schema: SchemaRef,
        rows: u64,
    ) -> impl Future<Output = Result<(), OfflineError>> + Send;
    fn write(
        &mut self,
        batch: RecordBatch,
    ) -> impl Future<Output = Result<(), OfflineError>> + Send;
}

/// Keeps every batch in memory: for tests and small training sets.
#[derive(Debug, Default)]
pub struct MemorySink {
    pub schema: Option<SchemaRef>,
    pub rows: u64,
    pub batches: Vec<RecordBatch>,
}

impl RowSink for MemorySink {
    async fn begin(&mut self, schema: SchemaRef, rows: u64) -> Result<(), OfflineError> {
        self.schema = Some(schema);
        self.rows = rows;
        Ok(())
    }

    async fn write(&mut self, batch: RecordBatch) -> Result<(), OfflineError> {
        self.batches.push(batch);
        Ok(())
    }
}

/// What a [`ChannelSink`] sends.
#[derive(Debug)]
pub enum SinkMessage {
    Begin {
        schema: SchemaRef,
        rows: u64,
    },
    Batch(RecordBatch),
    /// The build failed (sent by whoever runs it, not by the sink).
    Failed(OfflineError),
}

/// Sends the training set into a bounded channel, so that a server can
/// stream it while it is built; a full channel slows the query down.
#[derive(Debug, Clone)]
pub struct ChannelSink(pub tokio::sync::mpsc::Sender<SinkMessage>);

impl ChannelSink {
    async fn send(&self, message: SinkMessage) -> Result<(), OfflineError> {
        self.0
            .send(message)
            .await
            .map_err(|_| OfflineError::Invalid("the receiver of the training set went away".into()))
    }
}

impl RowSink for ChannelSink {
    async fn begin(&mut self, schema: SchemaRef, rows: u64) -> Result<(), OfflineError> {
        self.send(SinkMessage::Begin { schema, rows }).await
    }

    async fn write(&mut self, batch: RecordBatch) -> Result<(), OfflineError> {
        self.send(SinkMessage::Batch(batch)).await
    }
}

/// The file formats a training set can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Parquet,
    Csv,
}

impl FileFormat {
    /// The format an output path asks for, by its extension.
    pub fn of(path: &Path) -> Result<FileFormat, OfflineError> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("parquet" | "pq") => Ok(FileFormat::Parquet),
            Some("csv") => Ok(FileFormat::Csv),
            _ => Err(OfflineError::Invalid(format!(
                "output {}: unsupported extension (use .parquet or .csv)",
                path.display()
            ))),
        }
    }
}

enum Writer {
    Parquet(Box<ArrowWriter<BufWriter<File>>>),
    Csv(Box<csv::Writer<BufWriter<File>>>),
}

/// Writes a Parquet or CSV file, chosen by the extension. Rows go to a
/// hidden file next to the output, renamed into place by [`finish`]; a
/// failed run leaves no partial output behind.
///
/// [`finish`]: FileSink::finish
pub struct FileSink {
    path: PathBuf,
    partial: PathBuf,
    format: FileFormat,
    writer: Option<Writer>,
    /// Row groups hold at most this many rows (and memory with them).
    row_group_rows: usize,
}

impl FileSink {
    pub fn new(path: &Path, row_group_rows: usize) -> Result<FileSink, OfflineError> {
        let format = FileFormat::of(path)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(FileSink {
            path: path.to_owned(),
            partial: path.with_file_name(format!(".{name}.partial")),
            format,
            writer: None,
            row_group_rows: row_group_rows.max(1024),
        })
    }

    fn io_error(&self, e: impl std::fmt::Display) -> OfflineError {
        OfflineError::Invalid(format!("writing {}: {e}", self.path.display()))
    }

    /// Completes the file and moves it into place.
    pub fn finish(mut self) -> Result<(), OfflineError> {
        match self.writer.take() {
            None => return Err(self.io_error("nothing was written")),
            Some(Writer::Parquet(w)) => {
                w.close().map_err(|e| self.io_error(e))?;
            }
            Some(Writer::Csv(w)) => {
                use std::io::Write as _;
                let mut w = *w;
                w.flush().map_err(|e| self.io_error(e))?;
                let inner = w.into_inner().map_err(|e| self.io_error(e.error()))?;
                inner
                    .into_inner()
                    .map_err(|e| self.io_error(e.error()))?
                    .flush()
                    .map_err(|e| self.io_error(e))?;
            }
        }
        std::fs::rename(&self.partial, &self.path).map_err(|e| self.io_error(e))
    }

    /// Removes what was written.
    pub fn abandon(mut self) {
        self.writer = None;
        let _ = std::fs::remove_file(&self.partial);
    }
}

impl RowSink for FileSink {
    async fn begin(&mut self, schema: SchemaRef, _rows: u64) -> Result<(), OfflineError> {
        let file = File::create(&self.partial).map_err(|e| self.io_error(e))?;
        let file = BufWriter::with_capacity(1 << 20, file);
        self.writer = Some(match self.format {
            FileFormat::Parquet => {
                let properties = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_size(self.row_group_rows)
                    .build();
                Writer::Parquet(Box::new(
                    ArrowWriter::try_new(file, schema.clone(), Some(properties))
                        .map_err(|e| self.io_error(e))?,
                ))
            }
            FileFormat::Csv => {
                let mut w = csv::Writer::from_writer(file);
                w.write_record(schema.fields().iter().map(|f| f.name()))
                    .map_err(|e| self.io_error(e))?;
                Writer::Csv(Box::new(w))
            }
        });
        Ok(())
    }

    async fn write(&mut self, batch: RecordBatch) -> Result<(), OfflineError> {
        let result = match &mut self.writer {
            None => return Err(self.io_error("write before begin")),
            Some(Writer::Parquet(w)) => w.write(&batch).map_err(|e| e.to_string()),
            Some(Writer::Csv(w)) => write_csv(w, &batch),
        };
        result.map_err(|e| self.io_error(e))
    }
}

/// Appends the text of value `i` of `array` to `out`; a null is empty.
/// Bytes are base64, timestamps RFC 3339 in UTC.
fn csv_value(array: &dyn Array, i: usize, out: &mut String) -> Result<(), String> {
    use std::fmt::Write as _;
    out.clear();
    if array.is_null(i) {
        return Ok(());
    }
    let _ = match array.data_type() {
        DataType::Int32 => write!(out, "{}", array.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => write!(out, "{}", array.as_primitive::<Int64Type>().value(i)),
        DataType::Float32 => write!(out, "{}", array.as_primitive::<Float32Type>().value(i)),
        DataType::Float64 => write!(out, "{}", array.as_primitive::<Float64Type>().value(i)),
        DataType::Boolean => write!(out, "{}", array.as_boolean().value(i)),
        DataType::Utf8 => write!(out, "{}", array.as_string::<i32>().value(i)),
        DataType::Binary => {
            base64::engine::general_purpose::STANDARD
                .encode_string(array.as_binary::<i32>().value(i), out);
            Ok(())
        }
        DataType::Timestamp(_, _) => write!(
            out,
            "{}",
            time::format_rfc3339(array.as_primitive::<TimestampMicrosecondType>().value(i))
        ),
        other => return Err(format!("no CSV form for Arrow type {other}")),
    };
    Ok(())
}

fn write_csv(w: &mut csv::Writer<BufWriter<File>>, batch: &RecordBatch) -> Result<(), String> {
    let mut fields: Vec<String> = vec![String::new(); batch.num_columns()];
    for row in 0..batch.num_rows() {
        for (field, column) in fields.iter_mut().zip(batch.columns()) {
            csv_value(column.as_ref(), row, field)?;
        }
        w.write_record(&fields).map_err(|e| e.to_string())?;
    }
    Ok(())
}
