//! The path every query takes, whichever protocol brought it (Flight SQL or the HTTP API):
//! admission (`limits.max_concurrent_queries`), the caller's grants (RBAC), planning under the
//! time limit, then a result stream under the run-time and size limits, counted into one audit
//! line.

use std::sync::Arc;

use arrow::array::RecordBatch;
use futures::StreamExt;
use futures::stream::BoxStream;
use tonic::Status;

use crate::audit::Audit;
use crate::executor::{QueryExecutor, QueryStream};
use crate::limits::Limits;
use crate::rbac::Policy;
use crate::{Error, Identity};
use engine::Grants;

/// A result stream as a boxed stream of batches.
pub(crate) type Batches = BoxStream<'static, Result<RecordBatch, Error>>;

/// The executor behind the policy and the limits.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    pub(crate) executor: Arc<dyn QueryExecutor>,
    policy: Arc<Policy>,
    limits: Arc<Limits>,
}

impl Gate {
    pub(crate) fn new(
        executor: Arc<dyn QueryExecutor>,
        policy: Arc<Policy>,
        limits: Arc<Limits>,
    ) -> Self {
        Self {
            executor,
            policy,
            limits,
        }
    }

    /// What `identity` may read (its tables and their row filters).
    pub(crate) async fn grants(&self, identity: Option<&Identity>) -> Result<Grants, Status> {
        // Tables other processes created since the last look join the catalog first, so a
        // grant pattern covers them.
        self.executor.discover().await;
        let identity = identity.ok_or_else(|| {
            Status::from(Error::Unauthenticated(
                "the call carries no identity".into(),
            ))
        })?;
        Ok(self.policy.grants(identity, &self.executor.table_names())?)
    }

    /// Logs the audit line of a query refused before it ran (while it was planned for its
    /// schema, or a prepared statement was created).
    pub(crate) fn audit_refusal(identity: Option<&Identity>, sql: &str, status: &Status) {
        Audit::start(identity, sql, "").failed(status);
    }

    /// Runs one query for `identity`: `plan` turns the caller's grants into a result stream;
    /// `track` may wrap that stream (cancellation) before the limits and the audit record do.
    /// The failure, if any, is logged in the query's audit line.
    pub(crate) async fn run(
        &self,
        identity: Option<&Identity>,
        sql: &str,
        query_id: &str,
        plan: impl AsyncFnOnce(&Grants) -> Result<QueryStream, Status>,
        track: impl FnOnce(Batches) -> Batches,
    ) -> Result<QueryStream, Status> {
        let audit = Audit::start(identity, sql, query_id);
        let (schema, batches, permit) = async {
            let permit = self.limits.admit()?;
            let grants = self.grants(identity).await?;
            let (schema, batches) = self.limits.plan(plan(&grants)).await?;
            Ok::<_, Status>((schema, batches, permit))
        }
        .await
        .inspect_err(|s| audit.failed(s))?;
        let limited = self.limits.enforce(permit, track(batches));
        Ok((schema, audit.wrap(limited).boxed()))
    }
}
