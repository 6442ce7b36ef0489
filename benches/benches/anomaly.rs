//! Anomaly scoring throughput and state: every detector enabled (three-sigma, moving average,
//! EWMA, seasonal, Holt-Winters), 10,000 series × 200 points after learning, one core; bytes of state per
//! series.
//!
//! cargo bench -p dwcp-benches --bench anomaly

use std::time::Instant;

use dwcp_operators::anomaly::{AnomalyConfig, SeriesDetector};

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let config = AnomalyConfig {
        enabled: dwcp_operators::anomaly::Enabled::all(),
        ..AnomalyConfig::default()
    };
    let series = 10_000usize;
    let mut d: Vec<SeriesDetector> = (0..series).map(|_| SeriesDetector::new(&config)).collect();
    let t0 = 1_793_491_200_000_000_000u64;
    let step = 60_000_000_000u64;
    // Learning and the window filled: 300 points each.
    for k in 0..300u64 {
        for (i, s) in d.iter_mut().enumerate() {
            let v = 100.0 + (k as f64 * 0.1 + i as f64).sin() * 10.0;
            s.update(&config, t0 + k * step, v);
        }
    }
    let points = 200u64;
    let start = Instant::now();
    let mut anomalous = 0usize;
    for k in 300..300 + points {
        for (i, s) in d.iter_mut().enumerate() {
            let v = 100.0
                + (k as f64 * 0.1 + i as f64).sin() * 10.0
                + if (k + i as u64).is_multiple_of(5000) { 80.0 } else { 0.0 };
            let (score, _) = s.update(&config, t0 + k * step, v);
            anomalous += usize::from(score.score >= config.threshold);
        }
    }
    let el = start.elapsed().as_secs_f64();
    let n = series as f64 * points as f64;
    println!(
        "anomaly scoring, all five detectors: {:.0} points/s on one core ({:.2} µs per point), {anomalous} anomalous points; state {} bytes per series",
        n / el,
        el * 1e6 / n,
        d[0].state_bytes()
    );
}
