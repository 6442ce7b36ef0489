//! Prometheus rule files, evaluated on event time over the series the pipeline produces.
//!
//! - [`RuleFile`]: the rule-file format unchanged (`groups` with `name`, `interval`, `rules`;
//!   `alert` with `expr`, `for`, `keep_firing_for`, `labels`, `annotations`; `record`). Loading
//!   checks every expression with [`crate::promql::parse`] and every template, and names the
//!   file, line, group and rule of the first problem.
//! - [`RuleEngine`]: keeps the samples it is fed for the longest range any rule reads (plus the
//!   5-minute lookback), and when the watermark passes a group's next evaluation time (a
//!   multiple of its interval) evaluates the group there, as Prometheus would at that
//!   timestamp over the same samples. Alerts go inactive → pending → firing → resolved,
//!   honouring `for` and `keep_firing_for`; recording rules' samples are stored (later rules
//!   and groups read them) and returned for remote-write; `ALERTS` series are written for
//!   pending and firing alerts, as Prometheus does.

pub mod template;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use promql_parser::parser::Expr;
use serde::{Deserialize, Serialize};

use crate::alerts::{fingerprint, AlertState, AlertTransition};
use crate::prom::{Label, Sample};
use crate::promql::{self, Engine, Labels, Series, Value};
use crate::EventTime;
use template::Template;

/// A rule file as Prometheus reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// Groups.
    pub groups: Vec<GroupSpec>,
}

/// A rule group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Name, unique in the file.
    pub name: String,
    /// Evaluation interval (default: the engine's, 1m).
    #[serde(default)]
    pub interval: Option<String>,
    /// Alerts or series per rule at most (0: no limit).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Rules, evaluated in order.
    pub rules: Vec<RuleSpec>,
}

/// A rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Recording rule: the output series name.
    #[serde(default)]
    pub record: Option<String>,
    /// Alerting rule: the alert name.
    #[serde(default)]
    pub alert: Option<String>,
    /// The PromQL expression.
    pub expr: serde_yaml::Value,
    /// Pending time before firing.
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    /// Firing time kept after the condition clears.
    #[serde(default)]
    pub keep_firing_for: Option<String>,
    /// Labels added (templated for alerts).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations (templated).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A promql duration (`1h30m`, `5m`, `30s`, `100ms`, `0`) in ms.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    if s == "0" {
        return Some(0);
    }
    let mut total = 0i64;
    let mut num = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut any = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            num.push(c);
            i += 1;
            continue;
        }
        let n: i64 = num.parse().ok()?;
        num.clear();
        let unit = if c == 'm' && chars.get(i + 1) == Some(&'s') {
            i += 2;
            1
        } else {
            i += 1;
            match c {
                's' => 1000,
                'm' => 60_000,
                'h' => 3_600_000,
                'd' => 86_400_000,
                'w' => 604_800_000,
                'y' => 31_536_000_000,
                _ => return None,
            }
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        any = true;
    }
    (any && num.is_empty()).then_some(total)
}

/// Expands promtool's series notation into optional values (`None`: no sample).
///
/// # Errors
/// The token that does not parse.
pub fn expand_values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let num = |s: &str| -> Result<f64, String> {
        match s {
            "Inf" | "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            "stale" => Ok(crate::prom::stale_nan()),
            _ => s.parse().map_err(|_| format!("{s:?} is not a number")),
        }
    };
    let mut out = Vec::new();
    for tok in text.split_whitespace() {
        if tok == "_" {
            out.push(None);
        } else if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("{tok:?}: bad repeat"))?;
            out.extend(std::iter::repeat_n(None, n));
        } else if let Some(x) = tok.rfind('x').filter(|x| *x > 0) {
            let (head, n) = (&tok[..x], &tok[x + 1..]);
            let n: usize = n.parse().map_err(|_| format!("{tok:?}: bad repeat"))?;
            let chars: Vec<char> = head.chars().collect();
            let split = (1..chars.len())
                .rev()
                .find(|i| (chars[*i] == '+' || chars[*i] == '-') && !matches!(chars[i - 1], 'e' | 'E'));
            let (a, b) = match split {
                Some(i) => {
                    let b = num(&head[i + 1..])?;
                    (num(&head[..i])?, if chars[i] == '-' { -b } else { b })
                }
                None => (num(head)?, 0.0),
            };
            for k in 0..=n {
                #[allow(clippy::cast_precision_loss)]
                out.push(Some(a + b * k as f64));
            }
        } else {
            out.push(Some(num(tok)?));
        }
    }
    Ok(out)
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `alert` or `record` name.
    pub name: String,
    /// Whether it is an alerting rule.
    pub is_alert: bool,
    /// The expression text.
    pub expr_text: String,
    expr: Expr,
    for_ms: i64,
    keep_firing_ms: i64,
    labels: Vec<(String, Template)>,
    annotations: Vec<(String, Template)>,
}

