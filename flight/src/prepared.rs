//! Prepared statements without server state (ADR 0002): the handle a client holds carries the
//! SQL and, once bound, the parameter rows, so any server of a fleet can execute it and
//! nothing needs closing. Binding (`DoPut`) answers with a new handle that includes the rows.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_flight::{IpcMessage, SchemaAsIpc};
use bytes::Bytes;
use datafusion::scalar::ScalarValue;
use prost::Message;

use crate::limits::Limits;
use crate::{Error, Result};

/// The content of a prepared statement handle.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Handle {
    /// The statement, with `?` placeholders already numbered (`$1`, `$2`, …).
    #[prost(string, tag = "1")]
    pub sql: String,
    /// The bound parameter rows as an Arrow IPC stream; empty until bound.
    #[prost(bytes = "vec", tag = "2")]
    pub parameters: Vec<u8>,
    /// Set in tickets only: a fresh id per `GetFlightInfo`, so that two runs of the same
    /// statement have different tickets and `CancelFlightInfo` stops only the one it names.
    #[prost(string, tag = "3")]
    pub query_id: String,
    /// Whether this is a prepared statement (whose placeholders must have been bound).
    #[prost(bool, tag = "4")]
    pub prepared: bool,
}

impl Handle {
    /// A prepared statement's handle.
    pub(crate) fn new(sql: String) -> Self {
        Self {
            sql,
            parameters: Vec::new(),
            query_id: String::new(),
            prepared: true,
        }
    }

    /// The ticket of one run of a plain statement.
    pub(crate) fn statement_ticket(sql: String) -> Self {
        Self {
            prepared: false,
            ..Self::new(sql).ticket()
        }
    }

    /// The ticket of one run of this statement: it with a fresh query id.
    pub(crate) fn ticket(&self) -> Self {
        Self {
            query_id: uuid::Uuid::new_v4().to_string(),
            ..self.clone()
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        <Self as Message>::decode(bytes).map_err(|e| {
            Error::InvalidArgument(format!(
                "not a prepared statement handle of this server: {e}"
            ))
        })
    }

    pub(crate) fn to_bytes(&self) -> Bytes {
        self.encode_to_vec().into()
    }

    /// This handle with `batches` (the rows a client bound) as its parameters.
    pub(crate) fn bind(&self, batches: &[RecordBatch]) -> Result<Self> {
        let Some(first) = batches.first() else {
            return Ok(Self {
                parameters: Vec::new(),
                ..self.clone()
            });
        };
        let batch = concat_batches(&first.schema(), batches).map_err(Error::Arrow)?;
        let mut out = Vec::new();
        let mut w = StreamWriter::try_new(&mut out, &batch.schema()).map_err(Error::Arrow)?;
        w.write(&batch).map_err(Error::Arrow)?;
        w.finish().map_err(Error::Arrow)?;
        drop(w);
        Ok(Self {
            parameters: out,
            ..self.clone()
        })
    }

    /// The bound parameter rows, each as the values of `$1`, `$2`, …; empty when unbound.
    /// More than `max` rows is an error (counted before any is decoded: the handle comes from
    /// the client).
    pub(crate) fn parameter_rows(&self, limits: &Limits) -> Result<Vec<Vec<ScalarValue>>> {
        if self.parameters.is_empty() {
            return Ok(Vec::new());
        }
        let reader = StreamReader::try_new(Cursor::new(&self.parameters), None).map_err(|e| {
            Error::InvalidArgument(format!("bound parameters are not Arrow IPC: {e}"))
        })?;
        let mut batches = Vec::new();
        let mut count = 0usize;
        for batch in reader {
            let batch = batch.map_err(|e| {
                Error::InvalidArgument(format!("bound parameters are not Arrow IPC: {e}"))
            })?;
            count += batch.num_rows();
            if count > limits.max_parameter_rows() {
                limits.check_parameter_rows(count)?;
            }
            batches.push(batch);
        }
        let mut rows = Vec::with_capacity(count);
        for batch in batches {
            for row in 0..batch.num_rows() {
                let values = batch
                    .columns()
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, row))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                rows.push(values);
            }
        }
        Ok(rows)
    }
}

/// `schema` in the IPC form Flight SQL's prepared-statement results carry.
pub(crate) fn schema_bytes(schema: &Schema) -> Result<Bytes> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(Error::Arrow)?;
    Ok(bytes)
}

