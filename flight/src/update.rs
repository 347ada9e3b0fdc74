//! Statement updates: `INSERT INTO curated.x …` and `CREATE TABLE curated.x AS SELECT …`, for
//! callers whose roles may write the target. Ingest owns `raw`; SQL writes only `curated`.

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::context::SQLOptions;
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{ObjectName, ObjectNamePart, Statement, TableObject};
use engine::{CATALOG, CURATED, Engine, Grants};

use crate::{Error, Result};

/// The column of an update's one-row result.
pub(crate) const ROWS_AFFECTED: &str = "rows_affected";

/// The schema of an update's result.
pub(crate) fn result_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        ROWS_AFFECTED,
        DataType::UInt64,
        false,
    )]))
}

/// An update's result as a one-row batch.
pub(crate) fn result_batch(rows: u64) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        result_schema(),
        vec![Arc::new(UInt64Array::from(vec![rows]))],
    )?)
}

/// The rows a write's result batch counts (the `UInt64` first column of DataFusion's DML
/// result, or of [`result_batch`]).
pub(crate) fn rows_affected(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .first()
        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
        .map_or(0, |c| c.iter().flatten().sum())
}

/// What a statement update writes.
#[derive(Debug)]
enum Update {
    Insert {
        table: String,
    },
    CreateAs {
        table: String,
        query: String,
        if_not_exists: bool,
    },
}

/// `(schema, table)` of a name, unquoted parts lower-cased as the planner does.
fn two_part(name: &ObjectName) -> Result<(String, String)> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) if i.quote_style.is_none() => {
                Ok(i.value.to_ascii_lowercase())
            }
            ObjectNamePart::Identifier(i) => Ok(i.value.clone()),
            ObjectNamePart::Function(_) => Err(Error::InvalidArgument(format!(
                "{name} is not a table name"
            ))),
        })
        .collect::<Result<_>>()?;
    match parts.as_slice() {
        [table] => Ok(("raw".into(), table.clone())),
        [schema, table] => Ok((schema.clone(), table.clone())),
        [catalog, schema, table] if catalog == CATALOG => Ok((schema.clone(), table.clone())),
        _ => Err(Error::NotFound(format!("no table {name}"))),
    }
}

/// The one statement of `sql` when it is an update; `None` for anything else (a query).
fn parse(sql: &str) -> Result<Option<(Update, String)>> {
    // Every query passes here: skip the parse unless the text could be a write.
    let lower = sql.to_ascii_lowercase();
    if !lower.contains("insert") && !lower.contains("create") {
        return Ok(None);
    }
    let Ok(mut statements) = DFParser::parse_sql(sql) else {
        // Not ours to judge: the query planner reports syntax errors.
        return Ok(None);
    };
    if statements.len() != 1 {
        return Ok(None);
    }
    let Some(DFStatement::Statement(statement)) = statements.pop_front() else {
        return Ok(None);
    };
    let target = |name: &ObjectName| -> Result<String> {
        let (schema, table) = two_part(name)?;
        if schema != CURATED {
            return Err(Error::PermissionDenied(format!(
                "{schema}.{table} is not writable: SQL writes go to curated tables \
                 ({schema} is written by ingest or the system)"
            )));
        }
        Ok(table)
    };
    Ok(match *statement {
        Statement::Insert(insert) => {
            let TableObject::TableName(name) = &insert.table else {
                return Err(Error::Unimplemented("INSERT INTO a table function".into()));
            };
            Some((
                Update::Insert {
                    table: target(name)?,
                },
                sql.to_string(),
            ))
        }
        Statement::CreateTable(create) if create.query.is_some() => {
            if create.or_replace
                || create.temporary
                || create.external
                || !create.columns.is_empty()
            {
                return Err(Error::Unimplemented(
                    "CREATE TABLE … AS supports neither OR REPLACE, TEMPORARY, EXTERNAL nor a \
                     column list (name the columns in the SELECT)"
                        .into(),
                ));
            }
            let table = target(&create.name)?;
            let query = create.query.map(|q| q.to_string()).unwrap_or_default();
            Some((
                Update::CreateAs {
                    table,
                    query,
                    if_not_exists: create.if_not_exists,
                },
                sql.to_string(),
            ))
        }
        _ => None,
    })
}

