//! A PromQL evaluator over in-memory series: the engine alert and recording rules run on.
//!
//! Parsing is the `promql-parser` crate's; evaluation is ours and follows Prometheus 3:
//! instant selectors look back 5 minutes (`(t − 5m, t]`) and honour stale markers; range
//! selectors take `(t − range, t]`; `offset` and `@` (with `start()` and `end()`); subqueries;
//! the functions, aggregations and binary operators listed in [`SUPPORTED_FUNCTIONS`] and
//! [`SUPPORTED_AGGREGATIONS`]. [`check`] rejects anything else at load time with the construct's
//! name, so a rule never evaluates to a silently wrong answer. Native histograms are not
//! supported (Prometheus 2.42 takes none over remote-write 1.0; classic buckets are).
//!
//! `__name__` is dropped by arithmetic, comparisons with `bool`, and the functions that change
//! values, at the end of the query (Prometheus 3's delayed name removal), together with
//! `__type__` and `__unit__`.

mod by_series;
mod eval;
mod functions;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use eval::{valid_label_name, Engine, EvalError};

/// A valid Prometheus metric name.
pub fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}
use promql_parser::parser;
pub use promql_parser::parser::Expr;

/// A label set, sorted by name; `__name__` included.
pub type Labels = BTreeMap<String, String>;

/// Functions the evaluator implements.
pub const SUPPORTED_FUNCTIONS: &[&str] = &[
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "predict_linear",
    "resets",
    "changes",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "last_over_time",
    "present_over_time",
    "histogram_quantile",
    "absent",
    "absent_over_time",
    "clamp",
    "clamp_min",
    "clamp_max",
    "abs",
    "ceil",
    "floor",
    "round",
    "exp",
    "ln",
    "log2",
    "log10",
    "sqrt",
    "time",
    "timestamp",
    "vector",
    "scalar",
    "label_replace",
    "label_join",
    "sort",
    "sort_desc",
];

/// Aggregations the evaluator implements.
pub const SUPPORTED_AGGREGATIONS: &[&str] = &[
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "stddev",
    "stdvar",
    "group",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];

/// One series of samples, timestamps in ms.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Labels, shared: selecting a series for a step clones a pointer, not the set.
    pub labels: Arc<Labels>,
    /// `(timestamp ms, value)`, in time order; a stale marker is [`crate::prom::stale_nan`].
    pub samples: Vec<(i64, f64)>,
}

/// An element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// Labels, shared with the series they came from until changed ([`Arc::make_mut`]).
    pub labels: Arc<Labels>,
    /// Value.
    pub value: f64,
    /// `__name__` is removed when the query's result is complete (delayed name removal, as
    /// Prometheus 3 evaluates), so `label_replace` and `by (__name__)` still see it.
    pub drop_name: bool,
}

impl Element {
    /// An element that keeps its name.
    pub fn new(labels: impl Into<Arc<Labels>>, value: f64) -> Self {
        Element {
            labels: labels.into(),
            value,
            drop_name: false,
        }
    }
}

/// A query result.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// A string.
    String(String),
    /// An instant vector.
    Vector(Vec<Element>),
    /// A range vector.
    Matrix(Vec<Series>),
}

/// Parses and checks an expression.
///
/// # Errors
/// The parser's message, or the first unsupported construct by name.
pub fn parse(text: &str) -> Result<Expr, String> {
    let e = parser::parse(text)?;
    check(&e)?;
    Ok(e)
}

/// The metric names an expression selects, in the order they appear.
pub fn metric_names(e: &Expr) -> Vec<String> {
    fn walk(e: &Expr, out: &mut Vec<String>) {
        match e {
            Expr::Aggregate(a) => {
                walk(&a.expr, out);
                if let Some(p) = &a.param {
                    walk(p, out);
                }
            }
            Expr::Unary(u) => walk(&u.expr, out),
            Expr::Binary(b) => {
                walk(&b.lhs, out);
                walk(&b.rhs, out);
            }
            Expr::Paren(p) => walk(&p.expr, out),
            Expr::Subquery(s) => walk(&s.expr, out),
            Expr::VectorSelector(v) => out.extend(v.name.clone()),
            Expr::MatrixSelector(m) => out.extend(m.vs.name.clone()),
            Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, out)),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }
    let mut out = Vec::new();
    walk(e, &mut out);
    out
}

/// Rejects constructs the evaluator does not implement, naming them.
///
/// # Errors
/// `unsupported function foo`, `unsupported aggregation limitk`, ...
pub fn check(e: &Expr) -> Result<(), String> {
    match e {
        Expr::Aggregate(a) => {
            let op = a.op.to_string();
            if !SUPPORTED_AGGREGATIONS.contains(&op.as_str()) {
                return Err(format!("unsupported aggregation {op}"));
            }
            check(&a.expr)?;
            if let Some(p) = &a.param {
                check(p)?;
            }
            Ok(())
        }
        Expr::Unary(u) => check(&u.expr),
        Expr::Binary(b) => {
            if let Some(m) = &b.modifier {
                if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
                    return Err("unsupported binary modifier fill".to_string());
                }
            }
            check(&b.lhs)?;
            check(&b.rhs)
        }
        Expr::Paren(p) => check(&p.expr),
        Expr::Subquery(s) => check(&s.expr),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::VectorSelector(_) | Expr::MatrixSelector(_) => Ok(()),
        Expr::Call(c) => {
            if !SUPPORTED_FUNCTIONS.contains(&c.func.name) {
                return Err(format!("unsupported function {}", c.func.name));
            }
            c.args.args.iter().try_for_each(|a| check(a))
        }
        Expr::Extension(_) => Err("unsupported extension expression".to_string()),
    }
}

#[cfg(test)]
mod tests;
