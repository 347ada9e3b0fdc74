//! Per-query limits of the serving layer: concurrent queries, the size and shape of a
//! statement, bound parameter rows, run time (one deadline from admission to the last batch),
//! result rows and bytes, and memory. A breach ends that query with the matching gRPC status
//! and a message naming the setting; every other query keeps running.

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
    /// Longest a query may run, planning, every bound parameter row and streaming included,
    /// ms; 0: no limit (`DEADLINE_EXCEEDED`).
    pub query_timeout_ms: u64,
    /// Most bytes of SQL text in one statement; 0: no limit (`INVALID_ARGUMENT`).
    pub max_sql_bytes: usize,
    /// Most operators chained in one expression (`a OR b OR …`, `1+1+…`, `x::t::t…`) and most
    /// query blocks (`SELECT`, `UNION`, `JOIN`, `FROM` list items) in one statement; bounds the
    /// depth of what the planner builds. 0: no limit (`INVALID_ARGUMENT`).
    pub max_expression_depth: usize,
    /// Most parameter rows bound to one prepared statement (each row runs the statement
    /// once); 0: no limit (`INVALID_ARGUMENT`).
    pub max_parameter_rows: usize,
    /// Most rows a result may have; 0: no limit (`RESOURCE_EXHAUSTED`).
    pub max_result_rows: u64,
    /// Most bytes (Arrow size) a result may have; 0: no limit (`RESOURCE_EXHAUSTED`).
    pub max_result_bytes: u64,
    /// Memory one query may hold, MiB; sorts and aggregations spill to disk beyond it, other
    /// operators fail the query (`RESOURCE_EXHAUSTED`), and one expression may build at most
    /// a quarter of it for one batch (`repeat`, `lpad`, `||`, …). 0: no pool (expressions are
    /// still capped at 1 GiB).
    pub max_query_memory_mb: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_concurrent_queries: 64,
            query_timeout_ms: 600_000,
            max_sql_bytes: 1 << 20,
            max_expression_depth: 1_000,
            max_parameter_rows: 1_000,
            max_result_rows: 0,
            max_result_bytes: 0,
            max_query_memory_mb: 1_024,
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

    /// The statement-shape bounds.
    pub(crate) fn shape(&self) -> engine::ShapeLimits {
        engine::ShapeLimits {
            max_sql_bytes: self.cfg.max_sql_bytes,
            max_depth: self.cfg.max_expression_depth,
        }
    }

    /// Refuses more than `limits.max_parameter_rows` bound rows.
    pub(crate) fn check_parameter_rows(&self, rows: usize) -> Result<(), Error> {
        let max = self.cfg.max_parameter_rows;
        if max > 0 && rows > max {
            return Err(Error::InvalidArgument(format!(
                "{rows} parameter rows are bound, more than limits.max_parameter_rows = {max} \
                 (each row runs the statement once)"
            )));
        }
        Ok(())
    }

    /// The most parameter rows a statement may carry (`usize::MAX`: no limit).
    pub(crate) fn max_parameter_rows(&self) -> usize {
        match self.cfg.max_parameter_rows {
            0 => usize::MAX,
            n => n,
        }
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

    /// When a query admitted now must have ended.
    pub(crate) fn deadline(&self) -> Option<tokio::time::Instant> {
        self.timeout().map(|t| tokio::time::Instant::now() + t)
    }

    fn timed_out(&self) -> Error {
        Error::DeadlineExceeded(format!(
            "query ran longer than limits.query_timeout_ms = {}",
            self.cfg.query_timeout_ms
        ))
    }

    /// Runs `planning` until `deadline`.
    pub(crate) async fn plan<T>(
        &self,
        deadline: Option<tokio::time::Instant>,
        planning: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match deadline {
            Some(d) => tokio::time::timeout_at(d, planning)
                .await
                .map_err(|_| self.timed_out())?,
            None => planning.await,
        }
    }

    /// `batches` under the limits: ends with an error at the first breach, or at `deadline`
    /// (the one the query was admitted with). `permit` is released when the stream is dropped.
    pub(crate) fn enforce(
        self: &Arc<Self>,
        permit: OwnedSemaphorePermit,
        deadline: Option<tokio::time::Instant>,
        batches: impl Stream<Item = Result<RecordBatch, Error>> + Send + 'static,
    ) -> impl Stream<Item = Result<RecordBatch, Error>> + Send + 'static {
        let limits = self.clone();
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
            ..LimitsConfig::default()
        })
        .unwrap();
        // Concurrency: the second query is refused while the first holds its slot.
        let permit = limits.admit().unwrap();
        assert!(
            matches!(limits.admit(), Err(Error::ResourceExhausted(m)) if m.contains("max_concurrent_queries"))
        );
        // Rows: 6 + 6 > 10 — the first batch arrives, then the error, then nothing.
        let s = futures::stream::iter([Ok(batch(6)), Ok(batch(6)), Ok(batch(1))]);
        let out: Vec<_> = limits.enforce(permit, limits.deadline(), s).collect().await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            matches!(&out[1], Err(Error::ResourceExhausted(m)) if m.contains("max_result_rows"))
        );
        // The slot is free again once the stream is gone.
        let permit = limits.admit().unwrap();
        // Time: a query that never ends is stopped at the deadline.
        let s = futures::stream::iter([Ok(batch(1))]).chain(futures::stream::pending());
        let out: Vec<_> = limits.enforce(permit, limits.deadline(), s).collect().await;
        assert!(
            matches!(&out[..], [Ok(_), Err(Error::DeadlineExceeded(m))] if m.contains("query_timeout_ms"))
        );
        assert!(limits.admit().is_ok());
        // One deadline for the whole query: time spent before streaming counts.
        let permit = limits.admit().unwrap();
        let deadline = limits.deadline();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let started = tokio::time::Instant::now();
        let s = futures::stream::pending::<Result<RecordBatch, Error>>();
        let out: Vec<_> = limits.enforce(permit, deadline, s).collect().await;
        assert!(matches!(&out[..], [Err(Error::DeadlineExceeded(_))]));
        // A fresh deadline would have taken at least the whole 200 ms.
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "the stream got a fresh deadline"
        );
        // Parameter rows.
        assert!(limits.check_parameter_rows(1_000).is_ok());
        assert!(
            matches!(limits.check_parameter_rows(1_001), Err(Error::InvalidArgument(m)) if m.contains("limits.max_parameter_rows = 1000"))
        );
    }
}
