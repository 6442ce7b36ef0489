//! SLA accounting at scale: 10,000 SLAs updated at 1 s resolution on one core, and each
//! tracker's state after 30 days.
//!
//! cargo bench -p dwcp-benches --bench sla

use std::time::Instant;

use dwcp_operators::sla::{SlaConfig, SlaKind, SlaTracker};

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let n = 10_000usize;
    let mut trackers: Vec<SlaTracker> = (0..n)
        .map(|i| {
            SlaTracker::new(SlaConfig {
                name: format!("sla-{i}"),
                kind: SlaKind::Availability,
                target: 0.9995,
                period_days: 30,
            })
        })
        .collect();
    let t0 = 1_793_491_200u64 * 1_000_000_000;
    // 10 minutes of event time at 1 s resolution: one observation per SLA per second, a
    // watermark (violation check) per second, a report per SLA every 10 s.
    let seconds = 600u64;
    let start = Instant::now();
    let mut reports = 0usize;
    for s in 0..seconds {
        let t = t0 + s * 1_000_000_000;
        for (i, tr) in trackers.iter_mut().enumerate() {
            let bad = if (i as u64 + s).is_multiple_of(997) { 3.0 } else { 0.0 };
            tr.observe(t, 100.0 - bad, 100.0);
            tr.on_watermark(t);
            if s % 10 == 0 {
                reports += usize::from(tr.report().compliance > 0.0);
            }
        }
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "sla: {n} SLAs × {seconds} s at 1 s resolution in {el:.2} s: {:.1} ms per second of data ({:.0}× real time), {reports} reports",
        el * 1000.0 / seconds as f64,
        seconds as f64 / el
    );
    // State after 30 days (one tracker, per-minute observations).
    let mut one = SlaTracker::new(SlaConfig {
        name: "x".into(),
        kind: SlaKind::Availability,
        target: 0.9995,
        period_days: 30,
    });
    for m in 0..30 * 24 * 60u64 {
        one.observe(t0 + m * 60_000_000_000, 999.0, 1000.0);
        one.on_watermark(t0 + (m + 1) * 60_000_000_000);
    }
    println!(
        "sla: state after 30 days: {} bytes per SLA (buckets and violations)",
        one.state_bytes()
    );
}
