//! Statement updates: `INSERT INTO curated.x …` and `CREATE TABLE curated.x AS SELECT …`, for
//! callers whose roles may write the target. Ingest owns `raw`; SQL writes only `curated`.

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::context::SQLOptions;
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    CreateTable, Insert, ObjectName, ObjectNamePart, Statement, TableObject,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
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
    let update = matches!(
        *statement,
        Statement::Insert(_) | Statement::CreateTable(CreateTable { query: Some(_), .. })
    );
    if update && has_placeholders(sql) {
        return Err(no_parameters());
    }
    Ok(match *statement {
        Statement::Insert(insert) => {
            let TableObject::TableName(name) = &insert.table else {
                return Err(Error::Unimplemented("INSERT INTO a table function".into()));
            };
            if insert.overwrite {
                return Err(Error::InvalidArgument(
                    "INSERT OVERWRITE replaces a table's rows; SQL writes only append (INSERT \
                     INTO) or create (CREATE TABLE … AS)"
                        .into(),
                ));
            }
            check_plain_insert(&insert)?;
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
            check_plain_create(&create)?;
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

/// The refusal of parameters (`?`, `$1`) in a statement update.
pub(crate) fn no_parameters() -> Error {
    Error::Unimplemented(
        "parameters in statement updates; write the values into the statement".into(),
    )
}

/// Whether `sql` has a placeholder (`?` was numbered `$1`, `$2`, … before).
fn has_placeholders(sql: &str) -> bool {
    Tokenizer::new(&GenericDialect, sql)
        .tokenize()
        .is_ok_and(|tokens| tokens.iter().any(|t| matches!(t, Token::Placeholder(_))))
}

/// The only single statement `sql` parses to.
fn parse_one(sql: &str) -> Option<Statement> {
    let mut statements = DFParser::parse_sql(sql).ok()?;
    match (statements.pop_front(), statements.is_empty()) {
        (Some(DFStatement::Statement(s)), true) => Some(*s),
        _ => None,
    }
}

/// Refuses an INSERT with anything beyond `INSERT INTO <table> [(<columns>)] <query>`
/// (`ON CONFLICT`, `RETURNING`, `PARTITION`, `OR REPLACE`, …): it is compared with that
/// statement rebuilt from its parts, so no clause slips through unchecked.
fn check_plain_insert(insert: &Insert) -> Result<()> {
    let columns = if insert.columns.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = insert.columns.iter().map(ToString::to_string).collect();
        format!("({}) ", names.join(", "))
    };
    let source = insert
        .source
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    let plain = format!("INSERT INTO {} {columns}{source}", insert.table);
    let mut given = insert.clone();
    given.into = true;
    match parse_one(&plain) {
        Some(Statement::Insert(p)) if p == given => Ok(()),
        _ => Err(Error::InvalidArgument(
            "INSERT supports only INSERT INTO curated.<table> [(columns)] SELECT … or VALUES …; \
             remove the other clauses"
                .into(),
        )),
    }
}

/// Refuses a CREATE TABLE … AS with anything beyond `CREATE TABLE [IF NOT EXISTS] <name> AS
/// <query>` (`LOCATION`, `STORED AS`, options, partitioning, …): compared with that statement
/// rebuilt from its parts.
fn check_plain_create(create: &CreateTable) -> Result<()> {
    let query = create
        .query
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    let ine = if create.if_not_exists {
        "IF NOT EXISTS "
    } else {
        ""
    };
    let plain = format!("CREATE TABLE {ine}{} AS {query}", create.name);
    match parse_one(&plain) {
        Some(Statement::CreateTable(p)) if p == *create => Ok(()),
        _ => Err(Error::InvalidArgument(
            "CREATE TABLE … AS supports only CREATE TABLE [IF NOT EXISTS] curated.<table> AS \
             SELECT …; LOCATION, STORED AS, options and partitioning are not accepted (curated \
             tables live under the storage root)"
                .into(),
        )),
    }
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
                .sql_with_options(&query, engine::read_only())
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
        // Writes other than appending and creating are refused, with what to do instead.
        assert!(matches!(
            is_update("INSERT OVERWRITE curated.x SELECT 1 WHERE false"),
            Err(Error::InvalidArgument(m)) if m.contains("INSERT OVERWRITE")
        ));
        assert!(matches!(
            is_update("insert overwrite table curated.x select 1"),
            Err(Error::InvalidArgument(_))
        ));
        for extra in [
            "CREATE TABLE curated.x LOCATION '/tmp/x' AS SELECT 1 AS a",
            "CREATE TABLE curated.x STORED AS PARQUET LOCATION '/tmp/x' AS SELECT 1 AS a",
            "CREATE TABLE curated.x PARTITIONED BY (a) AS SELECT 1 AS a",
        ] {
            assert!(
                matches!(is_update(extra), Err(Error::InvalidArgument(m)) if m.contains("LOCATION")),
                "{extra}: {:?}",
                is_update(extra)
            );
        }
        // Refused here, or left to the planner, which cannot parse them: never run as writes.
        for extra in [
            "INSERT INTO curated.x SELECT 1 ON CONFLICT DO NOTHING",
            "INSERT INTO curated.x SELECT 1 RETURNING *",
            "INSERT OR REPLACE INTO curated.x SELECT 1",
            "REPLACE INTO curated.x SELECT 1",
        ] {
            assert!(!matches!(is_update(extra), Ok(true)), "{extra}");
        }
        // The plain forms, column list and all, still pass.
        assert!(is_update("INSERT INTO curated.x (a, b) VALUES (1, 'x'), (2, 'y')").unwrap());
        assert!(is_update("INSERT curated.x SELECT a FROM curated.y WHERE a > 1").unwrap());
        assert!(
            is_update("CREATE TABLE IF NOT EXISTS curated.x AS SELECT 1 AS a UNION ALL SELECT 2")
                .unwrap()
        );
        // Parameters are refused with the documented message, not left to fail later.
        for with_params in [
            "INSERT INTO curated.x VALUES ($1)",
            "CREATE TABLE curated.x AS SELECT $1 AS a",
        ] {
            assert!(matches!(
                is_update(with_params),
                Err(Error::Unimplemented(m)) if m.contains("parameters in statement updates")
            ));
        }
    }
}
