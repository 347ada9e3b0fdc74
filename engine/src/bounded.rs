//! What one expression may allocate. DataFusion's memory pool accounts operators (sorts,
//! aggregations, joins), not the values a scalar function builds: `repeat('x', 1000000000)`
//! allocates a gigabyte in one call, outside any limit. So every call that can build a value
//! larger than its inputs is checked against a cap — the bytes one expression may produce for
//! one batch — by an analyzer rule that runs on every plan of the session:
//!
//! - functions whose output is not bounded by their inputs (`repeat`, `lpad`, `rpad`,
//!   `replace`, `regexp_replace`, `array_repeat`, `array_resize`, `range`, `generate_series`)
//!   are wrapped so that the size of their result is estimated from the arguments *before* the
//!   call, and refused above the cap;
//! - functions and operators whose output is at most a small multiple of their inputs
//!   (`||`, `concat`, `make_array`, `struct`, `encode`, …) are checked *after* the call, so that
//!   chaining them cannot double a value past the cap (each step allocates at most a multiple of
//!   a value that was under it). The check also counts the arrays a nested value is made of, so
//!   a `struct` of `struct`s that shares one child many times over cannot grow exponentially.
//!
//! A refusal is `ResourcesExhausted`, which the serving layer answers with `RESOURCE_EXHAUSTED`.

use std::sync::Arc;

use arrow::array::{Array, ArrayData, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef, IntervalMonthDayNano};
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue, exec_datafusion_err, resources_datafusion_err};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawDictionaryExpr};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Documentation, Expr, LogicalPlan, Operator, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// The cap when no per-query memory limit is set.
pub(crate) const DEFAULT_VALUE_CAP: usize = 1 << 30;

/// Most arrays one value may be made of (a nested `struct`/list counts each child).
const MAX_NODES: usize = 4_096;

/// How the result size of an amplifying function is estimated from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Estimate {
    /// `repeat(s, n)`: `len(s) × n`.
    Repeat,
    /// `lpad(s, n [, fill])`, `rpad`: `n` characters of up to 4 bytes.
    Pad,
    /// `replace(s, from, to)`: every occurrence of `from` (each character when it is empty)
    /// becomes `to`.
    Replace,
    /// `regexp_replace(s, pattern, replacement [, flags])`: a match at every position, each
    /// replaced (back-references included) by at most the replacement and the whole string.
    RegexpReplace,
    /// `array_repeat(element, n)`: `n` copies of the element.
    ArrayRepeat,
    /// `array_resize(list, n [, value])`: `n` elements.
    ArrayResize,
    /// `range(start, stop [, step])`, `generate_series`: one 8-byte element per step.
    Range,
}

impl Estimate {
    fn of(name: &str) -> Option<Self> {
        Some(match name {
            "repeat" => Self::Repeat,
            "lpad" | "rpad" => Self::Pad,
            "replace" => Self::Replace,
            "regexp_replace" => Self::RegexpReplace,
            "array_repeat" => Self::ArrayRepeat,
            "array_resize" => Self::ArrayResize,
            "range" | "generate_series" => Self::Range,
            _ => return None,
        })
    }
}

/// Functions whose result is at most a few times the size of their inputs: checked after the
/// call.
const GROWING: &[&str] = &[
    "concat",
    "concat_ws",
    "overlay",
    "encode",
    "to_hex",
    "translate",
    "upper",
    "lower",
    "initcap",
    "to_char",
    "string_to_array",
    "array_to_string",
    "make_array",
    "array_concat",
    "array_append",
    "array_prepend",
    "struct",
    "named_struct",
    "map",
    "make_map",
    "arrow_cast",
];

/// The analyzer rule that puts the checks into every plan.
#[derive(Debug)]
pub(crate) struct BoundedValues {
    cap: usize,
}

impl BoundedValues {
    /// Checks against `cap` bytes per expression and batch.
    pub(crate) fn new(cap: usize) -> Self {
        Self { cap }
    }

