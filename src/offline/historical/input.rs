//! Entity rows: read from CSV, Parquet or Arrow record batches, checked
//! against the plan (every join key and `event_timestamp` present, values
//! of the declared types) and handed out in chunks of cells.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchReader};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use base64::Engine as _;

use super::columns::{Cell, ColType};
use super::plan::{EVENT_TIMESTAMP, Plan, RESERVED_PREFIX};
use super::time;
use crate::offline::OfflineError;

/// What an entity column is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A join key of a requested view.
    Key,
    /// `event_timestamp`.
    Timestamp,
    /// Anything else (labels, ids): carried through to the output as is.
    Extra,
}

/// One column of the entity rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityColumn {
    pub name: String,
    pub ty: ColType,
    pub role: Role,
}

/// Entity rows, read in chunks.
pub trait EntityRows: Send {
    fn columns(&self) -> &[EntityColumn];
    /// Appends up to `max` rows to `out` (row-major cells, one per column)
    /// and returns how many; 0 at the end.
    fn next_rows(&mut self, out: &mut Vec<Cell>, max: usize) -> Result<usize, OfflineError>;
}

/// Arrow record batches to read entity rows from (a Flight upload, a
/// DataFrame): the schema, and the batches.
pub struct ArrowBatches {
    pub schema: SchemaRef,
    pub batches: Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>,
}

/// Checks the entity columns against the plan: unique names, none of
/// larder's own, every join key and `event_timestamp` present.
pub fn check_columns(
    columns: &[EntityColumn],
    plan: &Plan,
    what: &str,
) -> Result<(), OfflineError> {
    for (i, c) in columns.iter().enumerate() {
        if columns[..i].iter().any(|d| d.name == c.name) {
            return Err(OfflineError::Invalid(format!(
                "{what} has two columns named {:?}",
                c.name
            )));
        }
        if c.name.starts_with(RESERVED_PREFIX) {
            return Err(OfflineError::Invalid(format!(
                "{what}: column {:?} starts with {RESERVED_PREFIX}, which larder reserves",
                c.name
            )));
        }
    }
    for need in &plan.keys {
        if !columns.iter().any(|c| c.name == need.key.name) {
            return Err(OfflineError::Invalid(format!(
                "{what} has no column {} (join key of feature view {})",
                need.key.name, need.needed_by
            )));
        }
    }
    if !columns.iter().any(|c| c.name == EVENT_TIMESTAMP) {
        return Err(OfflineError::Invalid(format!(
            "{what} has no column {EVENT_TIMESTAMP} (each entity row's point in time)"
        )));
    }
    Ok(())
}

/// The role and type of a column named `name`; `extra` is the type of a
/// column that is neither a join key nor the timestamp.
pub fn classify(name: &str, plan: &Plan, extra: ColType) -> (Role, ColType) {
    if name == EVENT_TIMESTAMP {
        (Role::Timestamp, ColType::Timestamp)
    } else if let Some(need) = plan.key(name) {
        (Role::Key, need.ty)
    } else {
        (Role::Extra, extra)
    }
}

fn type_name(ty: ColType) -> &'static str {
    match ty {
        ColType::Int32 => "INT32",
        ColType::Int64 => "INT64",
        ColType::Float32 => "FLOAT",
        ColType::Float64 => "DOUBLE",
        ColType::Bool => "BOOL",
        ColType::Utf8 => "STRING",
        ColType::Binary => "BYTES",
        ColType::Timestamp => "a timestamp",
    }
}