/// The parameter schema of a statement: one field per placeholder, `$1`, `$2`, … in order,
/// typed where the planner could infer the type (else `Null`, meaning any). View types are
/// reported as their plain forms (`string`, not `string_view`), which every client can bind;
/// bound values are cast to the planner's type at execution.
pub(crate) fn parameter_schema(
    types: &std::collections::HashMap<String, Option<arrow::datatypes::DataType>>,
) -> SchemaRef {
    let mut names: Vec<(usize, &String)> = types
        .keys()
        .map(|k| (k.trim_start_matches('$').parse().unwrap_or(usize::MAX), k))
        .collect();
    names.sort();
    Arc::new(Schema::new(
        names
            .into_iter()
            .map(|(_, name)| {
                use arrow::datatypes::DataType;
                let ty = match types.get(name).cloned().flatten() {
                    None => DataType::Null,
                    Some(t) => crate::wire_types::classic_data_type(t),
                };
                arrow::datatypes::Field::new(name, ty, true)
            })
            .collect::<Vec<_>>(),
    ))
}

/// `sql` with each `?` placeholder (the ODBC/JDBC/ADBC style) replaced by `$1`, `$2`, … in
/// order, the form DataFusion plans. `?` inside string literals, quoted identifiers and
/// comments is left alone. SQL that already uses `$n` is returned as it is.
pub(crate) fn number_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                // Until the closing quote; a doubled quote is an escaped one and just
                // re-enters the literal on the next pass.
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                out.push(c);
                let mut prev = ' ';
                for d in chars.by_ref() {
                    out.push(d);
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
            }
            '?' => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    #[test]
    fn question_marks_become_numbered_placeholders_outside_literals() {
        assert_eq!(
            number_placeholders("SELECT ? + 1, 'a?b', \"c?\" FROM t WHERE x = ? -- ?\n AND y = ?"),
            "SELECT $1 + 1, 'a?b', \"c?\" FROM t WHERE x = $2 -- ?\n AND y = $3"
        );
        assert_eq!(
            number_placeholders("SELECT 'it''s ?' /* ? */, ?"),
            "SELECT 'it''s ?' /* ? */, $1"
        );
        assert_eq!(number_placeholders("SELECT $1, $2"), "SELECT $1, $2");
    }

    #[test]
    fn bound_rows_survive_the_handle() {
        let batch = RecordBatch::try_from_iter([
            (
                "a",
                Arc::new(Int64Array::from(vec![1, 2])) as arrow::array::ArrayRef,
            ),
            ("b", Arc::new(StringArray::from(vec!["x", "y"])) as _),
        ])
        .unwrap();
        let h = Handle::new("SELECT $1, $2".into()).bind(&[batch]).unwrap();
        let h = Handle::decode(&h.to_bytes()).unwrap();
        assert_eq!(h.sql, "SELECT $1, $2");
        let limits = Limits::new(&crate::LimitsConfig::default()).unwrap();
        let rows = h.parameter_rows(&limits).unwrap();
        assert_eq!(
            rows,
            vec![
                vec![ScalarValue::Int64(Some(1)), ScalarValue::from("x")],
                vec![ScalarValue::Int64(Some(2)), ScalarValue::from("y")],
            ]
        );
        assert!(Handle::decode(b"\xff\xff garbage").is_err());
        // More rows than limits.max_parameter_rows are refused before they are decoded.
        let one = Limits::new(&crate::LimitsConfig {
            max_parameter_rows: 1,
            ..crate::LimitsConfig::default()
        })
        .unwrap();
        assert!(matches!(
            h.parameter_rows(&one),
            Err(Error::InvalidArgument(m)) if m.contains("limits.max_parameter_rows = 1")
        ));
    }

    #[test]
    fn each_run_of_a_statement_has_its_own_ticket() {
        let a = Handle::statement_ticket("SELECT 1".into());
        let b = Handle::statement_ticket("SELECT 1".into());
        assert_ne!(a.to_bytes(), b.to_bytes());
        assert!(!a.prepared && Handle::new("SELECT 1".into()).prepared);
        let p = Handle::new("SELECT $1".into());
        assert_ne!(p.ticket().to_bytes(), p.ticket().to_bytes());
        assert_eq!(p.ticket().sql, "SELECT $1");
    }
}
