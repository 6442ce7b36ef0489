//! PromQL functions.

use promql_parser::parser::{Call, Expr};

use super::eval::{check_unique, mean, quantile, valid_label_name, variance, Engine, EvalError, Kahan};
use super::{Element, Labels, Series, Value};

const NAME: &str = "__name__";

/// A range argument: its series and the window `(start, end]` it covers, ms.
struct RangeArg {
    series: Vec<Series>,
    start: i64,
    end: i64,
    range_s: f64,
}

fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unparen(&p.expr),
        other => other,
    }
}

fn range_arg(engine: &mut Engine<'_>, e: &Expr, t: i64) -> Result<RangeArg, EvalError> {
    match unparen(e) {
        Expr::MatrixSelector(ms) => {
            let range = i64::try_from(ms.range.as_millis()).unwrap_or(i64::MAX);
            let series = engine.matrix_selector(&ms.vs, range, t);
            // The window ends at the selector's reference time.
            let end = engine.ref_time(&ms.vs, t);
            #[allow(clippy::cast_precision_loss)]
            Ok(RangeArg {
                series,
                start: end.saturating_sub(range),
                end,
                range_s: range as f64 / 1000.0,
            })
        }
        Expr::Subquery(sq) => {
            let range = i64::try_from(sq.range.as_millis()).unwrap_or(i64::MAX);
            let off = match &sq.offset {
                Some(promql_parser::parser::Offset::Pos(d)) => i64::try_from(d.as_millis()).unwrap_or(0),
                Some(promql_parser::parser::Offset::Neg(d)) => -i64::try_from(d.as_millis()).unwrap_or(0),
                None => 0,
            };
            let end = engine.at_ms(sq.at.as_ref()).unwrap_or(t) - off;
            let series = engine.subquery(sq, t)?;
            #[allow(clippy::cast_precision_loss)]
            Ok(RangeArg {
                series,
                start: end - range,
                end,
                range_s: range as f64 / 1000.0,
            })
        }
        _ => Err("expected a range vector".into()),
    }
}

fn map_values(v: Vec<Element>, f: impl Fn(f64) -> f64) -> Result<Value, EvalError> {
    // Names are removed (and duplicates checked) at the end of the query.
    Ok(Value::Vector(
        v.into_iter()
            .map(|mut el| {
                el.value = f(el.value);
                el.drop_name = true;
                el
            })
            .collect(),
    ))
}

/// Applies `f` to each series of a range argument; `None` drops the series.
fn over_time(arg: RangeArg, keep_name: bool, f: impl Fn(&[(i64, f64)]) -> Option<f64>) -> Result<Value, EvalError> {
    let mut out = Vec::new();
    for s in arg.series {
        if let Some(value) = f(&s.samples) {
            out.push(Element {
                labels: s.labels,
                value,
                drop_name: !keep_name,
            });
        }
    }
    // The series of a range argument are distinct, and names are removed at the end of the
    // query (where duplicates are checked), so no check here.
    Ok(Value::Vector(out))
}

/// Prometheus's `extrapolatedRate` for `rate`, `increase` and `delta` over one window
/// `(start, end]` of `range_s` seconds.
fn extrapolated_rate(
    s: &[(i64, f64)],
    start: i64,
    end: i64,
    range_s: f64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let (first_t, first_v) = s[0];
    let (last_t, last_v) = s[s.len() - 1];
    let mut result = last_v - first_v;
    if is_counter {
        let mut prev = first_v;
        for &(_, v) in &s[1..] {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let (mut to_start, mut to_end, sampled) = (
        (first_t - start) as f64 / 1000.0,
        (end - last_t) as f64 / 1000.0,
        (last_t - first_t) as f64 / 1000.0,
    );
    #[allow(clippy::cast_precision_loss)]
    let avg = sampled / (s.len() - 1) as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if is_counter && result > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= range_s;
    }
    Some(result * factor)
}

/// `irate` and `idelta`: from the last two samples of a window.
fn instant_value(s: &[(i64, f64)], is_rate: bool) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let (pt, pv) = s[s.len() - 2];
    let (lt, lv) = s[s.len() - 1];
    let mut result = lv - pv;
    if is_rate && lv < pv {
        result = lv;
    }
    let interval = lt - pt;
    if interval == 0 {
        return None;
    }
    if is_rate {
        #[allow(clippy::cast_precision_loss)]
        {
            result /= interval as f64 / 1000.0;
        }
    }
    Some(result)
}

