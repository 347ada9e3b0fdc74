//! The two ways rows are written to a table: an append that records, in the same commit, how
//! far the writer got (ingest's Kafka offsets), and a replace of the rows a predicate selects
//! (a job's window).

use arrow::array::RecordBatch;
use deltalake::DeltaTable;
use deltalake::datafusion::prelude::Expr;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use schemas::TableRef;

use crate::{Error, Result};

/// One application transaction (`txn` action): `app_id` has reached `version`.
pub type Txn = Transaction;

/// What [`commit_append`] landed: the version of the snapshot the commit was checked against,
/// and the committed version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub read: u64,
    pub version: u64,
}

/// Adds `files` (already uploaded under the table) and records `txns` in one Delta commit,
/// checked for conflicts against the table's loaded snapshot. A commit may have no files and
/// only move the transactions forward. The table keeps the snapshot the commit built, so the
/// next refresh does not read the same log entries again.
pub async fn commit_append(
    table: &mut DeltaTable,
    name: &TableRef,
    files: Vec<Add>,
    txns: Vec<Txn>,
    partition_columns: &[String],
) -> Result<Committed> {
    let operation = DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: (!partition_columns.is_empty()).then(|| partition_columns.to_vec()),
        predicate: None,
    };
    let snapshot = table
        .snapshot()
        .map_err(|e| Error::delta(name, "failed to read the snapshot", e))?;
    let read = snapshot.version();
    let commit =
        CommitBuilder::from(CommitProperties::default().with_application_transactions(txns))
            .with_actions(files.into_iter().map(Action::Add).collect())
            .build(Some(snapshot), table.log_store(), operation)
            .await
            .map_err(|e| Error::delta(name, "failed to commit", e))?;
    let version = commit.version;
    table.state = Some(commit.snapshot);
    Ok(Committed { read, version })
}

/// Replaces the rows of `table` that `predicate` selects with `batches` (one commit). With no
/// rows to write the selected rows are deleted: Delta refuses an empty write, and the window's
/// old rows must still go. Errors name the table `name` and the rows `what` ("the job's
/// result").
pub async fn replace_where(
    table: DeltaTable,
    name: &TableRef,
    batches: Vec<RecordBatch>,
    predicate: Expr,
    what: &str,
) -> Result<DeltaTable> {
    if batches.iter().all(|b| b.num_rows() == 0) {
        let (table, _) = table
            .delete()
            .with_predicate(predicate)
            .await
            .map_err(|e| Error::delta(name, format!("failed to clear {what}"), e))?;
        return Ok(table);
    }
    table
        .write(batches)
        .with_save_mode(SaveMode::Overwrite)
        .with_replace_where(predicate)
        .await
        .map_err(|e| Error::delta(name, format!("failed to write {what}"), e))
}