    fn rewrite(&self, expr: Expr) -> Result<Transformed<Expr>> {
        match expr {
            Expr::ScalarFunction(ScalarFunction { func, args }) => {
                if func.inner().is::<Bounded>() || func.inner().is::<Checked>() {
                    return Ok(Transformed::no(Expr::ScalarFunction(ScalarFunction {
                        func,
                        args,
                    })));
                }
                if let Some(estimate) = Estimate::of(func.name()) {
                    let wrapped = ScalarUDF::new_from_impl(Bounded {
                        inner: func,
                        estimate,
                        cap: self.cap,
                    });
                    return Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction {
                        func: Arc::new(wrapped),
                        args,
                    })));
                }
                let growing = GROWING.contains(&func.name());
                let call = Expr::ScalarFunction(ScalarFunction { func, args });
                Ok(if growing {
                    Transformed::yes(self.checked(call))
                } else {
                    Transformed::no(call)
                })
            }
            Expr::BinaryExpr(BinaryExpr {
                op: Operator::StringConcat,
                ..
            }) => Ok(Transformed::yes(self.checked(expr))),
            other => Ok(Transformed::no(other)),
        }
    }

    /// `expr` with its result checked (the name and type stay `expr`'s).
    fn checked(&self, expr: Expr) -> Expr {
        Expr::ScalarFunction(ScalarFunction {
            func: Arc::new(ScalarUDF::new_from_impl(Checked::new(self.cap))),
            args: vec![expr],
        })
    }
}

/// Most fields one column's type may nest (a `struct` of `struct`s counts every field of every
/// level).
const MAX_TYPE_FIELDS: usize = 10_000;

/// Counts the fields `t` nests into `budget`; an error once it runs out. Stops there, so a type
/// that shares one child many times over (a `struct` of `struct`s, each level two references
/// to the one below) costs at most the budget, not its exponential size.
fn count_fields(t: &DataType, budget: &mut usize) -> Result<()> {
    let mut fields = |fs: &mut dyn Iterator<Item = &FieldRef>| -> Result<()> {
        for f in fs {
            *budget = budget.checked_sub(1).ok_or_else(|| {
                resources_datafusion_err!(
                    "a column's type nests more than {MAX_TYPE_FIELDS} fields (structs, lists \
                     and maps of each other)"
                )
            })?;
            count_fields(f.data_type(), budget)?;
        }
        Ok(())
    };
    match t {
        DataType::Struct(fs) => fields(&mut fs.iter()),
        DataType::Union(fs, _) => fields(&mut fs.iter().map(|(_, f)| f)),
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => fields(&mut std::iter::once(f)),
        DataType::Dictionary(_, v) => count_fields(v, budget),
        DataType::RunEndEncoded(_, v) => fields(&mut std::iter::once(v)),
        _ => Ok(()),
    }
}

