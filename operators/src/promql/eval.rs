//! Evaluation of an expression at one timestamp; range queries evaluate each step.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use promql_parser::label::Matchers;
use promql_parser::parser::{
    AggregateExpr, AtModifier, BinaryExpr, Expr, LabelModifier, Offset, SubqueryExpr, VectorMatchCardinality,
    VectorSelector,
};

use super::{functions, Element, Labels, Series, Value};
use crate::prom::STALE_NAN_BITS;

/// An evaluation error, with Prometheus's wording where it has one.
pub type EvalError = String;

pub(crate) const NAME: &str = "__name__";

/// Whether a value is the stale marker.
pub(crate) fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

pub(crate) fn dur_ms(d: &Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn offset_ms(o: Option<&Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => dur_ms(d),
        Some(Offset::Neg(d)) => -dur_ms(d),
    }
}

/// The evaluator over a set of series.
pub struct Engine<'a> {
    pub(crate) series: &'a [Series],
    /// Lookback of instant selectors, ms (5 minutes).
    pub lookback_ms: i64,
    /// Step of subqueries without one, ms (1 minute, as Prometheus's default evaluation
    /// interval).
    pub default_subquery_step_ms: i64,
    /// Prometheus 2 window bounds: range selectors read `[t − range, t]` and the lookback
    /// includes `t − 5m`; Prometheus 3 (the default) excludes the left end.
    pub closed_ranges: bool,
    /// Threads a wide range query may use (1, the default: the caller's only).
    pub threads: usize,
    /// Start and end of the query, for `@ start()` and `@ end()`.
    start: i64,
    end: i64,
    /// Series indexed by metric name.
    by_name: std::borrow::Cow<'a, HashMap<String, Vec<usize>>>,
    /// Series indexed by (label, value), when the caller maintains it.
    postings: Option<&'a HashMap<(String, String), Vec<usize>>>,
    /// What each selector selected, by its text: the steps of a range query select the same
    /// series.
    selected: std::cell::RefCell<HashMap<String, std::rc::Rc<[usize]>>>,
    /// During a range query, the aggregations inside it evaluated series by series (by the
    /// address of their node), and the query's steps.
    pub(crate) by_series: HashMap<usize, super::by_series::Grid>,
    range_steps: Vec<i64>,
}

impl<'a> Engine<'a> {
    /// An engine over `series` (samples sorted by time).
    pub fn new(series: &'a [Series]) -> Self {
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in series.iter().enumerate() {
            by_name
                .entry(s.labels.get(NAME).cloned().unwrap_or_default())
                .or_default()
                .push(i);
        }
        Self::build(series, std::borrow::Cow::Owned(by_name), None)
    }

    fn build(
        series: &'a [Series],
        by_name: std::borrow::Cow<'a, HashMap<String, Vec<usize>>>,
        postings: Option<&'a HashMap<(String, String), Vec<usize>>>,
    ) -> Self {
        Engine {
            series,
            lookback_ms: 300_000,
            default_subquery_step_ms: 60_000,
            closed_ranges: false,
            threads: 1,
            start: 0,
            end: 0,
            by_name,
            postings,
            selected: std::cell::RefCell::new(HashMap::new()),
            by_series: HashMap::new(),
            range_steps: Vec::new(),
        }
    }

    /// An engine over `series` with indexes the caller maintains: by metric name, and by
    /// (label, value) for the selective equality matchers.
    pub fn with_index(
        series: &'a [Series],
        by_name: &'a HashMap<String, Vec<usize>>,
        postings: &'a HashMap<(String, String), Vec<usize>>,
    ) -> Self {
        Self::build(series, std::borrow::Cow::Borrowed(by_name), Some(postings))
    }

    /// An instant query at `t` ms.
    ///
    /// # Errors
    /// When evaluation fails (Prometheus's errors: duplicate label sets, many-to-many matching).
    pub fn instant(&mut self, e: &Expr, t: i64) -> Result<Value, EvalError> {
        self.start = t;
        self.end = t;
        match self.eval(e, t)? {
            Value::Vector(v) => finalize(v).map(Value::Vector),
            other => Ok(other),
        }
    }

