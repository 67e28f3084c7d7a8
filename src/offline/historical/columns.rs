//! Column types of a training set and the Arrow builders that collect one
//! batch of it.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::model::ValueType;
use crate::offline::OfflineError;

/// The type of a column, in the stores and in Arrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Int32,
    Int64,
    Float32,
    Float64,
    Bool,
    Utf8,
    Binary,
    /// Microseconds since the epoch, UTC.
    Timestamp,
}

/// The zone of every timestamp column larder writes.
pub const UTC: &str = "UTC";

impl ColType {
    /// The column type of a Feast value type; lists are not supported yet.
    pub fn of(value_type: ValueType) -> Option<ColType> {
        Some(match value_type {
            ValueType::Int32 => ColType::Int32,
            ValueType::Int64 => ColType::Int64,
            ValueType::Float => ColType::Float32,
            ValueType::Double => ColType::Float64,
            ValueType::Bool => ColType::Bool,
            ValueType::String => ColType::Utf8,
            ValueType::Bytes => ColType::Binary,
            ValueType::UnixTimestamp => ColType::Timestamp,
            ValueType::BytesList
            | ValueType::StringList
            | ValueType::Int32List
            | ValueType::Int64List
            | ValueType::DoubleList
            | ValueType::FloatList
            | ValueType::BoolList
            | ValueType::UnixTimestampList => return None,
        })
    }

    pub fn arrow(self) -> DataType {
        match self {
            ColType::Int32 => DataType::Int32,
            ColType::Int64 => DataType::Int64,
            ColType::Float32 => DataType::Float32,
            ColType::Float64 => DataType::Float64,
            ColType::Bool => DataType::Boolean,
            ColType::Utf8 => DataType::Utf8,
            ColType::Binary => DataType::Binary,
            ColType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        }
    }

    /// The PostgreSQL type holding this column.
    pub fn postgres(self) -> &'static str {
        match self {
            ColType::Int32 => "int4",
            ColType::Int64 => "int8",
            ColType::Float32 => "float4",
            ColType::Float64 => "float8",
            ColType::Bool => "bool",
            ColType::Utf8 => "text",
            ColType::Binary => "bytea",
            ColType::Timestamp => "timestamptz",
        }
    }

    /// The declared SQLite type (its affinity) of this column.
    pub fn sqlite(self) -> &'static str {
        match self {
            ColType::Int32 | ColType::Int64 | ColType::Bool | ColType::Timestamp => "INTEGER",
            ColType::Float32 | ColType::Float64 => "REAL",
            ColType::Utf8 => "TEXT",
            ColType::Binary => "BLOB",
        }
    }
}

/// One value on its way into a store or a builder.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
    /// Microseconds since the epoch, UTC.
    Time(i64),
}

/// A named, typed output column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutColumn {
    pub name: String,
    pub ty: ColType,
}

pub fn schema_of(columns: &[OutColumn]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.ty.arrow(), true))
            .collect::<Vec<_>>(),
    ))
}

