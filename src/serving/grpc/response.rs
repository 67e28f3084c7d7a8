//! `feast.serving.GetOnlineFeaturesResponse` written straight from the
//! domain response in one pass. Present stored values are copied into the
//! message as the bytes Redis returned (they are encoded
//! `feast.types.Value`s already); nothing is decoded, converted to wire
//! structs or allocated per value. The bytes are those prost writes for
//! the same message (checked by a property test).

use prost::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint};

use crate::model::{EventTime, FieldStatus};
use crate::online::ReadResult;
use crate::proto::feast::types as pbt;
use crate::serving::{Cell, OnlineResponse};

/// A response ready to be written, with every length it needs worked out.
#[derive(Debug)]
pub struct EncodedResponse {
    response: OnlineResponse,
    /// The values that are not stored bytes (join keys, on-demand results),
    /// encoded, one after another in column order.
    values: Vec<u8>,
    /// Where each of them ends in `values`.
    value_ends: Vec<usize>,
    /// The body length of each column's `FeatureVector`.
    vector_lens: Vec<usize>,
    /// The bodies of `metadata` and of its `feature_names`.
    metadata_len: usize,
    names_len: usize,
    len: usize,
}

/// The length of a length-delimited field of tag `tag` with a body of
/// `len` bytes.
fn delimited_len(tag: u32, len: usize) -> usize {
    encoded_len_varint(u64::from(tag << 3)) + encoded_len_varint(len as u64) + len
}

/// The body length of a `google.protobuf.Timestamp` (zero fields are not
/// written).
fn timestamp_len(t: EventTime) -> usize {
    let seconds = if t.seconds != 0 {
        1 + encoded_len_varint(t.seconds as u64)
    } else {
        0
    };
    let nanos = if t.nanos != 0 {
        1 + encoded_len_varint(i64::from(t.nanos) as u64)
    } else {
        0
    };
    seconds + nanos
}

fn status_code(s: FieldStatus) -> u64 {
    match s {
        FieldStatus::Invalid => 0,
        FieldStatus::Present => 1,
        FieldStatus::NullValue => 2,
        FieldStatus::NotFound => 3,
        FieldStatus::OutsideMaxAge => 4,
    }
}

impl EncodedResponse {
    pub fn new(response: OnlineResponse) -> Self {
        let mut values = Vec::new();
        let mut value_ends = Vec::new();
        let mut vector_lens = Vec::with_capacity(response.columns.len());
        let mut results_len = 0;
        for column in &response.columns {
            let mut len = 0;
            for cell in &column.values {
                let body = match cell {
                    Cell::Stored(at) => response.stored(*at).len(),
                    Cell::Value(v) => {
                        let start = values.len();
                        prost::Message::encode_raw(&pbt::Value::from(v.clone()), &mut values);
                        value_ends.push(values.len());
                        values.len() - start
                    }
                };
                len += delimited_len(1, body);
            }
            if !column.statuses.is_empty() {
                // Packed; every status is a one-byte varint.
                len += delimited_len(2, column.statuses.len());
            }
            for t in &column.event_times {
                len += delimited_len(3, timestamp_len(*t));
            }
            vector_lens.push(len);
            results_len += delimited_len(2, len);
        }
        let names_len: usize = response
            .names
            .iter()
            .map(|n| delimited_len(1, n.len()))
            .sum();
        let metadata_len = delimited_len(1, names_len);
        // metadata, results, and `status: true`.
        let len = delimited_len(1, metadata_len) + results_len + 2;
        EncodedResponse {
            response,
            values,
            value_ends,
            vector_lens,
            metadata_len,
            names_len,
            len,
        }
    }
}

/// A length-delimited field of a tag under 16: the key and, for a body
/// under 128 bytes (nearly every value), the length are one byte each.
fn put_delimited(tag: u32, body: &[u8], buf: &mut Vec<u8>) {
    let key = (tag << 3) as u8 | WireType::LengthDelimited as u8;
    match u8::try_from(body.len()) {
        Ok(len) if len < 0x80 => buf.extend_from_slice(&[key, len]),
        _ => {
            buf.push(key);
            encode_varint(body.len() as u64, buf);
        }
    }
    buf.extend_from_slice(body);
}