impl AnalyzerRule for BoundedValues {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        // Before anything compares the plan's schemas (the optimizer does after every rule,
        // walking types in full): a type of exponential size is refused here, cheaply.
        plan.apply_with_subqueries(|node| {
            for f in node.schema().fields() {
                count_fields(f.data_type(), &mut MAX_TYPE_FIELDS.clone())?;
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })?;
        plan.transform_up_with_subqueries(|node| {
            node.map_expressions(|e| e.transform_up(|e| self.rewrite(e)))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "sakura_bounded_values"
    }
}

/// Bytes of the arrays `data` is made of (children included), or an error past
/// [`MAX_NODES`] arrays.
fn data_bytes(data: &ArrayData, nodes: &mut usize) -> Result<usize> {
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err(resources_datafusion_err!(
            "a value is made of more than {MAX_NODES} nested arrays"
        ));
    }
    let mut bytes: usize = data.buffers().iter().map(|b| b.len()).sum();
    bytes += data.nulls().map_or(0, |n| n.buffer().len());
    for child in data.child_data() {
        bytes = bytes.saturating_add(data_bytes(child, nodes)?);
    }
    Ok(bytes)
}

/// Bytes of a function's result.
fn result_bytes(value: &ColumnarValue) -> Result<usize> {
    let mut nodes = 0;
    match value {
        ColumnarValue::Array(a) => data_bytes(&a.to_data(), &mut nodes),
        ColumnarValue::Scalar(s) => match s.to_array_of_size(1) {
            Ok(a) => data_bytes(&a.to_data(), &mut nodes),
            Err(_) => Ok(s.size()),
        },
    }
}

fn over_cap(what: &str, bytes: usize, cap: usize) -> datafusion::error::DataFusionError {
    resources_datafusion_err!(
        "{what} would build {bytes} bytes of values in one batch, more than one expression may \
         ({cap} bytes: a quarter of limits.max_query_memory_mb)"
    )
}

fn check_result(what: &str, value: &ColumnarValue, cap: usize) -> Result<()> {
    let bytes = result_bytes(value)?;
    if bytes > cap {
        return Err(over_cap(what, bytes, cap));
    }
    Ok(())
}

/// One argument, row by row (a scalar stands for every row).
struct Arg<'a> {
    value: &'a ColumnarValue,
    array: Option<ArrayRef>,
}

impl<'a> Arg<'a> {
    fn new(value: &'a ColumnarValue) -> Self {
        let array = match value {
            ColumnarValue::Array(a) => Some(a.clone()),
            ColumnarValue::Scalar(_) => None,
        };
        Self { value, array }
    }

    fn scalar(&self, row: usize) -> Result<Option<ScalarValue>> {
        Ok(Some(match (&self.array, self.value) {
            (Some(a), _) => {
                if row >= a.len() || a.is_null(row) {
                    return Ok(None);
                }
                ScalarValue::try_from_array(a, row)?
            }
            (None, ColumnarValue::Scalar(s)) => s.clone(),
            (None, ColumnarValue::Array(_)) => return Ok(None),
        })
        .filter(|s| !s.is_null()))
    }

    /// The value of `row` as an integer (`None` when null or not a number).
    fn int(&self, row: usize) -> Result<Option<i128>> {
        Ok(self
            .scalar(row)?
            .and_then(|s| s.cast_to(&DataType::Int64).ok())
            .and_then(|s| match s {
                ScalarValue::Int64(v) => v.map(i128::from),
                _ => None,
            }))
    }

    /// Bytes of the value of `row` (0 when null).
    fn bytes(&self, row: usize) -> Result<usize> {
        let Some(a) = &self.array else {
            return Ok(match self.value {
                ColumnarValue::Scalar(s) if !s.is_null() => value_len(s),
                _ => 0,
            });
        };
        if row >= a.len() || a.is_null(row) {
            return Ok(0);
        }
        Ok(match a.data_type() {
            DataType::Utf8 => a.as_string::<i32>().value(row).len(),
            DataType::LargeUtf8 => a.as_string::<i64>().value(row).len(),
            DataType::Utf8View => a.as_string_view().value(row).len(),
            DataType::Binary => a.as_binary::<i32>().value(row).len(),
            DataType::LargeBinary => a.as_binary::<i64>().value(row).len(),
            DataType::BinaryView => a.as_binary_view().value(row).len(),
            _ => {
                let mut nodes = 0;
                data_bytes(&a.slice(row, 1).to_data(), &mut nodes)?
            }
        })
    }
}

/// Bytes of a scalar's value (its payload, not the enum).
fn value_len(s: &ScalarValue) -> usize {
    match s {
        ScalarValue::Utf8(Some(v))
        | ScalarValue::LargeUtf8(Some(v))
        | ScalarValue::Utf8View(Some(v)) => v.len(),
        ScalarValue::Binary(Some(v))
        | ScalarValue::LargeBinary(Some(v))
        | ScalarValue::BinaryView(Some(v))
        | ScalarValue::FixedSizeBinary(_, Some(v)) => v.len(),
        other => other.size(),
    }
}