    /// A range query: `[start, end]` every `step` ms; one series per label set.
    ///
    /// # Errors
    /// As [`Engine::instant`]; also when the expression is not a scalar or an instant vector.
    pub fn range(&mut self, e: &Expr, start: i64, end: i64, step: i64) -> Result<Vec<Series>, EvalError> {
        self.start = start;
        self.end = end;
        let steps = std::iter::successors(Some(start), |t| if step > 0 { t.checked_add(step) } else { None })
            .take_while(|t| *t <= end);
        let steps: Vec<i64> = steps.collect();
        if let Some(out) = self.range_by_series(e, &steps) {
            return Ok(out);
        }
        // Otherwise its aggregations that can be are evaluated series by series first, and
        // the rest step by step over their results.
        self.materialize(e, &steps);
        self.range_steps.clone_from(&steps);
        let out = self.eval_steps(e, steps.into_iter(), "range queries");
        self.by_series.clear();
        self.range_steps.clear();
        out
    }

    /// A range query evaluated step by step only (what [`Engine::range`] answers without its
    /// series-by-series path), for the tests that compare the two.
    #[cfg(test)]
    pub(crate) fn range_step_by_step(
        &mut self,
        e: &Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Vec<Series>, EvalError> {
        self.start = start;
        self.end = end;
        let steps = std::iter::successors(Some(start), |t| if step > 0 { t.checked_add(step) } else { None })
            .take_while(|t| *t <= end);
        self.eval_steps(e, steps, "range queries")
    }

    /// Evaluates `e` at each timestamp, one series per label set (names removed as at the end
    /// of a query): range queries and subqueries.
    fn eval_steps(&mut self, e: &Expr, steps: impl Iterator<Item = i64>, what: &str) -> Result<Vec<Series>, EvalError> {
        let mut out: Vec<Series> = Vec::new();
        let mut index: HashMap<std::sync::Arc<Labels>, usize> = HashMap::new();
        for t in steps {
            let elems = match self.eval(e, t)? {
                Value::Scalar(x) => vec![Element::new(Labels::new(), x)],
                Value::Vector(v) => finalize(v)?,
                Value::String(_) | Value::Matrix(_) => {
                    return Err(format!("{what} need a scalar or instant-vector expression"));
                }
            };
            for el in elems {
                let i = *index.entry(el.labels.clone()).or_insert_with(|| {
                    out.push(Series {
                        labels: el.labels.clone(),
                        samples: Vec::new(),
                    });
                    out.len() - 1
                });
                out[i].samples.push((t, el.value));
            }
        }
        Ok(out)
    }

    pub(crate) fn at_ms(&self, at: Option<&AtModifier>) -> Option<i64> {
        at.map(|a| match a {
            AtModifier::Start => self.start,
            AtModifier::End => self.end,
            AtModifier::At(st) => match st.duration_since(UNIX_EPOCH) {
                Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
                Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
            },
        })
    }

    /// The series a selector's matchers select, computed once per selector and engine.
    pub(crate) fn select(&self, vs: &VectorSelector) -> std::rc::Rc<[usize]> {
        let key = vs.to_string();
        if let Some(hit) = self.selected.borrow().get(&key) {
            return hit.clone();
        }
        // The shortest list among the name's and the equality matchers' postings.
        let mut best: Option<&[usize]> = vs
            .name
            .as_ref()
            .map(|n| self.by_name.get(n.as_str()).map_or(&[][..], Vec::as_slice));
        if let Some(postings) = self.postings {
            if vs.matchers.or_matchers.is_empty() {
                for m in &vs.matchers.matchers {
                    if matches!(m.op, promql_parser::label::MatchOp::Equal) && !m.value.is_empty() {
                        let list = postings
                            .get(&(m.name.clone(), m.value.clone()))
                            .map_or(&[][..], Vec::as_slice);
                        if best.is_none_or(|b| list.len() < b.len()) {
                            best = Some(list);
                        }
                    }
                }
            }
        }
        let series = self.series;
        let found: std::rc::Rc<[usize]> = match best {
            Some(list) => list
                .iter()
                .copied()
                .filter(|i| matches(&vs.matchers, &series[*i].labels))
                .collect(),
            None => (0..series.len())
                .filter(|i| matches(&vs.matchers, &series[*i].labels))
                .collect(),
        };
        self.selected.borrow_mut().insert(key, found.clone());
        found
    }

    /// Reference time of a selector evaluated at `t`.
    pub(crate) fn ref_time(&self, vs: &VectorSelector, t: i64) -> i64 {
        self.at_ms(vs.at.as_ref())
            .unwrap_or(t)
            .saturating_sub(offset_ms(vs.offset.as_ref()))
    }

    /// Instant vector of a selector at `t`, with each sample's own timestamp.
    pub(crate) fn instant_selector(&self, vs: &VectorSelector, t: i64) -> Vec<(Element, i64)> {
        let rt = self.ref_time(vs, t);
        let mut out = Vec::new();
        for &i in self.select(vs).iter() {
            let s = &self.series[i];
            let idx = upto(&s.samples, rt);
            if idx == 0 {
                continue;
            }
            let (ts, v) = s.samples[idx - 1];
            let too_old = if self.closed_ranges {
                ts < rt - self.lookback_ms
            } else {
                ts <= rt - self.lookback_ms
            };
            if too_old || is_stale(v) {
                continue;
            }
            out.push((Element::new(s.labels.clone(), v), ts));
        }
        out
    }

    /// Range of a selector at `t`: samples in `(rt − range, rt]`, without stale markers.
    pub(crate) fn matrix_selector(&self, vs: &VectorSelector, range_ms: i64, t: i64) -> Vec<Series> {
        let rt = self.ref_time(vs, t);
        let mut out = Vec::new();
        for &i in self.select(vs).iter() {
            let s = &self.series[i];
            let hi = upto(&s.samples, rt);
            // The window's samples are copied below anyway: walking back to its start costs no
            // more than that, and less than a second search over the whole series.
            let inside = |ts: i64| {
                if self.closed_ranges {
                    ts >= rt.saturating_sub(range_ms)
                } else {
                    ts > rt.saturating_sub(range_ms)
                }
            };
            let lo = hi - s.samples[..hi].iter().rev().take_while(|(ts, _)| inside(*ts)).count();
            let samples: Vec<(i64, f64)> = s.samples[lo..hi]
                .iter()
                .copied()
                .filter(|(_, v)| !is_stale(*v))
                .collect();
            if samples.is_empty() {
                continue;
            }
            out.push(Series {
                labels: s.labels.clone(),
                samples,
            });
        }
        out
    }

    /// A subquery's matrix at `t`.
    pub(crate) fn subquery(&mut self, sq: &SubqueryExpr, t: i64) -> Result<Vec<Series>, EvalError> {
        let step = sq.step.as_ref().map_or(self.default_subquery_step_ms, dur_ms).max(1);
        let rt = self
            .at_ms(sq.at.as_ref())
            .unwrap_or(t)
            .saturating_sub(offset_ms(sq.offset.as_ref()));
        let range = dur_ms(&sq.range);
        let mint = rt.saturating_sub(range);
        let mut ts = mint.div_euclid(step) * step;
        if ts < mint || (ts == mint && !self.closed_ranges) {
            ts += step;
        }
        let steps = std::iter::successors(Some(ts), |t| t.checked_add(step)).take_while(|t| *t <= rt);
        self.eval_steps(&sq.expr, steps, "subqueries")
    }

    /// Evaluates `e` at `t` ms.
    pub(crate) fn eval(&mut self, e: &Expr, t: i64) -> Result<Value, EvalError> {
        if !self.by_series.is_empty() {
            if let (Some(grid), Ok(k)) = (
                self.by_series.get(&(std::ptr::from_ref(e) as usize)),
                self.range_steps.binary_search(&t),
            ) {
                return Ok(Value::Vector(grid.vector_at(k)));
            }
        }
        match e {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Value::Scalar(x) => Ok(Value::Scalar(-x)),
                Value::Vector(v) => {
                    let v = v
                        .into_iter()
                        .map(|mut el| {
                            el.value = -el.value;
                            el.drop_name = true;
                            el
                        })
                        .collect();
                    check_unique(v).map(Value::Vector)
                }
                _ => Err("unary minus needs a scalar or an instant vector".into()),
            },
            Expr::VectorSelector(vs) => Ok(Value::Vector(
                self.instant_selector(vs, t).into_iter().map(|(el, _)| el).collect(),
            )),
            Expr::MatrixSelector(ms) => Ok(Value::Matrix(self.matrix_selector(&ms.vs, dur_ms(&ms.range), t))),
            Expr::Subquery(sq) => Ok(Value::Matrix(self.subquery(sq, t)?)),
            Expr::Call(c) => functions::call(self, c, t),
            Expr::Aggregate(a) => self.aggregate(a, t),
            Expr::Binary(b) => self.binary(b, t),
            Expr::Extension(_) => Err("unsupported extension expression".into()),
        }
    }