/// A function of one range argument and nothing else, mapping each series' window to at most
/// one value: what both evaluators (step by step, and series by series for wide range queries)
/// apply to a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowFn {
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    Deriv,
    Resets,
    Changes,
    Avg,
    Sum,
    Count,
    Min,
    Max,
    Stddev,
    Stdvar,
    Last,
    Present,
}

impl WindowFn {
    /// The function called `name`, if it is one of these.
    pub(crate) fn by_name(name: &str) -> Option<Self> {
        Some(match name {
            "rate" => Self::Rate,
            "increase" => Self::Increase,
            "delta" => Self::Delta,
            "irate" => Self::Irate,
            "idelta" => Self::Idelta,
            "deriv" => Self::Deriv,
            "resets" => Self::Resets,
            "changes" => Self::Changes,
            "avg_over_time" => Self::Avg,
            "sum_over_time" => Self::Sum,
            "count_over_time" => Self::Count,
            "min_over_time" => Self::Min,
            "max_over_time" => Self::Max,
            "stddev_over_time" => Self::Stddev,
            "stdvar_over_time" => Self::Stdvar,
            "last_over_time" => Self::Last,
            "present_over_time" => Self::Present,
            _ => return None,
        })
    }

    /// Whether the result keeps the metric name (only `last_over_time` does).
    pub(crate) fn keeps_name(self) -> bool {
        self == Self::Last
    }

    /// The value over the samples `s` (stale markers removed) of the window `(start, end]`,
    /// `range_s` seconds long; `None` when the function has no value there.
    #[allow(clippy::cast_precision_loss)]
    pub(crate) fn apply(self, s: &[(i64, f64)], start: i64, end: i64, range_s: f64) -> Option<f64> {
        match self {
            Self::Rate => extrapolated_rate(s, start, end, range_s, true, true),
            Self::Increase => extrapolated_rate(s, start, end, range_s, true, false),
            Self::Delta => extrapolated_rate(s, start, end, range_s, false, false),
            Self::Irate => instant_value(s, true),
            Self::Idelta => instant_value(s, false),
            Self::Deriv => (s.len() >= 2).then(|| linear_regression(s, s[0].0).0),
            Self::Resets => Some(s.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64),
            Self::Changes => Some(
                s.windows(2)
                    .filter(|w| !(w[1].1 == w[0].1 || (w[1].1.is_nan() && w[0].1.is_nan())))
                    .count() as f64,
            ),
            Self::Avg => Some(mean(s.iter().map(|p| p.1))),
            Self::Sum => {
                let mut k = Kahan::default();
                s.iter().for_each(|p| k.add(p.1));
                Some(k.value())
            }
            Self::Count => Some(s.len() as f64),
            Self::Min => Some(
                s.iter()
                    .fold(f64::NAN, |m, p| if m.is_nan() || p.1 < m { p.1 } else { m }),
            ),
            Self::Max => Some(
                s.iter()
                    .fold(f64::NAN, |m, p| if m.is_nan() || p.1 > m { p.1 } else { m }),
            ),
            Self::Stddev => Some(variance(s.iter().map(|p| p.1)).sqrt()),
            Self::Stdvar => Some(variance(s.iter().map(|p| p.1))),
            Self::Last => s.last().map(|p| p.1),
            Self::Present => Some(1.0),
        }
    }
}