/// The least duration of one step of an interval, in nanoseconds (a month is at least 28
/// days).
fn interval_nanos(i: IntervalMonthDayNano) -> i128 {
    const DAY: i128 = 86_400_000_000_000;
    (i128::from(i.months) * 28 * DAY + i128::from(i.days) * DAY + i128::from(i.nanoseconds)).abs()
}

/// `value` as nanoseconds since the epoch, for a date or timestamp.
fn instant_nanos(value: &ScalarValue) -> Option<i128> {
    Some(match value {
        ScalarValue::Date32(Some(d)) => i128::from(*d) * 86_400_000_000_000,
        ScalarValue::Date64(Some(ms)) => i128::from(*ms) * 1_000_000,
        ScalarValue::TimestampSecond(Some(v), _) => i128::from(*v) * 1_000_000_000,
        ScalarValue::TimestampMillisecond(Some(v), _) => i128::from(*v) * 1_000_000,
        ScalarValue::TimestampMicrosecond(Some(v), _) => i128::from(*v) * 1_000,
        ScalarValue::TimestampNanosecond(Some(v), _) => i128::from(*v),
        _ => return None,
    })
}

/// Elements `range(start, stop, step)` has for one row (`None` when any is null).
fn range_len(args: &[Arg<'_>], row: usize) -> Result<Option<i128>> {
    match args {
        [stop] => Ok(stop.int(row)?.map(|n| n.max(0))),
        [start, stop, rest @ ..] => {
            let (Some(a), Some(b)) = (start.scalar(row)?, stop.scalar(row)?) else {
                return Ok(None);
            };
            let step = match rest.first() {
                Some(s) => match s.scalar(row)? {
                    Some(v) => Some(v),
                    None => return Ok(None),
                },
                None => None,
            };
            let (span, step) = match (instant_nanos(&a), instant_nanos(&b)) {
                (Some(a), Some(b)) => {
                    let step = match step {
                        Some(ScalarValue::IntervalMonthDayNano(Some(i))) => interval_nanos(i),
                        Some(ScalarValue::IntervalDayTime(Some(i))) => {
                            (i128::from(i.days) * 86_400_000 + i128::from(i.milliseconds)).abs()
                                * 1_000_000
                        }
                        Some(ScalarValue::IntervalYearMonth(Some(m))) => {
                            interval_nanos(IntervalMonthDayNano::new(m, 0, 0))
                        }
                        _ => 86_400_000_000_000,
                    };
                    ((b - a).abs(), step)
                }
                _ => {
                    let a = Arg::new(&ColumnarValue::Scalar(a)).int(0)?;
                    let b = Arg::new(&ColumnarValue::Scalar(b)).int(0)?;
                    let step = match step {
                        Some(s) => Arg::new(&ColumnarValue::Scalar(s)).int(0)?.unwrap_or(1),
                        None => 1,
                    };
                    let (Some(a), Some(b)) = (a, b) else {
                        return Ok(None);
                    };
                    ((b - a).abs(), step.abs())
                }
            };
            Ok(Some(span / step.max(1) + 1))
        }
        [] => Ok(None),
    }
}

impl Estimate {
    /// An upper bound of the bytes the call's result holds.
    fn bytes(self, args: &[ColumnarValue], rows: usize) -> Result<u128> {
        let args: Vec<Arg<'_>> = args.iter().map(Arg::new).collect();
        let arg = |i: usize| -> Result<&Arg<'_>> {
            args.get(i)
                .ok_or_else(|| exec_datafusion_err!("missing argument {i}"))
        };
        let mut total: u128 = 0;
        for row in 0..rows.max(1) {
            let n = |i: usize| -> Result<u128> {
                Ok(arg(i)?
                    .int(row)?
                    .map_or(0, |n| u128::try_from(n.max(0)).unwrap_or(0)))
            };
            let len = |i: usize| -> Result<u128> { Ok(arg(i)?.bytes(row)? as u128) };
            let row_bytes = match self {
                Self::Repeat => len(0)? * n(1)?,
                Self::Pad => 4 * n(1)? + len(0)?,
                Self::Replace => {
                    let (s, from, to) = (len(0)?, len(1)?, len(2)?);
                    s + (s / from.max(1) + 1) * to
                }
                Self::RegexpReplace => 2 * (len(0)? + 1) * (len(2)? + 1),
                Self::ArrayRepeat => (len(0)? + 8) * n(1)?,
                Self::ArrayResize => {
                    // The list's elements are about its size over its length; the fill value
                    // is one element.
                    let list = len(0)?;
                    let per = args
                        .first()
                        .and_then(|a| a.array.as_ref())
                        .and_then(|a| match a.data_type() {
                            DataType::List(_) => Some(a.as_list::<i32>().value_length(row)),
                            DataType::LargeList(_) => {
                                i32::try_from(a.as_list::<i64>().value_length(row)).ok()
                            }
                            _ => None,
                        })
                        .map_or(list, |l| list / u128::try_from(l.max(1)).unwrap_or(1));
                    let fill = if args.len() > 2 { len(2)? } else { 0 };
                    (per.max(fill) + 8) * n(1)? + list
                }
                Self::Range => {
                    let count = range_len(&args, row)?.unwrap_or(0);
                    u128::try_from(count.max(0)).unwrap_or(0) * 8
                }
            };
            total = total.saturating_add(row_bytes);
        }
        Ok(total)
    }
}