/// Whether `sql` is a statement update (checked without planning).
pub(crate) fn is_update(sql: &str) -> Result<bool> {
    Ok(parse(sql)?.is_some())
}

fn writes() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(true)
        .with_allow_statements(false)
}

/// Runs `insert` (an `INSERT INTO curated.<table> …`) in the scope of `grants`; the rows written.
async fn insert(engine: &Engine, grants: &Grants, table: &str, insert: &str) -> Result<u64> {
    match grants.tables.get(&(CURATED.to_string(), table.to_string())) {
        None => {
            return Err(Error::NotFound(format!(
                "table {CATALOG}.{CURATED}.{table} not found"
            )));
        }
        Some(Some(_)) => {
            return Err(Error::PermissionDenied(format!(
                "{CURATED}.{table}: your roles read it through a row filter, so they may not write it"
            )));
        }
        Some(None) => {}
    }
    let batches = engine
        .scoped(grants)
        .await?
        .sql_with_options(insert, writes())
        .await?
        .collect()
        .await?;
    engine.invalidate_curated(table).await;
    Ok(batches.iter().map(rows_affected).sum())
}

/// Runs a statement update for `grants`: the rows written. `Ok(None)` when `sql` is a query.
pub(crate) async fn run(engine: &Engine, grants: &Grants, sql: &str) -> Result<Option<u64>> {
    let Some((update, sql)) = parse(sql)? else {
        return Ok(None);
    };
    let table = match &update {
        Update::Insert { table } | Update::CreateAs { table, .. } => table.clone(),
    };
    if !grants.may_write(CURATED, &table) {
        return Err(Error::PermissionDenied(format!(
            "your roles may not write {CURATED}.{table} (roles.<name>.write)"
        )));
    }
    let rows = match update {
        Update::Insert { table } => insert(engine, grants, &table, &sql).await?,
        Update::CreateAs {
            table,
            query,
            if_not_exists,
        } => {
            let df = engine
                .scoped(grants)
                .await?
                .sql_with_options(&query, crate::executor::read_only())
                .await?;
            let schema = df.schema().as_arrow().clone();
            if !engine.create_curated(&table, &schema).await? {
                if if_not_exists {
                    return Ok(Some(0));
                }
                return Err(Error::AlreadyExists(format!(
                    "table {CURATED}.{table} already exists"
                )));
            }
            // The new table is the creator's to fill.
            let mut scope = grants.clone();
            scope
                .tables
                .insert((CURATED.to_string(), table.clone()), None);
            let statement = format!("INSERT INTO {CATALOG}.{CURATED}.{table} {query}");
            insert(engine, &scope, &table, &statement).await?
        }
    };
    Ok(Some(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_recognised_and_only_curated_targets_pass() {
        assert!(!is_update("SELECT 1").unwrap());
        assert!(!is_update("SELEC 1").unwrap());
        assert!(is_update("INSERT INTO curated.x SELECT 1").unwrap());
        assert!(is_update("insert into Curated.X values (1)").unwrap());
        assert!(is_update("CREATE TABLE sakura.curated.x AS SELECT 1 AS a").unwrap());
        assert!(matches!(
            is_update("INSERT INTO raw.telemetry SELECT * FROM raw.telemetry"),
            Err(Error::PermissionDenied(m)) if m.contains("raw.telemetry is not writable")
        ));
        assert!(matches!(
            is_update("INSERT INTO telemetry SELECT * FROM raw.telemetry"),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            is_update("CREATE OR REPLACE TABLE curated.x AS SELECT 1"),
            Err(Error::Unimplemented(_))
        ));
        // Plain DDL is not an update: the planner refuses it as a query.
        assert!(!is_update("CREATE TABLE curated.x (a INT)").unwrap());
    }
}