/// A checked group.
#[derive(Debug, Clone)]
pub struct Group {
    /// Name.
    pub name: String,
    /// The file it came from.
    pub file: String,
    /// Interval, ms.
    pub interval_ms: i64,
    /// Limit per rule (0: none).
    pub limit: usize,
    /// Rules.
    pub rules: Vec<Rule>,
}

/// Line numbers of the rules (`- alert:` / `- record:` lines) in document order.
fn rule_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start().trim_start_matches('-').trim_start();
            t.starts_with("alert:") || t.starts_with("record:")
        })
        .map(|(i, _)| i + 1)
        .collect()
}

/// Range of data any part of an expression reads before the evaluation time, ms.
fn lookback_needed(e: &Expr) -> i64 {
    use promql_parser::parser::Offset;
    let off = |o: Option<&Offset>| match o {
        Some(Offset::Pos(d)) => i64::try_from(d.as_millis()).unwrap_or(0),
        _ => 0,
    };
    match e {
        Expr::Aggregate(a) => lookback_needed(&a.expr).max(a.param.as_ref().map_or(0, |p| lookback_needed(p))),
        Expr::Unary(u) => lookback_needed(&u.expr),
        Expr::Binary(b) => lookback_needed(&b.lhs).max(lookback_needed(&b.rhs)),
        Expr::Paren(p) => lookback_needed(&p.expr),
        Expr::Subquery(s) => {
            i64::try_from(s.range.as_millis()).unwrap_or(0) + off(s.offset.as_ref()) + lookback_needed(&s.expr)
        }
        Expr::VectorSelector(vs) => 300_000 + off(vs.offset.as_ref()),
        Expr::MatrixSelector(ms) => i64::try_from(ms.range.as_millis()).unwrap_or(0) + off(ms.vs.offset.as_ref()),
        Expr::Call(c) => c.args.args.iter().map(|a| lookback_needed(a)).max().unwrap_or(0),
        _ => 0,
    }
}

