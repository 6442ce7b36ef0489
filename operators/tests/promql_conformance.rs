//! Prometheus's own PromQL test files (../shared/conformance/promql, the promqltest scripting
//! language described in its FORMAT.md) run through our evaluator.
//!
//! A case counts as *eligible* when its query parses with promql-parser, uses only the
//! constructs the evaluator supports (`dwcp_operators::promql::check`), and its data has no
//! native histograms. The test prints, per file, the eval cases, the eligible ones and how many
//! of those pass, and fails when fewer than 90 % of the eligible cases pass. Expected
//! annotations (warn/info) are not checked: the evaluator does not produce them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dwcp_operators::promql::{self, Engine, Labels, Series, Value};

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/promql")
}

/// A duration of the test files: promql's (`1h30m`, `5m`, `0`), negative, or bare seconds.
fn duration_ms(s: &str) -> Option<i64> {
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let ms = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<i64>().ok()? * 1000
    } else {
        dwcp_operators::rules::parse_duration(s)?
    };
    Some(if neg { -ms } else { ms })
}

fn parse_value(s: &str) -> Option<f64> {
    expand(&[s]).and_then(|v| v.first().copied().flatten())
}

/// Expands the promtool series notation (shared with `dwcp-monitor test-rules`).
fn expand(tokens: &[&str]) -> Option<Vec<Option<f64>>> {
    dwcp_operators::rules::expand_values(&tokens.join(" ")).ok()
}

/// Splits `metric{a="b c"} 1 2` into the series descriptor and the rest.
fn split_series(line: &str) -> (&str, &str) {
    let (mut depth, mut quote) = (0, None::<char>);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) => {
                if c == q && prev != '\\' {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' | '`' => quote = Some(c),
                '{' => depth += 1,
                '}' => depth -= 1,
                c if c.is_whitespace() && depth == 0 => return (&line[..i], line[i..].trim()),
                _ => {}
            },
        }
        prev = c;
    }
    (line, "")
}

/// Parses `name{l="v", ...}` into labels.
fn parse_labels(desc: &str) -> Option<Labels> {
    let mut labels = Labels::new();
    let (name, rest) = match desc.find('{') {
        Some(i) => (&desc[..i], &desc[i..]),
        None => (desc, ""),
    };
    if !name.is_empty() {
        labels.insert("__name__".into(), name.to_string());
    }
    let inner = rest.trim().strip_prefix('{').and_then(|r| r.strip_suffix('}'));
    let Some(inner) = inner else {
        return if rest.is_empty() { Some(labels) } else { None };
    };
    let chars: Vec<char> = inner.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        let mut key = String::new();
        if chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                key.push(chars[i]);
                i += 1;
            }
            i += 1;
        } else {
            while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
                key.push(chars[i]);
                i += 1;
            }
        }
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == '=') {
            i += 1;
        }
        let q = *chars.get(i)?;
        if q != '"' && q != '\'' && q != '`' {
            // A bare quoted name inside braces: {"metric"}.
            labels.insert("__name__".into(), key);
            continue;
        }
        i += 1;
        let mut val = String::new();
        while i < chars.len() && chars[i] != q {
            if chars[i] == '\\' && q != '`' && i + 1 < chars.len() {
                i += 1;
                val.push(match chars[i] {
                    'n' => '\n',
                    't' => '\t',
                    c => c,
                });
            } else {
                val.push(chars[i]);
            }
            i += 1;
        }
        i += 1;
        if !val.is_empty() || key == "__name__" {
            labels.insert(key, val);
        }
    }
    Some(labels)
}

#[derive(Debug)]
enum Expected {
    Scalar(f64),
    String(String),
    Series(Vec<(Labels, Vec<Option<f64>>)>),
}

#[derive(Debug)]
struct Case {
    line: usize,
    query: String,
    /// Instant at t, or range (start, end, step).
    instant: Option<i64>,
    range: Option<(i64, i64, i64)>,
    fail: bool,
    ordered: bool,
    range_vector: Option<(i64, i64, i64)>,
    expected: Expected,
    has_histograms: bool,
}

fn floats_equal(a: f64, b: f64) -> bool {
    if a == b || (a.is_nan() && b.is_nan()) {
        return true;
    }
    let diff = (a - b).abs();
    let min_normal = f64::MIN_POSITIVE;
    if a == 0.0 || b == 0.0 || a.abs() + b.abs() < min_normal {
        return diff < 1e-6 * min_normal;
    }
    diff / (a.abs() + b.abs()).min(f64::MAX) < 1e-6
}

