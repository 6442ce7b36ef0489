//! The metric catalog: every series family the dashboards read, with its kind, labels and where
//! it comes from. Dashboards are generated from it, and a panel naming a series that is not
//! here fails generation (and the tests).

/// How a family is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A cumulative counter (`_total`).
    Counter,
    /// A gauge.
    Gauge,
    /// A classic histogram: `_bucket{le}`, `_sum`, `_count`.
    Histogram,
}

/// Where a family comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The agents' OTLP metrics, converted: the OTel metric name.
    Agent(&'static str),
    /// Span metrics computed from the traces before sampling.
    SpanMetrics,
    /// The SLA, health, network and capacity operator.
    Derived,
    /// The anomaly operator.
    Anomaly,
    /// The rule engine (`ALERTS`, recorded series).
    Rules,
}

/// One family.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// The Prometheus name (a histogram's base name).
    pub name: &'static str,
    /// Kind.
    pub kind: Kind,
    /// Labels besides `job`, `instance` and `region`.
    pub labels: &'static [&'static str],
    /// Where it comes from.
    pub origin: Origin,
    /// What it measures.
    pub help: &'static str,
}

const fn f(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    origin: Origin,
    help: &'static str,
) -> Family {
    Family {
        name,
        kind,
        labels,
        origin,
        help,
    }
}

use Kind::{Counter, Gauge, Histogram};
use Origin::{Agent, Anomaly, Derived, Rules, SpanMetrics};