/// Adds the metric names `e`'s selectors name exactly (`foo`, `{__name__="foo"}`) to `names`;
/// sets `open` when a selector names none exactly (`{__name__=~"f.*"}`, `{job="x"}`).
fn selected_names(e: &Expr, names: &mut BTreeSet<String>, open: &mut bool) {
    use promql_parser::label::MatchOp;
    let mut selector = |vs: &promql_parser::parser::VectorSelector, names: &mut BTreeSet<String>| {
        if let Some(n) = &vs.name {
            names.insert(n.clone());
            return;
        }
        let exact: Vec<&str> = vs
            .matchers
            .matchers
            .iter()
            .filter(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
            .map(|m| m.value.as_str())
            .collect();
        match exact.first() {
            Some(n) if vs.matchers.or_matchers.is_empty() => {
                names.insert((*n).to_string());
            }
            _ => *open = true,
        }
    };
    match e {
        Expr::Aggregate(a) => {
            selected_names(&a.expr, names, open);
            if let Some(p) = &a.param {
                selected_names(p, names, open);
            }
        }
        Expr::Unary(u) => selected_names(&u.expr, names, open),
        Expr::Binary(b) => {
            selected_names(&b.lhs, names, open);
            selected_names(&b.rhs, names, open);
        }
        Expr::Paren(p) => selected_names(&p.expr, names, open),
        Expr::Subquery(s) => selected_names(&s.expr, names, open),
        Expr::VectorSelector(vs) => selector(vs, names),
        Expr::MatrixSelector(ms) => selector(&ms.vs, names),
        Expr::Call(c) => {
            for a in &c.args.args {
                selected_names(a, names, open);
            }
        }
        _ => {}
    }
}

impl Rule {
    /// The metric names the expression selects, and whether some selector matches names by
    /// pattern or not at all (so the rule may read any metric).
    pub fn selected_metrics(&self) -> (BTreeSet<String>, bool) {
        let (mut names, mut open) = (BTreeSet::new(), false);
        selected_names(&self.expr, &mut names, &mut open);
        (names, open)
    }
}

/// Loads and checks one rule file's text. `default_interval_ms` applies to groups without
/// an interval.
///
/// # Errors
/// `file:line: group "g", rule 2 (HighLatency): expr: unsupported function foo`, or the YAML
/// error with its line and column.
pub fn load(text: &str, file: &str, default_interval_ms: i64) -> Result<Vec<Group>, String> {
    let de = serde_yaml::Deserializer::from_str(text);
    let parsed: RuleFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let loc = inner
            .location()
            .map_or(String::new(), |l| format!(":{}:{}", l.line(), l.column()));
        format!("{file}{loc}: {path}: {inner}")
    })?;
    let lines = rule_lines(text);
    let mut k = 0;
    let mut names = std::collections::HashSet::new();
    let mut groups = Vec::new();
    for g in parsed.groups {
        if !names.insert(g.name.clone()) {
            return Err(format!("{file}: group {:?}: duplicate group name", g.name));
        }
        let interval_ms = match &g.interval {
            Some(i) => parse_duration(i)
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("{file}: group {:?}: interval {i:?} is not a positive duration", g.name))?,
            None => default_interval_ms,
        };
        let mut rules = Vec::new();
        for (ri, r) in g.rules.into_iter().enumerate() {
            let line = lines.get(k).map_or(String::new(), |l| format!(":{l}"));
            k += 1;
            let what = r.alert.clone().or_else(|| r.record.clone()).unwrap_or_default();
            let at = format!("{file}{line}: group {:?}, rule {} ({what})", g.name, ri + 1);
            let is_alert = match (&r.alert, &r.record) {
                (Some(_), None) => true,
                (None, Some(rec)) => {
                    if !promql::valid_metric_name(rec) {
                        return Err(format!("{at}: record: {rec:?} is not a valid metric name"));
                    }
                    if r.for_.is_some() || r.keep_firing_for.is_some() || !r.annotations.is_empty() {
                        return Err(format!(
                            "{at}: for, keep_firing_for and annotations apply to alerting rules only"
                        ));
                    }
                    false
                }
                _ => return Err(format!("{at}: exactly one of alert and record is required")),
            };
            let expr_text = match &r.expr {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Number(n) => n.to_string(),
                _ => return Err(format!("{at}: expr: must be a string")),
            };
            let expr = promql::parse(&expr_text).map_err(|e| format!("{at}: expr: {e}"))?;
            let dur = |field: &str, v: &Option<String>| -> Result<i64, String> {
                match v {
                    None => Ok(0),
                    Some(s) => parse_duration(s).ok_or_else(|| format!("{at}: {field}: {s:?} is not a duration")),
                }
            };
            let for_ms = dur("for", &r.for_)?;
            let keep_firing_ms = dur("keep_firing_for", &r.keep_firing_for)?;
            let mut labels = Vec::new();
            for (k, v) in &r.labels {
                if !promql::valid_label_name(k) {
                    return Err(format!("{at}: labels: {k:?} is not a valid label name"));
                }
                labels.push((
                    k.clone(),
                    Template::parse(v).map_err(|e| format!("{at}: labels.{k}: {e}"))?,
                ));
            }
            let mut annotations = Vec::new();
            for (k, v) in &r.annotations {
                annotations.push((
                    k.clone(),
                    Template::parse(v).map_err(|e| format!("{at}: annotations.{k}: {e}"))?,
                ));
            }
            rules.push(Rule {
                name: what,
                is_alert,
                expr_text,
                expr,
                for_ms,
                keep_firing_ms,
                labels,
                annotations,
            });
        }
        groups.push(Group {
            name: g.name,
            file: file.to_string(),
            interval_ms,
            limit: g.limit.unwrap_or(0),
            rules,
        });
    }
    Ok(groups)
}

/// One alert instance of one rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Active {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    #[serde(with = "f64_bits")]
    value: f64,
    state: AlertState,
    active_at: i64,
    resolved_at: Option<i64>,
    keep_firing_since: Option<i64>,
}

/// f64 as its bits in JSON: NaN (stale markers) and infinities survive.
mod f64_bits {
    pub fn serialize<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.to_bits())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(f64::from_bits)
    }
}

/// A series in a [`RulePartState`]: its labels and (time ms, value bits).
type SeriesState = (Vec<(String, String)>, Vec<(i64, u64)>);

/// A group in a [`RulePartState`]: its index, next evaluation (ms), and per rule its alerts.
type GroupState = (usize, Option<i64>, Vec<Vec<(u64, Active)>>);

/// The part of a [`RuleEngine`]'s state that belongs to one partition: the series that came
/// from it (and the recorded series of its groups) and its groups' schedule and alerts. With
/// several workers it moves with the partition.
#[derive(Debug, Serialize, Deserialize)]
pub struct RulePartState {
    /// Series: labels, then (time ms, value bits) in time order.
    series: Vec<SeriesState>,
    /// Groups homed at the partition: (group index, next evaluation ms, per rule its alerts).
    groups: Vec<GroupState>,
    earliest_ms: Option<i64>,
}

