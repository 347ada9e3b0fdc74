//! A schema-specialised JSON → Arrow decoder for the common case: flat objects whose values
//! have exactly the types of the schema, strings without escapes.
//!
//! It parses each message once, straight into the column builders, instead of building a tape
//! and walking it (arrow-json). It is all-or-nothing: anything it does not handle exactly —
//! escapes, duplicate or (in strict mode) unknown keys, nested values of unknown fields, nulls or
//! absence of required fields, numbers that need coercion, any malformed JSON — makes it give up
//! on the whole batch, and the caller decodes the batch with arrow-json, which has the final
//! word and the dead letters. So every batch this decoder returns is the batch arrow-json would
//! have returned: the fuzz target `decode_json` and the unit tests check exactly that.

use std::sync::Arc;

use arrow::array::builder::NullBufferBuilder;
use arrow::array::timezone::Tz;
use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, MapArray, StringArray, StructArray,
    TimestampMicrosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::kernels::cast_utils::string_to_datetime;
use arrow::datatypes::{DataType, FieldRef};
use schemas::{EventSchema, FieldType};

/// The most fields a schema may have for this decoder (one bit each in a `u64`).
const MAX_FIELDS: usize = 64;

/// Batches with more value bytes than this go to arrow-json, so no string column's `i32`
/// offsets can overflow here.
const MAX_BATCH_BYTES: usize = (i32::MAX / 2) as usize;

#[derive(Debug)]
pub(crate) struct FastJson {
    names: Vec<Box<[u8]>>,
    /// The first 8 bytes of each name, zero-padded: most keys are told apart (or matched,
    /// when not longer) by one integer compare instead of a `memcmp` call.
    prefixes: Vec<u64>,
    types: Vec<FieldType>,
    nullable: Vec<bool>,
    strict: bool,
    utc: Tz,
}

/// A string column under construction: the bytes of all values, their end offsets, nulls.
/// Values are appended as bytes (no UTF-8 check per value); the whole column is checked once
/// when it becomes a `StringArray`.
struct Strings {
    offsets: Vec<i32>,
    data: Vec<u8>,
    nulls: NullBufferBuilder,
}

impl Strings {
    fn with_capacity(rows: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self {
            offsets,
            data: Vec::with_capacity(bytes),
            nulls: NullBufferBuilder::new(rows),
        }
    }

    /// Appends `v`; the offsets cannot overflow because a batch holds at most
    /// `MAX_BATCH_BYTES`.
    fn append(&mut self, v: &[u8]) {
        self.data.extend_from_slice(v);
        self.offsets.push(self.data.len() as i32);
        self.nulls.append_non_null();
    }

    fn append_null(&mut self) {
        self.offsets.push(self.data.len() as i32);
        self.nulls.append_null();
    }

    fn finish(mut self) -> Option<StringArray> {
        StringArray::try_new(
            OffsetBuffer::new(self.offsets.into()),
            self.data.into(),
            self.nulls.finish(),
        )
        .ok()
    }
}

/// A `map<string,string>` column under construction.
struct Map {
    /// The schema's `key_value` entries field.
    entries: FieldRef,
    offsets: Vec<i32>,
    keys: Strings,
    values: Strings,
    nulls: NullBufferBuilder,
}

impl Map {
    fn finish(mut self) -> Option<MapArray> {
        let DataType::Struct(fields) = self.entries.data_type() else {
            return None;
        };
        let entries = StructArray::try_new(
            fields.clone(),
            vec![
                Arc::new(self.keys.finish()?),
                Arc::new(self.values.finish()?),
            ],
            None,
        )
        .ok()?;
        MapArray::try_new(
            self.entries,
            OffsetBuffer::new(self.offsets.into()),
            entries,
            self.nulls.finish(),
            false,
        )
        .ok()
    }
}

enum Column {
    Ts(TimestampMicrosecondBuilder),
    Str(Strings),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Map(Map),
}

