//! `dwcp-monitor test-rules FILE...`: rule unit tests in promtool's test-file format, so users
//! keep the tests they have.
//!
//! Supported: `rule_files`, `evaluation_interval`, `tests[]` with `interval`, `input_series`
//! (`series`, `values` in the expanding notation: `1+2x3`, `5-1x4`, `7x2`, `_`, `_x3`,
//! `stale`), `alert_rule_test` (`eval_time`, `alertname`, `exp_alerts` with `exp_labels` and
//! `exp_annotations`; firing alerts only, `alertname` added to the expected labels, as promtool
//! does) and `promql_expr_test` (`expr`, `eval_time`, `exp_samples` with `labels` and `value`).
//! Rule groups are evaluated from time 0 at their intervals (`evaluation_interval` for groups
//! without one), as promtool does. `--prometheus-version 2` evaluates with Prometheus 2's
//! window bounds (range selectors include their left end), as promtool 2.x does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dwcp_operators::alerts::AlertState;
use dwcp_operators::prom::{Label, Sample};
use dwcp_operators::promql::{self, Value};
pub use dwcp_operators::rules::expand_values;
use dwcp_operators::rules::{self, parse_duration, RuleEngine, RuleOutput};
use serde::Deserialize;

/// A promtool test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// Rule files, relative to the test file.
    pub rule_files: Vec<PathBuf>,
    /// Interval of groups without one.
    #[serde(default)]
    pub evaluation_interval: Option<String>,
    /// Order of groups (accepted; groups are evaluated in file order).
    #[serde(default)]
    pub group_eval_order: Vec<String>,
    /// The tests.
    pub tests: Vec<TestGroup>,
}

/// One test.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestGroup {
    /// Name, for messages.
    #[serde(default)]
    pub name: Option<String>,
    /// Step of the input series.
    #[serde(default)]
    pub interval: Option<String>,
    /// Input series.
    #[serde(default)]
    pub input_series: Vec<InputSeries>,
    /// Alert checks.
    #[serde(default)]
    pub alert_rule_test: Vec<AlertTest>,
    /// Expression checks.
    #[serde(default)]
    pub promql_expr_test: Vec<ExprTest>,
    /// External labels (accepted, unused by the supported templates).
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
}

/// An input series.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSeries {
    /// `name{label="value"}`.
    pub series: String,
    /// Values in the expanding notation.
    pub values: String,
}

/// An alert check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertTest {
    /// When.
    pub eval_time: String,
    /// Which alert.
    pub alertname: String,
    /// The firing alerts expected.
    #[serde(default)]
    pub exp_alerts: Vec<ExpAlert>,
}

/// An expected alert.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpAlert {
    /// Labels, without `alertname`.
    #[serde(default)]
    pub exp_labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub exp_annotations: BTreeMap<String, String>,
}

/// An expression check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExprTest {
    /// The expression.
    pub expr: String,
    /// When.
    pub eval_time: String,
    /// Expected samples.
    #[serde(default)]
    pub exp_samples: Vec<ExpSample>,
}

/// An expected sample.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpSample {
    /// `name{label="value"}`.
    #[serde(default)]
    pub labels: String,
    /// Value.
    pub value: f64,
}

/// Parses `name{a="b"}` with promql-parser into sorted labels.
///
/// # Errors
/// When it is not a series selector of equality matchers.
pub fn parse_series(text: &str) -> Result<BTreeMap<String, String>, String> {
    let text = text.trim();
    if text.is_empty() || text == "{}" {
        return Ok(BTreeMap::new());
    }
    let e = promql_parser::parser::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
    let promql_parser::parser::Expr::VectorSelector(vs) = e else {
        return Err(format!("{text:?} is not a series"));
    };
    let mut out = BTreeMap::new();
    if let Some(n) = vs.name {
        out.insert("__name__".to_string(), n);
    }
    for m in vs.matchers.matchers {
        if !matches!(m.op, promql_parser::label::MatchOp::Equal) {
            return Err(format!("{text:?}: only = matchers describe a series"));
        }
        if !m.value.is_empty() {
            out.insert(m.name, m.value);
        }
    }
    Ok(out)
}

fn to_sample(labels: &BTreeMap<String, String>, v: f64, t: i64) -> Sample {
    let l: Vec<Label> = labels
        .iter()
        .map(|(k, v)| (Arc::from(k.as_str()), Arc::from(v.as_str())))
        .collect();
    Sample::new(l, v, t)
}

fn duration(field: &str, s: &str) -> Result<i64, String> {
    parse_duration(s).ok_or_else(|| format!("{field}: {s:?} is not a duration"))
}

