//! Range queries evaluated series by series.
//!
//! Step by step, a range query over many series reads one window of every series per step: at
//! 100,000 series and 289 steps that is 28.9 M scattered reads (a cache miss each) and as many
//! elements built, grouped and dropped. The shapes dashboards use most (a selector or a window
//! function of one, such as `rate(x[5m])`, alone or under `sum`, `avg`, `count`, `group`, `min`
//! or `max`, with `by` or `without`) are evaluated here instead: each series' samples are
//! walked once, in time order, and its windows' values go straight into its group's per-step
//! accumulator. The results are the step-by-step evaluator's bit for bit: the same window
//! functions ([`WindowFn`]), the same summation order (selection order within a step), the same
//! output order; `tests::by_series_equals_step_by_step` compares the two.
//!
//! Steps are split between threads ([`Engine::threads`]) by time, not by series: each thread
//! owns its steps' accumulators whole, so no sum is split and merged in another order.

use std::sync::Arc;

use promql_parser::parser::{Expr, LabelModifier};

use super::eval::{dur_ms, group_hash, group_labels, is_stale, offset_ms, upto, Engine, Kahan, NAME};
use super::functions::WindowFn;
use super::{Element, Labels, Series};

/// What each series contributes at a step.
#[derive(Clone, Copy)]
enum Input {
    /// An instant selector: the newest sample within the lookback.
    Latest,
    /// A window function over a range selector of `range_ms`.
    Window(WindowFn, i64),
}

/// How the series are combined.
#[derive(Clone, Copy)]
enum Agg {
    /// Not at all: each series is a result series.
    None,
    Sum,
    Avg,
    Count,
    Group,
    Min,
    Max,
}

fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unparen(&p.expr),
        other => other,
    }
}