    pub(crate) fn eval_scalar(&mut self, e: &Expr, t: i64) -> Result<f64, EvalError> {
        match self.eval(e, t)? {
            Value::Scalar(x) => Ok(x),
            _ => Err("expected a scalar".into()),
        }
    }

    pub(crate) fn eval_vector(&mut self, e: &Expr, t: i64) -> Result<Vec<Element>, EvalError> {
        match self.eval(e, t)? {
            Value::Vector(v) => Ok(v),
            _ => Err("expected an instant vector".into()),
        }
    }

    fn aggregate(&mut self, a: &AggregateExpr, t: i64) -> Result<Value, EvalError> {
        let op = a.op.to_string();
        let param = match &a.param {
            Some(p) => Some(self.eval(p, t)?),
            None => None,
        };
        let input = self.eval_vector(&a.expr, t)?;
        aggregate(&op, param, input, a.modifier.as_ref()).map(Value::Vector)
    }

    fn binary(&mut self, b: &BinaryExpr, t: i64) -> Result<Value, EvalError> {
        let op = b.op.to_string();
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let lhs = self.eval(&b.lhs, t)?;
        let rhs = self.eval(&b.rhs, t)?;
        let comparison = b.op.is_comparison_operator();
        match (lhs, rhs) {
            (Value::Scalar(l), Value::Scalar(r)) => {
                let (v, keep) = elem_op(&op, l, r)?;
                if comparison {
                    if !return_bool {
                        return Err("comparisons between scalars must use the bool modifier".into());
                    }
                    return Ok(Value::Scalar(if keep { 1.0 } else { 0.0 }));
                }
                Ok(Value::Scalar(v))
            }
            (Value::Vector(v), Value::Scalar(s)) => vector_scalar(&op, v, s, false, return_bool, comparison),
            (Value::Scalar(s), Value::Vector(v)) => vector_scalar(&op, v, s, true, return_bool, comparison),
            (Value::Vector(l), Value::Vector(r)) => {
                let m = b.modifier.as_ref();
                let matching = m.and_then(|m| m.matching.as_ref());
                if b.op.is_set_operator() {
                    return Ok(Value::Vector(set_op(&op, l, r, matching)));
                }
                let card = m.map_or(&VectorMatchCardinality::OneToOne, |m| &m.card);
                vector_vector(&op, l, r, matching, card, return_bool, comparison).map(Value::Vector)
            }
            _ => Err(format!("operator {op} needs scalars or instant vectors")),
        }
    }
}

