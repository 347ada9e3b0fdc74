//! Scalar functions the engine registers over DataFusion's own.
//!
//! `date_trunc`: every timestamp column of ours is `Timestamp(µs, "UTC")`. DataFusion 55
//! truncates a time-zoned timestamp to an hour, day, week, month, quarter or year value by
//! value through chrono's time-zone conversion, and builds (formats) an error message for every
//! value on the way even when it is not needed — about 100 ns a value, most of an hourly
//! dashboard query. In UTC the local time is the UTC time, so the result is exactly the one of
//! the same instant without a time zone, which DataFusion truncates arithmetically (hour, day)
//! or through naive dates. This wrapper hands the UTC column to DataFusion's `date_trunc`
//! without its time zone and puts the time zone back on the result; every other input
//! (other zones, scalars, times) goes to DataFusion's function unchanged.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use arrow::datatypes::{
    ArrowTimestampType, DataType, FieldRef, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::Result;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use datafusion::prelude::SessionContext;

/// Registers the engine's scalar and window functions with `ctx`.
pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(UtcDateTrunc::new()));
    ctx.register_udaf(crate::distinct::CompactCount::udaf());
    for f in crate::bounded::TypeBounded::udfs() {
        ctx.register_udf(f);
    }
    crate::anomaly::register(ctx);
}

/// Names of UTC DataFusion and arrow accept for a timestamp column.
fn is_utc(tz: &str) -> bool {
    matches!(
        tz,
        "UTC" | "utc" | "Z" | "+00:00" | "+00" | "+0000" | "Etc/UTC"
    )
}

/// DataFusion's `date_trunc`, with UTC columns truncated as zone-less timestamps.
#[derive(Debug, PartialEq, Eq, Hash)]
struct UtcDateTrunc {
    inner: Arc<ScalarUDF>,
}

impl UtcDateTrunc {
    fn new() -> Self {
        Self {
            inner: datafusion::functions::datetime::date_trunc(),
        }
    }
}

/// `array` (a timestamp array of `T`) with the time zone `tz`.
fn with_tz<T: ArrowTimestampType>(array: &dyn Array, tz: Option<Arc<str>>) -> ArrayRef {
    let array: PrimitiveArray<T> = array.as_primitive::<T>().clone();
    Arc::new(array.with_timezone_opt(tz))
}

/// `array` (a timestamp array of `unit`) with the time zone `tz`.
fn retag(array: &dyn Array, unit: TimeUnit, tz: Option<Arc<str>>) -> ArrayRef {
    match unit {
        TimeUnit::Second => with_tz::<TimestampSecondType>(array, tz),
        TimeUnit::Millisecond => with_tz::<TimestampMillisecondType>(array, tz),
        TimeUnit::Microsecond => with_tz::<TimestampMicrosecondType>(array, tz),
        TimeUnit::Nanosecond => with_tz::<TimestampNanosecondType>(array, tz),
    }
}

impl ScalarUDFImpl for UtcDateTrunc {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let utc = match args.args.get(1) {
            Some(ColumnarValue::Array(a)) => match a.data_type() {
                DataType::Timestamp(unit, Some(tz)) if is_utc(tz) => Some((*unit, tz.clone())),
                _ => None,
            },
            _ => None,
        };
        let Some((unit, tz)) = utc else {
            return self.inner.invoke_with_args(args);
        };
        if let Some(ColumnarValue::Array(a)) = args.args.get_mut(1) {
            *a = retag(a.as_ref(), unit, None);
        }
        // DataFusion checks the result against the promised type: promise the zone-less one.
        let zoneless = |f: &FieldRef| -> FieldRef {
            Arc::new(
                f.as_ref()
                    .clone()
                    .with_data_type(DataType::Timestamp(unit, None)),
            )
        };
        if let Some(f) = args.arg_fields.get_mut(1) {
            *f = zoneless(f);
        }
        args.return_field = zoneless(&args.return_field);
        match self.inner.invoke_with_args(args)? {
            ColumnarValue::Array(a) => Ok(ColumnarValue::Array(retag(a.as_ref(), unit, Some(tz)))),
            scalar => Ok(scalar),
        }
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::TimestampMicrosecondArray;

    /// Instants around DST changes elsewhere, leap days, month and year ends, before 1970.
    fn instants() -> Vec<i64> {
        let mut out = vec![
            -86_400_000_001,
            0,
            951_782_400_000_000 - 1, // 2000-02-28T23:59:59.999999
            951_868_800_000_123,     // 2000-03-01
            1_711_846_800_000_000,   // 2024-03-31T01:00Z (Europe's DST start)
            1_735_689_599_999_999,   // 2024-12-31T23:59:59.999999
            1_735_689_600_000_000,   // 2025-01-01
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push((x % 4_000_000_000_000_000) as i64 - 500_000_000_000_000);
        }
        out
    }

    #[tokio::test]
    async fn utc_results_equal_datafusions_for_every_granularity() {
        let ours = SessionContext::new();
        register(&ours);
        let theirs = SessionContext::new();
        let registered = ours.state().scalar_functions()["date_trunc"].clone();
        assert!(
            registered.inner().is::<UtcDateTrunc>(),
            "ours is registered"
        );
        let values = instants();
        let batch = arrow::record_batch::RecordBatch::try_from_iter([(
            "ts",
            Arc::new(TimestampMicrosecondArray::from(values.clone()).with_timezone("UTC"))
                as ArrayRef,
        )])
        .unwrap();
        for ctx in [&ours, &theirs] {
            ctx.register_batch("t", batch.clone()).unwrap();
        }
        for g in [
            "microsecond",
            "millisecond",
            "second",
            "minute",
            "hour",
            "day",
            "week",
            "month",
            "quarter",
            "year",
        ] {
            let sql = format!("SELECT date_trunc('{g}', ts) AS d FROM t");
            let a = ours.sql(&sql).await.unwrap().collect().await.unwrap();
            let b = theirs.sql(&sql).await.unwrap().collect().await.unwrap();
            assert_eq!(a, b, "date_trunc('{g}', ts)");
            assert_eq!(
                a[0].schema().field(0).data_type(),
                &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            );
        }
        // Another zone, a scalar and the alias go through DataFusion's function unchanged.
        for sql in [
            "SELECT date_trunc('day', arrow_cast(ts, 'Timestamp(Microsecond, Some(\"Europe/Berlin\"))')) FROM t",
            "SELECT datetrunc('month', TIMESTAMP '2024-05-15T10:30:00Z')",
        ] {
            let a = ours.sql(sql).await.unwrap().collect().await.unwrap();
            let b = theirs.sql(sql).await.unwrap().collect().await.unwrap();
            assert_eq!(a, b, "{sql}");
        }
    }
}
