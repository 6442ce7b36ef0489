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
            "series",
            "match[]=m_7{region=\"r3\"}",
            params(&[("match[]", "m_7{region=\"r3\"}".into())]),
        ),
        ("label values", "instance", params(&[])),
    ];
    println!("| query | kind | median of 3 | answer bytes |");
    println!("| --- | --- | --- | --- |");
    for (kind, what, p) in cases {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..3 {
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
        println!("| `{what}` | {kind} | {:.1} ms | {size} |", times[1] * 1000.0);
    }
}