/// The catalog.
pub const CATALOG: &[Family] = &[
    f(
        "dwcp_requests_total",
        Counter,
        &["operation"],
        Agent("dwcp.requests"),
        "requests served",
    ),
    f(
        "dwcp_errors_total",
        Counter,
        &["operation"],
        Agent("dwcp.errors"),
        "requests that failed",
    ),
    f(
        "dwcp_latency_milliseconds",
        Histogram,
        &["operation"],
        Agent("dwcp.latency"),
        "request latency, ms",
    ),
    f(
        "dwcp_active_connections",
        Gauge,
        &[],
        Agent("dwcp.active_connections"),
        "open client connections",
    ),
    f(
        "dwcp_cpu_utilization_ratio",
        Gauge,
        &[],
        Agent("dwcp.cpu.utilization"),
        "CPU busy, 0–1",
    ),
    f(
        "dwcp_consensus_health_ratio",
        Gauge,
        &[],
        Agent("dwcp.consensus.health"),
        "consensus quorum health, 0–1",
    ),
    f(
        "dwcp_network_rtt_milliseconds",
        Gauge,
        &["peer_region"],
        Agent("dwcp.network.rtt"),
        "probe round trip to the peer region, ms",
    ),
    f(
        "dwcp_network_packets_sent_total",
        Counter,
        &["peer_region"],
        Agent("dwcp.network.packets.sent"),
        "probe packets sent",
    ),
    f(
        "dwcp_network_packets_received_total",
        Counter,
        &["peer_region"],
        Agent("dwcp.network.packets.received"),
        "probe packets answered",
    ),
    f(
        "dwcp_network_io_sent_bytes_total",
        Counter,
        &["peer_region"],
        Agent("dwcp.network.io.sent"),
        "bytes sent to the peer region",
    ),
    f(
        "dwcp_network_io_received_bytes_total",
        Counter,
        &["peer_region"],
        Agent("dwcp.network.io.received"),
        "bytes received from the peer region",
    ),
    f(
        "dwcp_tunnel_up",
        Gauge,
        &["peer_region"],
        Agent("dwcp.tunnel.up"),
        "WAN tunnel to the peer up (1) or down (0)",
    ),
    f(
        "dwcp_protocol_messages_total",
        Counter,
        &["message_type"],
        Agent("dwcp.protocol.messages"),
        "DWCP messages by type",
    ),
    f(
        "dwcp_protocol_errors_total",
        Counter,
        &["error_type"],
        Agent("dwcp.protocol.errors"),
        "DWCP protocol errors by type",
    ),
    f(
        "dwcp_compression_ratio",
        Gauge,
        &[],
        Agent("dwcp.compression.ratio"),
        "payload bytes before / after compression",
    ),
    f(
        "dwcp_lb_backend_up",
        Gauge,
        &["backend"],
        Agent("dwcp.lb.backend.up"),
        "backend passes health checks (1) or not (0)",
    ),
    f(
        "dwcp_lb_requests_total",
        Counter,
        &["backend"],
        Agent("dwcp.lb.requests"),
        "requests the load balancer sent to a backend",
    ),
    f(
        "dwcp_lb_failures_total",
        Counter,
        &["backend"],
        Agent("dwcp.lb.failures"),
        "requests to a backend that failed",
    ),
    f(
        "dwcp_lb_pool_connections",
        Gauge,
        &["backend", "state"],
        Agent("dwcp.lb.pool.connections"),
        "pooled connections by state (active, idle)",
    ),
    f(
        "traces_span_metrics_calls_total",
        Counter,
        &["span_name", "span_kind", "status_code"],
        SpanMetrics,
        "spans, before sampling",
    ),
    f(
        "traces_span_metrics_duration_milliseconds",
        Histogram,
        &["span_name", "span_kind", "status_code"],
        SpanMetrics,
        "span duration, ms",
    ),
    f(
        "dwcp_cross_region_hop_latency_milliseconds",
        Gauge,
        &["peer_region", "stat"],
        Derived,
        "cross-region hop latency from stitched traces",
    ),
    f(
        "dwcp_sla_compliance_ratio",
        Gauge,
        &["sla", "kind"],
        Derived,
        "SLA compliance over the rolling period",
    ),
    f("dwcp_sla_target_ratio", Gauge, &["sla", "kind"], Derived, "SLA target"),
    f(
        "dwcp_error_budget_remaining_ratio",
        Gauge,
        &["sla", "kind"],
        Derived,
        "error budget left",
    ),
    f(
        "dwcp_sla_burn_rate",
        Gauge,
        &["sla", "kind", "window"],
        Derived,
        "error-budget burn rate per window",
    ),
    f(
        "dwcp_sla_burn_alert",
        Gauge,
        &["sla", "kind"],
        Derived,
        "0 none, 1 ticket, 2 page",
    ),
    f("dwcp_region_health_score", Gauge, &[], Derived, "region health, 0–100"),
    f(
        "dwcp_region_health_factor_score",
        Gauge,
        &["factor"],
        Derived,
        "one health factor, 0–100",
    ),
    f(
        "dwcp_network_latency_milliseconds",
        Gauge,
        &["peer_region"],
        Derived,
        "one-way latency estimate per link",
    ),
    f(
        "dwcp_network_jitter_milliseconds",
        Gauge,
        &["peer_region"],
        Derived,
        "RFC 3550 jitter per link",
    ),
    f(
        "dwcp_network_packet_loss_ratio",
        Gauge,
        &["peer_region"],
        Derived,
        "probe loss per link",
    ),
    f(
        "dwcp_network_sent_bytes_per_second",
        Gauge,
        &["peer_region"],
        Derived,
        "throughput per link",
    ),
    f(
        "dwcp_network_utilization_ratio",
        Gauge,
        &["peer_region"],
        Derived,
        "link bandwidth used, 0–1",
    ),
    f(
        "dwcp_tunnel_status",
        Gauge,
        &["peer_region"],
        Derived,
        "1 up, 0.5 degraded, 0 down",
    ),
    f(
        "dwcp_anomaly_score",
        Gauge,
        &["metric"],
        Anomaly,
        "ensemble anomaly score, 0–1",
    ),
    f(
        "ALERTS",
        Gauge,
        &["alertname", "alertstate", "severity"],
        Rules,
        "alerts pending or firing",
    ),
];

/// The family a series name belongs to (`x_bucket`, `x_sum`, `x_count` belong to histogram `x`).
pub fn family(series: &str) -> Option<&'static Family> {
    CATALOG.iter().find(|f| {
        f.name == series
            || (f.kind == Kind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| series.strip_suffix(s) == Some(f.name)))
    })
}
