//! The SLA, health, network and capacity operator as the pipeline drives it: Prometheus samples
//! in, minutes closed by the watermark, reports and series out.
//!
//! - 10,000 availability SLAs, each on its own pair of counters (`req_total{service="sN"}`,
//!   `err_total{service="sN"}`), one sample per counter per second: 20,000 samples/s.
//! - 1,000 region pairs, each with a latency gauge, packet and byte counters and a tunnel gauge,
//!   one sample per series per second: 6,000 samples/s.
//! - A watermark every second; every minute the SLAs report (10,000 reports, 140,000 series)
//!   and the pairs emit their series (8,000).
//!
//! cargo bench -p dwcp-benches --bench derived

use std::time::Instant;

use dwcp_operators::derived::{DerivedConfig, DerivedOperator, DerivedOutput, NetworkSpec, SlaSpec};
use dwcp_operators::network::NetworkConfig;
use dwcp_operators::prom::{label_set_of, Sample};
use dwcp_operators::sla::SlaKind;

const SEC: u64 = 1_000_000_000;

fn sla(i: usize) -> SlaSpec {
    SlaSpec {
        name: format!("sla-{i}"),
        kind: SlaKind::Availability,
        target: 0.9995,
        period_days: 30,
        total: Some(format!(r#"req_total{{service="s{i}"}}"#)),
        good: None,
        bad: Some(format!(r#"err_total{{service="s{i}"}}"#)),
        up: None,
        histogram: None,
        threshold: None,
        min_rate: None,
        per_region: false,
    }
}

fn network() -> NetworkSpec {
    NetworkSpec {
        peer_label: "peer_region".into(),
        latency: Some("rtt_ms".into()),
        latency_scale_ms: 1.0,
        packets_sent: Some("pkts_sent_total".into()),
        packets_received: Some("pkts_recv_total".into()),
        bytes_sent: Some("tx_bytes_total".into()),
        bytes_received: Some("rx_bytes_total".into()),
        tunnel_up: Some("tunnel_up".into()),
        thresholds: NetworkConfig {
            capacity_bytes_per_second: 1.25e9,
            ..NetworkConfig::default()
        },
    }
}

fn run(name: &str, config: DerivedConfig, series: &[(Vec<(&str, String)>, bool)], seconds: u64) {
    let mut op = DerivedOperator::new(config).expect("config");
    // Label sets built once and shared by each series' samples, as the converter's are.
    let labels: Vec<_> = series
        .iter()
        .map(|(l, _)| label_set_of(l.iter().map(|(k, v)| (*k, v.as_str()))))
        .collect();
    let t0 = 1_793_491_200u64;
    let mut samples = Vec::with_capacity(series.len());
    let mut out = DerivedOutput::default();
    let (mut reports, mut emitted, mut fed) = (0usize, 0usize, 0usize);
    let start = Instant::now();
    for s in 0..seconds {
        samples.clear();
        let ms = i64::try_from((t0 + s) * 1000).expect("ms");
        for (i, (l, (_, counter))) in labels.iter().zip(series).enumerate() {
            let v = if *counter {
                // Counters: 100 a second; every 997th series-second adds an error burst.
                (s * 100 + u64::from((i as u64 + s).is_multiple_of(997))) as f64
            } else {
                20.0 + (s % 7) as f64
            };
            samples.push(Sample::new(l.clone(), v, ms));
        }
        fed += samples.len();
        op.process(&samples);
        op.on_watermark((t0 + s + 1) * SEC, &mut out);
        reports += out.sla.len();
        emitted += out.samples.len();
        out = DerivedOutput::default();
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "{name}: {fed} samples over {seconds} s of event time in {el:.2} s: {:.1} ms of one core per second of data ({:.0}× real time), {:.2} M samples/s; {reports} SLA reports, {emitted} series samples out",
        el * 1000.0 / seconds as f64,
        seconds as f64 / el,
        fed as f64 / el / 1e6
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let seconds = 600;
    let slas = 10_000usize;
    let mut sla_series = Vec::new();
    for i in 0..slas {
        for name in ["req_total", "err_total"] {
            sla_series.push((vec![("__name__", name.to_string()), ("service", format!("s{i}"))], true));
        }
    }
    run(
        "10,000 SLAs",
        DerivedConfig {
            sla: (0..slas).map(sla).collect(),
            ..DerivedConfig::default()
        },
        &sla_series,
        seconds,
    );
    let mut pair_series = Vec::new();
    for p in 0..1000 {
        let (r, peer) = (format!("r{}", p / 40), format!("p{}", p % 40));
        for (name, counter) in [
            ("rtt_ms", false),
            ("pkts_sent_total", true),
            ("pkts_recv_total", true),
            ("tx_bytes_total", true),
            ("rx_bytes_total", true),
            ("tunnel_up", false),
        ] {
            pair_series.push((
                vec![
                    ("__name__", name.to_string()),
                    ("region", r.clone()),
                    ("peer_region", peer.clone()),
                ],
                counter,
            ));
        }
    }
    run(
        "1,000 region pairs",
        DerivedConfig {
            network: Some(network()),
            ..DerivedConfig::default()
        },
        &pair_series,
        seconds,
    );
    let mut both = sla_series.clone();
    both.extend(pair_series.iter().cloned());
    run(
        "10,000 SLAs and 1,000 pairs together",
        DerivedConfig {
            sla: (0..slas).map(sla).collect(),
            network: Some(network()),
            ..DerivedConfig::default()
        },
        &both,
        seconds,
    );

    // State of one SLA after 30 days through the operator: its snapshot.
    let mut op = DerivedOperator::new(DerivedConfig {
        sla: vec![sla(0)],
        ..DerivedConfig::default()
    })
    .expect("config");
    let l_req = label_set_of([("__name__", "req_total"), ("service", "s0")]);
    let l_err = label_set_of([("__name__", "err_total"), ("service", "s0")]);
    let t0 = 1_793_491_200u64;
    let mut out = DerivedOutput::default();
    for m in 0..30 * 24 * 60u64 {
        let ms = i64::try_from((t0 + m * 60 + 30) * 1000).expect("ms");
        op.process(&[
            Sample::new(l_req.clone(), (m * 6000) as f64, ms),
            Sample::new(l_err.clone(), (m * 3) as f64, ms),
        ]);
        op.on_watermark((t0 + (m + 1) * 60) * SEC, &mut out);
        out = DerivedOutput::default();
    }
    let json = serde_json::to_vec(&op.snapshot()).expect("snapshot");
    println!(
        "one SLA after 30 days at 1-minute samples: snapshot {} bytes (JSON), {} open groups",
        json.len(),
        op.groups()
    );
}