fn run_case(series: &[Series], c: &Case) -> Result<(), String> {
    let expr = promql::parse(&c.query).map_err(|e| format!("parse: {e}"))?;
    let mut engine = Engine::new(series);
    let result: Result<Value, String> = match (c.instant, c.range) {
        (Some(t), _) => engine.instant(&expr, t),
        (_, Some((s, e, step))) => engine.range(&expr, s, e, step).map(Value::Matrix),
        _ => return Err("no time".into()),
    };
    if c.fail {
        return match result {
            Err(_) => Ok(()),
            Ok(v) => Err(format!("expected a failure, got {v:?}")),
        };
    }
    let got = result.map_err(|e| format!("error: {e}"))?;
    match (&c.expected, got) {
        (Expected::Scalar(want), Value::Scalar(x)) => {
            if floats_equal(*want, x) {
                Ok(())
            } else {
                Err(format!("scalar {x}, want {want}"))
            }
        }
        (Expected::String(want), Value::String(s)) => {
            if *want == s {
                Ok(())
            } else {
                Err(format!("string {s:?}, want {want:?}"))
            }
        }
        (Expected::Series(want), Value::Vector(v)) if c.instant.is_some() => {
            if want.len() != v.len() {
                return Err(format!("{} elements, want {}: got {v:?}", v.len(), want.len()));
            }
            for (i, (labels, vals)) in want.iter().enumerate() {
                let w = vals.first().copied().flatten().unwrap_or(f64::NAN);
                let found = if c.ordered {
                    v.get(i).filter(|e| *e.labels == *labels)
                } else {
                    v.iter().find(|e| *e.labels == *labels)
                };
                match found {
                    Some(e) if floats_equal(e.value, w) => {}
                    Some(e) => return Err(format!("{labels:?}: {} want {w}", e.value)),
                    None => return Err(format!("{labels:?} missing (ordered {}): got {v:?}", c.ordered)),
                }
            }
            Ok(())
        }
        (Expected::Series(want), Value::Matrix(m)) => {
            // Range query, or an instant query returning a range vector.
            let steps: Vec<i64> = match (c.range, c.range_vector) {
                (Some((s, e, st)), _) | (None, Some((s, e, st))) => {
                    let mut v = Vec::new();
                    let mut t = s;
                    while t <= e {
                        v.push(t);
                        if st <= 0 {
                            break;
                        }
                        t += st;
                    }
                    v
                }
                _ => Vec::new(),
            };
            let nonempty: Vec<&(Labels, Vec<Option<f64>>)> = want
                .iter()
                .filter(|(_, vals)| vals.iter().any(Option::is_some))
                .collect();
            if nonempty.len() != m.len() {
                return Err(format!("{} series, want {}: got {m:?}", m.len(), nonempty.len()));
            }
            for (labels, vals) in nonempty {
                let Some(s) = m.iter().find(|s| *s.labels == *labels) else {
                    return Err(format!("{labels:?} missing: got {m:?}"));
                };
                let want_points: Vec<(i64, f64)> = if c.range_vector.is_some() || c.range.is_some() {
                    steps.iter().zip(vals).filter_map(|(t, v)| v.map(|v| (*t, v))).collect()
                } else {
                    Vec::new()
                };
                if want_points.len() != s.samples.len() {
                    return Err(format!("{labels:?}: points {:?}, want {want_points:?}", s.samples));
                }
                for ((wt, wv), (gt, gv)) in want_points.iter().zip(&s.samples) {
                    if wt != gt || !floats_equal(*wv, *gv) {
                        return Err(format!("{labels:?}: points {:?}, want {want_points:?}", s.samples));
                    }
                }
            }
            Ok(())
        }
        (Expected::Series(want), Value::Scalar(x)) if c.range.is_none() && want.len() == 1 && want[0].0.is_empty() => {
            // A scalar written as `{} 1`.
            let w = want[0].1.first().copied().flatten().unwrap_or(f64::NAN);
            if floats_equal(w, x) {
                Ok(())
            } else {
                Err(format!("scalar {x}, want {w}"))
            }
        }
        (want, got) => Err(format!("got {got:?}, want {want:?}")),
    }
}