/// An amplifying function with its result estimated before the call and checked after it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    estimate: Estimate,
    cap: usize,
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        #[expect(deprecated)]
        self.inner.display_name(args)
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.schema_name(args)
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

    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = if args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)))
        {
            1
        } else {
            args.number_rows
        };
        let estimate = self.estimate.bytes(&args.args, rows)?;
        let cap = self.cap;
        if estimate > cap as u128 {
            return Err(over_cap(
                self.name(),
                usize::try_from(estimate).unwrap_or(usize::MAX),
                cap,
            ));
        }
        let out = self.inner.invoke_with_args(args)?;
        check_result(self.name(), &out, cap)?;
        Ok(out)
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.inner.evaluate_bounds(input)
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

/// A function that builds a nested type from its arguments' types (`struct`, `named_struct`,
/// `map`), with the type's size checked where the planner asks for it — before it plans the
/// next level on top. A `struct` of `struct`s each holding the level below twice doubles the
/// type per level, and DataFusion hashes and compares types in full while planning (seconds at
/// 22 levels, hours at 30); the check stops it at [`MAX_TYPE_FIELDS`].
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct TypeBounded {
    inner: Arc<ScalarUDF>,
}

impl TypeBounded {
    /// The type-building functions, wrapped (registered over DataFusion's by name).
    pub(crate) fn udfs() -> Vec<ScalarUDF> {
        [
            datafusion::functions::core::r#struct(),
            datafusion::functions::core::named_struct(),
            datafusion::functions_nested::map::map_udf(),
        ]
        .into_iter()
        .map(|inner| ScalarUDF::new_from_impl(Self { inner }))
        .collect()
    }

    fn wrap(inner: Arc<ScalarUDF>) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self { inner }))
    }
}

impl ScalarUDFImpl for TypeBounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        #[expect(deprecated)]
        self.inner.display_name(args)
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let field = self.inner.return_field_from_args(args)?;
        count_fields(field.data_type(), &mut MAX_TYPE_FIELDS.clone())?;
        Ok(field)
    }

    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.inner.invoke_with_args(args)
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// Plans the literal forms of the type-building functions (`(a, b)`, `{'k': v}`,
/// `MAP {k: v}`) with [`TypeBounded`] ones; DataFusion's own planners name its functions
/// directly, not through the session's registry. (Every place DataFusion 55 builds them:
/// `core/planner.rs` and `functions-nested/src/planner.rs`.)
#[derive(Debug)]
pub(crate) struct BoundedLiterals;