/// How many samples are at or before `t`, galloping back from the newest end.
fn gallop_back(samples: &[(i64, f64)], t: i64) -> usize {
    let n = samples.len();
    let mut step = 1;
    let mut hi = n;
    // Invariant: samples[hi..] are all after t.
    while hi > 0 {
        let probe = hi.saturating_sub(step);
        if samples[probe].0 <= t {
            return probe + 1 + samples[probe + 1..hi].partition_point(|(ts, _)| *ts <= t);
        }
        hi = probe;
        step *= 2;
    }
    0
}

/// How many samples are at or before `t`: first a guess where `t` would be if the samples were
/// evenly spaced (they usually are: a scrape or export interval), then a gallop to the exact
/// place. In a long series that touches three or four cache lines instead of a binary search's
/// dozen, and the search is most of a wide range query's time (benches/README.md).
pub(crate) fn upto(samples: &[(i64, f64)], t: i64) -> usize {
    let n = samples.len();
    if n == 0 || t < samples[0].0 {
        return 0;
    }
    let (first, last) = (samples[0].0, samples[n - 1].0);
    if t >= last {
        return n;
    }
    // first <= t < last, so n >= 2 and the answer is within 1..n.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let guess = (((t - first) as f64 / (last - first) as f64) * (n - 1) as f64) as usize + 1;
    let g = guess.clamp(1, n - 1);
    if samples[g - 1].0 <= t {
        // Forward: samples[..lo] are at or before t.
        let (mut lo, mut step) = (g, 1);
        loop {
            let probe = lo + step - 1;
            if probe >= n {
                return lo + samples[lo..].partition_point(|(ts, _)| *ts <= t);
            }
            if samples[probe].0 > t {
                return lo + samples[lo..probe].partition_point(|(ts, _)| *ts <= t);
            }
            lo = probe + 1;
            step *= 2;
        }
    }
    gallop_back(&samples[..g - 1], t)
}

