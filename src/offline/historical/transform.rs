//! On-demand features in training sets: a [`RowSink`] between the query
//! and the real sink that computes each on-demand column from the query's
//! (hidden) input columns and the entity rows' request fields, with the
//! same compiled program the feature server evaluates, then drops the
//! hidden columns and puts the features in request order.
//!
//! A null input in a training row is treated as missing: the feature gets
//! its default, or a null, as the feature server serves for a missing or
//! null input. A runtime error gives a null and is counted.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::RowSink;
use super::columns::{Builder, Cell};
use super::plan::{FinalColumn, Plan, TransformInput};
use crate::model::{Value, ValueType};
use crate::offline::OfflineError;
use crate::transform::{Arg, Outcome};

/// Wraps `inner`: see the module documentation.
pub struct TransformSink<'a, S> {
    pub inner: &'a mut S,
    pub plan: &'a Plan,
    /// Runtime errors so far (values written as null).
    pub errors: u64,
}

impl<S: RowSink> TransformSink<'_, S> {
    fn out_schema(&self, schema: &Schema) -> SchemaRef {
        let query_features: Vec<&str> = self.plan.outputs.iter().map(|o| o.name.as_str()).collect();
        let mut fields: Vec<Field> = schema
            .fields()
            .iter()
            .filter(|f| !query_features.contains(&f.name().as_str()))
            .map(|f| f.as_ref().clone())
            .collect();
        for c in &self.plan.columns {
            match c {
                FinalColumn::Query(name) => {
                    if let Ok(f) = schema.field_with_name(name) {
                        fields.push(f.clone());
                    }
                }
                FinalColumn::Computed { name, ty, .. } => {
                    fields.push(Field::new(name, ty.arrow(), true));
                }
            }
        }
        Arc::new(Schema::new(fields))
    }

    fn transform(&mut self, batch: &RecordBatch) -> Result<RecordBatch, OfflineError> {
        let schema = batch.schema();
        let rows = batch.num_rows();
        let column = |name: &str| -> Result<&ArrayRef, OfflineError> {
            schema.index_of(name).map(|i| batch.column(i)).map_err(|_| {
                OfflineError::Invalid(format!(
                    "the entity rows have no column {name:?}, a request field an \
                         on-demand feature view reads"
                ))
            })
        };
        // Outcomes per transform, row and feature.
        let mut computed: Vec<Vec<Vec<Outcome>>> = Vec::with_capacity(self.plan.transforms.len());
        for t in &self.plan.transforms {
            let arrays: Vec<&ArrayRef> = t
                .inputs
                .iter()
                .map(|i| match i {
                    TransformInput::Column(name) | TransformInput::Entity(name) => column(name),
                })
                .collect::<Result<_, _>>()?;
            let mut per_row = Vec::with_capacity(rows);
            let mut values: Vec<Option<Value>> = Vec::with_capacity(arrays.len());
            for row in 0..rows {
                values.clear();
                for (input, array) in t.odfv.compiled.inputs.iter().zip(&arrays) {
                    values.push(cell_value(array.as_ref(), row, input.value_type).map_err(
                        |e| {
                            OfflineError::Invalid(format!(
                                "column {:?}, row {row}: {e}",
                                input.name
                            ))
                        },
                    )?);
                }
                let args: Vec<Arg<'_>> = values
                    .iter()
                    .map(|v| v.as_ref().map_or(Arg::Missing, Arg::Present))
                    .collect();
                let mut outcomes = Vec::with_capacity(t.odfv.compiled.features.len());
                // A view computed at write time has a stored row only where
                // its source has one: with every input null the row is taken
                // as having none (see docs/ON_DEMAND.md).
                if t.odfv.stored.is_some() && values.iter().all(Option::is_none) {
                    outcomes.resize(t.odfv.compiled.features.len(), Outcome::Missing);
                    per_row.push(outcomes);
                    continue;
                }
                t.odfv.compiled.evaluate(&args, &mut outcomes);
                self.errors += outcomes
                    .iter()
                    .filter(|o| matches!(o, Outcome::Failed(_)))
                    .count() as u64;
                per_row.push(outcomes);
            }
            computed.push(per_row);
        }

        let query_features: Vec<&str> = self.plan.outputs.iter().map(|o| o.name.as_str()).collect();
        let mut arrays: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .filter(|(f, _)| !query_features.contains(&f.name().as_str()))
            .map(|(_, a)| Arc::clone(a))
            .collect();
        for c in &self.plan.columns {
            match c {
                FinalColumn::Query(name) => arrays.push(Arc::clone(column(name)?)),
                FinalColumn::Computed {
                    transform,
                    feature,
                    ty,
                    ..
                } => {
                    let mut builder = Builder::new(*ty, rows);
                    for outcomes in &computed[*transform] {
                        let cell = match &outcomes[*feature] {
                            Outcome::Value(v) => to_cell(v),
                            Outcome::Missing | Outcome::Null | Outcome::Failed(_) => Cell::Null,
                        };
                        builder.append(cell).map_err(OfflineError::Invalid)?;
                    }
                    arrays.push(builder.finish());
                }
            }
        }
        RecordBatch::try_new(self.out_schema(&schema), arrays)
            .map_err(|e| OfflineError::Database(format!("assembling a batch: {e}")))
    }
}

