//! `count(DISTINCT x)` over nested values (a tuple `(a, b)`, a list, a map), accounted for
//! what it holds. DataFusion 55 keeps each distinct nested value as a one-row slice of the
//! batch it came from and charges the memory pool the whole batch for every one of them, so
//! 200,000 distinct tuples "need" gigabytes and a per-query memory limit refuses a query that
//! fits easily. This `count` keeps each value's bytes in Arrow's row format instead (what it
//! really holds, and less than one `ScalarValue` each) and charges exactly that; every other
//! form of `count` is DataFusion's own.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef};
use arrow::row::{RowConverter, SortField};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, GroupsAccumulator, ReversedUDAF,
    SetMonotonicity, Signature, StatisticsArgs,
};

/// Whether DataFusion counts distinct values of `t` through one-row slices of the batch.
fn nested(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Struct(_)
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::Map(..)
            | DataType::Union(..)
    )
}

/// DataFusion's `count`, with the distinct count of nested values kept compact.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct CompactCount {
    inner: Arc<AggregateUDF>,
}

impl CompactCount {
    pub(crate) fn udaf() -> AggregateUDF {
        AggregateUDF::new_from_impl(Self {
            inner: datafusion::functions_aggregate::count::count_udaf(),
        })
    }

    fn inner(&self) -> &dyn AggregateUDFImpl {
        self.inner.inner().as_ref()
    }
}

impl AggregateUDFImpl for CompactCount {
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
        self.inner().return_type(arg_types)
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        self.inner().return_field(arg_fields)
    }

    fn is_nullable(&self) -> bool {
        self.inner.is_nullable()
    }

    fn accumulator(&self, acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if acc_args.is_distinct
            && let [field] = acc_args.expr_fields
            && nested(field.data_type())
            && RowConverter::supports_fields(&[SortField::new(field.data_type().clone())])
        {
            return Ok(Box::new(CompactDistinct::new(field.data_type().clone())?));
        }
        self.inner().accumulator(acc_args)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner().state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner().groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        self.inner().create_groups_accumulator(args)
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner().create_sliding_accumulator(args)
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner().order_sensitivity()
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        self.inner().reverse_expr()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner().coerce_types(arg_types)
    }

    fn value_from_stats(&self, statistics_args: &StatisticsArgs) -> Option<ScalarValue> {
        self.inner().value_from_stats(statistics_args)
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.inner().default_value(data_type)
    }

    fn supports_null_handling_clause(&self) -> bool {
        self.inner().supports_null_handling_clause()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner().documentation()
    }

    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner().set_monotonicity(data_type)
    }
}

/// The distinct nested values seen, each kept as its bytes in Arrow's row format (a tuple of
/// two integers is about 20 bytes), and charged exactly that.
#[derive(Debug)]
struct CompactDistinct {
    converter: RowConverter,
    seen: HashSet<Box<[u8]>>,
    /// Bytes of the rows kept.
    held: usize,
    data_type: DataType,
}

impl CompactDistinct {
    fn new(data_type: DataType) -> Result<Self> {
        Ok(Self {
            converter: RowConverter::new(vec![SortField::new(data_type.clone())])?,
            seen: HashSet::new(),
            held: 0,
            data_type,
        })
    }
}

impl Accumulator for CompactDistinct {
    /// The distinct values as one list (the partial state other partitions merge).
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let parser = self.converter.parser();
        let rows: Vec<_> = self.seen.iter().map(|r| parser.parse(r)).collect();
        let values = match self.converter.convert_rows(rows)?.pop() {
            Some(v) => v,
            None => arrow::array::new_empty_array(&self.data_type),
        };
        let field = Arc::new(Field::new_list_field(self.data_type.clone(), true));
        let offsets = OffsetBuffer::from_lengths([values.len()]);
        let list = ListArray::try_new(field, offsets, values, None)?;
        Ok(vec![ScalarValue::List(Arc::new(list))])
    }

    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(array) = values.first() else {
            return Ok(());
        };
        let rows = self
            .converter
            .convert_columns(std::slice::from_ref(array))?;
        for i in 0..array.len() {
            if array.is_null(i) {
                continue;
            }
            let row = rows.row(i);
            if !self.seen.contains(row.as_ref()) {
                self.held += row.as_ref().len();
                self.seen.insert(row.as_ref().into());
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(lists) = states.first() else {
            return Ok(());
        };
        for inner in lists.as_list::<i32>().iter() {
            let Some(inner) = inner else {
                return internal_err!("a partial COUNT DISTINCT state is null");
            };
            self.update_batch(&[inner])?;
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(
            i64::try_from(self.seen.len()).unwrap_or(i64::MAX),
        )))
    }

    fn size(&self) -> usize {
        size_of_val(self)
            + self.seen.capacity() * (size_of::<Box<[u8]>>() + 8)
            + self.held
            + self.converter.size()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::prelude::SessionConfig;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_distinct_count_of_tuples_fits_the_memory_it_really_needs() {
        // 64 MiB for 200,000 distinct (a, b) tuples: DataFusion's own accumulator charges
        // gigabytes for them and is refused.
        let pool = TrackConsumersPool::new(
            FairSpillPool::new(64 << 20),
            NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
        );
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(std::sync::Arc::new(pool))
            .build_arc()
            .unwrap();
        let sql = "SELECT count(DISTINCT (a, b)) AS n, count(*) AS all_rows \
                   FROM (SELECT value % 1000 AS a, value AS b FROM generate_series(1, 200000))";
        let plain = datafusion::prelude::SessionContext::new_with_config_rt(
            SessionConfig::new().with_target_partitions(2),
            runtime.clone(),
        );
        let e = plain.sql(sql).await.unwrap().collect().await.unwrap_err();
        assert!(e.to_string().contains("Resources exhausted"), "{e}");

        let ours =
            crate::engine::new_session(SessionConfig::new().with_target_partitions(2), runtime);
        crate::functions::register(&ours);
        let b = ours.sql(sql).await.unwrap().collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&b)
            .unwrap()
            .to_string();
        assert!(text.contains("| 200000 | 200000 "), "{text}");
        // Other counts are DataFusion's.
        let b = ours
            .sql("SELECT count(DISTINCT value % 7), count(value) FROM generate_series(1, 100)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&b)
            .unwrap()
            .to_string();
        assert!(text.contains("| 7 ") && text.contains("| 100 "), "{text}");
    }
}