/// Whether an expression selects a metric in `names` (or any metric, by matchers only, while
/// `names` is not empty).
fn selects_any(e: &promql_parser::parser::Expr, names: &std::collections::BTreeSet<String>) -> bool {
    use promql_parser::parser::Expr;
    if names.is_empty() {
        return false;
    }
    let vs_hits = |vs: &promql_parser::parser::VectorSelector| match &vs.name {
        Some(n) => names.contains(n),
        None => vs
            .matchers
            .matchers
            .iter()
            .any(|m| m.name == "__name__" && names.iter().any(|n| m.is_match(n))),
    };
    match e {
        Expr::Aggregate(a) => selects_any(&a.expr, names) || a.param.as_ref().is_some_and(|p| selects_any(p, names)),
        Expr::Unary(u) => selects_any(&u.expr, names),
        Expr::Binary(b) => selects_any(&b.lhs, names) || selects_any(&b.rhs, names),
        Expr::Paren(p) => selects_any(&p.expr, names),
        Expr::Subquery(s) => selects_any(&s.expr, names),
        Expr::VectorSelector(vs) => vs_hits(vs),
        Expr::MatrixSelector(ms) => vs_hits(&ms.vs),
        Expr::Call(c) => c.args.args.iter().any(|a| selects_any(a, names)),
        _ => false,
    }
}

#[derive(Default)]
struct FileResult {
    cases: usize,
    eligible: usize,
    passed: usize,
    failures: Vec<String>,
}

/// `(instant time, range (start, end, step), query)` of an eval line.
type TimeSpec = (Option<i64>, Option<(i64, i64, i64)>, String);

fn parse_time_spec(rest: &str) -> Option<TimeSpec> {
    let words: Vec<&str> = rest.splitn(2, ' ').collect();
    if words.first() == Some(&"instant") {
        // instant at <t> <query>
        let r = words.get(1)?.strip_prefix("at ")?;
        let (t, q) = r.split_once(' ')?;
        return Some((Some(duration_ms(t)?), None, q.trim().to_string()));
    }
    if words.first() == Some(&"range") {
        // range from <s> to <e> step <st> <query>
        let r = words.get(1)?.strip_prefix("from ")?;
        let (s, r) = r.split_once(" to ")?;
        let (e, r) = r.split_once(" step ")?;
        let (st, q) = r.split_once(' ')?;
        return Some((
            None,
            Some((duration_ms(s)?, duration_ms(e)?, duration_ms(st)?)),
            q.trim().to_string(),
        ));
    }
    None
}