/// Least squares of the samples with x in seconds from `intercept_t`: (slope, intercept).
#[allow(clippy::cast_precision_loss)]
fn linear_regression(s: &[(i64, f64)], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut sy, mut sxy, mut sx2) = (
        0.0,
        Kahan::default(),
        Kahan::default(),
        Kahan::default(),
        Kahan::default(),
    );
    let init = s[0].1;
    let mut const_y = true;
    for (i, &(t, v)) in s.iter().enumerate() {
        if i > 0 && v != init {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_t) as f64 / 1000.0;
        sx.add(x);
        sy.add(v);
        sxy.add(x * v);
        sx2.add(x * x);
    }
    if const_y {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let (sx, sy, sxy, sx2) = (sx.value(), sy.value(), sxy.value(), sx2.value());
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if !buckets.last().is_some_and(|b| b.0 == f64::INFINITY) {
        return f64::NAN;
    }
    // Coalesce equal bounds.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(le, c) in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == le => last.1 += c,
            _ => merged.push((le, c)),
        }
    }
    // Monotonic counts.
    let mut max = f64::NEG_INFINITY;
    for b in &mut merged {
        if b.1 > max {
            max = b.1;
        } else {
            b.1 = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let n = merged.len();
    let observations = merged[n - 1].1;
    if observations == 0.0 || observations.is_nan() {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = merged[..n - 1].partition_point(|x| x.1 < rank);
    if b == n - 1 {
        return merged[n - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let bucket_end = merged[b].0;
    let mut count = merged[b].1;
    let mut bucket_start = 0.0;
    if b > 0 {
        bucket_start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    bucket_start + (bucket_end - bucket_start) * (rank / count)
}

/// Labels `absent` gives: the selector's equality matchers (a label matched twice is left
/// out).
fn absent_labels(e: &Expr) -> Labels {
    let vs = match unparen(e) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::new(),
    };
    // A label named by more than one matcher (of any kind) is left out.
    let mut count: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for m in &vs.matchers.matchers {
        *count.entry(m.name.as_str()).or_default() += 1;
    }
    vs.matchers
        .matchers
        .iter()
        .filter(|m| m.name != NAME && count[m.name.as_str()] == 1)
        .filter(|m| matches!(m.op, promql_parser::label::MatchOp::Equal))
        .map(|m| (m.name.clone(), m.value.clone()))
        .collect()
}

fn scalar_arg(engine: &mut Engine<'_>, c: &Call, i: usize, t: i64, default: f64) -> Result<f64, EvalError> {
    match c.args.args.get(i) {
        Some(a) => engine.eval_scalar(a, t),
        None => Ok(default),
    }
}

fn string_arg(engine: &mut Engine<'_>, c: &Call, i: usize, t: i64) -> Result<String, EvalError> {
    match c.args.args.get(i).map(|a| engine.eval(a, t)) {
        Some(Ok(Value::String(s))) => Ok(s),
        Some(Err(e)) => Err(e),
        _ => Err(format!("{}: argument {} must be a string", c.func.name, i + 1)),
    }
}

fn arg(c: &Call, i: usize) -> Result<&Expr, EvalError> {
    c.args
        .args
        .get(i)
        .map(AsRef::as_ref)
        .ok_or_else(|| format!("{}: missing argument {}", c.func.name, i + 1))
}

/// Evaluates a function call at `t`.
#[allow(clippy::too_many_lines)]
pub(crate) fn call(engine: &mut Engine<'_>, c: &Call, t: i64) -> Result<Value, EvalError> {
    let name = c.func.name;
    #[allow(clippy::cast_precision_loss)]
    let t_s = t as f64 / 1000.0;
    if let Some(f) = WindowFn::by_name(name) {
        let r = range_arg(engine, arg(c, 0)?, t)?;
        let (start, end, range_s) = (r.start, r.end, r.range_s);
        return over_time(r, f.keeps_name(), |s| f.apply(s, start, end, range_s));
    }
    match name {
        "time" => Ok(Value::Scalar(t_s)),
        "predict_linear" => {
            let r = range_arg(engine, arg(c, 0)?, t)?;
            let d = engine.eval_scalar(arg(c, 1)?, t)?;
            // Prometheus intercepts at the evaluation time, even under `@`.
            let at = t;
            over_time(r, false, |s| {
                (s.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(s, at);
                    slope * d + intercept
                })
            })
        }
        "quantile_over_time" => {
            let q = engine.eval_scalar(arg(c, 0)?, t)?;
            over_time(range_arg(engine, arg(c, 1)?, t)?, false, |s| {
                let mut v: Vec<f64> = s.iter().map(|p| p.1).collect();
                Some(quantile(q, &mut v))
            })
        }
        "absent_over_time" => {
            let e = arg(c, 0)?;
            let r = range_arg(engine, e, t)?;
            if r.series.is_empty() {
                Ok(Value::Vector(vec![Element::new(absent_labels(e), 1.0)]))
            } else {
                Ok(Value::Vector(Vec::new()))
            }
        }
        "absent" => {
            let e = arg(c, 0)?;
            let v = engine.eval_vector(e, t)?;
            if v.is_empty() {
                Ok(Value::Vector(vec![Element::new(absent_labels(e), 1.0)]))
            } else {
                Ok(Value::Vector(Vec::new()))
            }
        }
        "abs" | "ceil" | "floor" | "exp" | "ln" | "log2" | "log10" | "sqrt" => {
            let v = engine.eval_vector(arg(c, 0)?, t)?;
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => f64::exp,
                "ln" => f64::ln,
                "log2" => f64::log2,
                "log10" => f64::log10,
                _ => f64::sqrt,
            };
            map_values(v, f)
        }
        "round" => {
            let v = engine.eval_vector(arg(c, 0)?, t)?;
            let to = scalar_arg(engine, c, 1, t, 1.0)?;
            let inv = 1.0 / to;
            map_values(v, |x| (x * inv + 0.5).floor() / inv)
        }
        "clamp" => {
            let v = engine.eval_vector(arg(c, 0)?, t)?;
            let (lo, hi) = (engine.eval_scalar(arg(c, 1)?, t)?, engine.eval_scalar(arg(c, 2)?, t)?);
            if hi < lo {
                return Ok(Value::Vector(Vec::new()));
            }
            map_values(v, |x| go_max(lo, go_min(hi, x)))
        }
        "clamp_min" => {
            let v = engine.eval_vector(arg(c, 0)?, t)?;
            let lo = engine.eval_scalar(arg(c, 1)?, t)?;
            map_values(v, |x| go_max(x, lo))
        }
        "clamp_max" => {
            let v = engine.eval_vector(arg(c, 0)?, t)?;
            let hi = engine.eval_scalar(arg(c, 1)?, t)?;
            map_values(v, |x| go_min(x, hi))
        }
        "timestamp" => {
            let e = arg(c, 0)?;
            let out: Vec<Element> = if let Expr::VectorSelector(vs) = unparen(e) {
                engine
                    .instant_selector(vs, t)
                    .into_iter()
                    .map(|(mut el, ts)| {
                        #[allow(clippy::cast_precision_loss)]
                        {
                            el.value = ts as f64 / 1000.0;
                        }
                        el.drop_name = true;
                        el
                    })
                    .collect()
            } else {
                engine
                    .eval_vector(e, t)?
                    .into_iter()
                    .map(|mut el| {
                        el.value = t_s;
                        el.drop_name = true;
                        el
                    })
                    .collect()
            };
            check_unique(out).map(Value::Vector)
        }
        "vector" => Ok(Value::Vector(vec![Element::new(
            Labels::new(),
            engine.eval_scalar(arg(c, 0)?, t)?,
        )])),
        "scalar" => {
            let v = engine.eval_vector(arg(c, 0)?, t)?;
            Ok(Value::Scalar(if v.len() == 1 { v[0].value } else { f64::NAN }))
        }
        "sort" | "sort_desc" => {
            let mut v = engine.eval_vector(arg(c, 0)?, t)?;
            let desc = name == "sort_desc";
            v.sort_by(|a, b| match (a.value.is_nan(), b.value.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ => {
                    if desc {
                        b.value.total_cmp(&a.value)
                    } else {
                        a.value.total_cmp(&b.value)
                    }
                }
            });
            Ok(Value::Vector(v))
        }
        "label_replace" => {
            let v = engine.eval_vector(arg(c, 0)?, t)?;
            let dst = string_arg(engine, c, 1, t)?;
            let repl = string_arg(engine, c, 2, t)?;
            let src = string_arg(engine, c, 3, t)?;
            let re_text = string_arg(engine, c, 4, t)?;
            let re = regex::Regex::new(&format!("^(?s:{re_text})$"))
                .map_err(|e| format!("invalid regular expression in label_replace(): {e}"))?;
            if !valid_label_name(&dst) {
                return Err(format!("invalid destination label name in label_replace(): {dst}"));
            }
            let mut out = Vec::with_capacity(v.len());
            for mut el in v {
                let src_v = el.labels.get(&src).cloned().unwrap_or_default();
                if let Some(caps) = re.captures(&src_v) {
                    let mut res = String::new();
                    caps.expand(&repl, &mut res);
                    set_label(&mut el, &dst, res);
                }
                out.push(el);
            }
            check_unique(out).map(Value::Vector)
        }
        "label_join" => {
            let v = engine.eval_vector(arg(c, 0)?, t)?;
            let dst = string_arg(engine, c, 1, t)?;
            let sep = string_arg(engine, c, 2, t)?;
            let mut srcs = Vec::new();
            for i in 3..c.args.args.len() {
                srcs.push(string_arg(engine, c, i, t)?);
            }
            if !valid_label_name(&dst) {
                return Err(format!("invalid destination label name in label_join(): {dst}"));
            }
            let mut out = Vec::with_capacity(v.len());
            for mut el in v {
                let joined = srcs
                    .iter()
                    .map(|s| el.labels.get(s).cloned().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(&sep);
                set_label(&mut el, &dst, joined);
                out.push(el);
            }
            check_unique(out).map(Value::Vector)
        }
        "histogram_quantile" => {
            let q = engine.eval_scalar(arg(c, 0)?, t)?;
            let v = engine.eval_vector(arg(c, 1)?, t)?;
            let mut order: Vec<Labels> = Vec::new();
            let mut groups: std::collections::HashMap<Labels, Vec<(f64, f64)>> = std::collections::HashMap::new();
            let mut seen_le: std::collections::HashSet<(Labels, String)> = std::collections::HashSet::new();
            for el in v {
                let Some(le_text) = el.labels.get("le") else { continue };
                let Some(le) = parse_le(le_text) else { continue };
                let le_text = le_text.clone();
                let mut l: Labels = (*el.labels).clone();
                l.remove("le");
                l.remove(NAME);
                // Two series of one group with the same `le` differ only by name.
                if !seen_le.insert((l.clone(), le_text)) {
                    return Err("vector cannot contain metrics with the same labelset".into());
                }
                groups
                    .entry(l.clone())
                    .or_insert_with(|| {
                        order.push(l);
                        Vec::new()
                    })
                    .push((le, el.value));
            }
            let out = order
                .into_iter()
                .map(|l| {
                    let mut b = groups.remove(&l).unwrap_or_default();
                    Element::new(l, bucket_quantile(q, &mut b))
                })
                .collect();
            Ok(Value::Vector(out))
        }
        other => Err(format!("unsupported function {other}")),
    }
}

/// Sets (or, when empty, removes) a label, as label_replace and label_join do; setting
/// `__name__` keeps the name at the end of the query.
fn set_label(el: &mut Element, dst: &str, value: String) {
    let labels = std::sync::Arc::make_mut(&mut el.labels);
    if value.is_empty() {
        labels.remove(dst);
    } else {
        labels.insert(dst.to_string(), value);
    }
    if dst == NAME {
        el.drop_name = false;
    }
}

fn parse_le(s: &str) -> Option<f64> {
    match s.trim() {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        x => x.parse().ok(),
    }
}

/// Go's `math.Max`: NaN wins.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: NaN wins.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}