/// Resolved alerts are kept this long (for Alertmanager), ms; Prometheus's `resolvedRetention`.
const RESOLVED_RETENTION_MS: i64 = 15 * 60_000;

/// Samples kept per series, and the series.
#[derive(Debug, Default)]
pub struct SeriesStore {
    series: Vec<Series>,
    index: HashMap<u64, usize>,
    by_name: HashMap<String, Vec<usize>>,
    postings: HashMap<(String, String), Vec<usize>>,
    /// Samples older than the series' newest, dropped.
    pub out_of_order: u64,
    /// Samples of new series past `max_series`, dropped.
    pub dropped_series: u64,
    /// Series at most.
    pub max_series: usize,
}

impl SeriesStore {
    /// A store of at most `max_series` series.
    pub fn new(max_series: usize) -> Self {
        SeriesStore {
            max_series,
            ..SeriesStore::default()
        }
    }

    /// Series held.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether it holds no series.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The series held, each with its samples in time order.
    pub fn series(&self) -> &[Series] {
        &self.series
    }

    /// Samples held.
    pub fn samples(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }

    /// Appends a sample (stale markers included; NaN values are kept as values).
    pub fn append(&mut self, s: &Sample) {
        self.append_labels(s.series_hash(), &s.labels, s.timestamp_ms, s.value);
    }

    fn append_labels(&mut self, hash: u64, labels: &[Label], t: i64, v: f64) {
        let i = match self.index.get(&hash) {
            Some(i) => *i,
            None => {
                if self.series.len() >= self.max_series {
                    self.dropped_series += 1;
                    return;
                }
                let l: Labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                let name = l.get("__name__").cloned().unwrap_or_default();
                let i = self.series.len();
                for (k, v) in &l {
                    if k != "__name__" {
                        self.postings.entry((k.clone(), v.clone())).or_default().push(i);
                    }
                }
                self.series.push(Series {
                    labels: l.into(),
                    samples: Vec::new(),
                });
                self.index.insert(hash, i);
                self.by_name.entry(name).or_default().push(i);
                i
            }
        };
        let s = &mut self.series[i].samples;
        match s.last() {
            Some((lt, _)) if *lt > t => self.out_of_order += 1,
            Some((lt, _)) if *lt == t => {
                if let Some(last) = s.last_mut() {
                    last.1 = v;
                }
            }
            _ => s.push((t, v)),
        }
    }

    /// Drops the series whose hash `gone` picks.
    pub fn remove_series(&mut self, gone: impl Fn(u64) -> bool) {
        let drop: std::collections::HashSet<usize> =
            self.index.iter().filter(|(h, _)| gone(**h)).map(|(_, i)| *i).collect();
        if drop.is_empty() {
            return;
        }
        let mut i = 0;
        self.series.retain(|_| {
            let keep = !drop.contains(&i);
            i += 1;
            keep
        });
        self.reindex();
    }

    /// Drops samples before `min_t` and series left empty.
    pub fn trim(&mut self, min_t: i64) {
        let mut removed = false;
        for s in &mut self.series {
            let k = s.samples.partition_point(|(t, _)| *t < min_t);
            if k > 0 {
                s.samples.drain(..k);
            }
            removed |= s.samples.is_empty();
        }
        if removed {
            self.series.retain(|s| !s.samples.is_empty());
            self.reindex();
        }
    }

    fn reindex(&mut self) {
        self.index.clear();
        self.by_name.clear();
        self.postings.clear();
        for (i, s) in self.series.iter().enumerate() {
            for (k, v) in s.labels.iter() {
                if k != "__name__" {
                    self.postings.entry((k.clone(), v.clone())).or_default().push(i);
                }
            }
            let labels: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            self.index.insert(crate::prom::series_hash(&labels), i);
            self.by_name
                .entry(s.labels.get("__name__").cloned().unwrap_or_default())
                .or_default()
                .push(i);
        }
    }

    /// An engine over the store (`closed_ranges`: Prometheus 2 window bounds).
    pub fn engine(&self, closed_ranges: bool) -> Engine<'_> {
        let mut e = Engine::with_index(&self.series, &self.by_name, &self.postings);
        e.closed_ranges = closed_ranges;
        e
    }
}

/// What an evaluation produced.
#[derive(Debug, Default)]
pub struct RuleOutput {
    /// Alert state changes.
    pub alerts: Vec<AlertTransition>,
    /// Recorded samples and `ALERTS` series, for remote-write.
    pub samples: Vec<Sample>,
    /// Evaluation errors: (group, rule, message).
    pub errors: Vec<(String, String, String)>,
    /// Evaluations done, and their total duration is the caller's to measure.
    pub evaluations: u64,
}

