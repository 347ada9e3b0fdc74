//! The audit log: one structured line per query (target `sakura::audit`) when it ends — who ran
//! what, how many rows and bytes it returned, how long it took, and how it ended (`ok`, the
//! error, `cancelled`, or `disconnected` when the client went away mid-stream).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arrow::array::RecordBatch;
use futures::{Stream, StreamExt};

use crate::{Error, Identity};

/// One query's audit record; logged once, when the last handle to it is dropped.
#[derive(Debug)]
pub(crate) struct Audit {
    subject: String,
    method: &'static str,
    sql: String,
    query_id: String,
    started: Instant,
    rows: AtomicU64,
    bytes: AtomicU64,
    outcome: Mutex<Option<String>>,
}

impl Audit {
    pub(crate) fn start(identity: Option<&Identity>, sql: &str, query_id: &str) -> Arc<Self> {
        Arc::new(Self {
            subject: identity.map_or_else(|| "unknown".into(), |i| i.subject.clone()),
            method: identity.map_or("none", |i| i.method),
            sql: sql.to_string(),
            query_id: query_id.to_string(),
            started: Instant::now(),
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            outcome: Mutex::new(None),
        })
    }

    fn set_outcome(&self, outcome: String) {
        let mut o = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
        if o.is_none() {
            *o = Some(outcome);
        }
    }

    /// Records that the query failed before it produced a stream.
    pub(crate) fn failed(&self, e: &tonic::Status) {
        self.set_outcome(format!("error: {:?}: {}", e.code(), e.message()));
    }

    /// `batches`, counted into this record; the outcome is set by how the stream ends.
    pub(crate) fn wrap(
        self: Arc<Self>,
        batches: impl Stream<Item = Result<RecordBatch, Error>> + Send + 'static,
    ) -> impl Stream<Item = Result<RecordBatch, Error>> + Send + 'static {
        let end = self.clone();
        batches
            .inspect(move |item| match item {
                Ok(b) => {
                    self.rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                    self.bytes
                        .fetch_add(b.get_array_memory_size() as u64, Ordering::Relaxed);
                }
                Err(Error::Cancelled(_)) => self.set_outcome("cancelled".into()),
                Err(e) => self.set_outcome(format!("error: {:?}: {e}", e.code())),
            })
            .map(Some)
            // Reached only when the stream ends (not when the client drops it): the first
            // outcome recorded stays.
            .chain(futures::stream::once(async move {
                end.set_outcome("ok".into());
                None
            }))
            .filter_map(|item| async move { item })
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        let outcome = self
            .outcome
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_else(|| "disconnected".into());
        tracing::info!(
            target: "sakura::audit",
            subject = %self.subject,
            auth = %self.method,
            query_id = %self.query_id,
            sql = %self.sql,
            rows = self.rows.load(Ordering::Relaxed),
            bytes = self.bytes.load(Ordering::Relaxed),
            duration_ms = self.started.elapsed().as_millis() as u64,
            outcome = %outcome,
            "query"
        );
    }
}
