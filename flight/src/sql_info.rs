//! The server facts Flight SQL clients ask for (`GetSqlInfo`, `GetXdbcTypeInfo`).

use std::sync::LazyLock;

use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlSupportedTransaction, XdbcDataType, XdbcDatetimeSubcode,
};

/// Server facts clients ask for with `GetSqlInfo`.
pub(crate) static SQL_INFO: LazyLock<Result<SqlInfoData, String>> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Sakura Analytics");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, false); // curated tables are writable
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, true); // CREATE TABLE curated.… AS SELECT
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlQuotedIdentifierCase, 3_i32); // case-sensitive
    b.append(SqlInfo::SqlIdentifierCase, 2_i32); // lowercase
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.build().map_err(|e| e.to_string())
});

/// The SQL types clients may use in casts and DDL, for `GetXdbcTypeInfo`: DataFusion's names
/// for the Arrow types the tables hold.
pub(crate) static XDBC_TYPES: LazyLock<Result<XdbcTypeInfoData, String>> = LazyLock::new(|| {
    use XdbcDataType as T;
    let mut b = XdbcTypeInfoDataBuilder::new();
    // (name, type, column size, literal prefix, numeric)
    type Row = (&'static str, T, Option<i32>, Option<&'static str>, bool);
    let types: [Row; 11] = [
        ("BOOLEAN", T::XdbcBit, Some(1), None, false),
        ("TINYINT", T::XdbcTinyint, Some(3), None, true),
        ("SMALLINT", T::XdbcSmallint, Some(5), None, true),
        ("INTEGER", T::XdbcInteger, Some(10), None, true),
        ("BIGINT", T::XdbcBigint, Some(19), None, true),
        ("REAL", T::XdbcReal, Some(7), None, true),
        ("DOUBLE", T::XdbcDouble, Some(15), None, true),
        ("DECIMAL", T::XdbcDecimal, Some(38), None, true),
        ("VARCHAR", T::XdbcVarchar, None, Some("'"), false),
        ("DATE", T::XdbcDate, Some(10), Some("DATE '"), false),
        (
            "TIMESTAMP",
            T::XdbcTimestamp,
            Some(32),
            Some("TIMESTAMP '"),
            false,
        ),
    ];
    for (name, ty, size, prefix, numeric) in types {
        b.append(XdbcTypeInfo {
            type_name: name.into(),
            data_type: ty,
            column_size: size,
            literal_prefix: prefix.map(Into::into),
            literal_suffix: prefix.map(|_| "'".into()),
            create_params: (name == "DECIMAL")
                .then(|| vec!["precision".to_string(), "scale".to_string()]),
            nullable: Nullable::NullabilityNullable,
            case_sensitive: name == "VARCHAR",
            searchable: Searchable::Full,
            unsigned_attribute: numeric.then_some(false),
            fixed_prec_scale: name == "DECIMAL",
            auto_increment: numeric.then_some(false),
            local_type_name: Some(name.into()),
            minimum_scale: (name == "DECIMAL").then_some(0),
            maximum_scale: (name == "DECIMAL").then_some(38),
            sql_data_type: ty,
            datetime_subcode: match ty {
                // Subcode 1 is both YEAR and DATE in the protocol; prost keeps the first name.
                T::XdbcDate => Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
                T::XdbcTimestamp => Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
                _ => None,
            },
            num_prec_radix: numeric.then_some(10),
            interval_precision: None,
        });
    }
    b.build().map_err(|e| e.to_string())
});