/// The `event_timestamps` entry of `t`: field 3, its length and the
/// message (at most 24 bytes).
fn timestamp_entry(t: EventTime) -> ([u8; 24], usize) {
    let mut entry = [0; 24];
    let mut rest: &mut [u8] = &mut entry;
    encode_key(3, WireType::LengthDelimited, &mut rest);
    encode_varint(timestamp_len(t) as u64, &mut rest);
    if t.seconds != 0 {
        encode_key(1, WireType::Varint, &mut rest);
        encode_varint(t.seconds as u64, &mut rest);
    }
    if t.nanos != 0 {
        encode_key(2, WireType::Varint, &mut rest);
        encode_varint(i64::from(t.nanos) as u64, &mut rest);
    }
    let len = 24 - rest.len();
    (entry, len)
}

/// The encoded `event_timestamps` entry last written for each row. The
/// features of one view share their row's event time, so consecutive
/// columns mostly repeat the previous column's entries.
struct TimestampEntries {
    rows: Vec<(EventTime, [u8; 24], usize)>,
}

impl TimestampEntries {
    fn put(&mut self, row: usize, t: EventTime, buf: &mut Vec<u8>) {
        if row >= self.rows.len() {
            self.rows.resize(row + 1, (EventTime::EPOCH, [0; 24], 0));
        }
        let slot = &mut self.rows[row];
        if slot.2 == 0 || slot.0 != t {
            let (entry, len) = timestamp_entry(t);
            *slot = (t, entry, len);
        }
        buf.extend_from_slice(&slot.1[..slot.2]);
    }
}

impl prost::Message for EncodedResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        let r = &self.response;
        // Written through a plain vector and copied over a column at a
        // time: byte-sized writes straight into the transport's buffer
        // cost a capacity check each.
        let mut out = Vec::with_capacity(self.vector_lens.iter().max().map_or(0, |l| l + 10));
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(self.metadata_len as u64, &mut out);
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(self.names_len as u64, &mut out);
        buf.put_slice(&out);
        for name in &r.names {
            out.clear();
            put_delimited(1, name.as_bytes(), &mut out);
            buf.put_slice(&out);
        }
        let mut start = 0;
        let mut ends = self.value_ends.iter().copied();
        let mut times = TimestampEntries { rows: Vec::new() };
        for (column, len) in r.columns.iter().zip(&self.vector_lens) {
            out.clear();
            encode_key(2, WireType::LengthDelimited, &mut out);
            encode_varint(*len as u64, &mut out);
            for cell in &column.values {
                let body = match cell {
                    Cell::Stored(at) => r.stored(*at),
                    Cell::Value(_) => {
                        let end = ends.next().unwrap_or(start);
                        let body = self.values.get(start..end).unwrap_or_default();
                        start = end;
                        body
                    }
                };
                put_delimited(1, body, &mut out);
            }
            if !column.statuses.is_empty() {
                encode_key(2, WireType::LengthDelimited, &mut out);
                encode_varint(column.statuses.len() as u64, &mut out);
                out.extend(column.statuses.iter().map(|s| status_code(*s) as u8));
            }
            for (row, t) in column.event_times.iter().enumerate() {
                times.put(row, *t, &mut out);
            }
            buf.put_slice(&out);
        }
        buf.put_slice(&[3 << 3, 1]);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Only ever sent; a decoder would skip what it does not know.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        *self = EncodedResponse::new(OnlineResponse {
            names: Vec::new(),
            columns: Vec::new(),
            transform_errors: 0,
            read: ReadResult::default(),
        });
    }
}

/// The same response as prost structs, decoding stored values. Where the
/// stored bytes are prost's own encoding (as larder and Feast write them),
/// [`EncodedResponse`] writes exactly the bytes prost writes for this.
pub fn to_wire(
    response: &OnlineResponse,
) -> crate::proto::feast::serving::GetOnlineFeaturesResponse {
    use crate::proto::feast::serving as pb;
    let results = response
        .columns
        .iter()
        .map(|c| pb::get_online_features_response::FeatureVector {
            values: c
                .values
                .iter()
                .map(|cell| pbt::Value::from(response.value(cell).into_owned()))
                .collect(),
            statuses: c.statuses.iter().map(|s| status_code(*s) as i32).collect(),
            event_timestamps: c.event_times.iter().map(|t| (*t).into()).collect(),
        })
        .collect();
    pb::GetOnlineFeaturesResponse {
        metadata: Some(pb::GetOnlineFeaturesResponseMetadata {
            feature_names: Some(pb::FeatureList {
                val: response.names.iter().map(|n| n.to_string()).collect(),
            }),
        }),
        results,
        status: true,
    }
}