/// The selector and input of `e` when it is a shape evaluated here; `@` is left to the step
/// evaluator (it pins every step to one time, nothing to gain).
fn input(e: &Expr) -> Option<(&promql_parser::parser::VectorSelector, Input)> {
    match unparen(e) {
        Expr::VectorSelector(vs) if vs.at.is_none() => Some((vs, Input::Latest)),
        Expr::Call(c) => {
            let f = WindowFn::by_name(c.func.name)?;
            let [arg] = c.args.args.as_slice() else {
                return None;
            };
            match unparen(arg) {
                Expr::MatrixSelector(ms) if ms.vs.at.is_none() => Some((&ms.vs, Input::Window(f, dur_ms(&ms.range)))),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Per-step state of one group.
trait Acc: Clone + Send {
    fn empty() -> Self;
    fn add(&mut self, v: f64);
    /// The group's value at the step; `None` when no series had one.
    fn value(&self) -> Option<f64>;
}

/// A lone series (no aggregation).
#[derive(Clone)]
struct One(Option<f64>);
impl Acc for One {
    fn empty() -> Self {
        One(None)
    }
    fn add(&mut self, v: f64) {
        self.0 = Some(v);
    }
    fn value(&self) -> Option<f64> {
        self.0
    }
}

#[derive(Clone)]
struct SumAcc(Kahan, bool);
impl Acc for SumAcc {
    fn empty() -> Self {
        SumAcc(Kahan::default(), false)
    }
    fn add(&mut self, v: f64) {
        self.0.add(v);
        self.1 = true;
    }
    fn value(&self) -> Option<f64> {
        self.1.then(|| self.0.value())
    }
}

/// `avg`, as [`super::eval::mean`]: the Kahan sum over the count, or the incremental mean when
/// the sum of finite values overflows.
#[derive(Clone)]
struct AvgAcc {
    sum: Kahan,
    n: f64,
    incremental: f64,
    not_finite: bool,
}
impl Acc for AvgAcc {
    fn empty() -> Self {
        AvgAcc {
            sum: Kahan::default(),
            n: 0.0,
            incremental: 0.0,
            not_finite: false,
        }
    }
    fn add(&mut self, v: f64) {
        self.sum.add(v);
        self.n += 1.0;
        self.incremental += v / self.n - self.incremental / self.n;
        self.not_finite |= !v.is_finite();
    }
    fn value(&self) -> Option<f64> {
        if self.n == 0.0 {
            return None;
        }
        let s = self.sum.value();
        Some(if s.is_finite() || self.not_finite {
            s / self.n
        } else {
            self.incremental
        })
    }
}

#[derive(Clone)]
struct CountAcc(f64);
impl Acc for CountAcc {
    fn empty() -> Self {
        CountAcc(0.0)
    }
    fn add(&mut self, _: f64) {
        self.0 += 1.0;
    }
    fn value(&self) -> Option<f64> {
        (self.0 > 0.0).then_some(self.0)
    }
}

#[derive(Clone)]
struct GroupAcc(bool);
impl Acc for GroupAcc {
    fn empty() -> Self {
        GroupAcc(false)
    }
    fn add(&mut self, _: f64) {
        self.0 = true;
    }
    fn value(&self) -> Option<f64> {
        self.0.then_some(1.0)
    }
}

/// `min` (`MAX == false`) or `max`, as the step evaluator folds: NaN only when all are NaN.
#[derive(Clone)]
struct Extreme<const MAX: bool>(Option<f64>);
impl<const MAX: bool> Acc for Extreme<MAX> {
    fn empty() -> Self {
        Extreme(None)
    }
    fn add(&mut self, v: f64) {
        let m = self.0.unwrap_or(f64::NAN);
        let better = if MAX { v > m } else { v < m };
        self.0 = Some(if m.is_nan() || better { v } else { m });
    }
    fn value(&self) -> Option<f64> {
        self.0
    }
}

/// What a thread needs to evaluate its steps (the engine itself stays on the caller's thread).
#[derive(Clone, Copy)]
struct Walk {
    input: Input,
    offset_ms: i64,
    lookback_ms: i64,
    closed: bool,
}

impl Walk {
    /// Calls `emit(k, value)` for each step `k` of `steps` where `samples` has a value, in step
    /// order, reading the samples front to back.
    fn series(
        &self,
        samples: &[(i64, f64)],
        steps: &[i64],
        scratch: &mut Vec<(i64, f64)>,
        mut emit: impl FnMut(usize, f64),
    ) {
        let mut hi = 0;
        for (k, &t) in steps.iter().enumerate() {
            let rt = t.saturating_sub(self.offset_ms);
            hi = advance(samples, hi, rt);
            match self.input {
                Input::Latest => {
                    let Some(&(ts, v)) = hi.checked_sub(1).and_then(|i| samples.get(i)) else {
                        continue;
                    };
                    let too_old = if self.closed {
                        ts < rt - self.lookback_ms
                    } else {
                        ts <= rt - self.lookback_ms
                    };
                    if !too_old && !is_stale(v) {
                        emit(k, v);
                    }
                }
                Input::Window(f, range_ms) => {
                    let start = rt.saturating_sub(range_ms);
                    let inside = |ts: i64| if self.closed { ts >= start } else { ts > start };
                    let lo = hi - samples[..hi].iter().rev().take_while(|(ts, _)| inside(*ts)).count();
                    let mut window = &samples[lo..hi];
                    if window.iter().any(|(_, v)| is_stale(*v)) {
                        scratch.clear();
                        scratch.extend(window.iter().copied().filter(|(_, v)| !is_stale(*v)));
                        window = scratch;
                    }
                    if window.is_empty() {
                        continue;
                    }
                    #[allow(clippy::cast_precision_loss)]
                    if let Some(v) = f.apply(window, start, rt, range_ms as f64 / 1000.0) {
                        emit(k, v);
                    }
                }
            }
        }
    }
}

/// How many samples are at or before `t`, given that the first `from` are: a step usually moves
/// over a few samples, walked one by one; a longer way is searched.
fn advance(samples: &[(i64, f64)], from: usize, t: i64) -> usize {
    const NEAR: usize = 8;
    if samples.get(from + NEAR).is_some_and(|(ts, _)| *ts <= t) {
        return from + NEAR + 1 + upto(&samples[from + NEAR + 1..], t);
    }
    from + samples[from.min(samples.len())..]
        .iter()
        .take(NEAR)
        .take_while(|(ts, _)| *ts <= t)
        .count()
}

/// One thread's share of the steps: each group's value at each of them (`[group][step]`); when
/// groups are aggregations, the first series (selection order) with a value in each cell, which
/// orders the groups within a step as the step evaluator does; and per group its first step
/// with a value and the first series with a value there, which orders the result series.
struct Part {
    steps: usize,
    values: Vec<Option<f64>>,
    pos: Vec<u32>,
    first: Vec<(usize, usize)>,
}

fn accumulate<A: Acc>(walk: Walk, rows: &Rows<'_>, steps: &[i64], track_pos: bool) -> Part {
    let (n, groups) = (steps.len(), rows.labels.len());
    let mut acc = vec![A::empty(); groups * n];
    let mut pos = if track_pos {
        vec![u32::MAX; groups * n]
    } else {
        Vec::new()
    };
    let mut first = vec![(usize::MAX, usize::MAX); groups];
    let mut scratch = Vec::new();
    for (i, (s, &g)) in rows.series.iter().zip(&rows.group_of).enumerate() {
        let row = &mut acc[g * n..(g + 1) * n];
        let mut pos_row = pos.get_mut(g * n..(g + 1) * n);
        let ordinal = u32::try_from(i).unwrap_or(u32::MAX);
        let mut seen = first[g];
        walk.series(&s.samples, steps, &mut scratch, |k, v| {
            row[k].add(v);
            if let Some(p) = pos_row.as_deref_mut() {
                p[k] = p[k].min(ordinal);
            }
            if k < seen.0 {
                seen = (k, i);
            }
        });
        first[g] = seen;
    }
    Part {
        steps: n,
        values: acc.iter().map(Acc::value).collect(),
        pos,
        first,
    }
}

/// The selected series and the group (result row) of each.
struct Rows<'s> {
    series: Vec<&'s Series>,
    group_of: Vec<usize>,
    labels: Vec<Arc<Labels>>,
}

/// A shape's value at every step of a range query, one row per group (per series when not an
/// aggregation).
pub(crate) struct Grid {
    labels: Vec<Arc<Labels>>,
    parts: Vec<Part>,
}

impl Grid {
    /// Evaluates on `threads` threads, each over a contiguous share of the steps.
    fn evaluate<A: Acc>(walk: Walk, rows: Rows<'_>, steps: &[i64], threads: usize, track_pos: bool) -> Grid {
        let share = steps.len().div_ceil(threads.max(1)).max(1);
        let chunks: Vec<&[i64]> = steps.chunks(share).collect();
        let parts = if chunks.len() <= 1 {
            chunks
                .iter()
                .map(|c| accumulate::<A>(walk, &rows, c, track_pos))
                .collect()
        } else {
            let rows = &rows;
            std::thread::scope(|scope| {
                let handles: Vec<_> = chunks
                    .iter()
                    .map(|c| scope.spawn(move || accumulate::<A>(walk, rows, c, track_pos)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect()
            })
        };
        Grid {
            labels: rows.labels,
            parts,
        }
    }

    /// The result series, in the order the step evaluator produces them: by first step with a
    /// value, then by first series with a value there.
    fn into_series(self, steps: &[i64]) -> Vec<Series> {
        let mut order: Vec<(usize, usize, usize)> = Vec::new();
        for g in 0..self.labels.len() {
            let mut offset = 0;
            for part in &self.parts {
                let (k, i) = part.first[g];
                if k != usize::MAX {
                    order.push((offset + k, i, g));
                    break;
                }
                offset += part.steps;
            }
        }
        order.sort_unstable();
        order
            .into_iter()
            .map(|(_, _, g)| {
                let mut samples = Vec::new();
                let mut offset = 0;
                for part in &self.parts {
                    let row = &part.values[g * part.steps..(g + 1) * part.steps];
                    let ts = &steps[offset..offset + part.steps];
                    samples.extend(ts.iter().zip(row).filter_map(|(t, v)| v.map(|v| (*t, v))));
                    offset += part.steps;
                }
                Series {
                    labels: self.labels[g].clone(),
                    samples,
                }
            })
            .collect()
    }

    /// The instant vector at step `k`, its elements in the step evaluator's order.
    pub(crate) fn vector_at(&self, mut k: usize) -> Vec<Element> {
        let Some(part) = self.parts.iter().find(|p| {
            if k < p.steps {
                return true;
            }
            k -= p.steps;
            false
        }) else {
            return Vec::new();
        };
        let n = part.steps;
        let mut cells: Vec<(u32, usize, f64)> = (0..self.labels.len())
            .filter_map(|g| {
                let v = part.values[g * n + k]?;
                Some((part.pos.get(g * n + k).copied().unwrap_or(0), g, v))
            })
            .collect();
        cells.sort_unstable_by_key(|c| (c.0, c.1));
        cells
            .into_iter()
            .map(|(_, g, v)| Element::new(self.labels[g].clone(), v))
            .collect()
    }
}

/// Range queries over this many series-steps or more are split between threads.
const PARALLEL_WORK: usize = 1 << 20;

/// Bytes a query's grids may take (every group × every step, present or not, with its
/// accumulator): 800 MiB, what Prometheus's default `--query.max-samples` (50 M) of 16-byte
/// samples holds. A query that would need more is left to the step evaluator, which holds only
/// the samples present.
const MAX_BYTES: usize = 800 << 20;

/// Bytes per cell of a grid over accumulator `A`: the accumulator, the value, the order.
fn cell_bytes<A>(track_pos: bool) -> usize {
    std::mem::size_of::<A>() + std::mem::size_of::<Option<f64>>() + if track_pos { 4 } else { 0 }
}

impl Engine<'_> {
    /// `e` evaluated at `steps` series by series, as a range query's result, or `None` when `e`
    /// is not a shape evaluated here (the step evaluator answers it).
    pub(crate) fn range_by_series(&self, e: &Expr, steps: &[i64]) -> Option<Vec<Series>> {
        self.grid(e, steps, true, &mut MAX_BYTES.clone())
            .map(|g| g.into_series(steps))
    }

    /// Evaluates series by series, at `steps`, the aggregations inside `e` that can be, for
    /// [`Engine::eval`] to read at each step. Subqueries are not entered: they evaluate at their
    /// own steps.
    pub(crate) fn materialize(&mut self, e: &Expr, steps: &[i64]) {
        self.materialize_within(e, steps, &mut MAX_BYTES.clone());
    }

    /// [`Engine::materialize`] with what is left of the query's `budget` of bytes.
    fn materialize_within(&mut self, e: &Expr, steps: &[i64], budget: &mut usize) {
        if matches!(e, Expr::Aggregate(_)) {
            if let Some(grid) = self.grid(e, steps, false, budget) {
                self.by_series.insert(std::ptr::from_ref(e) as usize, grid);
                return;
            }
        }
        match e {
            Expr::Paren(p) => self.materialize_within(&p.expr, steps, budget),
            Expr::Unary(u) => self.materialize_within(&u.expr, steps, budget),
            Expr::Binary(b) => {
                self.materialize_within(&b.lhs, steps, budget);
                self.materialize_within(&b.rhs, steps, budget);
            }
            Expr::Aggregate(a) => {
                self.materialize_within(&a.expr, steps, budget);
                if let Some(p) = &a.param {
                    self.materialize_within(p, steps, budget);
                }
            }
            Expr::Call(c) => {
                for arg in &c.args.args {
                    self.materialize_within(arg, steps, budget);
                }
            }
            _ => {}
        }
    }

    /// `e` evaluated at `steps`; `whole`: `e` is the whole query (so series without an
    /// aggregation are the result, their names dropped here). `None` also when its grid would
    /// not fit in `budget` bytes (what it takes is taken off).
    fn grid(&self, e: &Expr, steps: &[i64], whole: bool, budget: &mut usize) -> Option<Grid> {
        let (agg, modifier, inner) = match unparen(e) {
            Expr::Aggregate(a) => {
                if a.param.is_some() {
                    return None;
                }
                let agg = match a.op.to_string().as_str() {
                    "sum" => Agg::Sum,
                    "avg" => Agg::Avg,
                    "count" => Agg::Count,
                    "group" => Agg::Group,
                    "min" => Agg::Min,
                    "max" => Agg::Max,
                    _ => return None,
                };
                // `by (__name__)` keeps a name that is dropped only later: left to the step
                // evaluator.
                if let Some(LabelModifier::Include(by)) = &a.modifier {
                    if by.labels.iter().any(|l| l == NAME) {
                        return None;
                    }
                }
                (agg, a.modifier.as_ref(), &*a.expr)
            }
            other if whole => (Agg::None, None, other),
            _ => return None,
        };
        let (vs, input) = input(inner)?;
        let selected = self.select(vs);
        let series: Vec<&Series> = selected.iter().map(|&i| &self.series[i]).collect();
        let drops_name = matches!(input, Input::Window(f, _) if !f.keeps_name());
        // Groups in selection order, each series' group found once.
        let mut group_of = Vec::with_capacity(series.len());
        let mut labels: Vec<Arc<Labels>> = Vec::new();
        if let Agg::None = agg {
            let mut seen = std::collections::HashSet::with_capacity(series.len());
            for s in &series {
                let l = if drops_name {
                    let mut l = (*s.labels).clone();
                    l.remove(NAME);
                    l.remove("__type__");
                    l.remove("__unit__");
                    Arc::new(l)
                } else {
                    s.labels.clone()
                };
                // Two series that differ only by name collide once it is dropped: the step
                // evaluator reports that, at the steps where both have a value.
                if !seen.insert(l.clone()) {
                    return None;
                }
                group_of.push(labels.len());
                labels.push(l);
            }
        } else {
            let mut index = std::collections::HashMap::new();
            for s in &series {
                let g = *index.entry(group_hash(&s.labels, modifier)).or_insert_with(|| {
                    labels.push(Arc::new(group_labels(&s.labels, modifier)));
                    labels.len() - 1
                });
                group_of.push(g);
            }
        }
        let track_pos = !matches!(agg, Agg::None);
        let per_cell = match agg {
            Agg::None => cell_bytes::<One>(track_pos),
            Agg::Sum => cell_bytes::<SumAcc>(track_pos),
            Agg::Avg => cell_bytes::<AvgAcc>(track_pos),
            Agg::Count => cell_bytes::<CountAcc>(track_pos),
            Agg::Group => cell_bytes::<GroupAcc>(track_pos),
            Agg::Min | Agg::Max => cell_bytes::<Extreme<false>>(track_pos),
        };
        let need = labels.len().saturating_mul(steps.len()).saturating_mul(per_cell);
        if need > *budget {
            return None;
        }
        *budget -= need;
        let walk = Walk {
            input,
            offset_ms: offset_ms(vs.offset.as_ref()),
            lookback_ms: self.lookback_ms,
            closed: self.closed_ranges,
        };
        let threads = if series.len().saturating_mul(steps.len()) >= PARALLEL_WORK {
            self.threads.clamp(1, steps.len().max(1))
        } else {
            1
        };
        let rows = Rows {
            series,
            group_of,
            labels,
        };
        Some(match agg {
            Agg::None => Grid::evaluate::<One>(walk, rows, steps, threads, track_pos),
            Agg::Sum => Grid::evaluate::<SumAcc>(walk, rows, steps, threads, track_pos),
            Agg::Avg => Grid::evaluate::<AvgAcc>(walk, rows, steps, threads, track_pos),
            Agg::Count => Grid::evaluate::<CountAcc>(walk, rows, steps, threads, track_pos),
            Agg::Group => Grid::evaluate::<GroupAcc>(walk, rows, steps, threads, track_pos),
            Agg::Min => Grid::evaluate::<Extreme<false>>(walk, rows, steps, threads, track_pos),
            Agg::Max => Grid::evaluate::<Extreme<true>>(walk, rows, steps, threads, track_pos),
        })
    }
}