impl ExprPlanner for BoundedLiterals {
    fn plan_dictionary_literal(
        &self,
        expr: RawDictionaryExpr,
        _schema: &DFSchema,
    ) -> Result<PlannerResult<RawDictionaryExpr>> {
        let mut args = Vec::with_capacity(expr.keys.len() * 2);
        for (k, v) in expr.keys.into_iter().zip(expr.values) {
            args.push(k);
            args.push(v);
        }
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(
                TypeBounded::wrap(datafusion::functions::core::named_struct()),
                args,
            ),
        )))
    }

    fn plan_struct_literal(
        &self,
        args: Vec<Expr>,
        is_named_struct: bool,
    ) -> Result<PlannerResult<Vec<Expr>>> {
        let inner = if is_named_struct {
            datafusion::functions::core::named_struct()
        } else {
            datafusion::functions::core::r#struct()
        };
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(TypeBounded::wrap(inner), args),
        )))
    }

    fn plan_make_map(&self, args: Vec<Expr>) -> Result<PlannerResult<Vec<Expr>>> {
        if !args.len().is_multiple_of(2) {
            return Ok(PlannerResult::Original(args));
        }
        let (keys, values): (Vec<_>, Vec<_>) =
            args.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        let keys = datafusion::functions_nested::expr_fn::make_array(
            keys.into_iter().map(|(_, e)| e).collect(),
        );
        let values = datafusion::functions_nested::expr_fn::make_array(
            values.into_iter().map(|(_, e)| e).collect(),
        );
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(
                TypeBounded::wrap(datafusion::functions_nested::map::map_udf()),
                vec![keys, values],
            ),
        )))
    }
}

/// `checked(expr)`: `expr`'s value, refused when larger than the cap. Invisible in names and
/// types: it answers with its argument's.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Checked {
    signature: Signature,
    cap: usize,
}

impl Checked {
    fn new(cap: usize) -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
            cap,
        }
    }
}