/// Whether a label set matches a selector's matchers (a missing label matches as "").
pub(crate) fn matches(m: &Matchers, labels: &Labels) -> bool {
    let all = |ms: &[promql_parser::label::Matcher]| {
        ms.iter()
            .all(|m| m.is_match(labels.get(&m.name).map_or("", String::as_str)))
    };
    if m.or_matchers.is_empty() {
        all(&m.matchers)
    } else {
        m.or_matchers.iter().any(|ms| all(ms))
    }
}

/// Removes the names marked for removal (with `__type__` and `__unit__`) and checks that the
/// label sets are still distinct.
pub(crate) fn finalize(mut v: Vec<Element>) -> Result<Vec<Element>, EvalError> {
    let mut any = false;
    for el in &mut v {
        if el.drop_name {
            let l = std::sync::Arc::make_mut(&mut el.labels);
            l.remove(NAME);
            l.remove("__type__");
            l.remove("__unit__");
            el.drop_name = false;
            any = true;
        }
    }
    if any {
        check_unique(v)
    } else {
        Ok(v)
    }
}

/// Errors when two elements share a label set, as Prometheus does after operations that
/// drop the metric name.
pub(crate) fn check_unique(v: Vec<Element>) -> Result<Vec<Element>, EvalError> {
    let mut seen = std::collections::HashSet::with_capacity(v.len());
    for el in &v {
        if !seen.insert(&el.labels) {
            return Err("vector cannot contain metrics with the same labelset".into());
        }
    }
    Ok(v)
}

/// `(value, keep)` of `l op r`; comparisons keep `l` when true.
pub(crate) fn elem_op(op: &str, l: f64, r: f64) -> Result<(f64, bool), EvalError> {
    Ok(match op {
        "+" => (l + r, true),
        "-" => (l - r, true),
        "*" => (l * r, true),
        "/" => (l / r, true),
        "%" => (l % r, true),
        "^" => (l.powf(r), true),
        "atan2" => (l.atan2(r), true),
        "==" => (l, l == r),
        "!=" => (l, l != r),
        ">" => (l, l > r),
        "<" => (l, l < r),
        ">=" => (l, l >= r),
        "<=" => (l, l <= r),
        other => return Err(format!("unsupported operator {other}")),
    })
}