/// Converts a cell to a column's type, losslessly.
pub fn conform(cell: Cell, ty: ColType) -> Result<Cell, String> {
    let mismatch = |cell: &Cell| {
        let found = match cell {
            Cell::Null => "a null".to_owned(),
            Cell::Int(i) => format!("the integer {i}"),
            Cell::Float(f) => format!("the number {f}"),
            Cell::Bool(b) => format!("the boolean {b}"),
            Cell::Text(t) => format!("the text {t:?}"),
            Cell::Bytes(b) => format!("{} bytes", b.len()),
            Cell::Time(t) => format!("the timestamp {}", time::format_rfc3339(*t)),
        };
        Err(format!("expected {}, found {found}", type_name(ty)))
    };
    match (ty, cell) {
        (_, Cell::Null) => Ok(Cell::Null),
        (ColType::Int32, Cell::Int(i)) if i32::try_from(i).is_err() => {
            Err(format!("{i} does not fit INT32"))
        }
        (ColType::Int32 | ColType::Int64, cell @ Cell::Int(_)) => Ok(cell),
        (ColType::Float32 | ColType::Float64, cell @ Cell::Float(_)) => Ok(cell),
        (ColType::Float32 | ColType::Float64, Cell::Int(i)) => Ok(Cell::Float(i as f64)),
        (ColType::Bool, cell @ Cell::Bool(_)) => Ok(cell),
        (ColType::Utf8, Cell::Text(t)) if t.contains('\0') => {
            Err("the text contains a NUL character".into())
        }
        (ColType::Utf8, cell @ Cell::Text(_)) => Ok(cell),
        (ColType::Binary, cell @ Cell::Bytes(_)) => Ok(cell),
        (ColType::Binary, Cell::Text(t)) => Ok(Cell::Bytes(t.into_bytes())),
        (ColType::Timestamp, Cell::Time(t)) if !time::in_range(t) => Err(format!(
            "{} is outside years 1 to 9999",
            time::format_rfc3339(t)
        )),
        (ColType::Timestamp, cell @ Cell::Time(_)) => Ok(cell),
        (ColType::Timestamp, Cell::Text(t)) => conform(Cell::Time(time::parse_timestamp(&t)?), ty),
        (_, cell) => mismatch(&cell),
    }
}

/// Parses a CSV field as a column's type. An empty field is a null, except
/// for the timestamp, which every row needs.
fn parse_text(field: &str, ty: ColType) -> Result<Cell, String> {
    if field.is_empty() {
        return Ok(Cell::Null);
    }
    let cell = match ty {
        ColType::Int32 | ColType::Int64 => Cell::Int(
            field
                .trim()
                .parse::<i64>()
                .map_err(|_| format!("{field:?} is not an integer"))?,
        ),
        ColType::Float32 | ColType::Float64 => Cell::Float(
            field
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("{field:?} is not a number"))?,
        ),
        ColType::Bool => match field.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Cell::Bool(true),
            "false" | "0" => Cell::Bool(false),
            _ => return Err(format!("{field:?} is not a boolean")),
        },
        ColType::Utf8 => Cell::Text(field.to_owned()),
        ColType::Binary => Cell::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(field.trim())
                .map_err(|e| format!("{field:?} is not base64 ({e})"))?,
        ),
        ColType::Timestamp => Cell::Time(time::parse_timestamp(field)?),
    };
    conform(cell, ty)
}

/// Opens an entity file by its extension: `.csv` or `.parquet`.
pub fn open_file(
    path: &Path,
    plan: &Plan,
    batch_rows: usize,
) -> Result<Box<dyn EntityRows>, OfflineError> {
    let label = path.display().to_string();
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let open = || {
        File::open(path)
            .map_err(|e| OfflineError::Invalid(format!("reading entity rows from {label}: {e}")))
    };
    match extension.as_deref() {
        Some("csv") => Ok(Box::new(CsvEntities::new(open()?, label, plan)?)),
        Some("parquet" | "pq") => {
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(open()?)
                    .and_then(|b| b.with_batch_size(batch_rows.max(1)).build())
                    .map_err(|e| {
                        OfflineError::Invalid(format!(
                            "{label} is not a readable Parquet file: {e}"
                        ))
                    })?;
            let schema = reader.schema();
            Ok(Box::new(ArrowEntities::new(
                ArrowBatches {
                    schema,
                    batches: Box::new(reader),
                },
                label,
                plan,
            )?))
        }
        _ => Err(OfflineError::Invalid(format!(
            "entity file {label}: unsupported extension (use .csv or .parquet)"
        ))),
    }
}

/// Entity rows from a CSV file with a header row.
pub struct CsvEntities {
    label: String,
    reader: csv::Reader<File>,
    columns: Vec<EntityColumn>,
    record: csv::StringRecord,
    row: u64,
}