/// A check at one time.
enum Check<'a> {
    Alert(&'a AlertTest),
    Expr(&'a ExprTest),
}

fn floats_equal(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-6 * a.abs().max(b.abs())
}

/// Runs one test file; returns the failures (empty: passed).
///
/// # Errors
/// When the file, a rule file or a test cannot be read or parsed.
#[allow(clippy::too_many_lines)]
pub fn run_file(path: &Path, prometheus2: bool) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: TestFile = serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(&text))
        .map_err(|e| format!("{}: {}: {}", path.display(), e.path(), e.inner()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let default_interval = match &file.evaluation_interval {
        Some(s) => duration("evaluation_interval", s)?,
        None => 60_000,
    };
    let mut groups = Vec::new();
    for rf in &file.rule_files {
        let p = dir.join(rf);
        let t = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        groups.extend(rules::load(&t, &p.display().to_string(), default_interval)?);
    }
    let mut failures = Vec::new();
    for (ti, test) in file.tests.iter().enumerate() {
        let name = test.name.clone().unwrap_or_else(|| format!("tests[{ti}]"));
        let step = match &test.interval {
            Some(s) => duration("interval", s)?,
            None => default_interval,
        };
        let mut engine = RuleEngine::new(groups.clone(), 1_000_000);
        engine.prometheus2 = prometheus2;
        engine.start_at(0);
        let mut input = Vec::new();
        for s in &test.input_series {
            let labels = parse_series(&s.series)?;
            for (k, v) in expand_values(&s.values)?.into_iter().enumerate() {
                if let Some(v) = v {
                    input.push(to_sample(&labels, v, i64::try_from(k).unwrap_or(0) * step));
                }
            }
        }
        input.sort_by_key(|s| s.timestamp_ms);
        engine.process(&input);
        let mut checks: Vec<(i64, Check<'_>)> = Vec::new();
        for a in &test.alert_rule_test {
            checks.push((duration("eval_time", &a.eval_time)?, Check::Alert(a)));
        }
        for e in &test.promql_expr_test {
            checks.push((duration("eval_time", &e.eval_time)?, Check::Expr(e)));
        }
        checks.sort_by_key(|c| c.0);
        let mut out = RuleOutput::default();
        engine.on_watermark(0, &mut out);
        for (t, check) in checks {
            #[allow(clippy::cast_sign_loss)]
            engine.on_watermark(t.max(0) as u64 * 1_000_000, &mut out);
            match check {
                Check::Alert(a) => {
                    let mut got: Vec<(BTreeMap<String, String>, BTreeMap<String, String>)> = engine
                        .active_alerts()
                        .into_iter()
                        .filter(|x| x.state == AlertState::Firing && x.alertname() == a.alertname)
                        .map(|x| (x.labels, x.annotations))
                        .collect();
                    let mut want: Vec<(BTreeMap<String, String>, BTreeMap<String, String>)> = a
                        .exp_alerts
                        .iter()
                        .map(|e| {
                            let mut l = e.exp_labels.clone();
                            l.insert("alertname".into(), a.alertname.clone());
                            (l, e.exp_annotations.clone())
                        })
                        .collect();
                    got.sort();
                    want.sort();
                    if got != want {
                        failures.push(format!(
                            "{name}: alertname: {}, time: {}:\n    exp: {want:?}\n    got: {got:?}",
                            a.alertname, a.eval_time
                        ));
                    }
                }
                Check::Expr(e) => {
                    let expr = match promql::parse(&e.expr) {
                        Ok(x) => x,
                        Err(err) => {
                            failures.push(format!("{name}: expr: {:?}: {err}", e.expr));
                            continue;
                        }
                    };
                    let result = engine.store().engine(prometheus2).instant(&expr, t);
                    let got: Vec<(BTreeMap<String, String>, f64)> = match result {
                        Ok(Value::Vector(v)) => v
                            .into_iter()
                            .map(|el| (std::sync::Arc::unwrap_or_clone(el.labels), el.value))
                            .collect(),
                        Ok(Value::Scalar(x)) => vec![(BTreeMap::new(), x)],
                        Ok(_) => Vec::new(),
                        Err(err) => {
                            failures.push(format!("{name}: expr: {:?}, time: {}: {err}", e.expr, e.eval_time));
                            continue;
                        }
                    };
                    let mut want = Vec::new();
                    for s in &e.exp_samples {
                        want.push((parse_series(&s.labels)?, s.value));
                    }
                    let ok = got.len() == want.len()
                        && want
                            .iter()
                            .all(|(l, v)| got.iter().any(|(gl, gv)| gl == l && floats_equal(*gv, *v)));
                    if !ok {
                        failures.push(format!(
                            "{name}: expr: {:?}, time: {}:\n    exp: {want:?}\n    got: {got:?}",
                            e.expr, e.eval_time
                        ));
                    }
                }
            }
        }
        for (group, rule, err) in &out.errors {
            failures.push(format!(
                "{name}: group {group:?}, rule {rule}: evaluation failed: {err}"
            ));
        }
    }
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expanding_notation() {
        let v = expand_values("1+2x3 _ 5-1x2 7x1 _x2 stale").expect("values");
        let nums: Vec<Option<f64>> = v.iter().map(|x| x.filter(|f| !f.is_nan())).collect();
        assert_eq!(
            nums,
            vec![
                Some(1.0),
                Some(3.0),
                Some(5.0),
                Some(7.0),
                None,
                Some(5.0),
                Some(4.0),
                Some(3.0),
                Some(7.0),
                Some(7.0),
                None,
                None,
                None
            ]
        );
        assert!(v[12].is_some_and(|x| x.to_bits() == dwcp_operators::prom::STALE_NAN_BITS));
        assert!(expand_values("1+x").is_err());
    }
}