impl Column {
    fn new(ty: FieldType, rows: usize, bytes: usize) -> Option<Self> {
        Some(match ty {
            FieldType::TimestampMicros => {
                Self::Ts(TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"))
            }
            FieldType::String => Self::Str(Strings::with_capacity(rows, bytes)),
            FieldType::Int64 => Self::Int(Int64Builder::with_capacity(rows)),
            FieldType::Float64 => Self::Float(Float64Builder::with_capacity(rows)),
            FieldType::Boolean => Self::Bool(BooleanBuilder::with_capacity(rows)),
            FieldType::StringMap => {
                let DataType::Map(entries, _) = ty.arrow_type() else {
                    return None;
                };
                let mut offsets = Vec::with_capacity(rows + 1);
                offsets.push(0);
                Self::Map(Map {
                    entries,
                    offsets,
                    keys: Strings::with_capacity(rows, bytes),
                    values: Strings::with_capacity(rows, bytes),
                    nulls: NullBufferBuilder::new(rows),
                })
            }
            FieldType::Json => return None,
        })
    }

    fn append_null(&mut self) {
        match self {
            Self::Ts(b) => b.append_null(),
            Self::Str(b) => b.append_null(),
            Self::Int(b) => b.append_null(),
            Self::Float(b) => b.append_null(),
            Self::Bool(b) => b.append_null(),
            Self::Map(m) => {
                m.offsets.push(m.keys.offsets.len() as i32 - 1);
                m.nulls.append_null();
            }
        }
    }

    fn finish(self) -> Option<ArrayRef> {
        Some(match self {
            Self::Ts(mut b) => Arc::new(b.finish()),
            Self::Str(b) => Arc::new(b.finish()?),
            Self::Int(mut b) => Arc::new(b.finish()),
            Self::Float(mut b) => Arc::new(b.finish()),
            Self::Bool(mut b) => Arc::new(b.finish()),
            Self::Map(m) => Arc::new(m.finish()?),
        })
    }
}

/// A cursor over one message. Every method returns `None` for anything it does not accept.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn literal(&mut self, lit: &[u8]) -> Option<()> {
        let end = self.i + lit.len();
        (self.b.get(self.i..end)? == lit).then(|| self.i = end)
    }

    /// The bytes of a string without escapes or control characters. Outside strings the
    /// cursor accepts only ASCII, so checking the strings that are not all ASCII makes the
    /// whole message checked for valid UTF-8.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        // Eight bytes at a time while the string does not end, then byte by byte.
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
                break;
            };
            let w = u64::from_le_bytes(chunk);
            let stop = has_byte(w, b'"') | has_byte(w, b'\\') | has_below(w, 0x20);
            if stop != 0 {
                // The lowest flagged byte is exact (only bytes above it can be false hits).
                self.i += (stop.trailing_zeros() / 8) as usize;
                break;
            }
            self.i += 8;
        }
        loop {
            match *self.b.get(self.i)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
        let s = &self.b[start..self.i];
        if !s.is_ascii() {
            std::str::from_utf8(s).ok()?;
        }
        self.i += 1;
        Some(s)
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    /// A JSON number token (RFC 8259 grammar); `true` in the second place when it is an
    /// integer (no fraction, no exponent).
    fn number(&mut self) -> Option<(&'a [u8], bool)> {
        let start = self.i;
        if self.peek()? == b'-' {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            integer = false;
            (self.digits() > 0).then_some(())?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            (self.digits() > 0).then_some(())?;
        }
        Some((&self.b[start..self.i], integer))
    }

    /// An integer token that fits an `i64`.
    fn int(&mut self) -> Option<i64> {
        let (s, integer) = self.number()?;
        if !integer {
            return None;
        }
        let (negative, digits) = match s.split_first()? {
            (b'-', rest) => (true, rest),
            _ => (false, s),
        };
        let mut v: i64 = 0;
        for &d in digits {
            let d = i64::from(d - b'0');
            // Accumulate negatively so that i64::MIN parses.
            v = v.checked_mul(10)?.checked_sub(d)?;
        }
        if negative { Some(v) } else { v.checked_neg() }
    }

    /// After an object member: `true` past a `,` (another member follows), `false` past the
    /// closing `}`.
    fn next_member(&mut self) -> Option<bool> {
        self.ws();
        let more = match self.peek()? {
            b',' => true,
            b'}' => false,
            _ => return None,
        };
        self.i += 1;
        self.ws();
        Some(more)
    }

    /// Whether the next value is `null` (and consumes it).
    fn null(&mut self) -> bool {
        self.literal(b"null").is_some()
    }

    /// Skips a scalar value of a field the schema lacks.
    fn skip_scalar(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number().map(drop),
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit set in each byte of `w` below `n` (`n` ≤ 0x80); exact for the lowest such
/// byte, while bytes above it may be flagged falsely (borrows).
fn has_below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS
}

/// The high bit set in each byte of `w` equal to `c`; exact for the lowest such byte.
fn has_byte(w: u64, c: u8) -> u64 {
    has_below(w ^ (ONES * u64::from(c)), 1)
}

/// The first 8 bytes of `b` as an integer, zero-padded.
fn prefix(b: &[u8]) -> u64 {
    // A byte loop, not `copy_from_slice`: a copy of variable length is a `memcpy` call.
    b.iter()
        .take(8)
        .enumerate()
        .fold(0, |w, (i, &c)| w | u64::from(c) << (8 * i))
}

impl FastJson {
    /// `None` when the schema has a field type this decoder does not handle (JSON text) or too
    /// many fields.
    pub(crate) fn new(schema: &EventSchema, strict: bool) -> Option<Self> {
        if schema.fields.len() > MAX_FIELDS || schema.has_json_fields() {
            return None;
        }
        Some(Self {
            names: schema
                .fields
                .iter()
                .map(|f| f.name.as_bytes().into())
                .collect(),
            prefixes: schema
                .fields
                .iter()
                .map(|f| prefix(f.name.as_bytes()))
                .collect(),
            types: schema.fields.iter().map(|f| f.ty).collect(),
            nullable: schema.fields.iter().map(|f| f.nullable).collect(),
            strict,
            utc: "UTC".parse().ok()?,
        })
    }

    /// The columns of `values`, one row each, in schema order; `None` when any message is
    /// outside what this decoder handles exactly.
    pub(crate) fn decode<'m>(
        &self,
        values: impl ExactSizeIterator<Item = &'m [u8]> + Clone,
    ) -> Option<Vec<ArrayRef>> {
        let rows = values.len();
        let bytes: usize = values.clone().map(<[u8]>::len).sum();
        if bytes > MAX_BATCH_BYTES {
            return None;
        }
        // A rough share of the bytes per string column; builders grow if it is short.
        let per_column = bytes / self.types.len().max(1);
        let mut columns = self
            .types
            .iter()
            .map(|&ty| Column::new(ty, rows, per_column))
            .collect::<Option<Vec<_>>>()?;
        for v in values {
            self.row(v, &mut columns)?;
        }
        columns.into_iter().map(Column::finish).collect()
    }

    /// The index of field `key`, trying `hint` (the field after the previous one: producers
    /// mostly write fields in schema order) first.
    fn field(&self, key: &[u8], hint: usize) -> Option<usize> {
        let p = prefix(key);
        let is = |k: usize| {
            let name = &self.names[k];
            self.prefixes[k] == p
                && name.len() == key.len()
                && (key.len() <= 8 || name[8..] == key[8..])
        };
        if hint < self.names.len() && is(hint) {
            return Some(hint);
        }
        (0..self.names.len()).find(|&k| is(k))
    }

    fn row(&self, b: &[u8], columns: &mut [Column]) -> Option<()> {
        let mut c = Cursor { b, i: 0 };
        c.ws();
        c.eat(b'{')?;
        c.ws();
        let mut seen = 0u64;
        let mut hint = 0;
        if c.eat(b'}').is_none() {
            loop {
                let key = c.string()?;
                c.ws();
                c.eat(b':')?;
                c.ws();
                match self.field(key, hint) {
                    Some(k) => {
                        hint = k + 1;
                        let bit = 1u64 << k;
                        if seen & bit != 0 {
                            return None;
                        }
                        seen |= bit;
                        self.value(k, &mut c, &mut columns[k])?;
                    }
                    None if self.strict => return None,
                    None => c.skip_scalar()?,
                }
                if !c.next_member()? {
                    break;
                }
            }
        }
        c.ws();
        if c.i != b.len() {
            return None;
        }
        for (k, column) in columns.iter_mut().enumerate() {
            if seen & (1u64 << k) == 0 {
                if !self.nullable[k] {
                    return None;
                }
                column.append_null();
            }
        }
        Some(())
    }

    fn value(&self, k: usize, c: &mut Cursor<'_>, column: &mut Column) -> Option<()> {
        if c.null() {
            if !self.nullable[k] {
                return None;
            }
            column.append_null();
            return Some(());
        }
        match column {
            Column::Str(b) => b.append(c.string()?),
            Column::Float(b) => {
                // The parser arrow-json uses, so the values are bit for bit the same.
                let v: f64 = lexical_core::parse(c.number()?.0).ok()?;
                if !v.is_finite() {
                    return None;
                }
                b.append_value(v);
            }
            Column::Int(b) => b.append_value(c.int()?),
            Column::Ts(b) => {
                let us = match c.peek()? {
                    b'"' => {
                        let s = std::str::from_utf8(c.string()?).ok()?;
                        string_to_datetime(&self.utc, s).ok()?.timestamp_micros()
                    }
                    _ => c.int()?,
                };
                b.append_value(us);
            }
            Column::Bool(b) => match c.peek()? {
                b't' => {
                    c.literal(b"true")?;
                    b.append_value(true);
                }
                _ => {
                    c.literal(b"false")?;
                    b.append_value(false);
                }
            },
            Column::Map(m) => {
                c.eat(b'{')?;
                c.ws();
                if c.eat(b'}').is_none() {
                    loop {
                        let key = c.string()?;
                        c.ws();
                        c.eat(b':')?;
                        c.ws();
                        m.keys.append(key);
                        if c.null() {
                            m.values.append_null();
                        } else {
                            m.values.append(c.string()?);
                        }
                        if !c.next_member()? {
                            break;
                        }
                    }
                }
                m.offsets.push(m.keys.offsets.len() as i32 - 1);
                m.nulls.append_non_null();
            }
        }
        Some(())
    }
}