impl CsvEntities {
    pub fn new(file: File, label: String, plan: &Plan) -> Result<Self, OfflineError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(file);
        let headers = reader
            .headers()
            .map_err(|e| OfflineError::Invalid(format!("{label}: reading the header row: {e}")))?
            .clone();
        let columns: Vec<EntityColumn> = headers
            .iter()
            .map(|name| {
                // CSV carries no types: other columns stay text.
                let (role, ty) = classify(name, plan, ColType::Utf8);
                EntityColumn {
                    name: name.to_owned(),
                    ty,
                    role,
                }
            })
            .collect();
        check_columns(&columns, plan, &label)?;
        Ok(CsvEntities {
            label,
            reader,
            columns,
            record: csv::StringRecord::new(),
            row: 0,
        })
    }
}

impl EntityRows for CsvEntities {
    fn columns(&self) -> &[EntityColumn] {
        &self.columns
    }

    fn next_rows(&mut self, out: &mut Vec<Cell>, max: usize) -> Result<usize, OfflineError> {
        let mut rows = 0;
        while rows < max {
            let more = self
                .reader
                .read_record(&mut self.record)
                .map_err(|e| OfflineError::Invalid(format!("{}: {e}", self.label)))?;
            if !more {
                break;
            }
            self.row += 1;
            for (field, column) in self.record.iter().zip(&self.columns) {
                let cell = if column.role == Role::Timestamp && field.trim().is_empty() {
                    Err("the timestamp is empty".to_owned())
                } else {
                    parse_text(field, column.ty)
                };
                out.push(cell.map_err(|why| {
                    OfflineError::Invalid(format!(
                        "{} row {} (line {}), column {}: {why}",
                        self.label,
                        self.row,
                        self.record.position().map_or(0, |p| p.line()),
                        column.name
                    ))
                })?);
            }
            rows += 1;
        }
        Ok(rows)
    }
}

/// The column type Arrow type `t` is carried as, when it is not a join
/// key or the timestamp.
fn extra_type(t: &DataType) -> Option<ColType> {
    Some(match t {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            ColType::Int32
        }
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => ColType::Int64,
        DataType::Float32 => ColType::Float32,
        DataType::Float64 => ColType::Float64,
        DataType::Boolean => ColType::Bool,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => ColType::Utf8,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => ColType::Binary,
        DataType::FixedSizeBinary(_) => ColType::Binary,
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => ColType::Timestamp,
        _ => return None,
    })
}

/// Whether Arrow type `t` can fill a column of type `ty`.
fn accepts(ty: ColType, t: &DataType) -> bool {
    let is_text = matches!(
        t,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    );
    match ty {
        ColType::Int32 | ColType::Int64 => t.is_integer() || matches!(t, DataType::Null),
        ColType::Utf8 => is_text,
        ColType::Binary => is_text || extra_type(t) == Some(ColType::Binary),
        ColType::Timestamp => is_text || extra_type(t) == Some(ColType::Timestamp),
        _ => extra_type(t) == Some(ty) || matches!(t, DataType::Null),
    }
}