impl<S: RowSink> RowSink for TransformSink<'_, S> {
    async fn begin(&mut self, schema: SchemaRef, rows: u64) -> Result<(), OfflineError> {
        let out = self.out_schema(&schema);
        self.inner.begin(out, rows).await
    }

    async fn write(&mut self, batch: RecordBatch) -> Result<(), OfflineError> {
        let batch = self.transform(&batch)?;
        self.inner.write(batch).await
    }
}

/// The value at `row` as `target`, `None` for a null. Integers may fill
/// DOUBLE and FLOAT fields (entity files have no declared types), and
/// timestamps UNIX_TIMESTAMP (in seconds).
fn cell_value(array: &dyn Array, row: usize, target: ValueType) -> Result<Option<Value>, String> {
    if array.is_null(row) {
        return Ok(None);
    }
    // Entity files without types (CSV) give text: parse it.
    if matches!(array.data_type(), DataType::Utf8)
        && !matches!(target, ValueType::String | ValueType::Bytes)
    {
        let text = array.as_string::<i32>().value(row).trim();
        let bad = |e: &dyn std::fmt::Display| format!("{text:?} is not {target}: {e}");
        return Ok(Some(match target {
            ValueType::Int32 => Value::Int32(text.parse().map_err(|e| bad(&e))?),
            ValueType::Int64 => Value::Int64(text.parse().map_err(|e| bad(&e))?),
            ValueType::UnixTimestamp => Value::UnixTimestamp(text.parse().map_err(|e| bad(&e))?),
            ValueType::Float => Value::Float(text.parse().map_err(|e| bad(&e))?),
            ValueType::Double => Value::Double(text.parse().map_err(|e| bad(&e))?),
            ValueType::Bool => Value::Bool(text.parse().map_err(|e| bad(&e))?),
            _ => {
                return Err(format!(
                    "{target} inputs are not supported in training sets yet"
                ));
            }
        }));
    }
    let found = || format!("a {} column cannot hold {target}", array.data_type());
    let int = |row: usize| -> Option<i64> {
        match array.data_type() {
            DataType::Int32 => Some(i64::from(array.as_primitive::<Int32Type>().value(row))),
            DataType::Int64 => Some(array.as_primitive::<Int64Type>().value(row)),
            _ => None,
        }
    };
    let value = match target {
        ValueType::Int32 => {
            let i = int(row).ok_or_else(found)?;
            Value::Int32(i32::try_from(i).map_err(|_| format!("{i} does not fit INT32"))?)
        }
        ValueType::Int64 => Value::Int64(int(row).ok_or_else(found)?),
        ValueType::UnixTimestamp => match array.data_type() {
            DataType::Timestamp(..) => Value::UnixTimestamp(
                array
                    .as_primitive_opt::<TimestampMicrosecondType>()
                    .ok_or_else(found)?
                    .value(row)
                    .div_euclid(1_000_000),
            ),
            _ => Value::UnixTimestamp(int(row).ok_or_else(found)?),
        },
        ValueType::Float | ValueType::Double => {
            let d = match array.data_type() {
                DataType::Float32 => {
                    // Keep a FLOAT exact: it is bound as the f32 it is.
                    let f = array.as_primitive::<Float32Type>().value(row);
                    if target == ValueType::Float {
                        return Ok(Some(Value::Float(f)));
                    }
                    f64::from(f)
                }
                DataType::Float64 => array.as_primitive::<Float64Type>().value(row),
                _ => int(row).ok_or_else(found)? as f64,
            };
            if target == ValueType::Float {
                Value::Float(d as f32)
            } else {
                Value::Double(d)
            }
        }
        ValueType::Bool => match array.data_type() {
            DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
            _ => return Err(found()),
        },
        ValueType::String => match array.data_type() {
            DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_owned()),
            DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_owned()),
            _ => return Err(found()),
        },
        ValueType::Bytes => match array.data_type() {
            DataType::Binary => Value::Bytes(array.as_binary::<i32>().value(row).to_vec()),
            DataType::Utf8 => Value::Bytes(array.as_string::<i32>().value(row).as_bytes().to_vec()),
            _ => return Err(found()),
        },
        _ => {
            return Err(format!(
                "{target} inputs are not supported in training sets yet"
            ));
        }
    };
    Ok(Some(value))
}

fn to_cell(v: &Value) -> Cell {
    match v {
        Value::Null => Cell::Null,
        Value::Int32(i) => Cell::Int(i64::from(*i)),
        Value::Int64(i) => Cell::Int(*i),
        Value::UnixTimestamp(s) => Cell::Time(s.saturating_mul(1_000_000)),
        Value::Float(f) => Cell::Float(f64::from(*f)),
        Value::Double(d) => Cell::Float(*d),
        Value::Bool(b) => Cell::Bool(*b),
        Value::String(s) => Cell::Text(s.clone()),
        Value::Bytes(b) => Cell::Bytes(b.clone()),
        // Refused when planning: list columns are not in training sets.
        _ => Cell::Null,
    }
}