/// The rule engine.
#[derive(Debug)]
pub struct RuleEngine {
    groups: Vec<Group>,
    /// Per group, per rule: alert instances by fingerprint.
    active: Vec<Vec<HashMap<u64, Active>>>,
    /// Per group: next evaluation time, ms.
    next_eval: Vec<Option<i64>>,
    store: SeriesStore,
    retention_ms: i64,
    /// Evaluations skipped because event time jumped further than `max_catch_up` intervals.
    pub skipped_evaluations: u64,
    /// Evaluate with Prometheus 2's window bounds (see [`Engine::closed_ranges`]).
    pub prometheus2: bool,
    /// The earliest sample seen before the first evaluation: evaluation starts there, so a
    /// replay evaluates its history rather than only its end.
    earliest_ms: Option<i64>,
    /// Per group, whether this engine evaluates it (`None`: all). With several workers, each
    /// group is evaluated by the one that holds its series.
    owned: Option<Vec<bool>>,
    /// With several workers: each group's home partition, and the partition each series came
    /// from (by series hash), so a partition's part of the state can move.
    homes: Option<Vec<i32>>,
    partition_of: HashMap<u64, i32>,
}

/// Evaluations per group per watermark advance at most; a longer jump skips ahead.
const MAX_CATCH_UP: i64 = 1000;

fn sample(labels: &Labels, value: f64, t: i64) -> Sample {
    let l: Vec<Label> = labels
        .iter()
        .map(|(k, v)| (Arc::from(k.as_str()), Arc::from(v.as_str())))
        .collect();
    Sample::new(l, value, t)
}

impl RuleEngine {
    /// An engine for `groups`, keeping at most `max_series` series.
    pub fn new(groups: Vec<Group>, max_series: usize) -> Self {
        let retention_ms = groups
            .iter()
            .flat_map(|g| g.rules.iter().map(|r| lookback_needed(&r.expr)))
            .max()
            .unwrap_or(0)
            .max(300_000)
            + groups.iter().map(|g| g.interval_ms).max().unwrap_or(0);
        RuleEngine {
            active: groups.iter().map(|g| vec![HashMap::new(); g.rules.len()]).collect(),
            next_eval: vec![None; groups.len()],
            groups,
            store: SeriesStore::new(max_series),
            retention_ms,
            skipped_evaluations: 0,
            prometheus2: false,
            earliest_ms: None,
            owned: None,
            homes: None,
            partition_of: HashMap::new(),
        }
    }

    /// Each group's home partition (config order): recorded series belong to their group's.
    pub fn set_homes(&mut self, homes: Vec<i32>) {
        self.homes = Some(homes);
    }

    /// Stores samples that came from `partition`.
    pub fn process_from(&mut self, samples: &[Sample], partition: i32) {
        for s in samples {
            self.partition_of.insert(s.series_hash(), partition);
        }
        self.process(samples);
    }

    /// The part of the state that belongs to `partition`.
    pub fn snapshot_partition(&mut self, partition: i32) -> RulePartState {
        // Forget series the store has trimmed away.
        let live: std::collections::HashSet<u64> = self.store.index.keys().copied().collect();
        self.partition_of.retain(|h, _| live.contains(h));
        let mut series = Vec::new();
        for (h, i) in &self.store.index {
            if self.partition_of.get(h) == Some(&partition) {
                if let Some(s) = self.store.series.get(*i) {
                    series.push((
                        s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                        s.samples.iter().map(|(t, v)| (*t, v.to_bits())).collect(),
                    ));
                }
            }
        }
        let groups = self
            .homes
            .iter()
            .flatten()
            .enumerate()
            .filter(|(_, home)| **home == partition)
            .map(|(gi, _)| {
                let active = self.active[gi]
                    .iter()
                    .map(|m| m.iter().map(|(fp, a)| (*fp, a.clone())).collect())
                    .collect();
                (gi, self.next_eval[gi], active)
            })
            .collect();
        RulePartState {
            series,
            groups,
            earliest_ms: self.earliest_ms,
        }
    }

    /// Forgets the part of the state that belongs to `partition`: its series and its groups'
    /// alerts. For a partition that moved away, or whose state is read back from its
    /// checkpoint again: a series keeps only samples newer than its last, so a checkpoint's
    /// older samples restored over ones kept here would be refused, and the evaluations between
    /// would see no data.
    ///
    /// Its groups keep their schedule (a group not evaluated here lets its evaluation times
    /// pass), unless `restart`: then, until a checkpoint restores one, they start again at the
    /// first interval boundary after the earliest sample, as on a new engine. For a partition
    /// whose transitions since its last checkpoint were dropped (a fenced transaction).
    pub fn drop_partition(&mut self, partition: i32, restart: bool) {
        let of = &self.partition_of;
        self.store.remove_series(|h| of.get(&h) == Some(&partition));
        self.partition_of.retain(|_, x| *x != partition);
        for (gi, home) in self.homes.iter().flatten().enumerate() {
            if *home == partition {
                if restart {
                    self.next_eval[gi] = None;
                }
                for alerts in &mut self.active[gi] {
                    alerts.clear();
                }
            }
        }
    }