/// The builder of one column.
pub enum Builder {
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Bool(BooleanBuilder),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl Builder {
    pub fn new(ty: ColType, capacity: usize) -> Self {
        match ty {
            ColType::Int32 => Builder::Int32(Int32Builder::with_capacity(capacity)),
            ColType::Int64 => Builder::Int64(Int64Builder::with_capacity(capacity)),
            ColType::Float32 => Builder::Float32(Float32Builder::with_capacity(capacity)),
            ColType::Float64 => Builder::Float64(Float64Builder::with_capacity(capacity)),
            ColType::Bool => Builder::Bool(BooleanBuilder::with_capacity(capacity)),
            ColType::Utf8 => Builder::Utf8(StringBuilder::with_capacity(capacity, capacity * 8)),
            ColType::Binary => {
                Builder::Binary(BinaryBuilder::with_capacity(capacity, capacity * 8))
            }
            ColType::Timestamp => Builder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone(UTC),
            ),
        }
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Int32(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::Float32(b) => Arc::new(b.finish()),
            Builder::Float64(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Utf8(b) => Arc::new(b.finish()),
            Builder::Binary(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
        }
    }

    /// Appends a cell, converting it losslessly to the column's type; the
    /// error says what was found.
    pub fn append(&mut self, cell: Cell) -> Result<(), String> {
        let found = |cell: &Cell| match cell {
            Cell::Null => "a null".to_owned(),
            Cell::Int(i) => format!("the integer {i}"),
            Cell::Float(f) => format!("the number {f}"),
            Cell::Bool(b) => format!("the boolean {b}"),
            Cell::Text(t) => format!("the text {t:?}"),
            Cell::Bytes(b) => format!("{} bytes", b.len()),
            Cell::Time(t) => format!("the timestamp {}", super::time::format_rfc3339(*t)),
        };
        match (self, cell) {
            (Builder::Int32(b), Cell::Null) => b.append_null(),
            (Builder::Int64(b), Cell::Null) => b.append_null(),
            (Builder::Float32(b), Cell::Null) => b.append_null(),
            (Builder::Float64(b), Cell::Null) => b.append_null(),
            (Builder::Bool(b), Cell::Null) => b.append_null(),
            (Builder::Utf8(b), Cell::Null) => b.append_null(),
            (Builder::Binary(b), Cell::Null) => b.append_null(),
            (Builder::Timestamp(b), Cell::Null) => b.append_null(),
            (Builder::Int32(b), Cell::Int(i)) => match i32::try_from(i) {
                Ok(v) => b.append_value(v),
                Err(_) => return Err(format!("{i} does not fit INT32")),
            },
            (Builder::Int64(b), Cell::Int(i)) => b.append_value(i),
            (Builder::Float32(b), Cell::Float(f)) => b.append_value(f as f32),
            (Builder::Float32(b), Cell::Int(i)) => b.append_value(i as f32),
            (Builder::Float64(b), Cell::Float(f)) => b.append_value(f),
            (Builder::Float64(b), Cell::Int(i)) => b.append_value(i as f64),
            (Builder::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Builder::Bool(b), Cell::Int(i @ (0 | 1))) => b.append_value(i == 1),
            (Builder::Utf8(b), Cell::Text(t)) => b.append_value(t),
            (Builder::Binary(b), Cell::Bytes(v)) => b.append_value(v),
            (Builder::Binary(b), Cell::Text(t)) => b.append_value(t.as_bytes()),
            (Builder::Timestamp(b), Cell::Time(t)) => b.append_value(t),
            (builder, cell) => {
                let wanted = match builder {
                    Builder::Int32(_) => "INT32",
                    Builder::Int64(_) => "INT64",
                    Builder::Float32(_) => "FLOAT",
                    Builder::Float64(_) => "DOUBLE",
                    Builder::Bool(_) => "BOOL",
                    Builder::Utf8(_) => "STRING",
                    Builder::Binary(_) => "BYTES",
                    Builder::Timestamp(_) => "a timestamp",
                };
                return Err(format!("expected {wanted}, found {}", found(&cell)));
            }
        }
        Ok(())
    }
}

/// Collects rows into Arrow record batches of the output schema.
pub struct BatchBuilder {
    schema: SchemaRef,
    types: Vec<ColType>,
    pub columns: Vec<Builder>,
    rows: usize,
    capacity: usize,
}

impl BatchBuilder {
    pub fn new(columns: &[OutColumn], capacity: usize) -> Self {
        let types: Vec<ColType> = columns.iter().map(|c| c.ty).collect();
        BatchBuilder {
            schema: schema_of(columns),
            columns: types.iter().map(|t| Builder::new(*t, capacity)).collect(),
            types,
            rows: 0,
            capacity,
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Counts a row whose every column has been appended.
    pub fn row_done(&mut self) {
        self.rows += 1;
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn is_full(&self) -> bool {
        self.rows >= self.capacity
    }

    /// The rows so far as a batch; the builder starts over.
    pub fn take(&mut self) -> Result<RecordBatch, OfflineError> {
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(Builder::finish).collect();
        self.rows = 0;
        self.columns = self
            .types
            .iter()
            .map(|t| Builder::new(*t, self.capacity))
            .collect();
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| OfflineError::Database(format!("assembling a batch: {e}")))
    }
}
