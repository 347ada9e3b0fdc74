//! The path every query takes, whichever protocol brought it (Flight SQL or the HTTP API):
//! admission (`limits.max_concurrent_queries`), the statement's shape (size and depth, before
//! anything parses it), the caller's grants (RBAC), planning and then the result stream under
//! one deadline and the size limits, counted into one audit line. Planning a statement only for
//! its schema (`GetFlightInfo`, creating a prepared statement) is admitted, checked and timed
//! the same way.

use std::net::SocketAddr;
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

/// Who is calling, and from where.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller<'a> {
    pub(crate) identity: Option<&'a Identity>,
    pub(crate) peer: Option<SocketAddr>,
}

/// The executor behind the policy and the limits.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    pub(crate) executor: Arc<dyn QueryExecutor>,
    policy: Arc<Policy>,
    pub(crate) limits: Arc<Limits>,
}

/// Whether a caller with `grants` reads some table through a row filter: then the errors it
/// sees carry no values (they could come from rows the filter hides).
fn filtered(grants: &Grants) -> bool {
    grants.tables.values().any(Option::is_some)
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
    pub(crate) async fn grants(&self, identity: Option<&Identity>) -> Result<Grants, Error> {
        // Tables other processes created since the last look join the catalog first, so a
        // grant pattern covers them.
        self.executor.discover().await;
        let identity = identity
            .ok_or_else(|| Error::Unauthenticated("the call carries no identity".into()))?;
        self.policy.grants(identity, &self.executor.table_names())
    }

    /// Refuses a statement too long or too deep to plan safely (before anything parses it).
    fn check_shape(&self, sql: &str) -> Result<(), Error> {
        self.executor
            .check_shape(sql, self.limits.shape())
            .map_err(|e| Error::InvalidArgument(e.to_string()))
    }

    /// Plans `sql` for `caller` without running it (its result schema, a prepared statement):
    /// admitted, shape-checked and timed like a query; a refusal is audited under a fresh
    /// query id.
    pub(crate) async fn plan_only<T>(
        &self,
        caller: Caller<'_>,
        sql: &str,
        plan: impl AsyncFnOnce(&Grants) -> Result<T, Error>,
    ) -> Result<T, Status> {
        let mut withheld = false;
        let planned = async {
            let _permit = self.limits.admit()?;
            let deadline = self.limits.deadline();
            self.check_shape(sql)?;
            let grants = self.grants(caller.identity).await?;
            withheld = filtered(&grants);
            self.limits.plan(deadline, plan(&grants)).await
        }
        .await;
        planned.map_err(|e| {
            let query_id = uuid::Uuid::new_v4().to_string();
            let audit = Audit::start(caller.identity, caller.peer, sql, &query_id);
            refusal(&audit, e, withheld, &query_id)
        })
    }

    /// Runs one query for `caller`: `plan` turns the caller's grants into a result stream;
    /// `track` may wrap that stream (cancellation) before the limits and the audit record do.
    /// One deadline, set at admission, covers planning and the whole stream. The failure, if
    /// any, is logged in the query's audit line (in full; a row-filtered caller sees it
    /// without values).
    pub(crate) async fn run(
        &self,
        caller: Caller<'_>,
        sql: &str,
        query_id: &str,
        plan: impl AsyncFnOnce(&Grants) -> Result<QueryStream, Error>,
        track: impl FnOnce(Batches) -> Batches,
    ) -> Result<QueryStream, Status> {
        let audit = Audit::start(caller.identity, caller.peer, sql, query_id);
        let mut withheld = false;
        let started = async {
            let permit = self.limits.admit()?;
            let deadline = self.limits.deadline();
            self.check_shape(sql)?;
            let grants = self.grants(caller.identity).await?;
            withheld = filtered(&grants);
            let (schema, batches) = self.limits.plan(deadline, plan(&grants)).await?;
            Ok::<_, Error>((schema, batches, permit, deadline))
        }
        .await;
        let (schema, batches, permit, deadline) =
            started.map_err(|e| refusal(&audit, e, withheld, query_id))?;
        let limited = self.limits.enforce(permit, deadline, track(batches));
        let audited = audit.wrap(limited);
        Ok((
            schema,
            if withheld {
                audited.map(|r| r.map_err(|e| e.withheld_if(true))).boxed()
            } else {
                audited.boxed()
            },
        ))
    }
}

/// Records `e` in full in `audit`; the status the caller sees (without row values when
/// `withheld`), with the query id.
fn refusal(audit: &Audit, e: Error, withheld: bool, query_id: &str) -> Status {
    let full = e.to_status();
    audit.failed(&full);
    let seen = if withheld {
        e.withheld().map_or(full, |w| w.to_status())
    } else {
        full
    };
    with_query_id(seen, query_id)
}

/// `status` with the query's id in its metadata (`x-sakura-query-id`), to find its audit line.
fn with_query_id(mut status: Status, query_id: &str) -> Status {
    if let Ok(v) = query_id.parse() {
        status.metadata_mut().insert("x-sakura-query-id", v);
    }
    status
}