    /// Takes over a partition's part of the state (written by [`RuleEngine::snapshot_partition`]
    /// on another worker): its series are added to the store, its groups' schedules and alerts
    /// replace these.
    pub fn restore_partition(&mut self, partition: i32, state: RulePartState) {
        for (labels, samples) in state.series {
            let l: Arc<[Label]> = labels
                .iter()
                .map(|(k, v)| (Arc::from(k.as_str()), Arc::from(v.as_str())))
                .collect();
            for (t, bits) in samples {
                let s = Sample::new(l.clone(), f64::from_bits(bits), t);
                self.partition_of.insert(s.series_hash(), partition);
                self.store.append(&s);
            }
        }
        for (gi, next, active) in state.groups {
            if gi >= self.groups.len() || active.len() != self.groups[gi].rules.len() {
                continue;
            }
            self.next_eval[gi] = next;
            self.active[gi] = active.into_iter().map(|m| m.into_iter().collect()).collect();
        }
        if let Some(e) = state.earliest_ms {
            self.earliest_ms = Some(self.earliest_ms.map_or(e, |x| x.min(e)));
        }
    }

    /// Which groups this engine evaluates, by index (`None`: all). A group not evaluated keeps
    /// its schedule (its evaluation times pass) but reads and emits nothing.
    pub fn set_owned(&mut self, owned: Option<Vec<bool>>) {
        self.owned = owned;
    }

    /// The groups.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The series store.
    pub fn store(&self) -> &SeriesStore {
        &self.store
    }

    /// How far back samples are kept, ms.
    pub fn retention_ms(&self) -> i64 {
        self.retention_ms
    }

    /// Evaluation starts at the first interval boundary at or after `t_ms` (promtool starts at
    /// 0), whatever the samples say.
    pub fn start_at(&mut self, t_ms: i64) {
        self.earliest_ms = Some(t_ms);
    }

    /// Stores samples for evaluation.
    pub fn process(&mut self, samples: &[Sample]) {
        if self.next_eval.iter().all(Option::is_none) {
            if let Some(min) = samples.iter().map(|s| s.timestamp_ms).filter(|t| *t >= 0).min() {
                self.earliest_ms = Some(self.earliest_ms.map_or(min, |e| e.min(min)));
            }
        }
        for s in samples {
            self.store.append(s);
        }
    }

    /// Alerts pending or firing now.
    pub fn active_alerts(&self) -> Vec<AlertTransition> {
        self.active_alerts_where(|_| true)
    }

    /// Alerts pending or firing now in the groups whose home is `partition` (see
    /// [`RuleEngine::set_homes`]).
    pub fn active_alerts_in(&self, partition: i32) -> Vec<AlertTransition> {
        let homes = self.homes.as_deref().unwrap_or_default();
        self.active_alerts_where(|gi| homes.get(gi) == Some(&partition))
    }

    fn active_alerts_where(&self, group: impl Fn(usize) -> bool) -> Vec<AlertTransition> {
        let mut out = Vec::new();
        for (gi, g) in self.groups.iter().enumerate().filter(|(gi, _)| group(*gi)) {
            for (ri, r) in g.rules.iter().enumerate() {
                for (fp, a) in &self.active[gi][ri] {
                    if matches!(a.state, AlertState::Pending | AlertState::Firing) {
                        out.push(transition(*fp, a, a.state, a.active_at, g, r));
                    }
                }
            }
        }
        out
    }

    /// Event time reached `watermark` (ns): evaluates every group whose next evaluation time
    /// has passed, in order.
    pub fn on_watermark(&mut self, watermark: EventTime, out: &mut RuleOutput) {
        let all = vec![watermark; self.groups.len()];
        self.on_watermarks(&all, out);
    }