fn vector_scalar(
    op: &str,
    v: Vec<Element>,
    s: f64,
    swap: bool,
    return_bool: bool,
    comparison: bool,
) -> Result<Value, EvalError> {
    let mut out = Vec::with_capacity(v.len());
    for mut el in v {
        let (l, r) = if swap { (s, el.value) } else { (el.value, s) };
        let (mut value, keep) = elem_op(op, l, r)?;
        if comparison && swap {
            value = el.value;
        }
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            continue;
        }
        if !comparison || return_bool {
            el.drop_name = true;
        }
        el.value = value;
        out.push(el);
    }
    if !comparison || return_bool {
        out = check_unique(out)?;
    }
    Ok(Value::Vector(out))
}

/// The matching signature of a label set.
fn signature(labels: &Labels, matching: Option<&LabelModifier>) -> Vec<(String, String)> {
    match matching {
        Some(LabelModifier::Include(on)) => on
            .labels
            .iter()
            .map(|n| (n.clone(), labels.get(n).cloned().unwrap_or_default()))
            .filter(|(_, v)| !v.is_empty())
            .collect(),
        Some(LabelModifier::Exclude(ign)) => labels
            .iter()
            .filter(|(k, _)| k.as_str() != NAME && !ign.labels.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        None => labels
            .iter()
            .filter(|(k, _)| k.as_str() != NAME)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn set_op(op: &str, l: Vec<Element>, r: Vec<Element>, matching: Option<&LabelModifier>) -> Vec<Element> {
    let rsigs: std::collections::HashSet<Vec<(String, String)>> =
        r.iter().map(|e| signature(&e.labels, matching)).collect();
    match op {
        "and" => l
            .into_iter()
            .filter(|e| rsigs.contains(&signature(&e.labels, matching)))
            .collect(),
        "unless" => l
            .into_iter()
            .filter(|e| !rsigs.contains(&signature(&e.labels, matching)))
            .collect(),
        _ => {
            let lsigs: std::collections::HashSet<Vec<(String, String)>> =
                l.iter().map(|e| signature(&e.labels, matching)).collect();
            let mut out = l;
            out.extend(
                r.into_iter()
                    .filter(|e| !lsigs.contains(&signature(&e.labels, matching))),
            );
            out
        }
    }
}

fn vector_vector(
    op: &str,
    l: Vec<Element>,
    r: Vec<Element>,
    matching: Option<&LabelModifier>,
    card: &VectorMatchCardinality,
    return_bool: bool,
    comparison: bool,
) -> Result<Vec<Element>, EvalError> {
    // The "one" side is indexed by signature; group_right swaps the sides.
    let (many, one, swapped) = match card {
        VectorMatchCardinality::OneToMany(_) => (r, l, true),
        _ => (l, r, false),
    };
    let mut one_by_sig: HashMap<Vec<(String, String)>, &Element> = HashMap::new();
    for e in &one {
        if one_by_sig.insert(signature(&e.labels, matching), e).is_some() {
            let side = if swapped { "left" } else { "right" };
            return Err(format!(
                "found duplicate series for the match group on the {side} hand-side of the operation: many-to-many matching not allowed: matching labels must be unique on one side"
            ));
        }
    }
    let include: Vec<String> = match card {
        VectorMatchCardinality::ManyToOne(ls) | VectorMatchCardinality::OneToMany(ls) => ls.labels.clone(),
        _ => Vec::new(),
    };
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let mut matched: std::collections::HashSet<Vec<(String, String)>> = std::collections::HashSet::new();
    let mut inserted: std::collections::HashSet<Labels> = std::collections::HashSet::new();
    let mut out = Vec::new();
    for m in many {
        let sig = signature(&m.labels, matching);
        let Some(o) = one_by_sig.get(&sig) else { continue };
        if one_to_one && !matched.insert(sig.clone()) {
            return Err(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
            );
        }
        let (vl, vr) = if swapped {
            (o.value, m.value)
        } else {
            (m.value, o.value)
        };
        let (mut value, keep) = elem_op(op, vl, vr)?;
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            continue;
        }
        let mut labels: Labels = (*m.labels).clone();
        let drop_name = m.drop_name || !comparison || return_bool;
        if one_to_one {
            match matching {
                Some(LabelModifier::Include(on)) => labels.retain(|k, _| on.labels.contains(k)),
                Some(LabelModifier::Exclude(ign)) => labels.retain(|k, _| !ign.labels.contains(k)),
                None => {}
            }
        }
        for name in &include {
            match o.labels.get(name) {
                Some(v) if !v.is_empty() => {
                    labels.insert(name.clone(), v.clone());
                }
                _ => {
                    labels.remove(name);
                }
            }
        }
        if !one_to_one && !inserted.insert(labels.clone()) {
            return Err("multiple matches for labels: grouping labels must ensure unique matches".into());
        }
        out.push(Element {
            labels: labels.into(),
            value,
            drop_name,
        });
    }
    if one_to_one {
        out = check_unique(out)?;
    }
    Ok(out)
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`, as `count_values` labels values.
pub(crate) fn format_go(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// The φ-quantile of `values` (Prometheus's `quantile`): linear interpolation between the
/// closest ranks.
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // Go sorts NaN first.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    #[allow(clippy::cast_precision_loss)]
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let (li, ui) = (lower as usize, upper as usize);
    values[li] * (1.0 - weight) + values[ui] * weight
}

/// Kahan-compensated running sum.
#[derive(Default, Clone, Copy)]
pub(crate) struct Kahan {
    sum: f64,
    c: f64,
}

impl Kahan {
    pub(crate) fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.c += (self.sum - t) + x;
        } else {
            self.c += (x - t) + self.sum;
        }
        self.sum = t;
    }

    pub(crate) fn value(self) -> f64 {
        if self.c.is_finite() {
            self.sum + self.c
        } else {
            self.sum
        }
    }
}

/// Mean of values: Kahan sum over count, or an incremental mean when the sum overflows.
pub(crate) fn mean(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let mut k = Kahan::default();
    let mut n = 0.0;
    for v in values.clone() {
        k.add(v);
        n += 1.0;
    }
    let s = k.value();
    if s.is_finite() || values.clone().any(f64::is_infinite) || values.clone().any(f64::is_nan) {
        return s / n;
    }
    let mut m = 0.0;
    let mut i = 0.0;
    for v in values {
        i += 1.0;
        m += v / i - m / i;
    }
    m
}

/// Population variance (Welford).
pub(crate) fn variance(values: impl Iterator<Item = f64>) -> f64 {
    let (mut n, mut mean, mut m2) = (0.0, 0.0, 0.0);
    for v in values {
        n += 1.0;
        let d = v - mean;
        mean += d / n;
        m2 += d * (v - mean);
    }
    m2 / n
}

/// A hash of the grouping labels of `labels` (the same pairs [`group_labels`] keeps).
pub(crate) fn group_hash(labels: &Labels, modifier: Option<&LabelModifier>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut add = |k: &String, v: &String| {
        k.hash(&mut h);
        0xffu8.hash(&mut h);
        v.hash(&mut h);
        0xffu8.hash(&mut h);
    };
    match modifier {
        None => {}
        Some(LabelModifier::Include(by)) => {
            for (k, v) in labels.iter().filter(|(k, _)| by.labels.contains(k)) {
                add(k, v);
            }
        }
        Some(LabelModifier::Exclude(without)) => {
            for (k, v) in labels
                .iter()
                .filter(|(k, _)| k.as_str() != NAME && !without.labels.contains(k))
            {
                add(k, v);
            }
        }
    }
    h.finish()
}

pub(crate) fn group_labels(labels: &Labels, modifier: Option<&LabelModifier>) -> Labels {
    match modifier {
        None => Labels::new(),
        Some(LabelModifier::Include(by)) => labels
            .iter()
            .filter(|(k, _)| by.labels.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(LabelModifier::Exclude(without)) => labels
            .iter()
            .filter(|(k, _)| k.as_str() != NAME && !without.labels.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// An aggregation over an instant vector.
#[allow(clippy::too_many_lines)]
fn aggregate(
    op: &str,
    param: Option<Value>,
    input: Vec<Element>,
    modifier: Option<&LabelModifier>,
) -> Result<Vec<Element>, EvalError> {
    let scalar_param = || match &param {
        Some(Value::Scalar(x)) => Ok(*x),
        _ => Err(format!("{op} needs a scalar parameter")),
    };
    if op == "count_values" {
        let Some(Value::String(label)) = &param else {
            return Err("count_values needs a string parameter".into());
        };
        if !valid_label_name(label) {
            return Err(format!("invalid label name {label:?}"));
        }
        let mut order: Vec<Labels> = Vec::new();
        let mut counts: HashMap<Labels, f64> = HashMap::new();
        for el in &input {
            let mut l = group_labels(&el.labels, modifier);
            l.insert(label.clone(), format_go(el.value));
            let c = counts.entry(l.clone()).or_insert_with(|| {
                order.push(l);
                0.0
            });
            *c += 1.0;
        }
        return Ok(order
            .into_iter()
            .map(|l| {
                let value = counts[&l];
                Element::new(l, value)
            })
            .collect());
    }
    // Groups in first-seen order, keyed by a hash of the grouping labels so that an element
    // costs no label-set allocation; each group's label set is built once.
    let mut order: Vec<(u64, Labels)> = Vec::new();
    let mut groups: HashMap<u64, Vec<Element>> = HashMap::new();
    for el in input {
        let h = group_hash(&el.labels, modifier);
        let g = groups.entry(h).or_insert_with(|| {
            order.push((h, group_labels(&el.labels, modifier)));
            Vec::new()
        });
        g.push(el);
    }
    let mut out = Vec::new();
    match op {
        "topk" | "bottomk" => {
            let k = scalar_param()?;
            if k.is_nan() {
                return Err("Parameter value is NaN".into());
            }
            if k < 1.0 {
                return Ok(Vec::new());
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let k = k.min(1e9) as usize;
            for (h, _) in order {
                let mut els = groups.remove(&h).unwrap_or_default();
                // NaN is the smallest for topk and the largest for bottomk.
                els.sort_by(|a, b| {
                    let (x, y) = (a.value, b.value);
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ => {
                            if op == "topk" {
                                y.total_cmp(&x)
                            } else {
                                x.total_cmp(&y)
                            }
                        }
                    }
                });
                out.extend(els.into_iter().take(k));
            }
            return Ok(out);
        }
        _ => {}
    }
    for (h, g) in order {
        let els = groups.remove(&h).unwrap_or_default();
        // A grouping that keeps `__name__` drops it later if any member was to drop it.
        let drop_name = g.contains_key(NAME) && els.iter().any(|e| e.drop_name);
        let values = els.iter().map(|e| e.value);
        let value = match op {
            "sum" => {
                let mut k = Kahan::default();
                values.for_each(|v| k.add(v));
                k.value()
            }
            "avg" => mean(values),
            "count" => values.count() as f64,
            "group" => 1.0,
            "min" => values.fold(f64::NAN, |m, v| if m.is_nan() || v < m { v } else { m }),
            "max" => values.fold(f64::NAN, |m, v| if m.is_nan() || v > m { v } else { m }),
            "stdvar" => variance(values),
            "stddev" => variance(values).sqrt(),
            "quantile" => {
                let q = scalar_param()?;
                let mut vs: Vec<f64> = values.collect();
                quantile(q, &mut vs)
            }
            other => return Err(format!("unsupported aggregation {other}")),
        };
        out.push(Element {
            labels: g.into(),
            value,
            drop_name,
        });
    }
    Ok(out)
}

/// A valid Prometheus label name.
pub fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
