//! The monitoring API's PromQL over a full window: 100,000 active series with 24 hours of
//! samples each, queried through the same functions the HTTP handlers call (evaluation and
//! the JSON answer; the HTTP hop adds well under a millisecond).
//!
//! Series: `m_K{region="rR", instance="iI"}` for 100 metric names × 10 regions × 100
//! instances, counters growing 1/s, a sample every `DWCP_BENCH_API_INTERVAL_S` seconds (60 by
//! default: 1,440 samples per series, 144 M samples) over 24 hours.
//!
//! cargo bench -p dwcp-benches --bench api

use std::time::Instant;

use dwcp_operators::prom::{labels_of, Sample};
use dwcp_pipeline::api::prom;
use dwcp_pipeline::api::window::MetricsWindow;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

fn params(pairs: &[(&str, String)]) -> prom::Params {
    pairs.iter().map(|(k, v)| ((*k).to_string(), v.clone())).collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    if std::env::var("DWCP_BENCH_API_SQL_ONLY").is_err() {
        promql();
    }
    sql();
}

/// SQL over 24 hours of rollups: 100 rollup metrics × 10 regions every 10 s (8.64 M rows).
fn sql() {
    let history = dwcp_pipeline::api::sql::History::new(86_400_000, 20_000_000, 10_000);
    let end_ms: i64 = 1_700_000_000_000;
    let start_ms = end_ms - 86_400_000 + 10_000;
    let built = Instant::now();
    let before = rss_bytes();
    let labels: Vec<_> = (0..100)
        .flat_map(|n| {
            (0..10).map(move |r| {
                let mut l = labels_of([("__name__", format!("dwcp:m{n}:p95:10s")), ("region", format!("r{r}"))]);
                l.sort();
                l
            })
        })
        .collect();
    let mut t = start_ms;
    let mut batch = Vec::with_capacity(labels.len());
    let mut k = 0u32;
    while t <= end_ms {
        batch.clear();
        batch.extend(
            labels
                .iter()
                .enumerate()
                .map(|(i, l)| Sample::new(l.clone(), f64::from((k + i as u32) % 1000), t)),
        );
        history.rollups(&batch);
        t += 10_000;
        k += 1;
    }
    history.trim();
    let rows = history.stats().rows;
    #[allow(clippy::cast_precision_loss)]
    let per_row = rss_bytes().saturating_sub(before) as f64 / rows as f64;
    println!(
        "\nSQL history: {rows} rollup rows over 24 h, built in {:.1} s, {per_row:.1} B/row resident",
        built.elapsed().as_secs_f64()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let queries = [
        "SELECT region, avg(value), max(value) FROM rollups WHERE metric = 'dwcp:m1:p95:10s' GROUP BY region",
        "SELECT metric, region, count(*), avg(value) FROM rollups GROUP BY metric, region",
        "SELECT date_trunc('hour', time) AS h, max(value) FROM rollups WHERE metric = 'dwcp:m2:p95:10s' AND region = 'r3' GROUP BY h ORDER BY h",
        "SELECT * FROM rollups WHERE metric = 'dwcp:m4:p95:10s' ORDER BY time DESC LIMIT 100",
        "SELECT count(*) FROM rollups WHERE value > 990",
    ];
    println!("| SQL | median of 3 | rows out |");
    println!("| --- | --- | --- |");
    for q in queries {
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..3 {
            let started = Instant::now();
            let v = rt.block_on(history.query(q)).expect("sql");
            times.push(started.elapsed().as_secs_f64());
            n = v["data"]["rows"].as_array().map_or(0, Vec::len);
        }
        times.sort_by(f64::total_cmp);
        println!("| `{q}` | {:.1} ms | {n} |", times[1] * 1000.0);
    }
}

/// PromQL over the window.
fn promql() {
    let interval_s: i64 = std::env::var("DWCP_BENCH_API_INTERVAL_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let (names, regions, instances) = (100usize, 10usize, 100usize);
    let end_ms: i64 = 1_700_000_000_000;
    let start_ms = end_ms - 24 * 3_600_000;
    let window = MetricsWindow::new(24 * 3_600_000 + 60_000, 200_000);
    let before = rss_bytes();
    let built = Instant::now();
    let labels: Vec<_> = (0..names)
        .flat_map(|n| {
            (0..regions).flat_map(move |r| {
                (0..instances).map(move |i| {
                    let mut l = labels_of([
                        ("__name__", format!("m_{n}")),
                        ("region", format!("r{r}")),
                        ("instance", format!("i{i}")),
                    ]);
                    l.sort();
                    l
                })
            })
        })
        .collect();
    let mut t = start_ms;
    let mut batch = Vec::with_capacity(labels.len());
    while t <= end_ms {
        batch.clear();
        #[allow(clippy::cast_precision_loss)]
        let v = ((t - start_ms) / 1000) as f64;
        batch.extend(labels.iter().map(|l| Sample::new(l.clone(), v, t)));
        window.append(&batch);
        t += interval_s * 1000;
    }
    drop(batch);
    let stats = window.stats();
    let samples = window.read().samples();
    #[allow(clippy::cast_precision_loss)]
    let per_sample = (rss_bytes().saturating_sub(before)) as f64 / samples as f64;
    println!(
        "window: {} series, {samples} samples over 24 h (every {interval_s} s), built in {:.1} s, {:.2} GiB resident, {per_sample:.1} B/sample",
        stats.series,
        built.elapsed().as_secs_f64(),
        rss_bytes() as f64 / (1u64 << 30) as f64
    );
    let at = format!("{}", end_ms / 1000);
    let day_ago = format!("{}", start_ms / 1000);
    let hour_ago = format!("{}", (end_ms - 3_600_000) / 1000);
    let cases: Vec<(&str, &str, prom::Params)> = vec![
        (
            "instant",
            "sum by (region) (rate(m_0[5m])) — 1,000 series",
            params(&[
                ("query", "sum by (region) (rate(m_0[5m]))".into()),
                ("time", at.clone()),
            ]),
        ),
        (
            "instant",
            "topk(10, rate(m_1[5m]))",
            params(&[("query", "topk(10, rate(m_1[5m]))".into()), ("time", at.clone())]),
        ),
        (
            "instant",
            "count({__name__=~\"m_.*\"}) — all 100,000 series",
            params(&[("query", "count({__name__=~\"m_.*\"})".into()), ("time", at.clone())]),
        ),
        (
            "instant",
            "sum(increase(m_2[24h])) — 1,000 series × 24 h",
            params(&[("query", "sum(increase(m_2[24h]))".into()), ("time", at.clone())]),
        ),
        (
            "range",
            "m_3{region=\"r1\",instance=\"i1\"} 24 h step 60 s — one series",
            params(&[
                ("query", "m_3{region=\"r1\",instance=\"i1\"}".into()),
                ("start", day_ago.clone()),
                ("end", at.clone()),
                ("step", "60".into()),
            ]),
        ),
        (
            "range",
            "sum by (region) (rate(m_4[5m])) 24 h step 5 m — 1,000 series",
            params(&[
                ("query", "sum by (region) (rate(m_4[5m]))".into()),
                ("start", day_ago.clone()),
                ("end", at.clone()),
                ("step", "300".into()),
            ]),
        ),
        (
            "range",
            "rate(m_5{region=\"r2\"}[5m]) 24 h step 5 m — 100 series out",
            params(&[
                ("query", "rate(m_5{region=\"r2\"}[5m])".into()),
                ("start", day_ago.clone()),
                ("end", at.clone()),
                ("step", "300".into()),
            ]),
        ),
        (
            "range",
            "avg by (region) (m_6) 1 h step 15 s — 1,000 series",
            params(&[
                ("query", "avg by (region) (m_6)".into()),
                ("start", hour_ago.clone()),
                ("end", at.clone()),
                ("step", "15".into()),
            ]),
        ),
        (
            "range",
            "sum(rate({__name__=~\"m_.*\"}[5m])) 24 h step 1 h — all 100,000 series",
            params(&[
                ("query", "sum(rate({__name__=~\"m_.*\"}[5m]))".into()),
                ("start", day_ago.clone()),
                ("end", at.clone()),
                ("step", "3600".into()),
            ]),
        ),
        (
            "range",
            "sum(rate({__name__=~\"m_.*\"}[5m])) 24 h step 5 m — all 100,000 series × 289 steps",
            params(&[
                ("query", "sum(rate({__name__=~\"m_.*\"}[5m]))".into()),
                ("start", day_ago.clone()),
                ("end", at.clone()),
                ("step", "300".into()),
            ]),
        ),
        (
            "range",
            "a ratio of two sums by region 24 h step 5 m — 50,000 series each side",
            params(&[
                (
                    "query",
                    "sum by (region) (rate({__name__=~\"m_[0-4].*\"}[5m])) / on (region) sum by (region) (rate({__name__=~\"m_[5-9].*\"}[5m]))".into(),
                ),
                ("start", day_ago.clone()),
                ("end", at.clone()),
                ("step", "300".into()),
            ]),
        ),
        (
            "range",
            "topk(5, sum by (instance) (rate({__name__=~\"m_.*\"}[5m]))) 24 h step 5 m — all 100,000 series",
            params(&[
                (
                    "query",
                    "topk(5, sum by (instance) (rate({__name__=~\"m_.*\"}[5m])))".into(),
                ),
                ("start", day_ago.clone()),
                ("end", at.clone()),
                ("step", "300".into()),
            ]),
        ),
        (
            "series",
            "match[]=m_7{region=\"r3\"}",
            params(&[("match[]", "m_7{region=\"r3\"}".into())]),
        ),
        ("label values", "instance", params(&[])),
    ];
    // `DWCP_BENCH_API_ONLY=<text>`: only the queries whose description contains it, each run
    // `DWCP_BENCH_API_RUNS` times (3), for a profiler.
    let only = std::env::var("DWCP_BENCH_API_ONLY").unwrap_or_default();
    let runs: usize = std::env::var("DWCP_BENCH_API_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    println!("| query | kind | median of {runs} | answer bytes |");
    println!("| --- | --- | --- | --- |");
    for (kind, what, p) in cases.into_iter().filter(|c| c.1.contains(only.as_str())) {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..runs {
            let store = window.read();
            let started = Instant::now();
            let r = match kind {
                "instant" => prom::instant(&store, false, &p, end_ms),
                "range" => prom::range(&store, false, &p),
                "series" => prom::series(&store, &p),
                _ => prom::label_values(&store, "instance", &p),
            };
            let body = serde_json::to_vec(&r.expect("query")).expect("json");
            times.push(started.elapsed().as_secs_f64());
            size = body.len();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| `{what}` | {kind} | {:.1} ms | {size} |",
            times[times.len() / 2] * 1000.0
        );
    }
}