    /// Like [`RuleEngine::on_watermark`] with a watermark per group (ns, in group order): with
    /// several workers each group follows the event time of the partition holding its series.
    /// A group with no watermark entry waits.
    pub fn on_watermarks(&mut self, watermarks: &[EventTime], out: &mut RuleOutput) {
        let wms: Vec<i64> = (0..self.groups.len())
            .map(|gi| i64::try_from(watermarks.get(gi).copied().unwrap_or(0) / 1_000_000).unwrap_or(i64::MAX))
            .collect();
        // Nothing to evaluate before the first sample: event time starts with the data.
        if self.earliest_ms.is_none() && self.next_eval.iter().all(Option::is_none) {
            return;
        }
        let evaluations = out.evaluations;
        loop {
            // The group due earliest goes first, so recorded series feed later evaluations.
            let mut due: Option<(i64, usize)> = None;
            let earliest = self.earliest_ms;
            for (gi, g) in self.groups.iter().enumerate() {
                let wm = wms[gi];
                // First evaluation: the first interval boundary at or after the earliest sample
                // (or the watermark's, with no samples yet).
                let next = *self.next_eval[gi].get_or_insert_with(|| match earliest {
                    Some(e) => (e + g.interval_ms - 1).div_euclid(g.interval_ms) * g.interval_ms,
                    None => wm.div_euclid(g.interval_ms) * g.interval_ms,
                });
                if next <= wm && due.is_none_or(|(t, _)| next < t) {
                    due = Some((next, gi));
                }
            }
            let Some((t, gi)) = due else { break };
            let wm = wms[gi];
            let interval = self.groups[gi].interval_ms;
            if (wm - t) / interval > MAX_CATCH_UP {
                let skip_to = wm.div_euclid(interval) * interval;
                self.skipped_evaluations += u64::try_from((skip_to - t) / interval).unwrap_or(0);
                self.next_eval[gi] = Some(skip_to);
                continue;
            }
            self.eval_group(gi, t, out);
            self.next_eval[gi] = Some(t + interval);
        }
        // Trimming walks every series: only when something was evaluated; by the slowest group.
        if out.evaluations > evaluations {
            let slowest = wms.iter().copied().min().unwrap_or(0);
            self.store.trim(slowest - self.retention_ms);
        }
    }

    /// Whether a group is due at `watermark` (ns): a cheap check for the driver, which can
    /// then evaluate right after a batch rather than at its next tick.
    pub fn due(&self, watermark: EventTime) -> bool {
        self.due_at(&vec![watermark; self.groups.len()])
    }

    /// [`RuleEngine::due`] with a watermark per group.
    pub fn due_at(&self, watermarks: &[EventTime]) -> bool {
        self.next_eval.iter().enumerate().any(|(gi, n)| {
            let wm = i64::try_from(watermarks.get(gi).copied().unwrap_or(0) / 1_000_000).unwrap_or(i64::MAX);
            n.is_some_and(|n| n <= wm)
        }) || (self.earliest_ms.is_some() && self.next_eval.iter().any(Option::is_none))
    }

    /// Evaluates group `gi` at `t` ms.
    pub fn eval_group(&mut self, gi: usize, t: i64, out: &mut RuleOutput) {
        if self.owned.as_ref().is_some_and(|o| !o.get(gi).copied().unwrap_or(true)) {
            return;
        }
        for ri in 0..self.groups[gi].rules.len() {
            out.evaluations += 1;
            let result = {
                let mut engine = self.store.engine(self.prometheus2);
                engine.instant(&self.groups[gi].rules[ri].expr, t)
            };
            let g = &self.groups[gi];
            let r = &g.rules[ri];
            let elems = match result {
                Ok(Value::Vector(v)) => v,
                Ok(Value::Scalar(x)) => vec![promql::Element::new(Labels::new(), x)],
                Ok(_) => {
                    out.errors.push((
                        g.name.clone(),
                        r.name.clone(),
                        "expression is not a vector or scalar".into(),
                    ));
                    continue;
                }
                Err(e) => {
                    out.errors.push((g.name.clone(), r.name.clone(), e));
                    continue;
                }
            };
            if g.limit > 0 && elems.len() > g.limit {
                out.errors.push((
                    g.name.clone(),
                    r.name.clone(),
                    format!("exceeded limit of {} with {} series", g.limit, elems.len()),
                ));
                continue;
            }
            if r.is_alert {
                self.eval_alert(gi, ri, t, elems, out);
            } else {
                let mut seen = std::collections::HashSet::new();
                let mut recorded = Vec::new();
                for el in elems {
                    let mut labels = std::sync::Arc::unwrap_or_clone(el.labels);
                    labels.insert("__name__".into(), r.name.clone());
                    for (k, tpl) in &r.labels {
                        labels.insert(k.clone(), tpl.render(&BTreeMap::new(), el.value));
                    }
                    if !seen.insert(labels.clone()) {
                        out.errors.push((
                            g.name.clone(),
                            r.name.clone(),
                            "vector contains metrics with the same labelset after applying rule labels".into(),
                        ));
                        recorded.clear();
                        break;
                    }
                    recorded.push(sample(&labels, el.value, t));
                }
                let home = self.homes.as_ref().and_then(|h| h.get(gi).copied());
                for s in &recorded {
                    if let Some(x) = home {
                        self.partition_of.insert(s.series_hash(), x);
                    }
                    self.store.append(s);
                }
                out.samples.extend(recorded);
            }
        }
    }