impl ScalarUDFImpl for Checked {
    fn name(&self) -> &str {
        "sakura_checked"
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        Ok(args.first().map(ToString::to_string).unwrap_or_default())
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        match args.first() {
            Some(e) => Ok(e.schema_name().to_string()),
            None => Ok(String::new()),
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        arg_types
            .first()
            .cloned()
            .ok_or_else(|| exec_datafusion_err!("sakura_checked takes one argument"))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        args.arg_fields
            .first()
            .cloned()
            .ok_or_else(|| exec_datafusion_err!("sakura_checked takes one argument"))
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let value = args
            .args
            .pop()
            .ok_or_else(|| exec_datafusion_err!("sakura_checked takes one argument"))?;
        check_result("an expression", &value, self.cap)?;
        Ok(value)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        Ok(inputs
            .first()
            .map_or(SortProperties::Unordered, |p| p.sort_properties))
    }

    fn preserves_lex_ordering(&self, _inputs: &[ExprProperties]) -> Result<bool> {
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn session(cap: usize) -> SessionContext {
        let scope = crate::engine::SessionScope {
            value_cap: cap,
            all_settings: true,
        };
        let ctx = crate::engine::new_session(
            datafusion::prelude::SessionConfig::new().with_extension(Arc::new(scope)),
            Arc::new(datafusion::execution::runtime_env::RuntimeEnv::default()),
        );
        crate::functions::register(&ctx);
        ctx
    }

    async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<arrow::array::RecordBatch>> {
        ctx.sql(sql).await?.collect().await
    }

    fn refused(r: Result<Vec<arrow::array::RecordBatch>>) -> String {
        let e = r.expect_err("the query should be refused");
        assert!(
            matches!(
                e.find_root(),
                datafusion::error::DataFusionError::ResourcesExhausted(_)
            ),
            "{e}"
        );
        e.to_string()
    }

    #[tokio::test]
    async fn amplifying_calls_are_refused_before_they_allocate() {
        let ctx = session(64 << 20).await;
        for sql in [
            "SELECT length(repeat('x', 1000000000))",
            "SELECT length(lpad('x', 1000000000))",
            "SELECT length(rpad('x', 1000000000, 'ab'))",
            "SELECT length(replace(repeat('a', 100000), 'a', repeat('b', 1000)))",
            "SELECT length(regexp_replace(repeat('a', 100000), '', repeat('b', 1000), 'g'))",
            "SELECT cardinality(array_repeat(1, 100000000))",
            "SELECT cardinality(array_resize([1], 100000000))",
            "SELECT cardinality(range(1000000000))",
            "SELECT cardinality(generate_series(1, 1000000000))",
            "SELECT cardinality(range(TIMESTAMP '1970-01-01', TIMESTAMP '2100-01-01', INTERVAL '1 second'))",
            // Over the rows of a batch, not only one value.
            "SELECT sum(length(repeat('x', 20000 + value % 2))) FROM generate_series(1, 8192)",
        ] {
            let e = refused(run(&ctx, sql).await);
            assert!(
                e.contains("a quarter of limits.max_query_memory_mb"),
                "{sql}: {e}"
            );
        }
        // Under the cap they answer as DataFusion does.
        let b = run(
            &ctx,
            "SELECT length(repeat('ab', 1000)) AS n, cardinality(range(5)) AS r",
        )
        .await
        .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&b)
            .unwrap()
            .to_string();
        assert!(text.contains("| 2000 | 5 "), "{text}");
    }

    #[tokio::test]
    async fn growing_chains_stop_at_the_cap_and_names_do_not_change() {
        let ctx = session(8 << 20).await;
        // Each step doubles: the check after each one stops the chain near the cap.
        let mut doubling = String::from("WITH s0 AS (SELECT repeat('x', 1000000) AS s)");
        for i in 1..40 {
            doubling.push_str(&format!(", s{i} AS (SELECT s || s AS s FROM s{})", i - 1));
        }
        doubling.push_str(" SELECT length(s) FROM s39");
        refused(run(&ctx, &doubling).await);
        refused(
            run(
                &ctx,
                "SELECT length(concat(repeat('x', 5000000), repeat('x', 5000000)))",
            )
            .await,
        );
        // Structs sharing one child at every level: 2^k fields after k levels. Refused while
        // planned, in milliseconds (DataFusion alone plans 22 levels in seconds, 30 in hours),
        // whichever way the struct is written; at 12 levels the value's arrays are too many.
        for (levels, build) in [
            (12, "named_struct('a', s, 'b', s)"),
            (30, "named_struct('a', s, 'b', s)"),
            (30, "struct(s, s)"),
            (30, "(s, s)"),
            (30, "{'a': s, 'b': s}"),
            (30, "MAP {'a': (s, s)}"),
        ] {
            let mut shared = String::from("WITH t0 AS (SELECT named_struct('x', 1) AS s)");
            for i in 1..levels {
                shared.push_str(&format!(", t{i} AS (SELECT {build} AS s FROM t{})", i - 1));
            }
            shared.push_str(&format!(" SELECT s FROM t{}", levels - 1));
            let started = std::time::Instant::now();
            let e = refused(run(&ctx, &shared).await);
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "{build}: {levels} levels took {:?}",
                started.elapsed()
            );
            assert!(e.contains("fields") || e.contains("arrays"), "{build}: {e}");
        }
        // Names, types and values are those without the checks.
        let df = ctx
            .sql("SELECT 'a' || 'b', concat('a', 'b'), upper('x')")
            .await
            .unwrap();
        let names: Vec<String> = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "Utf8(\"a\") || Utf8(\"b\")",
                "concat(Utf8(\"a\"),Utf8(\"b\"))",
                "upper(Utf8(\"x\"))"
            ]
        );
        let b = df.collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&b)
            .unwrap()
            .to_string();
        assert!(text.contains("| ab ") && text.contains("| X "), "{text}");
    }
}
