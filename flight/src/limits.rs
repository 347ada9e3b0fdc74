//! Per-query limits of the serving layer: concurrent queries, run time, result rows and bytes.
//! A breach ends that query with the matching gRPC status and a message naming the setting;
//! every other query keeps running.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Error;

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Queries running at once on this server; more are refused (`RESOURCE_EXHAUSTED`).
    pub max_concurrent_queries: usize,
    /// Longest a query may run, planning and streaming included, ms; 0: no limit
    /// (`DEADLINE_EXCEEDED`).
    pub query_timeout_ms: u64,
    /// Most rows a result may have; 0: no limit (`RESOURCE_EXHAUSTED`).
    pub max_result_rows: u64,
    /// Most bytes (Arrow size) a result may have; 0: no limit (`RESOURCE_EXHAUSTED`).
    pub max_result_bytes: u64,
    /// Memory one query may hold, MiB; sorts and aggregations spill to disk beyond it, other
    /// operators fail the query (`RESOURCE_EXHAUSTED`); 0 (the default): no limit. Off by
    /// default because DataFusion 55 over-counts some accumulators (`count(DISTINCT (a, b))`
    /// charges a whole batch per distinct tuple), which a limit turns into refusals of
    /// queries that fit in memory.
    pub max_query_memory_mb: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_concurrent_queries: 64,
            query_timeout_ms: 600_000,
            max_result_rows: 0,
            max_result_bytes: 0,
            max_query_memory_mb: 0,
        }
    }
}

/// The limits of one server.
#[derive(Debug)]
pub struct Limits {
    cfg: LimitsConfig,
    running: Arc<Semaphore>,
}

impl Limits {
    pub fn new(cfg: &LimitsConfig) -> Result<Arc<Self>, Error> {
        if cfg.max_concurrent_queries == 0 {
            return Err(Error::Config(
                "limits.max_concurrent_queries: must be at least 1".into(),
            ));
        }
        Ok(Arc::new(Self {
            running: Arc::new(Semaphore::new(cfg.max_concurrent_queries)),
            cfg: cfg.clone(),
        }))
    }

    /// A slot for one query, held until its result stream is dropped.
    pub(crate) fn admit(&self) -> Result<OwnedSemaphorePermit, Error> {
        self.running.clone().try_acquire_owned().map_err(|_| {
            Error::ResourceExhausted(format!(
                "too many queries running (limits.max_concurrent_queries = {}); retry later",
                self.cfg.max_concurrent_queries
            ))
        })
    }

    /// The run-time limit, if any.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        (self.cfg.query_timeout_ms > 0).then(|| Duration::from_millis(self.cfg.query_timeout_ms))
    }

    fn timed_out(&self) -> Error {
        Error::DeadlineExceeded(format!(
            "query ran longer than limits.query_timeout_ms = {}",
            self.cfg.query_timeout_ms
        ))
    }

    /// Runs `planning` under the time limit.
    pub(crate) async fn plan<T>(
        &self,
        planning: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        match self.timeout() {
            Some(t) => tokio::time::timeout(t, planning)
                .await
                .map_err(|_| tonic::Status::from(self.timed_out()))?,
            None => planning.await,
        }
    }

    /// `batches` under the limits: ends with an error at the first breach. `permit` is
    /// released when the stream is dropped.
    pub(crate) fn enforce(
        self: &Arc<Self>,
        permit: OwnedSemaphorePermit,
        batches: impl Stream<Item = Result<RecordBatch, Error>> + Send + 'static,
    ) -> impl Stream<Item = Result<RecordBatch, Error>> + Send + 'static {
        let limits = self.clone();
        let deadline = self.timeout().map(|t| tokio::time::Instant::now() + t);
        let timer = self.clone();
        let timed = crate::stop::stop_with(batches, async move {
            // The slot is held as long as the query runs.
            let _permit = permit;
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
            timer.timed_out()
        });
        let (mut rows, mut bytes, mut stopped) = (0u64, 0u64, false);
        timed
            .map(move |item| {
                if stopped {
                    return None;
                }
                if let Ok(b) = &item {
                    rows += b.num_rows() as u64;
                    bytes += b.get_array_memory_size() as u64;
                    let cfg = &limits.cfg;
                    let breach = if cfg.max_result_rows > 0 && rows > cfg.max_result_rows {
                        Some(format!(
                            "result has more than limits.max_result_rows = {} rows",
                            cfg.max_result_rows
                        ))
                    } else if cfg.max_result_bytes > 0 && bytes > cfg.max_result_bytes {
                        Some(format!(
                            "result is larger than limits.max_result_bytes = {} bytes",
                            cfg.max_result_bytes
                        ))
                    } else {
                        None
                    };
                    if let Some(msg) = breach {
                        stopped = true;
                        return Some(Err(Error::ResourceExhausted(msg)));
                    }
                }
                Some(item)
            })
            .take_while(|item| std::future::ready(item.is_some()))
            .filter_map(|item| async move { item })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    fn batch(n: i64) -> RecordBatch {
        RecordBatch::try_from_iter([(
            "x",
            Arc::new(Int64Array::from_iter_values(0..n)) as arrow::array::ArrayRef,
        )])
        .unwrap()
    }

    #[tokio::test]
    async fn each_breach_ends_only_its_query_with_the_right_error() {
        let limits = Limits::new(&LimitsConfig {
            max_concurrent_queries: 1,
            query_timeout_ms: 200,
            max_result_rows: 10,
            max_result_bytes: 0,
            max_query_memory_mb: 0,
        })
        .unwrap();
        // Concurrency: the second query is refused while the first holds its slot.
        let permit = limits.admit().unwrap();
        assert!(
            matches!(limits.admit(), Err(Error::ResourceExhausted(m)) if m.contains("max_concurrent_queries"))
        );
        // Rows: 6 + 6 > 10 — the first batch arrives, then the error, then nothing.
        let s = futures::stream::iter([Ok(batch(6)), Ok(batch(6)), Ok(batch(1))]);
        let out: Vec<_> = limits.enforce(permit, s).collect().await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            matches!(&out[1], Err(Error::ResourceExhausted(m)) if m.contains("max_result_rows"))
        );
        // The slot is free again once the stream is gone.
        let permit = limits.admit().unwrap();
        // Time: a query that never ends is stopped at the deadline.
        let s = futures::stream::iter([Ok(batch(1))]).chain(futures::stream::pending());
        let out: Vec<_> = limits.enforce(permit, s).collect().await;
        assert!(
            matches!(&out[..], [Ok(_), Err(Error::DeadlineExceeded(m))] if m.contains("query_timeout_ms"))
        );
        assert!(limits.admit().is_ok());
    }
}