#[allow(clippy::too_many_lines)]
fn run_file(path: &Path) -> FileResult {
    let text = std::fs::read_to_string(path).expect("read test file");
    let lines: Vec<&str> = text.lines().collect();
    let mut result = FileResult::default();
    let mut series: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
    let mut has_histograms = false;
    // Metric names whose data the evaluator does not support (native histograms, start
    // timestamps); a query selecting one is not eligible.
    let mut unsupported: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || line.starts_with([' ', '\t']) {
            i += 1;
            continue;
        }
        // The block: following lines that are indented or not a command.
        let mut block = Vec::new();
        let mut j = i + 1;
        while j < lines.len() {
            let l = lines[j];
            let t = l.trim();
            if t.is_empty() {
                break;
            }
            if !l.starts_with([' ', '\t']) && (t.starts_with("load") || t.starts_with("eval") || t == "clear") {
                break;
            }
            if !t.starts_with('#') {
                block.push(t);
            }
            j += 1;
        }
        if trimmed == "clear" {
            series.clear();
            unsupported.clear();
            has_histograms = false;
        } else if let Some(rest) = trimmed.strip_prefix("load") {
            // `load <interval>` or `load_with_nhcb <interval>` (classic histograms also loaded
            // as native ones under their base name).
            let (variant, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let interval = duration_ms(rest.trim()).unwrap_or(60_000);
            for l in &block {
                let (desc, points) = split_series(l);
                let name = desc.split('{').next().unwrap_or_default().to_string();
                if variant == "_with_nhcb" {
                    for suffix in ["_bucket", "_count", "_sum"] {
                        if let Some(base) = name.strip_suffix(suffix) {
                            unsupported.insert(base.to_string());
                        }
                    }
                }
                // Native histogram samples and start timestamps (`@st`) are not supported.
                if points.contains("{{") || desc.ends_with("@st") {
                    unsupported.insert(name.trim_end_matches("@st").to_string());
                    if desc.ends_with("@st") {
                        continue;
                    }
                }
                if points.contains("{{") {
                    has_histograms = true;
                    continue;
                }
                let (Some(labels), Some(vals)) = (
                    parse_labels(desc),
                    expand(&points.split_whitespace().collect::<Vec<_>>()),
                ) else {
                    continue;
                };
                let s = series.entry(labels).or_default();
                for (k, v) in vals.into_iter().enumerate() {
                    if let Some(v) = v {
                        s.push((k as i64 * interval, v));
                    }
                }
                s.sort_by_key(|p| p.0);
            }
        } else if let Some(rest) = trimmed.strip_prefix("eval") {
            result.cases += 1;
            let (variant, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            let mut fail = variant == "_fail";
            let mut ordered = variant == "_ordered";
            let Some((instant, range, query)) = parse_time_spec(rest.trim()) else {
                i = j;
                continue;
            };
            let mut range_vector = None;
            let mut expected_series = Vec::new();
            let mut expected = None;
            let mut bad = false;
            for l in &block {
                if let Some(e) = l.strip_prefix("expect ") {
                    let e = e.trim();
                    if e.starts_with("fail") {
                        fail = true;
                    } else if e.starts_with("ordered") {
                        ordered = true;
                    } else if let Some(r) = e.strip_prefix("range vector from ") {
                        let parsed = (|| {
                            let (s, r) = r.split_once(" to ")?;
                            let (e, st) = r.split_once(" step ")?;
                            Some((duration_ms(s.trim())?, duration_ms(e.trim())?, duration_ms(st.trim())?))
                        })();
                        match parsed {
                            Some(p) => range_vector = Some(p),
                            None => bad = true,
                        }
                    } else if let Some(s) = e.strip_prefix("string ") {
                        let s = s.trim();
                        expected = Some(Expected::String(s[1..s.len().saturating_sub(1)].to_string()));
                    }
                    continue;
                }
                let (desc, points) = split_series(l);
                if points.is_empty() {
                    match parse_value(desc) {
                        Some(v) => expected = Some(Expected::Scalar(v)),
                        None => bad = true,
                    }
                    continue;
                }
                if points.contains("{{") {
                    bad = true;
                    continue;
                }
                match (
                    parse_labels(desc),
                    expand(&points.split_whitespace().collect::<Vec<_>>()),
                ) {
                    (Some(l), Some(v)) => expected_series.push((l, v)),
                    _ => bad = true,
                }
            }
            let expected = expected.unwrap_or(Expected::Series(expected_series));
            let case = Case {
                line: i + 1,
                query: query.clone(),
                instant,
                range,
                fail,
                ordered,
                range_vector,
                expected,
                has_histograms,
            };
            let _ = case.has_histograms;
            let eligible = !bad
                && match promql::parse(&case.query) {
                    Ok(e) => !selects_any(&e, &unsupported),
                    Err(_) => false,
                };
            if eligible {
                result.eligible += 1;
                let data: Vec<Series> = series
                    .iter()
                    .map(|(l, s)| Series {
                        labels: l.clone().into(),
                        samples: s.clone(),
                    })
                    .collect();
                match run_case(&data, &case) {
                    Ok(()) => result.passed += 1,
                    Err(e) => result
                        .failures
                        .push(format!("line {}: {} -> {e}", case.line, case.query)),
                }
            }
        }
        i = j;
    }
    result
}

#[test]
fn prometheus_promql_test_files_through_our_evaluator() {
    let dir = conformance_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skipped: {} not found", dir.display());
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    let (mut cases, mut eligible, mut passed) = (0, 0, 0);
    println!(
        "{:<28} {:>6} {:>9} {:>7} {:>7}",
        "file", "cases", "eligible", "passed", "%"
    );
    let verbose = std::env::var("PROMQL_CONFORMANCE_VERBOSE").is_ok();
    for f in &files {
        let r = run_file(f);
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pct = if r.eligible > 0 {
            100.0 * r.passed as f64 / r.eligible as f64
        } else {
            100.0
        };
        println!(
            "{name:<28} {:>6} {:>9} {:>7} {pct:>6.1}%",
            r.cases, r.eligible, r.passed
        );
        if verbose {
            for fl in &r.failures {
                println!("    {fl}");
            }
        }
        cases += r.cases;
        eligible += r.eligible;
        passed += r.passed;
    }
    let pct = 100.0 * passed as f64 / eligible.max(1) as f64;
    println!("{:<28} {cases:>6} {eligible:>9} {passed:>7} {pct:>6.1}%", "total");
    assert!(
        pct >= 90.0,
        "{passed} of {eligible} eligible cases pass ({pct:.1} %), below 90 %"
    );
}