/// Reads value `i` of an Arrow array.
fn arrow_cell(array: &ArrayRef, i: usize) -> Result<Cell, String> {
    // A NullArray has no validity buffer: every value is null.
    if matches!(array.data_type(), DataType::Null) || array.is_null(i) {
        return Ok(Cell::Null);
    }
    let scaled = |value: i64, factor: i64| {
        value
            .checked_mul(factor)
            .map(Cell::Time)
            .ok_or_else(|| "the timestamp is out of range".to_owned())
    };
    Ok(match array.data_type() {
        DataType::Int8 => Cell::Int(array.as_primitive::<Int8Type>().value(i).into()),
        DataType::Int16 => Cell::Int(array.as_primitive::<Int16Type>().value(i).into()),
        DataType::Int32 => Cell::Int(array.as_primitive::<Int32Type>().value(i).into()),
        DataType::Int64 => Cell::Int(array.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => Cell::Int(array.as_primitive::<UInt8Type>().value(i).into()),
        DataType::UInt16 => Cell::Int(array.as_primitive::<UInt16Type>().value(i).into()),
        DataType::UInt32 => Cell::Int(array.as_primitive::<UInt32Type>().value(i).into()),
        DataType::UInt64 => {
            let v = array.as_primitive::<UInt64Type>().value(i);
            Cell::Int(i64::try_from(v).map_err(|_| format!("{v} does not fit INT64"))?)
        }
        DataType::Float32 => Cell::Float(
            array
                .as_primitive::<arrow_array::types::Float32Type>()
                .value(i)
                .into(),
        ),
        DataType::Float64 => Cell::Float(
            array
                .as_primitive::<arrow_array::types::Float64Type>()
                .value(i),
        ),
        DataType::Boolean => Cell::Bool(array.as_boolean().value(i)),
        DataType::Utf8 => Cell::Text(array.as_string::<i32>().value(i).to_owned()),
        DataType::LargeUtf8 => Cell::Text(array.as_string::<i64>().value(i).to_owned()),
        DataType::Utf8View => Cell::Text(array.as_string_view().value(i).to_owned()),
        DataType::Binary => Cell::Bytes(array.as_binary::<i32>().value(i).to_vec()),
        DataType::LargeBinary => Cell::Bytes(array.as_binary::<i64>().value(i).to_vec()),
        DataType::BinaryView => Cell::Bytes(array.as_binary_view().value(i).to_vec()),
        DataType::FixedSizeBinary(_) => Cell::Bytes(array.as_fixed_size_binary().value(i).to_vec()),
        DataType::Timestamp(TimeUnit::Second, _) => scaled(
            array.as_primitive::<TimestampSecondType>().value(i),
            1_000_000,
        )?,
        DataType::Timestamp(TimeUnit::Millisecond, _) => scaled(
            array.as_primitive::<TimestampMillisecondType>().value(i),
            1_000,
        )?,
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Cell::Time(array.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => Cell::Time(
            array
                .as_primitive::<TimestampNanosecondType>()
                .value(i)
                .div_euclid(1_000),
        ),
        DataType::Date32 => scaled(
            array.as_primitive::<Date32Type>().value(i).into(),
            86_400_000_000,
        )?,
        DataType::Date64 => scaled(array.as_primitive::<Date64Type>().value(i), 1_000)?,
        other => return Err(format!("Arrow type {other} is not supported")),
    })
}

/// Entity rows from Arrow record batches (a Parquet file, a Flight upload).
/// Columns named `__index_level_N__` (a pandas index) are skipped.
pub struct ArrowEntities {
    label: String,
    batches: Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>,
    columns: Vec<EntityColumn>,
    /// The index in the batches of each column.
    indexes: Vec<usize>,
    current: Option<RecordBatch>,
    at: usize,
    row: u64,
}

impl ArrowEntities {
    pub fn new(input: ArrowBatches, label: String, plan: &Plan) -> Result<Self, OfflineError> {
        let mut columns = Vec::new();
        let mut indexes = Vec::new();
        for (i, field) in input.schema.fields().iter().enumerate() {
            let name = field.name();
            if name.starts_with("__index_level_") {
                continue;
            }
            let t = field.data_type();
            let (role, ty) = classify(name, plan, ColType::Utf8);
            let ty = match role {
                Role::Extra => extra_type(t).ok_or_else(|| {
                    OfflineError::Invalid(format!(
                        "{label}: column {name} is of Arrow type {t}, which training sets do \
                         not carry (integers, floats, booleans, strings, binary, timestamps)"
                    ))
                })?,
                Role::Key | Role::Timestamp => {
                    if !accepts(ty, t) {
                        return Err(OfflineError::Invalid(format!(
                            "{label}: column {name} is of Arrow type {t}, which cannot hold {}",
                            type_name(ty)
                        )));
                    }
                    ty
                }
            };
            columns.push(EntityColumn {
                name: name.clone(),
                ty,
                role,
            });
            indexes.push(i);
        }
        check_columns(&columns, plan, &label)?;
        Ok(ArrowEntities {
            label,
            batches: input.batches,
            columns,
            indexes,
            current: None,
            at: 0,
            row: 0,
        })
    }
}

impl EntityRows for ArrowEntities {
    fn columns(&self) -> &[EntityColumn] {
        &self.columns
    }

    fn next_rows(&mut self, out: &mut Vec<Cell>, max: usize) -> Result<usize, OfflineError> {
        let mut rows = 0;
        while rows < max {
            let batch = match &self.current {
                Some(b) if self.at < b.num_rows() => b,
                _ => match self.batches.next() {
                    None => break,
                    Some(Err(e)) => {
                        return Err(OfflineError::Invalid(format!(
                            "{}: reading row {}: {e}",
                            self.label,
                            self.row + 1
                        )));
                    }
                    Some(Ok(b)) => {
                        self.current = Some(b);
                        self.at = 0;
                        continue;
                    }
                },
            };
            self.row += 1;
            for (column, &index) in self.columns.iter().zip(&self.indexes) {
                let array = batch.column(index);
                let cell = arrow_cell(array, self.at)
                    .and_then(|cell| match (column.role, cell) {
                        (Role::Timestamp, Cell::Null) => Err("the timestamp is null".to_owned()),
                        (_, cell) => conform(cell, column.ty),
                    })
                    .map_err(|why| {
                        OfflineError::Invalid(format!(
                            "{} row {}, column {}: {why}",
                            self.label, self.row, column.name
                        ))
                    })?;
                out.push(cell);
            }
            self.at += 1;
            rows += 1;
        }
        Ok(rows)
    }
}

/// Entity rows given as JSON columns (`{"driver_id": [1001, 1002],
/// "event_timestamp": ["2024-05-01T00:00:00Z", ...]}`), as Arrow batches:
/// integers become INT64, other numbers DOUBLE, then booleans and strings;
/// a column mixing kinds is refused.
pub fn json_columns(
    columns: &serde_json::Map<String, serde_json::Value>,
) -> Result<ArrowBatches, OfflineError> {
    use arrow_array::{BooleanArray, Float64Array, Int64Array, NullArray, StringArray};
    use serde_json::Value as J;
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    let mut rows: Option<usize> = None;
    for (name, values) in columns {
        let J::Array(values) = values else {
            return Err(OfflineError::Invalid(format!(
                "entity column {name}: expected a list of values"
            )));
        };
        match rows {
            Some(n) if n != values.len() => {
                return Err(OfflineError::Invalid(format!(
                    "entity column {name} has {} values, other columns {n}",
                    values.len()
                )));
            }
            _ => rows = Some(values.len()),
        }
        let present: Vec<&J> = values.iter().filter(|v| !v.is_null()).collect();
        let array: ArrayRef = if present.is_empty() {
            Arc::new(NullArray::new(values.len()))
        } else if present.iter().all(|v| v.is_i64()) {
            Arc::new(values.iter().map(J::as_i64).collect::<Int64Array>())
        } else if present.iter().all(|v| v.is_number()) {
            Arc::new(values.iter().map(J::as_f64).collect::<Float64Array>())
        } else if present.iter().all(|v| v.is_boolean()) {
            Arc::new(values.iter().map(J::as_bool).collect::<BooleanArray>())
        } else if present.iter().all(|v| v.is_string()) {
            Arc::new(values.iter().map(J::as_str).collect::<StringArray>())
        } else {
            return Err(OfflineError::Invalid(format!(
                "entity column {name} mixes kinds of values (integers, numbers, booleans, \
                 strings): give one kind per column"
            )));
        };
        fields.push(Field::new(name, array.data_type().clone(), true));
        arrays.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| OfflineError::Invalid(format!("entity columns: {e}")))?;
    Ok(ArrowBatches {
        schema,
        batches: Box::new(std::iter::once(Ok(batch))),
    })
}

/// The training set's columns: the entity columns as given, then one
/// `view__feature` column per requested feature, in request order.
pub fn output_columns(
    entity: &[EntityColumn],
    plan: &Plan,
) -> Result<Vec<super::columns::OutColumn>, OfflineError> {
    use super::columns::OutColumn;
    let mut out: Vec<OutColumn> = entity
        .iter()
        .map(|c| OutColumn {
            name: c.name.clone(),
            ty: c.ty,
        })
        .collect();
    for o in &plan.outputs {
        if entity.iter().any(|c| c.name == o.name) {
            return Err(OfflineError::Invalid(format!(
                "the entity rows have a column {0}, which is also the name of a requested \
                 feature's output column",
                o.name
            )));
        }
        out.push(OutColumn {
            name: o.name.clone(),
            ty: o.ty,
        });
    }
    Ok(out)
}
