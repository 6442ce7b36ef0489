//! Memory per active series on the metrics path: 1,000,000 distinct gauge series (12 labels
//! each, as the conversion produces them) through the conversion and the cardinality guard,
//! with the process's resident memory read before and after.
//!
//! cargo bench -p dwcp-benches --bench series_memory

use std::sync::Arc;

use dwcp_benches::rss_kib;

use dwcp_operators::cardinality::{CardinalityConfig, CardinalityGuard};
use dwcp_operators::prom::{PromConfig, PromConverter};
use dwcp_schemas::model::{
    AnyValue, Attributes, KeyValue, MetricDescriptor, MetricPoint, Number, Origin, PointValue, Resource, Scope,
};

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: AnyValue::String(v.into()),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let n: usize = std::env::var("DWCP_BENCH_SERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let origin = Origin {
        region: "us-east-1".into(),
        resource: Arc::new(Resource {
            attributes: Attributes(vec![
                kv("service.name", "dwcp-gateway"),
                kv("service.namespace", "dwcp"),
                kv("service.instance.id", "dwcp-gateway-us-east-1-0"),
                kv("cloud.region", "us-east-1"),
            ]),
        }),
        scope: Arc::new(Scope {
            name: "dwcp".into(),
            version: "1.0".into(),
            attributes: Attributes::default(),
        }),
    };
    let metric = Arc::new(MetricDescriptor {
        name: "dwcp.tunnel.bytes".into(),
        description: String::new(),
        unit: "By".into(),
    });
    let mut conv = PromConverter::new(PromConfig {
        target_info: false,
        ..Default::default()
    });
    let mut guard = CardinalityGuard::new(CardinalityConfig {
        max_series_per_metric: n,
        max_series_total: n,
        idle_timeout_ms: u64::MAX / 2,
    });
    let before = rss_kib();
    let batch = 10_000;
    let mut samples = Vec::with_capacity(batch);
    for start in (0..n).step_by(batch) {
        let points: Vec<MetricPoint> = (start..(start + batch).min(n))
            .map(|i| MetricPoint {
                origin: origin.clone(),
                metric: metric.clone(),
                attributes: Attributes(vec![
                    kv("peer", &format!("peer-{}", i % 1000)),
                    kv("tunnel", &format!("tunnel-{i}")),
                    kv("direction", if i % 2 == 0 { "tx" } else { "rx" }),
                    kv("operation", "replicate"),
                    kv("link", "wan"),
                ]),
                start_time_unix_nano: 0,
                time_unix_nano: 1_795_000_000_000_000_000,
                value: PointValue::Gauge {
                    value: Number::Double(i as f64),
                },
                flags: 0,
            })
            .collect();
        samples.clear();
        conv.convert(&points, &mut samples);
        guard.admit(&mut samples);
    }
    drop(samples);
    let after = rss_kib();
    let per_series = (after.saturating_sub(before)) as f64 * 1024.0 / guard.active() as f64;
    println!(
        "series_memory: {} active series, RSS {} MiB -> {} MiB, {per_series:.0} bytes per active series (conversion tables + guard)",
        guard.active(),
        before / 1024,
        after / 1024
    );
}
