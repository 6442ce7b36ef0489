//! Rule evaluation at the design's scale: 1,000 alerting rules over 100,000 active series, one
//! evaluation tick (every rule at one timestamp) on one core; and the time from the sample that
//! crosses a threshold to the alert transition, inside the engine.
//!
//! Series: `http_requests_total{service="sN", instance="iM"}` for 1,000 services × 100
//! instances, a sample every 15 s for 10 minutes (40 samples each, 4 M samples). Rules: per
//! service `sum by (service) (rate(http_requests_total{service="sN"}[5m])) > T`, half of them
//! true.
//!
//! cargo bench -p dwcp-benches --bench rules

use std::fmt::Write as _;
use std::time::Instant;

use dwcp_operators::prom::{labels_of, Sample};
use dwcp_operators::rules::{self, RuleEngine, RuleOutput};

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let (services, instances, steps) = (1000usize, 100usize, 40i64);
    let mut yaml = String::from("groups:\n  - name: bench\n    interval: 15s\n    rules:\n");
    for s in 0..services {
        // Each instance adds 1 request/s: the service rate is 100/s; half the thresholds are below.
        let threshold = if s % 2 == 0 { 50 } else { 150 };
        writeln!(
            yaml,
            "      - alert: Busy{s}\n        expr: sum by (service) (rate(http_requests_total{{service=\"s{s}\"}}[5m])) > {threshold}\n        labels: {{severity: warning}}"
        )
        .ok();
    }
    let groups = rules::load(&yaml, "bench.yml", 15_000).expect("rules");
    let mut engine = RuleEngine::new(groups, 200_000);
    let labels: Vec<_> = (0..services)
        .flat_map(|s| {
            (0..instances).map(move |i| {
                labels_of([
                    ("__name__", "http_requests_total".to_string()),
                    ("service", format!("s{s}")),
                    ("instance", format!("i{i}")),
                ])
            })
        })
        .collect();
    let t0 = 1_793_491_200_000i64;
    let load = Instant::now();
    for k in 0..steps {
        let batch: Vec<Sample> = labels
            .iter()
            .map(|l| Sample::new(l.clone(), (k * 15) as f64, t0 + k * 15_000))
            .collect();
        engine.process(&batch);
    }
    println!(
        "loaded {} series, {} samples in {:.2} s",
        engine.store().len(),
        engine.store().samples(),
        load.elapsed().as_secs_f64()
    );
    // Evaluate once at the last sample's time (the first evaluation), then time further ticks.
    let mut out = RuleOutput::default();
    let last = t0 + (steps - 1) * 15_000;
    engine.start_at(last);
    let mut times = Vec::new();
    for tick in 0..5 {
        let t = last + tick * 15_000;
        if tick > 0 {
            let batch: Vec<Sample> = labels
                .iter()
                .map(|l| Sample::new(l.clone(), ((steps + tick) * 15) as f64, t))
                .collect();
            engine.process(&batch);
        }
        let start = Instant::now();
        #[allow(clippy::cast_sign_loss)]
        engine.on_watermark(t as u64 * 1_000_000, &mut out);
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let firing = engine
        .active_alerts()
        .iter()
        .filter(|a| a.state == dwcp_operators::alerts::AlertState::Firing)
        .count();
    times.sort_by(f64::total_cmp);
    println!(
        "1,000 rules over 100,000 series: one tick (all rules at one timestamp) median {:.1} ms, max {:.1} ms; {} evaluations, {firing} alerts firing, {} errors",
        times[times.len() / 2],
        times[times.len() - 1],
        out.evaluations,
        out.errors.len()
    );

    // Latency inside the engine: the sample that crosses a threshold, then the watermark that
    // passes its time, to the transition.
    let one = rules::load(
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: Hot\n        expr: temp > 90\n",
        "one.yml",
        1_000,
    )
    .expect("rule");
    let mut e = RuleEngine::new(one, 10);
    let l = labels_of([("__name__", "temp")]);
    let mut out = RuleOutput::default();
    for k in 0..60 {
        e.process(&[Sample::new(l.clone(), 20.0, t0 + k * 1000)]);
        #[allow(clippy::cast_sign_loss)]
        e.on_watermark((t0 + k * 1000) as u64 * 1_000_000, &mut out);
    }
    let start = Instant::now();
    e.process(&[Sample::new(l.clone(), 95.0, t0 + 60_000)]);
    #[allow(clippy::cast_sign_loss)]
    e.on_watermark((t0 + 60_000) as u64 * 1_000_000, &mut out);
    let us = start.elapsed().as_secs_f64() * 1e6;
    assert!(out.alerts.iter().any(|a| a.alertname() == "Hot"));
    println!("crossing sample to alert transition inside the engine: {us:.0} µs");
}