    fn eval_alert(&mut self, gi: usize, ri: usize, t: i64, elems: Vec<promql::Element>, out: &mut RuleOutput) {
        let g = &self.groups[gi];
        let r = &g.rules[ri];
        let active = &mut self.active[gi][ri];
        let mut seen: std::collections::HashSet<u64> = std::collections::HashSet::new();
        for el in elems {
            let mut labels: Labels = (*el.labels).clone();
            labels.remove("__name__");
            // Templates see the expression's labels.
            let base = labels.clone();
            for (k, tpl) in &r.labels {
                let v = tpl.render(&base, el.value);
                if v.is_empty() {
                    labels.remove(k);
                } else {
                    labels.insert(k.clone(), v);
                }
            }
            labels.insert("alertname".into(), r.name.clone());
            let annotations: BTreeMap<String, String> = r
                .annotations
                .iter()
                .map(|(k, tpl)| (k.clone(), tpl.render(&base, el.value)))
                .collect();
            let fp = fingerprint(&labels);
            if !seen.insert(fp) {
                out.errors.push((
                    g.name.clone(),
                    r.name.clone(),
                    "vector contains metrics with the same labelset after applying alert labels".into(),
                ));
                return;
            }
            match active.get_mut(&fp) {
                Some(a) if a.state != AlertState::Inactive => {
                    a.value = el.value;
                    a.annotations = annotations;
                }
                _ => {
                    active.insert(
                        fp,
                        Active {
                            labels,
                            annotations,
                            value: el.value,
                            state: AlertState::Pending,
                            active_at: t,
                            resolved_at: None,
                            keep_firing_since: None,
                        },
                    );
                }
            }
        }
        let mut remove = Vec::new();
        let mut fps: Vec<u64> = active.keys().copied().collect();
        fps.sort_unstable();
        for fp in fps {
            let Some(a) = active.get_mut(&fp) else { continue };
            if seen.contains(&fp) {
                a.keep_firing_since = None;
                if a.state == AlertState::Pending && a.active_at == t && r.for_ms > 0 {
                    out.alerts.push(transition(fp, a, AlertState::Pending, t, g, r));
                }
                if a.state == AlertState::Pending && t - a.active_at >= r.for_ms {
                    a.state = AlertState::Firing;
                    out.alerts.push(transition(fp, a, AlertState::Firing, t, g, r));
                }
                continue;
            }
            let mut keep = false;
            if a.state == AlertState::Firing && r.keep_firing_ms > 0 {
                let since = *a.keep_firing_since.get_or_insert(t);
                keep = t - since < r.keep_firing_ms;
            }
            if a.state == AlertState::Pending || a.resolved_at.is_some_and(|ra| t - ra > RESOLVED_RETENTION_MS) {
                remove.push(fp);
            }
            if a.state != AlertState::Inactive && !keep {
                let was = a.state;
                a.state = AlertState::Inactive;
                a.resolved_at = Some(t);
                let reported = if was == AlertState::Firing {
                    AlertState::Resolved
                } else {
                    AlertState::Inactive
                };
                out.alerts.push(transition(fp, a, reported, t, g, r));
            }
        }
        for fp in remove {
            active.remove(&fp);
        }
        // ALERTS{alertname, alertstate, ...} for pending and firing alerts.
        for a in active.values() {
            let state = match a.state {
                AlertState::Pending => "pending",
                AlertState::Firing => "firing",
                _ => continue,
            };
            let mut l = a.labels.clone();
            l.insert("__name__".into(), "ALERTS".into());
            l.insert("alertstate".into(), state.into());
            out.samples.push(sample(&l, 1.0, t));
        }
    }
}

fn transition(fp: u64, a: &Active, state: AlertState, t: i64, g: &Group, r: &Rule) -> AlertTransition {
    #[allow(clippy::cast_sign_loss)]
    let ns = |ms: i64| ms.max(0) as u64 * 1_000_000;
    AlertTransition {
        fingerprint: fp,
        state,
        labels: a.labels.clone(),
        annotations: a.annotations.clone(),
        value: a.value,
        active_since: Some(ns(a.active_at)),
        event_time: ns(t),
        group: g.name.clone(),
        expr: r.expr_text.clone(),
    }
}

#[cfg(test)]
mod tests;
